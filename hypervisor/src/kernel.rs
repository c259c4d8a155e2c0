//! Start of day on bare metal: console, descriptor tables, boot bundle and configuration,
//! memory, CPU identification, then the boot report; and the panic handler.

use crate::arch::platform::BareMetal;
use crate::arch::power::{ExitStatus, power_off};
use crate::arch::svm::Svm;
use crate::arch::vmx::Vmx;
use crate::arch::{apic, cpu, gdt, idt, pic, serial, time};
use crate::config::{BootConfig, BootMode, SelfTest};
use crate::domain::Life;
use crate::hv::profile::Profiled;
use crate::hv::{Hypervisor, Identity, Settings, Step};
use crate::mm::frame::{FrameTable, PAGE_SIZE, Pfn};
use crate::mm::phys::Physmap;
use crate::mm::{self, phys};
use crate::vcpu::Backend;
use alloc::vec::Vec;
use bootloader_api::BootInfo;
use bootloader_api::info::MemoryRegionKind;
use guest_abi::bundle::{Bundle, Entry, EntryKind};
use guest_abi::layout::MODULES_GPA;
use guest_abi::start_info::{MODULE_NAME_MAX_BYTES, MODULES_MAX, ModuleInfo};

/// Entered from the bootloader with the boot information; never returns.
pub fn start(boot: &'static mut BootInfo) -> ! {
    let serial_ok = serial::init();
    serial::init_logger(log::LevelFilter::Info);
    gdt::init();
    idt::init();
    crate::arch::extended::enable();
    log::info!("{} {} starting", crate::NAME, crate::VERSION);
    if !serial_ok {
        log::warn!("COM1 did not answer; console may be unreliable");
    }
    let Some(offset) = boot.physical_memory_offset.into_option() else {
        log::error!("the bootloader did not map physical memory");
        power_off(ExitStatus::Failure);
    };
    phys::init(offset);

    let firmware = if boot.memory_regions.iter().any(|r| matches!(r.kind, MemoryRegionKind::UnknownUefi(_))) {
        "uefi"
    } else {
        "bios"
    };
    let bundle_bytes: Option<&'static [u8]> = boot.ramdisk_addr.into_option().map(|addr| {
        // SAFETY: the bootloader mapped the ramdisk at `addr` for `ramdisk_len` bytes and never
        // unmaps it; we only read it.
        unsafe { core::slice::from_raw_parts(addr as *const u8, boot.ramdisk_len as usize) }
    });
    let bundle = match bundle_bytes.map(Bundle::parse) {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            log::error!("boot bundle refused: {e}");
            None
        }
        None => {
            log::warn!("no boot bundle");
            None
        }
    };
    let bundle_phys = bundle_bytes.and_then(|b| {
        let start = phys::translate(b.as_ptr() as u64)?;
        let last = phys::translate(b.as_ptr() as u64 + b.len().max(1) as u64 - 1)?;
        (last - start == b.len().max(1) as u64 - 1).then_some((start, b.len() as u64))
    });
    if bundle_bytes.is_some() && bundle_phys.is_none() {
        log::warn!("boot bundle is not physically contiguous; its pages cannot be mapped into guests");
    }
    let report = match mm::boot::init(&boot.memory_regions, bundle_phys) {
        Ok(r) => r,
        Err(e) => {
            log::error!("memory setup failed: {e:?}");
            power_off(ExitStatus::Failure);
        }
    };
    // The heap exists from here on.
    let config_text = bundle
        .and_then(|b| b.find("config", EntryKind::Config))
        .and_then(|e| core::str::from_utf8(e.data).ok())
        .unwrap_or("");
    let (config, config_errors) = BootConfig::parse(config_text);
    for e in &config_errors {
        log::warn!("{e}");
    }
    log::set_max_level(config.log_level);

    log::info!("firmware: {firmware}");
    for r in boot.memory_regions.iter() {
        log::debug!("memory region {:#014x}-{:#014x} {:?}", r.start, r.end, r.kind);
    }
    log::info!(
        "memory: {} KiB usable in {} regions; frame table {} KiB, heap {} KiB; free {} KiB",
        report.usable_kib,
        report.usable_regions,
        report.frame_table_kib,
        report.heap_kib,
        report.free_kib
    );

    let cpu = cpu::detect();
    log::info!("cpu: {cpu}");
    let backend = cpu.backend();
    match (backend, cpu.vmx, cpu.svm) {
        (Some(cpu::Backend::VmxEpt), Some(v), _) => log::info!(
            "virtualization: vmx+ept (vmcs revision {:#x}, vpid {}, unrestricted guest {}, preemption timer {})",
            v.revision,
            yes_no(v.vpid),
            yes_no(v.unrestricted),
            yes_no(v.preemption_timer)
        ),
        (Some(cpu::Backend::SvmNpt), _, Some(s)) => log::info!(
            "virtualization: svm+npt (revision {}, {} asids, nrips {}, flush-by-asid {})",
            s.revision,
            s.asids,
            yes_no(s.nrips),
            yes_no(s.flush_by_asid)
        ),
        _ => {
            log::error!(
                "virtualization: none usable (vmx {}, svm {})",
                describe_vmx(cpu.vmx),
                describe_svm(cpu.svm)
            );
            power_off(ExitStatus::Failure);
        }
    }
    if let Some(b) = bundle {
        for e in b.entries().filter(|e| matches!(e.kind, EntryKind::Elf | EntryKind::LinuxKernel | EntryKind::Initramfs)) {
            log::info!("bundle: image {} ({} KiB)", e.name, e.data.len().div_ceil(1024));
        }
    }

    let iso = crate::arch::spec::init();
    log::info!(
        "isolation: ibpb on domain switch {}, verw before entry {}, return-stack fill on domain switch yes, \
         x87 pointer scrub {}",
        yes_no(iso.ibpb),
        yes_no(iso.verw),
        yes_no(iso.scrub_x87_pointers)
    );

    pic::disable();
    apic::init();
    let cal = time::calibrate();
    // The idle loop sleeps on the APIC timer: check once that it wakes the CPU.
    let before = idt::TIMER_INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed);
    apic::arm_oneshot(time::apic_ticks_for(1_000_000));
    crate::arch::x86::wait_for_interrupt();
    if idt::TIMER_INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed) == before {
        log::warn!("the APIC timer did not fire: idle waits may not wake up");
    }
    log::info!(
        "time: tsc {} kHz, apic timer {} ticks/ms{}",
        cal.tsc_khz,
        cal.apic_ticks_per_ms,
        if cal.measured { "" } else { " (PIT did not answer: guessed)" }
    );

    match config.selftest {
        Some(SelfTest::PageFault) => {
            // A canonical lower-half address the bootloader did not map.
            let addr = (1u64..256).map(|i| i << 39).find(|&a| phys::translate(a).is_none()).unwrap_or(0x1000);
            log::info!("selftest: reading unmapped address {addr:#x}");
            // SAFETY: deliberately unsound: this read faults, which is the point of the test.
            unsafe { core::ptr::read_volatile(addr as *const u64) };
        }
        Some(SelfTest::Hang) => {
            log::info!("selftest: hanging with interrupts off");
            crate::arch::x86::halt_forever();
        }
        Some(SelfTest::InvalidOpcode) => {
            log::info!("selftest: executing ud2");
            // SAFETY: raises #UD on purpose; the handler powers the machine off.
            unsafe { core::arch::asm!("ud2") };
        }
        Some(SelfTest::Panic) => panic!("selftest panic requested by the boot configuration"),
        None => {}
    }

    let Some(frames) = mm::boot::take_frames() else {
        log::error!("frame table missing after memory setup");
        power_off(ExitStatus::Failure);
    };
    if let Err(e) = frames.check() {
        log::error!("frame table inconsistent: {e:?}");
        power_off(ExitStatus::Failure);
    }
    log::info!("frame table consistent");
    let identity = Identity {
        vendor: match cpu.vendor {
            cpu::Vendor::Intel => 1,
            cpu::Vendor::Amd => 2,
            cpu::Vendor::Other => 0,
        },
        backend: if backend == Some(cpu::Backend::VmxEpt) { 1 } else { 2 },
        firmware: if firmware == "uefi" { 2 } else { 1 },
    };
    const _: () = assert!(
        crate::arch::svm::POOL_FRAMES_NEEDED <= crate::mm::boot::BOOT_POOL_FRAMES
            && crate::arch::vmx::POOL_FRAMES_NEEDED <= crate::mm::boot::BOOT_POOL_FRAMES
    );
    let plan = BootPlan { bundle, bundle_phys, config };
    match (backend, cpu.svm, cpu.vmx) {
        (Some(cpu::Backend::SvmNpt), Some(caps), _) => {
            let svm = Svm::init(report.boot_pool, caps.asids, caps.flush_by_asid);
            run(svm, frames, identity, plan)
        }
        (Some(cpu::Backend::VmxEpt), _, Some(caps)) => match Vmx::init(report.boot_pool, &caps) {
            Ok(vmx) => run(vmx, frames, identity, plan),
            Err(e) => {
                log::error!("cannot enable VMX: {e:?}");
                power_off(ExitStatus::Failure)
            }
        },
        _ => power_off(ExitStatus::Failure),
    }
}

/// What to start once the backend is up.
struct BootPlan {
    bundle: Option<Bundle<'static>>,
    bundle_phys: Option<(u64, u64)>,
    config: BootConfig,
}

/// Brings up the boot domains and runs the scheduler forever.
fn run<B: Backend>(backend: B, frames: FrameTable<'static>, identity: Identity, plan: BootPlan) -> ! {
    let images: Vec<Entry<'static>> =
        plan.bundle.map(|b| b.entries().filter(|e| e.kind == EntryKind::Elf).collect()).unwrap_or_default();
    // Unmodified kernels and their initramfs images are dom0's to build (its Linux loader).
    let kernels: Vec<Entry<'static>> = plan
        .bundle
        .map(|b| b.entries().filter(|e| matches!(e.kind, EntryKind::LinuxKernel | EntryKind::Initramfs)).collect())
        .unwrap_or_default();
    let has_dom0 = images.iter().any(|e| e.name == "dom0");
    let mode = match plan.config.boot {
        BootMode::Auto if has_dom0 => BootMode::Dom0,
        BootMode::Auto => BootMode::All,
        m => m,
    };
    let settings = Settings {
        timeslice_ns: plan.config.timeslice_us * 1000,
        echo_guests: plan.config.echo_guests.unwrap_or(mode == BootMode::All),
        profile_exits: plan.config.profile_exits,
    };
    let mut hv = Hypervisor::new(backend, Physmap, frames, BareMetal, identity, settings);
    let baseline_free_kib = hv.info().free_kib;
    log::info!("backend {} ready; {} KiB free for domains", B::NAME, baseline_free_kib);
    match mode {
        BootMode::Dom0 => {
            let mut all = images.clone();
            all.extend(kernels.iter().cloned());
            start_dom0(&mut hv, &all, &plan)
        }
        _ => start_all(&mut hv, &images, &plan),
    }
    let dom0 = hv.dom0();
    loop {
        if hv.run_once() == Step::NothingLeft {
            hv.flush_serial();
            finish_bare_mode(&hv, baseline_free_kib);
        }
        if let Some(clean) = hv.poweroff.take() {
            hv.flush_serial();
            log::info!("dom0 asked to power off");
            power_off(if clean { ExitStatus::Success } else { ExitStatus::Failure });
        }
        if let Some(d0) = dom0 {
            if hv.domains.get(d0).is_none_or(|d| d.life != Life::Live) {
                hv.flush_serial();
                log::error!("dom0 is gone; powering off");
                power_off(ExitStatus::Failure);
            }
        }
    }
}

fn start_dom0<B: Backend>(hv: &mut Hypervisor<B, Physmap, BareMetal>, images: &[Entry<'static>], plan: &BootPlan) {
    let Some(dom0) = images.iter().find(|e| e.name == "dom0") else {
        log::error!("boot=dom0 but the bundle has no dom0 image");
        power_off(ExitStatus::Failure);
    };
    // Every other image is mapped read-only into dom0, one after another.
    let mut modules: Vec<ModuleInfo> = Vec::new();
    let mut gpa = MODULES_GPA;
    let bundle_start = plan.bundle_phys.map(|(s, _)| s).filter(|s| s % PAGE_SIZE == 0);
    for e in images.iter().filter(|e| e.name != "dom0").take(MODULES_MAX) {
        if bundle_start.is_none() {
            log::warn!("boot bundle not page-aligned and contiguous: images are not given to dom0");
            break;
        }
        let mut name = [0u8; MODULE_NAME_MAX_BYTES];
        let n = e.name.len().min(MODULE_NAME_MAX_BYTES);
        name[..n].copy_from_slice(&e.name.as_bytes()[..n]);
        modules.push(ModuleInfo { name, gpa, len: e.data.len() as u64 });
        gpa += (e.data.len() as u64).div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
    }
    let mem = plan.config.dom0_mem_mib << 20;
    let cmdline = plan.config.guests.get("dom0").and_then(|g| g.cmdline.as_deref()).unwrap_or("");
    let id = match hv.build_domain(dom0.data, "dom0", mem, cmdline, true, &modules) {
        Ok(id) => id,
        Err(e) => {
            log::error!("dom0: {e}");
            power_off(ExitStatus::Failure);
        }
    };
    if let Some(start) = bundle_start {
        let with_entries = images.iter().filter(|e| e.name != "dom0");
        for (m, e) in modules.iter().zip(with_entries) {
            let first = Pfn((start + e.offset as u64) / PAGE_SIZE);
            if let Err(err) = hv.map_rom(id, m.gpa, first, m.len.div_ceil(PAGE_SIZE).max(1)) {
                log::error!("mapping image {} into dom0: {err}", e.name);
            }
        }
    }
    log::info!("d{id} dom0: started, {} MiB, {} images", plan.config.dom0_mem_mib, modules.len());
    let _ = hv.unpause(id);
}

fn start_all<B: Backend>(hv: &mut Hypervisor<B, Physmap, BareMetal>, images: &[Entry<'static>], plan: &BootPlan) {
    if images.is_empty() {
        log::info!("no guest images: boot report done");
        power_off(ExitStatus::Success);
    }
    for e in images {
        let g = plan.config.guests.get(e.name);
        let mib = g.and_then(|g| g.mem_mib).unwrap_or(plan.config.guest_mem_mib);
        let cmdline = g.and_then(|g| g.cmdline.as_deref()).unwrap_or("");
        match hv.build_domain(e.data, e.name, mib << 20, cmdline, false, &[]) {
            Ok(id) => {
                log::info!("d{id} {}: started, {mib} MiB", e.name);
                let _ = hv.unpause(id);
            }
            Err(err) => log::error!("{}: {err}", e.name),
        }
    }
}

/// Bare mode: every domain has ended. Report and power off.
fn finish_bare_mode<B: Backend>(hv: &Hypervisor<B, Physmap, BareMetal>, baseline_free_kib: u64) -> ! {
    for d in hv.domains.iter() {
        let c = d.counters;
        let stats = format_args!("{} exits, {} hypercalls, {} preemptions", c.exits, c.hypercalls, c.preemptions);
        match d.life {
            Life::Dead(code) => log::info!("d{} {}: exited with code {code} ({stats})", d.id, d.name.as_str()),
            Life::Crashed => log::info!("d{} {}: crashed: {} ({stats})", d.id, d.name.as_str(), d.reason.as_str()),
            _ => {}
        }
    }
    let profile = hv.exit_profile();
    if profile.on {
        for (kind, what) in [(Profiled::NullHypercall, "null hypercall"), (Profiled::SecondLevelFault, "second-level fault")] {
            let p = profile.phases(kind);
            let [exit, handle, schedule, entry, own] = p.means();
            log::info!(
                "exit profile: {what}: backend exit {exit}, handler {handle}, schedule {schedule}, backend entry {entry}, \
                 profile's own {own} instructions (mean of {} exits)",
                p.exits
            );
        }
    }
    let free = hv.info().free_kib;
    match hv.check_invariants() {
        Ok(()) if free == baseline_free_kib => {
            log::info!("all domains ended; all memory returned ({free} KiB free)");
            power_off(ExitStatus::Success)
        }
        Ok(()) => {
            log::error!("memory leak: {free} KiB free, {baseline_free_kib} KiB before the domains");
            power_off(ExitStatus::Failure)
        }
        Err(e) => {
            log::error!("invariant violated after all domains ended: {e:?}");
            power_off(ExitStatus::Failure)
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn describe_vmx(v: Option<cpu::VmxCaps>) -> &'static str {
    match v {
        None => "absent",
        Some(v) if v.disabled_by_firmware => "disabled by firmware",
        Some(v) if !v.ept => "present without ept",
        Some(_) => "present without 4-level write-back ept",
    }
}

fn describe_svm(s: Option<cpu::SvmCaps>) -> &'static str {
    match s {
        None => "absent",
        Some(s) if s.disabled_by_firmware => "disabled by firmware",
        Some(s) if !s.npt => "present without npt",
        Some(_) => "present with too few asids",
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(l) => serial::emergency_write(format_args!(
            "(hv) PANIC at {}:{}: {}\r\n",
            l.file(),
            l.line(),
            info.message()
        )),
        None => serial::emergency_write(format_args!("(hv) PANIC: {}\r\n", info.message())),
    }
    power_off(ExitStatus::Failure)
}

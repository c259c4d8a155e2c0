//! Start of day on bare metal: console, descriptor tables, boot bundle and configuration,
//! memory, CPU identification, then the boot report; and the panic handler.

use crate::arch::power::{ExitStatus, power_off};
use crate::arch::{cpu, gdt, idt, serial};
use crate::config::{BootConfig, SelfTest};
use crate::mm::{self, phys};
use bootloader_api::BootInfo;
use bootloader_api::info::MemoryRegionKind;
use guest_abi::bundle::{Bundle, EntryKind};

/// Entered from the bootloader with the boot information; never returns.
pub fn start(boot: &'static mut BootInfo) -> ! {
    let serial_ok = serial::init();
    serial::init_logger(log::LevelFilter::Info);
    gdt::init();
    idt::init();
    log::info!("{} {} starting", crate::NAME, crate::VERSION);
    if !serial_ok {
        log::warn!("COM1 loopback test failed; console may be unreliable");
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
        for e in b.entries().filter(|e| e.kind == EntryKind::Elf) {
            log::info!("bundle: image {} ({} KiB)", e.name, e.data.len().div_ceil(1024));
        }
    }

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

    match mm::boot::with_frames(|ft| ft.check()) {
        Ok(_) => log::info!("frame table consistent"),
        Err(e) => {
            log::error!("frame table inconsistent: {e:?}");
            power_off(ExitStatus::Failure);
        }
    }
    log::info!("no dom0 yet: boot report done");
    power_off(ExitStatus::Success)
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

//! Intel VMX + EPT backend: VMXON, controls derived from the capability MSRs, one VMCS per
//! vCPU filled from a vendor-neutral context, the world switch, VPIDs and INVEPT on P2M
//! changes, and exit decoding into [`Exit`]. The syscall MSRs the VMCS does not switch
//! (KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK) travel with the vCPU's extended state: loaded
//! when a different vCPU runs, and KERNEL_GS_BASE, which `swapgs` changes without an exit,
//! read back when it stops holding the CPU (the host never uses any of them).

mod fields;
mod instr;

pub use fields::{Proc2Controls, ProcControls, PinControls, caps};

use crate::arch::gdt::{KERNEL_CS, KERNEL_DS, TSS_SELECTOR, gdt_base, tss_base};
use crate::arch::idt::idt_base;
use crate::arch::x86::{self, msr, rdmsr, wrmsr};
use crate::arch::cpu::VmxCaps;
use crate::mm::frame::{FrameKind, FrameTable, OWNER_HYPERVISOR, Pfn};
use crate::mm::phys;
use crate::p2m::Ept;
use crate::arch::event::{self, EventInfo, event_type};
use crate::arch::{extended, spec};
use crate::policy::Policy;
use crate::policy::state::{clts_value, lmsw_value};
use crate::arch::stamps::SwitchStamps;
use crate::vcpu::{
    Backend, Exit, ExtendedState, GuestMsr, GuestRegs, Segment, Vcpu, VcpuContext, VcpuError, attrs_from_vmx,
    vector, vmx_access_rights,
};
use alloc::boxed::Box;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use fields::*;
use guest_abi::hypercall::CallInsn;
use guest_abi::vcpu::{Cr0Flags, Cr4Flags, EferFlags, RFLAGS_RESERVED_ONE, RFlags};
pub use instr::VmxFail;
use instr::{invept, vmclear, vmptrld, vmread, vmwrite, vmxon};

/// Why VMX could not be started.
#[derive(Clone, Copy, Debug)]
pub enum VmxError {
    /// Firmware locked VMX off in IA32_FEATURE_CONTROL.
    DisabledByFirmware,
    /// VMXON failed.
    Vmxon(VmxFail),
    /// A control the backend needs is not allowed by this CPU.
    MissingControl(&'static str),
}

global_asm!(concat!(
    r#"
    .global cowvisor_vmx_run
    .global cowvisor_vmx_exit
// rdi = &mut GuestRegs, rsi = 1 if the VMCS was launched before.
// Returns 0 after a VM exit, 1 on VMfailInvalid, 2 on VMfailValid.
cowvisor_vmx_run:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, 0x6C14
    vmwrite rax, rsp
    mov rax, rdi
    test rsi, rsi
"#,
    guest_regs_load!(),
    r#"    mov rax, [rax]
    jnz 2f
    vmlaunch
    jmp 3f
2:
    vmresume
3:
    // The entry failed; CF or ZF says how.
    mov eax, 1
    jc 4f
    mov eax, 2
4:
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

// VM exit: RSP is the HOST_RSP written above, so [rsp] is the GuestRegs pointer.
cowvisor_vmx_exit:
    push rax
    mov rax, [rsp + 8]
"#,
    guest_regs_store!(),
    r#"    pop rbx
    mov [rax], rbx
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
"#
));

unsafe extern "C" {
    fn cowvisor_vmx_run(regs: *mut GuestRegs, launched: u64) -> u64;
    fn cowvisor_vmx_exit();
}

/// Stands for "no VMCS" in [`CURRENT_VMCS`]; not a valid VMCS address (those are page
/// aligned), unlike 0.
const NO_VMCS: u64 = u64::MAX;
/// Physical address of the VMCS that is current on this CPU.
static CURRENT_VMCS: AtomicU64 = AtomicU64::new(NO_VMCS);
/// CR0/CR4 fixed bits (set in `init`).
static FIXED: spin::Once<Fixed> = spin::Once::new();

#[derive(Clone, Copy, Debug)]
struct Fixed {
    cr0_0: u64,
    cr0_1: u64,
    cr4_0: u64,
    cr4_1: u64,
}

fn fixed() -> Fixed {
    *FIXED.get().unwrap_or(&Fixed { cr0_0: 0, cr0_1: !0, cr4_0: Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits(), cr4_1: !0 })
}

/// CR0 bits the guest may not change without the hypervisor seeing it.
const CR0_MASK: u64 = Cr0Flags::PROTECTED_MODE_ENABLE
    .union(Cr0Flags::NUMERIC_ERROR)
    .union(Cr0Flags::PAGING)
    .union(Cr0Flags::NOT_WRITE_THROUGH)
    .union(Cr0Flags::CACHE_DISABLE)
    .bits();
/// CR4 bits likewise, until the policy is known: all of them.
const CR4_MASK_ALL: u64 = !0;
const EPTP_WB_4LEVEL: u64 = 6 | (3 << 3);
/// DR6 bits a #DB exit reports in its qualification: B0-B3, BD, BS.
const DR6_EXIT_BITS: u64 = 0x600F;
const INVEPT_SINGLE: u64 = 1;
const INVEPT_ALL: u64 = 2;
const INTERRUPTIBILITY_BLOCKING: u64 = Interruptibility::all().bits();

fn make_current(vmcs: Pfn) {
    let pa = vmcs.addr();
    if CURRENT_VMCS.load(Ordering::Relaxed) != pa {
        // SAFETY: the VMCS was VMCLEARed and initialized with our revision in create_vcpu and
        // is owned by a live vCPU.
        if let Err(e) = unsafe { vmptrld(pa) } {
            log::error!("vmptrld {pa:#x} failed: {e:?}");
        }
        CURRENT_VMCS.store(pa, Ordering::Relaxed);
    }
}

fn write(field: u64, value: u64) {
    if let Err(e) = vmwrite(field, value) {
        log::error!("vmwrite {field:#x} failed: {e:?} (error {})", vmread(VM_INSTRUCTION_ERROR));
    }
}

/// `wanted` with the must-be-one bits of a capability MSR set and its may-be-one bits kept
/// (Intel SDM Vol 3D A.3).
fn adjust(wanted: u32, cap: u64) -> u32 {
    (wanted | cap as u32) & (cap >> caps::ALLOWED_ONE_SHIFT) as u32
}

#[derive(Clone, Copy, Debug)]
struct Controls {
    pin: PinControls,
    proc: ProcControls,
    proc2: Proc2Controls,
    exit: ExitControls,
    entry: EntryControls,
}

/// The VMX backend (boot CPU only).
pub struct Vmx {
    revision: u32,
    controls: Controls,
    vpid: bool,
    invept_kind: u64,
    /// log2 of TSC ticks per preemption-timer tick, if the timer is used.
    preemption_rate: Option<u32>,
    /// CR4 bits whose writes exit: every bit the policy does not let guests own, and PAE.
    cr4_mask: u64,
    /// IA32_TSC_AUX is offered to guests, so it is switched with their extended state.
    tsc_aux: bool,
    /// I/O bitmaps: A (ports 0-0x7FFF) and B (0x8000-0xFFFF) intercept every port;
    /// dom0's A leaves out the ports dom0 owns (none of them is above 0x7FFF).
    io_bitmap_a: Pfn,
    io_bitmap_b: Pfn,
    dom0_io_bitmap_a: Pfn,
    /// The exit profile's stamps around VMLAUNCH/VMRESUME.
    stamps: SwitchStamps,
}

/// Boot-pool frames the backend takes: the VMXON region and three I/O bitmaps.
pub const POOL_FRAMES_NEEDED: u64 = 4;

/// One VMX vCPU.
pub struct VmxVcpu {
    vmcs: Pfn,
    regs: GuestRegs,
    launched: bool,
    eptp: u64,
    flush: bool,
    exit_length: u64,
    reinject: Option<(u32, u32, u64)>,
    kernel_gs_base: u64,
    star: u64,
    lstar: u64,
    cstar: u64,
    sfmask: u64,
    /// Entry controls (IA-32e mode follows EFER.LMA).
    entry_controls: EntryControls,
    /// The virtual TPR that CR8 reads and writes (they exit).
    tpr: u8,
    /// x87/SSE, debug registers and CR2 while another vCPU's are in the CPU.
    ext: Box<ExtendedState>,
}

impl Vmx {
    /// Enables VMX on the boot CPU. `pool` is the first of [`POOL_FRAMES_NEEDED`] zeroed
    /// boot-pool frames (VMXON region, I/O bitmaps).
    pub fn init(pool: Pfn, caps: &VmxCaps) -> Result<Self, VmxError> {
        let (io_bitmap_a, io_bitmap_b, dom0_io_bitmap_a) = (Pfn(pool.0 + 1), Pfn(pool.0 + 2), Pfn(pool.0 + 3));
        // SAFETY: the pool frames are ours, lie in the linear map and nothing refers to them yet.
        unsafe {
            for f in [io_bitmap_a, io_bitmap_b, dom0_io_bitmap_a] {
                core::ptr::write_bytes(phys::frame_ptr(f), 0xFF, 4096);
            }
            crate::policy::devices::grant_dom0_ports(core::slice::from_raw_parts_mut(phys::frame_ptr(dom0_io_bitmap_a), 4096));
        }
        // SAFETY: CPUID reported VMX, so these MSRs exist; CR0/CR4 updates follow the fixed
        // bits the CPU reports, which is what VMXON requires.
        unsafe {
            let fc = rdmsr(msr::IA32_FEATURE_CONTROL);
            if fc & caps::FEATURE_CONTROL_LOCKED == 0 {
                wrmsr(msr::IA32_FEATURE_CONTROL, fc | caps::FEATURE_CONTROL_LOCKED | caps::FEATURE_CONTROL_VMX_OUTSIDE_SMX);
            } else if fc & caps::FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
                return Err(VmxError::DisabledByFirmware);
            }
            let f = Fixed {
                cr0_0: rdmsr(msr::IA32_VMX_CR0_FIXED0),
                cr0_1: rdmsr(msr::IA32_VMX_CR0_FIXED1),
                cr4_0: rdmsr(msr::IA32_VMX_CR4_FIXED0),
                cr4_1: rdmsr(msr::IA32_VMX_CR4_FIXED1),
            };
            FIXED.call_once(|| f);
            // Caches on (the bootloader leaves CD/NW set), NE and the fixed bits.
            let cache_off = (Cr0Flags::NOT_WRITE_THROUGH | Cr0Flags::CACHE_DISABLE).bits();
            let c0 = ((x86::read_cr0() & !cache_off) | f.cr0_0) & f.cr0_1;
            x86::write_cr0(c0);
            x86::write_cr4((x86::read_cr4() | Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits() | f.cr4_0) & f.cr4_1);
            core::ptr::write_volatile(phys::frame_ptr(pool) as *mut u32, caps.revision);
            vmxon(pool.addr()).map_err(VmxError::Vmxon)?;
        }
        let ControlCaps { pin: pin_cap, proc: proc_cap, proc2: proc2_cap, exit: exit_cap, entry: entry_cap, .. } =
            ControlCaps::read();
        let preemption = if caps.preemption_timer { PinControls::PREEMPTION_TIMER } else { PinControls::empty() };
        let vpid = if caps.vpid { Proc2Controls::ENABLE_VPID } else { Proc2Controls::empty() };
        let controls = Controls {
            pin: PinControls::from_bits_retain(adjust(
                (PinControls::EXTERNAL_INTERRUPT_EXITING | PinControls::NMI_EXITING | preemption).bits(),
                pin_cap,
            )),
            proc: ProcControls::from_bits_retain(adjust(
                (ProcControls::HLT_EXITING
                    | ProcControls::MWAIT_EXITING
                    | ProcControls::RDPMC_EXITING
                    | ProcControls::CR8_LOAD_EXITING
                    | ProcControls::CR8_STORE_EXITING
                    | ProcControls::MONITOR_EXITING
                    | ProcControls::USE_IO_BITMAPS
                    | ProcControls::USE_TSC_OFFSETTING
                    | ProcControls::SECONDARY_CONTROLS)
                    .bits(),
                proc_cap,
            )),
            proc2: Proc2Controls::from_bits_retain(adjust(
                (Proc2Controls::ENABLE_EPT | Proc2Controls::ENABLE_RDTSCP | Proc2Controls::ENABLE_INVPCID | vpid).bits(),
                proc2_cap,
            )),
            exit: ExitControls::from_bits_retain(adjust(
                (ExitControls::SAVE_DEBUG_CONTROLS
                    | ExitControls::HOST_ADDRESS_SPACE_64
                    | ExitControls::SAVE_PREEMPTION_TIMER
                    | ExitControls::SAVE_PAT
                    | ExitControls::LOAD_PAT
                    | ExitControls::SAVE_EFER
                    | ExitControls::LOAD_EFER)
                    .bits(),
                exit_cap,
            )),
            entry: EntryControls::from_bits_retain(adjust(
                (EntryControls::LOAD_DEBUG_CONTROLS
                    | EntryControls::IA32E_MODE_GUEST
                    | EntryControls::LOAD_PAT
                    | EntryControls::LOAD_EFER)
                    .bits(),
                entry_cap,
            )),
        };
        let need = |ok: bool, what| if ok { Ok(()) } else { Err(VmxError::MissingControl(what)) };
        let (p, q) = (controls.proc, controls.proc2);
        need(controls.pin.contains(PinControls::EXTERNAL_INTERRUPT_EXITING), "external-interrupt exiting")?;
        need(p.contains(ProcControls::HLT_EXITING), "HLT exiting")?;
        need(p.contains(ProcControls::USE_IO_BITMAPS), "I/O bitmaps")?;
        need(p.contains(ProcControls::USE_TSC_OFFSETTING), "TSC offsetting")?;
        need(!p.contains(ProcControls::USE_MSR_BITMAPS), "MSR exiting")?;
        // Each vCPU's TPR is virtual: CR8 accesses exit instead of reaching the local APIC.
        need(p.contains(ProcControls::CR8_LOAD_EXITING | ProcControls::CR8_STORE_EXITING), "CR8 exiting")?;
        need(!p.contains(ProcControls::USE_TPR_SHADOW), "CR8 exiting without a TPR shadow")?;
        need(p.contains(ProcControls::RDPMC_EXITING), "RDPMC exiting")?;
        need(
            controls.exit.contains(ExitControls::SAVE_DEBUG_CONTROLS) && controls.entry.contains(EntryControls::LOAD_DEBUG_CONTROLS),
            "DR7 switching",
        )?;
        need(p.contains(ProcControls::SECONDARY_CONTROLS), "secondary controls")?;
        need(q.contains(Proc2Controls::ENABLE_EPT), "EPT")?;
        need(controls.exit.contains(ExitControls::HOST_ADDRESS_SPACE_64), "64-bit host")?;
        need(controls.exit.contains(ExitControls::LOAD_EFER) && controls.entry.contains(EntryControls::LOAD_EFER), "EFER switching")?;
        need(controls.entry.contains(EntryControls::IA32E_MODE_GUEST), "IA-32e guests")?;
        need(!p.intersects(ProcControls::CR3_LOAD_EXITING | ProcControls::CR3_STORE_EXITING), "CR3 pass-through")?;
        let invept_kind = if caps.invept_single { INVEPT_SINGLE } else { INVEPT_ALL };
        // The VMX-preemption timer counts TSC >> rate; with "save" on exit a slice keeps
        // counting across exits. Without both, preemption falls back to the APIC timer.
        // SAFETY: CPUID reported VMX, so IA32_VMX_MISC exists.
        let rate = unsafe { rdmsr(msr::IA32_VMX_MISC) } & caps::MISC_PREEMPTION_RATE_MASK;
        let preemption_rate = (controls.pin.contains(PinControls::PREEMPTION_TIMER)
            && controls.exit.contains(ExitControls::SAVE_PREEMPTION_TIMER))
            .then_some(rate as u32);
        log::info!(
            "vmx: pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}",
            controls.pin.bits(),
            controls.proc.bits(),
            controls.proc2.bits(),
            controls.exit.bits(),
            controls.entry.bits()
        );
        Ok(Self {
            revision: caps.revision,
            controls,
            vpid: controls.proc2.contains(Proc2Controls::ENABLE_VPID),
            invept_kind,
            preemption_rate,
            cr4_mask: CR4_MASK_ALL,
            tsc_aux: false,
            io_bitmap_a,
            io_bitmap_b,
            dom0_io_bitmap_a,
            stamps: SwitchStamps::default(),
        })
    }

    fn write_host_state(&self) {
        // SAFETY: reading the host's own registers and MSRs.
        let (efer_v, pat, fs, gs) = unsafe {
            (rdmsr(msr::IA32_EFER), rdmsr(msr::IA32_PAT), rdmsr(msr::IA32_FS_BASE), rdmsr(msr::IA32_GS_BASE))
        };
        write(HOST_CR0, x86::read_cr0());
        write(HOST_CR3, x86::read_cr3());
        write(HOST_CR4, x86::read_cr4());
        write(HOST_CS_SELECTOR, KERNEL_CS as u64);
        for f in [HOST_SS_SELECTOR, HOST_DS_SELECTOR, HOST_ES_SELECTOR] {
            write(f, KERNEL_DS as u64);
        }
        write(HOST_FS_SELECTOR, 0);
        write(HOST_GS_SELECTOR, 0);
        write(HOST_TR_SELECTOR, TSS_SELECTOR as u64);
        write(HOST_FS_BASE, fs);
        write(HOST_GS_BASE, gs);
        write(HOST_TR_BASE, tss_base());
        write(HOST_GDTR_BASE, gdt_base());
        write(HOST_IDTR_BASE, idt_base());
        write(HOST_SYSENTER_CS, 0);
        write(HOST_SYSENTER_ESP, 0);
        write(HOST_SYSENTER_EIP, 0);
        write(HOST_IA32_EFER, efer_v);
        write(HOST_IA32_PAT, pat);
        write(HOST_RIP, cowvisor_vmx_exit as *const () as u64);
    }
}

/// The VMX capability MSRs: IA32_VMX_BASIC and the allowed settings of each control word
/// (the TRUE_* MSRs where BASIC says they exist).
pub struct ControlCaps {
    pub basic: u64,
    pub pin: u64,
    pub proc: u64,
    /// 0 when secondary controls cannot be enabled.
    pub proc2: u64,
    pub exit: u64,
    pub entry: u64,
}

impl ControlCaps {
    /// Reads them; only on a CPU whose CPUID reports VMX.
    pub fn read() -> Self {
        // SAFETY: CPUID reported VMX (callers run only then), so the capability MSRs exist;
        // PROCBASED_CTLS2 is read only when secondary controls may be enabled.
        unsafe {
            let basic = rdmsr(msr::IA32_VMX_BASIC);
            let t = basic & caps::BASIC_TRUE_CONTROLS != 0;
            let proc = rdmsr(if t { msr::IA32_VMX_TRUE_PROCBASED_CTLS } else { msr::IA32_VMX_PROCBASED_CTLS });
            let secondary = ProcControls::from_bits_retain((proc >> caps::ALLOWED_ONE_SHIFT) as u32)
                .contains(ProcControls::SECONDARY_CONTROLS);
            Self {
                basic,
                pin: rdmsr(if t { msr::IA32_VMX_TRUE_PINBASED_CTLS } else { msr::IA32_VMX_PINBASED_CTLS }),
                proc,
                proc2: if secondary { rdmsr(msr::IA32_VMX_PROCBASED_CTLS2) } else { 0 },
                exit: rdmsr(if t { msr::IA32_VMX_TRUE_EXIT_CTLS } else { msr::IA32_VMX_EXIT_CTLS }),
                entry: rdmsr(if t { msr::IA32_VMX_TRUE_ENTRY_CTLS } else { msr::IA32_VMX_ENTRY_CTLS }),
            }
        }
    }
}

impl Backend for Vmx {
    type Vcpu = VmxVcpu;
    type Format = Ept;
    const NAME: &'static str = "vmx-ept";
    const CALL_INSN: CallInsn = CallInsn::Vmcall;

    fn apply_policy(&mut self, policy: &Policy) {
        self.cr4_mask = !policy.cr4_allowed | Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits();
        self.tsc_aux = policy.tsc_aux;
    }

    fn create_vcpu(&mut self, ft: &mut FrameTable<'_>, ctx: &VcpuContext, root: Pfn, domid: u32) -> Result<VmxVcpu, VcpuError> {
        let (frame, zeroed) = ft.alloc_zeroed(FrameKind::Hypervisor, OWNER_HYPERVISOR).map_err(|_| VcpuError::OutOfMemory)?;
        if !zeroed {
            phys::zero_frame(frame);
        }
        // SAFETY: the frame is ours; the first word of a VMCS region is the revision.
        unsafe {
            core::ptr::write_volatile(phys::frame_ptr(frame) as *mut u32, self.revision);
            if let Err(e) = vmclear(frame.addr()) {
                log::error!("vmclear failed: {e:?}");
            }
        }
        CURRENT_VMCS.store(NO_VMCS, Ordering::Relaxed);
        make_current(frame);
        let c = self.controls;
        write(PIN_BASED_CONTROLS, u64::from(c.pin.bits()));
        write(PROC_BASED_CONTROLS, u64::from(c.proc.bits()));
        write(SECONDARY_CONTROLS, u64::from(c.proc2.bits()));
        write(EXIT_CONTROLS, u64::from(c.exit.bits()));
        write(ENTRY_CONTROLS, u64::from(c.entry.bits()));
        write(EXCEPTION_BITMAP, u64::from(vector::INTERCEPTED));
        write(PAGE_FAULT_ERROR_MASK, 0);
        write(PAGE_FAULT_ERROR_MATCH, 0);
        write(CR3_TARGET_COUNT, 0);
        write(EXIT_MSR_STORE_COUNT, 0);
        write(EXIT_MSR_LOAD_COUNT, 0);
        write(ENTRY_MSR_LOAD_COUNT, 0);
        write(TSC_OFFSET, 0);
        write(IO_BITMAP_A, self.io_bitmap_a.addr());
        write(IO_BITMAP_B, self.io_bitmap_b.addr());
        if self.vpid {
            write(VPID, (domid % 0xFFFF) as u64 + 1);
        }
        let eptp = root.addr() | EPTP_WB_4LEVEL;
        write(EPT_POINTER, eptp);
        write(CR0_GUEST_HOST_MASK, CR0_MASK);
        write(CR4_GUEST_HOST_MASK, self.cr4_mask);
        write(VMCS_LINK_POINTER, u64::MAX);
        self.write_host_state();
        let mut v = VmxVcpu {
            vmcs: frame,
            regs: GuestRegs::default(),
            launched: false,
            eptp,
            flush: true,
            exit_length: 0,
            reinject: None,
            kernel_gs_base: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            entry_controls: c.entry,
            tpr: 0,
            ext: Box::new(ExtendedState::default()),
        };
        v.set_context(ctx);
        Ok(v)
    }

    fn pass_through_ports(&mut self, v: &mut VmxVcpu) {
        make_current(v.vmcs);
        write(IO_BITMAP_A, self.dom0_io_bitmap_a.addr());
    }

    fn arm_preemption(&mut self, v: &mut VmxVcpu, ns: u64, tsc_khz: u64) -> bool {
        let Some(rate) = self.preemption_rate else { return false };
        let ticks = (ns as u128 * tsc_khz as u128 / 1_000_000) >> rate;
        make_current(v.vmcs);
        write(GUEST_PREEMPTION_TIMER, ticks.clamp(1, u32::MAX as u128) as u64);
        true
    }

    fn destroy_vcpu(&mut self, ft: &mut FrameTable<'_>, v: VmxVcpu) {
        let pa = v.vmcs.addr();
        // SAFETY: the VMCS is ours; VMCLEAR flushes the CPU's cached copy before the frame
        // is reused.
        if let Err(e) = unsafe { vmclear(pa) } {
            log::error!("vmclear on destroy failed: {e:?}");
        }
        if CURRENT_VMCS.load(Ordering::Relaxed) == pa {
            CURRENT_VMCS.store(NO_VMCS, Ordering::Relaxed);
        }
        extended::forget(&v.ext);
        if let Err(e) = ft.free(v.vmcs) {
            log::error!("freeing a VMCS failed: {e:?}");
        }
    }

    fn save_extended(&mut self, v: &mut VmxVcpu) {
        // SAFETY: IA32_KERNEL_GS_BASE exists on every 64-bit CPU; reading it has no effect.
        v.kernel_gs_base = unsafe { rdmsr(msr::IA32_KERNEL_GS_BASE) };
        extended::save(&mut v.ext, true);
    }

    fn set_switch_stamps(&mut self, on: bool) {
        self.stamps.on = on;
    }

    fn switch_stamps(&self) -> Option<(u64, u64)> {
        self.stamps.get()
    }

    fn load_extended(&mut self, v: &VmxVcpu) {
        extended::load(&v.ext, true, self.tsc_aux);
        // SAFETY: these MSRs only affect SYSCALL/SWAPGS, which the hypervisor never uses, so
        // they can hold the guest's values; the values passed the policy's checks
        // (canonical addresses, SFMASK within 32 bits).
        unsafe {
            wrmsr(msr::IA32_KERNEL_GS_BASE, v.kernel_gs_base);
            wrmsr(msr::IA32_STAR, v.star);
            wrmsr(msr::IA32_LSTAR, v.lstar);
            wrmsr(msr::IA32_CSTAR, v.cstar);
            wrmsr(msr::IA32_FMASK, v.sfmask);
        }
    }

    fn run(&mut self, v: &mut VmxVcpu) -> Exit {
        make_current(v.vmcs);
        if v.flush {
            // SAFETY: VMX is on; the INVEPT kind was checked against the capabilities.
            if let Err(e) = unsafe { invept(self.invept_kind, v.eptp) } {
                log::error!("invept failed: {e:?}");
            }
            v.flush = false;
        }
        if let Some((info, err, len)) = v.reinject.take() {
            if !event::is_valid(vmread(ENTRY_INTERRUPTION_INFO) as u32) {
                write(ENTRY_INTERRUPTION_INFO, info as u64);
                write(ENTRY_EXCEPTION_ERROR, err as u64);
                write(ENTRY_INSTRUCTION_LENGTH, len);
            }
        }
        spec::before_entry();
        self.stamps.enter();
        // SAFETY: the current VMCS is this vCPU's, fully initialized; the stub saves and
        // restores every register and returns here on exit or failure.
        let failed = unsafe { cowvisor_vmx_run(&mut v.regs, v.launched as u64) };
        self.stamps.exit();
        if failed != 0 {
            let error = vmread(VM_INSTRUCTION_ERROR) as u32;
            log::error!(
                "vm entry failed ({}), instruction error {error}: launched {} entry-info {:#x} entry-err {:#x} entry-len {} \
                 pin {:#x} proc {:#x} proc2 {:#x} entry {:#x} exit {:#x} vpid {} eptp {:#x} timer {} vmcs {:#x}",
                if failed == 1 { "invalid" } else { "valid" },
                v.launched,
                vmread(ENTRY_INTERRUPTION_INFO),
                vmread(ENTRY_EXCEPTION_ERROR),
                vmread(ENTRY_INSTRUCTION_LENGTH),
                vmread(PIN_BASED_CONTROLS),
                vmread(PROC_BASED_CONTROLS),
                vmread(SECONDARY_CONTROLS),
                vmread(ENTRY_CONTROLS),
                vmread(EXIT_CONTROLS),
                vmread(VPID),
                vmread(EPT_POINTER),
                vmread(GUEST_PREEMPTION_TIMER),
                v.vmcs.addr()
            );
            return Exit::InvalidState(0x1000 | error);
        }
        v.launched = true;
        write(ENTRY_INTERRUPTION_INFO, 0);
        let reason = vmread(EXIT_REASON) as u32;
        if reason & EXIT_REASON_ENTRY_FAILURE != 0 {
            v.launched = false;
            return Exit::InvalidState(reason & 0xFFFF);
        }
        v.exit_length = vmread(EXIT_INSTRUCTION_LENGTH);
        let idt = vmread(IDT_VECTORING_INFO) as u32;
        if event::is_valid(idt) {
            let err = if idt & EventInfo::ERROR_CODE.bits() != 0 { vmread(IDT_VECTORING_ERROR) as u32 } else { 0 };
            v.reinject = Some((idt, err, v.exit_length));
        }
        let q = vmread(EXIT_QUALIFICATION);
        match reason & 0xFFFF {
            reason::VMCALL => Exit::Hypercall,
            reason::EPT_VIOLATION => {
                let f = EptViolation::from_bits_truncate(q);
                Exit::NestedPageFault {
                    gpa: vmread(GUEST_PHYSICAL_ADDRESS),
                    write: f.contains(EptViolation::WRITE),
                    fetch: f.contains(EptViolation::FETCH),
                }
            }
            reason::EXTERNAL_INTERRUPT => Exit::ExternalInterrupt,
            reason::EXCEPTION_OR_NMI if vmread(EXIT_INTERRUPTION_INFO) as u32 & event_type::MASK == event_type::NMI => {
                Exit::ExternalInterrupt
            }
            reason::EXCEPTION_OR_NMI => {
                let info = vmread(EXIT_INTERRUPTION_INFO) as u32;
                let vector = info as u8;
                let error = (info & EventInfo::ERROR_CODE.bits() != 0).then(|| vmread(EXIT_INTERRUPTION_ERROR) as u32);
                if vector == vector::DB {
                    // A #DB that exits leaves DR6 alone and reports its bits here; the guest
                    // owns the CPU's DR6 while it runs, so put them where it will look.
                    extended::write_dr6(crate::vcpu::DR6_RESET | (q & DR6_EXIT_BITS));
                }
                Exit::Exception { vector, error }
            }
            reason::INTERRUPT_WINDOW => Exit::InterruptWindow,
            reason::CPUID => Exit::Cpuid,
            reason::HLT => Exit::Hlt,
            reason::IO => {
                let f = IoQualification::from_bits_truncate(q);
                Exit::Io {
                    port: (q >> 16) as u16,
                    size: (q & 7) as u8 + 1,
                    write: !f.contains(IoQualification::IN),
                    string: f.contains(IoQualification::STRING),
                }
            }
            reason::PREEMPTION_TIMER => Exit::ExternalInterrupt,
            reason::RDMSR => Exit::Rdmsr,
            reason::WRMSR => Exit::Wrmsr,
            reason::TRIPLE_FAULT => Exit::TripleFault,
            reason::CR_ACCESS => {
                let cr = (q & cr_access::CR_MASK) as u8;
                let access = (q >> cr_access::TYPE_SHIFT) & cr_access::TYPE_MASK;
                let reg = ((q >> cr_access::GPR_SHIFT) & cr_access::GPR_MASK) as u8;
                match (access, cr) {
                    (cr_access::MOV_TO, 0 | 4 | 8) => Exit::ControlRegisterWrite { cr, value: v.gpr(reg) },
                    (cr_access::MOV_FROM, 8) => Exit::Cr8Read { gpr: reg },
                    (cr_access::CLTS, _) => Exit::ControlRegisterWrite { cr: 0, value: clts_value(v.guest_cr0()) },
                    (cr_access::LMSW, _) => {
                        let value = lmsw_value(v.guest_cr0(), q >> cr_access::LMSW_SOURCE_SHIFT);
                        Exit::ControlRegisterWrite { cr: 0, value }
                    }
                    _ => Exit::Unhandled(0x1C_0000 | q),
                }
            }
            reason::RDPMC => Exit::Rdpmc,
            reason::VMCLEAR..=reason::VMXON
            | reason::INVEPT
            | reason::INVVPID
            | reason::GETSEC
            | reason::INVD
            | reason::MWAIT
            | reason::MONITOR
            | reason::XSETBV
            | reason::INVPCID
            | reason::VMFUNC => Exit::InvalidInstruction,
            reason::EPT_MISCONFIG => {
                log::error!("EPT misconfiguration at gpa {:#x}", vmread(GUEST_PHYSICAL_ADDRESS));
                Exit::Unhandled(reason as u64)
            }
            other => Exit::Unhandled(other as u64),
        }
    }
}

impl VmxVcpu {
    /// CR0 as the guest sees it (masked bits from the read shadow).
    fn guest_cr0(&self) -> u64 {
        (vmread(GUEST_CR0) & !CR0_MASK) | (vmread(CR0_READ_SHADOW) & CR0_MASK)
    }

    /// KERNEL_GS_BASE: the CPU's copy while this vCPU holds the CPU (`swapgs` changes it
    /// without an exit), the saved one otherwise.
    fn kernel_gs_base(&self) -> u64 {
        if extended::holds(&self.ext) {
            // SAFETY: reading an MSR every 64-bit CPU has.
            unsafe { rdmsr(msr::IA32_KERNEL_GS_BASE) }
        } else {
            self.kernel_gs_base
        }
    }

    fn segment(sel: u64, base: u64, limit: u64, ar: u64) -> Segment {
        Segment {
            selector: vmread(sel) as u16,
            attrs: attrs_from_vmx(vmread(ar) as u32),
            limit: vmread(limit) as u32,
            base: vmread(base),
        }
    }

    fn set_segment(s: &Segment, sel: u64, base: u64, limit: u64, ar: u64) {
        write(sel, s.selector as u64);
        write(base, s.base);
        write(limit, s.limit as u64);
        write(ar, vmx_access_rights(s) as u64);
    }

    fn set_cr0(&mut self, value: u64) {
        let f = fixed();
        write(GUEST_CR0, (value | f.cr0_0) & f.cr0_1);
        write(CR0_READ_SHADOW, value);
    }

    fn set_cr4(&mut self, value: u64) {
        let f = fixed();
        write(GUEST_CR4, (value | f.cr4_0) & f.cr4_1);
        write(CR4_READ_SHADOW, value);
    }
}

impl Vcpu for VmxVcpu {
    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    fn rip(&self) -> u64 {
        make_current(self.vmcs);
        vmread(GUEST_RIP)
    }

    fn cpl(&self) -> u8 {
        make_current(self.vmcs);
        // CPL is SS.DPL (access-rights bits 5-6).
        ((vmread(GUEST_SS_ACCESS_RIGHTS) >> 5) & 3) as u8
    }

    fn code_segment(&self) -> Segment {
        make_current(self.vmcs);
        Self::segment(GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_ACCESS_RIGHTS)
    }

    fn gpr(&mut self, n: u8) -> u64 {
        match self.regs.get(n) {
            Some(v) => v,
            None => {
                make_current(self.vmcs);
                vmread(GUEST_RSP)
            }
        }
    }

    fn set_gpr(&mut self, n: u8, v: u64) {
        if !self.regs.set(n, v) {
            make_current(self.vmcs);
            write(GUEST_RSP, v);
        }
    }

    fn set_instruction_length(&mut self, bytes: u64) {
        self.exit_length = bytes;
    }

    fn tpr(&self) -> u8 {
        self.tpr
    }

    fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }

    fn set_rip(&mut self, rip: u64) {
        make_current(self.vmcs);
        write(GUEST_RIP, rip);
    }

    fn skip_instruction(&mut self) {
        make_current(self.vmcs);
        write(GUEST_RIP, vmread(GUEST_RIP) + self.exit_length);
        let i = vmread(GUEST_INTERRUPTIBILITY);
        if i & INTERRUPTIBILITY_BLOCKING != 0 {
            write(GUEST_INTERRUPTIBILITY, i & !INTERRUPTIBILITY_BLOCKING);
        }
    }

    fn interrupts_enabled(&self) -> bool {
        make_current(self.vmcs);
        vmread(GUEST_RFLAGS) & RFlags::INTERRUPT_FLAG.bits() != 0
    }

    fn interruptible(&self) -> bool {
        make_current(self.vmcs);
        vmread(GUEST_RFLAGS) & RFlags::INTERRUPT_FLAG.bits() != 0
            && vmread(GUEST_INTERRUPTIBILITY) & INTERRUPTIBILITY_BLOCKING == 0
            && !event::is_valid(vmread(ENTRY_INTERRUPTION_INFO) as u32)
            && self.reinject.is_none()
    }

    fn inject_interrupt(&mut self, vector: u8) {
        make_current(self.vmcs);
        write(ENTRY_INTERRUPTION_INFO, u64::from(event::interrupt(vector)));
    }

    fn inject_exception(&mut self, vector: u8, error: Option<u32>) {
        make_current(self.vmcs);
        if let Some(e) = error {
            write(ENTRY_EXCEPTION_ERROR, u64::from(e));
        }
        write(ENTRY_INTERRUPTION_INFO, u64::from(event::exception(vector, error.is_some())));
    }

    fn set_interrupt_window(&mut self, on: bool) {
        make_current(self.vmcs);
        let p = vmread(PROC_BASED_CONTROLS);
        let bit = u64::from(ProcControls::INTERRUPT_WINDOW_EXITING.bits());
        write(PROC_BASED_CONTROLS, if on { p | bit } else { p & !bit });
    }

    fn msr(&mut self, m: GuestMsr) -> u64 {
        make_current(self.vmcs);
        match m {
            GuestMsr::Efer => vmread(GUEST_IA32_EFER),
            GuestMsr::Pat => vmread(GUEST_IA32_PAT),
            GuestMsr::FsBase => vmread(GUEST_FS_BASE),
            GuestMsr::GsBase => vmread(GUEST_GS_BASE),
            GuestMsr::KernelGsBase => self.kernel_gs_base(),
            GuestMsr::Star => self.star,
            GuestMsr::Lstar => self.lstar,
            GuestMsr::Cstar => self.cstar,
            GuestMsr::Sfmask => self.sfmask,
            GuestMsr::SysenterCs => vmread(GUEST_SYSENTER_CS),
            GuestMsr::SysenterEsp => vmread(GUEST_SYSENTER_ESP),
            GuestMsr::SysenterEip => vmread(GUEST_SYSENTER_EIP),
            GuestMsr::TscAux => self.ext.tsc_aux,
        }
    }

    fn set_msr(&mut self, m: GuestMsr, v: u64) {
        make_current(self.vmcs);
        match m {
            GuestMsr::Efer => write(GUEST_IA32_EFER, v),
            GuestMsr::Pat => write(GUEST_IA32_PAT, v),
            GuestMsr::FsBase => write(GUEST_FS_BASE, v),
            GuestMsr::GsBase => write(GUEST_GS_BASE, v),
            GuestMsr::KernelGsBase => self.kernel_gs_base = v,
            GuestMsr::Star => self.star = v,
            GuestMsr::Lstar => self.lstar = v,
            GuestMsr::Cstar => self.cstar = v,
            GuestMsr::Sfmask => self.sfmask = v,
            GuestMsr::SysenterCs => write(GUEST_SYSENTER_CS, v),
            GuestMsr::SysenterEsp => write(GUEST_SYSENTER_ESP, v),
            GuestMsr::SysenterEip => write(GUEST_SYSENTER_EIP, v),
            GuestMsr::TscAux => return extended::set_tsc_aux(&mut self.ext, v),
        }
        let hw = match m {
            GuestMsr::KernelGsBase => msr::IA32_KERNEL_GS_BASE,
            GuestMsr::Star => msr::IA32_STAR,
            GuestMsr::Lstar => msr::IA32_LSTAR,
            GuestMsr::Cstar => msr::IA32_CSTAR,
            GuestMsr::Sfmask => msr::IA32_FMASK,
            _ => return,
        };
        if extended::holds(&self.ext) {
            // SAFETY: the CPU holds this vCPU's copies of these MSRs, which the hypervisor never
            // uses; the value passed the policy's checks.
            unsafe { wrmsr(hw, v) };
        }
    }

    fn set_control_register(&mut self, cr: u8, value: u64) {
        make_current(self.vmcs);
        match cr {
            0 => self.set_cr0(value),
            4 => self.set_cr4(value),
            _ => {}
        }
    }

    fn context(&mut self) -> VcpuContext {
        make_current(self.vmcs);
        let mut c = VcpuContext::default();
        self.regs.store(&mut c);
        c.rsp = vmread(GUEST_RSP);
        c.rip = vmread(GUEST_RIP);
        c.rflags = vmread(GUEST_RFLAGS);
        c.cr0 = self.guest_cr0();
        c.cr3 = vmread(GUEST_CR3);
        let cr4_mask = vmread(CR4_GUEST_HOST_MASK);
        c.cr4 = (vmread(GUEST_CR4) & !cr4_mask) | (vmread(CR4_READ_SHADOW) & cr4_mask);
        // CR2 is not in the VMCS: it travels with the extended state (the caller saved it).
        c.cr2 = self.ext.cr2;
        c.efer = vmread(GUEST_IA32_EFER);
        c.pat = vmread(GUEST_IA32_PAT);
        c.dr7 = vmread(GUEST_DR7);
        c.cs = Self::segment(GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_ACCESS_RIGHTS);
        c.ds = Self::segment(GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_ACCESS_RIGHTS);
        c.es = Self::segment(GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_ACCESS_RIGHTS);
        c.fs = Self::segment(GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_ACCESS_RIGHTS);
        c.gs = Self::segment(GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_ACCESS_RIGHTS);
        c.ss = Self::segment(GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_ACCESS_RIGHTS);
        c.tr = Self::segment(GUEST_TR_SELECTOR, GUEST_TR_BASE, GUEST_TR_LIMIT, GUEST_TR_ACCESS_RIGHTS);
        c.ldtr = Self::segment(GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_ACCESS_RIGHTS);
        c.gdtr_base = vmread(GUEST_GDTR_BASE);
        c.gdtr_limit = vmread(GUEST_GDTR_LIMIT) as u32;
        c.idtr_base = vmread(GUEST_IDTR_BASE);
        c.idtr_limit = vmread(GUEST_IDTR_LIMIT) as u32;
        c.sysenter_cs = vmread(GUEST_SYSENTER_CS);
        c.sysenter_esp = vmread(GUEST_SYSENTER_ESP);
        c.sysenter_eip = vmread(GUEST_SYSENTER_EIP);
        c.kernel_gs_base = self.kernel_gs_base();
        c.star = self.star;
        c.lstar = self.lstar;
        c.cstar = self.cstar;
        c.sfmask = self.sfmask;
        c.cr8 = u64::from(self.tpr);
        c.tsc_aux = self.ext.tsc_aux;
        c
    }

    fn set_context(&mut self, c: &VcpuContext) {
        make_current(self.vmcs);
        self.regs = GuestRegs::from_context(c);
        write(GUEST_RSP, c.rsp);
        write(GUEST_RIP, c.rip);
        write(GUEST_RFLAGS, c.rflags | RFLAGS_RESERVED_ONE);
        self.set_cr0(c.cr0);
        self.set_cr4(c.cr4);
        write(GUEST_CR3, c.cr3);
        write(GUEST_DR7, c.dr7);
        write(GUEST_IA32_EFER, c.efer);
        write(GUEST_IA32_PAT, c.pat);
        write(GUEST_IA32_DEBUGCTL, 0);
        let entry = if c.efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0 {
            self.entry_controls | EntryControls::IA32E_MODE_GUEST
        } else {
            self.entry_controls - EntryControls::IA32E_MODE_GUEST
        };
        write(ENTRY_CONTROLS, u64::from(entry.bits()));
        Self::set_segment(&c.cs, GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_ACCESS_RIGHTS);
        Self::set_segment(&c.ds, GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_ACCESS_RIGHTS);
        Self::set_segment(&c.es, GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_ACCESS_RIGHTS);
        Self::set_segment(&c.fs, GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_ACCESS_RIGHTS);
        Self::set_segment(&c.gs, GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_ACCESS_RIGHTS);
        Self::set_segment(&c.ss, GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_ACCESS_RIGHTS);
        Self::set_segment(&c.tr, GUEST_TR_SELECTOR, GUEST_TR_BASE, GUEST_TR_LIMIT, GUEST_TR_ACCESS_RIGHTS);
        Self::set_segment(&c.ldtr, GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_ACCESS_RIGHTS);
        write(GUEST_GDTR_BASE, c.gdtr_base);
        write(GUEST_GDTR_LIMIT, c.gdtr_limit as u64);
        write(GUEST_IDTR_BASE, c.idtr_base);
        write(GUEST_IDTR_LIMIT, c.idtr_limit as u64);
        write(GUEST_SYSENTER_CS, c.sysenter_cs);
        write(GUEST_SYSENTER_ESP, c.sysenter_esp);
        write(GUEST_SYSENTER_EIP, c.sysenter_eip);
        write(GUEST_ACTIVITY_STATE, 0);
        write(GUEST_INTERRUPTIBILITY, 0);
        write(GUEST_PENDING_DEBUG, 0);
        write(ENTRY_INTERRUPTION_INFO, 0);
        self.kernel_gs_base = c.kernel_gs_base;
        self.star = c.star;
        self.lstar = c.lstar;
        self.cstar = c.cstar;
        self.sfmask = c.sfmask;
        self.ext.cr2 = c.cr2;
        self.ext.tsc_aux = c.tsc_aux;
        self.tpr = c.cr8 as u8;
        self.reinject = None;
        let p = vmread(PROC_BASED_CONTROLS);
        write(PROC_BASED_CONTROLS, p & !u64::from(ProcControls::INTERRUPT_WINDOW_EXITING.bits()));
    }

    fn flush_translations(&mut self) {
        self.flush = true;
    }

    fn extended(&self) -> &ExtendedState {
        &self.ext
    }

    fn extended_mut(&mut self) -> &mut ExtendedState {
        &mut self.ext
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        make_current(self.vmcs);
        write(TSC_OFFSET, offset);
    }
}

//! AMD SVM + NPT backend: VMCB setup from a vendor-neutral context, the world switch
//! (VMLOAD/VMRUN/VMSAVE with CLGI/STGI around it, general registers saved by hand), ASIDs
//! recycled by generation with a TLB flush on reuse, and exit decoding into [`Exit`].
//! No NRIPS is assumed (QEMU TCG has none): RIP is advanced by known instruction lengths.

mod vmcb;

use crate::arch::x86::{msr, rdmsr, wrmsr};
use crate::mm::frame::{FrameKind, FrameTable, OWNER_HYPERVISOR, Pfn};
use crate::mm::phys;
use crate::p2m::Npt;
use crate::arch::{event, extended, spec};
use crate::policy::Policy;
use crate::arch::stamps::SwitchStamps;
use crate::vcpu::{Backend, Exit, ExtendedState, GuestMsr, GuestRegs, Segment, Vcpu, VcpuContext, VcpuError, vector};
use alloc::boxed::Box;
use core::arch::global_asm;
use guest_abi::hypercall::CallInsn;
use guest_abi::vcpu::{EferFlags, RFLAGS_RESERVED_ONE, RFlags};
use vmcb::{
    CrIntercepts, INTERRUPT_SHADOW_ACTIVE, Intercepts1, Intercepts2, IoioInfo, MSR_INFO_WRITE, NpfInfo, VINTR_PRIO_MAX,
    VINTR_TPR_MASK, VIntr, Vmcb, ctl, exit, save,
};

bitflags::bitflags! {
    /// SVM features (CPUID 0x8000_000A EDX; AMD APM Vol 3 E.4.9).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SvmFeatures: u32 {
        const NESTED_PAGING = 1 << 0;
        const NRIP_SAVE = 1 << 3;
        const FLUSH_BY_ASID = 1 << 6;
        const DECODE_ASSISTS = 1 << 7;
    }
}

/// Frames of the I/O permission map (12 KiB).
pub const IOPM_FRAMES: u64 = 3;
/// Frames of the MSR permission map (8 KiB).
pub const MSRPM_FRAMES: u64 = 2;
/// A 64-bit TSS descriptor's type when available, and the bit that makes it busy (type 11).
const SEGMENT_TYPE_TSS_AVAILABLE: u16 = 0x9;
const SEGMENT_TYPE_TSS_BUSY_BIT: u16 = 0x2;

/// Boot-pool frames the backend takes: IOPM, MSRPM, host save area, host VMCB, dom0's IOPM.
pub const POOL_FRAMES_NEEDED: u64 = IOPM_FRAMES + MSRPM_FRAMES + 2 + IOPM_FRAMES;

/// TLB_CONTROL values (AMD APM Vol 2 15.16.1): nothing, flush everything, flush this ASID.
const TLB_CONTROL_NONE: u8 = 0;
const TLB_CONTROL_FLUSH_ALL: u8 = 1;
const TLB_CONTROL_FLUSH_ASID: u8 = 3;
/// Where EVENTINJ keeps the error code (bits 63:32).
const EVENTINJ_ERROR_SHIFT: u32 = 32;
/// Lengths of the instructions whose intercepts advance RIP without NRIP.
const VMMCALL_BYTES: u64 = 3;
const CPUID_BYTES: u64 = 2;
const HLT_BYTES: u64 = 1;
const RDMSR_WRMSR_BYTES: u64 = 2;

global_asm!(concat!(
    r#"
    .global cowvisor_svm_run
// rdi = guest VMCB physical address, rsi = &mut GuestRegs, rdx = host VMCB physical address.
// Host FS/GS/TR/LDTR/syscall MSRs were VMSAVEd to the host VMCB once at init.
cowvisor_svm_run:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdx
    push rsi
    push rdi
    clgi
    sti
    mov rax, rsi
"#,
    guest_regs_load!(),
    r#"    mov rax, [rsp]
    vmload rax
    vmrun rax
    vmsave rax
    mov rax, [rsp + 8]
"#,
    guest_regs_store!(),
    r#"    mov rax, [rsp + 16]
    vmload rax
    cli
    stgi
    add rsp, 24
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
"#
));

unsafe extern "C" {
    fn cowvisor_svm_run(guest_vmcb_pa: u64, regs: *mut GuestRegs, host_vmcb_pa: u64);
}

/// The SVM backend (one per machine; the boot CPU only).
pub struct Svm {
    iopm: Pfn,
    /// dom0's IOPM: like `iopm` but without intercepts on the ports dom0 owns.
    dom0_iopm: Pfn,
    msrpm: Pfn,
    host_vmcb: Vmcb,
    max_asid: u32,
    next_asid: u32,
    asid_generation: u64,
    flush_by_asid: bool,
    /// IA32_TSC_AUX is offered to guests, so it is switched with their extended state.
    tsc_aux: bool,
    /// The exit profile's stamps around VMRUN.
    stamps: SwitchStamps,
}

/// One SVM vCPU.
pub struct SvmVcpu {
    vmcb: Vmcb,
    regs: GuestRegs,
    asid: u32,
    asid_generation: u64,
    /// Flush this vCPU's translations at the next VMRUN.
    flush: bool,
    /// RIP after the instruction that caused the last exit, if known.
    next_rip: Option<u64>,
    /// An event whose delivery was interrupted by the last exit, to inject again.
    reinject: u64,
    /// x87/SSE and DR0-DR3 while another vCPU's are in the CPU (CR2 and DR6 are in the VMCB).
    ext: Box<ExtendedState>,
}

impl Svm {
    /// Turns SVM on and sets up the shared permission maps from `pool` (contiguous, zeroed
    /// boot-pool frames, at least [`POOL_FRAMES_NEEDED`]).
    pub fn init(pool: Pfn, asids: u32, flush_by_asid: bool) -> Self {
        let iopm = pool;
        let msrpm = Pfn(pool.0 + IOPM_FRAMES);
        let hsave = Pfn(msrpm.0 + MSRPM_FRAMES);
        let host_vmcb = Vmcb(Pfn(hsave.0 + 1));
        let dom0_iopm = Pfn(host_vmcb.0.0 + 1);
        // Intercept every port and every MSR: the hypervisor emulates what guests may use.
        // SAFETY: the pool frames are ours and lie in the linear map.
        unsafe {
            core::ptr::write_bytes(phys::frame_ptr(iopm), 0xFF, (IOPM_FRAMES * 4096) as usize);
            core::ptr::write_bytes(phys::frame_ptr(dom0_iopm), 0xFF, (IOPM_FRAMES * 4096) as usize);
            core::ptr::write_bytes(phys::frame_ptr(msrpm), 0xFF, (MSRPM_FRAMES * 4096) as usize);
        }
        // SAFETY: the three contiguous pool frames of dom0's IOPM are ours and nothing else
        // refers to them yet.
        let dom0_map = unsafe { core::slice::from_raw_parts_mut(phys::frame_ptr(dom0_iopm), (IOPM_FRAMES * 4096) as usize) };
        crate::policy::devices::grant_dom0_ports(dom0_map);
        // SAFETY: CPUID reported SVM (checked by the caller); enabling EFER.SVME and pointing
        // VM_HSAVE_PA at a zeroed page we own is the architected way to start it.
        unsafe {
            wrmsr(msr::IA32_EFER, rdmsr(msr::IA32_EFER) | EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits());
            wrmsr(msr::AMD_VM_HSAVE_PA, hsave.addr());
            core::arch::asm!("vmsave rax", in("rax") host_vmcb.pa(), options(nostack));
        }
        Self { iopm, dom0_iopm, msrpm, host_vmcb, max_asid: asids.max(2), next_asid: 1, asid_generation: 1, flush_by_asid, tsc_aux: false, stamps: SwitchStamps::default() }
    }

    fn assign_asid(&mut self, v: &mut SvmVcpu) {
        if v.asid_generation == self.asid_generation {
            return;
        }
        if self.next_asid >= self.max_asid {
            // Out of ASIDs: start a new generation; every vCPU gets a fresh ASID and a flush.
            self.asid_generation += 1;
            self.next_asid = 1;
        }
        v.asid = self.next_asid;
        v.asid_generation = self.asid_generation;
        self.next_asid += 1;
        v.flush = true;
    }
}

impl Backend for Svm {
    type Vcpu = SvmVcpu;
    type Format = Npt;
    const NAME: &'static str = "svm-npt";
    const CALL_INSN: CallInsn = CallInsn::Vmmcall;

    fn apply_policy(&mut self, policy: &Policy) {
        self.tsc_aux = policy.tsc_aux;
    }

    fn create_vcpu(&mut self, ft: &mut FrameTable<'_>, ctx: &VcpuContext, root: Pfn, _domid: u32) -> Result<SvmVcpu, VcpuError> {
        let (frame, zeroed) = ft.alloc_zeroed(FrameKind::Hypervisor, OWNER_HYPERVISOR).map_err(|_| VcpuError::OutOfMemory)?;
        if !zeroed {
            phys::zero_frame(frame);
        }
        let vmcb = Vmcb(frame);
        // CR0 and CR4 writes are vetted by the policy (long mode only, no hidden features).
        // CR8 is the virtual TPR (V_TPR, under V_INTR_MASKING): reads need no exit, writes
        // exit so the core sees an upcall the TPR held back become deliverable, as on VMX.
        vmcb.write::<u32>(ctl::INTERCEPT_CR, (CrIntercepts::WRITE_CR0 | CrIntercepts::WRITE_CR4 | CrIntercepts::WRITE_CR8).bits());
        vmcb.write::<u32>(ctl::INTERCEPT_EXCEPTIONS, vector::INTERCEPTED);
        let i1 = Intercepts1::INTR
            | Intercepts1::NMI
            | Intercepts1::SMI
            | Intercepts1::INIT
            | Intercepts1::CPUID
            | Intercepts1::INVD
            | Intercepts1::RDPMC
            | Intercepts1::HLT
            | Intercepts1::INVLPGA
            | Intercepts1::IOIO_PROT
            | Intercepts1::MSR_PROT
            | Intercepts1::SHUTDOWN;
        vmcb.write::<u32>(ctl::INTERCEPT_MISC1, i1.bits());
        // All of the virtualization instructions, and the monitor/mwait and XSETBV ones.
        vmcb.write::<u32>(ctl::INTERCEPT_MISC2, Intercepts2::all().bits());
        vmcb.write::<u64>(ctl::IOPM_BASE_PA, self.iopm.addr());
        vmcb.write::<u64>(ctl::MSRPM_BASE_PA, self.msrpm.addr());
        vmcb.write::<u64>(ctl::TSC_OFFSET, 0);
        vmcb.write::<u64>(ctl::VINTR, VIntr::V_INTR_MASKING.bits());
        vmcb.write::<u64>(ctl::NP_ENABLE, 1);
        vmcb.write::<u64>(ctl::N_CR3, root.addr());
        vmcb.write::<u32>(ctl::VMCB_CLEAN, 0);
        let mut v = SvmVcpu { vmcb, regs: GuestRegs::default(), asid: 0, asid_generation: 0, flush: true, next_rip: None, reinject: 0, ext: Box::new(ExtendedState::default()) };
        v.set_context(ctx);
        Ok(v)
    }

    fn pass_through_ports(&mut self, v: &mut SvmVcpu) {
        v.vmcb.write::<u64>(ctl::IOPM_BASE_PA, self.dom0_iopm.addr());
    }

    fn destroy_vcpu(&mut self, ft: &mut FrameTable<'_>, v: SvmVcpu) {
        extended::forget(&v.ext);
        if let Err(e) = ft.free(v.vmcb.0) {
            log::error!("freeing a VMCB failed: {e:?}");
        }
    }

    fn save_extended(&mut self, v: &mut SvmVcpu) {
        extended::save(&mut v.ext, false);
    }

    fn set_switch_stamps(&mut self, on: bool) {
        self.stamps.on = on;
    }

    fn switch_stamps(&self) -> Option<(u64, u64)> {
        self.stamps.get()
    }

    fn load_extended(&mut self, v: &SvmVcpu) {
        extended::load(&v.ext, false, self.tsc_aux);
    }

    fn run(&mut self, v: &mut SvmVcpu) -> Exit {
        self.assign_asid(v);
        let vmcb = v.vmcb;
        vmcb.write::<u32>(ctl::GUEST_ASID, v.asid);
        let tlb = if !v.flush {
            TLB_CONTROL_NONE
        } else if self.flush_by_asid {
            TLB_CONTROL_FLUSH_ASID
        } else {
            TLB_CONTROL_FLUSH_ALL
        };
        vmcb.write::<u8>(ctl::TLB_CONTROL, tlb);
        v.flush = false;
        if event::is_valid(v.reinject as u32) && !event::is_valid(vmcb.read::<u64>(ctl::EVENT_INJ) as u32) {
            vmcb.write::<u64>(ctl::EVENT_INJ, v.reinject);
        }
        v.reinject = 0;
        vmcb.write::<u64>(save::RAX, v.regs.rax);
        spec::before_entry();
        self.stamps.enter();
        // SAFETY: the VMCB is fully initialized for this vCPU, the host VMCB holds the host's
        // hidden state, and the stub saves/restores every register it touches.
        unsafe { cowvisor_svm_run(vmcb.pa(), &mut v.regs, self.host_vmcb.pa()) };
        self.stamps.exit();
        v.regs.rax = vmcb.read::<u64>(save::RAX);
        vmcb.write::<u8>(ctl::TLB_CONTROL, TLB_CONTROL_NONE);
        let int_info: u64 = vmcb.read(ctl::EXIT_INT_INFO);
        if event::is_valid(int_info as u32) {
            v.reinject = int_info;
        }
        let code: u64 = vmcb.read(ctl::EXIT_CODE);
        let info1: u64 = vmcb.read(ctl::EXIT_INFO1);
        let info2: u64 = vmcb.read(ctl::EXIT_INFO2);
        let rip: u64 = vmcb.read(save::RIP);
        v.next_rip = None;
        let len = |v: &mut SvmVcpu, n: u64| v.next_rip = Some(rip + n);
        match code {
            exit::VMMCALL => {
                len(v, VMMCALL_BYTES);
                Exit::Hypercall
            }
            exit::NPF => {
                let f = NpfInfo::from_bits_truncate(info1);
                Exit::NestedPageFault { gpa: info2, write: f.contains(NpfInfo::WRITE), fetch: f.contains(NpfInfo::FETCH) }
            }
            exit::INTR | exit::NMI | exit::SMI | exit::INIT => Exit::ExternalInterrupt,
            exit::VINTR => Exit::InterruptWindow,
            exit::CPUID => {
                len(v, CPUID_BYTES);
                Exit::Cpuid
            }
            exit::HLT => {
                len(v, HLT_BYTES);
                Exit::Hlt
            }
            exit::IOIO => {
                // EXITINFO2 holds the address of the next instruction.
                v.next_rip = Some(info2);
                let f = IoioInfo::from_bits_truncate(info1);
                let size = if f.contains(IoioInfo::SIZE_8) {
                    1
                } else if f.contains(IoioInfo::SIZE_16) {
                    2
                } else {
                    4
                };
                Exit::Io { port: (info1 >> 16) as u16, size, write: !f.contains(IoioInfo::IN), string: f.contains(IoioInfo::STRING) }
            }
            exit::MSR => {
                len(v, RDMSR_WRMSR_BYTES);
                if info1 & MSR_INFO_WRITE == 0 { Exit::Rdmsr } else { Exit::Wrmsr }
            }
            exit::SHUTDOWN => Exit::TripleFault,
            exit::WRITE_CR0 => Exit::ControlRegisterUndecoded { cr: 0 },
            exit::WRITE_CR4 => Exit::ControlRegisterUndecoded { cr: 4 },
            exit::WRITE_CR8 => Exit::ControlRegisterUndecoded { cr: 8 },
            exit::RDPMC => Exit::Rdpmc,
            c @ exit::EXCEPTION_0..=exit::EXCEPTION_31 => {
                let vector = (c - exit::EXCEPTION_0) as u8;
                // #AC pushes an error code (always 0); the VMCB has it in EXITINFO1.
                let error = (vector == vector::AC).then_some(info1 as u32);
                Exit::Exception { vector, error }
            }
            exit::VMRUN
            | exit::VMLOAD
            | exit::VMSAVE
            | exit::STGI
            | exit::CLGI
            | exit::SKINIT
            | exit::INVLPGA
            | exit::MONITOR
            | exit::MWAIT
            | exit::INVD
            | exit::XSETBV => Exit::InvalidInstruction,
            c if c & 0xFFFF_FFFF == exit::INVALID_LOW32 => Exit::InvalidState(c as u32),
            c => Exit::Unhandled(c),
        }
    }
}

impl Vcpu for SvmVcpu {
    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    fn rip(&self) -> u64 {
        self.vmcb.read(save::RIP)
    }

    fn cpl(&self) -> u8 {
        self.vmcb.read::<u8>(save::CPL) & 3
    }

    fn code_segment(&self) -> Segment {
        self.vmcb.segment(save::CS)
    }

    fn gpr(&mut self, n: u8) -> u64 {
        self.regs.get(n).unwrap_or_else(|| self.vmcb.read(save::RSP))
    }

    fn set_gpr(&mut self, n: u8, v: u64) {
        if !self.regs.set(n, v) {
            self.vmcb.write(save::RSP, v);
        }
    }

    fn set_instruction_length(&mut self, bytes: u64) {
        self.next_rip = Some(self.vmcb.read::<u64>(save::RIP).wrapping_add(bytes));
    }

    fn tpr(&self) -> u8 {
        (self.vmcb.read::<u64>(ctl::VINTR) & VINTR_TPR_MASK) as u8
    }

    fn set_tpr(&mut self, tpr: u8) {
        let vintr: u64 = self.vmcb.read(ctl::VINTR);
        self.vmcb.write(ctl::VINTR, (vintr & !VINTR_TPR_MASK) | (u64::from(tpr) & VINTR_TPR_MASK));
    }

    fn set_rip(&mut self, rip: u64) {
        self.vmcb.write::<u64>(save::RIP, rip);
    }

    fn skip_instruction(&mut self) {
        if let Some(next) = self.next_rip.take() {
            self.vmcb.write::<u64>(save::RIP, next);
            // Skipping an instruction ends an STI/MOV SS interrupt shadow.
            self.vmcb.write::<u64>(ctl::INTERRUPT_SHADOW, 0);
        }
    }

    fn interrupts_enabled(&self) -> bool {
        self.vmcb.read::<u64>(save::RFLAGS) & RFlags::INTERRUPT_FLAG.bits() != 0
    }

    fn interruptible(&self) -> bool {
        let rf: u64 = self.vmcb.read(save::RFLAGS);
        let shadow: u64 = self.vmcb.read(ctl::INTERRUPT_SHADOW);
        rf & RFlags::INTERRUPT_FLAG.bits() != 0
            && shadow & INTERRUPT_SHADOW_ACTIVE == 0
            && !event::is_valid(self.vmcb.read::<u64>(ctl::EVENT_INJ) as u32)
            && !event::is_valid(self.reinject as u32)
    }

    fn inject_interrupt(&mut self, vector: u8) {
        self.vmcb.write::<u64>(ctl::EVENT_INJ, u64::from(event::interrupt(vector)));
    }

    fn inject_exception(&mut self, vector: u8, error: Option<u32>) {
        let info = u64::from(event::exception(vector, error.is_some()));
        let code = u64::from(error.unwrap_or(0)) << EVENTINJ_ERROR_SHIFT;
        self.vmcb.write::<u64>(ctl::EVENT_INJ, info | code);
    }

    fn set_interrupt_window(&mut self, on: bool) {
        let mut vintr: u64 = self.vmcb.read(ctl::VINTR);
        let mut m1: u32 = self.vmcb.read(ctl::INTERCEPT_MISC1);
        let request = (VIntr::V_IRQ | VIntr::V_IGN_TPR).bits() | VINTR_PRIO_MAX;
        if on {
            vintr |= request;
            m1 |= Intercepts1::VINTR.bits();
        } else {
            vintr &= !request;
            m1 &= !Intercepts1::VINTR.bits();
        }
        self.vmcb.write(ctl::VINTR, vintr);
        self.vmcb.write(ctl::INTERCEPT_MISC1, m1);
    }

    fn msr(&mut self, m: GuestMsr) -> u64 {
        let vm = self.vmcb;
        match m {
            GuestMsr::Efer => vm.read(save::EFER),
            GuestMsr::Pat => vm.read(save::G_PAT),
            GuestMsr::FsBase => vm.read(save::FS + 8),
            GuestMsr::GsBase => vm.read(save::GS + 8),
            GuestMsr::KernelGsBase => vm.read(save::KERNEL_GS_BASE),
            GuestMsr::Star => vm.read(save::STAR),
            GuestMsr::Lstar => vm.read(save::LSTAR),
            GuestMsr::Cstar => vm.read(save::CSTAR),
            GuestMsr::Sfmask => vm.read(save::SFMASK),
            GuestMsr::SysenterCs => vm.read(save::SYSENTER_CS),
            GuestMsr::SysenterEsp => vm.read(save::SYSENTER_ESP),
            GuestMsr::SysenterEip => vm.read(save::SYSENTER_EIP),
            GuestMsr::TscAux => self.ext.tsc_aux,
        }
    }

    fn set_msr(&mut self, m: GuestMsr, v: u64) {
        let vm = self.vmcb;
        match m {
            // SVME must stay set in the guest's EFER or VMRUN fails.
            GuestMsr::Efer => vm.write(save::EFER, v | EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits()),
            GuestMsr::Pat => vm.write(save::G_PAT, v),
            GuestMsr::FsBase => vm.write(save::FS + 8, v),
            GuestMsr::GsBase => vm.write(save::GS + 8, v),
            GuestMsr::KernelGsBase => vm.write(save::KERNEL_GS_BASE, v),
            GuestMsr::Star => vm.write(save::STAR, v),
            GuestMsr::Lstar => vm.write(save::LSTAR, v),
            GuestMsr::Cstar => vm.write(save::CSTAR, v),
            GuestMsr::Sfmask => vm.write(save::SFMASK, v),
            GuestMsr::SysenterCs => vm.write(save::SYSENTER_CS, v),
            GuestMsr::SysenterEsp => vm.write(save::SYSENTER_ESP, v),
            GuestMsr::SysenterEip => vm.write(save::SYSENTER_EIP, v),
            GuestMsr::TscAux => extended::set_tsc_aux(&mut self.ext, v),
        }
    }

    fn set_control_register(&mut self, cr: u8, v: u64) {
        match cr {
            0 => self.vmcb.write(save::CR0, v),
            4 => self.vmcb.write(save::CR4, v),
            _ => {}
        }
    }

    fn context(&mut self) -> VcpuContext {
        let vm = self.vmcb;
        let mut c = VcpuContext::default();
        self.regs.store(&mut c);
        c.rsp = vm.read(save::RSP);
        c.rip = vm.read(save::RIP);
        c.rflags = vm.read(save::RFLAGS);
        c.cr0 = vm.read(save::CR0);
        c.cr2 = vm.read(save::CR2);
        c.cr3 = vm.read(save::CR3);
        c.cr4 = vm.read(save::CR4);
        c.efer = vm.read::<u64>(save::EFER) & !EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
        c.pat = vm.read(save::G_PAT);
        c.dr7 = vm.read(save::DR7);
        c.cs = vm.segment(save::CS);
        c.ds = vm.segment(save::DS);
        c.es = vm.segment(save::ES);
        c.fs = vm.segment(save::FS);
        c.gs = vm.segment(save::GS);
        c.ss = vm.segment(save::SS);
        c.tr = vm.segment(save::TR);
        // The task register always holds a busy TSS once loaded, but a VMCB may report the
        // descriptor's type from before LTR marked it busy (QEMU does): report it busy, as
        // the state a VMX entry (and a restore on Intel) requires.
        if c.tr.segment_type() == SEGMENT_TYPE_TSS_AVAILABLE {
            c.tr.attrs |= SEGMENT_TYPE_TSS_BUSY_BIT;
        }
        c.ldtr = vm.segment(save::LDTR);
        let gdtr = vm.segment(save::GDTR);
        let idtr = vm.segment(save::IDTR);
        (c.gdtr_base, c.gdtr_limit, c.idtr_base, c.idtr_limit) = (gdtr.base, gdtr.limit, idtr.base, idtr.limit);
        c.star = vm.read(save::STAR);
        c.lstar = vm.read(save::LSTAR);
        c.cstar = vm.read(save::CSTAR);
        c.sfmask = vm.read(save::SFMASK);
        c.kernel_gs_base = vm.read(save::KERNEL_GS_BASE);
        c.sysenter_cs = vm.read(save::SYSENTER_CS);
        c.sysenter_esp = vm.read(save::SYSENTER_ESP);
        c.sysenter_eip = vm.read(save::SYSENTER_EIP);
        c.cr8 = u64::from(self.tpr());
        c.tsc_aux = self.ext.tsc_aux;
        c
    }

    fn set_context(&mut self, c: &VcpuContext) {
        let vm = self.vmcb;
        self.regs = GuestRegs::from_context(c);
        vm.write(save::RSP, c.rsp);
        vm.write(save::RIP, c.rip);
        vm.write(save::RFLAGS, c.rflags | RFLAGS_RESERVED_ONE);
        vm.write(save::CR0, c.cr0);
        vm.write(save::CR2, c.cr2);
        vm.write(save::CR3, c.cr3);
        vm.write(save::CR4, c.cr4);
        vm.write(save::EFER, c.efer | EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits());
        vm.write(save::G_PAT, c.pat);
        vm.write(save::DR7, c.dr7);
        vm.write(save::DR6, crate::vcpu::DR6_RESET);
        vm.set_segment(save::CS, &c.cs);
        vm.set_segment(save::DS, &c.ds);
        vm.set_segment(save::ES, &c.es);
        vm.set_segment(save::FS, &c.fs);
        vm.set_segment(save::GS, &c.gs);
        vm.set_segment(save::SS, &c.ss);
        vm.set_segment(save::TR, &c.tr);
        vm.set_segment(save::LDTR, &c.ldtr);
        vm.set_segment(save::GDTR, &guest_abi::vcpu::Segment { selector: 0, attrs: 0, limit: c.gdtr_limit, base: c.gdtr_base });
        vm.set_segment(save::IDTR, &guest_abi::vcpu::Segment { selector: 0, attrs: 0, limit: c.idtr_limit, base: c.idtr_base });
        vm.write::<u8>(save::CPL, c.ss.dpl());
        vm.write(save::STAR, c.star);
        vm.write(save::LSTAR, c.lstar);
        vm.write(save::CSTAR, c.cstar);
        vm.write(save::SFMASK, c.sfmask);
        vm.write(save::KERNEL_GS_BASE, c.kernel_gs_base);
        vm.write(save::SYSENTER_CS, c.sysenter_cs);
        vm.write(save::SYSENTER_ESP, c.sysenter_esp);
        vm.write(save::SYSENTER_EIP, c.sysenter_eip);
        self.set_tpr(c.cr8 as u8);
        self.ext.tsc_aux = c.tsc_aux;
        vm.write::<u64>(ctl::EVENT_INJ, 0);
        vm.write::<u64>(ctl::INTERRUPT_SHADOW, 0);
        self.reinject = 0;
        self.next_rip = None;
        self.set_interrupt_window(false);
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
        self.vmcb.write::<u64>(ctl::TSC_OFFSET, offset);
    }
}

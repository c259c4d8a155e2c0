//! The vendor-neutral virtual CPU: normalized exit reasons, register access, and the traits
//! the VMX and SVM backends implement. The hypervisor core only speaks this interface, so it
//! runs unchanged on both vendors and against a mock in host tests.

use crate::mm::frame::{FrameTable, Pfn};
use crate::msr;
use crate::p2m::EntryFormat;
pub use guest_abi::vcpu::{Segment, VcpuContext};
use guest_abi::hypercall::CallInsn;

/// General-purpose registers the world switch saves and restores around guest execution
/// (RSP and RIP live in the VMCS/VMCB). Field order is ABI for the entry stubs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl GuestRegs {
    /// The registers of a context.
    pub fn from_context(c: &VcpuContext) -> Self {
        Self {
            rax: c.rax,
            rbx: c.rbx,
            rcx: c.rcx,
            rdx: c.rdx,
            rsi: c.rsi,
            rdi: c.rdi,
            rbp: c.rbp,
            r8: c.r8,
            r9: c.r9,
            r10: c.r10,
            r11: c.r11,
            r12: c.r12,
            r13: c.r13,
            r14: c.r14,
            r15: c.r15,
        }
    }

    /// General register `n` in the instruction encoding's order (RAX 0, RCX 1, RDX 2, RBX 3,
    /// RSP 4, RBP 5, RSI 6, RDI 7, R8-R15 8-15); RSP is not held here, so 4 gives `None`.
    pub fn get(&self, n: u8) -> Option<u64> {
        Some(match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => return None,
        })
    }

    /// Sets general register `n` (as in [`GuestRegs::get`]); false for RSP and out-of-range `n`.
    pub fn set(&mut self, n: u8, v: u64) -> bool {
        let r = match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return false,
        };
        *r = v;
        true
    }

    /// Copies the registers into a context.
    pub fn store(&self, c: &mut VcpuContext) {
        c.rax = self.rax;
        c.rbx = self.rbx;
        c.rcx = self.rcx;
        c.rdx = self.rdx;
        c.rsi = self.rsi;
        c.rdi = self.rdi;
        c.rbp = self.rbp;
        c.r8 = self.r8;
        c.r9 = self.r9;
        c.r10 = self.r10;
        c.r11 = self.r11;
        c.r12 = self.r12;
        c.r13 = self.r13;
        c.r14 = self.r14;
        c.r15 = self.r15;
    }
}

/// Why the guest stopped running, in vendor-neutral terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `vmcall`/`vmmcall`: a hypercall (RIP still points at the instruction).
    Hypercall,
    /// A second-level page fault (EPT violation / #NPF).
    NestedPageFault {
        /// Faulting guest-physical address.
        gpa: u64,
        /// The access was a write.
        write: bool,
        /// The access was an instruction fetch.
        fetch: bool,
    },
    /// Port I/O.
    Io {
        port: u16,
        /// Access size in bytes (1, 2, 4).
        size: u8,
        write: bool,
        /// INS/OUTS.
        string: bool,
    },
    /// CPUID.
    Cpuid,
    /// RDMSR.
    Rdmsr,
    /// WRMSR.
    Wrmsr,
    /// HLT.
    Hlt,
    /// The guest can take an interrupt now (requested with `set_interrupt_window`).
    InterruptWindow,
    /// A host interrupt arrived (preemption timer tick or a device).
    ExternalInterrupt,
    /// The guest hit a triple fault (shutdown).
    TripleFault,
    /// A virtualization instruction or another instruction the guest may not use.
    InvalidInstruction,
    /// A write to a control register that the hypervisor must vet, decoded by the CPU (VMX:
    /// MOV CR0/CR4/CR8, and CLTS/LMSW with the CR0 value they would produce).
    ControlRegisterWrite {
        /// 0, 4 or 8.
        cr: u8,
        /// The value the guest tried to write.
        value: u64,
    },
    /// A MOV from CR8 the CPU does not answer itself (VMX), answered from the virtual TPR.
    Cr8Read {
        /// Destination register, as in [`GuestRegs::get`].
        gpr: u8,
    },
    /// A write to CR0 or CR4 the CPU did not decode (SVM without decode assists): the core
    /// fetches the instruction at RIP and decodes it.
    ControlRegisterUndecoded {
        /// 0 or 4.
        cr: u8,
    },
    /// RDPMC: there are no performance counters for guests (#GP), and the host's must not leak.
    Rdpmc,
    /// An exception the hypervisor intercepts so that a guest cannot loop the CPU in
    /// microcode delivering it (#DB, #AC); it is reflected back into the guest.
    Exception {
        vector: u8,
        /// The error code, for vectors that push one.
        error: Option<u32>,
    },
    /// VM entry failed: the vCPU state is invalid.
    InvalidState(u32),
    /// An exit the hypervisor does not handle.
    Unhandled(u64),
}

/// The model-specific registers the hypervisor emulates for guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMsr {
    Efer,
    Pat,
    FsBase,
    GsBase,
    KernelGsBase,
    Star,
    Lstar,
    Cstar,
    Sfmask,
    SysenterCs,
    SysenterEsp,
    SysenterEip,
    /// IA32_TSC_AUX (RDTSCP/RDPID), kept in the vCPU's [`ExtendedState`].
    TscAux,
}

impl GuestMsr {
    /// The MSR for an index, if emulated.
    pub fn from_index(index: u32) -> Option<Self> {
        Some(match index {
            msr::IA32_EFER => Self::Efer,
            msr::IA32_PAT => Self::Pat,
            msr::IA32_FS_BASE => Self::FsBase,
            msr::IA32_GS_BASE => Self::GsBase,
            msr::IA32_KERNEL_GS_BASE => Self::KernelGsBase,
            msr::IA32_STAR => Self::Star,
            msr::IA32_LSTAR => Self::Lstar,
            msr::IA32_CSTAR => Self::Cstar,
            msr::IA32_FMASK => Self::Sfmask,
            msr::IA32_SYSENTER_CS => Self::SysenterCs,
            msr::IA32_SYSENTER_ESP => Self::SysenterEsp,
            msr::IA32_SYSENTER_EIP => Self::SysenterEip,
            msr::IA32_TSC_AUX => Self::TscAux,
            _ => return None,
        })
    }

    /// Reads the MSR from a context.
    pub fn get(self, c: &VcpuContext) -> u64 {
        match self {
            Self::Efer => c.efer,
            Self::Pat => c.pat,
            Self::FsBase => c.fs.base,
            Self::GsBase => c.gs.base,
            Self::KernelGsBase => c.kernel_gs_base,
            Self::Star => c.star,
            Self::Lstar => c.lstar,
            Self::Cstar => c.cstar,
            Self::Sfmask => c.sfmask,
            Self::SysenterCs => c.sysenter_cs,
            Self::SysenterEsp => c.sysenter_esp,
            Self::SysenterEip => c.sysenter_eip,
            Self::TscAux => c.tsc_aux,
        }
    }

    /// Writes the MSR into a context.
    pub fn set(self, c: &mut VcpuContext, v: u64) {
        match self {
            Self::Efer => c.efer = v,
            Self::Pat => c.pat = v,
            Self::FsBase => c.fs.base = v,
            Self::GsBase => c.gs.base = v,
            Self::KernelGsBase => c.kernel_gs_base = v,
            Self::Star => c.star = v,
            Self::Lstar => c.lstar = v,
            Self::Cstar => c.cstar = v,
            Self::Sfmask => c.sfmask = v,
            Self::SysenterCs => c.sysenter_cs = v,
            Self::SysenterEsp => c.sysenter_esp = v,
            Self::SysenterEip => c.sysenter_eip = v,
            Self::TscAux => c.tsc_aux = v,
        }
    }
}

/// Exceptions the hypervisor injects or intercepts (the `x86_64` crate's numbering).
pub mod vector {
    use x86_64::structures::idt::ExceptionVector;

    pub const DB: u8 = ExceptionVector::Debug as u8;
    pub const UD: u8 = ExceptionVector::InvalidOpcode as u8;
    pub const GP: u8 = ExceptionVector::GeneralProtection as u8;
    pub const AC: u8 = ExceptionVector::AlignmentCheck as u8;
    /// The exceptions both backends intercept, as an exception bitmap: #DB and #AC, which a
    /// guest could otherwise make the CPU deliver to itself forever (CVE-2015-8104,
    /// CVE-2015-5307); they are reflected back into the guest.
    pub const INTERCEPTED: u32 = 1 << DB | 1 << AC;
}

/// Bytes of an FXSAVE image (x87, MMX, SSE and MXCSR).
pub const FXSAVE_BYTES: usize = 512;
/// Offset of MXCSR in an FXSAVE image.
const FXSAVE_MXCSR_OFFSET: usize = 24;
/// x87 control word after FNINIT: all exceptions masked, 64-bit precision, round to nearest.
const FCW_RESET: u16 = 0x037F;
/// MXCSR at reset: all SIMD exceptions masked, round to nearest.
const MXCSR_RESET: u32 = 0x1F80;
/// DR6 at reset (reserved bits read as ones).
pub const DR6_RESET: u64 = 0xFFFF_0FF0;

/// Guest register state that the world switch does not carry: the x87/SSE registers (an
/// FXSAVE image), DR0-DR3 and DR6, IA32_TSC_AUX, and CR2 where the control block has no
/// field for it (VMX). The CPU holds one vCPU's copy at a time; it is swapped only when
/// another vCPU runs, so a domain never sees another's registers and the common exit path
/// pays nothing.
#[derive(Clone)]
#[repr(C, align(16))]
pub struct ExtendedState {
    pub fxsave: [u8; FXSAVE_BYTES],
    pub dr: [u64; 4],
    pub dr6: u64,
    pub cr2: u64,
    pub tsc_aux: u64,
}

impl Default for ExtendedState {
    /// The state of a CPU after reset: empty x87 stack, masked exceptions, zeroed registers.
    fn default() -> Self {
        let mut fxsave = [0u8; FXSAVE_BYTES];
        fxsave[..2].copy_from_slice(&FCW_RESET.to_le_bytes());
        fxsave[FXSAVE_MXCSR_OFFSET..FXSAVE_MXCSR_OFFSET + 4].copy_from_slice(&MXCSR_RESET.to_le_bytes());
        Self { fxsave, dr: [0; 4], dr6: DR6_RESET, cr2: 0, tsc_aux: 0 }
    }
}

impl ExtendedState {
    /// MXCSR as saved.
    pub fn mxcsr(&self) -> u32 {
        let b = &self.fxsave[FXSAVE_MXCSR_OFFSET..FXSAVE_MXCSR_OFFSET + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// One virtual CPU on a hardware backend.
pub trait Vcpu {
    /// The general-purpose registers (valid between exits).
    fn regs(&mut self) -> &mut GuestRegs;
    /// The instruction pointer.
    fn rip(&self) -> u64;
    /// The current privilege level (0 = guest kernel, 3 = guest user space).
    fn cpl(&self) -> u8;
    /// The code segment (its L bit tells 64-bit from compatibility mode).
    fn code_segment(&self) -> Segment;
    /// General register `n` (as in [`GuestRegs::get`], RSP included).
    fn gpr(&mut self, n: u8) -> u64;
    /// Sets general register `n` (RSP included).
    fn set_gpr(&mut self, n: u8, v: u64);
    /// Moves RIP past the instruction that caused the last exit.
    fn skip_instruction(&mut self);
    /// Sets RIP (puts a skipped instruction back, to be executed again).
    fn set_rip(&mut self, rip: u64);
    /// Sets the length of the instruction that caused the last exit, when the core decoded
    /// it itself ([`Exit::ControlRegisterUndecoded`]), for [`Vcpu::skip_instruction`].
    fn set_instruction_length(&mut self, bytes: u64);
    /// Whether an interrupt could be delivered now (IF set, no interrupt shadow).
    fn interruptible(&self) -> bool;
    /// RFLAGS.IF: the guest has interrupts enabled (an STI shadow aside).
    fn interrupts_enabled(&self) -> bool;
    /// Delivers an external interrupt at the next entry.
    fn inject_interrupt(&mut self, vector: u8);
    /// Delivers an exception at the next entry.
    fn inject_exception(&mut self, vector: u8, error: Option<u32>);
    /// Asks for an [`Exit::InterruptWindow`] as soon as the guest can take an interrupt
    /// (interrupts enabled, no shadow); the TPR is the core's business (CR8 writes exit).
    fn set_interrupt_window(&mut self, on: bool);
    /// The task priority (CR8, 0-15).
    fn tpr(&self) -> u8;
    /// Sets the task priority (already validated).
    fn set_tpr(&mut self, tpr: u8);
    /// Reads an emulated MSR.
    fn msr(&mut self, msr: GuestMsr) -> u64;
    /// Writes an emulated MSR (already validated by the caller).
    fn set_msr(&mut self, msr: GuestMsr, value: u64);
    /// Applies a vetted control-register write ([`Exit::ControlRegisterWrite`]).
    fn set_control_register(&mut self, cr: u8, value: u64);
    /// The complete state.
    fn context(&mut self) -> VcpuContext;
    /// Replaces the complete state.
    fn set_context(&mut self, ctx: &VcpuContext);
    /// Flushes the vCPU's cached guest-physical translations before its next entry.
    fn flush_translations(&mut self);
    /// The saved [`ExtendedState`] (current only while the CPU does not hold it).
    fn extended(&self) -> &ExtendedState;
    /// The saved [`ExtendedState`], to replace it (a clone takes its template's).
    fn extended_mut(&mut self) -> &mut ExtendedState;
    /// Sets what is added to the host TSC to give the guest's (wrapping).
    fn set_tsc_offset(&mut self, offset: u64);
}

/// Why a backend could not create a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuError {
    /// No frame for the control block.
    OutOfMemory,
}

/// A hardware virtualization backend (VMX+EPT or SVM+NPT).
pub trait Backend {
    /// The backend's vCPU.
    type Vcpu: Vcpu;
    /// The second-level entry format it uses.
    type Format: EntryFormat;
    /// `vmx-ept` or `svm-npt`.
    const NAME: &'static str;
    /// The hypercall instruction guests must use.
    const CALL_INSN: CallInsn;

    /// Adopts the guest policy (which CR4 bits guests own, for instance) before any vCPU exists.
    fn apply_policy(&mut self, _policy: &crate::policy::Policy) {}

    /// Creates a vCPU with state `ctx` on the second-level tables rooted at `p2m_root`.
    fn create_vcpu(
        &mut self,
        ft: &mut FrameTable<'_>,
        ctx: &VcpuContext,
        p2m_root: Pfn,
        domid: u32,
    ) -> Result<Self::Vcpu, VcpuError>;
    /// Arms the backend's own preemption timer for `ns` of guest execution, if it has one
    /// (VMX-preemption timer); returns false to have the platform timer used instead.
    fn arm_preemption(&mut self, _vcpu: &mut Self::Vcpu, _ns: u64, _tsc_khz: u64) -> bool {
        false
    }
    /// Lets this vCPU reach the device ports dom0 owns ([`crate::policy::devices::DOM0_PORTS`])
    /// without exits; every other port stays intercepted. Only dom0's vCPU gets this.
    fn pass_through_ports(&mut self, vcpu: &mut Self::Vcpu);
    /// Releases a vCPU's control block.
    fn destroy_vcpu(&mut self, ft: &mut FrameTable<'_>, vcpu: Self::Vcpu);
    /// Runs the vCPU until the next exit.
    fn run(&mut self, vcpu: &mut Self::Vcpu) -> Exit;
    /// Copies the CPU's [`ExtendedState`] into `vcpu`, the vCPU that last ran.
    fn save_extended(&mut self, vcpu: &mut Self::Vcpu);
    /// Loads `vcpu`'s [`ExtendedState`] into the CPU before it runs after another vCPU.
    fn load_extended(&mut self, vcpu: &Self::Vcpu);
    /// Has [`Backend::run`] stamp the cycle counter around the world switch (the exit
    /// profile, [`crate::hv::profile`]).
    fn set_switch_stamps(&mut self, _on: bool) {}
    /// The stamps of the last run, when on: just before the world switch and just after
    /// it returned.
    fn switch_stamps(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Converts compact segment attributes to VMX access rights (bit 16 = unusable).
pub fn vmx_access_rights(seg: &Segment) -> u32 {
    if !seg.usable() {
        return 1 << 16;
    }
    let a = seg.attrs as u32;
    (a & 0xFF) | ((a & 0xF00) << 4)
}

/// Converts VMX access rights to compact segment attributes (0 if unusable).
pub fn attrs_from_vmx(ar: u32) -> u16 {
    if ar & (1 << 16) != 0 {
        return 0;
    }
    ((ar & 0xFF) | ((ar >> 4) & 0xF00)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_attributes_round_trip_through_vmx_access_rights() {
        let code = Segment::code64(8);
        assert_eq!(vmx_access_rights(&code), 0xA09B);
        assert_eq!(attrs_from_vmx(0xA09B), 0x0A9B);
        let data = Segment::data(0x10);
        assert_eq!(vmx_access_rights(&data), 0xC093);
        assert_eq!(attrs_from_vmx(vmx_access_rights(&data)), data.attrs);
        assert_eq!(vmx_access_rights(&Segment::null()), 1 << 16);
        assert_eq!(attrs_from_vmx(1 << 16), 0);
        let tss = Segment::busy_tss(0, 0, 0x67);
        assert_eq!(vmx_access_rights(&tss), 0x8B);
    }

    #[test]
    fn emulated_msrs_read_back_what_was_written() {
        let mut c = VcpuContext::default();
        for (i, idx) in [0xC000_0080u32, 0x277, 0xC000_0100, 0xC000_0101, 0xC000_0102, 0xC000_0081, 0x174]
            .into_iter()
            .enumerate()
        {
            let m = GuestMsr::from_index(idx).unwrap();
            m.set(&mut c, 1000 + i as u64);
            assert_eq!(m.get(&c), 1000 + i as u64);
        }
        assert_eq!(GuestMsr::from_index(0x10), None);
    }

    #[test]
    fn registers_round_trip_through_a_context() {
        let mut c = VcpuContext::default();
        c.rax = 1;
        c.r15 = 15;
        c.rdi = 7;
        let r = GuestRegs::from_context(&c);
        let mut d = VcpuContext::default();
        r.store(&mut d);
        assert_eq!((d.rax, d.r15, d.rdi), (1, 15, 7));
    }
}

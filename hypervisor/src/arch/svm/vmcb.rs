//! The VMCB: a 4 KiB page whose fields sit at fixed offsets (control area at 0, state-save
//! area at 0x400; AMD APM Vol 2 appendix B), its intercept and control flags, and the exit
//! codes. Accessed through a typed view of its frame.

use crate::mm::frame::Pfn;
use crate::mm::phys;
use guest_abi::vcpu::Segment;

/// Control-area offsets.
pub mod ctl {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00C;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE_PA: usize = 0x040;
    pub const MSRPM_BASE_PA: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05C;
    pub const VINTR: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INT_INFO: usize = 0x088;
    pub const NP_ENABLE: usize = 0x090;
    pub const EVENT_INJ: usize = 0x0A8;
    pub const N_CR3: usize = 0x0B0;
    pub const VMCB_CLEAN: usize = 0x0C0;
}

/// State-save-area offsets.
pub mod save {
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4CB;
    pub const EFER: usize = 0x4D0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5D8;
    pub const RAX: usize = 0x5F8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

bitflags::bitflags! {
    /// Control-register intercepts (offset 0x000): reads in 15:0, writes in 31:16 (AMD APM
    /// Vol 2 15.9).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct CrIntercepts: u32 {
        const WRITE_CR0 = 1 << 16;
        const WRITE_CR4 = 1 << 20;
        const WRITE_CR8 = 1 << 24;
    }

    /// The first word of instruction and event intercepts (offset 0x00C; AMD APM Vol 2
    /// appendix B, table B-1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Intercepts1: u32 {
        const INTR = 1 << 0;
        const NMI = 1 << 1;
        const SMI = 1 << 2;
        const INIT = 1 << 3;
        const VINTR = 1 << 4;
        const RDPMC = 1 << 15;
        const CPUID = 1 << 18;
        const INVD = 1 << 22;
        const HLT = 1 << 24;
        const INVLPGA = 1 << 26;
        const IOIO_PROT = 1 << 27;
        const MSR_PROT = 1 << 28;
        const SHUTDOWN = 1 << 31;
    }

    /// The second word of instruction intercepts (offset 0x010).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Intercepts2: u32 {
        const VMRUN = 1 << 0;
        const VMMCALL = 1 << 1;
        const VMLOAD = 1 << 2;
        const VMSAVE = 1 << 3;
        const STGI = 1 << 4;
        const CLGI = 1 << 5;
        const SKINIT = 1 << 6;
        const MONITOR = 1 << 10;
        const MWAIT = 1 << 11;
        const XSETBV = 1 << 13;
    }

    /// The flag bits of the virtual-interrupt control (offset 0x060; AMD APM Vol 2 15.21.1):
    /// V_TPR is bits 3:0 and V_INTR_PRIO bits 19:16.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VIntr: u64 {
        const V_IRQ = 1 << 8;
        const V_IGN_TPR = 1 << 20;
        const V_INTR_MASKING = 1 << 24;
    }

    /// EXITINFO1 of a nested page fault: the #PF-style error code (AMD APM Vol 2 15.25.6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct NpfInfo: u64 {
        const PRESENT = 1 << 0;
        const WRITE = 1 << 1;
        const USER = 1 << 2;
        const FETCH = 1 << 4;
    }

    /// EXITINFO1 of an IOIO intercept (AMD APM Vol 2 15.10.2); the port is bits 31:16.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IoioInfo: u64 {
        const IN = 1 << 0;
        const STRING = 1 << 2;
        const SIZE_8 = 1 << 4;
        const SIZE_16 = 1 << 5;
        const SIZE_32 = 1 << 6;
    }
}

/// V_TPR (bits 3:0) and V_INTR_PRIO (bits 19:16) of the virtual-interrupt control.
pub const VINTR_TPR_MASK: u64 = 0xF;
pub const VINTR_PRIO_MAX: u64 = 0xF << 16;
/// Bit 0 of the interrupt-shadow field (offset 0x068): the guest is in an STI/MOV SS shadow.
pub const INTERRUPT_SHADOW_ACTIVE: u64 = 1;
/// Bit 0 of EXITINFO1 of an MSR intercept: WRMSR (else RDMSR).
pub const MSR_INFO_WRITE: u64 = 1;

/// Exit codes.
pub mod exit {
    pub const WRITE_CR0: u64 = 0x10;
    pub const WRITE_CR4: u64 = 0x14;
    pub const WRITE_CR8: u64 = 0x18;
    pub const RDPMC: u64 = 0x6F;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    /// First of the exception intercepts (0x40 + vector).
    pub const EXCEPTION_0: u64 = 0x40;
    pub const EXCEPTION_31: u64 = 0x5F;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7A;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const SHUTDOWN: u64 = 0x7F;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const MONITOR: u64 = 0x8A;
    pub const MWAIT: u64 = 0x8B;
    pub const XSETBV: u64 = 0x8D;
    pub const NPF: u64 = 0x400;
    /// VMRUN found invalid state (QEMU stores it as 0x0000_0000_FFFF_FFFF).
    pub const INVALID_LOW32: u64 = 0xFFFF_FFFF;
}

/// A typed view of one VMCB frame.
#[derive(Clone, Copy)]
pub struct Vmcb(pub Pfn);

impl Vmcb {
    fn ptr(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset < 4096);
        // SAFETY: offset < 4096 keeps the pointer inside the VMCB frame.
        unsafe { phys::frame_ptr(self.0).add(offset) }
    }

    /// Reads a field of type T at `offset`.
    pub fn read<T: Copy>(&self, offset: usize) -> T {
        // SAFETY: the VMCB frame belongs to this vCPU; fields are naturally aligned.
        unsafe { (self.ptr(offset) as *const T).read_volatile() }
    }

    /// Writes a field of type T at `offset`.
    pub fn write<T: Copy>(&self, offset: usize, v: T) {
        // SAFETY: as in `read`.
        unsafe { (self.ptr(offset) as *mut T).write_volatile(v) }
    }

    /// Reads a segment register.
    pub fn segment(&self, offset: usize) -> Segment {
        Segment {
            selector: self.read(offset),
            attrs: self.read(offset + 2),
            limit: self.read(offset + 4),
            base: self.read(offset + 8),
        }
    }

    /// Writes a segment register.
    pub fn set_segment(&self, offset: usize, s: &Segment) {
        self.write(offset, s.selector);
        self.write(offset + 2, s.attrs);
        self.write(offset + 4, s.limit);
        self.write(offset + 8, s.base);
    }

    /// Physical address for VMRUN/VMLOAD/VMSAVE.
    pub fn pa(&self) -> u64 {
        self.0.addr()
    }
}

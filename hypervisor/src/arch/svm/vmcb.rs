//! The VMCB: a 4 KiB page whose fields sit at fixed offsets (control area at 0, state-save
//! area at 0x400; AMD APM vol. 2, appendix B). Accessed through a typed view of its frame.

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

/// Control-register intercept bits (offset 0x000): reads in 15:0, writes in 31:16.
pub mod cr_intercept {
    pub const WRITE_CR0: u32 = 1 << 16;
    pub const WRITE_CR4: u32 = 1 << 20;
    pub const WRITE_CR8: u32 = 1 << 24;
}

/// Intercept bits of the first miscellaneous word (offset 0x00C).
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    pub const RDPMC: u32 = 1 << 15;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of the second miscellaneous word (offset 0x010).
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const XSETBV: u32 = 1 << 13;
}

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

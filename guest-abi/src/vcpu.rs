//! The architectural state of a virtual CPU, vendor-neutral. dom0 sets and reads it through
//! `vcpu_set`/`vcpu_get`; the hypervisor keeps a frozen template's state in it and starts
//! clones from it; save images carry it.

/// A segment register. `attrs` uses the compact 12-bit form: bits 0-7 are descriptor byte 5
/// (type, S, DPL, P) and bits 8-11 are descriptor bits 52-55 (AVL, L, D/B, G). `attrs == 0`
/// marks a null (unusable) segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Segment {
    pub selector: u16,
    pub attrs: u16,
    pub limit: u32,
    pub base: u64,
}

impl Segment {
    /// Present bit of `attrs`.
    pub const ATTR_PRESENT: u16 = 1 << 7;
    /// 64-bit code bit of `attrs`.
    pub const ATTR_LONG: u16 = 1 << 9;

    /// A flat 64-bit ring-0 code segment.
    pub const fn code64(selector: u16) -> Self {
        Self { selector, attrs: 0x0A9B, limit: 0xFFFF_FFFF, base: 0 }
    }

    /// A flat ring-0 read/write data segment.
    pub const fn data(selector: u16) -> Self {
        Self { selector, attrs: 0x0C93, limit: 0xFFFF_FFFF, base: 0 }
    }

    /// A busy 64-bit TSS descriptor (required by VMX even if never used).
    pub const fn busy_tss(selector: u16, base: u64, limit: u32) -> Self {
        Self { selector, attrs: 0x008B, limit, base }
    }

    /// A null segment.
    pub const fn null() -> Self {
        Self { selector: 0, attrs: 0, limit: 0, base: 0 }
    }

    /// Whether the segment is usable (not null).
    pub const fn usable(&self) -> bool {
        self.attrs & Self::ATTR_PRESENT != 0
    }
}

/// Full vCPU state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuContext {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub pat: u64,
    pub dr7: u64,
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldtr: Segment,
    pub gdtr_base: u64,
    pub gdtr_limit: u32,
    pub idtr_limit: u32,
    pub idtr_base: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    /// The task-priority register as CR8 shows it (0-15): interrupts whose vector's priority
    /// class (vector / 16) is at or below it are held back.
    pub cr8: u64,
    /// IA32_TSC_AUX, what RDTSCP and RDPID return.
    pub tsc_aux: u64,
}

/// CR0 bits (Intel SDM Vol 3A 2.5, AMD APM Vol 2 3.1.1).
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (Intel SDM Vol 3A 2.5, AMD APM Vol 2 3.1.3).
pub mod cr4 {
    pub const VME: u64 = 1 << 0;
    pub const PVI: u64 = 1 << 1;
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const LA57: u64 = 1 << 12;
    pub const VMXE: u64 = 1 << 13;
    pub const SMXE: u64 = 1 << 14;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const KL: u64 = 1 << 19;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
    pub const CET: u64 = 1 << 23;
    pub const PKS: u64 = 1 << 24;
}

/// EFER bits (Intel SDM Vol 3A 2.2.1, AMD APM Vol 2 3.1.7).
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
    pub const SVME: u64 = 1 << 12;
}

/// RFLAGS bits (Intel SDM Vol 1 3.4.3).
pub mod rflags {
    pub const RESERVED_1: u64 = 1 << 1;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const VM: u64 = 1 << 17;
    /// Bits that read as zero and must be written as zero: 3, 5, 15 and 22-63.
    pub const RESERVED_0: u64 = (1 << 3) | (1 << 5) | (1 << 15) | !((1 << 22) - 1);
}

/// Highest value CR8 holds (it is the top four bits of the task-priority register).
pub const CR8_MAX: u64 = 15;

/// Power-on PAT value (WB, WT, UC-, UC repeated).
pub const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;

impl VcpuContext {
    /// A 64-bit long-mode ring-0 CPU with paging on `cr3`, starting at `rip` with `rdi` as
    /// its first argument, using the flat GDT at `gdt_base` (code selector 0x08, data 0x10).
    pub fn long_mode(rip: u64, rsp: u64, cr3: u64, rdi: u64, gdt_base: u64) -> Self {
        Self {
            rip,
            rsp,
            rdi,
            rflags: rflags::RESERVED_1,
            cr0: cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::WP | cr0::PG,
            cr3,
            cr4: cr4::PAE | cr4::OSFXSR | cr4::OSXMMEXCPT,
            efer: efer::LME | efer::LMA | efer::NXE,
            pat: DEFAULT_PAT,
            dr7: 0x400,
            cs: Segment::code64(0x08),
            ds: Segment::data(0x10),
            es: Segment::data(0x10),
            ss: Segment::data(0x10),
            fs: Segment::data(0x10),
            gs: Segment::data(0x10),
            tr: Segment::busy_tss(0, 0, 0x67),
            ldtr: Segment::null(),
            gdtr_base: gdt_base,
            gdtr_limit: 3 * 8 - 1,
            ..Self::default()
        }
    }
}

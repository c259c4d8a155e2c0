//! The architectural state of a virtual CPU, vendor-neutral. dom0 sets and reads it through
//! `vcpu_set`/`vcpu_get`; the hypervisor keeps a frozen template's state in it and starts
//! clones from it; save images carry it. Register bits are the `x86_64` crate's flag types.

use bitflags::bitflags;
pub use x86_64::registers::control::{Cr0Flags, Cr4Flags};
pub use x86_64::registers::model_specific::EferFlags;
pub use x86_64::registers::rflags::RFlags;

bitflags! {
    /// The compact 12-bit segment attributes of [`Segment::attrs`]: bits 0-7 are descriptor
    /// byte 5, bits 8-11 descriptor bits 52-55 (Intel SDM Vol 3A 3.4.5; the layout of the AMD
    /// VMCB's attribute fields, AMD APM Vol 2 15.5.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SegmentAttrs: u16 {
        /// Type bit 0: accessed.
        const ACCESSED = 1 << 0;
        /// Type bit 1: writable (data) or readable (code).
        const WRITABLE_OR_READABLE = 1 << 1;
        /// Type bit 2: expand-down (data) or conforming (code).
        const EXPAND_DOWN_OR_CONFORMING = 1 << 2;
        /// Type bit 3: a code segment.
        const CODE = 1 << 3;
        /// S: a code or data segment (clear for system segments such as the TSS).
        const CODE_OR_DATA = 1 << 4;
        const DPL_0 = 1 << 5;
        const DPL_1 = 1 << 6;
        const PRESENT = 1 << 7;
        const AVAILABLE = 1 << 8;
        /// L: 64-bit code.
        const LONG = 1 << 9;
        /// D/B: 32-bit default operand size.
        const DEFAULT_BIG = 1 << 10;
        const GRANULARITY = 1 << 11;
    }
}

/// The type field (bits 3:0) of [`SegmentAttrs`].
pub const SEGMENT_TYPE_MASK: u16 = 0xF;
/// System-segment types (Intel SDM Vol 3A table 3-2): LDT, busy 64-bit TSS.
pub const SEGMENT_TYPE_LDT: u16 = 2;
pub const SEGMENT_TYPE_TSS_BUSY: u16 = 11;

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
    /// The attribute flags.
    pub const fn flags(&self) -> SegmentAttrs {
        SegmentAttrs::from_bits_retain(self.attrs)
    }

    /// The descriptor privilege level.
    pub const fn dpl(&self) -> u8 {
        let dpl = SegmentAttrs::DPL_0.union(SegmentAttrs::DPL_1).bits();
        ((self.attrs & dpl) >> SegmentAttrs::DPL_0.bits().trailing_zeros()) as u8
    }

    /// The type field.
    pub const fn segment_type(&self) -> u16 {
        self.attrs & SEGMENT_TYPE_MASK
    }

    /// A flat 64-bit ring-0 code segment.
    pub const fn code64(selector: u16) -> Self {
        let a = SegmentAttrs::ACCESSED.bits()
            | SegmentAttrs::WRITABLE_OR_READABLE.bits()
            | SegmentAttrs::CODE.bits()
            | SegmentAttrs::CODE_OR_DATA.bits()
            | SegmentAttrs::PRESENT.bits()
            | SegmentAttrs::LONG.bits()
            | SegmentAttrs::GRANULARITY.bits();
        Self { selector, attrs: a, limit: 0xFFFF_FFFF, base: 0 }
    }

    /// A flat ring-0 read/write data segment.
    pub const fn data(selector: u16) -> Self {
        let a = SegmentAttrs::ACCESSED.bits()
            | SegmentAttrs::WRITABLE_OR_READABLE.bits()
            | SegmentAttrs::CODE_OR_DATA.bits()
            | SegmentAttrs::PRESENT.bits()
            | SegmentAttrs::DEFAULT_BIG.bits()
            | SegmentAttrs::GRANULARITY.bits();
        Self { selector, attrs: a, limit: 0xFFFF_FFFF, base: 0 }
    }

    /// A busy 64-bit TSS descriptor (required by VMX even if never used).
    pub const fn busy_tss(selector: u16, base: u64, limit: u32) -> Self {
        Self { selector, attrs: SEGMENT_TYPE_TSS_BUSY | SegmentAttrs::PRESENT.bits(), limit, base }
    }

    /// A null segment.
    pub const fn null() -> Self {
        Self { selector: 0, attrs: 0, limit: 0, base: 0 }
    }

    /// Whether the segment is usable (not null).
    pub const fn usable(&self) -> bool {
        self.flags().contains(SegmentAttrs::PRESENT)
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

/// RFLAGS bit 1, which always reads as one (not one of [`RFlags`]).
pub const RFLAGS_RESERVED_ONE: u64 = 1 << 1;
/// RFLAGS bits that read as zero and must be written as zero (3, 5, 15 and 22-63).
pub const RFLAGS_RESERVED_ZERO: u64 = !(RFlags::all().bits() | RFLAGS_RESERVED_ONE);

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
            rflags: RFLAGS_RESERVED_ONE,
            cr0: (Cr0Flags::PROTECTED_MODE_ENABLE
                | Cr0Flags::MONITOR_COPROCESSOR
                | Cr0Flags::EXTENSION_TYPE
                | Cr0Flags::NUMERIC_ERROR
                | Cr0Flags::WRITE_PROTECT
                | Cr0Flags::PAGING)
                .bits(),
            cr3,
            cr4: (Cr4Flags::PHYSICAL_ADDRESS_EXTENSION | Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE).bits(),
            efer: (EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE | EferFlags::NO_EXECUTE_ENABLE).bits(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flat_segments_have_the_encodings_the_cpus_expect() {
        assert_eq!(Segment::code64(8).attrs, 0x0A9B);
        assert_eq!(Segment::data(0x10).attrs, 0x0C93);
        assert_eq!(Segment::busy_tss(0, 0, 0x67).attrs, 0x008B);
        assert_eq!(RFLAGS_RESERVED_ZERO, (1 << 3) | (1 << 5) | (1 << 15) | !((1u64 << 22) - 1));
    }

    #[test]
    fn dpl_is_bits_5_and_6_of_the_attributes() {
        for dpl in 0..4u16 {
            let s = Segment { attrs: Segment::data(0x10).attrs | dpl << 5, ..Segment::data(0x10) };
            assert_eq!(s.dpl(), dpl as u8);
        }
        assert_eq!(Segment { attrs: 0xFFFF, ..Segment::null() }.dpl(), 3);
    }
}

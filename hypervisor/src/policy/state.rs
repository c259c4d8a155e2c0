//! The rules for guest register state, one function per register family: a guest's MOV CR
//! or WRMSR (decided at the exit) and a whole context set from outside ([`validate_context`])
//! use the same ones. A value the rules refuse gives the guest #GP, or dom0 `bad argument`
//! with the field named; it never reaches the CPU, where it could fault in the hypervisor
//! (a non-canonical LSTAR written to the host MSR) or fail a VM entry.
//!
//! Guests run in long mode only (64-bit or compatibility mode), on both vendors: a MOV to
//! CR0 that would turn paging or protection off is [`Cr0Verdict::LeavesLongMode`], which the
//! caller answers by stopping the domain.

use super::Policy;
use crate::vcpu::{ExtendedState, GuestMsr};
use core::fmt;
use guest_abi::vcpu::{
    CR8_MAX, Cr0Flags, Cr4Flags, EferFlags, RFLAGS_RESERVED_ZERO, RFlags, SEGMENT_TYPE_LDT, SEGMENT_TYPE_TSS_BUSY,
    SegmentAttrs, VcpuContext,
};

/// Whether `v` is a canonical 48-bit linear address (Intel SDM Vol 1 3.3.7.1).
pub fn canonical(v: u64) -> bool {
    let top = (v as i64) >> 47;
    top == 0 || top == -1
}

/// Whether a PAT value uses only defined memory types 0, 1, 4, 5, 6, 7 (Intel SDM Vol 3A 13.12.2).
pub fn valid_pat(v: u64) -> bool {
    (0..8).all(|i| matches!((v >> (i * 8)) & 0xFF, 0 | 1 | 4..=7))
}

/// EFER bits a guest may set: SYSCALL, long mode, NX. Long mode must stay on.
pub const EFER_ALLOWED: EferFlags = EferFlags::SYSTEM_CALL_EXTENSIONS
    .union(EferFlags::LONG_MODE_ENABLE)
    .union(EferFlags::LONG_MODE_ACTIVE)
    .union(EferFlags::NO_EXECUTE_ENABLE);

/// Whether `v` is an EFER a long-mode guest may hold.
pub fn efer_ok(v: u64) -> bool {
    let long = EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE;
    v & !EFER_ALLOWED.bits() == 0 && EferFlags::from_bits_retain(v).contains(long)
}

/// What a MOV to CR0 with a given value does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr0Verdict {
    /// The value is valid and keeps the guest in long mode.
    Apply,
    /// The CPU raises #GP(0): reserved bits, NW without CD, PG without PE, or clearing PG
    /// in 64-bit code (Intel SDM Vol 2B MOV CR; AMD APM Vol 2 14.7).
    Fault,
    /// The guest (in compatibility mode) would leave long mode, which no guest may do.
    LeavesLongMode,
}

/// Decides a MOV to CR0; `code64` is whether the guest runs 64-bit code (CS.L).
pub fn cr0_write(v: u64, code64: bool) -> Cr0Verdict {
    let f = Cr0Flags::from_bits_retain(v);
    let nw_without_cd = f.contains(Cr0Flags::NOT_WRITE_THROUGH) && !f.contains(Cr0Flags::CACHE_DISABLE);
    let pg_without_pe = f.contains(Cr0Flags::PAGING) && !f.contains(Cr0Flags::PROTECTED_MODE_ENABLE);
    if v >> 32 != 0 || nw_without_cd || pg_without_pe {
        return Cr0Verdict::Fault;
    }
    if !f.contains(Cr0Flags::PAGING | Cr0Flags::PROTECTED_MODE_ENABLE) {
        return if code64 { Cr0Verdict::Fault } else { Cr0Verdict::LeavesLongMode };
    }
    Cr0Verdict::Apply
}

/// CR0 bits LMSW writes (Intel SDM Vol 2A LMSW): PE, MP, EM, TS.
const LMSW_BITS: u64 = Cr0Flags::PROTECTED_MODE_ENABLE
    .union(Cr0Flags::MONITOR_COPROCESSOR)
    .union(Cr0Flags::EMULATE_COPROCESSOR)
    .union(Cr0Flags::TASK_SWITCHED)
    .bits();

/// The CR0 value CLTS writes over `cr0`: TS cleared.
pub fn clts_value(cr0: u64) -> u64 {
    cr0 & !Cr0Flags::TASK_SWITCHED.bits()
}

/// The CR0 value `LMSW source` writes over `cr0`: bits 3:0 from the source, except that it
/// cannot clear PE.
pub fn lmsw_value(cr0: u64, source: u64) -> u64 {
    (cr0 & !LMSW_BITS) | (source & LMSW_BITS) | (cr0 & Cr0Flags::PROTECTED_MODE_ENABLE.bits())
}

/// Whether a MOV to CR4 of `v` is allowed: only bits of features the guest is shown, and
/// PAE stays set (clearing it in long mode is #GP).
pub fn cr4_ok(v: u64, policy: &Policy) -> bool {
    v & !policy.cr4_allowed == 0 && Cr4Flags::from_bits_retain(v).contains(Cr4Flags::PHYSICAL_ADDRESS_EXTENSION)
}

/// Whether a MOV to CR8 of `v` is allowed (bits 63:4 are reserved).
pub fn cr8_ok(v: u64) -> bool {
    v <= CR8_MAX
}

/// Whether a WRMSR of `v` to an emulated MSR is allowed (else #GP).
pub fn msr_ok(m: GuestMsr, v: u64, policy: &Policy) -> bool {
    match m {
        GuestMsr::Efer => efer_ok(v),
        GuestMsr::Pat => valid_pat(v),
        GuestMsr::FsBase
        | GuestMsr::GsBase
        | GuestMsr::KernelGsBase
        | GuestMsr::Lstar
        | GuestMsr::Cstar
        | GuestMsr::SysenterEsp
        | GuestMsr::SysenterEip => canonical(v),
        GuestMsr::Sfmask | GuestMsr::SysenterCs => v >> 32 == 0,
        GuestMsr::Star => true,
        GuestMsr::TscAux => policy.tsc_aux && v >> 32 == 0,
    }
}

/// A field of a vCPU context that failed its check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    Rip,
    Rflags,
    Cr0,
    Cr3,
    Cr4,
    Cr8,
    Pat,
    Dr7,
    Msr(GuestMsr),
    Segment(&'static str),
    DescriptorTable(&'static str),
    Mxcsr,
    DebugAddress(u8),
    Dr6,
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rip => f.write_str("rip is not canonical"),
            Self::Rflags => f.write_str("rflags has reserved or virtual-8086 bits"),
            Self::Cr0 => f.write_str("cr0 is invalid or not long mode"),
            Self::Cr3 => f.write_str("cr3 has bits beyond the physical-address width"),
            Self::Cr4 => f.write_str("cr4 has bits of hidden features or lacks PAE"),
            Self::Cr8 => f.write_str("cr8 is above 15"),
            Self::Pat => f.write_str("pat has an undefined memory type"),
            Self::Dr7 => f.write_str("dr7 has bits 63:32 set"),
            Self::Msr(m) => write!(f, "{m:?} value refused"),
            Self::Segment(s) => write!(f, "segment {s} is invalid"),
            Self::DescriptorTable(t) => write!(f, "{t} base or limit is invalid"),
            Self::Mxcsr => f.write_str("mxcsr has reserved bits"),
            Self::DebugAddress(n) => write!(f, "dr{n} is not canonical"),
            Self::Dr6 => f.write_str("dr6 has bits 63:32 set"),
        }
    }
}

/// Longest GDT/IDT limit.
const DESCRIPTOR_TABLE_LIMIT_MAX: u32 = 0xFFFF;

/// The checks a VM entry makes on the segment registers in IA-32e mode (Intel SDM Vol 3C
/// 28.3.1.2; AMD's VMRUN is more lenient), so a refused context is an error for its sender
/// instead of a domain that cannot run.
fn check_segments(c: &VcpuContext) -> Result<(), ContextError> {
    let all = [("cs", &c.cs), ("ss", &c.ss), ("ds", &c.ds), ("es", &c.es), ("fs", &c.fs), ("gs", &c.gs), ("tr", &c.tr), ("ldtr", &c.ldtr)];
    for (name, s) in all {
        if SegmentAttrs::from_bits(s.attrs).is_none() {
            return Err(ContextError::Segment(name));
        }
    }
    let cs = c.cs.flags();
    let code = c.cs.usable() && cs.contains(SegmentAttrs::CODE_OR_DATA | SegmentAttrs::CODE);
    if !code || cs.contains(SegmentAttrs::LONG | SegmentAttrs::DEFAULT_BIG) {
        return Err(ContextError::Segment("cs"));
    }
    let ss = c.ss.flags();
    let writable_data = ss.contains(SegmentAttrs::CODE_OR_DATA | SegmentAttrs::WRITABLE_OR_READABLE) && !ss.contains(SegmentAttrs::CODE);
    if c.ss.usable() && (!writable_data || c.ss.dpl() != c.cs.dpl()) {
        return Err(ContextError::Segment("ss"));
    }
    for (name, s) in [("ds", &c.ds), ("es", &c.es), ("fs", &c.fs), ("gs", &c.gs)] {
        let f = s.flags();
        let readable = !f.contains(SegmentAttrs::CODE) || f.contains(SegmentAttrs::WRITABLE_OR_READABLE);
        if s.usable() && (!f.contains(SegmentAttrs::CODE_OR_DATA) || !readable) {
            return Err(ContextError::Segment(name));
        }
    }
    if !c.tr.usable() || c.tr.flags().contains(SegmentAttrs::CODE_OR_DATA) || c.tr.segment_type() != SEGMENT_TYPE_TSS_BUSY {
        return Err(ContextError::Segment("tr"));
    }
    if c.ldtr.usable() && (c.ldtr.flags().contains(SegmentAttrs::CODE_OR_DATA) || c.ldtr.segment_type() != SEGMENT_TYPE_LDT) {
        return Err(ContextError::Segment("ldtr"));
    }
    // FS and GS bases are checked as the MSRs they are.
    for (name, s) in [("tr", &c.tr), ("ldtr", &c.ldtr)] {
        if !canonical(s.base) {
            return Err(ContextError::Segment(name));
        }
    }
    for (name, base, limit) in [("gdtr", c.gdtr_base, c.gdtr_limit), ("idtr", c.idtr_base, c.idtr_limit)] {
        if !canonical(base) || limit > DESCRIPTOR_TABLE_LIMIT_MAX {
            return Err(ContextError::DescriptorTable(name));
        }
    }
    Ok(())
}

/// Checks every field of a context set from outside with the rules a guest's own writes
/// follow; the first refused field is returned and nothing is applied.
pub fn validate_context(c: &VcpuContext, policy: &Policy) -> Result<(), ContextError> {
    if !canonical(c.rip) {
        return Err(ContextError::Rip);
    }
    if c.rflags & (RFLAGS_RESERVED_ZERO | RFlags::VIRTUAL_8086_MODE.bits()) != 0 {
        return Err(ContextError::Rflags);
    }
    if cr0_write(c.cr0, true) != Cr0Verdict::Apply {
        return Err(ContextError::Cr0);
    }
    if c.cr3 >> policy.phys_addr_bits != 0 {
        return Err(ContextError::Cr3);
    }
    if !cr4_ok(c.cr4, policy) {
        return Err(ContextError::Cr4);
    }
    if !cr8_ok(c.cr8) {
        return Err(ContextError::Cr8);
    }
    if c.dr7 >> 32 != 0 {
        return Err(ContextError::Dr7);
    }
    let msrs = [
        (GuestMsr::Efer, c.efer),
        (GuestMsr::Pat, c.pat),
        (GuestMsr::FsBase, c.fs.base),
        (GuestMsr::GsBase, c.gs.base),
        (GuestMsr::KernelGsBase, c.kernel_gs_base),
        (GuestMsr::Star, c.star),
        (GuestMsr::Lstar, c.lstar),
        (GuestMsr::Cstar, c.cstar),
        (GuestMsr::Sfmask, c.sfmask),
        (GuestMsr::SysenterCs, c.sysenter_cs),
        (GuestMsr::SysenterEsp, c.sysenter_esp),
        (GuestMsr::SysenterEip, c.sysenter_eip),
    ];
    for (m, v) in msrs {
        if !msr_ok(m, v, policy) {
            return Err(if m == GuestMsr::Pat { ContextError::Pat } else { ContextError::Msr(m) });
        }
    }
    if c.tsc_aux != 0 && !msr_ok(GuestMsr::TscAux, c.tsc_aux, policy) {
        return Err(ContextError::Msr(GuestMsr::TscAux));
    }
    check_segments(c)
}

/// MXCSR bits FXRSTOR accepts on every CPU (Intel SDM Vol 1 11.6.6: without DAZ the mask
/// is 0xFFBF). DAZ is refused even where the CPU has it: a restored image may come from
/// another machine.
pub const MXCSR_ALLOWED: u32 = 0xFFBF;

/// Checks register state that travels outside the control block (a restored image's x87/SSE
/// and debug registers) before the hypervisor loads it: FXRSTOR faults on reserved MXCSR bits
/// and MOV DR on non-canonical addresses or DR6 bits 63:32, all of them in the hypervisor.
pub fn validate_extended(e: &ExtendedState) -> Result<(), ContextError> {
    if e.mxcsr() & !MXCSR_ALLOWED != 0 {
        return Err(ContextError::Mxcsr);
    }
    for (n, &dr) in e.dr.iter().enumerate() {
        if !canonical(dr) {
            return Err(ContextError::DebugAddress(n as u8));
        }
    }
    if e.dr6 >> 32 != 0 {
        return Err(ContextError::Dr6);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_abi::vcpu::Segment;

    fn policy() -> Policy {
        Policy::new(&|leaf, _| match leaf {
            0 => [7, 0, 0, 0],
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            0x8000_0008 => [0x3028, 0, 0, 0],
            _ => [!0; 4],
        })
    }

    fn good() -> VcpuContext {
        VcpuContext::long_mode(0x20_0000, 0x30_0000, 0x10_0000, 0x1000, 0x2000)
    }

    #[test]
    fn canonical_and_pat_checks() {
        assert!(canonical(0x0000_7FFF_FFFF_FFFF));
        assert!(canonical(0xFFFF_8000_0000_0000));
        assert!(!canonical(0x0000_8000_0000_0000));
        assert!(valid_pat(guest_abi::vcpu::DEFAULT_PAT));
        assert!(!valid_pat(0x02));
    }

    #[test]
    fn the_builders_start_of_day_context_is_accepted() {
        assert_eq!(validate_context(&good(), &policy()), Ok(()));
    }

    #[test]
    fn every_msr_field_that_would_fault_on_the_host_is_refused() {
        let p = policy();
        let bad = 0x0000_8000_0000_0000;
        let cases: [(fn(&mut VcpuContext, u64), GuestMsr); 7] = [
            (|c, v| c.lstar = v, GuestMsr::Lstar),
            (|c, v| c.cstar = v, GuestMsr::Cstar),
            (|c, v| c.kernel_gs_base = v, GuestMsr::KernelGsBase),
            (|c, v| c.sysenter_esp = v, GuestMsr::SysenterEsp),
            (|c, v| c.sysenter_eip = v, GuestMsr::SysenterEip),
            (|c, v| c.fs.base = v, GuestMsr::FsBase),
            (|c, v| c.gs.base = v, GuestMsr::GsBase),
        ];
        for (set, m) in cases {
            let mut c = good();
            set(&mut c, bad);
            assert_eq!(validate_context(&c, &p), Err(ContextError::Msr(m)));
            assert!(!msr_ok(m, bad, &p), "a guest WRMSR gets the same answer");
        }
        let mut c = good();
        c.sfmask = 1 << 32;
        assert_eq!(validate_context(&c, &p), Err(ContextError::Msr(GuestMsr::Sfmask)));
        let mut c = good();
        c.efer = 0;
        assert_eq!(validate_context(&c, &p), Err(ContextError::Msr(GuestMsr::Efer)));
        let mut c = good();
        c.pat = 0x02;
        assert_eq!(validate_context(&c, &p), Err(ContextError::Pat));
        let mut c = good();
        c.tsc_aux = 1 << 32;
        assert_eq!(validate_context(&c, &p), Err(ContextError::Msr(GuestMsr::TscAux)));
    }

    #[test]
    fn control_and_debug_registers_follow_the_guest_write_rules() {
        let p = policy();
        let cases: [(fn(&mut VcpuContext), ContextError); 9] = [
            (|c| c.cr0 &= !Cr0Flags::PAGING.bits(), ContextError::Cr0),
            (|c| c.cr0 |= 1 << 40, ContextError::Cr0),
            (|c| c.cr0 |= Cr0Flags::NOT_WRITE_THROUGH.bits(), ContextError::Cr0),
            (|c| c.cr4 |= Cr4Flags::PROTECTION_KEY_USER.bits(), ContextError::Cr4),
            (|c| c.cr4 &= !Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits(), ContextError::Cr4),
            (|c| c.cr3 = 1 << 50, ContextError::Cr3),
            (|c| c.cr8 = 16, ContextError::Cr8),
            (|c| c.dr7 = 1 << 32, ContextError::Dr7),
            (|c| c.rflags |= RFlags::VIRTUAL_8086_MODE.bits(), ContextError::Rflags),
        ];
        for (set, want) in cases {
            let mut c = good();
            set(&mut c);
            assert_eq!(validate_context(&c, &p), Err(want));
        }
        let mut c = good();
        c.rip = 0x0001_0000_0000_0000;
        assert_eq!(validate_context(&c, &p), Err(ContextError::Rip));
    }

    #[test]
    fn segments_that_would_fail_a_vm_entry_are_refused() {
        let p = policy();
        let cases: [(fn(&mut VcpuContext), &str); 6] = [
            (|c| c.cs = Segment::data(0x10), "cs"),
            (|c| c.cs.attrs |= SegmentAttrs::DEFAULT_BIG.bits(), "cs"),
            (|c| c.tr = Segment::null(), "tr"),
            (|c| c.ss.attrs |= (SegmentAttrs::DPL_0 | SegmentAttrs::DPL_1).bits(), "ss"),
            (|c| c.fs.base = 0x0000_8000_0000_0000, "fs"),
            (|c| c.ldtr = Segment::data(0x18), "ldtr"),
        ];
        for (set, name) in cases {
            let mut c = good();
            set(&mut c);
            let e = validate_context(&c, &p).unwrap_err();
            assert!(matches!(e, ContextError::Segment(n) if n == name) || matches!(e, ContextError::Msr(_)), "{name}: {e:?}");
        }
        let mut c = good();
        c.idtr_limit = 0x1_0000;
        assert_eq!(validate_context(&c, &p), Err(ContextError::DescriptorTable("idtr")));
    }

    #[test]
    fn cr0_writes_that_leave_long_mode_are_told_apart_from_faults() {
        let (pe, pg, nw, cd) = (
            Cr0Flags::PROTECTED_MODE_ENABLE.bits(),
            Cr0Flags::PAGING.bits(),
            Cr0Flags::NOT_WRITE_THROUGH.bits(),
            Cr0Flags::CACHE_DISABLE.bits(),
        );
        let lm = pe | pg | Cr0Flags::EXTENSION_TYPE.bits() | Cr0Flags::NUMERIC_ERROR.bits();
        assert_eq!(cr0_write(lm | Cr0Flags::WRITE_PROTECT.bits(), true), Cr0Verdict::Apply);
        assert_eq!(cr0_write(lm & !pg, true), Cr0Verdict::Fault, "64-bit code cannot clear PG");
        assert_eq!(cr0_write(lm & !pg, false), Cr0Verdict::LeavesLongMode);
        assert_eq!(cr0_write(pg, false), Cr0Verdict::Fault, "PG without PE");
        assert_eq!(cr0_write(lm | nw, true), Cr0Verdict::Fault);
        assert_eq!(cr0_write(lm | nw | cd, true), Cr0Verdict::Apply);
    }

    #[test]
    fn extended_state_from_an_image_is_checked_before_it_reaches_fxrstor() {
        let mut e = ExtendedState::default();
        assert_eq!(validate_extended(&e), Ok(()));
        e.fxsave[24..28].copy_from_slice(&0x1_0000u32.to_le_bytes());
        assert_eq!(validate_extended(&e), Err(ContextError::Mxcsr));
        let mut e = ExtendedState::default();
        e.fxsave[24..28].copy_from_slice(&0x40u32.to_le_bytes());
        assert_eq!(validate_extended(&e), Err(ContextError::Mxcsr), "DAZ");
        let mut e = ExtendedState::default();
        e.dr[2] = 0x0000_8000_0000_0000;
        assert_eq!(validate_extended(&e), Err(ContextError::DebugAddress(2)));
        let mut e = ExtendedState::default();
        e.dr6 = 1 << 40;
        assert_eq!(validate_extended(&e), Err(ContextError::Dr6));
    }
}

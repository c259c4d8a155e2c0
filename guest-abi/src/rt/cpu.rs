//! The few privileged x86 instructions the runtime and test guests use.

use crate::vcpu::{Cr0Flags, Cr4Flags};
use core::arch::asm;

/// Reads the time-stamp counter. Also a compiler barrier, so memory accesses being timed
/// stay between two reads.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear in the boot context).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The faulting address of the last page fault.
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects; the guest runs in ring 0.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR0, with any bits the flag type does not name kept.
pub fn read_cr0() -> Cr0Flags {
    let v: u64;
    // SAFETY: reading CR0 has no side effects; the guest runs in ring 0.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    Cr0Flags::from_bits_retain(v)
}

/// CR4, with any bits the flag type does not name kept.
pub fn read_cr4() -> Cr4Flags {
    let v: u64;
    // SAFETY: reading CR4 has no side effects; the guest runs in ring 0.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    Cr4Flags::from_bits_retain(v)
}

/// The task priority as CR8 shows it (0-15).
pub fn read_cr8() -> u64 {
    let v: u64;
    // SAFETY: reading CR8 has no side effects; the guest runs in ring 0.
    unsafe { asm!("mov {}, cr8", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Sets the task priority (CR8): interrupts whose priority class (vector / 16) is at or
/// below `tpr` are held back. A value above 15 raises #GP.
pub fn write_cr8(tpr: u64) {
    // SAFETY: CR8 only changes which interrupts this vCPU accepts; it touches no memory.
    unsafe { asm!("mov cr8, {}", in(reg) tpr, options(nomem, nostack, preserves_flags)) };
}

/// DR7, the debug control register.
pub fn read_dr7() -> u64 {
    let v: u64;
    // SAFETY: reading DR7 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, dr7", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads model-specific register `msr`. One the CPU does not have raises #GP (reported by
/// the runtime unless a handler takes it).
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR only reads the register into EDX:EAX; the guest runs in ring 0.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes `value` to model-specific register `msr`.
///
/// # Safety
/// Nothing the guest relies on may depend on the old value: e.g. EFER, the SYSCALL MSRs, or
/// an FS/GS base that code in use addresses memory through.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded from the caller; WRMSR takes the value in EDX:EAX.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags))
    };
}

/// Enables interrupts (a compiler barrier: handlers may touch memory from here on).
pub fn enable_interrupts() {
    // SAFETY: STI only lets pending interrupts in; the runtime's IDT handles every vector.
    unsafe { asm!("sti", options(nostack)) };
}

/// Disables interrupts (a compiler barrier).
pub fn disable_interrupts() {
    // SAFETY: CLI only masks interrupts.
    unsafe { asm!("cli", options(nostack)) };
}

/// Halts until the next interrupt (forever with interrupts disabled). A compiler barrier,
/// since interrupt handlers may run before it returns.
pub fn halt() {
    // SAFETY: HLT waits for an interrupt and touches no memory itself.
    unsafe { asm!("hlt", options(nostack)) };
}

/// Loads the IDT register.
///
/// # Safety
/// `base..=base + limit` must hold gates whose handlers can take every interrupt and
/// exception that may now arrive (or the caller wants the resulting fault, as a test does).
pub unsafe fn load_idt(base: u64, limit: u16) {
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr { limit, base };
    // SAFETY: forwarded from the caller; LIDT only reads the 10-byte operand.
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) };
}

//! The few privileged x86 instructions the runtime and test guests use.

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

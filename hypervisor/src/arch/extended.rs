//! Swapping the guest register state that VM entry and exit leave in the CPU: x87/SSE
//! (FXSAVE/FXRSTOR), DR0-DR3, DR6, IA32_TSC_AUX and, for VMX, CR2. The hypervisor itself is
//! built without floating point or SSE and never touches these, so they hold the last guest's
//! values. Loading another vCPU's state is a switch between domains, so the speculation
//! barriers ([`super::spec`]) are issued here too.

use super::x86::{msr, wrmsr};
use crate::vcpu::ExtendedState;
use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::registers::control::{Cr0Flags, Cr4Flags};

/// Address of the [`ExtendedState`] whose values the CPU holds (0 = none).
static OWNER: AtomicUsize = AtomicUsize::new(0);
/// A value in memory for the FILD that overwrites the x87 pointers.
static ZERO: u32 = 0;

/// Whether the CPU holds `s` (the vCPU it belongs to ran last and was not saved since).
pub fn holds(s: &ExtendedState) -> bool {
    OWNER.load(Ordering::Relaxed) == s as *const ExtendedState as usize
}

/// `s` is going away: the CPU no longer holds it, whatever reuses its memory.
pub fn forget(s: &ExtendedState) {
    let _ = OWNER.compare_exchange(s as *const ExtendedState as usize, 0, Ordering::Relaxed, Ordering::Relaxed);
}


/// Lets the hypervisor save and restore x87/SSE state: FXSAVE must cover the XMM registers,
/// and no x87/SSE instruction may trap. Called once at boot, before VMXON/EFER.SVME, so the
/// host state the backends record includes it.
pub fn enable() {
    // SAFETY: setting MP/OSFXSR/OSXMMEXCPT and clearing EM/TS only changes how x87/SSE
    // instructions behave, and the hypervisor executes none except FXSAVE/FXRSTOR below.
    unsafe {
        // MP: WAIT honours TS; EM and TS off: x87/SSE instructions do not trap.
        let (mp, em, ts) = (Cr0Flags::MONITOR_COPROCESSOR, Cr0Flags::EMULATE_COPROCESSOR, Cr0Flags::TASK_SWITCHED);
        super::x86::write_cr0((super::x86::read_cr0() | mp.bits()) & !(em | ts).bits());
        // OSFXSR: FXSAVE/FXRSTOR include the XMM registers; OSXMMEXCPT: SIMD exceptions raise #XM.
        super::x86::write_cr4(super::x86::read_cr4() | (Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE).bits());
    }
}

/// Saves the CPU's state into `s`; `cr2` also saves CR2 (VMX, which has no guest CR2 field).
pub fn save(s: &mut ExtendedState, cr2: bool) {
    let (dr0, dr1, dr2, dr3, dr6): (u64, u64, u64, u64, u64);
    // SAFETY: `s.fxsave` is 512 bytes, 16-byte aligned (the struct is `align(16)` and the
    // array is its first field); `enable` made FXSAVE legal. Reading debug registers at CPL 0
    // has no side effects.
    unsafe {
        asm!("fxsave64 [{}]", in(reg) s.fxsave.as_mut_ptr(), options(nostack, preserves_flags));
        asm!(
            "mov {0}, dr0", "mov {1}, dr1", "mov {2}, dr2", "mov {3}, dr3", "mov {4}, dr6",
            out(reg) dr0, out(reg) dr1, out(reg) dr2, out(reg) dr3, out(reg) dr6,
            options(nomem, nostack, preserves_flags)
        );
    }
    s.dr = [dr0, dr1, dr2, dr3];
    s.dr6 = dr6;
    if cr2 {
        s.cr2 = super::x86::read_cr2();
    }
    // IA32_TSC_AUX needs no reading back: every guest write to it exits.
    forget(s);
}

/// Sets a guest's IA32_TSC_AUX, in the CPU too when it holds `s`. The policy offers the
/// register only when the CPU has it, and keeps the value within 32 bits.
pub fn set_tsc_aux(s: &mut ExtendedState, value: u64) {
    s.tsc_aux = value;
    if holds(s) {
        // SAFETY: TSC_AUX exists (see above) and the hypervisor never reads it, so it can
        // hold the guest's value.
        unsafe { wrmsr(msr::IA32_TSC_AUX, value) };
    }
}

/// Sets DR6 (VMX: the bits of a #DB that caused a VM exit, for the guest to find).
pub fn write_dr6(value: u64) {
    // SAFETY: callers pass DR6's reserved-one bits plus status bits; bits 63:32 are clear.
    unsafe { asm!("mov dr6, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// Loads `s` into the CPU after another vCPU's state (a switch between domains); `cr2` also
/// loads CR2, `tsc_aux` IA32_TSC_AUX (which exists when the policy offers it).
pub fn load(s: &ExtendedState, cr2: bool, tsc_aux: bool) {
    let f = super::spec::isolation();
    super::spec::on_domain_switch(&f);
    if f.scrub_x87_pointers {
        // SAFETY: FNCLEX clears pending x87 exceptions, EMMS empties the register stack, so
        // FILD of a hypervisor constant cannot fault or overflow; it sets FOP/FIP/FDP to the
        // hypervisor's values, which the FXRSTOR below then keeps in place of the last
        // guest's (the sequence Linux uses for X86_BUG_FXSAVE_LEAK).
        unsafe { asm!("fnclex", "emms", "fild dword ptr [{}]", in(reg) &ZERO, options(nostack, readonly)) };
    }
    // SAFETY: the image was written by FXSAVE (this vCPU's or, for a clone, its source's) or
    // is `ExtendedState::default()` (a valid reset image), so FXRSTOR cannot fault on
    // reserved MXCSR bits; DR0-DR3 came from reads of those registers (canonical) and DR6
    // from a DR6 read. Nothing from outside the hypervisor reaches this state yet. DR7 is not
    // touched: the control block holds the guest's.
    unsafe {
        asm!("fxrstor64 [{}]", in(reg) s.fxsave.as_ptr(), options(nostack, preserves_flags, readonly));
        asm!(
            "mov dr0, {0}", "mov dr1, {1}", "mov dr2, {2}", "mov dr3, {3}", "mov dr6, {4}",
            in(reg) s.dr[0], in(reg) s.dr[1], in(reg) s.dr[2], in(reg) s.dr[3], in(reg) s.dr6,
            options(nomem, nostack, preserves_flags)
        );
        if cr2 {
            asm!("mov cr2, {}", in(reg) s.cr2, options(nomem, nostack, preserves_flags));
        }
        if tsc_aux {
            // The policy keeps guests' TSC_AUX within 32 bits.
            wrmsr(msr::IA32_TSC_AUX, s.tsc_aux);
        }
    }
    OWNER.store(s as *const ExtendedState as usize, Ordering::Relaxed);
}

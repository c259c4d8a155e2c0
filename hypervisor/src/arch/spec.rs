//! Speculative-execution barriers between domains, as [`Isolation`] decided at boot: an
//! indirect-branch prediction barrier (IBPB) and a return-stack refill whenever the CPU
//! switches to another domain's vCPU, and VERW before every VM entry on CPUs that need it to
//! clear their microarchitectural buffers (MDS). See the README for what is and is not done.

use super::x86::{cpuid, msr, rdmsr, wrmsr};
use crate::policy::isolation::Isolation;
use core::arch::asm;

/// IA32_PRED_CMD bit 0: issue an IBPB.
const PRED_CMD_IBPB: u64 = 1;

static ISOLATION: spin::Once<Isolation> = spin::Once::new();

/// Decides what this CPU needs (once; later calls return the same).
pub fn init() -> Isolation {
    *ISOLATION.call_once(|| {
        let id = |leaf: u32, sub: u32| {
            let r = cpuid(leaf, sub);
            [r.eax, r.ebx, r.ecx, r.edx]
        };
        // SAFETY: called only when CPUID says IA32_ARCH_CAPABILITIES exists; reading it has
        // no effect.
        let caps = || unsafe { rdmsr(msr::IA32_ARCH_CAPABILITIES) };
        Isolation::new(&id, &caps)
    })
}

/// What [`init`] decided (nothing before it ran).
pub fn isolation() -> Isolation {
    ISOLATION.get().copied().unwrap_or_default()
}

/// The CPU is about to run another domain's vCPU than the last one: nothing the previous
/// domain trained in the branch predictors or left in the return stack may steer it.
pub fn on_domain_switch(f: &Isolation) {
    if f.ibpb {
        // SAFETY: CPUID reported IBPB, so IA32_PRED_CMD accepts bit 0; it only flushes
        // predictor state.
        unsafe { wrmsr(msr::IA32_PRED_CMD, PRED_CMD_IBPB) };
    }
    fill_return_stack();
}

/// Overwrites the return-stack buffer with 32 harmless entries (32 calls whose return
/// addresses are speculation traps), then drops them from the stack.
fn fill_return_stack() {
    // SAFETY: the calls push 32 return addresses (256 bytes) below RSP, which the `add`
    // removes again; the hypervisor is built without a red zone, so nothing lives there.
    // Nothing returns through the pushed addresses; each points at a trap that only
    // speculation can reach.
    unsafe {
        asm!(
            "mov {n:e}, 16",
            "2:",
            "call 3f",
            "int3",
            "3:",
            "call 4f",
            "int3",
            "4:",
            "dec {n:e}",
            "jnz 2b",
            "add rsp, 256",
            n = out(reg) _,
        );
    }
}

/// Just before a VM entry: clear the CPU's buffers if it needs it (MDS).
#[inline]
pub fn before_entry() {
    if isolation().verw {
        let selector: u16 = super::gdt::KERNEL_DS;
        // SAFETY: VERW with a valid data selector only sets ZF and, on MD_CLEAR CPUs,
        // overwrites the fill, store and load buffers.
        unsafe { asm!("verw [{}]", in(reg) &selector, options(nostack, readonly)) };
    }
}

//! Test guest `swapgs-kgs`: KERNEL_GS_BASE changes without a VM exit (`swapgs`), so the
//! hypervisor must read it back whenever the vCPU stops holding the CPU. The guest sets GS
//! and KERNEL_GS_BASE to values of its own, swaps, sleeps while other domains (other copies of
//! this guest, with other values) run, swaps back, and checks both registers every round.
//! It used to fail on VMX: the hardware MSR was loaded on entry and never saved.
//!
//! Options: `rounds=` (default 200).
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use guest_abi::println;
use guest_abi::rt::test::{Verdict, option};
use guest_abi::rt::cpu::{rdmsr, wrmsr};
use guest_abi::rt::hc;
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(swapgs_kgs);

const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;
const DEFAULT_ROUNDS: u64 = 200;
/// Each round sleeps this long, so other domains run in between.
const SLEEP_NS: u64 = 200_000;

fn swapgs() {
    // SAFETY: exchanges GS_BASE and KERNEL_GS_BASE; nothing in this guest uses GS.
    unsafe { asm!("swapgs", options(nomem, nostack)) };
}

fn swapgs_kgs(si: &'static StartInfo) -> i32 {
    let rounds = option("rounds", DEFAULT_ROUNDS);
    let seed = u64::from(si.domid).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let gs = 0x0000_1000_0000_0000 | (seed & 0x0FFF_FFFF_F000);
    let kgs = 0xFFFF_9000_0000_0000 | ((seed >> 12) & 0x0FFF_FFFF_F000);
    let mut v = Verdict::new();
    // SAFETY: canonical values for GS_BASE and KERNEL_GS_BASE; nothing in this guest uses GS.
    unsafe {
        wrmsr(MSR_GS_BASE, gs);
        wrmsr(MSR_KERNEL_GS_BASE, kgs);
    }
    for round in 0..rounds {
        swapgs();
        hc::sleep(SLEEP_NS);
        let (g1, k1) = (rdmsr(MSR_GS_BASE), rdmsr(MSR_KERNEL_GS_BASE));
        swapgs();
        let _ = hc::yield_now();
        let (g2, k2) = (rdmsr(MSR_GS_BASE), rdmsr(MSR_KERNEL_GS_BASE));
        if (g1, k1) != (kgs, gs) || (g2, k2) != (gs, kgs) {
            v.fail(format_args!(
                "round {round}: after swapgs gs {g1:#x} kgs {k1:#x}, after swapping back gs {g2:#x} kgs {k2:#x} (want gs {gs:#x} kgs {kgs:#x})"
            ));
            break;
        }
    }
    println!("swapgs-kgs {}: {rounds} rounds of swapgs around sleeps", si.name());
    v.report()
}

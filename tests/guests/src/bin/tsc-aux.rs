//! Test guest `tsc-aux`: IA32_TSC_AUX, which RDTSCP and RDPID return without a VM exit, is
//! per vCPU: each copy of this guest writes its own value and checks RDTSCP returns it while
//! the others run on the same CPU with theirs. Without RDTSCP on this CPU it reports SKIP.
//!
//! Options: `ms=` how long to keep checking (default 150).
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use guest_abi::println;
use guest_abi::rt::cpu::wrmsr;
use guest_abi::rt::test::{Status, Verdict, option, report, spin_checking};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(tsc_aux);

const MSR_TSC_AUX: u32 = 0xC000_0103;
/// CPUID 0x8000_0001 EDX bit 27: RDTSCP.
const EXT1_EDX_RDTSCP: u32 = 1 << 27;
const DEFAULT_SPIN_MS: u64 = 150;

fn rdtscp_aux() -> u32 {
    let aux: u32;
    // SAFETY: RDTSCP is present (checked by the caller); it only reads the TSC and TSC_AUX.
    unsafe { asm!("rdtscp", out("eax") _, out("edx") _, out("ecx") aux, options(nomem, nostack)) };
    aux
}

fn tsc_aux(si: &'static StartInfo) -> i32 {
    let spin_ms = option("ms", DEFAULT_SPIN_MS);
    let ext = core::arch::x86_64::__cpuid(0x8000_0001);
    if ext.edx & EXT1_EDX_RDTSCP == 0 {
        println!("tsc-aux: this CPU has no RDTSCP, so there is no TSC_AUX to switch");
        report(Status::Skip);
    }
    let want = si.domid.wrapping_mul(0x0101_0101) ^ 0x5A00_0000;
    // SAFETY: TSC_AUX exists (RDTSCP is shown) and takes 32 bits; nothing else in this guest
    // reads it.
    unsafe { wrmsr(MSR_TSC_AUX, u64::from(want)) };
    let mut v = Verdict::new();
    let spin = spin_checking(spin_ms, si.tsc_khz, |_| rdtscp_aux() == want);
    if spin.failed {
        v.fail(format_args!("rdtscp returned aux {:#x}, wrote {want:#x}, after {} preemptions", rdtscp_aux(), spin.preemptions));
    }
    let (checks, preemptions) = (spin.checks, spin.preemptions);
    println!("tsc-aux {}: aux {want:#x} kept over {checks} checks and {preemptions} preemptions", si.name());
    v.report()
}

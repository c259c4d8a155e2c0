//! Test guest `cr8-tpr`: each vCPU's task priority (CR8) is its own. Writing CR8 must not
//! reach the real local APIC (on VMX a `mov cr8, 15` used to mask the hypervisor's own timer,
//! so no timer ever fired again and the machine hung), must read back, must survive
//! preemption by another domain with a different value, and must hold back an event upcall
//! whose priority class it masks until it is lowered.
//!
//! Options: `tpr=N` (0-15, default 15) is the value kept while spinning; `ms=` how long to
//! spin sharing the CPU (default 200).
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::println;
use guest_abi::rt::test::{Status, Verdict, option, report, spin_checking};
use guest_abi::rt::cpu::{read_cr8, write_cr8};
use guest_abi::rt::{events, hc};
use guest_abi::vcpu::CR8_MAX;
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(cr8_tpr);

const DEFAULT_TPR: u64 = 15;
const DEFAULT_SPIN_MS: u64 = 200;
/// A timed block that must come back: if CR8 reached the APIC, it never does.
const BLOCK_NS: u64 = 20_000_000;
/// How long to wait for an upcall that should (or should not) arrive.
const UPCALL_WAIT_MS: u64 = 50;

static UPCALLS: AtomicU64 = AtomicU64::new(0);

fn on_events(_bits: u64) {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
}

/// Spins with interrupts on for `ms`; returns the upcalls that arrived meanwhile.
fn upcalls_during(si: &StartInfo, ms: u64) -> u64 {
    let before = UPCALLS.load(Ordering::Relaxed);
    spin_checking(ms, si.tsc_khz, |_| {
        core::hint::spin_loop();
        true
    });
    UPCALLS.load(Ordering::Relaxed) - before
}

fn cr8_tpr(si: &'static StartInfo) -> i32 {
    let (tpr, spin_ms) = (option("tpr", DEFAULT_TPR), option("ms", DEFAULT_SPIN_MS));
    if tpr > CR8_MAX {
        println!("cr8-tpr: bad tpr= option: {tpr} is above {CR8_MAX}");
        report(Status::Error);
    }
    let name = si.name();
    let mut v = Verdict::new();

    // 1. CR8 = 15 must not stop the machine's timer: a timed block comes back.
    write_cr8(15);
    if read_cr8() != 15 {
        v.fail(format_args!("cr8 reads {} after writing 15", read_cr8()));
    }
    let before = hc::time_ns().unwrap_or(0);
    let _ = hc::block(BLOCK_NS);
    let slept = hc::time_ns().unwrap_or(0).saturating_sub(before);
    if slept < BLOCK_NS / 2 {
        v.fail(format_args!("block({BLOCK_NS} ns) came back after {slept} ns"));
    }
    let _ = hc::event_ack();

    // 2. The TPR holds back an upcall whose class (vector / 16) it masks.
    events::set_callback(on_events);
    let class = u64::from(events::UPCALL_VECTOR >> 4);
    write_cr8(class);
    if let Err(e) = events::enable() {
        println!("cr8-tpr: set_upcall failed: {e}");
        report(Status::Error);
    }
    // A timer event becomes pending while the TPR masks its upcall.
    let _ = hc::block(1_000_000);
    let held = upcalls_during(si, UPCALL_WAIT_MS);
    if held != 0 {
        v.fail(format_args!("{held} upcalls arrived with cr8 = {class} masking vector {:#x}", events::UPCALL_VECTOR));
    }
    let before = UPCALLS.load(Ordering::Relaxed);
    write_cr8(class - 1);
    let _ = upcalls_during(si, UPCALL_WAIT_MS);
    let taken = UPCALLS.load(Ordering::Relaxed) - before;
    if taken == 0 {
        v.fail(format_args!("no upcall after lowering cr8 to {}", class - 1));
    }
    let _ = events::disable();

    // 3. Its own value survives other domains running on the CPU.
    write_cr8(tpr);
    let spin = spin_checking(spin_ms, si.tsc_khz, |_| read_cr8() == tpr);
    if spin.failed {
        v.fail(format_args!("cr8 changed to {} (wrote {tpr}) after {} preemptions", read_cr8(), spin.preemptions));
    }
    let (checks, preemptions) = (spin.checks, spin.preemptions);
    write_cr8(0);
    println!("cr8-tpr {name}: timer survived cr8=15, upcall held {held} taken {taken}, cr8 {tpr} kept over {checks} checks and {preemptions} preemptions");
    v.report()
}

//! Test guest `upcall`: asks for events as interrupts (an upcall vector), then freezes itself.
//! Each clone must learn that it is a clone from the `CLONED` event delivered as an upcall,
//! without polling, and from its start-of-day page; then it takes timer events by upcall
//! while it runs with interrupts enabled. One result line per clone.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::hypercall::event;
use guest_abi::println;
use guest_abi::rt::test::{Status, Verdict, report};
use guest_abi::rt::{self, events, hc, rdtsc};
use guest_abi::start_info::{StartFlags, StartInfo};

guest_abi::guest_main!(upcall);

/// How long a clone waits for its upcall before giving up.
const WAIT_MS: u64 = 2_000;
/// The timeout whose timer event a clone takes by upcall.
const TIMER_EVENT_NS: u64 = 1_000_000;

/// Event bits received through upcalls, and how many upcalls brought them.
static RECEIVED: AtomicU64 = AtomicU64::new(0);
static UPCALLS: AtomicU64 = AtomicU64::new(0);

fn on_events(bits: u64) {
    RECEIVED.fetch_or(bits, Ordering::Relaxed);
    UPCALLS.fetch_add(1, Ordering::Relaxed);
}

/// Spins (interrupts enabled) until `bit` has come in by upcall or `ms` pass.
fn wait_for(bit: u64, si: &StartInfo, ms: u64) -> bool {
    let start = rdtsc();
    while RECEIVED.load(Ordering::Relaxed) & bit == 0 {
        if rdtsc().wrapping_sub(start) > ms * si.tsc_khz {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn upcall(_si: &'static StartInfo) -> i32 {
    events::set_callback(on_events);
    if let Err(e) = events::enable() {
        println!("upcall: set_upcall failed: {e}");
        report(Status::Error);
    }
    println!("upcall: events arrive as interrupts; freezing");
    if let Err(e) = hc::freeze_self() {
        println!("upcall: freeze_self failed: {e}");
        report(Status::Error);
    }

    // Only clones get here, with interrupts still enabled and the upcall still registered.
    let si = &rt::start_info_now();
    let mut verdict = Verdict::new();
    if !StartFlags::from_bits_retain(si.flags).contains(StartFlags::CLONE) {
        verdict.fail(format_args!("freeze_self returned but the start-of-day page does not say clone"));
    }
    if !wait_for(event::CLONED, si, WAIT_MS) {
        verdict.fail(format_args!("no CLONED upcall within {WAIT_MS} ms"));
    }
    // A timer event through the same path: block with a timeout while interrupts are on.
    hc::sleep(TIMER_EVENT_NS);
    let upcalls = UPCALLS.load(Ordering::Relaxed);
    if upcalls == 0 {
        verdict.fail(format_args!("no upcall arrived"));
    }
    println!(
        "clone {} domain {} got CLONED by upcall ({} upcalls, bits {:#x})",
        si.clone_index,
        si.domid,
        upcalls,
        RECEIVED.load(Ordering::Relaxed)
    );
    verdict.report()
}

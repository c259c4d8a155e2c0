//! Test guest `spinner`: fills `mib=` MiB (default 4) above its image with a pattern that
//! includes its domid, spins for `ms=` milliseconds (default 300) of TSC time counting loop
//! iterations and preemptions (a gap of more than 200 µs between two TSC reads means another
//! domain ran), then checks the pattern survived. Several spinners side by side exercise the
//! scheduler and memory isolation.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::println;
use guest_abi::rt::test::{Status, option, report};
use guest_abi::rt::{self, rdtsc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(spinner);

const DEFAULT_SPIN_MS: u64 = 300;
const DEFAULT_FILL_MIB: u64 = 4;
/// A gap between two TSC reads longer than this means the vCPU was descheduled.
const PREEMPTION_GAP_US: u64 = 200;
const MIB_BYTES: u64 = 1 << 20;
const WORD_BYTES: u64 = 8;

fn pattern(domid: u32, gpa: u64) -> u64 {
    (u64::from(domid) << 48) ^ gpa.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn spinner(si: &'static StartInfo) -> i32 {
    let spin_ms = option("ms", DEFAULT_SPIN_MS);
    let fill_mib = option("mib", DEFAULT_FILL_MIB);
    let name = si.name();
    if si.tsc_khz == 0 {
        println!("spinner {name}: start-of-day page gives no TSC frequency");
        report(Status::Failure);
    }
    let start = rt::image_end();
    let end = fill_mib.checked_mul(MIB_BYTES).and_then(|b| start.checked_add(b)).unwrap_or(u64::MAX);
    if end > si.mem_bytes {
        println!("spinner {name}: {fill_mib} MiB do not fit above the image ({:#x} bytes of RAM)", si.mem_bytes);
        report(Status::Error);
    }

    let mut gpa = start;
    while gpa < end {
        // SAFETY: [image_end, mem_bytes) is guest RAM no Rust object uses (no heap here).
        unsafe { core::ptr::write_volatile(gpa as *mut u64, pattern(si.domid, gpa)) };
        gpa += WORD_BYTES;
    }

    let spin_cycles = spin_ms.saturating_mul(si.tsc_khz);
    let gap_cycles = si.tsc_khz * PREEMPTION_GAP_US / 1000;
    let (mut iterations, mut preemptions) = (0u64, 0u64);
    let begin = rdtsc();
    let mut last = begin;
    loop {
        let now = rdtsc();
        if now.wrapping_sub(last) > gap_cycles {
            preemptions += 1;
        }
        last = now;
        iterations += 1;
        if now.wrapping_sub(begin) >= spin_cycles {
            break;
        }
    }

    let mut gpa = start;
    while gpa < end {
        // SAFETY: as above; written by the fill loop.
        let found = unsafe { core::ptr::read_volatile(gpa as *const u64) };
        if found != pattern(si.domid, gpa) {
            println!(
                "spinner {name}: pattern changed at {gpa:#x}: expected {:#x}, found {found:#x}",
                pattern(si.domid, gpa)
            );
            report(Status::Failure);
        }
        gpa += WORD_BYTES;
    }
    println!("spinner {name}: iterations {iterations} preemptions {preemptions} pattern ok");
    report(Status::Success)
}

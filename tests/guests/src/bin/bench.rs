//! Test guest `bench`: measures with the TSC the cost of a null hypercall and of a
//! second-level write-protection fault round trip (`mem_protect` a page, then write it),
//! the latter net of the same write to an unprotected page. Prints one line per measurement:
//! `bench: <what> cycles=<avg> min=<min> n=<n>`.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::layout::PAGE_SIZE;
use guest_abi::println;
use guest_abi::rt::test::{Status, report};
use guest_abi::rt::{self, hc, rdtsc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(bench);

/// Null hypercalls timed.
const NULL_CALLS: u64 = 1000;
/// Pages written in each write loop.
const WRITE_PAGES: u64 = 256;
/// Average and minimum of a series of cycle counts.
#[derive(Clone, Copy)]
struct Cycles {
    sum: u64,
    min: u64,
    n: u64,
}

impl Cycles {
    fn new() -> Self {
        Self { sum: 0, min: u64::MAX, n: 0 }
    }

    fn add(&mut self, cycles: u64) {
        self.sum = self.sum.saturating_add(cycles);
        self.min = self.min.min(cycles);
        self.n += 1;
    }

    fn avg(&self) -> u64 {
        self.sum.checked_div(self.n).unwrap_or(0)
    }
}

/// Writes one word into each of `pages` pages from `base`, timing each write.
fn time_writes(base: u64, pages: u64, value: u64) -> Cycles {
    let mut c = Cycles::new();
    for i in 0..pages {
        let gpa = base + i * PAGE_SIZE;
        let t0 = rdtsc();
        // SAFETY: the pages lie in guest RAM above the image, which no Rust object uses.
        unsafe { core::ptr::write_volatile(gpa as *mut u64, value) };
        c.add(rdtsc().wrapping_sub(t0));
    }
    c
}

fn bench(si: &'static StartInfo) -> i32 {
    // Each measurement starts after a pause, so earlier console output is not timed.
    hc::sleep(hc::SETTLE_NS);
    let mut null = Cycles::new();
    for _ in 0..NULL_CALLS {
        let t0 = rdtsc();
        let r = hc::null();
        null.add(rdtsc().wrapping_sub(t0));
        if r != Ok(0) {
            println!("bench: null hypercall returned {r:?}");
            report(Status::Failure);
        }
    }
    println!("bench: null-hypercall cycles={} min={} n={}", null.avg(), null.min, null.n);

    let plain_base = rt::image_end();
    let protected_base = plain_base + WRITE_PAGES * PAGE_SIZE;
    if protected_base + WRITE_PAGES * PAGE_SIZE > si.mem_bytes {
        println!("bench: {} pages of RAM above the image needed", 2 * WRITE_PAGES);
        report(Status::Error);
    }
    hc::sleep(hc::SETTLE_NS);
    // Touch both regions first so neither measurement includes a first-touch fault.
    time_writes(plain_base, 2 * WRITE_PAGES, 1);
    let plain = time_writes(plain_base, WRITE_PAGES, 2);
    if let Err(e) = hc::mem_protect(protected_base, WRITE_PAGES) {
        println!("bench: mem_protect({protected_base:#x}, {WRITE_PAGES}) failed: {e}");
        report(Status::Failure);
    }
    let protected = time_writes(protected_base, WRITE_PAGES, 3);
    println!("bench: plain-write cycles={} min={} n={}", plain.avg(), plain.min, plain.n);
    println!(
        "bench: npf-roundtrip cycles={} min={} n={}",
        protected.avg().saturating_sub(plain.avg()),
        protected.min.saturating_sub(plain.avg()),
        protected.n
    );
    report(Status::Success)
}

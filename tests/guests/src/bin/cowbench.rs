//! Test guest `cowbench`: fills `pages=` pages (default 256) and freezes itself; each clone
//! then measures, in guest TSC cycles, a copy-on-write fault (one 8-byte write into a page it
//! shares with the template), a plain 4 KiB copy (`rep movsq` between private pages) and a
//! null hypercall, and prints them with the ratio `cow / (copy + null)` (target <= 2).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::println;
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(cowbench);

const PAGE: u64 = 4096;
const MAX_PAGES: usize = 1024;

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn copy_page(dst: u64, src: u64) {
    // SAFETY: both are page-aligned private pages of this domain; DF is clear.
    unsafe {
        core::arch::asm!("rep movsq", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") PAGE / 8 => _,
                         options(nostack, preserves_flags))
    };
}

fn cowbench(si: &'static StartInfo) -> i32 {
    let pages = rt::cmdline_u64("pages").ok().flatten().unwrap_or(256).clamp(8, MAX_PAGES as u64) as usize;
    let base = rt::image_end().div_ceil(2 << 20) * (2 << 20);
    let scratch = base + pages as u64 * PAGE;
    if scratch + 3 * PAGE > si.mem_bytes {
        println!("cowbench: {} MiB is too small", si.mem_bytes >> 20);
        return 1;
    }
    for i in 0..pages as u64 {
        // SAFETY: inside this domain's identity-mapped RAM.
        unsafe { ((base + i * PAGE) as *mut u64).write_volatile(i) };
    }
    if let Err(e) = hc::freeze_self() {
        println!("cowbench: cannot freeze: {e}");
        return 1;
    }
    // In a clone: every page at `base` is shared with the template. Pause first, so that
    // dom0's console output has reached the serial line and its draining is not timed.
    hc::sleep(hc::SETTLE_NS);
    let mut cow = [0u64; MAX_PAGES];
    for (i, c) in cow.iter_mut().take(pages).enumerate() {
        let p = (base + i as u64 * PAGE) as *mut u64;
        let t0 = rt::rdtsc();
        // SAFETY: as above.
        unsafe { p.write_volatile(0xC0FFEE) };
        *c = rt::rdtsc() - t0;
    }
    // Make the copy source and destination private first, then time copies between them.
    for i in 0..2 {
        // SAFETY: as above.
        unsafe { ((scratch + i * PAGE) as *mut u64).write_volatile(1) };
    }
    let mut copy = [0u64; MAX_PAGES];
    for c in copy.iter_mut().take(pages) {
        let t0 = rt::rdtsc();
        copy_page(scratch, scratch + PAGE);
        *c = rt::rdtsc() - t0;
    }
    let mut null = [0u64; MAX_PAGES];
    for c in null.iter_mut().take(pages) {
        let t0 = rt::rdtsc();
        let _ = hc::null();
        *c = rt::rdtsc() - t0;
    }
    let (cow_m, copy_m, null_m) = (median(&mut cow[..pages]), median(&mut copy[..pages]), median(&mut null[..pages]));
    let ratio_x100 = cow_m * 100 / (copy_m + null_m).max(1);
    println!(
        "cowbench: cow-fault cycles={cow_m} copy4k cycles={copy_m} null-hypercall cycles={null_m} ratio={}.{:02} (target <= 2.00) n={pages}",
        ratio_x100 / 100,
        ratio_x100 % 100
    );
    0
}

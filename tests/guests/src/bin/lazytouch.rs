//! Test guest `lazytouch`: fills `pages=` pages (default 512) above its image with a pattern
//! and prints `lazytouch: filled N pages`, then waits to be saved and restored. Restored (the
//! RESTORED event), it reads every page, timing each first read in guest TSC cycles (in a
//! lazy restore each is a demand fault: fault, request to the pager, supply, resume), then
//! writes one word into each, timing that too (a copy-on-write fault where the page was
//! supplied shared), checks the pattern, prints one result line and exits 0 (1 if a page is
//! wrong).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::hypercall::event;
use guest_abi::println;
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(lazytouch);

const PAGE: u64 = 4096;
const MAX_PAGES: usize = 4096;
/// Words of each page the pattern sets (one per 512 bytes).
const WORDS_PER_PAGE: u64 = 8;

fn pattern(page: u64, word: u64) -> u64 {
    (page * WORDS_PER_PAGE + word + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn lazytouch(si: &'static StartInfo) -> i32 {
    let pages = rt::cmdline_u64("pages").ok().flatten().unwrap_or(512).clamp(8, MAX_PAGES as u64) as usize;
    let base = rt::image_end().div_ceil(2 << 20) * (2 << 20);
    if base + pages as u64 * PAGE > si.mem_bytes {
        println!("lazytouch: {} MiB is too small for {pages} pages", si.mem_bytes >> 20);
        return 1;
    }
    for p in 0..pages as u64 {
        for w in 0..WORDS_PER_PAGE {
            // SAFETY: inside this domain's identity-mapped RAM, above its image.
            unsafe { ((base + p * PAGE + w * 512) as *mut u64).write_volatile(pattern(p, w)) };
        }
    }
    println!("lazytouch: filled {pages} pages");
    loop {
        if hc::block(0).unwrap_or(0) & event::RESTORED != 0 {
            break;
        }
        let _ = hc::event_ack();
    }
    let _ = hc::event_ack();
    let mut read = [0u64; MAX_PAGES];
    let mut write = [0u64; MAX_PAGES];
    let mut sum = 0u64;
    for (p, r) in read.iter_mut().take(pages).enumerate() {
        let at = (base + p as u64 * PAGE) as *const u64;
        let t0 = rt::rdtsc();
        // SAFETY: as above.
        let v = unsafe { at.read_volatile() };
        *r = rt::rdtsc() - t0;
        sum = sum.wrapping_add(v);
    }
    for (p, w) in write.iter_mut().take(pages).enumerate() {
        let at = (base + p as u64 * PAGE + 8) as *mut u64;
        let t0 = rt::rdtsc();
        // SAFETY: as above (the word written is not one the pattern set).
        unsafe { at.write_volatile(p as u64) };
        *w = rt::rdtsc() - t0;
    }
    let mut bad = 0;
    for p in 0..pages as u64 {
        for w in 0..WORDS_PER_PAGE {
            // SAFETY: as above.
            if unsafe { ((base + p * PAGE + w * 512) as *const u64).read_volatile() } != pattern(p, w) {
                bad += 1;
            }
        }
    }
    let (r, w) = (median(&mut read[..pages]), median(&mut write[..pages]));
    if bad != 0 {
        println!("lazytouch: FAILURE {bad} words wrong of {pages} pages");
        return 1;
    }
    println!("lazytouch: verified {pages} pages sum={sum:#x} first-read cycles={r} write-after cycles={w}");
    0
}

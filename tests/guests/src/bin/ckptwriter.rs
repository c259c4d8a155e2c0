//! Test guest `ckptwriter`: writes continuously so that any torn copy of its memory shows.
//! Round after round it stamps each of `pages=` pages (default 1024, from 4 MiB up) with the
//! round number, first and last word, in page order. At any instant the pages before its
//! position hold round R and the rest R-1, and its position is in its registers: a live
//! checkpoint restored later must bring back exactly that. A restored copy (the `RESTORED`
//! event) checks it against every page, checks that its clock did not go back, prints one
//! result line and exits; the original writes on until it is destroyed.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::hypercall::event;
use guest_abi::println;
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(ckptwriter);

/// First guest-physical address of the stamped pages.
const BASE_GPA: u64 = 4 << 20;
/// Pages between two looks at the pending events.
const POLL_PAGES: u64 = 64;
/// Words per page.
const WORDS: usize = 512;

fn page(i: u64) -> *mut u64 {
    (BASE_GPA + i * 4096) as *mut u64
}

/// Stamps page `i` with round `r`.
fn stamp(i: u64, r: u64) {
    // SAFETY: the pages from BASE_GPA lie in our identity-mapped RAM (checked at start) and
    // nothing else uses them.
    unsafe {
        core::ptr::write_volatile(page(i), r);
        core::ptr::write_volatile(page(i).add(WORDS - 1), r);
    }
}

fn read(i: u64) -> (u64, u64) {
    // SAFETY: as for `stamp`.
    unsafe { (core::ptr::read_volatile(page(i)), core::ptr::read_volatile(page(i).add(WORDS - 1))) }
}

/// Pages before `pos` must hold `round`, the rest `round - 1`, each page whole.
fn check(pages: u64, round: u64, pos: u64) -> Result<(), (u64, u64, u64)> {
    for i in 0..pages {
        let want = if i < pos { round } else { round - 1 };
        let (first, last) = read(i);
        if first != want || last != want {
            return Err((i, first, last));
        }
    }
    Ok(())
}

fn ckptwriter(si: &'static StartInfo) -> i32 {
    let pages = rt::cmdline_u64("pages").ok().flatten().unwrap_or(1024);
    if BASE_GPA + pages * 4096 > si.mem_bytes {
        println!("Test result: ERROR (pages={pages} does not fit in {} KiB)", si.mem_bytes / 1024);
        return 1;
    }
    // Round 0 everywhere: the state "before round 1".
    for i in 0..pages {
        stamp(i, 0);
    }
    println!("writer running: {pages} pages from {BASE_GPA:#x}");
    let mut last_time = hc::time_ns().unwrap_or(0);
    let mut round = 1u64;
    loop {
        for i in 0..pages {
            if i % POLL_PAGES == 0 {
                let events = hc::event_ack().unwrap_or(0);
                let now = hc::time_ns().unwrap_or(0);
                if events & event::RESTORED != 0 {
                    return restored(si, pages, round, i, last_time, now);
                }
                last_time = now;
            }
            stamp(i, round);
        }
        round += 1;
    }
}

fn restored(si: &StartInfo, pages: u64, round: u64, pos: u64, before: u64, now: u64) -> i32 {
    println!("restored at round {round} page {pos} (generation {})", si.generation);
    if now < before {
        println!("clock went back: {before} -> {now}");
        println!("Test result: FAILURE");
        return 1;
    }
    match check(pages, round, pos) {
        Ok(()) => {
            println!("invariant ok: pages 0..{pos} hold round {round}, the rest {}", round - 1);
            println!("clock ok: {before} -> {now}");
            println!("Test result: SUCCESS");
            0
        }
        Err((i, first, last)) => {
            println!("torn copy: page {i} holds {first}/{last} (round {round}, position {pos})");
            println!("Test result: FAILURE");
            1
        }
    }
}

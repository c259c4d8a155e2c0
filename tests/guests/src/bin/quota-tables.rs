//! Test guest `quota-tables`: the page tables a clone makes the hypervisor copy count against
//! its quota like its pages. The guest freezes itself into a template; each clone
//! write-protects all of its RAM above the start-of-day page (`mem_protect`, which copies the
//! shared last-level tables) and prints the outcome, then writes `writes=` pages (default
//! 0) from 16 MiB up and reports. A clone whose quota cannot hold the tables gets `quota
//! exceeded` from the call and nothing is allocated; one whose writes exceed it is paused
//! (`paused(quota)`) and dom0's `stat` shows tables and pages within the quota.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::println;
use guest_abi::rt::test::{Status, option, report};
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(quota_tables);

const PAGE_BYTES: u64 = 4096;
/// First page the clone writes (above the image and its stack).
const WRITES_FROM_GPA: u64 = 16 << 20;
/// Below this the start-of-day page and the boot tables live.
const PROTECT_FROM_GPA: u64 = 2 * PAGE_BYTES;

fn quota_tables(si: &'static StartInfo) -> i32 {
    let writes = option("writes", 0);
    println!("quota-tables: {} MiB template; freezing", si.mem_bytes >> 20);
    if let Err(e) = hc::freeze_self() {
        println!("quota-tables: freeze_self failed: {e}");
        report(Status::Error);
    }
    let si = rt::start_info_now();
    let pages = (si.mem_bytes - PROTECT_FROM_GPA) / PAGE_BYTES;
    match hc::mem_protect(PROTECT_FROM_GPA, pages) {
        Ok(()) => println!("quota-tables clone {}: mem_protect of {pages} pages: ok", si.clone_index),
        Err(e) => println!("quota-tables clone {}: mem_protect of {pages} pages: {e}", si.clone_index),
    }
    let end = WRITES_FROM_GPA.saturating_add(writes.saturating_mul(PAGE_BYTES)).min(si.mem_bytes);
    let mut gpa = WRITES_FROM_GPA;
    while gpa < end {
        // SAFETY: guest RAM below mem_bytes, identity-mapped, above everything this guest uses.
        unsafe { core::ptr::write_volatile(gpa as *mut u64, gpa) };
        gpa += PAGE_BYTES;
    }
    println!("quota-tables clone {}: wrote {} pages", si.clone_index, (gpa - WRITES_FROM_GPA) / PAGE_BYTES);
    report(Status::Success)
}

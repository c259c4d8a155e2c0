//! Test guest `memory`: writes a pattern derived from each address to every 8-byte word of
//! RAM between the end of its image and the end of its memory, reads it all back and prints
//! `memory: <N> pages ok`. With `oob=1` it then reads a guest-physical address 2 MiB beyond
//! its RAM, and with `sod=1` it writes to its start-of-day page (read-only to the guest, even
//! though the hypervisor wrote it); the hypervisor must answer either by stopping the domain.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::layout::{MAX_DOMAIN_MEM_BYTES, PAGE_SIZE, START_INFO_GPA};
use guest_abi::println;
use guest_abi::rt::test::{Status, option, report};
use guest_abi::rt::{self};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(memory);

/// Bytes per checked word.
const WORD_BYTES: u64 = 8;
/// How far beyond the end of RAM the out-of-bounds read goes.
const OOB_DISTANCE_BYTES: u64 = 2 << 20;
/// The out-of-bounds address must stay below this (above it lie boot modules for dom0).
const OOB_LIMIT_GPA: u64 = MAX_DOMAIN_MEM_BYTES;

/// The word stored at `gpa`: a bijection of the address, so a page that shows up at the wrong
/// address (or twice) is caught.
fn pattern(gpa: u64) -> u64 {
    gpa.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5_5A5A_C3C3_3C3C
}

fn memory(si: &'static StartInfo) -> i32 {
    let flag = |key: &str| option(key, 0) != 0;
    let (oob, sod) = (flag("oob"), flag("sod"));
    let start = rt::image_end();
    let end = si.mem_bytes & !(PAGE_SIZE - 1);
    if start >= end {
        println!("memory: no RAM above the image (image end {start:#x}, memory {end:#x})");
        report(Status::Error);
    }

    let mut gpa = start;
    while gpa < end {
        // SAFETY: [image_end, mem_bytes) is identity-mapped guest RAM that no Rust object uses
        // (this guest has no heap and its stack lies inside the image).
        unsafe { core::ptr::write_volatile(gpa as *mut u64, pattern(gpa)) };
        gpa += WORD_BYTES;
    }
    let mut gpa = start;
    while gpa < end {
        // SAFETY: as above; the word was written by the loop before.
        let found = unsafe { core::ptr::read_volatile(gpa as *const u64) };
        if found != pattern(gpa) {
            println!("memory: first bad address {gpa:#x}: expected {:#x}, found {found:#x}", pattern(gpa));
            report(Status::Failure);
        }
        gpa += WORD_BYTES;
    }
    println!("memory: {} pages ok", (end - start) / PAGE_SIZE);

    if oob {
        let target = si.mem_bytes.saturating_add(OOB_DISTANCE_BYTES);
        if target >= OOB_LIMIT_GPA {
            println!("memory: no gpa outside memory below {OOB_LIMIT_GPA:#x} to touch");
            report(Status::Skip);
        }
        println!("memory: touching gpa {target:#x} outside memory");
        // SAFETY: deliberately reads outside the domain's RAM (still identity-mapped by the
        // boot tables); the hypervisor is expected to stop the domain here.
        let value = unsafe { core::ptr::read_volatile(target as *const u64) };
        println!("memory: read {value:#x} outside memory and survived");
        report(Status::Failure);
    }
    if sod {
        println!("memory: writing to the start-of-day page at {START_INFO_GPA:#x}");
        // SAFETY: deliberately writes the read-only start-of-day page (identity-mapped); the
        // hypervisor is expected to stop the domain here.
        unsafe { core::ptr::write_volatile((START_INFO_GPA + 0x800) as *mut u64, 0xBAD) };
        println!("memory: wrote the start-of-day page and survived");
        report(Status::Failure);
    }
    report(Status::Success)
}

//! Test guest `console-flood`: one console write of 64 KiB must not stall the machine. With
//! `role=flood` it writes 64 KiB of numbered lines in a single `console_write`; with
//! `role=watch` it sleeps 1 ms at a time for `ms=` (default 400) and fails if any sleep
//! lasted longer than `max_gap_ms=` (default 100): the hypervisor used to echo the whole
//! write to the serial line inside that one exit (about 6 s at 115200 baud on hardware).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::println;
use guest_abi::rt::test::{Status, Verdict, option, report};
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(console_flood);

const FLOOD_BYTES: usize = 64 * 1024;
const LINE_BYTES: usize = 64;
const DEFAULT_WATCH_MS: u64 = 400;
const DEFAULT_MAX_GAP_MS: u64 = 100;
const SLEEP_NS: u64 = 1_000_000;

static mut FLOOD: [u8; FLOOD_BYTES] = [b'.'; FLOOD_BYTES];

fn console_flood(si: &'static StartInfo) -> i32 {
    let role = rt::cmdline_value("role").unwrap_or("flood");
    let (watch_ms, max_gap_ms) = (option("ms", DEFAULT_WATCH_MS), option("max_gap_ms", DEFAULT_MAX_GAP_MS));
    let mut v = Verdict::new();
    match role {
        "flood" => {
            // SAFETY: single vCPU; nothing else references the buffer.
            let buf = unsafe { &mut *(&raw mut FLOOD) };
            for (i, line) in buf.chunks_mut(LINE_BYTES).enumerate() {
                let tag = [b'f', b'l', b'o', b'o', b'd', b' ', b'0' + (i / 1000 % 10) as u8, b'0' + (i / 100 % 10) as u8, b'0' + (i / 10 % 10) as u8, b'0' + (i % 10) as u8, b' '];
                line[..tag.len()].copy_from_slice(&tag);
                line[LINE_BYTES - 1] = b'\n';
            }
            let start = hc::time_ns().unwrap_or(0);
            match hc::console_write(buf) {
                Ok(n) if n == FLOOD_BYTES => {}
                other => v.fail(format_args!("console_write of {FLOOD_BYTES} bytes returned {other:?}")),
            }
            let took_us = hc::time_ns().unwrap_or(0).saturating_sub(start) / 1000;
            println!("console-flood {}: wrote {FLOOD_BYTES} bytes in one call ({took_us} us)", si.name());
        }
        "watch" => {
            let (mut worst, mut sleeps) = (0u64, 0u64);
            let begin = hc::time_ns().unwrap_or(0);
            let mut last = begin;
            while last.saturating_sub(begin) < watch_ms * 1_000_000 {
                hc::sleep(SLEEP_NS);
                let now = hc::time_ns().unwrap_or(0);
                worst = worst.max(now.saturating_sub(last));
                last = now;
                sleeps += 1;
            }
            if worst > max_gap_ms * 1_000_000 {
                v.fail(format_args!("a 1 ms sleep took {} ms", worst / 1_000_000));
            }
            println!("console-flood {}: {sleeps} sleeps of 1 ms, longest {} us", si.name(), worst / 1000);
        }
        _ => {
            println!("console-flood: bad role= option (flood or watch)");
            report(Status::Error);
        }
    }
    v.report()
}

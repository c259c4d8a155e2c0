//! Test guest `ticker`: prints `tick N` every `interval_ms` (default 50) milliseconds, `count`
//! times (default: for ever), sleeping in between. A paused ticker's count must not advance.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::println;
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(ticker);

fn ticker(_si: &'static StartInfo) -> i32 {
    let interval_ms = rt::cmdline_u64("interval_ms").ok().flatten().unwrap_or(50);
    let count = rt::cmdline_u64("count").ok().flatten().unwrap_or(u64::MAX);
    let mut n = 0;
    while n < count {
        n += 1;
        println!("tick {n}");
        let until = hc::time_ns().unwrap_or(0) + interval_ms * 1_000_000;
        // Sleep until the deadline even if an unrelated event wakes us early.
        while let Ok(now) = hc::time_ns() {
            if now >= until {
                break;
            }
            hc::sleep(until - now);
        }
    }
    0
}

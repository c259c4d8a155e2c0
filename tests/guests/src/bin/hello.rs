//! Test guest `hello`: prints `hello from domain <domid> (<name>)` and succeeds; the smallest
//! check that a domain is built, runs and reaches its console.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::println;
use guest_abi::rt::test::{Status, report};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(hello);

fn hello(si: &'static StartInfo) -> i32 {
    println!("hello from domain {} ({})", si.domid, si.name());
    report(Status::Success)
}

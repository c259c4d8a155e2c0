//! Test guest `triple-fault`: loads an empty IDT and executes `ud2`, so #UD cannot be
//! delivered, nor the resulting #GP or #DF: the CPU triple-faults and the hypervisor must stop
//! the domain (and only it). Reaching the end of this guest is a failure.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::println;
use guest_abi::rt::cpu;
use guest_abi::rt::test::{Status, report};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(triple_fault);

fn triple_fault(_si: &'static StartInfo) -> i32 {
    println!("triple-fault: destroying the IDT");
    // SAFETY: deliberately leaves no usable IDT; the next exception escalates to a triple
    // fault, which is what this guest tests.
    unsafe {
        cpu::load_idt(0, 0);
        core::arch::asm!("ud2", options(nomem, nostack));
    }
    println!("triple-fault: execution continued after ud2 with no IDT");
    report(Status::Failure)
}

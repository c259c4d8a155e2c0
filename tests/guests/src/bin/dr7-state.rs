//! Test guest `dr7-state`: DR7 is the guest's. It arms a data breakpoint (DR0 on a variable,
//! DR7 enabling it for writes), makes hypercalls and sleeps so the vCPU exits and other
//! domains run, then checks that DR7 still reads what it wrote and that a write to the
//! variable raises #DB with DR6.B0. On VMX every exit used to reset DR7 to 0x400 (the VMCS
//! debug controls were not used), so the breakpoint silently vanished.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::println;
use guest_abi::rt::idt::{self, Frame};
use guest_abi::rt::test::Verdict;
use guest_abi::rt::cpu::read_dr7;
use guest_abi::rt::hc;
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(dr7_state);

/// DR7: L0 (bit 0), the reserved-one bit 10, R/W0 = 01 (data writes, bits 17:16) and
/// LEN0 = 11 (8 bytes, bits 19:18). Intel SDM Vol 3B 18.2.4.
const DR7_L0_WRITE_8: u64 = 1 | (1 << 10) | (0b01 << 16) | (0b11 << 18);
/// DR6.B0: breakpoint 0 matched.
const DR6_B0: u64 = 1;
/// DR6 after clearing (reserved bits read as one).
const DR6_CLEAR: u64 = 0xFFFF_0FF0;
const VECTOR_DB: u8 = 1;
const EXITS: u64 = 200;
const SLEEPS: u64 = 20;
/// Each sleep lasts this long, so other domains run in between.
const SLEEP_NS: u64 = 500_000;

/// The watched variable (8-byte aligned).
static WATCHED: AtomicU64 = AtomicU64::new(0);
static DB_COUNT: AtomicU64 = AtomicU64::new(0);
static LAST_DR6: AtomicU64 = AtomicU64::new(0);

fn on_db(_f: &mut Frame) {
    let dr6: u64;
    // SAFETY: reading and clearing DR6 at CPL 0 only affects debug status.
    unsafe {
        asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack));
        asm!("mov dr6, {}", in(reg) DR6_CLEAR, options(nomem, nostack));
    }
    LAST_DR6.store(dr6, Ordering::Relaxed);
    DB_COUNT.fetch_add(1, Ordering::Relaxed);
}

fn dr7_state(si: &'static StartInfo) -> i32 {
    let mut v = Verdict::new();
    idt::set_handler(VECTOR_DB, on_db);
    let addr = WATCHED.as_ptr() as u64;
    // SAFETY: DR0 takes the watched variable's address; DR7 arms a write breakpoint on it,
    // whose #DB the handler above takes.
    unsafe {
        asm!("mov dr0, {}", in(reg) addr, options(nomem, nostack));
        asm!("mov dr7, {}", in(reg) DR7_L0_WRITE_8, options(nomem, nostack));
    }
    for _ in 0..EXITS {
        let _ = hc::null();
    }
    for _ in 0..SLEEPS {
        hc::sleep(SLEEP_NS);
    }
    let dr7 = read_dr7();
    if dr7 != DR7_L0_WRITE_8 {
        v.fail(format_args!("dr7 reads {dr7:#x} after {EXITS} exits and {SLEEPS} sleeps, wrote {DR7_L0_WRITE_8:#x}"));
    }
    WATCHED.store(1, Ordering::Relaxed);
    let hits = DB_COUNT.load(Ordering::Relaxed);
    let dr6 = LAST_DR6.load(Ordering::Relaxed);
    if hits != 1 || dr6 & DR6_B0 == 0 {
        v.fail(format_args!("the write breakpoint fired {hits} times (dr6 {dr6:#x}), want once with B0"));
    }
    // SAFETY: disarms the breakpoint.
    unsafe { asm!("mov dr7, {}", in(reg) 0x400u64, options(nomem, nostack)) };
    WATCHED.store(2, Ordering::Relaxed);
    if DB_COUNT.load(Ordering::Relaxed) != hits {
        v.fail(format_args!("a disarmed breakpoint fired"));
    }
    println!("dr7-state {}: dr7 {dr7:#x} kept, breakpoint hits {hits}, dr6 {dr6:#x}", si.name());
    v.report()
}

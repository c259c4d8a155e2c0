//! Test guest `hcfuzz`: makes `count=` (default 5000) random hypercalls from a xorshift PRNG
//! seeded by `seed=`: defined unprivileged numbers, control numbers and unknown numbers, with
//! arguments drawn from edge values (0, 1, all ones, the end of RAM, 3 and 4 GiB, unaligned
//! addresses, huge lengths, ranges crossing the end of RAM, ranges inside its own RAM).
//!
//! It checks that control hypercalls fail with exactly `NotPermitted`, unknown numbers with
//! `NoSuchHypercall`, `console_write` of a range not inside RAM with `BadAddress`, that only
//! defined error codes come back, and that a 64 KiB canary in its own memory survives. It
//! never calls `shutdown` or `freeze_self`, blocks for at most 1 ms, and keeps interrupts off.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::cell::UnsafeCell;
use guest_abi::error::HvError;
use guest_abi::hypercall::{call6, nr};
use guest_abi::layout::PAGE_SIZE;
use guest_abi::rt::test::{Status, Verdict, option, report};
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;
use guest_abi::{print, println};

guest_abi::guest_main!(hcfuzz);

const DEFAULT_SEED: u64 = 0x2545_F491_4F6C_DD1D;
const DEFAULT_COUNT: u64 = 5000;
/// Longest `console_write` made with a valid range.
const CONSOLE_WRITE_MAX_BYTES: u64 = 256;
/// Longest `block` timeout.
const BLOCK_MAX_NS: u64 = 1_000_000;
/// Words in the canary (64 KiB).
const CANARY_WORDS: usize = 8192;
/// Printable RAM above the image that valid ranges point into (and `console_read` may fill).
const SCRATCH_BYTES: u64 = 64 * 1024;
/// Bytes of the printable payload valid `console_write` ranges are redirected to.
const PAYLOAD_BYTES: usize = 512;
/// Violations printed in full.
const REPORTED_VIOLATIONS: u64 = 5;
/// Result buckets: ok, each error code 1..=16, an undefined error code.
const BUCKETS: usize = HvError::ALL.len() + 2;
const UNDEFINED_BUCKET: usize = BUCKETS - 1;
const GIB_BYTES: u64 = 1 << 30;

/// Defined hypercalls the fuzzer may make (never SHUTDOWN or FREEZE_SELF).
const DEFINED: [u64; 18] = [
    nr::CONSOLE_WRITE,
    nr::YIELD,
    nr::BLOCK,
    nr::TIME,
    nr::EVENT_ACK,
    nr::SET_UPCALL,
    nr::NULL,
    nr::CONSOLE_READ,
    nr::MEM_PROTECT,
    nr::PAGER_RING,
    nr::PAGER_SUPPLY,
    nr::PAGER_FAIL,
    nr::PAGER_DROP,
    nr::CHANNEL_OPEN,
    nr::CHANNEL_NOTIFY,
    nr::SELF_CHECKPOINT,
    nr::SELF_CHECKPOINT_READ,
    nr::SELF_CHECKPOINT_END,
];

const fn printable(i: usize) -> u8 {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    ALPHABET[i % ALPHABET.len()]
}

static PAYLOAD: [u8; PAYLOAD_BYTES] = {
    let mut p = [0u8; PAYLOAD_BYTES];
    let mut i = 0;
    while i < PAYLOAD_BYTES {
        p[i] = printable(i);
        i += 1;
    }
    p
};

struct Canary(UnsafeCell<[u64; CANARY_WORDS]>);

// SAFETY: the guest has one vCPU and touches the canary only from `hcfuzz`.
unsafe impl Sync for Canary {}

static CANARY: Canary = Canary(UnsafeCell::new([0; CANARY_WORDS]));

fn canary_word(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FF_EE00_DEAD_BEEF
}

fn fill_canary() {
    let base = CANARY.0.get() as *mut u64;
    for i in 0..CANARY_WORDS {
        // SAFETY: `i` is inside the canary array; nothing else references it.
        unsafe { core::ptr::write_volatile(base.add(i), canary_word(i)) };
    }
}

/// The first canary word that changed, if any.
fn check_canary() -> Option<(u64, u64)> {
    let base = CANARY.0.get() as *const u64;
    (0..CANARY_WORDS).find_map(|i| {
        // SAFETY: `i` is inside the canary array; nothing else references it.
        let v = unsafe { core::ptr::read_volatile(base.add(i)) };
        (v != canary_word(i)).then(|| (base as u64 + i as u64 * 8, v))
    })
}

/// xorshift64: small, fast, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(if seed == 0 { DEFAULT_SEED } else { seed })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a hypercall number is expected to do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Defined,
    Control,
    Unknown,
}

fn is_known(number: u64) -> bool {
    (1..=nr::SELF_CHECKPOINT_END).contains(&number) || (nr::CONTROL_BASE..nr::CONTROL_END).contains(&number)
}

/// Where things are in this domain's memory.
struct Ram {
    mem_bytes: u64,
    image_end: u64,
    scratch: u64,
    tail: u64,
    payload: u64,
}

impl Ram {
    /// Whether `gpa..gpa + len` lies inside guest RAM.
    fn holds(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len).is_some_and(|end| end <= self.mem_bytes)
    }

    /// Whether the range lies in memory filled with printable bytes.
    fn printable(&self, gpa: u64, len: u64) -> bool {
        let within = |base: u64, size: u64| gpa >= base && gpa.checked_add(len).is_some_and(|e| e <= base + size);
        within(self.scratch, SCRATCH_BYTES)
            || within(self.tail, PAGE_SIZE)
            || within(self.payload, PAYLOAD_BYTES as u64)
    }
}

fn pick_number(rng: &mut Rng) -> (u64, Class) {
    match rng.below(100) {
        0..45 => (DEFINED[rng.below(DEFINED.len() as u64) as usize], Class::Defined),
        45..70 => (nr::CONTROL_BASE + rng.below(nr::CONTROL_END - nr::CONTROL_BASE), Class::Control),
        _ => {
            let number = match rng.below(6) {
                0 => 0,
                1 => nr::SELF_CHECKPOINT_END + 1 + rng.below(nr::CONTROL_BASE - nr::SELF_CHECKPOINT_END - 1),
                2 => nr::CONTROL_END + rng.below(0x1000 - nr::CONTROL_END),
                // A defined number with high bits set: catches a hypervisor that truncates RAX.
                3 => DEFINED[rng.below(DEFINED.len() as u64) as usize] | (1 << (32 + rng.below(32))),
                _ => loop {
                    let n = rng.next();
                    let low = n as u32 as u64;
                    if !is_known(n) && low != nr::SHUTDOWN && low != nr::FREEZE_SELF {
                        break n;
                    }
                },
            };
            (number, Class::Unknown)
        }
    }
}

fn edge(rng: &mut Rng, ram: &Ram) -> u64 {
    let mem = ram.mem_bytes;
    match rng.below(20) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => i64::MIN as u64,
        4 => mem - 1,
        5 => mem,
        6 => mem + PAGE_SIZE,
        7 => 3 * GIB_BYTES,
        8 => 4 * GIB_BYTES,
        9 => ram.scratch + 1 + rng.below(PAGE_SIZE - 1),
        10 => 1 << (32 + rng.below(32)),
        11 => u64::MAX - rng.below(PAGE_SIZE),
        12 => mem - 1 - rng.below(PAGE_SIZE),
        13 | 14 => ram.scratch + rng.below(SCRATCH_BYTES),
        15 => rng.below(ram.image_end),
        16 => rng.below(300),
        17 => rng.below(16),
        _ => rng.next(),
    }
}

/// Makes the arguments of `number` safe to fuzz with: `block` waits at most 1 ms, a valid
/// `console_write` range is at most 256 bytes of printable text, and a valid `console_read`
/// range never covers the image or the boot pages. Returns whether payload text was written.
fn shape_args(number: u64, args: &mut [u64; 6], rng: &mut Rng, ram: &Ram) -> bool {
    match number {
        nr::BLOCK => args[0] = 1 + rng.below(BLOCK_MAX_NS),
        nr::CONSOLE_WRITE if ram.holds(args[0], args[1]) => {
            args[1] = args[1].min(CONSOLE_WRITE_MAX_BYTES);
            if rng.below(4) != 0 {
                args[1] = args[1].min(16);
            }
            if !ram.printable(args[0], args[1]) {
                args[0] = ram.payload + rng.below(PAYLOAD_BYTES as u64 - args[1] + 1);
            }
            return args[1] > 0;
        }
        nr::CONSOLE_READ if ram.holds(args[0], args[1]) && args[0] < ram.image_end => {
            args[0] = ram.scratch;
            args[1] = args[1].min(SCRATCH_BYTES);
        }
        _ => {}
    }
    false
}

/// A hypercall result: Ok(value) or an error bucket.
fn bucket(raw: u64) -> usize {
    let v = raw as i64;
    if v >= 0 {
        return 0;
    }
    match HvError::from_code(v.unsigned_abs() as i64) {
        Some(e) => e as usize,
        None => UNDEFINED_BUCKET,
    }
}

fn describe(raw: u64) -> (&'static str, i64) {
    let v = raw as i64;
    if v >= 0 {
        return ("Ok", v);
    }
    match HvError::from_code(v.unsigned_abs() as i64) {
        Some(e) => (e.message(), v),
        None => ("undefined error code", v),
    }
}

struct Tally {
    counts: [u64; BUCKETS],
    violations: u64,
    verdict: Verdict,
}

impl Tally {
    fn violation(&mut self, index: u64, number: u64, args: &[u64; 6], raw: u64, expected: &str) {
        self.violations += 1;
        if self.violations <= REPORTED_VIOLATIONS {
            let (what, value) = describe(raw);
            self.verdict.fail(format_args!(
                "call {index}: nr={number:#x} args=[{:#x}, {:#x}, {:#x}] returned {what} ({value}), expected {expected}",
                args[0], args[1], args[2]
            ));
        } else {
            self.verdict.note(Status::Failure);
        }
    }
}

fn hcfuzz(si: &'static StartInfo) -> i32 {
    let seed = option("seed", DEFAULT_SEED);
    let count = option("count", DEFAULT_COUNT);
    let image_end = rt::image_end();
    let ram = Ram {
        mem_bytes: si.mem_bytes,
        image_end,
        scratch: image_end,
        tail: si.mem_bytes - PAGE_SIZE,
        payload: PAYLOAD.as_ptr() as u64,
    };
    if image_end + SCRATCH_BYTES + PAGE_SIZE > si.mem_bytes {
        println!("hcfuzz: needs {} KiB of RAM above the image", (SCRATCH_BYTES + PAGE_SIZE) / 1024);
        report(Status::Error);
    }
    for (base, size) in [(ram.scratch, SCRATCH_BYTES), (ram.tail, PAGE_SIZE)] {
        for i in 0..size {
            // SAFETY: RAM above the image, used by no Rust object.
            unsafe { core::ptr::write_volatile((base + i) as *mut u8, printable(i as usize)) };
        }
    }
    fill_canary();
    println!("hcfuzz: seed={seed:#x} count={count}");

    let mut rng = Rng::new(seed);
    let mut tally = Tally { counts: [0; BUCKETS], violations: 0, verdict: Verdict::new() };
    let mut payload_written = false;
    for index in 0..count {
        let (number, class) = pick_number(&mut rng);
        let mut args = [0u64; 6];
        for a in &mut args {
            *a = edge(&mut rng, &ram);
        }
        payload_written |= shape_args(number, &mut args, &mut rng, &ram);

        // SAFETY: the hypervisor must validate every argument; the only call that writes
        // guest memory (console_read) was pointed away from the image above, and the canary
        // catches any other stray write.
        let raw = unsafe { call6(number, args) };
        let b = bucket(raw);
        tally.counts[b] += 1;
        if b == UNDEFINED_BUCKET {
            tally.violation(index, number, &args, raw, "a defined result");
        }
        let err = |e: HvError| raw == e.to_ret();
        match class {
            Class::Control if !err(HvError::NotPermitted) => {
                tally.violation(index, number, &args, raw, "not permitted");
            }
            Class::Unknown if !err(HvError::NoSuchHypercall) => {
                tally.violation(index, number, &args, raw, "no such hypercall");
            }
            Class::Defined if number == nr::CONSOLE_WRITE => {
                let valid = ram.holds(args[0], args[1]);
                if !valid && args[1] > 0 && !err(HvError::BadAddress) {
                    tally.violation(index, number, &args, raw, "bad guest address");
                } else if valid && raw > args[1] {
                    tally.violation(index, number, &args, raw, "a byte count up to the length");
                }
            }
            Class::Defined if number == nr::NULL && raw != 0 => {
                tally.violation(index, number, &args, raw, "0");
            }
            _ => {}
        }
    }
    if payload_written {
        println!();
    }
    let _ = hc::set_upcall(0);
    let _ = hc::event_ack();

    print!("hcfuzz: calls={count} ok={}", tally.counts[0]);
    for e in HvError::ALL {
        if tally.counts[e as usize] > 0 {
            print!(" {:?}={}", e, tally.counts[e as usize]);
        }
    }
    if tally.counts[UNDEFINED_BUCKET] > 0 {
        print!(" undefined={}", tally.counts[UNDEFINED_BUCKET]);
    }
    println!(" violations={}", tally.violations);

    if let Some((gpa, found)) = check_canary() {
        tally.verdict.fail(format_args!("canary overwritten at {gpa:#x} (found {found:#x})"));
    }
    tally.verdict.report()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM_BYTES: u64 = 16 << 20;
    const IMAGE_END: u64 = 0x12_0000;

    fn ram() -> Ram {
        Ram {
            mem_bytes: MEM_BYTES,
            image_end: IMAGE_END,
            scratch: IMAGE_END,
            tail: MEM_BYTES - PAGE_SIZE,
            payload: 0x10_8000,
        }
    }

    #[test]
    fn fuzzer_never_picks_shutdown_or_freeze_self_and_classifies_numbers() {
        let mut rng = Rng::new(1);
        for _ in 0..200_000 {
            let (number, class) = pick_number(&mut rng);
            let low = number as u32 as u64;
            assert!(low != nr::SHUTDOWN && low != nr::FREEZE_SELF, "{number:#x}");
            match class {
                Class::Defined => assert!(DEFINED.contains(&number)),
                Class::Control => assert!((nr::CONTROL_BASE..nr::CONTROL_END).contains(&number)),
                Class::Unknown => assert!(!is_known(number), "{number:#x}"),
            }
        }
    }

    #[test]
    fn shaped_arguments_keep_the_fuzzer_alive() {
        let ram = ram();
        let mut rng = Rng::new(7);
        for _ in 0..100_000 {
            let (number, _) = pick_number(&mut rng);
            let mut args = [0u64; 6];
            for a in &mut args {
                *a = edge(&mut rng, &ram);
            }
            shape_args(number, &mut args, &mut rng, &ram);
            match number {
                nr::BLOCK => assert!((1..=BLOCK_MAX_NS).contains(&args[0])),
                nr::CONSOLE_WRITE if ram.holds(args[0], args[1]) => {
                    assert!(args[1] <= CONSOLE_WRITE_MAX_BYTES);
                    assert!(ram.printable(args[0], args[1]), "{args:x?}");
                }
                nr::CONSOLE_READ if ram.holds(args[0], args[1]) => assert!(args[0] >= IMAGE_END, "{args:x?}"),
                _ => {}
            }
        }
    }

    #[test]
    fn ranges_are_inside_ram_only_without_overflow() {
        let ram = ram();
        assert!(ram.holds(0, MEM_BYTES));
        assert!(ram.holds(MEM_BYTES - 1, 1));
        assert!(!ram.holds(MEM_BYTES - 1, 2));
        assert!(!ram.holds(u64::MAX, 2));
        assert!(!ram.holds(1, u64::MAX));
        assert!(ram.holds(MEM_BYTES, 0));
    }

    #[test]
    fn results_fall_into_their_buckets() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(12345), 0);
        assert_eq!(bucket(HvError::NotPermitted.to_ret()), 1);
        assert_eq!(bucket(HvError::TimedOut.to_ret()), 16);
        assert_eq!(bucket((-99i64) as u64), UNDEFINED_BUCKET);
        assert_eq!(bucket(i64::MIN as u64), UNDEFINED_BUCKET);
    }
}

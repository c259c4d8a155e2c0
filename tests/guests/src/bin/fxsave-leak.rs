//! Test guest `fxsave-leak` (CVE-2006-1056): on AMD CPUs before Zen 2, FXRSTOR leaves the
//! x87 last-instruction and last-operand pointers (FOP/FIP/FDP) alone unless an exception is
//! pending, so a domain could read the previous domain's pointers with FXSAVE; the hypervisor
//! must overwrite them when it switches. `role=x87` keeps executing an x87 load of a marker
//! variable; `role=check` never executes x87 instructions and checks with FXSAVE that it
//! never sees that instruction's or that marker's address. First each copy checks whether
//! this CPU behaves that way at all: if FXSAVE stores no pointers, or FXRSTOR always restores
//! them, there is nothing to leak and it reports SKIP saying which.
//!
//! Options: `role=x87|check`, `ms=` how long (default 150).
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::{asm, global_asm};
use guest_abi::println;
use guest_abi::rt;
use guest_abi::rt::test::{Status, Verdict, option, report, spin_checking};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(fxsave_leak);

const DEFAULT_SPIN_MS: u64 = 150;
/// FXSAVE64 image offsets (Intel SDM Vol 1 10.5.1): FIP at 8, FDP at 16.
const FIP_OFFSET: usize = 8;
const FDP_OFFSET: usize = 16;

#[repr(C, align(16))]
struct Image([u8; 512]);

// `fxleak_load` is one x87 load of `fxleak_mark` (its first instruction), then pops it.
// `fxleak_other` is another load from another place.
global_asm!(
    r#"
    .pushsection .text.fxleak, "ax", @progbits
    .globl fxleak_load
    .hidden fxleak_load
fxleak_load:
    fld qword ptr [rip + fxleak_mark]
    fstp st(0)
    ret
    .globl fxleak_other
    .hidden fxleak_other
fxleak_other:
    fld qword ptr [rip + fxleak_other_mark]
    fstp st(0)
    ret
    .popsection
    .pushsection .data.fxleak, "aw", @progbits
    .balign 8
    .globl fxleak_mark
    .hidden fxleak_mark
fxleak_mark:
    .quad 0x3ff0000000000000
fxleak_other_mark:
    .quad 0x4000000000000000
    .popsection
"#
);

unsafe extern "C" {
    fn fxleak_load();
    fn fxleak_other();
    static fxleak_mark: u64;
}

fn fxsave(img: &mut Image) {
    // SAFETY: a 512-byte, 16-byte aligned buffer; SSE/FXSR is enabled at start of day.
    unsafe { asm!("fxsave64 [{}]", in(reg) img.0.as_mut_ptr(), options(nostack)) };
}

fn fxrstor(img: &Image) {
    // SAFETY: the image came from FXSAVE64 in this guest, so it is valid.
    unsafe { asm!("fxrstor64 [{}]", in(reg) img.0.as_ptr(), options(nostack, readonly)) };
}

fn word(img: &Image, at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&img.0[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Whether this CPU leaves old x87 pointers in place across FXRSTOR; `Err` says why the
/// question does not arise here.
fn cpu_leaks() -> Result<(), &'static str> {
    let mut a = Image([0; 512]);
    let mut b = Image([0; 512]);
    // SAFETY: FNINIT resets the x87 unit; the loads push and pop one value each.
    unsafe {
        asm!("fninit", options(nomem, nostack));
        fxleak_load();
    }
    fxsave(&mut a);
    if word(&a, FIP_OFFSET) == 0 && word(&a, FDP_OFFSET) == 0 {
        return Err("FXSAVE stores no x87 instruction or operand pointer on this CPU");
    }
    // SAFETY: as above.
    unsafe { fxleak_other() };
    fxrstor(&a);
    fxsave(&mut b);
    if word(&b, FIP_OFFSET) == word(&a, FIP_OFFSET) {
        return Err("FXRSTOR restores the x87 pointers on this CPU (only older AMD CPUs leave them)");
    }
    Ok(())
}

fn fxsave_leak(si: &'static StartInfo) -> i32 {
    let spin_ms = option("ms", DEFAULT_SPIN_MS);
    let role = rt::cmdline_value("role").unwrap_or("check");
    if let Err(why) = cpu_leaks() {
        println!("fxsave-leak {}: {why}", si.name());
        report(Status::Skip);
    }
    let spot = fxleak_load as *const () as u64;
    let mark = &raw const fxleak_mark as u64;
    let mut v = Verdict::new();
    // SAFETY: resets the x87 unit: the checker's own pointers are zero from here on.
    unsafe { asm!("fninit", options(nomem, nostack)) };
    let (mut fip, mut fdp) = (0, 0);
    let spin = spin_checking(spin_ms, si.tsc_khz, |_| {
        if role == "x87" {
            // SAFETY: one push and one pop of the x87 stack.
            unsafe { fxleak_load() };
            return true;
        }
        let mut img = Image([0; 512]);
        fxsave(&mut img);
        (fip, fdp) = (word(&img, FIP_OFFSET), word(&img, FDP_OFFSET));
        fip != spot && fdp != mark
    });
    if spin.failed {
        v.fail(format_args!("another domain's x87 pointers leaked in: fip {fip:#x} fdp {fdp:#x}"));
    }
    println!("fxsave-leak {} ({role}): {} rounds, no foreign x87 pointers", si.name(), spin.checks);
    v.report()
}

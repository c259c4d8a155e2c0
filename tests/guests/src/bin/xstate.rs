//! Test guest `xstate`: loads values derived from its domain id into the registers the world
//! switch does not carry (XMM0-XMM15, MXCSR, the x87 control word, DR0-DR3 and CR2), spins
//! for `ms=` milliseconds (default 300) checking them again and again while other domains
//! run on the same CPU, and fails if any register ever holds something it did not write:
//! another domain's value leaked in, or its own was lost across a preemption.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::println;
use guest_abi::rt::test::{Status, option, report, spin_checking};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(xstate);

const DEFAULT_SPIN_MS: u64 = 300;
/// Rounding-control field of MXCSR (bits 13-14) and of the x87 control word (bits 10-11).
const MXCSR_RC_SHIFT: u32 = 13;
const FCW_RC_SHIFT: u32 = 10;
/// Exceptions masked, as after reset.
const MXCSR_MASKED: u32 = 0x1F80;
const FCW_MASKED: u16 = 0x037F;

/// The values one domain keeps in its registers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Values {
    xmm: [u64; 16],
    mxcsr: u32,
    fcw: u16,
    dr: [u64; 4],
    cr2: u64,
}

impl Values {
    fn for_domain(domid: u32) -> Self {
        let seed = u64::from(domid).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut xmm = [0u64; 16];
        for (i, x) in xmm.iter_mut().enumerate() {
            *x = seed.rotate_left(i as u32 * 4) ^ (i as u64) << 56;
        }
        let rc = domid % 4;
        Self {
            xmm,
            mxcsr: MXCSR_MASKED | rc << MXCSR_RC_SHIFT,
            fcw: FCW_MASKED | (rc as u16) << FCW_RC_SHIFT,
            // Canonical addresses, different per domain; DR7 stays 0 so none is armed.
            dr: [seed & 0x7FFF_FFFF_F000, (seed >> 8) & 0x7FFF_FFFF_F000, 0x1000 * u64::from(domid), 0x2000 + 8 * u64::from(domid)],
            cr2: 0xFFFF_8000_0000_0000 | (seed & 0x7FFF_FFFF_FFFF),
        }
    }
}

macro_rules! each_xmm {
    ($m:ident) => {
        $m!(0, "xmm0");
        $m!(1, "xmm1");
        $m!(2, "xmm2");
        $m!(3, "xmm3");
        $m!(4, "xmm4");
        $m!(5, "xmm5");
        $m!(6, "xmm6");
        $m!(7, "xmm7");
        $m!(8, "xmm8");
        $m!(9, "xmm9");
        $m!(10, "xmm10");
        $m!(11, "xmm11");
        $m!(12, "xmm12");
        $m!(13, "xmm13");
        $m!(14, "xmm14");
        $m!(15, "xmm15");
    };
}

/// Loads `v` into the CPU.
fn load(v: &Values) {
    macro_rules! put {
        ($i:expr, $r:literal) => {
            // SAFETY: this guest is built without SSE, so no compiled code uses XMM registers.
            unsafe { core::arch::asm!(concat!("movq ", $r, ", {}"), in(reg) v.xmm[$i], options(nomem, nostack)) }
        };
    }
    each_xmm!(put);
    // SAFETY: the start of day enabled SSE (CR4.OSFXSR) and the values are valid (reserved
    // MXCSR bits clear); DR0-DR3 and CR2 take any canonical value at CPL 0, and with DR7 = 0
    // no breakpoint is armed.
    unsafe {
        core::arch::asm!("ldmxcsr [{}]", in(reg) &v.mxcsr, options(nostack, readonly));
        core::arch::asm!("fldcw [{}]", in(reg) &v.fcw, options(nostack, readonly));
        core::arch::asm!(
            "mov dr0, {0}", "mov dr1, {1}", "mov dr2, {2}", "mov dr3, {3}", "mov cr2, {4}",
            in(reg) v.dr[0], in(reg) v.dr[1], in(reg) v.dr[2], in(reg) v.dr[3], in(reg) v.cr2,
            options(nomem, nostack)
        );
    }
}

/// Reads the registers back.
fn read() -> Values {
    let mut v = Values { xmm: [0; 16], mxcsr: 0, fcw: 0, dr: [0; 4], cr2: 0 };
    macro_rules! get {
        ($i:expr, $r:literal) => {
            // SAFETY: reading an XMM register has no side effects.
            unsafe { core::arch::asm!(concat!("movq {}, ", $r), out(reg) v.xmm[$i], options(nomem, nostack)) }
        };
    }
    each_xmm!(get);
    // SAFETY: stores into locals; reading debug registers and CR2 at CPL 0 has no side effects.
    unsafe {
        core::arch::asm!("stmxcsr [{}]", in(reg) &mut v.mxcsr, options(nostack));
        core::arch::asm!("fnstcw [{}]", in(reg) &mut v.fcw, options(nostack));
        core::arch::asm!(
            "mov {0}, dr0", "mov {1}, dr1", "mov {2}, dr2", "mov {3}, dr3", "mov {4}, cr2",
            out(reg) v.dr[0], out(reg) v.dr[1], out(reg) v.dr[2], out(reg) v.dr[3], out(reg) v.cr2,
            options(nomem, nostack)
        );
    }
    v
}

fn xstate(si: &'static StartInfo) -> i32 {
    let spin_ms = option("ms", DEFAULT_SPIN_MS);
    let name = si.name();
    let want = Values::for_domain(si.domid);
    load(&want);
    let spin = spin_checking(spin_ms, si.tsc_khz, |s| {
        let got = read();
        if got != want {
            println!("xstate {name}: after {} checks and {} preemptions the registers changed", s.checks, s.preemptions);
            println!("xstate {name}: expected {want:x?}");
            println!("xstate {name}: found    {got:x?}");
            report(Status::Failure);
        }
        true
    });
    println!("xstate {name}: checks {} preemptions {} registers kept", spin.checks, spin.preemptions);
    report(Status::Success)
}

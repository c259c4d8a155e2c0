//! Time: the TSC and the local APIC timer calibrated against the PIT at boot, so the core can
//! count nanoseconds and arm time slices.

use super::apic;
use super::x86::{inb, outb, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

const PIT_HZ: u64 = 1_193_182;
const CALIBRATION_MS: u64 = 10;
const PIT_CHANNEL2_DATA: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
const SYSTEM_CONTROL_PORT_B: u16 = 0x61;
/// Upper bound on polls of the PIT before calibration gives up.
const CALIBRATION_MAX_POLLS: u64 = 100_000_000;
/// Assumed when the PIT does not answer.
const FALLBACK_TSC_KHZ: u64 = 1_000_000;

static TSC_KHZ: AtomicU64 = AtomicU64::new(FALLBACK_TSC_KHZ);
/// Nanoseconds per TSC tick as a 32.32 fixed-point multiplier (no division on the hot path).
static NS_PER_TICK_FP32: AtomicU64 = AtomicU64::new((1_000_000u64 << 32) / FALLBACK_TSC_KHZ);
static APIC_TICKS_PER_MS: AtomicU64 = AtomicU64::new(100_000);
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

/// What calibration measured.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    pub tsc_khz: u64,
    pub apic_ticks_per_ms: u64,
    /// False if the PIT never signalled and fallbacks are in use.
    pub measured: bool,
}

/// Measures the TSC and APIC timer rates over a PIT one-shot of [`CALIBRATION_MS`].
pub fn calibrate() -> Calibration {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
    let count = PIT_HZ * CALIBRATION_MS / 1000;
    // SAFETY: PIT channel 2 and port 0x61 are the standard PC timer and speaker gate; nothing
    // else in the hypervisor uses them.
    let measured = unsafe {
        let b = inb(SYSTEM_CONTROL_PORT_B);
        outb(SYSTEM_CONTROL_PORT_B, (b & !0x02) | 0x01); // gate on, speaker off
        outb(PIT_COMMAND, 0xB0); // channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count)
        outb(PIT_CHANNEL2_DATA, (count & 0xFF) as u8);
        apic::start_free_running();
        outb(PIT_CHANNEL2_DATA, (count >> 8) as u8);
        let t0 = rdtsc();
        let a0 = apic::current_count();
        let mut polls = 0;
        while inb(SYSTEM_CONTROL_PORT_B) & 0x20 == 0 && polls < CALIBRATION_MAX_POLLS {
            polls += 1;
        }
        let t1 = rdtsc();
        let a1 = apic::current_count();
        if polls < CALIBRATION_MAX_POLLS && t1 > t0 {
            let khz = ((t1 - t0) / CALIBRATION_MS).max(1);
            TSC_KHZ.store(khz, Ordering::Relaxed);
            NS_PER_TICK_FP32.store((1_000_000u64 << 32) / khz, Ordering::Relaxed);
            APIC_TICKS_PER_MS.store((a0.saturating_sub(a1) as u64 / CALIBRATION_MS).max(1), Ordering::Relaxed);
            true
        } else {
            false
        }
    };
    apic::disarm();
    Calibration {
        tsc_khz: TSC_KHZ.load(Ordering::Relaxed),
        apic_ticks_per_ms: APIC_TICKS_PER_MS.load(Ordering::Relaxed),
        measured,
    }
}

/// TSC frequency in kHz.
pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Nanoseconds since calibration.
pub fn now_ns() -> u64 {
    let ticks = rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed));
    ((ticks as u128 * NS_PER_TICK_FP32.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// APIC timer ticks for `ns` nanoseconds (at least 1, at most u32::MAX).
pub fn apic_ticks_for(ns: u64) -> u32 {
    let t = ns as u128 * APIC_TICKS_PER_MS.load(Ordering::Relaxed) as u128 / 1_000_000;
    t.clamp(1, u32::MAX as u128) as u32
}

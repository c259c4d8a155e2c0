//! The boot CPU's local APIC (xAPIC registers through the linear map): enable it, run the
//! one-shot timer that preempts guests, acknowledge interrupts.

use super::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};
use super::x86::{msr, rdmsr, wrmsr};
use crate::mm::phys;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::model_specific::ApicBaseFlags;

const REG_TPR: u64 = 0x80;
const REG_EOI: u64 = 0xB0;
const REG_SVR: u64 = 0xF0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_LVT_LINT0: u64 = 0x350;
const REG_LVT_LINT1: u64 = 0x360;
const REG_LVT_ERROR: u64 = 0x370;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3E0;

/// Spurious-vector register: APIC software enable (Intel SDM Vol 3A 11.9).
const SVR_ENABLE: u32 = 1 << 8;
/// LVT entries: masked (Intel SDM Vol 3A 11.5.1).
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration: divide by 16 (Intel SDM Vol 3A 11.5.4).
const TIMER_DIVIDE_BY_16: u32 = 0x3;
/// Bits 51:12 of IA32_APIC_BASE: the registers' physical address.
const APIC_BASE_ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;

/// Virtual address of the APIC registers; 0 until [`init`].
static BASE: AtomicU64 = AtomicU64::new(0);

fn read(reg: u64) -> u32 {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: `base` maps the APIC's register page (set in `init`); registers are 32-bit.
    unsafe { core::ptr::read_volatile((base + reg) as *const u32) }
}

fn write(reg: u64, value: u32) {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((base + reg) as *mut u32, value) }
}

/// Enables the local APIC with the spurious vector, masks LINT0/LINT1/error and the timer.
pub fn init() {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
    let apic_base = unsafe { rdmsr(msr::IA32_APIC_BASE) };
    let enable = ApicBaseFlags::LAPIC_ENABLE.bits();
    if apic_base & enable == 0 {
        // SAFETY: setting the global enable bit of the APIC we are about to use.
        unsafe { wrmsr(msr::IA32_APIC_BASE, apic_base | enable) };
    }
    BASE.store(phys::virt(apic_base & APIC_BASE_ADDRESS), Ordering::Relaxed);
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_LINT1, LVT_MASKED);
    write(REG_LVT_ERROR, LVT_MASKED);
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
    write(REG_SVR, SVR_ENABLE | SPURIOUS_VECTOR as u32);
}

/// Signals end of interrupt (no-op before [`init`]).
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Starts the one-shot timer: one interrupt on [`TIMER_VECTOR`] after `ticks` timer ticks.
pub fn arm_oneshot(ticks: u32) {
    write(REG_LVT_TIMER, TIMER_VECTOR as u32);
    write(REG_TIMER_INITIAL, ticks.max(1));
}

/// Stops the timer.
pub fn disarm() {
    write(REG_TIMER_INITIAL, 0);
    write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
}

/// Starts the timer counting down from its maximum, masked (for calibration).
pub fn start_free_running() {
    write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
    write(REG_TIMER_INITIAL, u32::MAX);
}

/// The timer's current count.
pub fn current_count() -> u32 {
    if BASE.load(Ordering::Relaxed) == 0 { 0 } else { read(REG_TIMER_CURRENT) }
}

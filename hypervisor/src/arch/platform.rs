//! The bare-metal [`Platform`]: calibrated TSC time, the local APIC one-shot timer for time
//! slices and idling, CPUID, COM1 and the kernel heap.

use super::{apic, serial, time, x86};
use crate::platform::Platform;

/// The boot CPU of a real (or emulated) PC.
pub struct BareMetal;

impl Platform for BareMetal {
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }

    fn cycles(&self) -> u64 {
        x86::rdtsc()
    }

    fn tsc_khz(&self) -> u64 {
        time::tsc_khz()
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = x86::cpuid(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn console_queue(&mut self, parts: &[&[u8]]) -> bool {
        serial::queue(parts)
    }

    fn console_drain(&mut self, max_bytes: usize) -> (usize, usize) {
        serial::drain(max_bytes)
    }

    fn console_poll(&mut self) -> Option<u8> {
        serial::try_read_byte()
    }

    fn arm_timer(&mut self, ns: u64) {
        apic::arm_oneshot(time::apic_ticks_for(ns));
    }

    fn ack_interrupts(&mut self) {
        x86::deliver_pending_interrupts();
    }

    fn idle(&mut self, until_ns: u64) {
        let now = time::now_ns();
        if until_ns <= now {
            return;
        }
        apic::arm_oneshot(time::apic_ticks_for(until_ns - now));
        x86::wait_for_interrupt();
        apic::disarm();
    }

    fn heap_free_bytes(&self) -> usize {
        crate::mm::boot::heap_free_bytes()
    }
}

//! Typed wrappers of the hypercalls every domain may make. Buffers are passed by their
//! address, which is their guest-physical address under the boot identity map.
//!
//! These only work inside a guest of this hypervisor: on any other machine the hypercall
//! instruction raises #UD.

use crate::error::HvResult;
use crate::hypercall::{hypercall, nr};

#[inline(always)]
fn call(number: u64, args: &[u64]) -> HvResult<u64> {
    // SAFETY: the runtime only runs inside a domain of this hypervisor; every pointer
    // argument passed by the wrappers below comes from a live Rust reference of the stated
    // length, and the hypervisor touches nothing else.
    unsafe { hypercall(number, args) }
}

/// Appends `bytes` to the domain's console; returns how many were taken.
pub fn console_write(bytes: &[u8]) -> HvResult<usize> {
    call(nr::CONSOLE_WRITE, &[bytes.as_ptr() as u64, bytes.len() as u64]).map(|n| n as usize)
}

/// Reads bytes typed on the serial console (dom0 only); returns how many were stored.
pub fn console_read(buf: &mut [u8]) -> HvResult<usize> {
    call(nr::CONSOLE_READ, &[buf.as_mut_ptr() as u64, buf.len() as u64]).map(|n| n as usize)
}

/// Ends the domain with `code` (0 is a clean exit). Does not flush the console buffer; see
/// [`crate::rt::exit`].
pub fn shutdown(code: u64) -> ! {
    loop {
        let _ = call(nr::SHUTDOWN, &[code]);
        // The hypervisor never returns from a shutdown; if it did, stop here.
        super::cpu::halt();
    }
}

/// Gives up the rest of the time slice.
pub fn yield_now() -> HvResult<()> {
    call(nr::YIELD, &[]).map(drop)
}

/// Sleeps until an event is pending or `timeout_ns` passes (0 = no timeout); returns the
/// pending event bits (which stay pending until [`event_ack`]).
pub fn block(timeout_ns: u64) -> HvResult<u64> {
    call(nr::BLOCK, &[timeout_ns])
}

/// How long a benchmark pauses before it measures: long enough for the console lines printed
/// before to reach the serial line, so their draining does not ride on the exits being timed.
pub const SETTLE_NS: u64 = 20_000_000;

/// Sleeps until an event is pending or `timeout_ns` passes (0 = until an event), then
/// acknowledges the pending events, dropping them: a pause for a guest that waits for no
/// event in particular.
pub fn sleep(timeout_ns: u64) {
    let _ = block(timeout_ns);
    let _ = event_ack();
}

/// Nanoseconds since the hypervisor booted.
pub fn time_ns() -> HvResult<u64> {
    call(nr::TIME, &[])
}

/// Returns and clears the pending event bits (`crate::hypercall::event`).
pub fn event_ack() -> HvResult<u64> {
    call(nr::EVENT_ACK, &[])
}

/// Delivers events as interrupt `vector` (0 = poll only).
pub fn set_upcall(vector: u8) -> HvResult<()> {
    call(nr::SET_UPCALL, &[u64::from(vector)]).map(drop)
}

/// Does nothing (benchmarks); returns 0.
pub fn null() -> HvResult<u64> {
    call(nr::NULL, &[])
}

/// Write-protects `pages` pages of the domain's own memory from `gpa`; the next write to each
/// takes a second-level fault the hypervisor resolves.
pub fn mem_protect(gpa: u64, pages: u64) -> HvResult<()> {
    call(nr::MEM_PROTECT, &[gpa, pages]).map(drop)
}

/// Turns the domain into a template; returns only in its clones.
pub fn freeze_self() -> HvResult<()> {
    call(nr::FREEZE_SELF, &[]).map(drop)
}

/// Registers the caller's channel ring (`pages` 0 closes it); see [`crate::channel`].
pub fn channel_open(ring_gpa: u64, pages: u64) -> HvResult<()> {
    call(nr::CHANNEL_OPEN, &[ring_gpa, pages]).map(|_| ())
}

/// Tells dom0 the caller's channel ring has news.
pub fn channel_notify() -> HvResult<()> {
    call(nr::CHANNEL_NOTIFY, &[]).map(|_| ())
}

/// Starts a checkpoint of the caller: [`crate::channel::TAKEN`] now,
/// [`crate::channel::RESTORED`] in a domain restored from it.
pub fn self_checkpoint() -> HvResult<u64> {
    call(nr::SELF_CHECKPOINT, &[])
}

/// Copies `dst.len() / 4096` pages of the caller's checkpoint, from `gpa`, into `dst` (a
/// page-aligned buffer).
pub fn self_checkpoint_read(gpa: u64, dst: &mut [u8]) -> HvResult<()> {
    call(nr::SELF_CHECKPOINT_READ, &[gpa, dst.as_mut_ptr() as u64, (dst.len() / 4096) as u64]).map(|_| ())
}

/// Ends the caller's checkpoint epoch.
pub fn self_checkpoint_end() -> HvResult<()> {
    call(nr::SELF_CHECKPOINT_END, &[]).map(|_| ())
}

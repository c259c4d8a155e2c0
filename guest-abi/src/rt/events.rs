//! Event upcalls: the hypervisor raises interrupt [`UPCALL_VECTOR`] when events become
//! pending; the runtime acknowledges them (`event_ack`) and hands the bits to the callback.
//!
//! Callbacks run in interrupt context with interrupts disabled: they must not allocate (the
//! heap lock may be held by the code they interrupted) and should be short.

use super::{cpu, hc};
use crate::error::HvResult;
use core::sync::atomic::{AtomicPtr, Ordering};

/// The interrupt vector the runtime asks events to arrive on.
pub const UPCALL_VECTOR: u8 = 0x30;

/// What runs when events arrive: the acknowledged bits (`crate::hypercall::event`).
pub type Callback = fn(u64);

static CALLBACK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets the function that receives event bits.
pub fn set_callback(callback: Callback) {
    CALLBACK.store(callback as *mut (), Ordering::Release);
}

/// Asks for events as [`UPCALL_VECTOR`] and enables interrupts.
pub fn enable() -> HvResult<()> {
    hc::set_upcall(UPCALL_VECTOR)?;
    cpu::enable_interrupts();
    Ok(())
}

/// Disables interrupts and goes back to polling (`set_upcall(0)`).
pub fn disable() -> HvResult<()> {
    cpu::disable_interrupts();
    hc::set_upcall(0)
}

fn callback() -> Option<Callback> {
    let ptr = CALLBACK.load(Ordering::Acquire);
    if ptr.is_null() {
        return None;
    }
    // SAFETY: only `set_callback` stores non-null values, and it stores `Callback`s.
    Some(unsafe { core::mem::transmute::<*mut (), Callback>(ptr) })
}

/// Handles one upcall (called from the IDT dispatcher).
pub(crate) fn upcall() {
    let bits = hc::event_ack().unwrap_or(0);
    if let Some(cb) = callback() {
        cb(bits);
    }
}

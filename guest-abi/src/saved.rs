//! The part of a domain's state that is not in [`crate::vcpu::VcpuContext`] or its memory and
//! that a save image carries: x87/SSE and debug registers, event registration, the block
//! timer, the guest clock and the clone identity. `dom_state_get` returns it; restore hands it
//! back with `dom_state_set`, which validates every field.

/// Bytes of an FXSAVE image.
pub const FXSAVE_BYTES: usize = 512;

/// Registers switched lazily between vCPUs: the FXSAVE image (x87, MXCSR, XMM0-15) and the
/// debug address and status registers (DR7 is in the context).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ExtendedContext {
    pub fxsave: [u8; FXSAVE_BYTES],
    pub dr: [u64; 4],
    pub dr6: u64,
}

impl Default for ExtendedContext {
    fn default() -> Self {
        Self { fxsave: [0; FXSAVE_BYTES], dr: [0; 4], dr6: 0 }
    }
}

/// [`SavedState::blocked`]: running (or runnable).
pub const BLOCKED_NONE: u32 = 0;
/// [`SavedState::blocked`]: halted (HLT) until an event or timeout.
pub const BLOCKED_HLT: u32 = 1;
/// [`SavedState::blocked`]: in the `block` hypercall; RAX receives the pending events when it
/// wakes (the saved RAX still holds the hypercall number).
pub const BLOCKED_CALL: u32 = 2;

/// Sentinel for "no domain" in [`SavedState`] identity fields.
pub const NO_PARENT: u32 = u32::MAX;

/// Everything about a domain a save image needs besides its memory and [`crate::vcpu::VcpuContext`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SavedState {
    pub extended: ExtendedContext,
    /// Pending event bits (`hypercall::event`).
    pub events_pending: u64,
    /// Upcall vector (0 = the guest polls; else 32..=255).
    pub upcall_vector: u32,
    /// 1 if an upcall was injected and not yet acknowledged.
    pub upcall_in_service: u32,
    /// What the vCPU was waiting in: [`BLOCKED_NONE`], [`BLOCKED_HLT`] or [`BLOCKED_CALL`].
    pub blocked: u32,
    /// 1 if `block_remaining_ns` is meaningful (the block has a timeout).
    pub has_deadline: u32,
    /// Nanoseconds left of the block timeout when the state was taken.
    pub block_remaining_ns: u64,
    /// The guest's clock (`time()` result) when the state was taken.
    pub guest_time_ns: u64,
    /// The guest's TSC when the state was taken.
    pub guest_tsc: u64,
    /// Domain id when the state was taken.
    pub domid: u32,
    /// Template the domain was cloned from, or [`NO_PARENT`].
    pub parent: u32,
    /// Clone index given at clone time.
    pub clone_index: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// Generation number (changes on every clone and restore).
    pub generation: u64,
}

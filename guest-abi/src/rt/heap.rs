//! The guest heap (feature `rt-alloc`): a linked-list allocator over the RAM between the end
//! of the image and the end of guest memory, set up before the guest's main function runs.
//! `guest_main!` registers [`GuestHeap`] as the `#[global_allocator]`.
//!
//! Do not allocate from exception or event handlers: the code they interrupted may hold the
//! heap lock.

use core::alloc::{GlobalAlloc, Layout};
use linked_list_allocator::LockedHeap;

static HEAP: LockedHeap = LockedHeap::empty();

/// The global allocator: forwards to the runtime's heap.
pub struct GuestHeap;

// SAFETY: forwards to LockedHeap, a correct GlobalAlloc.
unsafe impl GlobalAlloc for GuestHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { HEAP.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller; `ptr` came from `alloc` above.
        unsafe { HEAP.dealloc(ptr, layout) }
    }
}

/// Hands `[start, end)` to the heap (nothing if the range is empty).
pub(crate) fn init(start: u64, end: u64) {
    if end <= start {
        return;
    }
    // SAFETY: the range is guest RAM above the image (identity-mapped), not used by any Rust
    // object, and `init` runs once, before `main`.
    unsafe { HEAP.lock().init(start as *mut u8, (end - start) as usize) };
}

/// Bytes the heap can still hand out (before fragmentation).
pub fn free_bytes() -> usize {
    HEAP.lock().free()
}

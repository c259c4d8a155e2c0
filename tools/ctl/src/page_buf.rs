//! Page-aligned byte buffers: a run of guest pages read or written through the hypervisor
//! lands frame for frame, so each page is one copy rather than two half-page ones.

use alloc::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// Bytes of the alignment (one page).
const PAGE_ALIGN_BYTES: usize = 4096;

/// A zeroed, page-aligned, fixed-size byte buffer.
pub struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl PageBuf {
    /// `len` zero bytes (at least 1 allocated), starting on a page boundary.
    pub fn zeroed(len: usize) -> Self {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (at least one page is asked for).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout));
        Self { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len.max(1), PAGE_ALIGN_BYTES) {
            Ok(l) => l,
            Err(_) => handle_alloc_error(Layout::new::<[u8; PAGE_ALIGN_BYTES]>()),
        }
    }
}

impl Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` holds `len` initialised (zeroed at allocation) bytes we own.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this same layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_buf_starts_on_a_page_and_is_zero() {
        let mut b = PageBuf::zeroed(3 * PAGE_ALIGN_BYTES + 5);
        assert_eq!(b.as_ptr() as usize % PAGE_ALIGN_BYTES, 0);
        assert_eq!(b.len(), 3 * PAGE_ALIGN_BYTES + 5);
        assert!(b.iter().all(|&x| x == 0));
        b[7] = 1;
        assert_eq!(b[7], 1);
    }
}

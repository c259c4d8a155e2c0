//! Page-aligned buffers in dom0's memory that the hypervisor reads or writes by address: the
//! pager's request ring and the pages it supplies from. dom0 is identity mapped, so a
//! buffer's address is its guest-physical address.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;

/// Bytes in a page.
pub const PAGE_BYTES: usize = 4096;

/// A zeroed, page-aligned heap buffer of whole pages.
pub struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl PageBuf {
    /// `pages` zeroed pages, or `None` if the heap cannot hold them.
    pub fn new(pages: usize) -> Option<Self> {
        let len = pages.checked_mul(PAGE_BYTES).filter(|&l| l > 0)?;
        let layout = Layout::from_size_align(len, PAGE_BYTES).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(Self { ptr, len })
    }

    /// Its guest-physical (and virtual) address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` initialized bytes owned by this buffer.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Its bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The u32 at byte `offset`, read afresh: the hypervisor writes it between dom0's exits.
    pub fn read_u32(&self, offset: usize) -> u32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len);
        // SAFETY: in bounds and aligned (checked above); a volatile read because another
        // agent (the hypervisor) writes this memory.
        unsafe { self.ptr.as_ptr().add(offset).cast::<u32>().read_volatile() }
    }

    /// Writes the u32 at byte `offset` so the hypervisor sees it.
    pub fn write_u32(&mut self, offset: usize, v: u32) {
        assert!(offset % 4 == 0 && offset + 4 <= self.len);
        // SAFETY: in bounds and aligned (checked above); volatile for the hypervisor's sake.
        unsafe { self.ptr.as_ptr().add(offset).cast::<u32>().write_volatile(v) }
    }

    /// `n` bytes at `offset`, read afresh (see [`Self::read_u32`]).
    pub fn read_volatile<const N: usize>(&self, offset: usize) -> [u8; N] {
        assert!(offset + N <= self.len);
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above).
            *b = unsafe { self.ptr.as_ptr().add(offset + i).read_volatile() };
        }
        out
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr.as_ptr(), Layout::from_size_align_unchecked(self.len, PAGE_BYTES)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_buffers_are_aligned_zeroed_and_bounded() {
        let mut b = PageBuf::new(2).unwrap();
        assert_eq!(b.addr() % PAGE_BYTES as u64, 0);
        assert!(b.bytes().iter().all(|&x| x == 0));
        b.write_u32(8, 0xABCD);
        assert_eq!(b.read_u32(8), 0xABCD);
        assert_eq!(b.read_volatile::<4>(8), 0xABCDu32.to_le_bytes());
        assert!(PageBuf::new(0).is_none());
    }
}

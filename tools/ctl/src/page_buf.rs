//! Page-aligned heap buffers in dom0's memory: runs of guest pages copied through the
//! hypervisor (a page-aligned run is one frame-to-frame copy per page, not two half-page
//! ones), and the pager's request ring and supply pages, which the hypervisor reads and writes
//! by address. dom0 is identity mapped, so a buffer's address is its guest-physical address.

use alloc::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// Bytes in a page, the buffers' alignment.
pub const PAGE_BYTES: usize = 4096;

/// A zeroed, page-aligned, fixed-size byte buffer.
pub struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl PageBuf {
    /// `pages` zeroed pages, or `None` if there are none or the heap cannot hold them.
    pub fn new(pages: usize) -> Option<Self> {
        let len = pages.checked_mul(PAGE_BYTES).filter(|&l| l > 0)?;
        let layout = Layout::from_size_align(len, PAGE_BYTES).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(Self { ptr, len })
    }

    /// `len` zero bytes starting on a page boundary; running out of heap aborts, as a `Vec`
    /// of the same size would.
    pub fn zeroed(len: usize) -> Self {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (at least one byte is asked for).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout));
        Self { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len.max(1), PAGE_BYTES) {
            Ok(l) => l,
            Err(_) => handle_alloc_error(Layout::new::<[u8; PAGE_BYTES]>()),
        }
    }

    /// Its guest-physical (and virtual) address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        self
    }

    /// Its bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self
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

    /// `N` bytes at `offset`, read afresh (see [`Self::read_u32`]).
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
        // SAFETY: allocated in `new` or `zeroed` with this same layout (`len` is a non-zero
        // multiple of a page in `new`, so `layout` gives the one `new` used).
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
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

    #[test]
    fn a_byte_sized_buffer_starts_on_a_page_and_is_zero() {
        let mut b = PageBuf::zeroed(3 * PAGE_BYTES + 5);
        assert_eq!(b.addr() % PAGE_BYTES as u64, 0);
        assert_eq!(b.len(), 3 * PAGE_BYTES + 5);
        assert!(b.iter().all(|&x| x == 0));
        b[7] = 1;
        assert_eq!(b[7], 1);
    }
}

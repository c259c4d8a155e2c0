//! Access to the contents of machine frames: through the linear map on bare metal, through a
//! simulated memory in host tests. Page-table engines and copy routines only use this trait.

use super::frame::{PAGE_SIZE, Pfn};

/// Entries in one page-table page.
pub const ENTRIES_PER_TABLE: usize = 512;

/// The bytes of machine frames.
///
/// # Safety
/// Implementors guarantee that `frame_ptr` returns a pointer valid for reads and writes of
/// [`PAGE_SIZE`] bytes, 8-byte aligned, for every frame the frame table manages, and that
/// frames never overlap.
pub unsafe trait PhysMem {
    /// Pointer to the first byte of `pfn`.
    fn frame_ptr(&self, pfn: Pfn) -> *mut u8;

    /// Reads entry `index` of the page-table page `table`.
    #[inline]
    fn read_entry(&self, table: Pfn, index: usize) -> u64 {
        debug_assert!(index < ENTRIES_PER_TABLE);
        // SAFETY: the trait contract makes the frame valid and aligned; index < 512.
        unsafe { (self.frame_ptr(table) as *const u64).add(index).read_volatile() }
    }

    /// Writes entry `index` of the page-table page `table`.
    #[inline]
    fn write_entry(&self, table: Pfn, index: usize, value: u64) {
        debug_assert!(index < ENTRIES_PER_TABLE);
        // SAFETY: as in `read_entry`.
        unsafe { (self.frame_ptr(table) as *mut u64).add(index).write_volatile(value) }
    }

    /// Fills a frame with zeros.
    fn zero_frame(&self, pfn: Pfn) {
        // SAFETY: the frame is valid for PAGE_SIZE bytes.
        unsafe { core::ptr::write_bytes(self.frame_ptr(pfn), 0, PAGE_SIZE as usize) }
    }

    /// Copies a whole frame.
    fn copy_frame(&self, dst: Pfn, src: Pfn) {
        if dst == src {
            return;
        }
        // SAFETY: both frames are valid and distinct frames never overlap.
        unsafe { core::ptr::copy_nonoverlapping(self.frame_ptr(src), self.frame_ptr(dst), PAGE_SIZE as usize) }
    }

    /// Copies `len` bytes from `src_offset` in frame `src` to `dst_offset` in frame `dst`.
    fn copy_bytes(&self, dst: Pfn, dst_offset: usize, src: Pfn, src_offset: usize, len: usize) {
        assert!(dst_offset + len <= PAGE_SIZE as usize && src_offset + len <= PAGE_SIZE as usize);
        // SAFETY: both ranges lie inside their frames (checked above); `copy` allows the two
        // to be the same frame.
        unsafe { core::ptr::copy(self.frame_ptr(src).add(src_offset), self.frame_ptr(dst).add(dst_offset), len) }
    }

    /// Copies `out.len()` bytes from `offset` within a frame.
    fn read_bytes(&self, pfn: Pfn, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= PAGE_SIZE as usize);
        // SAFETY: the range lies inside the frame (checked above).
        unsafe { core::ptr::copy_nonoverlapping(self.frame_ptr(pfn).add(offset), out.as_mut_ptr(), out.len()) }
    }

    /// Copies `data` to `offset` within a frame.
    fn write_bytes(&self, pfn: Pfn, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= PAGE_SIZE as usize);
        // SAFETY: the range lies inside the frame (checked above).
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.frame_ptr(pfn).add(offset), data.len()) }
    }
}

/// A simulated machine memory for host tests: `frames` zeroed frames in one allocation.
#[cfg(test)]
pub struct SimMem {
    base: *mut u64,
    words: usize,
}

#[cfg(test)]
impl SimMem {
    /// A memory of `frames` frames.
    pub fn new(frames: usize) -> Self {
        let mut v = alloc::vec![0u64; frames * PAGE_SIZE as usize / 8];
        let (base, words) = (v.as_mut_ptr(), v.len());
        core::mem::forget(v);
        Self { base, words }
    }
}

#[cfg(test)]
impl Drop for SimMem {
    fn drop(&mut self) {
        // SAFETY: rebuilds the Vec leaked in `new` with the same pointer, length and capacity.
        drop(unsafe { alloc::vec::Vec::from_raw_parts(self.base, self.words, self.words) });
    }
}

// SAFETY: frames are disjoint 4 KiB slices of one 8-byte aligned allocation owned by the
// SimMem; out-of-range frames panic instead of returning a dangling pointer.
#[cfg(test)]
unsafe impl PhysMem for SimMem {
    fn frame_ptr(&self, pfn: Pfn) -> *mut u8 {
        let words_per_frame = PAGE_SIZE as usize / 8;
        let start = pfn.0 as usize * words_per_frame;
        assert!(start + words_per_frame <= self.words, "frame {pfn:?} outside simulated memory");
        // SAFETY: start is inside the allocation (checked above).
        unsafe { self.base.add(start) as *mut u8 }
    }
}

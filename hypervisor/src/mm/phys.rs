//! Access to machine memory through the bootloader's linear mapping of all physical memory.

use super::frame::{PAGE_SIZE, Pfn};
use core::sync::atomic::{AtomicU64, Ordering};

static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Records where the bootloader mapped physical address 0.
pub fn init(offset: u64) {
    PHYS_OFFSET.store(offset, Ordering::Relaxed);
}

/// Virtual address of physical address `addr`.
pub fn virt(addr: u64) -> u64 {
    PHYS_OFFSET.load(Ordering::Relaxed) + addr
}

/// Pointer to the first byte of a frame.
pub fn frame_ptr(pfn: Pfn) -> *mut u8 {
    virt(pfn.addr()) as *mut u8
}

/// A frame as 512 page-table entries.
///
/// # Safety
/// The caller must own the frame (no other live reference to it).
pub unsafe fn frame_as_table<'a>(pfn: Pfn) -> &'a mut [u64; 512] {
    // SAFETY: the frame lies inside the linear map and the caller owns it.
    unsafe { &mut *(frame_ptr(pfn) as *mut [u64; 512]) }
}

/// Zeroes a frame.
pub fn zero_frame(pfn: Pfn) {
    // SAFETY: the linear map covers every frame the frame table hands out.
    unsafe { core::ptr::write_bytes(frame_ptr(pfn), 0, PAGE_SIZE as usize) }
}

/// Translates a virtual address of the hypervisor's own address space to physical, by walking
/// the active page tables (CR3). Returns None if unmapped.
pub fn translate(vaddr: u64) -> Option<u64> {
    let mut table = crate::arch::x86::read_cr3() & 0x000F_FFFF_FFFF_F000;
    for level in (0..4).rev() {
        let index = (vaddr >> (12 + 9 * level)) & 0x1FF;
        // SAFETY: page-table pages lie in physical memory covered by the linear map.
        let entry = unsafe { *((virt(table) + index * 8) as *const u64) };
        if entry & 1 == 0 {
            return None;
        }
        let frame = entry & 0x000F_FFFF_FFFF_F000;
        if level > 0 && entry & 0x80 != 0 {
            let size = 1u64 << (12 + 9 * level);
            return Some((frame & !(size - 1)) | (vaddr & (size - 1)));
        }
        table = frame;
    }
    Some(table | (vaddr & 0xFFF))
}

//! Access to machine memory through the bootloader's linear mapping of all physical memory.

use super::frame::{PAGE_SIZE, Pfn};
#[allow(unused_imports)]
use super::physmem::PhysMem as _;
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

/// Zeroes a frame with `rep stosq` (512 stores; fast on hardware, and one "instruction" per
/// quadword under instruction counting).
pub fn zero_frame(pfn: Pfn) {
    // SAFETY: the linear map covers every frame the frame table hands out; the string store
    // writes exactly PAGE_SIZE bytes from its start (DF is clear in the hypervisor).
    unsafe {
        core::arch::asm!("rep stosq", inout("rdi") frame_ptr(pfn) => _, inout("rcx") PAGE_SIZE / 8 => _,
                         in("rax") 0u64, options(nostack, preserves_flags))
    }
}

/// Copies a frame with `rep movsq`.
pub fn copy_frame(dst: Pfn, src: Pfn) {
    // SAFETY: both frames are inside the linear map and distinct frames never overlap; the
    // string move copies exactly PAGE_SIZE bytes (DF is clear in the hypervisor).
    unsafe {
        core::arch::asm!("rep movsq", inout("rdi") frame_ptr(dst) => _, inout("rsi") frame_ptr(src) => _,
                         inout("rcx") PAGE_SIZE / 8 => _, options(nostack, preserves_flags))
    }
}

/// Translates a virtual address of the hypervisor's own address space to physical, by walking
/// the active page tables (CR3). Returns None if unmapped.
pub fn translate(vaddr: u64) -> Option<u64> {
    use crate::insn::walk::{CR3_ADDR, walk_long_mode};
    // SAFETY: page-table pages lie in physical memory covered by the linear map, and the
    // walker reads only entries of the tables CR3 leads to.
    let mut read = |pa: u64| Ok(unsafe { *(virt(pa) as *const u64) });
    walk_long_mode(crate::arch::x86::read_cr3() & CR3_ADDR, vaddr, &mut read).ok()
}

/// Machine memory through the linear map.
#[derive(Clone, Copy, Debug, Default)]
pub struct Physmap;

// SAFETY: the bootloader's linear map covers all physical memory (at least the first 4 GiB
// and everything up to the highest usable frame), so every managed frame is mapped,
// page-aligned, and distinct frames never overlap.
unsafe impl super::physmem::PhysMem for Physmap {
    #[inline]
    fn frame_ptr(&self, pfn: Pfn) -> *mut u8 {
        frame_ptr(pfn)
    }

    fn zero_frame(&self, pfn: Pfn) {
        zero_frame(pfn)
    }

    fn copy_frame(&self, dst: Pfn, src: Pfn) {
        if dst != src {
            copy_frame(dst, src)
        }
    }
}

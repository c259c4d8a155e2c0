//! Boot-time memory setup: carve the frame table and the kernel heap out of usable RAM, hand
//! the rest to the frame table's free list, and tag the boot bundle's frames.

use super::frame::{FRAME_INFO_BYTES, FrameInfo, FrameKind, FrameTable, OWNER_HYPERVISOR, PAGE_SIZE, Pfn};
use super::layout::{self, Range};
use super::phys;
use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use core::mem::MaybeUninit;
use linked_list_allocator::LockedHeap;
use spin::Mutex;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// The machine's frame table, set up by [`init`].
pub static FRAMES: Mutex<Option<FrameTable<'static>>> = Mutex::new(None);

/// Smallest kernel heap.
pub const HEAP_MIN_BYTES: u64 = 8 << 20;
/// Largest kernel heap.
pub const HEAP_MAX_BYTES: u64 = 256 << 20;
/// The heap gets 1/HEAP_RAM_DIVISOR of usable RAM (within the bounds above).
pub const HEAP_RAM_DIVISOR: u64 = 16;
/// Physically contiguous frames set aside for the virtualization backend (SVM's I/O and MSR
/// permission maps are 12 and 8 KiB; host save areas, VMXON region).
pub const BOOT_POOL_FRAMES: u64 = 16;

/// What boot-time memory setup found and reserved.
#[derive(Clone, Copy, Debug)]
pub struct MemoryReport {
    /// Usable RAM reported by the firmware, in KiB.
    pub usable_kib: u64,
    /// Number of usable regions.
    pub usable_regions: usize,
    /// Frames covered by the frame table (up to the highest usable address).
    pub table_frames: u64,
    /// Frame table size in KiB.
    pub frame_table_kib: u64,
    /// Kernel heap size in KiB.
    pub heap_kib: u64,
    /// Free RAM after setup, in KiB.
    pub free_kib: u64,
    /// Boot bundle frames tagged in the table.
    pub bundle_frames: u64,
    /// First frame of the contiguous boot pool ([`BOOT_POOL_FRAMES`] frames, zeroed).
    pub boot_pool: Pfn,
}

/// Why memory setup failed.
#[derive(Clone, Copy, Debug)]
pub enum BootMemError {
    /// The firmware reported no usable RAM.
    NoUsableMemory,
    /// No usable region is large enough for the frame table or the heap.
    NoRoomFor(&'static str, u64),
}

fn usable(regions: &[MemoryRegion]) -> impl Iterator<Item = Range> + '_ {
    layout::usable(regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable).map(|r| (r.start, r.end)))
}

fn carve(regions: &[MemoryRegion], bytes: u64, taken: &[Range]) -> Option<Range> {
    layout::carve(usable(regions), bytes, taken)
}

/// Sets up the frame table and heap. `bundle` is the physical range of the boot bundle.
pub fn init(regions: &[MemoryRegion], bundle: Option<(u64, u64)>) -> Result<MemoryReport, BootMemError> {
    let usable_bytes: u64 = usable(regions).map(|r| r.end - r.start).sum();
    let usable_regions = usable(regions).count();
    let top = usable(regions).map(|r| r.end).max().ok_or(BootMemError::NoUsableMemory)?;
    let table_frames = top / PAGE_SIZE;
    let table_bytes = table_frames * FRAME_INFO_BYTES as u64;
    // The bundle's frames are never handed out, even if the firmware called them usable.
    let bundle = bundle.map(|(start, len)| Range {
        start: start / PAGE_SIZE * PAGE_SIZE,
        end: (start + len).div_ceil(PAGE_SIZE) * PAGE_SIZE,
    });
    let bundle_range = bundle.unwrap_or(Range::EMPTY);
    let table = carve(regions, table_bytes, &[bundle_range]).ok_or(BootMemError::NoRoomFor("frame table", table_bytes))?;
    let heap_bytes = (usable_bytes / HEAP_RAM_DIVISOR).clamp(HEAP_MIN_BYTES, HEAP_MAX_BYTES) / PAGE_SIZE * PAGE_SIZE;
    let heap = carve(regions, heap_bytes, &[table, bundle_range]).ok_or(BootMemError::NoRoomFor("heap", heap_bytes))?;
    let pool_bytes = BOOT_POOL_FRAMES * PAGE_SIZE;
    let pool =
        carve(regions, pool_bytes, &[table, heap, bundle_range]).ok_or(BootMemError::NoRoomFor("boot pool", pool_bytes))?;

    // SAFETY: `table` is usable RAM that nothing else uses (carved above), inside the linear
    // map, and large enough for `table_frames` records.
    let storage = unsafe {
        core::slice::from_raw_parts_mut(
            phys::virt(table.start) as *mut MaybeUninit<FrameInfo>,
            table_frames as usize,
        )
    };
    let mut ft = FrameTable::new(storage);
    let carved = [table, heap, pool];
    for c in carved {
        for n in c.start / PAGE_SIZE..c.end / PAGE_SIZE {
            // Cannot fail: the carved ranges are usable frames inside the table, claimed once.
            let _ = ft.claim_reserved(Pfn(n), FrameKind::Hypervisor, OWNER_HYPERVISOR);
        }
    }
    let mut bundle_frames = 0;
    if let Some(b) = bundle {
        for n in b.start / PAGE_SIZE..b.end / PAGE_SIZE {
            if ft.tag_reserved(Pfn(n), FrameKind::Bundle).is_ok() {
                bundle_frames += 1;
            }
        }
    }
    let mut cuts = [table, heap, pool, bundle_range];
    layout::free_parts(usable(regions), &mut cuts, |r| {
        let _ = ft.add_free_range(Pfn(r.start / PAGE_SIZE), Pfn(r.end / PAGE_SIZE));
    });
    let free_kib = ft.free_frames() * PAGE_SIZE / 1024;
    *FRAMES.lock() = Some(ft);
    // SAFETY: the pool was carved from usable RAM above and belongs to nobody else.
    unsafe { core::ptr::write_bytes(phys::virt(pool.start) as *mut u8, 0, pool_bytes as usize) };

    // SAFETY: the heap range was carved from usable RAM above and is used for nothing else.
    unsafe { HEAP.lock().init(phys::virt(heap.start) as *mut u8, heap_bytes as usize) };

    Ok(MemoryReport {
        usable_kib: usable_bytes / 1024,
        usable_regions,
        table_frames,
        frame_table_kib: (table.end - table.start) / 1024,
        heap_kib: heap_bytes / 1024,
        free_kib,
        bundle_frames,
        boot_pool: Pfn(pool.start / PAGE_SIZE),
    })
}

/// Bytes free in the kernel heap.
pub fn heap_free_bytes() -> usize {
    HEAP.lock().free()
}

/// Hands the frame table over to its single owner (the hypervisor core).
pub fn take_frames() -> Option<FrameTable<'static>> {
    FRAMES.lock().take()
}

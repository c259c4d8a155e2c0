//! The boot page tables and GDT every built domain starts with: an identity map of the first
//! 4 GiB with 2 MiB pages and the three-descriptor flat GDT of `guest_abi::layout`.
//!
//! Every entry at every level has its accessed and dirty bits preset, so the CPU never writes
//! these pages: clones share them copy-on-write and must not fault on A/D updates.

use alloc::vec::Vec;
use guest_abi::layout::{BOOT_GDT, BOOT_PD_COUNT, BOOT_PD_GPA, BOOT_PDPT_GPA, BOOT_PML4_GPA, PAGE_SIZE};

/// Page-table entry bit: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Page-table entry bit: writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Page-table entry bit: accessed.
pub const PTE_ACCESSED: u64 = 1 << 5;
/// Page-table entry bit: dirty (ignored in non-leaf entries, preset anyway).
pub const PTE_DIRTY: u64 = 1 << 6;
/// Page-directory entry bit: maps a 2 MiB page.
pub const PTE_HUGE: u64 = 1 << 7;

/// Bits of every boot page-table entry at every level.
pub const PTE_BOOT_FLAGS: u64 = PTE_PRESENT | PTE_WRITABLE | PTE_ACCESSED | PTE_DIRTY;
/// Entries in one page table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Bytes one page-directory entry maps.
pub const LARGE_PAGE_BYTES: u64 = 2 << 20;
/// Bytes one page directory maps.
pub const PD_SPAN_BYTES: u64 = LARGE_PAGE_BYTES * ENTRIES_PER_TABLE as u64;
/// Bytes the boot tables identity-map.
pub const IDENTITY_MAP_BYTES: u64 = PD_SPAN_BYTES * BOOT_PD_COUNT;

/// One page (or run of pages) of boot data and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPages {
    /// Guest-physical address of the first byte.
    pub gpa: u64,
    /// Whole pages of content.
    pub bytes: Vec<u8>,
}

fn table_bytes(entries: impl Iterator<Item = u64>, pages: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages * PAGE_SIZE as usize);
    for e in entries {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.resize(pages * PAGE_SIZE as usize, 0);
    out
}

/// The PML4, the PDPT and the page directories (one run of [`BOOT_PD_COUNT`] pages).
pub fn page_tables() -> [BootPages; 3] {
    let pml4 = table_bytes(core::iter::once(BOOT_PDPT_GPA | PTE_BOOT_FLAGS), 1);
    let pdpt = table_bytes((0..BOOT_PD_COUNT).map(|i| (BOOT_PD_GPA + i * PAGE_SIZE) | PTE_BOOT_FLAGS), 1);
    let large_pages = BOOT_PD_COUNT * ENTRIES_PER_TABLE as u64;
    let pds = table_bytes(
        (0..large_pages).map(|i| (i * LARGE_PAGE_BYTES) | PTE_BOOT_FLAGS | PTE_HUGE),
        BOOT_PD_COUNT as usize,
    );
    [
        BootPages { gpa: BOOT_PML4_GPA, bytes: pml4 },
        BootPages { gpa: BOOT_PDPT_GPA, bytes: pdpt },
        BootPages { gpa: BOOT_PD_GPA, bytes: pds },
    ]
}

/// The GDT page: [`BOOT_GDT`] followed by zeros.
pub fn gdt_page() -> Vec<u8> {
    table_bytes(BOOT_GDT.iter().copied(), 1)
}

//! Guest-physical memory layout of a domain built by the domain builder. Guests are 64-bit
//! from their first instruction: the builder identity-maps the first 4 GiB with 2 MiB pages
//! (accessed and dirty bits preset, so the CPU never writes the tables).

/// Bytes in a page.
pub const PAGE_SIZE: u64 = 4096;
/// The start-of-day page (read-only to the guest; RDI points here at entry).
pub const START_INFO_GPA: u64 = 0x1000;
/// The boot page tables: PML4, PDPT, then four page directories.
pub const BOOT_PML4_GPA: u64 = 0x2000;
/// The boot PDPT.
pub const BOOT_PDPT_GPA: u64 = 0x3000;
/// The first of the four boot page directories (0x4000-0x7FFF).
pub const BOOT_PD_GPA: u64 = 0x4000;
/// Number of boot page directories (each maps 1 GiB).
pub const BOOT_PD_COUNT: u64 = 4;
/// The boot GDT: null, 64-bit code (0x08), data (0x10).
pub const BOOT_GDT_GPA: u64 = 0x8000;
/// Initial stack pointer (a scratch stack below the start-of-day page).
pub const BOOT_STACK_TOP_GPA: u64 = 0x1000;
/// Where images are loaded (position-independent images are relocated here).
pub const IMAGE_BASE_GPA: u64 = 0x10_0000;
/// Where dom0 finds the boot bundle's images (read-only).
pub const MODULES_GPA: u64 = 0xC000_0000;
/// Largest guest RAM.
pub const MAX_DOMAIN_MEM_BYTES: u64 = 0xC000_0000;
/// Smallest guest RAM.
pub const MIN_DOMAIN_MEM_BYTES: u64 = 2 << 20;

/// The boot GDT's descriptors, accessed bits preset.
pub const BOOT_GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
/// Code selector in the boot GDT.
pub const BOOT_CS: u16 = 0x08;
/// Data selector in the boot GDT.
pub const BOOT_DS: u16 = 0x10;

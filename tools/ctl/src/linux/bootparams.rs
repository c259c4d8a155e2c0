//! The zero page (`struct boot_params`) and the e820 memory map it carries.

use super::bzimage::{
    BzImage, CMD_LINE_PTR, LOADFLAGS, RAMDISK_IMAGE, RAMDISK_SIZE, SETUP_HEADER_OFFSET, TYPE_OF_LOADER, VID_MODE,
};
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::layout::{IMAGE_BASE_GPA, PAGE_SIZE, START_INFO_GPA};

/// `ext_ramdisk_image` (u32): bits 63:32 of `ramdisk_image`.
pub const EXT_RAMDISK_IMAGE: usize = 0x0C0;
/// `ext_ramdisk_size` (u32).
pub const EXT_RAMDISK_SIZE: usize = 0x0C4;
/// `ext_cmd_line_ptr` (u32).
pub const EXT_CMD_LINE_PTR: usize = 0x0C8;
/// `e820_entries` (u8).
pub const E820_ENTRIES: usize = 0x1E8;
/// `e820_table`: up to [`E820_MAX_ENTRIES`] entries of [`E820_ENTRY_BYTES`].
pub const E820_TABLE: usize = 0x2D0;
/// Bytes of one e820 entry: addr u64, size u64, type u32.
pub const E820_ENTRY_BYTES: usize = 20;
/// Entries `e820_table` holds.
pub const E820_MAX_ENTRIES: usize = 128;
/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// `type_of_loader` for a loader without an assigned id.
pub const LOADER_UNDEFINED: u8 = 0xFF;
/// `vid_mode`: "normal" (no mode change).
pub const VID_MODE_NORMAL: u16 = 0xFFFF;
/// Size of the zero page.
pub const ZERO_PAGE_BYTES: usize = PAGE_SIZE as usize;
/// Start of the reserved BIOS area below 1 MiB (the top 1 KiB of the 640 KiB base memory).
pub const LOW_RESERVED_GPA: u64 = 0x9_FC00;

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The memory map of a Linux domain with `mem_bytes` of RAM (at least 1 MiB + a page): the
/// start-of-day page and the BIOS area reserved, everything else RAM.
pub fn e820_map(mem_bytes: u64) -> [E820Entry; 5] {
    let start_info_end = START_INFO_GPA + PAGE_SIZE;
    [
        E820Entry { addr: 0, size: START_INFO_GPA, kind: E820_RAM },
        E820Entry { addr: START_INFO_GPA, size: PAGE_SIZE, kind: E820_RESERVED },
        E820Entry { addr: start_info_end, size: LOW_RESERVED_GPA - start_info_end, kind: E820_RAM },
        E820Entry { addr: LOW_RESERVED_GPA, size: IMAGE_BASE_GPA - LOW_RESERVED_GPA, kind: E820_RESERVED },
        E820Entry { addr: IMAGE_BASE_GPA, size: mem_bytes - IMAGE_BASE_GPA, kind: E820_RAM },
    ]
}

/// Where the zero page points the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootParamsSpec {
    pub cmdline_gpa: u64,
    /// 0 with `initrd_len` 0 for no initrd.
    pub initrd_gpa: u64,
    pub initrd_len: u64,
    pub mem_bytes: u64,
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The zero page: the kernel's setup header at its own offsets, the loader's fields, the
/// e820 map; everything else zero. `loadflags` stay as the kernel has them (no
/// `KEEP_SEGMENTS`, no `QUIET_FLAG`).
pub fn zero_page(image: &BzImage<'_>, spec: &BootParamsSpec) -> Vec<u8> {
    let mut page = vec![0u8; ZERO_PAGE_BYTES];
    let header = image.header_bytes();
    page[SETUP_HEADER_OFFSET..SETUP_HEADER_OFFSET + header.len()].copy_from_slice(header);
    page[TYPE_OF_LOADER] = LOADER_UNDEFINED;
    page[LOADFLAGS] = image.header.loadflags;
    put_u16(&mut page, VID_MODE, VID_MODE_NORMAL);
    put_u32(&mut page, RAMDISK_IMAGE, spec.initrd_gpa as u32);
    put_u32(&mut page, EXT_RAMDISK_IMAGE, (spec.initrd_gpa >> 32) as u32);
    put_u32(&mut page, RAMDISK_SIZE, spec.initrd_len as u32);
    put_u32(&mut page, EXT_RAMDISK_SIZE, (spec.initrd_len >> 32) as u32);
    put_u32(&mut page, CMD_LINE_PTR, spec.cmdline_gpa as u32);
    put_u32(&mut page, EXT_CMD_LINE_PTR, (spec.cmdline_gpa >> 32) as u32);
    let map = e820_map(spec.mem_bytes);
    page[E820_ENTRIES] = map.len() as u8;
    for (i, e) in map.iter().enumerate() {
        let at = E820_TABLE + i * E820_ENTRY_BYTES;
        put_u64(&mut page, at, e.addr);
        put_u64(&mut page, at + 8, e.size);
        put_u32(&mut page, at + 16, e.kind);
    }
    page
}

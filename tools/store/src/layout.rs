//! The on-disk format, version 1: the superblock, the two directory slots and their entries.
//! All integers little-endian.
//!
//! ```text
//! LBA 0              superblock: magic "COWSTORE", version, geometry, XXH3-64 of the above
//! LBA 1..130         directory slot 0: header sector + up to 128 sectors of 2 entries each
//! LBA 130..259       directory slot 1: the same
//! LBA 264..end       data: one contiguous extent per image, each starting 4 KiB-aligned
//! ```

use crate::{
    CorruptWhat, Entry, ImageKind, MAX_ENTRIES, MAX_NAME_BYTES, MAX_ORIGIN_BYTES, SECTOR_BYTES,
    is_valid_name,
};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

pub(crate) const SUPER_MAGIC: [u8; 8] = *b"COWSTORE";
pub(crate) const VERSION: u32 = 1;
pub(crate) const DIR_MAGIC: [u8; 8] = *b"COWSDIR1";
pub(crate) const ENTRY_BYTES: usize = 256;
pub(crate) const ENTRIES_PER_SECTOR: usize = SECTOR_BYTES / ENTRY_BYTES;
/// Sectors of one directory slot: a header and the entries.
pub(crate) const SLOT_SECTORS: u64 = 1 + MAX_ENTRIES.div_ceil(ENTRIES_PER_SECTOR) as u64;
/// Where the two directory slots start.
pub(crate) const SLOT_LBA: [u64; 2] = [1, 1 + SLOT_SECTORS];
/// Images start on multiples of this many sectors (4 KiB: a page of a saved domain is then
/// whole, aligned sectors).
pub(crate) const ALIGN_SECTORS: u64 = 8;
/// The first data sector.
pub(crate) const DATA_LBA: u64 = align_up(1 + 2 * SLOT_SECTORS);

pub(crate) const fn align_up(lba: u64) -> u64 {
    lba.div_ceil(ALIGN_SECTORS) * ALIGN_SECTORS
}

pub(crate) type Sector = [u8; SECTOR_BYTES];

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

// Superblock offsets.
const SB_VERSION: usize = 8;
const SB_SECTOR_BYTES: usize = 12;
const SB_TOTAL: usize = 16;
const SB_SLOT0: usize = 24;
const SB_SLOT1: usize = 32;
const SB_SLOT_SECTORS: usize = 40;
const SB_MAX_ENTRIES: usize = 44;
const SB_DATA: usize = 48;
const SB_ALIGN: usize = 56;
const SB_ENTRY_BYTES: usize = 60;
const SB_CHECKSUM: usize = 64;

/// The superblock of a store of `total` sectors.
pub(crate) fn encode_superblock(total: u64) -> Sector {
    let mut b = [0; SECTOR_BYTES];
    b[..8].copy_from_slice(&SUPER_MAGIC);
    put_u32(&mut b, SB_VERSION, VERSION);
    put_u32(&mut b, SB_SECTOR_BYTES, SECTOR_BYTES as u32);
    put_u64(&mut b, SB_TOTAL, total);
    put_u64(&mut b, SB_SLOT0, SLOT_LBA[0]);
    put_u64(&mut b, SB_SLOT1, SLOT_LBA[1]);
    put_u32(&mut b, SB_SLOT_SECTORS, SLOT_SECTORS as u32);
    put_u32(&mut b, SB_MAX_ENTRIES, MAX_ENTRIES as u32);
    put_u64(&mut b, SB_DATA, DATA_LBA);
    put_u32(&mut b, SB_ALIGN, ALIGN_SECTORS as u32);
    put_u32(&mut b, SB_ENTRY_BYTES, ENTRY_BYTES as u32);
    let sum = xxh3_64(&b[..SB_CHECKSUM]);
    put_u64(&mut b, SB_CHECKSUM, sum);
    b
}

/// What sector 0 holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SuperblockRead {
    /// A valid superblock of a store of this many sectors.
    Store(u64),
    /// Not a store's superblock (no magic).
    NotStore,
    /// A store's magic, but a bad checksum, version or geometry.
    Damaged(CorruptWhat),
}

pub(crate) fn decode_superblock(b: &Sector) -> SuperblockRead {
    if b[..8] != SUPER_MAGIC {
        return SuperblockRead::NotStore;
    }
    if get_u64(b, SB_CHECKSUM) != xxh3_64(&b[..SB_CHECKSUM]) {
        return SuperblockRead::Damaged(CorruptWhat::Superblock);
    }
    if get_u32(b, SB_VERSION) != VERSION {
        return SuperblockRead::Damaged(CorruptWhat::Version);
    }
    let total = get_u64(b, SB_TOTAL);
    let geometry_ok = get_u32(b, SB_SECTOR_BYTES) == SECTOR_BYTES as u32
        && get_u64(b, SB_SLOT0) == SLOT_LBA[0]
        && get_u64(b, SB_SLOT1) == SLOT_LBA[1]
        && get_u32(b, SB_SLOT_SECTORS) == SLOT_SECTORS as u32
        && get_u32(b, SB_MAX_ENTRIES) == MAX_ENTRIES as u32
        && get_u64(b, SB_DATA) == DATA_LBA
        && get_u32(b, SB_ALIGN) == ALIGN_SECTORS as u32
        && get_u32(b, SB_ENTRY_BYTES) == ENTRY_BYTES as u32
        && total > DATA_LBA;
    if geometry_ok {
        SuperblockRead::Store(total)
    } else {
        SuperblockRead::Damaged(CorruptWhat::Superblock)
    }
}

// Directory slot header offsets.
const DIR_GENERATION: usize = 8;
const DIR_COUNT: usize = 16;
const DIR_NEXT_SEQUENCE: usize = 24;
const DIR_CHECKSUM: usize = 32;

// Entry offsets.
const E_KIND: usize = 0;
/// Bit 7 of an entry's kind byte: the image carries its own checksums ([`Entry::self_checked`]).
const KIND_SELF_CHECKED: u8 = 0x80;
const E_NAME_LEN: usize = 1;
const E_ORIGIN_LEN: usize = 2;
const E_FIRST_LBA: usize = 8;
const E_SIZE: usize = 16;
const E_SEQUENCE: usize = 24;
const E_CHECKSUM: usize = 32;
const E_NAME: usize = 40;
const E_ORIGIN: usize = E_NAME + MAX_NAME_BYTES;
const _: () = assert!(E_ORIGIN + MAX_ORIGIN_BYTES <= ENTRY_BYTES);

/// A directory as it is kept in a slot.
#[derive(Debug)]
pub(crate) struct Directory {
    pub generation: u64,
    pub next_sequence: u64,
    pub entries: Vec<Entry>,
}

/// Sectors a slot holding `count` entries occupies (what is written and read).
pub(crate) fn slot_used_sectors(count: usize) -> usize {
    1 + count.div_ceil(ENTRIES_PER_SECTOR)
}

fn slot_checksum(header: &[u8], entries: &[u8]) -> u64 {
    let mut h = Xxh3Default::new();
    h.update(&header[..DIR_CHECKSUM]);
    h.update(entries);
    h.digest()
}

/// The sectors of a slot holding `entries` (at most [`MAX_ENTRIES`]).
pub(crate) fn encode_directory(generation: u64, next_sequence: u64, entries: &[&Entry]) -> Vec<u8> {
    let count = entries.len();
    debug_assert!(count <= MAX_ENTRIES);
    let mut b = vec![0u8; slot_used_sectors(count) * SECTOR_BYTES];
    let (header, body) = b.split_at_mut(SECTOR_BYTES);
    header[..8].copy_from_slice(&DIR_MAGIC);
    put_u64(header, DIR_GENERATION, generation);
    put_u32(header, DIR_COUNT, count as u32);
    put_u64(header, DIR_NEXT_SEQUENCE, next_sequence);
    for (e, raw) in entries.iter().zip(body.chunks_exact_mut(ENTRY_BYTES)) {
        raw[E_KIND] = e.kind.code() | if e.self_checked { KIND_SELF_CHECKED } else { 0 };
        raw[E_NAME_LEN] = e.name.len() as u8;
        raw[E_ORIGIN_LEN] = e.origin.len() as u8;
        put_u64(raw, E_FIRST_LBA, e.first_lba);
        put_u64(raw, E_SIZE, e.size_bytes);
        put_u64(raw, E_SEQUENCE, e.sequence);
        put_u64(raw, E_CHECKSUM, e.checksum);
        raw[E_NAME..E_NAME + e.name.len()].copy_from_slice(e.name.as_bytes());
        raw[E_ORIGIN..E_ORIGIN + e.origin.len()].copy_from_slice(e.origin.as_bytes());
    }
    let sum = slot_checksum(header, body);
    put_u64(header, DIR_CHECKSUM, sum);
    b
}

/// The entry count a slot header claims, if it is a directory header at all.
pub(crate) fn header_count(header: &Sector) -> Option<usize> {
    let count = get_u32(header, DIR_COUNT) as usize;
    (header[..8] == DIR_MAGIC && count <= MAX_ENTRIES).then_some(count)
}

/// Decodes a slot (`header` and the `slot_used_sectors(count) - 1` sectors after it); `None`
/// unless it is intact and self-consistent for a store of `total` sectors.
pub(crate) fn decode_directory(header: &Sector, body: &[u8], total: u64) -> Option<Directory> {
    let count = header_count(header)?;
    if body.len() != (slot_used_sectors(count) - 1) * SECTOR_BYTES
        || get_u64(header, DIR_CHECKSUM) != slot_checksum(header, body)
    {
        return None;
    }
    let next_sequence = get_u64(header, DIR_NEXT_SEQUENCE);
    let mut entries = Vec::with_capacity(count);
    for raw in body.chunks_exact(ENTRY_BYTES).take(count) {
        let kind = ImageKind::from_code(raw[E_KIND] & !KIND_SELF_CHECKED)?;
        let name_len = raw[E_NAME_LEN] as usize;
        let origin_len = raw[E_ORIGIN_LEN] as usize;
        if name_len > MAX_NAME_BYTES || origin_len > MAX_ORIGIN_BYTES {
            return None;
        }
        let name = core::str::from_utf8(&raw[E_NAME..E_NAME + name_len])
            .ok()
            .filter(|n| is_valid_name(n))?;
        let origin = core::str::from_utf8(&raw[E_ORIGIN..E_ORIGIN + origin_len]).ok()?;
        let e = Entry {
            name: String::from(name),
            kind,
            size_bytes: get_u64(raw, E_SIZE),
            origin: String::from(origin),
            sequence: get_u64(raw, E_SEQUENCE),
            first_lba: get_u64(raw, E_FIRST_LBA),
            checksum: get_u64(raw, E_CHECKSUM),
            self_checked: raw[E_KIND] & KIND_SELF_CHECKED != 0,
        };
        let fits = e.first_lba >= DATA_LBA
            && e.first_lba
                .checked_add(e.sectors())
                .is_some_and(|end| end <= total);
        if !fits || e.sequence >= next_sequence || entries.iter().any(|o: &Entry| o.name == e.name)
        {
            return None;
        }
        entries.push(e);
    }
    // Extents must not overlap.
    let mut extents: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| e.sectors() > 0)
        .map(|e| (e.first_lba, e.end_lba()))
        .collect();
    extents.sort_unstable();
    if extents.windows(2).any(|w| w[0].1 > w[1].0) {
        return None;
    }
    entries.sort_by_key(|e| e.sequence);
    Some(Directory {
        generation: get_u64(header, DIR_GENERATION),
        next_sequence,
        entries,
    })
}

//! The working set a lazy restore records (docs/pager.md): the order in which the restored
//! domain first touched its pages, kept in the store beside its image (`IMAGE.ws`, kind
//! `workset`) and prefetched by the next lazy restore of that image before it runs (REAP).
//! A working set read back is hostile input like any image: checked whole before use.

use alloc::vec::Vec;
use store::ImageChecksum;

/// First bytes of a working set.
pub const WORKSET_MAGIC: [u8; 8] = *b"COWVWS1\0";
/// Bytes before the page list: magic, image sequence, memory pages, count, reserved.
pub const WORKSET_HEADER_BYTES: usize = 32;
/// Most pages a working set lists (256 MiB of first touches).
pub const WORKSET_MAX_PAGES: usize = 65_536;

/// Why a stored working set is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorksetError {
    /// Shorter than its header and checksum say, or longer.
    Truncated,
    /// Not a working set.
    BadMagic,
    /// The checksum does not match.
    Checksum,
    /// Recorded for another image (the image of that name was saved again since).
    OtherImage,
    /// Recorded for a domain of another size.
    MemoryMismatch,
    /// More pages than [`WORKSET_MAX_PAGES`], a page beyond memory, or a page listed twice.
    BadPages,
}

impl core::fmt::Display for WorksetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated",
            Self::BadMagic => "not a working set",
            Self::Checksum => "checksum mismatch",
            Self::OtherImage => "recorded for an older image of that name",
            Self::MemoryMismatch => "recorded for another memory size",
            Self::BadPages => "bad page list",
        })
    }
}

/// The store name of `image`'s working set.
pub fn workset_name(image: &str) -> alloc::string::String {
    alloc::format!("{image}.ws")
}

/// The bytes of a working set of `gfns` (in first-touch order) for the image with store
/// sequence `image_sequence` and `mem_pages` pages.
pub fn encode(image_sequence: u64, mem_pages: u64, gfns: &[u64]) -> Vec<u8> {
    let gfns = &gfns[..gfns.len().min(WORKSET_MAX_PAGES)];
    let mut b = Vec::with_capacity(WORKSET_HEADER_BYTES + gfns.len() * 8 + 8);
    b.extend_from_slice(&WORKSET_MAGIC);
    b.extend_from_slice(&image_sequence.to_le_bytes());
    b.extend_from_slice(&mem_pages.to_le_bytes());
    b.extend_from_slice(&(gfns.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for g in gfns {
        b.extend_from_slice(&g.to_le_bytes());
    }
    let mut h = ImageChecksum::new();
    h.update(&b);
    b.extend_from_slice(&h.value().to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The page list of a working set, checked against the image it should belong to.
pub fn decode(bytes: &[u8], image_sequence: u64, mem_pages: u64) -> Result<Vec<u64>, WorksetError> {
    if bytes.len() < WORKSET_HEADER_BYTES + 8 {
        return Err(WorksetError::Truncated);
    }
    if bytes[..8] != WORKSET_MAGIC {
        return Err(WorksetError::BadMagic);
    }
    let count = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]) as usize;
    if count > WORKSET_MAX_PAGES {
        return Err(WorksetError::BadPages);
    }
    if bytes.len() != WORKSET_HEADER_BYTES + count * 8 + 8 {
        return Err(WorksetError::Truncated);
    }
    let body = bytes.len() - 8;
    let mut h = ImageChecksum::new();
    h.update(&bytes[..body]);
    if h.value() != u64_at(bytes, body) {
        return Err(WorksetError::Checksum);
    }
    if u64_at(bytes, 8) != image_sequence {
        return Err(WorksetError::OtherImage);
    }
    if u64_at(bytes, 16) != mem_pages || bytes[28..32] != [0; 4] {
        return Err(WorksetError::MemoryMismatch);
    }
    let mut seen = alloc::collections::BTreeSet::new();
    let mut gfns = Vec::with_capacity(count);
    for i in 0..count {
        let g = u64_at(bytes, WORKSET_HEADER_BYTES + i * 8);
        if g >= mem_pages || !seen.insert(g) {
            return Err(WorksetError::BadPages);
        }
        gfns.push(g);
    }
    Ok(gfns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_working_set_round_trips_in_first_touch_order() {
        let b = encode(7, 4096, &[5, 1, 4095, 2]);
        assert_eq!(decode(&b, 7, 4096), Ok(alloc::vec![5, 1, 4095, 2]));
    }

    #[test]
    fn a_working_set_of_another_image_or_size_is_not_used() {
        let b = encode(7, 4096, &[5]);
        assert_eq!(decode(&b, 8, 4096), Err(WorksetError::OtherImage));
        assert_eq!(decode(&b, 7, 2048), Err(WorksetError::MemoryMismatch));
    }

    #[test]
    fn every_damaged_working_set_is_refused_never_misread() {
        let good = encode(3, 512, &[0, 9, 100, 511]);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut], 3, 512).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b, 3, 512).is_err(), "byte {i} bit {bit}");
            }
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long, 3, 512), Err(WorksetError::Truncated));
    }

    #[test]
    fn pages_beyond_memory_or_listed_twice_are_refused() {
        assert_eq!(decode(&encode(1, 16, &[16]), 1, 16), Err(WorksetError::BadPages));
        assert_eq!(decode(&encode(1, 16, &[3, 3]), 1, 16), Err(WorksetError::BadPages));
    }
}

//! Pure arithmetic over the firmware's memory map: which page-aligned ranges may be used and
//! where boot-time structures are carved from (host-tested; `boot` applies it).

use super::frame::PAGE_SIZE;

/// Lowest physical address used for boot-time carving (keeps real-mode memory alone).
pub const CARVE_FLOOR_BYTES: u64 = 1 << 20;
/// Lowest physical address ever handed out: frame 0 stays unused, so physical address 0 can
/// never name a live VMCS, VMCB, table or page (0 is too easily taken for "none").
pub const FIRST_USABLE_BYTES: u64 = PAGE_SIZE;

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// The empty range at 0.
    pub const EMPTY: Self = Self { start: 0, end: 0 };

    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Shrinks firmware-reported usable ranges to whole pages at or above
/// [`FIRST_USABLE_BYTES`], dropping those that become empty.
pub fn usable(ranges: impl Iterator<Item = (u64, u64)>) -> impl Iterator<Item = Range> {
    ranges.filter_map(|(start, end)| {
        let start = (start.div_ceil(PAGE_SIZE) * PAGE_SIZE).max(FIRST_USABLE_BYTES);
        let end = end / PAGE_SIZE * PAGE_SIZE;
        (end > start).then_some(Range { start, end })
    })
}

/// Finds `bytes` (rounded up to pages) of contiguous usable RAM above [`CARVE_FLOOR_BYTES`]
/// that overlaps none of `taken`.
pub fn carve(usable: impl Iterator<Item = Range>, bytes: u64, taken: &[Range]) -> Option<Range> {
    let bytes = bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    for r in usable {
        let mut start = r.start.max(CARVE_FLOOR_BYTES);
        // Step past any taken range overlapping the candidate (at most a few).
        loop {
            let end = start.checked_add(bytes)?;
            if end > r.end {
                break;
            }
            let candidate = Range { start, end };
            match taken.iter().find(|t| t.overlaps(&candidate)) {
                Some(t) => start = t.end,
                None => return Some(candidate),
            }
        }
    }
    None
}

/// Calls `add` with the parts of every usable range that lie outside all of `cuts` (which
/// this sorts).
pub fn free_parts(usable: impl Iterator<Item = Range>, cuts: &mut [Range], mut add: impl FnMut(Range)) {
    cuts.sort_unstable_by_key(|c| c.start);
    for r in usable {
        let mut cursor = r.start;
        for c in cuts.iter() {
            if c.end <= cursor || c.start >= r.end {
                continue;
            }
            if c.start > cursor {
                add(Range { start: cursor, end: c.start });
            }
            cursor = cursor.max(c.end);
        }
        if cursor < r.end {
            add(Range { start: cursor, end: r.end });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn all(ranges: &[(u64, u64)]) -> Vec<Range> {
        usable(ranges.iter().copied()).collect()
    }

    #[test]
    fn frame_zero_is_never_usable() {
        // Firmware commonly reports 0..0x9f000 as usable RAM.
        let r = all(&[(0, 0x9f000), (MIB, 16 * MIB)]);
        assert_eq!(r[0], Range { start: PAGE_SIZE, end: 0x9f000 });
        assert!(all(&[(0, PAGE_SIZE)]).is_empty());
    }

    #[test]
    fn usable_ranges_shrink_to_whole_pages() {
        assert_eq!(all(&[(MIB + 1, 2 * MIB - 1)]), vec![Range { start: MIB + PAGE_SIZE, end: 2 * MIB - PAGE_SIZE }]);
        assert!(all(&[(MIB + 1, MIB + PAGE_SIZE + 5)]).is_empty());
    }

    #[test]
    fn carving_skips_low_memory_and_taken_ranges() {
        let ranges = [(0, 0x9f000), (MIB, 8 * MIB)];
        let taken = [Range { start: MIB, end: 2 * MIB }];
        let got = carve(all(&ranges).into_iter(), 3 * MIB, &taken);
        assert_eq!(got, Some(Range { start: 2 * MIB, end: 5 * MIB }));
        assert_eq!(carve(all(&ranges).into_iter(), 7 * MIB, &taken), None);
    }

    #[test]
    fn free_parts_leave_out_every_cut() {
        let ranges = [(0, 0x9f000), (MIB, 8 * MIB)];
        let mut cuts = [Range { start: 4 * MIB, end: 5 * MIB }, Range { start: MIB, end: 2 * MIB }];
        let mut parts = Vec::new();
        free_parts(all(&ranges).into_iter(), &mut cuts, |r| parts.push(r));
        assert_eq!(
            parts,
            vec![
                Range { start: PAGE_SIZE, end: 0x9f000 },
                Range { start: 2 * MIB, end: 4 * MIB },
                Range { start: 5 * MIB, end: 8 * MIB },
            ]
        );
    }
}

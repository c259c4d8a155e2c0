//! A domain's console: a bounded ring of the bytes it printed, addressed by absolute offset
//! (bytes since the domain started) so readers can resume where they stopped.

use alloc::collections::VecDeque;

/// Bytes of console history kept per domain.
pub const CONSOLE_RING_BYTES: usize = 16 * 1024;

/// A console history.
#[derive(Default)]
pub struct ConsoleRing {
    buf: VecDeque<u8>,
    total: u64,
}

impl ConsoleRing {
    /// Appends bytes, dropping the oldest beyond [`CONSOLE_RING_BYTES`]. The buffer grows on
    /// the heap only when `may_grow()` says the heap can spare it (asked only when growth is
    /// needed) and the allocation succeeds; otherwise the history kept is what fits in what it already has.
    /// Bytes that do not fit are still counted, so readers see them as lost.
    pub fn push(&mut self, bytes: &[u8], may_grow: impl FnOnce() -> bool) {
        self.total += bytes.len() as u64;
        let wanted = (self.buf.len() + bytes.len()).min(CONSOLE_RING_BYTES);
        if wanted > self.buf.capacity() && may_grow() {
            let _ = self.buf.try_reserve_exact(wanted - self.buf.len());
        }
        let limit = self.buf.capacity().min(CONSOLE_RING_BYTES);
        let bytes = if bytes.len() > limit { &bytes[bytes.len() - limit..] } else { bytes };
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(limit);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
    }

    /// Counts `n` bytes as written but lost, along with everything kept so far: what a
    /// write of `n` bytes followed by [`CONSOLE_RING_BYTES`] more leaves behind, without
    /// copying the part nobody would see.
    pub fn lose(&mut self, n: u64) {
        self.buf.clear();
        self.total += n;
    }

    /// Bytes ever written.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Offset of the oldest byte still kept.
    pub fn first(&self) -> u64 {
        self.total - self.buf.len() as u64
    }

    /// `offset` clamped to the bytes kept.
    fn clamp(&self, offset: u64) -> u64 {
        offset.clamp(self.first(), self.total)
    }

    /// Bytes written after `offset` (clamped to the oldest kept).
    pub fn written_after(&self, offset: u64) -> u64 {
        self.total - self.clamp(offset)
    }

    /// Copies bytes from `offset` (clamped to the oldest kept) into `out`; returns the offset
    /// actually read from and the count.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> (u64, usize) {
        let start = self.clamp(offset);
        let skip = (start - self.first()) as usize;
        let n = out.len().min(self.buf.len() - skip);
        for (o, b) in out.iter_mut().zip(self.buf.range(skip..skip + n)) {
            *o = *b;
        }
        (start, n)
    }

    /// The next stretch to echo from offset `from` (clamped to the oldest kept): a whole line
    /// ending in a newline, the first `max_bytes` of a longer one, or, when `flush`, whatever
    /// is left. `None` while only part of a short line has been written.
    pub fn next_echo(&self, from: u64, max_bytes: usize, flush: bool) -> Option<(u64, u64)> {
        let start = self.clamp(from);
        let skip = (start - self.first()) as usize;
        let window = self.buf.len() - skip;
        if let Some(i) = self.buf.range(skip..skip + window.min(max_bytes)).position(|&b| b == b'\n') {
            return Some((start, start + i as u64 + 1));
        }
        if window >= max_bytes {
            return Some((start, start + max_bytes as u64));
        }
        (flush && window > 0).then_some((start, self.total))
    }

    /// The next stretch from offset `from` (clamped to the oldest kept) as it is, lines or
    /// not: at most `max_bytes`. `None` when nothing new was written.
    pub fn next_raw(&self, from: u64, max_bytes: usize) -> Option<(u64, u64)> {
        let start = self.clamp(from);
        (start < self.total).then(|| (start, self.total.min(start + max_bytes as u64)))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resume_at_an_offset_and_old_bytes_fall_off() {
        let mut c = ConsoleRing::default();
        c.push(b"hello ", || true);
        c.push(b"world", || true);
        let mut out = [0u8; 64];
        assert_eq!(c.read(6, &mut out), (6, 5));
        assert_eq!(&out[..5], b"world");
        let big = alloc::vec![b'x'; CONSOLE_RING_BYTES];
        c.push(&big, || true);
        assert_eq!(c.total(), 11 + CONSOLE_RING_BYTES as u64);
        assert_eq!(c.first(), 11);
        let (start, n) = c.read(0, &mut out);
        assert_eq!((start, n), (11, 64));
        assert_eq!(c.read(c.total() + 5, &mut out).1, 0);
    }

    #[test]
    fn without_heap_to_spare_the_ring_keeps_what_fits_and_counts_the_rest() {
        let mut c = ConsoleRing::default();
        c.push(b"lost", || false);
        assert_eq!((c.total(), c.first(), c.heap_bytes()), (4, 4, 0), "no buffer, nothing kept");
        c.push(b"kept", || true);
        let cap = c.heap_bytes();
        assert!(cap >= 4);
        let more = alloc::vec![b'y'; cap + 10];
        c.push(&more, || false);
        assert_eq!(c.heap_bytes(), cap, "no growth without heap to spare");
        assert_eq!(c.total(), 8 + cap as u64 + 10);
        let mut out = alloc::vec![0u8; cap];
        let (start, n) = c.read(0, &mut out);
        assert_eq!((start, n), (c.total() - cap as u64, cap), "the newest bytes are kept");
        assert!(out.iter().all(|&b| b == b'y'));
    }

    #[test]
    fn losing_a_prefix_leaves_what_a_full_write_would() {
        let mut full = ConsoleRing::default();
        let mut short = ConsoleRing::default();
        full.push(b"old", || true);
        short.push(b"old", || true);
        let text: alloc::vec::Vec<u8> = (0..CONSOLE_RING_BYTES + 100).map(|i| i as u8).collect();
        full.push(&text, || true);
        short.lose(100);
        short.push(&text[100..], || true);
        assert_eq!((full.total(), full.first()), (short.total(), short.first()));
        let (mut a, mut b) = (alloc::vec![0u8; CONSOLE_RING_BYTES], alloc::vec![0u8; CONSOLE_RING_BYTES]);
        assert_eq!(full.read(0, &mut a), short.read(0, &mut b));
        assert_eq!(a, b);
    }

    #[test]
    fn echo_waits_for_whole_lines_breaks_long_ones_and_flushes_the_rest() {
        let mut c = ConsoleRing::default();
        c.push(b"par", || true);
        assert_eq!(c.next_echo(0, 8, false), None, "a partial line waits");
        c.push(b"tial\nab", || true);
        assert_eq!(c.next_echo(0, 8, false), Some((0, 8)), "the line ends at its newline");
        assert_eq!(c.next_echo(8, 8, false), None);
        assert_eq!(c.next_echo(8, 8, true), Some((8, 10)), "flush takes the rest");
        c.push(b"cdefghijkl", || true);
        assert_eq!(c.next_echo(8, 8, false), Some((8, 16)), "a long line is broken at the limit");
        assert_eq!(c.next_echo(20, 8, true), None, "nothing is left");
        let big = alloc::vec![b'x'; CONSOLE_RING_BYTES];
        c.push(&big, || true);
        assert_eq!(c.next_echo(0, 8, false), Some((c.first(), c.first() + 8)), "lost bytes are skipped");
    }
}

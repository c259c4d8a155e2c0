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
    /// Appends bytes, dropping the oldest beyond [`CONSOLE_RING_BYTES`].
    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > CONSOLE_RING_BYTES { &bytes[bytes.len() - CONSOLE_RING_BYTES..] } else { bytes };
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(CONSOLE_RING_BYTES);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
        self.total += bytes.len() as u64;
    }

    /// Bytes ever written.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Offset of the oldest byte still kept.
    pub fn first(&self) -> u64 {
        self.total - self.buf.len() as u64
    }

    /// Copies bytes from `offset` (clamped to the oldest kept) into `out`; returns the offset
    /// actually read from and the count.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> (u64, usize) {
        let start = offset.clamp(self.first(), self.total);
        let skip = (start - self.first()) as usize;
        let n = out.len().min(self.buf.len() - skip);
        for (o, b) in out.iter_mut().zip(self.buf.range(skip..skip + n)) {
            *o = *b;
        }
        (start, n)
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
        c.push(b"hello ");
        c.push(b"world");
        let mut out = [0u8; 64];
        assert_eq!(c.read(6, &mut out), (6, 5));
        assert_eq!(&out[..5], b"world");
        let big = alloc::vec![b'x'; CONSOLE_RING_BYTES];
        c.push(&big);
        assert_eq!(c.total(), 11 + CONSOLE_RING_BYTES as u64);
        assert_eq!(c.first(), 11);
        let (start, n) = c.read(0, &mut out);
        assert_eq!((start, n), (11, 64));
        assert_eq!(c.read(c.total() + 5, &mut out).1, 0);
    }
}

//! The serial line's transmit queue: bytes waiting for the UART. Everything the hypervisor
//! prints (its log, dom0's console, echoed guest lines) is queued whole and moved to the
//! UART a bounded amount at a time, without waiting for the line, so a guest that prints a
//! lot cannot hold the CPU in an exit while 115200 baud drains it.

/// Bytes the transmit queue holds (about 1.4 s of output at 115200 baud).
pub const TX_QUEUE_BYTES: usize = 16 * 1024;

/// A fixed ring of bytes to transmit. Newlines are stored as CR LF.
pub struct TxQueue<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Default for TxQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TxQueue<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { buf: [0; N], head: 0, len: 0 }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left, in bytes as stored.
    pub fn room(&self) -> usize {
        N - self.len
    }

    /// Bytes `parts` take once queued (a newline becomes CR LF).
    pub fn stored_len(parts: &[&[u8]]) -> usize {
        parts.iter().map(|p| p.len() + p.iter().filter(|&&b| b == b'\n').count()).sum()
    }

    /// Queues the concatenation of `parts` if all of it fits; otherwise queues nothing and
    /// returns false (a line is never split between two queue calls).
    pub fn push(&mut self, parts: &[&[u8]]) -> bool {
        if Self::stored_len(parts) > self.room() {
            return false;
        }
        for &b in parts.iter().flat_map(|p| p.iter()) {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        true
    }

    fn put(&mut self, b: u8) {
        let at = (self.head + self.len) % N;
        self.buf[at] = b;
        self.len += 1;
    }

    /// Hands up to `max_bytes` to `send`, oldest first, until it takes nothing (the UART's
    /// FIFO is full) or the queue is empty; `send` returns how many bytes of the slice it took.
    /// Returns (bytes sent, bytes still waiting).
    pub fn drain(&mut self, max_bytes: usize, send: &mut dyn FnMut(&[u8]) -> usize) -> (usize, usize) {
        let mut budget = max_bytes;
        while self.len > 0 && budget > 0 {
            let contiguous = (N - self.head).min(self.len).min(budget);
            let taken = send(&self.buf[self.head..self.head + contiguous]).min(contiguous);
            if taken == 0 {
                break;
            }
            self.head = (self.head + taken) % N;
            self.len -= taken;
            budget -= taken;
        }
        (max_bytes - budget, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn lines_go_in_whole_or_not_at_all_with_crlf() {
        let mut q = TxQueue::<16>::new();
        assert!(q.push(&[b"(d1) ", b"hi\n"]));
        assert_eq!(q.len(), 9);
        assert!(!q.push(&[b"01234567"]), "8 bytes do not fit in the 7 left");
        assert!(q.push(&[b"012345"]));
        assert!(!q.push(&[b"x\n"]), "a newline takes two bytes");
        let mut out = Vec::new();
        assert_eq!(q.drain(usize::MAX, &mut |b| { out.extend_from_slice(b); b.len() }), (15, 0));
        assert_eq!(&out[..], b"(d1) hi\r\n012345");
    }

    #[test]
    fn drain_stops_at_its_budget_and_when_the_uart_is_busy() {
        let mut q = TxQueue::<64>::new();
        assert!(q.push(&[&[b'a'; 40]]));
        let mut out = Vec::new();
        assert_eq!(q.drain(10, &mut |b| { out.extend_from_slice(b); b.len() }), (10, 30));
        assert_eq!(out.len(), 10);
        // A UART that takes 16 bytes and then reports its FIFO full.
        let mut fifo = 16;
        let left = q.drain(usize::MAX, &mut |b| {
            let n = b.len().min(fifo);
            fifo -= n;
            n
        });
        assert_eq!(left, (16, 14));
    }

    #[test]
    fn the_ring_wraps_and_keeps_order() {
        let mut q = TxQueue::<8>::new();
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| { out.extend_from_slice(b); b.len() };
        for chunk in [&b"abcde"[..], b"fgh", b"ijklm", b"n"] {
            assert!(q.push(&[chunk]));
            q.drain(3, &mut sink);
        }
        q.drain(usize::MAX, &mut sink);
        assert_eq!(&out[..], b"abcdefghijklmn");
    }
}

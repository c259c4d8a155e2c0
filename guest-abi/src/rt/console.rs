//! Console output for guests: `print!`/`println!` go through a line buffer to the
//! `console_write` hypercall, flushed at every newline and whenever the buffer is full.
//!
//! The shared buffer is taken with a try-lock. Whoever finds it taken (an exception or event
//! handler that interrupted a print, or a panic raised while formatting) prints through a
//! buffer of its own on the stack instead, so the panic and exception paths never wait.

use super::hc;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// Size of the shared line buffer.
pub const LINE_BYTES: usize = 256;
/// Size of the stack buffer used when the shared one is busy.
const FALLBACK_LINE_BYTES: usize = 128;

/// Collects bytes and hands them to a sink a line (or a full buffer) at a time.
pub struct LineBuffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuffer<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self { bytes: [0; N], len: 0 }
    }

    /// Bytes not yet handed to the sink.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends `data`, calling `sink` with the buffered bytes after each newline and whenever
    /// the buffer fills up.
    pub fn push(&mut self, mut data: &[u8], sink: &mut dyn FnMut(&[u8])) {
        while !data.is_empty() {
            let room = N - self.len;
            let line_end = data.iter().position(|&b| b == b'\n').map(|i| i + 1);
            let take = line_end.unwrap_or(data.len()).min(room);
            self.bytes[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.len == N || self.bytes[self.len - 1] == b'\n' {
                self.flush(sink);
            }
        }
    }

    /// Hands every buffered byte to `sink`.
    pub fn flush(&mut self, sink: &mut dyn FnMut(&[u8])) {
        if self.len > 0 {
            sink(&self.bytes[..self.len]);
            self.len = 0;
        }
    }
}

/// Writes all of `bytes` to the console, unbuffered. A short write (dom0's console takes
/// only what the serial line has room for) is continued after yielding the CPU so the line
/// can drain; an error drops the rest.
pub fn write_all(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match hc::console_write(bytes) {
            Ok(0) => {
                let _ = hc::yield_now();
            }
            Ok(n) if n <= bytes.len() => bytes = &bytes[n..],
            _ => return,
        }
    }
}

struct Writer<'a, const N: usize>(&'a mut LineBuffer<N>);

impl<const N: usize> fmt::Write for Writer<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push(s.as_bytes(), &mut write_all);
        Ok(())
    }
}

struct SharedLine {
    busy: AtomicBool,
    buf: UnsafeCell<LineBuffer<LINE_BYTES>>,
}

// SAFETY: `buf` is only touched by whoever set `busy` from false to true.
unsafe impl Sync for SharedLine {}

static LINE: SharedLine = SharedLine { busy: AtomicBool::new(false), buf: UnsafeCell::new(LineBuffer::new()) };

/// Runs `f` on the shared line buffer, or on a fresh stack buffer (flushed afterwards) when
/// the shared one is in use further down the stack.
fn with_line(f: impl FnOnce(&mut dyn fmt::Write)) {
    if LINE.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        // SAFETY: we own the buffer until we clear `busy` below.
        let buf = unsafe { &mut *LINE.buf.get() };
        f(&mut Writer(buf));
        LINE.busy.store(false, Ordering::Release);
    } else {
        let mut buf = LineBuffer::<FALLBACK_LINE_BYTES>::new();
        f(&mut Writer(&mut buf));
        buf.flush(&mut write_all);
    }
}

/// Prints formatted text (what `print!` expands to).
pub fn print_fmt(args: fmt::Arguments<'_>) {
    with_line(|w| {
        let _ = w.write_fmt(args);
    });
}

/// Prints formatted text and a newline as one unit (what `println!` expands to).
pub fn print_line(args: fmt::Arguments<'_>) {
    with_line(|w| {
        let _ = w.write_fmt(args);
        let _ = w.write_str("\n");
    });
}

/// Sends buffered bytes to the console now (a no-op if the buffer is in use further down the
/// stack).
pub fn flush() {
    if LINE.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        // SAFETY: we own the buffer until we clear `busy` below.
        let buf = unsafe { &mut *LINE.buf.get() };
        buf.flush(&mut write_all);
        LINE.busy.store(false, Ordering::Release);
    }
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::rt::console::print_fmt(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the guest console.
#[macro_export]
macro_rules! println {
    () => {
        $crate::rt::console::print_fmt(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::rt::console::print_line(::core::format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn run(pushes: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut buf = LineBuffer::<8>::new();
        let mut out = Vec::new();
        for p in pushes {
            buf.push(p, &mut |b| out.push(b.to_vec()));
        }
        (out, buf.pending().to_vec())
    }

    #[test]
    fn line_buffer_flushes_at_each_newline() {
        let (out, pending) = run(&[b"ab", b"c\nde\nf"]);
        assert_eq!(out, [b"abc\n".to_vec(), b"de\n".to_vec()]);
        assert_eq!(pending, b"f");
    }

    #[test]
    fn line_buffer_flushes_when_full() {
        let (out, pending) = run(&[b"0123456789abcdefXY"]);
        assert_eq!(out, [b"01234567".to_vec(), b"89abcdef".to_vec()]);
        assert_eq!(pending, b"XY");
    }

    #[test]
    fn line_buffer_keeps_partial_lines_until_flushed() {
        let mut buf = LineBuffer::<8>::new();
        let mut out = Vec::new();
        buf.push(b"abc", &mut |b| out.push(b.to_vec()));
        assert!(out.is_empty());
        buf.flush(&mut |b| out.push(b.to_vec()));
        buf.flush(&mut |b| out.push(b.to_vec()));
        assert_eq!(out, [b"abc".to_vec()]);
    }
}

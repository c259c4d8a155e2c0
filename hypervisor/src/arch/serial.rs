//! COM1, the hypervisor's console: `(hv)`-prefixed log lines (the `log` crate's backend),
//! dom0's console output and echoed guest lines, all through one transmit queue that is
//! moved to the UART without waiting for it; and the input bytes forwarded to dom0.

use crate::txqueue::{TX_QUEUE_BYTES, TxQueue};
use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550, Uart16550Tty};

const COM1_PORT: u16 = 0x3F8;
/// Longest log line; a longer one is cut.
const LOG_LINE_BYTES: usize = 384;

static COM1: Mutex<Option<Uart16550Tty<PioBackend>>> = Mutex::new(None);
/// Bytes waiting for the UART. Locked before COM1 wherever both are taken.
static TX: Mutex<TxQueue<TX_QUEUE_BYTES>> = Mutex::new(TxQueue::new());

/// Initializes COM1 at 115200 8N1 with FIFOs. Returns false if no UART answers (output is
/// then dropped). The driver's loopback self-test is not used: under Bochs it leaves a byte of
/// its test message in the receiver, which dom0 would read as typed input.
pub fn init() -> bool {
    let config = Config { baud_rate: BaudRate::Baud115200, ..Config::default() };
    // SAFETY: COM1 at 0x3F8 is the standard PC serial port and only this module drives it.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1_PORT) }) else { return false };
    if !uart.check_present() || uart.init(config).is_err() {
        return false;
    }
    let mut junk = [0u8; 64];
    while uart.receive_bytes(&mut junk) > 0 {}
    *COM1.lock() = Some(Uart16550Tty::from_inner(uart));
    true
}

fn with_port<R>(f: impl FnOnce(&mut Uart16550Tty<PioBackend>) -> R) -> Option<R> {
    COM1.lock().as_mut().map(f)
}

/// Queues `parts` as one piece for the serial line (a newline becomes CR LF); false, and
/// nothing queued, if the queue has no room for all of it. Never waits for the UART.
pub fn queue(parts: &[&[u8]]) -> bool {
    TX.lock().push(parts)
}

/// Moves up to `max_bytes` queued bytes to the UART, as many as its FIFO takes without
/// waiting; returns (bytes sent, bytes still queued).
pub fn drain(max_bytes: usize) -> (usize, usize) {
    let mut tx = TX.lock();
    let mut port = COM1.lock();
    match port.as_mut() {
        Some(p) => tx.drain(max_bytes, &mut |b| p.inner_mut().send_bytes(b)),
        // No UART: output is dropped.
        None => tx.drain(usize::MAX, &mut |b| b.len()),
    }
}

/// Sends everything queued, waiting for the UART (power-off, panics).
fn flush_blocking() {
    let mut tx = TX.lock();
    let mut port = COM1.lock();
    let _ = tx.drain(usize::MAX, &mut |b| match port.as_mut() {
        Some(p) => {
            p.inner_mut().send_bytes_exact(b);
            b.len()
        }
        None => b.len(),
    });
}

/// Returns one received byte, if any is waiting.
pub fn try_read_byte() -> Option<u8> {
    with_port(|p| p.inner_mut().try_receive_byte().ok()).flatten()
}

/// Writes formatted text on the path that must work even if the port lock was held when
/// the machine faulted (exception and panic reports).
pub fn emergency_write(args: fmt::Arguments<'_>) {
    // SAFETY: only called on the way to power-off from a fault or panic; whoever held the
    // locks will never run again, so breaking them cannot race with a live writer.
    unsafe {
        TX.force_unlock();
        COM1.force_unlock();
    }
    flush_blocking();
    with_port(|p| {
        let _ = p.write_fmt(args);
    });
}

/// Formats into a fixed buffer, cutting what does not fit.
struct LineWriter {
    buf: [u8; LOG_LINE_BYTES],
    len: usize,
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(LOG_LINE_BYTES - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        let mut line = LineWriter { buf: [0; LOG_LINE_BYTES], len: 0 };
        let _ = writeln!(line, "(hv) {level}{}", record.args());
        if line.len == LOG_LINE_BYTES {
            line.buf[LOG_LINE_BYTES - 1] = b'\n';
        }
        let bytes = &line.buf[..line.len];
        // The hypervisor's own lines wait for room rather than being lost: for as long as the
        // UART takes to send one line's worth.
        while !queue(&[bytes]) {
            let _ = drain(usize::MAX);
            core::hint::spin_loop();
        }
        let _ = drain(usize::MAX);
    }

    fn flush(&self) {}
}

/// Installs the `(hv)` logger at `level`.
pub fn init_logger(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

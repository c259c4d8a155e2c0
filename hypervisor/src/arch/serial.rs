//! COM1, the hypervisor's console: `(hv)`-prefixed log lines (the `log` crate's backend),
//! dom0's console output, and the input bytes forwarded to dom0.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550, Uart16550Tty};

const COM1_PORT: u16 = 0x3F8;

static COM1: Mutex<Option<Uart16550Tty<PioBackend>>> = Mutex::new(None);

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

/// Writes raw bytes (a guest's console output), turning `\n` into `\r\n`.
pub fn write_bytes(bytes: &[u8]) {
    with_port(|p| {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            match chunk.split_last() {
                Some((b'\n', head)) => {
                    p.inner_mut().send_bytes_exact(head);
                    p.inner_mut().send_bytes_exact(b"\r\n");
                }
                _ => p.inner_mut().send_bytes_exact(chunk),
            }
        }
    });
}

/// Returns one received byte, if any is waiting.
pub fn try_read_byte() -> Option<u8> {
    with_port(|p| p.inner_mut().try_receive_byte().ok()).flatten()
}

/// Writes formatted text on the path that must work even if the port lock was held when
/// the machine faulted (exception and panic reports).
pub fn emergency_write(args: fmt::Arguments<'_>) {
    // SAFETY: only called on the way to power-off from a fault or panic; whoever held the lock
    // will never run again, so breaking it cannot race with a live writer.
    unsafe { COM1.force_unlock() };
    with_port(|p| {
        let _ = p.write_fmt(args);
    });
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
        with_port(|p| {
            let _ = writeln!(p, "(hv) {level}{}", record.args());
        });
    }

    fn flush(&self) {}
}

/// Installs the `(hv)` logger at `level`.
pub fn init_logger(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

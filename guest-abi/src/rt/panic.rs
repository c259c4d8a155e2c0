//! What a guest panic does: print `guest panic: <msg> at <file>:<line>` and shut down with
//! [`super::EXIT_PANIC`]. `guest_main!` installs [`report`] as the panic handler.

use crate::println;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

static PANICKING: AtomicBool = AtomicBool::new(false);

/// Reports a panic and ends the domain. A panic while reporting one ends it silently.
pub fn report(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::AcqRel) {
        super::hc::shutdown(super::EXIT_PANIC);
    }
    super::console::flush();
    match info.location() {
        Some(at) => println!("guest panic: {} at {}:{}", info.message(), at.file(), at.line()),
        None => println!("guest panic: {} at <unknown>", info.message()),
    }
    super::exit(super::EXIT_PANIC)
}

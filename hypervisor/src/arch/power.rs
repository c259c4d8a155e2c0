//! Ending the machine: the last `(hv) power off:` line tells the runner the outcome, then the
//! emulator is stopped (QEMU's isa-debug-exit device, Bochs' shutdown port, ACPI S5).

use super::x86::{halt_forever, outb, outw};

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Normal power-off.
    Success,
    /// Panic, exception, or failed self-check.
    Failure,
}

/// QEMU `isa-debug-exit` port; writing `v` makes QEMU exit with status `2v + 1`.
pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xF4;
/// Value written for success: QEMU exits with 33.
pub const QEMU_EXIT_SUCCESS: u8 = 0x10;
/// Value written for failure: QEMU exits with 35.
pub const QEMU_EXIT_FAILURE: u8 = 0x11;
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
const ACPI_PM1A_CNT_PORTS: [u16; 2] = [0x604, 0xB004];
const ACPI_SLP_TYP_S5_EN: u16 = 0x2000;

/// Prints the outcome line and stops the machine.
pub fn power_off(status: ExitStatus) -> ! {
    let word = match status {
        ExitStatus::Success => "success",
        ExitStatus::Failure => "failure",
    };
    super::serial::emergency_write(format_args!("(hv) power off: {word}\r\n"));
    // SAFETY: these ports belong to the (emulated) platform's exit and power devices; writing
    // them is how the machine is switched off. On hardware without them the writes are ignored.
    unsafe {
        outb(QEMU_DEBUG_EXIT_PORT, if status == ExitStatus::Success { QEMU_EXIT_SUCCESS } else { QEMU_EXIT_FAILURE });
        for b in b"Shutdown" {
            outb(BOCHS_SHUTDOWN_PORT, *b);
        }
        for port in ACPI_PM1A_CNT_PORTS {
            outw(port, ACPI_SLP_TYP_S5_EN);
        }
    }
    halt_forever()
}

//! The PC platform the hypervisor emulates for a guest kernel that expects one (an
//! unmodified Linux): a local APIC in x2APIC mode with its timer, the 8259 pair, a 16550A
//! UART on COM1, and the legacy ports a kernel probes. All of it is one value per domain,
//! so freezing, cloning and saving a domain carry its devices with it.
//!
//! This module is the device bus: the exit handlers hand it every port access and MSR of a
//! PC domain, and it answers or says the access is not its own. Interrupt arbitration
//! (APIC first, then the 8259 through LINT0 in ExtINT mode) is here too; when to inject and
//! how is the hypervisor core's business. See `docs/pc-platform.md`.

pub mod lapic;
pub mod pic;
pub mod ports;
pub mod state;
pub mod uart;
#[cfg(test)]
mod tests;

pub use lapic::{ApicFault, Lapic, TimerMode};
pub use pic::Pic;
pub use ports::{LegacyPorts, PortEffect};
pub use state::{PC_STATE_BYTES, PcStateError};
pub use uart::{Uart, UartOutput};

use crate::msr;

/// What a port write made happen outside the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEffect {
    None,
    /// A byte for the domain's console.
    Console(u8),
    /// The guest reset the machine.
    Reset,
}

/// The devices of one PC domain.
#[derive(Clone, Copy, Debug, Default)]
pub struct PcPlatform {
    pub lapic: Lapic,
    pub pic: Pic,
    pub uart: Uart,
    pub ports: LegacyPorts,
}

impl PcPlatform {
    /// Devices as firmware leaves them.
    pub const fn new() -> Self {
        Self { lapic: Lapic::new(), pic: Pic::new(), uart: Uart::new(), ports: ports::RESET }
    }

    /// Whether a device on the bus answers `port`.
    pub fn claims_port(port: u16) -> bool {
        Uart::claims(port) || Pic::claims(port) || LegacyPorts::claims(port)
    }

    fn sync_uart_line(&mut self) {
        self.pic.set_line(uart::COM1_IRQ, self.uart.irq_line());
    }

    /// A port read of `size` bytes (the low byte answers; wider reads of these byte-wide
    /// devices see the rest float high). `None`: no device here.
    pub fn io_read(&mut self, port: u16, size: u8, guest_secs: u64) -> Option<u32> {
        let b = if Uart::claims(port) {
            let b = self.uart.read(port - uart::COM1_BASE);
            self.sync_uart_line();
            b
        } else if Pic::claims(port) {
            self.pic.read(port)
        } else if LegacyPorts::claims(port) {
            self.ports.read(port, guest_secs)
        } else {
            return None;
        };
        let high = match size {
            1 => 0,
            2 => 0xFF00,
            _ => 0xFFFF_FF00,
        };
        Some(high | u32::from(b))
    }

    /// A port write (the low byte counts). `None`: no device here.
    pub fn io_write(&mut self, port: u16, value: u32) -> Option<IoEffect> {
        let b = value as u8;
        if Uart::claims(port) {
            let out = self.uart.write(port - uart::COM1_BASE, b);
            self.sync_uart_line();
            return Some(match out {
                UartOutput::Byte(c) => IoEffect::Console(c),
                UartOutput::None => IoEffect::None,
            });
        }
        if Pic::claims(port) {
            self.pic.write(port, b);
            return Some(IoEffect::None);
        }
        if LegacyPorts::claims(port) {
            return Some(match self.ports.write(port, b) {
                PortEffect::Reset => IoEffect::Reset,
                PortEffect::None => IoEffect::None,
            });
        }
        None
    }

    /// Whether `index` is an MSR of the platform (the APIC's).
    pub fn claims_msr(index: u32) -> bool {
        matches!(index, msr::IA32_APIC_BASE | lapic::TSC_DEADLINE_MSR | lapic::X2APIC_MSR_FIRST..=lapic::X2APIC_MSR_LAST)
    }

    /// RDMSR of a platform MSR at guest TSC `now`. The x2APIC registers fault: the APIC is
    /// in xAPIC mode (CPUID does not offer x2APIC).
    pub fn msr_read(&self, index: u32, _now: u64) -> Result<u64, ApicFault> {
        match index {
            msr::IA32_APIC_BASE => Ok(lapic::APIC_BASE_VALUE),
            lapic::TSC_DEADLINE_MSR => Ok(self.lapic.read_tsc_deadline()),
            _ => Err(ApicFault::Reserved),
        }
    }

    /// WRMSR of a platform MSR at guest TSC `now`. The APIC stays enabled at its address in
    /// xAPIC mode: a write of IA32_APIC_BASE that changes anything but the BSP flag is refused.
    pub fn msr_write(&mut self, index: u32, value: u64, _now: u64) -> Result<(), ApicFault> {
        match index {
            msr::IA32_APIC_BASE => {
                if (value ^ lapic::APIC_BASE_VALUE) & !(1 << 8) == 0 { Ok(()) } else { Err(ApicFault::BadValue) }
            }
            lapic::TSC_DEADLINE_MSR => {
                self.lapic.write_tsc_deadline(value);
                Ok(())
            }
            _ => Err(ApicFault::Reserved),
        }
    }

    /// Whether `gpa` lies in an emulated device's MMIO range (the APIC page).
    pub fn claims_mmio(gpa: u64) -> bool {
        (lapic::APIC_MMIO_BASE..lapic::APIC_MMIO_BASE + lapic::APIC_MMIO_BYTES).contains(&gpa)
    }

    /// A 32-bit MMIO read at `gpa` (claimed by [`Self::claims_mmio`]).
    pub fn mmio_read(&self, gpa: u64, now: u64) -> u32 {
        self.lapic.mmio_read((gpa - lapic::APIC_MMIO_BASE) as u32, now)
    }

    /// A 32-bit MMIO write at `gpa`.
    pub fn mmio_write(&mut self, gpa: u64, value: u32, now: u64) {
        self.lapic.mmio_write((gpa - lapic::APIC_MMIO_BASE) as u32, value, now);
    }

    /// Bytes typed for the guest; returns how many the UART took.
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        let n = self.uart.receive(bytes);
        self.sync_uart_line();
        n
    }

    /// Advances the timer to guest TSC `now`.
    pub fn tick(&mut self, now: u64) {
        self.lapic.tick(now);
    }

    /// Guest TSC at which the timer needs attention next.
    pub fn next_timer(&self) -> Option<u64> {
        self.lapic.next_expiry()
    }

    /// Whether an interrupt waits for the CPU.
    pub fn interrupt_pending(&self) -> bool {
        self.lapic.deliverable().is_some() || (self.lapic.extint_open() && self.pic.has_pending())
    }

    /// The CPU takes the next interrupt: its vector, acknowledged at its controller.
    pub fn take_interrupt(&mut self) -> Option<u8> {
        if let Some(v) = self.lapic.deliverable() {
            self.lapic.acknowledge(v);
            return Some(v);
        }
        if self.lapic.extint_open() {
            return self.pic.acknowledge();
        }
        None
    }
}

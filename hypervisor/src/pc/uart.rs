//! A 16550A UART (COM1 at 0x3F8, IRQ 4): the registers Linux's 8250 driver probes and uses
//! (divisor latch, FIFO control, the interrupt identification and its priorities, line and
//! modem status, loopback, scratch), transmitting each byte at once to the domain's console
//! and receiving what dom0 types into it. Its interrupt line goes to the 8259.
//!
//! National Semiconductor PC16550D datasheet; register offsets as in Linux's serial_reg.h.

/// COM1's base port and ISA interrupt.
pub const COM1_BASE: u16 = 0x3F8;
pub const COM1_IRQ: u8 = 4;
/// Bytes waiting to be read that the receiver holds (more than a real 16550's 16-byte
/// FIFO, so a pasted line is not lost while the guest is slow to drain it).
pub const RX_BUFFER_BYTES: usize = 256;

const IER_RDI: u8 = 1 << 0;
const IER_THRI: u8 = 1 << 1;
const IIR_NO_INT: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_FIFO_ENABLED: u8 = 0xC0;
const LCR_DLAB: u8 = 1 << 7;
const LSR_DR: u8 = 1 << 0;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
const MCR_LOOP: u8 = 1 << 4;
/// IER and MCR bits a write keeps.
pub(super) const IER_WRITABLE: u8 = 0x0F;
pub(super) const MCR_WRITABLE: u8 = 0x1F;
/// Modem status with the line up: carrier, data set ready, clear to send.
const MSR_LINE_UP: u8 = 0xB0;

/// What a register write asks of the outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartOutput {
    None,
    /// A byte went out on the line (to the domain's console).
    Byte(u8),
}

/// The UART.
#[derive(Clone, Copy, Debug)]
pub struct Uart {
    pub(super) ier: u8,
    pub(super) lcr: u8,
    pub(super) mcr: u8,
    pub(super) scr: u8,
    pub(super) dll: u8,
    pub(super) dlm: u8,
    pub(super) fifo_enabled: bool,
    /// The transmitter emptied and the guest has not yet seen the THRE interrupt.
    pub(super) thre_pending: bool,
    pub(super) rx: [u8; RX_BUFFER_BYTES],
    pub(super) rx_head: u16,
    pub(super) rx_len: u16,
}

impl Default for Uart {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart {
    pub const fn new() -> Self {
        Self {
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 12,
            dlm: 0,
            fifo_enabled: false,
            thre_pending: false,
            rx: [0; RX_BUFFER_BYTES],
            rx_head: 0,
            rx_len: 0,
        }
    }

    /// Whether `port` is one of its eight registers.
    pub fn claims(port: u16) -> bool {
        (COM1_BASE..COM1_BASE + 8).contains(&port)
    }

    /// Its interrupt output.
    pub fn irq_line(&self) -> bool {
        self.interrupt_id() != IIR_NO_INT
    }

    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RDI != 0 && self.rx_len > 0 {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thre_pending {
            IIR_THRI
        } else {
            IIR_NO_INT
        }
    }

    /// Room for received bytes.
    pub fn rx_room(&self) -> usize {
        RX_BUFFER_BYTES - usize::from(self.rx_len)
    }

    /// Bytes waiting for the guest to read.
    pub fn rx_waiting(&self) -> usize {
        usize::from(self.rx_len)
    }

    /// Receives bytes from the line; returns how many fit.
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.rx_room());
        for &b in &bytes[..n] {
            self.push_rx(b);
        }
        n
    }

    fn push_rx(&mut self, b: u8) {
        if usize::from(self.rx_len) == RX_BUFFER_BYTES {
            return;
        }
        let tail = (usize::from(self.rx_head) + usize::from(self.rx_len)) % RX_BUFFER_BYTES;
        self.rx[tail] = b;
        self.rx_len += 1;
    }

    fn pop_rx(&mut self) -> u8 {
        if self.rx_len == 0 {
            return 0;
        }
        let b = self.rx[usize::from(self.rx_head)];
        self.rx_head = ((usize::from(self.rx_head) + 1) % RX_BUFFER_BYTES) as u16;
        self.rx_len -= 1;
        b
    }

    /// Reads register `offset` (0-7).
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll,
            0 => self.pop_rx(),
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let id = self.interrupt_id();
                if id == IIR_THRI {
                    self.thre_pending = false;
                }
                id | if self.fifo_enabled { IIR_FIFO_ENABLED } else { 0 }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_THRE | LSR_TEMT | if self.rx_len > 0 { LSR_DR } else { 0 },
            6 => {
                if self.mcr & MCR_LOOP != 0 {
                    // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                    let m = self.mcr;
                    (m & 0x01) << 5 | (m & 0x02) << 3 | (m & 0x04) << 4 | (m & 0x08) << 4
                } else {
                    MSR_LINE_UP
                }
            }
            _ => self.scr,
        }
    }

    /// Writes register `offset` (0-7).
    pub fn write(&mut self, offset: u16, v: u8) -> UartOutput {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll = v,
            0 => {
                // The byte leaves at once; the holding register is empty again.
                self.thre_pending = true;
                if self.mcr & MCR_LOOP != 0 {
                    self.push_rx(v);
                } else {
                    return UartOutput::Byte(v);
                }
            }
            1 if dlab => self.dlm = v,
            1 => {
                let was = self.ier;
                self.ier = v & IER_WRITABLE;
                // Enabling THRE interrupts with the transmitter empty raises one at once.
                if was & IER_THRI == 0 && self.ier & IER_THRI != 0 {
                    self.thre_pending = true;
                }
            }
            2 => {
                self.fifo_enabled = v & 0x01 != 0;
                if v & 0x02 != 0 {
                    self.rx_head = 0;
                    self.rx_len = 0;
                }
            }
            3 => self.lcr = v,
            4 => self.mcr = v & MCR_WRITABLE,
            5 | 6 => {}
            _ => self.scr = v,
        }
        UartOutput::None
    }
}

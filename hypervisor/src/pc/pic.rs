//! The two cascaded 8259A interrupt controllers of a PC (master at 0x20, slave at 0xA0 on
//! the master's IRQ 2): initialization words, masks, edge-triggered request latching,
//! priorities, specific and non-specific EOI, auto-EOI, and IRR/ISR reads. Their output
//! reaches the CPU through the local APIC's LINT0 in ExtINT mode.
//!
//! Intel 8259A datasheet (order 231468); the cascade wiring is the IBM PC/AT's.

/// Master command and data ports.
pub const MASTER_CMD: u16 = 0x20;
pub const MASTER_DATA: u16 = 0x21;
/// Slave command and data ports.
pub const SLAVE_CMD: u16 = 0xA0;
pub const SLAVE_DATA: u16 = 0xA1;
/// Edge/level control registers (written by some kernels; level mode is not modelled).
pub const ELCR_MASTER: u16 = 0x4D0;
pub const ELCR_SLAVE: u16 = 0x4D1;
/// ELCR bits each chip keeps: IRQs 0-2 and 8, 13 are edge-only on the PC.
pub(super) const ELCR_MASTER_WRITABLE: u8 = 0xF8;
pub(super) const ELCR_SLAVE_WRITABLE: u8 = 0xDE;
/// ICW2 keeps the vector base's top five bits.
pub(super) const VECTOR_BASE_MASK: u8 = 0xF8;
/// The master input the slave is wired to.
const CASCADE_IRQ: u8 = 2;

/// Where in the initialization sequence a chip is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Init {
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Clone, Copy, Debug)]
pub struct Chip {
    pub(super) irr: u8,
    pub(super) isr: u8,
    pub(super) imr: u8,
    /// Input line levels, for edge detection.
    pub(super) lines: u8,
    pub(super) vector_base: u8,
    pub(super) init: Init,
    pub(super) icw4_needed: bool,
    pub(super) single: bool,
    pub(super) auto_eoi: bool,
    /// OCW3 read-register select: ISR instead of IRR.
    pub(super) read_isr: bool,
    /// Lowest priority input (rotation; priority starts after it).
    pub(super) lowest: u8,
    pub(super) elcr: u8,
}

impl Chip {
    const fn new(vector_base: u8) -> Self {
        Self {
            irr: 0,
            isr: 0,
            imr: 0xFF,
            lines: 0,
            vector_base,
            init: Init::Ready,
            icw4_needed: false,
            single: false,
            auto_eoi: false,
            read_isr: false,
            lowest: 7,
            elcr: 0,
        }
    }

    /// Sets input `irq`'s level; a rising edge latches a request.
    fn set_line(&mut self, irq: u8, high: bool) {
        let bit = 1 << irq;
        if high && self.lines & bit == 0 {
            self.irr |= bit;
        }
        if high {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// Inputs in priority order, highest first.
    fn by_priority(&self) -> impl Iterator<Item = u8> {
        let start = (self.lowest + 1) & 7;
        (0..8).map(move |i| (start + i) & 7)
    }

    /// The request this chip would raise now (unmasked, above everything in service).
    /// `cascade_pending`: the slave has one (it arrives on input 2).
    fn pending(&self, cascade_pending: bool) -> Option<u8> {
        let mut irr = self.irr & !self.imr;
        if cascade_pending {
            irr |= 1 << CASCADE_IRQ;
        }
        for irq in self.by_priority() {
            let bit = 1 << irq;
            if self.isr & bit != 0 {
                return None;
            }
            if irr & bit != 0 {
                return Some(irq);
            }
        }
        None
    }

    fn acknowledge(&mut self, irq: u8) {
        let bit = 1 << irq;
        self.irr &= !bit;
        if !self.auto_eoi {
            self.isr |= bit;
        }
    }

    fn highest_in_service(&self) -> Option<u8> {
        self.by_priority().find(|&irq| self.isr & 1 << irq != 0)
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1: start initialization; IMR and ISR clear, IRQ 7 lowest.
            self.init = Init::Icw2;
            self.icw4_needed = v & 0x01 != 0;
            self.single = v & 0x02 != 0;
            self.imr = 0;
            self.isr = 0;
            self.irr = 0;
            self.lowest = 7;
            self.read_isr = false;
            self.auto_eoi = false;
        } else if v & 0x08 != 0 {
            // OCW3: register select (special mask and poll are not modelled).
            if v & 0x02 != 0 {
                self.read_isr = v & 0x01 != 0;
            }
        } else {
            // OCW2: end of interrupt and rotation.
            let level = v & 0x07;
            match v >> 5 {
                0b001 => {
                    if let Some(irq) = self.highest_in_service() {
                        self.isr &= !(1 << irq);
                    }
                }
                0b011 => self.isr &= !(1 << level),
                0b101 => {
                    if let Some(irq) = self.highest_in_service() {
                        self.isr &= !(1 << irq);
                        self.lowest = irq;
                    }
                }
                0b111 => {
                    self.isr &= !(1 << level);
                    self.lowest = level;
                }
                0b110 => self.lowest = level,
                _ => {}
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.init {
            Init::Ready => self.imr = v,
            Init::Icw2 => {
                self.vector_base = v & VECTOR_BASE_MASK;
                self.init = if !self.single {
                    Init::Icw3
                } else if self.icw4_needed {
                    Init::Icw4
                } else {
                    Init::Ready
                };
            }
            Init::Icw3 => self.init = if self.icw4_needed { Init::Icw4 } else { Init::Ready },
            Init::Icw4 => {
                self.auto_eoi = v & 0x02 != 0;
                self.init = Init::Ready;
            }
        }
    }

    fn read_command(&self) -> u8 {
        if self.read_isr { self.isr } else { self.irr }
    }
}

/// The master/slave pair.
#[derive(Clone, Copy, Debug)]
pub struct Pic {
    pub(super) master: Chip,
    pub(super) slave: Chip,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// Both chips as the BIOS leaves them: vectors 0x08 and 0x70, everything masked.
    pub const fn new() -> Self {
        Self { master: Chip::new(0x08), slave: Chip::new(0x70) }
    }

    /// Sets ISA interrupt line `irq` (0-15) high or low.
    pub fn set_line(&mut self, irq: u8, high: bool) {
        match irq {
            0..=7 => self.master.set_line(irq, high),
            8..=15 => self.slave.set_line(irq - 8, high),
            _ => {}
        }
    }

    /// Whether the pair asks for an interrupt (INTR high).
    pub fn has_pending(&self) -> bool {
        self.master.pending(self.slave.pending(false).is_some()).is_some()
    }

    /// The CPU acknowledges INTR: the vector of the highest pending request, moved into
    /// service. `None` if nothing is pending (the caller asked without checking).
    pub fn acknowledge(&mut self) -> Option<u8> {
        let slave_irq = self.slave.pending(false);
        let irq = self.master.pending(slave_irq.is_some())?;
        self.master.acknowledge(irq);
        if irq == CASCADE_IRQ {
            if let Some(s) = slave_irq {
                self.slave.acknowledge(s);
                return Some(self.slave.vector_base | s);
            }
        }
        Some(self.master.vector_base | irq)
    }

    /// A port the pair answers.
    pub fn claims(port: u16) -> bool {
        matches!(port, MASTER_CMD | MASTER_DATA | SLAVE_CMD | SLAVE_DATA | ELCR_MASTER | ELCR_SLAVE)
    }

    pub fn read(&self, port: u16) -> u8 {
        match port {
            MASTER_CMD => self.master.read_command(),
            MASTER_DATA => self.master.imr,
            SLAVE_CMD => self.slave.read_command(),
            SLAVE_DATA => self.slave.imr,
            ELCR_MASTER => self.master.elcr,
            ELCR_SLAVE => self.slave.elcr,
            _ => 0xFF,
        }
    }

    pub fn write(&mut self, port: u16, v: u8) {
        match port {
            MASTER_CMD => self.master.write_command(v),
            MASTER_DATA => self.master.write_data(v),
            SLAVE_CMD => self.slave.write_command(v),
            SLAVE_DATA => self.slave.write_data(v),
            // IRQs 0-2 and 8, 13 are edge-only on the PC.
            ELCR_MASTER => self.master.elcr = v & ELCR_MASTER_WRITABLE,
            ELCR_SLAVE => self.slave.elcr = v & ELCR_SLAVE_WRITABLE,
            _ => {}
        }
    }

    /// (master, slave) interrupt masks.
    pub fn masks(&self) -> (u8, u8) {
        (self.master.imr, self.slave.imr)
    }
}

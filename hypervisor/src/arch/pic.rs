//! The legacy 8259 interrupt controllers. Firmware leaves them delivering the PIT tick on
//! vector 8 (which would look like a double fault); they are moved to vectors 0x20-0x2F and
//! masked, so only the local APIC interrupts the hypervisor.

use super::x86::{inb, outb};

const MASTER_COMMAND: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_COMMAND: u16 = 0xA0;
const SLAVE_DATA: u16 = 0xA1;
/// First vector of the master PIC after remapping.
pub const MASTER_VECTOR_BASE: u8 = 0x20;
/// First vector of the slave PIC after remapping.
pub const SLAVE_VECTOR_BASE: u8 = 0x28;

/// Remaps both PICs away from the exception vectors and masks every line.
pub fn disable() {
    // SAFETY: ports 0x20/0x21/0xA0/0xA1 are the standard PC interrupt controllers; the ICW
    // sequence below is the architected initialization, and nothing else drives them.
    unsafe {
        outb(MASTER_COMMAND, 0x11); // ICW1: edge, cascade, ICW4 follows
        outb(SLAVE_COMMAND, 0x11);
        outb(MASTER_DATA, MASTER_VECTOR_BASE); // ICW2: vector base
        outb(SLAVE_DATA, SLAVE_VECTOR_BASE);
        outb(MASTER_DATA, 4); // ICW3: slave on IRQ2
        outb(SLAVE_DATA, 2);
        outb(MASTER_DATA, 1); // ICW4: 8086 mode
        outb(SLAVE_DATA, 1);
        outb(MASTER_DATA, 0xFF);
        outb(SLAVE_DATA, 0xFF);
        let _ = inb(MASTER_DATA);
    }
}

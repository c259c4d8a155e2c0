//! Host tests of the emulated PC devices, each pinning one behaviour a guest kernel relies on.

use super::lapic::{APIC_BASE_VALUE, TSC_DEADLINE_MSR};
use super::*;

const SVR: u32 = 0x80F;
const EOI: u32 = 0x80B;
const TPR: u32 = 0x808;
const LVT_TIMER: u32 = 0x832;
const LINT0: u32 = 0x835;
const TMICT: u32 = 0x838;
const TMCCT: u32 = 0x839;
const TDCR: u32 = 0x83E;
/// The interrupt command register (low half in the xAPIC page).
const ICR: u32 = 0x830;

/// Writes APIC register `msr` (its x2APIC number) through the xAPIC page, as Linux does.
fn apic_w(pc: &mut PcPlatform, msr: u32, value: u64, now: u64) {
    pc.mmio_write(lapic::APIC_MMIO_BASE + (u64::from(msr - 0x800) << 4), value as u32, now);
}

fn apic_r(pc: &PcPlatform, msr: u32, now: u64) -> u64 {
    u64::from(pc.mmio_read(lapic::APIC_MMIO_BASE + (u64::from(msr - 0x800) << 4), now))
}

fn enabled_pc() -> PcPlatform {
    let mut pc = PcPlatform::new();
    apic_w(&mut pc, SVR, 0x1FF, 0);
    pc
}

/// Linux's 8259 initialization: vectors 0x30/0x38, cascade on 2, 8086 mode.
fn init_pic(pc: &mut PcPlatform) {
    for (port, v) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0xA0, 0x11), (0xA1, 0x38), (0xA1, 0x02), (0xA1, 0x01)] {
        pc.io_write(port, v).unwrap();
    }
}

#[test]
fn tsc_deadline_fires_once_at_its_deadline_and_disarms() {
    let mut pc = enabled_pc();
    apic_w(&mut pc, LVT_TIMER, 0x4_00EC, 0);
    pc.msr_write(TSC_DEADLINE_MSR, 1000, 0).unwrap();
    assert_eq!(pc.next_timer(), Some(1000));
    pc.tick(999);
    assert!(!pc.interrupt_pending());
    pc.tick(1000);
    assert_eq!(pc.take_interrupt(), Some(0xEC));
    assert_eq!(pc.next_timer(), None);
    assert_eq!(pc.msr_read(TSC_DEADLINE_MSR, 1001), Ok(0));
}

#[test]
fn a_deadline_written_outside_deadline_mode_is_ignored() {
    let mut pc = enabled_pc();
    apic_w(&mut pc, LVT_TIMER, 0xEC, 0);
    pc.msr_write(TSC_DEADLINE_MSR, 1000, 0).unwrap();
    assert_eq!(pc.next_timer(), None);
}

#[test]
fn periodic_timer_reloads_and_counts_down_by_the_divisor() {
    let mut pc = enabled_pc();
    apic_w(&mut pc, TDCR, 0b0011, 0); // divide by 16
    apic_w(&mut pc, LVT_TIMER, 0x1_0000 >> 16 << 17 | 0xEF, 0);
    apic_w(&mut pc, TMICT, 100, 0);
    assert_eq!(pc.next_timer(), Some(1600));
    assert_eq!(apic_r(&pc, TMCCT, 800), 50);
    pc.tick(1600);
    assert_eq!(pc.take_interrupt(), Some(0xEF));
    assert_eq!(pc.next_timer(), Some(3200));
    // A long gap gives one interrupt, not a burst.
    apic_w(&mut pc, EOI, 0, 0);
    pc.tick(10_000);
    assert_eq!(pc.take_interrupt(), Some(0xEF));
    assert_eq!(pc.take_interrupt(), None);
    assert!(pc.next_timer().unwrap() > 10_000);
}

#[test]
fn in_service_vector_blocks_equal_class_until_eoi() {
    let mut pc = enabled_pc();
    apic_w(&mut pc, ICR, 0x4_0000 | 0x41, 0);
    assert_eq!(pc.take_interrupt(), Some(0x41));
    apic_w(&mut pc, ICR, 0x4_0000 | 0x42, 0);
    assert_eq!(pc.take_interrupt(), None, "same priority class as the one in service");
    apic_w(&mut pc, ICR, 0x4_0000 | 0x51, 0);
    assert_eq!(pc.take_interrupt(), Some(0x51), "a higher class preempts");
    apic_w(&mut pc, EOI, 0, 0);
    apic_w(&mut pc, EOI, 0, 0);
    assert_eq!(pc.take_interrupt(), Some(0x42));
}

#[test]
fn task_priority_holds_back_lower_classes() {
    let mut pc = enabled_pc();
    apic_w(&mut pc, TPR, 0x50, 0);
    apic_w(&mut pc, ICR, 0x4_0000 | 0x45, 0);
    assert!(!pc.interrupt_pending());
    apic_w(&mut pc, TPR, 0x00, 0);
    assert_eq!(pc.take_interrupt(), Some(0x45));
}

#[test]
fn x2apic_semantics_refuse_nonzero_eoi_reserved_registers_and_reads_of_write_only_ones() {
    let mut l = Lapic::new();
    assert_eq!(l.write(EOI, 1, 0), Err(ApicFault::BadValue));
    assert_eq!(l.read(EOI, 0), Err(ApicFault::WrongDirection));
    assert_eq!(l.read(0x801, 0), Err(ApicFault::Reserved));
    assert_eq!(l.write(0x802, 5, 0), Err(ApicFault::WrongDirection));
    assert_eq!(l.write(TPR, 1 << 40, 0), Err(ApicFault::BadValue));
}

#[test]
fn the_apic_stays_in_xapic_mode_and_its_x2apic_msrs_fault() {
    let mut pc = PcPlatform::new();
    assert_eq!(pc.msr_read(0x1B, 0), Ok(APIC_BASE_VALUE));
    assert_eq!(pc.msr_write(0x1B, APIC_BASE_VALUE, 0), Ok(()));
    assert_eq!(pc.msr_write(0x1B, APIC_BASE_VALUE | 1 << 10, 0), Err(ApicFault::BadValue));
    assert!(pc.msr_read(SVR, 0).is_err());
    assert!(pc.msr_write(EOI, 0, 0).is_err());
}

#[test]
fn xapic_page_has_id_version_icr_halves_and_ignores_reserved_registers() {
    let mut pc = enabled_pc();
    assert_eq!(pc.mmio_read(0xFEE0_0020, 0), 0, "APIC id 0");
    assert_eq!(pc.mmio_read(0xFEE0_0030, 0), 0x0005_0014);
    pc.mmio_write(0xFEE0_0310, 0, 0);
    pc.mmio_write(0xFEE0_0300, 0x4061, 0); // fixed, vector 0x61, to APIC 0
    assert_eq!(pc.take_interrupt(), Some(0x61));
    pc.mmio_write(0xFEE0_0040, 7, 0);
    assert_eq!(pc.mmio_read(0xFEE0_0040, 0), 0);
    pc.mmio_write(0xFEE0_00B0, 0x1234, 0); // any EOI value
    assert_eq!(pc.lapic.pending_bits().1, lapic::VectorBits::default());
}

#[test]
fn a_software_disabled_apic_masks_its_lvt_entries() {
    let mut pc = PcPlatform::new();
    apic_w(&mut pc, LVT_TIMER, 0x4_00EC, 0);
    assert_eq!(apic_r(&pc, LVT_TIMER, 0) & 1 << 16, 1 << 16);
}

#[test]
fn pic_mask_reads_back_as_linux_probes_it() {
    let mut pc = PcPlatform::new();
    pc.io_write(0x21, 0xFB).unwrap();
    assert_eq!(pc.io_read(0x21, 1, 0), Some(0xFB));
}

#[test]
fn uart_interrupt_reaches_the_cpu_through_the_8259_and_lint0_extint() {
    let mut pc = enabled_pc();
    init_pic(&mut pc);
    pc.io_write(0x21, !(1 << 4)).unwrap();
    pc.io_write(0x3F9, 0x01).unwrap(); // IER: receive interrupts
    pc.receive(b"x");
    assert!(!pc.interrupt_pending(), "LINT0 is still masked");
    apic_w(&mut pc, LINT0, 0x700, 0);
    assert_eq!(pc.take_interrupt(), Some(0x34));
    assert_eq!(pc.io_read(0x3FA, 1, 0).map(|v| v & 0x0F), Some(0x04));
    assert_eq!(pc.io_read(0x3F8, 1, 0), Some(u32::from(b'x')));
    pc.io_write(0x20, 0x64).unwrap(); // specific EOI, IRQ 4
    assert!(!pc.interrupt_pending());
    pc.receive(b"y");
    assert_eq!(pc.take_interrupt(), Some(0x34), "a new byte is a new edge");
}

#[test]
fn slave_interrupts_cascade_through_master_irq2() {
    let mut pc = enabled_pc();
    init_pic(&mut pc);
    apic_w(&mut pc, LINT0, 0x700, 0);
    pc.io_write(0x21, 0xFB).unwrap();
    pc.io_write(0xA1, 0xFE).unwrap();
    pc.pic.set_line(8, true);
    assert_eq!(pc.take_interrupt(), Some(0x38));
}

#[test]
fn uart_reasserts_thre_when_its_interrupt_is_enabled_again() {
    // Linux's UART_BUG_THRE probe: enable THRI, read IIR, disable, enable, read IIR again.
    let mut pc = PcPlatform::new();
    pc.io_write(0x3F9, 0x02).unwrap();
    let iir1 = pc.io_read(0x3FA, 1, 0).unwrap();
    pc.io_write(0x3F9, 0x00).unwrap();
    pc.io_write(0x3F9, 0x02).unwrap();
    let iir2 = pc.io_read(0x3FA, 1, 0).unwrap();
    assert_eq!((iir1 & 0x0F, iir2 & 0x0F), (0x02, 0x02));
    assert_eq!(pc.io_read(0x3FA, 1, 0).unwrap() & 0x0F, 0x01, "reading IIR cleared THRE");
}

#[test]
fn uart_looks_like_a_16550a_with_fifos_and_a_working_loopback() {
    let mut pc = PcPlatform::new();
    pc.io_write(0x3FF, 0xA5).unwrap();
    assert_eq!(pc.io_read(0x3FF, 1, 0), Some(0xA5));
    pc.io_write(0x3FA, 0x01).unwrap();
    assert_eq!(pc.io_read(0x3FA, 1, 0).unwrap() >> 6, 0b11);
    pc.io_write(0x3FC, 0x1A).unwrap(); // loop | RTS | OUT2
    assert_eq!(pc.io_read(0x3FE, 1, 0).unwrap() & 0xF0, 0x90);
    assert_eq!(pc.io_write(0x3F8, u32::from(b'z')), Some(IoEffect::None), "looped back, not sent");
    assert_eq!(pc.io_read(0x3F8, 1, 0), Some(u32::from(b'z')));
    pc.io_write(0x3FC, 0x0B).unwrap();
    assert_eq!(pc.io_write(0x3F8, u32::from(b'q')), Some(IoEffect::Console(b'q')));
    assert_eq!(pc.io_read(0x3FD, 1, 0).unwrap() & 0x60, 0x60);
}

#[test]
fn divisor_latch_does_not_disturb_data_registers() {
    let mut pc = PcPlatform::new();
    pc.io_write(0x3FB, 0x80).unwrap();
    pc.io_write(0x3F8, 1).unwrap();
    pc.io_write(0x3F9, 0).unwrap();
    assert_eq!(pc.io_read(0x3F8, 1, 0), Some(1));
    pc.io_write(0x3FB, 0x03).unwrap();
    assert_eq!(pc.io_read(0x3F9, 1, 0), Some(0));
}

#[test]
fn receive_buffer_refuses_what_does_not_fit() {
    let mut pc = PcPlatform::new();
    let big = [b'a'; uart::RX_BUFFER_BYTES + 10];
    assert_eq!(pc.receive(&big), uart::RX_BUFFER_BYTES);
    assert_eq!(pc.receive(b"b"), 0);
}

#[test]
fn keyboard_controller_reset_command_resets_the_machine() {
    let mut pc = PcPlatform::new();
    assert_eq!(pc.io_read(0x64, 1, 0).unwrap() & 0x02, 0, "input buffer empty");
    assert_eq!(pc.io_write(0x64, 0xFE), Some(IoEffect::Reset));
    assert_eq!(pc.io_write(0x92, 0x01), Some(IoEffect::Reset));
}

#[test]
fn pit_channel_2_reads_zero_so_fast_calibration_gives_up() {
    let mut pc = PcPlatform::new();
    assert_eq!(pc.io_read(0x42, 1, 0), Some(0));
    let a = pc.io_read(0x61, 1, 0).unwrap();
    let b = pc.io_read(0x61, 1, 0).unwrap();
    assert_ne!(a & 0x10, b & 0x10, "refresh toggles");
}

#[test]
fn cmos_clock_counts_the_domains_time_in_bcd() {
    // 2026-01-01 00:00:00 plus one day, one hour, one minute and one second.
    let s = ports::CMOS_EPOCH_SECS + 86_400 + 3_661;
    assert_eq!(
        [0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32].map(|r| ports::cmos_register(r, s)),
        [0x01, 0x01, 0x01, 0x02, 0x01, 0x26, 0x20]
    );
    assert_eq!(ports::cmos_register(0x0A, s) & 0x80, 0, "never updating");
}

#[test]
fn unclaimed_ports_and_msrs_are_left_to_the_caller() {
    let mut pc = PcPlatform::new();
    assert_eq!(pc.io_read(0x2F8, 1, 0), None);
    assert_eq!(pc.io_write(0xCF8, 0), None);
    assert!(!PcPlatform::claims_msr(0x10));
    assert!(PcPlatform::claims_msr(0x6E0));
    assert!(PcPlatform::claims_mmio(0xFEE0_0FFC));
    assert!(!PcPlatform::claims_mmio(0xFEC0_0000));
}

#[test]
fn a_cloned_platform_is_independent_of_its_template() {
    let mut t = enabled_pc();
    t.receive(b"abc");
    let mut c = t;
    assert_eq!(c.io_read(0x3F8, 1, 0), Some(u32::from(b'a')));
    assert_eq!(t.uart.rx_waiting(), 3);
}

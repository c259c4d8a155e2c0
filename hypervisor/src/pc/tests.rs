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

/// A platform with state in every device: the APIC enabled with its timer armed in periodic
/// mode, a vector pending and one in service, an ESR bit; both 8259s initialized with masks,
/// a request and one in service; the UART programmed with typed-ahead bytes that wrapped
/// around its buffer; the legacy ports written.
fn busy_platform() -> PcPlatform {
    let mut pc = enabled_pc();
    init_pic(&mut pc);
    apic_w(&mut pc, LINT0, 0x700, 0);
    apic_w(&mut pc, TDCR, 0b1011, 0);
    apic_w(&mut pc, LVT_TIMER, 0x20000 | 0xEF, 0);
    apic_w(&mut pc, TMICT, 5_000, 100);
    apic_w(&mut pc, TPR, 0x20, 0);
    pc.mmio_write(lapic::APIC_MMIO_BASE + 0xD0, 0x0100_0000, 0); // LDR
    pc.mmio_write(lapic::APIC_MMIO_BASE + 0xE0, 0xF000_0000, 0); // DFR
    pc.lapic.request(0x41);
    pc.lapic.request(0x61);
    pc.lapic.acknowledge(0x61);
    pc.lapic.request(3); // illegal: ESR bit 6
    pc.lapic.timer_fires = 7;
    // 8259: unmask IRQ 4 and IRQ 1, raise both, take one.
    pc.io_write(0x21, 0xED).unwrap();
    pc.io_write(0xA1, 0xFE).unwrap();
    pc.io_write(0x4D0, 0x08).unwrap();
    pc.pic.set_line(1, true);
    pc.pic.set_line(4, true);
    assert!(pc.pic.acknowledge().is_some());
    pc.io_write(0x20, 0x0B).unwrap(); // OCW3: read ISR
    // UART: 115200 8N1, FIFO on, RDA and THRE interrupts, scratch, bytes typed.
    pc.io_write(0x3FB, 0x83).unwrap();
    pc.io_write(0x3F8, 0x01).unwrap();
    pc.io_write(0x3F9, 0x00).unwrap();
    pc.io_write(0x3FB, 0x03).unwrap();
    pc.io_write(0x3FA, 0x01).unwrap();
    pc.io_write(0x3FC, 0x0B).unwrap();
    pc.io_write(0x3FF, 0x5A).unwrap();
    assert_eq!(pc.receive(&[b'x'; 200]), 200);
    for _ in 0..150 {
        pc.io_read(0x3F8, 1, 0).unwrap();
    }
    assert_eq!(pc.receive(b"ls -l /\r"), 8);
    pc.io_write(0x3F9, 0x03).unwrap();
    // Legacy ports.
    pc.io_write(0x61, 0x03).unwrap();
    pc.io_write(0x92, 0x02).unwrap();
    pc.io_write(0x70, 0x0B).unwrap();
    pc.io_read(0x61, 1, 0).unwrap();
    pc
}

#[test]
fn a_platform_survives_encode_and_decode() {
    let mut a = busy_platform();
    let bytes = state::encode(&a);
    assert_eq!(bytes.len(), PC_STATE_BYTES);
    assert_eq!(&bytes[..4], b"CWPC");
    let mut b = state::decode(&bytes).expect("a platform's own encoding decodes");
    assert_eq!(state::encode(&b), bytes, "the encoding round-trips byte for byte");
    // And it behaves the same: every register, the interrupt it delivers next, the timer,
    // the bytes waiting in the UART, the CMOS index.
    for msr in [SVR, TPR, LVT_TIMER, LINT0, TMICT, TDCR, 0x828, 0x810 + 3, 0x820 + 2] {
        assert_eq!(apic_r(&b, msr, 2_000), apic_r(&a, msr, 2_000), "APIC register {msr:#x}");
    }
    for off in [0xD0, 0xE0, 0x390] {
        assert_eq!(b.mmio_read(lapic::APIC_MMIO_BASE + off, 2_000), a.mmio_read(lapic::APIC_MMIO_BASE + off, 2_000));
    }
    assert_eq!(b.next_timer(), a.next_timer());
    assert!(b.next_timer().is_some());
    assert_eq!(b.lapic.timer_fires, 7);
    assert_eq!(b.pic.masks(), a.pic.masks());
    for port in [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x3F9, 0x3FB, 0x3FC, 0x3FD, 0x3FF, 0x70, 0x92] {
        assert_eq!(b.io_read(port, 1, 0), a.io_read(port, 1, 0), "port {port:#x}");
    }
    assert_eq!(b.uart.rx_waiting(), 58);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while a.uart.rx_waiting() > 0 {
        got_a.push(a.io_read(0x3F8, 1, 0).unwrap() as u8);
        got_b.push(b.io_read(0x3F8, 1, 0).unwrap() as u8);
    }
    assert_eq!(got_a, got_b);
    assert!(got_b.ends_with(b"ls -l /\r"));
    a.tick(1_000_000);
    b.tick(1_000_000);
    assert_eq!(b.take_interrupt(), a.take_interrupt());
    assert_eq!(state::encode(&a), state::encode(&b));
    // A fresh platform round-trips too.
    let fresh = PcPlatform::new();
    assert_eq!(state::encode(&state::decode(&state::encode(&fresh)).unwrap()), state::encode(&fresh));
}

/// Sets the little-endian field of `width` bytes at `at` and decodes.
fn patched(bytes: &[u8; PC_STATE_BYTES], at: usize, value: u64, width: usize) -> Result<PcPlatform, PcStateError> {
    let mut b = *bytes;
    b[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    state::decode(&b)
}

#[test]
fn a_truncated_or_corrupted_platform_state_is_refused() {
    use PcStateError as E;
    let good = state::encode(&busy_platform());
    let err = |r: Result<PcPlatform, PcStateError>| r.err();
    // Length, magic, version, the length field.
    assert_eq!(err(state::decode(&good[..PC_STATE_BYTES - 1])), Some(E::BadLength { len: PC_STATE_BYTES - 1 }));
    assert_eq!(err(state::decode(&[])), Some(E::BadLength { len: 0 }));
    let mut long = good.to_vec();
    long.push(0);
    assert_eq!(err(state::decode(&long)), Some(E::BadLength { len: PC_STATE_BYTES + 1 }));
    assert_eq!(err(patched(&good, 0, u64::from(b'X'), 1)), Some(E::BadMagic));
    assert_eq!(err(patched(&good, 4, 2, 2)), Some(E::BadVersion { version: 2 }));
    assert_eq!(err(patched(&good, 4, 0, 2)), Some(E::BadVersion { version: 0 }));
    assert_eq!(err(patched(&good, 6, 467, 2)), Some(E::LengthField { length: 467 }));
    // APIC (section at 8): timer-armed flag, reserved, SVR, ESR, divide, LDR, DFR, ICR high,
    // LVTs, ICR, vectors below 16, timer consistency.
    const A: usize = 8;
    assert_eq!(err(patched(&good, A + 1, 2, 1)), Some(E::BadFlag { offset: A + 1 }));
    assert_eq!(err(patched(&good, A + 2, 1, 2)), Some(E::Reserved { offset: A + 2 }));
    assert_eq!(err(patched(&good, A + 4, 0x2FF, 4)), Some(E::ApicSvr));
    assert_eq!(err(patched(&good, A + 8, 0x41, 4)), Some(E::ApicEsr));
    assert_eq!(err(patched(&good, A + 12, 0b0100, 4)), Some(E::ApicDivide));
    assert_eq!(err(patched(&good, A + 20, 0x0100_0001, 4)), Some(E::ApicDestination));
    assert_eq!(err(patched(&good, A + 24, 0x0FFF_FFFE, 4)), Some(E::ApicDestination));
    assert_eq!(err(patched(&good, A + 28, 0x1, 4)), Some(E::ApicDestination));
    for slot in 0..7 {
        // Bit 12 (delivery status) and bits 19-31 are reserved in every LVT entry.
        assert_eq!(err(patched(&good, A + 32 + 4 * slot, 0x1_1000, 4)), Some(E::LvtReserved { slot }));
        assert_eq!(err(patched(&good, A + 32 + 4 * slot, 0x8010_0000, 4)), Some(E::LvtReserved { slot }));
    }
    assert_eq!(err(patched(&good, A + 60, 0x1000 | 0x40, 8)), Some(E::ApicIcr));
    assert_eq!(err(patched(&good, A + 68, 1 << 5, 8)), Some(E::ApicVector));
    assert_eq!(err(patched(&good, A + 100, 1 << 15, 8)), Some(E::ApicVector));
    // Disarmed, but with an expiry value; a TSC deadline outside TSC-deadline mode; an armed
    // count-mode timer without a count.
    let mut disarmed = good;
    disarmed[A + 1] = 0;
    assert_eq!(err(state::decode(&disarmed)), Some(E::ApicTimer));
    assert_eq!(err(patched(&good, A + 148, 99, 8)), Some(E::ApicTimer));
    assert_eq!(err(patched(&good, A + 16, 0, 4)), Some(E::ApicTimer));
    // An APIC software-disabled with an LVT unmasked.
    let mut disabled = busy_platform();
    disabled.lapic.svr &= !0x100;
    assert_eq!(err(state::decode(&state::encode(&disabled))), Some(E::LvtUnmasked { slot: 1 }));
    // The 8259s (at 172 and 184).
    for (chip, at) in [(0usize, 172usize), (1, 184)] {
        assert_eq!(err(patched(&good, at + 4, 0x31, 1)), Some(E::PicVectorBase { chip }));
        assert_eq!(err(patched(&good, at + 5, 4, 1)), Some(E::PicInit { chip }));
        assert_eq!(err(patched(&good, at + 6, 7, 1)), Some(E::BadFlag { offset: at + 6 }));
        assert_eq!(err(patched(&good, at + 9, 2, 1)), Some(E::BadFlag { offset: at + 9 }));
        assert_eq!(err(patched(&good, at + 10, 8, 1)), Some(E::PicPriority { chip }));
        assert_eq!(err(patched(&good, at + 11, 0x01, 1)), Some(E::PicElcr { chip }));
    }
    // ICW3 awaited in single mode; ICW4 awaited when ICW1 did not ask for it.
    let mut single = good;
    single[172 + 5] = 2;
    single[172 + 7] = 1;
    assert_eq!(err(state::decode(&single)), Some(E::PicInit { chip: 0 }));
    let mut no_icw4 = good;
    no_icw4[184 + 5] = 3;
    no_icw4[184 + 6] = 0;
    assert_eq!(err(state::decode(&no_icw4)), Some(E::PicInit { chip: 1 }));
    // The UART (at 196): IER, MCR, flags, the receive buffer's head and length.
    const U: usize = 196;
    assert_eq!(err(patched(&good, U, 0x10, 1)), Some(E::UartRegister));
    assert_eq!(err(patched(&good, U + 2, 0x20, 1)), Some(E::UartRegister));
    assert_eq!(err(patched(&good, U + 7, 0xFF, 1)), Some(E::BadFlag { offset: U + 7 }));
    assert_eq!(err(patched(&good, U + 8, 256, 2)), Some(E::RxHead { head: 256 }));
    assert_eq!(err(patched(&good, U + 8, u64::from(u16::MAX), 2)), Some(E::RxHead { head: u16::MAX }));
    assert_eq!(err(patched(&good, U + 10, 257, 2)), Some(E::RxLength { len: 257 }));
    // A full buffer whose head is anywhere inside it is fine.
    assert!(patched(&good, U + 10, 256, 2).is_ok());
    // The legacy ports (at 464).
    assert_eq!(err(patched(&good, 465, 0x01, 1)), Some(E::PortA));
    assert_eq!(err(patched(&good, 467, 2, 1)), Some(E::BadFlag { offset: 467 }));
    // Received bytes are data: any value is fine.
    assert!(patched(&good, U + 12 + 100, 0xFF, 1).is_ok());
}

#[test]
fn flipped_bytes_in_a_platform_state_never_panic_and_what_decodes_re_encodes() {
    let good = state::encode(&busy_platform());
    let mut next = crate::testing::xorshift(0x5EED_0F_DE71_CE5);
    let (mut refused, mut accepted) = (0, 0);
    for i in 0..20_000 {
        let mut b = good;
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let at = (next() % PC_STATE_BYTES as u64) as usize;
            b[at] ^= 1 << (next() % 8);
        }
        let cut = if i % 16 == 0 { (next() % (PC_STATE_BYTES as u64 + 1)) as usize } else { PC_STATE_BYTES };
        match state::decode(&b[..cut]) {
            Ok(mut p) => {
                accepted += 1;
                // A state that decodes is one the devices can run with, and re-encodes as is.
                assert_eq!(&state::encode(&p)[..], &b[..]);
                p.tick(u64::MAX / 2);
                let _ = p.take_interrupt();
                let _ = p.io_read(0x3F8, 1, 0);
                let _ = p.io_read(0x20, 1, 0);
                p.receive(b"abc");
            }
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 1000 && accepted > 1000, "refused {refused}, accepted {accepted}");
}

//! A stable, versioned byte encoding of a [`PcPlatform`]: what a saved image carries of a PC
//! domain's devices (`dom_platform_get`/`dom_platform_set`, the image's PLATFORM record). It
//! does not follow the structs' memory layout: every field is written explicitly, little-endian,
//! at a fixed offset, so the encoding stays the same whatever the compiler or a refactoring
//! does to the structs; a new field needs a new version.
//!
//! Decoding treats the bytes as hostile (they come from an image on disk): the length, the
//! magic and the version are checked first, then every field against what the devices
//! themselves can ever hold (reserved register bits clear, enum codes in range, booleans 0 or
//! 1, the receive buffer's head and length inside it, the timer's fields consistent with its
//! mode). A value the devices could not reach by any sequence of guest accesses is refused
//! with its own [`PcStateError`], so a restored platform behaves as one the guest built.
//!
//! Layout, version 1 (468 bytes; offsets in bytes):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `CWPC` |
//! | 4 | 2 | version: 1 |
//! | 6 | 2 | length: 468 |
//! | 8 | 164 | local APIC: tpr (u8), timer armed (u8: 0/1), reserved (u16, 0), svr, esr, divide, initial count, ldr, dfr, icr high (u32 each), LVT CMCI, timer, thermal, perf, LINT0, LINT1, error (u32 each), icr (u64), irr (4 × u64), isr (4 × u64), timer expiry (u64, 0 if not armed), timer start, TSC deadline, timer fires (u64 each) |
//! | 172 | 12 × 2 | 8259 master, then slave: irr, isr, imr, lines, vector base, init step (0 ready, 1-3 awaiting ICW2-4), ICW4 needed, single, auto-EOI, read ISR (0/1 each), lowest priority (0-7), ELCR (u8 each) |
//! | 196 | 268 | UART: ier, lcr, mcr, scr, dll, dlm, FIFO enabled, THRE pending (u8 each), rx head, rx length (u16 each), rx buffer (256) |
//! | 464 | 4 | legacy ports: port B, port A, CMOS index, refresh (0/1) (u8 each) |

use super::lapic::{
    DFR_ONES, DIVIDE_WRITABLE, ESR_ILLEGAL_VECTOR, ICR_DELIVERY_STATUS, LVT_MASKED, LVT_WRITABLE, Lapic,
    SVR_ENABLE, SVR_WRITABLE, TOP_BYTE, TimerMode, VectorBits,
};
use super::pic::{self, Chip, Init, Pic};
use super::ports::{self, LegacyPorts};
use super::uart::{self, RX_BUFFER_BYTES, Uart};
use super::PcPlatform;

/// The encoding's first four bytes.
pub const PC_STATE_MAGIC: [u8; 4] = *b"CWPC";
/// The version this code writes and the only one it reads.
pub const PC_STATE_VERSION: u16 = 1;
/// Bytes of an encoded platform, version 1.
pub const PC_STATE_BYTES: usize = 468;

const HEADER_BYTES: usize = 8;
const LAPIC_BYTES: usize = 164;
const CHIP_BYTES: usize = 12;
const UART_BYTES: usize = 12 + RX_BUFFER_BYTES;
const PORTS_BYTES: usize = 4;
const _: () = assert!(HEADER_BYTES + LAPIC_BYTES + 2 * CHIP_BYTES + UART_BYTES + PORTS_BYTES == PC_STATE_BYTES);

/// Why [`decode`] refused a platform state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcStateError {
    /// The input is not [`PC_STATE_BYTES`] long.
    BadLength { len: usize },
    /// The first four bytes are not [`PC_STATE_MAGIC`].
    BadMagic,
    /// A version this code does not read.
    BadVersion { version: u16 },
    /// The length field is not [`PC_STATE_BYTES`].
    LengthField { length: u16 },
    /// A flag byte that is neither 0 nor 1 (at this offset).
    BadFlag { offset: usize },
    /// A reserved field is not zero (at this offset).
    Reserved { offset: usize },
    /// APIC SVR bits no write can set.
    ApicSvr,
    /// APIC ESR bits the APIC never sets.
    ApicEsr,
    /// The ICR's delivery-status bit set.
    ApicIcr,
    /// LDR, DFR or the ICR's high half with bits no write can set.
    ApicDestination,
    /// A divide configuration with reserved bits.
    ApicDivide,
    /// A vector below 16 requested or in service (the APIC refuses those).
    ApicVector,
    /// Reserved bits in LVT entry `slot` (0 CMCI, 1 timer, ..., 6 error).
    LvtReserved { slot: usize },
    /// LVT entry `slot` unmasked while the APIC is software-disabled.
    LvtUnmasked { slot: usize },
    /// Timer fields that contradict its mode (a deadline outside TSC-deadline mode, an
    /// expiry without a count, an expiry value while disarmed, ...).
    ApicTimer,
    /// An 8259 (0 master, 1 slave) vector base with its low three bits set.
    PicVectorBase { chip: usize },
    /// An 8259 initialization step out of range or impossible with its ICW1 flags.
    PicInit { chip: usize },
    /// An 8259 lowest-priority input above 7.
    PicPriority { chip: usize },
    /// ELCR bits of edge-only inputs.
    PicElcr { chip: usize },
    /// UART IER or MCR bits no write can set.
    UartRegister,
    /// The receive buffer's head beyond it.
    RxHead { head: u16 },
    /// The receive buffer's length beyond it.
    RxLength { len: u16 },
    /// Port A bits other than fast A20.
    PortA,
}

struct Writer {
    buf: [u8; PC_STATE_BYTES],
    at: usize,
}

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn flag(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Reads fields in order; the input was checked to be [`PC_STATE_BYTES`] long, and the
/// fields add up to exactly that, so no read goes past its end.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(s) = self.b.get(self.at..self.at + N) {
            out.copy_from_slice(s);
        }
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn flag(&mut self) -> Result<bool, PcStateError> {
        let offset = self.at;
        match self.u8() {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PcStateError::BadFlag { offset }),
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// The platform's bytes, version [`PC_STATE_VERSION`].
pub fn encode(p: &PcPlatform) -> [u8; PC_STATE_BYTES] {
    let mut w = Writer { buf: [0; PC_STATE_BYTES], at: 0 };
    w.bytes(&PC_STATE_MAGIC);
    w.u16(PC_STATE_VERSION);
    w.u16(PC_STATE_BYTES as u16);
    encode_lapic(&mut w, &p.lapic);
    encode_chip(&mut w, &p.pic.master);
    encode_chip(&mut w, &p.pic.slave);
    let u = &p.uart;
    for b in [u.ier, u.lcr, u.mcr, u.scr, u.dll, u.dlm] {
        w.u8(b);
    }
    w.flag(u.fifo_enabled);
    w.flag(u.thre_pending);
    w.u16(u.rx_head);
    w.u16(u.rx_len);
    w.bytes(&u.rx);
    let l = &p.ports;
    for b in [l.port_b, l.port_a, l.cmos_index] {
        w.u8(b);
    }
    w.flag(l.refresh);
    debug_assert_eq!(w.at, PC_STATE_BYTES);
    w.buf
}

fn encode_lapic(w: &mut Writer, a: &Lapic) {
    w.u8(a.tpr);
    w.flag(a.timer_expiry.is_some());
    w.u16(0);
    for v in [a.svr, a.esr, a.divide_config, a.initial_count, a.ldr, a.dfr, a.icr_high] {
        w.u32(v);
    }
    for v in a.lvt {
        w.u32(v);
    }
    w.u64(a.icr);
    for v in a.irr.0.into_iter().chain(a.isr.0) {
        w.u64(v);
    }
    for v in [a.timer_expiry.unwrap_or(0), a.timer_start, a.tsc_deadline, a.timer_fires] {
        w.u64(v);
    }
}

fn encode_chip(w: &mut Writer, c: &Chip) {
    let init = match c.init {
        Init::Ready => 0,
        Init::Icw2 => 1,
        Init::Icw3 => 2,
        Init::Icw4 => 3,
    };
    for b in [c.irr, c.isr, c.imr, c.lines, c.vector_base, init] {
        w.u8(b);
    }
    for f in [c.icw4_needed, c.single, c.auto_eoi, c.read_isr] {
        w.flag(f);
    }
    w.u8(c.lowest);
    w.u8(c.elcr);
}

/// A platform from bytes [`encode`] wrote, every field checked.
pub fn decode(bytes: &[u8]) -> Result<PcPlatform, PcStateError> {
    if bytes.len() != PC_STATE_BYTES {
        return Err(PcStateError::BadLength { len: bytes.len() });
    }
    let mut r = Reader { b: bytes, at: 0 };
    if r.take::<4>() != PC_STATE_MAGIC {
        return Err(PcStateError::BadMagic);
    }
    let version = r.u16();
    if version != PC_STATE_VERSION {
        return Err(PcStateError::BadVersion { version });
    }
    let length = r.u16();
    if usize::from(length) != PC_STATE_BYTES {
        return Err(PcStateError::LengthField { length });
    }
    let lapic = decode_lapic(&mut r)?;
    let master = decode_chip(&mut r, 0)?;
    let slave = decode_chip(&mut r, 1)?;
    let uart = decode_uart(&mut r)?;
    let ports = decode_ports(&mut r)?;
    debug_assert_eq!(r.at, PC_STATE_BYTES);
    Ok(PcPlatform { lapic, pic: Pic { master, slave }, uart, ports })
}

fn decode_lapic(r: &mut Reader<'_>) -> Result<Lapic, PcStateError> {
    let mut a = Lapic::new();
    a.tpr = r.u8();
    let armed = r.flag()?;
    let offset = r.at;
    if r.u16() != 0 {
        return Err(PcStateError::Reserved { offset });
    }
    a.svr = r.u32();
    a.esr = r.u32();
    a.divide_config = r.u32();
    a.initial_count = r.u32();
    a.ldr = r.u32();
    a.dfr = r.u32();
    a.icr_high = r.u32();
    for l in &mut a.lvt {
        *l = r.u32();
    }
    a.icr = r.u64();
    let mut irr = [0u64; 4];
    let mut isr = [0u64; 4];
    for w in irr.iter_mut().chain(isr.iter_mut()) {
        *w = r.u64();
    }
    a.irr = VectorBits(irr);
    a.isr = VectorBits(isr);
    let expiry = r.u64();
    a.timer_start = r.u64();
    a.tsc_deadline = r.u64();
    a.timer_fires = r.u64();

    if a.svr & !SVR_WRITABLE != 0 {
        return Err(PcStateError::ApicSvr);
    }
    if a.esr & !ESR_ILLEGAL_VECTOR != 0 {
        return Err(PcStateError::ApicEsr);
    }
    if a.icr & ICR_DELIVERY_STATUS != 0 {
        return Err(PcStateError::ApicIcr);
    }
    if a.ldr & !TOP_BYTE != 0 || a.icr_high & !TOP_BYTE != 0 || a.dfr & DFR_ONES != DFR_ONES {
        return Err(PcStateError::ApicDestination);
    }
    if a.divide_config & !DIVIDE_WRITABLE != 0 {
        return Err(PcStateError::ApicDivide);
    }
    // Vectors 0-15 are refused on request, so they are never pending nor in service.
    if irr[0] & 0xFFFF != 0 || isr[0] & 0xFFFF != 0 {
        return Err(PcStateError::ApicVector);
    }
    for (slot, &l) in a.lvt.iter().enumerate() {
        if l & !LVT_WRITABLE != 0 {
            return Err(PcStateError::LvtReserved { slot });
        }
        if a.svr & SVR_ENABLE == 0 && l & LVT_MASKED == 0 {
            return Err(PcStateError::LvtUnmasked { slot });
        }
    }
    a.timer_expiry = match (armed, expiry) {
        (false, 0) => None,
        (false, _) => return Err(PcStateError::ApicTimer),
        (true, at) => Some(at),
    };
    // The timer's fields as the register writes and the timer itself leave them: in
    // TSC-deadline mode it is armed exactly when a deadline is set, and for that deadline;
    // in the count modes there is no deadline, and an armed timer has a count.
    let consistent = match a.timer_mode() {
        TimerMode::TscDeadline => a.timer_expiry == (a.tsc_deadline != 0).then_some(a.tsc_deadline),
        TimerMode::OneShot | TimerMode::Periodic => {
            a.tsc_deadline == 0 && (a.timer_expiry.is_none() || a.initial_count != 0)
        }
    };
    if !consistent {
        return Err(PcStateError::ApicTimer);
    }
    Ok(a)
}

fn decode_chip(r: &mut Reader<'_>, chip: usize) -> Result<Chip, PcStateError> {
    let mut c = if chip == 0 { Pic::new().master } else { Pic::new().slave };
    c.irr = r.u8();
    c.isr = r.u8();
    c.imr = r.u8();
    c.lines = r.u8();
    c.vector_base = r.u8();
    let init = r.u8();
    c.icw4_needed = r.flag()?;
    c.single = r.flag()?;
    c.auto_eoi = r.flag()?;
    c.read_isr = r.flag()?;
    c.lowest = r.u8();
    c.elcr = r.u8();
    if c.vector_base & !pic::VECTOR_BASE_MASK != 0 {
        return Err(PcStateError::PicVectorBase { chip });
    }
    // ICW3 comes only in cascade mode, ICW4 only when ICW1 asked for it.
    c.init = match init {
        0 => Init::Ready,
        1 => Init::Icw2,
        2 if !c.single => Init::Icw3,
        3 if c.icw4_needed => Init::Icw4,
        _ => return Err(PcStateError::PicInit { chip }),
    };
    if c.lowest > 7 {
        return Err(PcStateError::PicPriority { chip });
    }
    let elcr = if chip == 0 { pic::ELCR_MASTER_WRITABLE } else { pic::ELCR_SLAVE_WRITABLE };
    if c.elcr & !elcr != 0 {
        return Err(PcStateError::PicElcr { chip });
    }
    Ok(c)
}

fn decode_uart(r: &mut Reader<'_>) -> Result<Uart, PcStateError> {
    let mut u = Uart::new();
    u.ier = r.u8();
    u.lcr = r.u8();
    u.mcr = r.u8();
    u.scr = r.u8();
    u.dll = r.u8();
    u.dlm = r.u8();
    u.fifo_enabled = r.flag()?;
    u.thre_pending = r.flag()?;
    u.rx_head = r.u16();
    u.rx_len = r.u16();
    u.rx = r.take::<RX_BUFFER_BYTES>();
    if u.ier & !uart::IER_WRITABLE != 0 || u.mcr & !uart::MCR_WRITABLE != 0 {
        return Err(PcStateError::UartRegister);
    }
    if usize::from(u.rx_head) >= RX_BUFFER_BYTES {
        return Err(PcStateError::RxHead { head: u.rx_head });
    }
    if usize::from(u.rx_len) > RX_BUFFER_BYTES {
        return Err(PcStateError::RxLength { len: u.rx_len });
    }
    Ok(u)
}

fn decode_ports(r: &mut Reader<'_>) -> Result<LegacyPorts, PcStateError> {
    let mut p = ports::RESET;
    p.port_b = r.u8();
    p.port_a = r.u8();
    p.cmos_index = r.u8();
    p.refresh = r.flag()?;
    if p.port_a & !ports::PORT_A_WRITABLE != 0 {
        return Err(PcStateError::PortA);
    }
    Ok(p)
}

//! The small legacy ports a PC kernel probes at boot, each answered so the probe ends at once:
//! the 8254 timer's ports (no timer behind them: channel 2 reads 0, which makes Linux's fast
//! PIT calibration give up after a few reads instead of 50,000), system control port B
//! (0x61), the keyboard controller's status and its reset command (0x64 <- 0xFE), fast A20
//! and reset (0x92), the POST/delay port (0x80), and the CMOS real-time clock (0x70/0x71).

/// 8254 ports.
pub const PIT_FIRST: u16 = 0x40;
pub const PIT_LAST: u16 = 0x43;
/// System control port B.
pub const PORT_B: u16 = 0x61;
/// Keyboard controller data and status/command ports.
pub const KBC_DATA: u16 = 0x60;
pub const KBC_STATUS: u16 = 0x64;
/// The keyboard controller command that pulses the CPU's reset line.
pub const KBC_RESET_COMMAND: u8 = 0xFE;
/// System control port A: bit 0 resets the machine.
pub const PORT_A: u16 = 0x92;
/// POST diagnostics / I/O delay port.
pub const POST: u16 = 0x80;
/// CMOS index and data ports.
pub const CMOS_INDEX: u16 = 0x70;
pub const CMOS_DATA: u16 = 0x71;
/// Keyboard controller status: output buffer full, input buffer empty. With no keyboard
/// behind it, Linux's i8042 driver flushes 16 bytes and reports no controller, and a reboot
/// through it finds the input buffer empty at once.
/// Port A bits kept: fast A20 (bit 1); bit 0 resets instead.
pub(super) const PORT_A_WRITABLE: u8 = 0x02;
const KBC_STATUS_VALUE: u8 = 0x01;
/// Seconds from 1970 to 2026-01-01, the CMOS clock's origin (it counts the domain's time).
pub const CMOS_EPOCH_SECS: u64 = 1_767_225_600;

/// What a write to these ports asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortEffect {
    None,
    /// The guest reset the machine (the domain ends, as a reboot).
    Reset,
}

/// The ports' state.
#[derive(Clone, Copy, Debug, Default)]
pub struct LegacyPorts {
    pub(super) port_b: u8,
    pub(super) port_a: u8,
    pub(super) cmos_index: u8,
    /// Refresh toggles on every read of port B (bit 4), as on real hardware.
    pub(super) refresh: bool,
}

/// The ports after reset.
pub const RESET: LegacyPorts = LegacyPorts { port_b: 0, port_a: 0, cmos_index: 0, refresh: false };

impl LegacyPorts {
    pub fn claims(port: u16) -> bool {
        matches!(port, PIT_FIRST..=PIT_LAST | PORT_B | KBC_DATA | KBC_STATUS | PORT_A | POST | CMOS_INDEX | CMOS_DATA)
    }

    /// Reads `port`; `guest_secs` is the domain's clock, for the CMOS.
    pub fn read(&mut self, port: u16, guest_secs: u64) -> u8 {
        match port {
            PORT_B => {
                self.refresh = !self.refresh;
                (self.port_b & 0x0F) | if self.refresh { 0x10 } else { 0 }
            }
            KBC_STATUS => KBC_STATUS_VALUE,
            KBC_DATA => 0,
            PORT_A => self.port_a,
            CMOS_INDEX => self.cmos_index,
            CMOS_DATA => cmos_register(self.cmos_index & 0x7F, CMOS_EPOCH_SECS + guest_secs),
            _ => 0,
        }
    }

    pub fn write(&mut self, port: u16, v: u8) -> PortEffect {
        match port {
            PORT_B => self.port_b = v,
            KBC_STATUS if v == KBC_RESET_COMMAND => return PortEffect::Reset,
            PORT_A => {
                if v & 0x01 != 0 && self.port_a & 0x01 == 0 {
                    return PortEffect::Reset;
                }
                self.port_a = v & PORT_A_WRITABLE;
            }
            CMOS_INDEX => self.cmos_index = v,
            _ => {}
        }
        PortEffect::None
    }
}

fn bcd(v: u64) -> u8 {
    ((v / 10) << 4 | v % 10) as u8
}

/// CMOS register `index` at Unix time `secs`: the clock in BCD, 24-hour mode, never
/// updating (UIP clear), the battery good; the rest of the CMOS reads 0.
pub fn cmos_register(index: u8, secs: u64) -> u8 {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    match index {
        0x00 => bcd(rem % 60),
        0x02 => bcd(rem / 60 % 60),
        0x04 => bcd(rem / 3600),
        0x06 => bcd((days + 4) % 7 + 1),
        0x07 => bcd(d),
        0x08 => bcd(m),
        0x09 => bcd(y % 100),
        0x32 => bcd(y / 100),
        // Register A: divider on, 1024 Hz, UIP clear. B: 24-hour, BCD. D: valid RAM.
        0x0A => 0x26,
        0x0B => 0x02,
        0x0D => 0x80,
        _ => 0,
    }
}

/// (year, month, day) of day `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as u64, m as u64, d as u64)
}

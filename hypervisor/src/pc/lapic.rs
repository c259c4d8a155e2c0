//! The local APIC: its registers in xAPIC mode (the 4 KiB page at 0xFEE00000, reached through
//! decoded MMIO) with the x2APIC register semantics underneath (MSRs 0x800-0x8FF, which a
//! guest reaches only once it switched to x2APIC mode), the interrupt request/in-service
//! bits and their priorities, EOI, self-IPIs, and the timer in one-shot, periodic and
//! TSC-deadline modes, counted on the guest's TSC.
//!
//! Why xAPIC by default: Linux 6.1 booted from an MP table reads the APIC id through the
//! xAPIC page before it switches its APIC driver, so an APIC the firmware left in x2APIC
//! mode makes it fault (`register_lapic_address`).
//!
//! Intel SDM Vol 3A chapter 11 (10 in older editions): 11.12 (x2APIC register map), 11.5.4
//! (timer), 11.8 (IRR/ISR, PPR).

/// First x2APIC MSR.
pub const X2APIC_MSR_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8FF;
/// IA32_TSC_DEADLINE.
pub const TSC_DEADLINE_MSR: u32 = 0x6E0;
/// Guest-physical address of the xAPIC register page.
pub const APIC_MMIO_BASE: u64 = 0xFEE0_0000;
/// Bytes of the register page.
pub const APIC_MMIO_BYTES: u64 = 0x1000;
/// IA32_APIC_BASE as this APIC reports it: the architectural base, enabled (bit 11),
/// bootstrap processor (bit 8), xAPIC mode (bit 10 clear).
pub const APIC_BASE_VALUE: u64 = APIC_MMIO_BASE | 1 << 11 | 1 << 8;
/// Version register: version 0x14 (integrated), six LVT entries (max LVT index 5).
pub const VERSION_VALUE: u64 = 0x0005_0014;
/// An LVT entry's mask bit.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT delivery mode field and the ExtINT mode.
pub(super) const LVT_DELIVERY_MASK: u32 = 0b111 << 8;
const LVT_DELIVERY_EXTINT: u32 = 0b111 << 8;
const LVT_DELIVERY_NMI: u32 = 0b100 << 8;
/// SVR: APIC software enable.
pub(super) const SVR_ENABLE: u32 = 1 << 8;
/// SVR bits a write keeps: the spurious vector, software enable, EOI-broadcast suppression.
pub(super) const SVR_WRITABLE: u32 = 0xFF | SVR_ENABLE | 1 << 12;
/// LVT timer mode field (bits 18:17).
const TIMER_MODE_SHIFT: u32 = 17;
/// LVT bits a write keeps: vector, delivery mode, polarity, trigger mode, mask, timer mode.
pub(super) const LVT_WRITABLE: u32 = 0xFF | LVT_DELIVERY_MASK | 1 << 13 | 1 << 15 | LVT_MASKED | 0b11 << TIMER_MODE_SHIFT;
/// ESR bits the APIC sets: received illegal vector (bit 6), the only error it models.
pub(super) const ESR_ILLEGAL_VECTOR: u32 = 1 << 6;
/// Divide configuration bits a write keeps (bits 0, 1, 3).
pub(super) const DIVIDE_WRITABLE: u32 = 0b1011;
/// ICR bit 12 (delivery status) never reads back set.
pub(super) const ICR_DELIVERY_STATUS: u64 = 1 << 12;
/// LDR and ICR high: only the top byte is kept.
pub(super) const TOP_BYTE: u32 = 0xFF00_0000;
/// DFR: bits 27:0 read as ones.
pub(super) const DFR_ONES: u32 = 0x0FFF_FFFF;

/// x2APIC register indexes (MSR - 0x800).
mod reg {
    pub const ID: u32 = 0x02;
    pub const VERSION: u32 = 0x03;
    pub const TPR: u32 = 0x08;
    pub const PPR: u32 = 0x0A;
    pub const EOI: u32 = 0x0B;
    pub const LDR: u32 = 0x0D;
    pub const SVR: u32 = 0x0F;
    pub const ISR0: u32 = 0x10;
    pub const TMR0: u32 = 0x18;
    pub const IRR0: u32 = 0x20;
    pub const ESR: u32 = 0x28;
    pub const LVT_CMCI: u32 = 0x2F;
    pub const ICR: u32 = 0x30;
    pub const LVT_TIMER: u32 = 0x32;
    pub const LVT_ERROR: u32 = 0x37;
    pub const TIMER_INITIAL: u32 = 0x38;
    pub const TIMER_CURRENT: u32 = 0x39;
    pub const TIMER_DIVIDE: u32 = 0x3E;
    pub const SELF_IPI: u32 = 0x3F;
}

/// xAPIC-only registers (page offset / 16): destination format, ICR high half.
const XAPIC_DFR: u32 = 0x0E;
const XAPIC_ICR_HIGH: u32 = 0x31;

/// LVT slots in [`Lapic::lvt`]: CMCI, timer, thermal, performance, LINT0, LINT1, error.
pub(super) const LVT_SLOTS: usize = 7;
const LVT_TIMER_SLOT: usize = 1;
const LVT_LINT0_SLOT: usize = 4;
const LVT_LINT1_SLOT: usize = 5;

fn lvt_slot(r: u32) -> Option<usize> {
    match r {
        reg::LVT_CMCI => Some(0),
        reg::LVT_TIMER..=reg::LVT_ERROR => Some((r - reg::LVT_TIMER) as usize + 1),
        _ => None,
    }
}

/// The timer's mode, from the LVT timer entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

/// Why an x2APIC access is refused (the guest gets #GP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicFault {
    /// Not an x2APIC register.
    Reserved,
    /// Written read-only, or read write-only.
    WrongDirection,
    /// Reserved bits set (an EOI of non-zero, for instance).
    BadValue,
}

/// 256 interrupt bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorBits(pub(super) [u64; 4]);

impl VectorBits {
    pub fn set(&mut self, v: u8) {
        self.0[usize::from(v >> 6)] |= 1 << (v & 63);
    }
    pub fn clear(&mut self, v: u8) {
        self.0[usize::from(v >> 6)] &= !(1 << (v & 63));
    }
    pub fn get(&self, v: u8) -> bool {
        self.0[usize::from(v >> 6)] & 1 << (v & 63) != 0
    }
    /// The highest vector set.
    pub fn highest(&self) -> Option<u8> {
        (0..4).rev().find(|&w| self.0[w] != 0).map(|w| (w as u32 * 64 + 63 - self.0[w].leading_zeros()) as u8)
    }
    /// Bits `32 * n .. 32 * n + 32` (one ISR/TMR/IRR register).
    fn word(&self, n: u32) -> u32 {
        (self.0[(n / 2) as usize] >> (32 * (n % 2))) as u32
    }
}

/// A local APIC.
#[derive(Clone, Copy, Debug)]
pub struct Lapic {
    /// Task priority (bits 7:4 are the class the vCPU's CR8 mirrors).
    pub tpr: u8,
    pub(super) svr: u32,
    pub(super) irr: VectorBits,
    pub(super) isr: VectorBits,
    pub(super) esr: u32,
    pub(super) icr: u64,
    pub(super) lvt: [u32; LVT_SLOTS],
    pub(super) divide_config: u32,
    pub(super) initial_count: u32,
    /// Guest TSC at which the timer fires next, if armed.
    pub(super) timer_expiry: Option<u64>,
    /// Guest TSC at which the current count started (one-shot/periodic).
    pub(super) timer_start: u64,
    /// IA32_TSC_DEADLINE as last written (0 = disarmed).
    pub(super) tsc_deadline: u64,
    /// Timer interrupts delivered to IRR (for `stat` and tests).
    pub timer_fires: u64,
    /// xAPIC logical destination and destination format, and the ICR's high half.
    pub(super) ldr: u32,
    pub(super) dfr: u32,
    pub(super) icr_high: u32,
}

impl Default for Lapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Lapic {
    /// The state after reset (x2APIC mode, software-disabled, every LVT masked).
    pub const fn new() -> Self {
        Self {
            tpr: 0,
            svr: 0xFF,
            irr: VectorBits([0; 4]),
            isr: VectorBits([0; 4]),
            esr: 0,
            icr: 0,
            lvt: [LVT_MASKED; LVT_SLOTS],
            divide_config: 0,
            initial_count: 0,
            timer_expiry: None,
            timer_start: 0,
            tsc_deadline: 0,
            timer_fires: 0,
            ldr: 0,
            dfr: 0xFFFF_FFFF,
            icr_high: 0,
        }
    }

    /// Software-enabled (SVR bit 8).
    pub fn enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    pub fn timer_mode(&self) -> TimerMode {
        match (self.lvt[LVT_TIMER_SLOT] >> TIMER_MODE_SHIFT) & 0b11 {
            0b01 => TimerMode::Periodic,
            0b10 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// TSC ticks per timer count (the divide configuration: 2, 4, ..., 128, or 1).
    fn divisor(&self) -> u64 {
        let d = (self.divide_config & 0b11) | ((self.divide_config >> 1) & 0b100);
        if d == 0b111 { 1 } else { 2 << d }
    }

    /// The processor priority: the TPR, or the class of the highest vector in service if higher.
    pub fn ppr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 { self.tpr } else { isrv & 0xF0 }
    }

    /// Latches a fixed interrupt (an accepted vector below 16 is an illegal vector: ESR).
    pub fn request(&mut self, vector: u8) {
        if vector < 16 {
            self.esr |= ESR_ILLEGAL_VECTOR;
            return;
        }
        self.irr.set(vector);
    }

    /// The vector the APIC would deliver now, if any (its class above the PPR's).
    pub fn deliverable(&self) -> Option<u8> {
        let v = self.irr.highest()?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// The CPU took `vector`: it moves from IRR to ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        self.irr.clear(vector);
        self.isr.set(vector);
    }

    /// LINT0 set to pass the 8259's interrupts through (ExtINT, unmasked, APIC enabled).
    pub fn extint_open(&self) -> bool {
        let l = self.lvt[LVT_LINT0_SLOT];
        self.enabled() && l & LVT_MASKED == 0 && l & LVT_DELIVERY_MASK == LVT_DELIVERY_EXTINT
    }

    /// LINT1 programmed for NMIs (unused: nothing raises LINT1).
    pub fn lint1_is_nmi(&self) -> bool {
        self.lvt[LVT_LINT1_SLOT] & LVT_DELIVERY_MASK == LVT_DELIVERY_NMI
    }

    /// Guest TSC at which the timer next needs attention.
    pub fn next_expiry(&self) -> Option<u64> {
        self.timer_expiry
    }

    /// Fires the timer if it is due at guest TSC `now`; true if it raised its vector.
    pub fn tick(&mut self, now: u64) -> bool {
        let Some(at) = self.timer_expiry else { return false };
        if now < at {
            return false;
        }
        match self.timer_mode() {
            TimerMode::Periodic if self.initial_count != 0 => {
                let period = u64::from(self.initial_count) * self.divisor();
                // Catch up without a burst: one interrupt, next expiry after now.
                let missed = (now - at) / period + 1;
                self.timer_start = at.saturating_add((missed - 1).saturating_mul(period));
                self.timer_expiry = Some(at.saturating_add(missed.saturating_mul(period)));
            }
            TimerMode::TscDeadline => {
                self.tsc_deadline = 0;
                self.timer_expiry = None;
            }
            _ => self.timer_expiry = None,
        }
        let lvt = self.lvt[LVT_TIMER_SLOT];
        if lvt & LVT_MASKED != 0 || !self.enabled() {
            return false;
        }
        self.request(lvt as u8);
        self.timer_fires += 1;
        true
    }

    /// IA32_TSC_DEADLINE read.
    pub fn read_tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TimerMode::TscDeadline { self.tsc_deadline } else { 0 }
    }

    /// IA32_TSC_DEADLINE write (ignored outside TSC-deadline mode, 0 disarms).
    pub fn write_tsc_deadline(&mut self, value: u64) {
        if self.timer_mode() != TimerMode::TscDeadline {
            return;
        }
        self.tsc_deadline = value;
        self.timer_expiry = (value != 0).then_some(value);
    }

    fn current_count(&self, now: u64) -> u32 {
        match (self.timer_expiry, self.timer_mode()) {
            (Some(at), TimerMode::OneShot | TimerMode::Periodic) if at > now => {
                ((at - now) / self.divisor()).min(u64::from(u32::MAX)) as u32
            }
            _ => 0,
        }
    }

    /// Reads x2APIC register MSR `msr` at guest TSC `now`.
    pub fn read(&self, msr: u32, now: u64) -> Result<u64, ApicFault> {
        let r = msr.wrapping_sub(X2APIC_MSR_FIRST);
        Ok(match r {
            reg::ID => 0,
            reg::VERSION => VERSION_VALUE,
            reg::TPR => u64::from(self.tpr),
            reg::PPR => u64::from(self.ppr()),
            reg::LDR => 1,
            reg::SVR => u64::from(self.svr),
            0x10..=0x17 => u64::from(self.isr.word(r - reg::ISR0)),
            // Every interrupt is edge-triggered: the trigger-mode register is all zeros.
            r if (reg::TMR0..reg::TMR0 + 8).contains(&r) => 0,
            0x20..=0x27 => u64::from(self.irr.word(r - reg::IRR0)),
            reg::ESR => u64::from(self.esr),
            reg::ICR => self.icr,
            reg::TIMER_INITIAL => u64::from(self.initial_count),
            reg::TIMER_CURRENT => u64::from(self.current_count(now)),
            reg::TIMER_DIVIDE => u64::from(self.divide_config),
            reg::EOI | reg::SELF_IPI => return Err(ApicFault::WrongDirection),
            _ => match lvt_slot(r) {
                Some(s) => u64::from(self.lvt[s]),
                None => return Err(ApicFault::Reserved),
            },
        })
    }

    /// Writes x2APIC register MSR `msr` at guest TSC `now`.
    pub fn write(&mut self, msr: u32, value: u64, now: u64) -> Result<(), ApicFault> {
        let r = msr.wrapping_sub(X2APIC_MSR_FIRST);
        let low = value as u32;
        // Every x2APIC register but the ICR is 32 bits wide.
        if r != reg::ICR && value >> 32 != 0 {
            return Err(ApicFault::BadValue);
        }
        match r {
            reg::TPR => self.tpr = low as u8,
            reg::EOI => {
                if low != 0 {
                    return Err(ApicFault::BadValue);
                }
                if let Some(v) = self.isr.highest() {
                    self.isr.clear(v);
                }
            }
            reg::SVR => {
                self.svr = low & SVR_WRITABLE;
                if !self.enabled() {
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            reg::ESR => self.esr = 0,
            reg::ICR => {
                self.icr = value & !ICR_DELIVERY_STATUS;
                self.send_ipi(value);
            }
            reg::TIMER_INITIAL => {
                self.initial_count = low;
                if self.timer_mode() != TimerMode::TscDeadline {
                    self.timer_start = now;
                    self.timer_expiry = (low != 0).then(|| now.saturating_add(u64::from(low) * self.divisor()));
                }
            }
            reg::TIMER_DIVIDE => self.divide_config = low & DIVIDE_WRITABLE,
            reg::SELF_IPI => self.request(low as u8),
            reg::ID | reg::VERSION | reg::PPR | reg::LDR | reg::TIMER_CURRENT | 0x10..=0x27 => {
                return Err(ApicFault::WrongDirection);
            }
            _ => {
                let Some(s) = lvt_slot(r) else { return Err(ApicFault::Reserved) };
                let mut v = low & LVT_WRITABLE;
                if !self.enabled() {
                    v |= LVT_MASKED;
                }
                if s == LVT_TIMER_SLOT {
                    let old = self.timer_mode();
                    self.lvt[s] = v;
                    if self.timer_mode() != old {
                        // Switching modes disarms the timer (SDM 11.5.4.1).
                        self.timer_expiry = None;
                        self.tsc_deadline = 0;
                        self.initial_count = 0;
                    }
                } else {
                    self.lvt[s] = v;
                }
            }
        }
        Ok(())
    }

    /// An IPI: only fixed interrupts this CPU sends itself arrive (one vCPU).
    fn send_ipi(&mut self, icr: u64) {
        let vector = icr as u8;
        let mode = (icr >> 8) & 0b111;
        let shorthand = (icr >> 18) & 0b11;
        let dest = (icr >> 32) as u32;
        let to_self = match shorthand {
            0b00 => dest == 0 || dest == 0xFF || dest == u32::MAX,
            0b01 | 0b10 => true,
            _ => false,
        };
        if mode == 0 && to_self {
            self.request(vector);
        }
    }

    /// A 32-bit read of the xAPIC register page at `offset` (reserved registers read 0).
    pub fn mmio_read(&self, offset: u32, now: u64) -> u32 {
        let r = offset >> 4;
        match r {
            reg::ID => 0,
            reg::LDR => self.ldr,
            XAPIC_DFR => self.dfr,
            reg::ICR => self.icr as u32,
            XAPIC_ICR_HIGH => self.icr_high,
            _ => self.read(X2APIC_MSR_FIRST + r, now).map(|v| v as u32).unwrap_or(0),
        }
    }

    /// A 32-bit write of the xAPIC register page at `offset` (read-only and reserved
    /// registers ignore it, as the hardware does).
    pub fn mmio_write(&mut self, offset: u32, value: u32, now: u64) {
        let r = offset >> 4;
        match r {
            reg::EOI => {
                let _ = self.write(X2APIC_MSR_FIRST + reg::EOI, 0, now);
            }
            reg::LDR => self.ldr = value & TOP_BYTE,
            XAPIC_DFR => self.dfr = value | DFR_ONES,
            XAPIC_ICR_HIGH => self.icr_high = value & TOP_BYTE,
            reg::ICR => {
                let full = u64::from(self.icr_high >> 24) << 32 | u64::from(value);
                self.icr = u64::from(value) & !ICR_DELIVERY_STATUS;
                self.send_ipi(full);
            }
            // No self-IPI register in xAPIC mode.
            reg::SELF_IPI => {}
            _ => {
                let _ = self.write(X2APIC_MSR_FIRST + r, u64::from(value), now);
            }
        }
    }

    /// The vectors in IRR and ISR (for tests and saving).
    pub fn pending_bits(&self) -> (VectorBits, VectorBits) {
        (self.irr, self.isr)
    }
}

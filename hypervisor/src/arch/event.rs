//! The event format VMX and SVM share for injecting an interrupt or exception and for
//! reporting one whose delivery an exit interrupted: vector in bits 7:0, type in 10:8, an
//! error code that goes with it in bit 11, valid in bit 31 (Intel SDM Vol 3C 25.8.3 and
//! 26.9.3; AMD APM Vol 2 15.20, EVENTINJ and EXITINTINFO).

use bitflags::bitflags;

bitflags! {
    /// The flag bits of an event descriptor (the vector and type are fields).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EventInfo: u32 {
        /// An error code is delivered with the event.
        const ERROR_CODE = 1 << 11;
        /// The descriptor is valid.
        const VALID = 1 << 31;
    }
}

/// Event types (bits 10:8).
pub mod event_type {
    /// An external (or virtual) interrupt.
    pub const EXTERNAL_INTERRUPT: u32 = 0 << 8;
    /// A non-maskable interrupt.
    pub const NMI: u32 = 2 << 8;
    /// A hardware exception.
    pub const HARDWARE_EXCEPTION: u32 = 3 << 8;
    /// The type field.
    pub const MASK: u32 = 7 << 8;
}

/// An interrupt descriptor for `vector`.
pub const fn interrupt(vector: u8) -> u32 {
    vector as u32 | event_type::EXTERNAL_INTERRUPT | EventInfo::VALID.bits()
}

/// An exception descriptor for `vector`; `with_error` sets the error-code bit.
pub const fn exception(vector: u8, with_error: bool) -> u32 {
    let e = if with_error { EventInfo::ERROR_CODE.bits() } else { 0 };
    vector as u32 | event_type::HARDWARE_EXCEPTION | EventInfo::VALID.bits() | e
}

/// Whether a descriptor is valid.
pub const fn is_valid(info: u32) -> bool {
    info & EventInfo::VALID.bits() != 0
}

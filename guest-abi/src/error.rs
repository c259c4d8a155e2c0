//! Hypercall error codes: a small stable enum, returned negated in RAX (like errno).

/// Why a hypercall failed. The numeric values are ABI and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i64)]
pub enum HvError {
    /// The caller is not allowed to do this (an unprivileged domain asked for control).
    NotPermitted = 1,
    /// An argument is out of range or malformed.
    InvalidArgument = 2,
    /// A guest-physical pointer argument does not lie in the caller's memory.
    BadAddress = 3,
    /// Not enough machine memory.
    OutOfMemory = 4,
    /// No such domain.
    NoSuchDomain = 5,
    /// The object is in use (e.g. a template that still has clones).
    Busy = 6,
    /// Unknown hypercall number.
    NoSuchHypercall = 7,
    /// The domain is in the wrong state for this operation.
    WrongState = 8,
    /// The domain's private-page quota is used up.
    QuotaExceeded = 9,
    /// A buffer is too small for the result.
    BufferTooSmall = 10,
    /// A name is already taken.
    NameTaken = 11,
    /// Too many domains.
    TooManyDomains = 12,
    /// A saved image is corrupted, truncated or of an unknown version.
    BadImage = 13,
    /// The domain is not a template (or not a clone) as the call requires.
    NotTemplate = 14,
    /// The operation would write a read-only page.
    ReadOnly = 15,
    /// The operation timed out.
    TimedOut = 16,
    /// The page is not in memory yet: the domain is being restored lazily.
    NotResident = 17,
}

impl HvError {
    /// Every error, for tests and tables.
    pub const ALL: [HvError; 17] = [
        Self::NotPermitted,
        Self::InvalidArgument,
        Self::BadAddress,
        Self::OutOfMemory,
        Self::NoSuchDomain,
        Self::Busy,
        Self::NoSuchHypercall,
        Self::WrongState,
        Self::QuotaExceeded,
        Self::BufferTooSmall,
        Self::NameTaken,
        Self::TooManyDomains,
        Self::BadImage,
        Self::NotTemplate,
        Self::ReadOnly,
        Self::TimedOut,
        Self::NotResident,
    ];

    /// The error for a code (positive), if known.
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| *e as i64 == code)
    }

    /// Short message, as the dom0 shell prints after `error:`.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotPermitted => "not permitted",
            Self::InvalidArgument => "bad argument",
            Self::BadAddress => "bad guest address",
            Self::OutOfMemory => "out of memory",
            Self::NoSuchDomain => "unknown domain",
            Self::Busy => "busy",
            Self::NoSuchHypercall => "no such hypercall",
            Self::WrongState => "wrong domain state",
            Self::QuotaExceeded => "quota exceeded",
            Self::BufferTooSmall => "buffer too small",
            Self::NameTaken => "name already in use",
            Self::TooManyDomains => "too many domains",
            Self::BadImage => "bad image",
            Self::NotTemplate => "not a template",
            Self::ReadOnly => "read-only",
            Self::TimedOut => "timeout",
            Self::NotResident => "page not restored yet (lazy restore in progress)",
        }
    }

    /// Encodes the error as a hypercall return value.
    pub const fn to_ret(self) -> u64 {
        (-(self as i64)) as u64
    }
}

impl core::fmt::Display for HvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

/// Result of a hypercall.
pub type HvResult<T> = Result<T, HvError>;

/// Decodes a raw hypercall return value: non-negative is success, negative is `-error`.
/// An unknown negative code decodes as [`HvError::InvalidArgument`].
pub fn decode_ret(raw: u64) -> HvResult<u64> {
    let v = raw as i64;
    if v >= 0 {
        Ok(raw)
    } else {
        Err(HvError::from_code(-v).unwrap_or(HvError::InvalidArgument))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips_through_rax() {
        for e in HvError::ALL {
            assert_eq!(decode_ret(e.to_ret()), Err(e));
        }
        assert_eq!(decode_ret(0), Ok(0));
        assert_eq!(decode_ret(42), Ok(42));
    }
}

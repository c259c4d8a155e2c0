//! The block device the store sits on: 512-byte sectors, a write cache that `flush` empties.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Bytes per sector. The store addresses its device in these units only.
pub const SECTOR_BYTES: usize = 512;

/// Why a device operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The device reported an error at (or near) this sector.
    Io {
        /// The first sector of the failed transfer.
        lba: u64,
    },
    /// The transfer reaches past the end of the device, or its buffer is not whole sectors.
    OutOfRange,
    /// The device did not answer in time.
    Timeout,
    /// There is no device.
    NoDevice,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { lba } => write!(f, "i/o error at sector {lba}"),
            Self::OutOfRange => f.write_str("sector out of range"),
            Self::Timeout => f.write_str("device timeout"),
            Self::NoDevice => f.write_str("no disk"),
        }
    }
}

impl core::error::Error for DeviceError {}

/// A disk of [`SECTOR_BYTES`]-byte sectors.
///
/// `write` may leave data in a volatile cache: only after `flush` returns `Ok` must the data
/// survive a power loss. Writes issued before a flush may reach the media in any order, or
/// not at all if power is lost first. The store's crash safety rests on exactly this contract.
pub trait BlockDevice {
    /// Capacity in sectors.
    fn sectors(&self) -> u64;
    /// Reads `buf.len() / SECTOR_BYTES` sectors starting at `lba`; `buf.len()` is a multiple
    /// of [`SECTOR_BYTES`].
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    /// Writes `buf.len() / SECTOR_BYTES` sectors starting at `lba`; `buf.len()` is a multiple
    /// of [`SECTOR_BYTES`].
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError>;
    /// Makes every completed write durable (ATA FLUSH CACHE, command 0xE7).
    fn flush(&mut self) -> Result<(), DeviceError>;
    /// Cycles spent so far polling a drive that was not ready yet: the device's latency, not
    /// the caller's work (benchmarks take it out of figures the host's disk would blur). 0
    /// where the device does not measure it.
    fn wait_cycles(&self) -> u64 {
        0
    }
}

impl<D: BlockDevice + ?Sized> BlockDevice for &mut D {
    fn sectors(&self) -> u64 {
        (**self).sectors()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        (**self).read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        (**self).write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        (**self).flush()
    }
    fn wait_cycles(&self) -> u64 {
        (**self).wait_cycles()
    }
}

/// The byte range of a transfer of `len` bytes at `lba` on a device of `sectors` sectors, if
/// the transfer is whole sectors and fits.
pub fn transfer_range(
    sectors: u64,
    lba: u64,
    len: usize,
) -> Result<core::ops::Range<usize>, DeviceError> {
    if len % SECTOR_BYTES != 0 {
        return Err(DeviceError::OutOfRange);
    }
    let count = (len / SECTOR_BYTES) as u64;
    match lba.checked_add(count) {
        Some(end) if end <= sectors => {
            let start = usize::try_from(lba)
                .ok()
                .and_then(|l| l.checked_mul(SECTOR_BYTES))
                .ok_or(DeviceError::OutOfRange)?;
            Ok(start..start + len)
        }
        _ => Err(DeviceError::OutOfRange),
    }
}

/// A disk in memory, with no write cache (every write is durable at once). For tests and tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemDevice {
    bytes: Vec<u8>,
}

impl MemDevice {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: u64) -> Self {
        Self {
            bytes: vec![0; sectors as usize * SECTOR_BYTES],
        }
    }

    /// A disk holding `bytes` (its length rounded down to whole sectors).
    pub fn from_bytes(mut bytes: Vec<u8>) -> Self {
        bytes.truncate(bytes.len() / SECTOR_BYTES * SECTOR_BYTES);
        Self { bytes }
    }

    /// The disk's contents.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The disk's contents, to damage them on purpose.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// The disk's contents, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl BlockDevice for MemDevice {
    fn sectors(&self) -> u64 {
        (self.bytes.len() / SECTOR_BYTES) as u64
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let r = transfer_range(self.sectors(), lba, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        let r = transfer_range(self.sectors(), lba, buf.len())?;
        self.bytes[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}

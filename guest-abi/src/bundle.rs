//! The boot bundle: a ramdisk the image builder packs next to the hypervisor, listing named
//! guest images (ELF64), the boot configuration, optional scripts, and an unmodified Linux
//! kernel with its initramfs. Every entry's data starts
//! on a 4 KiB boundary so the hypervisor can map image pages into dom0 read-only.
//!
//! Layout (little endian):
//! ```text
//! 0      Header  (64 bytes)  magic "HVBUNDLE", version, entry count, total length, CRC-32
//! 64     Entry[n] (64 bytes each)  name (40 bytes, NUL padded), kind, flags, offset, length
//! ...    data, each entry 4 KiB aligned
//! ```
//! The CRC-32 covers every byte after the header, so truncation and corruption are refused.

use crate::crc32::crc32;

/// First eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"HVBUNDLE";
/// Format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Size of the header in bytes.
pub const HEADER_BYTES: usize = 64;
/// Size of one directory entry in bytes.
pub const ENTRY_BYTES: usize = 64;
/// Longest entry name in bytes.
pub const NAME_MAX_BYTES: usize = 40;
/// Alignment of every entry's data.
pub const DATA_ALIGN_BYTES: usize = 4096;
/// Most entries a bundle may hold.
pub const MAX_ENTRIES: usize = 256;

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EntryKind {
    /// An ELF64 guest image (dom0 or a domU).
    Elf = 1,
    /// The boot configuration: `key=value` lines.
    Config = 2,
    /// Lines for the dom0 shell.
    Script = 3,
    /// An unmodified Linux bzImage (x86 boot protocol), named [`LINUX_KERNEL_ENTRY`].
    LinuxKernel = 4,
    /// A Linux initramfs (cpio "newc", uncompressed), named [`LINUX_INITRD_ENTRY`].
    Initramfs = 5,
}

/// Name of the [`EntryKind::LinuxKernel`] entry the runner packs.
pub const LINUX_KERNEL_ENTRY: &str = "linux";
/// Name of the [`EntryKind::Initramfs`] entry the runner packs.
pub const LINUX_INITRD_ENTRY: &str = "linux-initrd";

impl EntryKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Elf),
            2 => Some(Self::Config),
            3 => Some(Self::Script),
            4 => Some(Self::LinuxKernel),
            5 => Some(Self::Initramfs),
            _ => None,
        }
    }
}

/// Why a bundle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Shorter than its header or its directory.
    Truncated,
    /// The magic bytes are wrong: this is not a bundle.
    BadMagic,
    /// A version this code does not read.
    BadVersion(u32),
    /// The checksum does not match the contents.
    BadChecksum { expected: u32, found: u32 },
    /// Entry `index` is malformed (name, kind, or data outside the bundle).
    BadEntry(usize),
    /// More entries than [`MAX_ENTRIES`].
    TooManyEntries,
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "bundle truncated"),
            Self::BadMagic => write!(f, "not a boot bundle (bad magic)"),
            Self::BadVersion(v) => write!(f, "unsupported bundle version {v}"),
            Self::BadChecksum { expected, found } => {
                write!(f, "bundle checksum mismatch (expected {expected:#010x}, found {found:#010x})")
            }
            Self::BadEntry(i) => write!(f, "bundle entry {i} is malformed"),
            Self::TooManyEntries => write!(f, "bundle has too many entries"),
        }
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// One named entry of a parsed bundle.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The entry's name (UTF-8, at most [`NAME_MAX_BYTES`]).
    pub name: &'a str,
    /// What the entry holds.
    pub kind: EntryKind,
    /// Free flags for the producer and consumer of the entry.
    pub flags: u32,
    /// Byte offset of the data from the start of the bundle (4 KiB aligned).
    pub offset: usize,
    /// The entry's data.
    pub data: &'a [u8],
}

/// A validated bundle borrowed from memory.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Bundle<'a> {
    /// Validates `bytes` (header, checksum, every entry) and returns the bundle. Trailing bytes
    /// beyond the recorded total length (padding added by a loader) are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.len() < HEADER_BYTES {
            return Err(BundleError::Truncated);
        }
        if bytes[0..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = read_u32(bytes, 8);
        if version != VERSION {
            return Err(BundleError::BadVersion(version));
        }
        let count = read_u32(bytes, 12) as usize;
        if count > MAX_ENTRIES {
            return Err(BundleError::TooManyEntries);
        }
        let total = read_u64(bytes, 16);
        if total > bytes.len() as u64 || total < (HEADER_BYTES + count * ENTRY_BYTES) as u64 {
            return Err(BundleError::Truncated);
        }
        let bytes = &bytes[..total as usize];
        let expected = read_u32(bytes, 24);
        let found = crc32(&bytes[HEADER_BYTES..]);
        if expected != found {
            return Err(BundleError::BadChecksum { expected, found });
        }
        let bundle = Self { bytes, count };
        for i in 0..count {
            bundle.decode(i)?;
        }
        Ok(bundle)
    }

    fn decode(&self, index: usize) -> Result<Entry<'a>, BundleError> {
        let at = HEADER_BYTES + index * ENTRY_BYTES;
        let raw = &self.bytes[at..at + ENTRY_BYTES];
        let name_len = raw[..NAME_MAX_BYTES].iter().position(|&b| b == 0).unwrap_or(NAME_MAX_BYTES);
        let name = core::str::from_utf8(&raw[..name_len]).map_err(|_| BundleError::BadEntry(index))?;
        if name.is_empty() || raw[name_len..NAME_MAX_BYTES].iter().any(|&b| b != 0) {
            return Err(BundleError::BadEntry(index));
        }
        let kind = EntryKind::from_u32(read_u32(raw, 40)).ok_or(BundleError::BadEntry(index))?;
        let flags = read_u32(raw, 44);
        let offset = read_u64(raw, 48);
        let len = read_u64(raw, 56);
        let end = offset.checked_add(len).ok_or(BundleError::BadEntry(index))?;
        if offset % DATA_ALIGN_BYTES as u64 != 0 || end > self.bytes.len() as u64 {
            return Err(BundleError::BadEntry(index));
        }
        let (offset, end) = (offset as usize, end as usize);
        Ok(Entry { name, kind, flags, offset, data: &self.bytes[offset..end] })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the bundle has no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `index`, if it exists.
    pub fn entry(&self, index: usize) -> Option<Entry<'a>> {
        if index < self.count { self.decode(index).ok() } else { None }
    }

    /// All entries in order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        (0..self.count).filter_map(|i| self.decode(i).ok())
    }

    /// The first entry named `name` of kind `kind`.
    pub fn find(&self, name: &str, kind: EntryKind) -> Option<Entry<'a>> {
        self.entries().find(|e| e.name == name && e.kind == kind)
    }

    /// The whole validated bundle.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Why an entry could not be added to a bundle being written.
#[cfg(any(feature = "alloc", test))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Empty, too long, or containing a NUL byte.
    BadName(alloc::string::String),
    /// A second entry of the same name and kind.
    Duplicate(alloc::string::String),
    /// More than [`MAX_ENTRIES`].
    TooManyEntries,
}

#[cfg(any(feature = "alloc", test))]
impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadName(n) => write!(f, "bad bundle entry name {n:?} (1..={NAME_MAX_BYTES} bytes, no NUL)"),
            Self::Duplicate(n) => write!(f, "bundle entry {n:?} given twice"),
            Self::TooManyEntries => write!(f, "more than {MAX_ENTRIES} bundle entries"),
        }
    }
}

/// Builds a bundle in memory (host tools).
#[cfg(any(feature = "alloc", test))]
#[derive(Default)]
pub struct BundleWriter {
    entries: alloc::vec::Vec<(alloc::string::String, EntryKind, u32, alloc::vec::Vec<u8>)>,
}

#[cfg(any(feature = "alloc", test))]
impl BundleWriter {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; names must be unique per kind.
    pub fn add(&mut self, name: &str, kind: EntryKind, flags: u32, data: &[u8]) -> Result<&mut Self, WriteError> {
        use alloc::string::ToString;
        if name.is_empty() || name.len() > NAME_MAX_BYTES || name.contains('\0') {
            return Err(WriteError::BadName(name.to_string()));
        }
        if self.entries.iter().any(|(n, k, _, _)| n == name && *k == kind) {
            return Err(WriteError::Duplicate(name.to_string()));
        }
        if self.entries.len() == MAX_ENTRIES {
            return Err(WriteError::TooManyEntries);
        }
        self.entries.push((name.to_string(), kind, flags, data.to_vec()));
        Ok(self)
    }

    /// Serializes the bundle.
    pub fn finish(&self) -> alloc::vec::Vec<u8> {
        let align = |n: usize| n.div_ceil(DATA_ALIGN_BYTES) * DATA_ALIGN_BYTES;
        let dir_end = HEADER_BYTES + self.entries.len() * ENTRY_BYTES;
        let mut out = alloc::vec![0u8; align(dir_end)];
        for (i, (name, kind, flags, data)) in self.entries.iter().enumerate() {
            let offset = out.len();
            out.extend_from_slice(data);
            out.resize(align(out.len()), 0);
            let at = HEADER_BYTES + i * ENTRY_BYTES;
            out[at..at + name.len()].copy_from_slice(name.as_bytes());
            out[at + 40..at + 44].copy_from_slice(&(*kind as u32).to_le_bytes());
            out[at + 44..at + 48].copy_from_slice(&flags.to_le_bytes());
            out[at + 48..at + 56].copy_from_slice(&(offset as u64).to_le_bytes());
            out[at + 56..at + 64].copy_from_slice(&(data.len() as u64).to_le_bytes());
        }
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(self.entries.len() as u32).to_le_bytes());
        let total = out.len() as u64;
        out[16..24].copy_from_slice(&total.to_le_bytes());
        let crc = crc32(&out[HEADER_BYTES..]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> alloc::vec::Vec<u8> {
        let mut w = BundleWriter::new();
        w.add("config", EntryKind::Config, 0, b"loglevel=debug\n").unwrap();
        w.add("hello", EntryKind::Elf, 7, &[0x7f, b'E', b'L', b'F', 1, 2, 3]).unwrap();
        w.add("empty", EntryKind::Script, 0, b"").unwrap();
        w.finish()
    }

    #[test]
    fn round_trip_keeps_names_kinds_and_data() {
        let bytes = sample();
        let b = Bundle::parse(&bytes).unwrap();
        assert_eq!(b.len(), 3);
        let hello = b.find("hello", EntryKind::Elf).unwrap();
        assert_eq!(hello.data, &[0x7f, b'E', b'L', b'F', 1, 2, 3]);
        assert_eq!(hello.flags, 7);
        assert_eq!(hello.offset % DATA_ALIGN_BYTES, 0);
        assert_eq!(b.find("config", EntryKind::Config).unwrap().data, b"loglevel=debug\n");
        assert!(b.find("empty", EntryKind::Script).unwrap().data.is_empty());
        assert!(b.find("hello", EntryKind::Config).is_none());
    }

    #[test]
    fn linux_kernel_and_initramfs_entries_round_trip_beside_an_elf_of_the_same_name() {
        let mut w = BundleWriter::new();
        w.add("linux", EntryKind::Elf, 0, b"\x7fELF").unwrap();
        w.add(LINUX_KERNEL_ENTRY, EntryKind::LinuxKernel, 0, b"bzImage").unwrap();
        w.add(LINUX_INITRD_ENTRY, EntryKind::Initramfs, 0, b"070701").unwrap();
        let bytes = w.finish();
        let b = Bundle::parse(&bytes).unwrap();
        assert_eq!(b.find(LINUX_KERNEL_ENTRY, EntryKind::LinuxKernel).unwrap().data, b"bzImage");
        assert_eq!(b.find(LINUX_INITRD_ENTRY, EntryKind::Initramfs).unwrap().data, b"070701");
        assert_eq!(b.find("linux", EntryKind::Elf).unwrap().data, b"\x7fELF");
        // Consumers that list ELF images see only the ELF one.
        assert_eq!(b.entries().filter(|e| e.kind == EntryKind::Elf).count(), 1);
        assert_eq!(b.entries().nth(1).unwrap().offset % DATA_ALIGN_BYTES, 0);
    }

    #[test]
    fn kind_numbers_are_stable_and_unknown_kinds_are_refused() {
        for (n, k) in [
            (1, EntryKind::Elf),
            (2, EntryKind::Config),
            (3, EntryKind::Script),
            (4, EntryKind::LinuxKernel),
            (5, EntryKind::Initramfs),
        ] {
            assert_eq!(EntryKind::from_u32(n), Some(k));
            assert_eq!(k as u32, n);
        }
        assert_eq!(EntryKind::from_u32(0), None);
        assert_eq!(EntryKind::from_u32(6), None);
        let mut bytes = sample();
        let at = HEADER_BYTES + 40;
        bytes[at..at + 4].copy_from_slice(&6u32.to_le_bytes());
        let crc = crc32(&bytes[HEADER_BYTES..]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::BadEntry(0));
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let mut bytes = sample();
        bytes.extend_from_slice(&[0xAA; 5000]);
        assert!(Bundle::parse(&bytes).is_ok());
    }

    #[test]
    fn truncated_bundle_is_refused() {
        let bytes = sample();
        for cut in [0, 10, HEADER_BYTES, bytes.len() - 1] {
            assert_eq!(Bundle::parse(&bytes[..cut]).unwrap_err(), BundleError::Truncated, "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let good = sample();
        for at in (HEADER_BYTES..good.len()).step_by(97) {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(matches!(Bundle::parse(&bad), Err(BundleError::BadChecksum { .. })), "flip at {at}");
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Bundle::parse(&bad).unwrap_err(), BundleError::BadMagic);
        let mut bad = good;
        bad[8] = 9;
        assert_eq!(Bundle::parse(&bad).unwrap_err(), BundleError::BadVersion(9));
    }

    #[test]
    fn entry_pointing_outside_is_refused_even_with_valid_checksum() {
        let mut bytes = sample();
        let at = HEADER_BYTES + ENTRY_BYTES + 56;
        bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let crc = crc32(&bytes[HEADER_BYTES..]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::BadEntry(1));
    }

    #[test]
    fn writer_rejects_bad_and_duplicate_names() {
        let mut w = BundleWriter::new();
        assert!(matches!(w.add("", EntryKind::Elf, 0, b""), Err(WriteError::BadName(_))));
        assert!(matches!(w.add(&"x".repeat(41), EntryKind::Elf, 0, b""), Err(WriteError::BadName(_))));
        w.add("a", EntryKind::Elf, 0, b"").unwrap();
        assert!(matches!(w.add("a", EntryKind::Elf, 0, b""), Err(WriteError::Duplicate(_))));
        assert!(w.add("a", EntryKind::Script, 0, b"").is_ok());
    }
}

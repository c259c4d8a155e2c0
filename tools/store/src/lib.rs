//! The image store on dom0's data disk: named images in contiguous extents behind a
//! crash-safe, double-buffered directory. `no_std` + `alloc`, shared by dom0 and the host's
//! `boot store` command. The design, and why, is in `docs/store.md`.
//!
//! - **Layout.** Sector 0 is a superblock (magic, version, geometry, checksum), written once by
//!   [`Store::format`]. Two directory slots follow, each a header (generation number, entry
//!   count, next creation sequence, XXH3-64 over the slot) and up to [`MAX_ENTRIES`] entries.
//!   The rest is data: each image is one contiguous extent, 4 KiB-aligned.
//! - **Crash safety.** A new image is written only into space that no published image (nor
//!   one being written) uses; [`Store::commit`] flushes the image's data, then writes the
//!   whole new directory into the slot *not* in use, with the next generation, and flushes
//!   again. [`Store::open`] takes the intact slot with the highest generation. A power loss at
//!   any point therefore leaves either the old directory or the new one, and the old one's
//!   images were never touched. [`Store::remove`] publishes a directory without the entry.
//! - **Errors.** A failed operation leaves the store as it was, on disk and in memory: space
//!   is marked used only once a directory naming it is durable. (If publishing fails, the
//!   image's extent is kept out of use until the next directory is published, since the
//!   device may have stored that directory after all.)
//! - **Memory.** Bounded: the directory (at most [`MAX_ENTRIES`] entries), one sector of
//!   buffered partial data per writer, 32 KiB while verifying. Nothing grows with image size.
//! - **Checksums.** Each entry keeps the rapidhash v3 of its image's bytes ([`Store::verify`],
//!   [`ImageChecksum`]).
#![no_std]

extern crate alloc;

mod device;
mod layout;
mod store;

pub use device::{BlockDevice, DeviceError, MemDevice, SECTOR_BYTES, transfer_range};
pub use store::{ImageChecksum, ImageWriter, Store};

use alloc::string::String;
use core::fmt;

/// Most images a store holds (published and being written together).
pub const MAX_ENTRIES: usize = 256;
/// Longest image name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest origin text, in bytes of UTF-8.
pub const MAX_ORIGIN_BYTES: usize = 64;

/// What an image holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// A saved domain.
    Domain,
    /// A saved template (a frozen domain clones are made from).
    Template,
    /// The difference of a domain from the template it was cloned from.
    Delta,
    /// The order in which a lazy restore of another image first touched its pages (named
    /// after that image with `.ws` appended), prefetched by the next lazy restore.
    WorkingSet,
}

impl ImageKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 4] = [Self::Domain, Self::Template, Self::Delta, Self::WorkingSet];

    /// The byte stored on disk: 1 to 4.
    pub const fn code(self) -> u8 {
        match self {
            Self::Domain => 1,
            Self::Template => 2,
            Self::Delta => 3,
            Self::WorkingSet => 4,
        }
    }

    /// The kind stored as `code`.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Domain),
            2 => Some(Self::Template),
            3 => Some(Self::Delta),
            4 => Some(Self::WorkingSet),
            _ => None,
        }
    }

    /// The lower-case name (`domain`, `template`, `delta`, `workset`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Domain => "domain",
            Self::Template => "template",
            Self::Delta => "delta",
            Self::WorkingSet => "workset",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The image's name (see [`is_valid_name`]).
    pub name: String,
    /// What it holds.
    pub kind: ImageKind,
    /// Its length in bytes.
    pub size_bytes: u64,
    /// Free text saying where it came from (`saved from d3 web`), at most
    /// [`MAX_ORIGIN_BYTES`] bytes.
    pub origin: String,
    /// Creation order: unique in the store, increasing, never reused.
    pub sequence: u64,
    /// The first sector of its extent.
    pub first_lba: u64,
    /// rapidhash v3 of its bytes (what [`ImageChecksum`] computes); 0 if `self_checked`.
    pub checksum: u64,
    /// Written with [`Store::begin_self_checked`]: the bytes carry their own checksums (a
    /// domain image checksums every record), so the store kept none of its own and
    /// [`Store::verify`] only re-reads them.
    pub self_checked: bool,
}

impl Entry {
    /// Sectors its extent occupies.
    pub fn sectors(&self) -> u64 {
        self.size_bytes.div_ceil(SECTOR_BYTES as u64)
    }

    /// The sector after its extent.
    pub fn end_lba(&self) -> u64 {
        self.first_lba + self.sectors()
    }
}

/// Whether `name` can name an image: 1 to 64 bytes of `[A-Za-z0-9._-]`, not starting with
/// `.` or `-`.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=MAX_NAME_BYTES).contains(&b.len())
        && !matches!(b[0], b'.' | b'-')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Which part of a store is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorruptWhat {
    /// The superblock has the store's magic but a bad checksum or geometry.
    Superblock,
    /// The superblock is of a format version this code does not know.
    Version,
    /// Neither directory slot is intact.
    Directory,
    /// The disk is smaller than the store its superblock describes.
    DiskSize,
    /// An image's bytes do not match their checksum.
    Image,
}

impl fmt::Display for CorruptWhat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Superblock => "bad superblock",
            Self::Version => "unknown format version",
            Self::Directory => "no intact directory",
            Self::DiskSize => "disk smaller than the store",
            Self::Image => "image checksum mismatch",
        })
    }
}

/// Why a store operation failed. Whatever it is, the store is as it was before the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The device failed.
    Device(DeviceError),
    /// The disk holds no store (no superblock).
    NotFormatted,
    /// The store is damaged.
    Corrupt(CorruptWhat),
    /// An image (published or being written) already has this name.
    NameTaken,
    /// No image has this name.
    NoSuchImage,
    /// Not a valid image name (see [`is_valid_name`]).
    BadName,
    /// The origin text is longer than [`MAX_ORIGIN_BYTES`].
    BadOrigin,
    /// The image does not fit in the free space it is being written into.
    Full,
    /// The directory already holds [`MAX_ENTRIES`] images.
    DirectoryFull,
    /// The image is larger than the whole store could ever hold.
    TooLarge,
    /// The disk is too small to hold a store.
    TooSmall,
    /// The writer does not belong to this store (or was already finished).
    BadWriter,
}

impl From<DeviceError> for StoreError {
    fn from(e: DeviceError) -> Self {
        Self::Device(e)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(e) => write!(f, "disk: {e}"),
            Self::NotFormatted => f.write_str("no store on this disk"),
            Self::Corrupt(what) => write!(f, "corrupt store: {what}"),
            Self::NameTaken => f.write_str("name taken"),
            Self::NoSuchImage => f.write_str("no such image"),
            Self::BadName => {
                f.write_str("bad name (1-64 of A-Z a-z 0-9 . _ -, not starting with . or -)")
            }
            Self::BadOrigin => f.write_str("origin too long (at most 64 bytes)"),
            Self::Full => f.write_str("store full"),
            Self::DirectoryFull => f.write_str("directory full"),
            Self::TooLarge => f.write_str("image larger than the store"),
            Self::TooSmall => f.write_str("disk too small for a store"),
            Self::BadWriter => f.write_str("writer not open in this store"),
        }
    }
}

impl core::error::Error for StoreError {}

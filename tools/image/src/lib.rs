//! The domain image format (docs/image-format.md): a versioned header, typed and checksummed
//! records, memory as runs of pages with zero pages elided, and a digest over the whole image.
//! `no_std` + `alloc`; every byte read is treated as hostile.
//!
//! Writing: [`Encoder::new`] writes the header and the fixed records, [`Encoder::note`] adds
//! free text, [`Encoder::platform`] the emulated devices' state, [`Encoder::memory`] adds
//! pages in ascending order, [`Encoder::finish`] writes END.
//! Reading: [`Decoder::new`] returns the [`Prologue`], [`Decoder::next_run`] hands out the
//! memory runs through the caller's buffer and returns `None` only after END verified. Nothing
//! either side allocates grows with the domain's memory.
//! Random access (a lazy restore): after [`Decoder::new`], [`Decoder::index_start`] says where
//! memory starts; [`index_runs`] walks the record headers from there through a [`ReadAt`]
//! without reading a page, checks the digest, counts and order, and returns a [`RunIndex`]
//! ([`RunIndex::find`] looks a gfn up); [`read_run`] reads and verifies one run. A run's
//! `first_gfn` is not in the digest: it is trusted only once `read_run` verified that run, and a
//! page in a gap only once the runs on both sides were (see [`RunIndex`]). [`IndexWalker`] does
//! the same walk one record at a time, [`IndexWalker::walk_to`] only as far as a gfn needs, so
//! a restore can answer a page fault before the whole image was walked (and verified: see
//! [`IndexWalker`]).
#![no_std]

extern crate alloc;

mod content;
mod decode;
mod encode;
mod error;
mod index;
mod wire;

pub use content::{ContentError, ContentHasher, content_digest};
pub use decode::{Decoder, Limits, Prologue};
pub use encode::{Encoder, ImageStats};
pub use error::{DecodeError, EncodeError};
pub use index::{
    IndexStart, IndexWalker, ReadAt, RunEntry, RunIndex, WalkStep, index_runs, read_run,
};
pub use wire::{
    record_hasher, END_BYTES, HEADER_BYTES, MAX_RECORD_PAYLOAD, RECORD_HEADER_BYTES, STATE_BYTES, VCPU_BYTES,
};

use alloc::string::String;

/// Bytes in a guest page.
pub const PAGE_BYTES: usize = 4096;
/// Most pages one MEMORY record carries (and the size, in pages, of [`Decoder::next_run`]'s buffer).
pub const MAX_RUN_PAGES: usize = 256;
/// The format version this code writes.
pub const FORMAT_VERSION: u16 = 1;
/// The oldest format version this code reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// The `min_reader` this code writes: readers older than this must refuse its images.
pub const MIN_READER_VERSION: u16 = 1;
/// The header magic.
pub const MAGIC: [u8; 8] = *b"COWVIMG\0";
/// Longest domain or template name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 32;
/// Longest NOTE text, in bytes of UTF-8.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Most NOTE records an image may carry.
pub const MAX_NOTES: usize = 16;
/// Longest PLATFORM payload (the hypervisor's encoded emulated devices, opaque here).
pub const MAX_PLATFORM_BYTES: usize = guest_abi::hypercall::nr::PLATFORM_STATE_MAX_BYTES as usize;

/// A 32-byte BLAKE3 digest.
pub type Digest = [u8; 32];

/// Record types (docs/image-format.md, "Records").
pub mod record {
    pub const DOMAIN: u32 = 1;
    pub const VCPU: u32 = 2;
    pub const STATE: u32 = 3;
    pub const TEMPLATE_REF: u32 = 4;
    pub const MEMORY: u32 = 5;
    pub const NOTE: u32 = 6;
    pub const END: u32 = 7;
    /// Optional: the emulated PC devices of the domain, as the hypervisor encodes them
    /// (`dom_platform_get`); a reader that does not know it restores the domain without them.
    pub const PLATFORM: u32 = 8;

    /// Record flag bit 0: a reader that does not know the type must refuse the image.
    pub const FLAG_MANDATORY: u32 = 1;

    /// The type's name in the spec, or `None` for a type this version does not define.
    pub const fn name(ty: u32) -> Option<&'static str> {
        Some(match ty {
            DOMAIN => "DOMAIN",
            VCPU => "VCPU",
            STATE => "STATE",
            TEMPLATE_REF => "TEMPLATE_REF",
            MEMORY => "MEMORY",
            NOTE => "NOTE",
            END => "END",
            PLATFORM => "PLATFORM",
            _ => return None,
        })
    }
}

/// What an image holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// A saved domain: every non-zero page.
    Domain,
    /// A saved copy-on-write template: every non-zero page; clones and deltas name it by its
    /// [content digest](ContentHasher).
    Template,
    /// A domain saved over a template: only the pages that differ from the template's
    /// (zero pages included); every absent page equals the template's.
    Delta,
}

impl ImageKind {
    /// The header and DOMAIN record code: 1, 2, 3.
    pub const fn code(self) -> u16 {
        match self {
            ImageKind::Domain => 1,
            ImageKind::Template => 2,
            ImageKind::Delta => 3,
        }
    }

    /// The kind with this code.
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(ImageKind::Domain),
            2 => Some(ImageKind::Template),
            3 => Some(ImageKind::Delta),
            _ => None,
        }
    }
}

/// The DOMAIN record: what the image is of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRecord {
    /// 1 to [`MAX_NAME_BYTES`] bytes of UTF-8 without control characters.
    pub name: String,
    /// Guest memory size: a non-zero multiple of [`PAGE_BYTES`].
    pub mem_bytes: u64,
    /// The domain's page quota.
    pub quota_pages: u64,
    /// The domain id it was saved from.
    pub origin_domid: u32,
}

/// The TEMPLATE_REF record of a delta image: which template the absent pages come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateRef {
    /// The template's [content digest](ContentHasher).
    pub digest: Digest,
    /// The template's memory size (equal to the delta's).
    pub mem_bytes: u64,
    /// The template's name when the delta was saved: a hint for people, 0 to
    /// [`MAX_NAME_BYTES`] bytes of UTF-8 without control characters.
    pub name: String,
}

/// Where an encoder puts bytes.
pub trait Sink {
    type Error;
    /// Write all of `bytes`.
    fn put(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// Where a decoder gets bytes.
pub trait Source {
    type Error;
    /// Read up to `buf.len()` bytes into `buf`; returns how many; 0 means end of input.
    fn take(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

impl Sink for alloc::vec::Vec<u8> {
    type Error = core::convert::Infallible;
    fn put(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl<T: Sink + ?Sized> Sink for &mut T {
    type Error = T::Error;
    fn put(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        (**self).put(bytes)
    }
}

impl Source for &[u8] {
    type Error = core::convert::Infallible;
    fn take(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.len());
        let (head, tail) = self.split_at(n);
        buf[..n].copy_from_slice(head);
        *self = tail;
        Ok(n)
    }
}

impl<T: Source + ?Sized> Source for &mut T {
    type Error = T::Error;
    fn take(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        (**self).take(buf)
    }
}

/// Whether a name is 1 to [`MAX_NAME_BYTES`] bytes (0 allowed if `may_be_empty`) without
/// control characters.
pub(crate) fn name_ok(name: &str, may_be_empty: bool) -> bool {
    (may_be_empty || !name.is_empty())
        && name.len() <= MAX_NAME_BYTES
        && !name.chars().any(char::is_control)
}

/// Whether a page is all zero (the test the encoder leaves zero pages out by).
pub fn is_zero_page(page: &[u8]) -> bool {
    let (chunks, rest) = page.as_chunks::<8>();
    chunks.iter().all(|c| u64::from_ne_bytes(*c) == 0) && rest.iter().all(|&b| b == 0)
}

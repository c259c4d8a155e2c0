//! The content digest: what a domain holds, independent of how an image of it was encoded
//! (record boundaries, notes, zero pages fed or skipped) and of who it is (domain id, clone
//! identity, generation) or when (clock, TSC, timer). dom0 computes it live from a template's
//! memory and context, or from the template's image while reading it; a delta image names its
//! template by it. Definition: docs/image-format.md, "Content digest".

use crate::wire::{self, CONTENT_STATE_BYTES, VCPU_BYTES};
use crate::{Digest, PAGE_BYTES, is_zero_page};
use core::fmt;
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;

/// Domain-separation prefix of the outer hash.
const TAG: &[u8] = b"cowvisor-content-v1";
/// Prefix used instead after a misuse, so the result matches no correctly computed digest.
const TAG_MISUSED: &[u8] = b"cowvisor-content-v1-misused";

/// A page fed to [`ContentHasher::page`] that it cannot take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentError {
    /// Pages must come in strictly ascending gfn order.
    NotAscending { gfn: u64 },
    /// The page lies beyond `mem_bytes`.
    OutOfRange { gfn: u64 },
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentError::NotAscending { gfn } => write!(f, "page {gfn:#x} not ascending"),
            ContentError::OutOfRange { gfn } => {
                write!(f, "page {gfn:#x} outside the domain's memory")
            }
        }
    }
}

impl core::error::Error for ContentError {}

/// Computes a content digest incrementally: `new`, `context` (once, at any point), `page`
/// for pages in ascending gfn order (zero pages may be fed or skipped: same result),
/// `finish`.
#[derive(Clone)]
pub struct ContentHasher {
    mem_bytes: u64,
    /// The gfns of the non-zero pages, 8 bytes each.
    gfns: blake3::Hasher,
    /// The non-zero pages themselves, 4096 bytes each: kept apart from the gfns so BLAKE3
    /// sees page-aligned input (its SIMD code hashes whole 1 KiB chunks in parallel).
    pages: blake3::Hasher,
    context: Option<([u8; VCPU_BYTES], [u8; CONTENT_STATE_BYTES])>,
    next_gfn: u64,
    misused: bool,
}

impl ContentHasher {
    pub fn new(mem_bytes: u64) -> Self {
        Self {
            mem_bytes,
            gfns: blake3::Hasher::new(),
            pages: blake3::Hasher::new(),
            context: None,
            next_gfn: 0,
            misused: false,
        }
    }

    /// The vCPU context and the part of the saved state the digest covers: the extended
    /// registers, pending events, upcall and block state; not the block timer's remaining
    /// time, the guest clock and TSC, nor the identity (domid, parent, clone index,
    /// generation). A second call replaces the first.
    pub fn context(&mut self, vcpu: &VcpuContext, state: &SavedState) {
        let s = wire::encode_state(state);
        let mut covered = [0u8; CONTENT_STATE_BYTES];
        covered.copy_from_slice(&s[..CONTENT_STATE_BYTES]);
        self.context = Some((wire::encode_vcpu(vcpu), covered));
    }

    /// Page `gfn`. An error leaves the hasher misused: `finish` then returns a digest no
    /// correct computation produces.
    pub fn page(&mut self, gfn: u64, page: &[u8; PAGE_BYTES]) -> Result<(), ContentError> {
        if gfn < self.next_gfn {
            self.misused = true;
            return Err(ContentError::NotAscending { gfn });
        }
        let in_range = gfn
            .checked_add(1)
            .and_then(|e| e.checked_mul(PAGE_BYTES as u64))
            .is_some_and(|e| e <= self.mem_bytes);
        if !in_range {
            self.misused = true;
            return Err(ContentError::OutOfRange { gfn });
        }
        self.next_gfn = gfn + 1;
        if !is_zero_page(page) {
            self.gfns.update(&gfn.to_le_bytes());
            self.pages.update(page);
        }
        Ok(())
    }

    /// Feed a run of whole pages starting at `first_gfn` (e.g. what [`crate::Decoder::next_run`]
    /// returned); a trailing partial page is an error.
    pub fn run(&mut self, first_gfn: u64, pages: &[u8]) -> Result<(), ContentError> {
        let (chunks, rest) = pages.as_chunks::<PAGE_BYTES>();
        for (i, p) in chunks.iter().enumerate() {
            self.page(first_gfn.wrapping_add(i as u64), p)?;
        }
        if !rest.is_empty() {
            self.misused = true;
            return Err(ContentError::OutOfRange {
                gfn: first_gfn.wrapping_add(chunks.len() as u64),
            });
        }
        Ok(())
    }

    pub fn finish(self) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(if self.misused { TAG_MISUSED } else { TAG });
        h.update(&self.mem_bytes.to_le_bytes());
        match &self.context {
            Some((vcpu, state)) => {
                h.update(&[1]);
                h.update(vcpu);
                h.update(state);
            }
            None => {
                h.update(&[0]);
            }
        }
        h.update(self.gfns.finalize().as_bytes());
        h.update(self.pages.finalize().as_bytes());
        *h.finalize().as_bytes()
    }
}

/// The content digest of a domain of `mem_bytes` with this context and these pages
/// (`(gfn, page)` in ascending gfn order; zero pages may be left out).
pub fn content_digest<'a>(
    mem_bytes: u64,
    vcpu: &VcpuContext,
    state: &SavedState,
    pages: impl IntoIterator<Item = (u64, &'a [u8; PAGE_BYTES])>,
) -> Result<Digest, ContentError> {
    let mut h = ContentHasher::new(mem_bytes);
    h.context(vcpu, state);
    for (gfn, page) in pages {
        h.page(gfn, page)?;
    }
    Ok(h.finish())
}

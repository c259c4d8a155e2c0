//! Random access to an image's memory, for a lazy restore: [`index_runs`] walks the record
//! headers after the prologue without reading a page and checks the image digest, the counts
//! and the order rules; [`read_run`] then reads and verifies one MEMORY record where the index
//! says it is. [`IndexWalker`] is the same walk one record at a time, for a restore that must
//! not wait for all of it.

use crate::wire::{
    self, END_BYTES, MAX_RECORD_PAYLOAD, MEMORY_HEADER_BYTES, RECORD_HEADER_BYTES, RecordHeader,
};
use crate::{DecodeError, Digest, ImageKind, MAX_RUN_PAGES, PAGE_BYTES, record};
use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;
use core::fmt;

/// Where an index reads bytes: an image that can be read at any offset.
pub trait ReadAt {
    type Error;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 = end of image).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> core::result::Result<usize, Self::Error>;
}

impl ReadAt for &[u8] {
    type Error = Infallible;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> core::result::Result<usize, Self::Error> {
        Ok(copy_at(self, offset, buf))
    }
}

impl ReadAt for Vec<u8> {
    type Error = Infallible;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> core::result::Result<usize, Self::Error> {
        Ok(copy_at(self, offset, buf))
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &mut T {
    type Error = T::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> core::result::Result<usize, Self::Error> {
        (**self).read_at(offset, buf)
    }
}

/// Copy what `data` has at `offset` into `buf`; how many bytes (0 past the end).
fn copy_at(data: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let Some(rest) = usize::try_from(offset).ok().and_then(|o| data.get(o..)) else {
        return 0;
    };
    let n = buf.len().min(rest.len());
    buf[..n].copy_from_slice(&rest[..n]);
    n
}

/// Where [`index_runs`] picks up the walk [`crate::Decoder::new`] stopped: taken with
/// [`crate::Decoder::index_start`], so only from an image whose prologue passed every rule.
#[derive(Clone)]
pub struct IndexStart {
    /// Byte offset of the first MEMORY (or END) record header.
    pub(crate) offset: u64,
    /// The image digest over the header and every record header before that one.
    pub(crate) digest: blake3::Hasher,
    /// Records before that one.
    pub(crate) records: u64,
    pub(crate) kind: ImageKind,
    pub(crate) mem_bytes: u64,
}

impl IndexStart {
    /// Byte offset of the first MEMORY (or END) record header.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Records in the prologue (the first MEMORY or END record's index).
    pub fn records(&self) -> u64 {
        self.records
    }
    pub fn kind(&self) -> ImageKind {
        self.kind
    }
    /// The DOMAIN record's memory size.
    pub fn mem_bytes(&self) -> u64 {
        self.mem_bytes
    }
}

impl fmt::Debug for IndexStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexStart")
            .field("offset", &self.offset)
            .field("records", &self.records)
            .field("kind", &self.kind)
            .field("mem_bytes", &self.mem_bytes)
            .finish_non_exhaustive()
    }
}

/// One MEMORY record, as [`index_runs`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RunEntry {
    /// From the memory header: not covered by the image digest, trusted only once
    /// [`read_run`] has verified the record.
    pub first_gfn: u64,
    /// Pages in the run, 1 to [`MAX_RUN_PAGES`] (the record's length says the same, and the
    /// length is in the digest).
    pub pages: u32,
    /// Offset of the record header.
    pub offset: u64,
    /// The record header's length field: 16 + `pages` × 4096.
    pub length: u32,
    /// The record header's checksum (of the record header, memory header and pages).
    pub checksum: u64,
    /// Index of the record (0 = DOMAIN).
    pub record: u32,
}

/// Every MEMORY record of an image, in ascending gfn order, from an image whose digest, counts
/// and order rules [`index_runs`] checked.
///
/// **What is verified and what is not.** The digest covers every record header, so the number
/// of runs, where each record is, its page count (through its length) and its checksum are
/// as the writer wrote them. A run's `first_gfn` is in the memory header, which only the
/// record's own checksum covers, and the index does not read the pages that checksum needs:
/// a run's placement is trusted only once [`read_run`] has verified that run. So before
/// taking a page as absent ([`RunIndex::find`] returns `Err(i)`: zero in a domain or template
/// image, the template's in a delta), the caller must have verified the runs on both sides of
/// the gap, `runs[i - 1]` and `runs[i]` (those that exist): a corrupt `first_gfn` on either
/// side can hide a run that covers the page. And as with [`crate::Decoder::next_run`], a
/// page counts as good only after its run passed `read_run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIndex {
    /// Strictly ascending and not overlapping.
    pub runs: Vec<RunEntry>,
    /// The image digest (checked against END).
    pub digest: Digest,
    /// Pages in all runs (checked against END).
    pub pages: u64,
}

impl RunIndex {
    /// `Ok(i)`: `runs[i]` contains `gfn`; `Err(i)`: no run does, and `i` is where one would
    /// go (the runs before `i` end at or below `gfn`, those from `i` start above it).
    pub fn find(&self, gfn: u64) -> core::result::Result<usize, usize> {
        find_in(&self.runs, gfn)
    }
}

/// [`RunIndex::find`] over ascending, non-overlapping `runs`.
fn find_in(runs: &[RunEntry], gfn: u64) -> core::result::Result<usize, usize> {
    runs.binary_search_by(|r| {
        if r.first_gfn.saturating_add(r.pages as u64) <= gfn {
            core::cmp::Ordering::Less
        } else if r.first_gfn > gfn {
            core::cmp::Ordering::Greater
        } else {
            core::cmp::Ordering::Equal
        }
    })
}

/// Bytes of the buffer non-MEMORY payloads are read into, or streamed through.
const SCRATCH_BYTES: usize = 4096;
const _: () = assert!(END_BYTES <= SCRATCH_BYTES && SCRATCH_BYTES.is_multiple_of(8));
// A MEMORY record whose length passed its check has no padding.
const _: () = assert!(wire::padding(MEMORY_HEADER_BYTES) == 0 && PAGE_BYTES.is_multiple_of(8));

/// The payload buffer, allocated on first use (a walk that only reads MEMORY records so far
/// has not needed it).
fn scratch(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        *buf = vec![0u8; SCRATCH_BYTES];
    }
    buf
}

/// (`core::result::Result` spelled out where the error is not a `DecodeError`.)
type Result<T, E> = core::result::Result<T, DecodeError<E>>;

/// A record header as read, with where it was.
struct Rec {
    h: RecordHeader,
    offset: u64,
    index: u32,
}

/// Offsets only grow by record sizes from a real read, so they cannot reach `u64::MAX`; if a
/// source made them, saturating keeps them there (where reads find nothing) instead of
/// wrapping.
fn at(offset: u64, plus: usize) -> u64 {
    offset.saturating_add(plus as u64)
}

fn read_exact_at<R: ReadAt>(
    src: &mut R,
    mut offset: u64,
    mut buf: &mut [u8],
) -> Result<(), R::Error> {
    while !buf.is_empty() {
        let n = src
            .read_at(offset, buf)
            .map_err(DecodeError::Source)?
            .min(buf.len());
        if n == 0 {
            return Err(DecodeError::Truncated { at: offset });
        }
        offset = at(offset, n);
        buf = &mut buf[n..];
    }
    Ok(())
}

/// Read the record header at `offset`; refuse a length above the limit.
fn read_header<R: ReadAt>(src: &mut R, offset: u64, index: u32) -> Result<Rec, R::Error> {
    let mut raw = [0u8; RECORD_HEADER_BYTES];
    read_exact_at(src, offset, &mut raw)?;
    let h = RecordHeader::parse(&raw);
    if h.length as usize > MAX_RECORD_PAYLOAD {
        return Err(DecodeError::RecordTooLong {
            record: index,
            length: h.length,
        });
    }
    Ok(Rec { h, offset, index })
}

/// The header's flag bits 1-31 clear and reserved field zero.
fn check_fields<E>(rec: &Rec) -> Result<(), E> {
    if rec.h.flags & !record::FLAG_MANDATORY != 0 {
        return Err(DecodeError::BadFlags { ty: rec.h.ty });
    }
    if rec.h.reserved != 0 {
        return Err(DecodeError::Reserved { ty: rec.h.ty });
    }
    Ok(())
}

/// The checksum, then the fields (the order the sequential decoder checks them in).
fn check_record<E>(rec: &Rec, checksum: u64) -> Result<(), E> {
    if checksum != rec.h.checksum {
        return Err(DecodeError::RecordChecksum {
            record: rec.index,
            offset: rec.offset,
        });
    }
    check_fields(rec)
}

/// Read a record's payload and padding (into `scratch` if it fits, else through it) and check
/// its checksum, flags, reserved field and padding.
fn body<R: ReadAt>(src: &mut R, rec: &Rec, scratch: &mut [u8]) -> Result<(), R::Error> {
    let len = rec.h.length as usize;
    let total = len + wire::padding(len);
    let base = at(rec.offset, RECORD_HEADER_BYTES);
    let mut sum = wire::record_hasher();
    sum.write(&rec.h.head());
    let mut done = 0;
    let mut padding_ok = true;
    while done < total {
        let n = (total - done).min(scratch.len());
        // A payload that fits whole stays at the start of scratch for `payload`.
        let chunk = &mut scratch[..n];
        read_exact_at(src, at(base, done), chunk)?;
        sum.write(chunk);
        // The padding is what lies past `len`.
        padding_ok &= chunk[len.saturating_sub(done).min(n)..]
            .iter()
            .all(|&b| b == 0);
        done += n;
    }
    check_record(rec, sum.finish())?;
    if !padding_ok {
        return Err(DecodeError::Reserved { ty: rec.h.ty });
    }
    Ok(())
}

/// Walk the image from `start` (see [`crate::Decoder::index_start`]) to its END and return
/// where every MEMORY record is, reading each record header and each memory header but no
/// page: [`IndexWalker::step`] until END. It checks what the sequential decoder checks, in the
/// same order, except what needs the pages: every record header goes into the image digest;
/// lengths (at most [`MAX_RECORD_PAYLOAD`]; MEMORY 16 + n × 4096 with n = the memory header's
/// count, 1 to [`MAX_RUN_PAGES`]), flags and reserved fields; runs strictly ascending and
/// inside the domain's memory; no DOMAIN, VCPU, STATE, TEMPLATE_REF, NOTE or PLATFORM after
/// memory; unknown types skipped if optional (after their checksum), refused if mandatory;
/// every non-MEMORY record's checksum and padding; END's checksum, the digest, the record and
/// page counts, and nothing after END.
///
/// MEMORY checksums are not checked (that is [`read_run`]'s job), and nor, therefore, is any
/// `first_gfn`: see [`RunIndex`]. A memory header the index accepts can still be corrupt, and
/// a corrupt one can be refused here with a structural error (`BadLength`,
/// `RunNotAscending`, ...) where the sequential decoder reports `RecordChecksum`.
///
/// Reads two small byte ranges per MEMORY record (its record header and memory header: a
/// full run is 1 MiB of memory) and every other record whole, so its cost grows with the
/// image. Where that is too much to do before the domain runs, walk with an [`IndexWalker`]
/// only as far as needed instead.
///
/// Allocates a 4 KiB buffer and the index (one [`RunEntry`] per MEMORY record: at most one
/// per 4 KiB of image, and at most `mem_bytes` / 4096 of them).
pub fn index_runs<R: ReadAt>(src: &mut R, start: &IndexStart) -> Result<RunIndex, R::Error> {
    let mut walker = IndexWalker::new(start);
    while !matches!(walker.step(src)?, WalkStep::End(_)) {}
    walker.into_index().ok_or(DecodeError::Failed)
}

/// What one [`IndexWalker::step`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkStep {
    /// A MEMORY record was indexed: this entry, now the last of [`IndexWalker::runs`].
    Run(RunEntry),
    /// A record other than MEMORY and END (an optional one of a type this version does not
    /// know: every known type is refused after memory) was read whole, checked and skipped.
    Skipped,
    /// END was verified (checksum, digest, counts, nothing after it): the index is complete
    /// and this is the image digest.
    End(Digest),
}

/// [`index_runs`] one record at a time, for a lazy restore that must answer a page fault
/// before the whole image was walked: [`IndexWalker::walk_to`] reads record headers only until
/// the index covers the gfn asked for, so the first answer costs as many reads as there are
/// records up to that gfn, not as the image has.
///
/// Each [`IndexWalker::step`] reads and checks one record as `index_runs` does (same checks,
/// same order, same errors); `index_runs` is a loop over it.
///
/// **Until the walk is complete, the image is not verified.** The image digest, END's
/// counts and that the image is not truncated are checked only when END is reached; a run
/// indexed before that is as its record header says, and once [`read_run`] verified it its
/// pages match that record's checksum, but nothing yet says the record belongs to the image
/// the digest names, or that the image is whole. A caller that serves pages before
/// [`IndexWalker::is_complete`] must keep walking to END and treat an error there as the
/// image being bad after all (for a running domain: stop it). The rules on trusting a gap
/// ([`RunIndex`]: verify the runs on both sides with `read_run` first) apply to the runs
/// indexed so far, and to a gap past the last indexed run not at all: only
/// [`IndexWalker::covered_gfns`] and below is known.
///
/// An error is final: after it `step` and `walk_to` return [`DecodeError::Failed`] and read
/// nothing (the runs indexed before it stay readable through [`IndexWalker::runs`]). After
/// END, `step` returns the same `End` without reading.
#[derive(Clone)]
pub struct IndexWalker {
    /// Offset of the next record header.
    offset: u64,
    /// The image digest over the header and every record header before `offset`.
    digest: blake3::Hasher,
    /// Records before `offset`.
    records: u64,
    kind: ImageKind,
    mem_bytes: u64,
    /// The gfn after the last indexed run (0 before the first).
    next_gfn: u64,
    /// Pages in the indexed runs.
    pages: u64,
    runs: Vec<RunEntry>,
    /// For non-MEMORY payloads: allocated by the first one read (END at the latest).
    scratch: Vec<u8>,
    /// The image digest, once END was verified.
    done: Option<Digest>,
    failed: bool,
}

impl fmt::Debug for IndexWalker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexWalker")
            .field("offset", &self.offset)
            .field("records", &self.records)
            .field("runs", &self.runs.len())
            .field("pages", &self.pages)
            .field("next_gfn", &self.next_gfn)
            .field("done", &self.done.is_some())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl IndexWalker {
    /// A walk from `start` (see [`crate::Decoder::index_start`]); reads nothing yet.
    pub fn new(start: &IndexStart) -> Self {
        Self {
            offset: start.offset,
            digest: start.digest.clone(),
            records: start.records,
            kind: start.kind,
            mem_bytes: start.mem_bytes,
            next_gfn: 0,
            pages: 0,
            runs: Vec::new(),
            scratch: Vec::new(),
            done: None,
            failed: false,
        }
    }

    /// Read and check the next record (see [`index_runs`] for what is checked): a MEMORY
    /// record's record header and memory header, any other record whole. After `End` returns
    /// the same `End` again, after an error [`DecodeError::Failed`], reading nothing.
    pub fn step<R: ReadAt>(&mut self, src: &mut R) -> Result<WalkStep, R::Error> {
        if let Some(digest) = self.done {
            return Ok(WalkStep::End(digest));
        }
        if self.failed {
            return Err(DecodeError::Failed);
        }
        let r = self.read_record(src);
        self.failed = r.is_err();
        r
    }

    /// Step until the index covers `gfn`: a run was indexed that contains it or ends above it
    /// (every later run starts above it, so the answer cannot change), or END. Then as
    /// [`RunIndex::find`] over the runs indexed so far, which is what the complete index will
    /// answer: `Ok(i)`, `runs()[i]` contains `gfn`; `Err(i)`, no run does (as far as the
    /// index goes: see [`RunIndex`] before trusting a gap) and `i` is where one would go.
    /// Reads nothing once the index covers `gfn`; a `gfn` at or above
    /// [`IndexWalker::covered_gfns`] walks at least one record, and one no run reaches (past
    /// the domain's memory, or in a gap after the last run) walks to END. After an error
    /// returns [`DecodeError::Failed`], even for a `gfn` the index covers.
    pub fn walk_to<R: ReadAt>(
        &mut self,
        src: &mut R,
        gfn: u64,
    ) -> Result<core::result::Result<usize, usize>, R::Error> {
        if self.failed {
            return Err(DecodeError::Failed);
        }
        while self.done.is_none() && self.next_gfn <= gfn {
            self.step(src)?;
        }
        Ok(find_in(&self.runs, gfn))
    }

    /// The runs indexed so far, in ascending gfn order (all of them once complete).
    pub fn runs(&self) -> &[RunEntry] {
        &self.runs
    }

    /// END was verified: the walk is over and [`IndexWalker::into_index`] gives the index.
    pub fn is_complete(&self) -> bool {
        self.done.is_some()
    }

    /// The image digest, once complete.
    pub fn digest(&self) -> Option<Digest> {
        self.done
    }

    /// Pages in the runs indexed so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The gfn below which the index is final: every gfn below it is in an indexed run or in
    /// a gap before or between indexed runs, and no record still to be read can change that
    /// (runs ascend). The end of the last indexed run (0 before the first) while walking; the
    /// domain's memory (`mem_bytes` / 4096) once complete.
    pub fn covered_gfns(&self) -> u64 {
        if self.done.is_some() {
            self.mem_bytes / PAGE_BYTES as u64
        } else {
            self.next_gfn
        }
    }

    /// The index, once complete (`None` before END or after an error).
    pub fn into_index(self) -> Option<RunIndex> {
        let digest = self.done?;
        Some(RunIndex {
            runs: self.runs,
            digest,
            pages: self.pages,
        })
    }

    /// One record at `self.offset`. State changes on an error do not matter: the walk fails.
    fn read_record<R: ReadAt>(&mut self, src: &mut R) -> Result<WalkStep, R::Error> {
        let offset = self.offset;
        let rec = read_header(src, offset, u32::try_from(self.records).unwrap_or(u32::MAX))?;
        let ty = rec.h.ty;
        let len = rec.h.length as usize;
        let next = at(offset, RECORD_HEADER_BYTES + len + wire::padding(len));
        if ty != record::END {
            self.digest.update(&rec.h.encode());
        }
        let step = match ty {
            record::MEMORY => {
                let Some(data_len) = len
                    .checked_sub(MEMORY_HEADER_BYTES)
                    .filter(|n| n % PAGE_BYTES == 0)
                else {
                    // As the sequential decoder: the checksum first, then the length.
                    body(src, &rec, scratch(&mut self.scratch))?;
                    return Err(DecodeError::BadLength { ty });
                };
                check_fields(&rec)?;
                let mut mh = [0u8; MEMORY_HEADER_BYTES];
                read_exact_at(src, at(offset, RECORD_HEADER_BYTES), &mut mh)?;
                let (first_gfn, count, reserved) = wire::decode_memory_header(&mh);
                // `read_header` refused lengths above MAX_RECORD_PAYLOAD: data_len / 4096 <= 256.
                if count == 0 || count as usize != data_len / PAGE_BYTES {
                    return Err(DecodeError::BadLength { ty });
                }
                if reserved != 0 {
                    return Err(DecodeError::Reserved { ty });
                }
                if first_gfn < self.next_gfn {
                    return Err(DecodeError::RunNotAscending { gfn: first_gfn });
                }
                let end = first_gfn.checked_add(count as u64);
                if !end
                    .and_then(|e| e.checked_mul(PAGE_BYTES as u64))
                    .is_some_and(|e| e <= self.mem_bytes)
                {
                    return Err(DecodeError::RunOutOfRange {
                        gfn: first_gfn,
                        pages: count,
                    });
                }
                let entry = RunEntry {
                    first_gfn,
                    pages: count,
                    offset,
                    length: rec.h.length,
                    checksum: rec.h.checksum,
                    record: rec.index,
                };
                self.next_gfn = first_gfn + count as u64;
                self.pages += count as u64;
                self.runs.push(entry);
                self.records += 1;
                WalkStep::Run(entry)
            }
            record::END => {
                body(src, &rec, scratch(&mut self.scratch))?;
                let raw = self
                    .scratch
                    .first_chunk::<END_BYTES>()
                    .filter(|_| len == END_BYTES)
                    .ok_or(DecodeError::BadLength { ty })?;
                let end = wire::decode_end(raw);
                let digest: Digest = *self.digest.finalize().as_bytes();
                if end.digest != digest {
                    return Err(DecodeError::DigestMismatch);
                }
                if end.records != self.records || end.pages != self.pages {
                    return Err(DecodeError::CountMismatch);
                }
                let mut one = [0u8; 1];
                if src.read_at(next, &mut one).map_err(DecodeError::Source)? != 0 {
                    return Err(DecodeError::TrailingBytes);
                }
                self.done = Some(digest);
                WalkStep::End(digest)
            }
            _ => {
                body(src, &rec, scratch(&mut self.scratch))?;
                self.records += 1;
                match ty {
                    record::TEMPLATE_REF if self.kind != ImageKind::Delta => {
                        return Err(DecodeError::KindMismatch);
                    }
                    record::DOMAIN | record::VCPU | record::STATE | record::TEMPLATE_REF => {
                        return Err(DecodeError::Duplicate { ty });
                    }
                    record::NOTE | record::PLATFORM => {
                        return Err(DecodeError::OutOfOrder { ty });
                    }
                    _ if rec.h.flags & record::FLAG_MANDATORY != 0 => {
                        return Err(DecodeError::UnknownMandatory { ty });
                    }
                    _ => WalkStep::Skipped,
                }
            }
        };
        self.offset = next;
        Ok(step)
    }
}

/// Read the MEMORY record `e` names (from a [`RunIndex`] of the same image) and copy its pages
/// to the start of `pages`, which must hold `e.pages` pages [`DecodeError::BufferTooSmall`].
/// Checks, in order: the entry is a possible MEMORY record [`DecodeError::BadLength`]; the
/// record is all there [`DecodeError::Truncated`]; its header is the one the index read, and
/// the image digest covered (type, length, checksum) [`DecodeError::DigestMismatch`]; the
/// record checksum over its header, memory header and pages, then its flags and reserved
/// fields, as the sequential decoder checks them; and that the memory header is the one the
/// index placed the run by [`DecodeError::RecordChecksum`] (it differs only if the image
/// changed under the index). Only then is the run's placement and content verified. On an
/// error the bytes in `pages` are not the image's.
pub fn read_run<R: ReadAt>(src: &mut R, e: &RunEntry, pages: &mut [u8]) -> Result<(), R::Error> {
    let ty = record::MEMORY;
    let count = e.pages as usize;
    if count == 0
        || count > MAX_RUN_PAGES
        || e.length as usize != MEMORY_HEADER_BYTES + count * PAGE_BYTES
    {
        return Err(DecodeError::BadLength { ty });
    }
    let data = pages
        .get_mut(..count * PAGE_BYTES)
        .ok_or(DecodeError::BufferTooSmall)?;
    let rec = read_header(src, e.offset, e.record)?;
    if rec.h.ty != ty || rec.h.length != e.length || rec.h.checksum != e.checksum {
        return Err(DecodeError::DigestMismatch);
    }
    let mut mh = [0u8; MEMORY_HEADER_BYTES];
    read_exact_at(src, at(e.offset, RECORD_HEADER_BYTES), &mut mh)?;
    read_exact_at(
        src,
        at(e.offset, RECORD_HEADER_BYTES + MEMORY_HEADER_BYTES),
        data,
    )?;
    // No padding: the length is a multiple of 8 (asserted above).
    let mut sum = wire::record_hasher();
    sum.write(&rec.h.head());
    sum.write(&mh);
    sum.write(data);
    check_record(&rec, sum.finish())?;
    let (first_gfn, n, reserved) = wire::decode_memory_header(&mh);
    if reserved != 0 {
        return Err(DecodeError::Reserved { ty });
    }
    if first_gfn != e.first_gfn || n != e.pages {
        return Err(DecodeError::RecordChecksum {
            record: e.record,
            offset: e.offset,
        });
    }
    Ok(())
}

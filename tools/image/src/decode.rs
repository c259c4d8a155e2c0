//! Reading an image. Every length is checked before anything is read or allocated, every
//! record's checksum before its contents are looked at, and the image digest before the
//! last run is taken as good (`next_run` returns `None` only then).

use crate::index::IndexStart;
use crate::wire::{
    self, DOMAIN_BYTES, END_BYTES, HEADER_BYTES, MAX_RECORD_PAYLOAD, MEMORY_HEADER_BYTES,
    RECORD_HEADER_BYTES, RecordHeader, STATE_BYTES, TEMPLATE_REF_BYTES, VCPU_BYTES,
};
use crate::{
    DecodeError, Digest, DomainRecord, FORMAT_VERSION, ImageKind, MAGIC, MAX_NAME_BYTES,
    MAX_NOTE_BYTES, MAX_NOTES, MAX_PLATFORM_BYTES, MAX_RUN_PAGES, OLDEST_READABLE_VERSION, PAGE_BYTES, Source,
    TemplateRef, name_ok, record,
};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;

/// What a reader accepts beyond the format's own rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The reader refuses images whose `mem_bytes` is above this.
    pub max_mem_bytes: u64,
}

/// Everything in an image before its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prologue {
    pub kind: ImageKind,
    /// The header's format version (at least [`OLDEST_READABLE_VERSION`]; may be above
    /// [`FORMAT_VERSION`] when the writer said this reader can still read it).
    pub version: u16,
    pub domain: DomainRecord,
    pub vcpu: VcpuContext,
    pub state: SavedState,
    /// The template a delta is over (`Some` exactly for [`ImageKind::Delta`]).
    pub template: Option<TemplateRef>,
    /// The NOTE records, in order.
    pub notes: Vec<String>,
    /// The PLATFORM record's bytes (the emulated devices, opaque here: the hypervisor
    /// validates them when dom0 hands them back), if the image has one.
    pub platform: Option<Vec<u8>>,
}

/// Bytes of the decoder's own buffer: every non-MEMORY payload it keeps fits.
const SCRATCH_BYTES: usize = 4096;
const _: () = assert!(
    STATE_BYTES <= SCRATCH_BYTES && MAX_NOTE_BYTES + 8 <= SCRATCH_BYTES && MAX_PLATFORM_BYTES + 8 <= SCRATCH_BYTES
);

type Result<T, E> = core::result::Result<T, DecodeError<E>>;

struct Input<S> {
    src: S,
    /// Bytes read so far.
    pos: u64,
}

impl<S: Source> Input<S> {
    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), S::Error> {
        while !buf.is_empty() {
            let n = self
                .src
                .take(buf)
                .map_err(DecodeError::Source)?
                .min(buf.len());
            if n == 0 {
                return Err(DecodeError::Truncated { at: self.pos });
            }
            self.pos += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Memory,
    Done(Digest),
    Failed,
}

/// A record header as read, with where it was.
#[derive(Clone, Copy)]
struct Rec {
    h: RecordHeader,
    /// Byte offset of the record header.
    offset: u64,
    /// Index of the record (0 = DOMAIN).
    index: u32,
}

/// Reads one image from a [`Source`]: [`Decoder::new`] up to the first memory,
/// [`Decoder::next_run`] for the memory. Holds a fixed 4 KiB buffer, nothing more.
pub struct Decoder<S: Source> {
    input: Input<S>,
    kind: ImageKind,
    mem_bytes: u64,
    /// BLAKE3 over every byte before the END record.
    digest: blake3::Hasher,
    /// Records read before END.
    records: u64,
    /// Pages read in MEMORY records.
    pages: u64,
    /// Lowest gfn the next run may start at.
    next_gfn: u64,
    /// A MEMORY or END header read by `new`, its payload not yet; not yet in `digest` either
    /// (`run` feeds it when it takes it), so that [`Decoder::index_start`] can hand out the
    /// digest of everything before it.
    pending: Option<Rec>,
    scratch: Vec<u8>,
    phase: Phase,
}

impl<S: Source> Decoder<S> {
    /// Read and check the header and every record before the first MEMORY (or END).
    pub fn new(source: S, limits: Limits) -> Result<(Self, Prologue), S::Error> {
        let mut input = Input {
            src: source,
            pos: 0,
        };
        let mut raw = [0u8; HEADER_BYTES];
        input.read_exact(&mut raw)?;
        if raw[..8] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let (header, sum) = wire::parse_header(&raw);
        if sum != wire::header_checksum(&raw) {
            return Err(DecodeError::HeaderChecksum);
        }
        let (version, min_reader) = (header.version, header.min_reader);
        if version < OLDEST_READABLE_VERSION
            || min_reader > FORMAT_VERSION
            || min_reader == 0
            || min_reader > version
        {
            return Err(DecodeError::UnsupportedVersion {
                version,
                min_reader,
            });
        }
        let kind =
            ImageKind::from_code(header.kind).ok_or(DecodeError::BadKind { kind: header.kind })?;
        if header.flags & 0xFFFF != 0 {
            return Err(DecodeError::UnknownFlags {
                flags: header.flags,
            });
        }
        let mut dec = Decoder {
            input,
            kind,
            mem_bytes: 0,
            digest: blake3::Hasher::new(),
            records: 0,
            pages: 0,
            next_gfn: 0,
            pending: None,
            scratch: vec![0u8; SCRATCH_BYTES],
            phase: Phase::Memory,
        };
        dec.digest.update(&raw);
        let prologue = dec.prologue(limits, version)?;
        Ok((dec, prologue))
    }

    /// The next run of memory: its pages are copied to the start of `pages` (which must hold
    /// [`MAX_RUN_PAGES`] pages) and `(first_gfn, page_count)` returned. `None` once the END
    /// record is read and the image digest, the counts and the end of input are checked;
    /// every page absent from the runs is zero (a delta: the template's).
    pub fn next_run(&mut self, pages: &mut [u8]) -> Result<Option<(u64, usize)>, S::Error> {
        match self.phase {
            Phase::Done(_) => return Ok(None),
            Phase::Failed => return Err(DecodeError::Failed),
            Phase::Memory => {}
        }
        if pages.len() < MAX_RUN_PAGES * PAGE_BYTES {
            return Err(DecodeError::BufferTooSmall);
        }
        let r = self.run(pages);
        if r.is_err() {
            self.phase = Phase::Failed;
        }
        r
    }

    /// Where a random-access walk of the memory ([`crate::index_runs`]) starts: the offset of
    /// the first MEMORY (or END) record, the image digest of everything before it, the records
    /// read so far, the kind and the memory size. `Some` only between [`Decoder::new`] and the
    /// first [`Decoder::next_run`] (after it the decoder has consumed memory the walk would
    /// miss).
    pub fn index_start(&self) -> Option<IndexStart> {
        let rec = self.pending.as_ref()?;
        if !matches!(self.phase, Phase::Memory) {
            return None;
        }
        Some(IndexStart {
            offset: rec.offset,
            digest: self.digest.clone(),
            records: self.records,
            kind: self.kind,
            mem_bytes: self.mem_bytes,
        })
    }

    /// The image digest, once `next_run` has returned `None`.
    pub fn digest(&self) -> Option<Digest> {
        match self.phase {
            Phase::Done(d) => Some(d),
            _ => None,
        }
    }

    /// Bytes read from the source so far (for progress reports).
    pub fn position(&self) -> u64 {
        self.input.pos
    }

    /// The source back.
    pub fn into_source(self) -> S {
        self.input.src
    }

    fn prologue(&mut self, limits: Limits, version: u16) -> Result<Prologue, S::Error> {
        let first = self.header()?;
        self.body(&first)?;
        if first.h.ty != record::DOMAIN {
            return Err(DecodeError::OutOfOrder { ty: first.h.ty });
        }
        let raw: &[u8; DOMAIN_BYTES] = self.payload(&first)?;
        let d = wire::decode_domain(raw);
        if d.kind != self.kind.code() {
            return Err(DecodeError::KindMismatch);
        }
        let name = name_from(&d.name, d.name_len as usize, false).ok_or(DecodeError::BadName)?;
        if d.mem_bytes == 0 || d.mem_bytes % PAGE_BYTES as u64 != 0 {
            return Err(DecodeError::BadMemSize {
                mem_bytes: d.mem_bytes,
            });
        }
        if d.mem_bytes > limits.max_mem_bytes {
            return Err(DecodeError::MemoryTooLarge {
                mem_bytes: d.mem_bytes,
                limit: limits.max_mem_bytes,
            });
        }
        self.mem_bytes = d.mem_bytes;
        let domain = DomainRecord {
            name,
            mem_bytes: d.mem_bytes,
            quota_pages: d.quota_pages,
            origin_domid: d.origin_domid,
        };
        let (mut vcpu, mut state, mut template) = (None, None, None);
        let mut notes = Vec::new();
        let mut platform: Option<Vec<u8>> = None;
        loop {
            let rec = self.read_header()?;
            let ty = rec.h.ty;
            if ty == record::MEMORY || ty == record::END {
                // Into the digest when `run` takes it (see `pending`).
                self.pending = Some(rec);
                break;
            }
            self.digest_header(&rec);
            self.body(&rec)?;
            match ty {
                record::DOMAIN => return Err(DecodeError::Duplicate { ty }),
                record::VCPU => {
                    if vcpu.is_some() {
                        return Err(DecodeError::Duplicate { ty });
                    }
                    vcpu = Some(wire::decode_vcpu(self.payload::<VCPU_BYTES>(&rec)?));
                }
                record::STATE => {
                    if state.is_some() {
                        return Err(DecodeError::Duplicate { ty });
                    }
                    state = Some(wire::decode_state(self.payload::<STATE_BYTES>(&rec)?));
                }
                record::TEMPLATE_REF => {
                    if self.kind != ImageKind::Delta {
                        return Err(DecodeError::KindMismatch);
                    }
                    if template.is_some() {
                        return Err(DecodeError::Duplicate { ty });
                    }
                    let t = wire::decode_template(self.payload::<TEMPLATE_REF_BYTES>(&rec)?);
                    if t.reserved != 0 {
                        return Err(DecodeError::Reserved { ty });
                    }
                    let name = name_from(&t.name, t.name_len as usize, true)
                        .ok_or(DecodeError::BadName)?;
                    if t.mem_bytes != self.mem_bytes {
                        return Err(DecodeError::TemplateMismatch);
                    }
                    template = Some(TemplateRef {
                        digest: t.digest,
                        mem_bytes: t.mem_bytes,
                        name,
                    });
                }
                record::NOTE => {
                    if notes.len() >= MAX_NOTES {
                        return Err(DecodeError::TooManyNotes);
                    }
                    let len = rec.h.length as usize;
                    let text = self.scratch.get(..len).filter(|_| len <= MAX_NOTE_BYTES);
                    let text = text
                        .and_then(|t| core::str::from_utf8(t).ok())
                        .ok_or(DecodeError::BadNote)?;
                    notes.push(String::from(text));
                }
                record::PLATFORM => {
                    if platform.is_some() {
                        return Err(DecodeError::Duplicate { ty });
                    }
                    let len = rec.h.length as usize;
                    let bytes = self
                        .scratch
                        .get(..len)
                        .filter(|_| (1..=MAX_PLATFORM_BYTES).contains(&len))
                        .ok_or(DecodeError::BadLength { ty })?;
                    platform = Some(bytes.to_vec());
                }
                _ => self.unknown(&rec)?,
            }
        }
        let vcpu = vcpu.ok_or(DecodeError::Missing { ty: record::VCPU })?;
        let state = state.ok_or(DecodeError::Missing { ty: record::STATE })?;
        if (self.kind == ImageKind::Delta) != template.is_some() {
            return Err(DecodeError::KindMismatch);
        }
        Ok(Prologue {
            kind: self.kind,
            version,
            domain,
            vcpu,
            state,
            template,
            notes,
            platform,
        })
    }

    fn run(&mut self, pages: &mut [u8]) -> Result<Option<(u64, usize)>, S::Error> {
        loop {
            let rec = match self.pending.take() {
                Some(rec) => {
                    self.digest_header(&rec);
                    rec
                }
                None => self.header()?,
            };
            let ty = rec.h.ty;
            match ty {
                record::MEMORY => return self.memory(&rec, pages).map(Some),
                record::END => {
                    self.end(&rec)?;
                    return Ok(None);
                }
                _ => {}
            }
            self.body(&rec)?;
            match ty {
                record::TEMPLATE_REF if self.kind != ImageKind::Delta => {
                    return Err(DecodeError::KindMismatch);
                }
                record::DOMAIN | record::VCPU | record::STATE | record::TEMPLATE_REF => {
                    return Err(DecodeError::Duplicate { ty });
                }
                record::NOTE | record::PLATFORM => return Err(DecodeError::OutOfOrder { ty }),
                _ => self.unknown(&rec)?,
            }
        }
    }

    /// A MEMORY record, its pages read straight into `pages`.
    fn memory(&mut self, rec: &Rec, pages: &mut [u8]) -> Result<(u64, usize), S::Error> {
        let ty = rec.h.ty;
        let len = rec.h.length as usize;
        let Some(data_len) = len
            .checked_sub(MEMORY_HEADER_BYTES)
            .filter(|n| n % PAGE_BYTES == 0)
        else {
            self.body(rec)?;
            return Err(DecodeError::BadLength { ty });
        };
        // `header` refused lengths above MAX_RECORD_PAYLOAD, so the run fits the buffer.
        let data = pages
            .get_mut(..data_len)
            .ok_or(DecodeError::BadLength { ty })?;
        let mut mh = [0u8; MEMORY_HEADER_BYTES];
        self.input.read_exact(&mut mh)?;
        self.input.read_exact(data)?;
        let mut sum = wire::record_hasher();
        sum.write(&rec.h.head());
        sum.write(&mh);
        sum.write(data);
        self.check_record(rec, sum.finish())?;
        let (first_gfn, count, reserved) = wire::decode_memory_header(&mh);
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
        self.next_gfn = first_gfn + count as u64;
        self.pages += count as u64;
        Ok((first_gfn, count as usize))
    }

    fn end(&mut self, rec: &Rec) -> Result<(), S::Error> {
        self.body(rec)?;
        let end = wire::decode_end(self.payload::<END_BYTES>(rec)?);
        let digest: Digest = *self.digest.finalize().as_bytes();
        if end.digest != digest {
            return Err(DecodeError::DigestMismatch);
        }
        if end.records != self.records || end.pages != self.pages {
            return Err(DecodeError::CountMismatch);
        }
        let mut one = [0u8; 1];
        if self.input.src.take(&mut one).map_err(DecodeError::Source)? != 0 {
            return Err(DecodeError::TrailingBytes);
        }
        self.phase = Phase::Done(digest);
        Ok(())
    }

    /// A record of a type this version does not define: skipped if optional.
    fn unknown(&self, rec: &Rec) -> Result<(), S::Error> {
        if rec.h.flags & record::FLAG_MANDATORY != 0 {
            Err(DecodeError::UnknownMandatory { ty: rec.h.ty })
        } else {
            Ok(())
        }
    }

    /// Read a record header, refusing a length above the limit before reading on, and add it
    /// to the image digest.
    fn header(&mut self) -> Result<Rec, S::Error> {
        let rec = self.read_header()?;
        self.digest_header(&rec);
        Ok(rec)
    }

    /// Read a record header; refuse a length above the limit before reading on.
    fn read_header(&mut self) -> Result<Rec, S::Error> {
        let offset = self.input.pos;
        let mut raw = [0u8; RECORD_HEADER_BYTES];
        self.input.read_exact(&mut raw)?;
        let h = RecordHeader::parse(&raw);
        let index = u32::try_from(self.records).unwrap_or(u32::MAX);
        if h.length as usize > MAX_RECORD_PAYLOAD {
            return Err(DecodeError::RecordTooLong {
                record: index,
                length: h.length,
            });
        }
        Ok(Rec { h, offset, index })
    }

    /// Add a record header to the image digest (END's is not in it).
    fn digest_header(&mut self, rec: &Rec) {
        if rec.h.ty != record::END {
            // `encode` gives back the bytes `parse` read: every one of the 24 is a field.
            self.digest.update(&rec.h.encode());
        }
    }

    /// Read a record's payload and padding (into `scratch` if it fits, else through it) and
    /// check its checksum, flags, reserved field and padding.
    fn body(&mut self, rec: &Rec) -> Result<(), S::Error> {
        let len = rec.h.length as usize;
        let total = len + wire::padding(len);
        let mut sum = wire::record_hasher();
        sum.write(&rec.h.head());
        let mut done = 0;
        let mut padding_ok = true;
        while done < total {
            let n = (total - done).min(SCRATCH_BYTES);
            // A payload that fits whole stays at the start of scratch for `payload`.
            let chunk = &mut self.scratch[..n];
            self.input.read_exact(chunk)?;
            sum.write(chunk);
            done += n;
            if done == total {
                // Padding is the last 0-7 bytes, inside this chunk: `total` is a multiple of
                // 8, so is every chunk, and none is empty.
                let pad = total - len;
                padding_ok = chunk[n.saturating_sub(pad)..].iter().all(|&b| b == 0);
            }
        }
        self.check_record(rec, sum.finish())?;
        if !padding_ok {
            return Err(DecodeError::Reserved { ty: rec.h.ty });
        }
        Ok(())
    }

    fn check_record(&mut self, rec: &Rec, checksum: u64) -> Result<(), S::Error> {
        if checksum != rec.h.checksum {
            return Err(DecodeError::RecordChecksum {
                record: rec.index,
                offset: rec.offset,
            });
        }
        if rec.h.flags & !record::FLAG_MANDATORY != 0 {
            return Err(DecodeError::BadFlags { ty: rec.h.ty });
        }
        if rec.h.reserved != 0 {
            return Err(DecodeError::Reserved { ty: rec.h.ty });
        }
        if rec.h.ty != record::END {
            self.records += 1;
        }
        Ok(())
    }

    /// The payload `body` left in scratch, if it is exactly `N` bytes.
    fn payload<const N: usize>(&self, rec: &Rec) -> Result<&[u8; N], S::Error> {
        if rec.h.length as usize != N {
            return Err(DecodeError::BadLength { ty: rec.h.ty });
        }
        self.scratch
            .first_chunk::<N>()
            .ok_or(DecodeError::BadLength { ty: rec.h.ty })
    }
}

/// A name stored as `len` bytes of `raw` followed by zeros, if it is one.
fn name_from(raw: &[u8; MAX_NAME_BYTES], len: usize, may_be_empty: bool) -> Option<String> {
    let (name, rest) = raw.split_at_checked(len)?;
    if rest.iter().any(|&b| b != 0) {
        return None;
    }
    let name = core::str::from_utf8(name).ok()?;
    name_ok(name, may_be_empty).then(|| String::from(name))
}

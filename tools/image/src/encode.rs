//! Writing an image.

use crate::wire::{self, EndWire, Header, MAX_RECORD_PAYLOAD, RecordHeader};
use crate::{
    Digest, DomainRecord, EncodeError, FORMAT_VERSION, ImageKind, MAX_NOTE_BYTES, MAX_NOTES,
    MAX_PLATFORM_BYTES, MAX_RUN_PAGES, MIN_READER_VERSION, PAGE_BYTES, Sink, TemplateRef, is_zero_page, name_ok,
    record,
};
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;

/// What [`Encoder::finish`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageStats {
    /// Bytes of the whole image.
    pub bytes: u64,
    /// Records, END included.
    pub records: u64,
    /// Pages written in MEMORY records.
    pub pages_written: u64,
    /// Zero pages passed to [`Encoder::memory`] and left out (always 0 for a delta).
    pub pages_zero: u64,
}

/// Writes one image to a [`Sink`], streaming: it holds no page data between calls.
pub struct Encoder<S: Sink> {
    sink: S,
    kind: ImageKind,
    mem_bytes: u64,
    digest: blake3::Hasher,
    stats: ImageStats,
    /// Lowest gfn the next run may start at.
    next_gfn: u64,
    memory_started: bool,
    notes: usize,
    platform: bool,
    failed: bool,
}

impl<S: Sink> Encoder<S> {
    /// Write the header and the DOMAIN, VCPU, STATE and (for a delta, which must have one)
    /// TEMPLATE_REF records.
    pub fn new(
        sink: S,
        kind: ImageKind,
        domain: &DomainRecord,
        vcpu: &VcpuContext,
        state: &SavedState,
        template: Option<&TemplateRef>,
    ) -> Result<Self, EncodeError<S::Error>> {
        if !name_ok(&domain.name, false) {
            return Err(EncodeError::BadName);
        }
        if domain.mem_bytes == 0 || domain.mem_bytes % PAGE_BYTES as u64 != 0 {
            return Err(EncodeError::BadMemSize {
                mem_bytes: domain.mem_bytes,
            });
        }
        match (kind, template) {
            (ImageKind::Delta, Some(t)) => {
                if !name_ok(&t.name, true) {
                    return Err(EncodeError::BadName);
                }
                if t.mem_bytes != domain.mem_bytes {
                    return Err(EncodeError::TemplateMismatch);
                }
            }
            (ImageKind::Delta, None) | (_, Some(_)) => return Err(EncodeError::KindMismatch),
            (_, None) => {}
        }
        let mut enc = Encoder {
            sink,
            kind,
            mem_bytes: domain.mem_bytes,
            digest: blake3::Hasher::new(),
            stats: ImageStats::default(),
            next_gfn: 0,
            memory_started: false,
            notes: 0,
            platform: false,
            failed: false,
        };
        let header = wire::encode_header(&Header {
            version: FORMAT_VERSION,
            min_reader: MIN_READER_VERSION,
            kind: kind.code(),
            flags: 0,
        });
        enc.put_digested(&header)?;
        enc.record(record::DOMAIN, true, &[&wire::encode_domain(kind, domain)])?;
        enc.record(record::VCPU, true, &[&wire::encode_vcpu(vcpu)])?;
        enc.record(record::STATE, true, &[&wire::encode_state(state)])?;
        if let Some(t) = template {
            enc.record(record::TEMPLATE_REF, true, &[&wire::encode_template(t)])?;
        }
        Ok(enc)
    }

    /// Add a NOTE (free text for people, e.g. "saved from d3 at ..."); only before memory.
    pub fn note(&mut self, text: &str) -> Result<(), EncodeError<S::Error>> {
        self.usable()?;
        if self.memory_started {
            return Err(EncodeError::NoteAfterMemory);
        }
        if text.len() > MAX_NOTE_BYTES {
            return Err(EncodeError::NoteTooLong);
        }
        if self.notes >= MAX_NOTES {
            return Err(EncodeError::TooManyNotes);
        }
        self.notes += 1;
        self.record(record::NOTE, false, &[text.as_bytes()])
    }

    /// Add the PLATFORM record: the domain's emulated devices as the hypervisor encoded them
    /// (opaque here, 1 to [`MAX_PLATFORM_BYTES`] bytes); at most once, only before memory.
    /// The record is optional, so a reader that does not know it still reads the image.
    pub fn platform(&mut self, bytes: &[u8]) -> Result<(), EncodeError<S::Error>> {
        self.usable()?;
        if self.memory_started {
            return Err(EncodeError::PlatformAfterMemory);
        }
        if bytes.is_empty() || bytes.len() > MAX_PLATFORM_BYTES {
            return Err(EncodeError::BadPlatform { bytes: bytes.len() });
        }
        if self.platform {
            return Err(EncodeError::DuplicatePlatform);
        }
        self.platform = true;
        self.record(record::PLATFORM, false, &[bytes])
    }

    /// Add `pages` (whole pages, at most [`MAX_RUN_PAGES`]) starting at `first_gfn`. Calls
    /// must be ascending and not overlap. For a domain or template image, zero pages are left
    /// out (the reader takes every absent page as zero), so raw memory can be passed; for a
    /// delta, every page passed is written, zero or not: pass exactly the pages that differ
    /// from the template.
    pub fn memory(&mut self, first_gfn: u64, pages: &[u8]) -> Result<(), EncodeError<S::Error>> {
        self.usable()?;
        if pages.len() % PAGE_BYTES != 0 {
            return Err(EncodeError::RunNotAligned { bytes: pages.len() });
        }
        let count = pages.len() / PAGE_BYTES;
        if count > MAX_RUN_PAGES {
            return Err(EncodeError::RunTooLong { pages: count });
        }
        if count == 0 {
            return Ok(());
        }
        if first_gfn < self.next_gfn {
            return Err(EncodeError::RunNotAscending { gfn: first_gfn });
        }
        let in_range = first_gfn
            .checked_add(count as u64)
            .and_then(|end| end.checked_mul(PAGE_BYTES as u64))
            .is_some_and(|end| end <= self.mem_bytes);
        if !in_range {
            return Err(EncodeError::RunOutOfRange {
                gfn: first_gfn,
                pages: count,
            });
        }
        self.memory_started = true;
        self.next_gfn = first_gfn + count as u64;
        if self.kind == ImageKind::Delta {
            return self.memory_record(first_gfn, pages);
        }
        // Write each maximal run of non-zero pages.
        let mut start: Option<usize> = None;
        for i in 0..=count {
            let zero = i == count || is_zero_page(&pages[i * PAGE_BYTES..(i + 1) * PAGE_BYTES]);
            if i < count && zero {
                self.stats.pages_zero += 1;
            }
            match (start, zero) {
                (None, false) => start = Some(i),
                (Some(s), true) => {
                    self.memory_record(
                        first_gfn + s as u64,
                        &pages[s * PAGE_BYTES..i * PAGE_BYTES],
                    )?;
                    start = None;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Write END (record and page counts, image digest) and hand back the sink, the image
    /// digest and what was written.
    pub fn finish(mut self) -> Result<(S, Digest, ImageStats), EncodeError<S::Error>> {
        self.usable()?;
        let digest: Digest = *self.digest.finalize().as_bytes();
        let end = wire::encode_end(&EndWire {
            records: self.stats.records,
            pages: self.stats.pages_written,
            digest,
        });
        self.record(record::END, true, &[&end])?;
        Ok((self.sink, digest, self.stats))
    }

    fn memory_record(&mut self, first_gfn: u64, pages: &[u8]) -> Result<(), EncodeError<S::Error>> {
        let count = pages.len() / PAGE_BYTES;
        let head = wire::encode_memory_header(first_gfn, count as u32);
        self.record(record::MEMORY, true, &[&head, pages])?;
        self.stats.pages_written += count as u64;
        Ok(())
    }

    fn usable(&self) -> Result<(), EncodeError<S::Error>> {
        if self.failed {
            Err(EncodeError::Failed)
        } else {
            Ok(())
        }
    }

    /// Write bytes.
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError<S::Error>> {
        if let Err(e) = self.sink.put(bytes) {
            self.failed = true;
            return Err(EncodeError::Sink(e));
        }
        self.stats.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Write bytes the image digest covers: the header and each record's header (whose
    /// checksum covers its payload).
    fn put_digested(&mut self, bytes: &[u8]) -> Result<(), EncodeError<S::Error>> {
        self.put(bytes)?;
        self.digest.update(bytes);
        Ok(())
    }

    /// Write one record whose payload is `parts` concatenated, then its padding.
    fn record(
        &mut self,
        ty: u32,
        mandatory: bool,
        parts: &[&[u8]],
    ) -> Result<(), EncodeError<S::Error>> {
        let length: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert!(length <= MAX_RECORD_PAYLOAD);
        let pad = [0u8; 8];
        let pad = &pad[..wire::padding(length)];
        let mut h = RecordHeader {
            ty,
            flags: if mandatory { record::FLAG_MANDATORY } else { 0 },
            length: length as u32,
            reserved: 0,
            checksum: 0,
        };
        let mut sum = wire::record_hasher();
        sum.write(&h.head());
        for p in parts {
            sum.write(p);
        }
        sum.write(pad);
        h.checksum = sum.finish();
        self.put_digested(&h.encode())?;
        for p in parts {
            self.put(p)?;
        }
        self.put(pad)?;
        self.stats.records += 1;
        Ok(())
    }
}

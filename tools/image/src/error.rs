//! Why an image was refused, or could not be written.

use core::fmt;

/// Why a reader refused an image. One variant per rule in docs/image-format.md; `record`
/// numbers count from 0 (the DOMAIN record) and `offset`s are bytes from the image's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError<E> {
    /// The source failed.
    Source(E),
    /// The input ended `at` bytes in, before the END record and what it needs.
    Truncated { at: u64 },
    /// The first 8 bytes are not `COWVIMG\0`: not an image.
    BadMagic,
    /// The header checksum does not match the header.
    HeaderChecksum,
    /// The image's version is older than this reader supports, or it needs a newer reader
    /// (`min_reader` above [`crate::FORMAT_VERSION`]), or the two are inconsistent.
    UnsupportedVersion { version: u16, min_reader: u16 },
    /// The header's image kind is not 1, 2 or 3.
    BadKind { kind: u16 },
    /// The header has must-understand flag bits (0-15) this reader does not know.
    UnknownFlags { flags: u32 },
    /// A record's checksum does not match its header and payload.
    RecordChecksum { record: u32, offset: u64 },
    /// A record's length field is above [`crate::MAX_RECORD_PAYLOAD`].
    RecordTooLong { record: u32, length: u32 },
    /// A record has flag bits set that are reserved (bits 1-31).
    BadFlags { ty: u32 },
    /// A record's reserved field, reserved bytes or padding are not zero.
    Reserved { ty: u32 },
    /// A record of a type this reader does not know, marked mandatory.
    UnknownMandatory { ty: u32 },
    /// A record's length is wrong for its type (or a MEMORY record's page count disagrees
    /// with its length, or is 0).
    BadLength { ty: u32 },
    /// A record where the order rules do not allow it.
    OutOfOrder { ty: u32 },
    /// A second record of a type the image has exactly one of.
    Duplicate { ty: u32 },
    /// A required record is missing.
    Missing { ty: u32 },
    /// TEMPLATE_REF in an image that is not a delta, a delta without TEMPLATE_REF, or a DOMAIN
    /// record whose kind is not the header's.
    KindMismatch,
    /// A delta whose memory size differs from its template's.
    TemplateMismatch,
    /// A name that is empty (DOMAIN only), longer than 32 bytes, not UTF-8, has control
    /// characters, or is followed by non-zero bytes.
    BadName,
    /// A NOTE longer than [`crate::MAX_NOTE_BYTES`] or not UTF-8.
    BadNote,
    /// More than [`crate::MAX_NOTES`] NOTE records.
    TooManyNotes,
    /// `mem_bytes` is 0 or not a multiple of the page size.
    BadMemSize { mem_bytes: u64 },
    /// `mem_bytes` is above the reader's [`crate::Limits::max_mem_bytes`].
    MemoryTooLarge { mem_bytes: u64, limit: u64 },
    /// A MEMORY run reaching past `mem_bytes`.
    RunOutOfRange { gfn: u64, pages: u32 },
    /// A MEMORY run starting below the end of the previous one.
    RunNotAscending { gfn: u64 },
    /// END's record or page count disagrees with what was read.
    CountMismatch,
    /// The image digest in END does not match the image.
    DigestMismatch,
    /// Bytes after the END record.
    TrailingBytes,
    /// The buffer given to [`crate::Decoder::next_run`] is shorter than
    /// [`crate::MAX_RUN_PAGES`] pages.
    BufferTooSmall,
    /// The decoder already refused the image (or the source failed); it reads no further.
    Failed,
}

impl<E> DecodeError<E> {
    /// A short stable name for the refusal (for logs and counting).
    pub fn code(&self) -> &'static str {
        use DecodeError::*;
        match self {
            Source(_) => "source",
            Truncated { .. } => "truncated",
            BadMagic => "bad-magic",
            HeaderChecksum => "header-checksum",
            UnsupportedVersion { .. } => "unsupported-version",
            BadKind { .. } => "bad-kind",
            UnknownFlags { .. } => "unknown-flags",
            RecordChecksum { .. } => "record-checksum",
            RecordTooLong { .. } => "record-too-long",
            BadFlags { .. } => "bad-flags",
            Reserved { .. } => "reserved",
            UnknownMandatory { .. } => "unknown-mandatory",
            BadLength { .. } => "bad-length",
            OutOfOrder { .. } => "out-of-order",
            Duplicate { .. } => "duplicate",
            Missing { .. } => "missing",
            KindMismatch => "kind-mismatch",
            TemplateMismatch => "template-mismatch",
            BadName => "bad-name",
            BadNote => "bad-note",
            TooManyNotes => "too-many-notes",
            BadMemSize { .. } => "bad-mem-size",
            MemoryTooLarge { .. } => "memory-too-large",
            RunOutOfRange { .. } => "run-out-of-range",
            RunNotAscending { .. } => "run-not-ascending",
            CountMismatch => "count-mismatch",
            DigestMismatch => "digest-mismatch",
            TrailingBytes => "trailing-bytes",
            BufferTooSmall => "buffer-too-small",
            Failed => "failed",
        }
    }
}

/// A record type by its spec name, or its number.
struct Ty(u32);

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::record::name(self.0) {
            Some(name) => f.write_str(name),
            None => write!(f, "type {:#x}", self.0),
        }
    }
}

impl<E: fmt::Display> fmt::Display for DecodeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError::*;
        match self {
            Source(e) => write!(f, "read failed: {e}"),
            Truncated { at } => write!(f, "image truncated at byte {at}"),
            BadMagic => f.write_str("not a domain image (bad magic)"),
            HeaderChecksum => f.write_str("header checksum mismatch"),
            UnsupportedVersion {
                version,
                min_reader,
            } => write!(
                f,
                "unsupported image version {version} (needs reader {min_reader}; this reader is {} and reads {}..)",
                crate::FORMAT_VERSION,
                crate::OLDEST_READABLE_VERSION
            ),
            BadKind { kind } => write!(f, "unknown image kind {kind}"),
            UnknownFlags { flags } => write!(f, "unknown header flags {flags:#x}"),
            RecordChecksum { record, offset } => {
                write!(f, "record {record} checksum mismatch (at byte {offset})")
            }
            RecordTooLong { record, length } => {
                write!(f, "record {record} too long ({length} bytes)")
            }
            BadFlags { ty } => write!(f, "{} record has reserved flags set", Ty(*ty)),
            Reserved { ty } => write!(f, "{} record has non-zero reserved bytes", Ty(*ty)),
            UnknownMandatory { ty } => write!(f, "unknown mandatory record {:#x}", ty),
            BadLength { ty } => write!(f, "{} record has a bad length", Ty(*ty)),
            OutOfOrder { ty } => write!(f, "{} record out of order", Ty(*ty)),
            Duplicate { ty } => write!(f, "duplicate {} record", Ty(*ty)),
            Missing { ty } => write!(f, "missing {} record", Ty(*ty)),
            KindMismatch => f.write_str("image kind and template reference disagree"),
            TemplateMismatch => f.write_str("delta and template memory sizes differ"),
            BadName => f.write_str("bad name"),
            BadNote => f.write_str("bad note"),
            TooManyNotes => f.write_str("too many notes"),
            BadMemSize { mem_bytes } => write!(f, "bad memory size {mem_bytes}"),
            MemoryTooLarge { mem_bytes, limit } => {
                write!(f, "memory size {mem_bytes} above the limit {limit}")
            }
            RunOutOfRange { gfn, pages } => {
                write!(f, "memory run {gfn:#x}+{pages} outside the domain's memory")
            }
            RunNotAscending { gfn } => write!(f, "memory run at {gfn:#x} not ascending"),
            CountMismatch => f.write_str("end record counts mismatch"),
            DigestMismatch => f.write_str("image digest mismatch"),
            TrailingBytes => f.write_str("trailing bytes after the end record"),
            BufferTooSmall => f.write_str("page buffer too small"),
            Failed => f.write_str("decoder already failed"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for DecodeError<E> {}

/// Why an encoder refused to write something. Nothing was written for a refusal other than
/// `Sink` (after which the encoder writes no more: `Failed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError<E> {
    /// The sink failed; the image is incomplete.
    Sink(E),
    /// A domain name that is empty or a name longer than 32 bytes or with control characters.
    BadName,
    /// `mem_bytes` is 0 or not a multiple of the page size.
    BadMemSize { mem_bytes: u64 },
    /// A template given for a kind other than delta, or none for a delta.
    KindMismatch,
    /// A delta's memory size differs from its template's.
    TemplateMismatch,
    /// A note longer than [`crate::MAX_NOTE_BYTES`].
    NoteTooLong,
    /// More than [`crate::MAX_NOTES`] notes.
    TooManyNotes,
    /// A note after memory.
    NoteAfterMemory,
    /// Platform bytes that are empty or longer than [`crate::MAX_PLATFORM_BYTES`].
    BadPlatform { bytes: usize },
    /// A second PLATFORM record.
    DuplicatePlatform,
    /// A PLATFORM record after memory.
    PlatformAfterMemory,
    /// A run whose length is not a multiple of the page size.
    RunNotAligned { bytes: usize },
    /// A run longer than [`crate::MAX_RUN_PAGES`] pages.
    RunTooLong { pages: usize },
    /// A run starting below the end of the previous one.
    RunNotAscending { gfn: u64 },
    /// A run reaching past `mem_bytes`.
    RunOutOfRange { gfn: u64, pages: usize },
    /// An earlier write failed; the encoder writes no more.
    Failed,
}

impl<E: fmt::Display> fmt::Display for EncodeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EncodeError::*;
        match self {
            Sink(e) => write!(f, "write failed: {e}"),
            BadName => f.write_str("bad name"),
            BadMemSize { mem_bytes } => write!(f, "bad memory size {mem_bytes}"),
            KindMismatch => {
                f.write_str("a template reference goes with a delta image, and only there")
            }
            TemplateMismatch => f.write_str("delta and template memory sizes differ"),
            NoteTooLong => f.write_str("note too long"),
            TooManyNotes => f.write_str("too many notes"),
            NoteAfterMemory => f.write_str("note after memory"),
            BadPlatform { bytes } => write!(f, "platform state of {bytes} bytes (1 to {} allowed)", crate::MAX_PLATFORM_BYTES),
            DuplicatePlatform => f.write_str("a second platform state"),
            PlatformAfterMemory => f.write_str("platform state after memory"),
            RunNotAligned { bytes } => write!(f, "memory run of {bytes} bytes is not whole pages"),
            RunTooLong { pages } => write!(f, "memory run of {pages} pages too long"),
            RunNotAscending { gfn } => write!(f, "memory run at {gfn:#x} not ascending"),
            RunOutOfRange { gfn, pages } => {
                write!(f, "memory run {gfn:#x}+{pages} outside the domain's memory")
            }
            Failed => f.write_str("encoder already failed"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for EncodeError<E> {}

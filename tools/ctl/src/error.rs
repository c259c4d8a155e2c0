//! Why the domain builder refused an image or a build request: one enum for ELF parsing,
//! placement, relocation, start-of-day limits and memory writes.

use core::fmt;
use guest_abi::HvError;

/// Why a domain could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The image does not start with the ELF magic.
    NotElf,
    /// Not a 64-bit ELF (`e_ident[EI_CLASS]`).
    WrongClass(u8),
    /// Not little endian (`e_ident[EI_DATA]`).
    WrongEndian(u8),
    /// Not an x86-64 image (`e_machine`).
    WrongMachine(u16),
    /// Neither `ET_EXEC` nor `ET_DYN` (`e_type`).
    WrongType(u16),
    /// The ELF header or program-header table runs past the end of the file.
    Truncated,
    /// The program-header table is malformed (entry size, `PN_XNUM`).
    BadProgramHeaders,
    /// More loadable segments than the builder accepts.
    TooManySegments { count: usize, max: usize },
    /// The image has nothing to load.
    NoLoadableSegments,
    /// Segment `index` refers to file bytes past the end of the image.
    SegmentOutsideFile { index: usize },
    /// Segment `index` has `p_filesz > p_memsz`.
    SegmentFileLargerThanMemory { index: usize },
    /// Segment `index`, once placed, does not start inside guest RAM above the image base (or
    /// its address arithmetic overflows); `start`/`end` are saturated on overflow.
    SegmentOutOfRange { index: usize, start: u64, end: u64 },
    /// Segments `first` and `second` overlap in guest-physical memory.
    SegmentsOverlap { first: usize, second: usize },
    /// The loaded image ends at `need` but the domain only has `have` bytes of RAM.
    ImageTooLarge { need: u64, have: u64 },
    /// The entry point (already relocated) is not inside a loaded executable segment.
    EntryOutsideImage(u64),
    /// `PT_DYNAMIC` or the relocation table it describes is malformed.
    BadDynamic(DynamicError),
    /// A relocation type other than `R_X86_64_NONE` and `R_X86_64_RELATIVE`.
    UnsupportedRelocation(u32),
    /// A relocation would patch bytes outside every loaded segment (link-time offset).
    RelocationOutOfRange { offset: u64 },
    /// Guest RAM is smaller than the minimum domain size.
    MemoryTooSmall { bytes: u64, min: u64 },
    /// Guest RAM is larger than the maximum domain size.
    MemoryTooLarge { bytes: u64, max: u64 },
    /// Guest RAM is not a whole number of pages.
    MemoryNotPageAligned { bytes: u64 },
    /// The domain name does not fit the start-of-day page.
    NameTooLong { len: usize, max: usize },
    /// The command line does not fit the start-of-day page.
    CmdlineTooLong { len: usize, max: usize },
    /// More boot modules than the start-of-day page holds.
    TooManyModules { count: usize, max: usize },
    /// Writing guest memory at `gpa` failed.
    Write { gpa: u64, error: HvError },
}

/// What is wrong with `PT_DYNAMIC` or the `DT_RELA` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DynamicError {
    /// The dynamic segment's bytes are not inside the file.
    OutsideFile,
    /// More than one `PT_DYNAMIC` segment.
    Duplicate,
    /// `DT_RELAENT` is not 24.
    RelaEntrySize(u64),
    /// Only one of `DT_RELA` and `DT_RELASZ` is present.
    RelaIncomplete,
    /// `DT_RELASZ` is not a multiple of the entry size.
    RelaSizeNotMultiple(u64),
    /// The `DT_RELA` table is not inside the file bytes of a loaded segment.
    RelaNotInImage,
    /// A relocation mechanism the builder does not implement (`DT_REL`, `DT_RELR`,
    /// `DT_JMPREL`, `DT_TEXTREL`); the value is the tag.
    UnsupportedTag(i64),
}

impl fmt::Display for DynamicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideFile => write!(f, "dynamic segment lies outside the file"),
            Self::Duplicate => write!(f, "more than one PT_DYNAMIC segment"),
            Self::RelaEntrySize(n) => write!(f, "DT_RELAENT is {n}, expected 24"),
            Self::RelaIncomplete => write!(f, "DT_RELA and DT_RELASZ must come together"),
            Self::RelaSizeNotMultiple(n) => write!(f, "DT_RELASZ {n} is not a multiple of 24"),
            Self::RelaNotInImage => write!(f, "DT_RELA table is not inside a loaded segment's file bytes"),
            Self::UnsupportedTag(t) => write!(f, "unsupported dynamic tag {t:#x}"),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => write!(f, "not an ELF image (bad magic)"),
            Self::WrongClass(c) => write!(f, "not a 64-bit ELF image (class {c})"),
            Self::WrongEndian(d) => write!(f, "not a little-endian ELF image (data encoding {d})"),
            Self::WrongMachine(m) => write!(f, "not an x86-64 ELF image (machine {m})"),
            Self::WrongType(t) => write!(f, "ELF type {t} is neither an executable nor a PIE"),
            Self::Truncated => write!(f, "ELF image truncated"),
            Self::BadProgramHeaders => write!(f, "malformed ELF program-header table"),
            Self::TooManySegments { count, max } => write!(f, "{count} loadable segments (at most {max})"),
            Self::NoLoadableSegments => write!(f, "ELF image has no loadable segment"),
            Self::SegmentOutsideFile { index } => write!(f, "segment {index} lies outside the file"),
            Self::SegmentFileLargerThanMemory { index } => {
                write!(f, "segment {index} has more file bytes than memory bytes")
            }
            Self::SegmentOutOfRange { index, start, end } => {
                write!(f, "segment {index} at {start:#x}..{end:#x} is outside the domain's image area")
            }
            Self::SegmentsOverlap { first, second } => write!(f, "segments {first} and {second} overlap"),
            Self::ImageTooLarge { need, have } => {
                write!(f, "image needs {need:#x} bytes of RAM, the domain has {have:#x}")
            }
            Self::EntryOutsideImage(e) => write!(f, "entry point {e:#x} is not in a loaded executable segment"),
            Self::BadDynamic(e) => write!(f, "bad dynamic section: {e}"),
            Self::UnsupportedRelocation(t) => write!(f, "unsupported relocation type {t}"),
            Self::RelocationOutOfRange { offset } => {
                write!(f, "relocation at {offset:#x} is outside the loaded segments")
            }
            Self::MemoryTooSmall { bytes, min } => write!(f, "{bytes} bytes of RAM is below the minimum {min}"),
            Self::MemoryTooLarge { bytes, max } => write!(f, "{bytes} bytes of RAM is above the maximum {max}"),
            Self::MemoryNotPageAligned { bytes } => write!(f, "{bytes} bytes of RAM is not a multiple of 4 KiB"),
            Self::NameTooLong { len, max } => write!(f, "name of {len} bytes is too long (at most {max})"),
            Self::CmdlineTooLong { len, max } => write!(f, "command line of {len} bytes is too long (at most {max})"),
            Self::TooManyModules { count, max } => write!(f, "{count} boot modules (at most {max})"),
            Self::Write { gpa, error } => write!(f, "writing guest memory at {gpa:#x} failed: {error}"),
        }
    }
}

impl From<DynamicError> for BuildError {
    fn from(e: DynamicError) -> Self {
        Self::BadDynamic(e)
    }
}

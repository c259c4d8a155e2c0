//! ELF64 parsing for the domain builder: the file header, program headers, `PT_DYNAMIC` and
//! its `DT_RELA` table. Every offset, size and address read from the file is bounds- and
//! overflow-checked; a malformed image yields a [`BuildError`], never a panic.

use crate::error::{BuildError, DynamicError};
use alloc::vec::Vec;

/// Size of the ELF64 file header.
pub const HEADER_BYTES: usize = 64;
/// Size of an ELF64 program header.
pub const PHDR_BYTES: usize = 56;
/// Size of an ELF64 dynamic entry.
pub const DYN_BYTES: usize = 16;
/// Size of an ELF64 `Rela` entry.
pub const RELA_BYTES: usize = 24;
/// Most `PT_LOAD` segments an image may have (keeps overlap checks cheap on hostile input).
pub const MAX_LOAD_SEGMENTS: usize = 64;

/// `e_ident[EI_CLASS]` for 64-bit objects.
pub const ELFCLASS64: u8 = 2;
/// `e_ident[EI_DATA]` for little endian.
pub const ELFDATA2LSB: u8 = 1;
/// `e_type` of a fixed-address executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a shared object or position-independent executable.
pub const ET_DYN: u16 = 3;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// `e_phnum` escape meaning "the count is in section header 0" (not supported).
pub const PN_XNUM: u16 = 0xFFFF;

/// Loadable segment.
pub const PT_LOAD: u32 = 1;
/// Dynamic linking information.
pub const PT_DYNAMIC: u32 = 2;
/// Segment flag: executable.
pub const PF_X: u32 = 1;
/// Segment flag: writable.
pub const PF_W: u32 = 2;
/// Segment flag: readable.
pub const PF_R: u32 = 4;

/// End of the dynamic array.
pub const DT_NULL: i64 = 0;
/// Size of the PLT relocations.
pub const DT_PLTRELSZ: i64 = 2;
/// Address of the `Rela` table.
pub const DT_RELA: i64 = 7;
/// Size of the `Rela` table in bytes.
pub const DT_RELASZ: i64 = 8;
/// Size of one `Rela` entry.
pub const DT_RELAENT: i64 = 9;
/// Address of a `Rel` table (no addends; not supported).
pub const DT_REL: i64 = 17;
/// Address of the PLT relocations (not supported).
pub const DT_JMPREL: i64 = 23;
/// Address of a packed relative-relocation table (not supported).
pub const DT_RELR: i64 = 36;

/// No relocation.
pub const R_X86_64_NONE: u32 = 0;
/// `*(base + offset) = base + addend`.
pub const R_X86_64_RELATIVE: u32 = 8;

/// What kind of image this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfKind {
    /// `ET_EXEC`: loaded at the addresses it was linked for.
    Executable,
    /// `ET_DYN`: position independent, loaded at an offset.
    PositionIndependent,
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

impl ProgramHeader {
    /// Whether the segment is executable.
    pub fn executable(&self) -> bool {
        self.flags & PF_X != 0
    }
}

/// One `Rela` relocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rela {
    /// Link-time address of the patched bytes.
    pub offset: u64,
    /// Relocation type (`R_X86_64_*`).
    pub kind: u32,
    /// Symbol table index.
    pub symbol: u32,
    pub addend: i64,
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], BuildError> {
    let end = at.checked_add(N).ok_or(BuildError::Truncated)?;
    let slice = bytes.get(at..end).ok_or(BuildError::Truncated)?;
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    Ok(out)
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, BuildError> {
    field::<2>(bytes, at).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, BuildError> {
    field::<4>(bytes, at).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, BuildError> {
    field::<8>(bytes, at).map(u64::from_le_bytes)
}

/// The bytes `offset..offset + len` of `bytes`, if they exist.
pub fn file_range(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    bytes.get(start..start.checked_add(len)?)
}

/// A validated ELF64 x86-64 image borrowed from memory.
#[derive(Clone, Copy, Debug)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    kind: ElfKind,
    entry: u64,
    phoff: usize,
    phentsize: usize,
    phnum: usize,
}

impl<'a> Elf<'a> {
    /// Checks the file header and that the program-header table lies inside the file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BuildError> {
        if bytes.len() < 4 || bytes[..4] != *b"\x7fELF" {
            return Err(if bytes.len() < 4 && b"\x7fELF".starts_with(bytes) {
                BuildError::Truncated
            } else {
                BuildError::NotElf
            });
        }
        if bytes.len() < HEADER_BYTES {
            return Err(BuildError::Truncated);
        }
        if bytes[4] != ELFCLASS64 {
            return Err(BuildError::WrongClass(bytes[4]));
        }
        if bytes[5] != ELFDATA2LSB {
            return Err(BuildError::WrongEndian(bytes[5]));
        }
        let kind = match u16_at(bytes, 16)? {
            ET_EXEC => ElfKind::Executable,
            ET_DYN => ElfKind::PositionIndependent,
            other => return Err(BuildError::WrongType(other)),
        };
        let machine = u16_at(bytes, 18)?;
        if machine != EM_X86_64 {
            return Err(BuildError::WrongMachine(machine));
        }
        let entry = u64_at(bytes, 24)?;
        let phoff = u64_at(bytes, 32)?;
        let phentsize = usize::from(u16_at(bytes, 54)?);
        let phnum = u16_at(bytes, 56)?;
        if phnum == PN_XNUM || (phnum != 0 && phentsize < PHDR_BYTES) {
            return Err(BuildError::BadProgramHeaders);
        }
        let phnum = usize::from(phnum);
        let table_len = (phentsize as u64) * (phnum as u64);
        if file_range(bytes, phoff, table_len).is_none() {
            return Err(BuildError::Truncated);
        }
        // In range of the slice, hence of usize.
        let phoff = phoff as usize;
        Ok(Self { bytes, kind, entry, phoff, phentsize, phnum })
    }

    /// Executable or position independent.
    pub fn kind(&self) -> ElfKind {
        self.kind
    }

    /// `e_entry` as linked.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of program headers.
    pub fn program_header_count(&self) -> usize {
        self.phnum
    }

    /// Program header `index`.
    pub fn program_header(&self, index: usize) -> Result<ProgramHeader, BuildError> {
        if index >= self.phnum {
            return Err(BuildError::BadProgramHeaders);
        }
        let at = self.phoff + index * self.phentsize;
        Ok(ProgramHeader {
            p_type: u32_at(self.bytes, at)?,
            flags: u32_at(self.bytes, at + 4)?,
            offset: u64_at(self.bytes, at + 8)?,
            vaddr: u64_at(self.bytes, at + 16)?,
            filesz: u64_at(self.bytes, at + 32)?,
            memsz: u64_at(self.bytes, at + 40)?,
            align: u64_at(self.bytes, at + 48)?,
        })
    }

    /// All program headers in file order.
    pub fn program_headers(&self) -> impl Iterator<Item = ProgramHeader> + '_ {
        // The table was checked to lie inside the file in `parse`, so every read succeeds.
        (0..self.phnum).filter_map(|i| self.program_header(i).ok())
    }

    /// The file bytes of a segment.
    pub fn segment_file_bytes(&self, ph: &ProgramHeader) -> Option<&'a [u8]> {
        file_range(self.bytes, ph.offset, ph.filesz)
    }

    /// Translates a link-time address range to file bytes through the `PT_LOAD` segments.
    fn loaded_file_bytes(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let end = vaddr.checked_add(len)?;
        self.program_headers()
            .filter(|ph| ph.p_type == PT_LOAD)
            .find(|ph| vaddr >= ph.vaddr && ph.vaddr.checked_add(ph.filesz).is_some_and(|e| end <= e))
            .and_then(|ph| file_range(self.bytes, ph.offset.checked_add(vaddr - ph.vaddr)?, len))
    }

    /// The `Rela` relocations named by `PT_DYNAMIC` (`DT_RELA`, `DT_RELASZ`, `DT_RELAENT`).
    /// An image without `PT_DYNAMIC` has none.
    pub fn relocations(&self) -> Result<Vec<Rela>, BuildError> {
        let mut dynamic = None;
        for ph in self.program_headers().filter(|ph| ph.p_type == PT_DYNAMIC) {
            if dynamic.is_some() {
                return Err(DynamicError::Duplicate.into());
            }
            dynamic = Some(self.segment_file_bytes(&ph).ok_or(DynamicError::OutsideFile)?);
        }
        let Some(dynamic) = dynamic else { return Ok(Vec::new()) };

        let (mut rela, mut relasz, mut relaent) = (None, None, None);
        for entry in dynamic.chunks_exact(DYN_BYTES) {
            let tag = u64_at(entry, 0)? as i64;
            let value = u64_at(entry, 8)?;
            match tag {
                DT_NULL => break,
                DT_RELA => rela = Some(value),
                DT_RELASZ => relasz = Some(value),
                DT_RELAENT => relaent = Some(value),
                DT_REL | DT_RELR | DT_JMPREL => return Err(DynamicError::UnsupportedTag(tag).into()),
                DT_PLTRELSZ if value != 0 => return Err(DynamicError::UnsupportedTag(tag).into()),
                _ => {}
            }
        }
        if let Some(ent) = relaent
            && ent != RELA_BYTES as u64
        {
            return Err(DynamicError::RelaEntrySize(ent).into());
        }
        let (addr, size) = match (rela, relasz) {
            (None, None) => return Ok(Vec::new()),
            (Some(addr), Some(size)) => (addr, size),
            _ => return Err(DynamicError::RelaIncomplete.into()),
        };
        if size % RELA_BYTES as u64 != 0 {
            return Err(DynamicError::RelaSizeNotMultiple(size).into());
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let table = self.loaded_file_bytes(addr, size).ok_or(DynamicError::RelaNotInImage)?;
        table
            .chunks_exact(RELA_BYTES)
            .map(|r| {
                let info = u64_at(r, 8)?;
                Ok(Rela {
                    offset: u64_at(r, 0)?,
                    kind: info as u32,
                    symbol: (info >> 32) as u32,
                    addend: u64_at(r, 16)? as i64,
                })
            })
            .collect()
    }
}

//! The domain builder: loads an ELF64 image into a domain's memory (relocating position-
//! independent images to `IMAGE_BASE_GPA`), writes the boot page tables, the GDT and the
//! start-of-day page, and returns the initial vCPU context.
//!
//! Everything is validated before the first byte is written, so a refused image leaves the
//! domain's memory untouched.

use crate::boot_tables;
use crate::elf::{Elf, ElfKind, MAX_LOAD_SEGMENTS, PT_LOAD, ProgramHeader, R_X86_64_NONE, R_X86_64_RELATIVE};
use crate::memory::DomainMemory;
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::domctl::{NAME_MAX_BYTES, name_field};
use guest_abi::hypercall::CallInsn;
use guest_abi::layout::{
    BOOT_GDT_GPA, BOOT_PML4_GPA, BOOT_STACK_TOP_GPA, IMAGE_BASE_GPA, MAX_DOMAIN_MEM_BYTES, MIN_DOMAIN_MEM_BYTES,
    PAGE_SIZE, START_INFO_GPA,
};
use guest_abi::start_info::{CMDLINE_MAX_BYTES, MODULES_MAX, ModuleInfo, StartInfo};
use guest_abi::vcpu::VcpuContext;

pub use crate::error::{BuildError, DynamicError};

/// Largest run of zeros written in one call when clearing `.bss`.
const ZERO_CHUNK_BYTES: u64 = 64 * 1024;
/// Bytes a `R_X86_64_RELATIVE` relocation patches.
const RELATIVE_BYTES: u64 = 8;

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct BuildSpec<'a> {
    pub domid: u32,
    /// Domain name (at most [`NAME_MAX_BYTES`] bytes).
    pub name: &'a str,
    /// Command line (at most [`CMDLINE_MAX_BYTES`] bytes).
    pub cmdline: &'a str,
    /// Guest RAM: a multiple of 4 KiB within `[MIN_DOMAIN_MEM_BYTES, MAX_DOMAIN_MEM_BYTES]`.
    pub mem_bytes: u64,
    /// `guest_abi::start_info::StartFlags`.
    pub flags: u32,
    /// The hypercall instruction of this machine.
    pub call_insn: CallInsn,
    /// TSC frequency the guest sees.
    pub tsc_khz: u64,
    /// Generation number (changes on every clone and restore).
    pub generation: u64,
    /// Boot modules (at most [`MODULES_MAX`]), already mapped by the caller.
    pub modules: &'a [ModuleInfo],
}

/// The result of a build.
#[derive(Clone, Copy, Debug)]
pub struct Built {
    /// Initial vCPU state: long mode, paging on the boot tables, RDI = `START_INFO_GPA`.
    pub context: VcpuContext,
    /// The start-of-day page as written.
    pub start_info: StartInfo,
    /// What was added to every link-time address (0 for `ET_EXEC`).
    pub load_base: u64,
    /// Page-aligned end of the loaded image including `.bss`.
    pub image_end: u64,
}

/// One `PT_LOAD` segment placed in guest memory.
#[derive(Clone, Debug)]
struct Placed<'a> {
    index: usize,
    ph: ProgramHeader,
    /// Guest-physical start and end (exclusive).
    start: u64,
    end: u64,
    /// The segment's bytes in the file.
    file: &'a [u8],
    /// A relocated copy of `file`, made on the first relocation that patches file bytes.
    patched: Option<Vec<u8>>,
}

impl Placed<'_> {
    /// Bytes to copy; the rest up to `end` is zero.
    fn data(&self) -> &[u8] {
        self.patched.as_deref().unwrap_or(self.file)
    }

    /// Whether the link-time range `vaddr..vaddr + len` lies in this segment's memory.
    fn holds(&self, vaddr: u64, len: u64) -> bool {
        let seg_end = self.ph.vaddr.saturating_add(self.ph.memsz);
        vaddr >= self.ph.vaddr && vaddr.checked_add(len).is_some_and(|e| e <= seg_end)
    }
}

/// A validated, relocated image ready to be written into a domain.
#[derive(Clone, Debug)]
pub struct ImagePlan<'a> {
    load_base: u64,
    entry: u64,
    image_end: u64,
    relocations: usize,
    segments: Vec<Placed<'a>>,
    /// Relocated words not entirely inside file bytes (in `.bss`), written after the zeros:
    /// (guest-physical address, value). Kept apart so a relocation at the end of a huge
    /// `.bss` never makes the builder allocate a copy of the whole segment.
    bss_patches: Vec<(u64, u64)>,
}

impl ImagePlan<'_> {
    /// What is added to every link-time address.
    pub fn load_base(&self) -> u64 {
        self.load_base
    }

    /// The relocated entry point.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// Page-aligned end of the loaded image including `.bss`.
    pub fn image_end(&self) -> u64 {
        self.image_end
    }

    /// Number of relocations applied (excluding `R_X86_64_NONE`).
    pub fn relocations(&self) -> usize {
        self.relocations
    }

    /// Writes every segment: its (relocated) file bytes, then zeros up to its memory size.
    pub fn write(&self, mem: &mut dyn DomainMemory) -> Result<(), BuildError> {
        let largest_bss = self.segments.iter().map(|s| s.end - s.start - s.data().len() as u64).max().unwrap_or(0);
        let zeros = vec![0u8; largest_bss.min(ZERO_CHUNK_BYTES) as usize];
        for seg in &self.segments {
            let data = seg.data();
            write(mem, seg.start, data)?;
            let mut at = seg.start + data.len() as u64;
            while at < seg.end {
                let n = (seg.end - at).min(zeros.len() as u64);
                write(mem, at, &zeros[..n as usize])?;
                at += n;
            }
        }
        for &(gpa, value) in &self.bss_patches {
            write(mem, gpa, &value.to_le_bytes())?;
        }
        Ok(())
    }
}

fn write(mem: &mut dyn DomainMemory, gpa: u64, data: &[u8]) -> Result<(), BuildError> {
    mem.write(gpa, data).map_err(|error| BuildError::Write { gpa, error })
}

fn page_align_up(v: u64) -> Option<u64> {
    v.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

/// Parses, places and relocates `elf` for a domain with `mem_bytes` of RAM without writing
/// anything.
pub fn plan_image(elf: &[u8], mem_bytes: u64) -> Result<ImagePlan<'_>, BuildError> {
    let elf = Elf::parse(elf)?;
    let load_base = match elf.kind() {
        ElfKind::Executable => 0,
        ElfKind::PositionIndependent => IMAGE_BASE_GPA,
    };

    let mut segments: Vec<Placed<'_>> = Vec::new();
    for (index, ph) in elf.program_headers().enumerate().filter(|(_, ph)| ph.p_type == PT_LOAD) {
        // A segment without file bytes (pure `.bss`) may name any offset.
        let file = match ph.filesz {
            0 => &[][..],
            _ => elf.segment_file_bytes(&ph).ok_or(BuildError::SegmentOutsideFile { index })?,
        };
        if ph.filesz > ph.memsz {
            return Err(BuildError::SegmentFileLargerThanMemory { index });
        }
        if ph.memsz == 0 {
            continue;
        }
        if segments.len() == MAX_LOAD_SEGMENTS {
            return Err(BuildError::TooManySegments { count: segments.len() + 1, max: MAX_LOAD_SEGMENTS });
        }
        let start = load_base.checked_add(ph.vaddr);
        let end = start.and_then(|s| s.checked_add(ph.memsz));
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if s >= IMAGE_BASE_GPA && e <= MAX_DOMAIN_MEM_BYTES => (s, e),
            _ => {
                let s = load_base.saturating_add(ph.vaddr);
                return Err(BuildError::SegmentOutOfRange { index, start: s, end: s.saturating_add(ph.memsz) });
            }
        };
        if let Some(other) = segments.iter().find(|o| start < o.end && o.start < end) {
            return Err(BuildError::SegmentsOverlap { first: other.index, second: index });
        }
        segments.push(Placed { index, ph, start, end, file, patched: None });
    }
    let last_end = segments.iter().map(|s| s.end).max().ok_or(BuildError::NoLoadableSegments)?;
    // `last_end <= MAX_DOMAIN_MEM_BYTES`, so aligning cannot overflow.
    let image_end = page_align_up(last_end).unwrap_or(u64::MAX);
    if image_end > mem_bytes {
        return Err(BuildError::ImageTooLarge { need: image_end, have: mem_bytes });
    }

    let entry = load_base.checked_add(elf.entry()).ok_or(BuildError::EntryOutsideImage(u64::MAX))?;
    let entry_ok =
        segments.iter().any(|s| s.ph.executable() && entry >= s.start && entry - s.start < s.file.len() as u64);
    if !entry_ok {
        return Err(BuildError::EntryOutsideImage(entry));
    }

    let mut relocations = 0;
    let mut bss_patches = Vec::new();
    for rela in elf.relocations()? {
        match rela.kind {
            R_X86_64_NONE => continue,
            R_X86_64_RELATIVE => {}
            other => return Err(BuildError::UnsupportedRelocation(other)),
        }
        let seg = segments
            .iter_mut()
            .find(|s| s.holds(rela.offset, RELATIVE_BYTES))
            .ok_or(BuildError::RelocationOutOfRange { offset: rela.offset })?;
        let value = load_base.wrapping_add(rela.addend as u64);
        // `holds` checked the range against the segment (at most 3 GiB), so these fit.
        let at = rela.offset - seg.ph.vaddr;
        let end = at + RELATIVE_BYTES;
        if end <= seg.file.len() as u64 {
            let file = seg.file;
            let patched = seg.patched.get_or_insert_with(|| file.to_vec());
            patched[at as usize..end as usize].copy_from_slice(&value.to_le_bytes());
        } else {
            bss_patches.push((seg.start + at, value));
        }
        relocations += 1;
    }

    Ok(ImagePlan { load_base, entry, image_end, relocations, segments, bss_patches })
}

/// Checks a domain's RAM size.
pub fn check_mem_bytes(mem_bytes: u64) -> Result<(), BuildError> {
    if mem_bytes % PAGE_SIZE != 0 {
        Err(BuildError::MemoryNotPageAligned { bytes: mem_bytes })
    } else if mem_bytes < MIN_DOMAIN_MEM_BYTES {
        Err(BuildError::MemoryTooSmall { bytes: mem_bytes, min: MIN_DOMAIN_MEM_BYTES })
    } else if mem_bytes > MAX_DOMAIN_MEM_BYTES {
        Err(BuildError::MemoryTooLarge { bytes: mem_bytes, max: MAX_DOMAIN_MEM_BYTES })
    } else {
        Ok(())
    }
}

/// The start-of-day page for `spec`.
pub fn start_info(spec: &BuildSpec<'_>) -> Result<StartInfo, BuildError> {
    if spec.name.len() > NAME_MAX_BYTES {
        return Err(BuildError::NameTooLong { len: spec.name.len(), max: NAME_MAX_BYTES });
    }
    if spec.cmdline.len() > CMDLINE_MAX_BYTES {
        return Err(BuildError::CmdlineTooLong { len: spec.cmdline.len(), max: CMDLINE_MAX_BYTES });
    }
    if spec.modules.len() > MODULES_MAX {
        return Err(BuildError::TooManyModules { count: spec.modules.len(), max: MODULES_MAX });
    }
    let mut si = StartInfo::empty();
    si.domid = spec.domid;
    si.name = name_field(spec.name);
    si.flags = spec.flags;
    si.parent = u32::MAX;
    si.clone_index = 0;
    si.call_insn = spec.call_insn as u32;
    si.generation = spec.generation;
    si.mem_bytes = spec.mem_bytes;
    si.tsc_khz = spec.tsc_khz;
    si.cmdline[..spec.cmdline.len()].copy_from_slice(spec.cmdline.as_bytes());
    si.cmdline_len = spec.cmdline.len() as u32;
    si.modules[..spec.modules.len()].copy_from_slice(spec.modules);
    si.module_count = spec.modules.len() as u32;
    Ok(si)
}

/// Builds a domain: validates everything, then writes the image, the boot page tables, the
/// GDT and the start-of-day page through `mem`.
pub fn build(elf: &[u8], spec: &BuildSpec<'_>, mem: &mut dyn DomainMemory) -> Result<Built, BuildError> {
    check_mem_bytes(spec.mem_bytes)?;
    let start_info = start_info(spec)?;
    let plan = plan_image(elf, spec.mem_bytes)?;

    plan.write(mem)?;
    for pages in boot_tables::page_tables() {
        write(mem, pages.gpa, &pages.bytes)?;
    }
    write(mem, BOOT_GDT_GPA, &boot_tables::gdt_page())?;
    let mut page = vec![0u8; PAGE_SIZE as usize];
    page[..size_of::<StartInfo>()].copy_from_slice(start_info.as_bytes());
    write(mem, START_INFO_GPA, &page)?;

    let context = VcpuContext::long_mode(plan.entry(), BOOT_STACK_TOP_GPA, BOOT_PML4_GPA, START_INFO_GPA, BOOT_GDT_GPA);
    Ok(Built { context, start_info, load_base: plan.load_base(), image_end: plan.image_end() })
}

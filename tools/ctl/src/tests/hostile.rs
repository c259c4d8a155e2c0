//! Hostile and malformed images and build requests: each must be refused with the right error,
//! without panicking and without writing guest memory.

use super::synth::*;
use crate::builder::{BuildSpec, build};
use crate::error::{BuildError, DynamicError};
use guest_abi::layout::{IMAGE_BASE_GPA, MAX_DOMAIN_MEM_BYTES, MIN_DOMAIN_MEM_BYTES};
use guest_abi::start_info::{CMDLINE_MAX_BYTES, MODULES_MAX};

fn refuse(elf: &[u8], spec: &BuildSpec<'_>) -> BuildError {
    let mut mem = VecMemory::new(MEM_BYTES);
    let err = build(elf, spec, &mut mem).expect_err("image must be refused");
    assert_eq!(mem.writes, 0, "a refused build wrote guest memory ({err:?})");
    err
}

fn refuse_elf(elf: &[u8]) -> BuildError {
    refuse(elf, &spec())
}

fn patched(f: impl FnOnce(&mut [u8])) -> std::vec::Vec<u8> {
    let mut elf = pie();
    f(&mut elf);
    elf
}

#[test]
fn every_truncation_is_refused() {
    let elf = pie();
    for len in 0..elf.len() {
        refuse_elf(&elf[..len]);
    }
}

#[test]
fn short_headers_are_truncated_not_misidentified() {
    let elf = pie();
    for len in [0, 3, 4, 63] {
        assert_eq!(refuse_elf(&elf[..len]), BuildError::Truncated, "length {len}");
    }
}

#[test]
fn foreign_files_are_not_elf() {
    assert_eq!(refuse_elf(b"MZ\x90\x00 this is not an ELF image, it is something else entirely"), BuildError::NotElf);
}

#[test]
fn wrong_class_endianness_machine_and_type_are_refused() {
    assert_eq!(refuse_elf(&patched(|b| b[4] = 1)), BuildError::WrongClass(1));
    assert_eq!(refuse_elf(&patched(|b| b[5] = 2)), BuildError::WrongEndian(2));
    assert_eq!(refuse_elf(&patched(|b| put_u16(b, 18, 3))), BuildError::WrongMachine(3));
    assert_eq!(refuse_elf(&patched(|b| put_u16(b, E_TYPE, 1))), BuildError::WrongType(1));
}

#[test]
fn program_header_table_outside_the_file_is_refused() {
    assert_eq!(refuse_elf(&patched(|b| put_u64(b, 32, u64::MAX - 8))), BuildError::Truncated);
    assert_eq!(refuse_elf(&patched(|b| put_u16(b, 56, 0xFFFE))), BuildError::Truncated);
    assert_eq!(refuse_elf(&patched(|b| put_u16(b, 56, 0xFFFF))), BuildError::BadProgramHeaders);
    assert_eq!(refuse_elf(&patched(|b| put_u16(b, 54, 32))), BuildError::BadProgramHeaders);
    assert_eq!(refuse_elf(&patched(|b| put_u16(b, 56, 0))), BuildError::NoLoadableSegments);
}

#[test]
fn huge_file_sizes_and_offsets_are_refused() {
    let elf = patched(|b| put_u64(b, phdr(1, P_FILESZ), u64::MAX));
    assert_eq!(refuse_elf(&elf), BuildError::SegmentOutsideFile { index: 1 });
    let elf = patched(|b| put_u64(b, phdr(1, P_OFFSET), u64::MAX - 0x10));
    assert_eq!(refuse_elf(&elf), BuildError::SegmentOutsideFile { index: 1 });
    let elf = patched(|b| put_u64(b, phdr(0, P_FILESZ), 0x2000));
    assert_eq!(refuse_elf(&elf), BuildError::SegmentOutsideFile { index: 0 });
}

#[test]
fn file_size_above_memory_size_is_refused() {
    let elf = patched(|b| put_u64(b, phdr(1, P_MEMSZ), SEG1_FILE_BYTES - 1));
    assert_eq!(refuse_elf(&elf), BuildError::SegmentFileLargerThanMemory { index: 1 });
}

#[test]
fn overflowing_addresses_are_out_of_range() {
    let elf = patched(|b| put_u64(b, phdr(1, P_VADDR), u64::MAX - 0x10));
    assert!(matches!(refuse_elf(&elf), BuildError::SegmentOutOfRange { index: 1, .. }));
    let elf = patched(|b| put_u64(b, phdr(1, P_MEMSZ), u64::MAX));
    assert!(matches!(refuse_elf(&elf), BuildError::SegmentOutOfRange { index: 1, .. }));
}

#[test]
fn segments_below_the_image_base_or_beyond_any_domain_are_out_of_range() {
    // A fixed-address image linked at 4 KiB would overwrite the start-of-day page.
    let elf = patched(|b| put_u16(b, E_TYPE, 2));
    assert_eq!(refuse_elf(&elf), BuildError::SegmentOutOfRange { index: 0, start: 0, end: SEG0_BYTES });
    let elf = patched(|b| put_u64(b, phdr(1, P_VADDR), MAX_DOMAIN_MEM_BYTES));
    assert!(matches!(refuse_elf(&elf), BuildError::SegmentOutOfRange { index: 1, .. }));
}

#[test]
fn image_larger_than_the_domain_is_refused() {
    let elf = patched(|b| put_u64(b, phdr(1, P_MEMSZ), MEM_BYTES));
    let need = IMAGE_BASE_GPA + SEG1_VADDR + MEM_BYTES;
    assert_eq!(refuse_elf(&elf), BuildError::ImageTooLarge { need, have: MEM_BYTES });
}

#[test]
fn overlapping_segments_are_refused() {
    let elf = patched(|b| put_u64(b, phdr(1, P_VADDR), SEG0_BYTES - 8));
    assert_eq!(refuse_elf(&elf), BuildError::SegmentsOverlap { first: 0, second: 1 });
}

#[test]
fn entry_outside_executable_segments_is_refused() {
    let elf = patched(|b| put_u64(b, E_ENTRY, SEG1_VADDR));
    assert_eq!(refuse_elf(&elf), BuildError::EntryOutsideImage(IMAGE_BASE_GPA + SEG1_VADDR));
    let elf = patched(|b| put_u64(b, E_ENTRY, SEG0_BYTES));
    assert_eq!(refuse_elf(&elf), BuildError::EntryOutsideImage(IMAGE_BASE_GPA + SEG0_BYTES));
    let elf = patched(|b| put_u64(b, E_ENTRY, u64::MAX));
    assert_eq!(refuse_elf(&elf), BuildError::EntryOutsideImage(u64::MAX));
}

#[test]
fn unsupported_relocation_types_are_refused() {
    // R_X86_64_64 against symbol 1.
    let elf = patched(|b| put_u64(b, rela(2, 8), (1 << 32) | 1));
    assert_eq!(refuse_elf(&elf), BuildError::UnsupportedRelocation(1));
    // R_X86_64_GLOB_DAT.
    let elf = patched(|b| put_u64(b, rela(0, 8), 6));
    assert_eq!(refuse_elf(&elf), BuildError::UnsupportedRelocation(6));
}

#[test]
fn relocations_outside_loaded_segments_are_refused() {
    for offset in [0x9000, SEG1_VADDR + SEG1_MEM_BYTES - 4, u64::MAX - 3, u64::MAX] {
        let elf = patched(|b| put_u64(b, rela(1, 0), offset));
        assert_eq!(refuse_elf(&elf), BuildError::RelocationOutOfRange { offset }, "offset {offset:#x}");
    }
}

#[test]
fn malformed_dynamic_sections_are_refused() {
    let bad = |index: usize, value: u64| refuse_elf(&patched(|b| put_u64(b, dyn_value(index), value)));
    assert_eq!(bad(2, 16), BuildError::BadDynamic(DynamicError::RelaEntrySize(16)));
    assert_eq!(bad(1, 25), BuildError::BadDynamic(DynamicError::RelaSizeNotMultiple(25)));
    assert_eq!(bad(1, u64::MAX - 15), BuildError::BadDynamic(DynamicError::RelaNotInImage));
    assert_eq!(bad(0, 0x2F0), BuildError::BadDynamic(DynamicError::RelaNotInImage));
    assert_eq!(bad(0, u64::MAX - 8), BuildError::BadDynamic(DynamicError::RelaNotInImage));
    // Turn DT_RELASZ into DT_REL.
    let elf = patched(|b| put_u64(b, DYNAMIC_OFFSET as usize + 16, 17));
    assert_eq!(refuse_elf(&elf), BuildError::BadDynamic(DynamicError::UnsupportedTag(17)));
    // Drop DT_RELASZ (make it DT_NULL-free padding tag 0x6fff_0000) so DT_RELA stands alone.
    let elf = patched(|b| put_u64(b, DYNAMIC_OFFSET as usize + 16, 0x6fff_0000));
    assert_eq!(refuse_elf(&elf), BuildError::BadDynamic(DynamicError::RelaIncomplete));
    let elf = patched(|b| put_u64(b, phdr(2, P_FILESZ), u64::MAX));
    assert_eq!(refuse_elf(&elf), BuildError::BadDynamic(DynamicError::OutsideFile));
}

#[test]
fn corrupting_any_header_byte_never_panics() {
    let good = pie();
    let header_end = RELA_OFFSET + RELA_COUNT * 24;
    let dynamic = DYNAMIC_OFFSET as usize..good.len();
    for at in (0..header_end).chain(dynamic) {
        for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
            let mut elf = good.clone();
            elf[at] = value;
            let mut mem = VecMemory::new(MEM_BYTES);
            if build(&elf, &spec(), &mut mem).is_err() {
                assert_eq!(mem.writes, 0, "byte {at:#x} = {value:#x}");
            }
        }
    }
}

#[test]
fn overlong_start_info_fields_are_refused() {
    let long = "x".repeat(CMDLINE_MAX_BYTES + 1);
    let err = refuse(&pie(), &BuildSpec { cmdline: &long, ..spec() });
    assert_eq!(err, BuildError::CmdlineTooLong { len: CMDLINE_MAX_BYTES + 1, max: CMDLINE_MAX_BYTES });
    let name = "n".repeat(33);
    assert_eq!(refuse(&pie(), &BuildSpec { name: &name, ..spec() }), BuildError::NameTooLong { len: 33, max: 32 });
    let modules = [MODULES[0]; MODULES_MAX + 1];
    let err = refuse(&pie(), &BuildSpec { modules: &modules, ..spec() });
    assert_eq!(err, BuildError::TooManyModules { count: MODULES_MAX + 1, max: MODULES_MAX });
}

#[test]
fn bad_memory_sizes_are_refused() {
    let with = |mem_bytes| refuse(&pie(), &BuildSpec { mem_bytes, ..spec() });
    assert_eq!(with(MEM_BYTES + 1), BuildError::MemoryNotPageAligned { bytes: MEM_BYTES + 1 });
    let small = MIN_DOMAIN_MEM_BYTES - 4096;
    assert_eq!(with(small), BuildError::MemoryTooSmall { bytes: small, min: MIN_DOMAIN_MEM_BYTES });
    let big = MAX_DOMAIN_MEM_BYTES + 4096;
    assert_eq!(with(big), BuildError::MemoryTooLarge { bytes: big, max: MAX_DOMAIN_MEM_BYTES });
    assert_eq!(with(0), BuildError::MemoryTooSmall { bytes: 0, min: MIN_DOMAIN_MEM_BYTES });
}

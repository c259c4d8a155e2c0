//! Builds the real test guests when the bare-metal build has produced them (skipping with a
//! note otherwise) and checks the result against the ELF's own relocation table and `_end`.

use super::synth::VecMemory;
use crate::builder::{BuildSpec, Built, build};
use crate::elf::{Elf, PT_LOAD, R_X86_64_RELATIVE, file_range};
use guest_abi::hypercall::CallInsn;
use guest_abi::layout::{IMAGE_BASE_GPA, PAGE_SIZE};

/// Guest RAM for the real image.
const REAL_MEM_BYTES: u64 = 16 << 20;

fn guest_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bare/x86_64-unknown-none/release").join(name)
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n].iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x))
}

/// Value of symbol `name` in the ELF's `.symtab`, if present.
fn symbol(elf: &[u8], name: &str) -> Option<u64> {
    let shoff = le(elf, 40, 8) as usize;
    let shentsize = le(elf, 58, 2) as usize;
    let shnum = le(elf, 60, 2) as usize;
    let section = |i: usize| shoff + i * shentsize;
    for i in 0..shnum {
        let sh = section(i);
        if le(elf, sh + 4, 4) != 2 {
            continue; // not SHT_SYMTAB
        }
        let (off, size, link, entsize) =
            (le(elf, sh + 24, 8), le(elf, sh + 32, 8), le(elf, sh + 40, 4) as usize, le(elf, sh + 56, 8));
        let strtab = section(link);
        let str_off = le(elf, strtab + 24, 8) as usize;
        for sym in file_range(elf, off, size)?.chunks_exact(entsize as usize) {
            let name_at = str_off + le(sym, 0, 4) as usize;
            let end = elf[name_at..].iter().position(|&c| c == 0)? + name_at;
            if &elf[name_at..end] == name.as_bytes() {
                return Some(le(sym, 8, 8));
            }
        }
    }
    None
}

/// Builds guest `name` if it has been built; returns the image and the result.
fn build_real(name: &str) -> Option<(std::vec::Vec<u8>, Built, VecMemory)> {
    let path = guest_path(name);
    let Ok(bytes) = std::fs::read(&path) else {
        std::println!("note: {} not built; skipping the real-guest check", path.display());
        return None;
    };
    let spec = BuildSpec {
        domid: 3,
        name,
        cmdline: "",
        mem_bytes: REAL_MEM_BYTES,
        flags: 0,
        call_insn: CallInsn::Vmcall,
        tsc_khz: 1_000_000,
        generation: 1,
        modules: &[],
    };
    let mut mem = VecMemory::new(REAL_MEM_BYTES);
    let built = build(&bytes, &spec, &mut mem).expect("the real guest builds");
    Some((bytes, built, mem))
}

#[test]
fn real_hello_guest_loads_and_relocates() {
    let Some((bytes, built, mem)) = build_real("hello") else { return };
    assert_eq!(built.load_base, IMAGE_BASE_GPA, "guests are static PIEs");
    let elf = Elf::parse(&bytes).expect("parses");
    assert_eq!(built.context.rip, IMAGE_BASE_GPA + elf.entry());
    for ph in elf.program_headers().filter(|ph| ph.p_type == PT_LOAD) {
        let gpa = IMAGE_BASE_GPA + ph.vaddr;
        assert!(gpa + ph.memsz <= built.image_end);
        let file = file_range(&bytes, ph.offset, ph.filesz).expect("segment in file");
        let loaded = mem.range(gpa, ph.filesz);
        // Equal except where relocations patched 8-byte words.
        let differing = file.iter().zip(loaded).filter(|(a, b)| a != b).count();
        assert!(differing <= 8 * elf.relocations().expect("relocations").len());
        let bss = mem.range(gpa + ph.filesz, ph.memsz - ph.filesz);
        assert!(bss.iter().all(|&b| b == 0), "bss of segment at {gpa:#x} is zero");
    }
    let relocations = elf.relocations().expect("relocations parse");
    assert!(!relocations.is_empty(), "the runtime's tables of &str need relocations");
    for r in relocations.iter().filter(|r| r.kind == R_X86_64_RELATIVE) {
        assert_eq!(mem.u64_at(IMAGE_BASE_GPA + r.offset), IMAGE_BASE_GPA.wrapping_add(r.addend as u64));
    }
    std::println!("hello: {} relocations, image end {:#x}", relocations.len(), built.image_end);
}

#[test]
fn real_memory_guest_end_symbol_matches_the_builders_image_end() {
    // `memory` calls `rt::image_end()`, so the linker defines `_end` in it.
    let Some((bytes, built, _)) = build_real("memory") else { return };
    let end = symbol(&bytes, "_end").expect("memory references _end");
    let rt_image_end = (IMAGE_BASE_GPA + end).next_multiple_of(PAGE_SIZE);
    assert_eq!(rt_image_end, built.image_end);
}

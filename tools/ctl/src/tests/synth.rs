//! Test fixtures: a hand-assembled ELF64 PIE (two `PT_LOAD`, a `PT_DYNAMIC` with `RELATIVE`
//! relocations), field offsets for corrupting it, a Vec-backed [`DomainMemory`] and a spec.

use crate::builder::BuildSpec;
use crate::memory::DomainMemory;
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::HvError;
use guest_abi::hypercall::CallInsn;
use guest_abi::start_info::{MODULE_NAME_MAX_BYTES, ModuleInfo};

/// Guest RAM of the test domain.
pub const MEM_BYTES: u64 = 4 << 20;
/// What untouched test memory is filled with.
pub const FILL_BYTE: u8 = 0xAA;

/// Segment 0 (R+X): file 0..SEG0_BYTES at vaddr 0 (headers, relocations, code).
pub const SEG0_BYTES: u64 = 0x300;
/// Link-time entry point, inside segment 0.
pub const ENTRY_VADDR: u64 = 0x280;
/// The code bytes at the entry point.
pub const CODE: [u8; 4] = [0x90, 0x90, 0xF4, 0xEB];
/// File offset of the `Rela` table (inside segment 0).
pub const RELA_OFFSET: usize = 0x200;
/// Segment 1 (R+W): file SEG1_OFFSET.. at vaddr SEG1_VADDR, then `.bss`.
pub const SEG1_OFFSET: u64 = 0x1000;
pub const SEG1_VADDR: u64 = 0x2000;
pub const SEG1_FILE_BYTES: u64 = 0x100;
pub const SEG1_MEM_BYTES: u64 = 0x3000;
/// The dynamic array: last 64 bytes of segment 1 and of the file.
pub const DYNAMIC_OFFSET: u64 = SEG1_OFFSET + SEG1_FILE_BYTES - 64;
/// Relocation 0 patches the data part of segment 1.
pub const RELOC0_VADDR: u64 = SEG1_VADDR + 0x10;
pub const RELOC0_ADDEND: u64 = ENTRY_VADDR;
/// Relocation 1 patches `.bss` of segment 1.
pub const RELOC1_VADDR: u64 = SEG1_VADDR + 0x200;
pub const RELOC1_ADDEND: u64 = SEG1_VADDR + 8;
/// Entries of the `Rela` table (the third is `R_X86_64_NONE`).
pub const RELA_COUNT: usize = 3;

/// Byte offset of field `field_offset` of program header `index`.
pub const fn phdr(index: usize, field_offset: usize) -> usize {
    64 + index * 56 + field_offset
}
pub const P_OFFSET: usize = 8;
pub const P_VADDR: usize = 16;
pub const P_FILESZ: usize = 32;
pub const P_MEMSZ: usize = 40;
/// Byte offset of `e_entry`.
pub const E_ENTRY: usize = 24;
/// Byte offset of `e_type`.
pub const E_TYPE: usize = 16;
/// Byte offset of relocation `index`'s field (`0` offset, `8` info, `16` addend).
pub const fn rela(index: usize, field_offset: usize) -> usize {
    RELA_OFFSET + index * 24 + field_offset
}
/// Byte offset of dynamic entry `index`'s value.
pub const fn dyn_value(index: usize) -> usize {
    DYNAMIC_OFFSET as usize + index * 16 + 8
}

pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn put_phdr(b: &mut [u8], index: usize, p_type: u32, flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) {
    put_u32(b, phdr(index, 0), p_type);
    put_u32(b, phdr(index, 4), flags);
    put_u64(b, phdr(index, P_OFFSET), offset);
    put_u64(b, phdr(index, P_VADDR), vaddr);
    put_u64(b, phdr(index, 24), vaddr);
    put_u64(b, phdr(index, P_FILESZ), filesz);
    put_u64(b, phdr(index, P_MEMSZ), memsz);
    put_u64(b, phdr(index, 48), 0x1000);
}

/// Byte `i` of segment 1's file contents (recognisable data).
pub fn seg1_byte(i: u64) -> u8 {
    (i as u8).wrapping_mul(7).wrapping_add(3)
}

/// The hand-assembled PIE. The file ends with segment 1, so every truncation cuts into bytes
/// the builder needs.
pub fn pie() -> Vec<u8> {
    let len = (SEG1_OFFSET + SEG1_FILE_BYTES) as usize;
    let mut b = vec![0u8; len];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // ELFCLASS64
    b[5] = 1; // little endian
    b[6] = 1; // EV_CURRENT
    put_u16(&mut b, E_TYPE, 3); // ET_DYN
    put_u16(&mut b, 18, 62); // EM_X86_64
    put_u32(&mut b, 20, 1);
    put_u64(&mut b, E_ENTRY, ENTRY_VADDR);
    put_u64(&mut b, 32, 64); // e_phoff
    put_u16(&mut b, 52, 64); // e_ehsize
    put_u16(&mut b, 54, 56); // e_phentsize
    put_u16(&mut b, 56, 3); // e_phnum

    put_phdr(&mut b, 0, 1, 5, 0, 0, SEG0_BYTES, SEG0_BYTES);
    put_phdr(&mut b, 1, 1, 6, SEG1_OFFSET, SEG1_VADDR, SEG1_FILE_BYTES, SEG1_MEM_BYTES);
    put_phdr(&mut b, 2, 2, 6, DYNAMIC_OFFSET, SEG1_VADDR + (DYNAMIC_OFFSET - SEG1_OFFSET), 64, 64);

    // Relocations: RELATIVE into data, RELATIVE into .bss, NONE.
    put_u64(&mut b, rela(0, 0), RELOC0_VADDR);
    put_u64(&mut b, rela(0, 8), 8);
    put_u64(&mut b, rela(0, 16), RELOC0_ADDEND);
    put_u64(&mut b, rela(1, 0), RELOC1_VADDR);
    put_u64(&mut b, rela(1, 8), 8);
    put_u64(&mut b, rela(1, 16), RELOC1_ADDEND);
    put_u64(&mut b, rela(2, 0), 0);
    put_u64(&mut b, rela(2, 8), 0);

    let entry = ENTRY_VADDR as usize;
    b[entry..entry + CODE.len()].copy_from_slice(&CODE);

    for i in 0..DYNAMIC_OFFSET - SEG1_OFFSET {
        b[(SEG1_OFFSET + i) as usize] = seg1_byte(i);
    }
    // The dynamic array: DT_RELA, DT_RELASZ, DT_RELAENT, DT_NULL.
    let dynamic = [(7u64, RELA_OFFSET as u64), (8, (RELA_COUNT * 24) as u64), (9, 24), (0, 0)];
    for (i, (tag, value)) in dynamic.iter().enumerate() {
        put_u64(&mut b, DYNAMIC_OFFSET as usize + i * 16, *tag);
        put_u64(&mut b, dyn_value(i), *value);
    }
    b
}

/// Guest memory in a Vec, pre-filled with [`FILL_BYTE`], counting write calls.
pub struct VecMemory {
    pub bytes: Vec<u8>,
    pub writes: usize,
    /// Fail every write with this error (to test error propagation).
    pub fail_with: Option<HvError>,
}

impl VecMemory {
    pub fn new(mem_bytes: u64) -> Self {
        Self { bytes: vec![FILL_BYTE; mem_bytes as usize], writes: 0, fail_with: None }
    }

    pub fn u64_at(&self, gpa: u64) -> u64 {
        get_u64(&self.bytes, gpa as usize)
    }

    pub fn range(&self, gpa: u64, len: u64) -> &[u8] {
        &self.bytes[gpa as usize..(gpa + len) as usize]
    }
}

impl DomainMemory for VecMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), HvError> {
        self.writes += 1;
        if let Some(e) = self.fail_with {
            return Err(e);
        }
        let end = gpa.checked_add(data.len() as u64).ok_or(HvError::BadAddress)?;
        if end > self.bytes.len() as u64 {
            return Err(HvError::BadAddress);
        }
        self.bytes[gpa as usize..end as usize].copy_from_slice(data);
        Ok(())
    }
}

const fn module_name(name: &str) -> [u8; MODULE_NAME_MAX_BYTES] {
    let mut out = [0u8; MODULE_NAME_MAX_BYTES];
    let mut i = 0;
    while i < name.len() {
        out[i] = name.as_bytes()[i];
        i += 1;
    }
    out
}

/// Two boot modules for the spec.
pub static MODULES: [ModuleInfo; 2] = [
    ModuleInfo { name: module_name("first"), gpa: 0xC000_0000, len: 100 },
    ModuleInfo { name: module_name("second"), gpa: 0xC000_1000, len: 7 },
];

/// The spec every test starts from.
pub fn spec() -> BuildSpec<'static> {
    BuildSpec {
        domid: 7,
        name: "synthetic",
        cmdline: "seed=42 count=10",
        mem_bytes: MEM_BYTES,
        flags: guest_abi::start_info::StartFlags::PRIVILEGED.bits(),
        call_insn: CallInsn::Vmmcall,
        tsc_khz: 2_000_000,
        generation: 99,
        modules: &MODULES,
    }
}

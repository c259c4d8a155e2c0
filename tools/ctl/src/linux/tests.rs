//! Host tests of the Linux loader: synthetic bzImage headers for every refusal, the layout a
//! build leaves in memory, the MP table, the launch through a fake hypervisor, and the real
//! Debian kernel when it is present.

use super::bootparams::*;
use super::bzimage::*;
use super::mptable::*;
use super::*;
use crate::boot_tables;
use crate::builder::{BuildSpec, start_info};
use crate::control::{Control, Hypercalls};
use crate::error::BuildError;
use crate::memory::DomainMemory;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::domctl::{
    CREATE_PC_PLATFORM, CreateArgs, DomainInfo, DomainStat, NAME_MAX_BYTES, REASON_MAX_BYTES, name_field, name_str,
};
use guest_abi::hypercall::{CallInsn, nr};
use guest_abi::layout::{BOOT_PML4_GPA, MAX_DOMAIN_MEM_BYTES, PAGE_SIZE, START_INFO_GPA};
use guest_abi::start_info::{CMDLINE_MAX_BYTES, StartInfo};
use guest_abi::vcpu::{RFLAGS_RESERVED_ONE, SEGMENT_TYPE_TSS_BUSY, SegmentAttrs, VcpuContext};
use guest_abi::{HvError, HvResult};

const MIB: u64 = 1 << 20;
/// Setup sectors of the synthetic kernel.
const SYNTH_SETUP_SECTS: u8 = 4;
const SYNTH_SETUP_BYTES: usize = (SYNTH_SETUP_SECTS as usize + 1) * 512;
/// Bytes of its protected-mode part.
const SYNTH_PM_BYTES: usize = 64 * 1024;
/// Its decompression area: 16 MiB (pref_address) + 4 MiB (init_size).
const SYNTH_INIT_SIZE: u32 = 4 << 20;
const SYNTH_DECOMPRESS_START: u64 = 16 * MIB;
const SYNTH_DECOMPRESS_END: u64 = SYNTH_DECOMPRESS_START + SYNTH_INIT_SIZE as u64;
/// Where its version string sits (0x200 + the kernel_version field).
const SYNTH_VERSION_AT: usize = 0x400;
const SYNTH_VERSION: &str = "6.1.0-synthetic (test@cowvisor) #1 SMP";
/// RAM the tests give it.
const MEM: u64 = 32 * MIB;
/// The real Debian kernel, if it has been unpacked.
const REAL_KERNEL: &str = "/tmp/lx/k/boot/vmlinuz-6.1.0-48-amd64";

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn pm_byte(i: usize) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 8)) as u8 | 1
}

/// A bzImage header shaped like Debian's (protocol 2.15, xloadflags 0x7f, 2 MiB alignment,
/// relocatable, pref_address 16 MiB, cmdline_size 0x7ff) with a small init_size, 4 setup
/// sectors and 64 KiB of protected-mode "code".
fn synth() -> Vec<u8> {
    let mut b = vec![0u8; SYNTH_SETUP_BYTES + SYNTH_PM_BYTES];
    b[SETUP_SECTS] = SYNTH_SETUP_SECTS;
    put_u16(&mut b, 0x1F2, 1); // root_flags
    put_u32(&mut b, 0x1F4, (SYNTH_PM_BYTES / 16) as u32); // syssize
    put_u16(&mut b, VID_MODE, 0xFFFF);
    put_u16(&mut b, BOOT_FLAG, BOOT_FLAG_MAGIC);
    b[0x200] = 0xEB; // jmp short
    b[HEADER_LENGTH_BYTE] = 0x6A; // header ends at 0x26C
    b[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
    put_u16(&mut b, VERSION, 0x020F);
    put_u16(&mut b, KERNEL_VERSION, (SYNTH_VERSION_AT - 0x200) as u16);
    b[LOADFLAGS] = LOADED_HIGH;
    put_u32(&mut b, 0x214, 0x10_0000); // code32_start
    put_u32(&mut b, INITRD_ADDR_MAX, 0x7FFF_FFFF);
    put_u32(&mut b, KERNEL_ALIGNMENT, 2 << 20);
    b[RELOCATABLE_KERNEL] = 1;
    b[0x235] = 21; // min_alignment
    put_u16(&mut b, XLOADFLAGS, 0x7F);
    put_u32(&mut b, CMDLINE_SIZE, 0x7FF);
    put_u64(&mut b, PREF_ADDRESS, SYNTH_DECOMPRESS_START);
    put_u32(&mut b, INIT_SIZE, SYNTH_INIT_SIZE);
    put_u32(&mut b, 0x268, 0x1234); // kernel_info_offset: last header field
    // Bytes after the header in the setup code must not reach the zero page.
    for i in 0x26C..0x290 {
        b[i] = 0xCC;
    }
    b[SYNTH_VERSION_AT..SYNTH_VERSION_AT + SYNTH_VERSION.len()].copy_from_slice(SYNTH_VERSION.as_bytes());
    for (i, byte) in b[SYNTH_SETUP_BYTES..].iter_mut().enumerate() {
        *byte = pm_byte(i);
    }
    b
}

fn synth_with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = synth();
    f(&mut b);
    b
}

/// Guest memory that records every write (sparse, so 256 MiB domains cost nothing).
#[derive(Default)]
struct RecordingMemory {
    mem_bytes: u64,
    writes: Vec<(u64, Vec<u8>)>,
    /// Fail the write with this index.
    fail_at: Option<usize>,
}

impl RecordingMemory {
    fn new(mem_bytes: u64) -> Self {
        Self { mem_bytes, ..Self::default() }
    }

    /// Bytes at `gpa..gpa + len` as the writes left them (never written: 0).
    fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let end = gpa + len as u64;
        for (at, data) in &self.writes {
            let w_end = at + data.len() as u64;
            let (s, e) = ((*at).max(gpa), w_end.min(end));
            if s < e {
                out[(s - gpa) as usize..(e - gpa) as usize].copy_from_slice(&data[(s - at) as usize..(e - at) as usize]);
            }
        }
        out
    }

    fn written(&self, gpa: u64) -> bool {
        self.writes.iter().any(|(at, d)| (*at..at + d.len() as u64).contains(&gpa))
    }

    fn u32_at(&self, gpa: u64) -> u32 {
        get_u32(&self.read(gpa, 4), 0)
    }

    fn u64_at(&self, gpa: u64) -> u64 {
        get_u64(&self.read(gpa, 8), 0)
    }
}

impl DomainMemory for RecordingMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), HvError> {
        if self.fail_at == Some(self.writes.len()) {
            return Err(HvError::OutOfMemory);
        }
        let end = gpa.checked_add(data.len() as u64).ok_or(HvError::BadAddress)?;
        if end > self.mem_bytes {
            return Err(HvError::BadAddress);
        }
        self.writes.push((gpa, data.to_vec()));
        Ok(())
    }
}

fn spec<'a>(kernel: &'a [u8], initrd: &'a [u8], cmdline: &'a str, mem_bytes: u64) -> LinuxSpec<'a> {
    LinuxSpec {
        domid: 5,
        name: "linux",
        kernel,
        initrd,
        cmdline,
        mem_bytes,
        call_insn: CallInsn::Vmmcall,
        tsc_khz: 2_000_000,
        generation: 77,
    }
}

fn build(kernel: &[u8], initrd: &[u8], cmdline: &str, mem_bytes: u64) -> Result<(LinuxBuilt, RecordingMemory), LinuxError> {
    let mut mem = RecordingMemory::new(mem_bytes);
    build_linux(&spec(kernel, initrd, cmdline, mem_bytes), &mut mem).map(|b| (b, mem))
}

fn built() -> (LinuxBuilt, RecordingMemory) {
    build(&synth(), &[], "console=ttyS0", MEM).expect("synthetic bzImage builds")
}

fn refuse(kernel: &[u8]) -> LinuxError {
    build(kernel, &[], "", MEM).err().expect("refused")
}

fn e820(mem: &RecordingMemory) -> Vec<E820Entry> {
    let zp = mem.read(ZERO_PAGE_GPA, ZERO_PAGE_BYTES);
    (0..zp[E820_ENTRIES] as usize)
        .map(|i| {
            let at = E820_TABLE + i * E820_ENTRY_BYTES;
            E820Entry { addr: get_u64(&zp, at), size: get_u64(&zp, at + 8), kind: get_u32(&zp, at + 16) }
        })
        .collect()
}

// ---- header validation ----

#[test]
fn the_synthetic_header_parses_with_its_fields() {
    let k = synth();
    let img = BzImage::parse(&k).expect("parses");
    let h = img.header;
    assert_eq!((h.version, h.setup_sects, h.header_end), (0x020F, 4, 0x26C));
    assert_eq!((h.loadflags, h.xloadflags, h.kernel_alignment), (LOADED_HIGH, 0x7F, 2 << 20));
    assert!(h.relocatable);
    assert_eq!((h.pref_address, h.init_size, h.cmdline_size, h.initrd_addr_max), (16 * MIB, SYNTH_INIT_SIZE, 0x7FF, 0x7FFF_FFFF));
    assert_eq!(img.protected_mode().len(), SYNTH_PM_BYTES);
    assert_eq!(img.decompression_area(), (SYNTH_DECOMPRESS_START, SYNTH_DECOMPRESS_END));
}

#[test]
fn a_file_shorter_than_the_setup_header_is_refused() {
    let k = synth();
    for len in [0, 1, 0x1FF, MAGIC_END - 1] {
        assert_eq!(refuse(&k[..len]), LinuxError::ShorterThanSetupHeader { len, need: MAGIC_END }, "len {len}");
    }
    // Long enough for the magic, not for the header the jump byte announces.
    for len in [MAGIC_END, 0x240, 0x26B] {
        assert_eq!(refuse(&k[..len]), LinuxError::ShorterThanSetupHeader { len, need: 0x26C }, "len {len}");
    }
}

#[test]
fn a_file_without_hdrs_is_refused_as_not_a_bzimage() {
    assert_eq!(refuse(&synth_with(|b| b[HEADER_MAGIC + 3] = b'Z')), LinuxError::NotBzImage);
    assert_eq!(refuse(&vec![0u8; 0x1000]), LinuxError::NotBzImage);
}

#[test]
fn a_file_without_the_boot_flag_is_refused_as_not_a_bzimage() {
    assert_eq!(refuse(&synth_with(|b| put_u16(b, BOOT_FLAG, 0x55AA))), LinuxError::NotBzImage);
}

#[test]
fn an_elf_vmlinux_is_not_a_bzimage() {
    let mut elf = vec![0u8; 0x1000];
    elf[..4].copy_from_slice(b"\x7fELF");
    assert_eq!(refuse(&elf), LinuxError::NotBzImage);
}

#[test]
fn a_protocol_older_than_2_12_is_refused_as_too_old() {
    for version in [0x0200, 0x0206, 0x020B] {
        assert_eq!(refuse(&synth_with(|b| put_u16(b, VERSION, version))), LinuxError::ProtocolTooOld { version });
    }
    assert!(build(&synth_with(|b| put_u16(b, VERSION, 0x020C)), &[], "", MEM).is_ok(), "2.12 is enough");
}

#[test]
fn a_header_length_outside_the_zero_pages_room_is_refused() {
    // Ends before init_size / handover_offset.
    assert_eq!(refuse(&synth_with(|b| b[HEADER_LENGTH_BYTE] = 0x60)), LinuxError::BadHeaderLength { end: 0x262 });
    // Runs past 0x290, where boot_params has other fields.
    assert_eq!(refuse(&synth_with(|b| b[HEADER_LENGTH_BYTE] = 0x90)), LinuxError::BadHeaderLength { end: 0x292 });
    assert!(build(&synth_with(|b| b[HEADER_LENGTH_BYTE] = 0x8E), &[], "", MEM).is_ok(), "0x290 itself fits");
}

#[test]
fn a_file_shorter_than_setup_sects_says_is_refused() {
    let k = synth();
    let len = SYNTH_SETUP_BYTES - 1;
    assert_eq!(refuse(&k[..len]), LinuxError::ShorterThanSetupSects { len, need: SYNTH_SETUP_BYTES });
    let k = synth_with(|b| b[SETUP_SECTS] = 200);
    assert_eq!(refuse(&k), LinuxError::ShorterThanSetupSects { len: k.len(), need: 201 * 512 });
}

#[test]
fn setup_sects_zero_means_four() {
    let k = synth_with(|b| b[SETUP_SECTS] = 0);
    let img = BzImage::parse(&k).expect("parses");
    assert_eq!(img.header.setup_bytes(), 5 * 512);
    assert_eq!(img.protected_mode(), &k[5 * 512..]);
}

#[test]
fn a_bzimage_without_a_protected_mode_kernel_is_refused() {
    let k = synth();
    assert_eq!(refuse(&k[..SYNTH_SETUP_BYTES]), LinuxError::NoProtectedModeKernel);
}

#[test]
fn a_kernel_without_a_64_bit_entry_is_refused() {
    let k = synth_with(|b| put_u16(b, XLOADFLAGS, 0x7E));
    assert_eq!(refuse(&k), LinuxError::No64BitEntry { xloadflags: 0x7E });
}

#[test]
fn a_kernel_that_is_not_loaded_high_is_refused() {
    let k = synth_with(|b| b[LOADFLAGS] = 0x80);
    assert_eq!(refuse(&k), LinuxError::NotLoadedHigh { loadflags: 0x80 });
}

#[test]
fn a_kernel_alignment_that_is_not_a_power_of_two_is_refused() {
    for alignment in [0, 3 << 20, 0x20_0001] {
        let k = synth_with(|b| put_u32(b, KERNEL_ALIGNMENT, alignment));
        assert_eq!(refuse(&k), LinuxError::BadKernelAlignment { alignment });
    }
}

#[test]
fn an_init_size_smaller_than_the_kernel_is_refused() {
    let k = synth_with(|b| put_u32(b, INIT_SIZE, 0x1000));
    assert_eq!(refuse(&k), LinuxError::InitSizeTooSmall { init_size: 0x1000, kernel_bytes: SYNTH_PM_BYTES as u64 });
}

#[test]
fn a_fixed_address_kernel_that_would_decompress_below_1_mib_is_refused() {
    let k = synth_with(|b| {
        b[RELOCATABLE_KERNEL] = 0;
        put_u64(b, PREF_ADDRESS, 0x1_0000);
    });
    assert_eq!(refuse(&k), LinuxError::DecompressionTooLow { start: 0x1_0000 });
}

#[test]
fn a_relocatable_kernel_decompresses_at_its_aligned_load_address_but_not_below_pref_address() {
    let img = |align: u32, pref: u64, reloc: u8| {
        let k = synth_with(|b| {
            put_u32(b, KERNEL_ALIGNMENT, align);
            put_u64(b, PREF_ADDRESS, pref);
            b[RELOCATABLE_KERNEL] = reloc;
        });
        BzImage::parse(&k).map(|i| i.decompression_area().0)
    };
    assert_eq!(img(2 << 20, 16 * MIB, 1), Ok(16 * MIB));
    assert_eq!(img(2 << 20, 0, 1), Ok(2 * MIB), "1 MiB rounded up to 2 MiB");
    assert_eq!(img(64 << 20, 16 * MIB, 1), Ok(64 * MIB));
    assert_eq!(img(2 << 20, 32 * MIB, 0), Ok(32 * MIB), "a fixed kernel at pref_address");
}

#[test]
fn corrupting_any_header_byte_or_truncating_never_panics() {
    let k = synth();
    for at in 0x1E0..0x290 {
        for v in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
            let mut b = k.clone();
            b[at] = v;
            let _ = build(&b, &[], "", MEM);
            let _ = kernel_version(&b);
            let _ = min_mem_bytes(&b, 12345);
        }
    }
    for len in (0..0x300).chain([SYNTH_SETUP_BYTES - 1, SYNTH_SETUP_BYTES, SYNTH_SETUP_BYTES + 1]) {
        let _ = build(&k[..len], &[], "", MEM);
        let _ = kernel_version(&k[..len]);
    }
}

// ---- kernel version ----

#[test]
fn kernel_version_reads_the_string_at_0x200_plus_its_offset() {
    assert_eq!(kernel_version(&synth()), Some(SYNTH_VERSION));
    let (built, _) = built();
    assert_eq!(built.kernel_version.map(|v| v.as_str().to_string()).as_deref(), Some(SYNTH_VERSION));
}

#[test]
fn kernel_version_is_none_without_an_offset_a_nul_or_a_bzimage() {
    assert_eq!(kernel_version(&synth_with(|b| put_u16(b, KERNEL_VERSION, 0))), None);
    // No NUL within the bound: the string runs off the setup code.
    let k = synth_with(|b| {
        for i in SYNTH_VERSION_AT..SYNTH_SETUP_BYTES {
            b[i] = b'x';
        }
    });
    assert_eq!(kernel_version(&k), None);
    // An offset past the setup code.
    assert_eq!(kernel_version(&synth_with(|b| put_u16(b, KERNEL_VERSION, 0x8000))), None);
    assert_eq!(kernel_version(b"not a kernel"), None);
    assert_eq!(kernel_version(&synth_with(|b| b[BOOT_FLAG] = 0)), None);
}

#[test]
fn a_kernel_version_longer_than_the_bound_is_cut_to_none() {
    let k = synth_with(|b| {
        for i in SYNTH_VERSION_AT..SYNTH_VERSION_AT + KERNEL_VERSION_MAX_BYTES {
            b[i] = b'v';
        }
    });
    assert_eq!(kernel_version(&k), None);
    let k = synth_with(|b| {
        for i in SYNTH_VERSION_AT..SYNTH_VERSION_AT + KERNEL_VERSION_MAX_BYTES - 1 {
            b[i] = b'v';
        }
        b[SYNTH_VERSION_AT + KERNEL_VERSION_MAX_BYTES - 1] = 0;
    });
    assert_eq!(kernel_version(&k).map(str::len), Some(KERNEL_VERSION_MAX_BYTES - 1));
}

// ---- command line ----

#[test]
fn a_cmdline_longer_than_cmdline_size_is_refused() {
    let long = "a".repeat(0x800);
    assert_eq!(build(&synth(), &[], &long, MEM).err(), Some(LinuxError::CmdlineTooLong { len: 0x800, max: 0x7FF }));
    let fits = "a".repeat(0x7FF);
    let (_, mem) = build(&synth(), &[], &fits, MEM).expect("exactly cmdline_size fits");
    assert_eq!(mem.read(CMDLINE_GPA, 0x800), [fits.as_bytes(), &[0]].concat());
}

#[test]
fn a_cmdline_that_does_not_fit_its_page_is_refused() {
    let k = synth_with(|b| put_u32(b, CMDLINE_SIZE, 0xFFFF));
    let long = "a".repeat(4096);
    assert_eq!(
        build(&k, &[], &long, MEM).err(),
        Some(LinuxError::CmdlineTooLongForPage { len: 4096, max: 4095 })
    );
    assert!(build(&k, &[], &long[..4095], MEM).is_ok(), "4095 bytes and the NUL fill the page");
}

#[test]
fn a_cmdline_with_a_nul_is_refused() {
    assert_eq!(build(&synth(), &[], "root=x\0init=y", MEM).err(), Some(LinuxError::CmdlineHasNul { at: 6 }));
}

#[test]
fn the_cmdline_page_holds_the_cmdline_and_its_nul_and_the_zero_page_points_at_it() {
    let (_, mem) = built();
    assert_eq!(mem.read(CMDLINE_GPA, PAGE_SIZE as usize), [b"console=ttyS0".as_slice(), &[0; 4096 - 13]].concat());
    assert_eq!(mem.u32_at(ZERO_PAGE_GPA + CMD_LINE_PTR as u64), CMDLINE_GPA as u32);
    assert_eq!(mem.u32_at(ZERO_PAGE_GPA + EXT_CMD_LINE_PTR as u64), 0);
}

#[test]
fn default_cmdline_has_the_tsc_rate_and_lpj_for_hz_250() {
    let c = default_cmdline(2_500_000);
    assert!(c.contains(" tsc_early_khz=2500000 "), "{c}");
    assert!(c.contains(" lpj=10000000 "), "{c}");
    for word in ["console=ttyS0,115200", "noapic", "acpi=off", "pci=off", "nokaslr", "tsc=reliable", "8250.nr_uarts=1"] {
        assert!(c.split(' ').any(|w| w == word), "{word} missing from {c}");
    }
    assert!(c.starts_with("console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 "));
    assert!(c.ends_with(" mitigations=off rdinit=/init"));
    assert!(!c.contains("  "));
}

#[test]
fn default_cmdline_leaves_room_in_debians_cmdline_size() {
    let c = default_cmdline(u64::MAX / 1000);
    assert!(c.len() < 0x7FF / 2, "{} bytes", c.len());
    build(&synth(), &[], &c, MEM).expect("builds with the default cmdline");
}

// ---- memory ----

#[test]
fn memory_not_page_aligned_or_out_of_range_is_refused() {
    let k = synth();
    assert_eq!(
        build(&k, &[], "", MEM + 1).err(),
        Some(LinuxError::Memory(BuildError::MemoryNotPageAligned { bytes: MEM + 1 }))
    );
    assert!(matches!(build(&k, &[], "", 4096).err(), Some(LinuxError::Memory(BuildError::MemoryTooSmall { .. }))));
    assert!(matches!(
        build(&k, &[], "", MAX_DOMAIN_MEM_BYTES + 4096).err(),
        Some(LinuxError::Memory(BuildError::MemoryTooLarge { .. }))
    ));
}

#[test]
fn memory_below_the_decompression_area_is_refused_with_the_mib_needed() {
    let e = build(&synth(), &[], "", 19 * MIB).err().expect("refused");
    assert_eq!(e, LinuxError::MemoryTooSmall { have: 19 * MIB, need_mib: 20 });
    let text = e.to_string();
    assert!(text.contains("at least 20 MiB") && text.contains("has 19 MiB"), "{text}");
}

#[test]
fn min_mem_bytes_is_the_end_of_the_decompression_area_without_an_initrd() {
    assert_eq!(min_mem_bytes(&synth(), 0), Ok(SYNTH_DECOMPRESS_END));
    assert!(build(&synth(), &[], "", SYNTH_DECOMPRESS_END).is_ok());
    assert_eq!(min_mem_bytes(b"junk", 0), Err(LinuxError::ShorterThanSetupHeader { len: 4, need: MAGIC_END }));
}

#[test]
fn min_mem_bytes_counts_an_initrd_only_when_it_does_not_fit_below_the_decompression_area() {
    let k = synth();
    // The gap between the loaded kernel (ends at 1 MiB + 64 KiB) and 16 MiB.
    assert_eq!(min_mem_bytes(&k, 14 * MIB), Ok(SYNTH_DECOMPRESS_END));
    assert_eq!(min_mem_bytes(&k, 15 * MIB), Ok(SYNTH_DECOMPRESS_END + 15 * MIB));
    assert_eq!(min_mem_bytes(&k, 15 * MIB + 1), Ok(SYNTH_DECOMPRESS_END + 15 * MIB + PAGE_SIZE));
}

#[test]
fn memory_too_small_for_the_initrd_names_the_mib_needed() {
    let initrd = vec![0x5Au8; (15 * MIB) as usize];
    let e = build(&synth(), &initrd, "", 34 * MIB).err().expect("refused");
    assert_eq!(e, LinuxError::MemoryTooSmall { have: 34 * MIB, need_mib: 35 });
    let (built, _) = build(&synth(), &initrd, "", 35 * MIB).expect("min_mem_bytes is enough");
    assert_eq!(built.initrd_gpa, SYNTH_DECOMPRESS_END);
}

#[test]
fn a_kernel_whose_decompression_area_passes_the_largest_domain_is_refused() {
    let k = synth_with(|b| put_u32(b, INIT_SIZE, 0xFFFF_F000));
    assert_eq!(
        build(&k, &[], "", MEM).err(),
        Some(LinuxError::KernelTooLarge { end: 16 * MIB + 0xFFFF_F000, max: MAX_DOMAIN_MEM_BYTES })
    );
}

// ---- initrd ----

#[test]
fn the_initrd_lands_below_initrd_addr_max_and_above_the_decompression_area() {
    let k = synth_with(|b| put_u32(b, INITRD_ADDR_MAX, (24 * MIB - 1) as u32));
    let initrd: Vec<u8> = (0..100 * 1024 + 5).map(|i| (i % 251) as u8).collect();
    let (built, mem) = build(&k, &initrd, "", MEM).expect("builds");
    let size = (initrd.len() as u64).next_multiple_of(PAGE_SIZE);
    assert_eq!(built.initrd_gpa, 24 * MIB - size);
    assert_eq!(built.initrd_gpa % PAGE_SIZE, 0);
    assert!(built.initrd_gpa + initrd.len() as u64 <= 24 * MIB);
    assert!(built.initrd_gpa >= SYNTH_DECOMPRESS_END);
    assert_eq!(mem.read(built.initrd_gpa, initrd.len()), initrd);
    let zp = mem.read(ZERO_PAGE_GPA, ZERO_PAGE_BYTES);
    assert_eq!(get_u32(&zp, RAMDISK_IMAGE) as u64, built.initrd_gpa);
    assert_eq!(get_u32(&zp, RAMDISK_SIZE) as usize, initrd.len());
    assert_eq!(get_u32(&zp, EXT_RAMDISK_IMAGE), 0);
    assert_eq!(get_u32(&zp, EXT_RAMDISK_SIZE), 0);
}

#[test]
fn the_initrd_ends_at_the_top_of_ram_when_initrd_addr_max_is_higher() {
    let initrd = vec![7u8; 3 * PAGE_SIZE as usize];
    let (built, _) = build(&synth(), &initrd, "", MEM).expect("builds");
    assert_eq!(built.initrd_gpa, MEM - 3 * PAGE_SIZE);
    assert_eq!(built.initrd_len, 3 * PAGE_SIZE);
}

#[test]
fn an_initrd_goes_below_the_decompression_area_when_ram_above_it_is_short() {
    let initrd = vec![9u8; MIB as usize];
    let (built, mem) = build(&synth(), &initrd, "", SYNTH_DECOMPRESS_END).expect("builds");
    assert_eq!(built.initrd_gpa, SYNTH_DECOMPRESS_START - MIB);
    assert!(built.initrd_gpa >= built.kernel_end);
    assert_eq!(mem.read(built.initrd_gpa, initrd.len()), initrd);
}

#[test]
fn the_initrd_never_overlaps_the_kernel_or_its_decompression_area() {
    let k = synth();
    for len in [1usize, 4095, 4096, 4097, 300_000, 14 * MIB as usize, 15 * MIB as usize] {
        let initrd = vec![1u8; len];
        for mem_mib in [20u64, 21, 24, 35, 40, 64] {
            let Ok((b, _)) = build(&k, &initrd, "", mem_mib * MIB) else { continue };
            let (s, e) = (b.initrd_gpa, b.initrd_gpa + len as u64);
            assert!(e <= mem_mib * MIB, "len {len} mem {mem_mib}");
            assert!(s >= b.kernel_end, "len {len} mem {mem_mib}: {s:#x} inside the kernel");
            assert!(e <= b.decompression_start || s >= b.decompression_end, "len {len} mem {mem_mib}: {s:#x}..{e:#x}");
        }
    }
}

#[test]
fn an_initrd_that_fits_nowhere_below_initrd_addr_max_is_refused() {
    // Only the loaded kernel lies below initrd_addr_max.
    let k = synth_with(|b| put_u32(b, INITRD_ADDR_MAX, 0x10_FFFF));
    let initrd = vec![1u8; 4096];
    assert_eq!(
        build(&k, &initrd, "", MEM).err(),
        Some(LinuxError::InitrdAboveAddrMax { len: 4096, initrd_addr_max: 0x10_FFFF })
    );
}

#[test]
fn an_initrd_larger_than_any_domain_could_hold_is_refused() {
    // A decompression area reaching one page short of the largest domain.
    let init_size = (MAX_DOMAIN_MEM_BYTES - 16 * MIB - PAGE_SIZE) as u32;
    let k = synth_with(|b| put_u32(b, INIT_SIZE, init_size));
    let initrd = vec![1u8; (16 * MIB) as usize];
    let gap = 16 * MIB - (MIB + SYNTH_PM_BYTES as u64);
    assert_eq!(build(&k, &initrd, "", MEM).err(), Some(LinuxError::InitrdTooLarge { len: 16 * MIB, max: gap }));
}

#[test]
fn an_empty_initrd_leaves_the_ramdisk_fields_zero() {
    let (built, mem) = built();
    assert_eq!((built.initrd_gpa, built.initrd_len), (0, 0));
    let zp = mem.read(ZERO_PAGE_GPA, ZERO_PAGE_BYTES);
    for at in [RAMDISK_IMAGE, RAMDISK_SIZE, EXT_RAMDISK_IMAGE, EXT_RAMDISK_SIZE] {
        assert_eq!(get_u32(&zp, at), 0, "field at {at:#x}");
    }
}

// ---- zero page and e820 ----

#[test]
fn the_zero_page_carries_the_setup_header_and_the_loader_fields_and_nothing_else() {
    let k = synth();
    let (_, mem) = built();
    let zp = mem.read(ZERO_PAGE_GPA, ZERO_PAGE_BYTES);
    let mut want = vec![0u8; ZERO_PAGE_BYTES];
    want[0x1F1..0x26C].copy_from_slice(&k[0x1F1..0x26C]);
    want[TYPE_OF_LOADER] = 0xFF;
    put_u16(&mut want, VID_MODE, 0xFFFF);
    put_u32(&mut want, CMD_LINE_PTR, CMDLINE_GPA as u32);
    // Everything but the e820 map is exactly that.
    let e820_end = E820_TABLE + 5 * E820_ENTRY_BYTES;
    assert_eq!(zp[..E820_ENTRIES], want[..E820_ENTRIES]);
    assert_eq!(zp[E820_ENTRIES + 1..E820_TABLE], want[E820_ENTRIES + 1..E820_TABLE]);
    assert!(zp[e820_end..].iter().all(|&b| b == 0));
    assert_eq!(zp[0x26C..0x290], [0; 0x24], "setup code after the header is not copied");
    assert_eq!(get_u32(&zp, 0x268), 0x1234, "the last header field is");
}

#[test]
fn vid_mode_is_normal_even_if_the_kernel_says_otherwise() {
    let (_, mem) = build(&synth_with(|b| put_u16(b, VID_MODE, 0x0301)), &[], "", MEM).expect("builds");
    assert_eq!(get_u16(&mem.read(ZERO_PAGE_GPA, ZERO_PAGE_BYTES), VID_MODE), 0xFFFF);
}

#[test]
fn loadflags_keep_the_kernels_bits_without_keep_segments_or_quiet() {
    let k = synth_with(|b| b[LOADFLAGS] = LOADED_HIGH | 0x80);
    let (_, mem) = build(&k, &[], "", MEM).expect("builds");
    let flags = mem.read(ZERO_PAGE_GPA + LOADFLAGS as u64, 1)[0];
    assert_eq!(flags, LOADED_HIGH | 0x80);
    assert_eq!(flags & (KEEP_SEGMENTS | QUIET_FLAG), 0);
}

#[test]
fn e820_reserves_the_start_of_day_page() {
    let (_, mem) = built();
    let map = e820(&mem);
    let holder: Vec<&E820Entry> = map.iter().filter(|e| e.addr <= START_INFO_GPA && START_INFO_GPA < e.addr + e.size).collect();
    assert_eq!(holder.len(), 1);
    assert_eq!(*holder[0], E820Entry { addr: START_INFO_GPA, size: PAGE_SIZE, kind: E820_RESERVED });
}

#[test]
fn e820_covers_all_ram_in_order_with_the_bios_area_reserved() {
    let (_, mem) = built();
    let map = e820(&mem);
    assert_eq!(
        map,
        [
            E820Entry { addr: 0, size: 0x1000, kind: E820_RAM },
            E820Entry { addr: 0x1000, size: 0x1000, kind: E820_RESERVED },
            E820Entry { addr: 0x2000, size: 0x9FC00 - 0x2000, kind: E820_RAM },
            E820Entry { addr: 0x9FC00, size: 0x100000 - 0x9FC00, kind: E820_RESERVED },
            E820Entry { addr: 0x100000, size: MEM - 0x100000, kind: E820_RAM },
        ]
    );
    let mut at = 0;
    for e in &map {
        assert_eq!(e.addr, at);
        at += e.size;
    }
    assert_eq!(at, MEM);
    // The boot structures Linux reads before it copies them are in RAM it will reclaim.
    for gpa in [BOOT_PML4_GPA, LINUX_GDT_GPA, ZERO_PAGE_GPA, CMDLINE_GPA] {
        assert!(map.iter().any(|e| e.kind == E820_RAM && (e.addr..e.addr + e.size).contains(&gpa)));
    }
}

// ---- what lands where ----

#[test]
fn the_kernel_is_copied_unmodified_to_1_mib() {
    let k = synth();
    let (built, mem) = built();
    assert_eq!(mem.read(KERNEL_LOAD_GPA, SYNTH_PM_BYTES), &k[SYNTH_SETUP_BYTES..]);
    assert_eq!(built.kernel_end, KERNEL_LOAD_GPA + SYNTH_PM_BYTES as u64);
    assert!(!mem.written(built.kernel_end), "nothing right after the kernel");
    assert_eq!((built.decompression_start, built.decompression_end), (SYNTH_DECOMPRESS_START, SYNTH_DECOMPRESS_END));
    assert_eq!(built.protocol, 0x020F);
}

#[test]
fn the_gdt_has_the_protocols_selectors() {
    let (_, mem) = built();
    let gdt = mem.read(LINUX_GDT_GPA, PAGE_SIZE as usize);
    assert_eq!(get_u64(&gdt, 0), 0);
    assert_eq!(get_u64(&gdt, 8), 0);
    assert_eq!(get_u64(&gdt, LINUX_BOOT_CS as usize), 0x00AF_9B00_0000_FFFF);
    assert_eq!(get_u64(&gdt, LINUX_BOOT_DS as usize), 0x00CF_9300_0000_FFFF);
    assert!(gdt[32..].iter().all(|&b| b == 0));
}

#[test]
fn the_boot_page_tables_are_the_elf_builders() {
    let (_, mem) = built();
    for pages in boot_tables::page_tables() {
        assert_eq!(mem.read(pages.gpa, pages.bytes.len()), pages.bytes, "at {:#x}", pages.gpa);
    }
    assert_eq!(mem.u64_at(BOOT_PML4_GPA) & !0xFFF, 0x3000);
}

#[test]
fn the_mp_table_is_written_at_0xf0000_in_reserved_but_backed_memory() {
    let (_, mem) = built();
    assert_eq!(mem.read(MP_TABLE_GPA, MP_TABLE_BYTES), mp_table(MP_TABLE_GPA as u32));
    assert!(MP_TABLE_GPA + MP_TABLE_BYTES as u64 <= 0x10_0000);
    assert!(MP_TABLE_GPA >= LOW_RESERVED_GPA);
}

#[test]
fn the_start_of_day_page_is_written_once_whole_and_as_the_elf_builder_writes_it() {
    let (built, mem) = built();
    let writes: Vec<&(u64, Vec<u8>)> =
        mem.writes.iter().filter(|(at, d)| *at < START_INFO_GPA + PAGE_SIZE && START_INFO_GPA < at + d.len() as u64).collect();
    assert_eq!(writes.len(), 1, "one write touches the start-of-day page");
    assert_eq!(writes[0].0, START_INFO_GPA);
    assert_eq!(writes[0].1.len(), PAGE_SIZE as usize);
    let want = start_info(&BuildSpec {
        domid: 5,
        name: "linux",
        cmdline: "console=ttyS0",
        mem_bytes: MEM,
        flags: 0,
        call_insn: CallInsn::Vmmcall,
        tsc_khz: 2_000_000,
        generation: 77,
        modules: &[],
    })
    .expect("start info");
    let size = size_of::<StartInfo>();
    assert_eq!(&writes[0].1[..size], want.as_bytes());
    assert!(writes[0].1[size..].iter().all(|&b| b == 0));
    assert_eq!(built.start_info.as_bytes(), want.as_bytes());
    assert_eq!((built.start_info.domid, built.start_info.generation, built.start_info.parent), (5, 77, u32::MAX));
}

#[test]
fn the_start_of_day_page_truncates_long_names_and_cmdlines() {
    let k = synth_with(|b| put_u32(b, CMDLINE_SIZE, 4000));
    let cmdline: String = (0..1500).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let name = "é".repeat(20); // 40 bytes, a character boundary at 32
    let mut mem = RecordingMemory::new(MEM);
    let s = LinuxSpec { name: &name, ..spec(&k, &[], &cmdline, MEM) };
    let built = build_linux(&s, &mut mem).expect("builds");
    assert_eq!(built.start_info.cmdline(), &cmdline[..CMDLINE_MAX_BYTES]);
    assert_eq!(built.start_info.name(), &name[..NAME_MAX_BYTES]);
    // The kernel still gets all of it.
    assert_eq!(mem.read(CMDLINE_GPA, cmdline.len() + 1), [cmdline.as_bytes(), &[0]].concat());
}

#[test]
fn every_write_stays_inside_ram_and_off_the_pages_linux_does_not_own() {
    let initrd = vec![3u8; 5000];
    let (_, mem) = build(&synth(), &initrd, "", MEM).expect("builds");
    for (at, d) in &mem.writes {
        let end = at + d.len() as u64;
        assert!(end <= MEM);
        assert!(end <= START_INFO_GPA || *at >= START_INFO_GPA, "write at {at:#x} straddles the start-of-day page");
    }
    // Only the start-of-day write is at 0x1000; the page below is untouched.
    assert!(!mem.written(0));
}

#[test]
fn large_images_are_written_in_chunks_below_the_hypervisors_limit() {
    let initrd = vec![0xA5u8; 40 << 20];
    let (built, mem) = build(&synth(), &initrd, "", 128 * MIB).expect("builds");
    assert!(mem.writes.iter().all(|(_, d)| d.len() <= WRITE_CHUNK_BYTES));
    assert_eq!(mem.read(built.initrd_gpa, initrd.len()), initrd);
    assert_eq!(built.initrd_gpa, 128 * MIB - (40 << 20));
}

// ---- the vCPU ----

#[test]
fn the_context_enters_at_1_mib_plus_0x200_with_rsi_at_the_zero_page() {
    let (built, _) = built();
    let c = built.context;
    assert_eq!(c.rip, 0x10_0200);
    assert_eq!((c.rsi, c.rdi), (ZERO_PAGE_GPA, 0));
    assert_eq!(c.rsp, 0x8FF0);
    assert_eq!(c.rflags, RFLAGS_RESERVED_ONE, "interrupts off");
    assert_eq!(c.cr3, BOOT_PML4_GPA);
    assert_eq!((c.gdtr_base, c.gdtr_limit), (LINUX_GDT_GPA, 31));
    assert_eq!(c.cs.selector, 0x10);
    for s in [c.ds, c.es, c.ss, c.fs, c.gs] {
        assert_eq!(s.selector, 0x18);
    }
    // Paging and long mode exactly as the ELF builder's contexts have them.
    let base = VcpuContext::long_mode(0, 0, BOOT_PML4_GPA, 0, 0);
    assert_eq!((c.cr0, c.cr4, c.efer, c.pat), (base.cr0, base.cr4, base.efer, base.pat));
    assert_eq!((c.tr, c.ldtr), (base.tr, base.ldtr));
}

/// The compact attributes of a GDT descriptor (byte 5, then bits 52-55).
fn attrs_of(desc: u64) -> u16 {
    (((desc >> 40) & 0xFF) | (((desc >> 52) & 0xF) << 8)) as u16
}

#[test]
fn the_context_segments_match_the_gdt_and_the_hypervisors_rules() {
    let c = linux_context();
    assert_eq!(c.cs.attrs, attrs_of(LINUX_GDT[2]));
    for s in [c.ds, c.es, c.ss, c.fs, c.gs] {
        assert_eq!(s.attrs, attrs_of(LINUX_GDT[3]));
    }
    // The checks of hypervisor/src/policy/state.rs `check_segments`.
    let cs = c.cs.flags();
    assert!(c.cs.usable() && cs.contains(SegmentAttrs::CODE_OR_DATA | SegmentAttrs::CODE));
    assert!(cs.contains(SegmentAttrs::LONG) && !cs.contains(SegmentAttrs::DEFAULT_BIG));
    let ss = c.ss.flags();
    assert!(ss.contains(SegmentAttrs::CODE_OR_DATA | SegmentAttrs::WRITABLE_OR_READABLE) && !ss.contains(SegmentAttrs::CODE));
    assert_eq!(c.ss.dpl(), c.cs.dpl());
    assert!(c.tr.usable() && c.tr.segment_type() == SEGMENT_TYPE_TSS_BUSY);
    for s in [c.cs, c.ds, c.es, c.fs, c.gs, c.ss, c.tr, c.ldtr] {
        assert!(SegmentAttrs::from_bits(s.attrs).is_some());
    }
    assert!(c.gdtr_limit <= 0xFFFF && c.idtr_limit <= 0xFFFF);
}

// ---- the MP table ----

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x))
}

#[test]
fn the_mp_table_checksums_and_entry_lengths_are_consistent() {
    let t = mp_table(0xF0000);
    assert_eq!(t.len(), MP_TABLE_BYTES);
    let (fp, cfg) = t.split_at(16);
    assert_eq!(&fp[..4], b"_MP_");
    assert_eq!(get_u32(fp, 4), 0xF0010, "the configuration table follows");
    assert_eq!((fp[8], fp[9], fp[11], fp[12]), (1, 4, 0, 0));
    assert_eq!(sum(fp), 0);
    assert_eq!(&cfg[..4], b"PCMP");
    assert_eq!(get_u16(cfg, 4) as usize, cfg.len());
    assert_eq!(cfg[6], 4);
    assert_eq!(sum(cfg), 0);
    assert_eq!(&cfg[8..16], b"COWVISOR");
    assert_eq!(get_u32(cfg, 36), 0xFEE0_0000);
    assert_eq!((get_u16(cfg, 40), cfg[42]), (0, 0), "no extended table");
    // Walk the entries by their type's length.
    let count = get_u16(cfg, 34) as usize;
    let mut at = 44;
    let mut kinds = Vec::new();
    for _ in 0..count {
        kinds.push(cfg[at]);
        at += if cfg[at] == ENTRY_PROCESSOR { 20 } else { 8 };
    }
    assert_eq!(at, cfg.len(), "the entries fill the table exactly");
    assert_eq!(kinds, [ENTRY_PROCESSOR, ENTRY_BUS, ENTRY_LOCAL_INTERRUPT, ENTRY_LOCAL_INTERRUPT]);
}

#[test]
fn the_mp_table_has_one_boot_cpu_an_isa_bus_no_io_apic_and_lint0_extint_lint1_nmi() {
    let t = mp_table(0xF0000);
    let cfg = &t[16..];
    let cpu = &cfg[44..64];
    assert_eq!((cpu[1], cpu[2], cpu[3]), (0, 0x14, CPU_ENABLED | CPU_BSP));
    assert_eq!(get_u32(cpu, 4) >> 8 & 0xF, 6, "family 6");
    assert_ne!(get_u32(cpu, 8) & (1 << 9), 0, "APIC feature bit");
    let bus = &cfg[64..72];
    assert_eq!((bus[0], bus[1], &bus[2..]), (ENTRY_BUS, 0, b"ISA   ".as_slice()));
    assert_eq!(&cfg[72..80], &[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xFF, 0]);
    assert_eq!(&cfg[80..88], &[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, 0, 0xFF, 1]);
    let mut at = 44;
    while at < cfg.len() {
        assert_ne!(cfg[at], ENTRY_IO_APIC);
        assert_ne!(cfg[at], ENTRY_IO_INTERRUPT);
        at += if cfg[at] == ENTRY_PROCESSOR { 20 } else { 8 };
    }
}

#[test]
fn the_mp_table_checksums_hold_at_any_address() {
    for gpa in [0xF0000u32, 0x9FC00, 0xFFFF_0000] {
        let t = mp_table(gpa);
        assert_eq!(sum(&t[..16]), 0);
        assert_eq!(sum(&t[16..]), 0);
        assert_eq!(get_u32(&t, 4), gpa + 16);
    }
    assert_eq!(checksum(&[1, 2, 3]), 250);
}

// ---- refusals write nothing ----

#[test]
fn a_refused_kernel_writes_nothing() {
    let good = synth();
    let cases: Vec<(Vec<u8>, Vec<u8>, String, u64)> = vec![
        (good[..0x100].to_vec(), vec![], String::new(), MEM),
        (synth_with(|b| b[HEADER_MAGIC] = 0), vec![], String::new(), MEM),
        (synth_with(|b| put_u16(b, VERSION, 0x0200)), vec![], String::new(), MEM),
        (synth_with(|b| b[HEADER_LENGTH_BYTE] = 0x10), vec![], String::new(), MEM),
        (good[..SYNTH_SETUP_BYTES - 1].to_vec(), vec![], String::new(), MEM),
        (good[..SYNTH_SETUP_BYTES].to_vec(), vec![], String::new(), MEM),
        (synth_with(|b| put_u16(b, XLOADFLAGS, 0)), vec![], String::new(), MEM),
        (synth_with(|b| b[LOADFLAGS] = 0), vec![], String::new(), MEM),
        (synth_with(|b| put_u32(b, KERNEL_ALIGNMENT, 0)), vec![], String::new(), MEM),
        (synth_with(|b| put_u32(b, INIT_SIZE, 0)), vec![], String::new(), MEM),
        (good.clone(), vec![], "x".repeat(0x800), MEM),
        (good.clone(), vec![], "a\0b".into(), MEM),
        (good.clone(), vec![], String::new(), MEM + 1),
        (good.clone(), vec![], String::new(), 8 * MIB),
        (good.clone(), vec![1; 20 << 20], String::new(), MEM),
        (synth_with(|b| put_u32(b, INITRD_ADDR_MAX, 0x10_FFFF)), vec![1; 10], String::new(), MEM),
    ];
    for (i, (kernel, initrd, cmdline, mem_bytes)) in cases.iter().enumerate() {
        let mut mem = RecordingMemory::new(MAX_DOMAIN_MEM_BYTES);
        let r = build_linux(&spec(kernel, initrd, cmdline, *mem_bytes), &mut mem);
        assert!(r.is_err(), "case {i} was accepted");
        assert!(mem.writes.is_empty(), "case {i} ({:?}) wrote {} times", r.err(), mem.writes.len());
    }
}

#[test]
fn write_errors_are_reported_with_their_address() {
    for (index, gpa) in [(0, BOOT_PML4_GPA), (4, ZERO_PAGE_GPA), (7, KERNEL_LOAD_GPA), (8, START_INFO_GPA)] {
        let mut mem = RecordingMemory::new(MEM);
        mem.fail_at = Some(index);
        let e = build_linux(&spec(&synth(), &[], "", MEM), &mut mem).err();
        assert_eq!(e, Some(LinuxError::Write { gpa, error: HvError::OutOfMemory }), "write {index}");
    }
}

#[test]
fn linux_errors_display_as_one_line() {
    let errors = [
        LinuxError::ShorterThanSetupHeader { len: 1, need: 2 },
        LinuxError::NotBzImage,
        LinuxError::ProtocolTooOld { version: 0x0206 },
        LinuxError::BadHeaderLength { end: 0x300 },
        LinuxError::ShorterThanSetupSects { len: 1, need: 2 },
        LinuxError::NoProtectedModeKernel,
        LinuxError::No64BitEntry { xloadflags: 0 },
        LinuxError::NotLoadedHigh { loadflags: 0 },
        LinuxError::BadKernelAlignment { alignment: 3 },
        LinuxError::InitSizeTooSmall { init_size: 1, kernel_bytes: 2 },
        LinuxError::DecompressionTooLow { start: 0 },
        LinuxError::CmdlineTooLong { len: 3, max: 2 },
        LinuxError::CmdlineTooLongForPage { len: 5000, max: 4095 },
        LinuxError::CmdlineHasNul { at: 1 },
        LinuxError::Memory(BuildError::MemoryNotPageAligned { bytes: 1 }),
        LinuxError::MemoryTooSmall { have: 64 * MIB, need_mib: 80 },
        LinuxError::KernelTooLarge { end: 1, max: 0 },
        LinuxError::InitrdTooLarge { len: 2, max: 1 },
        LinuxError::InitrdAboveAddrMax { len: 1, initrd_addr_max: 0 },
        LinuxError::StartInfo(BuildError::NameTooLong { len: 40, max: 32 }),
        LinuxError::Write { gpa: 0x1000, error: HvError::BadAddress },
    ];
    for e in errors {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{e:?}: {s:?}");
    }
    assert_eq!(
        LinuxError::ProtocolTooOld { version: 0x0206 }.to_string(),
        "boot protocol 2.06 is too old (2.12 or newer has the 64-bit entry)"
    );
}

// ---- the real Debian kernel ----

fn real_kernel() -> Option<Vec<u8>> {
    match std::fs::read(REAL_KERNEL) {
        Ok(k) => Some(k),
        Err(e) => {
            std::println!("note: skipping the real-kernel test: {REAL_KERNEL}: {e}");
            None
        }
    }
}

#[test]
fn the_real_debian_kernel_has_the_header_the_loader_expects() {
    let Some(k) = real_kernel() else { return };
    let img = BzImage::parse(&k).expect("Debian's bzImage parses");
    let h = img.header;
    assert_eq!(h.version, 0x020F, "protocol 2.15");
    assert_eq!(h.setup_sects, 39);
    assert_eq!(h.header_end, 0x26C);
    assert_eq!(h.xloadflags, 0x7F);
    assert_eq!(h.loadflags, LOADED_HIGH);
    assert_eq!(h.kernel_alignment, 2 << 20);
    assert!(h.relocatable);
    assert_eq!(h.pref_address, 16 * MIB);
    assert_eq!(h.init_size, 0x3F9_8000);
    assert_eq!(h.cmdline_size, 0x7FF);
    assert_eq!(h.initrd_addr_max, 0x7FFF_FFFF);
    assert_eq!(img.protected_mode().len(), k.len() - 40 * 512);
    assert_eq!(img.decompression_area(), (16 * MIB, 16 * MIB + 0x3F9_8000));
    let v = kernel_version(&k).expect("a version string");
    assert!(v.starts_with("6.1.0-48-amd64 "), "{v}");
    assert_eq!(min_mem_bytes(&k, 0), Ok(16 * MIB + 0x3F9_8000));
    let e = build(&k, &[], &default_cmdline(2_000_000), 64 * MIB).err();
    assert_eq!(e, Some(LinuxError::MemoryTooSmall { have: 64 * MIB, need_mib: 80 }));
}

#[test]
fn the_real_debian_kernel_builds_in_256_mib_with_an_initrd() {
    let Some(k) = real_kernel() else { return };
    let initrd: Vec<u8> = (0..3 * MIB as usize + 17).map(|i| (i % 253) as u8).collect();
    let cmdline = default_cmdline(2_000_000) + " quiet";
    let (built, mem) = build(&k, &initrd, &cmdline, 256 * MIB).expect("builds");
    assert_eq!(mem.read(KERNEL_LOAD_GPA, k.len() - 40 * 512), &k[40 * 512..]);
    let zp = mem.read(ZERO_PAGE_GPA, ZERO_PAGE_BYTES);
    assert_eq!(zp[0x1F1..TYPE_OF_LOADER], k[0x1F1..TYPE_OF_LOADER]);
    assert_eq!(zp[TYPE_OF_LOADER], 0xFF);
    assert_eq!(zp[0x211..RAMDISK_IMAGE], k[0x211..RAMDISK_IMAGE]);
    assert_eq!(zp[0x22C..0x26C], k[0x22C..0x26C]);
    let size = (initrd.len() as u64).next_multiple_of(PAGE_SIZE);
    assert_eq!(built.initrd_gpa, 256 * MIB - size);
    assert!(built.initrd_gpa >= built.decompression_end);
    assert_eq!(get_u32(&zp, RAMDISK_IMAGE) as u64, built.initrd_gpa);
    assert_eq!(mem.read(built.initrd_gpa, initrd.len()), initrd);
    assert_eq!(mem.read(CMDLINE_GPA, cmdline.len() + 1), [cmdline.as_bytes(), &[0]].concat());
    assert_eq!(built.context.rip, 0x10_0200);
    assert!(built.kernel_version.expect("version").as_str().starts_with("6.1.0-48-amd64"));
    std::println!(
        "real kernel: {} bytes loaded to {:#x}..{:#x}, decompresses into {:#x}..{:#x}, initrd at {:#x}",
        k.len() - 40 * 512,
        KERNEL_LOAD_GPA,
        built.kernel_end,
        built.decompression_start,
        built.decompression_end,
        built.initrd_gpa
    );
}

// ---- launching through hypercalls ----

struct FakeDom {
    name: String,
    mem_bytes: u64,
    flags: u32,
    running: bool,
    vcpu: Option<VcpuContext>,
    memory: RecordingMemory,
}

#[derive(Default)]
struct FakeHv {
    doms: BTreeMap<u32, FakeDom>,
    next: u32,
    calls: Vec<u64>,
    /// Fail the mem_write with this index.
    fail_write: Option<usize>,
    writes: usize,
}

impl FakeHv {
    fn new() -> Self {
        Self { next: 1, ..Self::default() }
    }

    fn dom(&mut self, id: u64) -> HvResult<&mut FakeDom> {
        self.doms.get_mut(&(id as u32)).ok_or(HvError::NoSuchDomain)
    }
}

impl Hypercalls for FakeHv {
    fn call(&mut self, n: u64, a: &[u64]) -> HvResult<u64> {
        self.calls.push(n);
        // SAFETY (all pointer reads/writes below): the control library passes addresses of
        // live host values of the types each hypercall takes.
        unsafe {
            match n {
                nr::DOM_CREATE => {
                    let args = &*(a[0] as *const CreateArgs);
                    let id = self.next;
                    self.next += 1;
                    let name = match name_str(&args.name) {
                        "" => alloc::format!("dom{id}"),
                        n => n.into(),
                    };
                    let memory = RecordingMemory::new(args.mem_bytes);
                    let dom = FakeDom { name, mem_bytes: args.mem_bytes, flags: args.flags, running: false, vcpu: None, memory };
                    self.doms.insert(id, dom);
                    Ok(u64::from(id))
                }
                nr::DOM_DESTROY => self.doms.remove(&(a[0] as u32)).map(|_| 0).ok_or(HvError::NoSuchDomain),
                nr::DOM_UNPAUSE => {
                    self.dom(a[0])?.running = true;
                    Ok(0)
                }
                nr::DOM_INFO => {
                    let d = self.dom(a[0])?;
                    *(a[1] as *mut DomainInfo) = DomainInfo {
                        domid: a[0] as u32,
                        state: 0,
                        pause_reason: 0,
                        flags: 0,
                        parent: u32::MAX,
                        clones: 0,
                        mem_bytes: d.mem_bytes,
                        private_pages: 0,
                        shared_pages: 0,
                        exit_code: 0,
                        cpu_ns: 0,
                        name: name_field(&d.name),
                        reason: [0; REASON_MAX_BYTES],
                    };
                    Ok(0)
                }
                nr::DOM_STAT => {
                    self.dom(a[0])?;
                    *(a[1] as *mut DomainStat) = DomainStat { domid: a[0] as u32, generation: 41, ..DomainStat::default() };
                    Ok(0)
                }
                nr::MEM_WRITE => {
                    let index = self.writes;
                    self.writes += 1;
                    if self.fail_write == Some(index) {
                        return Err(HvError::OutOfMemory);
                    }
                    let data = core::slice::from_raw_parts(a[2] as *const u8, a[3] as usize);
                    self.dom(a[0])?.memory.write(a[1], data).map(|_| 0)
                }
                nr::VCPU_SET => {
                    let ctx = *(a[1] as *const VcpuContext);
                    self.dom(a[0])?.vcpu = Some(ctx);
                    Ok(0)
                }
                _ => Err(HvError::InvalidArgument),
            }
        }
    }
}

fn launch_spec<'a>(kernel: &'a [u8], initrd: &'a [u8], paused: bool) -> LaunchLinux<'a> {
    LaunchLinux { kernel, initrd, name: "penguin", mem_bytes: MEM, cmdline: "console=ttyS0", paused }
}

#[test]
fn launching_a_refused_kernel_leaves_no_domain_behind() {
    let mut ctl = Control::new(FakeHv::new());
    let bad = synth_with(|b| b[HEADER_MAGIC] = b'X');
    let e = launch_linux(&mut ctl, &launch_spec(&bad, &[], false), CallInsn::Vmcall, 1_000_000);
    assert_eq!(e, Err(LinuxLaunchError::Linux(LinuxError::NotBzImage)));
    assert!(ctl.hc.doms.is_empty());
    assert!(!ctl.hc.calls.contains(&nr::DOM_CREATE), "refused before a domain is made");
    let kernel = synth();
    let small = LaunchLinux { mem_bytes: 8 * MIB, ..launch_spec(&kernel, &[], false) };
    let e = launch_linux(&mut ctl, &small, CallInsn::Vmcall, 1_000_000);
    assert_eq!(e, Err(LinuxLaunchError::Linux(LinuxError::MemoryTooSmall { have: 8 * MIB, need_mib: 20 })));
    assert!(ctl.hc.doms.is_empty());
}

#[test]
fn a_failed_memory_write_destroys_the_domain() {
    let mut hv = FakeHv::new();
    hv.fail_write = Some(5);
    let mut ctl = Control::new(hv);
    let e = launch_linux(&mut ctl, &launch_spec(&synth(), &[], false), CallInsn::Vmcall, 1_000_000);
    assert!(matches!(e, Err(LinuxLaunchError::Linux(LinuxError::Write { error: HvError::OutOfMemory, .. }))), "{e:?}");
    assert!(ctl.hc.doms.is_empty());
    assert!(ctl.hc.calls.contains(&nr::DOM_DESTROY));
    assert!(!ctl.hc.calls.contains(&nr::VCPU_SET));
}

#[test]
fn a_launched_linux_domain_has_the_pc_platform_its_memory_and_vcpu_and_runs() {
    let mut ctl = Control::new(FakeHv::new());
    let initrd = vec![0x42u8; 10_000];
    let id = launch_linux(&mut ctl, &launch_spec(&synth(), &initrd, false), CallInsn::Vmmcall, 3_000_000).expect("launches");
    let d = &ctl.hc.doms[&id];
    assert!(d.running);
    assert_eq!(d.flags, CREATE_PC_PLATFORM);
    assert_eq!(d.mem_bytes, MEM);
    assert_eq!(d.vcpu, Some(linux_context()));
    assert_eq!(d.memory.read(KERNEL_LOAD_GPA, SYNTH_PM_BYTES), &synth()[SYNTH_SETUP_BYTES..]);
    let page = d.memory.read(START_INFO_GPA, size_of::<StartInfo>());
    let mut info = StartInfo::empty();
    // SAFETY: StartInfo is plain integer data; `page` holds exactly its bytes.
    unsafe { core::ptr::copy_nonoverlapping(page.as_ptr(), &mut info as *mut StartInfo as *mut u8, page.len()) };
    assert_eq!((info.domid, info.generation, info.tsc_khz, info.call_insn), (id, 41, 3_000_000, 1));
    assert_eq!(info.name(), "penguin");
    assert_eq!(info.cmdline(), "console=ttyS0");
    let initrd_gpa = d.memory.u32_at(ZERO_PAGE_GPA + RAMDISK_IMAGE as u64) as u64;
    assert_eq!(d.memory.read(initrd_gpa, initrd.len()), initrd);
}

#[test]
fn a_paused_launch_leaves_the_domain_paused() {
    let mut ctl = Control::new(FakeHv::new());
    let id = launch_linux(&mut ctl, &launch_spec(&synth(), &[], true), CallInsn::Vmcall, 1_000_000).expect("launches");
    assert!(!ctl.hc.doms[&id].running);
    assert!(!ctl.hc.calls.contains(&nr::DOM_UNPAUSE));
    assert!(ctl.hc.doms[&id].vcpu.is_some());
}

#[test]
fn an_unnamed_domain_gets_the_hypervisors_name_in_its_start_of_day_page() {
    let mut ctl = Control::new(FakeHv::new());
    let kernel = synth();
    let spec = LaunchLinux { name: "", ..launch_spec(&kernel, &[], true) };
    let id = launch_linux(&mut ctl, &spec, CallInsn::Vmcall, 1_000_000).expect("launches");
    let name_at = START_INFO_GPA + core::mem::offset_of!(StartInfo, name) as u64;
    let field = ctl.hc.doms[&id].memory.read(name_at, NAME_MAX_BYTES);
    assert_eq!(name_str(&field), alloc::format!("dom{id}"));
}

//! Building a Linux domain: validate the bzImage, the initrd, the command line and the memory
//! size, place the initrd, then write the boot page tables, the GDT, the zero page, the
//! command line, the MP table, the kernel, the initrd and the start-of-day page.

use super::bootparams::{BootParamsSpec, ZERO_PAGE_BYTES, zero_page};
use super::bzimage::{BzImage, ENTRY_64_OFFSET, KERNEL_LOAD_GPA, KERNEL_VERSION_MAX_BYTES};
use super::error::LinuxError;
use super::mptable::{MP_TABLE_GPA, mp_table};
use crate::boot_tables;
use crate::builder::{BuildSpec, check_mem_bytes, start_info};
use crate::memory::DomainMemory;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use guest_abi::domctl::NAME_MAX_BYTES;
use guest_abi::hypercall::CallInsn;
use guest_abi::layout::{BOOT_PML4_GPA, MAX_DOMAIN_MEM_BYTES, PAGE_SIZE, START_INFO_GPA};
use guest_abi::start_info::{CMDLINE_MAX_BYTES, StartInfo};
use guest_abi::vcpu::{Segment, VcpuContext};

/// The GDT page of a Linux domain (the ELF builder's GDT page, with the protocol's layout).
pub const LINUX_GDT_GPA: u64 = 0x8000;
/// `__BOOT_CS` and `__BOOT_DS` as the boot protocol requires them.
pub const LINUX_BOOT_CS: u16 = 0x10;
pub const LINUX_BOOT_DS: u16 = 0x18;
/// The GDT: two null descriptors, 64-bit code at 0x10, flat data at 0x18 (accessed bits set).
pub const LINUX_GDT: [u64; 4] = [0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
/// The initial stack pointer (in the GDT page, below its top).
pub const LINUX_STACK_TOP_GPA: u64 = 0x8FF0;
/// The zero page (`struct boot_params`).
pub const ZERO_PAGE_GPA: u64 = 0x9000;
/// The command line page.
pub const CMDLINE_GPA: u64 = 0xA000;
/// Longest command line the page holds with its NUL.
pub const CMDLINE_PAGE_MAX_BYTES: usize = PAGE_SIZE as usize - 1;
/// The 64-bit entry point.
pub const LINUX_ENTRY_GPA: u64 = KERNEL_LOAD_GPA + ENTRY_64_OFFSET;
/// Largest single write (the hypervisor's `mem_write` copies at most 64 MiB per call).
pub const WRITE_CHUNK_BYTES: usize = 16 << 20;
/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;
/// Debian's `CONFIG_HZ`, for `lpj=`.
pub const GUEST_HZ: u64 = 250;

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct LinuxSpec<'a> {
    pub domid: u32,
    /// Domain name (truncated to [`NAME_MAX_BYTES`] in the start-of-day page).
    pub name: &'a str,
    /// The bzImage file.
    pub kernel: &'a [u8],
    /// The initrd (may be empty).
    pub initrd: &'a [u8],
    /// The kernel command line (at most the kernel's `cmdline_size`); the start-of-day page
    /// carries it truncated to [`CMDLINE_MAX_BYTES`].
    pub cmdline: &'a str,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    pub call_insn: CallInsn,
    pub tsc_khz: u64,
    pub generation: u64,
}

/// The kernel's version string, copied (at most [`KERNEL_VERSION_MAX_BYTES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelVersion {
    bytes: [u8; KERNEL_VERSION_MAX_BYTES],
    len: usize,
}

impl KernelVersion {
    fn new(s: &str) -> Self {
        let s = truncate(s, KERNEL_VERSION_MAX_BYTES);
        let mut bytes = [0u8; KERNEL_VERSION_MAX_BYTES];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Self { bytes, len: s.len() }
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// The result of a build.
#[derive(Clone, Copy, Debug)]
pub struct LinuxBuilt {
    /// Initial vCPU state at the 64-bit entry, RSI = [`ZERO_PAGE_GPA`].
    pub context: VcpuContext,
    /// The start-of-day page as written.
    pub start_info: StartInfo,
    /// Where the initrd was put (0 without one) and its length.
    pub initrd_gpa: u64,
    pub initrd_len: u64,
    /// End of the loaded protected-mode kernel (not page aligned).
    pub kernel_end: u64,
    /// Where the kernel will decompress itself.
    pub decompression_start: u64,
    pub decompression_end: u64,
    /// Boot protocol version of the kernel.
    pub protocol: u16,
    pub kernel_version: Option<KernelVersion>,
}

/// A validated kernel, initrd and command line placed in a domain of a given size.
#[derive(Clone, Copy, Debug)]
pub struct LinuxPlan<'a> {
    pub image: BzImage<'a>,
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
    pub mem_bytes: u64,
    pub initrd_gpa: u64,
}

/// The boot command line this hypervisor's Linux domains start with; callers may append.
pub fn default_cmdline(tsc_khz: u64) -> String {
    let lpj = tsc_khz.saturating_mul(1000) / GUEST_HZ;
    format!(
        "console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 acpi=off noapic pci=off nokaslr \
         tsc_early_khz={tsc_khz} tsc=reliable lpj={lpj} reboot=k panic=1 8250.nr_uarts=1 i8042.noaux \
         i8042.nomux i8042.nopnp i8042.dumbkbd io_delay=none nmi_watchdog=0 mitigations=off rdinit=/init"
    )
}

fn truncate(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

fn page_up(v: u64) -> u64 {
    v.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

fn page_down(v: u64) -> u64 {
    v & !(PAGE_SIZE - 1)
}

/// Ranges the initrd must not overlap: the loaded kernel and its decompression area.
fn forbidden(image: &BzImage<'_>) -> [(u64, u64); 2] {
    [(KERNEL_LOAD_GPA, kernel_end(image)), image.decompression_area()]
}

fn kernel_end(image: &BzImage<'_>) -> u64 {
    KERNEL_LOAD_GPA + image.protected_mode().len() as u64
}

/// The highest page-aligned start for `size` bytes (a multiple of the page size) that ends
/// at or below `limit`, starts at or above 1 MiB and overlaps nothing in `avoid`.
fn place(size: u64, limit: u64, avoid: &[(u64, u64)]) -> Option<u64> {
    let fits = |start: u64| {
        start >= KERNEL_LOAD_GPA
            && start.checked_add(size).is_some_and(|end| end <= limit && avoid.iter().all(|&(s, e)| end <= s || e <= start))
    };
    core::iter::once(limit)
        .chain(avoid.iter().map(|&(s, _)| s))
        .filter_map(|top| top.checked_sub(size).map(page_down))
        .filter(|&start| fits(start))
        .max()
}

/// RAM the kernel's load image and decompression area need, page aligned.
fn kernel_need(image: &BzImage<'_>) -> u64 {
    page_up(kernel_end(image).max(image.decompression_area().1))
}

/// RAM the kernel and an initrd of `initrd_len` bytes need (ignoring `initrd_addr_max`).
fn need_bytes(image: &BzImage<'_>, initrd_len: u64) -> u64 {
    let base = kernel_need(image);
    if initrd_len == 0 {
        return base;
    }
    let size = page_up(initrd_len);
    if place(size, base, &forbidden(image)).is_some() { base } else { base.saturating_add(size) }
}

/// The smallest guest RAM (bytes, page aligned) that holds `kernel`'s load image and
/// decompression area and an initrd of `initrd_len` bytes. A kernel needs more to run well;
/// this is what the loader needs to place it.
pub fn min_mem_bytes(kernel: &[u8], initrd_len: u64) -> Result<u64, LinuxError> {
    let image = BzImage::parse(kernel)?;
    Ok(need_bytes(&image, initrd_len))
}

/// Validates everything and places the initrd, writing nothing.
pub fn plan_linux<'a>(
    kernel: &'a [u8],
    initrd: &'a [u8],
    cmdline: &'a str,
    mem_bytes: u64,
) -> Result<LinuxPlan<'a>, LinuxError> {
    let image = BzImage::parse(kernel)?;
    let max = image.header.cmdline_size as usize;
    if cmdline.len() > max {
        return Err(LinuxError::CmdlineTooLong { len: cmdline.len(), max });
    }
    if cmdline.len() > CMDLINE_PAGE_MAX_BYTES {
        return Err(LinuxError::CmdlineTooLongForPage { len: cmdline.len(), max: CMDLINE_PAGE_MAX_BYTES });
    }
    if let Some(at) = cmdline.bytes().position(|b| b == 0) {
        return Err(LinuxError::CmdlineHasNul { at });
    }
    check_mem_bytes(mem_bytes).map_err(LinuxError::Memory)?;

    let base = kernel_need(&image);
    if base > MAX_DOMAIN_MEM_BYTES {
        return Err(LinuxError::KernelTooLarge { end: base, max: MAX_DOMAIN_MEM_BYTES });
    }
    let len = initrd.len() as u64;
    let need = need_bytes(&image, len);
    if need > MAX_DOMAIN_MEM_BYTES {
        let (decompression_start, _) = image.decompression_area();
        let gap = decompression_start.saturating_sub(page_up(kernel_end(&image)));
        return Err(LinuxError::InitrdTooLarge { len, max: gap.max(MAX_DOMAIN_MEM_BYTES - base) });
    }
    if mem_bytes < need {
        return Err(LinuxError::MemoryTooSmall { have: mem_bytes, need_mib: need.div_ceil(MIB) });
    }
    let initrd_gpa = if len == 0 {
        0
    } else {
        let addr_max = image.header.initrd_addr_max;
        let limit = mem_bytes.min(u64::from(addr_max) + 1);
        place(page_up(len), limit, &forbidden(&image))
            .ok_or(LinuxError::InitrdAboveAddrMax { len, initrd_addr_max: addr_max })?
    };
    Ok(LinuxPlan { image, initrd, cmdline, mem_bytes, initrd_gpa })
}

fn write(mem: &mut dyn DomainMemory, gpa: u64, data: &[u8]) -> Result<(), LinuxError> {
    for (i, chunk) in data.chunks(WRITE_CHUNK_BYTES).enumerate() {
        let at = gpa + (i * WRITE_CHUNK_BYTES) as u64;
        mem.write(at, chunk).map_err(|error| LinuxError::Write { gpa: at, error })?;
    }
    Ok(())
}

fn page_with(data: &[u8]) -> alloc::vec::Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    page[..data.len()].copy_from_slice(data);
    page
}

/// The GDT page.
pub fn gdt_page() -> alloc::vec::Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for (i, d) in LINUX_GDT.iter().enumerate() {
        page[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    page
}

/// The vCPU state at the 64-bit entry: long mode on the boot page tables, the protocol's
/// selectors, RSI = the zero page, interrupts off.
pub fn linux_context() -> VcpuContext {
    let mut c = VcpuContext::long_mode(LINUX_ENTRY_GPA, LINUX_STACK_TOP_GPA, BOOT_PML4_GPA, 0, LINUX_GDT_GPA);
    c.rsi = ZERO_PAGE_GPA;
    c.rdi = 0;
    c.cs = Segment::code64(LINUX_BOOT_CS);
    let data = Segment::data(LINUX_BOOT_DS);
    (c.ds, c.es, c.ss, c.fs, c.gs) = (data, data, data, data, data);
    c.gdtr_limit = (LINUX_GDT.len() * 8 - 1) as u32;
    c
}

impl LinuxPlan<'_> {
    /// Writes the domain: page tables, GDT, zero page, command line, MP table, kernel,
    /// initrd, in that order (the start-of-day page is the caller's).
    pub fn write(&self, mem: &mut dyn DomainMemory) -> Result<(), LinuxError> {
        for pages in boot_tables::page_tables() {
            write(mem, pages.gpa, &pages.bytes)?;
        }
        write(mem, LINUX_GDT_GPA, &gdt_page())?;
        let params = BootParamsSpec {
            cmdline_gpa: CMDLINE_GPA,
            initrd_gpa: self.initrd_gpa,
            initrd_len: self.initrd.len() as u64,
            mem_bytes: self.mem_bytes,
        };
        let zp = zero_page(&self.image, &params);
        debug_assert_eq!(zp.len(), ZERO_PAGE_BYTES);
        write(mem, ZERO_PAGE_GPA, &zp)?;
        // The page is zeroed past the command line, so its NUL is there.
        write(mem, CMDLINE_GPA, &page_with(self.cmdline.as_bytes()))?;
        write(mem, MP_TABLE_GPA, &page_with(&mp_table(MP_TABLE_GPA as u32)))?;
        write(mem, KERNEL_LOAD_GPA, self.image.protected_mode())?;
        if !self.initrd.is_empty() {
            write(mem, self.initrd_gpa, self.initrd)?;
        }
        Ok(())
    }
}

/// Builds a Linux domain: validates everything (a refused request writes nothing), then
/// writes it through `mem` and returns the initial vCPU state.
pub fn build_linux(spec: &LinuxSpec<'_>, mem: &mut dyn DomainMemory) -> Result<LinuxBuilt, LinuxError> {
    let plan = plan_linux(spec.kernel, spec.initrd, spec.cmdline, spec.mem_bytes)?;
    let build_spec = BuildSpec {
        domid: spec.domid,
        name: truncate(spec.name, NAME_MAX_BYTES),
        cmdline: truncate(spec.cmdline, CMDLINE_MAX_BYTES),
        mem_bytes: spec.mem_bytes,
        flags: 0,
        call_insn: spec.call_insn,
        tsc_khz: spec.tsc_khz,
        generation: spec.generation,
        modules: &[],
    };
    let info = start_info(&build_spec).map_err(LinuxError::StartInfo)?;

    plan.write(mem)?;
    let mut page = vec![0u8; PAGE_SIZE as usize];
    page[..size_of::<StartInfo>()].copy_from_slice(info.as_bytes());
    write(mem, START_INFO_GPA, &page)?;

    let (decompression_start, decompression_end) = plan.image.decompression_area();
    Ok(LinuxBuilt {
        context: linux_context(),
        start_info: info,
        initrd_gpa: plan.initrd_gpa,
        initrd_len: spec.initrd.len() as u64,
        kernel_end: kernel_end(&plan.image),
        decompression_start,
        decompression_end,
        protocol: plan.image.header.version,
        kernel_version: plan.image.version().map(KernelVersion::new),
    })
}

//! The bzImage setup header (Linux `Documentation/x86/boot.rst`): parsing and every check a
//! kernel must pass before anything of it is loaded.

use super::error::LinuxError;

/// Where the setup header starts (`setup_sects`); the zero page keeps it at the same offset.
pub const SETUP_HEADER_OFFSET: usize = 0x1F1;
/// `setup_sects` (u8): 512-byte sectors of real-mode setup code after the boot sector.
pub const SETUP_SECTS: usize = 0x1F1;
/// `vid_mode` (u16).
pub const VID_MODE: usize = 0x1FA;
/// `boot_flag` (u16): 0xAA55.
pub const BOOT_FLAG: usize = 0x1FE;
/// `jump` (u16): its second byte is the header's length past 0x202.
pub const HEADER_LENGTH_BYTE: usize = 0x201;
/// `header` (u32): "HdrS".
pub const HEADER_MAGIC: usize = 0x202;
/// `version` (u16): the boot protocol, major in the high byte.
pub const VERSION: usize = 0x206;
/// `kernel_version` (u16): the version string's offset from 0x200 (0: none).
pub const KERNEL_VERSION: usize = 0x20E;
/// `type_of_loader` (u8).
pub const TYPE_OF_LOADER: usize = 0x210;
/// `loadflags` (u8).
pub const LOADFLAGS: usize = 0x211;
/// `ramdisk_image` (u32).
pub const RAMDISK_IMAGE: usize = 0x218;
/// `ramdisk_size` (u32).
pub const RAMDISK_SIZE: usize = 0x21C;
/// `cmd_line_ptr` (u32).
pub const CMD_LINE_PTR: usize = 0x228;
/// `initrd_addr_max` (u32): highest address the initrd may occupy.
pub const INITRD_ADDR_MAX: usize = 0x22C;
/// `kernel_alignment` (u32).
pub const KERNEL_ALIGNMENT: usize = 0x230;
/// `relocatable_kernel` (u8).
pub const RELOCATABLE_KERNEL: usize = 0x234;
/// `xloadflags` (u16).
pub const XLOADFLAGS: usize = 0x236;
/// `cmdline_size` (u32): longest command line without its NUL.
pub const CMDLINE_SIZE: usize = 0x238;
/// `pref_address` (u64).
pub const PREF_ADDRESS: usize = 0x258;
/// `init_size` (u32).
pub const INIT_SIZE: usize = 0x260;

/// "HdrS".
pub const HDRS_MAGIC: u32 = u32::from_le_bytes(*b"HdrS");
/// The boot-sector signature.
pub const BOOT_FLAG_MAGIC: u16 = 0xAA55;
/// Protocol 2.12: the first with `xloadflags` and so a declared 64-bit entry.
pub const MIN_PROTOCOL: u16 = 0x020C;
/// `loadflags` bit 0: the protected-mode code loads at 0x100000.
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` bit 5: no early messages.
pub const QUIET_FLAG: u8 = 1 << 5;
/// `loadflags` bit 6: do not reload segment registers in the 32-bit entry.
pub const KEEP_SEGMENTS: u8 = 1 << 6;
/// `xloadflags` bit 0: a 64-bit entry at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// Setup sectors assumed when `setup_sects` is 0.
pub const DEFAULT_SETUP_SECTS: usize = 4;
/// Bytes in a sector.
pub const SECTOR_BYTES: usize = 512;
/// Bytes the magic check reads: up to the end of "HdrS".
pub const MAGIC_END: usize = HEADER_MAGIC + 4;
/// The header must reach at least the end of the 2.12 fields this loader reads
/// (`handover_offset` ends at 0x268).
pub const MIN_HEADER_END: usize = 0x268;
/// Where the header's room in `struct boot_params` ends (`edd_mbr_sig_buffer`).
pub const MAX_HEADER_END: usize = 0x290;
/// Where the protected-mode kernel is loaded and runs its 32-bit entry.
pub const KERNEL_LOAD_GPA: u64 = 0x10_0000;
/// The 64-bit entry's offset from the load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// Longest kernel version string [`kernel_version`] reads.
pub const KERNEL_VERSION_MAX_BYTES: usize = 256;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}

/// The fields of a validated setup header this loader uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version (0x020F is 2.15).
    pub version: u16,
    /// `setup_sects` as the file has it (0 means [`DEFAULT_SETUP_SECTS`]).
    pub setup_sects: u8,
    /// End of the setup header: `0x202 + byte 0x201`.
    pub header_end: usize,
    pub loadflags: u8,
    pub xloadflags: u16,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub pref_address: u64,
    pub init_size: u32,
    pub cmdline_size: u32,
    pub initrd_addr_max: u32,
}

impl SetupHeader {
    /// Bytes before the protected-mode kernel: boot sector plus setup sectors.
    pub fn setup_bytes(&self) -> usize {
        let sects = if self.setup_sects == 0 { DEFAULT_SETUP_SECTS } else { self.setup_sects as usize };
        (sects + 1) * SECTOR_BYTES
    }
}

/// A bzImage whose header passed every check.
#[derive(Clone, Copy, Debug)]
pub struct BzImage<'a> {
    pub header: SetupHeader,
    file: &'a [u8],
}

impl<'a> BzImage<'a> {
    /// Parses and validates `file` (checks in the order the fields are needed).
    pub fn parse(file: &'a [u8]) -> Result<Self, LinuxError> {
        let len = file.len();
        if len < MAGIC_END {
            return Err(LinuxError::ShorterThanSetupHeader { len, need: MAGIC_END });
        }
        if u16_at(file, BOOT_FLAG) != BOOT_FLAG_MAGIC || u32_at(file, HEADER_MAGIC) != HDRS_MAGIC {
            return Err(LinuxError::NotBzImage);
        }
        let header_end = HEADER_MAGIC + file[HEADER_LENGTH_BYTE] as usize;
        if len < header_end.max(VERSION + 2) {
            return Err(LinuxError::ShorterThanSetupHeader { len, need: header_end.max(VERSION + 2) });
        }
        let version = u16_at(file, VERSION);
        if version < MIN_PROTOCOL {
            return Err(LinuxError::ProtocolTooOld { version });
        }
        if !(MIN_HEADER_END..=MAX_HEADER_END).contains(&header_end) {
            return Err(LinuxError::BadHeaderLength { end: header_end });
        }
        let header = SetupHeader {
            version,
            setup_sects: file[SETUP_SECTS],
            header_end,
            loadflags: file[LOADFLAGS],
            xloadflags: u16_at(file, XLOADFLAGS),
            kernel_alignment: u32_at(file, KERNEL_ALIGNMENT),
            relocatable: file[RELOCATABLE_KERNEL] != 0,
            pref_address: u64_at(file, PREF_ADDRESS),
            init_size: u32_at(file, INIT_SIZE),
            cmdline_size: u32_at(file, CMDLINE_SIZE),
            initrd_addr_max: u32_at(file, INITRD_ADDR_MAX),
        };
        let setup = header.setup_bytes();
        if len < setup {
            return Err(LinuxError::ShorterThanSetupSects { len, need: setup });
        }
        if len == setup {
            return Err(LinuxError::NoProtectedModeKernel);
        }
        if header.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LinuxError::No64BitEntry { xloadflags: header.xloadflags });
        }
        if header.loadflags & LOADED_HIGH == 0 {
            return Err(LinuxError::NotLoadedHigh { loadflags: header.loadflags });
        }
        if !header.kernel_alignment.is_power_of_two() {
            return Err(LinuxError::BadKernelAlignment { alignment: header.kernel_alignment });
        }
        let image = Self { header, file };
        let kernel_bytes = image.protected_mode().len() as u64;
        if u64::from(header.init_size) < kernel_bytes {
            return Err(LinuxError::InitSizeTooSmall { init_size: header.init_size, kernel_bytes });
        }
        let (start, _) = image.decompression_area();
        if start < KERNEL_LOAD_GPA {
            return Err(LinuxError::DecompressionTooLow { start });
        }
        Ok(image)
    }

    /// The protected-mode kernel, copied unmodified to [`KERNEL_LOAD_GPA`].
    pub fn protected_mode(&self) -> &'a [u8] {
        &self.file[self.header.setup_bytes()..]
    }

    /// The setup header's bytes, `0x1F1..header_end`.
    pub fn header_bytes(&self) -> &'a [u8] {
        &self.file[SETUP_HEADER_OFFSET..self.header.header_end]
    }

    /// Where the kernel decompresses itself (`startup_64` of the compressed kernel): a
    /// relocatable kernel at its load address rounded up to `kernel_alignment` but not below
    /// `pref_address` (LOAD_PHYSICAL_ADDR), a fixed one at `pref_address`; `init_size` bytes.
    pub fn decompression_area(&self) -> (u64, u64) {
        let h = &self.header;
        let align = u64::from(h.kernel_alignment);
        let start = if h.relocatable {
            let aligned = KERNEL_LOAD_GPA.div_ceil(align) * align;
            aligned.max(h.pref_address)
        } else {
            h.pref_address
        };
        (start, start.saturating_add(u64::from(h.init_size)))
    }

    /// The kernel's version string, if it has one.
    pub fn version(&self) -> Option<&'a str> {
        kernel_version(self.file)
    }
}

/// The version string the kernel names with `kernel_version` (0x20E), read from `0x200 +`
/// that offset up to its NUL, at most [`KERNEL_VERSION_MAX_BYTES`] and inside the setup code.
/// `None` for anything that is not a bzImage with such a string.
pub fn kernel_version(kernel: &[u8]) -> Option<&str> {
    if kernel.len() < KERNEL_VERSION + 2
        || u16_at(kernel, BOOT_FLAG) != BOOT_FLAG_MAGIC
        || u32_at(kernel, HEADER_MAGIC) != HDRS_MAGIC
    {
        return None;
    }
    let offset = u16_at(kernel, KERNEL_VERSION) as usize;
    if offset == 0 {
        return None;
    }
    let sects = match kernel[SETUP_SECTS] as usize {
        0 => DEFAULT_SETUP_SECTS,
        n => n,
    };
    let setup_end = ((sects + 1) * SECTOR_BYTES).min(kernel.len());
    let start = 0x200 + offset;
    let end = start.saturating_add(KERNEL_VERSION_MAX_BYTES).min(setup_end);
    let bytes = kernel.get(start..end)?;
    let nul = bytes.iter().position(|&b| b == 0)?;
    core::str::from_utf8(&bytes[..nul]).ok().filter(|s| !s.is_empty())
}

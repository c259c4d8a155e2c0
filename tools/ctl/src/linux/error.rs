//! Why a Linux kernel (or the request to build a domain from it) was refused.

use crate::error::BuildError;
use core::fmt;
use guest_abi::HvError;

/// Bytes in a MiB, for messages.
const MIB: u64 = 1 << 20;

/// Why a Linux domain could not be built. Everything except [`LinuxError::Write`] is found
/// before the first byte is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxError {
    /// The file ends before the setup header does (`need` bytes: up to 0x206 to find the
    /// magic, then up to `0x202 + byte 0x201`).
    ShorterThanSetupHeader { len: usize, need: usize },
    /// No boot-sector flag 0xAA55 at 0x1FE or no "HdrS" at 0x202.
    NotBzImage,
    /// Boot protocol older than 2.12 (the first with a 64-bit entry point).
    ProtocolTooOld { version: u16 },
    /// The setup header's own length (`0x202 + byte 0x201`) does not cover the 2.12 fields
    /// or runs past the header's room in the zero page (0x290).
    BadHeaderLength { end: usize },
    /// The file ends before the real-mode setup code does (`(setup_sects + 1) * 512`).
    ShorterThanSetupSects { len: usize, need: usize },
    /// Nothing after the setup code: no protected-mode kernel.
    NoProtectedModeKernel,
    /// `xloadflags` lacks `XLF_KERNEL_64`: no 64-bit entry point.
    No64BitEntry { xloadflags: u16 },
    /// `loadflags` lacks `LOADED_HIGH`: the kernel wants to be loaded at 0x10000.
    NotLoadedHigh { loadflags: u8 },
    /// `kernel_alignment` is not a power of two.
    BadKernelAlignment { alignment: u32 },
    /// `init_size` is smaller than the protected-mode kernel that has to fit in it.
    InitSizeTooSmall { init_size: u32, kernel_bytes: u64 },
    /// The kernel would decompress below 1 MiB (over the boot structures): a fixed-address
    /// kernel with a `pref_address` that low.
    DecompressionTooLow { start: u64 },
    /// The command line is longer than the kernel's `cmdline_size`.
    CmdlineTooLong { len: usize, max: usize },
    /// The command line and its NUL do not fit the command-line page.
    CmdlineTooLongForPage { len: usize, max: usize },
    /// The command line contains a NUL (the kernel would stop reading there).
    CmdlineHasNul { at: usize },
    /// Guest RAM is not page aligned or outside the builder's range.
    Memory(BuildError),
    /// Guest RAM is too small for the kernel's decompression area and the initrd.
    MemoryTooSmall { have: u64, need_mib: u64 },
    /// The kernel's load image or decompression area would not fit in the largest domain.
    KernelTooLarge { end: u64, max: u64 },
    /// The initrd does not fit in the largest domain next to the kernel.
    InitrdTooLarge { len: u64, max: u64 },
    /// The initrd fits in RAM but not below the kernel's `initrd_addr_max`.
    InitrdAboveAddrMax { len: u64, initrd_addr_max: u32 },
    /// The start-of-day page could not be made.
    StartInfo(BuildError),
    /// Writing guest memory at `gpa` failed.
    Write { gpa: u64, error: HvError },
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShorterThanSetupHeader { len, need } => {
                write!(f, "kernel of {len} bytes ends inside the setup header (needs {need})")
            }
            Self::NotBzImage => write!(f, "not a bzImage (no 0xAA55 boot flag or no HdrS header)"),
            Self::ProtocolTooOld { version } => write!(
                f,
                "boot protocol {}.{:02} is too old (2.12 or newer has the 64-bit entry)",
                version >> 8,
                version & 0xFF
            ),
            Self::BadHeaderLength { end } => write!(f, "setup header claims to end at {end:#x}"),
            Self::ShorterThanSetupSects { len, need } => {
                write!(f, "kernel of {len} bytes ends inside its setup code (setup_sects says {need})")
            }
            Self::NoProtectedModeKernel => write!(f, "bzImage has no protected-mode kernel after its setup code"),
            Self::No64BitEntry { xloadflags } => {
                write!(f, "kernel has no 64-bit entry point (xloadflags {xloadflags:#x} lacks XLF_KERNEL_64)")
            }
            Self::NotLoadedHigh { loadflags } => {
                write!(f, "kernel does not load at 1 MiB (loadflags {loadflags:#x} lacks LOADED_HIGH)")
            }
            Self::BadKernelAlignment { alignment } => {
                write!(f, "kernel_alignment {alignment:#x} is not a power of two")
            }
            Self::InitSizeTooSmall { init_size, kernel_bytes } => {
                write!(f, "init_size {init_size:#x} is smaller than the {kernel_bytes:#x}-byte kernel")
            }
            Self::DecompressionTooLow { start } => {
                write!(f, "kernel would decompress at {start:#x}, below 1 MiB")
            }
            Self::CmdlineTooLong { len, max } => {
                write!(f, "command line of {len} bytes is longer than the kernel accepts ({max})")
            }
            Self::CmdlineTooLongForPage { len, max } => {
                write!(f, "command line of {len} bytes does not fit its page (at most {max})")
            }
            Self::CmdlineHasNul { at } => write!(f, "command line has a NUL at byte {at}"),
            Self::Memory(e) => write!(f, "{e}"),
            Self::MemoryTooSmall { have, need_mib } => write!(
                f,
                "this kernel and initrd need at least {need_mib} MiB of RAM, the domain has {} MiB",
                have / MIB
            ),
            Self::KernelTooLarge { end, max } => {
                write!(f, "kernel needs memory up to {end:#x}, beyond the largest domain ({max:#x})")
            }
            Self::InitrdTooLarge { len, max } => {
                write!(f, "initrd of {len} bytes is too large (at most {max} next to this kernel)")
            }
            Self::InitrdAboveAddrMax { len, initrd_addr_max } => {
                write!(f, "initrd of {len} bytes does not fit below initrd_addr_max {initrd_addr_max:#x}")
            }
            Self::StartInfo(e) => write!(f, "start-of-day page: {e}"),
            Self::Write { gpa, error } => write!(f, "writing guest memory at {gpa:#x} failed: {error}"),
        }
    }
}

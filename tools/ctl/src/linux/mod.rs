//! The Linux loader of dom0's domain builder: boots an unmodified x86-64 bzImage through the
//! 64-bit boot protocol (Linux `Documentation/x86/boot.rst`, protocol 2.12 or newer).
//!
//! Guest-physical layout (see `docs/linux-loader.md`): the start-of-day page at 0x1000
//! (read-only, reserved in e820), the boot page tables at 0x2000-0x7FFF (identity map of
//! 4 GiB), the GDT at 0x8000 (`__BOOT_CS` 0x10, `__BOOT_DS` 0x18) with the boot stack
//! below its top, the zero page at 0x9000, the command line at 0xA000, the MP table at
//! 0xF0000, the protected-mode kernel at 1 MiB (entered at 1 MiB + 0x200), the initrd as high
//! as allowed above the area the kernel decompresses into.
//!
//! Everything is validated before the first write: a refused kernel leaves memory untouched.

pub mod bootparams;
mod build;
pub mod bzimage;
mod error;
pub mod launch;
pub mod mptable;

#[cfg(test)]
mod tests;

pub use build::{
    CMDLINE_GPA, CMDLINE_PAGE_MAX_BYTES, GUEST_HZ, KernelVersion, LINUX_BOOT_CS, LINUX_BOOT_DS, LINUX_ENTRY_GPA,
    LINUX_GDT, LINUX_GDT_GPA, LINUX_STACK_TOP_GPA, LinuxBuilt, LinuxPlan, LinuxSpec, WRITE_CHUNK_BYTES, ZERO_PAGE_GPA,
    build_linux, default_cmdline, gdt_page, linux_context, min_mem_bytes, plan_linux,
};
pub use bzimage::{BzImage, SetupHeader, kernel_version};
pub use error::LinuxError;
pub use launch::{LaunchLinux, LinuxLaunchError, launch_linux};

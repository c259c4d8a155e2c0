//! Host side of the project: build the bare-metal artifacts (hypervisor, dom0, guests), pack
//! the boot bundle, make BIOS/UEFI disk images with the `bootloader` crate, and run them under
//! QEMU or Bochs with the serial console wired to the terminal, a script, or a test. The
//! bundle also carries an unmodified Debian Linux kernel and its initramfs (`linux`).

pub mod artifacts;
pub mod console;
pub mod cpio;
pub mod emulator;
pub mod image;
pub mod linux;
pub mod linux_module;
pub mod run;
pub mod setup;
pub mod store_cmd;

use std::fmt;
use std::path::PathBuf;

/// Why the runner could not do what it was asked.
#[derive(Debug)]
pub enum BootError {
    /// A file or process operation failed.
    Io { what: String, source: std::io::Error },
    /// Building the bare-metal artifacts failed.
    Build(String),
    /// Making the disk image failed.
    Image(String),
    /// A bad entry for the boot bundle.
    Bundle(String),
    /// A required program or file is missing and was not installed.
    Missing { what: String, install: String },
    /// Bad command-line arguments.
    Usage(String),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::Build(m) => write!(f, "build failed: {m}"),
            Self::Image(m) => write!(f, "disk image: {m}"),
            Self::Bundle(m) => write!(f, "boot bundle: {m}"),
            Self::Missing { what, install } => write!(f, "{what} is missing; install it with: {install}"),
            Self::Usage(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for BootError {}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootError {
    let what = what.into();
    move |source| BootError::Io { what, source }
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

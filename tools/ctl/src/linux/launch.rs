//! Building and starting a Linux domain through control hypercalls, as `crate::launch` does
//! for ELF images: check the kernel first, create the domain (with the emulated PC
//! platform), build it with `mem_write`, set the vCPU, unpause. A refused kernel or a failed call leaves no domain behind.

use super::build::{LinuxSpec, build_linux, plan_linux};
use super::error::LinuxError;
use crate::control::{Control, Hypercalls};
use crate::launch::create_and_build;
use guest_abi::HvError;
use guest_abi::domctl::CREATE_PC_PLATFORM;
use guest_abi::hypercall::CallInsn;

/// What to start.
#[derive(Clone, Copy, Debug)]
pub struct LaunchLinux<'a> {
    /// The bzImage.
    pub kernel: &'a [u8],
    /// The initrd (may be empty).
    pub initrd: &'a [u8],
    /// Domain name (empty: the hypervisor picks `domN`).
    pub name: &'a str,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// Kernel command line (see [`super::default_cmdline`]).
    pub cmdline: &'a str,
    /// Leave the domain paused after building it.
    pub paused: bool,
}

/// Why a Linux domain could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxLaunchError {
    /// A hypercall failed.
    Hv(HvError),
    /// The kernel, initrd, command line or memory size was refused.
    Linux(LinuxError),
}

impl From<HvError> for LinuxLaunchError {
    fn from(e: HvError) -> Self {
        Self::Hv(e)
    }
}

impl From<LinuxError> for LinuxLaunchError {
    fn from(e: LinuxError) -> Self {
        Self::Linux(e)
    }
}

impl core::fmt::Display for LinuxLaunchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Hv(e) => write!(f, "{e}"),
            Self::Linux(e) => write!(f, "bad kernel: {e}"),
        }
    }
}

/// Creates (with the emulated PC platform: local APIC, 8259s, UART, port stubs), builds and
/// (unless `spec.paused`) starts a Linux domain; returns its id. The kernel is checked
/// before the domain is created; any later failure destroys it.
pub fn launch_linux<H: Hypercalls>(
    ctl: &mut Control<H>,
    spec: &LaunchLinux<'_>,
    call_insn: CallInsn,
    tsc_khz: u64,
) -> Result<u32, LinuxLaunchError> {
    plan_linux(spec.kernel, spec.initrd, spec.cmdline, spec.mem_bytes)?;
    create_and_build(ctl, spec.name, spec.mem_bytes, CREATE_PC_PLATFORM, spec.paused, |d, mem| {
        let linux = LinuxSpec {
            domid: d.id,
            name: d.name,
            kernel: spec.kernel,
            initrd: spec.initrd,
            cmdline: spec.cmdline,
            mem_bytes: spec.mem_bytes,
            call_insn,
            tsc_khz,
            generation: d.generation,
        };
        Ok(build_linux(&linux, mem)?.context)
    })
}

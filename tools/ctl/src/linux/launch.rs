//! Building and starting a Linux domain through control hypercalls, as `crate::launch` does
//! for ELF images: check the kernel first, create the domain (with the emulated PC
//! platform), build it with `mem_write`, set the vCPU, unpause. A refused kernel or a failed call leaves no domain behind.

use super::build::{LinuxSpec, build_linux, plan_linux};
use super::error::LinuxError;
use crate::control::{Control, Hypercalls};
use crate::memory::DomainMemory;
use guest_abi::HvError;
use guest_abi::domctl::{CREATE_PC_PLATFORM, NAME_MAX_BYTES, name_str};
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

/// Writes a domain's memory with `mem_write`.
struct HypercallMemory<'c, H: Hypercalls> {
    ctl: &'c mut Control<H>,
    id: u32,
}

impl<H: Hypercalls> DomainMemory for HypercallMemory<'_, H> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), HvError> {
        self.ctl.mem_write(self.id, gpa, data)
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
    let id = ctl.create_with(spec.name, spec.mem_bytes, CREATE_PC_PLATFORM)?;
    let result = (|| {
        let info = ctl.info(id)?;
        let generation = ctl.stat(id)?.generation;
        let name = name_str(&info.name);
        let mut name_buf = [0u8; NAME_MAX_BYTES];
        name_buf[..name.len()].copy_from_slice(name.as_bytes());
        let name = core::str::from_utf8(&name_buf[..name.len()]).unwrap_or("");
        let linux = LinuxSpec {
            domid: id,
            name,
            kernel: spec.kernel,
            initrd: spec.initrd,
            cmdline: spec.cmdline,
            mem_bytes: spec.mem_bytes,
            call_insn,
            tsc_khz,
            generation,
        };
        let built = build_linux(&linux, &mut HypercallMemory { ctl, id })?;
        ctl.vcpu_set(id, &built.context)?;
        if !spec.paused {
            ctl.unpause(id)?;
        }
        Ok(id)
    })();
    if result.is_err() {
        let _ = ctl.destroy(id);
    }
    result
}

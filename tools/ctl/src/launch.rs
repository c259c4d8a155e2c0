//! Building and starting a domain from an ELF image through control hypercalls: create an
//! empty domain, load the image with the shared builder (every write is a `mem_write`), set
//! the vCPU state, unpause. A refused image or a failed call leaves no domain behind.

use crate::builder::{BuildSpec, build};
use crate::control::{Control, Hypercalls};
use crate::error::BuildError;
use crate::memory::DomainMemory;
use guest_abi::HvError;
use guest_abi::hypercall::CallInsn;

/// What to start.
#[derive(Clone, Copy, Debug)]
pub struct LaunchSpec<'a> {
    /// The ELF64 image.
    pub image: &'a [u8],
    /// Domain name (empty: the hypervisor picks `domN`).
    pub name: &'a str,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// Command line.
    pub cmdline: &'a str,
    /// Leave the domain paused after building it.
    pub paused: bool,
}

/// Why a domain could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchError {
    /// A hypercall failed.
    Hv(HvError),
    /// The image was refused.
    Build(BuildError),
}

impl From<HvError> for LaunchError {
    fn from(e: HvError) -> Self {
        Self::Hv(e)
    }
}

impl core::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Hv(e) => write!(f, "{e}"),
            Self::Build(e) => write!(f, "bad image: {e}"),
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

/// Creates, builds and (unless `spec.paused`) starts a domain; returns its id.
pub fn launch<H: Hypercalls>(
    ctl: &mut Control<H>,
    spec: &LaunchSpec<'_>,
    call_insn: CallInsn,
    tsc_khz: u64,
) -> Result<u32, LaunchError> {
    let id = ctl.create(spec.name, spec.mem_bytes)?;
    let result = (|| {
        let info = ctl.info(id)?;
        let generation = ctl.stat(id)?.generation;
        let name = guest_abi::domctl::name_str(&info.name);
        let mut name_buf = [0u8; guest_abi::domctl::NAME_MAX_BYTES];
        name_buf[..name.len()].copy_from_slice(name.as_bytes());
        let name = core::str::from_utf8(&name_buf[..name.len()]).unwrap_or("");
        let build_spec = BuildSpec {
            domid: id,
            name,
            cmdline: spec.cmdline,
            mem_bytes: spec.mem_bytes,
            flags: 0,
            call_insn,
            tsc_khz,
            generation,
            modules: &[],
        };
        let built = build(spec.image, &build_spec, &mut HypercallMemory { ctl, id }).map_err(LaunchError::Build)?;
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

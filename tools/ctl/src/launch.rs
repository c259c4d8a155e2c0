//! Building and starting a domain from an ELF image through control hypercalls: create an
//! empty domain, load the image with the shared builder (every write is a `mem_write`), set
//! the vCPU state, unpause. A refused image or a failed call leaves no domain behind.

use crate::builder::{BuildSpec, build};
use crate::control::{Control, Hypercalls};
use crate::error::BuildError;
use crate::memory::DomainMemory;
use guest_abi::HvError;
use guest_abi::hypercall::CallInsn;
use guest_abi::vcpu::VcpuContext;

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

/// Who a just-created domain is, as a builder writes it into the start-of-day page.
pub struct NewDomain<'n> {
    pub id: u32,
    /// Its name (the hypervisor's choice when none was asked for).
    pub name: &'n str,
    pub generation: u64,
}

/// Creates an empty domain with `flags`, lets `build` write it (through `mem_write`) and
/// return its initial vCPU state, sets that state and, unless `paused`, starts it; returns
/// its id. Any failure after the creation destroys the domain again.
pub fn create_and_build<H: Hypercalls, E: From<HvError>>(
    ctl: &mut Control<H>,
    name: &str,
    mem_bytes: u64,
    flags: u32,
    paused: bool,
    build: impl FnOnce(&NewDomain<'_>, &mut dyn DomainMemory) -> Result<VcpuContext, E>,
) -> Result<u32, E> {
    let id = ctl.create_with(name, mem_bytes, flags)?;
    let result = (|| {
        let info = ctl.info(id)?;
        let generation = ctl.stat(id)?.generation;
        let name = guest_abi::domctl::name_str(&info.name);
        let mut name_buf = [0u8; guest_abi::domctl::NAME_MAX_BYTES];
        name_buf[..name.len()].copy_from_slice(name.as_bytes());
        let name = core::str::from_utf8(&name_buf[..name.len()]).unwrap_or("");
        let context = build(&NewDomain { id, name, generation }, &mut HypercallMemory { ctl, id })?;
        ctl.vcpu_set(id, &context)?;
        if !paused {
            ctl.unpause(id)?;
        }
        Ok(id)
    })();
    if result.is_err() {
        let _ = ctl.destroy(id);
    }
    result
}

/// Creates, builds and (unless `spec.paused`) starts a domain; returns its id.
pub fn launch<H: Hypercalls>(
    ctl: &mut Control<H>,
    spec: &LaunchSpec<'_>,
    call_insn: CallInsn,
    tsc_khz: u64,
) -> Result<u32, LaunchError> {
    create_and_build(ctl, spec.name, spec.mem_bytes, 0, spec.paused, |d, mem| {
        let build_spec = BuildSpec {
            domid: d.id,
            name: d.name,
            cmdline: spec.cmdline,
            mem_bytes: spec.mem_bytes,
            flags: 0,
            call_insn,
            tsc_khz,
            generation: d.generation,
            modules: &[],
        };
        Ok(build(spec.image, &build_spec, mem).map_err(LaunchError::Build)?.context)
    })
}

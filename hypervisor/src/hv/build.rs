//! Building domains inside the hypervisor from ELF images of the boot bundle (dom0 at boot,
//! or every image in bare mode), with the same builder dom0 uses, and mapping the bundle's
//! images read-only into dom0.

use super::Hypervisor;
use crate::mm::frame::{PAGE_SIZE, Pfn};
use crate::mm::physmem::PhysMem;
use crate::p2m::P2mType;
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::Backend;
use ctl::{BuildError, BuildSpec, DomainMemory};
use guest_abi::HvError;
use guest_abi::start_info::{ModuleInfo, StartFlags};

/// Writes a domain's memory on behalf of the builder (privileged: may fill the start-of-day
/// page).
struct HvWriter<'a, B: Backend, M: PhysMem, P: Platform> {
    hv: &'a mut Hypervisor<B, M, P>,
    id: DomId,
}

impl<B: Backend, M: PhysMem, P: Platform> DomainMemory for HvWriter<'_, B, M, P> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), HvError> {
        self.hv.write_guest(self.id, gpa, data, true)
    }
}

/// Why a boot-time domain could not be built.
#[derive(Debug)]
pub enum BuildFailure {
    /// The hypervisor refused the domain (memory, name, ...).
    Create(HvError),
    /// The image was refused by the builder.
    Image(BuildError),
}

impl core::fmt::Display for BuildFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Create(e) => write!(f, "cannot create the domain: {e}"),
            Self::Image(e) => write!(f, "bad image: {e}"),
        }
    }
}

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// Creates a domain, loads `elf` into it and sets its vCPU to the image's entry. The
    /// domain stays paused. Nothing is left behind if it fails.
    pub fn build_domain(
        &mut self,
        elf: &[u8],
        name: &str,
        mem_bytes: u64,
        cmdline: &str,
        privileged: bool,
        modules: &[ModuleInfo],
    ) -> Result<DomId, BuildFailure> {
        let id = self.create_domain(name, mem_bytes, privileged).map_err(BuildFailure::Create)?;
        let generation = self.domains.get(id).map(|d| d.generation).unwrap_or(0);
        let domain_name = self.domains.get(id).map(|d| d.name).unwrap_or_default();
        let spec = BuildSpec {
            domid: id,
            name: domain_name.as_str(),
            cmdline,
            mem_bytes,
            flags: if privileged { StartFlags::PRIVILEGED.bits() } else { 0 },
            call_insn: B::CALL_INSN,
            tsc_khz: self.platform.tsc_khz(),
            generation,
            modules,
        };
        let built = ctl::build(elf, &spec, &mut HvWriter { hv: self, id });
        match built {
            Ok(b) => {
                // Cannot fail: the domain was just created with a vCPU.
                let _ = self.set_context(id, &b.context);
                Ok(id)
            }
            Err(e) => {
                if privileged && self.dom0 == Some(id) {
                    self.dom0 = None;
                }
                self.release(id);
                self.domains.remove(id);
                Err(BuildFailure::Image(e))
            }
        }
    }

    /// Maps `frames` consecutive machine frames read-only (ROM) at `gpa` in a domain.
    pub fn map_rom(&mut self, id: DomId, gpa: u64, first: Pfn, frames: u64) -> Result<(), HvError> {
        let d = self.domains.get_mut(id).ok_or(HvError::NoSuchDomain)?;
        let p2m = d.p2m.as_mut().ok_or(HvError::WrongState)?;
        for i in 0..frames {
            p2m.map(&mut self.frames, &self.mem, gpa / PAGE_SIZE + i, Pfn(first.0 + i), false, P2mType::Rom, id)
                .map_err(|_| HvError::InvalidArgument)?;
        }
        d.gpa_limit = d.gpa_limit.max(gpa + frames * PAGE_SIZE);
        Ok(())
    }
}

//! How the domain builder reaches a domain's memory: the hypervisor writes frames directly,
//! dom0 goes through the `mem_write` hypercall; both implement [`DomainMemory`].

use guest_abi::HvError;

/// Write access to the guest-physical memory of the domain being built.
pub trait DomainMemory {
    /// Copies `data` into the domain at guest-physical address `gpa`. The builder calls this
    /// with whole segments and pages, never byte by byte.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), HvError>;
}

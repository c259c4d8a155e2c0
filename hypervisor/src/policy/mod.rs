//! What guests may see and set, decided once at boot from the host CPU: the CPUID allow-list
//! and the rules for control registers, MSRs, debug registers and whole vCPU contexts. A
//! guest's WRMSR or MOV CR and a context set from outside (dom0's `vcpu_set`, a restored
//! image) go through the same checks, so both vendors and every entry point agree.

pub mod cpuid;
pub mod devices;
pub mod isolation;
pub mod state;

pub use cpuid::CpuidPolicy;
pub use state::{ContextError, Cr0Verdict};

use crate::vcpu::GuestMsr;

/// The machine-wide guest policy.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// What CPUID shows guests.
    pub cpuid: CpuidPolicy,
    /// CR4 bits a guest may set: each belongs to a feature CPUID shows, whose state the
    /// hypervisor switches or that holds no state at all.
    pub cr4_allowed: u64,
    /// Physical-address width: higher CR3 bits are reserved.
    pub phys_addr_bits: u8,
    /// IA32_TSC_AUX exists (RDTSCP or RDPID is shown) and is kept per vCPU.
    pub tsc_aux: bool,
}

impl Policy {
    /// The policy for a host whose CPUID is `host`.
    pub fn new(host: &dyn Fn(u32, u32) -> [u32; 4]) -> Self {
        let cpuid = CpuidPolicy::new(host);
        Self {
            cr4_allowed: cpuid.cr4_allowed(),
            phys_addr_bits: cpuid.phys_addr_bits(),
            tsc_aux: cpuid.shows_tsc_aux(),
            cpuid,
        }
    }

    /// The MSR a guest's RDMSR/WRMSR of `index` reaches, if the policy offers it.
    pub fn guest_msr(&self, index: u32) -> Option<GuestMsr> {
        GuestMsr::from_index(index).filter(|&m| m != GuestMsr::TscAux || self.tsc_aux)
    }
}

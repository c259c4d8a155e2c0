//! The contract between the hypervisor and an agent inside an unmodified guest kernel (the
//! static Linux program in the initramfs): hypervisor CPUID leaves, which exit from any
//! privilege level, so user space needs no driver and no hypercall instruction.
//!
//! - [`CPUID_LEAF_PARK`]: "the system is up; park me at the freeze point". The domain is
//!   paused right after the instruction (reason `parked`). dom0 then either freezes it there
//!   (`freeze`: every clone resumes from that instruction) or unpauses it (it goes on as an
//!   ordinary domain). EAX returns [`PARK_ACCEPTED`] (or 0 where the hypervisor does not park).
//! - [`CPUID_LEAF_IDENTITY`]: who this domain is now (changes in every clone and restore).
//! - [`CPUID_LEAF_ENTROPY`]: 16 bytes of fresh seed material, different in every clone and in
//!   every call, for reseeding the guest kernel's RNG.

/// Park at the freeze point (see the module documentation).
pub const CPUID_LEAF_PARK: u32 = 0x4000_0010;
/// Identity. Subleaf 0: EAX domid, EBX parent domid ([`NO_PARENT`] if none), ECX clone index,
/// EDX [`IdentityFlags`]. Subleaf 1: EAX/EBX generation (low/high 32 bits), ECX/EDX 0.
pub const CPUID_LEAF_IDENTITY: u32 = 0x4000_0011;
/// Entropy: EAX, EBX, ECX, EDX are 16 fresh bytes.
pub const CPUID_LEAF_ENTROPY: u32 = 0x4000_0012;

/// EAX of [`CPUID_LEAF_PARK`] when the domain was parked ("PARK").
pub const PARK_ACCEPTED: u32 = u32::from_le_bytes(*b"PARK");
/// EBX of identity subleaf 0 when the domain has no template.
pub const NO_PARENT: u32 = u32::MAX;

bitflags::bitflags! {
    /// EDX of identity subleaf 0.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IdentityFlags: u32 {
        /// The domain is a clone of the template in EBX.
        const CLONE = 1 << 0;
        /// The domain was restored from an image.
        const RESTORED = 1 << 1;
    }
}

/// A domain's identity as the agent reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub domid: u32,
    /// Template domid, or [`NO_PARENT`].
    pub parent: u32,
    pub clone_index: u32,
    pub flags: IdentityFlags,
    pub generation: u64,
}

impl Identity {
    /// Decodes the two identity subleaves (`[eax, ebx, ecx, edx]` each).
    pub fn from_leaves(sub0: [u32; 4], sub1: [u32; 4]) -> Self {
        Self {
            domid: sub0[0],
            parent: sub0[1],
            clone_index: sub0[2],
            flags: IdentityFlags::from_bits_truncate(sub0[3]),
            generation: u64::from(sub1[0]) | u64::from(sub1[1]) << 32,
        }
    }

    /// Encodes the two identity subleaves.
    pub fn to_leaves(&self) -> ([u32; 4], [u32; 4]) {
        (
            [self.domid, self.parent, self.clone_index, self.flags.bits()],
            [self.generation as u32, (self.generation >> 32) as u32, 0, 0],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_its_leaves() {
        let id = Identity { domid: 7, parent: 3, clone_index: 12, flags: IdentityFlags::CLONE, generation: 0x1_0000_0005 };
        let (a, b) = id.to_leaves();
        assert_eq!(Identity::from_leaves(a, b), id);
    }

    #[test]
    fn agent_leaves_sit_in_the_hypervisor_range() {
        for l in [CPUID_LEAF_PARK, CPUID_LEAF_IDENTITY, CPUID_LEAF_ENTROPY] {
            assert!((0x4000_0000..=0x4FFF_FFFF).contains(&l));
        }
    }
}

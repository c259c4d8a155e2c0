//! The hypervisor CPUID leaves an agent inside an unmodified guest uses
//! (`guest_abi::agent`): park at the freeze point, read its identity, draw seed material.
//! CPUID exits from any privilege level, so the agent needs neither a driver nor the
//! hypercall instruction (which user space may not use).

use super::{Hypervisor, Next};
use crate::domain::PauseReason;
use crate::mm::physmem::PhysMem;
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::{Backend, Vcpu};
use guest_abi::agent::{CPUID_LEAF_ENTROPY, CPUID_LEAF_IDENTITY, CPUID_LEAF_PARK, Identity, IdentityFlags, NO_PARENT, PARK_ACCEPTED};

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// Answers an agent leaf; `None` if `leaf` is not one.
    pub(crate) fn agent_cpuid(&mut self, id: DomId, leaf: u32, sub: u32) -> Option<Next> {
        let answer = match leaf {
            CPUID_LEAF_PARK => {
                let d = self.domains.get(id)?;
                // dom0 is never parked: it has nobody to unpause it.
                if d.privileged { [0; 4] } else { [PARK_ACCEPTED, 0, 0, 0] }
            }
            CPUID_LEAF_IDENTITY => {
                let d = self.domains.get(id)?;
                let mut flags = IdentityFlags::empty();
                flags.set(IdentityFlags::CLONE, d.parent.is_some());
                flags.set(IdentityFlags::RESTORED, d.restored);
                let who = Identity {
                    domid: id,
                    parent: d.parent.unwrap_or(NO_PARENT),
                    clone_index: d.clone_index,
                    flags,
                    generation: d.generation,
                };
                let (a, b) = who.to_leaves();
                if sub == 0 { a } else if sub == 1 { b } else { [0; 4] }
            }
            CPUID_LEAF_ENTROPY => {
                let generation = self.domains.get(id)?.generation;
                self.entropy.stir(self.platform.cycles());
                self.entropy.draw(id, generation)
            }
            _ => return None,
        };
        let d = self.domains.get_mut(id)?;
        let v = d.vcpu.as_mut()?;
        let r = v.regs();
        r.rax = u64::from(answer[0]);
        r.rbx = u64::from(answer[1]);
        r.rcx = u64::from(answer[2]);
        r.rdx = u64::from(answer[3]);
        v.skip_instruction();
        if leaf == CPUID_LEAF_PARK && answer[0] == PARK_ACCEPTED {
            log::debug!("d{id} ({}) parked at its freeze point", d.name.as_str());
            let _ = self.pause(id, PauseReason::Parked);
            return Some(Next::Reschedule);
        }
        Some(Next::Continue)
    }
}

//! Guest channels and self-checkpoints (docs/self-checkpoint.md): the hypervisor's side of a
//! ring a guest shares with dom0 (who may have one, where it is, who kicked), and of a
//! guest's checkpoint of itself — a copy-on-write epoch of the caller that only the caller
//! can read, bounded in time, reclaimed when the caller ends or abandons it.

use super::Hypervisor;
use crate::domain::Life;
use crate::mm::frame::PAGE_SIZE;
use crate::mm::physmem::PhysMem;
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::Backend;
use core::fmt::Write as _;
use guest_abi::HvError;
use guest_abi::channel::{ChannelInfo, EPOCH_MAX_NS, MAX_SLOTS, READ_MAX_PAGES, RESTORED, TAKEN, op};
use guest_abi::domctl::NO_DOMAIN;
use guest_abi::hypercall::event;

/// One domain's channel, present once dom0 allowed it one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Channel {
    /// Where the ring is (0: not registered yet).
    pub ring_gpa: u64,
    /// Pages of the ring (header + slots).
    pub pages: u32,
    /// The domain kicked its ring since dom0 last asked.
    pub kicked: bool,
    /// The domain's running self-checkpoint epoch (a frozen snapshot domain).
    pub epoch: Option<DomId>,
    /// When that epoch is reclaimed if the domain has not ended it.
    pub epoch_deadline_ns: u64,
}

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    fn channel_mut(&mut self, id: DomId) -> Result<&mut Channel, HvError> {
        self.channels.get_mut(&id).ok_or(HvError::NotPermitted)
    }

    /// `channel_open(ring_gpa, pages)` of domain `id` (`pages` 0 closes the ring).
    pub(crate) fn channel_open(&mut self, id: DomId, ring_gpa: u64, pages: u64) -> Result<(), HvError> {
        self.channel_mut(id)?;
        if pages == 0 {
            let ch = self.channel_mut(id)?;
            ch.ring_gpa = 0;
            ch.pages = 0;
            return Ok(());
        }
        if ring_gpa % PAGE_SIZE != 0 || ring_gpa == 0 || !(2..=u64::from(MAX_SLOTS) + 1).contains(&pages) {
            return Err(HvError::InvalidArgument);
        }
        self.check_range(id, ring_gpa, pages * PAGE_SIZE)?;
        let ch = self.channel_mut(id)?;
        ch.ring_gpa = ring_gpa;
        ch.pages = pages as u32;
        Ok(())
    }

    /// `channel_notify()` of domain `id`: dom0 gets event `CHANNEL`.
    pub(crate) fn channel_notify(&mut self, id: DomId) -> Result<(), HvError> {
        let ch = self.channel_mut(id)?;
        if ch.ring_gpa == 0 {
            return Err(HvError::WrongState);
        }
        ch.kicked = true;
        if let Some(d0) = self.dom0 {
            self.raise(d0, event::CHANNEL);
        }
        Ok(())
    }

    /// `dom_channel(op, target, arg)` (dom0 only; the dispatcher checked).
    pub(crate) fn dom_channel(&mut self, caller: DomId, opcode: u64, target: u64, arg: u64) -> Result<u64, HvError> {
        match opcode {
            op::NEXT => {
                let next = self.channels.iter_mut().find(|(_, c)| c.kicked).map(|(id, c)| {
                    c.kicked = false;
                    *id
                });
                Ok(u64::from(next.unwrap_or(NO_DOMAIN)))
            }
            _ => {
                let t = u32::try_from(target).map_err(|_| HvError::NoSuchDomain)?;
                let d = self.dom(t)?;
                if t == caller || d.privileged {
                    return Err(HvError::NotPermitted);
                }
                match opcode {
                    op::ALLOW => match arg {
                        1 => {
                            if d.life != Life::Live {
                                return Err(HvError::WrongState);
                            }
                            self.channels.entry(t).or_default();
                            Ok(0)
                        }
                        0 => {
                            self.channel_gone(t);
                            Ok(0)
                        }
                        _ => Err(HvError::InvalidArgument),
                    },
                    op::INFO => {
                        let c = self.channels.get(&t).copied().unwrap_or_default();
                        let info = ChannelInfo { ring_gpa: c.ring_gpa, pages: c.pages, epoch: c.epoch.unwrap_or(NO_DOMAIN) };
                        self.write_struct(caller, arg, &info)?;
                        Ok(0)
                    }
                    op::KICK => {
                        if !self.channels.contains_key(&t) {
                            return Err(HvError::WrongState);
                        }
                        self.raise(t, event::CHANNEL);
                        Ok(0)
                    }
                    _ => Err(HvError::InvalidArgument),
                }
            }
        }
    }

    /// `self_checkpoint()` of domain `id`: a copy-on-write epoch of this instant, whose
    /// context returns `RESTORED` from this very call; the caller gets `TAKEN`.
    pub(crate) fn self_checkpoint(&mut self, id: DomId) -> Result<u64, HvError> {
        let ch = self.channel_mut(id)?;
        if ch.epoch.is_some() {
            return Err(HvError::Busy);
        }
        // Named for its domain where that name is free (`NAME.self`), else by default.
        let mut name = crate::domain::Name::new("");
        let base = self.dom(id)?.name;
        let base = base.as_str();
        let cut = base.char_indices().map(|(i, _)| i).chain([base.len()]).filter(|&i| i + 5 <= guest_abi::domctl::NAME_MAX_BYTES).last().unwrap_or(0);
        let _ = write!(name, "{}.self", &base[..cut]);
        let name = if self.domains.by_name(name.as_str()).is_some() { "" } else { name.as_str() };
        let name = alloc::string::String::from(name);
        let epoch = self.snapshot(id, &name)?;
        if let Some(ctx) = self.domains.get_mut(epoch).and_then(|e| e.frozen_context.as_mut()) {
            ctx.rax = RESTORED;
        }
        let due = self.platform.now_ns().saturating_add(EPOCH_MAX_NS);
        let ch = self.channel_mut(id)?;
        ch.epoch = Some(epoch);
        ch.epoch_deadline_ns = due;
        self.arm_epoch_deadline();
        log::debug!("d{id}: self-checkpoint epoch d{epoch}");
        Ok(TAKEN)
    }

    /// `self_checkpoint_read(gpa, dst, pages)`: pages of the caller's own epoch into its memory.
    pub(crate) fn self_checkpoint_read(&mut self, id: DomId, gpa: u64, dst: u64, pages: u64) -> Result<(), HvError> {
        let epoch = self.channel_mut(id)?.epoch.ok_or(HvError::WrongState)?;
        if gpa % PAGE_SIZE != 0 || pages == 0 || pages > READ_MAX_PAGES {
            return Err(HvError::InvalidArgument);
        }
        let len = pages * PAGE_SIZE;
        self.check_range(epoch, gpa, len)?;
        self.copy_guest(epoch, gpa, id, dst, len, false)
    }

    /// `self_checkpoint_end()`: the caller's epoch ends and its frames go back.
    pub(crate) fn self_checkpoint_end(&mut self, id: DomId) -> Result<(), HvError> {
        let epoch = self.channel_mut(id)?.epoch.take().ok_or(HvError::WrongState)?;
        self.end_epoch(epoch);
        Ok(())
    }

    fn end_epoch(&mut self, epoch: DomId) {
        if self.domains.get(epoch).is_some() {
            if let Err(e) = self.destroy_domain(epoch) {
                log::error!("self-checkpoint epoch d{epoch}: not destroyed: {e:?}");
            }
        }
        self.arm_epoch_deadline();
    }

    /// A domain is released: its channel closes and its epoch goes; an epoch destroyed by
    /// dom0 is no longer its domain's.
    pub(crate) fn channel_gone(&mut self, id: DomId) {
        let epoch = self.channels.remove(&id).and_then(|c| c.epoch);
        for c in self.channels.values_mut() {
            if c.epoch == Some(id) {
                c.epoch = None;
            }
        }
        if let Some(e) = epoch {
            self.end_epoch(e);
        }
    }

    pub(crate) fn arm_epoch_deadline(&mut self) {
        self.epoch_deadline = self.channels.values().filter(|c| c.epoch.is_some()).map(|c| c.epoch_deadline_ns).min();
    }

    /// Reclaims the epochs whose time is up.
    pub(crate) fn expire_epochs(&mut self, now_ns: u64) {
        let late: alloc::vec::Vec<(DomId, DomId)> =
            self.channels.iter().filter_map(|(id, c)| c.epoch.filter(|_| c.epoch_deadline_ns <= now_ns).map(|e| (*id, e))).collect();
        for (id, e) in late {
            log::warn!("d{id}: self-checkpoint epoch d{e} abandoned: reclaimed");
            if let Some(c) = self.channels.get_mut(&id) {
                c.epoch = None;
            }
            self.end_epoch(e);
        }
        self.arm_epoch_deadline();
    }
}

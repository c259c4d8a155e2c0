//! Lazy restore and pagers (docs/pager.md): a client's first touch of a missing page stops
//! its vCPU and posts a request on its pager's ring; `pager_supply` maps the pages (private,
//! or shared read-only among clients and copied on write) and lets the vCPU go on. A pager
//! that dies or does not answer in time leaves its clients paused, intact, for another.

use super::{Hypervisor, Next, START_INFO_GFN};
use crate::domain::{Life, PauseReason, Reason};
use crate::mm::frame::{FrameKind, PAGE_SIZE, Pfn};
use crate::mm::physmem::PhysMem;
use crate::p2m::{Gfn, P2mType};
use crate::pager::{LazyClient, encode_request, ring_slot};
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::Backend;
use alloc::boxed::Box;
use core::fmt::Write as _;
use guest_abi::HvError;
use guest_abi::hypercall::event;
use guest_abi::pager::{self, LazyStatus, Request, SupplyArgs, ring};

/// The pool slot of a key's zero frame (no gfn is this large).
const ZERO_SLOT: Gfn = Gfn::MAX;

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// Makes `id` (just created, paused, with only its start-of-day page) a lazy client of
    /// `pager`.
    pub fn make_lazy(&mut self, id: DomId, pager: DomId) -> Result<(), HvError> {
        let d = self.dom_mut(id)?;
        let missing = (d.mem_bytes / PAGE_SIZE).saturating_sub(1);
        d.lazy = Some(Box::new(LazyClient::new(pager, missing, pager::PAGER_TIMEOUT_MS_DEFAULT * 1_000_000)));
        self.dom_mut(pager)?.pager.get_or_insert_with(Box::default);
        Ok(())
    }

    /// A touch of a page `id` does not have yet: stop its vCPU and ask its pager.
    pub(crate) fn demand_fault(&mut self, id: DomId, gfn: Gfn, write: bool) -> Next {
        let (now, tsc) = (self.platform.now_ns(), self.platform.cycles());
        let Some(d) = self.domains.get_mut(id) else { return Next::Reschedule };
        let Some(l) = d.lazy.as_mut() else { return Next::Reschedule };
        if l.wait.is_some() {
            return Next::Reschedule;
        }
        l.start_wait(gfn, write, now, tsc);
        let pager = l.pager;
        d.queued = false;
        self.queue.remove(id);
        if let Some(p) = pager {
            if let Some(role) = self.domains.get_mut(p).and_then(|d| d.pager.as_mut()) {
                role.backlog.push_back(id);
            }
            self.flush_backlog(p);
            self.raise(p, event::PAGER);
        }
        self.arm_pager_deadline();
        Next::Reschedule
    }

    /// Posts what fits of pager `p`'s backlog on its ring.
    fn flush_backlog(&mut self, p: DomId) {
        loop {
            let Some(role) = self.domains.get(p).and_then(|d| d.pager.as_deref()) else { return };
            let Some(&client) = role.backlog.front() else { return };
            let (Some(gpa), prod) = (role.ring_gpa, role.prod) else { return };
            // A client that went away, or no longer waits on this pager, is dropped.
            let wait = self
                .domains
                .get(client)
                .and_then(|c| c.lazy.as_ref().filter(|l| l.pager == Some(p)).and_then(|l| l.wait))
                .filter(|w| !w.posted);
            let Some(w) = wait else {
                self.pop_backlog(p);
                continue;
            };
            let mut cons = [0u8; 4];
            if self.read_guest(p, gpa + ring::CONS_OFFSET, &mut cons).is_err() {
                return;
            }
            let Some(slot) = ring_slot(prod, u32::from_le_bytes(cons)) else { return };
            let req = Request { client, flags: if w.write { pager::REQ_WRITE } else { 0 }, gfn: w.gfn, id: w.id, tsc: w.since_tsc };
            let next = prod.wrapping_add(1);
            if self.write_guest(p, gpa + slot, &encode_request(&req), false).is_err()
                || self.write_guest(p, gpa + ring::PROD_OFFSET, &next.to_le_bytes(), false).is_err()
            {
                return;
            }
            if let Some(role) = self.domains.get_mut(p).and_then(|d| d.pager.as_mut()) {
                role.prod = next;
            }
            if let Some(w) = self.domains.get_mut(client).and_then(|c| c.lazy.as_mut()).and_then(|l| l.wait.as_mut()) {
                w.posted = true;
            }
            self.pop_backlog(p);
        }
    }

    fn pop_backlog(&mut self, p: DomId) {
        if let Some(role) = self.domains.get_mut(p).and_then(|d| d.pager.as_mut()) {
            role.backlog.pop_front();
        }
    }

    /// Recomputes when the next pager answer is due.
    fn arm_pager_deadline(&mut self) {
        self.pager_deadline = self.domains.iter().filter_map(|d| d.lazy.as_ref().and_then(|l| l.deadline_ns())).min();
    }

    /// Pauses the clients whose pager did not answer in time.
    pub(crate) fn expire_pager_waits(&mut self, now_ns: u64) {
        let late: alloc::vec::Vec<(DomId, DomId, Gfn, u64)> = self
            .domains
            .iter()
            .filter(|d| d.paused != Some(PauseReason::Pager))
            .filter_map(|d| {
                let l = d.lazy.as_ref()?;
                let due = l.deadline_ns()?;
                if due > now_ns {
                    return None;
                }
                Some((d.id, l.pager?, l.wait?.gfn, l.timeout_ns / 1_000_000))
            })
            .collect();
        for (id, p, gfn, ms) in late {
            self.pause_for_pager(id, format_args!("pager d{p} did not answer gpa {:#x} in {ms} ms", gfn * PAGE_SIZE));
        }
        self.arm_pager_deadline();
        // A paused client's deadline no longer counts.
        self.pager_deadline = self
            .domains
            .iter()
            .filter(|d| d.paused != Some(PauseReason::Pager))
            .filter_map(|d| d.lazy.as_ref().and_then(|l| l.deadline_ns()))
            .min();
    }

    /// Pauses a client because of its pager. One dom0 paused stays paused by dom0 (a new
    /// pager does not let it go on), with the reason noted.
    fn pause_for_pager(&mut self, id: DomId, why: core::fmt::Arguments<'_>) {
        let Some(d) = self.domains.get_mut(id) else { return };
        let mut r = Reason::default();
        let _ = r.write_fmt(why);
        log::warn!("d{id} ({}) paused: {}", d.name.as_str(), r.as_str());
        d.reason = r;
        if d.paused == Some(PauseReason::User) {
            return;
        }
        let _ = self.pause(id, PauseReason::Pager);
    }

    /// Pager `p` is going away: its shared frames are released (clients keep what they
    /// map) and its clients are paused until another pager takes them over.
    pub(crate) fn pager_gone(&mut self, p: DomId) {
        let Some(role) = self.domains.get_mut(p).and_then(|d| d.pager.take()) else { return };
        for (_, pfn) in role.pool {
            let _ = self.frames.put_ref(pfn);
        }
        let name = self.domains.get(p).map(|d| d.name).unwrap_or_default();
        let orphans: alloc::vec::Vec<DomId> =
            self.domains.iter().filter(|d| d.lazy.as_ref().is_some_and(|l| l.is_lazy() && l.pager == Some(p))).map(|d| d.id).collect();
        for id in orphans {
            if let Some(l) = self.domains.get_mut(id).and_then(|d| d.lazy.as_mut()) {
                l.pager = None;
                if let Some(w) = l.wait.as_mut() {
                    w.posted = false;
                }
            }
            self.pause_for_pager(id, format_args!("pager d{p} ({}) is gone", name.as_str()));
        }
        self.arm_pager_deadline();
    }

    /// `pager_ring`: domain `id` registers (or with 0 drops) its request ring page.
    pub(crate) fn pager_ring(&mut self, id: DomId, gpa: u64) -> Result<(), HvError> {
        if gpa == 0 {
            if let Some(role) = self.dom_mut(id)?.pager.as_mut() {
                role.ring_gpa = None;
            }
            return Ok(());
        }
        if gpa % PAGE_SIZE != 0 {
            return Err(HvError::InvalidArgument);
        }
        // dom0 may set up its ring before it has clients; another domain only once dom0
        // made it some client's pager.
        let d = self.dom_mut(id)?;
        if d.privileged {
            d.pager.get_or_insert_with(Box::default);
        }
        d.pager.as_ref().ok_or(HvError::NotPermitted)?;
        self.check_writable(id, gpa, PAGE_SIZE, false)?;
        let mut header = [0u8; ring::SLOT0_OFFSET as usize];
        header[ring::SLOTS_OFFSET as usize..][..4].copy_from_slice(&ring::RING_SLOTS.to_le_bytes());
        self.write_guest(id, gpa, &header, false)?;
        let role = self.dom_mut(id)?.pager.as_mut().ok_or(HvError::NotPermitted)?;
        role.ring_gpa = Some(gpa);
        role.prod = 0;
        // Whatever was posted on an earlier ring is posted again on this one.
        let clients: alloc::vec::Vec<DomId> = self
            .domains
            .iter()
            .filter(|d| d.lazy.as_ref().is_some_and(|l| l.pager == Some(id) && l.wait.is_some()))
            .map(|d| d.id)
            .collect();
        for c in clients {
            if let Some(w) = self.domains.get_mut(c).and_then(|d| d.lazy.as_mut()).and_then(|l| l.wait.as_mut()) {
                w.posted = false;
            }
            if let Some(role) = self.domains.get_mut(id).and_then(|d| d.pager.as_mut()) {
                if !role.backlog.contains(&c) {
                    role.backlog.push_back(c);
                }
            }
        }
        self.flush_backlog(id);
        Ok(())
    }

    /// The client `client` of pager `caller`, checked: it exists, is still lazy, and is served
    /// by `caller`.
    fn client_of(&self, caller: DomId, client: u64) -> Result<DomId, HvError> {
        let client = u32::try_from(client).map_err(|_| HvError::NoSuchDomain)?;
        let d = self.dom(client)?;
        match d.lazy.as_ref() {
            Some(l) if l.is_lazy() && l.pager == Some(caller) && d.life == Life::Live => Ok(client),
            _ => Err(HvError::NotPermitted),
        }
    }

    /// `pager_supply`: everything is checked before anything is mapped; pages the client
    /// already has are skipped. Returns the pages mapped.
    pub(crate) fn pager_supply(&mut self, caller: DomId, a: &SupplyArgs) -> Result<u64, HvError> {
        self.flush_backlog(caller);
        let client = self.client_of(caller, u64::from(a.client))?;
        if a.flags & !pager::SUPPLY_FLAGS_ALL != 0 || a.count == 0 || a.count > pager::SUPPLY_MAX_PAGES {
            return Err(HvError::InvalidArgument);
        }
        let shared = a.flags & pager::SUPPLY_SHARED != 0;
        let zero = a.flags & pager::SUPPLY_ZERO != 0;
        if shared && a.share_key == 0 {
            return Err(HvError::InvalidArgument);
        }
        let (mem_pages, wait, last_request) = {
            let d = self.dom(client)?;
            let l = d.lazy.as_ref().ok_or(HvError::NotPermitted)?;
            (d.mem_bytes / PAGE_SIZE, l.wait, l.last_request)
        };
        let end = a.gfn.checked_add(a.count).ok_or(HvError::BadAddress)?;
        if end > mem_pages {
            return Err(HvError::BadAddress);
        }
        if !zero {
            if a.src_gpa % PAGE_SIZE != 0 {
                return Err(HvError::InvalidArgument);
            }
            self.check_range(caller, a.src_gpa, a.count * PAGE_SIZE)?;
        }
        // An answer to a request never made, or to the one outstanding but not about its page,
        // is refused. One already answered (a background supply got there first) is fine.
        let outstanding = wait.filter(|w| w.id == a.request);
        if a.request > last_request || outstanding.is_some_and(|w| !(a.gfn..end).contains(&w.gfn)) {
            return Err(HvError::InvalidArgument);
        }
        // Room for every page and the tables they may need, or nothing is done.
        if self.frames.free_frames() < a.count + a.count.div_ceil(512) + 3 {
            return Err(HvError::OutOfMemory);
        }
        let mut mapped = 0u64;
        for gfn in a.gfn..end {
            if gfn == START_INFO_GFN {
                continue;
            }
            let present = self.dom(client)?.p2m.as_ref().ok_or(HvError::WrongState)?.lookup(&self.mem, gfn).is_some();
            if present {
                continue;
            }
            let src = if zero { None } else { Some(self.frame_of(caller, a.src_gpa + (gfn - a.gfn) * PAGE_SIZE)?) };
            let (pfn, writable) = if shared {
                // Zero pages of one key all share one frame; other pages one frame per gfn.
                let slot = if zero { ZERO_SLOT } else { gfn };
                let pooled = self.dom(caller)?.pager.as_ref().and_then(|r| r.pool.get(&(a.share_key, slot)).copied());
                let pfn = match pooled {
                    Some(pfn) => pfn,
                    None => {
                        let pfn = self.frames.alloc(FrameKind::DomainRam, caller).map_err(|_| HvError::OutOfMemory)?;
                        self.fill_frame(pfn, src);
                        if let Some(role) = self.dom_mut(caller)?.pager.as_mut() {
                            role.pool.insert((a.share_key, slot), pfn);
                        }
                        pfn
                    }
                };
                self.frames.get_ref(pfn).map_err(|_| HvError::InvalidArgument)?;
                (pfn, false)
            } else {
                let pfn = self.frames.alloc(FrameKind::DomainRam, client).map_err(|_| HvError::OutOfMemory)?;
                self.fill_frame(pfn, src);
                (pfn, true)
            };
            let d = self.domains.get_mut(client).ok_or(HvError::NoSuchDomain)?;
            let p2m = d.p2m.as_mut().ok_or(HvError::WrongState)?;
            if let Err(e) = p2m.map(&mut self.frames, &self.mem, gfn, pfn, writable, P2mType::Ram, client) {
                let _ = self.frames.put_ref(pfn);
                log::error!("d{client}: mapping a supplied page at gfn {gfn:#x} failed: {e:?}");
                break;
            }
            d.mapped_ram += 1;
            if !shared {
                d.owned_ram += 1;
            }
            if let Some(l) = d.lazy.as_mut() {
                l.missing_pages = l.missing_pages.saturating_sub(1);
                l.supplied_pages += 1;
                l.shared_supplied += u64::from(shared);
            }
            mapped += 1;
        }
        self.after_supply(client);
        Ok(mapped)
    }

    /// The frame behind one page of a domain's memory (checked mapped by the caller).
    fn frame_of(&self, id: DomId, gpa: u64) -> Result<Pfn, HvError> {
        let p2m = self.dom(id)?.p2m.as_ref().ok_or(HvError::WrongState)?;
        p2m.lookup(&self.mem, gpa / PAGE_SIZE).map(|l| l.pfn).ok_or(HvError::BadAddress)
    }

    fn fill_frame(&self, pfn: Pfn, src: Option<Pfn>) {
        match src {
            Some(s) => self.mem.copy_frame(pfn, s),
            None => self.mem.zero_frame(pfn),
        }
    }

    /// Lets a client go on if the page it waits for arrived, and ends its lazy phase once
    /// nothing is missing.
    fn after_supply(&mut self, client: DomId) {
        let tsc = self.platform.cycles();
        let Some(d) = self.domains.get_mut(client) else { return };
        let Some(p2m) = d.p2m.as_ref() else { return };
        let Some(l) = d.lazy.as_mut() else { return };
        let arrived = l.wait.is_some_and(|w| p2m.lookup(&self.mem, w.gfn).is_some());
        if arrived {
            l.end_wait(tsc);
            if d.paused == Some(PauseReason::Pager) {
                d.paused = None;
                d.reason = Reason::default();
            }
        }
        if l.missing_pages == 0 {
            l.pager = None;
            log::debug!("d{client} ({}) fully resident", d.name.as_str());
            self.notify_dom0(client);
        }
        if arrived {
            self.make_runnable(client);
            self.arm_pager_deadline();
        }
    }

    /// `pager_fail`: the pager cannot supply `gfn`; the client alone is crashed.
    pub(crate) fn pager_fail(&mut self, caller: DomId, client: u64, gfn: u64, code: u32) -> Result<(), HvError> {
        let client = self.client_of(caller, client)?;
        if gfn >= self.dom(client)?.mem_bytes / PAGE_SIZE {
            return Err(HvError::BadAddress);
        }
        self.crash(client, format_args!("pager d{caller}: page at gpa {:#x} {}", gfn * PAGE_SIZE, pager::fail::name(code)));
        self.arm_pager_deadline();
        Ok(())
    }

    /// `pager_drop`: releases the pool's references under `key`.
    pub(crate) fn pager_drop(&mut self, caller: DomId, key: u64) -> Result<u64, HvError> {
        let role = self.dom_mut(caller)?.pager.as_mut().ok_or(HvError::NotPermitted)?;
        let keys: alloc::vec::Vec<(u64, Gfn)> = role.pool.range((key, 0)..=(key, Gfn::MAX)).map(|(k, _)| *k).collect();
        let mut freed = 0;
        for k in keys {
            let Some(pfn) = self.dom_mut(caller)?.pager.as_mut().and_then(|r| r.pool.remove(&k)) else { continue };
            if self.frames.put_ref(pfn).unwrap_or(false) {
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// `dom_pager_set`: `pager` serves lazy client `client` from now on.
    pub(crate) fn set_pager(&mut self, client: DomId, pager: DomId, timeout_ms: u64) -> Result<(), HvError> {
        let p = self.dom(pager)?;
        if pager == client || p.life != Life::Live || p.is_lazy() {
            return Err(HvError::InvalidArgument);
        }
        if !self.dom(client)?.is_lazy() || self.dom(client)?.life != Life::Live {
            return Err(HvError::WrongState);
        }
        if timeout_ms > 3_600_000 {
            return Err(HvError::InvalidArgument);
        }
        let now = self.platform.now_ns();
        self.dom_mut(pager)?.pager.get_or_insert_with(Box::default);
        let d = self.dom_mut(client)?;
        let l = d.lazy.as_mut().ok_or(HvError::WrongState)?;
        l.pager = Some(pager);
        if timeout_ms != 0 {
            l.timeout_ns = timeout_ms * 1_000_000;
        }
        let waiting = if let Some(w) = l.wait.as_mut() {
            w.posted = false;
            w.since_ns = now;
            true
        } else {
            false
        };
        if d.paused == Some(PauseReason::Pager) {
            d.paused = None;
        }
        d.reason = Reason::default();
        if waiting {
            if let Some(role) = self.domains.get_mut(pager).and_then(|d| d.pager.as_mut()) {
                if !role.backlog.contains(&client) {
                    role.backlog.push_back(client);
                }
            }
            self.flush_backlog(pager);
            self.raise(pager, event::PAGER);
        }
        self.make_runnable(client);
        self.arm_pager_deadline();
        self.notify_dom0(client);
        Ok(())
    }

    /// `pager_status`.
    pub fn lazy_status(&self, client: DomId) -> Result<LazyStatus, HvError> {
        self.dom(client)?.lazy.as_ref().map(|l| l.status(client)).ok_or(HvError::WrongState)
    }

    /// Frames the pagers' pools reference, for the invariant check.
    pub(crate) fn pool_frames(&self) -> impl Iterator<Item = Pfn> + '_ {
        self.domains.iter().filter_map(|d| d.pager.as_deref()).flat_map(|r| r.pool.values().copied())
    }
}

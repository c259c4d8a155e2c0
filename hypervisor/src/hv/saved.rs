//! The mechanism behind save, restore and live checkpoints (the policy, the image format and
//! the store are dom0's): a checkpoint epoch that freezes the state of an instant while the
//! domain runs on, the state an image carries beyond the context and memory
//! ([`SavedState`]) handed out and taken back with every field validated, the guest clock
//! and TSC that continue across restores, and the map of a clone's private pages.

use super::{Hypervisor, p2m_err, HEAP_RESERVE_BYTES, START_INFO_GFN};
use crate::domain::{Domain, FrozenAt, Life};
use crate::mm::frame::{FrameKind, PAGE_SIZE};
use crate::mm::physmem::PhysMem;
use crate::p2m::P2m;
use crate::platform::Platform;
use crate::policy::state::{ContextError, validate_extended};
use crate::sched::DomId;
use crate::vcpu::{Backend, ExtendedState, Vcpu};
use alloc::boxed::Box;
use guest_abi::HvError;
use guest_abi::hypercall::event;
use guest_abi::saved::{BLOCKED_CALL, BLOCKED_HLT, BLOCKED_NONE, ExtendedContext, NO_PARENT, SavedState};
use guest_abi::start_info::{StartFlags, StartInfo};

/// Frames a snapshot is created with: its root table and nothing else.
const SNAPSHOT_FRAMES: u64 = 1;

/// Why [`Hypervisor::restore_state`] refused a state (logged; the caller gets `bad argument`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The x87/SSE or debug registers would fault when loaded.
    Extended(ContextError),
    /// An upcall vector outside 0 and 32..=255.
    UpcallVector,
    /// Event bits the hypervisor does not define.
    EventBits,
    /// A flag field that is neither 0 nor 1.
    Flag,
    /// Reserved fields are not zero.
    Reserved,
}

fn extended_from(e: &ExtendedState) -> ExtendedContext {
    ExtendedContext { fxsave: e.fxsave, dr: e.dr, dr6: e.dr6 }
}

/// Checks a state handed in from outside (a restored image) field by field.
pub fn validate_state(s: &SavedState) -> Result<(), StateError> {
    let ext = ExtendedState { fxsave: s.extended.fxsave, dr: s.extended.dr, dr6: s.extended.dr6, ..ExtendedState::default() };
    validate_extended(&ext).map_err(StateError::Extended)?;
    if s.upcall_vector != 0 && !(32..=255).contains(&s.upcall_vector) {
        return Err(StateError::UpcallVector);
    }
    if s.events_pending & !event::ALL != 0 {
        return Err(StateError::EventBits);
    }
    if s.blocked > BLOCKED_CALL || [s.upcall_in_service, s.has_deadline].iter().any(|&f| f > 1) {
        return Err(StateError::Flag);
    }
    if s.reserved != 0 {
        return Err(StateError::Reserved);
    }
    Ok(())
}

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// The domain's `time()`.
    pub fn guest_time_ns(&self, d: &Domain<B::Vcpu, B::Format>) -> u64 {
        self.platform.now_ns().wrapping_add(d.clock_offset_ns)
    }

    /// What a domain's clock and block timer read now (or at the instant it was frozen).
    pub(crate) fn clock_now(&self, d: &Domain<B::Vcpu, B::Format>) -> FrozenAt {
        if let Some(f) = d.frozen_at {
            return f;
        }
        let now = self.platform.now_ns();
        FrozenAt {
            guest_ns: now.wrapping_add(d.clock_offset_ns),
            guest_tsc: self.platform.cycles().wrapping_add(d.tsc_offset),
            blocked: match (d.blocked, d.wake_returns_events) {
                (false, _) => BLOCKED_NONE,
                (true, false) => BLOCKED_HLT,
                (true, true) => BLOCKED_CALL,
            },
            block_remaining_ns: d.blocked.then_some(d.deadline).flatten().map(|t| t.saturating_sub(now)),
        }
    }

    /// Starts a live checkpoint epoch of a live domain: a new frozen domain `name` holds the
    /// domain's state of this instant, sharing every page with it; the domain itself keeps
    /// running and copies each page it writes from now on, so the snapshot never changes.
    /// Costs one frame and no walk of the domain's memory. Destroying the snapshot ends the
    /// epoch and releases the pages only it still holds.
    pub fn snapshot(&mut self, source: DomId, name: &str) -> Result<DomId, HvError> {
        let s = self.dom(source)?;
        if s.privileged {
            return Err(HvError::NotPermitted);
        }
        if s.life != Life::Live || s.vcpu.is_none() || s.is_lazy() {
            return Err(HvError::WrongState);
        }
        if !name.is_empty() && self.domains.by_name(name).is_some() {
            return Err(HvError::NameTaken);
        }
        if self.platform.heap_free_bytes() < HEAP_RESERVE_BYTES {
            return Err(HvError::OutOfMemory);
        }
        if self.frames.free_frames() < SNAPSHOT_FRAMES {
            return Err(HvError::OutOfMemory);
        }
        let id = self.domains.free_id().ok_or(HvError::TooManyDomains)?;
        let name_buf = self.new_name(name, id)?;
        self.unload_extended(source);
        let clock = self.clock_now(self.dom(source)?);
        let generation = self.next_generation();
        let s = self.domains.get_mut(source).ok_or(HvError::NoSuchDomain)?;
        let (Some(v), Some(p2m)) = (s.vcpu.as_mut(), s.p2m.as_mut()) else { return Err(HvError::WrongState) };
        let ctx = v.context();
        let ext = v.extended().clone();
        let snap_p2m = P2m::clone_of(&mut self.frames, &self.mem, p2m, id).map_err(p2m_err)?;
        // The source's cached translations may still allow writes the epoch must see.
        v.flush_translations();
        let mut d = Box::new(Domain::new(id, name_buf, false, s.mem_bytes, generation));
        d.life = Life::Frozen;
        d.paused = None;
        d.p2m = Some(snap_p2m);
        d.frozen_context = Some(Box::new(ctx));
        d.frozen_extended = Some(Box::new(ext));
        d.frozen_at = Some(clock);
        d.parent = s.parent;
        d.clone_index = s.clone_index;
        d.mapped_ram = s.mapped_ram;
        d.gpa_limit = s.gpa_limit;
        d.events = s.events;
        d.clock_offset_ns = s.clock_offset_ns;
        d.tsc_offset = s.tsc_offset;
        d.snapshot_of = Some(source);
        d.quota_pages = s.quota_pages;
        // The epoch holds the devices of its instant too (a PC domain's APIC, 8259s, UART).
        d.pc = s.pc.clone();
        let parent = s.parent;
        self.domains.insert(d);
        if let Some(t) = parent.and_then(|p| self.domains.get_mut(p)) {
            t.clones += 1;
        }
        log::debug!("d{source}: checkpoint epoch d{id} started");
        Ok(id)
    }

    /// What an image of domain `id` carries besides its context and memory. A live domain
    /// should be paused (or snapshotted) first for the state to be consistent with its memory.
    pub fn saved_state(&mut self, id: DomId) -> Result<SavedState, HvError> {
        self.unload_extended(id);
        let d = self.dom(id)?;
        let ext = match (&d.frozen_extended, &d.vcpu) {
            (Some(e), _) => extended_from(e),
            (None, Some(v)) => extended_from(v.extended()),
            (None, None) => return Err(HvError::WrongState),
        };
        let clock = self.clock_now(d);
        Ok(SavedState {
            extended: ext,
            events_pending: d.events.pending,
            upcall_vector: u32::from(d.events.upcall_vector),
            upcall_in_service: u32::from(d.events.in_service),
            blocked: clock.blocked,
            has_deadline: u32::from(clock.block_remaining_ns.is_some()),
            block_remaining_ns: clock.block_remaining_ns.unwrap_or(0),
            guest_time_ns: clock.guest_ns,
            guest_tsc: clock.guest_tsc,
            domid: id,
            parent: d.parent.unwrap_or(NO_PARENT),
            clone_index: d.clone_index,
            reserved: 0,
            generation: d.generation,
        })
    }

    /// Applies a restored state to a paused live domain whose memory and context were just
    /// written: x87/SSE and debug registers, event registration, the block timer, and a clock
    /// and TSC that continue from the saved instant. Every field is checked first; a refused
    /// one gives `bad argument` and nothing changes. The domain gets a new generation, the
    /// `RESTORED` event and its new identity in its start-of-day page (the saved page said
    /// who it was before). The saved `domid`, `parent` and `generation` are history only.
    pub fn restore_state(&mut self, id: DomId, s: &SavedState) -> Result<(), HvError> {
        let d = self.dom(id)?;
        if d.life != Life::Live || d.paused.is_none() || d.vcpu.is_none() {
            return Err(HvError::WrongState);
        }
        if let Err(e) = validate_state(s) {
            log::info!("d{id}: restored state refused: {e:?}");
            return Err(HvError::InvalidArgument);
        }
        self.patch_identity(id)?;
        self.unload_extended(id);
        let now = self.platform.now_ns();
        let cycles = self.platform.cycles();
        let generation = self.next_generation();
        let d = self.dom_mut(id)?;
        let v = d.vcpu.as_mut().ok_or(HvError::WrongState)?;
        let e = v.extended_mut();
        e.fxsave = s.extended.fxsave;
        e.dr = s.extended.dr;
        e.dr6 = s.extended.dr6;
        d.clock_offset_ns = s.guest_time_ns.wrapping_sub(now);
        d.tsc_offset = s.guest_tsc.wrapping_sub(cycles);
        v.set_tsc_offset(d.tsc_offset);
        d.generation = generation;
        d.restored = true;
        d.events.pending = s.events_pending;
        d.events.upcall_vector = s.upcall_vector as u8;
        d.events.in_service = s.upcall_in_service != 0;
        // A domain saved while blocked is blocked again, and RESTORED wakes it at once the
        // way any event would (a `block` call returns the pending bits); its timeout has no
        // meaning after that, as after any wake-up.
        d.blocked = s.blocked != BLOCKED_NONE;
        d.wake_returns_events = s.blocked == BLOCKED_CALL;
        d.deadline = None;
        self.raise(id, event::RESTORED);
        if let Some(info) = self.dom(id)?.p2m.as_ref().and_then(|p| p.lookup(&self.mem, START_INFO_GFN)) {
            let off = core::mem::offset_of!(StartInfo, generation);
            self.mem.write_bytes(info.pfn, off, &generation.to_le_bytes());
        }
        log::debug!("d{id}: restored, generation {generation}");
        Ok(())
    }

    /// Rewrites the identity fields of a restored domain's start-of-day page (it holds the
    /// saved domain's): its id, name, no parent unless it is a clone, and the RESTORED flag.
    fn patch_identity(&mut self, id: DomId) -> Result<(), HvError> {
        let d = self.dom(id)?;
        let (parent, name) = (d.parent, d.name);
        let p2m = d.p2m.as_ref().ok_or(HvError::WrongState)?;
        let leaf = p2m.lookup(&self.mem, START_INFO_GFN).ok_or(HvError::WrongState)?;
        if self.frames.refs(leaf.pfn) != 1 || self.frames.kind(leaf.pfn) != FrameKind::DomainInfo {
            // Every domain has its own start-of-day page (a clone gets one when cloned).
            return Err(HvError::WrongState);
        }
        let page = leaf.pfn;
        let mut flags = [0u8; 4];
        self.mem.read_bytes(page, core::mem::offset_of!(StartInfo, flags), &mut flags);
        let mut f = StartFlags::from_bits_retain(u32::from_le_bytes(flags)) - StartFlags::PRIVILEGED;
        f |= StartFlags::RESTORED;
        f.set(StartFlags::CLONE, parent.is_some());
        let field = |off: usize, bytes: &[u8]| self.mem.write_bytes(page, off, bytes);
        field(core::mem::offset_of!(StartInfo, flags), &f.bits().to_le_bytes());
        field(core::mem::offset_of!(StartInfo, domid), &id.to_le_bytes());
        field(core::mem::offset_of!(StartInfo, parent), &parent.unwrap_or(NO_PARENT).to_le_bytes());
        field(core::mem::offset_of!(StartInfo, name), &name.bytes());
        Ok(())
    }

    /// Writes one bit per page of `id` from `first_gfn` into `out` (LSB first): set if the
    /// page's frame is not the one its template maps there (a delta image carries those).
    /// A domain without a template has every mapped page private. Returns the pages covered.
    pub fn private_map(&self, id: DomId, first_gfn: u64, out: &mut [u8]) -> Result<u64, HvError> {
        let d = self.dom(id)?;
        let p2m = d.p2m.as_ref().ok_or(HvError::WrongState)?;
        let parent = d.parent.and_then(|p| self.domains.get(p)).and_then(|t| t.p2m.as_ref());
        let pages = d.mem_bytes / PAGE_SIZE;
        if first_gfn > pages {
            return Err(HvError::InvalidArgument);
        }
        let count = ((out.len() as u64) * 8).min(pages - first_gfn);
        out.fill(0);
        for i in 0..count {
            let gfn = first_gfn + i;
            let Some(mine) = p2m.lookup(&self.mem, gfn) else { continue };
            let private = match parent.and_then(|t| t.lookup(&self.mem, gfn)) {
                Some(theirs) => theirs.pfn != mine.pfn,
                None => true,
            };
            if private {
                out[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        Ok(count)
    }
}

//! The hypervisor core: the domain table, lifecycle (create, pause, freeze, clone, crash,
//! destroy), guest-memory access through the P2M, scheduling, and the accounting behind
//! `info`/`list`/`stat`. Generic over the vCPU backend, physical memory and platform, so the
//! whole core (exit handling and hypercalls included) runs on the host against mocks.

mod agent;
mod build;
mod cr_decode;
mod exit;
mod hypercall;
mod pager;
mod pc;
pub mod profile;
mod saved;
mod selfckpt;
mod serial;
pub use saved::{StateError, validate_state};
pub use serial::{ECHO_LINE_MAX_BYTES, SERIAL_DRAIN_BYTES_PER_EXIT};
pub use build::BuildFailure;
#[cfg(test)]
mod tests;

use crate::domain::{Domain, DomainTable, Events, Life, Name, PauseReason, Reason};
use crate::mm::frame::{FrameKind, FrameTable, PAGE_SIZE, Pfn};
use crate::mm::physmem::PhysMem;
use crate::p2m::{EntryFormat, Gfn, P2m, P2mError, P2mType, WriteFault, WritePolicy};
use crate::platform::Platform;
use crate::policy::Policy;
use crate::sched::{DomId, RunQueue};
use crate::vcpu::{Backend, Vcpu, VcpuContext, VcpuError};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt::Write as _;
use guest_abi::HvError;
use guest_abi::domctl::{self, CloneArgs, DomainInfo, DomainStat, HvInfo, NO_DOMAIN};
use guest_abi::hypercall::event;
use guest_abi::layout::{MAX_DOMAIN_MEM_BYTES, MIN_DOMAIN_MEM_BYTES, START_INFO_GPA};
use guest_abi::start_info::{StartFlags, StartInfo};

/// Guest frame of the start-of-day page.
pub const START_INFO_GFN: Gfn = START_INFO_GPA / PAGE_SIZE;
/// Free frames zeroed into the pool per idle step (256 KiB).
pub const PREZERO_BATCH_FRAMES: u64 = 64;
/// Default preemption time slice.
pub const TIMESLICE_NS: u64 = 5_000_000;
/// Longest sleep while idle before the console is polled again.
pub const IDLE_POLL_NS: u64 = 10_000_000;
/// Console input kept for dom0 until it reads it.
pub const INPUT_BUFFER_BYTES: usize = 4096;
/// Heap bytes that must stay free for a new domain to be created.
pub const HEAP_RESERVE_BYTES: usize = 256 * 1024;
/// Suffixes tried to make a default domain name unique.
const DEFAULT_NAME_TRIES: u32 = 64;

/// What the machine is, for `info`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity {
    /// 1 = intel, 2 = amd.
    pub vendor: u32,
    /// 1 = vmx-ept, 2 = svm-npt.
    pub backend: u32,
    /// 1 = bios, 2 = uefi.
    pub firmware: u32,
}

/// Tunables.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Preemption time slice.
    pub timeslice_ns: u64,
    /// Copy unprivileged domains' console output to the serial line as `(dN) ...`.
    pub echo_guests: bool,
    /// Take the exit profile's stamps ([`profile`]).
    pub profile_exits: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self { timeslice_ns: TIMESLICE_NS, echo_guests: false, profile_exits: false }
    }
}

/// What [`Hypervisor::run_once`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A domain ran until its next exit.
    Ran(DomId),
    /// Nothing was runnable; the CPU idled.
    Idle,
    /// No live domain is left.
    NothingLeft,
}

/// How exit handling wants to go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Re-enter the same domain.
    Continue,
    /// Pick the next domain (the current one was preempted, blocked, paused or died).
    Reschedule,
}

/// A violated cross-domain invariant found by [`Hypervisor::check_invariants`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvariantError {
    /// The frame table's own invariants failed.
    Frames(crate::mm::frame::InvariantError),
    /// A frame's reference count differs from the references the P2Ms hold.
    RefCount { pfn: Pfn, counted: u32, recorded: u32 },
    /// A domain's mapped-page counter differs from its P2M.
    Mapped { domid: DomId, counted: u64, recorded: u64 },
    /// The heap could not hold the check's counters.
    NoMemory,
}

/// The hypervisor.
pub struct Hypervisor<B: Backend, M: PhysMem, P: Platform> {
    pub backend: B,
    pub mem: M,
    pub frames: FrameTable<'static>,
    pub platform: P,
    pub domains: DomainTable<B::Vcpu, B::Format>,
    /// What guests may see and set (CPUID allow-list, register rules), from the host CPU.
    pub policy: Policy,
    queue: RunQueue,
    generation: u64,
    identity: Identity,
    settings: Settings,
    input: VecDeque<u8>,
    /// Domains whose console output waits for room in the serial transmit queue.
    echo_waiting: VecDeque<DomId>,
    /// Output is queued for the serial line or waits for room there.
    serial_busy: bool,
    /// Cycle count before which the UART is not offered more bytes (it was full).
    serial_next_try: u64,
    /// The domain whose time slice the armed timer measures.
    timer_owner: Option<DomId>,
    /// The domain whose [`ExtendedState`](crate::vcpu::ExtendedState) (x87/SSE, debug registers, CR2) is in the CPU.
    extended_owner: Option<DomId>,
    dom0: Option<DomId>,
    /// Set when dom0 shuts down: the machine should power off (true = cleanly).
    pub poweroff: Option<bool>,
    /// Seed material for guests' agents.
    entropy: crate::entropy::Entropy,
    /// When the earliest pager answer is due (a lazy client waits).
    pager_deadline: Option<u64>,
    /// The last guest access that found a page of a lazy domain missing (the hypercall that
    /// made it is retried once the page is there).
    missing_hit: core::cell::Cell<Option<(DomId, Gfn)>>,
    /// Guests dom0 allowed a channel, by domain (`selfckpt`).
    channels: alloc::collections::BTreeMap<DomId, selfckpt::Channel>,
    /// When the earliest self-checkpoint epoch is reclaimed.
    epoch_deadline: Option<u64>,
    /// Instructions per phase of the hottest exits, when `profile_exits` is on.
    profile: profile::ExitProfile,
    /// The domain whose last exit asked to go on: it runs next (see [`Self::resumable`]).
    resume: Option<DomId>,
    /// Cycles of each phase of the last clone (`hv_info`).
    last_clone_cycles: [u64; domctl::CLONE_PHASES],
}

/// Whether a task priority holds back an interrupt at `vector`: its priority class
/// (vector / 16) is at or below the TPR (Intel SDM Vol 3A 11.8.3.1, 10.8.6).
pub fn tpr_holds(tpr: u8, vector: u8) -> bool {
    vector >> 4 <= tpr
}

fn p2m_err(e: P2mError) -> HvError {
    match e {
        P2mError::OutOfMemory => HvError::OutOfMemory,
        P2mError::QuotaExceeded => HvError::QuotaExceeded,
        P2mError::ReadOnly(..) => HvError::ReadOnly,
        P2mError::Unmapped(_) | P2mError::BadGfn(_) => HvError::BadAddress,
        P2mError::AlreadyMapped(_) | P2mError::Frame(_) => HvError::InvalidArgument,
    }
}

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// A hypervisor with no domains.
    pub fn new(mut backend: B, mem: M, frames: FrameTable<'static>, platform: P, identity: Identity, settings: Settings) -> Self {
        let policy = Policy::new(&|leaf, sub| platform.cpuid(leaf, sub));
        let platform_seed = platform.entropy_seed();
        log::info!("guest policy: tsc_aux per vcpu {}", if policy.tsc_aux { "yes" } else { "no" });
        backend.apply_policy(&policy);
        backend.set_switch_stamps(settings.profile_exits);
        let profile = profile::ExitProfile::new(settings.profile_exits);
        Self {
            profile,
            resume: None,
            last_clone_cycles: [0; domctl::CLONE_PHASES],
            policy,
            backend,
            mem,
            frames,
            platform,
            domains: DomainTable::with_room_for_all(),
            queue: RunQueue::with_room_for(crate::domain::MAX_DOMAINS as usize),
            generation: 1,
            identity,
            settings,
            input: VecDeque::new(),
            echo_waiting: VecDeque::new(),
            serial_busy: false,
            serial_next_try: 0,
            timer_owner: None,
            extended_owner: None,
            dom0: None,
            poweroff: None,
            entropy: crate::entropy::Entropy::new([platform_seed[0], platform_seed[1], platform_seed[2], platform_seed[3]]),
            pager_deadline: None,
            missing_hit: core::cell::Cell::new(None),
            channels: alloc::collections::BTreeMap::new(),
            epoch_deadline: None,
        }
    }

    fn dom(&self, id: DomId) -> Result<&Domain<B::Vcpu, B::Format>, HvError> {
        self.domains.get(id).ok_or(HvError::NoSuchDomain)
    }

    fn dom_mut(&mut self, id: DomId) -> Result<&mut Domain<B::Vcpu, B::Format>, HvError> {
        self.domains.get_mut(id).ok_or(HvError::NoSuchDomain)
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The privileged control domain, once created.
    pub fn dom0(&self) -> Option<DomId> {
        self.dom0
    }

    /// Domains that are live or frozen (bare mode powers off when none is live).
    pub fn live_domains(&self) -> usize {
        self.domains.iter().filter(|d| d.life == Life::Live).count()
    }

    // ---------------------------------------------------------------- lifecycle

    /// Creates a paused domain with `mem_bytes` of zeroed RAM and an empty start-of-day page.
    /// Nothing is left allocated if it fails.
    pub fn create_domain(&mut self, name: &str, mem_bytes: u64, privileged: bool) -> Result<DomId, HvError> {
        self.create_domain_with(name, mem_bytes, privileged, false)
    }

    /// [`Self::create_domain`]; with `lazy` the domain gets only its start-of-day page (its
    /// pages come from a pager, `make_lazy`), so creating it costs the same at any size.
    pub fn create_domain_with(&mut self, name: &str, mem_bytes: u64, privileged: bool, lazy: bool) -> Result<DomId, HvError> {
        if !(MIN_DOMAIN_MEM_BYTES..=MAX_DOMAIN_MEM_BYTES).contains(&mem_bytes) || mem_bytes % PAGE_SIZE != 0 {
            return Err(HvError::InvalidArgument);
        }
        if !name.is_empty() && self.domains.by_name(name).is_some() {
            return Err(HvError::NameTaken);
        }
        if self.platform.heap_free_bytes() < HEAP_RESERVE_BYTES {
            return Err(HvError::OutOfMemory);
        }
        let id = if privileged && self.dom0.is_none() && self.domains.get(0).is_none() {
            0
        } else {
            self.domains.free_id().ok_or(HvError::TooManyDomains)?
        };
        let pages = mem_bytes / PAGE_SIZE;
        // Data pages plus page tables (one per 512 pages, plus the upper levels).
        let needed = if lazy { 8 } else { pages + pages.div_ceil(512) + 8 };
        if self.frames.free_frames() < needed {
            return Err(HvError::OutOfMemory);
        }
        let name_buf = self.new_name(name, id)?;
        let generation = self.next_generation();
        let mut d = Box::new(Domain::new(id, name_buf, privileged, mem_bytes, generation));
        let p2m = match self.populate(id, if lazy { START_INFO_GFN + 1 } else { pages }, lazy) {
            Ok(p) => p,
            Err(e) => return Err(p2m_err(e)),
        };
        let ram = if lazy { 0 } else { pages - 1 };
        d.mapped_ram = ram;
        d.owned_ram = ram;
        d.gpa_limit = mem_bytes;
        let placeholder = VcpuContext::default();
        let vcpu = match self.backend.create_vcpu(&mut self.frames, &placeholder, p2m.root(), id) {
            Ok(mut v) => {
                if privileged && self.dom0.is_none() {
                    self.backend.pass_through_ports(&mut v);
                }
                v
            }
            Err(VcpuError::OutOfMemory) => {
                let _ = p2m.destroy(&mut self.frames, &self.mem);
                return Err(HvError::OutOfMemory);
            }
        };
        d.p2m = Some(p2m);
        d.vcpu = Some(vcpu);
        self.domains.insert(d);
        if privileged && self.dom0.is_none() {
            self.dom0 = Some(id);
        }
        log::debug!("d{id} created: {} KiB", mem_bytes / 1024);
        Ok(id)
    }

    /// Maps `pages` zeroed RAM pages at gfn 0.. (the start-of-day slot gets an Info page).
    /// With `info_only`, only the start-of-day page (the rest come from a pager).
    fn populate(&mut self, owner: DomId, pages: u64, info_only: bool) -> Result<P2m<B::Format>, P2mError> {
        let mut p2m = P2m::<B::Format>::new(&mut self.frames, &self.mem, owner)?;
        let first = if info_only { START_INFO_GFN } else { 0 };
        for gfn in first..pages {
            let (kind, ty, writable) = if gfn == START_INFO_GFN {
                (FrameKind::DomainInfo, P2mType::Info, false)
            } else {
                (FrameKind::DomainRam, P2mType::Ram, true)
            };
            let step = self
                .frames
                .alloc(kind, owner)
                .map_err(P2mError::from)
                .and_then(|f| {
                    self.mem.zero_frame(f);
                    p2m.map(&mut self.frames, &self.mem, gfn, f, writable, ty, owner).inspect_err(|_| {
                        let _ = self.frames.free(f);
                    })
                });
            if let Err(e) = step {
                let _ = p2m.destroy(&mut self.frames, &self.mem);
                return Err(e);
            }
        }
        Ok(p2m)
    }

    /// Releases a domain's vCPU and memory (it died, crashed or is being destroyed).
    fn release(&mut self, id: DomId) {
        self.pager_gone(id);
        self.channel_gone(id);
        if self.extended_owner == Some(id) {
            // Its registers stay in the CPU until the next vCPU loads all of its own.
            self.extended_owner = None;
        }
        let Some(d) = self.domains.get_mut(id) else { return };
        if let Some(v) = d.vcpu.take() {
            self.backend.destroy_vcpu(&mut self.frames, v);
        }
        let parent = d.parent;
        let had_memory = d.p2m.is_some();
        if let Some(p) = d.p2m.take() {
            if let Err(e) = p.destroy(&mut self.frames, &self.mem) {
                log::error!("d{id}: releasing memory failed: {e:?}");
            }
        }
        d.frozen_context = None;
        d.frozen_extended = None;
        d.mapped_ram = 0;
        d.owned_ram = 0;
        d.queued = false;
        d.blocked = false;
        self.queue.remove(id);
        if self.timer_owner == Some(id) {
            self.timer_owner = None;
        }
        if had_memory {
            if let Some(p) = parent.and_then(|p| self.domains.get_mut(p)) {
                p.clones = p.clones.saturating_sub(1);
            }
        }
    }

    /// Tells dom0 that some domain changed state.
    fn notify_dom0(&mut self, about: DomId) {
        if let Some(d0) = self.dom0 {
            if d0 != about {
                self.raise(d0, event::DOMAIN_STATE);
            }
        }
    }

    /// Stops a domain that misbehaved: memory is released, the record and console stay.
    pub fn crash(&mut self, id: DomId, why: core::fmt::Arguments<'_>) {
        let Some(d) = self.domains.get_mut(id) else { return };
        if d.life != Life::Live {
            return;
        }
        let mut reason = Reason::default();
        let _ = reason.write_fmt(why);
        self.echo_console(id, true);
        let Some(d) = self.domains.get_mut(id) else { return };
        log::warn!("d{id} ({}) crashed: {}", d.name.as_str(), reason.as_str());
        d.reason = reason;
        d.life = Life::Crashed;
        self.release(id);
        self.notify_dom0(id);
    }

    /// A domain shut itself down.
    pub fn exit(&mut self, id: DomId, code: u64) {
        let Some(d) = self.domains.get_mut(id) else { return };
        if d.life != Life::Live {
            return;
        }
        self.echo_console(id, true);
        let Some(d) = self.domains.get_mut(id) else { return };
        log::debug!("d{id} ({}) exited with code {code}", d.name.as_str());
        d.life = Life::Dead(code);
        self.release(id);
        self.notify_dom0(id);
    }

    /// Destroys a domain. A template with clones and dom0 cannot be destroyed.
    pub fn destroy_domain(&mut self, id: DomId) -> Result<(), HvError> {
        let d = self.dom(id)?;
        if Some(id) == self.dom0 {
            return Err(HvError::NotPermitted);
        }
        if d.clones > 0 {
            return Err(HvError::Busy);
        }
        self.echo_console(id, true);
        self.release(id);
        self.domains.remove(id);
        self.notify_dom0(id);
        Ok(())
    }

    /// Pauses a live domain.
    pub fn pause(&mut self, id: DomId, reason: PauseReason) -> Result<(), HvError> {
        let d = self.dom_mut(id)?;
        if d.life != Life::Live {
            return Err(HvError::WrongState);
        }
        if d.paused.is_none() || reason != PauseReason::User {
            d.paused = Some(reason);
        }
        d.queued = false;
        self.queue.remove(id);
        if let Some(dl) = self.dom(id)?.deadline {
            // Keep the timeout running while paused; it fires on unpause.
            self.queue.add_deadline(dl, id);
        }
        self.notify_dom0(id);
        Ok(())
    }

    /// Unpauses a live domain (whatever the pause reason).
    pub fn unpause(&mut self, id: DomId) -> Result<(), HvError> {
        let d = self.dom_mut(id)?;
        if d.life != Life::Live || d.vcpu.is_none() {
            return Err(HvError::WrongState);
        }
        d.paused = None;
        self.make_runnable(id);
        Ok(())
    }

    fn make_runnable(&mut self, id: DomId) {
        if let Some(d) = self.domains.get_mut(id) {
            if d.runnable() && !d.queued {
                d.queued = true;
                self.queue.push_back(id);
            }
        }
    }

    /// The name of a new domain `id`: `name` (whose uniqueness the caller checked first), or
    /// when it is empty `dom{id}`, with a suffix if a domain already took that name.
    fn new_name(&self, name: &str, id: DomId) -> Result<Name, HvError> {
        if !name.is_empty() {
            return Ok(Name::new(name));
        }
        for n in 0..DEFAULT_NAME_TRIES {
            let mut b = Name::new("");
            let _ = if n == 0 { write!(b, "dom{id}") } else { write!(b, "dom{id}-{n}") };
            if self.domains.by_name(b.as_str()).is_none() {
                return Ok(b);
            }
        }
        Err(HvError::NameTaken)
    }

    /// Puts `id`'s extended state in the CPU, first saving the previous owner's.
    fn load_extended(&mut self, id: DomId) {
        if self.extended_owner == Some(id) {
            return;
        }
        if let Some(prev) = self.extended_owner {
            self.unload_extended(prev);
        }
        if let Some(v) = self.domains.get(id).and_then(|d| d.vcpu.as_ref()) {
            self.backend.load_extended(v);
            self.extended_owner = Some(id);
        }
    }

    /// Saves `id`'s extended state from the CPU into its vCPU if the CPU holds it, so it can
    /// be read or replaced there; it is loaded again before `id` next runs.
    fn unload_extended(&mut self, id: DomId) {
        if self.extended_owner != Some(id) {
            return;
        }
        self.extended_owner = None;
        if let Some(v) = self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()) {
            self.backend.save_extended(v);
        }
    }

    /// Sets a live domain's vCPU state. Every field is checked first with the rules a
    /// guest's own writes follow ([`crate::policy::state::validate_context`]); a refused
    /// field gives `bad argument` and nothing is applied.
    pub fn set_context(&mut self, id: DomId, ctx: &VcpuContext) -> Result<(), HvError> {
        self.dom(id)?.vcpu.as_ref().ok_or(HvError::WrongState)?;
        if let Err(e) = crate::policy::state::validate_context(ctx, &self.policy) {
            log::info!("d{id}: vcpu context refused: {e}");
            return Err(HvError::InvalidArgument);
        }
        self.unload_extended(id);
        let d = self.dom_mut(id)?;
        let v = d.vcpu.as_mut().ok_or(HvError::WrongState)?;
        v.set_context(ctx);
        Ok(())
    }

    /// A domain's vCPU state (a template's saved state).
    pub fn context(&mut self, id: DomId) -> Result<VcpuContext, HvError> {
        self.unload_extended(id);
        let d = self.dom_mut(id)?;
        if let Some(c) = &d.frozen_context {
            return Ok(**c);
        }
        Ok(d.vcpu.as_mut().ok_or(HvError::WrongState)?.context())
    }

    /// Renames a domain.
    pub fn set_name(&mut self, id: DomId, name: &str) -> Result<(), HvError> {
        if name.is_empty() || name.len() > domctl::NAME_MAX_BYTES {
            return Err(HvError::InvalidArgument);
        }
        if self.domains.by_name(name).is_some_and(|d| d.id != id) {
            return Err(HvError::NameTaken);
        }
        self.dom(id)?;
        self.domains.rename(id, Name::new(name));
        Ok(())
    }

    /// Turns a live domain into a template. With `self_initiated` the domain called
    /// `freeze_self`: its clones see the hypercall return 0.
    pub fn freeze(&mut self, id: DomId, self_initiated: bool) -> Result<(), HvError> {
        let heap_short = self.platform.heap_free_bytes() < HEAP_RESERVE_BYTES / 2;
        let d = self.dom(id)?;
        if d.privileged {
            return Err(HvError::NotPermitted);
        }
        if d.life != Life::Live || d.is_lazy() {
            return Err(HvError::WrongState);
        }
        // The saved state takes a little heap; the last of the reserve stays untouched.
        if heap_short {
            return Err(HvError::OutOfMemory);
        }
        self.unload_extended(id);
        let clock = crate::domain::FrozenAt { blocked: guest_abi::saved::BLOCKED_NONE, block_remaining_ns: None, ..self.clock_now(self.dom(id)?) };
        let d = self.dom_mut(id)?;
        d.frozen_at = Some(clock);
        let mut v = d.vcpu.take().ok_or(HvError::WrongState)?;
        let mut ctx = v.context();
        if self_initiated {
            ctx.rax = 0;
        }
        d.frozen_context = Some(Box::new(ctx));
        d.frozen_extended = Some(Box::new(v.extended().clone()));
        d.life = Life::Frozen;
        d.blocked = false;
        d.paused = None;
        d.queued = false;
        d.deadline = None;
        let name = d.name;
        self.backend.destroy_vcpu(&mut self.frames, v);
        self.queue.remove(id);
        if self.timer_owner == Some(id) {
            self.timer_owner = None;
        }
        log::debug!("d{id} ({}) frozen into a template", name.as_str());
        self.notify_dom0(id);
        Ok(())
    }

    /// Clones a template: shares its memory read-only, starts from its saved state, gets its
    /// own start-of-day page with its identity and the `CLONED` event. Costs a constant
    /// number of frames whatever the template's size.
    pub fn clone_domain(&mut self, template: DomId, args: &CloneArgs) -> Result<DomId, HvError> {
        let mut stamps = [0u64; domctl::CLONE_PHASES + 1];
        stamps[0] = self.platform.cycles();
        let t = self.dom(template)?;
        if t.life != Life::Frozen {
            return Err(HvError::NotTemplate);
        }
        let name = domctl::name_str(&args.name);
        if !name.is_empty() && self.domains.by_name(name).is_some() {
            return Err(HvError::NameTaken);
        }
        if self.platform.heap_free_bytes() < HEAP_RESERVE_BYTES {
            return Err(HvError::OutOfMemory);
        }
        // Root, three tables to the start-of-day page, the page itself, the control block.
        if self.frames.free_frames() < 8 {
            return Err(HvError::OutOfMemory);
        }
        let id = self.domains.free_id().ok_or(HvError::TooManyDomains)?;
        let (ctx, t_mem, t_mapped, t_limit) = match (&t.frozen_context, &t.p2m) {
            (Some(c), Some(_)) => (**c, t.mem_bytes, t.mapped_ram, t.gpa_limit),
            _ => return Err(HvError::WrongState),
        };
        let name_buf = self.new_name(name, id)?;
        let generation = self.next_generation();
        let t_p2m = match self.domains.get_mut(template).and_then(|t| t.p2m.as_mut()) {
            Some(p) => p,
            None => return Err(HvError::WrongState),
        };
        stamps[1] = self.platform.cycles();
        let mut p2m = P2m::clone_of(&mut self.frames, &self.mem, t_p2m, id).map_err(p2m_err)?;
        stamps[2] = self.platform.cycles();
        // The clone's own start-of-day page, with its identity.
        let installed = self.install_clone_info(&mut p2m, id, template, args.index, generation, name_buf);
        stamps[3] = self.platform.cycles();
        let vcpu = installed.and_then(|_| {
            self.backend.create_vcpu(&mut self.frames, &ctx, p2m.root(), id).map_err(|_| HvError::OutOfMemory)
        });
        stamps[4] = self.platform.cycles();
        let vcpu = match vcpu {
            Ok(v) => v,
            Err(e) => {
                let _ = p2m.destroy(&mut self.frames, &self.mem);
                return Err(e);
            }
        };
        // A clone starts from the template's saved registers and keeps its event registration:
        // if it asked for upcalls, CLONED arrives as one as soon as it can take an interrupt.
        let mut vcpu = vcpu;
        let (t_events, clock_offset_ns, tsc_offset, t_pc) = match self.domains.get(template) {
            Some(t) => {
                if let Some(ext) = t.frozen_extended.as_deref() {
                    *vcpu.extended_mut() = ext.clone();
                }
                (t.events, t.clock_offset_ns, t.tsc_offset, t.pc.clone())
            }
            None => (Events::default(), 0, 0, None),
        };
        // The clone's clock runs on from the template's (a restored template's included).
        vcpu.set_tsc_offset(tsc_offset);
        let mut d = Box::new(Domain::new(id, name_buf, false, t_mem, generation));
        d.p2m = Some(p2m);
        d.vcpu = Some(vcpu);
        d.parent = Some(template);
        d.clone_index = args.index;
        d.quota_pages = if args.quota_pages == domctl::QUOTA_DEFAULT { t_mem / PAGE_SIZE } else { args.quota_pages };
        d.mapped_ram = t_mapped;
        d.owned_ram = 0;
        d.gpa_limit = t_limit;
        d.paused = (args.flags & domctl::CLONE_PAUSED != 0).then_some(PauseReason::User);
        d.events = Events { pending: event::CLONED, ..t_events };
        d.clock_offset_ns = clock_offset_ns;
        d.tsc_offset = tsc_offset;
        // The clone's devices continue from the template's (a parked agent's UART included).
        d.pc = t_pc;
        self.domains.insert(d);
        if let Some(t) = self.domains.get_mut(template) {
            t.clones += 1;
        }
        self.make_runnable(id);
        stamps[5] = self.platform.cycles();
        for (phase, pair) in self.last_clone_cycles.iter_mut().zip(stamps.windows(2)) {
            *phase = pair[1].wrapping_sub(pair[0]);
        }
        Ok(id)
    }

    fn install_clone_info(
        &mut self,
        p2m: &mut P2m<B::Format>,
        id: DomId,
        template: DomId,
        index: u32,
        generation: u64,
        name: Name,
    ) -> Result<(), HvError> {
        let old = p2m.lookup(&self.mem, START_INFO_GFN).ok_or(HvError::WrongState)?;
        let page = self.frames.alloc(FrameKind::DomainInfo, id).map_err(|_| HvError::OutOfMemory)?;
        self.mem.copy_frame(page, old.pfn);
        // Patch the identity fields in place; the rest (command line, memory size, modules)
        // is the template's.
        let mut flags = [0u8; 4];
        self.mem.read_bytes(page, core::mem::offset_of!(StartInfo, flags), &mut flags);
        let flags = ((StartFlags::from_bits_retain(u32::from_le_bytes(flags)) | StartFlags::CLONE) - StartFlags::PRIVILEGED).bits();
        let field = |off: usize, bytes: &[u8]| self.mem.write_bytes(page, off, bytes);
        field(core::mem::offset_of!(StartInfo, flags), &flags.to_le_bytes());
        field(core::mem::offset_of!(StartInfo, domid), &id.to_le_bytes());
        field(core::mem::offset_of!(StartInfo, parent), &template.to_le_bytes());
        field(core::mem::offset_of!(StartInfo, clone_index), &index.to_le_bytes());
        field(core::mem::offset_of!(StartInfo, generation), &generation.to_le_bytes());
        field(core::mem::offset_of!(StartInfo, name), &name.bytes());
        match p2m.replace(&mut self.frames, &self.mem, START_INFO_GFN, page, false, P2mType::Info, id) {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = self.frames.free(page);
                Err(p2m_err(e))
            }
        }
    }

    // ---------------------------------------------------------------- guest memory

    /// Copies `out.len()` bytes from a domain's guest-physical memory. Every page of the range
    /// must be mapped (RAM, start-of-day page or ROM).
    pub fn read_guest(&self, id: DomId, gpa: u64, out: &mut [u8]) -> Result<(), HvError> {
        let d = self.dom(id)?;
        let p2m = d.p2m.as_ref().ok_or(HvError::WrongState)?;
        let end = gpa.checked_add(out.len() as u64).ok_or(HvError::BadAddress)?;
        let mut cursor = gpa;
        let mut done = 0;
        while cursor < end {
            let leaf = p2m.lookup(&self.mem, cursor / PAGE_SIZE).ok_or_else(|| self.missing(d, cursor / PAGE_SIZE))?;
            let offset = (cursor % PAGE_SIZE) as usize;
            let n = ((PAGE_SIZE as usize) - offset).min(out.len() - done);
            self.mem.read_bytes(leaf.pfn, offset, &mut out[done..done + n]);
            done += n;
            cursor += n as u64;
        }
        Ok(())
    }

    /// The error for an access to unmapped `gfn` of `d`: [`HvError::NotResident`] (and the
    /// page noted, so a hypercall of `d` itself can wait for it) if `d` is being restored
    /// lazily and the page is its RAM.
    fn missing(&self, d: &Domain<B::Vcpu, B::Format>, gfn: Gfn) -> HvError {
        if d.is_lazy() && gfn < d.mem_bytes / PAGE_SIZE {
            self.missing_hit.set(Some((d.id, gfn)));
            HvError::NotResident
        } else {
            HvError::BadAddress
        }
    }

    /// Checks that `[gpa, gpa + len)` is mapped in a domain (for pointer arguments). Ranges
    /// reaching beyond the domain's highest mapped address fail at once, whatever their length.
    pub fn check_range(&self, id: DomId, gpa: u64, len: u64) -> Result<(), HvError> {
        let d = self.dom(id)?;
        let p2m = d.p2m.as_ref().ok_or(HvError::WrongState)?;
        let end = gpa.checked_add(len).ok_or(HvError::BadAddress)?;
        if end > d.gpa_limit {
            return Err(HvError::BadAddress);
        }
        if len == 0 {
            return Ok(());
        }
        for gfn in gpa / PAGE_SIZE..=(end - 1) / PAGE_SIZE {
            p2m.lookup(&self.mem, gfn).ok_or_else(|| self.missing(d, gfn))?;
        }
        Ok(())
    }

    /// Copies `data` into a domain's memory, resolving copy-on-write on the way. Guest RAM
    /// only, unless `privileged` (the hypervisor or dom0 filling a start-of-day page).
    /// The whole range is checked before anything is written.
    pub fn write_guest(&mut self, id: DomId, gpa: u64, data: &[u8], privileged: bool) -> Result<(), HvError> {
        self.check_writable(id, gpa, data.len() as u64, privileged)?;
        let mut cursor = gpa;
        let mut done = 0;
        while done < data.len() {
            let pfn = self.writable_frame(id, cursor / PAGE_SIZE, privileged)?;
            let offset = (cursor % PAGE_SIZE) as usize;
            let n = ((PAGE_SIZE as usize) - offset).min(data.len() - done);
            self.mem.write_bytes(pfn, offset, &data[done..done + n]);
            done += n;
            cursor += n as u64;
        }
        Ok(())
    }

    /// Checks that `[gpa, gpa + len)` may be written in a domain: every page mapped, guest
    /// RAM (or, if `privileged`, its start-of-day page), the domain not frozen.
    pub fn check_writable(&self, id: DomId, gpa: u64, len: u64, privileged: bool) -> Result<(), HvError> {
        let d = self.dom(id)?;
        if d.life == Life::Frozen {
            return Err(HvError::ReadOnly);
        }
        let p2m = d.p2m.as_ref().ok_or(HvError::WrongState)?;
        let end = gpa.checked_add(len).ok_or(HvError::BadAddress)?;
        if len > 0 {
            for gfn in gpa / PAGE_SIZE..=(end - 1) / PAGE_SIZE {
                let leaf = p2m.lookup(&self.mem, gfn).ok_or_else(|| self.missing(d, gfn))?;
                match leaf.ty {
                    P2mType::Ram => {}
                    P2mType::Info if privileged => {}
                    _ => return Err(HvError::ReadOnly),
                }
            }
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` in domain `from` to `dst` in domain `to`, frame to frame
    /// (no bounce buffer), resolving copy-on-write in `to`; the destination is checked whole
    /// first, so a refused copy writes nothing.
    pub fn copy_guest(&mut self, from: DomId, src: u64, to: DomId, dst: u64, len: u64, privileged: bool) -> Result<(), HvError> {
        self.check_range(from, src, len)?;
        self.check_writable(to, dst, len, privileged)?;
        let mut done = 0u64;
        while done < len {
            let (s, t) = (src + done, dst + done);
            let n = (PAGE_SIZE - s % PAGE_SIZE).min(PAGE_SIZE - t % PAGE_SIZE).min(len - done);
            let src_pfn = {
                let p2m = self.dom(from)?.p2m.as_ref().ok_or(HvError::WrongState)?;
                p2m.lookup(&self.mem, s / PAGE_SIZE).ok_or(HvError::BadAddress)?.pfn
            };
            let dst_pfn = self.writable_frame(to, t / PAGE_SIZE, privileged)?;
            self.mem.copy_bytes(dst_pfn, (t % PAGE_SIZE) as usize, src_pfn, (s % PAGE_SIZE) as usize, n as usize);
            done += n;
        }
        Ok(())
    }

    /// The frame backing `gfn`, made writable for this domain (copying it if shared).
    fn writable_frame(&mut self, id: DomId, gfn: Gfn, privileged: bool) -> Result<Pfn, HvError> {
        let d = self.domains.get_mut(id).ok_or(HvError::NoSuchDomain)?;
        let quota_left = d.quota_left();
        let p2m = d.p2m.as_mut().ok_or(HvError::WrongState)?;
        // A private start-of-day page is written in place: its mapping stays read-only.
        let frames = &self.frames;
        let ready = |l: &crate::p2m::Leaf| l.writable || (l.ty == P2mType::Info && privileged && frames.refs(l.pfn) == 1);
        if let Some(l) = p2m.lookup(&self.mem, gfn).filter(ready) {
            return Ok(l.pfn);
        }
        let policy = WritePolicy { owner: id, quota_left, privileged };
        let outcome = p2m.write_fault(&mut self.frames, &self.mem, gfn, policy).map_err(p2m_err)?;
        let ty = p2m.lookup(&self.mem, gfn).map(|l| l.ty);
        self.account_write(id, outcome, ty);
        let p2m = self.dom(id)?.p2m.as_ref().ok_or(HvError::WrongState)?;
        p2m.lookup(&self.mem, gfn).map(|l| l.pfn).ok_or(HvError::BadAddress)
    }

    /// Updates counters after a write fault and flushes stale translations.
    fn account_write(&mut self, id: DomId, outcome: WriteFault, ty: Option<P2mType>) {
        let Some(d) = self.domains.get_mut(id) else { return };
        match outcome {
            WriteFault::Copied { tables_copied } => {
                d.counters.cow_faults += 1;
                d.owned_tables += u64::from(tables_copied);
                if ty == Some(P2mType::Ram) {
                    d.owned_ram += 1;
                }
            }
            WriteFault::Granted { tables_copied } => {
                d.counters.wp_faults += 1;
                d.owned_tables += u64::from(tables_copied);
            }
            WriteFault::Spurious => {}
        }
        if outcome.needs_flush() {
            if let Some(v) = d.vcpu.as_mut() {
                v.flush_translations();
            }
        }
    }

    // ---------------------------------------------------------------- events and scheduling

    /// Sets event bits on a domain and wakes it if it is blocked.
    pub fn raise(&mut self, id: DomId, bits: u64) {
        let Some(d) = self.domains.get_mut(id) else { return };
        if d.life != Life::Live {
            return;
        }
        d.events.pending |= bits;
        if d.blocked {
            self.wake(id);
        }
    }

    fn wake(&mut self, id: DomId) {
        let Some(d) = self.domains.get_mut(id) else { return };
        d.blocked = false;
        d.deadline = None;
        let pending = d.events.pending;
        if core::mem::take(&mut d.wake_returns_events) {
            if let Some(v) = d.vcpu.as_mut() {
                v.regs().rax = pending;
            }
        }
        self.queue.clear_deadline(id);
        self.make_runnable(id);
    }

    /// Blocks a domain until an event (or `deadline_ns`). With `returns_events` (the `block`
    /// hypercall) RAX receives the pending bits on wake-up.
    fn block(&mut self, id: DomId, deadline_ns: Option<u64>, returns_events: bool) {
        let Some(d) = self.domains.get_mut(id) else { return };
        d.blocked = true;
        d.deadline = deadline_ns;
        d.queued = false;
        d.wake_returns_events = returns_events;
        self.queue.remove(id);
        if let Some(t) = deadline_ns {
            self.queue.add_deadline(t, id);
        }
    }

    fn wake_expired(&mut self, now_ns: u64) {
        for id in self.queue.expired(now_ns) {
            self.raise(id, event::TIMER);
        }
    }

    /// Moves typed bytes into dom0's input buffer and tells dom0.
    pub fn poll_console(&mut self) {
        let mut got = false;
        while let Some(b) = self.platform.console_poll() {
            if self.input.len() >= INPUT_BUFFER_BYTES {
                self.input.pop_front();
            }
            self.input.push_back(b);
            got = true;
        }
        if got {
            if let Some(d0) = self.dom0 {
                self.raise(d0, event::CONSOLE_INPUT);
            }
        }
    }

    /// Injects a pending event upcall if the guest can take it now, or asks for an exit
    /// once it can. An upcall whose priority class the guest's TPR masks waits for the CR8
    /// write that lowers it (those exit on both vendors).
    fn prepare_entry(&mut self, id: DomId) {
        if self.domains.get(id).is_some_and(|d| d.pc.is_some()) {
            self.pc_prepare_entry(id);
        }
        let Some(d) = self.domains.get_mut(id) else { return };
        let ev = d.events;
        let Some(v) = d.vcpu.as_mut() else { return };
        if ev.pending != 0 && ev.upcall_vector != 0 && !ev.in_service && !tpr_holds(v.tpr(), ev.upcall_vector) {
            if v.interruptible() {
                v.inject_interrupt(ev.upcall_vector);
                d.events.in_service = true;
            } else {
                v.set_interrupt_window(true);
            }
        }
    }

    /// Runs one step: the next runnable domain until its next exit, or an idle wait.
    pub fn run_once(&mut self) -> Step {
        if let Some(due) = self.pager_deadline {
            let now = self.platform.now_ns();
            if due <= now {
                self.expire_pager_waits(now);
            }
        }
        if let Some(due) = self.epoch_deadline {
            let now = self.platform.now_ns();
            if due <= now {
                self.expire_epochs(now);
            }
        }
        if let Some(deadline) = self.queue.next_deadline() {
            let now = self.platform.now_ns();
            if deadline <= now {
                self.wake_expired(now);
            }
        }
        let resumed = self.resume.take().and_then(|id| self.resumable(id));
        let Some(id) = resumed.or_else(|| self.pick()) else {
            let now = self.platform.now_ns();
            if self.live_domains() == 0 {
                return Step::NothingLeft;
            }
            // Output drains a bounded amount per step, so a timer deadline is never missed for
            // it; while the UART keeps taking bytes there is no point in sleeping.
            if self.drain_serial(SERIAL_DRAIN_BYTES_PER_EXIT) && self.serial_busy {
                return Step::Idle;
            }
            let poll = if self.serial_busy { serial::SERIAL_RETRY_NS } else { IDLE_POLL_NS };
            let until = self.queue.next_deadline().unwrap_or(u64::MAX).min(self.pager_deadline.unwrap_or(u64::MAX)).min(self.epoch_deadline.unwrap_or(u64::MAX)).min(now + poll);
            // Idle time zeroes free frames ahead of need (clones' tables and control blocks),
            // a batch at a time until the pool is full or the wait is over.
            let mem = &self.mem;
            while self.frames.prezero(PREZERO_BATCH_FRAMES, |p| mem.zero_frame(p)) > 0 && self.platform.now_ns() < until {}
            self.timer_owner = None;
            self.platform.idle(until);
            self.poll_console();
            return Step::Idle;
        };
        if resumed.is_none() {
            self.enter_prepared(id);
        }
        self.enter(id)
    }

    /// Whether `id`, whose last exit asked to go on, can be entered again at once: it is
    /// still runnable, was not queued meanwhile, and nothing needs doing before its entry
    /// (no upcall to inject, no emulated platform whose timer or interrupts need a look, the
    /// slice timer and extended state already its own). Otherwise it goes to the front of
    /// the queue, which is where [`Self::run_once`] would have put it.
    fn resumable(&mut self, id: DomId) -> Option<DomId> {
        let d = self.domains.get_mut(id)?;
        if !d.runnable() || d.queued {
            return None;
        }
        let ev = d.events;
        let quiet = d.pc.is_none()
            && !(ev.pending != 0 && ev.upcall_vector != 0 && !ev.in_service)
            && self.timer_owner == Some(id)
            && self.extended_owner == Some(id);
        if quiet {
            return Some(id);
        }
        d.queued = true;
        self.queue.push_front(id);
        None
    }

    /// What the entry of a picked domain needs: pending upcalls, the slice or guest timer,
    /// its extended state.
    fn enter_prepared(&mut self, id: DomId) {
        self.prepare_entry(id);
        // A guest APIC timer due before the end of the slice is armed instead of it.
        let guest_timer = self.pc_timer_ns(id);
        if self.timer_owner != Some(id) || guest_timer.is_some() {
            let khz = self.platform.tsc_khz();
            let slice = match guest_timer {
                Some(ns) => self.settings.timeslice_ns.min(ns.max(pc::MIN_GUEST_TIMER_NS)),
                None => self.settings.timeslice_ns,
            };
            let own = match self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()) {
                Some(v) => self.backend.arm_preemption(v, slice, khz),
                None => false,
            };
            if !own {
                self.platform.arm_timer(slice);
            }
            self.timer_owner = Some(id);
        }
        self.load_extended(id);
    }

    /// Runs `id` until its next exit and handles the exit.
    fn enter(&mut self, id: DomId) -> Step {
        if self.profile.on { self.enter_as::<true>(id) } else { self.enter_as::<false>(id) }
    }

    /// [`Self::enter`], with the exit profile's stamps when `PROFILE` (a separate copy, so
    /// the path without them carries none of their tests).
    #[inline(always)]
    fn enter_as<const PROFILE: bool>(&mut self, id: DomId) -> Step {
        let start = self.platform.cycles();
        let exit = match self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()) {
            Some(v) => self.backend.run(v),
            None => return Step::Ran(id),
        };
        let arrived = self.platform.cycles();
        if let Some(d) = self.domains.get_mut(id) {
            d.counters.exits += 1;
            d.counters.cpu_cycles += arrived.wrapping_sub(start);
        }
        let mut profiled = None;
        let mut stamps = profile::ExitStamps::default();
        if PROFILE {
            stamps.booked = self.platform.cycles();
            stamps.arrived = arrived;
            profiled = match exit {
                crate::vcpu::Exit::Hypercall if self.vcpu(id).is_some_and(|v| v.regs().rax == guest_abi::hypercall::nr::NULL) => {
                    Some(profile::Profiled::NullHypercall)
                }
                crate::vcpu::Exit::NestedPageFault { .. } => Some(profile::Profiled::SecondLevelFault),
                _ => None,
            };
            let (entered, switched) = self.backend.switch_stamps().unwrap_or((start, arrived));
            stamps.switched = switched;
            self.profile.entered(start, entered);
            stamps.dispatched = self.platform.cycles();
        }
        let next = self.handle_exit(id, exit);
        if PROFILE {
            stamps.handled = self.platform.cycles();
            self.profile.handled(profiled, stamps);
        }
        self.drain_serial(SERIAL_DRAIN_BYTES_PER_EXIT);
        match next {
            // It runs next: the next step enters it again at once if nothing needs doing.
            Next::Continue => self.resume = Some(id),
            Next::Reschedule => {
                if self.timer_owner == Some(id) {
                    self.timer_owner = None;
                }
                self.make_runnable(id);
            }
        }
        Step::Ran(id)
    }

    /// The exit profile so far.
    pub fn exit_profile(&self) -> &profile::ExitProfile {
        &self.profile
    }

    fn pick(&mut self) -> Option<DomId> {
        while let Some(id) = self.queue.pop() {
            if let Some(d) = self.domains.get_mut(id) {
                d.queued = false;
                if d.runnable() {
                    return Some(id);
                }
            }
        }
        None
    }

    // ---------------------------------------------------------------- accounting

    /// `hv_info`.
    pub fn info(&self) -> HvInfo {
        let st = self.frames.stats();
        let kib = |frames: u64| frames * PAGE_SIZE / 1024;
        let mapped: u64 = self.domains.iter().map(|d| d.mapped_ram).sum();
        let ram_frames = st.get(FrameKind::DomainRam);
        let template_frames: u64 =
            self.domains.iter().filter(|d| d.life == Life::Frozen).map(|d| d.owned_ram).sum();
        HvInfo {
            vendor: self.identity.vendor,
            backend: self.identity.backend,
            total_kib: kib(st.usable),
            free_kib: kib(st.get(FrameKind::Free)),
            shared_kib: kib(template_frames),
            pagetable_kib: kib(st.get(FrameKind::PageTable)),
            hypervisor_kib: kib(st.get(FrameKind::Hypervisor) + st.get(FrameKind::DomainInfo)),
            domains: self.domains.len() as u64,
            templates: self.domains.iter().filter(|d| d.life == Life::Frozen).count() as u64,
            saved_kib: kib(mapped.saturating_sub(ram_frames)),
            heap_free_kib: self.platform.heap_free_bytes() as u64 / 1024,
            tsc_khz: self.platform.tsc_khz(),
            firmware: self.identity.firmware,
            _pad: 0,
            last_clone_cycles: self.last_clone_cycles,
            zeroed_kib: kib(self.frames.zeroed_frames()),
        }
    }

    /// `dom_info`.
    pub fn domain_info(&self, id: DomId) -> Result<DomainInfo, HvError> {
        let d = self.dom(id)?;
        let mut flags = 0;
        if d.privileged {
            flags |= domctl::DomainFlags::PRIVILEGED.bits();
        }
        if d.parent.is_some() {
            flags |= domctl::DomainFlags::CLONE.bits();
        }
        if d.pc.is_some() {
            flags |= domctl::DomainFlags::PC_PLATFORM.bits();
        }
        if d.is_lazy() && d.life == Life::Live {
            flags |= domctl::DomainFlags::LAZY.bits();
        }
        Ok(DomainInfo {
            domid: id,
            state: d.state_code(),
            pause_reason: d.paused.map(|p| p.code()).unwrap_or(domctl::pause::NONE),
            flags,
            parent: d.parent.unwrap_or(NO_DOMAIN),
            clones: d.clones,
            mem_bytes: d.mem_bytes,
            private_pages: d.private_pages(),
            shared_pages: d.shared_pages(),
            exit_code: if let Life::Dead(c) = d.life { c } else { 0 },
            cpu_ns: (d.counters.cpu_cycles as u128 * 1_000_000 / self.platform.tsc_khz().max(1) as u128) as u64,
            name: d.name.bytes(),
            reason: d.reason.bytes(),
        })
    }

    /// `dom_stat`.
    pub fn domain_stat(&self, id: DomId) -> Result<DomainStat, HvError> {
        let d = self.dom(id)?;
        let mut tables = 0u64;
        if let Some(p) = &d.p2m {
            p.visit(&self.mem, &mut |_| false, &mut |_t, level, e| {
                if level > 0 && self.frames.owner(B::Format::pfn(e)) == id {
                    tables += 1;
                }
            });
            if self.frames.owner(p.root()) == id {
                tables += 1;
            }
        }
        let control_block = if d.vcpu.is_some() { PAGE_SIZE } else { 0 };
        let info_page = if d.p2m.is_some() { PAGE_SIZE } else { 0 };
        let extended = usize::from(d.vcpu.is_some()) + usize::from(d.frozen_extended.is_some());
        let heap = core::mem::size_of::<Domain<B::Vcpu, B::Format>>()
            + d.console.heap_bytes()
            + extended * core::mem::size_of::<crate::vcpu::ExtendedState>();
        Ok(DomainStat {
            domid: id,
            _pad: 0,
            cow_faults: d.counters.cow_faults,
            wp_faults: d.counters.wp_faults,
            private_pages: d.private_pages(),
            quota_pages: if d.parent.is_some() { d.quota_pages } else { domctl::QUOTA_DEFAULT },
            quota_used_pages: d.quota_used(),
            quota_table_pages: d.owned_tables,
            shared_pages: d.shared_pages(),
            pagetable_pages: tables,
            exits: d.counters.exits,
            hypercalls: d.counters.hypercalls,
            overhead_bytes: control_block + info_page + tables * PAGE_SIZE + heap as u64,
            generation: d.generation,
        })
    }

    /// Recounts every reference all P2Ms hold and compares with the frame table, and checks
    /// each domain's mapped-page counter. O(memory); a debug and test check.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        self.frames.check().map_err(InvariantError::Frames)?;
        // One counter per frame and one bit per frame, allocated fallibly: a check asked for
        // when the heap is short fails with an error instead of stopping the machine.
        let frames = self.frames.len() as usize;
        let mut expected: Vec<u32> = Vec::new();
        let mut seen: Vec<u64> = Vec::new();
        expected.try_reserve_exact(frames).map_err(|_| InvariantError::NoMemory)?;
        seen.try_reserve_exact(frames.div_ceil(64)).map_err(|_| InvariantError::NoMemory)?;
        expected.resize(frames, 0);
        seen.resize(frames.div_ceil(64), 0);
        let count = |expected: &mut Vec<u32>, pfn: u64| {
            if let Some(c) = expected.get_mut(pfn as usize) {
                *c += 1;
            }
        };
        for d in self.domains.iter() {
            let Some(p) = &d.p2m else { continue };
            count(&mut expected, p.root().0);
            let mut first_visit = |t: Pfn| {
                let (word, bit) = ((t.0 / 64) as usize, t.0 % 64);
                let Some(w) = seen.get_mut(word) else { return true };
                let known = *w & (1 << bit) != 0;
                *w |= 1 << bit;
                known
            };
            p.visit(&self.mem, &mut first_visit, &mut |_t, _level, e| count(&mut expected, B::Format::pfn(e).0));
            let mut ram = 0u64;
            p.visit(&self.mem, &mut |_| false, &mut |_t, level, e| {
                if level == 0 && B::Format::p2m_type(e) == P2mType::Ram {
                    ram += 1;
                }
            });
            if ram != d.mapped_ram {
                return Err(InvariantError::Mapped { domid: d.id, counted: ram, recorded: d.mapped_ram });
            }
        }
        for pfn in self.pool_frames() {
            count(&mut expected, pfn.0);
        }
        for n in 0..self.frames.len() {
            let pfn = Pfn(n);
            if matches!(self.frames.kind(pfn), FrameKind::PageTable | FrameKind::DomainRam | FrameKind::DomainInfo) {
                let counted = expected.get(n as usize).copied().unwrap_or(0);
                let recorded = self.frames.refs(pfn);
                if counted != recorded {
                    return Err(InvariantError::RefCount { pfn, counted, recorded });
                }
            }
        }
        Ok(())
    }
}

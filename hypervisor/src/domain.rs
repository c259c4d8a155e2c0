//! A domain: identity, lifecycle, its vCPU and P2M, accounting, events and console; and the
//! table of all domains indexed by id.

use crate::console::ConsoleRing;
use crate::p2m::{EntryFormat, P2m};
use crate::sched::DomId;
use crate::vcpu::ExtendedState;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use guest_abi::domctl::{NAME_MAX_BYTES, REASON_MAX_BYTES, pause, state};
use guest_abi::vcpu::VcpuContext;

/// Most domains at once (ids 0..MAX_DOMAINS; VMX VPIDs are 16-bit).
pub const MAX_DOMAINS: u32 = 65_535;

/// Where a domain is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Has a vCPU and memory; may run.
    Live,
    /// A template: never runs again; clones start from its saved context.
    Frozen,
    /// Shut down with a code; memory released, record kept until destroyed.
    Dead(u64),
    /// Stopped by the hypervisor; memory released, record kept until destroyed.
    Crashed,
}

/// Why a live domain is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseReason {
    /// By dom0 (or created and not yet started).
    User,
    /// A copy-on-write copy would exceed its quota.
    Quota,
    /// The host ran out of frames for a copy-on-write copy.
    NoMemory,
    /// Its agent asked to be parked at the freeze point (`guest_abi::agent`).
    Parked,
    /// Restored lazily, and its pager died or did not answer in time.
    Pager,
}

impl PauseReason {
    /// ABI code.
    pub fn code(self) -> u32 {
        match self {
            Self::User => pause::USER,
            Self::Quota => pause::QUOTA,
            Self::NoMemory => pause::NOMEM,
            Self::Parked => pause::PARKED,
            Self::Pager => pause::PAGER,
        }
    }
}

/// A short text kept inline (names, crash reasons).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct InlineStr<const N: usize> {
    bytes: [u8; N],
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self { bytes: [0; N] }
    }
}

impl<const N: usize> InlineStr<N> {
    /// Copies `s`, truncated at a character boundary to `N` bytes.
    pub fn new(s: &str) -> Self {
        let mut n = s.len().min(N);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let mut bytes = [0; N];
        bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        Self { bytes }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        guest_abi::domctl::name_str(&self.bytes)
    }

    /// The NUL-padded bytes.
    pub fn bytes(&self) -> [u8; N] {
        self.bytes
    }
}

impl<const N: usize> core::fmt::Write for InlineStr<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let used = self.bytes.iter().position(|&b| b == 0).unwrap_or(N);
        let mut n = s.len().min(N - used);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes[used..used + n].copy_from_slice(&s.as_bytes()[..n]);
        Ok(())
    }
}

/// A domain name.
pub type Name = InlineStr<NAME_MAX_BYTES>;
/// A crash or pause reason.
pub type Reason = InlineStr<REASON_MAX_BYTES>;

/// Event and interrupt-delivery state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Events {
    /// Pending event bits (`guest_abi::hypercall::event`).
    pub pending: u64,
    /// Upcall vector (0 = the guest polls).
    pub upcall_vector: u8,
    /// An upcall was injected and not yet acknowledged.
    pub in_service: bool,
}

/// Counters reported by `dom_stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub cow_faults: u64,
    pub wp_faults: u64,
    pub exits: u64,
    pub hypercalls: u64,
    /// Guest execution time in platform cycles (TSC ticks).
    pub cpu_cycles: u64,
    /// Time slices that ended with the domain still runnable.
    pub preemptions: u64,
}

/// One domain.
pub struct Domain<V, F: EntryFormat> {
    pub id: DomId,
    pub name: Name,
    /// May make control hypercalls.
    pub privileged: bool,
    pub life: Life,
    /// Waiting in HLT or `block`.
    pub blocked: bool,
    /// Paused, and why.
    pub paused: Option<PauseReason>,
    /// In the run queue.
    pub queued: bool,
    /// The vCPU while live.
    pub vcpu: Option<V>,
    /// The second-level tables while live or frozen.
    pub p2m: Option<P2m<F>>,
    /// A template's saved vCPU state (clones start from it).
    pub frozen_context: Option<Box<VcpuContext>>,
    /// A template's saved x87/SSE, debug-register and CR2 state (clones start from it).
    pub frozen_extended: Option<Box<ExtendedState>>,
    /// Guest RAM size.
    pub mem_bytes: u64,
    /// End of the highest guest-physical range mapped (RAM, or dom0's images).
    pub gpa_limit: u64,
    /// Template this domain was cloned from.
    pub parent: Option<DomId>,
    /// Clones (live or frozen) still sharing this template's memory.
    pub clones: u32,
    /// Clone index (clones only).
    pub clone_index: u32,
    /// Changes on every clone and restore.
    pub generation: u64,
    /// Private RAM pages a clone may own ([`u64::MAX`] = unlimited).
    pub quota_pages: u64,
    /// RAM frames this domain allocated (populated or copied on write).
    pub owned_ram: u64,
    /// Second-level tables its writes and `mem_protect` calls made it copy (charged to its
    /// quota like the pages; the tables a clone is created with are not).
    pub owned_tables: u64,
    /// RAM pages it maps.
    pub mapped_ram: u64,
    pub events: Events,
    /// Wake-up time while blocked with a timeout.
    pub deadline: Option<u64>,
    /// Blocked in the `block` hypercall, which returns the pending events in RAX.
    pub wake_returns_events: bool,
    pub console: ConsoleRing,
    /// Console offset up to which output has been queued for the serial line.
    pub echoed: u64,
    /// Waiting for room in the serial transmit queue (listed in the hypervisor's queue).
    pub echo_waiting: bool,
    pub counters: Counters,
    /// Why it crashed or was paused by the hypervisor.
    pub reason: Reason,
    /// Added (wrapping) to the hypervisor's clock to give the domain's `time()`: a restored
    /// domain's clock continues from the moment it was saved, in whichever boot.
    pub clock_offset_ns: u64,
    /// Added (wrapping) to the host TSC to give the guest's TSC.
    pub tsc_offset: u64,
    /// A frozen domain's clock and block timer at the instant it was frozen (what its
    /// image records; clones start their clocks from it).
    pub frozen_at: Option<FrozenAt>,
    /// The live domain this frozen one is a checkpoint epoch of (for `list`).
    pub snapshot_of: Option<DomId>,
    /// The emulated PC devices, for a domain created with them (an unmodified kernel).
    pub pc: Option<Box<crate::pc::PcPlatform>>,
    /// Restored from an image (the agent's identity leaf reports it).
    pub restored: bool,
    /// Restored lazily: where its pages come from, and how far it is.
    pub lazy: Option<Box<crate::pager::LazyClient>>,
    /// What it holds as some clients' pager.
    pub pager: Option<Box<crate::pager::PagerRole>>,
}

/// The time-dependent state of a domain at the instant it was frozen or snapshotted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrozenAt {
    /// Its `time()` then.
    pub guest_ns: u64,
    /// Its TSC then.
    pub guest_tsc: u64,
    /// What it was blocked in (`guest_abi::saved::BLOCKED_*`), and how much of its
    /// timeout was left.
    pub blocked: u32,
    pub block_remaining_ns: Option<u64>,
}

impl<V, F: EntryFormat> Domain<V, F> {
    /// A new live, paused domain record without vCPU or memory yet.
    pub fn new(id: DomId, name: Name, privileged: bool, mem_bytes: u64, generation: u64) -> Self {
        Self {
            id,
            name,
            privileged,
            life: Life::Live,
            blocked: false,
            paused: Some(PauseReason::User),
            queued: false,
            vcpu: None,
            p2m: None,
            frozen_context: None,
            frozen_extended: None,
            mem_bytes,
            gpa_limit: 0,
            parent: None,
            clones: 0,
            clone_index: 0,
            generation,
            quota_pages: u64::MAX,
            owned_ram: 0,
            owned_tables: 0,
            mapped_ram: 0,
            events: Events::default(),
            deadline: None,
            wake_returns_events: false,
            console: ConsoleRing::default(),
            echoed: 0,
            echo_waiting: false,
            counters: Counters::default(),
            reason: Reason::default(),
            clock_offset_ns: 0,
            tsc_offset: 0,
            frozen_at: None,
            snapshot_of: None,
            pc: None,
            restored: false,
            lazy: None,
            pager: None,
        }
    }

    /// Live, not paused, not blocked.
    pub fn runnable(&self) -> bool {
        self.life == Life::Live && self.paused.is_none() && !self.blocked && self.vcpu.is_some() && !self.waits_for_pager()
    }

    /// Its vCPU is stopped until its pager supplies a page.
    pub fn waits_for_pager(&self) -> bool {
        self.lazy.as_ref().is_some_and(|l| l.wait.is_some())
    }

    /// Pages of its memory are still missing (restored lazily, not yet fully resident).
    pub fn is_lazy(&self) -> bool {
        self.lazy.as_ref().is_some_and(|l| l.is_lazy())
    }

    /// State code as `dom_info` reports it.
    pub fn state_code(&self) -> u32 {
        match self.life {
            Life::Frozen => state::FROZEN,
            Life::Dead(_) => state::DEAD,
            Life::Crashed => state::CRASHED,
            Life::Live if self.paused.is_some() => state::PAUSED,
            Life::Live if self.blocked || self.waits_for_pager() => state::BLOCKED,
            Life::Live => state::RUNNING,
        }
    }

    /// RAM pages only this domain maps (a template's pages count as shared).
    pub fn private_pages(&self) -> u64 {
        if self.life == Life::Frozen { 0 } else { self.owned_ram.min(self.mapped_ram) }
    }

    /// RAM pages it maps that others map too.
    pub fn shared_pages(&self) -> u64 {
        self.mapped_ram - self.private_pages()
    }

    /// Frames charged to its quota: the RAM pages and the tables it made private.
    pub fn quota_used(&self) -> u64 {
        self.owned_ram + self.owned_tables
    }

    /// Frames (pages or tables) it may still gain.
    pub fn quota_left(&self) -> u64 {
        if self.parent.is_none() { u64::MAX } else { self.quota_pages.saturating_sub(self.quota_used()) }
    }
}

/// All domains, indexed by id, with an index by name (names are unique).
pub struct DomainTable<V, F: EntryFormat> {
    slots: Vec<Option<Box<Domain<V, F>>>>,
    names: BTreeMap<Name, DomId>,
    count: usize,
    next: DomId,
}

impl<V, F: EntryFormat> Default for DomainTable<V, F> {
    fn default() -> Self {
        Self { slots: Vec::new(), names: BTreeMap::new(), count: 0, next: 0 }
    }
}

impl<V, F: EntryFormat> DomainTable<V, F> {
    /// An empty table whose id index already has room for [`MAX_DOMAINS`]: adding a domain
    /// never needs a large allocation that a nearly full heap could not satisfy.
    pub fn with_room_for_all() -> Self {
        let mut t = Self::default();
        t.slots.reserve_exact(MAX_DOMAINS as usize);
        t
    }

    /// The domain with this id.
    pub fn get(&self, id: DomId) -> Option<&Domain<V, F>> {
        self.slots.get(id as usize).and_then(|s| s.as_deref())
    }

    /// The domain with this id, mutably.
    pub fn get_mut(&mut self, id: DomId) -> Option<&mut Domain<V, F>> {
        self.slots.get_mut(id as usize).and_then(|s| s.as_deref_mut())
    }

    /// A free id for an ordinary domain: the lowest at or after the last one handed out,
    /// wrapping, never 0 (reserved for dom0).
    pub fn free_id(&self) -> Option<DomId> {
        if self.count as u32 >= MAX_DOMAINS {
            return None;
        }
        let start = self.next.max(1);
        (start..MAX_DOMAINS).chain(1..start).find(|&id| self.get(id).is_none())
    }

    /// Stores a domain under its id (which must be free).
    pub fn insert(&mut self, d: Box<Domain<V, F>>) {
        let id = d.id as usize;
        if self.slots.len() <= id {
            self.slots.resize_with(id + 1, || None);
        }
        debug_assert!(self.slots[id].is_none());
        self.names.insert(d.name, d.id);
        self.slots[id] = Some(d);
        self.count += 1;
        if id != 0 {
            self.next = (id as u32 + 1) % MAX_DOMAINS;
        }
    }

    /// Removes a domain.
    pub fn remove(&mut self, id: DomId) -> Option<Box<Domain<V, F>>> {
        let d = self.slots.get_mut(id as usize)?.take()?;
        self.names.remove(&d.name);
        self.count -= 1;
        Some(d)
    }

    /// Renames a domain (the caller checked that the name is free).
    pub fn rename(&mut self, id: DomId, name: Name) {
        if let Some(d) = self.slots.get_mut(id as usize).and_then(|s| s.as_deref_mut()) {
            self.names.remove(&d.name);
            d.name = name;
            self.names.insert(name, id);
        }
    }

    /// Number of domains.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// All domains in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Domain<V, F>> {
        self.slots.iter().filter_map(|s| s.as_deref())
    }

    /// All domains in id order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Domain<V, F>> {
        self.slots.iter_mut().filter_map(|s| s.as_deref_mut())
    }

    /// Ids of domains with an id at or after `first` (slots are indexed by id, so this starts
    /// there rather than filtering from the beginning).
    pub fn ids_from(&self, first: DomId) -> impl Iterator<Item = DomId> + '_ {
        self.slots.get(first as usize..).unwrap_or_default().iter().filter_map(|s| s.as_deref()).map(|d| d.id)
    }

    /// The domain named `name` (O(log n)).
    pub fn by_name(&self, name: &str) -> Option<&Domain<V, F>> {
        self.names.get(&Name::new(name)).and_then(|&id| self.get(id))
    }
}

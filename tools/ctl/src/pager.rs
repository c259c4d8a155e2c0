//! dom0's pager (docs/pager.md): serves lazily restored domains their pages from the image
//! store. A demand request (a client touched a missing page) is answered first, from the run
//! last read if it holds the page, else by reading and verifying that run; between requests
//! the rest of every client's image is supplied in the background, in order, until the client
//! is fully resident. Every run is checked against its record checksum before a byte of it
//! reaches a client, a page in a gap only once the runs around the gap are, and the image
//! digest once the walk reaches END; a failure crashes that client alone, with the reason.
//! Pages go out shared under one key per image, so lazy restores of one image share frames
//! copy-on-write as clones do. The order of first touches is recorded as the image's working
//! set and prefetched by its next lazy restore before the domain runs.

pub mod workset;

pub use crate::page_buf::{PAGE_BYTES, PageBuf};

use crate::control::{Control, Hypercalls};
use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use domimage::{DecodeError, IndexStart, IndexWalker, MAX_RUN_PAGES, ReadAt, RunEntry, WalkStep, read_run};
use guest_abi::HvError;
use guest_abi::pager::{Request, SUPPLY_SHARED, SUPPLY_ZERO, SupplyArgs, fail, ring};
use store::{BlockDevice, Store, StoreError};

/// Background units (one run, or one stretch of zero pages) per poll from an idle loop: one,
/// so that a demand request waits for at most one run read behind it.
pub const BACKGROUND_UNITS_PER_POLL: usize = 1;
/// Zero pages one background unit supplies.
const ZERO_CHUNK_PAGES: u64 = 256;
/// Finished restores `pager` lists.
const FINISHED_KEPT: usize = 16;

/// Reads a stored image by offset.
pub struct StoreAt<'a, D: BlockDevice> {
    pub store: &'a mut Store<D>,
    pub name: &'a str,
}

impl<D: BlockDevice> ReadAt for StoreAt<'_, D> {
    type Error = StoreError;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.store.read_at(self.name, offset, buf)
    }
}

/// Why the pager could not start or serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PagerError {
    /// dom0's heap cannot hold the ring or the run buffer.
    NoMemory,
    /// The hypervisor refused.
    Hv(HvError),
}

impl From<HvError> for PagerError {
    fn from(e: HvError) -> Self {
        Self::Hv(e)
    }
}

impl core::fmt::Display for PagerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoMemory => f.write_str("out of memory in dom0 for the pager"),
            Self::Hv(e) => write!(f, "{e}"),
        }
    }
}

/// What a lazy restore starts from.
pub struct LazyStart {
    pub client: u32,
    pub domain: String,
    pub image: String,
    /// The store's creation sequence of the image (names its share key and working set).
    pub image_sequence: u64,
    pub mem_pages: u64,
    /// Where the image's memory starts (from its decoder).
    pub start: IndexStart,
    /// Fetch what nobody asked for while the domain runs (off only for measurements).
    pub background: bool,
    /// Another domain serves it (dom0 keeps the image's place to take over).
    pub delegated: bool,
}

/// How a lazy restore ended, for `pager`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub client: u32,
    pub domain: String,
    pub image: String,
    /// `None`: fully resident; else why it was given up.
    pub failure: Option<String>,
    pub demand_faults: u64,
    pub prefetched: u64,
    pub wait_cycles: u64,
}

/// One lazily restored domain dom0 knows the image of.
pub struct LazyRestore {
    pub client: u32,
    pub domain: String,
    pub image: String,
    image_sequence: u64,
    pub mem_pages: u64,
    /// Share key of its image's pages.
    key: u64,
    walker: IndexWalker,
    /// Per indexed run: supplied whole (so also verified).
    done: Vec<bool>,
    /// Background: the next page to make resident.
    cursor: u64,
    /// Pages in first-touch order (demand requests), and the set of them.
    touched: Vec<u64>,
    touched_set: BTreeSet<u64>,
    /// The working set it started with (prefetched), if any.
    workset: Vec<u64>,
    pub prefetched: u64,
    pub demand_answered: u64,
    background: bool,
    /// Served by another domain.
    pub delegated: bool,
}

impl LazyRestore {
    /// Pages the walk has covered so far (for progress).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }
}

/// A run or a page that could not be supplied.
enum Trouble {
    /// The run failed its checksum or the image its structure or digest.
    Image(u64, u32),
    /// The store could not read it.
    Read(u64),
    /// The client is gone or has another pager now.
    Lost,
    /// The hypervisor refused for another reason (no memory: try again later).
    Hv(HvError),
}

fn image_trouble(e: DecodeError<StoreError>, gfn: u64) -> Trouble {
    match e {
        DecodeError::Source(_) => Trouble::Read(gfn),
        DecodeError::RecordChecksum { .. } => Trouble::Image(gfn, fail::CHECKSUM),
        _ => Trouble::Image(gfn, fail::IMAGE),
    }
}

fn hv_trouble(e: HvError) -> Trouble {
    match e {
        HvError::NotPermitted | HvError::NoSuchDomain => Trouble::Lost,
        e => Trouble::Hv(e),
    }
}

/// dom0's pager: the ring, the run buffer, and the restores it serves.
#[derive(Default)]
pub struct Pager {
    ring: Option<PageBuf>,
    cons: u32,
    buf: Option<PageBuf>,
    /// What `buf` holds: (share key, run index), verified.
    cached: Option<(u64, usize)>,
    restores: Vec<LazyRestore>,
    pub finished: Vec<Finished>,
    /// Which image each pager domain holds a mirror of: (domain, image, store sequence).
    mirrors: Vec<(u32, String, u64)>,
}

/// Whether a pager domain can serve an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorState {
    /// It already holds this image's mirror.
    Holds,
    /// It holds nothing dom0 knows of, or only images no client still needs: fill it.
    Free,
    /// It serves lazy clients of another image (its mirror must not change under them).
    Busy,
}

impl Pager {
    /// Whether pager domain `p` can serve `image` (store sequence `seq`).
    pub fn mirror_state(&self, p: u32, image: &str, seq: u64) -> MirrorState {
        match self.mirrors.iter().find(|m| m.0 == p) {
            Some(m) if m.1 == image && m.2 == seq => MirrorState::Holds,
            Some(m) if self.restores.iter().any(|r| r.delegated && r.image == m.1 && r.image_sequence == m.2) => MirrorState::Busy,
            _ => MirrorState::Free,
        }
    }

    /// Pager domain `p` now holds `image`'s mirror.
    pub fn mirrored(&mut self, p: u32, image: &str, seq: u64) {
        self.mirrors.retain(|m| m.0 != p);
        self.mirrors.push((p, image.to_string(), seq));
    }

    /// The image (and store sequence) dom0 restored client `id` from.
    pub fn image_of(&self, id: u32) -> Option<(String, u64)> {
        self.restores.iter().find(|r| r.client == id).map(|r| (r.image.clone(), r.image_sequence))
    }

    /// Restores still in progress.
    pub fn restores(&self) -> &[LazyRestore] {
        &self.restores
    }

    /// Whether there is anything to do (requests may arrive, background work is left).
    pub fn busy(&self) -> bool {
        self.restores.iter().any(|r| !r.delegated)
    }

    /// The ring and run buffer exist and the ring is registered.
    pub fn ensure_ready<H: Hypercalls>(&mut self, ctl: &mut Control<H>) -> Result<(), PagerError> {
        if self.buf.is_none() {
            self.buf = Some(PageBuf::new(MAX_RUN_PAGES).ok_or(PagerError::NoMemory)?);
        }
        if self.ring.is_none() {
            let ring = PageBuf::new(1).ok_or(PagerError::NoMemory)?;
            ctl.pager_ring(ring.addr())?;
            self.ring = Some(ring);
            self.cons = 0;
        }
        Ok(())
    }

    /// Takes on a lazy restore whose domain exists, paused, with no memory: prefetches the
    /// image's working set if one is stored, and returns the pages prefetched.
    pub fn begin<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>, s: LazyStart) -> Result<u64, PagerError> {
        self.ensure_ready(ctl)?;
        let key = share_key(&s.image, s.image_sequence);
        let workset = load_workset(store, &s.image, s.image_sequence, s.mem_pages);
        self.restores.push(LazyRestore {
            client: s.client,
            domain: s.domain,
            image: s.image,
            image_sequence: s.image_sequence,
            mem_pages: s.mem_pages,
            key,
            walker: IndexWalker::new(&s.start),
            done: Vec::new(),
            cursor: 0,
            touched: Vec::new(),
            touched_set: BTreeSet::new(),
            workset: Vec::new(),
            prefetched: 0,
            demand_answered: 0,
            background: s.background,
            delegated: s.delegated,
        });
        let at = self.restores.len() - 1;
        let mut prefetched = 0;
        if !s.delegated {
            for &gfn in &workset {
                match self.serve(ctl, store, at, gfn, 0, true) {
                    Ok(n) => prefetched += n,
                    Err(t) => {
                        self.give_up(ctl, store, at, t);
                        return Ok(prefetched);
                    }
                }
            }
        }
        if let Some(r) = self.restores.get_mut(at) {
            r.prefetched = prefetched;
            r.workset = workset;
        }
        Ok(prefetched)
    }

    /// Serves what is asked, then up to `units` background units. Returns whether work is
    /// left (the caller should poll again before sleeping).
    pub fn poll<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>, units: usize) -> bool {
        let answered = self.drain_ring(ctl, store);
        if answered > 0 {
            // Demand first: let the clients run on the pages they waited for, and fetch in the
            // background only once they stop asking.
            let _ = ctl.yield_now();
            return true;
        }
        for _ in 0..units {
            if !self.background_unit(ctl, store) {
                break;
            }
            // On one CPU a pager that fetches without pause starves its clients: they run
            // between units (and their demand requests come first).
            let _ = ctl.yield_now();
            self.drain_ring(ctl, store);
        }
        self.restores.iter().any(|r| !r.delegated && r.background)
    }

    /// Drives client `id`'s restore until it is fully resident (for commands that read all
    /// its memory). `Ok(false)` if dom0 does not serve it.
    pub fn complete<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>, id: u32) -> bool {
        loop {
            let Some(at) = self.restores.iter().position(|r| r.client == id && !r.delegated) else {
                return !self.restores.iter().any(|r| r.client == id);
            };
            self.drain_ring(ctl, store);
            self.unit_for(ctl, store, at);
        }
    }

    /// dom0 serves `client` again (it took it over from another pager), or hands it to
    /// another (`delegated`). `false` if dom0 does not know its image.
    pub fn set_delegated(&mut self, client: u32, delegated: bool) -> bool {
        match self.restores.iter_mut().find(|r| r.client == client) {
            Some(r) => {
                r.delegated = delegated;
                true
            }
            None => false,
        }
    }

    /// Ends the restore of client `id`, which ended or was destroyed: what it touched is
    /// recorded as its image's working set.
    pub fn end<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>, id: u32) {
        if let Some(at) = self.restores.iter().position(|r| r.client == id) {
            self.give_up(ctl, store, at, Trouble::Lost);
        }
    }

    /// Forgets the run last read (the next request reads its run from the store again).
    pub fn drop_cache(&mut self) {
        self.cached = None;
    }

    /// Forgets restores whose client, and mirrors whose pager, is no longer in `live`.
    pub fn retain(&mut self, live: &[u32]) {
        self.restores.retain(|r| live.contains(&r.client));
        self.mirrors.retain(|m| live.contains(&m.0));
    }

    fn drain_ring<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>) -> usize {
        let mut answered = 0;
        loop {
            let Some(ring) = self.ring.as_ref() else { return answered };
            let prod = ring.read_u32(ring::PROD_OFFSET as usize);
            if prod == self.cons {
                return answered;
            }
            let off = (ring::SLOT0_OFFSET + u64::from(self.cons % ring::RING_SLOTS) * ring::SLOT_BYTES) as usize;
            let slot: [u8; 32] = ring.read_volatile(off);
            let req = decode_request(&slot);
            self.cons = self.cons.wrapping_add(1);
            let cons = self.cons;
            if let Some(ring) = self.ring.as_mut() {
                ring.write_u32(ring::CONS_OFFSET as usize, cons);
            }
            let Some(at) = self.restores.iter().position(|r| r.client == req.client && !r.delegated) else { continue };
            if let Some(r) = self.restores.get_mut(at) {
                if r.touched.len() < workset::WORKSET_MAX_PAGES && r.touched_set.insert(req.gfn) {
                    r.touched.push(req.gfn);
                }
            }
            match self.serve(ctl, store, at, req.gfn, req.id, false) {
                Ok(_) => {
                    answered += 1;
                    if let Some(r) = self.restores.get_mut(at) {
                        r.demand_answered += 1;
                    }
                }
                Err(t) => self.give_up(ctl, store, at, t),
            }
        }
    }

    /// Supplies page `gfn` of restore `at` (answering `request` if not 0): from the cached
    /// run, or by reading and verifying its run; a page in a gap as zero once the runs around
    /// it are verified. With `whole`, all of the run. Returns pages mapped.
    fn serve<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>, at: usize, gfn: u64, request: u64, whole: bool) -> Result<u64, Trouble> {
        let (key, client) = (self.restores[at].key, self.restores[at].client);
        let found = {
            let r = &mut self.restores[at];
            let mut src = StoreAt { store: &mut *store, name: &r.image };
            r.walker.walk_to(&mut src, gfn).map_err(|e| image_trouble(e, gfn))?
        };
        match found {
            Ok(i) => {
                self.load_run(store, at, i)?;
                let e = self.restores[at].walker.runs()[i];
                if whole || self.restores[at].done.get(i).copied().unwrap_or(false) {
                    let n = self.supply_run(ctl, at, &e, request)?;
                    self.mark_done(at, i);
                    return Ok(n);
                }
                let buf = self.buf.as_ref().ok_or(Trouble::Hv(HvError::OutOfMemory))?;
                let src = buf.addr() + (gfn - e.first_gfn) * PAGE_BYTES as u64;
                let args = SupplyArgs { client, flags: SUPPLY_SHARED, gfn, count: 1, src_gpa: src, request, share_key: key };
                ctl.pager_supply(&args).map_err(hv_trouble)
            }
            Err(i) => {
                // A gap: zero, once the runs on both sides are verified.
                let runs_len = self.restores[at].walker.runs().len();
                let mut mapped = 0;
                for n in [i.checked_sub(1), (i < runs_len).then_some(i)].into_iter().flatten() {
                    if !self.restores[at].done.get(n).copied().unwrap_or(false) {
                        self.load_run(store, at, n)?;
                        let e = self.restores[at].walker.runs()[n];
                        mapped += self.supply_run(ctl, at, &e, 0)?;
                        self.mark_done(at, n);
                    }
                }
                let r = &self.restores[at];
                let gap_start = i.checked_sub(1).map(|p| r.walker.runs()[p].first_gfn + u64::from(r.walker.runs()[p].pages)).unwrap_or(0);
                let gap_end = r.walker.runs().get(i).map(|e| e.first_gfn).unwrap_or(r.mem_pages);
                let (first, count) = if whole {
                    let first = gfn.max(gap_start);
                    (first, (gap_end - first).min(ZERO_CHUNK_PAGES))
                } else {
                    (gfn, 1)
                };
                let args = SupplyArgs { client, flags: SUPPLY_ZERO | SUPPLY_SHARED, gfn: first, count, src_gpa: 0, request, share_key: key };
                Ok(mapped + ctl.pager_supply(&args).map_err(hv_trouble)?)
            }
        }
    }

    /// Makes the run buffer hold run `i` of restore `at`, verified.
    fn load_run<D: BlockDevice>(&mut self, store: &mut Store<D>, at: usize, i: usize) -> Result<(), Trouble> {
        let key = self.restores[at].key;
        if self.cached == Some((key, i)) {
            return Ok(());
        }
        self.cached = None;
        let e = self.restores[at].walker.runs()[i];
        let buf = self.buf.as_mut().ok_or(Trouble::Hv(HvError::OutOfMemory))?;
        let r = &self.restores[at];
        let mut src = StoreAt { store, name: &r.image };
        read_run(&mut src, &e, buf.bytes_mut()).map_err(|err| image_trouble(err, e.first_gfn))?;
        self.cached = Some((key, i));
        Ok(())
    }

    fn supply_run<H: Hypercalls>(&mut self, ctl: &mut Control<H>, at: usize, e: &RunEntry, request: u64) -> Result<u64, Trouble> {
        let r = &self.restores[at];
        let buf = self.buf.as_ref().ok_or(Trouble::Hv(HvError::OutOfMemory))?;
        let args = SupplyArgs {
            client: r.client,
            flags: SUPPLY_SHARED,
            gfn: e.first_gfn,
            count: u64::from(e.pages),
            src_gpa: buf.addr(),
            request,
            share_key: r.key,
        };
        ctl.pager_supply(&args).map_err(hv_trouble)
    }

    fn mark_done(&mut self, at: usize, i: usize) {
        let done = &mut self.restores[at].done;
        if done.len() <= i {
            done.resize(i + 1, false);
        }
        done[i] = true;
    }

    /// One background unit for some restore; false if none had any.
    fn background_unit<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>) -> bool {
        // The cached run first (a demand request read it and supplied one page of it).
        if let Some((key, i)) = self.cached {
            if let Some(at) = self.restores.iter().position(|r| r.key == key && !r.delegated && r.background && !r.done.get(i).copied().unwrap_or(false) && i < r.walker.runs().len()) {
                let e = self.restores[at].walker.runs()[i];
                match self.supply_run(ctl, at, &e, 0) {
                    Ok(_) => self.mark_done(at, i),
                    Err(t) => self.give_up(ctl, store, at, t),
                }
                return true;
            }
        }
        let Some(at) = self.restores.iter().position(|r| !r.delegated && r.background) else { return false };
        self.unit_for(ctl, store, at);
        // Round robin: the restore just served goes last.
        if at < self.restores.len() {
            let r = self.restores.remove(at);
            self.restores.push(r);
        }
        true
    }

    /// One background unit of restore `at`: the run or zero stretch at its cursor, or the rest
    /// of the walk, or, with everything there, the end of the restore.
    fn unit_for<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>, at: usize) {
        let r = &self.restores[at];
        if r.cursor >= r.mem_pages {
            if r.walker.is_complete() {
                self.finish(ctl, store, at);
                return;
            }
            let r = &mut self.restores[at];
            let mut src = StoreAt { store, name: &r.image };
            match r.walker.step(&mut src) {
                Ok(WalkStep::End(_)) | Ok(WalkStep::Skipped) => {}
                // A run above the end of memory cannot be: the walker refuses it.
                Ok(WalkStep::Run(_)) => {}
                Err(e) => {
                    let gfn = r.mem_pages.saturating_sub(1);
                    self.give_up(ctl, store, at, image_trouble(e, gfn));
                }
            }
            return;
        }
        let gfn = r.cursor;
        match self.serve(ctl, store, at, gfn, 0, true) {
            Ok(_) => {
                let r = &self.restores[at];
                let next = match r.walker.runs().iter().find(|e| gfn >= e.first_gfn && gfn < e.first_gfn + u64::from(e.pages)) {
                    Some(e) => e.first_gfn + u64::from(e.pages),
                    None => {
                        let gap_end = r.walker.runs().iter().map(|e| e.first_gfn).find(|&f| f > gfn).unwrap_or(r.mem_pages);
                        (gfn + ZERO_CHUNK_PAGES).min(gap_end)
                    }
                };
                self.restores[at].cursor = next;
            }
            Err(t) => self.give_up(ctl, store, at, t),
        }
    }

    /// Everything is resident and the image verified: record the working set, release the
    /// image's shared frames if no other restore of it runs, and remember the figures.
    fn finish<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>, at: usize) {
        let status = ctl.pager_status(self.restores[at].client);
        if let Ok(s) = status {
            if s.missing_pages > 0 {
                // Something was not supplied (a refused supply): walk the memory again.
                self.restores[at].cursor = 0;
                return;
            }
        }
        let r = self.restores.remove(at);
        record_workset(store, &r);
        self.release_key(ctl, r.key);
        let s = status.unwrap_or_default();
        self.remember(Finished {
            client: r.client,
            domain: r.domain,
            image: r.image,
            failure: None,
            demand_faults: s.demand_faults,
            prefetched: r.prefetched,
            wait_cycles: s.wait_cycles,
        });
    }

    /// Stops serving restore `at` after `t`: the client is crashed with the reason (unless it
    /// is gone or served by another pager now).
    fn give_up<H: Hypercalls, D: BlockDevice>(&mut self, ctl: &mut Control<H>, store: &mut Store<D>, at: usize, t: Trouble) {
        if at >= self.restores.len() {
            return;
        }
        let failure = match t {
            Trouble::Hv(HvError::OutOfMemory) => {
                // Try again on a later poll: the client waits (its pager timeout applies).
                return;
            }
            Trouble::Lost => match ctl.info(self.restores[at].client) {
                Ok(i) if i.state == guest_abi::domctl::state::DEAD || i.state == guest_abi::domctl::state::CRASHED => {
                    alloc::format!("the domain ended ({}) before it was fully resident", guest_abi::domctl::state::name(i.state))
                }
                Ok(_) => "the domain has another pager now".to_string(),
                Err(_) => "the domain was destroyed".to_string(),
            },
            Trouble::Image(gfn, code) => {
                let _ = ctl.pager_fail(self.restores[at].client, gfn, code);
                alloc::format!("page at gpa {:#x} {}", gfn * PAGE_BYTES as u64, fail::name(code))
            }
            Trouble::Read(gfn) => {
                let _ = ctl.pager_fail(self.restores[at].client, gfn, fail::READ_ERROR);
                alloc::format!("page at gpa {:#x} {}", gfn * PAGE_BYTES as u64, fail::name(fail::READ_ERROR))
            }
            Trouble::Hv(e) => alloc::format!("{e}"),
        };
        let ended = matches!(t, Trouble::Lost);
        let r = self.restores.remove(at);
        if ended {
            // What it touched before it ended (or moved on) is still this image's working set.
            record_workset(store, &r);
        }
        if self.cached.is_some_and(|(k, _)| k == r.key) {
            self.cached = None;
        }
        self.release_key(ctl, r.key);
        let s = ctl.pager_status(r.client).unwrap_or_default();
        self.remember(Finished {
            client: r.client,
            domain: r.domain,
            image: r.image,
            failure: Some(failure),
            demand_faults: s.demand_faults,
            prefetched: r.prefetched,
            wait_cycles: s.wait_cycles,
        });
    }

    fn release_key<H: Hypercalls>(&mut self, ctl: &mut Control<H>, key: u64) {
        if !self.restores.iter().any(|r| r.key == key) {
            let _ = ctl.pager_drop(key);
            if self.cached.is_some_and(|(k, _)| k == key) {
                self.cached = None;
            }
        }
    }

    fn remember(&mut self, f: Finished) {
        if self.finished.len() >= FINISHED_KEPT {
            self.finished.remove(0);
        }
        self.finished.push(f);
    }
}

/// The share key of an image's pages: one per stored image (its name and creation sequence),
/// never 0.
pub fn share_key(image: &str, sequence: u64) -> u64 {
    let mut h = store::ImageChecksum::new();
    h.update(image.as_bytes());
    h.update(&sequence.to_le_bytes());
    h.value().max(1)
}

fn decode_request(b: &[u8; 32]) -> Request {
    let u64_at = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    };
    Request { client: u32::from_le_bytes([b[0], b[1], b[2], b[3]]), flags: u32::from_le_bytes([b[4], b[5], b[6], b[7]]), gfn: u64_at(8), id: u64_at(16), tsc: u64_at(24) }
}

/// Stores the working set `r` started with, extended by the pages it first touched since.
fn record_workset<D: BlockDevice>(store: &mut Store<D>, r: &LazyRestore) {
    let mut ws = r.workset.clone();
    let known: BTreeSet<u64> = ws.iter().copied().collect();
    ws.extend(r.touched.iter().copied().filter(|g| !known.contains(g)));
    if ws.len() > r.workset.len() {
        save_workset(store, &r.image, r.image_sequence, r.mem_pages, &ws);
    }
}

/// The stored working set of `image`, if there is a good one (a damaged one is ignored: it
/// only ever makes a restore faster).
fn load_workset<D: BlockDevice>(store: &mut Store<D>, image: &str, sequence: u64, mem_pages: u64) -> Vec<u64> {
    let name = workset::workset_name(image);
    let Some(e) = store.find(&name) else { return Vec::new() };
    if e.kind != store::ImageKind::WorkingSet {
        return Vec::new();
    }
    let size = e.size_bytes as usize;
    if size > workset::WORKSET_HEADER_BYTES + workset::WORKSET_MAX_PAGES * 8 + 8 {
        return Vec::new();
    }
    let mut bytes = alloc::vec![0u8; size];
    match store.read_at(&name, 0, &mut bytes) {
        Ok(n) if n == size => workset::decode(&bytes, sequence, mem_pages).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Replaces `image`'s working set (best effort: a store that cannot take it loses only speed).
fn save_workset<D: BlockDevice>(store: &mut Store<D>, image: &str, sequence: u64, mem_pages: u64, gfns: &[u64]) {
    let name = workset::workset_name(image);
    if store.find(&name).is_some() {
        if store.find(&name).is_some_and(|e| e.kind != store::ImageKind::WorkingSet) {
            return;
        }
        if store.remove(&name).is_err() {
            return;
        }
    }
    let bytes = workset::encode(sequence, mem_pages, gfns);
    let Ok(mut w) = store.begin(&name, store::ImageKind::WorkingSet, &alloc::format!("working set of {image}")) else { return };
    if store.write(&mut w, &bytes).is_err() {
        store.abort(w);
        return;
    }
    let _ = store.commit(w);
}

#[cfg(test)]
mod tests;

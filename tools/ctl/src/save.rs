//! Save, restore and live checkpoints of domains into the image store: dom0's policy over the
//! hypervisor's mechanism. A save reads a *source* that cannot change while it is written: a
//! paused domain, a template, or a checkpoint epoch (`dom_snapshot`, which lets the domain run
//! on). Its memory goes to the image as runs of pages (zero pages elided; for a clone, only
//! the pages it does not share with its template: a delta naming the template by its content
//! digest). A restore treats the image as hostile: every refusal gives a specific
//! [`SaveError`], and whatever was created is destroyed again, so no domain is left and free
//! memory is as it was. Both show progress and stop at Ctrl-C with nothing left behind.

use crate::control::{Control, Hypercalls};
use crate::page_buf::PageBuf;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use domimage::{
    ContentHasher, DecodeError, Decoder, Digest, DomainRecord, EncodeError, Encoder, ImageKind, Limits, MAX_RUN_PAGES,
    PAGE_BYTES, Prologue, Sink, Source, TemplateRef,
};
use guest_abi::HvError;
use guest_abi::domctl::{CLONE_PAUSED, CREATE_PC_PLATFORM, DomainFlags, DomainInfo, NO_DOMAIN, name_str, state};
use guest_abi::layout::{MAX_DOMAIN_MEM_BYTES, START_INFO_GPA};
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;
use store::{BlockDevice, Store, StoreError};

/// Bytes of memory one read or write hypercall moves (one image run).
pub const RUN_BYTES: usize = MAX_RUN_PAGES * PAGE_BYTES;
/// Pages one private-map call covers.
const PRIVATE_MAP_PAGES: u64 = guest_abi::hypercall::nr::PRIVATE_MAP_MAX_PAGES;
/// Bytes the image reader fetches from the store at a time for record headers and small
/// records (memory runs are read straight into the caller's buffer).
const READ_AHEAD_BYTES: usize = 16 * 1024;
/// Guest frame of the start-of-day page, which the content digest leaves out: every domain,
/// a template restored from an image included, has its own.
const START_INFO_GFN: u64 = START_INFO_GPA / PAGE_BYTES as u64;

/// What a long operation reports to, and asks, the person at the console.
pub trait Ui {
    /// Progress of `verb` (`saving`, `restoring`, ...) on `name`: `done` of `total` bytes
    /// (shown in place, not kept; a console shows it only when the percentage changes).
    fn progress(&mut self, verb: &str, name: &str, done: u64, total: u64);
    /// The operation ended: take the progress line away.
    fn clear(&mut self);
    /// Whether Ctrl-C was typed since the operation started.
    fn interrupted(&mut self) -> bool;
    /// A new command starts: forget an earlier Ctrl-C.
    fn reset(&mut self) {}
    /// Bytes typed at the terminal since the last call, without waiting (none in scripts
    /// run without a terminal, and in tests).
    fn read_typed(&mut self, _buf: &mut [u8]) -> usize {
        0
    }
    /// Writes to the terminal at once (live output of an attached console).
    fn write_raw(&mut self, _bytes: &[u8]) {}
    /// Sleeps until something is typed or `timeout_ns` passes.
    fn wait(&mut self, _timeout_ns: u64) {}
    /// Whether a user's terminal is behind this (attaching a console needs one).
    fn interactive(&self) -> bool {
        false
    }
}

/// A [`Ui`] that shows nothing and is never interrupted (scripts, benchmarks, tests).
pub struct Quiet;

impl Ui for Quiet {
    fn progress(&mut self, _verb: &str, _name: &str, _done: u64, _total: u64) {}
    fn clear(&mut self) {}
    fn interrupted(&mut self) -> bool {
        false
    }
}

/// Why a save, restore or checkpoint failed. Nothing was left behind: no partial image, no
/// half-restored domain; a saved domain is as it was.
#[derive(Debug)]
pub enum SaveError {
    /// A hypercall failed.
    Hv(HvError),
    /// The store failed (full, device error, no such image, ...).
    Store(StoreError),
    /// The image was refused.
    Image(DecodeError<StoreError>),
    /// The image could not be written.
    Encode(EncodeError<StoreError>),
    /// Ctrl-C.
    Interrupted,
    /// dom0 cannot be saved.
    Dom0,
    /// A dead or crashed domain has nothing to save.
    NotRunning,
    /// A delta's template is not in memory (restore it first): its content digest (hex) and
    /// the name it had where the delta was saved.
    TemplateMissing { digest: String, name: String },
    /// The hypervisor refused the image's vCPU context (it would fault the host).
    VcpuRefused,
    /// The hypervisor refused the image's saved state.
    StateRefused,
    /// The hypervisor refused the image's emulated devices (PLATFORM record).
    PlatformRefused,
    /// The image's domain name is taken and no name= was given.
    NameTaken(String),
    /// Only a domain image can be restored lazily (a template never runs; a delta's pages
    /// over its template are restored eagerly).
    LazyKind(ImageKind),
    /// The pager could not take the restore on.
    Pager(crate::pager::PagerError),
    /// The pager domain named is not running.
    PagerNotRunning(u32),
    /// The pager domain's memory cannot hold the image's mirror.
    PagerTooSmall { need_mib: u64 },
    /// The pager domain serves clients of another image.
    PagerBusy(u32),
}

impl From<HvError> for SaveError {
    fn from(e: HvError) -> Self {
        Self::Hv(e)
    }
}

impl From<StoreError> for SaveError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hv(e) => write!(f, "{e}"),
            Self::Store(e) => write!(f, "store: {e}"),
            Self::Image(e) => write!(f, "bad image: {e}"),
            Self::Encode(EncodeError::Sink(e)) => write!(f, "store: {e}"),
            Self::Encode(e) => write!(f, "cannot write image: {e}"),
            Self::Interrupted => f.write_str("interrupted (nothing was changed)"),
            Self::Dom0 => f.write_str("not permitted: dom0 cannot be saved"),
            Self::NotRunning => f.write_str("wrong state: the domain has ended"),
            Self::TemplateMissing { digest, name } => {
                write!(f, "template of this delta not in memory (digest {digest}, was {name:?}; restore it first)")
            }
            Self::VcpuRefused => f.write_str("bad image: vcpu state refused by the hypervisor"),
            Self::StateRefused => f.write_str("bad image: saved state refused by the hypervisor"),
            Self::PlatformRefused => f.write_str("bad image: platform state refused by the hypervisor"),
            Self::NameTaken(n) => write!(f, "name already in use: {n} (give name=)"),
            Self::LazyKind(k) => write!(f, "not supported: a {} image cannot be restored lazily (restore it without lazy=1)", kind_name(*k)),
            Self::Pager(e) => write!(f, "pager: {e}"),
            Self::PagerNotRunning(id) => write!(f, "wrong state: pager domain {id} is not running"),
            Self::PagerTooSmall { need_mib } => write!(f, "pager domain too small: it needs {need_mib} MiB to hold this image"),
            Self::PagerBusy(id) => write!(f, "busy: pager domain {id} serves clients of another image"),
        }
    }
}

/// dom0's data disk, whatever drives it.
pub struct DataDisk(pub alloc::boxed::Box<dyn BlockDevice>);

impl BlockDevice for DataDisk {
    fn sectors(&self) -> u64 {
        self.0.sectors()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), store::DeviceError> {
        self.0.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), store::DeviceError> {
        self.0.write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), store::DeviceError> {
        self.0.flush()
    }
    fn wait_cycles(&self) -> u64 {
        self.0.wait_cycles()
    }
}

/// What the shell's image commands work with.
pub struct Storage {
    /// The image store, or why there is none (no disk, a damaged store, ...).
    pub store: Result<Store<DataDisk>, String>,
    pub digests: DigestCache,
    pub ui: alloc::boxed::Box<dyn Ui>,
    /// dom0's pager, which serves lazy restores from the store.
    pub pager: crate::pager::Pager,
    /// What became of the last guest channel streams (self-checkpoints), newest last.
    pub streams: Vec<String>,
}

impl Storage {
    /// No store, for `reason`.
    pub fn none(reason: &str) -> Self {
        Self { store: Err(reason.to_string()), digests: DigestCache::default(), ui: alloc::boxed::Box::new(Quiet), pager: Default::default(), streams: Vec::new() }
    }

    /// The store on `disk` (formatted if the disk is blank).
    pub fn on(disk: DataDisk, ui: alloc::boxed::Box<dyn Ui>) -> Self {
        let store = Store::open_or_format(disk).map_err(|e| format!("{e}"));
        Self { store, digests: DigestCache::default(), ui, pager: Default::default(), streams: Vec::new() }
    }
}

/// Content digests of templates already computed, by (domain id, generation): a frozen
/// domain never changes, so its digest is computed once.
#[derive(Default)]
pub struct DigestCache(BTreeMap<(u32, u64), Digest>);

/// What a save wrote.
#[derive(Clone, Debug)]
pub struct Saved {
    pub image: String,
    pub kind: ImageKind,
    pub bytes: u64,
    pub mem_bytes: u64,
    pub pages_written: u64,
    pub pages_zero: u64,
    pub digest: Digest,
    /// TSC cycles the domain was stopped for (a checkpoint's epoch start; a plain save's
    /// whole write).
    pub pause_cycles: u64,
}

/// What a restore made.
#[derive(Clone, Debug)]
pub struct Restored {
    pub domid: u32,
    pub name: String,
    pub kind: ImageKind,
    pub mem_bytes: u64,
    pub pages: u64,
}

/// How to save.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Pause, write, destroy (`xl save`).
    Save,
    /// Write while the domain runs on: a checkpoint epoch (`checkpoint`, `save keep=1`).
    Live,
}

/// Writes image bytes into a store writer.
pub(crate) struct StoreSink<'a, D: BlockDevice> {
    pub(crate) store: &'a mut Store<D>,
    pub(crate) writer: &'a mut store::ImageWriter,
}

impl<D: BlockDevice> Sink for StoreSink<'_, D> {
    type Error = StoreError;
    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.store.write(self.writer, bytes)
    }
}

/// Reads an image from the store with read-ahead.
struct StoreSource<'a, D: BlockDevice> {
    store: &'a mut Store<D>,
    name: String,
    offset: u64,
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl<D: BlockDevice> Source for StoreSource<'_, D> {
    type Error = StoreError;
    fn take(&mut self, out: &mut [u8]) -> Result<usize, StoreError> {
        if self.at == self.len && out.len() >= self.buf.len() {
            // A memory run: straight into the caller's buffer, no copy through ours.
            let n = self.store.read_at(&self.name, self.offset, out)?;
            self.offset += n as u64;
            return Ok(n);
        }
        if self.at == self.len {
            self.len = self.store.read_at(&self.name, self.offset, &mut self.buf)?;
            self.offset += self.len as u64;
            self.at = 0;
            if self.len == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.len - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

fn show_progress(ui: &mut dyn Ui, verb: &str, name: &str, done: u64, total: u64) {
    ui.progress(verb, name, done.min(total), total);
}

/// The progress line a console shows: `saving web:  42% 6/16 MiB`.
pub fn progress_line(verb: &str, name: &str, done: u64, total: u64) -> String {
    let pct = percent(done, total);
    if total >= 4 << 20 {
        format!("{verb} {name}: {pct:>3}% {}/{} MiB", done >> 20, total >> 20)
    } else {
        format!("{verb} {name}: {pct:>3}% {}/{} KiB", done >> 10, total >> 10)
    }
}

/// `done` of `total` in whole percent.
pub fn percent(done: u64, total: u64) -> u64 {
    if total == 0 { 100 } else { (done.saturating_mul(100) / total).min(100) }
}

/// Zero pages are left out of content digests anyway; the start-of-day page is too.
fn hash_run(h: &mut ContentHasher, first_gfn: u64, pages: &[u8]) {
    for (i, page) in pages.chunks_exact(PAGE_BYTES).enumerate() {
        let gfn = first_gfn + i as u64;
        if gfn == START_INFO_GFN {
            continue;
        }
        let mut p = [0u8; PAGE_BYTES];
        p.copy_from_slice(page);
        let _ = h.page(gfn, &p);
    }
}

impl DigestCache {
    /// The content digest of frozen domain `id`, computed once per template. It covers the
    /// template's memory only (not its start-of-day page, which every domain has its own of):
    /// that is all a delta takes from its template, since the delta carries the clone's own
    /// registers and state, and it is what survives a save and restore of the template
    /// bit for bit.
    pub fn of<H: Hypercalls>(&mut self, ctl: &mut Control<H>, id: u32, ui: &mut dyn Ui) -> Result<Digest, SaveError> {
        let generation = ctl.stat(id)?.generation;
        if let Some(d) = self.0.get(&(id, generation)) {
            return Ok(*d);
        }
        let info = ctl.info(id)?;
        let mut h = ContentHasher::new(info.mem_bytes);
        let mut buf = PageBuf::zeroed(RUN_BYTES);
        let name = String::from(name_str(&info.name));
        let mut at = 0u64;
        while at < info.mem_bytes {
            let n = (info.mem_bytes - at).min(RUN_BYTES as u64) as usize;
            ctl.mem_read(id, at, &mut buf[..n])?;
            hash_run(&mut h, at / PAGE_BYTES as u64, &buf[..n]);
            at += n as u64;
            show_progress(ui, "hashing template", &name, at, info.mem_bytes);
            if ui.interrupted() {
                return Err(SaveError::Interrupted);
            }
        }
        let d = h.finish();
        self.0.insert((id, generation), d);
        Ok(d)
    }

    /// Remembers the digest of a template just restored from an image.
    pub fn remember(&mut self, id: u32, generation: u64, digest: Digest) {
        self.0.insert((id, generation), digest);
    }

    /// Forgets domains that no longer exist.
    pub fn retain(&mut self, live: &[u32]) {
        self.0.retain(|(id, _), _| live.contains(id));
    }
}

/// Everything a save or restore works with.
pub struct Saver<'a, H: Hypercalls, D: BlockDevice> {
    pub ctl: &'a mut Control<H>,
    pub store: &'a mut Store<D>,
    pub digests: &'a mut DigestCache,
    pub ui: &'a mut dyn Ui,
    /// A cycle counter (the TSC) to time the pause.
    pub cycles: fn() -> u64,
}

/// The source a save reads, and how to leave the domain afterwards.
struct Source_ {
    read_from: u32,
    snapshot: Option<u32>,
    /// The domain was paused by this save (unpause it if the save does not complete).
    paused_here: bool,
}

impl<H: Hypercalls, D: BlockDevice> Saver<'_, H, D> {
    /// Saves domain `id` as image `image`. `Save` pauses it, writes, and destroys it (it is
    /// unpaused again if anything fails); `Live` starts a checkpoint epoch and writes while
    /// the domain runs on. A template is saved as a template (it never changes), a clone as
    /// a delta over its template unless `full`.
    pub fn save(&mut self, id: u32, image: &str, mode: Mode, full: bool) -> Result<Saved, SaveError> {
        let info = self.ctl.info(id)?;
        if info.flags & DomainFlags::PRIVILEGED.bits() != 0 {
            return Err(SaveError::Dom0);
        }
        if matches!(info.state, state::DEAD | state::CRASHED) {
            return Err(SaveError::NotRunning);
        }
        let name = String::from(name_str(&info.name));
        // Refuse a bad or taken image name before the domain is touched.
        if self.store.find(image).is_some() {
            return Err(SaveError::Store(StoreError::NameTaken));
        }
        if !store::is_valid_name(image) {
            return Err(SaveError::Store(StoreError::BadName));
        }
        let frozen = info.state == state::FROZEN;
        let t0 = (self.cycles)();
        let src = if frozen {
            Source_ { read_from: id, snapshot: None, paused_here: false }
        } else if mode == Mode::Live {
            let snap_name = self.epoch_name(&name)?;
            let s = self.ctl.snapshot(id, &snap_name)?;
            Source_ { read_from: s, snapshot: Some(s), paused_here: false }
        } else {
            let was_paused = info.state == state::PAUSED;
            if !was_paused {
                self.ctl.pause(id)?;
            }
            Source_ { read_from: id, snapshot: None, paused_here: !was_paused }
        };
        let epoch_cycles = (self.cycles)().wrapping_sub(t0);
        let result = self.write_image(&info, &src, image, frozen, full);
        // Whatever happened, the epoch ends and its frames go back.
        if let Some(s) = src.snapshot {
            let _ = self.ctl.destroy(s);
        }
        match result {
            Ok(mut saved) => {
                saved.pause_cycles = if mode == Mode::Live || frozen { epoch_cycles } else { (self.cycles)().wrapping_sub(t0) };
                if mode == Mode::Save && !frozen {
                    self.ctl.destroy(id)?;
                }
                Ok(saved)
            }
            Err(e) => {
                if src.paused_here {
                    let _ = self.ctl.unpause(id);
                }
                Err(e)
            }
        }
    }

    /// A free name for a checkpoint epoch of domain `name`.
    fn epoch_name(&mut self, name: &str) -> Result<String, SaveError> {
        let base: String = name.chars().take(guest_abi::domctl::NAME_MAX_BYTES - 8).collect();
        let mut taken = Vec::new();
        for id in self.ctl.list()? {
            if let Ok(i) = self.ctl.info(id) {
                taken.push(String::from(name_str(&i.name)));
            }
        }
        (0u32..).map(|n| if n == 0 { format!("{base}.ckpt") } else { format!("{base}.ckpt{n}") }).find(|c| !taken.contains(c)).ok_or(SaveError::Hv(HvError::NameTaken))
    }

    fn write_image(&mut self, info: &DomainInfo, src: &Source_, image: &str, frozen: bool, full: bool) -> Result<Saved, SaveError> {
        let from = src.read_from;
        let name = String::from(name_str(&info.name));
        let vcpu = self.ctl.vcpu_get(from)?;
        let st = self.ctl.state_get(from)?;
        // A PC domain's devices, read from the same unchanging source as its memory (the
        // paused domain, the template, or the checkpoint epoch, which keeps its instant's).
        let platform = if info.flags & DomainFlags::PC_PLATFORM.bits() != 0 { Some(self.ctl.platform_get(from)?) } else { None };
        let stat = self.ctl.stat(info.domid)?;
        let template = if info.parent != NO_DOMAIN && !full {
            let t = self.ctl.info(info.parent)?;
            let digest = self.digests.of(self.ctl, info.parent, self.ui)?;
            Some(TemplateRef { digest, mem_bytes: t.mem_bytes, name: String::from(name_str(&t.name)) })
        } else {
            None
        };
        let kind = match (&template, frozen) {
            (Some(_), _) => ImageKind::Delta,
            (None, true) => ImageKind::Template,
            (None, false) => ImageKind::Domain,
        };
        let store_kind = match kind {
            ImageKind::Domain => store::ImageKind::Domain,
            ImageKind::Template => store::ImageKind::Template,
            ImageKind::Delta => store::ImageKind::Delta,
        };
        let mut origin = format!("d{} {}", info.domid, name);
        while origin.len() > store::MAX_ORIGIN_BYTES {
            origin.pop();
        }
        let mut writer = self.store.begin_self_checked(image, store_kind, &origin)?;
        let record = DomainRecord { name: name.clone(), mem_bytes: info.mem_bytes, quota_pages: stat.quota_pages, origin_domid: info.domid };
        let delta = info.parent != NO_DOMAIN && !full;
        let written = self.encode(&mut writer, kind, &record, &vcpu, &st, template.as_ref(), platform.as_deref(), from, delta);
        match written {
            Ok((digest, stats)) => {
                let entry = self.store.commit(writer)?;
                self.ui.clear();
                Ok(Saved {
                    image: entry.name,
                    kind,
                    bytes: stats.bytes,
                    mem_bytes: info.mem_bytes,
                    pages_written: stats.pages_written,
                    pages_zero: stats.pages_zero,
                    digest,
                    pause_cycles: 0,
                })
            }
            Err(e) => {
                self.store.abort(writer);
                self.ui.clear();
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn encode(
        &mut self,
        writer: &mut store::ImageWriter,
        kind: ImageKind,
        record: &DomainRecord,
        vcpu: &VcpuContext,
        st: &SavedState,
        template: Option<&TemplateRef>,
        platform: Option<&[u8]>,
        from: u32,
        delta: bool,
    ) -> Result<(Digest, domimage::ImageStats), SaveError> {
        let mem = record.mem_bytes;
        let pages = mem / PAGE_BYTES as u64;
        let sink = StoreSink { store: &mut *self.store, writer };
        let mut enc = Encoder::new(sink, kind, record, vcpu, st, template).map_err(SaveError::Encode)?;
        if let Some(p) = platform {
            enc.platform(p).map_err(SaveError::Encode)?;
        }
        enc.note(&format!("saved from d{} {}", record.origin_domid, record.name)).map_err(SaveError::Encode)?;
        let mut buf = PageBuf::zeroed(RUN_BYTES);
        let mut map = vec![0u8; (PRIVATE_MAP_PAGES / 8) as usize];
        let mut gfn = 0u64;
        while gfn < pages {
            // The pages to write from here: all of them, or a delta's private ones.
            let window = (pages - gfn).min(PRIVATE_MAP_PAGES);
            let private = if delta {
                self.ctl.private_map(from, gfn, &mut map[..window.div_ceil(8) as usize])?;
                Some(&map)
            } else {
                None
            };
            let is_private = |i: u64| private.is_none_or(|m| m[(i / 8) as usize] & (1 << (i % 8)) != 0);
            let mut i = 0u64;
            while i < window {
                if !is_private(i) {
                    i += 1;
                    continue;
                }
                let mut n = 1u64;
                while i + n < window && n < MAX_RUN_PAGES as u64 && is_private(i + n) {
                    n += 1;
                }
                let bytes = (n as usize) * PAGE_BYTES;
                let at = (gfn + i) * PAGE_BYTES as u64;
                self.ctl.mem_read(from, at, &mut buf[..bytes])?;
                enc.memory(gfn + i, &buf[..bytes]).map_err(SaveError::Encode)?;
                i += n;
                show_progress(self.ui, "saving", &record.name, (gfn + i) * PAGE_BYTES as u64, mem);
                if self.ui.interrupted() {
                    return Err(SaveError::Interrupted);
                }
            }
            gfn += window;
        }
        show_progress(self.ui, "saving", &record.name, mem, mem);
        let (_, digest, stats) = enc.finish().map_err(SaveError::Encode)?;
        Ok((digest, stats))
    }

    /// Checks image `image` without restoring it: the store's checksum of its bytes, then
    /// every record, every page's checksum, the counts and the digest.
    pub fn verify(&mut self, image: &str) -> Result<(Prologue, Digest, u64), SaveError> {
        self.store.verify(image)?;
        let size = self.store.find(image).map(|e| e.size_bytes).unwrap_or(0);
        let source = StoreSource { store: &mut *self.store, name: image.to_string(), offset: 0, buf: vec![0u8; READ_AHEAD_BYTES], at: 0, len: 0 };
        let (mut dec, pro) = Decoder::new(source, Limits { max_mem_bytes: MAX_DOMAIN_MEM_BYTES }).map_err(SaveError::Image)?;
        let mut buf = PageBuf::zeroed(RUN_BYTES);
        let mut pages = 0u64;
        while let Some((_, n)) = dec.next_run(&mut buf).map_err(SaveError::Image)? {
            pages += n as u64;
            show_progress(self.ui, "verifying", image, dec.position(), size);
            if self.ui.interrupted() {
                self.ui.clear();
                return Err(SaveError::Interrupted);
            }
        }
        self.ui.clear();
        let digest = dec.digest().unwrap_or([0; 32]);
        Ok((pro, digest, pages))
    }

    /// Restores image `image` as a new domain (`name`, else the saved name). A template comes
    /// back frozen; a delta is cloned from its template (which must be in memory) and gets
    /// its private pages written over. The domain runs unless `paused`.
    pub fn restore(&mut self, image: &str, name: Option<&str>, paused: bool) -> Result<Restored, SaveError> {
        let entry_size = self.store.find(image).map(|e| e.size_bytes).ok_or(SaveError::Store(StoreError::NoSuchImage))?;
        let source = StoreSource { store: &mut *self.store, name: image.to_string(), offset: 0, buf: vec![0u8; READ_AHEAD_BYTES], at: 0, len: 0 };
        let (mut dec, pro) = Decoder::new(source, Limits { max_mem_bytes: MAX_DOMAIN_MEM_BYTES }).map_err(SaveError::Image)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => pro.domain.name.clone(),
        };
        if name_taken(self.ctl, &name)? {
            return Err(SaveError::NameTaken(name));
        }
        let id = make_domain(self.ctl, self.digests, self.ui, &pro, &name)?;
        match fill(self.ctl, self.ui, id, &mut dec, &pro, &name, entry_size) {
            Ok((pages, digest)) => {
                if pro.kind == ImageKind::Template {
                    let generation = self.ctl.stat(id)?.generation;
                    if let Some(d) = digest {
                        self.digests.remember(id, generation, d);
                    }
                } else if !paused {
                    self.ctl.unpause(id)?;
                }
                Ok(Restored { domid: id, name, kind: pro.kind, mem_bytes: pro.domain.mem_bytes, pages })
            }
            Err(e) => {
                let _ = self.ctl.destroy(id);
                self.ui.clear();
                Err(e)
            }
        }
    }

}

fn name_taken<H: Hypercalls>(ctl: &mut Control<H>, name: &str) -> Result<bool, SaveError> {
    for id in ctl.list()? {
        if ctl.info(id).is_ok_and(|i| name_str(&i.name) == name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What a lazy restore made.
#[derive(Clone, Debug)]
pub struct LazyRestored {
    pub domid: u32,
    pub name: String,
    pub mem_bytes: u64,
    /// Pages of the image's working set supplied before it ran.
    pub prefetched: u64,
    /// Host TSC cycles from the start of the restore to the domain being able to run.
    pub start_cycles: u64,
}

impl<H: Hypercalls, D: BlockDevice> Saver<'_, H, D> {
    /// Restores domain image `image` lazily: the domain gets its registers, state and devices
    /// and no memory, and runs at once; `pager` (dom0's, unless `pager_dom` names another
    /// domain, which then gets a mirror of the image's pages) supplies pages on first touch
    /// and, with `background`, everything else while it runs.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_lazy(
        &mut self,
        pager: &mut crate::pager::Pager,
        image: &str,
        name: Option<&str>,
        paused: bool,
        pager_dom: Option<u32>,
        background: bool,
    ) -> Result<LazyRestored, SaveError> {
        let t0 = (self.cycles)();
        let entry = self.store.find(image).cloned().ok_or(SaveError::Store(StoreError::NoSuchImage))?;
        let source = StoreSource { store: &mut *self.store, name: image.to_string(), offset: 0, buf: vec![0u8; READ_AHEAD_BYTES], at: 0, len: 0 };
        let (dec, pro) = Decoder::new(source, Limits { max_mem_bytes: MAX_DOMAIN_MEM_BYTES }).map_err(SaveError::Image)?;
        if pro.kind != ImageKind::Domain {
            return Err(SaveError::LazyKind(pro.kind));
        }
        let start = dec.index_start().ok_or(SaveError::Image(DecodeError::Failed))?;
        drop(dec);
        let name = match name {
            Some(n) => n.to_string(),
            None => pro.domain.name.clone(),
        };
        if name_taken(self.ctl, &name)? {
            return Err(SaveError::NameTaken(name));
        }
        let mem_pages = pro.domain.mem_bytes / PAGE_BYTES as u64;
        if let Some(p) = pager_dom {
            self.prepare_pager_domain(pager, p, image, entry.sequence, &start, pro.domain.mem_bytes)?;
        }
        let mut flags = guest_abi::domctl::CREATE_LAZY;
        if pro.platform.is_some() {
            flags |= CREATE_PC_PLATFORM;
        }
        let id = self.ctl.create_with(&name, pro.domain.mem_bytes, flags)?;
        let made = (|| -> Result<u64, SaveError> {
            self.ctl.vcpu_set(id, &pro.vcpu).map_err(|e| if e == HvError::InvalidArgument { SaveError::VcpuRefused } else { SaveError::Hv(e) })?;
            if let Some(p) = &pro.platform {
                self.ctl.platform_set(id, p).map_err(|e| if e == HvError::InvalidArgument { SaveError::PlatformRefused } else { SaveError::Hv(e) })?;
            }
            self.ctl.state_set(id, &pro.state).map_err(|e| if e == HvError::InvalidArgument { SaveError::StateRefused } else { SaveError::Hv(e) })?;
            let lazy = crate::pager::LazyStart {
                client: id,
                domain: name.clone(),
                image: image.to_string(),
                image_sequence: entry.sequence,
                mem_pages,
                start: start.clone(),
                background,
                delegated: pager_dom.is_some(),
            };
            if let Some(p) = pager_dom {
                self.ctl.pager_set(id, p, 0)?;
            }
            pager.begin(self.ctl, self.store, lazy).map_err(SaveError::Pager)
        })();
        match made {
            Ok(prefetched) => {
                if !paused {
                    self.ctl.unpause(id)?;
                }
                Ok(LazyRestored { domid: id, name, mem_bytes: pro.domain.mem_bytes, prefetched, start_cycles: (self.cycles)().wrapping_sub(t0) })
            }
            Err(e) => {
                let _ = self.ctl.destroy(id);
                pager.retain(&self.ctl.list().unwrap_or_default());
                Err(e)
            }
        }
    }

    /// Makes pager domain `p` hold `image`'s mirror (filling it unless it does already).
    fn prepare_pager_domain(&mut self, pager: &mut crate::pager::Pager, p: u32, image: &str, seq: u64, start: &domimage::IndexStart, mem_bytes: u64) -> Result<(), SaveError> {
        let info = self.ctl.info(p)?;
        if info.state == state::DEAD || info.state == state::CRASHED || info.state == state::FROZEN {
            return Err(SaveError::PagerNotRunning(p));
        }
        let need = guest_abi::pager::MIRROR_BASE_GPA + mem_bytes;
        if info.mem_bytes < need {
            return Err(SaveError::PagerTooSmall { need_mib: need.div_ceil(1 << 20) });
        }
        pager.retain(&self.ctl.list()?);
        match pager.mirror_state(p, image, seq) {
            crate::pager::MirrorState::Holds => Ok(()),
            crate::pager::MirrorState::Busy => Err(SaveError::PagerBusy(p)),
            crate::pager::MirrorState::Free => {
                self.mirror_into(p, image, start, mem_bytes)?;
                pager.mirrored(p, image, seq);
                Ok(())
            }
        }
    }

    /// Hands lazy client `client` (restored by dom0 from an image it knows) to pager domain
    /// `p`, filling `p`'s mirror of that image first.
    pub fn hand_over(&mut self, pager: &mut crate::pager::Pager, client: u32, p: u32) -> Result<(), SaveError> {
        let (image, seq) = pager.image_of(client).ok_or(SaveError::Hv(HvError::WrongState))?;
        let entry = self.store.find(&image).cloned().ok_or(SaveError::Store(StoreError::NoSuchImage))?;
        if entry.sequence != seq {
            return Err(SaveError::Store(StoreError::NoSuchImage));
        }
        let source = StoreSource { store: &mut *self.store, name: image.clone(), offset: 0, buf: vec![0u8; READ_AHEAD_BYTES], at: 0, len: 0 };
        let (dec, pro) = Decoder::new(source, Limits { max_mem_bytes: MAX_DOMAIN_MEM_BYTES }).map_err(SaveError::Image)?;
        let start = dec.index_start().ok_or(SaveError::Image(DecodeError::Failed))?;
        drop(dec);
        self.prepare_pager_domain(pager, p, &image, seq, &start, pro.domain.mem_bytes)?;
        self.ctl.pager_set(client, p, 0)?;
        pager.set_delegated(client, true);
        Ok(())
    }

    /// Fills pager domain `p`'s mirror of `image`: every run verified, written at
    /// [`guest_abi::pager::MIRROR_BASE_GPA`] + its address; the gaps zeroed; the digest checked.
    fn mirror_into(&mut self, p: u32, image: &str, start: &domimage::IndexStart, mem_bytes: u64) -> Result<(), SaveError> {
        let base = guest_abi::pager::MIRROR_BASE_GPA;
        let mut walker = domimage::IndexWalker::new(start);
        let mut buf = PageBuf::zeroed(RUN_BYTES);
        let zero = PageBuf::zeroed(RUN_BYTES);
        let mut next = 0u64;
        loop {
            let mut src = crate::pager::StoreAt { store: &mut *self.store, name: image };
            match walker.step(&mut src).map_err(SaveError::Image)? {
                domimage::WalkStep::Run(e) => {
                    domimage::read_run(&mut src, &e, &mut buf).map_err(SaveError::Image)?;
                    let mut gap = next;
                    while gap < e.first_gfn {
                        let n = (e.first_gfn - gap).min(MAX_RUN_PAGES as u64);
                        self.ctl.mem_write(p, base + gap * PAGE_BYTES as u64, &zero[..n as usize * PAGE_BYTES])?;
                        gap += n;
                    }
                    let bytes = e.pages as usize * PAGE_BYTES;
                    self.ctl.mem_write(p, base + e.first_gfn * PAGE_BYTES as u64, &buf[..bytes])?;
                    next = e.first_gfn + u64::from(e.pages);
                    show_progress(self.ui, "mirroring", image, next * PAGE_BYTES as u64, mem_bytes);
                }
                domimage::WalkStep::Skipped => {}
                domimage::WalkStep::End(_) => break,
            }
        }
        let pages = mem_bytes / PAGE_BYTES as u64;
        while next < pages {
            let n = (pages - next).min(MAX_RUN_PAGES as u64);
            self.ctl.mem_write(p, base + next * PAGE_BYTES as u64, &zero[..n as usize * PAGE_BYTES])?;
            next += n;
        }
        self.ui.clear();
        Ok(())
    }
}

/// A paused domain the image's memory is written into: new and zeroed (with the emulated PC
/// platform if the image carries one), or a paused clone of a delta's template (which
/// inherits the template's platform until `fill` sets the image's).
fn make_domain<H: Hypercalls>(ctl: &mut Control<H>, digests: &mut DigestCache, ui: &mut dyn Ui, pro: &Prologue, name: &str) -> Result<u32, SaveError> {
    let Some(t) = &pro.template else {
        let flags = if pro.platform.is_some() { CREATE_PC_PLATFORM } else { 0 };
        return Ok(ctl.create_with(name, pro.domain.mem_bytes, flags)?);
    };
    for id in ctl.list()? {
        let Ok(info) = ctl.info(id) else { continue };
        if info.state != state::FROZEN || info.mem_bytes != t.mem_bytes {
            continue;
        }
        if digests.of(ctl, id, ui)? == t.digest {
            return Ok(ctl.clone_with(id, name, pro.state.clone_index, pro.domain.quota_pages, CLONE_PAUSED)?);
        }
    }
    Err(SaveError::TemplateMissing { digest: short_digest(&t.digest), name: t.name.clone() })
}

/// Writes the image's memory and state into paused domain `id`; the last run read checks the
/// image digest (END), and only then are the devices and the saved state applied and a
/// template frozen.
fn fill<H: Hypercalls, D: BlockDevice>(
    ctl: &mut Control<H>,
    ui: &mut dyn Ui,
    id: u32,
    dec: &mut Decoder<StoreSource<'_, D>>,
    pro: &Prologue,
    name: &str,
    size: u64,
) -> Result<(u64, Option<Digest>), SaveError> {
    ctl.vcpu_set(id, &pro.vcpu).map_err(|e| if e == HvError::InvalidArgument { SaveError::VcpuRefused } else { SaveError::Hv(e) })?;
    let mut buf = PageBuf::zeroed(RUN_BYTES);
    let mut pages = 0u64;
    let mut hasher = (pro.kind == ImageKind::Template).then(|| ContentHasher::new(pro.domain.mem_bytes));
    while let Some((gfn, n)) = dec.next_run(&mut buf).map_err(SaveError::Image)? {
        let bytes = n * PAGE_BYTES;
        ctl.mem_write(id, gfn * PAGE_BYTES as u64, &buf[..bytes])?;
        if let Some(h) = hasher.as_mut() {
            hash_run(h, gfn, &buf[..bytes]);
        }
        pages += n as u64;
        show_progress(ui, "restoring", name, dec.position(), size);
        if ui.interrupted() {
            return Err(SaveError::Interrupted);
        }
    }
    if let Some(p) = &pro.platform {
        ctl.platform_set(id, p).map_err(|e| if e == HvError::InvalidArgument { SaveError::PlatformRefused } else { SaveError::Hv(e) })?;
    }
    ctl.state_set(id, &pro.state).map_err(|e| if e == HvError::InvalidArgument { SaveError::StateRefused } else { SaveError::Hv(e) })?;
    if pro.kind == ImageKind::Template {
        ctl.freeze(id)?;
    }
    ui.clear();
    Ok((pages, hasher.map(ContentHasher::finish)))
}

/// One line about a save, for the shell.
pub fn saved_line(verb: &str, domid: u32, name: &str, s: &Saved) -> String {
    format!(
        "{verb} domain {domid} {name} to {} ({}, {} KiB image of {} MiB: {} pages written, {} zero pages elided)",
        s.image,
        kind_name(s.kind),
        kib(s.bytes),
        s.mem_bytes >> 20,
        s.pages_written,
        s.pages_zero
    )
}

/// `domain`, `template` or `delta`.
pub fn kind_name(k: ImageKind) -> &'static str {
    match k {
        ImageKind::Domain => "domain",
        ImageKind::Template => "template",
        ImageKind::Delta => "delta",
    }
}

/// Hex of a digest's first bytes, for display.
pub fn short_digest(d: &Digest) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

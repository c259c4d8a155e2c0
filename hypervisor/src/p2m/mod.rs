//! The guest-physical to machine map (P2M): four-level second-level page tables, one engine
//! for both EPT and NPT entry formats, with hierarchical copy-on-write.
//!
//! Reference counts live in the frame table: a table page counts the parent entries (or the
//! owning domain, for a root) that point at it; a data frame counts the leaf entries that map
//! it. A clone's root is a copy of its template's root with write access removed from every
//! entry, so the clone shares whole subtrees and cloning costs one page whatever the template's
//! size. A write into a shared subtree copies, on the way down, each table that is still
//! shared (its children gain a reference), and finally the page itself. An entry grants write
//! access only when everything below it is referenced by that entry alone.

pub mod entry;

use crate::mm::frame::{FrameError, FrameKind, FrameTable, Owner, Pfn};
use crate::mm::physmem::{ENTRIES_PER_TABLE, PhysMem};
use core::marker::PhantomData;
pub use entry::{EntryFormat, Ept, Npt, P2mType};

/// Number of levels (PML4, PDPT, PD, PT).
pub const LEVELS: usize = 4;
/// The most frames one write can allocate: a copy of each table below the root, and the page.
pub const MAX_WRITE_COST_FRAMES: u64 = LEVELS as u64;
/// Guest frame numbers must be below this (48-bit guest-physical addresses).
pub const GFN_LIMIT: u64 = 1 << 36;

/// A guest frame number (guest-physical address >> 12).
pub type Gfn = u64;

/// Why a P2M operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2mError {
    /// No free frame for a table or a page copy.
    OutOfMemory,
    /// The domain's private-page quota does not allow another copy.
    QuotaExceeded,
    /// Nothing is mapped at this guest frame.
    Unmapped(Gfn),
    /// A write to a page whose type forbids it.
    ReadOnly(Gfn, P2mType),
    /// Something is already mapped at this guest frame.
    AlreadyMapped(Gfn),
    /// The guest frame number is beyond the 48-bit address space.
    BadGfn(Gfn),
    /// The frame table refused an operation (a hypervisor bug, reported not panicked).
    Frame(FrameError),
}

impl From<FrameError> for P2mError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::OutOfMemory => Self::OutOfMemory,
            other => Self::Frame(other),
        }
    }
}

/// A mapped guest page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The machine frame.
    pub pfn: Pfn,
    /// Whether the guest may write it without a fault (only after every level grants write).
    pub writable: bool,
    /// The page type.
    pub ty: P2mType,
}

/// How a write fault was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// The page was shared: the writer got a private copy.
    Copied {
        /// Shared tables copied on the way down.
        tables_copied: u32,
    },
    /// The page was write-protected but referenced only here: write access was granted.
    Granted {
        /// Shared tables copied on the way down.
        tables_copied: u32,
    },
    /// The mapping already allows writing (a stale TLB entry caused the fault).
    Spurious,
}

impl WriteFault {
    /// Whether translations derived from the old tables must be flushed.
    pub fn needs_flush(self) -> bool {
        match self {
            Self::Copied { .. } => true,
            Self::Granted { tables_copied } => tables_copied > 0,
            Self::Spurious => false,
        }
    }
}

/// What a write may do when it meets a shared or protected page.
#[derive(Clone, Copy, Debug)]
pub struct WritePolicy {
    /// Owner of frames allocated for copies.
    pub owner: Owner,
    /// Frames (page copies and table copies alike) the domain may still gain.
    pub quota_left: u64,
    /// Whether the hypervisor (not the guest) is writing, which may write `Info` pages.
    pub privileged: bool,
}

fn index(gfn: Gfn, level: usize) -> usize {
    ((gfn >> (9 * level)) & 0x1FF) as usize
}

/// One domain's P2M, identified by its root table.
pub struct P2m<F: EntryFormat> {
    root: Pfn,
    /// The root's entries are all read-only (it has been cloned and has not written since),
    /// so cloning it again needs no revocation pass.
    root_revoked: bool,
    /// One past the highest gfn whose path this P2M has built or changed. Every present
    /// entry of every table it reaches lies below it (a shared table is never changed, and a
    /// clone starts with its template's `top`), so a table copy stops at the entries that can
    /// be present ([`used_entries`]) and takes the rest from a pre-zeroed frame.
    top: Gfn,
    _format: PhantomData<F>,
}

/// How many leading entries of the table at `level` whose range starts at `base` can hold
/// something in a P2M whose `top` is `top`.
fn used_entries(top: Gfn, base: Gfn, level: usize) -> usize {
    let span = 1u64 << (9 * level);
    (top.saturating_sub(base).div_ceil(span)).min(ENTRIES_PER_TABLE as u64) as usize
}

impl<F: EntryFormat> core::fmt::Debug for P2m<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "P2m<{}>({:#x})", F::NAME, self.root.0)
    }
}

impl<F: EntryFormat> P2m<F> {
    /// An empty P2M owned by `owner`.
    pub fn new<M: PhysMem>(ft: &mut FrameTable<'_>, mem: &M, owner: Owner) -> Result<Self, P2mError> {
        let root = ft.alloc(FrameKind::PageTable, owner)?;
        mem.zero_frame(root);
        Ok(Self { root, root_revoked: false, top: 0, _format: PhantomData })
    }

    /// A P2M sharing everything `template` maps, read-only: one new page, whatever the size.
    /// The template's own root entries lose write access too, so if it keeps running (a live
    /// checkpoint) its writes are copied as well and the clone keeps the state of this instant.
    /// A running template's stale writable translations must then be flushed by the caller.
    pub fn clone_of<M: PhysMem>(
        ft: &mut FrameTable<'_>,
        mem: &M,
        template: &mut Self,
        owner: Owner,
    ) -> Result<Self, P2mError> {
        let used = used_entries(template.top, 0, LEVELS - 1);
        let root = duplicate_table::<F, M>(ft, mem, template.root, LEVELS - 1, owner, used)?;
        if !template.root_revoked {
            revoke_writes::<F, M>(mem, template.root);
            template.root_revoked = true;
        }
        Ok(Self { root, root_revoked: false, top: template.top, _format: PhantomData })
    }

    /// The root table (EPTP / nCR3 base).
    pub fn root(&self) -> Pfn {
        self.root
    }

    /// The mapping of `gfn`, if any.
    pub fn lookup<M: PhysMem>(&self, mem: &M, gfn: Gfn) -> Option<Leaf> {
        if gfn >= GFN_LIMIT {
            return None;
        }
        let mut table = self.root;
        let mut writable = true;
        for level in (1..LEVELS).rev() {
            let e = mem.read_entry(table, index(gfn, level));
            if !F::is_present(e) {
                return None;
            }
            writable &= F::is_writable(e);
            table = F::pfn(e);
        }
        let e = mem.read_entry(table, index(gfn, 0));
        F::is_present(e).then(|| Leaf { pfn: F::pfn(e), writable: writable && F::is_writable(e), ty: F::p2m_type(e) })
    }

    /// Makes every table on the path to `gfn` referenced by this P2M alone, copying shared
    /// ones (or creating missing ones when `create`), and returns the last-level table.
    fn private_path<M: PhysMem>(
        &mut self,
        ft: &mut FrameTable<'_>,
        mem: &M,
        gfn: Gfn,
        owner: Owner,
        create: bool,
        tables_copied: &mut u32,
    ) -> Result<Pfn, P2mError> {
        if gfn >= GFN_LIMIT {
            return Err(P2mError::BadGfn(gfn));
        }
        self.top = self.top.max(gfn + 1);
        let mut table = self.root;
        for level in (1..LEVELS).rev() {
            let i = index(gfn, level);
            let e = mem.read_entry(table, i);
            if level == LEVELS - 1 && !(F::is_present(e) && F::is_writable(e)) {
                // The root gains a writable entry below.
                self.root_revoked = false;
            }
            let child = if !F::is_present(e) {
                if !create {
                    return Err(P2mError::Unmapped(gfn));
                }
                // Building a domain zeroes its own new tables; the pre-zeroed pool is kept
                // for clones and copy-on-write faults.
                let t = ft.alloc(FrameKind::PageTable, owner)?;
                mem.zero_frame(t);
                mem.write_entry(table, i, F::table(t));
                t
            } else {
                let child = F::pfn(e);
                match PathStep::Private.next::<F>(e, ft.refs(child)) {
                    PathStep::Private => child,
                    PathStep::Copied => {
                        let base = gfn & !((1u64 << (9 * level)) - 1);
                        let used = used_entries(self.top, base, level - 1);
                        let copy = duplicate_table::<F, M>(ft, mem, child, level - 1, owner, used)?;
                        ft.put_ref(child)?;
                        mem.write_entry(table, i, F::table(copy));
                        *tables_copied += 1;
                        copy
                    }
                    PathStep::TakenOver => {
                        // Its own entries lose write access, so whatever they point at is
                        // re-checked on the next write.
                        revoke_writes::<F, M>(mem, child);
                        mem.write_entry(table, i, F::with_writable(e, true));
                        child
                    }
                }
            };
            table = child;
        }
        Ok(table)
    }

    /// Maps the frame `pfn` at `gfn`. The caller's reference on `pfn` becomes the mapping's.
    pub fn map<M: PhysMem>(
        &mut self,
        ft: &mut FrameTable<'_>,
        mem: &M,
        gfn: Gfn,
        pfn: Pfn,
        writable: bool,
        ty: P2mType,
        owner: Owner,
    ) -> Result<(), P2mError> {
        let mut copied = 0;
        let pt = self.private_path(ft, mem, gfn, owner, true, &mut copied)?;
        let i = index(gfn, 0);
        if F::is_present(mem.read_entry(pt, i)) {
            return Err(P2mError::AlreadyMapped(gfn));
        }
        mem.write_entry(pt, i, F::leaf(pfn, writable, ty));
        Ok(())
    }

    /// Replaces the mapping at `gfn` with `pfn`, dropping the old frame's reference. Used to
    /// give a clone its own start-of-day page.
    pub fn replace<M: PhysMem>(
        &mut self,
        ft: &mut FrameTable<'_>,
        mem: &M,
        gfn: Gfn,
        pfn: Pfn,
        writable: bool,
        ty: P2mType,
        owner: Owner,
    ) -> Result<u32, P2mError> {
        let mut copied = 0;
        let pt = self.private_path(ft, mem, gfn, owner, false, &mut copied)?;
        let i = index(gfn, 0);
        let old = mem.read_entry(pt, i);
        if !F::is_present(old) {
            return Err(P2mError::Unmapped(gfn));
        }
        mem.write_entry(pt, i, F::leaf(pfn, writable, ty));
        release_data::<F>(ft, F::pfn(old))?;
        Ok(copied)
    }

    /// Resolves a write to `gfn` that faulted (or that the hypervisor is about to make):
    /// copies shared tables on the way down and then the page itself if it is shared.
    pub fn write_fault<M: PhysMem>(
        &mut self,
        ft: &mut FrameTable<'_>,
        mem: &M,
        gfn: Gfn,
        policy: WritePolicy,
    ) -> Result<WriteFault, P2mError> {
        // Refuse read-only types before touching anything.
        let leaf = self.lookup(mem, gfn).ok_or(P2mError::Unmapped(gfn))?;
        match leaf.ty {
            P2mType::Rom => return Err(P2mError::ReadOnly(gfn, leaf.ty)),
            P2mType::Info if !policy.privileged => return Err(P2mError::ReadOnly(gfn, leaf.ty)),
            _ => {}
        }
        if leaf.writable {
            return Ok(WriteFault::Spurious);
        }
        // Everything the write will allocate is counted and checked first, so a write that
        // cannot complete allocates nothing and changes nothing. With room for the most any
        // write can take (three tables and the page), counting is not needed.
        let quota_left = if leaf.ty == P2mType::Ram { policy.quota_left } else { u64::MAX };
        if quota_left.min(ft.free_frames()) < MAX_WRITE_COST_FRAMES {
            check_cost(ft, self.write_cost(ft, mem, gfn)?, quota_left)?;
        }
        // Make the tables private first: copying a shared last-level table adds a reference
        // to every page it maps, so only afterwards does the page's count tell whether anyone
        // else maps it.
        let mut tables_copied = 0;
        let pt = self.private_path(ft, mem, gfn, policy.owner, false, &mut tables_copied)?;
        let i = index(gfn, 0);
        let e = mem.read_entry(pt, i);
        let old = F::pfn(e);
        // The start-of-day page stays read-only to the guest however the hypervisor writes it.
        let guest_writable = leaf.ty != P2mType::Info;
        if ft.refs(old) <= 1 || !ft.kind(old).is_allocatable() {
            mem.write_entry(pt, i, F::with_writable(e, guest_writable));
            return Ok(WriteFault::Granted { tables_copied });
        }
        let kind = if leaf.ty == P2mType::Info { FrameKind::DomainInfo } else { FrameKind::DomainRam };
        let new = ft.alloc(kind, policy.owner)?;
        mem.copy_frame(new, old);
        mem.write_entry(pt, i, F::leaf(new, guest_writable, leaf.ty));
        ft.put_ref(old)?;
        Ok(WriteFault::Copied { tables_copied })
    }

    /// Removes write access from the RAM pages `[gfn, gfn + pages)` so the next write to each
    /// takes a fault (dirty tracking). Every page must be mapped RAM, and the shared tables
    /// that must be copied to get there must fit in `quota_left` and in free memory; nothing
    /// changes otherwise. Returns the number of tables copied.
    pub fn write_protect<M: PhysMem>(
        &mut self,
        ft: &mut FrameTable<'_>,
        mem: &M,
        gfn: Gfn,
        pages: u64,
        owner: Owner,
        quota_left: u64,
    ) -> Result<u32, P2mError> {
        let end = gfn.checked_add(pages).filter(|&e| e <= GFN_LIMIT).ok_or(P2mError::BadGfn(gfn))?;
        let cost = self.protect_cost(ft, mem, gfn, end)?;
        check_cost(ft, cost, quota_left)?;
        let mut copied = 0;
        let mut g = gfn;
        while g < end {
            let pt = self.private_path(ft, mem, g, owner, false, &mut copied)?;
            // Everything up to the end of this last-level table shares `pt`.
            let stop = end.min((g | 0x1FF) + 1);
            for x in g..stop {
                let i = index(x, 0);
                let e = mem.read_entry(pt, i);
                mem.write_entry(pt, i, F::with_writable(e, false));
            }
            g = stop;
        }
        Ok(copied)
    }

    /// Frames a write to `gfn` would allocate: the shared tables on its path that must be
    /// copied and, if the page is then shared, the page. 0 for a write that needs no fault.
    pub fn write_cost<M: PhysMem>(&self, ft: &FrameTable<'_>, mem: &M, gfn: Gfn) -> Result<u64, P2mError> {
        if gfn >= GFN_LIMIT {
            return Err(P2mError::BadGfn(gfn));
        }
        // A copied last-level table adds a reference to the page, which is then shared.
        let page_cost = |_: Gfn, e: u64, table: PathStep| {
            let page = F::pfn(e);
            Ok(u64::from(ft.kind(page).is_allocatable() && (table == PathStep::Copied || ft.refs(page) > 1)))
        };
        privatize_cost::<F, M>(ft, mem, self.root, LEVELS - 1, 0, gfn, gfn + 1, PathStep::Private, &page_cost)
    }

    /// Frames write-protecting `[gfn, end)` would allocate: the shared tables on the way that
    /// must be copied. Fails unless every page in the range is mapped RAM.
    pub fn protect_cost<M: PhysMem>(&self, ft: &FrameTable<'_>, mem: &M, gfn: Gfn, end: Gfn) -> Result<u64, P2mError> {
        let ram_only = |g: Gfn, e: u64, _: PathStep| match F::p2m_type(e) {
            P2mType::Ram => Ok(0),
            ty => Err(P2mError::ReadOnly(g, ty)),
        };
        privatize_cost::<F, M>(ft, mem, self.root, LEVELS - 1, 0, gfn, end, PathStep::Private, &ram_only)
    }

    /// Drops every reference this P2M holds; frames nobody else references are freed.
    pub fn destroy<M: PhysMem>(self, ft: &mut FrameTable<'_>, mem: &M) -> Result<(), P2mError> {
        release_table::<F, M>(ft, mem, self.root, LEVELS - 1)
    }

    /// Calls `f(table, level)` for every table reachable from the root that `seen` has not
    /// seen yet (tables shared between domains are visited once overall), and `leaf(pfn)` for
    /// every leaf entry in newly visited last-level tables.
    pub fn visit<M: PhysMem>(
        &self,
        mem: &M,
        seen: &mut dyn FnMut(Pfn) -> bool,
        f: &mut dyn FnMut(Pfn, usize, u64),
    ) {
        visit_table::<F, M>(mem, self.root, LEVELS - 1, seen, f);
    }
}

fn visit_table<F: EntryFormat, M: PhysMem>(
    mem: &M,
    table: Pfn,
    level: usize,
    seen: &mut dyn FnMut(Pfn) -> bool,
    f: &mut dyn FnMut(Pfn, usize, u64),
) {
    if seen(table) {
        return;
    }
    for i in 0..ENTRIES_PER_TABLE {
        let e = mem.read_entry(table, i);
        if !F::is_present(e) {
            continue;
        }
        f(table, level, e);
        if level > 0 {
            visit_table::<F, M>(mem, F::pfn(e), level - 1, seen, f);
        }
    }
}

/// What making a path private does to each table on it ([`P2m::private_path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathStep {
    /// Its entry already grants write access: it stays as it is.
    Private,
    /// Referenced only here: taken over, its entries losing write access.
    TakenOver,
    /// Shared: copied (the copy's entries are read-only and add a reference to each child).
    Copied,
}

impl PathStep {
    /// The step for the table that entry `e` of a table treated with `self` points at,
    /// referenced `refs` times. A taken-over or copied table's entries are read-only, whatever
    /// they held: a running source that was cloned keeps writable entries below its revoked
    /// root, over subtrees that others may share.
    fn next<F: EntryFormat>(self, e: u64, refs: u32) -> Self {
        if F::is_writable(e) && self == Self::Private {
            Self::Private
        } else if self == Self::Copied || refs > 1 {
            Self::Copied
        } else {
            Self::TakenOver
        }
    }
}

/// Tables that making the paths to `[start, end)` private would copy, below `table` (at
/// `level`, covering the guest frames from `base`, treated with `step`), plus what `page`
/// charges for each page (given its leaf entry and the step of the table holding it). Each
/// table is counted once, however many paths cross it; a page or table missing on the way
/// fails with the first guest frame it leaves unmapped.
#[allow(clippy::too_many_arguments)]
fn privatize_cost<F: EntryFormat, M: PhysMem>(
    ft: &FrameTable<'_>,
    mem: &M,
    table: Pfn,
    level: usize,
    base: Gfn,
    start: Gfn,
    end: Gfn,
    step: PathStep,
    page: &dyn Fn(Gfn, u64, PathStep) -> Result<u64, P2mError>,
) -> Result<u64, P2mError> {
    if start >= end {
        return Ok(0);
    }
    let span = 1u64 << (9 * level);
    let first = ((start.max(base) - base) / span) as usize;
    let last = ((end.min(base + span * ENTRIES_PER_TABLE as u64) - 1 - base) / span) as usize;
    let mut cost = 0;
    for i in first..=last.min(ENTRIES_PER_TABLE - 1) {
        let e = mem.read_entry(table, i);
        let covers = base + i as u64 * span;
        if !F::is_present(e) {
            return Err(P2mError::Unmapped(start.max(covers)));
        }
        if level == 0 {
            cost += page(covers, e, step)?;
            continue;
        }
        let child = F::pfn(e);
        let s = step.next::<F>(e, ft.refs(child));
        cost += u64::from(s == PathStep::Copied);
        cost += privatize_cost::<F, M>(ft, mem, child, level - 1, covers, start, end, s, page)?;
    }
    Ok(cost)
}

/// Refuses an operation that would allocate `cost` frames beyond `quota_left` or free memory.
fn check_cost(ft: &FrameTable<'_>, cost: u64, quota_left: u64) -> Result<(), P2mError> {
    if cost > quota_left {
        Err(P2mError::QuotaExceeded)
    } else if cost > ft.free_frames() {
        Err(P2mError::OutOfMemory)
    } else {
        Ok(())
    }
}

/// Entries scanned together when copying tables (most entries of sparse tables are empty).
const SCAN_GROUP: usize = 8;

/// Copies a table (at `level`) into a new frame, removing write access from every entry and
/// adding a reference to everything it points at. Empty groups of entries are skipped with
/// one test, since the upper levels of a guest's tables are nearly empty.
fn duplicate_table<F: EntryFormat, M: PhysMem>(
    ft: &mut FrameTable<'_>,
    mem: &M,
    src: Pfn,
    level: usize,
    owner: Owner,
    used: usize,
) -> Result<Pfn, P2mError> {
    // Entries from `used` on are empty in `src`; they need a zero, and a pre-zeroed frame
    // already has it. A copy that writes every entry leaves the pool alone.
    let (new, zeroed) = if used < ENTRIES_PER_TABLE {
        ft.alloc_zeroed(FrameKind::PageTable, owner)?
    } else {
        (ft.alloc(FrameKind::PageTable, owner)?, false)
    };
    // SAFETY: `src` is a live table page and `new` was just allocated; both are 4 KiB,
    // 8-byte aligned frames (PhysMem contract) and distinct, and no other reference to them
    // exists while the hypervisor runs this code.
    let (from, to) = unsafe {
        (&*(mem.frame_ptr(src) as *const [u64; ENTRIES_PER_TABLE]), &mut *(mem.frame_ptr(new) as *mut [u64; ENTRIES_PER_TABLE]))
    };
    let groups = used.div_ceil(SCAN_GROUP);
    if !zeroed {
        to[groups * SCAN_GROUP..].fill(0);
    }
    for (f, t) in from.chunks_exact(SCAN_GROUP).zip(to.chunks_exact_mut(SCAN_GROUP)).take(groups) {
        if f.iter().fold(0, |acc, &e| acc | e) == 0 {
            if !zeroed {
                t.fill(0);
            }
            continue;
        }
        for (&e, out) in f.iter().zip(t.iter_mut()) {
            if !F::is_present(e) {
                *out = 0;
                continue;
            }
            // Tables and guest pages are reference counted; boot-bundle (ROM) pages are not,
            // and only leaves may point at them.
            let counted = if level > 0 { ft.bump_table_ref(F::pfn(e).0) } else { ft.bump_ref(F::pfn(e).0) };
            if !counted && level > 0 {
                let _ = ft.free(new);
                return Err(P2mError::Frame(crate::mm::frame::FrameError::NotAllocated(F::pfn(e))));
            }
            *out = F::with_writable(e, false);
        }
    }
    debug_assert!(from[groups * SCAN_GROUP..].iter().all(|&e| !F::is_present(e)), "a present entry at or past the P2M's top");
    Ok(new)
}

/// Removes write access from every entry of a table.
fn revoke_writes<F: EntryFormat, M: PhysMem>(mem: &M, table: Pfn) {
    for i in 0..ENTRIES_PER_TABLE {
        let e = mem.read_entry(table, i);
        if F::is_present(e) && F::is_writable(e) {
            mem.write_entry(table, i, F::with_writable(e, false));
        }
    }
}

fn release_data<F: EntryFormat>(ft: &mut FrameTable<'_>, pfn: Pfn) -> Result<(), P2mError> {
    // Boot-bundle pages (ROM) are not reference counted.
    if ft.kind(pfn).is_allocatable() {
        ft.put_ref(pfn)?;
    }
    Ok(())
}

fn release_table<F: EntryFormat, M: PhysMem>(
    ft: &mut FrameTable<'_>,
    mem: &M,
    table: Pfn,
    level: usize,
) -> Result<(), P2mError> {
    if ft.refs(table) > 1 {
        ft.put_ref(table)?;
        return Ok(());
    }
    for i in 0..ENTRIES_PER_TABLE {
        let e = mem.read_entry(table, i);
        if !F::is_present(e) {
            continue;
        }
        if level > 0 {
            release_table::<F, M>(ft, mem, F::pfn(e), level - 1)?;
        } else {
            release_data::<F>(ft, F::pfn(e))?;
        }
    }
    ft.put_ref(table)?;
    Ok(())
}

#[cfg(test)]
mod tests;

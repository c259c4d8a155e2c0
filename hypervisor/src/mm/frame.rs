//! The frame table: one record per 4 KiB machine frame (kind, owner, reference count) and an
//! O(1) free list threaded through the records of free frames. Copy-on-write cloning shares
//! frames between domains; the reference count says how many mappings still hold one.

use core::mem::MaybeUninit;

/// Bytes in a frame.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A machine (host-physical) frame number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pfn(pub u64);

impl Pfn {
    /// The frame holding physical address `addr`.
    pub const fn containing(addr: u64) -> Self {
        Self(addr >> PAGE_SHIFT)
    }

    /// Physical address of the frame's first byte.
    pub const fn addr(self) -> u64 {
        self.0 << PAGE_SHIFT
    }
}

/// What a frame is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Not RAM we may use: firmware, MMIO holes, the bootloader's and the kernel image's frames.
    Reserved = 0,
    /// On the free list.
    Free = 1,
    /// The hypervisor's own: frame table, heap, stacks, VMCS/VMCB and bitmaps.
    Hypervisor = 2,
    /// A second-level (EPT/NPT) page-table page.
    PageTable = 3,
    /// Guest RAM owned by a domain (possibly shared read-only with clones).
    DomainRam = 4,
    /// A domain's start-of-day page (read-only to the guest).
    DomainInfo = 5,
    /// A page of the boot bundle (guest images), mapped read-only into dom0.
    Bundle = 6,
}

/// Number of [`FrameKind`] variants.
pub const KIND_COUNT: usize = 7;

impl FrameKind {
    /// Every kind, in discriminant order.
    pub const ALL: [FrameKind; KIND_COUNT] = [
        Self::Reserved,
        Self::Free,
        Self::Hypervisor,
        Self::PageTable,
        Self::DomainRam,
        Self::DomainInfo,
        Self::Bundle,
    ];

    /// Whether frames of this kind come from and go back to the free list.
    pub const fn is_allocatable(self) -> bool {
        matches!(self, Self::Hypervisor | Self::PageTable | Self::DomainRam | Self::DomainInfo)
    }
}

/// Who a frame belongs to: a domain id, or one of the special owners below.
pub type Owner = u32;
/// Owner of free and reserved frames.
pub const OWNER_NONE: Owner = u32::MAX;
/// Owner of the hypervisor's own frames.
pub const OWNER_HYPERVISOR: Owner = u32::MAX - 1;

const NIL: u32 = u32::MAX;

/// The record kept for each frame.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct FrameInfo {
    /// Mappings or other references holding the frame; 0 when free or reserved.
    refs: u32,
    /// The owning domain, or the next free frame's number while on the free list.
    owner: u32,
    /// What the frame is used for.
    kind: FrameKind,
    _pad: [u8; 3],
}

impl FrameInfo {
    const RESERVED: Self = Self { refs: 0, owner: OWNER_NONE, kind: FrameKind::Reserved, _pad: [0; 3] };
}

/// Bytes of frame table needed per frame.
pub const FRAME_INFO_BYTES: usize = core::mem::size_of::<FrameInfo>();

/// Why a frame operation failed. Each of these is a hypervisor bug or exhaustion, never
/// something a guest can cause directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame left.
    OutOfMemory,
    /// The frame number is beyond the table.
    OutOfRange(Pfn),
    /// The frame is free or reserved, so it cannot be freed or referenced.
    NotAllocated(Pfn),
    /// The frame is not reserved, so it cannot be claimed at boot.
    NotReserved(Pfn),
    /// The reference count would overflow.
    RefOverflow(Pfn),
}

/// A violated frame-table invariant found by [`FrameTable::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvariantError {
    /// The free list does not hold exactly the frames marked free.
    FreeListMismatch { listed: u64, marked: u64 },
    /// The per-kind counters disagree with a recount.
    KindCountMismatch { kind: FrameKind, counted: u64, recorded: u64 },
    /// An allocated frame has no reference.
    UnreferencedFrame(Pfn),
    /// Free + used frames differ from the usable total found at boot.
    TotalMismatch { free: u64, used: u64, total: u64 },
}

/// Frame counts by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames per [`FrameKind`], indexed by discriminant.
    pub by_kind: [u64; KIND_COUNT],
    /// Usable frames found at boot (everything but [`FrameKind::Reserved`]).
    pub usable: u64,
}

impl FrameStats {
    /// Frames of one kind.
    pub fn get(&self, kind: FrameKind) -> u64 {
        self.by_kind[kind as usize]
    }
}

/// The table of all frames below the highest usable address.
pub struct FrameTable<'a> {
    frames: &'a mut [FrameInfo],
    free_head: u32,
    /// Free frames known to be all zeros (filled while the CPU is idle), handed out first to
    /// whoever would zero a frame anyway, and last to everyone else.
    zeroed_head: u32,
    zeroed: u64,
    by_kind: [u64; KIND_COUNT],
    usable: u64,
}

/// The most free frames kept zeroed ahead of need (4 MiB).
pub const ZEROED_POOL_FRAMES: u64 = 1024;

impl<'a> FrameTable<'a> {
    /// Initializes `storage` (one record per frame) with every frame reserved.
    pub fn new(storage: &'a mut [MaybeUninit<FrameInfo>]) -> Self {
        assert!(storage.len() < NIL as usize, "frame table larger than 16 TiB");
        for slot in storage.iter_mut() {
            slot.write(FrameInfo::RESERVED);
        }
        // SAFETY: every element was initialized just above.
        let frames = unsafe { &mut *(storage as *mut [MaybeUninit<FrameInfo>] as *mut [FrameInfo]) };
        let mut by_kind = [0; KIND_COUNT];
        by_kind[FrameKind::Reserved as usize] = frames.len() as u64;
        Self { frames, free_head: NIL, zeroed_head: NIL, zeroed: 0, by_kind, usable: 0 }
    }

    /// Number of frames the table covers.
    pub fn len(&self) -> u64 {
        self.frames.len() as u64
    }

    /// True if the table covers no frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn slot(&self, pfn: Pfn) -> Result<&FrameInfo, FrameError> {
        self.frames.get(pfn.0 as usize).ok_or(FrameError::OutOfRange(pfn))
    }

    fn slot_mut(&mut self, pfn: Pfn) -> Result<&mut FrameInfo, FrameError> {
        self.frames.get_mut(pfn.0 as usize).ok_or(FrameError::OutOfRange(pfn))
    }

    fn retag(&mut self, pfn: Pfn, kind: FrameKind) {
        let old = self.frames[pfn.0 as usize].kind;
        self.by_kind[old as usize] -= 1;
        self.by_kind[kind as usize] += 1;
        self.frames[pfn.0 as usize].kind = kind;
    }

    /// Marks the reserved frames `[start, end)` usable and puts them on the free list, so
    /// that the lowest frame is handed out first.
    pub fn add_free_range(&mut self, start: Pfn, end: Pfn) -> Result<(), FrameError> {
        for n in (start.0..end.0).rev() {
            let pfn = Pfn(n);
            if self.slot(pfn)?.kind != FrameKind::Reserved {
                return Err(FrameError::NotReserved(pfn));
            }
            self.usable += 1;
            self.push_free(pfn);
        }
        Ok(())
    }

    fn push_free(&mut self, pfn: Pfn) {
        self.retag(pfn, FrameKind::Free);
        let head = self.free_head;
        let f = &mut self.frames[pfn.0 as usize];
        f.refs = 0;
        f.owner = head;
        self.free_head = pfn.0 as u32;
    }

    /// Takes a reserved frame inside usable RAM for boot-time use (frame table, heap, stacks)
    /// before the rest of that RAM goes on the free list. Counted as usable.
    pub fn claim_reserved(&mut self, pfn: Pfn, kind: FrameKind, owner: Owner) -> Result<(), FrameError> {
        if self.slot(pfn)?.kind != FrameKind::Reserved {
            return Err(FrameError::NotReserved(pfn));
        }
        self.usable += 1;
        self.retag(pfn, kind);
        let f = &mut self.frames[pfn.0 as usize];
        f.refs = 1;
        f.owner = owner;
        Ok(())
    }

    /// Tags a reserved frame (not usable RAM) with a kind, e.g. boot-bundle pages that may be
    /// mapped into dom0. Not counted as usable and never freed.
    pub fn tag_reserved(&mut self, pfn: Pfn, kind: FrameKind) -> Result<(), FrameError> {
        if self.slot(pfn)?.kind != FrameKind::Reserved {
            return Err(FrameError::NotReserved(pfn));
        }
        self.retag(pfn, kind);
        self.frames[pfn.0 as usize].refs = 1;
        Ok(())
    }

    /// Allocates one frame with one reference. O(1).
    pub fn alloc(&mut self, kind: FrameKind, owner: Owner) -> Result<Pfn, FrameError> {
        debug_assert!(kind.is_allocatable());
        let pfn = if self.free_head != NIL {
            let pfn = Pfn(self.free_head as u64);
            self.free_head = self.frames[pfn.0 as usize].owner;
            pfn
        } else if self.zeroed_head != NIL {
            self.pop_zeroed()
        } else {
            return Err(FrameError::OutOfMemory);
        };
        self.take(pfn, kind, owner);
        Ok(pfn)
    }

    /// Like [`Self::alloc`] for a frame the caller needs all zeros: a pre-zeroed one if the
    /// pool has one (true), else any free frame (false: the caller zeroes it).
    pub fn alloc_zeroed(&mut self, kind: FrameKind, owner: Owner) -> Result<(Pfn, bool), FrameError> {
        debug_assert!(kind.is_allocatable());
        if self.zeroed_head == NIL {
            return self.alloc(kind, owner).map(|p| (p, false));
        }
        let pfn = self.pop_zeroed();
        self.take(pfn, kind, owner);
        Ok((pfn, true))
    }

    fn pop_zeroed(&mut self) -> Pfn {
        let pfn = Pfn(self.zeroed_head as u64);
        self.zeroed_head = self.frames[pfn.0 as usize].owner;
        self.zeroed -= 1;
        pfn
    }

    fn take(&mut self, pfn: Pfn, kind: FrameKind, owner: Owner) {
        self.retag(pfn, kind);
        let f = &mut self.frames[pfn.0 as usize];
        f.refs = 1;
        f.owner = owner;
    }

    /// Zeroes up to `max` free frames with `zero` and moves them to the zeroed pool, while it
    /// holds fewer than [`ZEROED_POOL_FRAMES`]; returns how many it zeroed.
    pub fn prezero(&mut self, max: u64, zero: impl Fn(Pfn)) -> u64 {
        let mut done = 0;
        while done < max && self.zeroed < ZEROED_POOL_FRAMES && self.free_head != NIL {
            let pfn = Pfn(self.free_head as u64);
            self.free_head = self.frames[pfn.0 as usize].owner;
            zero(pfn);
            self.frames[pfn.0 as usize].owner = self.zeroed_head;
            self.zeroed_head = pfn.0 as u32;
            self.zeroed += 1;
            done += 1;
        }
        done
    }

    /// Free frames in the zeroed pool.
    pub fn zeroed_frames(&self) -> u64 {
        self.zeroed
    }

    /// Returns an allocated frame to the free list whatever its reference count.
    pub fn free(&mut self, pfn: Pfn) -> Result<(), FrameError> {
        if !self.slot(pfn)?.kind.is_allocatable() {
            return Err(FrameError::NotAllocated(pfn));
        }
        self.push_free(pfn);
        Ok(())
    }

    /// Adds a reference to an allocated frame.
    pub fn get_ref(&mut self, pfn: Pfn) -> Result<(), FrameError> {
        let f = self.slot_mut(pfn)?;
        if !f.kind.is_allocatable() {
            return Err(FrameError::NotAllocated(pfn));
        }
        f.refs = f.refs.checked_add(1).ok_or(FrameError::RefOverflow(pfn))?;
        Ok(())
    }

    /// Adds a reference to frame number `n` if it is reference counted; false for reserved or
    /// boot-bundle (ROM) frames and numbers beyond the table. The hot path of copying tables.
    /// A count cannot realistically wrap: every reference is a table entry, and 2^32 of them
    /// would fill 32 GiB of tables.
    #[inline(always)]
    pub fn bump_ref(&mut self, n: u64) -> bool {
        match self.frames.get_mut(n as usize) {
            Some(f) if f.kind.is_allocatable() => {
                f.refs = f.refs.wrapping_add(1);
                true
            }
            _ => false,
        }
    }

    /// Adds a reference to page-table page number `n` (the only thing a non-leaf entry points
    /// at, so no kind check); false if `n` is beyond the table.
    #[inline(always)]
    pub fn bump_table_ref(&mut self, n: u64) -> bool {
        match self.frames.get_mut(n as usize) {
            Some(f) => {
                debug_assert_eq!(f.kind, FrameKind::PageTable);
                f.refs = f.refs.wrapping_add(1);
                true
            }
            None => false,
        }
    }

    /// Drops a reference; frees the frame when the last one goes. Returns whether it was freed.
    pub fn put_ref(&mut self, pfn: Pfn) -> Result<bool, FrameError> {
        let f = self.slot_mut(pfn)?;
        if !f.kind.is_allocatable() || f.refs == 0 {
            return Err(FrameError::NotAllocated(pfn));
        }
        f.refs -= 1;
        if f.refs == 0 {
            self.push_free(pfn);
            return Ok(true);
        }
        Ok(false)
    }

    /// References held on a frame (0 if out of range).
    pub fn refs(&self, pfn: Pfn) -> u32 {
        self.slot(pfn).map(|f| if f.kind == FrameKind::Free { 0 } else { f.refs }).unwrap_or(0)
    }

    /// Kind of a frame ([`FrameKind::Reserved`] if out of range).
    pub fn kind(&self, pfn: Pfn) -> FrameKind {
        self.slot(pfn).map(|f| f.kind).unwrap_or(FrameKind::Reserved)
    }

    /// Owner of a frame ([`OWNER_NONE`] if free, reserved or out of range).
    pub fn owner(&self, pfn: Pfn) -> Owner {
        match self.slot(pfn) {
            Ok(f) if f.kind != FrameKind::Free => f.owner,
            _ => OWNER_NONE,
        }
    }

    /// Hands an allocated frame to another owner.
    pub fn set_owner(&mut self, pfn: Pfn, owner: Owner) -> Result<(), FrameError> {
        let f = self.slot_mut(pfn)?;
        if !f.kind.is_allocatable() {
            return Err(FrameError::NotAllocated(pfn));
        }
        f.owner = owner;
        Ok(())
    }

    /// Frames on the free list.
    pub fn free_frames(&self) -> u64 {
        self.by_kind[FrameKind::Free as usize]
    }

    /// Usable frames found at boot.
    pub fn usable_frames(&self) -> u64 {
        self.usable
    }

    /// Counts by kind, from the running counters (O(1)).
    pub fn stats(&self) -> FrameStats {
        FrameStats { by_kind: self.by_kind, usable: self.usable }
    }

    /// Recounts everything and checks the invariants: the free list holds exactly the free
    /// frames, the counters match, every allocated frame is referenced, and free + used equals
    /// the usable total. O(frames); for debug checks and tests.
    pub fn check(&self) -> Result<FrameStats, InvariantError> {
        let mut counted = [0u64; KIND_COUNT];
        for (n, f) in self.frames.iter().enumerate() {
            counted[f.kind as usize] += 1;
            if f.kind.is_allocatable() && f.refs == 0 {
                return Err(InvariantError::UnreferencedFrame(Pfn(n as u64)));
            }
        }
        for kind in FrameKind::ALL {
            let (c, r) = (counted[kind as usize], self.by_kind[kind as usize]);
            if c != r {
                return Err(InvariantError::KindCountMismatch { kind, counted: c, recorded: r });
            }
        }
        let mut listed = 0u64;
        let mut zeroed = 0u64;
        for (head, is_zeroed) in [(self.free_head, false), (self.zeroed_head, true)] {
            let mut cursor = head;
            while cursor != NIL && listed <= self.frames.len() as u64 {
                let f = &self.frames[cursor as usize];
                if f.kind != FrameKind::Free {
                    break;
                }
                listed += 1;
                zeroed += u64::from(is_zeroed);
                cursor = f.owner;
            }
            if cursor != NIL {
                return Err(InvariantError::FreeListMismatch { listed, marked: counted[FrameKind::Free as usize] });
            }
        }
        let marked = counted[FrameKind::Free as usize];
        if listed != marked || zeroed != self.zeroed {
            return Err(InvariantError::FreeListMismatch { listed, marked });
        }
        let free = marked;
        let used: u64 = FrameKind::ALL
            .iter()
            .filter(|k| k.is_allocatable())
            .map(|&k| counted[k as usize])
            .sum();
        // Claimed boot frames are Hypervisor-kind and count as used; tagged bundle frames are
        // not usable RAM and are excluded.
        if free + used != self.usable {
            return Err(InvariantError::TotalMismatch { free, used, total: self.usable });
        }
        Ok(self.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn storage(n: usize) -> Vec<MaybeUninit<FrameInfo>> {
        (0..n).map(|_| MaybeUninit::uninit()).collect()
    }

    #[test]
    fn prezeroed_frames_go_first_to_who_needs_zeros_and_last_to_the_rest() {
        let mut s = storage(8);
        let mut ft = FrameTable::new(&mut s);
        ft.add_free_range(Pfn(0), Pfn(4)).unwrap();
        let zeroed = core::cell::RefCell::new(Vec::new());
        assert_eq!(ft.prezero(2, |p| zeroed.borrow_mut().push(p)), 2);
        assert_eq!(ft.zeroed_frames(), 2);
        assert_eq!(ft.free_frames(), 4, "pooled frames are still free");
        ft.check().unwrap();
        let (z, was_zeroed) = ft.alloc_zeroed(FrameKind::PageTable, 1).unwrap();
        assert!(was_zeroed && zeroed.borrow().contains(&z));
        let plain = ft.alloc(FrameKind::DomainRam, 1).unwrap();
        assert!(!zeroed.borrow().contains(&plain), "a plain allocation keeps the pool");
        // With the plain list empty, a plain allocation takes from the pool, and a zeroed one
        // without a pool says it was not zeroed.
        let last_plain = ft.alloc(FrameKind::DomainRam, 1).unwrap();
        assert!(!zeroed.borrow().contains(&last_plain));
        let from_pool = ft.alloc(FrameKind::DomainRam, 1).unwrap();
        assert!(zeroed.borrow().contains(&from_pool));
        assert!(ft.alloc_zeroed(FrameKind::DomainRam, 1).is_err());
        ft.free(from_pool).unwrap();
        assert_eq!(ft.alloc_zeroed(FrameKind::DomainRam, 1).unwrap(), (from_pool, false), "a freed frame is not zero");
        ft.check().unwrap();
    }

    #[test]
    fn frame_info_is_twelve_bytes() {
        assert_eq!(FRAME_INFO_BYTES, 12);
    }

    #[test]
    fn allocation_hands_out_lowest_frames_first_and_counts_them() {
        let mut s = storage(64);
        let mut ft = FrameTable::new(&mut s);
        ft.add_free_range(Pfn(16), Pfn(32)).unwrap();
        assert_eq!(ft.free_frames(), 16);
        let a = ft.alloc(FrameKind::DomainRam, 3).unwrap();
        let b = ft.alloc(FrameKind::PageTable, 3).unwrap();
        assert_eq!((a, b), (Pfn(16), Pfn(17)));
        assert_eq!(ft.owner(a), 3);
        assert_eq!(ft.refs(a), 1);
        assert_eq!(ft.stats().get(FrameKind::DomainRam), 1);
        assert_eq!(ft.free_frames(), 14);
        ft.check().unwrap();
    }

    #[test]
    fn exhaustion_is_an_error_not_a_panic() {
        let mut s = storage(4);
        let mut ft = FrameTable::new(&mut s);
        ft.add_free_range(Pfn(0), Pfn(2)).unwrap();
        ft.alloc(FrameKind::DomainRam, 1).unwrap();
        ft.alloc(FrameKind::DomainRam, 1).unwrap();
        assert_eq!(ft.alloc(FrameKind::DomainRam, 1), Err(FrameError::OutOfMemory));
    }

    #[test]
    fn last_reference_frees_the_frame() {
        let mut s = storage(8);
        let mut ft = FrameTable::new(&mut s);
        ft.add_free_range(Pfn(0), Pfn(8)).unwrap();
        let f = ft.alloc(FrameKind::DomainRam, 1).unwrap();
        ft.get_ref(f).unwrap();
        assert_eq!(ft.refs(f), 2);
        assert_eq!(ft.put_ref(f), Ok(false));
        assert_eq!(ft.put_ref(f), Ok(true));
        assert_eq!(ft.kind(f), FrameKind::Free);
        assert_eq!(ft.put_ref(f), Err(FrameError::NotAllocated(f)));
        assert_eq!(ft.free_frames(), 8);
        ft.check().unwrap();
    }

    #[test]
    fn double_free_and_foreign_frames_are_refused() {
        let mut s = storage(8);
        let mut ft = FrameTable::new(&mut s);
        ft.add_free_range(Pfn(2), Pfn(8)).unwrap();
        let f = ft.alloc(FrameKind::Hypervisor, OWNER_HYPERVISOR).unwrap();
        ft.free(f).unwrap();
        assert_eq!(ft.free(f), Err(FrameError::NotAllocated(f)));
        assert_eq!(ft.free(Pfn(0)), Err(FrameError::NotAllocated(Pfn(0))));
        assert_eq!(ft.free(Pfn(99)), Err(FrameError::OutOfRange(Pfn(99))));
        assert_eq!(ft.get_ref(Pfn(1)), Err(FrameError::NotAllocated(Pfn(1))));
        ft.check().unwrap();
    }

    #[test]
    fn claimed_boot_frames_count_as_used() {
        let mut s = storage(16);
        let mut ft = FrameTable::new(&mut s);
        ft.claim_reserved(Pfn(4), FrameKind::Hypervisor, OWNER_HYPERVISOR).unwrap();
        ft.add_free_range(Pfn(5), Pfn(16)).unwrap();
        ft.tag_reserved(Pfn(0), FrameKind::Bundle).unwrap();
        assert_eq!(ft.add_free_range(Pfn(4), Pfn(5)), Err(FrameError::NotReserved(Pfn(4))));
        let st = ft.check().unwrap();
        assert_eq!(st.usable, 12);
        assert_eq!(st.get(FrameKind::Free), 11);
        assert_eq!(st.get(FrameKind::Bundle), 1);
    }

    #[test]
    fn free_plus_used_stays_equal_to_total_under_churn() {
        let mut s = storage(256);
        let mut ft = FrameTable::new(&mut s);
        ft.add_free_range(Pfn(0), Pfn(256)).unwrap();
        let mut held = Vec::new();
        let mut next = crate::testing::xorshift(12345);
        for _ in 0..5000 {
            let x = next();
            if x % 3 != 0 || held.is_empty() {
                if let Ok(f) = ft.alloc(FrameKind::DomainRam, (x % 5) as u32) {
                    held.push(f);
                }
            } else {
                let f = held.swap_remove((x as usize) % held.len());
                ft.free(f).unwrap();
            }
        }
        let st = ft.check().unwrap();
        assert_eq!(st.get(FrameKind::DomainRam), held.len() as u64);
        for f in held {
            ft.free(f).unwrap();
        }
        assert_eq!(ft.check().unwrap().get(FrameKind::Free), 256);
    }

    #[test]
    fn corrupted_free_list_is_detected() {
        let mut s = storage(8);
        let mut ft = FrameTable::new(&mut s);
        ft.add_free_range(Pfn(0), Pfn(8)).unwrap();
        ft.frames[3].kind = FrameKind::DomainRam; // a frame on the list marked in use
        assert!(ft.check().is_err());
    }
}

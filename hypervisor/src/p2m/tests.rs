//! Host tests of the P2M engine over simulated memory, run for both entry formats.

use super::*;
use crate::mm::frame::{FrameInfo, FrameKind, FrameTable, Pfn};
use crate::mm::physmem::SimMem;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::mem::MaybeUninit;

const FRAMES: usize = 8192;

struct World {
    _storage: Vec<MaybeUninit<FrameInfo>>,
    ft: FrameTable<'static>,
    mem: SimMem,
}

fn world(frames: usize) -> World {
    let mut storage: Vec<MaybeUninit<FrameInfo>> = (0..frames).map(|_| MaybeUninit::uninit()).collect();
    // SAFETY: the storage outlives the table: both live in World and the Vec's heap buffer
    // never moves.
    let slice: &'static mut [MaybeUninit<FrameInfo>] =
        unsafe { core::slice::from_raw_parts_mut(storage.as_mut_ptr(), storage.len()) };
    let mut ft = FrameTable::new(slice);
    ft.add_free_range(Pfn(1), Pfn(frames as u64)).unwrap();
    World { _storage: storage, ft, mem: SimMem::new(frames) }
}

fn read_u64(w: &World, pfn: Pfn, offset: usize) -> u64 {
    let mut b = [0u8; 8];
    w.mem.read_bytes(pfn, offset, &mut b);
    u64::from_le_bytes(b)
}

fn write_u64(w: &World, pfn: Pfn, offset: usize, v: u64) {
    w.mem.write_bytes(pfn, offset, &v.to_le_bytes());
}

/// A domain with `pages` RAM pages at gfn 0.., page g holding the value `tag ^ g`.
fn populate<F: EntryFormat>(w: &mut World, owner: u32, pages: u64, tag: u64) -> P2m<F> {
    let mut p = P2m::<F>::new(&mut w.ft, &w.mem, owner).unwrap();
    for g in 0..pages {
        let f = w.ft.alloc(FrameKind::DomainRam, owner).unwrap();
        w.mem.zero_frame(f);
        write_u64(w, f, 0, tag ^ g);
        p.map(&mut w.ft, &w.mem, g, f, true, P2mType::Ram, owner).unwrap();
    }
    p
}

fn policy(owner: u32) -> WritePolicy {
    WritePolicy { owner, quota_left: u64::MAX, privileged: false }
}

/// A guest write of `v` at the start of page `gfn`, resolving the fault like the hypervisor.
fn guest_write<F: EntryFormat>(w: &mut World, p: &mut P2m<F>, owner: u32, gfn: Gfn, v: u64) -> WriteFault {
    let leaf = p.lookup(&w.mem, gfn).unwrap();
    let (cost, free) = (p.write_cost(&w.ft, &w.mem, gfn).unwrap(), w.ft.free_frames());
    let outcome = if leaf.writable { WriteFault::Spurious } else { p.write_fault(&mut w.ft, &w.mem, gfn, policy(owner)).unwrap() };
    if !leaf.writable {
        assert_eq!(free - w.ft.free_frames(), cost, "write_cost predicts what the write allocates");
    }
    let leaf = p.lookup(&w.mem, gfn).unwrap();
    assert!(leaf.writable, "page {gfn} still read-only after the fault was resolved");
    write_u64(w, leaf.pfn, 0, v);
    outcome
}

fn guest_read<F: EntryFormat>(w: &World, p: &P2m<F>, gfn: Gfn) -> u64 {
    read_u64(w, p.lookup(&w.mem, gfn).unwrap().pfn, 0)
}

/// Recounts every reference held by the given P2Ms and compares with the frame table.
fn check_refs<F: EntryFormat>(w: &World, p2ms: &[&P2m<F>]) {
    let mut expected: BTreeMap<u64, u32> = BTreeMap::new();
    let mut seen_tables = BTreeSet::new();
    for p in p2ms {
        *expected.entry(p.root().0).or_default() += 1;
        p.visit(&w.mem, &mut |t| !seen_tables.insert(t.0), &mut |_t, _level, e| {
            *expected.entry(F::pfn(e).0).or_default() += 1;
        });
    }
    for n in 0..w.ft.len() {
        let pfn = Pfn(n);
        let kind = w.ft.kind(pfn);
        if kind.is_allocatable() {
            let want = expected.get(&n).copied().unwrap_or(0);
            assert_eq!(w.ft.refs(pfn), want, "frame {n} ({kind:?}) refcount vs references");
        }
    }
    w.ft.check().unwrap();
}

fn for_both(test: fn(fmt: &str)) {
    test("ept");
    test("npt");
}

macro_rules! with_format {
    ($fmt:expr, $body:ident) => {
        match $fmt {
            "ept" => $body::<Ept>(),
            _ => $body::<Npt>(),
        }
    };
}

#[test]
fn map_then_lookup_returns_the_frame_and_unmapped_is_none() {
    fn t<F: EntryFormat>() {
        let mut w = world(64);
        let mut p = P2m::<F>::new(&mut w.ft, &w.mem, 1).unwrap();
        let f = w.ft.alloc(FrameKind::DomainRam, 1).unwrap();
        p.map(&mut w.ft, &w.mem, 0x12345, f, true, P2mType::Ram, 1).unwrap();
        assert_eq!(p.lookup(&w.mem, 0x12345), Some(Leaf { pfn: f, writable: true, ty: P2mType::Ram }));
        assert_eq!(p.lookup(&w.mem, 0x12346), None);
        assert_eq!(p.lookup(&w.mem, GFN_LIMIT), None);
        let g = w.ft.alloc(FrameKind::DomainRam, 1).unwrap();
        assert_eq!(p.map(&mut w.ft, &w.mem, 0x12345, g, true, P2mType::Ram, 1), Err(P2mError::AlreadyMapped(0x12345)));
        assert_eq!(p.map(&mut w.ft, &w.mem, GFN_LIMIT, g, true, P2mType::Ram, 1), Err(P2mError::BadGfn(GFN_LIMIT)));
        w.ft.free(g).unwrap();
        check_refs(&w, &[&p]);
        p.destroy(&mut w.ft, &w.mem).unwrap();
        assert_eq!(w.ft.free_frames(), 63);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn clone_costs_one_frame_whatever_the_template_size() {
    fn t<F: EntryFormat>() {
        for pages in [16u64, 4096] {
            let mut w = world(FRAMES);
            let mut tpl = populate::<F>(&mut w, 1, pages, 0xA000);
            let before = w.ft.free_frames();
            let c = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, 2).unwrap();
            assert_eq!(before - w.ft.free_frames(), 1, "{pages}-page template");
            for g in [0, pages / 2, pages - 1] {
                let leaf = c.lookup(&w.mem, g).unwrap();
                assert!(!leaf.writable, "clone pages start read-only");
                assert_eq!(guest_read(&w, &c, g), 0xA000 ^ g, "reads see the template");
            }
            check_refs(&w, &[&tpl, &c]);
        }
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn clone_write_does_not_leak_into_sibling_or_template() {
    fn t<F: EntryFormat>() {
        let mut w = world(FRAMES);
        let mut tpl = populate::<F>(&mut w, 1, 1024, 0x5000);
        let mut c1 = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, 2).unwrap();
        let mut c2 = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, 3).unwrap();
        guest_write(&mut w, &mut c1, 2, 700, 111);
        guest_write(&mut w, &mut c2, 3, 700, 222);
        assert_eq!(guest_read(&w, &c1, 700), 111);
        assert_eq!(guest_read(&w, &c2, 700), 222);
        assert_eq!(guest_read(&w, &tpl, 700), 0x5000 ^ 700);
        assert_eq!(guest_read(&w, &c1, 701), 0x5000 ^ 701, "neighbours still shared");
        check_refs(&w, &[&tpl, &c1, &c2]);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn first_write_copies_the_shared_path_then_only_pages() {
    fn t<F: EntryFormat>() {
        let mut w = world(FRAMES);
        let mut tpl = populate::<F>(&mut w, 1, 2048, 0);
        let mut c = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, 2).unwrap();
        let before = w.ft.free_frames();
        assert_eq!(guest_write(&mut w, &mut c, 2, 5, 1), WriteFault::Copied { tables_copied: 3 });
        assert_eq!(before - w.ft.free_frames(), 4, "PDPT, PD, PT and the page");
        assert_eq!(guest_write(&mut w, &mut c, 2, 6, 1), WriteFault::Copied { tables_copied: 0 });
        assert_eq!(guest_write(&mut w, &mut c, 2, 6, 2), WriteFault::Spurious);
        // Another 2 MiB region: only its last-level table and the page.
        assert_eq!(guest_write(&mut w, &mut c, 2, 1500, 1), WriteFault::Copied { tables_copied: 1 });
        assert_eq!(before - w.ft.free_frames(), 7);
        check_refs(&w, &[&tpl, &c]);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn quota_and_memory_exhaustion_fail_cleanly() {
    fn t<F: EntryFormat>() {
        let mut w = world(700);
        let mut tpl = populate::<F>(&mut w, 1, 512, 0x77);
        let mut c = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, 2).unwrap();
        let no_quota = WritePolicy { owner: 2, quota_left: 0, privileged: false };
        let free = w.ft.free_frames();
        assert_eq!(c.write_fault(&mut w.ft, &w.mem, 3, no_quota), Err(P2mError::QuotaExceeded));
        assert_eq!(w.ft.free_frames(), free, "the refused write copied no table");
        // The first write needs the shared tables on its path and the page: a quota one short
        // of that is refused just the same.
        let cost = c.write_cost(&w.ft, &w.mem, 3).unwrap();
        assert!(cost >= 2);
        let short = WritePolicy { quota_left: cost - 1, ..no_quota };
        assert_eq!(c.write_fault(&mut w.ft, &w.mem, 3, short), Err(P2mError::QuotaExceeded));
        assert_eq!(w.ft.free_frames(), free);
        assert_eq!(guest_read(&w, &c, 3), 0x77 ^ 3);
        check_refs(&w, &[&tpl, &c]);
        // Exhaust memory with copies until the allocator says no.
        let mut g = 0;
        let err = loop {
            match c.write_fault(&mut w.ft, &w.mem, g, policy(2)) {
                Ok(_) => g += 1,
                Err(e) => break e,
            }
            assert!(g < 512, "memory should run out first");
        };
        assert_eq!(err, P2mError::OutOfMemory);
        let free = w.ft.free_frames();
        assert_eq!(c.write_fault(&mut w.ft, &w.mem, g, policy(2)), Err(P2mError::OutOfMemory));
        assert_eq!(w.ft.free_frames(), free, "a write that cannot complete allocates nothing");
        assert_eq!(guest_read(&w, &c, g), 0x77 ^ g, "failed copy left the old mapping");
        check_refs(&w, &[&tpl, &c]);
        c.destroy(&mut w.ft, &w.mem).unwrap();
        tpl.destroy(&mut w.ft, &w.mem).unwrap();
        assert_eq!(w.ft.free_frames(), 699);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn destroying_everything_returns_every_frame_in_any_order() {
    fn t<F: EntryFormat>() {
        let mut w = world(FRAMES);
        let baseline = w.ft.free_frames();
        let mut tpl = populate::<F>(&mut w, 1, 1024, 9);
        let mut clones: Vec<P2m<F>> = (0..4).map(|i| P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, 10 + i).unwrap()).collect();
        for (i, c) in clones.iter_mut().enumerate() {
            for g in (i as u64 * 100)..(i as u64 * 100 + 50) {
                guest_write(&mut w, c, 10 + i as u32, g, g * 7);
            }
        }
        // The template goes first: its frames stay alive for the clones that still map them.
        tpl.destroy(&mut w.ft, &w.mem).unwrap();
        let refs: Vec<&P2m<F>> = clones.iter().collect();
        check_refs(&w, &refs);
        assert_eq!(guest_read(&w, &clones[3], 10), 9 ^ 10, "clone still reads the template's data");
        assert_eq!(guest_read(&w, &clones[1], 120), 120 * 7);
        for c in clones {
            c.destroy(&mut w.ft, &w.mem).unwrap();
        }
        assert_eq!(w.ft.free_frames(), baseline);
        w.ft.check().unwrap();
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn clone_chains_share_through_every_level() {
    fn t<F: EntryFormat>() {
        let mut w = world(FRAMES);
        let baseline = w.ft.free_frames();
        let mut t0 = populate::<F>(&mut w, 1, 600, 0x100);
        let mut c1 = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut t0, 2).unwrap();
        guest_write(&mut w, &mut c1, 2, 10, 1010);
        // c1 is frozen into a template; c2 and c3 are its clones.
        let mut c2 = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut c1, 3).unwrap();
        let mut c3 = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut c1, 4).unwrap();
        assert_eq!(guest_read(&w, &c2, 10), 1010, "grandchild sees its parent's write");
        assert_eq!(guest_read(&w, &c2, 11), 0x100 ^ 11, "and the root template's data");
        guest_write(&mut w, &mut c2, 3, 10, 2020);
        guest_write(&mut w, &mut c3, 4, 11, 3030);
        assert_eq!(guest_read(&w, &c1, 10), 1010);
        assert_eq!(guest_read(&w, &c3, 10), 1010);
        assert_eq!(guest_read(&w, &c2, 11), 0x100 ^ 11);
        assert_eq!(guest_read(&w, &t0, 10), 0x100 ^ 10);
        check_refs(&w, &[&t0, &c1, &c2, &c3]);
        for p in [c3, c2, c1, t0] {
            p.destroy(&mut w.ft, &w.mem).unwrap();
        }
        assert_eq!(w.ft.free_frames(), baseline);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn write_protect_faults_are_granted_without_copying() {
    fn t<F: EntryFormat>() {
        let mut w = world(FRAMES);
        let mut p = populate::<F>(&mut w, 1, 100, 0);
        assert_eq!(p.write_protect(&mut w.ft, &w.mem, 10, 20, 1, u64::MAX), Ok(0));
        assert!(!p.lookup(&w.mem, 15).unwrap().writable);
        assert!(p.lookup(&w.mem, 30).unwrap().writable);
        let free = w.ft.free_frames();
        assert_eq!(guest_write(&mut w, &mut p, 1, 15, 5), WriteFault::Granted { tables_copied: 0 });
        assert_eq!(w.ft.free_frames(), free);
        assert_eq!(p.write_protect(&mut w.ft, &w.mem, 95, 10, 1, u64::MAX), Err(P2mError::Unmapped(100)));
        assert!(p.lookup(&w.mem, 96).unwrap().writable, "a failed protect changes nothing");
        assert_eq!(p.write_protect(&mut w.ft, &w.mem, u64::MAX, 2, 1, u64::MAX), Err(P2mError::BadGfn(u64::MAX)));
        check_refs(&w, &[&p]);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn read_only_types_refuse_guest_writes_and_info_copies_for_the_hypervisor() {
    fn t<F: EntryFormat>() {
        let mut w = world(256);
        let mut tpl = P2m::<F>::new(&mut w.ft, &w.mem, 1).unwrap();
        let info = w.ft.alloc(FrameKind::DomainInfo, 1).unwrap();
        write_u64(&w, info, 0, 42);
        tpl.map(&mut w.ft, &w.mem, 1, info, false, P2mType::Info, 1).unwrap();
        let mut c = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, 2).unwrap();
        assert_eq!(c.write_fault(&mut w.ft, &w.mem, 1, policy(2)), Err(P2mError::ReadOnly(1, P2mType::Info)));
        let hv = WritePolicy { owner: 2, quota_left: 0, privileged: true };
        assert!(matches!(c.write_fault(&mut w.ft, &w.mem, 1, hv), Ok(WriteFault::Copied { .. })));
        let mine = c.lookup(&w.mem, 1).unwrap();
        assert_ne!(mine.pfn, info);
        assert_eq!(read_u64(&w, mine.pfn, 0), 42);
        assert_eq!(w.ft.kind(mine.pfn), FrameKind::DomainInfo);
        check_refs(&w, &[&tpl, &c]);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn replace_installs_a_private_page_and_releases_the_shared_one() {
    fn t<F: EntryFormat>() {
        let mut w = world(FRAMES);
        let mut tpl = populate::<F>(&mut w, 1, 64, 3);
        let mut c = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, 2).unwrap();
        let old = c.lookup(&w.mem, 1).unwrap().pfn;
        let new = w.ft.alloc(FrameKind::DomainInfo, 2).unwrap();
        assert_eq!(c.replace(&mut w.ft, &w.mem, 1, new, false, P2mType::Info, 2), Ok(3));
        assert_eq!(c.lookup(&w.mem, 1).unwrap().pfn, new);
        assert_eq!(tpl.lookup(&w.mem, 1).unwrap().pfn, old);
        assert_eq!(w.ft.refs(old), 1);
        check_refs(&w, &[&tpl, &c]);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn random_writes_by_many_clones_match_a_model() {
    fn t<F: EntryFormat>() {
        let mut w = world(FRAMES);
        let baseline = w.ft.free_frames();
        let pages = 1500u64;
        let mut tpl = populate::<F>(&mut w, 1, pages, 0xBEEF);
        let mut doms: Vec<(u32, P2m<F>, BTreeMap<u64, u64>)> = Vec::new();
        let mut next = crate::testing::xorshift(0x9E37_79B9_7F4A_7C15);
        for round in 0..6u32 {
            // Sometimes clone the last clone (a chain), otherwise the root template.
            let owner = 100 + round;
            let p = if round % 3 == 2 {
                let (_, parent, model) = doms.last_mut().unwrap();
                let m = model.clone();
                (P2m::<F>::clone_of(&mut w.ft, &w.mem, parent, owner).unwrap(), m)
            } else {
                (P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut tpl, owner).unwrap(), BTreeMap::new())
            };
            doms.push((owner, p.0, p.1));
            for _ in 0..300 {
                let d = (next() % doms.len() as u64) as usize;
                let g = next() % pages;
                let v = next();
                let (owner, p, model) = &mut doms[d];
                let owner = *owner;
                if v % 16 == 0 {
                    // Now and then write-protect a range: the tables it copies are the ones
                    // predicted, and it is refused without changes when the quota is short.
                    let len = 1 + next() % 1200;
                    let end = (g + len).min(pages);
                    let cost = p.protect_cost(&w.ft, &w.mem, g, end).unwrap();
                    let free = w.ft.free_frames();
                    if cost > 0 {
                        assert_eq!(p.write_protect(&mut w.ft, &w.mem, g, end - g, owner, cost - 1), Err(P2mError::QuotaExceeded));
                        assert_eq!(w.ft.free_frames(), free);
                    }
                    assert_eq!(p.write_protect(&mut w.ft, &w.mem, g, end - g, owner, cost), Ok(cost as u32));
                    assert_eq!(free - w.ft.free_frames(), cost);
                }
                guest_write(&mut w, p, owner, g, v);
                model.insert(g, v);
            }
        }
        for (_, p, model) in &doms {
            for g in 0..pages {
                let want = model.get(&g).copied().unwrap_or(0xBEEF ^ g);
                assert_eq!(guest_read(&w, p, g), want);
            }
        }
        let mut all: Vec<&P2m<F>> = doms.iter().map(|(_, p, _)| p).collect();
        all.push(&tpl);
        check_refs(&w, &all);
        for (_, p, _) in doms.into_iter().rev() {
            p.destroy(&mut w.ft, &w.mem).unwrap();
        }
        tpl.destroy(&mut w.ft, &w.mem).unwrap();
        assert_eq!(w.ft.free_frames(), baseline);
    }
    for_both(|f| with_format!(f, t));
}

#[test]
fn source_that_keeps_running_after_cloning_does_not_leak_into_the_clone() {
    fn t<F: EntryFormat>() {
        let mut w = world(FRAMES);
        let mut src = populate::<F>(&mut w, 1, 800, 0x42);
        guest_write(&mut w, &mut src, 1, 5, 1);
        let snap = P2m::<F>::clone_of(&mut w.ft, &w.mem, &mut src, 2).unwrap();
        assert!(!src.lookup(&w.mem, 5).unwrap().writable, "the source is write-protected by the clone");
        guest_write(&mut w, &mut src, 1, 5, 2);
        guest_write(&mut w, &mut src, 1, 700, 3);
        assert_eq!(guest_read(&w, &snap, 5), 1, "the snapshot keeps the value of the instant");
        assert_eq!(guest_read(&w, &snap, 700), 0x42 ^ 700);
        assert_eq!(guest_read(&w, &src, 5), 2);
        check_refs(&w, &[&src, &snap]);
    }
    for_both(|f| with_format!(f, t));
}

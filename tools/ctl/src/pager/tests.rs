//! Host tests of dom0's pager against a fake hypervisor that keeps lazy clients' memory and
//! posts requests on the pager's real ring page, over an in-memory image store: pages reach a
//! client as the image has them, a bad page or image crashes only its client, a gap is zero
//! only once the runs around it check out, and a second restore prefetches the first one's
//! working set.

use super::*;
use alloc::collections::BTreeMap;
use alloc::vec;
use domimage::{Decoder, DomainRecord, Encoder, ImageKind, Limits};
use guest_abi::domctl::{DomainInfo, REASON_MAX_BYTES, name_field, state};
use guest_abi::hypercall::nr;
use guest_abi::pager::LazyStatus;
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;
use guest_abi::HvResult;
use store::MemDevice;

const PAGES: u64 = 2048;

struct Client {
    mem: Vec<Option<Vec<u8>>>,
    status: LazyStatus,
    /// The outstanding request id, if waiting.
    wait: Option<(u64, u64)>,
    crashed: Option<(u64, u32)>,
}

#[derive(Default)]
struct Fake {
    ring: u64,
    prod: u32,
    clients: BTreeMap<u32, Client>,
    dropped: Vec<u64>,
}

impl Fake {
    fn add(&mut self, id: u32) {
        let status = LazyStatus { client: id, missing_pages: PAGES - 1, waiting_gfn: u64::MAX, ..LazyStatus::default() };
        self.clients.insert(id, Client { mem: vec![None; PAGES as usize], status, wait: None, crashed: None });
    }

    /// Client `id` touches `gfn`: a request on the ring, as the hypervisor posts it.
    fn touch(&mut self, id: u32, gfn: u64) {
        let c = self.clients.get_mut(&id).unwrap();
        if c.mem[gfn as usize].is_some() {
            return;
        }
        c.status.demand_faults += 1;
        let rid = c.status.demand_faults;
        c.wait = Some((rid, gfn));
        let req = Request { client: id, flags: 0, gfn, id: rid, tsc: 0 };
        let off = ring::SLOT0_OFFSET + u64::from(self.prod % ring::RING_SLOTS) * ring::SLOT_BYTES;
        // SAFETY: the ring page the pager registered, alive for the test.
        unsafe {
            core::ptr::write_unaligned((self.ring + off) as *mut Request, req);
            self.prod += 1;
            ((self.ring + ring::PROD_OFFSET) as *mut u32).write_volatile(self.prod);
        }
    }
}

impl Hypercalls for Fake {
    fn call(&mut self, n: u64, a: &[u64]) -> HvResult<u64> {
        // SAFETY: the control library passes addresses of live host values.
        unsafe {
            match n {
                nr::PAGER_RING => {
                    self.ring = a[0];
                    Ok(0)
                }
                nr::YIELD => Ok(0),
                nr::PAGER_DROP => {
                    self.dropped.push(a[0]);
                    Ok(0)
                }
                nr::PAGER_SUPPLY => {
                    let s = *(a[0] as *const SupplyArgs);
                    let c = self.clients.get_mut(&s.client).ok_or(HvError::NoSuchDomain)?;
                    if c.crashed.is_some() {
                        return Err(HvError::NotPermitted);
                    }
                    if s.gfn + s.count > PAGES || s.count == 0 || s.count > 256 {
                        return Err(HvError::BadAddress);
                    }
                    if s.request != 0 && c.wait.is_some_and(|(id, g)| id == s.request && !(s.gfn..s.gfn + s.count).contains(&g)) {
                        return Err(HvError::InvalidArgument);
                    }
                    let mut mapped = 0;
                    for i in 0..s.count {
                        let g = (s.gfn + i) as usize;
                        if g == 1 || c.mem[g].is_some() {
                            continue;
                        }
                        let page = if s.flags & SUPPLY_ZERO != 0 {
                            vec![0u8; PAGE_BYTES]
                        } else {
                            core::slice::from_raw_parts((s.src_gpa + i * PAGE_BYTES as u64) as *const u8, PAGE_BYTES).to_vec()
                        };
                        c.mem[g] = Some(page);
                        mapped += 1;
                        c.status.missing_pages -= 1;
                        c.status.supplied_pages += 1;
                    }
                    if c.wait.is_some_and(|(_, g)| c.mem[g as usize].is_some()) {
                        c.wait = None;
                    }
                    Ok(mapped)
                }
                nr::PAGER_FAIL => {
                    let c = self.clients.get_mut(&(a[0] as u32)).ok_or(HvError::NoSuchDomain)?;
                    c.crashed = Some((a[1], a[2] as u32));
                    Ok(0)
                }
                nr::PAGER_STATUS => {
                    let c = self.clients.get(&(a[0] as u32)).ok_or(HvError::NoSuchDomain)?;
                    *(a[1] as *mut LazyStatus) = c.status;
                    Ok(0)
                }
                nr::DOM_INFO => {
                    let c = self.clients.get(&(a[0] as u32)).ok_or(HvError::NoSuchDomain)?;
                    let st = if c.crashed.is_some() { state::CRASHED } else { state::RUNNING };
                    *(a[1] as *mut DomainInfo) = DomainInfo {
                        domid: a[0] as u32,
                        state: st,
                        pause_reason: 0,
                        flags: 0,
                        parent: guest_abi::domctl::NO_DOMAIN,
                        clones: 0,
                        mem_bytes: PAGES * 4096,
                        private_pages: 0,
                        shared_pages: 0,
                        exit_code: 0,
                        cpu_ns: 0,
                        name: name_field("c"),
                        reason: [0; REASON_MAX_BYTES],
                    };
                    Ok(0)
                }
                _ => Err(HvError::NoSuchHypercall),
            }
        }
    }
}

/// The content of page `gfn` in the test image (0 for pages the image leaves out).
fn content(gfn: u64) -> Option<u8> {
    // Runs: [0, 300) but the start-of-day page, [700, 710), [1500, 2048); gaps between.
    let in_run = gfn < 300 || (700..710).contains(&gfn) || gfn >= 1500;
    (in_run && gfn != 1).then(|| (gfn % 251) as u8 + 1)
}

/// (offset, first gfn) of every MEMORY record of an image.
fn memory_records(bytes: &[u8]) -> Vec<(usize, u64)> {
    let mut at = domimage::HEADER_BYTES;
    let mut out = Vec::new();
    while at + domimage::RECORD_HEADER_BYTES <= bytes.len() {
        let ty = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        if ty == domimage::record::MEMORY {
            out.push((at, u64::from_le_bytes(bytes[at + 24..at + 32].try_into().unwrap())));
        }
        at += domimage::RECORD_HEADER_BYTES + len.div_ceil(8) * 8;
    }
    out
}

fn image() -> Vec<u8> {
    let d = DomainRecord { name: "t".into(), mem_bytes: PAGES * 4096, quota_pages: u64::MAX, origin_domid: 3 };
    let mut enc = Encoder::new(Vec::new(), ImageKind::Domain, &d, &VcpuContext::default(), &SavedState::default(), None).unwrap();
    let mut gfn = 0;
    while gfn < PAGES {
        if content(gfn).is_none() {
            gfn += 1;
            continue;
        }
        let mut run = Vec::new();
        let first = gfn;
        while gfn < PAGES && run.len() < 256 * PAGE_BYTES {
            let Some(b) = content(gfn) else { break };
            run.extend(core::iter::repeat_n(b, PAGE_BYTES));
            gfn += 1;
        }
        enc.memory(first, &run).unwrap();
    }
    enc.finish().unwrap().0
}

struct World {
    ctl: Control<Fake>,
    store: Store<MemDevice>,
    pager: Pager,
}

impl World {
    fn new(images: &[(&str, Vec<u8>)]) -> Self {
        let mut store = Store::format(MemDevice::new(64 * 1024)).unwrap();
        for (name, bytes) in images {
            let mut w = store.begin(name, store::ImageKind::Domain, "test").unwrap();
            store.write(&mut w, bytes).unwrap();
            store.commit(w).unwrap();
        }
        World { ctl: Control::new(Fake::default()), store, pager: Pager::default() }
    }

    fn begin(&mut self, id: u32, image: &str, background: bool) -> u64 {
        self.ctl.hc.add(id);
        let e = self.store.find(image).unwrap().clone();
        let mut bytes = vec![0u8; e.size_bytes as usize];
        self.store.read_at(image, 0, &mut bytes).unwrap();
        let (dec, _) = Decoder::new(bytes.as_slice(), Limits { max_mem_bytes: 1 << 30 }).unwrap();
        let start = dec.index_start().unwrap();
        let s = LazyStart {
            client: id,
            domain: "c".into(),
            image: image.into(),
            image_sequence: e.sequence,
            mem_pages: PAGES,
            start,
            background,
            delegated: false,
        };
        self.pager.begin(&mut self.ctl, &mut self.store, s).unwrap()
    }

    fn poll(&mut self) -> bool {
        self.pager.poll(&mut self.ctl, &mut self.store, BACKGROUND_UNITS_PER_POLL)
    }

    fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.poll() {
                return;
            }
        }
        panic!("the pager never settles");
    }

    fn client(&self, id: u32) -> &Client {
        &self.ctl.hc.clients[&id]
    }
}

fn assert_matches_image(c: &Client) {
    for g in 0..PAGES {
        if g == 1 {
            continue;
        }
        let page = c.mem[g as usize].as_ref().unwrap_or_else(|| panic!("page {g} missing"));
        let want = content(g).unwrap_or(0);
        assert!(page.iter().all(|&b| b == want), "page {g}");
    }
}

#[test]
fn a_demand_request_is_answered_with_the_image_page_and_the_rest_follows_in_the_background() {
    let mut w = World::new(&[("img", image())]);
    w.begin(5, "img", true);
    w.ctl.hc.touch(5, 705);
    w.poll();
    assert_eq!(w.client(5).mem[705].as_deref().map(|p| p[0]), content(705), "answered first");
    assert!(w.client(5).wait.is_none());
    w.ctl.hc.touch(5, 1000);
    w.poll();
    assert_eq!(w.client(5).mem[1000].as_deref().map(|p| p[0]), Some(0), "a gap page is zero");
    w.settle();
    assert_matches_image(w.client(5));
    assert!(w.pager.restores().is_empty(), "finished");
    assert_eq!(w.pager.finished[0].failure, None);
    assert_eq!(w.ctl.hc.dropped.len(), 1, "the shared pages are released once no restore needs them");
}

#[test]
fn a_page_failing_its_checksum_crashes_only_its_client() {
    let good = image();
    let mut bad = good.clone();
    // A byte inside the pages of the run holding gfn 260.
    let (run, first) = memory_records(&good).into_iter().filter(|&(_, g)| g <= 260).last().unwrap();
    bad[run + 24 + 16 + (260 - first as usize) * 4096 + 5] ^= 0x40;
    let mut w = World::new(&[("good", good), ("bad", bad)]);
    w.begin(5, "good", true);
    w.begin(6, "bad", true);
    w.ctl.hc.touch(6, 260);
    w.ctl.hc.touch(5, 260);
    w.settle();
    assert_eq!(w.client(6).crashed.map(|(_, code)| code), Some(fail::CHECKSUM));
    assert!(w.client(6).mem[260].is_none(), "nothing of the bad run reached the client");
    assert!(w.client(5).crashed.is_none());
    assert_matches_image(w.client(5));
    let f = w.pager.finished.iter().find(|f| f.client == 6).unwrap();
    assert!(f.failure.as_deref().unwrap().contains("failed its checksum"), "{f:?}");
}

#[test]
fn a_gap_page_is_zero_only_once_the_runs_around_it_check_out() {
    let mut bytes = image();
    // Move the run at 700 to claim gfn 720 in its memory header: without checking that run,
    // 705 would look like a gap and be handed out as zero.
    let (run, _) = memory_records(&bytes).into_iter().find(|&(_, g)| g == 700).unwrap();
    bytes[run + 24..run + 32].copy_from_slice(&720u64.to_le_bytes());
    let mut w = World::new(&[("img", bytes)]);
    w.begin(5, "img", false);
    w.ctl.hc.touch(5, 705);
    w.poll();
    assert!(w.client(5).mem[705].is_none(), "not zero: the run that holds it is bad");
    assert_eq!(w.client(5).crashed.map(|(_, code)| code), Some(fail::CHECKSUM));
}

#[test]
fn a_truncated_image_crashes_its_client_when_the_walk_reaches_the_cut() {
    let full = image();
    let cut = full[..full.len() - 100].to_vec();
    let mut w = World::new(&[("cut", cut)]);
    w.begin(5, "cut", true);
    w.ctl.hc.touch(5, 10);
    w.poll();
    assert_eq!(w.client(5).mem[10].as_deref().map(|p| p[0]), content(10), "early pages are served");
    w.settle();
    assert!(w.client(5).crashed.is_some(), "the cut is found before the restore counts as done");
}

#[test]
fn a_second_restore_prefetches_the_working_set_the_first_recorded() {
    let mut w = World::new(&[("img", image())]);
    w.begin(5, "img", false);
    for g in [705, 10, 1600] {
        w.ctl.hc.touch(5, g);
        w.poll();
    }
    assert_eq!(w.client(5).status.demand_faults, 3);
    w.pager.end(&mut w.ctl, &mut w.store, 5);
    assert!(w.store.find("img.ws").is_some_and(|e| e.kind == store::ImageKind::WorkingSet));
    let prefetched = w.begin(6, "img", false);
    assert!(prefetched >= 3, "{prefetched}");
    for g in [705, 10, 1600] {
        assert_eq!(w.client(6).mem[g as usize].as_deref().map(|p| p[0]), content(g), "page {g} there before it runs");
    }
}

#[test]
fn a_damaged_working_set_is_ignored_not_trusted() {
    let mut w = World::new(&[("img", image())]);
    let seq = w.store.find("img").unwrap().sequence;
    let mut ws = workset::encode(seq, PAGES, &[5, 6]);
    ws[40] ^= 1;
    let mut wr = w.store.begin("img.ws", store::ImageKind::WorkingSet, "test").unwrap();
    w.store.write(&mut wr, &ws).unwrap();
    w.store.commit(wr).unwrap();
    assert_eq!(w.begin(5, "img", false), 0);
}

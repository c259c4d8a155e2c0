//! Host tests of dom0's self-checkpoint receiver ([`Receiver::serve`]): a fake hypervisor
//! holds one guest whose ring is filled like the guest's producer does, and its epoch; the
//! image goes to a store on an in-memory disk and is decoded back.

use super::*;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use domimage::{Decoder, Limits, MAX_RUN_PAGES, Prologue};
use guest_abi::HvResult;
use guest_abi::channel::{ChannelInfo, op};
use guest_abi::domctl::{DomainInfo, DomainStat, REASON_MAX_BYTES, name_field};
use guest_abi::hypercall::nr;
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;
use store::MemDevice;

const PAGE: u64 = PAGE_BYTES as u64;
/// The guest streaming its checkpoint, and its epoch.
const GUEST: u32 = 3;
const EPOCH: u32 = 4;
const MEM_PAGES: u64 = 64;
const MEM: u64 = MEM_PAGES * PAGE;
/// The ring: a header page at gfn 16, then its slots.
const RING_GPA: u64 = 16 * PAGE;
const SLOTS: u32 = 4;
/// What the epoch's registers, state and devices are (the guest's own differ).
const EPOCH_RIP: u64 = 0x12_3456;
const EPOCH_TIME_NS: u64 = 777_000_000;
const EPOCH_PLATFORM: [u8; 300] = [0x5A; 300];
/// Where fake time starts.
const T0: u64 = 1_000_000_000;

/// One message the guest will put on its ring: its descriptor and its slot's bytes.
struct Msg {
    desc: Desc,
    slot: Vec<u8>,
}

fn begin(tag: &str, mem: u64) -> Msg {
    Msg { desc: Desc { kind: msg::BEGIN, len: tag.len() as u32, arg: mem }, slot: tag.as_bytes().to_vec() }
}

/// A page whose every byte says which page it is.
fn page_bytes(gfn: u64) -> Vec<u8> {
    (0..PAGE_BYTES).map(|i| ((gfn as u8).wrapping_mul(31) ^ i as u8) | 1).collect()
}

fn page(gfn: u64) -> Msg {
    Msg { desc: Desc { kind: msg::PAGE, len: PAGE_BYTES as u32, arg: gfn * PAGE }, slot: page_bytes(gfn) }
}

fn end(count: u64) -> Msg {
    Msg { desc: Desc { kind: msg::END, len: 0, arg: count }, slot: Vec::new() }
}

/// A hypervisor with dom0, one guest (`web`, with a ring and an epoch) and nothing else.
struct Fake {
    /// The guest's memory.
    mem: Vec<u8>,
    /// What `dom_channel(INFO)` says.
    info: ChannelInfo,
    /// The guest has a PC platform.
    pc: bool,
    /// Whether the guest still runs (else it is dead, its memory not yet freed).
    alive: bool,
    /// The guest dies while dom0 sleeps.
    dies_in_block: bool,
    /// The guest's producer: messages not yet on the ring, and its producer index.
    script: VecDeque<Msg>,
    prod: u32,
    now: u64,
    /// Every hypercall: number and arguments.
    calls: Vec<(u64, Vec<u64>)>,
    destroyed: Vec<u32>,
}

impl Fake {
    fn new(script: Vec<Msg>) -> Self {
        let mut f = Fake {
            mem: vec![0; MEM as usize],
            info: ChannelInfo { ring_gpa: RING_GPA, pages: SLOTS + 1, epoch: EPOCH },
            pc: false,
            alive: true,
            dies_in_block: false,
            script: script.into(),
            prod: 0,
            now: T0,
            calls: Vec::new(),
            destroyed: Vec::new(),
        };
        f.put_word(ring::MAGIC_OFFSET, ring::MAGIC);
        f.put_word(ring::SLOTS_OFFSET, SLOTS);
        f.produce();
        f
    }

    fn word(&self, off: u64) -> u32 {
        let at = (RING_GPA + off) as usize;
        u32::from_le_bytes(self.mem[at..at + 4].try_into().unwrap())
    }

    fn put_word(&mut self, off: u64, v: u32) {
        let at = (RING_GPA + off) as usize;
        self.mem[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn cons(&self) -> u32 {
        self.word(ring::CONS_OFFSET)
    }

    fn ring_prod(&self) -> u32 {
        self.word(ring::PROD_OFFSET)
    }

    fn status(&self) -> u32 {
        self.word(ring::STATUS_OFFSET)
    }

    /// What the guest does when it runs: puts as many messages as there is room for on the
    /// ring (slot first, then descriptor), then publishes the producer index.
    fn produce(&mut self) {
        while self.prod.wrapping_sub(self.cons()) < SLOTS {
            let Some(m) = self.script.pop_front() else { break };
            let slot = (RING_GPA + (1 + u64::from(self.prod % SLOTS)) * PAGE) as usize;
            self.mem[slot..slot + m.slot.len()].copy_from_slice(&m.slot);
            let d = (RING_GPA + ring::DESC0_OFFSET + u64::from(self.prod % SLOTS) * ring::DESC_BYTES) as usize;
            self.mem[d..d + 16].copy_from_slice(&m.desc.to_bytes());
            self.prod = self.prod.wrapping_add(1);
        }
        self.put_word(ring::PROD_OFFSET, self.prod);
    }

    fn mem_range(&self, id: u64, gpa: u64, len: u64) -> HvResult<core::ops::Range<usize>> {
        if id != u64::from(GUEST) {
            return Err(HvError::NoSuchDomain);
        }
        let end = gpa.checked_add(len).filter(|&e| e <= MEM).ok_or(HvError::BadAddress)?;
        Ok(gpa as usize..end as usize)
    }

    fn known(&self, id: u64) -> HvResult<()> {
        match id as u32 {
            GUEST => Ok(()),
            EPOCH if self.info.epoch == EPOCH && !self.destroyed.contains(&EPOCH) => Ok(()),
            _ => Err(HvError::NoSuchDomain),
        }
    }

    fn count(&self, n: u64) -> usize {
        self.calls.iter().filter(|(c, _)| *c == n).count()
    }
}

impl Hypercalls for Fake {
    fn call(&mut self, n: u64, a: &[u64]) -> HvResult<u64> {
        self.calls.push((n, a.to_vec()));
        // SAFETY (all pointer reads and writes below): the control library passes addresses
        // of live host values of the types (and lengths) each hypercall takes.
        unsafe {
            match n {
                nr::DOM_CHANNEL => {
                    if a[1] != u64::from(GUEST) {
                        return Err(HvError::NoSuchDomain);
                    }
                    match a[0] {
                        op::INFO => {
                            *(a[2] as *mut ChannelInfo) = self.info;
                            Ok(0)
                        }
                        op::KICK => Ok(0),
                        _ => Err(HvError::InvalidArgument),
                    }
                }
                nr::DOM_INFO => {
                    if a[0] != u64::from(GUEST) {
                        return Err(HvError::NoSuchDomain);
                    }
                    let flags = if self.pc { DomainFlags::PC_PLATFORM.bits() } else { 0 };
                    *(a[1] as *mut DomainInfo) = DomainInfo {
                        domid: GUEST,
                        state: if self.alive { state::RUNNING } else { state::DEAD },
                        pause_reason: 0,
                        flags,
                        parent: NO_DOMAIN,
                        clones: 0,
                        mem_bytes: MEM,
                        private_pages: MEM_PAGES,
                        shared_pages: 0,
                        exit_code: 0,
                        cpu_ns: 0,
                        name: name_field("web"),
                        reason: [0; REASON_MAX_BYTES],
                    };
                    Ok(0)
                }
                nr::MEM_READ => {
                    let r = self.mem_range(a[0], a[1], a[3])?;
                    core::ptr::copy_nonoverlapping(self.mem[r].as_ptr(), a[2] as *mut u8, a[3] as usize);
                    Ok(0)
                }
                nr::MEM_WRITE => {
                    let r = self.mem_range(a[0], a[1], a[3])?;
                    core::ptr::copy_nonoverlapping(a[2] as *const u8, self.mem[r].as_mut_ptr(), a[3] as usize);
                    Ok(0)
                }
                nr::VCPU_GET => {
                    self.known(a[0])?;
                    let rip = if a[0] == u64::from(EPOCH) { EPOCH_RIP } else { 0xBAD };
                    *(a[1] as *mut VcpuContext) = VcpuContext { rip, ..VcpuContext::default() };
                    Ok(0)
                }
                nr::DOM_STATE_GET => {
                    self.known(a[0])?;
                    let t = if a[0] == u64::from(EPOCH) { EPOCH_TIME_NS } else { 1 };
                    *(a[1] as *mut SavedState) = SavedState { guest_time_ns: t, ..SavedState::default() };
                    Ok(0)
                }
                nr::DOM_PLATFORM_GET => {
                    self.known(a[0])?;
                    if !self.pc {
                        return Err(HvError::InvalidArgument);
                    }
                    let bytes: &[u8] = if a[0] == u64::from(EPOCH) { &EPOCH_PLATFORM } else { &[0xA5; 300] };
                    assert!(bytes.len() as u64 <= a[2]);
                    core::ptr::copy_nonoverlapping(bytes.as_ptr(), a[1] as *mut u8, bytes.len());
                    Ok(bytes.len() as u64)
                }
                nr::DOM_STAT => {
                    self.known(a[0])?;
                    *(a[1] as *mut DomainStat) = DomainStat { domid: a[0] as u32, quota_pages: 1000, ..DomainStat::default() };
                    Ok(0)
                }
                nr::DOM_DESTROY => {
                    self.known(a[0])?;
                    self.destroyed.push(a[0] as u32);
                    Ok(0)
                }
                nr::TIME => {
                    self.now += 1_000;
                    Ok(self.now)
                }
                nr::BLOCK => {
                    // dom0 sleeps (the timeout, here always reached) and the guest runs.
                    self.now += a[0].max(1);
                    if self.dies_in_block {
                        self.alive = false;
                    } else {
                        self.produce();
                    }
                    Ok(0)
                }
                nr::EVENT_ACK => Ok(0),
                _ => Err(HvError::NoSuchHypercall),
            }
        }
    }
}

/// A fake hypervisor and an empty store on a 4 MiB RAM disk.
struct Rig {
    ctl: Control<Fake>,
    store: Store<MemDevice>,
}

impl Rig {
    fn new(script: Vec<Msg>) -> Self {
        Self { ctl: Control::new(Fake::new(script)), store: Store::format(MemDevice::new(8192)).unwrap() }
    }

    fn fake(&mut self) -> &mut Fake {
        &mut self.ctl.hc
    }

    fn serve(&mut self) -> Result<Option<Stored>, StreamError> {
        Receiver { ctl: &mut self.ctl, store: &mut self.store }.serve(GUEST)
    }

    /// Image `name` decoded: its prologue and the memory it describes.
    fn decode(&mut self, name: &str) -> (Prologue, Vec<u8>) {
        let size = self.store.find(name).unwrap().size_bytes as usize;
        let mut bytes = vec![0u8; size];
        assert_eq!(self.store.read_at(name, 0, &mut bytes).unwrap(), size);
        let (mut dec, pro) = Decoder::new(&bytes[..], Limits { max_mem_bytes: MEM }).unwrap();
        let mut mem = vec![0u8; pro.domain.mem_bytes as usize];
        let mut run = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
        while let Some((gfn, n)) = dec.next_run(&mut run).unwrap() {
            let at = gfn as usize * PAGE_BYTES;
            mem[at..at + n * PAGE_BYTES].copy_from_slice(&run[..n * PAGE_BYTES]);
        }
        assert!(dec.digest().is_some(), "the image's END and digest verified");
        (pro, mem)
    }

    /// The stream was refused with `st`: the guest reads `st`, nothing was stored, the ring is
    /// consumed up to its producer index, and the epoch is left for the guest to try again.
    fn assert_refused(&mut self, st: u32) {
        let f = &self.ctl.hc;
        assert_eq!(f.status(), st, "status word");
        assert_eq!(f.cons(), f.ring_prod(), "the consumer index moved past the refused stream");
        assert!(f.destroyed.is_empty(), "the epoch is kept");
        assert!(self.store.list().is_empty(), "nothing stored: {:?}", self.store.list());
    }
}

/// The decoded memory holds the streamed page at each of `gfns` and zeros everywhere else.
fn assert_memory_is_the_streamed_pages(mem: &[u8], gfns: &[u64]) {
    for gfn in 0..MEM_PAGES {
        let got = &mem[gfn as usize * PAGE_BYTES..][..PAGE_BYTES];
        if gfns.contains(&gfn) {
            assert_eq!(got, &page_bytes(gfn)[..], "page {gfn} is the streamed one");
        } else {
            assert!(got.iter().all(|&b| b == 0), "page {gfn} was not sent and is zero");
        }
    }
}

#[test]
fn a_whole_stream_becomes_an_image_whose_pages_are_the_streamed_ones() {
    // More messages than slots: the ring wraps twice while the guest refills it.
    let gfns = [0u64, 1, 2, 5, 9, 40, 63];
    let mut script = vec![begin("one", MEM)];
    script.extend(gfns.iter().map(|&g| page(g)));
    script.push(end(gfns.len() as u64));
    let mut rig = Rig::new(script);
    rig.fake().pc = true;
    // The guest's memory differs from what it streams: the image holds what was streamed.
    rig.fake().mem[..PAGE_BYTES].fill(0xEE);

    let stored = rig.serve().unwrap().expect("a stream was waiting");
    assert_eq!(stored.image, "web.one");
    assert_eq!(stored.pages, gfns.len() as u64);

    let f = rig.fake();
    assert!(f.script.is_empty(), "every message went over the ring");
    assert_eq!(f.status(), status::STORED);
    assert_eq!(f.cons(), f.ring_prod());
    assert_eq!(f.ring_prod(), gfns.len() as u32 + 2);
    assert_eq!(f.destroyed, vec![EPOCH], "the epoch was destroyed once the image was stored");
    assert!(f.calls.iter().any(|(n, a)| *n == nr::DOM_DESTROY && a[0] == u64::from(EPOCH)));
    assert!(f.count(nr::BLOCK) >= 2, "dom0 waited for the guest to refill the ring");

    let entry = rig.store.find("web.one").expect("the image is in the store").clone();
    assert_eq!(entry.kind, store::ImageKind::Domain);
    assert_eq!(entry.size_bytes, stored.bytes);
    assert_eq!(entry.origin, "d3 web (self)");
    assert_eq!(rig.store.list().len(), 1);
    rig.store.verify("web.one").unwrap();

    let (pro, mem) = rig.decode("web.one");
    assert_eq!(pro.kind, ImageKind::Domain);
    assert_eq!(pro.domain, DomainRecord { name: "web".into(), mem_bytes: MEM, quota_pages: 1000, origin_domid: GUEST });
    assert_eq!(pro.vcpu.rip, EPOCH_RIP, "registers from the epoch");
    assert_eq!(pro.state.guest_time_ns, EPOCH_TIME_NS, "saved state from the epoch");
    assert_eq!(pro.platform.as_deref(), Some(&EPOCH_PLATFORM[..]), "devices from the epoch");
    assert_memory_is_the_streamed_pages(&mem, &gfns);
}

#[test]
fn pages_out_of_order_or_past_memory_are_refused_and_nothing_is_stored() {
    let cases: [(&str, Vec<Msg>); 4] = [
        ("descending", vec![begin("one", MEM), page(3), page(2), end(2)]),
        ("repeated", vec![begin("one", MEM), page(3), page(3), end(2)]),
        ("past memory", vec![begin("one", MEM), page(1), page(MEM_PAGES), end(2)]),
        (
            "unaligned",
            vec![begin("one", MEM), Msg { desc: Desc { kind: msg::PAGE, len: PAGE_BYTES as u32, arg: PAGE + 8 }, slot: page_bytes(1) }],
        ),
    ];
    for (what, script) in cases {
        let mut rig = Rig::new(script);
        let r = rig.serve();
        assert!(matches!(r, Err(StreamError::BadMessage(_))), "{what}: {r:?}");
        rig.assert_refused(status::BAD_MESSAGE);
    }

    // A page past memory after a longer good start, the rest of the stream still to come:
    // refused as soon as it is read.
    let mut script = vec![begin("one", MEM)];
    script.extend((0..6).map(page));
    script.push(Msg { desc: Desc { kind: msg::PAGE, len: PAGE_BYTES as u32, arg: MEM + PAGE }, slot: page_bytes(0) });
    script.push(end(7));
    let mut rig = Rig::new(script);
    assert!(matches!(rig.serve(), Err(StreamError::BadMessage(_))));
    rig.assert_refused(status::BAD_MESSAGE);
}

#[test]
fn a_stream_not_starting_with_begin_or_with_a_bad_tag_or_size_is_refused() {
    let odd = Msg { desc: Desc { kind: 77, len: 3, arg: MEM }, slot: b"one".to_vec() };
    let mut rig = Rig::new(vec![odd, page(0), end(1)]);
    assert!(matches!(rig.serve(), Err(StreamError::BadMessage(_))));
    rig.assert_refused(status::BAD_MESSAGE);

    // A page first is no better.
    let mut rig = Rig::new(vec![page(0), end(1)]);
    assert!(matches!(rig.serve(), Err(StreamError::BadMessage(_))));
    rig.assert_refused(status::BAD_MESSAGE);

    for tag in ["Bad!", "a.b", "x/y", "ab cd"] {
        let mut rig = Rig::new(vec![begin(tag, MEM), page(0), end(1)]);
        let r = rig.serve();
        assert!(matches!(r, Err(StreamError::BadName(_))), "{tag}: {r:?}");
        rig.assert_refused(status::BAD_NAME);
    }

    // No tag, or one longer than a name may carry: a malformed BEGIN.
    for len in [0, TAG_MAX_BYTES + 1] {
        let mut rig = Rig::new(vec![Msg { desc: Desc { kind: msg::BEGIN, len: len as u32, arg: MEM }, slot: vec![b'a'; len] }, end(0)]);
        let r = rig.serve();
        assert!(matches!(r, Err(StreamError::BadMessage(_))), "tag of {len}: {r:?}");
        rig.assert_refused(status::BAD_MESSAGE);
    }

    for size in [MEM - PAGE, MEM + PAGE, 0] {
        let mut rig = Rig::new(vec![begin("one", size), page(0), end(1)]);
        let r = rig.serve();
        assert!(matches!(r, Err(StreamError::BadMessage(_))), "size {size}: {r:?}");
        rig.assert_refused(status::BAD_MESSAGE);
    }

    // The image exists already: refused, and the one in the store is left as it was.
    let mut rig = Rig::new(vec![begin("one", MEM), page(0), end(1)]);
    let mut w = rig.store.begin("web.one", store::ImageKind::Domain, "before").unwrap();
    rig.store.write(&mut w, b"older image").unwrap();
    rig.store.commit(w).unwrap();
    let generation = rig.store.generation();
    let r = rig.serve();
    assert!(matches!(&r, Err(StreamError::BadName(n)) if n == "web.one"), "{r:?}");
    let f = rig.fake();
    assert_eq!(f.status(), status::BAD_NAME);
    assert_eq!(f.cons(), f.ring_prod());
    assert!(f.destroyed.is_empty());
    assert_eq!(rig.store.generation(), generation, "the store was not written");
    assert_eq!(rig.store.list().len(), 1);
    let mut old = [0u8; 11];
    assert_eq!(rig.store.read_at("web.one", 0, &mut old).unwrap(), 11);
    assert_eq!(&old, b"older image");
}

#[test]
fn a_stream_that_stops_is_cut_off_after_the_stall_limit() {
    let mut rig = Rig::new(vec![begin("one", MEM), page(0), page(1)]);
    let r = rig.serve();
    assert!(matches!(r, Err(StreamError::CutOff(_))), "{r:?}");
    rig.assert_refused(status::CUT_OFF);
    let f = rig.fake();
    let waited = f.now - T0;
    assert!(waited > STREAM_STALL_LIMIT_NS, "cut off only after the limit: waited {waited} ns");
    assert!(waited < STREAM_STALL_LIMIT_NS + 100_000_000, "cut off soon after the limit: waited {waited} ns");
    assert!(f.count(nr::BLOCK) > 100, "dom0 polled the ring meanwhile");
}

#[test]
fn a_stream_whose_guest_dies_is_given_up_without_an_answer() {
    let mut rig = Rig::new(vec![begin("one", MEM), page(0)]);
    rig.fake().dies_in_block = true;
    let r = rig.serve();
    assert!(matches!(r, Err(StreamError::GuestGone)), "{r:?}");
    let f = rig.fake();
    assert_eq!(f.status(), status::PENDING, "no answer to a guest that is gone");
    assert!(f.destroyed.is_empty() && rig.store.list().is_empty());
}

#[test]
fn an_abort_cuts_the_stream_off() {
    let abort = Msg { desc: Desc { kind: msg::ABORT, len: 0, arg: 0 }, slot: Vec::new() };
    let mut rig = Rig::new(vec![begin("one", MEM), page(0), abort, end(1)]);
    let r = rig.serve();
    assert!(matches!(r, Err(StreamError::CutOff(_))), "{r:?}");
    rig.assert_refused(status::CUT_OFF);
}

#[test]
fn an_end_that_miscounts_is_refused() {
    for count in [1u64, 3, u64::MAX] {
        let mut rig = Rig::new(vec![begin("one", MEM), page(0), page(4), end(count)]);
        let r = rig.serve();
        assert!(matches!(r, Err(StreamError::BadMessage(_))), "END {count}: {r:?}");
        rig.assert_refused(status::BAD_MESSAGE);
    }
    // The count that is right is taken, with no page at all too.
    let mut rig = Rig::new(vec![begin("one", MEM), end(0)]);
    assert_eq!(rig.serve().unwrap().unwrap().pages, 0);
    assert_eq!(rig.fake().status(), status::STORED);
    let (_, mem) = rig.decode("web.one");
    assert!(mem.iter().all(|&b| b == 0));
}

#[test]
fn no_epoch_is_refused() {
    let mut rig = Rig::new(vec![begin("one", MEM), page(0), end(1)]);
    rig.fake().info.epoch = NO_DOMAIN;
    let r = rig.serve();
    assert!(matches!(r, Err(StreamError::NoEpoch)), "{r:?}");
    rig.assert_refused(status::NO_EPOCH);
    let f = rig.fake();
    assert_eq!(f.count(nr::VCPU_GET) + f.count(nr::DOM_STATE_GET) + f.count(nr::DOM_DESTROY), 0, "no epoch was touched");
}

#[test]
fn a_ring_with_a_bad_magic_or_slot_count_is_refused_without_consuming() {
    // (what, the magic, the slot count in the header, the ring's pages as registered)
    let cases = [
        ("magic", u32::from_le_bytes(*b"CHN2"), SLOTS, SLOTS + 1),
        ("no slots", ring::MAGIC, 0, SLOTS + 1),
        ("too many slots", ring::MAGIC, MAX_SLOTS + 1, MAX_SLOTS + 2),
        ("more slots than pages", ring::MAGIC, SLOTS, SLOTS),
        ("huge slot count", ring::MAGIC, u32::MAX, SLOTS + 1),
    ];
    for (what, magic, slots, pages) in cases {
        let mut rig = Rig::new(vec![begin("one", MEM), page(0), end(1)]);
        let f = rig.fake();
        f.put_word(ring::MAGIC_OFFSET, magic);
        f.put_word(ring::SLOTS_OFFSET, slots);
        f.info.pages = pages;
        let r = rig.serve();
        assert!(matches!(r, Err(StreamError::BadRing(_))), "{what}: {r:?}");
        let f = rig.fake();
        assert_eq!(f.status(), status::BAD_MESSAGE, "{what}");
        assert_eq!(f.cons(), 0, "{what}: nothing consumed");
        assert_eq!(f.ring_prod(), 3);
        assert_eq!(f.count(nr::DOM_INFO), 0, "{what}: refused before the stream was looked at");
        assert!(f.destroyed.is_empty() && rig.store.list().is_empty());
    }
}

#[test]
fn a_ring_with_nothing_new_or_none_at_all_is_left_alone() {
    let mut rig = Rig::new(Vec::new());
    assert!(rig.serve().unwrap().is_none());
    rig.fake().info.ring_gpa = 0;
    assert!(rig.serve().unwrap().is_none());
    let f = rig.fake();
    assert_eq!(f.status(), status::PENDING);
    assert_eq!(f.count(nr::MEM_WRITE), 0, "nothing written to the guest");
}

#[test]
fn consecutive_pages_in_consecutive_slots_come_in_one_read_and_still_land_where_they_belong() {
    // Runs of pages that wrap the ring and break at a gap: each read stops at the ring's end,
    // at a page that does not continue the run, and at the end of what was published.
    let gfns: Vec<u64> = (0..11).chain([13, 14, 30]).collect();
    let mut script = vec![begin("one", MEM)];
    script.extend(gfns.iter().map(|&g| page(g)));
    script.push(end(gfns.len() as u64));
    let mut rig = Rig::new(script);
    let stored = rig.serve().unwrap().expect("a stream was waiting");
    assert_eq!(stored.pages, gfns.len() as u64);
    let f = rig.fake();
    let slot_reads: Vec<u64> = f
        .calls
        .iter()
        .filter(|(n, a)| *n == nr::MEM_READ && a[1] > RING_GPA && a[3] % PAGE == 0)
        .map(|(_, a)| a[3] / PAGE)
        .collect();
    assert_eq!(slot_reads.iter().sum::<u64>(), gfns.len() as u64, "every page read once: {slot_reads:?}");
    assert!(slot_reads.iter().any(|&n| n > 1), "consecutive pages were read together: {slot_reads:?}");
    assert!(slot_reads.iter().all(|&n| n <= u64::from(SLOTS)), "no read crosses the ring's end: {slot_reads:?}");
    let (_, mem) = rig.decode("web.one");
    assert_memory_is_the_streamed_pages(&mem, &gfns);
}

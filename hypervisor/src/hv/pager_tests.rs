//! Host tests of lazy restore and pagers: demand faults and the request ring, supplies
//! private and shared, the checks on a supply, pager death and timeouts, takeover.

use super::*;
use guest_abi::domctl::CREATE_LAZY;
use guest_abi::hypercall::event;
use guest_abi::pager::{LazyStatus, SUPPLY_SHARED, SUPPLY_ZERO, SupplyArgs, fail, ring};

/// dom0's request ring and its supply buffer and argument block.
const RING_GPA: u64 = 0x10_0000;
const BUF_GPA: u64 = 0x20_0000;
const ARGS_GPA: u64 = 0x30_0000;

fn lazy(h: &mut Hv, d0: DomId, name: &str, mem: u64) -> DomId {
    let args = CreateArgs { mem_bytes: mem, vcpus: 1, flags: CREATE_LAZY, name: name_field(name) };
    // SAFETY: plain data.
    h.write_guest(d0, 0xA000, unsafe { guest_abi::bytes_of(&args) }, false).unwrap();
    call(h, d0, nr::DOM_CREATE, &[0xA000]).unwrap() as DomId
}

fn supply(h: &mut Hv, pager: DomId, a: SupplyArgs) -> Result<u64, HvError> {
    // SAFETY: plain data.
    h.write_guest(pager, ARGS_GPA, unsafe { guest_abi::bytes_of(&a) }, false).unwrap();
    call(h, pager, nr::PAGER_SUPPLY, &[ARGS_GPA])
}

fn page_args(client: DomId, gfn: u64, count: u64) -> SupplyArgs {
    SupplyArgs { client, gfn, count, src_gpa: BUF_GPA, ..SupplyArgs::default() }
}

/// Fills the pager's buffer page `i` with `v`.
fn stage(h: &mut Hv, pager: DomId, i: u64, v: u64) {
    h.write_guest(pager, BUF_GPA + i * PAGE_SIZE, &v.to_le_bytes(), false).unwrap();
}

fn ring_u32(h: &Hv, pager: DomId, off: u64) -> u32 {
    let mut b = [0u8; 4];
    h.read_guest(pager, RING_GPA + off, &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// The requests on dom0's ring from `cons` up to its producer index.
fn requests(h: &Hv, pager: DomId, cons: u32) -> Vec<(DomId, u64, u64)> {
    let prod = ring_u32(h, pager, ring::PROD_OFFSET);
    (cons..prod)
        .map(|i| {
            let off = ring::SLOT0_OFFSET + u64::from(i % ring::RING_SLOTS) * ring::SLOT_BYTES;
            let mut b = [0u8; 32];
            h.read_guest(pager, RING_GPA + off, &mut b).unwrap();
            let client = u32::from_le_bytes(b[0..4].try_into().unwrap());
            (client, u64::from_le_bytes(b[8..16].try_into().unwrap()), u64::from_le_bytes(b[16..24].try_into().unwrap()))
        })
        .collect()
}

fn status(h: &Hv, id: DomId) -> LazyStatus {
    h.lazy_status(id).unwrap()
}

/// A touch of `gpa` by the client, as the hardware reports it.
fn touch(h: &mut Hv, id: DomId, gpa: u64, write: bool) {
    h.handle_exit(id, Exit::NestedPageFault { gpa, write, fetch: false });
}

fn setup() -> (Hv, DomId) {
    let mut h = hv();
    let d0 = dom0(&mut h);
    (h, d0)
}

#[test]
fn a_lazy_domain_starts_with_no_memory_at_any_size() {
    let (mut h, d0) = setup();
    let free = h.frames.free_frames();
    let small = lazy(&mut h, d0, "small", 16 * MIB);
    let cost_small = free - h.frames.free_frames();
    let free = h.frames.free_frames();
    let big = lazy(&mut h, d0, "big", 48 * MIB);
    let cost_big = free - h.frames.free_frames();
    assert_eq!(cost_small, cost_big, "creation costs the same at 16 and 48 MiB");
    assert!(cost_small <= 8, "{cost_small} frames");
    assert_eq!(status(&h, small).missing_pages, 16 * MIB / PAGE_SIZE - 1);
    assert_eq!(status(&h, big).pager, d0);
    assert!(h.domain_info(big).unwrap().flags & guest_abi::domctl::DomainFlags::LAZY.bits() != 0);
    h.check_invariants().unwrap();
}

#[test]
fn a_first_touch_stops_the_vcpu_posts_a_request_and_the_supply_lets_it_go_on() {
    let (mut h, d0) = setup();
    call(&mut h, d0, nr::PAGER_RING, &[RING_GPA]).unwrap();
    assert_eq!(ring_u32(&h, d0, ring::SLOTS_OFFSET), ring::RING_SLOTS);
    let c = lazy(&mut h, d0, "web", 8 * MIB);
    h.unpause(c).unwrap();
    h.domains.get_mut(d0).unwrap().events.pending = 0;
    touch(&mut h, c, 0x5_0123, false);
    assert!(!h.domains.get(c).unwrap().runnable(), "the vCPU waits");
    assert_eq!(h.domain_info(c).unwrap().state, state::BLOCKED);
    assert!(h.domains.get(d0).unwrap().events.pending & event::PAGER != 0, "the pager is told");
    let reqs = requests(&h, d0, 0);
    assert_eq!(reqs.len(), 1);
    let (client, gfn, id) = reqs[0];
    assert_eq!((client, gfn), (c, 0x50));
    stage(&mut h, d0, 0, 0xFEED);
    assert_eq!(supply(&mut h, d0, SupplyArgs { request: id, ..page_args(c, 0x50, 1) }), Ok(1));
    assert!(h.domains.get(c).unwrap().runnable(), "the page arrived: it goes on");
    assert_eq!(guest_read(&h, c, 0x5_0000), 0xFEED);
    let s = status(&h, c);
    assert_eq!((s.demand_faults, s.supplied_pages, s.waiting_gfn), (1, 1, u64::MAX));
    assert!(s.first_answer_tsc >= s.first_fault_tsc && s.first_fault_tsc > 0);
    // A private page is the client's own: a write needs no copy.
    guest_write(&mut h, c, 0x5_0000, 7);
    assert_eq!(h.domains.get(c).unwrap().counters.cow_faults, 0);
    h.check_invariants().unwrap();
}

#[test]
fn background_supplies_make_the_domain_independent_of_its_pager() {
    let (mut h, d0) = setup();
    let c = lazy(&mut h, d0, "web", 2 * MIB);
    let pages = 2 * MIB / PAGE_SIZE;
    for first in (0..pages).step_by(256) {
        let n = (pages - first).min(256);
        assert_eq!(supply(&mut h, d0, SupplyArgs { flags: SUPPLY_ZERO, ..page_args(c, first, n) }).unwrap(), n - u64::from((first..first + n).contains(&START_INFO_GFN)));
    }
    assert_eq!(status(&h, c).missing_pages, 0);
    assert!(!h.domains.get(c).unwrap().is_lazy());
    assert_eq!(h.domains.get(c).unwrap().mapped_ram, pages - 1);
    // No longer lazy: a supply is refused, and the domain can be frozen like any other.
    assert_eq!(supply(&mut h, d0, SupplyArgs { flags: SUPPLY_ZERO, ..page_args(c, 0, 1) }), Err(HvError::NotPermitted));
    h.freeze(c, false).unwrap();
    h.check_invariants().unwrap();
}

#[test]
fn shared_supplies_give_several_clients_one_frame_copied_on_their_first_write() {
    let (mut h, d0) = setup();
    let a = lazy(&mut h, d0, "a", 4 * MIB);
    let b = lazy(&mut h, d0, "b", 4 * MIB);
    h.unpause(a).unwrap();
    h.unpause(b).unwrap();
    stage(&mut h, d0, 0, 41);
    stage(&mut h, d0, 1, 42);
    let shared = |c| SupplyArgs { flags: SUPPLY_SHARED, share_key: 9, ..page_args(c, 0x100, 2) };
    let free = h.frames.free_frames();
    assert_eq!(supply(&mut h, d0, shared(a)), Ok(2));
    // The second client's pages come from the pool: no new data frame.
    stage(&mut h, d0, 0, 999);
    let after_a = h.frames.free_frames();
    assert_eq!(supply(&mut h, d0, shared(b)), Ok(2));
    assert!(free - after_a >= 2);
    assert!(after_a - h.frames.free_frames() <= 3, "only tables for b");
    assert_eq!(guest_read(&h, b, 0x100 * PAGE_SIZE), 41, "b sees the shared content, not what was staged later");
    // A write copies: the sibling keeps the shared page.
    guest_write(&mut h, a, 0x100 * PAGE_SIZE, 5);
    assert_eq!(guest_read(&h, a, 0x100 * PAGE_SIZE), 5);
    assert_eq!(guest_read(&h, b, 0x100 * PAGE_SIZE), 41);
    assert_eq!(h.domains.get(a).unwrap().counters.cow_faults, 1);
    assert_eq!(status(&h, b).shared_supplied, 2);
    h.check_invariants().unwrap();
    // Dropping the pool leaves the clients their frames.
    assert_eq!(call(&mut h, d0, nr::PAGER_DROP, &[9]), Ok(0));
    assert_eq!(guest_read(&h, b, 0x101 * PAGE_SIZE), 42);
    h.check_invariants().unwrap();
    h.destroy_domain(a).unwrap();
    h.destroy_domain(b).unwrap();
    h.check_invariants().unwrap();
}

#[test]
fn bogus_supplies_are_refused_and_change_nothing() {
    let (mut h, d0) = setup();
    let c = lazy(&mut h, d0, "c", 4 * MIB);
    let other = started(&mut h, "plain", 4 * MIB);
    let free = h.frames.free_frames();
    let pages = 4 * MIB / PAGE_SIZE;
    // A GPA beyond the client's memory, a count too large, zero, bad flags, no key.
    assert_eq!(supply(&mut h, d0, page_args(c, pages, 1)), Err(HvError::BadAddress));
    assert_eq!(supply(&mut h, d0, page_args(c, pages - 1, 2)), Err(HvError::BadAddress));
    assert_eq!(supply(&mut h, d0, page_args(c, 0, 257)), Err(HvError::InvalidArgument));
    assert_eq!(supply(&mut h, d0, page_args(c, 0, 0)), Err(HvError::InvalidArgument));
    assert_eq!(supply(&mut h, d0, SupplyArgs { flags: 0x80, ..page_args(c, 0, 1) }), Err(HvError::InvalidArgument));
    assert_eq!(supply(&mut h, d0, SupplyArgs { flags: SUPPLY_SHARED, ..page_args(c, 0, 1) }), Err(HvError::InvalidArgument));
    // A source outside the pager's memory, or not page aligned.
    assert_eq!(supply(&mut h, d0, SupplyArgs { src_gpa: 1 << 40, ..page_args(c, 0, 1) }), Err(HvError::BadAddress));
    assert_eq!(supply(&mut h, d0, SupplyArgs { src_gpa: BUF_GPA + 8, ..page_args(c, 0, 1) }), Err(HvError::InvalidArgument));
    // An answer to a request never made, or to the outstanding one but about another page.
    assert_eq!(supply(&mut h, d0, SupplyArgs { request: 77, ..page_args(c, 0x20, 1) }), Err(HvError::InvalidArgument));
    h.unpause(c).unwrap();
    touch(&mut h, c, 0x30 * PAGE_SIZE, false);
    assert_eq!(supply(&mut h, d0, SupplyArgs { request: 1, ..page_args(c, 0x20, 1) }), Err(HvError::InvalidArgument));
    assert_eq!(supply(&mut h, d0, SupplyArgs { request: 2, ..page_args(c, 0x30, 1) }), Err(HvError::InvalidArgument));
    // A client that is not lazy, or does not exist.
    assert_eq!(supply(&mut h, d0, page_args(other, 0x20, 1)), Err(HvError::NotPermitted));
    assert_eq!(supply(&mut h, d0, page_args(999, 0x20, 1)), Err(HvError::NoSuchDomain));
    assert_eq!(h.frames.free_frames(), free);
    assert_eq!(status(&h, c).supplied_pages, 0);
    assert!(h.domains.get(c).unwrap().waits_for_pager());
    // A background supply answers it first; the late answer to request 1 is not an error.
    assert_eq!(supply(&mut h, d0, SupplyArgs { flags: SUPPLY_ZERO, ..page_args(c, 0x30, 1) }), Ok(1));
    assert!(!h.domains.get(c).unwrap().waits_for_pager());
    assert_eq!(supply(&mut h, d0, SupplyArgs { flags: SUPPLY_ZERO, request: 1, ..page_args(c, 0x30, 1) }), Ok(0));
    // A supply never overwrites a page the client has.
    stage(&mut h, d0, 0, 1);
    assert_eq!(supply(&mut h, d0, page_args(c, 0x20, 1)), Ok(1));
    stage(&mut h, d0, 0, 2);
    assert_eq!(supply(&mut h, d0, page_args(c, 0x20, 1)), Ok(0));
    assert_eq!(guest_read(&h, c, 0x20 * PAGE_SIZE), 1);
    h.check_invariants().unwrap();
}

#[test]
fn a_domain_that_is_not_its_pager_cannot_supply_or_fail_its_pages() {
    let (mut h, d0) = setup();
    let c = lazy(&mut h, d0, "c", 4 * MIB);
    let intruder = started(&mut h, "intruder", 4 * MIB);
    let a = page_args(c, 0x20, 1);
    assert_eq!(supply(&mut h, intruder, a), Err(HvError::NotPermitted));
    assert_eq!(call(&mut h, intruder, nr::PAGER_FAIL, &[u64::from(c), 0x20, u64::from(fail::CHECKSUM)]), Err(HvError::NotPermitted));
    assert_eq!(call(&mut h, intruder, nr::PAGER_RING, &[RING_GPA]), Err(HvError::NotPermitted));
    assert_eq!(call(&mut h, intruder, nr::DOM_PAGER_SET, &[u64::from(c), u64::from(intruder), 0]), Err(HvError::NotPermitted));
    assert_eq!(h.domains.get(c).unwrap().life, Life::Live);
    assert_eq!(status(&h, c).supplied_pages, 0);
    // Even a pager of another client cannot touch this one.
    let c2 = lazy(&mut h, d0, "c2", 4 * MIB);
    call(&mut h, d0, nr::DOM_PAGER_SET, &[u64::from(c2), u64::from(intruder), 0]).unwrap();
    assert_eq!(supply(&mut h, intruder, a), Err(HvError::NotPermitted));
    // dom0 handed c2 away: it no longer serves it.
    assert_eq!(supply(&mut h, d0, page_args(c2, 0x20, 1)), Err(HvError::NotPermitted));
}

#[test]
fn a_page_the_pager_cannot_supply_crashes_only_its_client() {
    let (mut h, d0) = setup();
    let c = lazy(&mut h, d0, "c", 4 * MIB);
    let sibling = lazy(&mut h, d0, "sibling", 4 * MIB);
    h.unpause(c).unwrap();
    touch(&mut h, c, 0x7000, false);
    call(&mut h, d0, nr::PAGER_FAIL, &[u64::from(c), 7, u64::from(fail::CHECKSUM)]).unwrap();
    let d = h.domains.get(c).unwrap();
    assert_eq!(d.life, Life::Crashed);
    assert_eq!(d.reason.as_str(), "pager d0: page at gpa 0x7000 failed its checksum");
    assert_eq!(h.domains.get(sibling).unwrap().life, Life::Live);
    assert_eq!(call(&mut h, d0, nr::PAGER_FAIL, &[u64::from(sibling), 4 * MIB / PAGE_SIZE, 1]), Err(HvError::BadAddress));
    h.check_invariants().unwrap();
}

#[test]
fn a_dead_pager_leaves_its_clients_paused_and_a_new_pager_takes_them_over() {
    let (mut h, d0) = setup();
    let p = started(&mut h, "pager", 4 * MIB);
    let c = lazy(&mut h, d0, "c", 4 * MIB);
    call(&mut h, d0, nr::DOM_PAGER_SET, &[u64::from(c), u64::from(p), 0]).unwrap();
    call(&mut h, p, nr::PAGER_RING, &[RING_GPA]).unwrap();
    // Shared pages it supplied survive it.
    stage(&mut h, p, 0, 31);
    assert_eq!(supply(&mut h, p, SupplyArgs { flags: SUPPLY_SHARED, share_key: 1, ..page_args(c, 0x40, 1) }), Ok(1));
    h.unpause(c).unwrap();
    touch(&mut h, c, 0x9_0000, true);
    assert_eq!(requests(&h, p, 0).len(), 1);
    h.crash(p, format_args!("test"));
    let d = h.domains.get(c).unwrap();
    assert_eq!(d.paused, Some(PauseReason::Pager));
    assert_eq!(d.reason.as_str(), "pager d1 (pager) is gone");
    assert_eq!(status(&h, c).pager, guest_abi::domctl::NO_DOMAIN);
    assert_eq!(guest_read(&h, c, 0x40 * PAGE_SIZE), 31);
    h.check_invariants().unwrap();
    // dom0 takes over: the waiting request is posted on its ring, the client goes on.
    call(&mut h, d0, nr::PAGER_RING, &[RING_GPA]).unwrap();
    call(&mut h, d0, nr::DOM_PAGER_SET, &[u64::from(c), u64::from(d0), 0]).unwrap();
    assert_eq!(h.domains.get(c).unwrap().paused, None);
    let reqs = requests(&h, d0, 0);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].1, 0x90);
    stage(&mut h, d0, 0, 77);
    assert_eq!(supply(&mut h, d0, SupplyArgs { request: reqs[0].2, ..page_args(c, 0x90, 1) }), Ok(1));
    assert!(h.domains.get(c).unwrap().runnable());
    assert_eq!(guest_read(&h, c, 0x9_0000), 77);
    h.check_invariants().unwrap();
}

#[test]
fn a_pager_that_does_not_answer_in_time_leaves_its_client_paused_until_it_does() {
    let (mut h, d0) = setup();
    let p = started(&mut h, "slow", 4 * MIB);
    let c = lazy(&mut h, d0, "c", 4 * MIB);
    call(&mut h, d0, nr::DOM_PAGER_SET, &[u64::from(c), u64::from(p), 5]).unwrap();
    h.unpause(c).unwrap();
    touch(&mut h, c, 0x3000, false);
    // No ring yet: the request waits in the backlog; the clock runs past 5 ms.
    h.platform.now.set(h.platform.now.get() + 6_000_000);
    h.run_once();
    let d = h.domains.get(c).unwrap();
    assert_eq!(d.paused, Some(PauseReason::Pager));
    assert_eq!(d.reason.as_str(), "pager d1 did not answer gpa 0x3000 in 5 ms");
    assert_eq!(h.domain_info(c).unwrap().pause_reason, guest_abi::domctl::pause::PAGER);
    // The ring appears, the request is posted, the late answer lets the client go on.
    call(&mut h, p, nr::PAGER_RING, &[RING_GPA]).unwrap();
    let reqs = requests(&h, p, 0);
    assert_eq!(reqs.len(), 1);
    assert_eq!(supply(&mut h, p, SupplyArgs { flags: SUPPLY_ZERO, request: reqs[0].2, ..page_args(c, 3, 1) }), Ok(1));
    let d = h.domains.get(c).unwrap();
    assert_eq!(d.paused, None);
    assert!(d.runnable());
}

#[test]
fn a_full_ring_keeps_requests_until_the_pager_consumes() {
    let (mut h, d0) = setup();
    call(&mut h, d0, nr::PAGER_RING, &[RING_GPA]).unwrap();
    let n = ring::RING_SLOTS as usize + 3;
    let clients: Vec<DomId> = (0..n).map(|i| lazy(&mut h, d0, &format!("c{i}"), 2 * MIB)).collect();
    for &c in &clients {
        h.unpause(c).unwrap();
        touch(&mut h, c, 0x8000, false);
    }
    assert_eq!(requests(&h, d0, 0).len(), ring::RING_SLOTS as usize);
    // The pager consumes everything; its next call posts the rest.
    h.write_guest(d0, RING_GPA + ring::CONS_OFFSET, &ring::RING_SLOTS.to_le_bytes(), false).unwrap();
    let last = clients[0];
    assert_eq!(supply(&mut h, d0, SupplyArgs { flags: SUPPLY_ZERO, ..page_args(last, 8, 1) }), Ok(1));
    let more = requests(&h, d0, ring::RING_SLOTS);
    assert_eq!(more.len(), 3);
    assert_eq!(more[2].0, clients[n - 1]);
    // A consumer index the pager could not have written is never trusted.
    h.write_guest(d0, RING_GPA + ring::CONS_OFFSET, &(ring::RING_SLOTS + 100).to_le_bytes(), false).unwrap();
    let c = lazy(&mut h, d0, "late", 2 * MIB);
    h.unpause(c).unwrap();
    touch(&mut h, c, 0x8000, false);
    assert_eq!(ring_u32(&h, d0, ring::PROD_OFFSET), ring::RING_SLOTS + 3);
}

#[test]
fn a_hypercall_argument_in_a_missing_page_waits_for_it_and_the_call_is_made_again() {
    let (mut h, d0) = setup();
    call(&mut h, d0, nr::PAGER_RING, &[RING_GPA]).unwrap();
    let c = lazy(&mut h, d0, "c", 4 * MIB);
    h.unpause(c).unwrap();
    let rip = vcpu(&mut h, c).ctx.rip;
    // console_write of a buffer in page 0x30, not yet there.
    let _ = call(&mut h, c, nr::CONSOLE_WRITE, &[0x3_0000, 5]);
    assert!(h.domains.get(c).unwrap().waits_for_pager());
    assert_eq!(vcpu(&mut h, c).ctx.rip, rip, "the hypercall is not skipped");
    let reqs = requests(&h, d0, 0);
    assert_eq!((reqs[0].0, reqs[0].1), (c, 0x30));
    h.write_guest(d0, BUF_GPA, b"hello", false).unwrap();
    supply(&mut h, d0, SupplyArgs { request: reqs[0].2, ..page_args(c, 0x30, 1) }).unwrap();
    assert_eq!(call(&mut h, c, nr::CONSOLE_WRITE, &[0x3_0000, 5]), Ok(5));
    // dom0 reading a page of the client that is not there yet gets a clear error.
    assert_eq!(call(&mut h, d0, nr::MEM_READ, &[u64::from(c), 0x5_0000, 0x40_0000, 16]), Err(HvError::NotResident));
}

#[test]
fn a_lazy_domain_cannot_be_frozen_or_checkpointed_before_it_is_whole() {
    let (mut h, d0) = setup();
    let c = lazy(&mut h, d0, "c", 4 * MIB);
    assert_eq!(h.freeze(c, false), Err(HvError::WrongState));
    assert_eq!(h.snapshot(c, "c.ckpt"), Err(HvError::WrongState));
    assert_eq!(call(&mut h, d0, nr::DOM_PAGER_SET, &[u64::from(c), u64::from(c), 0]), Err(HvError::InvalidArgument));
    let plain = started(&mut h, "plain", 4 * MIB);
    assert_eq!(call(&mut h, d0, nr::DOM_PAGER_SET, &[u64::from(plain), u64::from(d0), 0]), Err(HvError::WrongState));
}

#[test]
fn shared_zero_pages_of_one_key_map_one_frame_until_written() {
    let (mut h, d0) = setup();
    let a = lazy(&mut h, d0, "a", 4 * MIB);
    let b = lazy(&mut h, d0, "b", 4 * MIB);
    h.unpause(a).unwrap();
    let free = h.frames.free_frames();
    let zero = |c| SupplyArgs { flags: SUPPLY_ZERO | SUPPLY_SHARED, share_key: 3, ..page_args(c, 0x100, 256) };
    assert_eq!(supply(&mut h, d0, zero(a)), Ok(256));
    assert_eq!(supply(&mut h, d0, zero(b)), Ok(256));
    // One zero frame and the last-level tables, for 512 mapped pages.
    assert!(free - h.frames.free_frames() <= 1 + 2 * 3, "{} frames", free - h.frames.free_frames());
    assert_eq!(guest_read(&h, b, 0x150 * PAGE_SIZE), 0);
    guest_write(&mut h, a, 0x150 * PAGE_SIZE, 9);
    assert_eq!(guest_read(&h, a, 0x150 * PAGE_SIZE), 9);
    assert_eq!(guest_read(&h, a, 0x151 * PAGE_SIZE), 0, "the other zero pages stay zero");
    assert_eq!(guest_read(&h, b, 0x150 * PAGE_SIZE), 0, "the sibling never sees the write");
    h.check_invariants().unwrap();
}

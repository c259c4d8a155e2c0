//! The bookkeeping of lazy restore (docs/pager.md): what a lazily restored client waits for,
//! and what a pager holds (its request ring, the frames it shares among clients, the
//! requests its full ring could not take yet). The mechanism that uses it is `hv::pager`.

use crate::mm::frame::Pfn;
use crate::p2m::Gfn;
use crate::sched::DomId;
use alloc::collections::{BTreeMap, VecDeque};
use guest_abi::pager::{LazyStatus, Request, ring};

/// The request a client's vCPU is stopped on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub gfn: Gfn,
    /// [`Request::id`].
    pub id: u64,
    pub write: bool,
    /// Hypervisor time the pager's answer is timed from (the touch, or a takeover).
    pub since_ns: u64,
    /// Host TSC of the touch.
    pub since_tsc: u64,
    /// On the pager's ring (else in its backlog, or it has no pager).
    pub posted: bool,
}

/// A domain restored lazily: its pages come from its pager until none is missing. Kept
/// after that for its figures (`missing_pages` 0, no pager).
#[derive(Clone, Debug)]
pub struct LazyClient {
    /// Its pager (`None`: the pager died; the client is paused until a new one takes over).
    pub pager: Option<DomId>,
    /// How long the pager may take to answer before the client is paused.
    pub timeout_ns: u64,
    /// Guest pages not yet supplied.
    pub missing_pages: u64,
    pub wait: Option<Wait>,
    /// The last request id handed out.
    pub last_request: u64,
    pub demand_faults: u64,
    pub supplied_pages: u64,
    pub shared_supplied: u64,
    pub first_fault_tsc: u64,
    pub first_answer_tsc: u64,
    pub wait_cycles: u64,
}

impl LazyClient {
    /// A client of `pager` missing `missing_pages` pages.
    pub fn new(pager: DomId, missing_pages: u64, timeout_ns: u64) -> Self {
        Self {
            pager: Some(pager),
            timeout_ns,
            missing_pages,
            wait: None,
            last_request: 0,
            demand_faults: 0,
            supplied_pages: 0,
            shared_supplied: 0,
            first_fault_tsc: 0,
            first_answer_tsc: 0,
            wait_cycles: 0,
        }
    }

    /// Pages are still missing.
    pub fn is_lazy(&self) -> bool {
        self.missing_pages > 0
    }

    /// Starts waiting for `gfn`; returns the new request's id.
    pub fn start_wait(&mut self, gfn: Gfn, write: bool, now_ns: u64, tsc: u64) -> u64 {
        self.last_request += 1;
        self.demand_faults += 1;
        if self.first_fault_tsc == 0 {
            self.first_fault_tsc = tsc.max(1);
        }
        self.wait = Some(Wait { gfn, id: self.last_request, write, since_ns: now_ns, since_tsc: tsc, posted: false });
        self.last_request
    }

    /// The wait is over (its page arrived at host TSC `tsc`).
    pub fn end_wait(&mut self, tsc: u64) {
        if let Some(w) = self.wait.take() {
            self.wait_cycles += tsc.saturating_sub(w.since_tsc);
            if self.first_answer_tsc == 0 {
                self.first_answer_tsc = tsc.max(1);
            }
        }
    }

    /// When the pager's time to answer runs out, if it is waiting on one.
    pub fn deadline_ns(&self) -> Option<u64> {
        let w = self.wait?;
        self.pager?;
        Some(w.since_ns.saturating_add(self.timeout_ns))
    }

    /// `pager_status` of client `id`.
    pub fn status(&self, id: DomId) -> LazyStatus {
        LazyStatus {
            client: id,
            pager: self.pager.unwrap_or(guest_abi::domctl::NO_DOMAIN),
            missing_pages: self.missing_pages,
            demand_faults: self.demand_faults,
            supplied_pages: self.supplied_pages,
            shared_supplied: self.shared_supplied,
            waiting_gfn: self.wait.map(|w| w.gfn).unwrap_or(u64::MAX),
            first_fault_tsc: self.first_fault_tsc,
            first_answer_tsc: self.first_answer_tsc,
            wait_cycles: self.wait_cycles,
        }
    }
}

/// What a domain that serves pages holds.
#[derive(Debug, Default)]
pub struct PagerRole {
    /// Its request ring page, if registered.
    pub ring_gpa: Option<u64>,
    /// The producer index (the hypervisor's own copy; the page's is only written).
    pub prod: u32,
    /// Frames supplied as shared, by (share key, gfn); the pool holds one reference on each.
    pub pool: BTreeMap<(u64, Gfn), Pfn>,
    /// Clients whose request did not fit on the ring (or came before it was registered).
    pub backlog: VecDeque<DomId>,
}

/// Where on the ring the next request goes, given the consumer index the pager wrote: `None`
/// if the ring is full, or if the index is not one the pager could have written (ahead of
/// the producer, or more than a ring behind), which is treated as full, never trusted.
pub fn ring_slot(prod: u32, cons: u32) -> Option<u64> {
    let used = prod.wrapping_sub(cons);
    if used >= ring::RING_SLOTS {
        return None;
    }
    Some(ring::SLOT0_OFFSET + u64::from(prod % ring::RING_SLOTS) * ring::SLOT_BYTES)
}

/// The bytes of a request as it sits in a slot.
pub fn encode_request(r: &Request) -> [u8; ring::SLOT_BYTES as usize] {
    let mut b = [0u8; ring::SLOT_BYTES as usize];
    b[0..4].copy_from_slice(&r.client.to_le_bytes());
    b[4..8].copy_from_slice(&r.flags.to_le_bytes());
    b[8..16].copy_from_slice(&r.gfn.to_le_bytes());
    b[16..24].copy_from_slice(&r.id.to_le_bytes());
    b[24..32].copy_from_slice(&r.tsc.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_slot_refuses_a_full_ring_and_a_consumer_index_it_never_produced() {
        assert_eq!(ring_slot(0, 0), Some(ring::SLOT0_OFFSET));
        assert_eq!(ring_slot(ring::RING_SLOTS, 0), None);
        assert_eq!(ring_slot(ring::RING_SLOTS - 1, 0).is_some(), true);
        // The consumer claims to be ahead of the producer: as full.
        assert_eq!(ring_slot(5, 6), None);
        // Indices wrap.
        assert_eq!(ring_slot(2, u32::MAX - 2), Some(ring::SLOT0_OFFSET + u64::from(2 % ring::RING_SLOTS) * ring::SLOT_BYTES));
    }

    #[test]
    fn a_wait_counts_its_cycles_and_the_first_answer() {
        let mut c = LazyClient::new(0, 10, 1000);
        let id = c.start_wait(7, false, 100, 5000);
        assert_eq!(id, 1);
        assert_eq!(c.deadline_ns(), Some(1100));
        c.end_wait(5600);
        assert_eq!((c.wait_cycles, c.first_fault_tsc, c.first_answer_tsc), (600, 5000, 5600));
        assert_eq!(c.deadline_ns(), None);
        c.pager = None;
        c.start_wait(8, true, 0, 0);
        assert_eq!(c.deadline_ns(), None, "no pager, no timeout: it is paused already");
    }

    #[test]
    fn requests_encode_little_endian_in_abi_order() {
        let r = Request { client: 3, flags: 1, gfn: 0x1234, id: 9, tsc: 77 };
        let b = encode_request(&r);
        assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 0x1234);
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 77);
        assert_eq!(core::mem::size_of::<Request>() as u64, ring::SLOT_BYTES);
    }
}

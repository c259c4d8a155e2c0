//! Round-robin run queue of runnable domains on the boot CPU, plus the deadlines of domains
//! blocked with a timeout.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Domain identifier.
pub type DomId = u32;

/// The scheduler's queues. A domain is in `queue` at most once (the caller tracks that).
#[derive(Default)]
pub struct RunQueue {
    queue: VecDeque<DomId>,
    timed: Vec<(u64, DomId)>,
    /// The least deadline in `timed`, kept so the run loop's check per exit is one compare.
    earliest: Option<u64>,
}

impl RunQueue {
    /// An empty queue with room for `domains` entries in both lists (each domain appears at
    /// most once in each), so queueing never allocates.
    pub fn with_room_for(domains: usize) -> Self {
        Self { queue: VecDeque::with_capacity(domains), timed: Vec::with_capacity(domains), earliest: None }
    }

    /// Appends a runnable domain.
    pub fn push_back(&mut self, id: DomId) {
        self.queue.push_back(id);
    }

    /// Puts a domain at the front (it runs next).
    pub fn push_front(&mut self, id: DomId) {
        self.queue.push_front(id);
    }

    /// The next domain to run.
    pub fn pop(&mut self) -> Option<DomId> {
        self.queue.pop_front()
    }

    /// Removes a domain wherever it is queued.
    pub fn remove(&mut self, id: DomId) {
        self.queue.retain(|&d| d != id);
        self.clear_deadline(id);
    }

    fn recount(&mut self) {
        self.earliest = self.timed.iter().map(|&(t, _)| t).min();
    }

    /// Number of queued domains.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if nothing is runnable.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records that `id` wants waking at `deadline_ns`.
    pub fn add_deadline(&mut self, deadline_ns: u64, id: DomId) {
        self.clear_deadline(id);
        self.timed.push((deadline_ns, id));
        self.earliest = Some(self.earliest.map_or(deadline_ns, |e| e.min(deadline_ns)));
    }

    /// Forgets `id`'s deadline.
    pub fn clear_deadline(&mut self, id: DomId) {
        let before = self.timed.len();
        self.timed.retain(|&(_, d)| d != id);
        if self.timed.len() != before {
            self.recount();
        }
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.earliest
    }

    /// Removes and returns the domains whose deadline is at or before `now_ns`.
    pub fn expired(&mut self, now_ns: u64) -> Vec<DomId> {
        let mut out = Vec::new();
        self.timed.retain(|&(t, d)| {
            if t <= now_ns {
                out.push(d);
                false
            } else {
                true
            }
        });
        if !out.is_empty() {
            self.recount();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_order_and_deadlines() {
        let mut q = RunQueue::default();
        q.push_back(1);
        q.push_back(2);
        q.push_front(3);
        assert_eq!((q.pop(), q.pop(), q.pop(), q.pop()), (Some(3), Some(1), Some(2), None));
        q.add_deadline(50, 7);
        q.add_deadline(20, 8);
        q.add_deadline(30, 7);
        assert_eq!(q.next_deadline(), Some(20));
        assert_eq!(q.expired(25), alloc::vec![8]);
        assert_eq!(q.expired(100), alloc::vec![7]);
        assert_eq!(q.next_deadline(), None);
        q.add_deadline(40, 1);
        q.add_deadline(10, 2);
        q.remove(2);
        assert_eq!(q.next_deadline(), Some(40));
        q.clear_deadline(1);
        assert_eq!(q.next_deadline(), None);
    }
}

//! Domain console output on its way to the serial line. Every domain's bytes go into its
//! console ring first; from there they are queued for the UART (dom0's as they are, other
//! domains' as whole `(dN) ` lines when echoing is on) only as far as the transmit queue has
//! room, and the queue is moved to the UART a bounded amount per exit. No exit waits for the
//! line however much a guest prints; what does not fit waits in its ring and follows later.
//! dom0, whose output is the shell the user reads, is slowed down instead of losing any.

use super::Hypervisor;
use crate::console::CONSOLE_RING_BYTES;
use crate::domain::Reason;
use crate::mm::physmem::PhysMem;
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::Backend;
use core::fmt::Write as _;

/// Longest console line echoed to the serial line in one piece.
pub const ECHO_LINE_MAX_BYTES: usize = 256;
/// Most bytes moved to the UART after one exit (the UART's FIFO takes at most 16 without
/// waiting on real hardware; emulated UARTs take everything at once).
pub const SERIAL_DRAIN_BYTES_PER_EXIT: usize = 256;
/// How long an idle CPU sleeps while output waits for the UART (16 bytes at 115200 baud).
pub const SERIAL_RETRY_NS: u64 = 1_500_000;

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// Appends to a domain's console and queues what the serial line can take of it.
    pub(crate) fn console_out(&mut self, id: DomId, bytes: &[u8]) {
        // Console history never eats into the heap the hypervisor keeps for its own work.
        let platform = &self.platform;
        let may_grow = || platform.heap_free_bytes() > super::HEAP_RESERVE_BYTES + 2 * CONSOLE_RING_BYTES;
        let Some(d) = self.domains.get_mut(id) else { return };
        d.console.push(bytes, may_grow);
        self.echo_console(id, false);
    }

    /// Bytes of `id`'s console written and not yet queued for the serial line.
    pub(crate) fn echo_backlog(&self, id: DomId) -> u64 {
        self.domains.get(id).map_or(0, |d| d.console.written_after(d.echoed))
    }

    /// How much of a `len`-byte console write dom0 may make now: what its ring can hold on
    /// top of what the serial line has not taken yet. The rest is refused (a short write),
    /// so dom0's output slows to the line's pace instead of being overwritten.
    pub(crate) fn dom0_console_room(&self, id: DomId, len: u64) -> u64 {
        len.min((CONSOLE_RING_BYTES as u64).saturating_sub(self.echo_backlog(id)))
    }

    /// Queues a domain's new console output for the serial line, as far as there is room:
    /// dom0's bytes as they are, others' (when echoing) as whole `(dN) ...` lines, so lines of
    /// different domains and of the hypervisor never run into each other. A line longer than
    /// [`ECHO_LINE_MAX_BYTES`] is broken; `flush` ends a last partial line (the domain is
    /// going away). What does not fit stays in the ring and is retried after a drain.
    pub(crate) fn echo_console(&mut self, id: DomId, flush: bool) {
        let Some(d) = self.domains.get_mut(id) else { return };
        let privileged = d.privileged;
        if !privileged && !self.settings.echo_guests {
            return;
        }
        let mut prefix = Reason::default();
        if !privileged {
            let _ = write!(prefix, "(d{id}) ");
        }
        let mut line = [0u8; ECHO_LINE_MAX_BYTES];
        loop {
            let next = if privileged {
                d.console.next_raw(d.echoed, ECHO_LINE_MAX_BYTES)
            } else {
                d.console.next_echo(d.echoed, ECHO_LINE_MAX_BYTES, flush)
            };
            // `echo_waiting` stays as it is: it is cleared when the id leaves the wait queue.
            let Some((start, end)) = next else { return };
            let (at, n) = d.console.read(start, &mut line[..(end - start) as usize]);
            let text = &line[..n];
            let queued = if privileged {
                self.platform.console_queue(&[text])
            } else {
                let newline: &[u8] = if text.last() == Some(&b'\n') { b"" } else { b"\n" };
                self.platform.console_queue(&[prefix.as_str().as_bytes(), text, newline])
            };
            if !queued {
                if !d.echo_waiting {
                    d.echo_waiting = true;
                    self.echo_waiting.push_back(id);
                }
                self.serial_busy = true;
                return;
            }
            self.serial_busy = true;
            d.echoed = at + n as u64;
        }
    }

    /// Moves up to `max_bytes` of queued output to the UART, then queues more of the consoles
    /// that were waiting for room. Cheap when nothing waits. Returns whether the UART took
    /// anything (an emulated UART takes everything offered; a real one 16 bytes at a time).
    pub(crate) fn drain_serial(&mut self, max_bytes: usize) -> bool {
        if !self.serial_busy {
            return false;
        }
        // A UART that is still sending is not asked again before its FIFO can have emptied:
        // the exits in between pay one TSC read, not a port access.
        let now = self.platform.cycles();
        if now < self.serial_next_try {
            return false;
        }
        let (sent, mut left) = self.platform.console_drain(max_bytes);
        let moved = sent > 0;
        self.serial_next_try = if left > 0 && sent < max_bytes {
            now.saturating_add(SERIAL_RETRY_NS.saturating_mul(self.platform.tsc_khz()) / 1_000_000)
        } else {
            now
        };
        while let Some(&id) = self.echo_waiting.front() {
            self.echo_waiting.pop_front();
            let Some(d) = self.domains.get_mut(id) else { continue };
            d.echo_waiting = false;
            let flush = d.life != crate::domain::Life::Live;
            self.echo_console(id, flush);
            if self.domains.get(id).is_some_and(|d| d.echo_waiting) {
                break;
            }
            left = self.platform.console_drain(max_bytes).1;
        }
        self.serial_busy = left > 0 || !self.echo_waiting.is_empty();
        moved
    }

    /// Whether output is still waiting for the serial line.
    #[cfg(test)]
    pub fn serial_pending(&self) -> bool {
        self.serial_busy
    }

    /// Sends everything still waiting, however long the line takes (power-off). Each round
    /// empties the transmit queue, so a waiting console always gets at least a line in and
    /// is queued again until its ring is echoed.
    pub fn flush_serial(&mut self) {
        loop {
            while self.platform.console_drain(usize::MAX).1 > 0 {
                core::hint::spin_loop();
            }
            let Some(id) = self.echo_waiting.pop_front() else { break };
            if let Some(d) = self.domains.get_mut(id) {
                d.echo_waiting = false;
            }
            self.echo_console(id, true);
        }
        self.serial_busy = false;
    }
}

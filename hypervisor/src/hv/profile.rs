//! The exit-path profile (`profile_exits=on`): where a round trip's instructions go, phase
//! by phase, for the two hottest exits (the null hypercall and the second-level fault).
//!
//! Under QEMU `-icount` and Bochs the TSC counts executed instructions, so the stamps the
//! run loop and the backend take are exact instruction counts. A round trip as the guest
//! times it is: its own stamp and the exit (world switch and the backend's register save)
//! → [`Phases::backend_exit`] (decoding the exit) → [`Phases::handle`] (the handler) →
//! [`Phases::schedule`] (requeue, deadlines, pick, entry preparation) → [`Phases::backend_entry`]
//! (the control-block writes before the world switch) → the switch back and the guest's
//! stamp. The guest's figure minus the four phases is the switch itself.
//!
//! Off by default: when off the run loop takes a copy of its entry path without the stamps,
//! and the backend tests one flag on each side of the switch.

/// The exits profiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profiled {
    /// A hypercall with the number of `null`.
    NullHypercall = 0,
    /// A nested page fault (EPT violation / #NPF) the handler resolved.
    SecondLevelFault = 1,
}

/// Instruction sums over the profiled exits of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Round trips counted (each phase sums over them).
    pub exits: u64,
    /// From the world switch's return to the backend handing the exit to the core.
    pub backend_exit: u64,
    /// The core's handler, with the accounting around it.
    pub handle: u64,
    /// From the handler's return to the backend being asked to run the vCPU again.
    pub schedule: u64,
    /// The backend's work before the world switch.
    pub backend_entry: u64,
    /// The profile's own bookkeeping and stamps, which the guest's figure includes in a
    /// profiled run and no phase counts.
    pub own: u64,
}

impl Phases {
    fn mean(sum: u64, n: u64) -> u64 {
        sum.checked_div(n).unwrap_or(0)
    }

    /// Mean instructions per exit: backend exit, handler, schedule, backend entry, and the
    /// profile's own.
    pub fn means(&self) -> [u64; 5] {
        let n = self.exits;
        [self.backend_exit, self.handle, self.schedule, self.backend_entry, self.own].map(|sum| Self::mean(sum, n))
    }
}

/// An exit whose last two phases wait for the next entry.
#[derive(Clone, Copy, Debug)]
struct Open {
    kind: Profiled,
    /// The stamp at its handler's return.
    handled: u64,
    backend_exit: u64,
    handle: u64,
    own: u64,
}

/// The stamps the run loop takes around one exit's handling.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitStamps {
    /// The world switch returned (the backend's stamp).
    pub switched: u64,
    /// The backend handed the exit to the core.
    pub arrived: u64,
    /// The core's accounting was done and the profile's bookkeeping began.
    pub booked: u64,
    /// The profile's bookkeeping was done and the handler was called.
    pub dispatched: u64,
    /// The handler returned.
    pub handled: u64,
}

/// The profile's state in the run loop.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitProfile {
    /// Stamps are taken only when on.
    pub on: bool,
    /// The exit whose schedule and entry phases are still open.
    open: Option<Open>,
    sums: [Phases; 2],
}

impl ExitProfile {
    /// A profile that records when `on`.
    pub fn new(on: bool) -> Self {
        Self { on, ..Self::default() }
    }

    /// The vCPU was entered at `entered` (before the backend ran) and the backend took its
    /// last stamp before the world switch at `switched`: closes the open exit, if any.
    pub fn entered(&mut self, entered: u64, switched: u64) {
        if let Some(o) = self.open.take() {
            let p = &mut self.sums[o.kind as usize];
            p.exits += 1;
            p.backend_exit += o.backend_exit;
            p.handle += o.handle;
            p.own += o.own;
            p.schedule += entered.wrapping_sub(o.handled);
            p.backend_entry += switched.wrapping_sub(entered);
        }
    }

    /// An exit of `kind` (if profiled) was handled with these stamps.
    pub fn handled(&mut self, kind: Option<Profiled>, t: ExitStamps) {
        self.open = kind.map(|kind| Open {
            kind,
            handled: t.handled,
            backend_exit: t.arrived.wrapping_sub(t.switched),
            handle: t.booked.wrapping_sub(t.arrived) + t.handled.wrapping_sub(t.dispatched),
            own: t.dispatched.wrapping_sub(t.booked),
        });
    }

    /// The sums for one kind.
    pub fn phases(&self, kind: Profiled) -> Phases {
        self.sums[kind as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_of_an_exit_are_closed_by_the_next_entry() {
        let mut p = ExitProfile::new(true);
        // Entry with nothing open counts nothing.
        p.entered(100, 110);
        // Back from the switch at 200, core at 210, handled at 260; entered again at 300,
        // switched at 315.
        let t = ExitStamps { switched: 200, arrived: 210, booked: 215, dispatched: 230, handled: 260 };
        p.handled(Some(Profiled::NullHypercall), t);
        p.entered(300, 315);
        let s = p.phases(Profiled::NullHypercall);
        assert_eq!(s, Phases { exits: 1, backend_exit: 10, handle: 35, schedule: 40, backend_entry: 15, own: 15 });
        assert_eq!(p.phases(Profiled::SecondLevelFault).exits, 0);
    }

    #[test]
    fn an_exit_not_profiled_leaves_the_sums_alone() {
        let mut p = ExitProfile::new(true);
        p.handled(None, ExitStamps::default());
        p.entered(300, 315);
        p.handled(Some(Profiled::SecondLevelFault), ExitStamps { switched: 400, arrived: 404, booked: 406, dispatched: 410, handled: 500 });
        p.handled(None, ExitStamps::default());
        p.entered(800, 810);
        assert_eq!(p.phases(Profiled::SecondLevelFault).exits, 0);
        assert_eq!(p.phases(Profiled::NullHypercall).means(), [0; 5]);
    }
}

//! Cycle-counter stamps around the world switch, for the exit profile (`crate::hv::profile`).

/// Cycle-counter stamps a backend takes around the world switch when asked to.
#[derive(Clone, Copy, Debug, Default)]
pub struct SwitchStamps {
    /// Stamping is on.
    pub on: bool,
    /// Before the switch.
    pub entered: u64,
    /// After it returned.
    pub exited: u64,
}

impl SwitchStamps {
    /// Stamps the entry side, if on.
    #[inline(always)]
    pub fn enter(&mut self) {
        if self.on {
            self.entered = super::x86::rdtsc();
        }
    }

    /// Stamps the exit side, if on.
    #[inline(always)]
    pub fn exit(&mut self) {
        if self.on {
            self.exited = super::x86::rdtsc();
        }
    }

    /// Both stamps, when on.
    pub fn get(&self) -> Option<(u64, u64)> {
        self.on.then_some((self.entered, self.exited))
    }
}

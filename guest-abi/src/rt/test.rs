//! XTF-style results: a test guest ends by printing exactly one `Test result: <STATUS>` line
//! and shutting down cleanly; [`Verdict`] collects the worst status along the way.

use crate::println;
use core::fmt;

/// A test outcome, ordered from best to worst (as XTF orders them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Success,
    /// The test could not run here (missing feature, too little memory).
    Skip,
    /// The test itself went wrong (bad option, unexpected environment).
    Error,
    /// The system under test misbehaved.
    Failure,
}

impl Status {
    /// The word printed after `Test result: `.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Skip => "SKIP",
            Self::Error => "ERROR",
            Self::Failure => "FAILURE",
        }
    }

    /// The worse of two outcomes.
    pub fn worst(self, other: Self) -> Self {
        self.max(other)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result line for `status`.
pub fn result_line(status: Status) -> &'static str {
    match status {
        Status::Success => "Test result: SUCCESS",
        Status::Skip => "Test result: SKIP",
        Status::Error => "Test result: ERROR",
        Status::Failure => "Test result: FAILURE",
    }
}

/// Prints the result line and shuts down with code 0.
pub fn report(status: Status) -> ! {
    println!("{}", result_line(status));
    super::exit(0)
}

/// The worst status seen so far, with a line printed for every problem.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    worst: Status,
}

impl Default for Verdict {
    fn default() -> Self {
        Self::new()
    }
}

impl Verdict {
    /// Nothing went wrong yet.
    pub const fn new() -> Self {
        Self { worst: Status::Success }
    }

    /// Notes an outcome without printing.
    pub fn note(&mut self, status: Status) {
        self.worst = self.worst.worst(status);
    }

    /// Notes a failure of the system under test and prints `failure: <why>`.
    pub fn fail(&mut self, why: fmt::Arguments<'_>) {
        println!("failure: {why}");
        self.note(Status::Failure);
    }

    /// Notes an error of the test itself and prints `error: <why>`.
    pub fn error(&mut self, why: fmt::Arguments<'_>) {
        println!("error: {why}");
        self.note(Status::Error);
    }

    /// Notes that (part of) the test cannot run and prints `skip: <why>`.
    pub fn skip(&mut self, why: fmt::Arguments<'_>) {
        println!("skip: {why}");
        self.note(Status::Skip);
    }

    /// The worst status so far.
    pub fn status(&self) -> Status {
        self.worst
    }

    /// Prints the result line for the worst status and shuts down.
    pub fn report(self) -> ! {
        report(self.worst)
    }
}

/// The number given as `key=` on the command line (decimal or `0x` hex), `default` if the
/// option is absent. A value that is not a number ends the test: it prints
/// `<domain>: bad <key>= option: <why>` and reports ERROR.
pub fn option(key: &str, default: u64) -> u64 {
    match super::cmdline_u64(key) {
        Ok(v) => v.unwrap_or(default),
        Err(e) => {
            println!("{}: bad {key}= option: {e}", super::start_info().name());
            report(Status::Error)
        }
    }
}

/// A gap between two TSC reads longer than this means the vCPU was descheduled.
pub const PREEMPTION_GAP_US: u64 = 200;

/// What [`spin_checking`] saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spin {
    /// Checks that passed.
    pub checks: u64,
    /// Times the vCPU was descheduled (other domains ran) while spinning.
    pub preemptions: u64,
    /// Whether a check failed (the spin stopped there).
    pub failed: bool,
}

/// Runs `check` again and again for `ms` milliseconds of TSC time (at `tsc_khz`), counting
/// the preemptions in between; stops at the first check that returns false. The pattern of
/// the tests that keep a register value while other domains share the CPU.
pub fn spin_checking(ms: u64, tsc_khz: u64, mut check: impl FnMut(&Spin) -> bool) -> Spin {
    let gap = tsc_khz * PREEMPTION_GAP_US / 1000;
    let mut s = Spin::default();
    let begin = super::rdtsc();
    let mut last = begin;
    while last.wrapping_sub(begin) < ms.saturating_mul(tsc_khz) {
        if !check(&s) {
            s.failed = true;
            break;
        }
        s.checks += 1;
        let now = super::rdtsc();
        if now.wrapping_sub(last) > gap {
            s.preemptions += 1;
        }
        last = now;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_status_is_kept_in_xtf_order() {
        let mut v = Verdict::new();
        assert_eq!(v.status(), Status::Success);
        v.note(Status::Skip);
        assert_eq!(v.status(), Status::Skip);
        v.note(Status::Failure);
        v.note(Status::Error);
        v.note(Status::Success);
        assert_eq!(v.status(), Status::Failure);
        assert_eq!(Status::Skip.worst(Status::Error), Status::Error);
    }

    #[test]
    fn result_lines_are_exactly_the_xtf_words() {
        for (s, want) in [
            (Status::Success, "Test result: SUCCESS"),
            (Status::Skip, "Test result: SKIP"),
            (Status::Error, "Test result: ERROR"),
            (Status::Failure, "Test result: FAILURE"),
        ] {
            assert_eq!(result_line(s), want);
            assert_eq!(alloc::format!("Test result: {s}"), want);
        }
    }
}

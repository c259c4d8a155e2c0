//! Shared helpers for the integration tests: run the system under QEMU (TCG, AMD SVM+NPT) or
//! Bochs (Intel VMX+EPT) with a bounded time, and check its serial output.

use boot::console::Input;
use boot::emulator::{Accel, Emulator};
use boot::run::{RunOptions, RunOutcome, RunResult};
use std::time::Duration;

/// Options for a QEMU TCG run (emulated AMD SVM+NPT), bounded to `secs`.
pub fn qemu(secs: u64) -> RunOptions {
    RunOptions {
        emulator: Emulator::Qemu,
        accel: Accel::Tcg,
        timeout: Some(Duration::from_secs(secs)),
        input: Input::None,
        echo: false,
        ..RunOptions::default()
    }
}

/// Options for a Bochs run (emulated Intel VMX+EPT), bounded to `secs`.
pub fn bochs(secs: u64) -> RunOptions {
    RunOptions { emulator: Emulator::Bochs, ..qemu(secs) }
}

/// Both emulators, for tests that must pass on both vendors.
pub fn both(secs: u64) -> [RunOptions; 2] {
    [qemu(secs), bochs(secs)]
}

/// Runs the machine; a runner error (missing emulator, build failure) fails the test.
pub fn run(opts: &RunOptions) -> RunOutcome {
    match boot::run::run(opts) {
        Ok(o) => {
            eprintln!(
                "[{:?}] {:?} in {:.1}s ({})",
                opts.emulator,
                o.result,
                o.elapsed.as_secs_f64(),
                o.run_dir.display()
            );
            o
        }
        Err(e) => panic!("runner failed: {e}"),
    }
}

/// Runs the machine and expects a normal power-off.
pub fn run_ok(opts: &RunOptions) -> RunOutcome {
    let o = run(opts);
    assert_eq!(o.result, RunResult::Success, "run did not succeed; serial output:\n{}", o.serial);
    o
}

/// Asserts that some line of the output contains `needle`.
pub fn assert_has(o: &RunOutcome, needle: &str) {
    assert!(o.serial.contains(needle), "expected {needle:?} in serial output:\n{}", o.serial);
}

/// Asserts that no line of the output contains `needle`.
pub fn assert_lacks(o: &RunOutcome, needle: &str) {
    assert!(!o.serial.contains(needle), "did not expect {needle:?} in serial output:\n{}", o.serial);
}

/// The first line containing `needle`.
pub fn line_with<'a>(o: &'a RunOutcome, needle: &str) -> Option<&'a str> {
    o.lines().find(|l| l.contains(needle))
}

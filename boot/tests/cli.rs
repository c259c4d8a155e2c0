//! The runner's command line is a contract scripts rely on: flags and exit statuses.

use std::process::Command;

fn boot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_boot"))
}

#[test]
fn normal_boot_exits_zero_and_prints_the_command_line() {
    let out = boot().args(["run", "--accel", "tcg", "--timeout", "60", "--quiet"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert!(err.contains("(boot) ran: qemu-system-x86_64"), "{err}");
    assert!(err.contains("-cpu qemu64,+svm,+npt"), "{err}");
}

#[test]
fn reported_failure_exits_one() {
    let out = boot().args(["--accel", "tcg", "--config", "selftest=panic", "--timeout", "60", "--quiet"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn timeout_exits_two() {
    let out = boot().args(["--accel", "tcg", "--config", "selftest=hang", "--timeout", "5", "--quiet"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_arguments_exit_64_with_a_message() {
    for args in [&["--emulator", "vmware"][..], &["--mem", "12"], &["--guest", "nopath"], &["--frobnicate"]] {
        let out = boot().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn icount_adds_repeatable_clock_flags() {
    let out = boot().args(["--accel", "tcg", "--icount", "--timeout", "60", "--quiet"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("-icount shift=0,sleep=off"), "{err}");
}

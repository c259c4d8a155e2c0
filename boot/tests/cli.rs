//! The runner's command line is a contract scripts rely on: flags and exit statuses.

use std::process::Command;

fn boot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_boot"))
}

#[test]
fn normal_boot_exits_zero_and_prints_the_command_line() {
    let out = boot().args(["run", "--accel", "tcg", "--no-default-guests", "--timeout", "60", "--quiet"]).output().unwrap();
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
    for args in [&["--emulator", "vmware"][..], &["--mem", "12"], &["--guest", "nopath"], &["--cpu-feature", "pku"], &["--frobnicate"]] {
        let out = boot().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn icount_adds_repeatable_clock_flags() {
    let out = boot().args(["--accel", "tcg", "--no-default-guests", "--icount", "--timeout", "60", "--quiet"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("-icount shift=0,sleep=off"), "{err}");
}

#[test]
fn a_script_runs_in_the_dom0_shell_and_poweroff_ends_the_run() {
    let dir = std::env::temp_dir().join(format!("cli-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("script");
    std::fs::write(&script, "# comment lines and blank lines are skipped\n\ncreate hello\nwait hello dead 20\nconsole hello\npoweroff\n").unwrap();
    let out = boot().args(["--accel", "tcg", "--timeout", "120", "--script"]).arg(&script).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("created domain 1 hello"), "{stdout}");
    assert!(stdout.contains("Test result: SUCCESS"), "{stdout}");
}

#[test]
fn the_default_run_plays_the_cloning_demo_then_takes_typed_input() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = boot()
        .args(["--accel", "tcg", "--timeout", "180"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Typed at once, before the machine has even booted: the runner holds it for the prompt.
    child.stdin.take().unwrap().write_all(b"list\npoweroff\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..3 {
        assert!(stdout.contains(&format!("clone {i} own-writes ok")), "{stdout}");
    }
    assert_eq!(stdout.matches("shared-data ok").count(), 3, "{stdout}");
    assert!(stdout.contains("demo done"), "{stdout}");
    assert!(stdout.contains("powering off"), "{stdout}");
    assert!(!stdout.contains("unknown command"), "typed input arrived intact: {stdout}");
}

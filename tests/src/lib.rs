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
        // Only the Linux tests pack the Linux guest (11 MiB more to load at boot).
        linux: false,
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

/// The path of a built guest image.
pub fn image(name: &str) -> std::path::PathBuf {
    let a = boot::artifacts::build().unwrap_or_else(|e| panic!("building images: {e}"));
    boot::artifacts::guest_path(&a, name).unwrap_or_else(|| panic!("no image {name}"))
}

/// Bare mode (no dom0): the hypervisor starts each `(domain name, image)` as an unprivileged
/// domain, echoes their consoles as `(dN) ...`, and powers off when all have ended.
pub fn bare(opts: RunOptions, guests: &[(&str, &str)], config: &[&str]) -> RunOptions {
    RunOptions {
        default_guests: false,
        guests: guests.iter().map(|(n, i)| (n.to_string(), image(i))).collect(),
        config: config.iter().map(|s| s.to_string()).collect(),
        ..opts
    }
}

/// The id the hypervisor gave the boot-time domain `name`.
pub fn domain_id(o: &RunOutcome, name: &str) -> Option<u32> {
    let suffix = format!(" {name}: started");
    o.lines().find_map(|l| {
        let rest = l.strip_prefix("(hv) d")?;
        let (id, tail) = rest.split_once(' ')?;
        (format!(" {tail}").starts_with(&suffix)).then(|| id.parse().ok()).flatten()
    })
}

/// Console lines of the boot-time domain `name` (without the `(dN) ` prefix).
pub fn console_of(o: &RunOutcome, name: &str) -> Vec<String> {
    let Some(id) = domain_id(o, name) else { return Vec::new() };
    let prefix = format!("(d{id}) ");
    o.lines().filter_map(|l| l.strip_prefix(&prefix).map(String::from)).collect()
}

/// The hypervisor's last word on domain `name` (`exited with code ...` or `crashed: ...`).
pub fn fate_of(o: &RunOutcome, name: &str) -> Option<String> {
    let id = domain_id(o, name)?;
    let prefix = format!("(hv) d{id} {name}: ");
    o.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .find(|r| r.starts_with("exited") || r.starts_with("crashed"))
        .map(String::from)
}

/// The first console line of the boot-time domain `name` that contains `needle` (a guest's
/// summary line); panics with its console if there is none.
pub fn console_line(o: &RunOutcome, name: &str, needle: &str) -> String {
    let console = console_of(o, name);
    console
        .iter()
        .find(|l| l.contains(needle))
        .cloned()
        .unwrap_or_else(|| panic!("{name}: no console line with {needle:?}; console:\n{}", console.join("\n")))
}

/// The `Test result: ...` lines among a domain's console lines.
pub fn result_lines(console: &[String]) -> impl Iterator<Item = &String> {
    console.iter().filter(|l| l.starts_with("Test result:"))
}

/// Asserts that domain `name` printed exactly one `Test result:` line and it is SUCCESS.
pub fn assert_guest_success(o: &RunOutcome, name: &str) {
    let console = console_of(o, name);
    let results: Vec<&String> = result_lines(&console).collect();
    assert_eq!(
        results.len(),
        1,
        "{name} must print one result line; console:\n{}\nwhole serial output:\n{}",
        console.join("\n"),
        o.serial
    );
    assert_eq!(results[0], "Test result: SUCCESS", "{name} console:\n{}", console.join("\n"));
}

/// Asserts that hypervisor and domain lines never run into each other: a `(hv) ` or `(dN) `
/// prefix appears only at the start of a line.
pub fn assert_lines_whole(o: &RunOutcome) {
    for l in o.lines() {
        let tail = l.get(1..).unwrap_or("");
        let glued = tail.contains("(hv) ")
            || tail.match_indices("(d").any(|(i, _)| {
                let rest = &tail[i + 2..];
                let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                digits > 0 && rest[digits..].starts_with(") ")
            });
        assert!(!glued, "a line holds output of two sources: {l:?}");
    }
}

/// Asserts the run ended with every domain gone and every frame back.
pub fn assert_memory_returned(o: &RunOutcome) {
    assert_has(o, "(hv) all domains ended; all memory returned");
}

/// Boots into dom0 (the default bundle) and types `script` into its shell, one line per prompt.
pub fn dom0(opts: RunOptions, script: &[&str]) -> RunOutcome {
    let opts = RunOptions { input: Input::Script(script.iter().map(|s| s.to_string()).collect()), ..opts };
    run(&opts)
}

/// Boots into dom0, types `script` into its shell and expects a normal power-off.
pub fn dom0_ok(opts: RunOptions, script: &[&str]) -> RunOutcome {
    let o = dom0(opts, script);
    assert_eq!(o.result, RunResult::Success, "run did not succeed; serial output:\n{}", o.serial);
    o
}

/// Every shell command typed and the lines it printed (hypervisor log lines left out).
pub fn shell_transcript(o: &RunOutcome) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in o.lines() {
        if let Some(cmd) = line.strip_prefix("dom0> ") {
            out.push((cmd.to_string(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            if !line.starts_with("(hv)") {
                lines.push(line.to_string());
            }
        }
    }
    out
}

/// What the `n`th (0-based) occurrence of `command` printed.
pub fn output_of(o: &RunOutcome, command: &str, n: usize) -> Vec<String> {
    shell_transcript(o)
        .into_iter()
        .filter(|(c, _)| c == command)
        .nth(n)
        .map(|(_, lines)| lines)
        .unwrap_or_else(|| panic!("command {command:?} #{n} not in the transcript:\n{}", o.serial))
}

/// The value of `key: value` in a command's output.
pub fn field(lines: &[String], key: &str) -> String {
    let prefix = format!("{key}: ");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix).map(String::from))
        .unwrap_or_else(|| panic!("{key} not in {lines:?}"))
}

/// Appends benchmark figures to `target/bench-figures.txt` (shown at the end of the test
/// command) and to stderr.
pub fn record_figures(title: &str, lines: &[String]) {
    use std::io::Write;
    let path = boot::workspace_root().join("target").join("bench-figures.txt");
    let mut text = format!("== {title}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    eprint!("{text}");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// The number after `key` in `line` (e.g. `median 1234`).
pub fn number_after(line: &str, key: &str) -> f64 {
    let at = line.find(key).unwrap_or_else(|| panic!("{key:?} not in {line:?}")) + key.len();
    let s: String = line[at..].trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    s.parse().unwrap_or_else(|_| panic!("no number after {key:?} in {line:?}"))
}

/// What a `bench` command printed; none of it may be an error.
pub fn bench_lines(o: &RunOutcome, cmd: &str) -> Vec<String> {
    let out = output_of(o, cmd, 0);
    assert!(!out.iter().any(|l| l.starts_with("error")), "{cmd}: {out:?}");
    out
}

/// The first of `lines` that contains `needle`.
pub fn find<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in {lines:?}"))
}


/// A fresh data disk path for one test on one emulator (`target/test-disks/TEST-EMULATOR.img`,
/// any earlier one removed).
pub fn fresh_disk(test: &str, opts: &RunOptions) -> std::path::PathBuf {
    let dir = boot::workspace_root().join("target").join("test-disks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{test}-{:?}.img", opts.emulator).to_lowercase());
    let _ = std::fs::remove_file(&path);
    path
}

/// `opts` with data disk `path` and a 1 GiB machine.
pub fn with_disk(opts: RunOptions, path: &std::path::Path) -> RunOptions {
    RunOptions { disk: boot::run::DataDisk::Path(path.to_path_buf()), mem_mib: 1024, ..opts }
}

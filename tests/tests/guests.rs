//! XTF-style test guests run by the hypervisor itself (bare mode) on both vendors: each guest
//! exercises one thing and prints one result line; the hypervisor must survive every guest.

use boot::run::{RunOutcome, RunResult};
use tests::*;

#[test]
fn hello_prints_through_the_console_hypercall() {
    for opts in both(60) {
        let o = run_ok(&bare(opts, &[("hello", "hello")], &[]));
        assert_guest_success(&o, "hello");
        assert!(console_of(&o, "hello")[0].starts_with("hello from domain 1 (hello)"));
        assert!(fate_of(&o, "hello").unwrap().starts_with("exited with code 0 ("));
        assert_memory_returned(&o);
    }
}

#[test]
fn memory_guest_writes_and_reads_all_of_its_ram() {
    for opts in both(120) {
        let o = run_ok(&bare(opts, &[("memory", "memory")], &["guest.memory.mem_mib=24"]));
        assert_guest_success(&o, "memory");
        let pages: u64 = console_of(&o, "memory")
            .iter()
            .find_map(|l| l.strip_prefix("memory: ")?.split(' ').next()?.parse().ok())
            .expect("page count");
        assert!(pages > 24 * 256 - 300, "checked {pages} pages of 24 MiB");
        assert_memory_returned(&o);
    }
}

#[test]
fn touching_memory_outside_ram_or_writing_the_start_of_day_page_crashes_only_that_domain() {
    for opts in both(120) {
        let o = run_ok(&bare(
            opts,
            &[("oob", "memory"), ("sod", "memory"), ("bystander", "spinner")],
            &["guest.oob.cmdline=oob=1", "guest.sod.cmdline=sod=1", "guest.bystander.cmdline=ms=200"],
        ));
        let fate = fate_of(&o, "oob").expect("oob fate");
        assert!(fate.starts_with("crashed: access to unmapped gpa 0x1200000"), "{fate}");
        let fate = fate_of(&o, "sod").expect("sod fate");
        assert!(fate.starts_with("crashed: write to the start-of-day page at gpa 0x1800"), "{fate}");
        for name in ["oob", "sod"] {
            let console = console_of(&o, name);
            assert!(console.iter().any(|l| l.ends_with("pages ok")), "{name}: {console:?}");
            assert!(!console.iter().any(|l| l.starts_with("Test result")), "{name}: the access must not return");
        }
        assert_guest_success(&o, "bystander");
        assert_lines_whole(&o);
        assert_memory_returned(&o);
    }
}

#[test]
fn hypercall_fuzzing_gets_error_codes_and_the_hypervisor_stays_up() {
    for opts in both(180) {
        let o = run_ok(&bare(
            opts,
            &[("hcfuzz", "hcfuzz"), ("bystander", "spinner")],
            &["guest.hcfuzz.cmdline=count=4000", "guest.bystander.cmdline=ms=200 mib=2"],
        ));
        assert_guest_success(&o, "hcfuzz");
        let summary = console_line(&o, "hcfuzz", "hcfuzz: calls=");
        assert!(summary.contains("violations=0"), "{summary}");
        assert!(summary.contains("NotPermitted=") && summary.contains("BadAddress="), "{summary}");
        assert_guest_success(&o, "bystander");
        assert_lines_whole(&o);
        assert_memory_returned(&o);
    }
}

#[test]
fn triple_fault_kills_only_that_domain() {
    for opts in both(120) {
        let o = run_ok(&bare(
            opts,
            &[("tf", "triple-fault"), ("survivor", "spinner")],
            &["guest.survivor.cmdline=ms=200 mib=2"],
        ));
        assert!(fate_of(&o, "tf").unwrap().starts_with("crashed: triple fault"));
        assert!(!console_of(&o, "tf").iter().any(|l| l.starts_with("Test result")));
        assert_guest_success(&o, "survivor");
        assert_memory_returned(&o);
    }
}

#[test]
fn registers_outside_the_control_block_never_leak_between_domains() {
    for opts in both(120) {
        let o = run_ok(&bare(
            opts,
            &[("xs-a", "xstate"), ("xs-b", "xstate"), ("xs-c", "xstate")],
            &["guest.xs-a.cmdline=ms=150", "guest.xs-b.cmdline=ms=150", "guest.xs-c.cmdline=ms=150"],
        ));
        for name in ["xs-a", "xs-b", "xs-c"] {
            assert_guest_success(&o, name);
            let line = console_line(&o, name, "registers kept");
            let preemptions = number_after(&line, "preemptions ");
            assert!(preemptions >= 5.0, "{name} must have shared the CPU: {line}");
        }
        assert_lines_whole(&o);
        assert_memory_returned(&o);
    }
}

#[test]
fn user_space_cannot_make_hypercalls_and_intercepted_exceptions_reach_the_guest() {
    for opts in both(60) {
        let opts_is_bochs = opts.emulator == boot::emulator::Emulator::Bochs;
        let o = run_ok(&bare(opts, &[("userspace", "userspace")], &[]));
        assert_guest_success(&o, "userspace");
        let console = console_of(&o, "userspace");
        assert!(console.iter().any(|l| l.contains("hypercalls from ring 3 refused")), "{console:?}");
        // Bochs implements #AC; QEMU's TCG does not raise it at all.
        let ac = if opts_is_bochs { "alignment check reflected" } else { "this CPU raised no alignment check" };
        assert!(console.iter().any(|l| l.contains(ac)), "{console:?}");
        assert!(console.iter().any(|l| l.contains("single step reflected")), "{console:?}");
        assert_memory_returned(&o);
    }
}

fn spinner_stats(o: &boot::run::RunOutcome, name: &str) -> (u64, u64) {
    let line = console_line(o, name, "iterations");
    let field = |key: &str| -> u64 {
        let at = line.find(key).unwrap() + key.len();
        line[at..].split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(line.ends_with("pattern ok"), "{line}");
    (field("iterations "), field("preemptions "))
}

#[test]
fn two_domains_are_preempted_fairly_and_cannot_see_each_other() {
    for opts in both(180) {
        let o = run_ok(&bare(
            opts,
            &[("spin-a", "spinner"), ("spin-b", "spinner")],
            &["guest.spin-a.cmdline=ms=400 mib=4", "guest.spin-b.cmdline=ms=400 mib=4"],
        ));
        assert_guest_success(&o, "spin-a");
        assert_guest_success(&o, "spin-b");
        let (ia, pa) = spinner_stats(&o, "spin-a");
        let (ib, pb) = spinner_stats(&o, "spin-b");
        assert!(pa >= 5 && pb >= 5, "both must be preempted: {pa} {pb}");
        let ratio = ia as f64 / ib as f64;
        assert!((0.6..1.67).contains(&ratio), "unfair split: {ia} vs {ib}");
        assert_memory_returned(&o);
    }
}

/// The figure after `key` on the bench guest's console (`bench: KEY cycles=N ...`).
fn round_trip(console: &[String], key: &str) -> (String, u64) {
    let line = console.iter().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} missing"));
    let cycles: u64 = line[key.len()..].split_whitespace().next().unwrap().parse().unwrap();
    (line.clone(), cycles)
}

/// The five means of the hypervisor's `exit profile: WHAT: ...` line.
fn profile_phases(o: &RunOutcome, what: &str) -> [u64; 5] {
    let key = format!("exit profile: {what}: ");
    let line = o.lines().find_map(|l| l.split_once(key.as_str()).map(|(_, r)| r.to_string())).unwrap_or_else(|| panic!("{key} missing"));
    let mut out = [0u64; 5];
    for (slot, name) in out.iter_mut().zip(["backend exit ", "handler ", "schedule ", "backend entry ", "profile's own "]) {
        let rest = &line[line.find(name).unwrap_or_else(|| panic!("{name} in {line}")) + name.len()..];
        *slot = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
    }
    out
}

#[test]
fn benchmark_prints_hypercall_and_second_level_fault_round_trips() {
    let runs = [
        boot::run::RunOptions { icount: true, ..qemu(180) },
        bochs(180),
    ];
    for opts in runs {
        let emulator = opts.emulator;
        let o = run_ok(&bare(opts.clone(), &[("bench", "bench")], &[]));
        assert_guest_success(&o, "bench");
        let console = console_of(&o, "bench");
        let mut figures = Vec::new();
        for key in ["bench: null-hypercall cycles=", "bench: npf-roundtrip cycles=", "bench: plain-write cycles="] {
            let (line, cycles) = round_trip(&console, key);
            assert!(cycles > 0);
            figures.push(line);
        }
        // The same run with the exit profile on: where each round trip's instructions go.
        let p = run_ok(&bare(opts, &[("bench", "bench")], &["profile_exits=on"]));
        assert_guest_success(&p, "bench");
        let console = console_of(&p, "bench");
        for (key, what) in [("bench: null-hypercall cycles=", "null hypercall"), ("bench: npf-roundtrip cycles=", "second-level fault")] {
            let (_, total) = round_trip(&console, key);
            let [exit, handle, schedule, entry, own] = profile_phases(&p, what);
            let hv = exit + handle + schedule + entry + own;
            assert!(hv > 0 && hv < total, "{what}: the profiled phases ({hv}) must lie inside the round trip ({total})");
            // The backend's two stamps (a flag test and RDTSC each) also lie in the remainder.
            figures.push(format!(
                "bench breakdown: {what} {total} (profiled; {own} of them the profile's own bookkeeping) = world switch, \
                 register save/restore and the guest's stamps {} + backend exit {exit} + handler {handle} + schedule {schedule} \
                 + backend entry {entry}",
                total - hv
            ));
        }
        let title = match emulator {
            boot::emulator::Emulator::Qemu => "QEMU TCG, AMD SVM+NPT, -icount: round trips (instructions)",
            _ => "Bochs, Intel VMX+EPT: round trips (instructions)",
        };
        record_figures(title, &figures);
    }
}

#[test]
fn a_guest_image_that_is_not_elf_is_refused_and_the_others_run() {
    let garbage = std::env::temp_dir().join(format!("not-elf-{}", std::process::id()));
    std::fs::write(&garbage, b"\x7fELF but not really an ELF file at all, just truncated junk").unwrap();
    let mut opts = bare(qemu(60), &[("hello", "hello")], &[]);
    opts.guests.push(("junk".into(), garbage.clone()));
    let o = run(&opts);
    std::fs::remove_file(&garbage).unwrap();
    assert_eq!(o.result, RunResult::Success, "{}", o.serial);
    assert_has(&o, "(hv) error: junk: bad image");
    assert_guest_success(&o, "hello");
}

//! Regressions for the hardening review, one test guest per defect (as XTF keeps one per
//! advisory), on both vendors: QEMU TCG (AMD SVM) and Bochs (Intel VMX). A guest reports
//! SKIP, naming the reason, where an emulated CPU cannot show the defect.

use boot::emulator::{CpuFeature, Emulator};
use boot::run::RunOptions;
use tests::*;

/// QEMU with extra TCG CPU features (the defects need PKU and RDTSCP to show), and Bochs.
fn both_with(secs: u64, qemu_features: &[&str]) -> [RunOptions; 2] {
    let [q, b] = both(secs);
    let cpu_features = qemu_features.iter().map(|f| CpuFeature::parse(f).unwrap_or_else(|| panic!("bad CPU feature {f:?}"))).collect();
    [RunOptions { cpu_features, ..q }, b]
}

fn result_line(o: &boot::run::RunOutcome, name: &str) -> String {
    let console = console_of(o, name);
    result_lines(&console).next().cloned().unwrap_or_else(|| panic!("{name}: no result line:\n{}", o.serial))
}

#[test]
fn cr8_stays_in_the_vcpu_and_masks_only_its_own_upcalls() {
    for opts in both(120) {
        let o = run_ok(&bare(
            opts,
            &[("cr8-a", "cr8-tpr"), ("cr8-b", "cr8-tpr"), ("bystander", "spinner")],
            &["guest.cr8-b.cmdline=tpr=7", "guest.bystander.cmdline=ms=200 mib=2"],
        ));
        for name in ["cr8-a", "cr8-b", "bystander"] {
            assert_guest_success(&o, name);
        }
        let line = console_line(&o, "cr8-b", "kept over");
        assert!(line.contains("upcall held 0 taken 1"), "{line}");
        assert!(number_after(&line, "checks and") >= 1.0, "cr8-b must have shared the CPU: {line}");
        assert_memory_returned(&o);
    }
}

#[test]
fn kernel_gs_base_survives_swapgs_while_other_domains_run() {
    for opts in both(120) {
        let o = run_ok(&bare(opts, &[("kgs-a", "swapgs-kgs"), ("kgs-b", "swapgs-kgs"), ("kgs-c", "swapgs-kgs")], &[]));
        for name in ["kgs-a", "kgs-b", "kgs-c"] {
            assert_guest_success(&o, name);
        }
        assert_memory_returned(&o);
    }
}

#[test]
fn tsc_aux_belongs_to_each_vcpu() {
    for opts in both_with(120, &["+rdtscp"]) {
        let o = run_ok(&bare(opts, &[("aux-a", "tsc-aux"), ("aux-b", "tsc-aux")], &[]));
        for name in ["aux-a", "aux-b"] {
            assert_guest_success(&o, name);
            let line = console_line(&o, name, "kept over");
            assert!(number_after(&line, "checks and") >= 1.0, "{name} must have shared the CPU: {line}");
        }
        assert_memory_returned(&o);
    }
}

#[test]
fn dr7_is_saved_and_loaded_so_breakpoints_survive_exits() {
    for opts in both(120) {
        let o = run_ok(&bare(opts, &[("dr7", "dr7-state"), ("bystander", "spinner")], &["guest.bystander.cmdline=ms=100 mib=2"]));
        assert_guest_success(&o, "dr7");
        assert_guest_success(&o, "bystander");
        assert_memory_returned(&o);
    }
}

#[test]
fn hidden_features_stay_hidden_and_their_cr4_bits_are_refused() {
    // QEMU's TCG can emulate protection keys: with +pku the allow-list is what hides them.
    for opts in both_with(120, &["+pku"]) {
        let o = run_ok(&bare(opts, &[("hidden", "hidden-features")], &[]));
        assert_guest_success(&o, "hidden");
        assert_memory_returned(&o);
    }
}

#[test]
fn leaving_long_mode_stops_only_that_domain_on_both_vendors() {
    for opts in both(120) {
        let o = run_ok(&bare(
            opts,
            &[("lm-64", "long-mode-exit"), ("lm-compat", "long-mode-exit"), ("bystander", "spinner")],
            &["guest.lm-compat.cmdline=mode=compat", "guest.bystander.cmdline=ms=100 mib=2"],
        ));
        assert_guest_success(&o, "lm-64");
        let fate = fate_of(&o, "lm-compat").expect("fate");
        assert!(fate.starts_with("crashed: guest left long mode (cr0 "), "{fate}");
        assert!(!console_of(&o, "lm-compat").iter().any(|l| l == "L"), "the write must not take effect");
        assert_guest_success(&o, "bystander");
        assert_memory_returned(&o);
    }
}

#[test]
fn x87_pointers_of_one_domain_never_reach_another_or_the_cpu_cannot_leak_them() {
    for opts in both(120) {
        // Neither emulated CPU behaves like a pre-Zen 2 AMD CPU, and each guest says which
        // way. QEMU's qemu64 is an AMD CPU without CPUID 0x80000008 EBX[2] (XSAVE_ERPTR), so
        // the hypervisor scrubs, but TCG's FXSAVE stores no x87 pointers at all; Bochs'
        // Skylake is an Intel CPU, whose FXRSTOR restores them, so there is nothing to scrub.
        let (scrub, why) = match opts.emulator {
            Emulator::Qemu => ("yes", "FXSAVE stores no x87 instruction or operand pointer on this CPU"),
            Emulator::Bochs => ("no", "FXRSTOR restores the x87 pointers on this CPU (only older AMD CPUs leave them)"),
        };
        let o = run_ok(&bare(
            opts,
            &[("fx-x87", "fxsave-leak"), ("fx-check", "fxsave-leak")],
            &["guest.fx-x87.cmdline=role=x87", "guest.fx-check.cmdline=role=check"],
        ));
        for name in ["fx-x87", "fx-check"] {
            let r = result_line(&o, name);
            assert!(r == "Test result: SUCCESS" || r == "Test result: SKIP", "{name}: {r}");
            if r == "Test result: SKIP" {
                let reason = format!("fxsave-leak {name}: {why}");
                assert!(console_of(&o, name).contains(&reason), "{name} must skip with {reason:?}: {:?}", console_of(&o, name));
            }
        }
        assert_has(&o, &format!("x87 pointer scrub {scrub}"));
        assert_memory_returned(&o);
    }
}

#[test]
fn a_64_kib_console_write_does_not_stall_the_other_domains() {
    // Synchronous echo stalled the machine for ~6 s at 115200 baud (Bochs paces its UART at
    // the line rate in emulated time); 1 s leaves room for a loaded host under QEMU, whose
    // clock is the host's.
    for opts in both(180) {
        let o = run_ok(&bare(
            opts,
            &[("flood", "console-flood"), ("watch", "console-flood")],
            &["guest.flood.cmdline=role=flood", "guest.watch.cmdline=role=watch ms=400 max_gap_ms=1000"],
        ));
        assert_guest_success(&o, "flood");
        assert_guest_success(&o, "watch");
        let flood = console_of(&o, "flood");
        assert!(flood.iter().filter(|l| l.starts_with("flood ")).count() >= 200, "the newest 16 KiB are echoed");
        assert_lines_whole(&o);
        assert_memory_returned(&o);
    }
}

/// `vcpu` commands whose values the hypervisor must refuse: non-canonical addresses in the
/// syscall and GS MSRs, reserved SFMASK and DR7 bits, a hidden feature's CR4 bit (PKE), CR8
/// above 15, and an EFER that leaves long mode.
const REFUSED_VCPU_SETS: [&str; 8] = [
    "vcpu t lstar=0x800000000000",
    "vcpu t kernel_gs_base=0x0000800000000001",
    "vcpu t cstar=0xffff7fffffffffff",
    "vcpu t sfmask=0x100000000",
    "vcpu t cr4=0x400020",
    "vcpu t cr8=16",
    "vcpu t dr7=0x100000400",
    "vcpu t efer=0",
];

#[test]
fn vcpu_set_refuses_values_that_would_fault_the_host_and_changes_nothing() {
    // Paused, the register dump stays put, so it shows whether a refusal changed any.
    let mut script = vec!["create ticker name=t cmdline=\"interval_ms=20\"", "pause t", "vcpu t"];
    script.extend(REFUSED_VCPU_SETS);
    script.extend([
        "vcpu t",
        "unpause t",
        "vcpu t lstar=0xffff800000001000 kernel_gs_base=0x1000 cr8=5",
        "vcpu t",
        "sleep 200ms",
        "console t",
        "poweroff",
    ]);
    for opts in both(120) {
        let o = dom0_ok(opts, &script);
        for cmd in REFUSED_VCPU_SETS {
            assert_eq!(output_of(&o, cmd, 0), vec!["error: bad argument".to_string()], "{cmd}");
        }
        let (before, refused) = (output_of(&o, "vcpu t", 0), output_of(&o, "vcpu t", 1));
        assert!(before.iter().any(|l| l.starts_with("lstar: ")), "a register dump: {before:?}");
        assert_eq!(before, refused, "the refused values changed nothing");
        assert_eq!(output_of(&o, "vcpu t lstar=0xffff800000001000 kernel_gs_base=0x1000 cr8=5", 0), vec!["set 3 registers of domain 1"]);
        let after = output_of(&o, "vcpu t", 2);
        assert_eq!((field(&after, "lstar"), field(&after, "kernel_gs_base"), field(&after, "cr8")), ("0xffff800000001000".into(), "0x1000".into(), "0x5".into()));
        assert!(output_of(&o, "console t", 0).iter().any(|l| l.starts_with("tick ")), "the domain kept running");
        assert_lacks(&o, "PANIC");
    }
}

#[test]
fn page_tables_a_clone_copies_are_charged_to_its_quota() {
    for opts in both(240) {
        let o = dom0_ok(
            opts,
            &[
                "create quota-tables name=qt mem=256 cmdline=\"writes=200\"",
                "wait qt frozen 120",
                "clone qt name=none- quota=200k",
                "clone qt name=small- quota=1",
                "wait small-0 paused 120",
                "wait none-0 paused 120",
                "console none-0",
                "console small-0",
                "stat small-0",
                "stat none-0",
                "destroy none-0 small-0 qt",
                "check",
                "poweroff",
            ],
        );
        let none = output_of(&o, "console none-0", 0);
        assert!(none.iter().any(|l| l.contains("mem_protect of") && l.contains("quota exceeded")), "{none:?}");
        let small = output_of(&o, "console small-0", 0);
        assert!(small.iter().any(|l| l.contains("mem_protect of") && l.ends_with(": ok")), "{small:?}");
        let s = output_of(&o, "stat small-0", 0);
        assert_eq!(field(&s, "state"), "paused(quota)");
        let used: u64 = field(&s, "quota_used_kib").parse().unwrap();
        let tables: u64 = field(&s, "quota_pagetable_kib").parse().unwrap();
        let private: u64 = field(&s, "private_kib").parse().unwrap();
        assert_eq!(used, 1024, "the quota is used up exactly: {s:?}");
        assert_eq!(used, tables + private, "pages and tables, nothing else: {s:?}");
        assert!(tables >= 127 * 4, "mem_protect copied the shared last-level tables: {s:?}");
        let n = output_of(&o, "stat none-0", 0);
        assert_eq!(field(&n, "quota_used_kib"), "200", "its writes used the quota up: {n:?}");
        let n_tables: u64 = field(&n, "quota_pagetable_kib").parse().unwrap();
        assert!(n_tables < 127 * 4, "the refused mem_protect copied no table: {n:?}");
        assert_eq!(output_of(&o, "check", 0), vec!["frame table consistent"]);
    }
}

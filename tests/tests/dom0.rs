//! dom0 and its shell, driven over the serial console under QEMU (SVM) and Bochs (VMX).

use guest_abi::hypercall::nr;
use tests::*;

#[test]
fn the_readme_session_works_on_both_vendors() {
    for opts in both(120) {
        let o = dom0_ok(opts, &["create hello", "list", "wait 1 dead 20", "console 1", "destroy 1", "poweroff"]);
        assert_eq!(output_of(&o, "create hello", 0), vec!["created domain 1 hello"]);
        let list = output_of(&o, "list", 0);
        assert!(list[0].starts_with("Name") && list[0].contains("Mem(MiB)") && list[0].contains("Shared(KiB)"));
        assert!(list.iter().any(|l| l.starts_with("dom0 ") && l.contains("running")), "{list:?}");
        assert!(list.iter().any(|l| l.starts_with("hello ")), "{list:?}");
        let console = output_of(&o, "console 1", 0);
        assert_eq!(console, vec!["hello from domain 1 (hello)", "Test result: SUCCESS"]);
        assert_eq!(output_of(&o, "destroy 1", 0), vec!["destroyed domain 1 hello"]);
        assert_has(&o, "(hv) dom0 asked to power off");
    }
}

#[test]
fn domains_from_several_images_run_and_destroying_them_returns_all_memory() {
    for opts in both(180) {
        let o = dom0_ok(
            opts,
            &[
                "info",
                "create hello",
                "create ticker name=tick cmdline=\"interval_ms=20\"",
                "create spinner mem=8 cmdline=\"ms=100 mib=2\"",
                "create memory mem=12",
                "list",
                "wait hello dead 30",
                "wait spinner dead 60",
                "wait memory dead 60",
                "console spinner",
                "console memory",
                "console tick",
                "destroy hello",
                "destroy tick",
                "destroy spinner",
                "destroy memory",
                "check",
                "info",
                "poweroff",
            ],
        );
        let list = output_of(&o, "list", 0);
        assert_eq!(list.len(), 6, "header, dom0 and four domains: {list:?}");
        assert!(list.iter().any(|l| l.starts_with("spinner ") && l.contains("       8 ")), "{list:?}");
        assert!(output_of(&o, "console spinner", 0).contains(&"Test result: SUCCESS".to_string()));
        assert!(output_of(&o, "console memory", 0).contains(&"Test result: SUCCESS".to_string()));
        assert!(output_of(&o, "console tick", 0).iter().filter(|l| l.starts_with("tick ")).count() >= 2);
        assert_eq!(output_of(&o, "check", 0), vec!["frame table consistent"]);
        let before = output_of(&o, "info", 0);
        let after = output_of(&o, "info", 1);
        assert_eq!(field(&before, "free_kib"), field(&after, "free_kib"), "memory back to its baseline exactly");
        assert_eq!(field(&after, "domains"), "1");
        assert_eq!(field(&after, "pagetable_kib"), field(&before, "pagetable_kib"));
    }
}

#[test]
fn info_reports_vendor_and_backend() {
    let cases = [(qemu(90), "amd", "svm-npt"), (bochs(90), "intel", "vmx-ept")];
    for (opts, vendor, backend) in cases {
        let o = dom0(opts, &["info", "poweroff"]);
        let info = output_of(&o, "info", 0);
        assert_eq!(field(&info, "vendor"), vendor);
        assert_eq!(field(&info, "backend"), backend);
        for key in ["total_kib", "free_kib", "shared_kib", "pagetable_kib", "domains"] {
            field(&info, key).parse::<u64>().unwrap_or_else(|_| panic!("{key} is not a number: {info:?}"));
        }
    }
}

#[test]
fn a_paused_domain_makes_no_progress() {
    for opts in both(120) {
        let o = dom0(
            opts,
            &[
                "create ticker cmdline=\"interval_ms=10\"",
                "sleep 150ms",
                "pause ticker",
                "list",
                "console ticker",
                "sleep 300ms",
                "console ticker",
                "unpause ticker",
                "sleep 150ms",
                "console ticker",
                "poweroff",
            ],
        );
        assert!(output_of(&o, "list", 0).iter().any(|l| l.starts_with("ticker ") && l.contains(" paused")));
        let ticks = |n| output_of(&o, "console ticker", n).iter().filter(|l| l.starts_with("tick ")).count();
        let (a, b, c) = (ticks(0), ticks(1), ticks(2));
        assert!(a >= 1, "it ran before the pause");
        assert_eq!(a, b, "no ticks while paused");
        assert!(c > b, "it runs again after unpause ({b} -> {c})");
    }
}

#[test]
fn bad_commands_and_arguments_each_get_one_error_line() {
    let bad: &[&str] = &[
        "frobnicate",
        "create",
        "create nosuch",
        "create hello mem=lots",
        "create hello mem=1",
        "create hello mem=100000",
        "create hello colour=red",
        "create hello cmdline=\"unterminated",
        "destroy 99",
        "destroy dom0",
        "pause nosuch",
        "console",
        "console 4000000000",
        "wait 1 sleeping",
        "clone dom0",
        "freeze dom0",
        "stat nosuch",
        "list everything",
    ];
    let mut script: Vec<&str> = bad.to_vec();
    // Typed with line editing: a wrong letter rubbed out with backspace (DEL), and a line of
    // junk erased with Ctrl-U before the real command.
    script.extend(["create hellx\x7fo name=edi\x7f\x7fdited", "wait edited dead 30", "junk words\x15console edited"]);
    script.extend(["create hello name=ok", "wait ok dead 30", "console ok", "poweroff"]);
    for opts in both(120) {
        let o = dom0_ok(opts, &script);
        for cmd in bad {
            let out = output_of(&o, cmd, 0);
            assert_eq!(out.len(), 1, "{cmd:?} printed {out:?}");
            assert!(out[0].starts_with("error: "), "{cmd:?} printed {out:?}");
        }
        assert_eq!(output_of(&o, "destroy 99", 0), vec!["error: unknown domain 99"]);
        assert_eq!(output_of(&o, "destroy dom0", 0), vec!["error: not permitted"]);
        assert!(output_of(&o, "create hello mem=100000", 0)[0].contains("out of memory")
            || output_of(&o, "create hello mem=100000", 0)[0].contains("bad argument"));
        assert!(output_of(&o, "console ok", 0).contains(&"Test result: SUCCESS".to_string()), "the shell still works");
        let edited = o.lines().any(|l| l.starts_with("created domain ") && l.ends_with(" edited"));
        assert!(edited, "backspace edits the line before it runs:\n{}", o.serial);
        let greeted = o.lines().any(|l| l.starts_with("hello from domain ") && l.contains("(edited)"));
        assert!(greeted, "Ctrl-U erases the line before it runs:\n{}", o.serial);
        assert_lacks(&o, "unknown command \"junk");
    }
}

#[test]
fn an_unprivileged_guest_gets_the_permission_error_for_every_control_hypercall() {
    for opts in both(120) {
        let o = dom0(opts, &["create unpriv", "wait unpriv dead 30", "console unpriv", "poweroff"]);
        let console = output_of(&o, "console unpriv", 0);
        let control = (nr::CONTROL_END - nr::CONTROL_BASE) as usize;
        assert_eq!(console.iter().filter(|l| l.ends_with("not permitted (ok)")).count(), control, "{console:?}");
        assert_eq!(console.last().map(String::as_str), Some("Test result: SUCCESS"), "{console:?}");
    }
}

//! Self-checkpoints under QEMU (SVM) and Bochs (VMX), each on its own data disk: the
//! `selfckpt` guest checkpoints itself, streams its frozen memory to dom0 over its channel
//! while it writes on, and the image dom0 stored restores to a domain that returns from the
//! same call with RESTORED and the memory of that instant. Garbage on the ring, reads and
//! pages past the guest's memory, a stream cut off, a second checkpoint while one runs, a
//! guest without a channel and an abandoned checkpoint are each refused or reclaimed, and
//! nothing else is disturbed. The benchmark prints the pause the guest sees at two sizes.

use boot::run::RunOptions;
use tests::*;

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[test]
fn a_guest_checkpoints_itself_while_writing_and_its_image_restores_to_the_instant_of_the_call() {
    for opts in both(600) {
        let path = fresh_disk("selfckpt", &opts);
        let o = dom0_ok(
            with_disk(opts, &path),
            &[
                "info",
                "create hello name=by paused=1",
                "checksum by",
                "create selfckpt name=sc channel=1",
                "expect sc \"Test result:\" 300",
                "console sc",
                "store",
                "restore sc.one name=back",
                "expect back \"Test result:\" 120",
                "console back",
                "list",
                "checksum by",
                "channel",
                "destroy sc back by",
                "check",
                "info",
                "poweroff",
            ],
        );
        let sc = output_of(&o, "console sc", 0);
        assert!(has(&sc, "selfckpt: checkpoint taken, paused"), "{sc:#?}");
        assert!(has(&sc, ": stored"), "{sc:#?}");
        assert!(has(&sc, "selfckpt: running on after the checkpoint"), "{sc:#?}");
        assert!(has(&sc, "Test result: SUCCESS"), "{sc:#?}");
        let back = output_of(&o, "console back", 0);
        assert!(has(&back, "selfckpt: memory is the memory at the moment of the call"), "{back:#?}\n{}", o.serial);
        assert!(has(&back, "Test result: SUCCESS"), "{back:#?}");
        assert!(!has(&back, "checkpoint taken"), "the restored copy resumes after the call, not before it: {back:#?}");
        let store = output_of(&o, "store", 0);
        assert!(store.iter().any(|l| l.starts_with("sc.one ") && l.contains("domain")), "{store:#?}");
        let channel = output_of(&o, "channel", 0);
        assert!(has(&channel, "sc: self-checkpoint stored as sc.one"), "{channel:#?}");
        // The epoch ended once the image was stored.
        assert!(!has(&output_of(&o, "list", 0), "sc.self"), "{}", o.serial);
        assert_eq!(output_of(&o, "checksum by", 0), output_of(&o, "checksum by", 1), "a bystander's memory changed");
        assert_eq!(output_of(&o, "check", 0), vec!["frame table consistent".to_string()]);
        let free = |n: usize| field(&output_of(&o, "info", n), "free_kib");
        assert_eq!(free(0), free(1), "every frame back");
        let _ = std::fs::remove_file(&path);
    }
}

/// One emulator's run of the refusals (the two run as two tests, in parallel: each waits
/// out a stream's stall limit).
fn refusals(opts: RunOptions) {
    {
        let path = fresh_disk("selfckpt-bad", &opts);
        let o = dom0_ok(
            with_disk(opts, &path),
            &[
                "info",
                "create hello name=by paused=1",
                "checksum by",
                "create selfckpt name=garb channel=1 cmdline=\"mode=garbage tag=g\"",
                "expect garb \"Test result:\" 300",
                "console garb",
                "create selfckpt name=past channel=1 cmdline=\"mode=beyond tag=p\"",
                "expect past \"Test result:\" 300",
                "console past",
                "create selfckpt name=cut channel=1 cmdline=\"mode=cut tag=c\"",
                "expect cut \"Test result:\" 300",
                "console cut",
                "create selfckpt name=twice channel=1 cmdline=\"mode=twice\"",
                "expect twice \"Test result:\" 300",
                "console twice",
                "create selfckpt name=denied cmdline=\"mode=denied\"",
                "expect denied \"Test result:\" 60",
                "console denied",
                "create selfckpt name=gone channel=1 cmdline=\"mode=abandon\"",
                "expect gone \"Test result:\" 60",
                "wait gone dead 30",
                "console gone",
                "list",
                "channel",
                "store",
                "checksum by",
                "destroy garb past cut twice denied gone by",
                "check",
                "info",
                "poweroff",
            ],
        );
        for (name, needles) in [
            ("garb", &["a stream without BEGIN: bad message", "pages out of order: bad message", "a BEGIN with the wrong size: bad message", ": stored"][..]),
            ("past", &["reading past its memory: Err(BadAddress), Err(BadAddress)", "a page past its memory: bad message", ": stored"][..]),
            ("cut", &["a stream that stops: cut off", ": stored"][..]),
            ("twice", &["a second checkpoint: Err(Busy)", ": stored"][..]),
            ("denied", &["without a channel: open Err(NotPermitted), checkpoint Err(NotPermitted)"][..]),
            ("gone", &["abandoning the checkpoint"][..]),
        ] {
            let console = output_of(&o, &format!("console {name}"), 0);
            for n in needles {
                assert!(has(&console, n), "{name}: {n:?} not in {console:#?}");
            }
            assert!(has(&console, "Test result: SUCCESS"), "{name}: {console:#?}");
        }
        let channel = output_of(&o, "channel", 0);
        for n in [
            "garb: refused: bad message: kind 77 where BEGIN was expected",
            "garb: refused: bad message: PAGE at",
            "garb: refused: bad message: BEGIN says",
            "garb: self-checkpoint stored as garb.g",
            "past: refused: bad message: PAGE at",
            "past: self-checkpoint stored as past.p",
            "cut: refused: stream cut off: no message in time",
            "cut: self-checkpoint stored as cut.c",
            "twice: self-checkpoint stored as twice.one",
        ] {
            assert!(has(&channel, n), "{n:?} not in {channel:#?}");
        }
        // Only the whole streams became images; the refused ones left nothing behind.
        let store = output_of(&o, "store", 0);
        let names: Vec<&str> = store.iter().filter_map(|l| l.split_whitespace().next()).filter(|n| n.contains('.')).collect();
        assert_eq!(names.len(), 4, "{store:#?}");
        // The abandoned epoch went with its guest.
        assert!(!has(&output_of(&o, "list", 0), ".self"), "{}", o.serial);
        assert_eq!(output_of(&o, "checksum by", 0), output_of(&o, "checksum by", 1), "a bystander's memory changed");
        assert_eq!(output_of(&o, "check", 0), vec!["frame table consistent".to_string()]);
        let free = |n: usize| field(&output_of(&o, "info", n), "free_kib");
        assert_eq!(free(0), free(1), "every frame back");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn on_svm_garbage_reads_past_memory_a_cut_stream_a_second_checkpoint_and_no_channel_are_refused_and_disturb_nothing() {
    refusals(qemu(900));
}

#[test]
fn on_vmx_garbage_reads_past_memory_a_cut_stream_a_second_checkpoint_and_no_channel_are_refused_and_disturb_nothing() {
    refusals(bochs(900));
}

#[test]
fn bench_self_checkpoint_pause_is_the_same_for_a_16_mib_and_a_256_mib_guest() {
    let mut figures = Vec::new();
    // Guest TSC cycles: instructions under QEMU -icount and Bochs (repeatable, host-independent).
    for opts in [RunOptions { icount: true, ..qemu(600) }, bochs(600)] {
        let label = format!("{:?}", opts.emulator);
        let o = dom0_ok(
            opts,
            &[
                "create selfckpt name=s16 mem=16 channel=1 cmdline=\"bench=1 pages=64\"",
                "expect s16 \"Test result:\" 120",
                "console s16",
                "create selfckpt name=s256 mem=256 channel=1 cmdline=\"bench=1 pages=64\"",
                "expect s256 \"Test result:\" 120",
                "console s256",
                "destroy s16 s256",
                "poweroff",
            ],
        );
        let pause = |name: &str| {
            let c = output_of(&o, &format!("console {name}"), 0);
            assert!(has(&c, "Test result: SUCCESS"), "{c:#?}");
            number_after(find(&c, "selfckpt: pause"), "pause")
        };
        let (small, big) = (pause("s16"), pause("s256"));
        let ratio = big / small;
        figures.push(format!("{label}: self-checkpoint pause (call to running again), 16 MiB {small:.0} vs 256 MiB {big:.0} cycles: {ratio:.2}x (target <= 1.2x)"));
        assert!(ratio <= 1.2, "{label}: {small} vs {big}");
    }
    record_figures("bench selfckpt", &figures);
}

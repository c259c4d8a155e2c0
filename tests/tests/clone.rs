//! Copy-on-write cloning end to end, driven from the dom0 shell under QEMU (SVM) and Bochs
//! (VMX): isolation of clones writing the same addresses, an untouched template, identity,
//! quotas, clone chains, refused template destruction, and every frame back after teardown.

use tests::*;

/// A seed that changes from run to run, so the written addresses are randomized.
fn seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    (t.as_nanos() as u64 ^ std::process::id() as u64) % 1_000_000_007
}

fn lines(o: &boot::run::RunOutcome, cmd: &str) -> Vec<String> {
    output_of(o, cmd, 0)
}

#[test]
fn clones_writing_the_same_addresses_each_read_back_their_own_and_the_template_stays_intact() {
    for opts in both(300) {
        let seed = seed();
        let create = format!("create demo mem=20 cmdline=\"ws_mib=12 check=all writes=16 seed={seed}\"");
        let o = dom0_ok(
            opts,
            &[
                "info",
                &create,
                "wait demo frozen 120",
                "clone demo count=4",
                "wait demo-3 blocked 120",
                "wait demo-0 blocked 120",
                "console demo-0",
                "console demo-1",
                "console demo-2",
                "console demo-3",
                "list",
                "destroy demo-0 demo-1 demo-2 demo-3",
                "clone demo name=fresh",
                "wait fresh0 blocked 120",
                "console fresh0",
                "stat fresh0",
                "destroy fresh0 demo",
                "check",
                "info",
                "poweroff",
            ],
        );
        let mut generations = std::collections::HashSet::new();
        for i in 0..4 {
            let c = lines(&o, &format!("console demo-{i}"));
            assert_eq!(c.len(), 2, "demo-{i}: {c:?}");
            assert!(c[0].starts_with(&format!("clone {i} domain ")) && c[0].ends_with("shared-data ok"), "{c:?}");
            assert_eq!(c[1], format!("clone {i} own-writes ok"));
            let generation: u64 = c[0].split_whitespace().nth(5).unwrap().parse().unwrap();
            assert!(generations.insert(generation), "generation {generation} seen twice");
        }
        // A clone made after its siblings wrote sees every page of the template unchanged.
        let fresh = lines(&o, "console fresh0");
        assert!(fresh[0].ends_with("shared-data ok"), "seed {seed}: {fresh:?}");
        let list = lines(&o, "list");
        let clone_row = list.iter().find(|l| l.starts_with("demo-2 ")).unwrap();
        let cols: Vec<&str> = clone_row.split_whitespace().collect();
        let (private, shared): (u64, u64) = (cols[4].parse().unwrap(), cols[5].parse().unwrap());
        assert!(private > 0 && private < 200, "a clone owns only what it wrote: {clone_row}");
        assert!(shared > 19 * 1024, "and shares the rest: {clone_row}");
        assert_eq!(cols[6], "1", "parent column: {clone_row}");
        assert!(lines(&o, "stat fresh0").contains(&"parent: 1".to_string()));
        assert_eq!(lines(&o, "check"), vec!["frame table consistent"]);
        assert_eq!(field(&lines(&o, "info"), "free_kib"), field(&output_of(&o, "info", 1), "free_kib"));
    }
}

#[test]
fn quota_limits_private_pages_and_pauses_only_that_clone() {
    for opts in both(240) {
        let o = dom0(
            opts,
            &[
                "create demo mem=20 cmdline=\"ws_mib=4 check=4 writes=4\"",
                "wait demo frozen 120",
                "clone demo name=zero quota=0",
                "wait zero0 paused 60",
                "clone demo name=ok",
                "wait ok0 blocked 120",
                "list",
                "stat zero0",
                "console ok0",
                "unpause zero0",
                "wait zero0 paused 60",
                "stat zero0",
                "poweroff",
            ],
        );
        let list = lines(&o, "list");
        let zero = list.iter().find(|l| l.starts_with("zero0 ")).unwrap();
        assert!(zero.contains("paused(quota)"), "{zero}");
        assert!(list.iter().any(|l| l.starts_with("ok0 ") && l.contains("blocked")), "{list:?}");
        let stat = lines(&o, "stat zero0");
        assert_eq!(field(&stat, "private_pages"), "0", "quota=0: no private pages at all");
        assert_eq!(field(&stat, "quota_pages"), "0");
        assert!(field(&stat, "reason").starts_with("quota exhausted copying gpa"), "{stat:?}");
        assert!(lines(&o, "console ok0").iter().any(|l| l.ends_with("own-writes ok")));
        assert_eq!(field(&output_of(&o, "stat zero0", 1), "private_pages"), "0", "unpausing does not let it through");
    }
}

#[test]
fn clone_chains_share_through_every_level_and_templates_with_clones_survive_destroy() {
    for opts in both(300) {
        let o = dom0(
            opts,
            &[
                "info",
                "create demo mem=20 cmdline=\"ws_mib=8 check=all writes=8 seed=99\"",
                "wait demo frozen 120",
                "clone demo count=2",
                "wait demo-0 blocked 120",
                "freeze demo-0 name=tier2",
                "clone tier2 count=2 name=g",
                "wait g1 blocked 120",
                "wait g0 blocked 120",
                "console g0",
                "console g1",
                "destroy tier2",
                "destroy demo",
                "list",
                "destroy g0 g1",
                "destroy tier2",
                "destroy demo-1",
                "destroy demo",
                "check",
                "info",
                "poweroff",
            ],
        );
        assert_eq!(lines(&o, "freeze demo-0 name=tier2"), vec!["froze domain 2 tier2 into a template"]);
        for g in ["g0", "g1"] {
            let c = lines(&o, &format!("console {g}"));
            assert!(c.iter().any(|l| l.ends_with("shared-data ok")), "{g} sees template and parent data: {c:?}");
            assert!(c.iter().any(|l| l.ends_with("own-writes ok")), "{c:?}");
        }
        assert_eq!(lines(&o, "destroy tier2"), vec!["error: domain 2 is a template with 2 live clones"]);
        assert_eq!(lines(&o, "destroy demo"), vec!["error: domain 1 is a template with 2 live clones"]);
        let list = lines(&o, "list");
        assert!(list.iter().any(|l| l.starts_with("tier2 ") && l.contains("frozen") && l.ends_with(" 1")), "{list:?}");
        assert!(list.iter().any(|l| l.starts_with("g0 ") && l.ends_with(" 2")), "{list:?}");
        assert_eq!(output_of(&o, "destroy tier2", 1), vec!["destroyed domain 2 tier2"], "the last clone lets it go");
        assert_eq!(output_of(&o, "destroy demo", 1), vec!["destroyed domain 1 demo"]);
        assert_eq!(lines(&o, "check"), vec!["frame table consistent"]);
        let (before, after) = (lines(&o, "info"), output_of(&o, "info", 1));
        assert_eq!(field(&before, "free_kib"), field(&after, "free_kib"), "every frame is back");
        assert_eq!(field(&after, "shared_kib"), "0");
    }
}

#[test]
fn mass_clone_and_destroy_returns_memory_to_its_baseline() {
    let names: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let destroy = format!("destroy {} demo", names.join(" "));
    for opts in both(300) {
        let o = dom0(
            opts,
            &[
                "info",
                "create demo mem=16 cmdline=\"ws_mib=4 check=2 writes=2\"",
                "wait demo frozen 120",
                "clone demo count=40 name=m",
                "wait m39 blocked 120",
                "info",
                &destroy,
                "check",
                "info",
                "poweroff",
            ],
        );
        let (base, busy, after) = (output_of(&o, "info", 0), output_of(&o, "info", 1), output_of(&o, "info", 2));
        assert_eq!(field(&busy, "domains"), "42");
        assert!(field(&busy, "saved_kib").parse::<u64>().unwrap() > 40 * 15 * 1024, "{busy:?}");
        assert_eq!(lines(&o, &destroy).len(), 41);
        assert_eq!(field(&base, "free_kib"), field(&after, "free_kib"));
        assert_eq!(field(&base, "pagetable_kib"), field(&after, "pagetable_kib"));
        assert_eq!(lines(&o, "check"), vec!["frame table consistent"]);
    }
}

#[test]
fn running_out_of_memory_pauses_only_the_writer_and_it_resumes_once_memory_is_back() {
    // `big`'s clones each write about 60 pages. After the density run has eaten memory,
    // destroying two of its clones frees fewer frames than that (7 frames + 2 pages each), so
    // a clone of `big` can be made but must run out part way: paused(nomem).
    let free_some = format!("destroy {}", (2..32).map(|i| format!("d{i}")).collect::<Vec<_>>().join(" "));
    let cases = [(qemu(300), 256), (bochs(300), 192)];
    for (mut opts, mib) in cases {
        opts.mem_mib = mib;
        let o = dom0_ok(
            opts,
            &[
                "create demo name=big mem=16 cmdline=\"ws_mib=1 check=4 writes=64\"",
                "wait big frozen 120",
                "bench density mib=16",
                "clone bench-dense-t",
                "destroy d0 d1",
                "clone big name=starved",
                "wait starved0 paused 60",
                "stat starved0",
                "stat d40",
                "console d5",
                &free_some,
                "unpause starved0",
                "wait starved0 blocked 60",
                "console starved0",
                "check",
                "poweroff",
            ],
        );
        let density = lines(&o, "bench density mib=16");
        let made = density.iter().find(|l| l.contains("made ")).unwrap();
        assert!(made.ends_with("stopped by: out of memory"), "{made}");
        assert!(lines(&o, "clone bench-dense-t")[0].starts_with("error: out of memory"));
        assert_eq!(lines(&o, "clone big name=starved").len(), 1);
        assert!(lines(&o, "clone big name=starved")[0].starts_with("cloned domain "));
        let stat = lines(&o, "stat starved0");
        assert_eq!(field(&stat, "state"), "paused(nomem)", "{stat:?}");
        assert!(field(&stat, "reason").starts_with("out of memory copying gpa"), "{stat:?}");
        // Everyone else went on: the other clones are still there, idle, their work done.
        assert_eq!(field(&lines(&o, "stat d40"), "state"), "blocked");
        assert!(lines(&o, "console d5").iter().any(|l| l.ends_with("own-writes ok")));
        // With memory back, unpausing lets it finish its writes, with nothing lost.
        let c = lines(&o, "console starved0");
        assert!(c.iter().any(|l| l.ends_with("shared-data ok")) && c.iter().any(|l| l.ends_with("own-writes ok")), "{c:?}");
        assert_eq!(lines(&o, "check"), vec!["frame table consistent"]);
    }
}

#[test]
fn a_clone_of_a_template_that_asked_for_upcalls_learns_its_identity_by_upcall() {
    for opts in both(120) {
        let o = dom0(
            opts,
            &[
                "create upcall",
                "wait upcall frozen 60",
                "clone upcall count=2",
                "wait upcall-0 dead 60",
                "wait upcall-1 dead 60",
                "console upcall-0",
                "console upcall-1",
                "poweroff",
            ],
        );
        for (i, c) in ["upcall-0", "upcall-1"].into_iter().enumerate() {
            let console = lines(&o, &format!("console {c}"));
            assert!(
                console.iter().any(|l| l.starts_with(&format!("clone {i} domain ")) && l.contains("got CLONED by upcall")),
                "{c}: {console:?}"
            );
            assert!(console.contains(&"Test result: SUCCESS".to_string()), "{c}: {console:?}");
        }
    }
}

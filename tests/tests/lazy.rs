//! Lazy restore and pagers under QEMU (SVM) and Bochs (VMX), each on its own data disk: a
//! lazily restored guest's memory equals an eagerly restored one's and it runs to completion;
//! several clients of dom0's pager share one image's frames; a pager domain that stops
//! answering or is destroyed leaves its clients paused (`paused(pager)`, the reason in
//! `stat`), and dom0 takes them over with memory intact; a domain that is not a client's
//! pager cannot supply its pages; a corrupted page found lazily crashes only its client.

use boot::store_cmd::FileDisk;
use std::path::Path;
use store::Store;
use tests::*;

/// The line of `command`'s output containing `needle` (progress shown in place may precede
/// it on the same line).
fn reply(o: &boot::run::RunOutcome, command: &str, needle: &str) -> String {
    let lines = output_of(o, command, 0);
    let line = lines.iter().rev().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in {command:?}: {lines:?}\n{}", o.serial));
    line[line.find(needle).unwrap_or(0)..].to_string()
}

fn checksum(o: &boot::run::RunOutcome, command: &str) -> String {
    reply(o, command, "checksum of domain").split_whitespace().nth(4).unwrap().to_string()
}

fn open_disk(path: &Path) -> FileDisk {
    for _ in 0..100 {
        match FileDisk::open(path) {
            Ok(d) => return d,
            Err(boot::store_cmd::DiskOpenError::InUse) => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    panic!("{} stayed in use", path.display());
}

/// The guest that fills 512 pages, waits to be restored, and verifies them.
const LAZYTOUCH: [&str; 3] = ["create lazytouch name=lt mem=32", "expect lt \"filled 512\" 60", "save lt lt.img"];

#[test]
fn a_lazy_restore_runs_at_once_matches_an_eager_one_and_shares_one_image_among_clients() {
    for opts in both(1500) {
        let path = fresh_disk("lazy", &opts);
        let mut script: Vec<&str> = LAZYTOUCH.to_vec();
        script.extend([
            "restore lt.img name=eager paused=1",
            "checksum eager",
            "restore lt.img name=lz lazy=1 paused=1",
            "stat lz",
            "checksum lz",
            "restore lt.img name=a lazy=1",
            "restore lt.img name=b lazy=1",
            "expect a \"verified\" 300",
            "expect b \"verified\" 300",
            "stat b",
            // dom0's pager notices the ended clients on its next round, in the shell's idle
            // time, and keeps what they touched as the working set.
            "sleep 2s",
            "console a",
            "console b",
            "pager",
            "store",
            "check",
            "poweroff",
        ]);
        let o = dom0_ok(with_disk(opts.clone(), &path), &script);
        let started = reply(&o, "restore lt.img name=lz lazy=1 paused=1", "restored domain");
        assert!(started.contains("lz from lt.img lazily (domain, 32 MiB"), "{started}");
        // Restored with no memory: pages are still to come (the background fetch runs
        // whenever the shell waits, so some are there by the next command).
        let before: u64 = field(&output_of(&o, "stat lz", 0), "lazy_missing_pages").parse().unwrap();
        assert!(before > 0, "no page missing right after the restore");
        assert_eq!(checksum(&o, "checksum lz"), checksum(&o, "checksum eager"), "lazy memory equals eager memory");
        for c in ["console a", "console b"] {
            let lines = output_of(&o, c, 0);
            assert!(lines.iter().any(|l| l.starts_with("lazytouch: verified 512 pages")), "{c}: {lines:?}");
        }
        let b = output_of(&o, "stat b", 0);
        let faults: u64 = field(&b, "lazy_demand_faults").parse().unwrap();
        let shared: u64 = field(&b, "lazy_shared_supplied").parse().unwrap();
        assert!(faults >= 1, "the guest ran before its pages were there: {b:?}");
        assert!(shared > 0, "pages went out shared: {b:?}");
        let pager = output_of(&o, "pager", 0);
        assert!(pager.iter().any(|l| l.contains("done: lz (domain") && l.contains("resident")), "{pager:?}");
        // The working set the first restores touched is kept beside the image.
        assert!(output_of(&o, "store", 0).iter().any(|l| l.starts_with("lt.img.ws") && l.contains("workset")), "{}", o.serial);
        assert!(output_of(&o, "check", 0).iter().any(|l| l == "frame table consistent"));
    }
}

#[test]
fn a_pager_that_fails_leaves_its_clients_paused_until_dom0_takes_them_over() {
    for opts in both(1500) {
        let path = fresh_disk("pager", &opts);
        let mut script: Vec<&str> = LAZYTOUCH.to_vec();
        script.extend([
            // lt was 1; pg 2, d 3.
            "create pagerd name=pg mem=64",
            "restore lt.img name=d lazy=1 pager=pg paused=1",
            "pager d to=pg timeout=300ms",
            "expect pg \"ready\" 60",
            "pause pg",
            "unpause d",
            "sleep 2s",
            "stat d",
            "destroy pg",
            "stat d",
            // A domain that is not d's pager cannot give it pages (bad is 4).
            "create pagerd name=bad cmdline=\"intrude=3\"",
            "expect bad \"ring\" 60",
            "console bad",
            "stat d",
            "pager d to=dom0",
            "expect d \"verified\" 300",
            "console d",
            // A paused client orphaned stays paused by dom0 after the takeover (pg2 5, e 6).
            "create pagerd name=pg2 mem=64",
            "restore lt.img name=e lazy=1 pager=pg2 paused=1",
            "destroy pg2",
            "stat e",
            "pager e to=dom0",
            "checksum e",
            "restore lt.img name=eager paused=1",
            "checksum eager",
            "poweroff",
        ]);
        let o = dom0_ok(with_disk(opts.clone(), &path), &script);
        assert!(reply(&o, "restore lt.img name=d lazy=1 pager=pg paused=1", "restored domain").starts_with("restored domain 3 d "), "{}", o.serial);
        let timed_out = output_of(&o, "stat d", 0);
        assert_eq!(field(&timed_out, "state"), "paused(pager)", "{timed_out:?}");
        assert!(field(&timed_out, "reason").starts_with("pager d2 did not answer gpa 0x"), "{timed_out:?}");
        let gone = output_of(&o, "stat d", 1);
        assert_eq!(field(&gone, "state"), "paused(pager)");
        assert_eq!(field(&gone, "reason"), "pager d2 (pg) is gone");
        assert_eq!(field(&gone, "lazy_pager"), "none");
        let bad = output_of(&o, "console bad", 0);
        assert!(bad.iter().any(|l| l == "pagerd: supply to domain 3 refused: not permitted"), "{bad:?}");
        assert!(bad.iter().any(|l| l == "pagerd: ring refused: not permitted"), "{bad:?}");
        let after = output_of(&o, "stat d", 2);
        assert_eq!(field(&after, "lazy_supplied_pages"), field(&gone, "lazy_supplied_pages"), "the intruder changed nothing");
        assert!(reply(&o, "pager d to=dom0", "domain 3").contains("served by pager domain 0"));
        assert!(output_of(&o, "console d", 0).iter().any(|l| l.starts_with("lazytouch: verified 512 pages")), "{}", o.serial);
        let e = output_of(&o, "stat e", 0);
        assert_eq!(field(&e, "state"), "paused");
        assert_eq!(field(&e, "reason"), "pager d5 (pg2) is gone");
        assert_eq!(checksum(&o, "checksum e"), checksum(&o, "checksum eager"), "memory intact after the takeover");
    }
}

#[test]
fn a_corrupted_page_found_lazily_crashes_only_its_client() {
    for opts in both(1500) {
        let path = fresh_disk("lazybad", &opts);
        let mut first: Vec<&str> = LAZYTOUCH.to_vec();
        first.push("poweroff");
        dom0_ok(with_disk(opts.clone(), &path), &first);
        // One byte flipped in a page the guest fills (its pattern starts at 2 MiB, gfn 512).
        let mut store = Store::open(open_disk(&path)).unwrap();
        let size = store.find("lt.img").unwrap().size_bytes as usize;
        let mut bytes = vec![0u8; size];
        store.read_at("lt.img", 0, &mut bytes).unwrap();
        let mut at = domimage::HEADER_BYTES;
        let mut flipped = false;
        while at + domimage::RECORD_HEADER_BYTES <= bytes.len() {
            let ty = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            if ty == domimage::record::MEMORY {
                let first_gfn = u64::from_le_bytes(bytes[at + 24..at + 32].try_into().unwrap());
                let pages = (len - 16) / 4096;
                if (first_gfn..first_gfn + pages as u64).contains(&600) {
                    bytes[at + 24 + 16 + (600 - first_gfn as usize) * 4096 + 300] ^= 0x10;
                    flipped = true;
                }
            }
            at += domimage::RECORD_HEADER_BYTES + len.div_ceil(8) * 8;
        }
        assert!(flipped, "no run holds gfn 600");
        let mut w = store.begin("bad.img", store::ImageKind::Domain, "corrupted on the host").unwrap();
        store.write(&mut w, &bytes).unwrap();
        store.commit(w).unwrap();
        drop(store);
        let second = [
            "restore lt.img name=good lazy=1",
            "restore bad.img name=bad lazy=1",
            "expect good \"verified\" 300",
            "wait bad crashed 300",
            "stat bad",
            "console good",
            "list",
            "check",
            "poweroff",
        ];
        let o = dom0_ok(with_disk(opts.clone(), &path), &second);
        let bad = output_of(&o, "stat bad", 0);
        assert_eq!(field(&bad, "state"), "crashed", "{bad:?}");
        let reason = field(&bad, "reason");
        assert!(reason.starts_with("pager d0: page at gpa 0x") && reason.ends_with("failed its checksum"), "{reason}");
        assert!(output_of(&o, "console good", 0).iter().any(|l| l.starts_with("lazytouch: verified 512 pages")), "{}", o.serial);
        assert!(output_of(&o, "check", 0).iter().any(|l| l == "frame table consistent"));
    }
}

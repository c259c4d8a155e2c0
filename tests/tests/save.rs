//! Save, restore and live checkpoints under QEMU (SVM) and Bochs (VMX), each on its own data
//! disk: a saved domain comes back with the same memory and goes on; a live checkpoint of a
//! guest that writes all the time restores to exactly the instant it was taken; a template
//! saved in one boot is restored and cloned in the next, and a clone's delta over it; hostile
//! images (truncated at every record boundary, bit-flipped, a newer version, empty, a delta
//! without its template) are refused with their own error and leave memory as it was; and a
//! machine killed in the middle of a save keeps every earlier image, the partial one absent.

use boot::run::{RunOptions, RunResult};
use boot::store_cmd::FileDisk;
use std::path::Path;
use store::Store;
use tests::*;

/// The last line of `command`'s output that contains `needle` (progress shown in place
/// precedes it on the same serial line).
fn reply(o: &boot::run::RunOutcome, command: &str, needle: &str) -> String {
    let lines = output_of(o, command, 0);
    let line = lines.iter().rev().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in the output of {command:?}: {lines:?}"));
    line[line.find(needle).unwrap_or(0)..].to_string()
}

fn free_kib(o: &boot::run::RunOutcome, n: usize) -> u64 {
    field(&output_of(o, "info", n), "free_kib").parse().unwrap()
}

fn checksum(o: &boot::run::RunOutcome, n: usize) -> String {
    let lines = output_of(o, "checksum tk", n);
    let l = lines.iter().find(|l| l.contains("checksum of domain")).expect("checksum line");
    l.split_whitespace().nth(4).unwrap().to_string()
}

/// The disk file, locked for the host. The run that used it has ended, but its lock can
/// outlive it by a moment (a process being spawned beside it holds a copy until its exec).
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

/// The images on a disk, read on the host.
fn images(path: &Path) -> Vec<(String, String)> {
    let store = Store::open(open_disk(path)).unwrap();
    store.list().iter().map(|e| (e.name.clone(), e.kind.to_string())).collect()
}

fn read_image(path: &Path, name: &str) -> Vec<u8> {
    let mut store = Store::open(open_disk(path)).unwrap();
    let size = store.find(name).unwrap().size_bytes as usize;
    let mut bytes = vec![0u8; size];
    assert_eq!(store.read_at(name, 0, &mut bytes).unwrap(), size);
    bytes
}

fn put_image(path: &Path, name: &str, bytes: &[u8]) {
    let mut store = Store::open(open_disk(path)).unwrap();
    let mut w = store.begin(name, store::ImageKind::Domain, "hostile test image").unwrap();
    store.write(&mut w, bytes).unwrap();
    store.commit(w).unwrap();
}

/// Where each record of an image starts (docs/image-format.md: a 64-byte header, then
/// records of a 24-byte header and a payload padded to 8 bytes).
fn record_offsets(image: &[u8]) -> Vec<usize> {
    let mut at = domimage::HEADER_BYTES;
    let mut out = Vec::new();
    while at + domimage::RECORD_HEADER_BYTES <= image.len() {
        out.push(at);
        let len = u32::from_le_bytes(image[at + 8..at + 12].try_into().unwrap()) as usize;
        at += domimage::RECORD_HEADER_BYTES + len.div_ceil(8) * 8;
    }
    out
}

/// The same header, claiming version 2 that needs a version-2 reader, checksum resealed.
fn newer_version(image: &[u8]) -> Vec<u8> {
    let mut v = image.to_vec();
    v[8..10].copy_from_slice(&2u16.to_le_bytes());
    v[10..12].copy_from_slice(&2u16.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&v[..56]);
    v[56..64].copy_from_slice(&sum.to_le_bytes());
    v
}

#[test]
fn saved_checkpointed_and_template_images_come_back_and_bad_ones_change_nothing() {
    for opts in both(1500) {
        let path = fresh_disk("save", &opts);
        let first = [
            "create ticker name=tk cmdline=\"interval_ms=20\"",
            "sleep 1s",
            "pause tk",
            "checksum tk",
            "save tk tk.img",
            "list",
            "restore tk.img paused=1",
            "checksum tk",
            "unpause tk",
            "sleep 2s",
            "console tk",
            "create ckptwriter name=w cmdline=\"pages=1024\"",
            "sleep 2s",
            "checkpoint w w.img",
            "destroy w",
            "restore w.img name=w2",
            "wait w2 dead 300",
            "console w2",
            "create demo name=tpl cmdline=\"ws_mib=4\"",
            "wait tpl frozen 300",
            "save tpl tpl.img",
            "clone tpl name=c",
            "wait c0 blocked 300",
            "save c0 c0.img keep=1",
            "store",
            "poweroff",
        ];
        let o = dom0_ok(with_disk(opts.clone(), &path), &first);
        // A paused domain saved, destroyed and restored has the same memory, and runs on.
        assert!(reply(&o, "save tk tk.img", "saved domain").contains("to tk.img (domain"), "{}", o.serial);
        assert!(!output_of(&o, "list", 0).iter().any(|l| l.starts_with("tk ")), "save destroys the domain");
        assert!(reply(&o, "restore tk.img paused=1", "restored domain").contains("tk from tk.img (domain, 16 MiB"));
        assert_eq!(checksum(&o, 0), checksum(&o, 1), "memory identical after save and restore");
        let ticks: Vec<u64> = output_of(&o, "console tk", 0).iter().filter_map(|l| l.strip_prefix("tick ")?.parse().ok()).collect();
        assert!(ticks.len() >= 3 && ticks[0] >= 2, "the restored ticker goes on counting: {ticks:?}");
        // The live checkpoint restores to exactly its instant.
        assert!(reply(&o, "checkpoint w w.img", "checkpointed domain").contains("to w.img (domain"));
        let w2 = output_of(&o, "console w2", 0);
        assert!(w2.iter().any(|l| l.starts_with("invariant ok")), "{w2:?}");
        assert!(w2.iter().any(|l| l.starts_with("clock ok")), "{w2:?}");
        assert!(w2.iter().any(|l| l == "Test result: SUCCESS"), "{w2:?}");
        assert!(reply(&o, "save tpl tpl.img", "saved domain").contains("(template,"));
        assert!(reply(&o, "save c0 c0.img keep=1", "checkpointed domain").contains("(delta,"));
        let stored = images(&path);
        for (name, kind) in [("tk.img", "domain"), ("w.img", "domain"), ("tpl.img", "template"), ("c0.img", "delta")] {
            assert!(stored.contains(&(name.to_string(), kind.to_string())), "{name} {kind} in {stored:?}");
        }

        // Hostile images, made on the host from a good one.
        let good = read_image(&path, "tk.img");
        let offsets = record_offsets(&good);
        assert!(offsets.len() >= 5, "{offsets:?}");
        let mut bad: Vec<(String, Vec<u8>, &str)> = Vec::new();
        for (i, &at) in offsets.iter().enumerate() {
            bad.push((format!("cut{i}.img"), good[..at].to_vec(), "image truncated at byte"));
        }
        let mut flipped_page = good.clone();
        let last_memory = offsets[offsets.len() - 2];
        flipped_page[last_memory + 100] ^= 0x04;
        bad.push(("flip-page.img".into(), flipped_page, "checksum mismatch"));
        let mut flipped_header = good.clone();
        flipped_header[12] ^= 0x01;
        bad.push(("flip-header.img".into(), flipped_header, "header checksum"));
        bad.push(("newer.img".into(), newer_version(&good), "version"));
        let mut huge = good.clone();
        huge[offsets[0] + 8..offsets[0] + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        bad.push(("huge-length.img".into(), huge, "too long"));
        bad.push(("empty.img".into(), Vec::new(), "image truncated at byte 0"));
        for (name, bytes, _) in &bad {
            put_image(&path, name, bytes);
        }
        // The host command checks images through their own records, like dom0.
        let verify = |name: &str| {
            drop(open_disk(&path));
            boot::store_cmd::main(&["verify".into(), name.into(), "--disk".into(), path.display().to_string()])
        };
        assert_eq!(verify("w.img"), 0, "a good image verifies on the host");
        assert_ne!(verify("flip-page.img"), 0, "a flipped page is found on the host");

        // The next boot: hostile images refused, the template and the delta restored.
        let mut second: Vec<String> = vec!["info".into()];
        for (name, _, _) in &bad {
            second.push(format!("restore {name}"));
        }
        second.extend(
            [
                "restore c0.img",
                "list",
                "info",
                "restore tpl.img",
                "clone tpl count=2 name=k",
                "wait k1 blocked 300",
                "console k1",
                "restore c0.img name=c0r",
                "verify w.img",
                "poweroff",
            ]
            .map(String::from),
        );
        let script: Vec<&str> = second.iter().map(String::as_str).collect();
        let o = dom0_ok(with_disk(opts.clone(), &path), &script);
        for (name, _, why) in &bad {
            let cmd = format!("restore {name}");
            let line = reply(&o, &cmd, "error: ");
            assert!(line.contains(why), "{name}: {line:?} lacks {why:?}");
        }
        assert!(reply(&o, "restore c0.img", "error:").contains("template of this delta not in memory"));
        let doms = output_of(&o, "list", 0);
        assert_eq!(doms.len(), 2, "only dom0 after the refusals: {doms:?}");
        assert_eq!(free_kib(&o, 0), free_kib(&o, 1), "refused restores leave free memory as it was");
        assert!(reply(&o, "restore tpl.img", "restored domain").contains("(template, 16 MiB"));
        assert!(output_of(&o, "console k1", 0).iter().any(|l| l.contains("shared-data ok")), "{}", o.serial);
        assert!(reply(&o, "restore c0.img name=c0r", "restored domain").contains("c0r from c0.img (delta, 16 MiB"));
        assert!(reply(&o, "verify w.img", "image w.img ok").contains("domain w of 16 MiB"));
    }
}

#[test]
fn a_machine_killed_in_the_middle_of_a_save_keeps_its_images_and_shows_no_partial_one() {
    for opts in both(1500) {
        let path = fresh_disk("kill", &opts);
        let first = [
            "create ckptwriter name=small cmdline=\"pages=256\"",
            "checkpoint small small.img",
            "create ckptwriter name=big mem=64 cmdline=\"pages=12000\"",
            "sleep 2s",
            "checkpoint big big.img",
            "poweroff",
        ];
        // The power goes when a fifth of the big image is written.
        let o = dom0(RunOptions { kill_on: Some("saving big:  20%".into()), ..with_disk(opts.clone(), &path) }, &first);
        assert_eq!(o.result, RunResult::Killed, "{}", o.serial);
        let stored = images(&path);
        assert_eq!(stored, vec![("small.img".to_string(), "domain".to_string())], "the partial image is absent");
        let o = dom0_ok(with_disk(opts.clone(), &path), &["store", "verify small.img", "restore small.img", "wait small dead 300", "console small", "poweroff"]);
        assert!(reply(&o, "verify small.img", "image small.img ok").contains("ok"));
        let store = output_of(&o, "store", 0);
        assert!(!store.iter().any(|l| l.starts_with("big")), "{store:?}");
        assert!(output_of(&o, "console small", 0).iter().any(|l| l == "Test result: SUCCESS"), "{}", o.serial);
    }
}

/// `checksum DOMAIN`'s digest of the domain's memory.
fn checksum_of(o: &boot::run::RunOutcome, domain: &str) -> String {
    let lines = output_of(o, &format!("checksum {domain}"), 0);
    let l = lines.iter().find(|l| l.contains("checksum of domain")).unwrap_or_else(|| panic!("no checksum of {domain}: {lines:?}"));
    l.split_whitespace().nth(4).unwrap().to_string()
}

/// The hex digest an error names (`digest 0123abcd...`).
fn named_digest(line: &str) -> String {
    let at = line.find("digest ").unwrap_or_else(|| panic!("no digest named in {line:?}")) + "digest ".len();
    let hex: String = line[at..].chars().take_while(char::is_ascii_hexdigit).collect();
    assert_eq!(hex.len(), 16, "{line:?}");
    hex
}

/// Copies image `name` from one machine's disk to another's through the host's `boot store`.
fn carry(from: &Path, to: &Path, name: &str, file: &Path) -> i32 {
    drop(open_disk(from));
    let got = boot::store_cmd::main(&["get".into(), name.into(), file.display().to_string(), "--disk".into(), from.display().to_string()]);
    assert_eq!(got, 0, "get {name}");
    boot::store_cmd::main(&["put".into(), file.display().to_string(), name.into(), "--disk".into(), to.display().to_string()])
}

#[test]
fn a_family_of_clones_moves_to_another_machine_as_deltas_and_shares_its_template_again() {
    for opts in both(1500) {
        // Machine A: a template, three clones of it, and a clone of another template.
        let a = fresh_disk("family-a", &opts);
        let b = fresh_disk("family-b", &opts);
        let first = [
            "create demo name=tpl cmdline=\"ws_mib=4\"",
            "wait tpl frozen 300",
            "clone tpl count=3 name=c",
            "wait c0 blocked 300",
            "wait c1 blocked 300",
            "wait c2 blocked 300",
            "create demo name=tb cmdline=\"ws_mib=2\"",
            "wait tb frozen 300",
            "clone tb name=x",
            "wait x0 blocked 300",
            "pause c0",
            "pause c1",
            "pause c2",
            "checksum c0",
            "checksum c1",
            "checksum c2",
            "save tpl tpl.img",
            "save c0 c0.img",
            "save c1 c1.img",
            "save c2 c2.img",
            "save x0 x0.img",
            "poweroff",
        ];
        let o = dom0_ok(with_disk(opts.clone(), &a), &first);
        for c in ["c0", "c1", "c2", "x0"] {
            assert!(reply(&o, &format!("save {c} {c}.img"), "saved domain").contains("(delta,"), "{}", o.serial);
        }
        let sums: Vec<String> = ["c0", "c1", "c2"].iter().map(|c| checksum_of(&o, c)).collect();

        // Carried to machine B's fresh disk with the host command; a delta stays a delta, and
        // a cut-off image is refused on the way in.
        let dir = a.with_extension("carry");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["tpl.img", "c0.img", "c1.img", "c2.img", "x0.img"] {
            assert_eq!(carry(&a, &b, name, &dir.join(name)), 0, "put {name}");
        }
        let c1 = std::fs::read(dir.join("c1.img")).unwrap();
        std::fs::write(dir.join("cut.img"), &c1[..c1.len() / 2]).unwrap();
        let put_cut = boot::store_cmd::main(&["put".into(), dir.join("cut.img").display().to_string(), "cut.img".into(), "--disk".into(), b.display().to_string()]);
        assert_ne!(put_cut, 0, "a cut-off image is refused by put");
        let stored = images(&b);
        for (name, kind) in [("tpl.img", "template"), ("c0.img", "delta"), ("c1.img", "delta"), ("x0.img", "delta")] {
            assert!(stored.contains(&(name.to_string(), kind.to_string())), "{name} {kind} in {stored:?}");
        }
        assert!(!stored.iter().any(|(n, _)| n == "cut.img"), "{stored:?}");
        std::fs::remove_dir_all(&dir).unwrap();

        // Machine B: no template yet, so no delta restores and nothing is created; then the
        // template, and the family comes back sharing its frames.
        let second = [
            "info",
            "restore c0.img",
            "restore c1.img",
            "restore x0.img",
            "list",
            "info",
            "restore tpl.img",
            "info",
            "restore c0.img paused=1",
            "restore c1.img paused=1",
            "restore c2.img paused=1",
            "info",
            "checksum c0",
            "checksum c1",
            "checksum c2",
            "stat c0",
            "stat c1",
            "stat c2",
            "restore x0.img",
            "unpause c1",
            "sleep 1s",
            "list",
            "poweroff",
        ];
        let o = dom0_ok(with_disk(opts.clone(), &b), &second);
        let e0 = reply(&o, "restore c0.img", "error:");
        assert!(e0.contains("template of this delta not in memory"), "{e0}");
        let e1 = reply(&o, "restore c1.img", "error:");
        let ex = reply(&o, "restore x0.img", "error:");
        assert_eq!(named_digest(&e0), named_digest(&e1), "clones of one template name one digest");
        assert_ne!(named_digest(&e0), named_digest(&ex), "a clone of another template names its own");
        assert_eq!(output_of(&o, "list", 0).len(), 2, "only dom0 after the refusals: {}", o.serial);
        assert_eq!(free_kib(&o, 0), free_kib(&o, 1), "refused deltas leave free memory as it was");
        assert!(reply(&o, "restore tpl.img", "restored domain").contains("(template, 16 MiB"));
        for c in ["c0", "c1", "c2"] {
            assert!(reply(&o, &format!("restore {c}.img paused=1"), "restored domain").contains("(delta, 16 MiB"), "{}", o.serial);
        }
        let after: Vec<String> = ["c0", "c1", "c2"].iter().map(|c| checksum_of(&o, c)).collect();
        assert_eq!(sums, after, "each clone's memory is what it was on machine A");
        // The three clones share the template's frames again: the template's shared KiB
        // stay as they were, each clone maps its working set from them, and the family takes
        // little memory of its own.
        let shared = |n| field(&output_of(&o, "info", n), "shared_kib").parse::<u64>().unwrap();
        assert!(shared(2) >= 4096 && shared(3) == shared(2), "shared KiB {} -> {}", shared(2), shared(3));
        let family_kib = free_kib(&o, 2) - free_kib(&o, 3);
        assert!(family_kib < 3 * 1024, "three restored deltas took {family_kib} KiB");
        for c in ["c0", "c1", "c2"] {
            let kib: u64 = field(&output_of(&o, &format!("stat {c}"), 0), "shared_kib").parse().unwrap();
            assert!(kib >= 4096, "{c} shares only {kib} KiB with its template");
        }
        // The wrong template is still refused, the family untouched, and a clone runs on.
        let again = output_of(&o, "restore x0.img", 1);
        let again = again.iter().find(|l| l.contains("error:")).unwrap_or_else(|| panic!("{again:?}"));
        assert_eq!(named_digest(again), named_digest(&ex));
        let doms = output_of(&o, "list", 1);
        assert!(doms.iter().any(|l| l.starts_with("c1 ") && !l.contains("crashed")), "{doms:?}");
    }
}

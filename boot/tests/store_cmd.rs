//! `boot store` on a disk file: put, ls, get, verify, rm, and how it refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("boot-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(disk: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boot")).arg("store").args(args).arg("--disk").arg(disk).output().unwrap()
}

fn ok(disk: &Path, args: &[&str]) -> String {
    let out = store(disk, args);
    assert_eq!(out.status.code(), Some(0), "boot store {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The single `error: ...` line of a failed command, and its exit status.
fn refused(disk: &Path, args: &[&str]) -> (i32, String) {
    let out = store(disk, args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    (out.status.code().unwrap(), err.trim_end().to_string())
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

#[test]
fn put_ls_get_and_rm_round_trip_an_image() {
    let t = TempDir::new("roundtrip");
    let disk = t.join("disk.img");
    let (web, db) = (bytes(3 * 1024 * 1024 + 123, 1), bytes(5000, 2));
    std::fs::write(t.join("web.bin"), &web).unwrap();
    std::fs::write(t.join("db.bin"), &db).unwrap();

    // put makes and formats the disk.
    let out = ok(&disk, &["put", t.join("web.bin").to_str().unwrap(), "web", "--origin", "saved from d3 web"]);
    assert!(out.contains("stored web (domain, 3145851 bytes)"), "{out}");
    assert!(disk.exists());
    ok(&disk, &["put", t.join("db.bin").to_str().unwrap(), "db.v2", "--kind", "template"]);

    let ls = ok(&disk, &["ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 4, "{ls}");
    let cols = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(cols(lines[0]), ["Name", "Kind", "Size(KiB)", "Origin"]);
    assert_eq!(cols(lines[1]), ["web", "domain", "3073", "saved", "from", "d3", "web"]);
    assert_eq!(cols(lines[2]), ["db.v2", "template", "5", "host", "file", "db.bin"]);
    assert!(lines[3].starts_with("free: ") && lines[3].ends_with(" KiB"), "{ls}");

    let got = t.join("web.out");
    let out = ok(&disk, &["get", "web", got.to_str().unwrap()]);
    assert!(out.contains("wrote 3145851 bytes of web"), "{out}");
    assert_eq!(std::fs::read(&got).unwrap(), web);
    ok(&disk, &["get", "db.v2", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), db);
    assert!(ok(&disk, &["verify", "web"]).contains("web: ok (3145851 bytes)"));

    // A name is never replaced.
    let (code, err) = refused(&disk, &["put", t.join("db.bin").to_str().unwrap(), "web"]);
    assert_eq!((code, err.as_str()), (1, "error: name taken: web"));

    assert_eq!(ok(&disk, &["rm", "web"]), "removed web\n");
    let (code, err) = refused(&disk, &["rm", "web"]);
    assert_eq!((code, err.as_str()), (1, "error: no such image: web"));
    let (code, _) = refused(&disk, &["get", "web", got.to_str().unwrap()]);
    assert_eq!(code, 1);
    let ls = ok(&disk, &["ls"]);
    assert_eq!(ls.lines().count(), 3, "{ls}");
    assert!(!ls.contains("web"), "{ls}");
}

#[test]
fn ls_says_when_there_is_no_disk_or_it_is_blank() {
    let t = TempDir::new("ls");
    let disk = t.join("missing.img");
    let (code, err) = refused(&disk, &["ls"]);
    assert_eq!(code, 1);
    assert!(err.contains("no disk at") && err.contains("missing.img"), "{err}");
    assert!(!disk.exists(), "ls never makes a disk");

    let blank = t.join("blank.img");
    std::fs::File::create(&blank).unwrap().set_len(16 << 20).unwrap();
    let out = ok(&blank, &["ls"]);
    assert!(out.contains("is blank"), "{out}");
    assert_eq!(std::fs::read(&blank).unwrap().iter().filter(|&&b| b != 0).count(), 0, "ls wrote nothing");

    let other = t.join("other.img");
    let mut junk = vec![0u8; 16 << 20];
    junk[510] = 0x55;
    junk[511] = 0xAA;
    std::fs::write(&other, &junk).unwrap();
    let (code, err) = refused(&other, &["ls"]);
    assert_eq!(code, 1);
    assert!(err.contains("no store on this disk"), "{err}");
    let (code, _) = refused(&other, &["put", other.to_str().unwrap(), "x"]);
    assert_eq!(code, 1, "put never formats a disk that holds something");
    assert_eq!(std::fs::read(&other).unwrap(), junk);
}

#[test]
fn an_image_too_large_for_the_disk_is_refused_and_nothing_is_stored() {
    let t = TempDir::new("full");
    let disk = t.join("small.img");
    std::fs::File::create(&disk).unwrap().set_len(8 << 20).unwrap();
    std::fs::write(t.join("big.bin"), bytes(9 << 20, 3)).unwrap();
    let (code, err) = refused(&disk, &["put", t.join("big.bin").to_str().unwrap(), "big"]);
    assert_eq!(code, 1);
    assert!(err.contains("image larger than the store: big"), "{err}");
    std::fs::write(t.join("half.bin"), bytes(5 << 20, 4)).unwrap();
    ok(&disk, &["put", t.join("half.bin").to_str().unwrap(), "half"]);
    let (_, err) = refused(&disk, &["put", t.join("half.bin").to_str().unwrap(), "again"]);
    assert!(err.contains("store full: again (the largest free space holds"), "{err}");
    let ls = ok(&disk, &["ls"]);
    assert_eq!(ls.lines().count(), 3, "{ls}");
}

#[test]
fn a_disk_in_use_is_refused() {
    let t = TempDir::new("busy");
    let disk = t.join("disk.img");
    std::fs::write(t.join("a.bin"), b"abc").unwrap();
    ok(&disk, &["put", t.join("a.bin").to_str().unwrap(), "a"]);
    let held = boot::store_cmd::lock_disk(&disk).unwrap();
    let (code, err) = refused(&disk, &["rm", "a"]);
    assert_eq!(code, 1);
    assert!(err.contains("in use"), "{err}");
    drop(held);
    ok(&disk, &["rm", "a"]);
}

#[test]
fn bad_arguments_exit_64_with_one_line() {
    let t = TempDir::new("args");
    let disk = t.join("disk.img");
    for args in [
        &["frob"][..],
        &["ls", "extra"],
        &["get", "only-one"],
        &["put", "f", "img", "--kind", "weird"],
        &["rm", "a", "--origin", "x"],
        &["ls", "--frobnicate"],
    ] {
        let (code, _) = refused(&disk, args);
        assert_eq!(code, 64, "{args:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_boot")).args(["store", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: boot store"));
    // A bad image name is refused before any disk is made.
    let (code, err) = refused(&disk, &["put", "/etc/hostname", ".hidden"]);
    assert_eq!(code, 1);
    assert!(err.contains("bad name"), "{err}");
    assert!(!disk.exists());
}

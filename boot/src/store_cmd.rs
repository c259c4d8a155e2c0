//! `boot store ls|get|put|rm|verify [--disk PATH]`: dom0's image store, from the host, on the
//! disk file `boot run` attaches (`target/store.img` by default), and that file itself.

use crate::emulator::CYLINDER_BYTES;
use crate::workspace_root;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use store::{BlockDevice, DeviceError, ImageChecksum, ImageKind, SECTOR_BYTES, Store, StoreError};

/// Size of a disk file the runner or `boot store put` makes: 2 GiB rounded down to whole
/// cylinders of 16 heads x 63 sectors (Bochs derives a flat image's geometry from its size).
pub const DEFAULT_DISK_BYTES: u64 = (2 << 30) / CYLINDER_BYTES * CYLINDER_BYTES;
/// The smallest disk file the runner attaches.
pub const MIN_DISK_BYTES: u64 = 8 << 20;

/// The disk file used when none is named: `target/store.img` in the workspace.
pub fn default_disk_path() -> PathBuf {
    workspace_root().join("target").join("store.img")
}

/// Makes `path` a blank sparse disk file of [`DEFAULT_DISK_BYTES`] unless it exists; `true`
/// if it made it. The file appears whole or not at all, so concurrent runs never see a
/// half-made one.
pub fn create_disk(path: &Path) -> io::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    File::create_new(&tmp)?.set_len(DEFAULT_DISK_BYTES)?;
    // A hard link, unlike a rename, never replaces a file another process made meanwhile.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why a disk file's size is unusable, if it is.
pub fn disk_size_problem(len: u64) -> Option<String> {
    if len % SECTOR_BYTES as u64 != 0 {
        Some(format!("its size, {len} bytes, is not a whole number of 512-byte sectors"))
    } else if len < MIN_DISK_BYTES {
        Some(format!("it holds {len} bytes, less than the 8 MiB a data disk needs"))
    } else {
        None
    }
}

/// Why a disk file could not be opened.
#[derive(Debug)]
pub enum DiskOpenError {
    /// There is no such file.
    Missing,
    /// Another process (a running machine, another `boot store`) holds it.
    InUse,
    /// Opening or locking it failed.
    Io(io::Error),
}

impl fmt::Display for DiskOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no such file"),
            Self::InUse => f.write_str("in use by a running machine or another boot store"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Opens the disk file `path` for reading and writing with an exclusive lock (`flock`), held
/// until the file is closed: the runner holds it while the emulator runs, `boot store` while
/// it works, so neither writes under the other.
pub fn lock_disk(path: &Path) -> Result<File, DiskOpenError> {
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DiskOpenError::Missing,
        _ => DiskOpenError::Io(e),
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DiskOpenError::InUse),
        Err(std::fs::TryLockError::Error(e)) => Err(DiskOpenError::Io(e)),
    }
}

/// A disk file as a [`BlockDevice`]: its whole length, in sectors (what QEMU shows the guest).
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    sectors: u64,
}

impl FileDisk {
    /// Opens and locks the disk file `path` (see [`lock_disk`]).
    pub fn open(path: &Path) -> Result<Self, DiskOpenError> {
        let file = lock_disk(path)?;
        let len = file.metadata().map_err(DiskOpenError::Io)?.len();
        Ok(Self { file, sectors: len / SECTOR_BYTES as u64 })
    }
}

impl BlockDevice for FileDisk {
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let r = store::transfer_range(self.sectors, lba, buf.len())?;
        self.file.read_exact_at(buf, r.start as u64).map_err(|_| DeviceError::Io { lba })
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        let r = store::transfer_range(self.sectors, lba, buf.len())?;
        self.file.write_all_at(buf, r.start as u64).map_err(|_| DeviceError::Io { lba })
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.file.sync_data().map_err(|_| DeviceError::Io { lba: 0 })
    }
}

const USAGE: &str = "\
usage: boot store COMMAND [--disk PATH]

The image store on dom0's data disk (the file `boot run` attaches; default target/store.img).

commands:
  ls                      list the images: Name Kind Size(KiB) Origin, then the free space
  get IMAGE FILE          copy image IMAGE out to FILE (checked against its checksum)
  put FILE IMAGE [--kind domain|template|delta] [--origin TEXT]
                          store FILE as a new image IMAGE; a domain image is checked
                          first and keeps its own kind (otherwise: domain); makes and
                          formats the disk file if there is none
  rm IMAGE                remove image IMAGE
  verify IMAGE            re-read image IMAGE and check its checksum (and a domain
                          image's every record checksum and its digest)

exit status: 0 done, 1 the store or a file refused or failed, 64 bad arguments";

/// Bytes copied per step by `get` and `put`.
const CHUNK: usize = 1 << 20;

/// A failed command: its message and exit status.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

fn usage(m: impl Into<String>) -> Failure {
    Failure { code: 64, message: m.into() }
}

fn failed(m: impl Into<String>) -> Failure {
    Failure { code: 1, message: m.into() }
}

/// Runs `boot store ARGS` (the arguments after `store`), printing to stdout, and returns the
/// exit status; errors are one `error: ...` line on stderr.
pub fn main(args: &[String]) -> i32 {
    let mut out = io::stdout().lock();
    match run(args, &mut out) {
        Ok(()) => 0,
        Err(f) => {
            let _ = out.flush();
            if f.code == 64 && f.message == USAGE {
                eprintln!("{USAGE}");
            } else {
                eprintln!("error: {}", f.message);
            }
            f.code
        }
    }
}

struct Args {
    command: String,
    operands: Vec<String>,
    disk: PathBuf,
    kind: Option<ImageKind>,
    origin: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, Failure> {
    let mut disk = None;
    let mut kind = None;
    let mut origin = None;
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| usage(format!("{name} needs a value")));
        match arg.as_str() {
            "--disk" => disk = Some(PathBuf::from(value("--disk")?)),
            "--kind" => {
                let v = value("--kind")?;
                kind = Some(
                    ImageKind::parse(&v).ok_or_else(|| usage(format!("unknown kind {v:?} (domain|template|delta)")))?,
                );
            }
            "--origin" => origin = Some(value("--origin")?),
            "-h" | "--help" | "help" => return Err(usage(USAGE)),
            a if a.starts_with("--") => return Err(usage(format!("unknown option {a:?} (see boot store --help)"))),
            _ => words.push(arg.clone()),
        }
    }
    let Some((command, operands)) = words.split_first() else { return Err(usage(USAGE)) };
    let want = match command.as_str() {
        "ls" => 0,
        "get" | "put" => 2,
        "rm" | "verify" => 1,
        c => return Err(usage(format!("unknown store command {c:?} (ls|get|put|rm|verify)"))),
    };
    if operands.len() != want {
        return Err(usage(format!(
            "boot store {command} takes {want} operand(s), got {} (see boot store --help)",
            operands.len()
        )));
    }
    if command != "put" && (kind.is_some() || origin.is_some()) {
        return Err(usage("--kind and --origin go with put"));
    }
    if origin.as_ref().is_some_and(|o| o.len() > store::MAX_ORIGIN_BYTES) {
        return Err(usage(format!("--origin takes at most {} bytes", store::MAX_ORIGIN_BYTES)));
    }
    Ok(Args {
        command: command.clone(),
        operands: operands.to_vec(),
        disk: disk.unwrap_or_else(default_disk_path),
        kind,
        origin,
    })
}

fn open_disk(path: &Path) -> Result<FileDisk, Failure> {
    FileDisk::open(path).map_err(|e| match e {
        DiskOpenError::Missing => {
            failed(format!("no disk at {} (boot run or boot store put makes it)", path.display()))
        }
        e => failed(format!("disk {}: {e}", path.display())),
    })
}

fn open_store(path: &Path) -> Result<Store<FileDisk>, Failure> {
    Store::open(open_disk(path)?).map_err(|e| failed(format!("{}: {e}", path.display())))
}

fn run(args: &[String], out: &mut dyn Write) -> Result<(), Failure> {
    let a = parse(args)?;
    let write_err = |e: io::Error| failed(format!("writing the output: {e}"));
    match a.command.as_str() {
        "ls" => ls(&a.disk, out),
        "get" => {
            let (image, file) = (&a.operands[0], Path::new(&a.operands[1]));
            let mut s = open_store(&a.disk)?;
            let n = get(&mut s, image, file)?;
            writeln!(out, "wrote {n} bytes of {image} to {}", file.display()).map_err(write_err)
        }
        "put" => {
            let (file, image) = (Path::new(&a.operands[0]), &a.operands[1]);
            if !store::is_valid_name(image) {
                return Err(failed(format!("{}: {image:?}", StoreError::BadName)));
            }
            let mut input = File::open(file).map_err(|e| failed(format!("cannot read {}: {e}", file.display())))?;
            // A domain image is checked through its records before it is stored, and keeps
            // its own kind (a delta carried to another machine stays a delta).
            let image_kind = domain_image_kind(&mut input).map_err(|e| failed(format!("bad image: {e}: {}", file.display())))?;
            if let (Some(k), Some(given)) = (image_kind, a.kind)
                && k != given
            {
                return Err(failed(format!("{} is a {k} image, not a {given} one", file.display())));
            }
            create_disk(&a.disk).map_err(|e| failed(format!("cannot make the disk {}: {e}", a.disk.display())))?;
            let mut s =
                Store::open_or_format(open_disk(&a.disk)?).map_err(|e| failed(format!("{}: {e}", a.disk.display())))?;
            let kind = a.kind.or(image_kind).unwrap_or(ImageKind::Domain);
            let origin = a.origin.unwrap_or_else(|| default_origin(file));
            let e = put(&mut s, &mut input, file, image, kind, &origin)?;
            writeln!(out, "stored {} ({}, {} bytes)", e.name, e.kind, e.size_bytes).map_err(write_err)
        }
        "rm" => {
            let image = &a.operands[0];
            let mut s = open_store(&a.disk)?;
            s.remove(image).map_err(|e| failed(format!("{e}: {image}")))?;
            writeln!(out, "removed {image}").map_err(write_err)
        }
        "verify" => {
            let image = &a.operands[0];
            let mut s = open_store(&a.disk)?;
            s.verify(image).map_err(|e| failed(format!("{e}: {image}")))?;
            let size = s.find(image).map_or(0, |e| e.size_bytes);
            // A domain image is checked through its own records and digest too (for one dom0
            // wrote, whose bytes the store keeps no checksum of, that is the only check).
            let mut magic = [0u8; 8];
            let is_image = s.read_at(image, 0, &mut magic).is_ok_and(|n| n == 8 && magic == domimage::MAGIC);
            if is_image || s.find(image).is_some_and(|e| e.self_checked) {
                check_image(StoreReader { store: &mut s, image, offset: 0 }).map_err(|e| failed(format!("bad image: {e}: {image}")))?;
            }
            writeln!(out, "{image}: ok ({size} bytes)").map_err(write_err)
        }
        _ => unreachable!("parse accepts only known commands"),
    }
}

/// The store kind of `file` if it is a domain image (its every record checked, see
/// [`check_image`]), `None` for other bytes; the file is left at its start.
fn domain_image_kind(file: &mut File) -> Result<Option<ImageKind>, String> {
    let mut magic = [0u8; 8];
    let n = file.read(&mut magic).map_err(|e| e.to_string())?;
    file.seek(io::SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    if n != 8 || magic != domimage::MAGIC {
        return Ok(None);
    }
    let kind = check_image(io::BufReader::new(&mut *file))?;
    file.seek(io::SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(Some(match kind {
        domimage::ImageKind::Domain => ImageKind::Domain,
        domimage::ImageKind::Template => ImageKind::Template,
        domimage::ImageKind::Delta => ImageKind::Delta,
    }))
}

/// A domain image's bytes, read through `domimage` (every record's checksum, the counts and
/// the digest), for images the store kept no checksum of; its kind.
fn check_image<R: std::io::Read>(reader: R) -> Result<domimage::ImageKind, String> {
    struct Src<R>(R);
    impl<R: std::io::Read> domimage::Source for Src<R> {
        type Error = String;
        fn take(&mut self, buf: &mut [u8]) -> Result<usize, String> {
            self.0.read(buf).map_err(|e| e.to_string())
        }
    }
    let limits = domimage::Limits { max_mem_bytes: u64::MAX };
    let (mut dec, pro) = domimage::Decoder::new(Src(reader), limits).map_err(|e| e.to_string())?;
    let mut pages = vec![0u8; domimage::MAX_RUN_PAGES * domimage::PAGE_BYTES];
    while dec.next_run(&mut pages).map_err(|e| e.to_string())?.is_some() {}
    Ok(pro.kind)
}

/// An image in the store as a byte stream.
struct StoreReader<'a> {
    store: &'a mut Store<FileDisk>,
    image: &'a str,
    offset: u64,
}

impl std::io::Read for StoreReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.store.read_at(self.image, self.offset, buf).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// `host file NAME`, cut to what an origin may hold.
fn default_origin(file: &Path) -> String {
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut origin = format!("host file {name}");
    while origin.len() > store::MAX_ORIGIN_BYTES {
        origin.pop();
    }
    origin
}

fn ls(disk: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let write_err = |e: io::Error| failed(format!("writing the output: {e}"));
    let mut dev = open_disk(disk)?;
    let mut first = [0u8; SECTOR_BYTES];
    let blank = dev.read(0, &mut first).is_ok() && first.iter().all(|&b| b == 0);
    let s = match Store::open(dev) {
        Ok(s) => s,
        Err(StoreError::NotFormatted) if blank => {
            return writeln!(out, "no images: {} is blank (the store is made on first use)", disk.display())
                .map_err(write_err);
        }
        Err(e) => return Err(failed(format!("{}: {e}", disk.display()))),
    };
    writeln!(out, "{:<24} {:<8} {:>10} Origin", "Name", "Kind", "Size(KiB)").map_err(write_err)?;
    for e in s.list() {
        writeln!(out, "{:<24} {:<8} {:>10} {}", e.name, e.kind, e.size_bytes.div_ceil(1024), e.origin)
            .map_err(write_err)?;
    }
    writeln!(out, "free: {} KiB of {} KiB", s.free_bytes() / 1024, s.capacity_bytes() / 1024).map_err(write_err)
}

/// Copies image `image` to `file` through a temporary file beside it, renamed into place only
/// once every byte matched the image's checksum.
fn get(s: &mut Store<FileDisk>, image: &str, file: &Path) -> Result<u64, Failure> {
    let entry = s.find(image).cloned().ok_or_else(|| failed(format!("{}: {image}", StoreError::NoSuchImage)))?;
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(format!(".part-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
        let mut buf = vec![0u8; CHUNK];
        let mut sum = ImageChecksum::new();
        let mut offset = 0;
        while offset < entry.size_bytes {
            let n = s.read_at(image, offset, &mut buf).map_err(|e| failed(format!("{e}: {image}")))?;
            sum.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
            offset += n as u64;
        }
        if entry.self_checked {
            f.sync_all().map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
            let copy = File::open(&tmp).map_err(|e| failed(format!("cannot read {}: {e}", tmp.display())))?;
            check_image(copy).map_err(|e| failed(format!("bad image: {e}: {image}")))?;
        } else if sum.value() != entry.checksum {
            return Err(failed(format!("{}: {image}", StoreError::Corrupt(store::CorruptWhat::Image))));
        }
        f.sync_all().map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, file).map_err(|e| failed(format!("cannot write {}: {e}", file.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| entry.size_bytes)
}

fn put(
    s: &mut Store<FileDisk>,
    input: &mut File,
    file: &Path,
    image: &str,
    kind: ImageKind,
    origin: &str,
) -> Result<store::Entry, Failure> {
    let mut w = s.begin(image, kind, origin).map_err(|e| failed(format!("{e}: {image}")))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                s.abort(w);
                return Err(failed(format!("cannot read {}: {e}", file.display())));
            }
        };
        if let Err(e) = s.write(&mut w, &buf[..n]) {
            s.abort(w);
            let room = match e {
                StoreError::Full => format!(" (the largest free space holds {} KiB)", s.largest_free_bytes() / 1024),
                _ => String::new(),
            };
            return Err(failed(format!("{e}: {image}{room}")));
        }
    }
    s.commit(w).map_err(|e| failed(format!("{e}: {image}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_disk_is_two_gib_of_whole_cylinders() {
        assert_eq!(DEFAULT_DISK_BYTES % CYLINDER_BYTES, 0);
        assert!(DEFAULT_DISK_BYTES <= 2 << 30 && DEFAULT_DISK_BYTES > (2 << 30) - CYLINDER_BYTES);
        assert_eq!(DEFAULT_DISK_BYTES / CYLINDER_BYTES, 4161);
    }

    #[test]
    fn disk_sizes_must_be_whole_sectors_and_at_least_8_mib() {
        assert!(disk_size_problem(8 << 20).is_none());
        assert!(disk_size_problem(DEFAULT_DISK_BYTES).is_none());
        assert!(disk_size_problem((8 << 20) + 1).unwrap().contains("512-byte sectors"));
        assert!(disk_size_problem((8 << 20) - 512).unwrap().contains("8 MiB"));
    }

    #[test]
    fn a_made_disk_is_sparse_blank_and_never_replaces_one() {
        let dir = std::env::temp_dir().join(format!("store-cmd-unit-{}", std::process::id()));
        let path = dir.join("sub").join("d.img");
        assert!(create_disk(&path).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), DEFAULT_DISK_BYTES);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20, "sparse: {} blocks", meta.blocks());
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"x", 0).unwrap();
        assert!(!create_disk(&path).unwrap());
        let mut b = [0u8; 1];
        File::open(&path).unwrap().read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"x", "an existing disk is kept");
        // One holder at a time.
        let held = lock_disk(&path).unwrap();
        assert!(matches!(lock_disk(&path), Err(DiskOpenError::InUse)));
        drop(held);
        lock_disk(&path).unwrap();
        assert!(matches!(lock_disk(&dir.join("none")), Err(DiskOpenError::Missing)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn origins_default_to_the_file_name_within_64_bytes() {
        assert_eq!(default_origin(Path::new("/x/web.img")), "host file web.img");
        let long = default_origin(Path::new(&"é".repeat(40)));
        assert!(long.len() <= 64 && long.starts_with("host file é"));
    }
}

//! The store against an in-memory disk that can fail, lose power, and drop or reorder what
//! sat in its write cache.

use store::{
    BlockDevice, CorruptWhat, DeviceError, Entry, ImageKind, MemDevice, SECTOR_BYTES, Store,
    StoreError,
};

/// Where the two directory slots start (format version 1, see `docs/store.md`).
const SLOT_LBA: [u64; 2] = [1, 130];

/// Which unflushed writes reach the media when power is lost.
#[derive(Clone, Copy, Debug)]
enum Keep {
    None,
    All,
    /// All but the one at this index in the cache.
    AllBut(usize),
    /// A pseudo-random subset.
    Random(u64),
}

/// A disk with an optional volatile write cache that can lose power or fail one operation.
#[derive(Clone)]
struct Disk {
    /// What survives a power loss.
    media: Vec<u8>,
    /// Writes not flushed yet (sector, contents), oldest first; only with `write_cache`.
    cache: Vec<(u64, [u8; SECTOR_BYTES])>,
    write_cache: bool,
    /// Sector writes and flushes that still succeed before power is lost.
    writes_left: Option<u64>,
    /// The device operation (read, write or flush, counted from 0) that fails, once.
    fail_op: Option<u64>,
    ops: u64,
    sector_writes: u64,
    dead: bool,
}

impl Disk {
    fn new(sectors: u64) -> Self {
        Self {
            media: vec![0; sectors as usize * SECTOR_BYTES],
            cache: Vec::new(),
            write_cache: false,
            writes_left: None,
            fail_op: None,
            ops: 0,
            sector_writes: 0,
            dead: false,
        }
    }

    /// Power comes back: the media keeps what was flushed plus what `keep` says of the
    /// writes still in the cache.
    fn power_cycle(&mut self, keep: Keep) {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for (i, (lba, data)) in std::mem::take(&mut self.cache).into_iter().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let kept = match keep {
                Keep::None => false,
                Keep::All => true,
                Keep::AllBut(j) => i != j,
                Keep::Random(seed) => (x ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D)) >> 63 == 1,
            };
            if kept {
                let at = lba as usize * SECTOR_BYTES;
                self.media[at..at + SECTOR_BYTES].copy_from_slice(&data);
            }
        }
        self.dead = false;
        self.writes_left = None;
        self.fail_op = None;
    }

    fn op(&mut self, lba: u64) -> Result<(), DeviceError> {
        let n = self.ops;
        self.ops += 1;
        if self.dead {
            return Err(DeviceError::NoDevice);
        }
        if self.fail_op == Some(n) {
            return Err(DeviceError::Io { lba });
        }
        Ok(())
    }
}

impl BlockDevice for Disk {
    fn sectors(&self) -> u64 {
        (self.media.len() / SECTOR_BYTES) as u64
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.op(lba)?;
        let r = store::transfer_range(self.sectors(), lba, buf.len())?;
        buf.copy_from_slice(&self.media[r]);
        for (l, data) in &self.cache {
            if (lba..lba + (buf.len() / SECTOR_BYTES) as u64).contains(l) {
                let at = (l - lba) as usize * SECTOR_BYTES;
                buf[at..at + SECTOR_BYTES].copy_from_slice(data);
            }
        }
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.op(lba)?;
        store::transfer_range(self.sectors(), lba, buf.len())?;
        for (i, chunk) in buf.chunks_exact(SECTOR_BYTES).enumerate() {
            let l = lba + i as u64;
            if let Some(left) = self.writes_left.as_mut() {
                if *left == 0 {
                    self.dead = true;
                    return Err(DeviceError::Io { lba: l });
                }
                *left -= 1;
            }
            self.sector_writes += 1;
            if self.write_cache {
                self.cache.push((l, chunk.try_into().unwrap()));
            } else {
                let at = l as usize * SECTOR_BYTES;
                self.media[at..at + SECTOR_BYTES].copy_from_slice(chunk);
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.op(0)?;
        if let Some(left) = self.writes_left.as_mut() {
            if *left == 0 {
                self.dead = true;
                return Err(DeviceError::Timeout);
            }
            *left -= 1;
        }
        for (l, data) in std::mem::take(&mut self.cache) {
            let at = l as usize * SECTOR_BYTES;
            self.media[at..at + SECTOR_BYTES].copy_from_slice(&data);
        }
        Ok(())
    }
}

/// Bytes that differ from image to image and from offset to offset.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(0x2545_F491_4F6C_DD1D)
        .wrapping_add(0x1234_5678)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes an image in uneven chunks (so partial sectors are buffered and completed).
fn try_put<D: BlockDevice>(s: &mut Store<D>, name: &str, data: &[u8]) -> Result<Entry, StoreError> {
    let mut w = s.begin(name, ImageKind::Domain, "test")?;
    for chunk in data.chunks(700) {
        if let Err(e) = s.write(&mut w, chunk) {
            s.abort(w);
            return Err(e);
        }
    }
    s.commit(w)
}

fn put<D: BlockDevice>(s: &mut Store<D>, name: &str, data: &[u8]) -> Entry {
    try_put(s, name, data).unwrap_or_else(|e| panic!("put {name}: {e}"))
}

fn read_all<D: BlockDevice>(s: &mut Store<D>, name: &str) -> Vec<u8> {
    let size = s.find(name).unwrap().size_bytes as usize;
    let mut buf = vec![0xEE; size + 100];
    let n = s.read_at(name, 0, &mut buf).unwrap();
    assert_eq!(n, size, "{name}: short read");
    buf.truncate(n);
    buf
}

/// The store holds exactly `images`, each intact and verifying.
fn assert_holds<D: BlockDevice>(s: &mut Store<D>, images: &[(&str, &[u8])]) {
    let mut names: Vec<&str> = s.list().iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = images.iter().map(|(n, _)| *n).collect();
    want.sort_unstable();
    assert_eq!(names, want);
    for (name, data) in images {
        assert_eq!(read_all(s, name), *data, "{name} damaged");
        s.verify(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn committed_images_are_listed_and_read_back() {
    let mut s = Store::format(MemDevice::new(2048)).unwrap();
    let sizes = [0usize, 1, 511, 512, 513, 4096, 100_000];
    let images: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .map(|&n| (format!("img-{n}"), pattern(n as u64, n)))
        .collect();
    for (name, data) in &images {
        let e = put(&mut s, name, data);
        assert_eq!(
            (e.name.as_str(), e.size_bytes, e.kind),
            (name.as_str(), data.len() as u64, ImageKind::Domain)
        );
        assert_eq!(e.first_lba % 8, 0, "images start 4 KiB-aligned");
    }
    let view: Vec<(&str, &[u8])> = images
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    assert_holds(&mut s, &view);
    assert_eq!(
        s.list().iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (0..sizes.len() as u64).collect::<Vec<_>>()
    );

    // Reads at any offset, short at the end.
    let big = &images[6].1;
    let mut buf = [0u8; 1000];
    for offset in [0u64, 1, 511, 512, 513, 99_000, 99_999] {
        let n = s.read_at("img-100000", offset, &mut buf).unwrap();
        let want = &big[offset as usize..(offset as usize + 1000).min(big.len())];
        assert_eq!(&buf[..n], want, "offset {offset}");
    }
    assert_eq!(s.read_at("img-100000", 100_000, &mut buf), Ok(0));
    assert_eq!(s.read_at("img-100000", u64::MAX, &mut buf), Ok(0));
    assert_eq!(s.read_at("nope", 0, &mut buf), Err(StoreError::NoSuchImage));

    // The same after reopening.
    let mut s = Store::open(s.into_device()).unwrap();
    assert_holds(&mut s, &view);
}

#[test]
fn kind_origin_and_sequence_survive_reopening_and_sequences_are_never_reused() {
    let mut s = Store::format(MemDevice::new(1024)).unwrap();
    for (name, kind, origin) in [
        ("a", ImageKind::Template, "saved from d3 web"),
        ("b", ImageKind::Delta, "checkpoint of d2 — µ"),
    ] {
        let w = s.begin(name, kind, origin).unwrap();
        s.commit(w).unwrap();
    }
    s.remove("b").unwrap();
    let w = s.begin("c", ImageKind::Domain, "").unwrap();
    assert_eq!(
        s.commit(w).unwrap().sequence,
        2,
        "b's sequence is not reused"
    );
    let mut s = Store::open(s.into_device()).unwrap();
    let got: Vec<(&str, ImageKind, &str, u64)> = s
        .list()
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.origin.as_str(), e.sequence))
        .collect();
    assert_eq!(
        got,
        [
            ("a", ImageKind::Template, "saved from d3 web", 0),
            ("c", ImageKind::Domain, "", 2)
        ]
    );
    s.remove("c").unwrap();
    let mut s = Store::open(s.into_device()).unwrap();
    assert_eq!(
        put(&mut s, "d", b"x").sequence,
        3,
        "the next sequence is kept on disk"
    );
    assert_eq!(ImageKind::Template.to_string(), "template");
    assert_eq!(ImageKind::parse("delta"), Some(ImageKind::Delta));
    assert_eq!(ImageKind::ALL.map(ImageKind::code), [1, 2, 3, 4]);
}

#[test]
fn removing_an_image_frees_its_space_for_reuse() {
    // A data area of 64 sectors (32 KiB).
    let mut s = Store::format(MemDevice::new(264 + 64)).unwrap();
    assert_eq!(s.capacity_bytes(), 32 * 1024);
    assert_eq!(s.free_bytes(), 32 * 1024);
    let a = pattern(1, 20 * 1024);
    put(&mut s, "a", &a);
    assert_eq!(s.free_bytes(), 12 * 1024);
    assert_eq!(
        try_put(&mut s, "b", &pattern(2, 20 * 1024)),
        Err(StoreError::Full)
    );
    s.remove("a").unwrap();
    assert_eq!(s.remove("a"), Err(StoreError::NoSuchImage));
    assert_eq!(s.free_bytes(), 32 * 1024);
    let b = pattern(2, 30 * 1024);
    put(&mut s, "b", &b);
    let mut s = Store::open(s.into_device()).unwrap();
    assert_holds(&mut s, &[("b", &b)]);
}

#[test]
fn running_out_of_space_mid_write_publishes_nothing() {
    // 64 data sectors; `a` takes 16, the free gap after it is 48 (24 KiB).
    let mut s = Store::format(MemDevice::new(264 + 64)).unwrap();
    let a = pattern(1, 8 * 1024);
    put(&mut s, "a", &a);
    let before = s.list().to_vec();
    let mut w = s.begin("big", ImageKind::Domain, "").unwrap();
    assert_eq!(w.room_bytes(), 24 * 1024);
    s.write(&mut w, &pattern(3, 20 * 1024)).unwrap();
    assert_eq!(
        s.write(&mut w, &pattern(4, 8 * 1024)),
        Err(StoreError::Full)
    );
    assert_eq!(
        w.bytes_written(),
        20 * 1024,
        "the write that did not fit wrote nothing"
    );
    assert_eq!(
        s.write(&mut w, b"x"),
        Err(StoreError::Full),
        "a failed writer accepts nothing more"
    );
    assert_eq!(s.commit(w), Err(StoreError::Full));
    assert_eq!(s.list(), &before[..]);
    // Its space is free again.
    let c = pattern(5, 24 * 1024);
    put(&mut s, "c", &c);
    assert_eq!(s.free_bytes(), 0);
    // An image larger than the whole store is told apart from one that does not fit now.
    s.remove("c").unwrap();
    let mut w = s.begin("huge", ImageKind::Domain, "").unwrap();
    assert_eq!(
        s.write(&mut w, &vec![0; 33 * 1024]),
        Err(StoreError::TooLarge)
    );
    s.abort(w);
    put(&mut s, "c", &c);
    let mut s = Store::open(s.into_device()).unwrap();
    assert_holds(&mut s, &[("a", &a), ("c", &c)]);
}

#[test]
fn an_aborted_image_is_never_published_and_its_space_is_reused() {
    let mut s = Store::format(MemDevice::new(264 + 64)).unwrap();
    let mut w = s.begin("tmp", ImageKind::Domain, "").unwrap();
    s.write(&mut w, &pattern(1, 30 * 1024)).unwrap();
    assert_eq!(
        s.begin("tmp", ImageKind::Domain, "").unwrap_err(),
        StoreError::NameTaken,
        "a name being written is taken"
    );
    s.abort(w);
    assert!(s.list().is_empty());
    let b = pattern(2, 32 * 1024);
    put(&mut s, "tmp", &b);
    let mut s = Store::open(s.into_device()).unwrap();
    assert_holds(&mut s, &[("tmp", &b)]);
}

#[test]
fn writers_at_the_same_time_get_separate_extents() {
    let mut s = Store::format(MemDevice::new(2048)).unwrap();
    put(&mut s, "first", &pattern(9, 5000));
    let keep = pattern(10, 1000);
    put(&mut s, "keep", &keep);
    s.remove("first").unwrap(); // leaves a gap of 16 sectors at the start, and the tail
    let mut w1 = s.begin("one", ImageKind::Domain, "").unwrap();
    let mut w2 = s.begin("two", ImageKind::Domain, "").unwrap();
    let (d1, d2) = (pattern(1, 3000), pattern(2, 3000));
    for (c1, c2) in d1.chunks(333).zip(d2.chunks(333)) {
        s.write(&mut w1, c1).unwrap();
        s.write(&mut w2, c2).unwrap();
    }
    let e2 = s.commit(w2).unwrap();
    let e1 = s.commit(w1).unwrap();
    assert!(
        e1.end_lba() <= e2.first_lba || e2.end_lba() <= e1.first_lba,
        "{e1:?} {e2:?}"
    );
    assert_eq!(e2.first_lba, 264, "the second writer got the smaller gap");
    assert_holds(&mut s, &[("keep", &keep), ("one", &d1), ("two", &d2)]);
}

#[test]
fn bad_names_and_origins_are_refused() {
    let mut s = Store::format(MemDevice::new(1024)).unwrap();
    let long = "x".repeat(65);
    for bad in [
        "",
        ".hidden",
        "-flag",
        "a b",
        "a/b",
        "ä",
        "a\0",
        long.as_str(),
    ] {
        assert_eq!(
            s.begin(bad, ImageKind::Domain, "").unwrap_err(),
            StoreError::BadName,
            "{bad:?}"
        );
    }
    for good in ["a", "A.9_z-", "web.v2", "0", &"y".repeat(64)] {
        let w = s.begin(good, ImageKind::Domain, "").unwrap();
        s.commit(w).unwrap();
    }
    assert_eq!(
        s.begin("a", ImageKind::Domain, "").unwrap_err(),
        StoreError::NameTaken
    );
    assert_eq!(
        s.begin("o", ImageKind::Domain, &"o".repeat(65))
            .unwrap_err(),
        StoreError::BadOrigin
    );
    // 64 bytes of UTF-8 is fine.
    let w = s.begin("o", ImageKind::Domain, &"é".repeat(32)).unwrap();
    s.commit(w).unwrap();
    assert_eq!(StoreError::Full.to_string(), "store full");
    assert_eq!(StoreError::NoSuchImage.to_string(), "no such image");
}

#[test]
fn the_directory_holds_at_most_256_images() {
    let mut s = Store::format(MemDevice::new(1024)).unwrap();
    for i in 0..255 {
        let w = s.begin(&format!("i{i}"), ImageKind::Domain, "").unwrap();
        s.commit(w).unwrap();
    }
    let w = s.begin("last", ImageKind::Domain, "").unwrap();
    assert_eq!(
        s.begin("one-too-many", ImageKind::Domain, "").unwrap_err(),
        StoreError::DirectoryFull
    );
    s.commit(w).unwrap();
    assert_eq!(
        s.begin("x", ImageKind::Domain, "").unwrap_err(),
        StoreError::DirectoryFull
    );
    let s = Store::open(s.into_device()).unwrap();
    assert_eq!(s.list().len(), 256);
}

#[test]
fn a_writer_from_another_store_is_refused() {
    let mut s1 = Store::format(MemDevice::new(1024)).unwrap();
    let mut s2 = Store::format(MemDevice::new(1024)).unwrap();
    let w = s1.begin("a", ImageKind::Domain, "").unwrap();
    assert_eq!(s2.commit(w).unwrap_err(), StoreError::BadWriter);
    assert!(s2.list().is_empty());
}

/// A store with three images, one of them removed (so the older directory slot still names
/// it and its space is free), on a disk of 2048 sectors.
fn base() -> (Disk, Vec<(&'static str, Vec<u8>)>) {
    let mut disk = Disk::new(2048);
    let images = vec![
        ("b", pattern(2, 10_000)),
        ("c", pattern(3, 700)),
        ("d", pattern(4, 40_000)),
    ];
    {
        let mut s = Store::format(&mut disk).unwrap();
        put(&mut s, "a", &pattern(1, 3000));
        put(&mut s, "b", &images[0].1);
        s.remove("a").unwrap();
        put(&mut s, "c", &images[1].1);
        put(&mut s, "d", &images[2].1);
    }
    (disk, images)
}

fn view<'a>(images: &'a [(&'a str, Vec<u8>)]) -> Vec<(&'a str, &'a [u8])> {
    images.iter().map(|(n, d)| (*n, d.as_slice())).collect()
}

/// Runs `op` on the base store with power lost after every possible number of sector
/// writes and flushes, with and without a write cache (whose unflushed sectors are then
/// kept, dropped, or partly kept); after power comes back, `check` sees the reopened store, whether the
/// operation returned, and how many sector writes it made before power was lost.
fn with_power_loss(
    op: impl Fn(&mut Store<&mut Disk>) -> Result<(), StoreError>,
    check: impl Fn(&mut Store<&mut Disk>, &[(&str, Vec<u8>)], bool, u64),
) {
    let (base, images) = base();
    for write_cache in [false, true] {
        for k in 0.. {
            let mut disk = base.clone();
            disk.write_cache = write_cache;
            disk.writes_left = Some(k);
            disk.sector_writes = 0;
            let done = {
                let mut s = Store::open(&mut disk).unwrap();
                op(&mut s).is_ok()
            };
            let writes = disk.sector_writes;
            let mut variants = vec![Keep::None, Keep::All];
            variants.extend((0..disk.cache.len()).map(Keep::AllBut));
            variants.extend((0..8).map(Keep::Random));
            for keep in variants {
                let mut d = disk.clone();
                d.power_cycle(keep);
                let mut s = Store::open(&mut d).unwrap_or_else(|e| panic!("k={k} {keep:?}: {e}"));
                check(&mut s, &images, done, writes);
            }
            if done {
                assert!(k > 0, "the operation must have written something");
                break;
            }
        }
    }
}

#[test]
fn an_interrupted_write_never_shows_up_and_damages_nothing() {
    let new = pattern(7, 20_000);
    let data_sectors = new.len().div_ceil(SECTOR_BYTES) as u64;
    with_power_loss(
        |s| try_put(s, "new", &new).map(drop),
        |s, images, done, writes| {
            let mut want = view(images);
            if s.find("new").is_some() {
                assert!(
                    writes >= data_sectors,
                    "published before its data was written"
                );
                want.push(("new", &new));
            } else {
                assert!(!done, "a commit that returned Ok is durable");
            }
            assert_holds(s, &want);
            // The store goes on working: the space is reusable.
            put(s, "after", &pattern(8, 5000));
            s.verify("after").unwrap();
        },
    );
}

#[test]
fn an_interrupted_remove_either_removes_the_image_or_leaves_it_intact() {
    with_power_loss(
        |s| s.remove("b"),
        |s, images, done, _| {
            let mut want = view(images);
            if s.find("b").is_none() {
                want.retain(|(n, _)| *n != "b");
            } else {
                assert!(!done, "a remove that returned Ok is durable");
            }
            assert_holds(s, &want);
        },
    );
}

#[test]
fn a_device_error_leaves_the_open_store_as_it_was() {
    let (base, images) = base();
    let new = pattern(7, 20_000);
    for (what, op) in [("commit", 0), ("remove", 1)] {
        for n in 0.. {
            let mut disk = base.clone();
            let result = {
                let mut s = Store::open(&mut disk).unwrap();
                let ops = s.device().ops;
                s.device().fail_op = Some(ops + n);
                let before = (s.list().to_vec(), s.free_bytes(), s.generation());
                let result = if op == 0 {
                    try_put(&mut s, "new", &new).map(drop)
                } else {
                    s.remove("b")
                };
                if result.is_err() {
                    assert!(
                        matches!(result, Err(StoreError::Device(DeviceError::Io { .. }))),
                        "{result:?}"
                    );
                    assert_eq!(
                        (s.list().to_vec(), s.free_bytes(), s.generation()),
                        before,
                        "{what} failing at op {n}"
                    );
                    // It goes on working, and what it publishes next is what it holds.
                    let after = pattern(8, 30_000);
                    put(&mut s, "after", &after);
                    let mut want = view(&images);
                    want.push(("after", &after));
                    assert_holds(&mut s, &want);
                    drop(s);
                    let mut s = Store::open(&mut disk).unwrap();
                    assert_holds(&mut s, &want);
                }
                result
            };
            if result.is_ok() {
                break;
            }
        }
    }
}

#[test]
fn a_commit_that_failed_while_publishing_keeps_its_space_until_the_next_directory() {
    // The device may report an error for a directory write (or the flush after it) that it
    // did store: until another directory replaces it, the failed image's extent stays unused.
    let (base, images) = base();
    let new = pattern(7, 20_000);
    for n in 0.. {
        let mut disk = base.clone();
        let done = {
            let mut s = Store::open(&mut disk).unwrap();
            let ops = s.device().ops;
            s.device().fail_op = Some(ops + n);
            let done = try_put(&mut s, "new", &new).is_ok();
            if !done {
                // Another image is written but power is lost before it is committed.
                let mut w = s.begin("after", ImageKind::Domain, "").unwrap();
                s.write(&mut w, &pattern(8, 200_000)).unwrap();
            }
            done
        };
        disk.fail_op = None;
        let mut s = Store::open(&mut disk).unwrap();
        let mut want = view(&images);
        if s.find("new").is_some() {
            want.push(("new", &new));
        }
        assert_holds(&mut s, &want);
        if done {
            break;
        }
    }
}

#[test]
fn a_corrupted_directory_slot_falls_back_to_the_other() {
    let mut s = Store::format(MemDevice::new(1024)).unwrap(); // generation 1 in slot 0
    let a = pattern(1, 3000);
    put(&mut s, "a", &a); // generation 2, slot 1
    put(&mut s, "b", &pattern(2, 3000)); // generation 3, slot 0
    let mut dev = s.into_device();
    // Damage one byte of an entry in slot 0: the directory from before `b` is used.
    dev.bytes_mut()[(SLOT_LBA[0] as usize + 1) * SECTOR_BYTES + 45] ^= 1;
    let mut s = Store::open(dev).unwrap();
    assert_eq!(s.generation(), 2);
    assert_holds(&mut s, &[("a", &a)]);
    // The next commit goes to the damaged slot, not over the good one.
    let c = pattern(3, 100);
    put(&mut s, "c", &c);
    let mut dev = s.into_device();
    dev.bytes_mut()[SLOT_LBA[1] as usize * SECTOR_BYTES + 9] ^= 1; // slot 1's generation
    let mut s = Store::open(dev).unwrap();
    assert_holds(&mut s, &[("a", &a), ("c", &c)]);
    let mut dev = s.into_device();
    dev.bytes_mut()[SLOT_LBA[0] as usize * SECTOR_BYTES] ^= 1; // slot 0's magic
    assert_eq!(
        Store::open(dev).unwrap_err(),
        StoreError::Corrupt(CorruptWhat::Directory)
    );
}

#[test]
fn verify_finds_damaged_image_bytes() {
    let mut s = Store::format(MemDevice::new(1024)).unwrap();
    let e = put(&mut s, "a", &pattern(1, 5000));
    s.verify("a").unwrap();
    s.device().bytes_mut()[e.first_lba as usize * SECTOR_BYTES + 4999] ^= 0x80;
    assert_eq!(s.verify("a"), Err(StoreError::Corrupt(CorruptWhat::Image)));
    assert_eq!(s.verify("b"), Err(StoreError::NoSuchImage));
}

#[test]
fn open_or_format_formats_only_a_blank_disk() {
    // Blank: formatted.
    let mut s = Store::open_or_format(MemDevice::new(1024)).unwrap();
    let a = pattern(1, 1000);
    put(&mut s, "a", &a);
    // A store: opened, not wiped.
    let mut s = Store::open_or_format(s.into_device()).unwrap();
    assert_holds(&mut s, &[("a", &a)]);
    let good = s.into_device();
    // A damaged superblock: an error, and the disk is untouched.
    let mut bad = good.clone();
    bad.bytes_mut()[20] ^= 1;
    let copy = bad.clone();
    let err = Store::<&mut MemDevice>::open_or_format(&mut bad).unwrap_err();
    assert_eq!(err, StoreError::Corrupt(CorruptWhat::Superblock));
    assert_eq!(bad, copy);
    // A zeroed superblock over a directory that names images: not blank, left alone.
    let mut bad = good.clone();
    bad.bytes_mut()[..SECTOR_BYTES].fill(0);
    let copy = bad.clone();
    assert_eq!(
        Store::<&mut MemDevice>::open_or_format(&mut bad).unwrap_err(),
        StoreError::NotFormatted
    );
    assert_eq!(bad, copy);
    // Something else on the disk: not a store, left alone.
    let mut other = MemDevice::new(1024);
    other.bytes_mut()[510] = 0x55;
    other.bytes_mut()[511] = 0xAA;
    assert_eq!(
        Store::<&mut MemDevice>::open_or_format(&mut other).unwrap_err(),
        StoreError::NotFormatted
    );
    assert_eq!(
        Store::open(MemDevice::new(1024)).unwrap_err(),
        StoreError::NotFormatted
    );
    // A disk too small for a store.
    assert_eq!(
        Store::open_or_format(MemDevice::new(100)).unwrap_err(),
        StoreError::TooSmall
    );
}

#[test]
fn an_interrupted_format_leaves_a_disk_that_open_or_format_formats() {
    for k in 0..3 {
        let mut disk = Disk::new(1024);
        disk.writes_left = Some(k);
        assert!(Store::format(&mut disk).is_err());
        disk.power_cycle(Keep::All);
        let s = Store::open_or_format(&mut disk).unwrap_or_else(|e| panic!("k={k}: {e}"));
        assert!(s.list().is_empty());
    }
}

#[test]
fn a_store_opens_on_a_larger_disk_but_not_on_a_smaller_one() {
    let mut s = Store::format(MemDevice::new(1024)).unwrap();
    put(&mut s, "a", &pattern(1, 100));
    let mut bytes = s.into_device().into_bytes();
    let mut larger = bytes.clone();
    larger.resize(4096 * SECTOR_BYTES, 0);
    let s = Store::open(MemDevice::from_bytes(larger)).unwrap();
    assert_eq!(
        s.capacity_bytes(),
        (1024 - 264) * 512,
        "the store keeps the size it was made with"
    );
    bytes.truncate(1000 * SECTOR_BYTES);
    assert_eq!(
        Store::open(MemDevice::from_bytes(bytes)).unwrap_err(),
        StoreError::Corrupt(CorruptWhat::DiskSize)
    );
}

#[test]
fn the_scratch_range_is_free_space_a_benchmark_may_overwrite() {
    let mut s = Store::format(MemDevice::new(2048)).unwrap();
    let (a, b) = (pattern(1, 50_000), pattern(2, 100_000));
    put(&mut s, "a", &a);
    put(&mut s, "b", &b);
    s.remove("a").unwrap();
    let c = pattern(3, 20_000);
    put(&mut s, "c", &c); // into the tail, the larger gap
    let w = s.begin("busy", ImageKind::Domain, "").unwrap();
    let (first, sectors) = s.scratch_range();
    assert!(sectors > 0);
    for e in s.list() {
        assert!(
            e.end_lba() <= first || first + sectors <= e.first_lba,
            "{e:?} overlaps the scratch range"
        );
    }
    let junk = vec![0xA5; sectors as usize * SECTOR_BYTES];
    s.device().write(first, &junk).unwrap();
    s.abort(w);
    assert_holds(&mut s, &[("b", &b), ("c", &c)]);
}

#[test]
fn a_store_reopened_after_many_operations_holds_what_was_committed() {
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut s = Store::format(MemDevice::new(4096)).unwrap();
    let mut model: Vec<(String, Vec<u8>, u64)> = Vec::new();
    let mut next_sequence = 0;
    for step in 0..400u64 {
        match rand(10) {
            0..=5 => {
                let name = format!("img{}", rand(40));
                let data = pattern(step, rand(60_000) as usize);
                match try_put(&mut s, &name, &data) {
                    Ok(e) => {
                        assert_eq!(e.sequence, next_sequence);
                        model.push((name, data, next_sequence));
                        next_sequence += 1;
                    }
                    Err(StoreError::NameTaken) => assert!(model.iter().any(|(n, _, _)| *n == name)),
                    Err(StoreError::Full) => assert!(data.len() as u64 > s.largest_free_bytes()),
                    Err(e) => panic!("{e}"),
                }
            }
            6..=8 if !model.is_empty() => {
                let (name, _, _) = model.remove(rand(model.len() as u64) as usize);
                s.remove(&name).unwrap();
            }
            _ => {
                let mut w = s.begin("aborted", ImageKind::Delta, "").unwrap();
                let _ = s.write(&mut w, &pattern(step, 3000));
                s.abort(w);
            }
        }
        if step % 25 == 0 {
            s = Store::open(s.into_device()).unwrap();
        }
        let listed: Vec<(&str, u64)> = s
            .list()
            .iter()
            .map(|e| (e.name.as_str(), e.sequence))
            .collect();
        let expected: Vec<(&str, u64)> = model.iter().map(|(n, _, q)| (n.as_str(), *q)).collect();
        assert_eq!(listed, expected, "step {step}");
    }
    let mut s = Store::open(s.into_device()).unwrap();
    for (name, data, _) in &model {
        assert_eq!(&read_all(&mut s, name), data);
        s.verify(name).unwrap();
    }
    assert!(
        model.len() > 5,
        "the test exercised a store with images in it"
    );
}

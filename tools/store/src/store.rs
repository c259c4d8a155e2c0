//! The store: open/format, the directory in memory, writers, reads, removal.

use crate::layout::{
    self, ALIGN_SECTORS, DATA_LBA, SLOT_LBA, Sector, SuperblockRead, align_up, decode_directory,
    encode_directory, encode_superblock, header_count, slot_used_sectors,
};
use crate::{
    BlockDevice, CorruptWhat, DeviceError, Entry, ImageKind, MAX_ENTRIES, MAX_ORIGIN_BYTES,
    SECTOR_BYTES, StoreError, is_valid_name,
};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

const SECTOR: u64 = SECTOR_BYTES as u64;
/// Bytes read per device call while verifying.
const VERIFY_CHUNK: usize = 64 * SECTOR_BYTES;

/// The rapidhash v3 secrets of image checksums (seed 0).
static IMAGE_SECRETS: rapidhash::v3::RapidSecrets = rapidhash::v3::RapidSecrets::seed(0);

/// The checksum the store keeps of each image's bytes ([`Entry::checksum`]): rapidhash v3
/// (seed 0), computed incrementally (the same as over the bytes at once). It is what every
/// byte of a save costs the store beyond the disk, so it is the fastest good 64-bit hash on
/// a CPU without SIMD (dom0's), not XXH3.
pub struct ImageChecksum(rapidhash::v3::RapidStreamHasherV3<'static>);

impl ImageChecksum {
    /// The checksum of nothing yet.
    pub fn new() -> Self {
        Self(rapidhash::v3::RapidStreamHasherV3::new(&IMAGE_SECRETS))
    }
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.write(data);
    }
    /// The checksum of everything added so far.
    pub fn value(&self) -> u64 {
        self.0.finish()
    }
}

impl Default for ImageChecksum {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ImageChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageChecksum({:#018x})", self.value())
    }
}

/// An image being written: from [`Store::begin`], fed by [`Store::write`], finished by
/// [`Store::commit`] or [`Store::abort`]. Until it is finished its name and the free extent it
/// writes into are reserved (a writer dropped unfinished keeps them reserved until the store
/// is reopened: abort it instead).
pub struct ImageWriter {
    id: u64,
    name: String,
    kind: ImageKind,
    origin: String,
    /// The reserved extent: `start..end`.
    start: u64,
    end: u64,
    /// Bytes accepted so far.
    bytes: u64,
    /// The tail that does not fill a sector yet (`bytes % 512` bytes of it are valid).
    partial: Sector,
    checksum: ImageChecksum,
    /// The error that ended this writer, if any: it then accepts nothing more.
    failed: Option<StoreError>,
    /// The store checksums the bytes (not for [`Store::begin_self_checked`]).
    checked: bool,
}

impl ImageWriter {
    /// The name the image will be published under.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }
    /// How many bytes the image can hold at most (the free extent it is written into).
    pub fn room_bytes(&self) -> u64 {
        (self.end - self.start) * SECTOR
    }
    fn partial_len(&self) -> usize {
        (self.bytes % SECTOR) as usize
    }
    /// The next sector to write (the one `partial` will go to).
    fn next_lba(&self) -> u64 {
        self.start + self.bytes / SECTOR
    }
}

impl fmt::Debug for ImageWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageWriter")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("extent", &(self.start..self.end))
            .field("bytes", &self.bytes)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// An extent reserved for a writer.
#[derive(Debug)]
struct Reservation {
    id: u64,
    name: String,
    start: u64,
    end: u64,
}

/// The image store on a block device. See the crate documentation.
pub struct Store<D: BlockDevice> {
    dev: D,
    /// Sectors the store spans (from its superblock).
    total: u64,
    /// The published images, in creation order.
    entries: Vec<Entry>,
    /// Generation of the directory in `slot`.
    generation: u64,
    /// Which slot holds the directory in force.
    slot: usize,
    /// The `sequence` the next image gets.
    next_sequence: u64,
    /// Extents of images being written.
    writers: Vec<Reservation>,
    /// Extents of commits whose directory write failed: the device may hold that directory
    /// anyway, so they stay unused until another directory is published over it.
    quarantine: Vec<(u64, u64)>,
    next_writer: u64,
}

impl<D: BlockDevice> fmt::Debug for Store<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("sectors", &self.total)
            .field("generation", &self.generation)
            .field("slot", &self.slot)
            .field("entries", &self.entries.len())
            .field("writers", &self.writers.len())
            .finish_non_exhaustive()
    }
}

fn read_sector<D: BlockDevice>(dev: &mut D, lba: u64) -> Result<Sector, DeviceError> {
    let mut s = [0u8; SECTOR_BYTES];
    dev.read(lba, &mut s)?;
    Ok(s)
}

/// Reads directory slot `slot`; `Ok(None)` if it is not intact.
fn read_slot<D: BlockDevice>(
    dev: &mut D,
    slot: usize,
    total: u64,
) -> Result<Option<layout::Directory>, DeviceError> {
    let header = read_sector(dev, SLOT_LBA[slot])?;
    let Some(count) = header_count(&header) else {
        return Ok(None);
    };
    let mut body = vec![0u8; (slot_used_sectors(count) - 1) * SECTOR_BYTES];
    if !body.is_empty() {
        dev.read(SLOT_LBA[slot] + 1, &mut body)?;
    }
    Ok(decode_directory(&header, &body, total))
}

impl<D: BlockDevice> Store<D> {
    /// Writes an empty store over the whole device (whatever it held) and opens it.
    pub fn format(mut dev: D) -> Result<Self, StoreError> {
        let total = dev.sectors();
        if total < DATA_LBA + ALIGN_SECTORS {
            return Err(StoreError::TooSmall);
        }
        // Invalidate slot 1 (it may hold a directory of an earlier store), write an empty
        // directory to slot 0, and only then the superblock that makes it a store.
        dev.write(SLOT_LBA[1], &[0u8; SECTOR_BYTES])?;
        dev.write(SLOT_LBA[0], &encode_directory(1, 0, &[]))?;
        dev.flush()?;
        dev.write(0, &encode_superblock(total))?;
        dev.flush()?;
        Ok(Self::with(
            dev,
            total,
            layout::Directory {
                generation: 1,
                next_sequence: 0,
                entries: Vec::new(),
            },
            0,
        ))
    }

    /// Opens the store on `dev`: [`StoreError::NotFormatted`] if the device holds none,
    /// [`StoreError::Corrupt`] if it is damaged beyond what the two slots can cover.
    pub fn open(mut dev: D) -> Result<Self, StoreError> {
        let total = match layout::decode_superblock(&read_sector(&mut dev, 0)?) {
            SuperblockRead::Store(total) => total,
            SuperblockRead::NotStore => return Err(StoreError::NotFormatted),
            SuperblockRead::Damaged(what) => return Err(StoreError::Corrupt(what)),
        };
        if dev.sectors() < total {
            return Err(StoreError::Corrupt(CorruptWhat::DiskSize));
        }
        // A slot that cannot be read is an error, not a reason to fall back: the other slot
        // may be older, and the next commit would overwrite the newer one.
        let a = read_slot(&mut dev, 0, total)?;
        let b = read_slot(&mut dev, 1, total)?;
        let (dir, slot) = match (a, b) {
            (Some(a), Some(b)) if b.generation > a.generation => (b, 1),
            (Some(a), _) => (a, 0),
            (None, Some(b)) => (b, 1),
            (None, None) => return Err(StoreError::Corrupt(CorruptWhat::Directory)),
        };
        Ok(Self::with(dev, total, dir, slot))
    }

    /// Opens the store on `dev`, formatting it first only if it is blank: sector 0 all zero and
    /// neither directory slot holding anything (an all-zero header, or an empty directory left
    /// by an interrupted format). A damaged store, or a disk holding anything else, is an
    /// error and is left alone.
    pub fn open_or_format(mut dev: D) -> Result<Self, StoreError> {
        let first = read_sector(&mut dev, 0)?;
        if first.iter().any(|&b| b != 0) {
            return Self::open(dev);
        }
        if dev.sectors() < DATA_LBA + ALIGN_SECTORS {
            return Err(StoreError::TooSmall);
        }
        for slot in 0..2 {
            let header = read_sector(&mut dev, SLOT_LBA[slot])?;
            if header.iter().all(|&b| b == 0) {
                continue;
            }
            let sectors = dev.sectors();
            let empty = read_slot(&mut dev, slot, sectors)?.is_some_and(|d| d.entries.is_empty());
            if !empty {
                return Err(StoreError::NotFormatted);
            }
        }
        Self::format(dev)
    }

    fn with(dev: D, total: u64, dir: layout::Directory, slot: usize) -> Self {
        Self {
            dev,
            total,
            entries: dir.entries,
            generation: dir.generation,
            slot,
            next_sequence: dir.next_sequence,
            writers: Vec::new(),
            quarantine: Vec::new(),
            next_writer: 0,
        }
    }

    /// The published images, in creation order.
    pub fn list(&self) -> &[Entry] {
        &self.entries
    }

    /// The published image named `name`.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Bytes the data area holds in all.
    pub fn capacity_bytes(&self) -> u64 {
        (self.total - DATA_LBA) * SECTOR
    }

    /// Bytes not used by published images (the sum of the free gaps; an image needs one gap).
    pub fn free_bytes(&self) -> u64 {
        self.gaps(false).iter().map(|(s, e)| (e - s) * SECTOR).sum()
    }

    /// The largest image a writer begun now could hold.
    pub fn largest_free_bytes(&self) -> u64 {
        let (_, sectors) = self.scratch_range();
        sectors * SECTOR
    }

    /// The generation of the directory in force (it grows by one per commit or remove).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The device, e.g. for a benchmark of the raw disk (write only inside
    /// [`scratch_range`](Self::scratch_range)).
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Closes the store, giving back the device.
    pub fn into_device(self) -> D {
        self.dev
    }

    /// The largest free gap (first sector, sectors): not used by any published image, nor by
    /// one being written. Writing there damages no image. `(end of store, 0)` if there is none.
    pub fn scratch_range(&self) -> (u64, u64) {
        self.largest_gap()
            .map_or((self.total, 0), |(s, e)| (s, e - s))
    }

    fn largest_gap(&self) -> Option<(u64, u64)> {
        // The first of the largest, so placement is deterministic.
        self.gaps(true)
            .into_iter()
            .fold(None, |best, g| match best {
                Some((s, e)) if e - s >= g.1 - g.0 => Some((s, e)),
                _ => Some(g),
            })
    }

    /// The free gaps (aligned start, end), in disk order; with `busy`, the extents of writers
    /// and quarantined commits count as used.
    fn gaps(&self, busy: bool) -> Vec<(u64, u64)> {
        let mut used: Vec<(u64, u64)> = self
            .entries
            .iter()
            .filter(|e| e.sectors() > 0)
            .map(|e| (e.first_lba, e.end_lba()))
            .collect();
        if busy {
            used.extend(self.writers.iter().map(|r| (r.start, r.end)));
            used.extend(self.quarantine.iter().copied());
        }
        used.sort_unstable();
        let mut gaps = Vec::new();
        let mut pos = DATA_LBA;
        for (s, e) in used
            .into_iter()
            .chain(core::iter::once((self.total, self.total)))
        {
            let start = align_up(pos).min(self.total);
            if s > start {
                gaps.push((start, s));
            }
            pos = pos.max(e);
        }
        gaps
    }

    /// Starts writing an image named `name` into the largest free gap.
    pub fn begin(
        &mut self,
        name: &str,
        kind: ImageKind,
        origin: &str,
    ) -> Result<ImageWriter, StoreError> {
        self.begin_inner(name, kind, origin, true)
    }

    /// Like [`Store::begin`], for bytes that carry their own checksums (dom0's domain images
    /// checksum every record): the store spends no pass of its own over them, which is what
    /// a save costs beyond the disk, and its entry says so ([`Entry::self_checked`]).
    pub fn begin_self_checked(
        &mut self,
        name: &str,
        kind: ImageKind,
        origin: &str,
    ) -> Result<ImageWriter, StoreError> {
        self.begin_inner(name, kind, origin, false)
    }

    fn begin_inner(
        &mut self,
        name: &str,
        kind: ImageKind,
        origin: &str,
        checked: bool,
    ) -> Result<ImageWriter, StoreError> {
        if !is_valid_name(name) {
            return Err(StoreError::BadName);
        }
        if origin.len() > MAX_ORIGIN_BYTES {
            return Err(StoreError::BadOrigin);
        }
        if self.find(name).is_some() || self.writers.iter().any(|r| r.name == name) {
            return Err(StoreError::NameTaken);
        }
        if self.entries.len() + self.writers.len() >= MAX_ENTRIES {
            return Err(StoreError::DirectoryFull);
        }
        let (start, end) = self.largest_gap().unwrap_or((self.total, self.total));
        let id = self.next_writer;
        self.next_writer += 1;
        self.writers.push(Reservation {
            id,
            name: String::from(name),
            start,
            end,
        });
        Ok(ImageWriter {
            id,
            name: String::from(name),
            kind,
            origin: String::from(origin),
            start,
            end,
            bytes: 0,
            partial: [0; SECTOR_BYTES],
            checksum: ImageChecksum::new(),
            failed: None,
            checked,
        })
    }

    fn writer_index(&self, w: &ImageWriter) -> Result<usize, StoreError> {
        self.writers
            .iter()
            .position(|r| r.id == w.id && r.start == w.start && r.name == w.name)
            .ok_or(StoreError::BadWriter)
    }

    /// Appends `data` to the image. Whole sectors go to the device at once, a partial one is
    /// held until more data (or the commit) completes it. If the image would outgrow its
    /// free gap, nothing of `data` is written and [`StoreError::Full`] is returned (or
    /// [`StoreError::TooLarge`] if even an empty store could not hold it). After any error
    /// the writer accepts nothing more: abort it.
    pub fn write(&mut self, w: &mut ImageWriter, data: &[u8]) -> Result<(), StoreError> {
        self.writer_index(w)?;
        if let Some(e) = w.failed {
            return Err(e);
        }
        let result = self.write_inner(w, data);
        if let Err(e) = result {
            w.failed = Some(e);
        }
        result
    }

    fn write_inner(&mut self, w: &mut ImageWriter, mut data: &[u8]) -> Result<(), StoreError> {
        let total_bytes = w
            .bytes
            .checked_add(data.len() as u64)
            .ok_or(StoreError::TooLarge)?;
        let sectors = total_bytes.div_ceil(SECTOR);
        if sectors > w.end - w.start {
            let whole_store = self.total - DATA_LBA;
            return Err(if sectors > whole_store {
                StoreError::TooLarge
            } else {
                StoreError::Full
            });
        }
        if w.checked {
            w.checksum.update(data);
        }
        let have = w.partial_len();
        if have > 0 {
            let take = data.len().min(SECTOR_BYTES - have);
            w.partial[have..have + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if have + take == SECTOR_BYTES {
                self.dev.write(w.next_lba(), &w.partial)?;
            }
            w.bytes += take as u64;
        }
        let whole = data.len() / SECTOR_BYTES * SECTOR_BYTES;
        if whole > 0 {
            self.dev.write(w.next_lba(), &data[..whole])?;
            w.bytes += whole as u64;
        }
        let rest = &data[whole..];
        w.partial[..rest.len()].copy_from_slice(rest);
        w.bytes += rest.len() as u64;
        Ok(())
    }

    /// Finishes the image: writes its last partial sector, flushes its data, then publishes
    /// a directory that names it and flushes that. Only then does the image exist; on any
    /// error it does not, and the store is as it was before [`begin`](Self::begin).
    pub fn commit(&mut self, mut w: ImageWriter) -> Result<Entry, StoreError> {
        let index = self.writer_index(&w)?;
        self.writers.remove(index);
        if let Some(e) = w.failed {
            return Err(e);
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(StoreError::DirectoryFull);
        }
        let have = w.partial_len();
        if have > 0 {
            w.partial[have..].fill(0);
            self.dev.write(w.next_lba(), &w.partial)?;
        }
        self.dev.flush()?;
        let entry = Entry {
            name: w.name,
            kind: w.kind,
            size_bytes: w.bytes,
            origin: w.origin,
            sequence: self.next_sequence,
            first_lba: w.start,
            checksum: if w.checked { w.checksum.value() } else { 0 },
            self_checked: !w.checked,
        };
        let listed: Vec<&Entry> = self
            .entries
            .iter()
            .chain(core::iter::once(&entry))
            .collect();
        let dir = encode_directory(self.generation + 1, self.next_sequence + 1, &listed);
        if let Err(e) = self.publish(&dir) {
            if entry.sectors() > 0 {
                self.quarantine.push((entry.first_lba, entry.end_lba()));
            }
            return Err(e);
        }
        self.next_sequence += 1;
        self.entries.push(entry.clone());
        Ok(entry)
    }

    /// Drops an unfinished image: nothing is published and its space is free again.
    pub fn abort(&mut self, w: ImageWriter) {
        if let Ok(index) = self.writer_index(&w) {
            self.writers.remove(index);
        }
    }

    /// Removes the image named `name` by publishing a directory without it.
    pub fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        let index = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .ok_or(StoreError::NoSuchImage)?;
        let listed: Vec<&Entry> = self.entries.iter().filter(|e| e.name != name).collect();
        let dir = encode_directory(self.generation + 1, self.next_sequence, &listed);
        self.publish(&dir)?;
        self.entries.remove(index);
        Ok(())
    }

    /// Writes `dir` (the next generation) into the slot not in force and flushes it.
    fn publish(&mut self, dir: &[u8]) -> Result<(), StoreError> {
        let target = 1 - self.slot;
        self.dev.write(SLOT_LBA[target], dir)?;
        self.dev.flush()?;
        self.slot = target;
        self.generation += 1;
        // The slot a failed publish may have reached now holds this directory.
        self.quarantine.clear();
        Ok(())
    }

    /// Reads from image `name` at byte `offset` into `buf`; returns the bytes read, fewer
    /// than `buf.len()` at the end of the image (0 at or past it).
    pub fn read_at(
        &mut self,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, StoreError> {
        let e = self.find(name).ok_or(StoreError::NoSuchImage)?;
        let (first, size) = (e.first_lba, e.size_bytes);
        if offset >= size {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(size - offset).unwrap_or(usize::MAX));
        let buf = &mut buf[..n];
        let mut done = 0;
        let mut pos = offset;
        let mut sector = [0u8; SECTOR_BYTES];
        let skip = (pos % SECTOR) as usize;
        if skip != 0 {
            self.dev.read(first + pos / SECTOR, &mut sector)?;
            let take = n.min(SECTOR_BYTES - skip);
            buf[..take].copy_from_slice(&sector[skip..skip + take]);
            done += take;
            pos += take as u64;
        }
        let whole = (n - done) / SECTOR_BYTES * SECTOR_BYTES;
        if whole > 0 {
            self.dev
                .read(first + pos / SECTOR, &mut buf[done..done + whole])?;
            done += whole;
            pos += whole as u64;
        }
        if done < n {
            self.dev.read(first + pos / SECTOR, &mut sector)?;
            buf[done..].copy_from_slice(&sector[..n - done]);
        }
        Ok(n)
    }

    /// Re-reads image `name` and checks its bytes against the checksum in its entry:
    /// [`StoreError::Corrupt`]`(`[`CorruptWhat::Image`]`)` if they differ. A self-checked
    /// image is only re-read (every sector must be readable): its own checksums are the
    /// reader's to check.
    pub fn verify(&mut self, name: &str) -> Result<(), StoreError> {
        let e = self.find(name).ok_or(StoreError::NoSuchImage)?;
        let (mut lba, mut left, expect, self_checked) = (e.first_lba, e.size_bytes, e.checksum, e.self_checked);
        let mut buf = vec![0u8; VERIFY_CHUNK];
        let mut sum = ImageChecksum::new();
        while left > 0 {
            let n = left.min(VERIFY_CHUNK as u64) as usize;
            let sectors = n.div_ceil(SECTOR_BYTES);
            self.dev.read(lba, &mut buf[..sectors * SECTOR_BYTES])?;
            sum.update(&buf[..n]);
            lba += sectors as u64;
            left -= n as u64;
        }
        if self_checked || sum.value() == expect {
            Ok(())
        } else {
            Err(StoreError::Corrupt(CorruptWhat::Image))
        }
    }
}

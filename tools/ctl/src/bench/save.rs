//! `bench save`: what saving, restoring and checkpointing cost, against the device floor.
//! In one run it measures the raw disk (writing and reading the same number of bytes as the
//! image, in the store's free space), saving and restoring a domain full of data, a live
//! checkpoint's pause for a small and a large domain, saving a mostly-zero large domain,
//! restoring against building the same domain from its ELF image, and a delta image of an
//! idle clone against a full image of it. Figures are guest TSC cycles read in dom0.

use super::{TEMPLATE_CMDLINE, median, ratio};
use crate::control::Hypercalls;
use crate::save::{Mode, Quiet, Saver};
use crate::shell::{Shell, WaitState};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;
use guest_abi::{HvError, HvResult};
use store::{BlockDevice, SECTOR_BYTES};

/// Where the data-filled domain's pattern starts (above any guest image).
const FILL_FROM_BYTES: u64 = 4 << 20;
/// Bytes one raw device transfer moves (the store's and the driver's largest).
const RAW_CHUNK_BYTES: usize = 128 * 1024;
/// Rounds of save, raw write, restore and raw read.
const ROUNDS: usize = 5;
/// Checkpoint epochs timed per domain size.
const PAUSE_SAMPLES: usize = 9;
/// Images the benchmark writes (removed again).
const IMAGES: [&str; 5] = ["bench-save.img", "bench-zero.img", "bench-delta.img", "bench-full.img", "bench-raw.img"];

/// Prints why a step failed; the benchmark stops there.
fn fail(out: &mut dyn Write, e: &dyn core::fmt::Display) -> HvError {
    let _ = writeln!(out, "error: bench save: {e}");
    HvError::Busy
}

/// A cheap pseudo-random fill that no compressor or zero check can shortcut.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for w in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

/// The cycles of reading `mib` MiB out of domain `d`, checksumming, zero-checking them and
/// writing them into a new domain, each step alone over the whole memory.
fn compute_breakdown<H: Hypercalls>(ctl: &mut crate::control::Control<H>, d: u32, mib: u64, cycles: fn() -> u64, buf: &mut [u8]) -> HvResult<[u64; 4]> {
    let total = mib << 20;
    let step = buf.len() as u64;
    let c0 = cycles();
    let mut at = 0;
    while at < total {
        ctl.mem_read(d, at, buf)?;
        at += step;
    }
    let read = cycles() - c0;
    let c0 = cycles();
    let mut sink = 0u64;
    for _ in 0..total / step {
        let mut h = domimage::record_hasher();
        h.write(buf);
        sink ^= h.finish();
    }
    let sum = cycles() - c0;
    let c0 = cycles();
    for _ in 0..total / step {
        sink ^= buf.chunks_exact(domimage::PAGE_BYTES).filter(|p| domimage::is_zero_page(p)).count() as u64;
    }
    let zero = cycles() - c0;
    core::hint::black_box(sink);
    let fresh = ctl.create("bench-breakdown", total)?;
    let c0 = cycles();
    let mut at = 0;
    let mut written = Ok(());
    while at < total && written.is_ok() {
        written = ctl.mem_write(fresh, at, buf);
        at += step;
    }
    let write = cycles() - c0;
    // The scratch domain goes whether or not every write went in.
    ctl.destroy(fresh)?;
    written?;
    Ok([read, sum, zero, write])
}

impl<H: Hypercalls> Shell<H> {
    /// `bench save [mib=M] [big=M]`.
    pub(super) fn bench_save(&mut self, mib: u64, big_mib: u64, out: &mut dyn Write) -> HvResult<()> {
        let Ok(store) = self.storage.store.as_mut() else {
            let _ = writeln!(out, "error: no image store");
            return Ok(());
        };
        for i in IMAGES {
            let _ = store.remove(i);
        }
        let ticker = self.image("ticker")?;
        // A paused domain whose memory above the image is all data.
        let d = self.start(ticker, "bench-save", mib, "", true)?;
        let mut buf = crate::page_buf::PageBuf::zeroed(crate::save::RUN_BYTES);
        let mut at = FILL_FROM_BYTES;
        while at < mib << 20 {
            fill(&mut buf, at);
            self.ctl.mem_write(d, at, &buf)?;
            at += buf.len() as u64;
        }
        let cycles = self.cycles;
        let storage = &mut self.storage;
        let Ok(store) = storage.store.as_mut() else { return Ok(()) };
        let mut quiet = Quiet;
        let mut saver = Saver { ctl: &mut self.ctl, store, digests: &mut storage.digests, ui: &mut quiet, cycles };
        // The disk's latency is host time (QEMU's file I/O), which the guest spends polling,
        // so it drifts with the host's load. Each round measures a save, a raw write of as
        // many bytes, a restore and a raw read back to back; the ratios reported are the
        // medians of the rounds' own ratios, the cycle figures the medians of each.
        let (mut saves, mut restores, mut writes, mut reads) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut save_ratios, mut restore_ratios) = (Vec::new(), Vec::new());
        let mut image_bytes = 0;
        let mut chunk = vec![0u8; RAW_CHUNK_BYTES];
        fill(&mut chunk, 7);
        for _ in 0..ROUNDS {
            let _ = saver.store.remove(IMAGES[0]);
            let c0 = cycles();
            let saved = saver.save(d, IMAGES[0], Mode::Live, false).map_err(|e| fail(out, &e))?;
            let save_cycles = cycles() - c0;
            image_bytes = saved.bytes;
            // The device floor: the same number of bytes written and read raw, in free space.
            let (lba, sectors) = saver.store.scratch_range();
            let raw_bytes = (image_bytes as usize).div_ceil(RAW_CHUNK_BYTES) * RAW_CHUNK_BYTES;
            if sectors * (SECTOR_BYTES as u64) < raw_bytes as u64 {
                let _ = writeln!(out, "error: the store has no {} KiB of free space for the raw disk floor", raw_bytes / 1024);
                return Ok(());
            }
            let dev = saver.store.device();
            let c0 = cycles();
            for i in 0..raw_bytes / RAW_CHUNK_BYTES {
                dev.write(lba + (i * RAW_CHUNK_BYTES / SECTOR_BYTES) as u64, &chunk).map_err(|e| fail(out, &e))?;
            }
            dev.flush().map_err(|e| fail(out, &e))?;
            let raw_write = cycles() - c0;
            let c0 = cycles();
            let r = saver.restore(IMAGES[0], Some("bench-restored"), true).map_err(|e| fail(out, &e))?;
            let restore_cycles = cycles() - c0;
            saver.ctl.destroy(r.domid)?;
            let dev = saver.store.device();
            let c0 = cycles();
            for i in 0..raw_bytes / RAW_CHUNK_BYTES {
                dev.read(lba + (i * RAW_CHUNK_BYTES / SECTOR_BYTES) as u64, &mut chunk).map_err(|e| fail(out, &e))?;
            }
            let raw_read = cycles() - c0;
            save_ratios.push(save_cycles * 1000 / raw_write.max(1));
            restore_ratios.push(restore_cycles * 1000 / raw_read.max(1));
            saves.push(save_cycles);
            restores.push(restore_cycles);
            writes.push(raw_write);
            reads.push(raw_read);
        }
        // Where a MiB's compute goes: each step of the save and restore paths alone.
        let breakdown = compute_breakdown(saver.ctl, d, mib, cycles, &mut buf)?;
        let (save_cycles, restore_cycles) = (median(&mut saves), median(&mut restores));
        let (raw_write, raw_read) = (median(&mut writes), median(&mut reads));
        let (save_ratio, restore_ratio) = (median(&mut save_ratios), median(&mut restore_ratios));
        let per_mib = |c: u64| c * (1 << 20) / image_bytes.max(1);
        let _ = writeln!(
            out,
            "bench save: {mib} MiB domain, {} KiB image: save {} cycles/MiB, raw write {} cycles/MiB: {}x the floor (target <= 1.50; median of {ROUNDS} rounds)",
            image_bytes / 1024,
            per_mib(save_cycles),
            per_mib(raw_write),
            ratio(save_ratio, 1000)
        );
        let _ = writeln!(
            out,
            "bench restore: {} cycles/MiB, raw read {} cycles/MiB: {}x the floor (target <= 1.50; median of {ROUNDS} rounds)",
            per_mib(restore_cycles),
            per_mib(raw_read),
            ratio(restore_ratio, 1000)
        );
        let [read, sum, zero, write] = breakdown.map(|c| c * 1024 / (mib << 10).max(1));
        let _ = writeln!(
            out,
            "bench save breakdown: per MiB: read from the domain {read} cycles, record checksum {sum}, zero check {zero}, write into a new domain {write}"
        );
        // Restoring against building the same domain from its ELF image.
        let mut builds = Vec::new();
        for i in 0..3 {
            let c0 = cycles();
            let b = self.start(ticker, &format!("bench-build{i}"), mib, "", true)?;
            builds.push(cycles() - c0);
            self.ctl.destroy(b)?;
        }
        let build = median(&mut builds);
        // The same domain as it is built (its RAM mostly zero), saved and restored.
        let fresh = self.start(ticker, "bench-fresh", mib, "", true)?;
        let storage = &mut self.storage;
        let Ok(store) = storage.store.as_mut() else { return Ok(()) };
        let mut saver = Saver { ctl: &mut self.ctl, store, digests: &mut storage.digests, ui: &mut quiet, cycles };
        saver.save(fresh, IMAGES[4], Mode::Save, false).map_err(|e| fail(out, &e))?;
        let mut fresh = Vec::new();
        for _ in 0..ROUNDS {
            let c0 = cycles();
            let r = saver.restore(IMAGES[4], Some("bench-fresh"), true).map_err(|e| fail(out, &e))?;
            fresh.push(cycles() - c0);
            saver.ctl.destroy(r.domid)?;
        }
        let fresh_restore = median(&mut fresh);
        let _ = writeln!(
            out,
            "bench restore vs build: {mib} MiB domain built from its ELF image in {build} cycles; restored as built in {fresh_restore} cycles ({}x the build), restored full of data in {restore_cycles} cycles ({}x)",
            ratio(fresh_restore, build),
            ratio(restore_cycles, build)
        );
        // A live checkpoint's pause: the epoch start, for a small and a large domain.
        let big = self.start(ticker, "bench-big", big_mib, "", true)?;
        let mut pauses = Vec::new();
        for id in [d, big] {
            let mut samples = Vec::new();
            for _ in 0..PAUSE_SAMPLES {
                let c0 = cycles();
                let s = self.ctl.snapshot(id, "bench-epoch")?;
                samples.push(cycles() - c0);
                self.ctl.destroy(s)?;
            }
            pauses.push(median(&mut samples));
        }
        let _ = writeln!(
            out,
            "bench checkpoint pause: {mib} MiB {} cycles, {big_mib} MiB {} cycles: {}x (target <= 1.20)",
            pauses[0],
            pauses[1],
            ratio(pauses[1], pauses[0])
        );
        // A mostly-zero large domain.
        let storage = &mut self.storage;
        let Ok(store) = storage.store.as_mut() else { return Ok(()) };
        let mut saver = Saver { ctl: &mut self.ctl, store, digests: &mut storage.digests, ui: &mut quiet, cycles };
        let c0 = cycles();
        let z = saver.save(big, IMAGES[1], Mode::Live, false).map_err(|e| fail(out, &e))?;
        let zero_cycles = cycles() - c0;
        let _ = writeln!(
            out,
            "bench save zero: {big_mib} MiB mostly-zero domain: {} KiB image ({} pages written, {} zero pages elided), 1/{} of its size, {zero_cycles} cycles",
            z.bytes / 1024,
            z.pages_written,
            z.pages_zero,
            (big_mib << 20) / z.bytes.max(1)
        );
        self.ctl.destroy(big)?;
        self.ctl.destroy(d)?;
        // A delta image of an idle clone against a full image of it.
        let demo = self.image("demo")?;
        let t = self.template(demo, "bench-save-t", mib, TEMPLATE_CMDLINE)?;
        let c = self.ctl.clone_domain(t, "bench-save-c", 0, guest_abi::domctl::QUOTA_DEFAULT)?;
        let idle = self.wait_for(c, WaitState::Blocked, 120)?;
        let storage = &mut self.storage;
        let Ok(store) = storage.store.as_mut() else { return Ok(()) };
        let mut saver = Saver { ctl: &mut self.ctl, store, digests: &mut storage.digests, ui: &mut quiet, cycles };
        let delta = saver.save(c, IMAGES[2], Mode::Live, false).map_err(|e| fail(out, &e))?;
        let full = saver.save(c, IMAGES[3], Mode::Live, true).map_err(|e| fail(out, &e))?;
        let _ = writeln!(
            out,
            "bench delta: idle clone of a {mib} MiB template{}: delta {} bytes ({} pages), full {} bytes ({} pages): {}x smaller",
            if idle { "" } else { " (not idle yet)" },
            delta.bytes,
            delta.pages_written,
            full.bytes,
            full.pages_written,
            ratio(full.bytes, delta.bytes)
        );
        // Restoring each: the delta clones the template and writes its private pages, the
        // full image writes every non-zero page into a new domain.
        let c0 = cycles();
        let rd = saver.restore(IMAGES[2], Some("bench-delta-r"), true).map_err(|e| fail(out, &e))?;
        let delta_cycles = cycles() - c0;
        let c0 = cycles();
        let rf = saver.restore(IMAGES[3], Some("bench-full-r"), true).map_err(|e| fail(out, &e))?;
        let full_cycles = cycles() - c0;
        saver.ctl.destroy(rd.domid)?;
        saver.ctl.destroy(rf.domid)?;
        let _ = writeln!(
            out,
            "bench delta restore: delta {delta_cycles} cycles ({} pages), full {full_cycles} cycles ({} pages): {}x faster",
            rd.pages,
            rf.pages,
            ratio(full_cycles, delta_cycles)
        );
        for i in IMAGES {
            let _ = saver.store.remove(i);
        }
        self.ctl.destroy(c)?;
        self.ctl.destroy(t)?;
        Ok(())
    }
}

//! `bench lazy`: what a lazy restore costs and saves, in one run. Time to first instruction
//! (the restore starting until the domain's first demand fault is answered) for a small and
//! a large image of the same guest; one demand fault round trip (fault, request, supply,
//! resume) as the `lazytouch` guest times it, against the copy-on-write fault it takes right
//! after on the same page; demand faults of a second lazy restore that prefetches the first
//! one's working set; and the memory of N lazy restores of one image sharing its pages
//! through dom0's pager against N eager restores. Figures are TSC cycles (instructions under
//! QEMU -icount and Bochs).

use super::{median, ratio};
use crate::control::Hypercalls;
use crate::pager::workset::workset_name;
use crate::save::{Mode, Quiet, Saver};
use crate::shell::{Shell, WaitState};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use guest_abi::{HvError, HvResult};

/// The images the benchmark writes (removed again, with their working sets).
const IMAGES: [&str; 2] = ["bench-lazy-small", "bench-lazy-big"];
/// Pages the `lazytouch` guest fills, reads and writes.
const TOUCH_PAGES: u64 = 512;
/// Lazy restores timed per image size.
const TTFI_ROUNDS: usize = 5;
/// Lazy (and eager) restores of one image in the memory figure.
const SHARE_RESTORES: u32 = 4;
/// Longest wait for a guest step, in seconds.
const STEP_SECS: u64 = 300;

fn fail(out: &mut dyn Write, e: &dyn core::fmt::Display) -> HvError {
    let _ = writeln!(out, "error: bench lazy: {e}");
    HvError::Busy
}

/// The number after `key=` in `line`.
fn figure(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

impl<H: Hypercalls> Shell<H> {
    /// `bench lazy [mib=M] [big=M]`.
    pub(super) fn bench_lazy(&mut self, mib: u64, big_mib: u64, out: &mut dyn Write) -> HvResult<()> {
        let Ok(store) = self.storage.store.as_mut() else {
            let _ = writeln!(out, "error: no image store");
            return Ok(());
        };
        for i in IMAGES {
            let _ = store.remove(i);
            let _ = store.remove(&workset_name(i));
        }
        let lt = self.image("lazytouch")?;
        let cmdline = alloc::format!("pages={TOUCH_PAGES}");
        for (image, m) in [(IMAGES[0], mib), (IMAGES[1], big_mib)] {
            let d = self.start(lt, "bench-lazy", m, &cmdline, false)?;
            if !self.expect_output(d, "filled", STEP_SECS)? {
                return Err(fail(out, &"lazytouch did not fill its pages"));
            }
            self.saver(|s| s.save(d, image, Mode::Save, false).map(|_| ())).map_err(|e| fail(out, &e))?;
        }

        // Time to first instruction: the restore's start to the first demand fault answered,
        // the two sizes in turn so that a drift of the host hits both alike. The disk's
        // latency is the host's under an emulator (file reads behind QEMU's IDE), so the
        // cycles dom0 spent polling a drive not ready yet are counted apart: the target holds
        // on the work, and both are printed.
        let mut work: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        let mut waited: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..TTFI_ROUNDS {
            for (n, image) in IMAGES.iter().enumerate() {
                // Cold: the first request reads its run from the disk.
                self.storage.pager.drop_cache();
                let w0 = self.disk_wait_cycles();
                let t0 = (self.cycles)();
                let id = self.lazy(image, "bench-lazy-t", false, false).map_err(|e| fail(out, &e))?;
                let answered = loop {
                    let s = self.ctl.pager_status(id)?;
                    if s.first_answer_tsc != 0 {
                        break s.first_answer_tsc;
                    }
                    self.idle(10_000_000);
                };
                // Waits after the answer (the pager's background reads) are not the start's.
                let w = self.disk_wait_cycles().wrapping_sub(w0);
                let total = answered.wrapping_sub(t0);
                let w = w.min(total);
                work[n].push(total - w);
                waited[n].push(w);
                self.ctl.destroy(id)?;
                self.storage.pager.retain(&self.ctl.list()?);
            }
        }
        let ttfi = [median(&mut work[0]), median(&mut work[1])];
        let wait = [median(&mut waited[0]), median(&mut waited[1])];
        let _ = writeln!(
            out,
            "bench lazy start: first instruction of a lazy restore {mib} MiB {} cycles, {big_mib} MiB {} cycles, without the disk's latency (median {} and {} cycles waiting on it): {}x (target <= 1.20)",
            ttfi[0],
            ttfi[1],
            wait[0],
            wait[1],
            ratio(ttfi[1], ttfi[0])
        );

        // One demand fault round trip against a copy-on-write fault, as the guest times them
        // (no background fetch, so every first read is a demand fault).
        let id = self.lazy(IMAGES[0], "bench-lazy-rt", false, false).map_err(|e| fail(out, &e))?;
        let line = self.finished_line(id).map_err(|e| fail(out, &e))?;
        let faults = self.ctl.pager_status(id)?.demand_faults;
        let (rt, cow) = (figure(&line, "first-read cycles=").unwrap_or(0), figure(&line, "write-after cycles=").unwrap_or(0));
        let _ = writeln!(
            out,
            "bench lazy fault: demand fault round trip {rt} cycles (median of {TOUCH_PAGES} first reads), copy-on-write fault on the supplied page {cow} cycles: {}x; {faults} demand faults in all",
            ratio(rt, cow)
        );
        self.ctl.destroy(id)?;
        self.settle_pager();

        // Working-set prefetch: a first lazy restore records the pages it touched first, the
        // second prefetches them (their whole runs) before it runs.
        let mut faults = [0u64; 2];
        let mut prefetched = 0;
        for f in faults.iter_mut() {
            // Demand paging alone, as REAP measures it (a background fetch would race the guest).
            let id = self.lazy(IMAGES[0], "bench-lazy-ws", false, false).map_err(|e| fail(out, &e))?;
            prefetched = self.storage.pager.restores().iter().find(|r| r.client == id).map(|r| r.prefetched).unwrap_or(prefetched);
            self.finished_line(id).map_err(|e| fail(out, &e))?;
            *f = self.ctl.pager_status(id)?.demand_faults;
            self.ctl.destroy(id)?;
            // Its restore ends (recording the working set) once the pager sees it gone.
            let storage = &mut self.storage;
            if let Ok(store) = storage.store.as_mut() {
                storage.pager.end(&mut self.ctl, store, id);
            }
        }
        let fewer_x100 = faults[0].saturating_sub(faults[1]) * 10_000 / faults[0].max(1);
        let _ = writeln!(
            out,
            "bench lazy prefetch: demand faults first restore {} second restore {} ({} pages prefetched): {}.{:02}% fewer (target >= 90%)",
            faults[0],
            faults[1],
            prefetched,
            fewer_x100 / 100,
            fewer_x100 % 100
        );

        // Memory: N lazy restores of one image, fully resident and sharing through the pager,
        // against N eager restores.
        let mut used = [0u64; 2];
        for (n, lazy) in [false, true].into_iter().enumerate() {
            let before = self.ctl.hv_info()?.free_kib;
            let mut ids = Vec::new();
            for i in 0..SHARE_RESTORES {
                let name = alloc::format!("bench-lazy-m{i}");
                let id = if lazy {
                    self.lazy(IMAGES[0], &name, true, true).map_err(|e| fail(out, &e))?
                } else {
                    self.saver(|s| s.restore(IMAGES[0], Some(&name), true).map(|r| r.domid)).map_err(|e| fail(out, &e))?
                };
                ids.push(id);
            }
            self.settle_pager();
            used[n] = before.saturating_sub(self.ctl.hv_info()?.free_kib);
            for id in ids {
                self.ctl.destroy(id)?;
            }
        }
        let _ = writeln!(
            out,
            "bench lazy memory: {SHARE_RESTORES} restores of one {mib} MiB image: eager {} KiB, lazy through one pager {} KiB (fully resident): 1/{} of the memory",
            used[0],
            used[1],
            used[0] / used[1].max(1)
        );
        if let Ok(store) = self.storage.store.as_mut() {
            for i in IMAGES {
                let _ = store.remove(i);
                let _ = store.remove(&workset_name(i));
            }
        }
        Ok(())
    }

    /// Runs `f` with a quiet saver over the store.
    fn saver<T>(&mut self, f: impl FnOnce(&mut Saver<'_, H, crate::save::DataDisk>) -> Result<T, crate::save::SaveError>) -> Result<T, crate::save::SaveError> {
        let cycles = self.cycles;
        let storage = &mut self.storage;
        let Ok(store) = storage.store.as_mut() else { return Err(crate::save::SaveError::Hv(HvError::WrongState)) };
        let mut quiet = Quiet;
        let mut saver = Saver { ctl: &mut self.ctl, store, digests: &mut storage.digests, ui: &mut quiet, cycles };
        f(&mut saver)
    }

    /// Restores `image` lazily from dom0's pager.
    fn lazy(&mut self, image: &str, name: &str, paused: bool, background: bool) -> Result<u32, crate::save::SaveError> {
        let cycles = self.cycles;
        let storage = &mut self.storage;
        let Ok(store) = storage.store.as_mut() else { return Err(crate::save::SaveError::Hv(HvError::WrongState)) };
        let mut quiet = Quiet;
        let mut saver = Saver { ctl: &mut self.ctl, store, digests: &mut storage.digests, ui: &mut quiet, cycles };
        saver.restore_lazy(&mut storage.pager, image, Some(name), paused, None, background).map(|r| r.domid)
    }

    /// Waits for `lazytouch` domain `id` to end and returns its result line.
    fn finished_line(&mut self, id: u32) -> Result<String, &'static str> {
        if !self.wait_for(id, WaitState::Dead, STEP_SECS).map_err(|_| "cannot wait")? {
            return Err("lazytouch did not finish");
        }
        let mut buf = [0u8; 1024];
        let (n, _) = self.ctl.console(id, 0, &mut buf).map_err(|_| "no console")?;
        let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
        let line = text.lines().find(|l| l.contains("verified")).ok_or("lazytouch failed (no verified line)")?;
        Ok(String::from(line))
    }

    /// Lets dom0's pager finish every restore it serves (or give up on ended ones).
    fn settle_pager(&mut self) {
        if let Ok(live) = self.ctl.list() {
            self.storage.pager.retain(&live);
        }
        while self.storage.pager.busy() {
            if !self.serve_pager() {
                break;
            }
        }
        // Restores of domains that ended are noticed on the next unit; one more round.
        let _ = self.serve_pager();
    }
}

impl<H: Hypercalls> Shell<H> {
    /// Cycles dom0 has spent waiting on its data disk (0 without one).
    fn disk_wait_cycles(&mut self) -> u64 {
        self.storage.store.as_mut().map(|s| store::BlockDevice::wait_cycles(s.device())).unwrap_or(0)
    }
}

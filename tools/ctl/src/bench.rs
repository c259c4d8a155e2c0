//! The shell's `bench` commands: clone latency against template size, clone against building
//! the same domain from its image, hypervisor memory per idle clone, clone density until memory
//! runs out, and the copy-on-write fault cost (measured inside a clone by `cowbench`). Times are
//! guest TSC cycles read in dom0 around each hypercall; under `-icount` they are instruction
//! counts.

use crate::control::Hypercalls;
use crate::launch::{LaunchError, LaunchSpec, launch};
use crate::shell::{Image, Shell, WaitState};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use guest_abi::domctl::{CLONE_PHASE_NAMES, CLONE_PHASES, QUOTA_DEFAULT, state};
use guest_abi::{HvError, HvResult};

/// What `bench` measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bench {
    /// Clone latency for templates of `sizes` MiB, and building the smallest from its image.
    Clone { image: String, sizes: Vec<u64>, count: u32 },
    /// Hypervisor memory per idle clone.
    Memory { image: String, count: u32, mem_mib: u64 },
    /// Clone a template until memory runs out; count clones that printed their identity.
    Density { image: String, mem_mib: u64, max: u32 },
    /// Copy-on-write fault against a 4 KiB copy plus a null hypercall.
    Cow { image: String },
    /// Create, clone and destroy `count` times; free frames and heap must come back exactly.
    Lifecycle { image: String, count: u32 },
    /// Save, restore and checkpoint costs against the raw disk; `big_mib` is the large
    /// (mostly zero) domain of the checkpoint-pause and zero-elision figures.
    Save { mem_mib: u64, big_mib: u64 },
    /// Linux: boot to the ready line against clone to the first line, idle clone memory.
    Linux { count: u32, mem_mib: u64 },
    /// Linux clones of one template until memory runs out.
    LinuxDensity { mem_mib: u64, max: u32 },
    /// Lazy restore: time to first instruction at two sizes, a demand fault, working-set
    /// prefetch, memory shared through the pager.
    Lazy { mem_mib: u64, big_mib: u64 },
}

mod lazy;
mod linux;
mod save;

/// Memory of the domains the lifecycle benchmark creates, and of the template it clones.
const LIFECYCLE_MEM_MIB: u64 = 2;
const LIFECYCLE_TEMPLATE_MIB: u64 = 16;
/// The lifecycle benchmark prints its progress this often.
const LIFECYCLE_REPORT_EVERY: u32 = 2500;

/// Idle time before a clone series (the hypervisor zeroes frames ahead of need meanwhile).
const CLONE_SETTLE_NS: u64 = 20_000_000;
/// How long a template may take to freeze itself.
const FREEZE_WAIT_SECS: u64 = 300;
/// How long clones may take to report after the last one is made.
const REPORT_WAIT_SECS: u64 = 600;
/// The demo's command line for benchmark templates: a small working set, few checks.
const TEMPLATE_CMDLINE: &str = "ws_mib=1 check=2 writes=2";

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// `a / b` with two decimals.
fn ratio(a: u64, b: u64) -> String {
    let x100 = a.saturating_mul(100) / b.max(1);
    format!("{}.{:02}", x100 / 100, x100 % 100)
}

impl<H: Hypercalls> Shell<H> {
    fn image(&self, name: &str) -> HvResult<Image> {
        self.images.iter().find(|i| i.name == name).copied().ok_or(HvError::InvalidArgument)
    }

    fn start(&mut self, image: Image, name: &str, mem_mib: u64, cmdline: &str, paused: bool) -> HvResult<u32> {
        let spec = LaunchSpec { image: image.data, name, mem_bytes: mem_mib << 20, cmdline, paused };
        launch(&mut self.ctl, &spec, self.call_insn, self.tsc_khz).map_err(|e| match e {
            LaunchError::Hv(e) => e,
            LaunchError::Build(_) => HvError::BadImage,
        })
    }

    /// Waits until domain `id` is in `want` or `secs` pass; returns whether it got there.
    /// Domain state changes (the DOMAIN_STATE event) wake it early.
    pub fn wait_for(&mut self, id: u32, want: WaitState, secs: u64) -> HvResult<bool> {
        let deadline = self.ctl.time_ns()?.saturating_add(secs.saturating_mul(1_000_000_000));
        loop {
            let info = match self.ctl.info(id) {
                Ok(i) => Some(i),
                Err(HvError::NoSuchDomain) => None,
                Err(e) => return Err(e),
            };
            if want.matches(info.as_ref()) {
                return Ok(true);
            }
            let now = self.ctl.time_ns()?;
            if now >= deadline {
                return Ok(false);
            }
            self.idle((deadline - now).min(50_000_000));
        }
    }

    fn template(&mut self, image: Image, name: &str, mem_mib: u64, cmdline: &str) -> HvResult<u32> {
        let id = self.start(image, name, mem_mib, cmdline, false)?;
        if !self.wait_for(id, WaitState::Frozen, FREEZE_WAIT_SECS)? {
            let _ = self.ctl.destroy(id);
            return Err(HvError::TimedOut);
        }
        Ok(id)
    }

    /// Whether clone `id` printed its identity line, and whether that says `ok`.
    fn reported(&mut self, id: u32) -> HvResult<Option<bool>> {
        let mut buf = [0u8; 512];
        let (n, _) = self.ctl.console(id, 0, &mut buf)?;
        let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
        Ok(text.lines().find(|l| l.contains(" shared-data ")).map(|l| l.ends_with("shared-data ok")))
    }

    /// Runs a benchmark.
    pub fn bench(&mut self, b: Bench, out: &mut dyn Write) -> HvResult<()> {
        match b {
            Bench::Clone { image, sizes, count } => self.bench_clone(&image, &sizes, count, out),
            Bench::Memory { image, count, mem_mib } => self.bench_memory(&image, count, mem_mib, out),
            Bench::Density { image, mem_mib, max } => self.bench_density(&image, mem_mib, max, out),
            Bench::Cow { image } => self.bench_cow(&image, out),
            Bench::Lifecycle { image, count } => self.bench_lifecycle(&image, count, out),
            Bench::Save { mem_mib, big_mib } => self.bench_save(mem_mib, big_mib, out),
            Bench::Linux { count, mem_mib } => self.bench_linux(count, mem_mib, out),
            Bench::LinuxDensity { mem_mib, max } => self.bench_linux_density(mem_mib, max, out),
            Bench::Lazy { mem_mib, big_mib } => self.bench_lazy(mem_mib, big_mib, out),
        }
    }

    fn bench_lifecycle(&mut self, image: &str, count: u32, out: &mut dyn Write) -> HvResult<()> {
        let img = self.image(image)?;
        let t = self.template(img, "bench-life-t", LIFECYCLE_TEMPLATE_MIB, TEMPLATE_CMDLINE)?;
        let baseline = self.ctl.hv_info()?;
        let c0 = (self.cycles)();
        for i in 0..count {
            let d = self.ctl.create("bench-life-d", LIFECYCLE_MEM_MIB << 20)?;
            let c = self.ctl.clone_domain(t, "bench-life-c", i, QUOTA_DEFAULT)?;
            self.ctl.destroy(c)?;
            self.ctl.destroy(d)?;
            if (i + 1) % LIFECYCLE_REPORT_EVERY == 0 {
                let now = self.ctl.hv_info()?;
                let _ = writeln!(out, "bench lifecycle: {} cycles, {} KiB free, {} KiB heap free", i + 1, now.free_kib, now.heap_free_kib);
            }
        }
        let c1 = (self.cycles)();
        let end = self.ctl.hv_info()?;
        let exact = end.free_kib == baseline.free_kib && end.heap_free_kib == baseline.heap_free_kib;
        let _ = writeln!(
            out,
            "bench lifecycle: {count} create/clone/destroy cycles, {} cycles each on average; free {} KiB (was {}), heap free {} KiB (was {}): {}",
            (c1 - c0) / u64::from(count.max(1)),
            end.free_kib,
            baseline.free_kib,
            end.heap_free_kib,
            baseline.heap_free_kib,
            if exact { "back exactly" } else { "NOT BACK" }
        );
        self.ctl.destroy(t)?;
        Ok(())
    }

    fn bench_clone(&mut self, image: &str, sizes: &[u64], count: u32, out: &mut dyn Write) -> HvResult<()> {
        let img = self.image(image)?;
        let mut medians = Vec::new();
        for &mib in sizes {
            let t = self.template(img, &format!("bench-t{mib}"), mib, TEMPLATE_CMDLINE)?;
            let mut cycles = Vec::new();
            let mut clones = Vec::new();
            let mut phases: [Vec<u64>; CLONE_PHASES] = Default::default();
            // A moment of idle time first, as a machine stamping out clones has had: the
            // hypervisor fills its pool of pre-zeroed frames then.
            self.ctl.block(CLONE_SETTLE_NS)?;
            self.ctl.event_ack()?;
            let pool_kib = self.ctl.hv_info()?.zeroed_kib;
            for i in 0..count {
                let name = format!("bench-c{mib}-{i}");
                let c0 = (self.cycles)();
                let r = self.ctl.clone_domain(t, &name, i, QUOTA_DEFAULT);
                let c1 = (self.cycles)();
                match r {
                    Ok(id) => {
                        cycles.push(c1 - c0);
                        clones.push(id);
                        // Read after the clone, outside the timed call.
                        let info = self.ctl.hv_info()?;
                        for (all, &c) in phases.iter_mut().zip(&info.last_clone_cycles) {
                            all.push(c);
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error: clone {i} of the {mib} MiB template: {e}");
                        break;
                    }
                }
            }
            for id in clones {
                let _ = self.ctl.destroy(id);
            }
            self.ctl.destroy(t)?;
            let n = cycles.len();
            let min = cycles.iter().copied().min().unwrap_or(0);
            let med = median(&mut cycles);
            let _ = writeln!(out, "bench clone: {mib} MiB template: median {med} min {min} cycles (n={n})");
            let mut line = format!("bench clone breakdown: {mib} MiB template, medians:");
            let mut inside = 0;
            for (name, all) in CLONE_PHASE_NAMES.iter().zip(phases.iter_mut()) {
                let m = median(all);
                inside += m;
                let _ = write!(line, " {name} {m},");
            }
            let _ = writeln!(
                out,
                "{line} the control hypercall's way in and out of the hypervisor {} (pre-zeroed pool {pool_kib} KiB at the start)",
                med.saturating_sub(inside)
            );
            medians.push((mib, med));
        }
        if let (Some(&(small, s)), Some(&(big, b))) = (medians.first(), medians.last()) {
            if big != small {
                let _ = writeln!(out, "bench clone: {big} MiB vs {small} MiB template: {}x (target <= 1.50)", ratio(b, s));
            }
        }
        // Building the same (smallest) domain from its image, for comparison.
        if let Some(&(mib, clone_cycles)) = medians.first() {
            let mut cycles = Vec::new();
            for i in 0..count.clamp(1, 5) {
                let c0 = (self.cycles)();
                let id = self.start(img, &format!("bench-b{i}"), mib, TEMPLATE_CMDLINE, true)?;
                let c1 = (self.cycles)();
                cycles.push(c1 - c0);
                self.ctl.destroy(id)?;
            }
            let build = median(&mut cycles);
            let _ = writeln!(out, "bench build: {mib} MiB domain from its image: median {build} cycles (n={})", cycles.len());
            let _ = writeln!(out, "bench clone vs build: clone is {}x faster (target >= 100)", ratio(build, clone_cycles));
        }
        Ok(())
    }

    fn bench_memory(&mut self, image: &str, count: u32, mem_mib: u64, out: &mut dyn Write) -> HvResult<()> {
        let img = self.image(image)?;
        let baseline = self.ctl.hv_info()?;
        let t = self.template(img, "bench-mem-t", mem_mib, "ws_mib=4 check=2 writes=4")?;
        let before = self.ctl.hv_info()?;
        let mut clones = Vec::new();
        for i in 0..count {
            clones.push(self.ctl.clone_domain(t, &format!("bench-mem-{i}"), i, QUOTA_DEFAULT)?);
        }
        // Idle: every clone has reported and is blocked.
        let deadline = self.ctl.time_ns()? + REPORT_WAIT_SECS * 1_000_000_000;
        for &id in &clones {
            while !(self.reported(id)? == Some(true) && self.ctl.info(id)?.state == state::BLOCKED) {
                if self.ctl.time_ns()? > deadline {
                    let _ = writeln!(out, "error: clone {id} did not go idle");
                    return Err(HvError::TimedOut);
                }
                self.ctl.block(10_000_000)?;
                self.ctl.event_ack()?;
            }
        }
        let after = self.ctl.hv_info()?;
        let mut private_pages = 0u64;
        let mut overhead = 0u64;
        for &id in &clones {
            let s = self.ctl.stat(id)?;
            private_pages += s.private_pages;
            overhead += s.overhead_bytes;
        }
        let n = count.max(1) as u64;
        let used_kib = before.free_kib.saturating_sub(after.free_kib);
        let private_kib = private_pages * 4;
        let frames_bytes = (used_kib.saturating_sub(private_kib)) * 1024 / n;
        let heap_bytes = before.heap_free_kib.saturating_sub(after.heap_free_kib) * 1024 / n;
        let hv_bytes = frames_bytes + heap_bytes;
        let _ = writeln!(out, "bench memory: {n} idle clones of a {mem_mib} MiB template");
        let _ = writeln!(
            out,
            "bench memory: per clone {} KiB private (pages it wrote), hypervisor {} bytes = {}.{} KiB ({} bytes of frames + {} bytes of heap) (target <= 32 KiB)",
            private_kib / n,
            hv_bytes,
            hv_bytes / 1024,
            (hv_bytes % 1024) * 10 / 1024,
            frames_bytes,
            heap_bytes
        );
        let _ = writeln!(out, "bench memory: the hypervisor's own estimate (stat overhead_bytes): {} bytes per clone", overhead / n);
        for id in clones {
            self.ctl.destroy(id)?;
        }
        self.ctl.destroy(t)?;
        let end = self.ctl.hv_info()?;
        let back = if end.free_kib == baseline.free_kib { "yes" } else { "NO" };
        let _ = writeln!(
            out,
            "bench memory: all memory back after destroying clones and template: {back} ({} KiB free, {} KiB before)",
            end.free_kib, baseline.free_kib
        );
        Ok(())
    }

    fn bench_density(&mut self, image: &str, mem_mib: u64, max: u32, out: &mut dyn Write) -> HvResult<()> {
        let img = self.image(image)?;
        let start = self.ctl.hv_info()?;
        let t = self.template(img, "bench-dense-t", mem_mib, "ws_mib=4 check=1 writes=1")?;
        let mut clones = Vec::new();
        let stop = loop {
            if clones.len() as u32 >= max {
                break String::from("the requested maximum");
            }
            match self.ctl.clone_domain(t, &format!("d{}", clones.len()), clones.len() as u32, QUOTA_DEFAULT) {
                Ok(id) => clones.push(id),
                Err(e) => break format!("{e}"),
            }
            if clones.len() % 1000 == 0 {
                let _ = writeln!(out, "bench density: {} clones so far", clones.len());
                // Let the new clones run before making more.
                self.ctl.block(1_000_000)?;
                self.ctl.event_ack()?;
            }
        };
        let _ = writeln!(out, "bench density: made {} clones, stopped by: {stop}", clones.len());
        let deadline = self.ctl.time_ns()? + REPORT_WAIT_SECS * 1_000_000_000;
        let (mut ok, mut failed, mut paused, mut crashed, mut late) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for &id in &clones {
            loop {
                match self.reported(id)? {
                    Some(true) => {
                        ok += 1;
                        break;
                    }
                    Some(false) => {
                        failed += 1;
                        break;
                    }
                    None => {
                        // Not reported yet: wait while it can still run; a paused, crashed or
                        // dead clone will never report.
                        let st = self.ctl.info(id)?;
                        match st.state {
                            state::RUNNING | state::BLOCKED if self.ctl.time_ns()? <= deadline => {}
                            state::RUNNING | state::BLOCKED => {
                                late += 1;
                                break;
                            }
                            state::PAUSED => {
                                paused += 1;
                                break;
                            }
                            _ => {
                                crashed += 1;
                                break;
                            }
                        }
                        self.ctl.block(10_000_000)?;
                        self.ctl.event_ack()?;
                    }
                }
            }
        }
        let end = self.ctl.hv_info()?;
        let running = self.ctl.list()?.iter().filter(|&&id| matches!(self.ctl.info(id).map(|i| i.state), Ok(state::RUNNING | state::BLOCKED))).count();
        let _ = writeln!(
            out,
            "bench density: {ok} clones printed their identity (shared-data ok), {failed} reported a failure, \
             {paused} paused before reporting (memory ran out), {crashed} crashed or died silently, {late} still running after {REPORT_WAIT_SECS} s"
        );
        let _ = writeln!(
            out,
            "bench density: {running} live domains on a {} MiB machine; {} KiB free of {} KiB at the start; {} KiB saved by sharing",
            start.total_kib / 1024,
            end.free_kib,
            start.free_kib,
            end.saved_kib
        );
        Ok(())
    }

    fn bench_cow(&mut self, image: &str, out: &mut dyn Write) -> HvResult<()> {
        let img = self.image(image)?;
        let t = self.template(img, "bench-cow-t", 16, "pages=256")?;
        let c = self.ctl.clone_domain(t, "bench-cow-c", 0, QUOTA_DEFAULT)?;
        let done = self.wait_for(c, WaitState::Dead, FREEZE_WAIT_SECS)?;
        let mut buf = [0u8; 1024];
        let (n, _) = self.ctl.console(c, 0, &mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        for line in text.lines() {
            let _ = writeln!(out, "bench cow: {line}");
        }
        if !done {
            let _ = writeln!(out, "error: the measuring clone did not finish");
        }
        self.ctl.destroy(c)?;
        self.ctl.destroy(t)?;
        Ok(())
    }
}

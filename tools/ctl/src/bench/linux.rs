//! `bench linux` and `bench linux-density`: an unmodified Linux kernel as a template. Boot to
//! the agent's ready line (the domain parks right after it) against cloning the frozen
//! template to the clone's first line (the agent's identity line); the memory an idle
//! clone costs once it has reconfigured itself (its private pages and the hypervisor's
//! bytes for it); and how many clones that printed their identity fit in the machine.

use super::{median, ratio};
use crate::control::Hypercalls;
use crate::linux::{LaunchLinux, default_cmdline, launch_linux};
use crate::shell::{Shell, WaitState};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use guest_abi::domctl::{QUOTA_DEFAULT, state};
use guest_abi::{HvError, HvResult};

/// The kernel image and its initramfs in the boot bundle.
const KERNEL_IMAGE: &str = "linux";
const INITRD_IMAGE: &str = "linux-initrd";
/// How long the template may take to boot to its park point.
const BOOT_WAIT_SECS: u64 = 1800;
/// The agent's identity line in a clone.
const IDENTITY_LINE: &str = "cowvisor-agent: clone-";
/// How often a clone's console is looked at while waiting for its first line.
const POLL_NS: u64 = 100_000;
/// How long a clone may take to print its identity.
const IDENTITY_WAIT_NS: u64 = 300_000_000_000;
/// Idle time before the clones' memory is counted (they finish starting their shells).
const SETTLE_NS: u64 = 3_000_000_000;
/// Clones made between two looks at the density run's progress.
const DENSITY_BATCH: usize = 25;

impl<H: Hypercalls> Shell<H> {
    /// Boots the Linux template, parked at its freeze point, and freezes it; returns its id
    /// and the cycles from creation to the park.
    fn linux_template(&mut self, name: &str, mem_mib: u64) -> HvResult<(u32, u64)> {
        let kernel = self.images.iter().find(|i| i.name == KERNEL_IMAGE).map(|i| i.data).ok_or(HvError::InvalidArgument)?;
        let initrd = self.images.iter().find(|i| i.name == INITRD_IMAGE).map(|i| i.data).unwrap_or(&[]);
        let cmdline = default_cmdline(self.tsc_khz);
        let spec = LaunchLinux { kernel, initrd, name, mem_bytes: mem_mib << 20, cmdline: &cmdline, paused: false };
        let t0 = (self.cycles)();
        let id = launch_linux(&mut self.ctl, &spec, self.call_insn, self.tsc_khz).map_err(|_| HvError::BadImage)?;
        if !self.wait_for(id, WaitState::Paused, BOOT_WAIT_SECS)? {
            let _ = self.ctl.destroy(id);
            return Err(HvError::TimedOut);
        }
        let booted = (self.cycles)().wrapping_sub(t0);
        self.ctl.freeze(id)?;
        Ok((id, booted))
    }

    /// Whether clone `id` printed its identity line.
    fn linux_reported(&mut self, id: u32) -> HvResult<bool> {
        let mut buf = [0u8; 512];
        let (n, _) = self.ctl.console(id, 0, &mut buf)?;
        Ok(buf[..n].windows(IDENTITY_LINE.len()).any(|w| w == IDENTITY_LINE.as_bytes()))
    }

    /// Clones `t` and waits for the clone's identity line; the clone and the cycles it took.
    fn timed_linux_clone(&mut self, t: u32, index: u32) -> HvResult<(u32, u64)> {
        let t0 = (self.cycles)();
        let id = self.ctl.clone_domain(t, &format!("bench-lx-{index}"), index, QUOTA_DEFAULT)?;
        let deadline = self.ctl.time_ns()?.saturating_add(IDENTITY_WAIT_NS);
        while !self.linux_reported(id)? {
            if self.ctl.time_ns()? > deadline {
                return Err(HvError::TimedOut);
            }
            self.ctl.block(POLL_NS)?;
            self.ctl.event_ack()?;
        }
        Ok((id, (self.cycles)().wrapping_sub(t0)))
    }

    fn settle(&mut self, ns: u64) -> HvResult<()> {
        let deadline = self.ctl.time_ns()?.saturating_add(ns);
        loop {
            let now = self.ctl.time_ns()?;
            if now >= deadline {
                return Ok(());
            }
            self.ctl.block(deadline - now)?;
            self.ctl.event_ack()?;
        }
    }

    pub(super) fn bench_linux(&mut self, count: u32, mem_mib: u64, out: &mut dyn Write) -> HvResult<()> {
        let (t, booted) = self.linux_template("bench-lx-t", mem_mib)?;
        let mut clone_cycles = Vec::new();
        let mut clones = Vec::new();
        for i in 0..count {
            let (id, c) = self.timed_linux_clone(t, i)?;
            clones.push(id);
            clone_cycles.push(c);
        }
        let min = clone_cycles.iter().copied().min().unwrap_or(0);
        let clone_med = median(&mut clone_cycles);
        let _ = writeln!(out, "bench linux: boot to ready line: {booted} cycles ({mem_mib} MiB template)");
        let _ = writeln!(
            out,
            "bench linux: clone to first line: median {clone_med} cycles, min {min} ({count} clones); boot/clone: {}x",
            ratio(booted, clone_med)
        );
        self.settle(SETTLE_NS)?;
        let mut private = Vec::new();
        let mut overhead = Vec::new();
        for &id in &clones {
            let s = self.ctl.stat(id)?;
            private.push(s.private_pages * 4);
            overhead.push(s.overhead_bytes);
        }
        let (p, o) = (median(&mut private), median(&mut overhead));
        let _ = writeln!(out, "bench linux: idle clone after reconfiguring: {p} KiB private + {o} bytes in the hypervisor (median of {count})");
        for id in clones {
            self.ctl.destroy(id)?;
        }
        self.ctl.destroy(t)?;
        Ok(())
    }

    pub(super) fn bench_linux_density(&mut self, mem_mib: u64, max: u32, out: &mut dyn Write) -> HvResult<()> {
        let start = self.ctl.hv_info()?;
        let (t, _) = self.linux_template("bench-lxd-t", mem_mib)?;
        let mut clones: Vec<u32> = Vec::new();
        let mut reported = 0usize;
        let stop = 'making: loop {
            for _ in 0..DENSITY_BATCH {
                if clones.len() as u32 >= max {
                    break 'making String::from("the requested maximum");
                }
                let n = clones.len() as u32;
                match self.ctl.clone_domain(t, &format!("lxd{n}"), n, QUOTA_DEFAULT) {
                    Ok(id) => clones.push(id),
                    Err(e) => break 'making format!("{e}"),
                }
            }
            // Let the batch start; a clone that ran out of memory is paused and stops the run.
            let deadline = self.ctl.time_ns()?.saturating_add(IDENTITY_WAIT_NS);
            let mut i = reported;
            while i < clones.len() {
                let id = clones[i];
                if self.linux_reported(id)? {
                    i += 1;
                    continue;
                }
                let st = self.ctl.info(id)?.state;
                if st == state::PAUSED || !matches!(st, state::RUNNING | state::BLOCKED) || self.ctl.time_ns()? > deadline {
                    break 'making format!("clone {i} could not start (state {})", state::name(st));
                }
                self.ctl.block(1_000_000)?;
                self.ctl.event_ack()?;
            }
            reported = i;
            if clones.len() % 100 == 0 {
                let _ = writeln!(out, "bench linux-density: {} clones so far", clones.len());
            }
        };
        let mut ok = 0u32;
        for &id in &clones {
            if self.linux_reported(id)? {
                ok += 1;
            }
        }
        let end = self.ctl.hv_info()?;
        let _ = writeln!(out, "bench linux-density: made {} clones of a {mem_mib} MiB Linux template, stopped by: {stop}", clones.len());
        let _ = writeln!(
            out,
            "bench linux-density: {ok} clones printed their identity on a {} MiB machine; {} KiB free of {} KiB at the start; {} KiB saved by sharing",
            start.total_kib / 1024,
            end.free_kib,
            start.free_kib,
            end.saved_kib
        );
        for id in clones {
            let _ = self.ctl.destroy(id);
        }
        let _ = self.ctl.destroy(t);
        Ok(())
    }
}

//! The shell's side of lazy restore: `pager` (list the lazy restores, hand a client to another
//! pager), the lazy lines of `stat`, and the idle loop that lets dom0's pager work whenever
//! the shell waits.

use super::{Command, Shell};
use crate::control::Hypercalls;
use crate::pager::BACKGROUND_UNITS_PER_POLL;
use core::fmt::Write;
use guest_abi::HvResult;
use guest_abi::domctl::{DomainFlags, NO_DOMAIN, name_str};
use guest_abi::pager::LazyStatus;

impl<H: Hypercalls> Shell<H> {
    /// Waits up to `timeout_ns` (0: until an event) for something to happen, serving dom0's
    /// pager meanwhile: with pager work left it does some and returns without sleeping.
    pub fn idle(&mut self, timeout_ns: u64) {
        if self.serve_channels() {
            return;
        }
        if self.serve_pager() {
            return;
        }
        let _ = self.ctl.block(timeout_ns);
        let _ = self.ctl.event_ack();
    }

    /// One round of dom0's pager; whether work is left.
    pub fn serve_pager(&mut self) -> bool {
        let storage = &mut self.storage;
        if !storage.pager.busy() {
            return false;
        }
        let Ok(store) = storage.store.as_mut() else { return false };
        storage.pager.poll(&mut self.ctl, store, BACKGROUND_UNITS_PER_POLL)
    }

    /// Makes a lazily restored domain fully resident, if dom0 serves it.
    pub(super) fn complete_lazy(&mut self, id: u32) {
        let storage = &mut self.storage;
        let Ok(store) = storage.store.as_mut() else { return };
        storage.pager.complete(&mut self.ctl, store, id);
    }

    pub(super) fn lazy_stat(&mut self, l: &LazyStatus, out: &mut dyn Write) {
        let pager = if l.pager == NO_DOMAIN { alloc::string::String::from("none") } else { alloc::format!("{}", l.pager) };
        let _ = writeln!(out, "lazy_missing_pages: {}", l.missing_pages);
        let _ = writeln!(out, "lazy_pager: {pager}");
        let _ = writeln!(out, "lazy_demand_faults: {}", l.demand_faults);
        let _ = writeln!(out, "lazy_supplied_pages: {}", l.supplied_pages);
        let _ = writeln!(out, "lazy_shared_supplied: {}", l.shared_supplied);
        let _ = writeln!(out, "lazy_wait_cycles: {}", l.wait_cycles);
    }

    pub(super) fn pager_command(&mut self, cmd: Command, out: &mut dyn Write) -> HvResult<()> {
        match cmd {
            Command::PagerList => {
                let _ = writeln!(out, "{:<20} {:>5} {:<18} {:>6} {:>9} {:>8} {:>10}  State", "Client", "ID", "Image", "Pager", "Missing", "Faults", "Prefetched");
                for id in self.ctl.list()? {
                    let Ok(info) = self.ctl.info(id) else { continue };
                    if info.flags & DomainFlags::LAZY.bits() == 0 {
                        continue;
                    }
                    let Ok(l) = self.ctl.pager_status(id) else { continue };
                    let known = self.storage.pager.restores().iter().find(|r| r.client == id);
                    let image = known.map(|r| r.image.as_str()).unwrap_or("?");
                    let prefetched = known.map(|r| r.prefetched).unwrap_or(0);
                    let pager = if l.pager == NO_DOMAIN { alloc::string::String::from("none") } else { alloc::format!("{}", l.pager) };
                    let _ = writeln!(
                        out,
                        "{:<20} {:>5} {:<18} {:>6} {:>9} {:>8} {:>10}  {}",
                        name_str(&info.name),
                        id,
                        image,
                        pager,
                        l.missing_pages,
                        l.demand_faults,
                        prefetched,
                        super::state_text(&info)
                    );
                }
                for f in &self.storage.pager.finished {
                    let end = match &f.failure {
                        None => alloc::string::String::from("resident"),
                        Some(why) => alloc::format!("given up: {why}"),
                    };
                    let _ = writeln!(
                        out,
                        "done: {} (domain {}) from {}: {end}, {} demand faults, {} prefetched, {} cycles waiting",
                        f.domain, f.client, f.image, f.demand_faults, f.prefetched, f.wait_cycles
                    );
                }
            }
            Command::PagerSet { client, to, timeout_ms } => {
                let c = self.resolve(&client)?;
                let p = self.resolve(&to)?;
                let dom0 = self.dom0_id();
                if p == dom0 && !self.storage.pager.restores().iter().any(|r| r.client == c) {
                    let _ = writeln!(out, "error: dom0 does not know the image of domain {c}");
                    return Ok(());
                }
                if p == dom0 {
                    if let Err(e) = self.storage.pager.ensure_ready(&mut self.ctl) {
                        let _ = writeln!(out, "error: {e}");
                        return Ok(());
                    }
                } else if self.storage.pager.image_of(c).is_some() {
                    // Another pagerd domain: it gets the image's mirror first.
                    let storage = &mut self.storage;
                    let Ok(store) = storage.store.as_mut() else { return Ok(()) };
                    let mut saver = crate::save::Saver { ctl: &mut self.ctl, store, digests: &mut storage.digests, ui: &mut *storage.ui, cycles: self.cycles };
                    if let Err(e) = saver.hand_over(&mut storage.pager, c, p) {
                        let _ = writeln!(out, "error: {e}");
                        return Ok(());
                    }
                }
                match self.ctl.pager_set(c, p, timeout_ms) {
                    Ok(()) => {
                        self.storage.pager.set_delegated(c, p != dom0);
                        let _ = writeln!(out, "domain {c} is served by pager domain {p}");
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// dom0's own domain id (the privileged domain).
    fn dom0_id(&mut self) -> u32 {
        for id in self.ctl.list().unwrap_or_default() {
            if self.ctl.info(id).is_ok_and(|i| i.flags & DomainFlags::PRIVILEGED.bits() != 0) {
                return id;
            }
        }
        0
    }
}

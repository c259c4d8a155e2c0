//! The shell's image commands: `save`, `checkpoint`, `restore`, `store`, `rm`, `verify`, over
//! the image store on dom0's data disk ([`crate::save`]).

use super::{Command, Shell};
use crate::control::Hypercalls;
use crate::save::{Mode, Saver, kind_name, saved_line, short_digest};
use alloc::string::String;
use core::fmt::Write;
use guest_abi::HvResult;
use guest_abi::domctl::name_str;

impl<H: Hypercalls> Shell<H> {
    pub(super) fn storage_command(&mut self, cmd: Command, out: &mut dyn Write) -> HvResult<()> {
        let storage = &mut self.storage;
        let store = match storage.store.as_mut() {
            Ok(s) => s,
            Err(why) => {
                let _ = writeln!(out, "error: no image store: {why}");
                return Ok(());
            }
        };
        match cmd {
            Command::StoreList => {
                let _ = writeln!(out, "{:<24} {:<9} {:>10} Origin", "Name", "Kind", "Size(KiB)");
                for e in store.list() {
                    let _ = writeln!(out, "{:<24} {:<9} {:>10} {}", e.name, e.kind, e.size_bytes.div_ceil(1024), e.origin);
                }
                let _ = writeln!(out, "free: {} KiB of {} KiB", store.free_bytes() / 1024, store.capacity_bytes() / 1024);
                return Ok(());
            }
            Command::Rm(names) => {
                for n in names {
                    match store.remove(&n) {
                        Ok(()) => {
                            // Its working set goes with it.
                            let ws = crate::pager::workset::workset_name(&n);
                            if store.find(&ws).is_some_and(|e| e.kind == store::ImageKind::WorkingSet) {
                                let _ = store.remove(&ws);
                            }
                            let _ = writeln!(out, "removed image {n}");
                        }
                        Err(e) => {
                            let _ = writeln!(out, "error: {n}: {e}");
                        }
                    }
                }
                return Ok(());
            }
            _ => {}
        }
        if matches!(cmd, Command::PagerList | Command::PagerSet { .. }) {
            return self.pager_command(cmd, out);
        }
        // The rest name domains: resolve before the saver borrows the control interface.
        let target = match &cmd {
            Command::Save { target, .. } | Command::Checkpoint { target, .. } => Some(self.resolve(target)?),
            Command::Restore { pager: Some(p), .. } => match self.resolve(p) {
                Ok(id) => Some(id),
                Err(e) => {
                    let _ = writeln!(out, "error: pager {}: {e}", self.describe(p));
                    return Ok(());
                }
            },
            _ => None,
        };
        // A save reads all of the domain's memory: a lazy restore of it is completed first.
        if let (Command::Save { .. } | Command::Checkpoint { .. }, Some(id)) = (&cmd, target) {
            self.complete_lazy(id);
        }
        let storage = &mut self.storage;
        let Ok(store) = storage.store.as_mut() else { return Ok(()) };
        let mut saver = Saver { ctl: &mut self.ctl, store, digests: &mut storage.digests, ui: &mut *storage.ui, cycles: self.cycles };
        let cmd = match cmd {
            Command::Checkpoint { target, image, full } => Command::Save { target, image, keep: true, full },
            c => c,
        };
        match cmd {
            Command::Save { image, keep, full, .. } => {
                let id = target.unwrap_or(0);
                let name = saver.ctl.info(id).map(|i| String::from(name_str(&i.name))).unwrap_or_default();
                let mode = if keep { Mode::Live } else { Mode::Save };
                match saver.save(id, &image, mode, full) {
                    Ok(s) => {
                        let verb = if keep { "checkpointed" } else { "saved" };
                        let _ = writeln!(out, "{}", saved_line(verb, id, &name, &s));
                        let _ = writeln!(out, "digest {} paused {} cycles", short_digest(&s.digest), s.pause_cycles);
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            Command::Restore { image, name, paused, lazy: true, background, .. } => {
                match saver.restore_lazy(&mut storage.pager, &image, name.as_deref(), paused, target, background) {
                    Ok(r) => {
                        let by = match target {
                            Some(p) => alloc::format!("pager domain {p}"),
                            None => String::from("dom0"),
                        };
                        let _ = writeln!(
                            out,
                            "restored domain {} {} from {image} lazily (domain, {} MiB; pages on first touch from {by}; {} prefetched; started in {} cycles)",
                            r.domid,
                            r.name,
                            r.mem_bytes >> 20,
                            r.prefetched,
                            r.start_cycles
                        );
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            Command::Restore { image, name, paused, .. } => match saver.restore(&image, name.as_deref(), paused) {
                Ok(r) => {
                    let _ = writeln!(
                        out,
                        "restored domain {} {} from {image} ({}, {} MiB, {} pages)",
                        r.domid,
                        r.name,
                        kind_name(r.kind),
                        r.mem_bytes >> 20,
                        r.pages
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "error: {e}");
                }
            },
            Command::Verify(image) => match saver.verify(&image) {
                Ok((pro, digest, pages)) => {
                    let _ = writeln!(
                        out,
                        "image {image} ok: {} {} of {} MiB, {pages} pages, digest {}",
                        kind_name(pro.kind),
                        pro.domain.name,
                        pro.domain.mem_bytes >> 20,
                        short_digest(&digest)
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "error: {e}");
                }
            },
            _ => {}
        }
        Ok(())
    }
}

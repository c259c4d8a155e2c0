//! The shell's side of guest channels: `channel` (list, allow, forbid) and the idle loop's
//! service of the rings that kicked, which stores self-checkpoints as images.

use super::{Command, Shell};
use crate::control::Hypercalls;
use crate::selfckpt::Receiver;
use alloc::format;
use alloc::string::String;
use core::fmt::Write;
use guest_abi::HvResult;
use guest_abi::channel::{ring, status};
use guest_abi::domctl::{NO_DOMAIN, name_str};

/// Stream outcomes `channel` remembers.
const STREAMS_KEPT: usize = 32;

impl<H: Hypercalls> Shell<H> {
    /// Serves every channel that kicked since the last look; whether any did.
    pub fn serve_channels(&mut self) -> bool {
        let mut served = false;
        while let Ok(Some(id)) = self.ctl.channel_next() {
            served = true;
            let name = self.ctl.info(id).map(|i| String::from(name_str(&i.name))).unwrap_or_default();
            let line = match self.storage.store.as_mut() {
                Err(why) => {
                    // No store: the stream is refused, and the guest told so.
                    if let Ok(c) = self.ctl.channel_info(id) {
                        if c.ring_gpa != 0 {
                            let _ = self.ctl.mem_write(id, c.ring_gpa + ring::STATUS_OFFSET, &status::STORE_FAILED.to_le_bytes());
                            let _ = self.ctl.channel_kick(id);
                        }
                    }
                    format!("d{id} {name}: refused: no image store: {why}")
                }
                Ok(store) => match (Receiver { ctl: &mut self.ctl, store }).serve(id) {
                    Ok(None) => continue,
                    Ok(Some(s)) => format!("d{id} {name}: self-checkpoint stored as {} ({} pages sent, {} KiB)", s.image, s.pages, s.bytes.div_ceil(1024)),
                    Err(e) => format!("d{id} {name}: refused: {e}"),
                },
            };
            let streams = &mut self.storage.streams;
            if streams.len() >= STREAMS_KEPT {
                streams.remove(0);
            }
            streams.push(line);
        }
        served
    }

    pub(super) fn channel_command(&mut self, cmd: Command, out: &mut dyn Write) -> HvResult<()> {
        match cmd {
            Command::ChannelList => {
                let _ = writeln!(out, "{:<20} {:>5} {:>12} {:>6} {:>6}", "Domain", "ID", "Ring", "Pages", "Epoch");
                for id in self.ctl.list()? {
                    let Ok(c) = self.ctl.channel_info(id) else { continue };
                    if c.ring_gpa == 0 && c.epoch == NO_DOMAIN && c.pages == 0 {
                        // Allowed without a ring yet, or no channel at all: INFO cannot tell,
                        // so only rings and epochs are listed.
                        continue;
                    }
                    let Ok(info) = self.ctl.info(id) else { continue };
                    let epoch = if c.epoch == NO_DOMAIN { String::from("-") } else { format!("{}", c.epoch) };
                    let _ = writeln!(out, "{:<20} {:>5} {:>#12x} {:>6} {:>6}", name_str(&info.name), id, c.ring_gpa, c.pages, epoch);
                }
                for s in &self.storage.streams {
                    let _ = writeln!(out, "{s}");
                }
            }
            Command::ChannelSet { target, allow } => {
                let id = self.resolve(&target)?;
                match self.ctl.channel_allow(id, allow) {
                    Ok(()) => {
                        let _ = writeln!(out, "domain {id}: channel {}", if allow { "allowed" } else { "closed" });
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
}

//! `console DOMAIN` on a domain with a UART: the terminal attached to the domain's serial
//! console, as `xl console` does. What the user types goes to the guest's UART, what the
//! guest writes appears as it comes, and Ctrl-] gives the terminal back to the dom0 shell.
//! The buffered history of any domain stays available with `console DOMAIN history=1`.

use super::Shell;
use crate::control::Hypercalls;
use alloc::vec::Vec;
use guest_abi::domctl::{name_str, state};
use guest_abi::{HvError, HvResult};

/// The key that detaches (Ctrl-], as in `xl console` and telnet).
pub const DETACH_BYTE: u8 = 0x1D;
/// How long the attached console sleeps between looks at the guest's output.
pub const ATTACH_POLL_NS: u64 = 10_000_000;
/// Console bytes fetched per look.
const OUTPUT_CHUNK_BYTES: usize = 1024;

/// Why an attached console ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detach {
    /// The user typed Ctrl-].
    User,
    /// The domain stopped running (dead, crashed, destroyed or frozen).
    DomainEnded,
}

/// Bytes typed up to (not including) the detach key, and whether it was typed.
pub fn split_at_detach(typed: &[u8]) -> (&[u8], bool) {
    match typed.iter().position(|&b| b == DETACH_BYTE) {
        Some(i) => (&typed[..i], true),
        None => (typed, false),
    }
}

impl<H: Hypercalls> Shell<H> {
    /// Attaches the terminal to domain `id`'s UART until Ctrl-] or the domain's end. The
    /// console's history is shown first, from `offset` 0.
    pub(super) fn attach_console(&mut self, id: u32) -> HvResult<Detach> {
        let mut offset = 0u64;
        let mut buf = [0u8; OUTPUT_CHUNK_BYTES];
        let mut pending: Vec<u8> = Vec::new();
        let mut typed = [0u8; 256];
        loop {
            // What the guest wrote since the last look.
            loop {
                let (n, skipped) = self.ctl.console(id, offset, &mut buf)?;
                if n == 0 {
                    offset += skipped;
                    break;
                }
                self.storage.ui.write_raw(&buf[..n]);
                offset += skipped + n as u64;
            }
            let info = self.ctl.info(id)?;
            if !matches!(info.state, state::RUNNING | state::BLOCKED | state::PAUSED) {
                return Ok(Detach::DomainEnded);
            }
            // What the user typed, up to Ctrl-].
            let n = self.storage.ui.read_typed(&mut typed);
            let (keys, detach) = split_at_detach(&typed[..n]);
            pending.extend_from_slice(keys);
            while !pending.is_empty() {
                match self.ctl.console_input(id, &pending) {
                    Ok(0) => break,
                    Ok(taken) => {
                        pending.drain(..taken);
                    }
                    Err(e) => return Err(e),
                }
            }
            if detach {
                return Ok(Detach::User);
            }
            self.idle(ATTACH_POLL_NS);
        }
    }

    /// The `console` command: attach to a running PC domain from a terminal, else print the
    /// buffered history.
    pub(super) fn console_command(&mut self, id: u32, history: bool, out: &mut dyn core::fmt::Write) -> HvResult<()> {
        let info = self.ctl.info(id)?;
        let has_uart = info.flags & guest_abi::domctl::DomainFlags::PC_PLATFORM.bits() != 0;
        let live = matches!(info.state, state::RUNNING | state::BLOCKED | state::PAUSED);
        if history || !has_uart || !live || !self.storage.ui.interactive() {
            return self.console_history(id, out);
        }
        let name = name_str(&info.name);
        self.storage.ui.write_raw(alloc::format!("[console of domain {id} {name}; Ctrl-] returns to dom0]\r\n").as_bytes());
        match self.attach_console(id) {
            Ok(Detach::User) => {
                let _ = writeln!(out);
                let _ = writeln!(out, "[detached from domain {id}]");
            }
            Ok(Detach::DomainEnded) => {
                let info = self.ctl.info(id)?;
                let why = name_str(&info.reason);
                let _ = writeln!(out);
                if why.is_empty() {
                    let _ = writeln!(out, "[domain {id} {name} ended: {}]", super::state_text(&info));
                } else {
                    let _ = writeln!(out, "[domain {id} {name} ended: {}: {why}]", super::state_text(&info));
                }
            }
            Err(HvError::NoSuchDomain) => {
                let _ = writeln!(out);
                let _ = writeln!(out, "[domain {id} was destroyed]");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Waits up to `secs` until `text` appears in domain `id`'s console output (anywhere in
    /// what the hypervisor still holds of it). True if it did.
    pub(crate) fn expect_output(&mut self, id: u32, text: &str, secs: u64) -> HvResult<bool> {
        let needle = text.as_bytes();
        let deadline = self.ctl.time_ns()?.saturating_add(secs.saturating_mul(1_000_000_000));
        let mut seen: Vec<u8> = Vec::new();
        let mut offset = 0u64;
        let mut buf = [0u8; OUTPUT_CHUNK_BYTES];
        loop {
            loop {
                let (n, skipped) = self.ctl.console(id, offset, &mut buf)?;
                offset += skipped + n as u64;
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            if seen.windows(needle.len()).any(|w| w == needle) {
                return Ok(true);
            }
            // Keep only what a match could still start in.
            let keep = needle.len().saturating_sub(1);
            if seen.len() > keep {
                seen.drain(..seen.len() - keep);
            }
            let now = self.ctl.time_ns()?;
            if now >= deadline {
                return Ok(false);
            }
            self.idle((deadline - now).min(ATTACH_POLL_NS));
        }
    }

    /// The buffered console output of a domain (the last 16 KiB).
    pub(super) fn console_history(&mut self, id: u32, out: &mut dyn core::fmt::Write) -> HvResult<()> {
        let mut buf = [0u8; 1024];
        let mut offset = 0u64;
        let mut last = b'\n';
        loop {
            let (n, skipped) = self.ctl.console(id, offset, &mut buf)?;
            if skipped > 0 && offset == 0 {
                let _ = writeln!(out, "[{skipped} earlier bytes dropped]");
            }
            if n == 0 {
                break;
            }
            for chunk in buf[..n].utf8_chunks() {
                let _ = out.write_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    let _ = out.write_char(char::REPLACEMENT_CHARACTER);
                }
            }
            last = buf[n - 1];
            offset += skipped + n as u64;
        }
        if last != b'\n' {
            let _ = out.write_char('\n');
        }
        Ok(())
    }
}

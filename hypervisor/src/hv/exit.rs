//! What happens on each kind of VM exit: second-level faults (copy-on-write, quota and
//! out-of-memory pauses, clean crashes for wild accesses), filtered CPUID and MSRs, port I/O,
//! HLT, interrupt windows, preemption, triple faults and failed VM entries. Nothing a guest
//! does here can stop the hypervisor: the worst outcome is that the guest's domain is crashed.

use super::{Hypervisor, Next, START_INFO_GFN};
use crate::console::CONSOLE_RING_BYTES;
use crate::domain::{PauseReason, Reason};
use crate::mm::frame::PAGE_SIZE;
use crate::mm::physmem::PhysMem;
use crate::p2m::{P2mError, P2mType, WritePolicy};
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::{Backend, Exit, GuestMsr, Vcpu, vector};
use core::fmt::Write as _;
use guest_abi::hypercall::{ABI_VERSION, SIGNATURE};
use guest_abi::vcpu::{cr0, cr4, efer};

/// The debug console port: a byte written here goes to the domain's console.
pub const DEBUG_CONSOLE_PORT: u16 = 0xE9;

/// Longest console line echoed to the serial line in one piece.
pub const ECHO_LINE_MAX_BYTES: usize = 256;

const CPUID1_ECX_MONITOR: u32 = 1 << 3;
const CPUID1_ECX_VMX: u32 = 1 << 5;
const CPUID1_ECX_X2APIC: u32 = 1 << 21;
const CPUID1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const CPUID1_ECX_XSAVE: u32 = 1 << 26;
const CPUID1_ECX_OSXSAVE: u32 = 1 << 27;
const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;
const CPUID1_EDX_APIC: u32 = 1 << 9;
const CPUID_EXT1_ECX_SVM: u32 = 1 << 2;

fn canonical(v: u64) -> bool {
    let top = (v as i64) >> 47;
    top == 0 || top == -1
}

/// Whether a PAT value uses only defined memory types (0, 1, 4, 5, 6, 7).
fn valid_pat(v: u64) -> bool {
    (0..8).all(|i| matches!((v >> (i * 8)) & 0xFF, 0 | 1 | 4..=7))
}

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    fn vcpu(&mut self, id: DomId) -> Option<&mut B::Vcpu> {
        self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut())
    }

    /// Handles one exit of domain `id`.
    pub(crate) fn handle_exit(&mut self, id: DomId, exit: Exit) -> Next {
        match exit {
            Exit::Hypercall => self.hypercall(id),
            Exit::NestedPageFault { gpa, write, .. } => self.nested_page_fault(id, gpa, write),
            Exit::Io { port, size, write, string } => self.port_io(id, port, size, write, string),
            Exit::Cpuid => self.cpuid(id),
            Exit::Rdmsr => self.rdmsr(id),
            Exit::Wrmsr => self.wrmsr(id),
            Exit::Hlt => {
                let pending = self.domains.get(id).map(|d| d.events.pending).unwrap_or(0);
                if let Some(v) = self.vcpu(id) {
                    v.skip_instruction();
                }
                if pending != 0 {
                    return Next::Continue;
                }
                self.block(id, None, false);
                Next::Reschedule
            }
            Exit::InterruptWindow => {
                if let Some(v) = self.vcpu(id) {
                    v.set_interrupt_window(false);
                }
                Next::Continue
            }
            Exit::ExternalInterrupt => {
                self.platform.ack_interrupts();
                self.poll_console();
                if self.queue.next_deadline().is_some() {
                    let now = self.platform.now_ns();
                    self.wake_expired(now);
                }
                // A preemption point: round-robin if anyone else wants the CPU.
                self.timer_owner = None;
                if self.queue.is_empty() {
                    Next::Continue
                } else {
                    if let Some(d) = self.domains.get_mut(id) {
                        d.counters.preemptions += 1;
                    }
                    Next::Reschedule
                }
            }
            Exit::TripleFault => {
                self.crash(id, format_args!("triple fault"));
                Next::Reschedule
            }
            Exit::InvalidInstruction => {
                if let Some(v) = self.vcpu(id) {
                    v.inject_exception(vector::UD, None);
                }
                Next::Continue
            }
            Exit::Exception { vector, error } => {
                // Intercepted only so that delivering it cannot hang the CPU (an #AC or #DB
                // raised while delivering itself loops in microcode); the guest takes it.
                if let Some(v) = self.vcpu(id) {
                    v.inject_exception(vector, error);
                }
                Next::Continue
            }
            Exit::ControlRegisterWrite { cr, value } => self.control_register_write(id, cr, value),
            Exit::InvalidState(code) => {
                self.crash(id, format_args!("invalid vcpu state (vm entry failed, {code:#x})"));
                Next::Reschedule
            }
            Exit::Unhandled(code) => {
                self.crash(id, format_args!("unhandled vm exit {code:#x}"));
                Next::Reschedule
            }
        }
    }

    fn nested_page_fault(&mut self, id: DomId, gpa: u64, write: bool) -> Next {
        let gfn = gpa / PAGE_SIZE;
        let Some(d) = self.domains.get_mut(id) else { return Next::Reschedule };
        let quota_left = d.quota_left();
        let Some(p2m) = d.p2m.as_mut() else { return Next::Reschedule };
        let leaf = p2m.lookup(&self.mem, gfn);
        if !write {
            return match leaf {
                // Mapped: a stale translation. Flush and retry.
                Some(_) => {
                    if let Some(v) = d.vcpu.as_mut() {
                        v.flush_translations();
                    }
                    Next::Continue
                }
                None => {
                    self.crash(id, format_args!("access to unmapped gpa {gpa:#x}"));
                    Next::Reschedule
                }
            };
        }
        let policy = WritePolicy { owner: id, quota_left, privileged: false };
        match p2m.write_fault(&mut self.frames, &self.mem, gfn, policy) {
            Ok(outcome) => {
                self.account_write(id, outcome, leaf.map(|l| l.ty));
                Next::Continue
            }
            Err(P2mError::QuotaExceeded) => {
                self.pause_for(id, PauseReason::Quota, gpa);
                Next::Reschedule
            }
            Err(P2mError::OutOfMemory) => {
                self.pause_for(id, PauseReason::NoMemory, gpa);
                Next::Reschedule
            }
            Err(P2mError::ReadOnly(_, ty)) => {
                let what = match ty {
                    P2mType::Info if gfn == START_INFO_GFN => "the start-of-day page",
                    _ => "a read-only page",
                };
                self.crash(id, format_args!("write to {what} at gpa {gpa:#x}"));
                Next::Reschedule
            }
            Err(P2mError::Unmapped(_)) | Err(P2mError::BadGfn(_)) => {
                self.crash(id, format_args!("access to unmapped gpa {gpa:#x}"));
                Next::Reschedule
            }
            Err(e) => {
                log::error!("d{id}: second-level fault at {gpa:#x} failed: {e:?}");
                self.crash(id, format_args!("unresolvable fault at gpa {gpa:#x}"));
                Next::Reschedule
            }
        }
    }

    fn pause_for(&mut self, id: DomId, reason: PauseReason, gpa: u64) {
        if let Some(d) = self.domains.get_mut(id) {
            let mut r = Reason::default();
            let what = if reason == PauseReason::Quota { "quota exhausted" } else { "out of memory" };
            let _ = write!(r, "{what} copying gpa {gpa:#x}");
            log::info!("d{id} ({}) paused: {}", d.name.as_str(), r.as_str());
            d.reason = r;
        }
        let _ = self.pause(id, reason);
    }

    fn port_io(&mut self, id: DomId, port: u16, size: u8, write: bool, string: bool) -> Next {
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        if string {
            v.inject_exception(vector::GP, Some(0));
            return Next::Continue;
        }
        let rax = v.regs().rax;
        v.skip_instruction();
        if write {
            if port == DEBUG_CONSOLE_PORT && size == 1 {
                self.console_out(id, &[rax as u8]);
            }
        } else {
            // No device answers: reads float high, as on real hardware.
            let r = &mut v.regs().rax;
            *r = match size {
                1 => (*r & !0xFF) | 0xFF,
                2 => (*r & !0xFFFF) | 0xFFFF,
                _ => 0xFFFF_FFFF,
            };
        }
        Next::Continue
    }

    /// Appends to a domain's console; dom0's output goes straight to the serial line, other
    /// domains' is echoed as `(dN) ...` lines when enabled.
    pub(crate) fn console_out(&mut self, id: DomId, bytes: &[u8]) {
        // Console history never eats into the heap the hypervisor keeps for its own work.
        let platform = &self.platform;
        let may_grow = || platform.heap_free_bytes() > super::HEAP_RESERVE_BYTES + 2 * CONSOLE_RING_BYTES;
        let Some(d) = self.domains.get_mut(id) else { return };
        d.console.push(bytes, may_grow);
        if d.privileged {
            self.platform.console_write(bytes);
            return;
        }
        self.echo_console(id, false);
    }

    /// Echoes a domain's new console output as whole `(dN) ...` lines, so that lines of
    /// different domains and of the hypervisor never run into each other on the serial line.
    /// A line longer than [`ECHO_LINE_MAX_BYTES`] is broken; `flush` ends a last partial line
    /// (the domain is going away).
    pub(crate) fn echo_console(&mut self, id: DomId, flush: bool) {
        if !self.settings.echo_guests {
            return;
        }
        let Some(d) = self.domains.get_mut(id) else { return };
        let mut prefix = Reason::default();
        let _ = write!(prefix, "(d{id}) ");
        let mut line = [0u8; ECHO_LINE_MAX_BYTES];
        while let Some((start, end)) = d.console.next_echo(d.echoed, ECHO_LINE_MAX_BYTES, flush) {
            let (at, n) = d.console.read(start, &mut line[..(end - start) as usize]);
            self.platform.console_write(prefix.as_str().as_bytes());
            self.platform.console_write(&line[..n]);
            if line[..n].last() != Some(&b'\n') {
                self.platform.console_write(b"\n");
            }
            d.echoed = at + n as u64;
        }
    }

    fn cpuid(&mut self, id: DomId) -> Next {
        let Some(v) = self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()) else { return Next::Reschedule };
        let (leaf, sub) = (v.regs().rax as u32, v.regs().rcx as u32);
        let word = |i: usize| u32::from_le_bytes([SIGNATURE[i], SIGNATURE[i + 1], SIGNATURE[i + 2], SIGNATURE[i + 3]]);
        let mut r = match leaf {
            0x4000_0000 => [0x4000_0001, word(0), word(4), word(8)],
            0x4000_0001 => [B::CALL_INSN as u32, ABI_VERSION, 0, 0],
            0x4000_0002..=0x4FFF_FFFF => [0; 4],
            0xA | 0x8000_000A => [0; 4],
            _ => self.platform.cpuid(leaf, sub),
        };
        match leaf {
            1 => {
                r[2] &= !(CPUID1_ECX_MONITOR
                    | CPUID1_ECX_VMX
                    | CPUID1_ECX_X2APIC
                    | CPUID1_ECX_TSC_DEADLINE
                    | CPUID1_ECX_XSAVE
                    | CPUID1_ECX_OSXSAVE);
                r[2] |= CPUID1_ECX_HYPERVISOR;
                r[3] &= !CPUID1_EDX_APIC;
            }
            0x8000_0001 => r[2] &= !CPUID_EXT1_ECX_SVM,
            _ => {}
        }
        let regs = v.regs();
        regs.rax = r[0] as u64;
        regs.rbx = r[1] as u64;
        regs.rcx = r[2] as u64;
        regs.rdx = r[3] as u64;
        v.skip_instruction();
        Next::Continue
    }

    fn rdmsr(&mut self, id: DomId) -> Next {
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        let index = v.regs().rcx as u32;
        let value = match GuestMsr::from_index(index) {
            Some(GuestMsr::Efer) => v.msr(GuestMsr::Efer) & !efer::SVME,
            Some(m) => v.msr(m),
            None => match index {
                // MTRR capabilities: none. Default type: MTRRs enabled, write-back.
                0xFE => 0,
                0x2FF => 0xC06,
                // MISC_ENABLE: fast strings.
                0x1A0 => 1,
                _ => {
                    v.inject_exception(vector::GP, Some(0));
                    return Next::Continue;
                }
            },
        };
        let regs = v.regs();
        regs.rax = value & 0xFFFF_FFFF;
        regs.rdx = value >> 32;
        v.skip_instruction();
        Next::Continue
    }

    fn wrmsr(&mut self, id: DomId) -> Next {
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        let regs = v.regs();
        let index = regs.rcx as u32;
        let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
        let ok = match GuestMsr::from_index(index) {
            Some(GuestMsr::Efer) => {
                let allowed = efer::SCE | efer::LME | efer::LMA | efer::NXE;
                // Guests run in long mode only: LME and LMA must stay set.
                value & !allowed == 0 && value & (efer::LME | efer::LMA) == efer::LME | efer::LMA
            }
            Some(GuestMsr::Pat) => valid_pat(value),
            Some(
                GuestMsr::FsBase
                | GuestMsr::GsBase
                | GuestMsr::KernelGsBase
                | GuestMsr::Lstar
                | GuestMsr::Cstar
                | GuestMsr::SysenterEsp
                | GuestMsr::SysenterEip,
            ) => canonical(value),
            Some(GuestMsr::Sfmask) => value >> 32 == 0,
            Some(GuestMsr::Star | GuestMsr::SysenterCs) => true,
            // MTRR and MISC_ENABLE writes are accepted and ignored.
            None => matches!(index, 0x1A0 | 0x200..=0x2FF),
        };
        if !ok {
            v.inject_exception(vector::GP, Some(0));
            return Next::Continue;
        }
        if let Some(m) = GuestMsr::from_index(index) {
            v.set_msr(m, value);
        }
        v.skip_instruction();
        Next::Continue
    }

    fn control_register_write(&mut self, id: DomId, cr: u8, value: u64) -> Next {
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        match cr {
            0 if value >> 32 != 0 => v.inject_exception(vector::GP, Some(0)),
            0 if value & (cr0::PE | cr0::PG) != cr0::PE | cr0::PG => {
                self.crash(id, format_args!("guest left long mode (cr0 {value:#x})"));
                return Next::Reschedule;
            }
            4 if value & cr4::VMXE != 0 || value & cr4::PAE == 0 || value >> 32 != 0 => {
                v.inject_exception(vector::GP, Some(0))
            }
            0 | 4 => {
                v.set_control_register(cr, value);
                v.skip_instruction();
            }
            _ => v.inject_exception(vector::GP, Some(0)),
        }
        Next::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_and_pat_checks() {
        assert!(canonical(0x0000_7FFF_FFFF_FFFF));
        assert!(canonical(0xFFFF_8000_0000_0000));
        assert!(!canonical(0x0000_8000_0000_0000));
        assert!(valid_pat(guest_abi::vcpu::DEFAULT_PAT));
        assert!(!valid_pat(0x02));
    }
}

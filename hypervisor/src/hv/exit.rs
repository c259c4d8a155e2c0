//! What happens on each kind of VM exit: second-level faults (copy-on-write, quota and
//! out-of-memory pauses, clean crashes for wild accesses), filtered CPUID and MSRs, port I/O,
//! HLT, interrupt windows, preemption, triple faults and failed VM entries. Nothing a guest
//! does here can stop the hypervisor: the worst outcome is that the guest's domain is crashed.

use super::{Hypervisor, Next, START_INFO_GFN};
use crate::domain::{PauseReason, Reason};
use crate::mm::frame::PAGE_SIZE;
use crate::mm::physmem::PhysMem;
use crate::msr;
use crate::p2m::{P2mError, P2mType, WritePolicy};
use crate::platform::Platform;
use crate::sched::DomId;
use crate::policy::Cr0Verdict;
use crate::policy::state::{cr0_write, cr4_ok, cr8_ok, msr_ok};
use crate::vcpu::{Backend, Exit, GuestMsr, Vcpu, vector};
use core::fmt::Write as _;
use guest_abi::hypercall::{ABI_VERSION, CPUID_LEAF_FEATURES, CPUID_LEAF_SIGNATURE, SIGNATURE};
use guest_abi::vcpu::{EferFlags, SegmentAttrs};

/// Constant values of the MSRs read as constants: MTRR capabilities (none), the MTRR
/// default type (MTRRs on, write-back), MISC_ENABLE (fast strings). Intel SDM Vol 3A 13.11.
const MTRR_DEF_TYPE_ENABLED_WB: u64 = 0xC06;
const MISC_ENABLE_FAST_STRINGS: u64 = 1;
/// The hypervisor's own CPUID leaves.
const CPUID_HV_LEAVES: core::ops::RangeInclusive<u32> = 0x4000_0000..=0x4FFF_FFFF;

/// The debug console port: a byte written here goes to the domain's console.
pub const DEBUG_CONSOLE_PORT: u16 = 0xE9;


impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    pub(super) fn vcpu(&mut self, id: DomId) -> Option<&mut B::Vcpu> {
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
            Exit::Hlt if self.domains.get(id).is_some_and(|d| d.pc.is_some() && d.events.upcall_vector == 0) => {
                self.pc_halt(id)
            }
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
            Exit::Cr8Read { gpr } => {
                let Some(v) = self.vcpu(id) else { return Next::Reschedule };
                let tpr = v.tpr();
                v.set_gpr(gpr, u64::from(tpr));
                v.skip_instruction();
                Next::Continue
            }
            Exit::ControlRegisterUndecoded { cr } => self.undecoded_control_register_write(id, cr),
            Exit::Rdpmc => {
                if let Some(v) = self.vcpu(id) {
                    v.inject_exception(vector::GP, Some(0));
                }
                Next::Continue
            }
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
        if crate::pc::PcPlatform::claims_mmio(gpa) && self.domains.get(id).is_some_and(|d| d.pc.is_some()) {
            return self.pc_mmio(id, gpa, write);
        }
        let gfn = gpa / PAGE_SIZE;
        let Some(d) = self.domains.get_mut(id) else { return Next::Reschedule };
        let quota_left = d.quota_left();
        let lazy_ram = d.is_lazy() && gfn < d.mem_bytes / PAGE_SIZE;
        let Some(p2m) = d.p2m.as_mut() else { return Next::Reschedule };
        let leaf = p2m.lookup(&self.mem, gfn);
        if leaf.is_none() && lazy_ram {
            return self.demand_fault(id, gfn, write);
        }
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
        if !string && self.domains.get(id).is_some_and(|d| d.pc.is_some()) {
            if let Some(next) = self.pc_port_io(id, port, size, write) {
                return next;
            }
        }
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

    fn cpuid(&mut self, id: DomId) -> Next {
        let Some(d) = self.domains.get_mut(id) else { return Next::Reschedule };
        let pc = d.pc.is_some();
        let Some(v) = d.vcpu.as_mut() else { return Next::Reschedule };
        let (leaf, sub) = (v.regs().rax as u32, v.regs().rcx as u32);
        if let Some(next) = self.agent_cpuid(id, leaf, sub) {
            return next;
        }
        let Some(v) = self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()) else { return Next::Reschedule };
        let word = |i: usize| u32::from_le_bytes([SIGNATURE[i], SIGNATURE[i + 1], SIGNATURE[i + 2], SIGNATURE[i + 3]]);
        let r = match leaf {
            CPUID_LEAF_SIGNATURE => [CPUID_LEAF_FEATURES, word(0), word(4), word(8)],
            CPUID_LEAF_FEATURES => [B::CALL_INSN as u32, ABI_VERSION, 0, 0],
            l if CPUID_HV_LEAVES.contains(&l) => [0; 4],
            _ => {
                let r = self.policy.cpuid.filter(leaf, sub, &|l, s| self.platform.cpuid(l, s));
                if pc { crate::policy::cpuid::with_pc_platform(leaf, r) } else { r }
            }
        };
        let regs = v.regs();
        regs.rax = r[0] as u64;
        regs.rbx = r[1] as u64;
        regs.rcx = r[2] as u64;
        regs.rdx = r[3] as u64;
        v.skip_instruction();
        Next::Continue
    }

    fn rdmsr(&mut self, id: DomId) -> Next {
        let policy = self.policy;
        let pc = self.domains.get(id).is_some_and(|d| d.pc.is_some());
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        let index = v.regs().rcx as u32;
        if pc {
            if let Some(next) = self.pc_rdmsr(id, index) {
                return next;
            }
        }
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        let value = match policy.guest_msr(index) {
            Some(GuestMsr::Efer) => Some(v.msr(GuestMsr::Efer) & !EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits()),
            Some(m) => Some(v.msr(m)),
            None => match index {
                msr::IA32_MTRRCAP => Some(0),
                msr::IA32_MTRR_DEF_TYPE => Some(MTRR_DEF_TYPE_ENABLED_WB),
                msr::IA32_MISC_ENABLE => Some(MISC_ENABLE_FAST_STRINGS),
                // No machine-check banks; no microcode update was loaded.
                msr::IA32_MCG_CAP | msr::IA32_MCG_STATUS | msr::IA32_BIOS_SIGN_ID => Some(0),
                // AMD's interrupt-pending message register: no C1E (kernels read it for erratum 400).
                msr::AMD_INT_PENDING_MSG => Some(0),
                _ => None,
            },
        };
        let Some(value) = value else {
            v.inject_exception(vector::GP, Some(0));
            return Next::Continue;
        };
        let regs = v.regs();
        regs.rax = value & 0xFFFF_FFFF;
        regs.rdx = value >> 32;
        v.skip_instruction();
        Next::Continue
    }

    fn wrmsr(&mut self, id: DomId) -> Next {
        let policy = self.policy;
        let pc = self.domains.get(id).is_some_and(|d| d.pc.is_some());
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        let regs = v.regs();
        let index = regs.rcx as u32;
        let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
        if pc {
            if let Some(next) = self.pc_wrmsr(id, index, value) {
                return next;
            }
        }
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        let msr = policy.guest_msr(index);
        let ok = match msr {
            Some(m) => msr_ok(m, value, &policy),
            // MTRR and MISC_ENABLE writes are accepted and ignored, and so is clearing the
            // microcode signature (how a kernel asks for the revision) or MCG_STATUS.
            None => {
                index == msr::IA32_MISC_ENABLE
                    || (msr::IA32_MTRR_FIRST..=msr::IA32_MTRR_LAST).contains(&index)
                    || (matches!(index, msr::IA32_BIOS_SIGN_ID | msr::IA32_MCG_STATUS) && value == 0)
            }
        };
        if !ok {
            v.inject_exception(vector::GP, Some(0));
            return Next::Continue;
        }
        if let Some(m) = msr {
            v.set_msr(m, value);
        }
        v.skip_instruction();
        Next::Continue
    }

    /// A guest's write to CR0, CR4 or CR8, decided by the policy: applied, refused with
    /// #GP, or (leaving long mode) the end of the domain.
    pub(crate) fn control_register_write(&mut self, id: DomId, cr: u8, value: u64) -> Next {
        let policy = self.policy;
        let Some(v) = self.vcpu(id) else { return Next::Reschedule };
        let ok = match cr {
            0 => match cr0_write(value, v.code_segment().flags().contains(SegmentAttrs::LONG)) {
                Cr0Verdict::Apply => true,
                Cr0Verdict::Fault => false,
                Cr0Verdict::LeavesLongMode => {
                    self.crash(id, format_args!("guest left long mode (cr0 {value:#x})"));
                    return Next::Reschedule;
                }
            },
            4 => cr4_ok(value, &policy),
            8 => cr8_ok(value),
            _ => false,
        };
        if !ok {
            v.inject_exception(vector::GP, Some(0));
            return Next::Continue;
        }
        if cr == 8 {
            v.set_tpr(value as u8);
        } else {
            // An emulated write may change how linear addresses translate (PGE, SMEP, WP...);
            // the CPU would have flushed the guest's TLB itself, so do the same.
            v.set_control_register(cr, value);
            v.flush_translations();
        }
        v.skip_instruction();
        Next::Continue
    }
}

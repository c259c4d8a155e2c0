//! The core's side of the emulated PC platform (`crate::pc`): port and MSR exits of a PC
//! domain routed to its devices, interrupt injection before each entry, HLT that sleeps
//! until the APIC timer or a typed byte, the timer's deadline for the scheduler, console
//! input from dom0, and the two ways such a guest ends itself: a reset (the keyboard
//! controller's or port 0x92's) and HLT with interrupts off (how Linux powers off
//! without ACPI).

use super::{Hypervisor, Next};
use crate::domain::{Life, Reason};
use crate::insn::decode::{CpuMode, MAX_INSN_BYTES};
use crate::insn::mmio::{MmioAccess, decode_mmio};
use crate::insn::walk::{PagingRegs, read_linear};
use crate::mm::physmem::PhysMem;
use crate::pc::{IoEffect, PcPlatform, state};
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::{Backend, Vcpu, vector};
use alloc::boxed::Box;
use core::fmt::Write as _;
use guest_abi::HvError;
use guest_abi::domctl::exit_code;

const _: () = assert!(state::PC_STATE_BYTES as u64 <= guest_abi::hypercall::nr::PLATFORM_STATE_MAX_BYTES);
/// Shortest timer the scheduler arms for a guest deadline.
pub const MIN_GUEST_TIMER_NS: u64 = 1_000;

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// Gives a new domain the emulated PC devices.
    pub fn give_pc_platform(&mut self, id: DomId) {
        if let Some(d) = self.domains.get_mut(id) {
            d.pc = Some(Box::new(PcPlatform::new()));
        }
    }

    /// The encoded devices of a PC domain (live, paused or frozen: a template and a
    /// checkpoint epoch keep the platform of their instant). `InvalidArgument` if it has none.
    pub fn platform_state(&self, id: DomId) -> Result<[u8; state::PC_STATE_BYTES], HvError> {
        let d = self.dom(id)?;
        if matches!(d.life, Life::Dead(_) | Life::Crashed) {
            return Err(HvError::WrongState);
        }
        let pc = d.pc.as_deref().ok_or(HvError::InvalidArgument)?;
        Ok(state::encode(pc))
    }

    /// Gives a paused live domain the devices encoded in `bytes` (a restored image's), and
    /// so the platform if it had none. Every field is checked first; a refused one gives
    /// `InvalidArgument` and nothing changes.
    pub fn set_platform_state(&mut self, id: DomId, bytes: &[u8]) -> Result<(), HvError> {
        let d = self.dom(id)?;
        if d.life != Life::Live || d.paused.is_none() || d.vcpu.is_none() {
            return Err(HvError::WrongState);
        }
        let needs_heap = d.pc.is_none();
        let pc = state::decode(bytes).map_err(|e| {
            log::info!("d{id}: platform state refused: {e:?}");
            HvError::InvalidArgument
        })?;
        if needs_heap && self.platform.heap_free_bytes() < super::HEAP_RESERVE_BYTES {
            return Err(HvError::OutOfMemory);
        }
        let d = self.dom_mut(id)?;
        match d.pc.as_deref_mut() {
            Some(old) => *old = pc,
            None => d.pc = Some(Box::new(pc)),
        }
        // The timer may now be due before the time slice armed for someone else ends.
        self.timer_owner = None;
        Ok(())
    }

    /// Types `bytes` into a PC domain's UART; returns how many it took.
    pub fn console_input(&mut self, id: DomId, bytes: &[u8]) -> Result<usize, HvError> {
        let d = self.dom_mut(id)?;
        if d.life != Life::Live {
            return Err(HvError::WrongState);
        }
        let pc = d.pc.as_deref_mut().ok_or(HvError::InvalidArgument)?;
        let n = pc.receive(bytes);
        if d.blocked {
            self.wake(id);
        }
        Ok(n)
    }

    /// The domain's TSC now.
    fn guest_tsc(&self, id: DomId) -> u64 {
        let offset = self.domains.get(id).map(|d| d.tsc_offset).unwrap_or(0);
        self.platform.cycles().wrapping_add(offset)
    }

    /// Nanoseconds until the domain's APIC timer needs attention, if armed.
    pub(crate) fn pc_timer_ns(&self, id: DomId) -> Option<u64> {
        let at = self.domains.get(id)?.pc.as_deref()?.next_timer()?;
        let now = self.guest_tsc(id);
        let ticks = at.saturating_sub(now);
        let khz = self.platform.tsc_khz().max(1);
        Some((u128::from(ticks) * 1_000_000 / u128::from(khz)).min(u128::from(u64::MAX)) as u64)
    }

    /// A port access of a PC domain; `None` if no emulated device claims the port.
    pub(crate) fn pc_port_io(&mut self, id: DomId, port: u16, size: u8, write: bool) -> Option<Next> {
        if !PcPlatform::claims_port(port) {
            return None;
        }
        let secs = self.domains.get(id).map(|d| self.guest_time_ns(d) / 1_000_000_000).unwrap_or(0);
        let d = self.domains.get_mut(id)?;
        let (pc, v) = (d.pc.as_deref_mut()?, d.vcpu.as_mut()?);
        v.skip_instruction();
        if !write {
            let value = pc.io_read(port, size, secs)?;
            let rax = &mut v.regs().rax;
            *rax = match size {
                1 => (*rax & !0xFF) | u64::from(value & 0xFF),
                2 => (*rax & !0xFFFF) | u64::from(value & 0xFFFF),
                _ => u64::from(value),
            };
            return Some(Next::Continue);
        }
        let value = v.regs().rax as u32;
        match pc.io_write(port, value)? {
            IoEffect::None => Some(Next::Continue),
            IoEffect::Console(b) => {
                self.console_out(id, &[b]);
                Some(Next::Continue)
            }
            IoEffect::Reset => {
                self.end_pc_domain(id, exit_code::REBOOT, format_args!("reset (reboot)"));
                Some(Next::Reschedule)
            }
        }
    }

    /// RDMSR of a PC domain's APIC MSR; `None` if the platform does not claim it.
    pub(crate) fn pc_rdmsr(&mut self, id: DomId, index: u32) -> Option<Next> {
        if !PcPlatform::claims_msr(index) {
            return None;
        }
        let now = self.guest_tsc(id);
        let d = self.domains.get_mut(id)?;
        let (pc, v) = (d.pc.as_deref_mut()?, d.vcpu.as_mut()?);
        match pc.msr_read(index, now) {
            Ok(value) => {
                let r = v.regs();
                r.rax = value & 0xFFFF_FFFF;
                r.rdx = value >> 32;
                v.skip_instruction();
            }
            Err(_) => v.inject_exception(vector::GP, Some(0)),
        }
        Some(Next::Continue)
    }

    /// WRMSR of a PC domain's APIC MSR; `None` if the platform does not claim it.
    pub(crate) fn pc_wrmsr(&mut self, id: DomId, index: u32, value: u64) -> Option<Next> {
        if !PcPlatform::claims_msr(index) {
            return None;
        }
        let now = self.guest_tsc(id);
        let d = self.domains.get_mut(id)?;
        let (pc, v) = (d.pc.as_deref_mut()?, d.vcpu.as_mut()?);
        match pc.msr_write(index, value, now) {
            Ok(()) => v.skip_instruction(),
            Err(_) => v.inject_exception(vector::GP, Some(0)),
        }
        // A new deadline may be earlier than the armed time slice.
        self.timer_owner = None;
        Some(Next::Continue)
    }

    /// A second-level fault on an emulated device's page: the instruction at RIP is fetched
    /// and decoded, and its load or store goes to the device. An instruction that cannot be
    /// fetched or is not a plain MOV stops only this domain, with the reason.
    pub(crate) fn pc_mmio(&mut self, id: DomId, gpa: u64, write: bool) -> Next {
        let Some(ctx) = self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()).map(|v| v.context()) else {
            return Next::Reschedule;
        };
        let mode = super::cr_decode::mode(&ctx);
        let paging = PagingRegs { cr0: ctx.cr0, cr3: ctx.cr3, cr4: ctx.cr4, efer: ctx.efer };
        let rip = if mode == CpuMode::Long64 { ctx.rip } else { ctx.cs.base.wrapping_add(ctx.rip) & 0xFFFF_FFFF };
        let mut bytes = [0u8; MAX_INSN_BYTES];
        let mem = super::cr_decode::DomainMemory { hv: self, id };
        let (got, _) = read_linear(&mem, &paging, rip, &mut bytes);
        let insn = match decode_mmio(&bytes[..got], mode) {
            Ok(i) if i.width == 4 && matches!(i.access, MmioAccess::Load { .. }) != write => i,
            Ok(i) => {
                self.crash(id, format_args!("unsupported {}-byte access to device memory at gpa {gpa:#x} (rip {:#x})", i.width, ctx.rip));
                return Next::Reschedule;
            }
            Err(e) => {
                self.crash(id, format_args!("cannot emulate the access to device memory at gpa {gpa:#x} (rip {:#x}): {e:?}", ctx.rip));
                return Next::Reschedule;
            }
        };
        let now = self.guest_tsc(id);
        let Some(d) = self.domains.get_mut(id) else { return Next::Reschedule };
        let (Some(pc), Some(v)) = (d.pc.as_deref_mut(), d.vcpu.as_mut()) else { return Next::Reschedule };
        sync_tpr_from_cr8(pc, v);
        match insn.access {
            MmioAccess::Load { gpr } => {
                let value = pc.mmio_read(gpa, now);
                // A 32-bit load zero-extends into the 64-bit register.
                v.set_gpr(gpr, u64::from(value));
            }
            MmioAccess::Store { gpr } => {
                let value = v.gpr(gpr) as u32;
                pc.mmio_write(gpa, value, now);
            }
            MmioAccess::StoreImmediate { value } => pc.mmio_write(gpa, value, now),
        }
        // A TPR written through the page is the vCPU's CR8 too.
        if v.tpr() != pc.lapic.tpr >> 4 {
            v.set_tpr(pc.lapic.tpr >> 4);
        }
        v.set_instruction_length(u64::from(insn.length));
        v.skip_instruction();
        // A timer programmed through the page may be due before the armed slice ends.
        self.timer_owner = None;
        Next::Continue
    }

    /// HLT in a PC domain: wait for an interrupt, or with interrupts off, power off.
    pub(crate) fn pc_halt(&mut self, id: DomId) -> Next {
        let now = self.guest_tsc(id);
        let Some(d) = self.domains.get_mut(id) else { return Next::Reschedule };
        let (Some(pc), Some(v)) = (d.pc.as_deref_mut(), d.vcpu.as_mut()) else { return Next::Reschedule };
        v.skip_instruction();
        if !v.interrupts_enabled() {
            self.end_pc_domain(id, exit_code::POWER_OFF, format_args!("halted with interrupts off (power off)"));
            return Next::Reschedule;
        }
        pc.tick(now);
        if pc.interrupt_pending() {
            return Next::Continue;
        }
        let deadline = self.pc_timer_ns(id).map(|ns| self.platform.now_ns().saturating_add(ns));
        self.block(id, deadline, false);
        Next::Reschedule
    }

    /// Before entering a PC domain: fire a due timer, then inject the highest interrupt
    /// the guest can take now, or ask for an exit as soon as it can.
    pub(crate) fn pc_prepare_entry(&mut self, id: DomId) {
        let now = self.guest_tsc(id);
        let Some(d) = self.domains.get_mut(id) else { return };
        let (Some(pc), Some(v)) = (d.pc.as_deref_mut(), d.vcpu.as_mut()) else { return };
        sync_tpr_from_cr8(pc, v);
        pc.tick(now);
        if !pc.interrupt_pending() {
            return;
        }
        if v.interruptible() {
            if let Some(vector) = pc.take_interrupt() {
                v.inject_interrupt(vector);
            }
        } else {
            v.set_interrupt_window(true);
        }
    }

    /// A PC guest ended itself: it is dead with `code`, and `why` says how.
    fn end_pc_domain(&mut self, id: DomId, code: u64, why: core::fmt::Arguments<'_>) {
        if let Some(d) = self.domains.get_mut(id) {
            let mut r = Reason::default();
            let _ = r.write_fmt(why);
            d.reason = r;
        }
        self.exit(id, code);
    }
}

/// The APIC's task priority class is the vCPU's CR8 (which the guest may have written
/// directly); its sub-class bits stay the APIC's own.
fn sync_tpr_from_cr8<V: Vcpu>(pc: &mut PcPlatform, v: &V) {
    pc.lapic.tpr = v.tpr() << 4 | (pc.lapic.tpr & 0x0F);
}

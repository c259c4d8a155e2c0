//! Hypercall decoding and dispatch. The number is in RAX and arguments in RDI, RSI, RDX,
//! R10, R8, R9; the result goes back in RAX (negative = `-HvError`). Control hypercalls are
//! refused to unprivileged domains before anything else is looked at; every pointer argument
//! is checked against the caller's P2M; lengths are bounded so no call can stall the machine.

use super::{Hypervisor, InvariantError, Next};
use crate::console::CONSOLE_RING_BYTES;
use crate::domain::PauseReason;
use crate::mm::frame::PAGE_SIZE;
use crate::mm::physmem::PhysMem;
use crate::p2m::P2mError;
use crate::pc::PC_STATE_BYTES;
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::{Backend, Vcpu};
use alloc::vec::Vec;
use guest_abi::domctl::{self, CloneArgs, CreateArgs, NAME_MAX_BYTES, parse_name};
use guest_abi::hypercall::nr;
use guest_abi::pager::SupplyArgs;
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;
use guest_abi::{HvError, bytes_of, bytes_of_mut};

/// Longest single console write.
pub const CONSOLE_WRITE_MAX_BYTES: u64 = 64 * 1024;
/// Longest single `mem_read`/`mem_write`.
pub const MEM_COPY_MAX_BYTES: u64 = 64 << 20;
/// Most ids one `dom_list` returns.
pub const LIST_MAX_IDS: u64 = 4096;
/// Domain ids `dom_list` copies per step.
const LIST_CHUNK_IDS: usize = 64;

/// What a hypercall did.
enum Outcome {
    /// Return this value in RAX.
    Value(u64),
    /// The caller blocked; RAX is set when it wakes.
    Blocked,
    /// The caller yields the CPU.
    Yield,
    /// The caller no longer runs (shut down or frozen).
    Gone,
}

type HcResult = Result<Outcome, HvError>;

/// Bytes of console history `console_get` copies per step.
const CONSOLE_COPY_CHUNK_BYTES: usize = 512;

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// Handles a hypercall exit of domain `id`.
    pub(crate) fn hypercall(&mut self, id: DomId) -> Next {
        let Some(d) = self.domains.get_mut(id) else { return Next::Reschedule };
        let privileged = d.privileged;
        d.counters.hypercalls += 1;
        let Some(v) = d.vcpu.as_mut() else { return Next::Reschedule };
        // The hottest call first: `null` (the round trip every benchmark and fast path is
        // measured by) needs nothing but the kernel's CPL and the return value.
        if v.regs().rax == nr::NULL && v.cpl() == 0 {
            v.skip_instruction();
            v.regs().rax = 0;
            return Next::Continue;
        }
        let rip = v.rip();
        self.missing_hit.set(None);
        v.skip_instruction();
        let r = *v.regs();
        let (number, a) = (r.rax, [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]);
        let result = if v.cpl() != 0 {
            // Only the guest's kernel speaks to the hypervisor, as in Xen: user space of any
            // domain, dom0's included, gets the permission error for every call.
            Err(HvError::NotPermitted)
        } else if (nr::CONTROL_BASE..nr::CONTROL_END).contains(&number) {
            if privileged { self.control(id, number, a) } else { Err(HvError::NotPermitted) }
        } else {
            self.common(id, privileged, number, a)
        };
        if matches!(result, Err(HvError::NotResident)) {
            if let Some((who, gfn)) = self.missing_hit.take() {
                if who == id {
                    // An argument lies in a page of the caller's own that is still on its way
                    // (a lazy restore): the call is made again once the page is there.
                    if let Some(v) = self.vcpu_of(id) {
                        v.set_rip(rip);
                    }
                    return self.demand_fault(id, gfn, false);
                }
            }
        }
        let (ret, next) = match result {
            Ok(Outcome::Value(v)) => (Some(v), Next::Continue),
            Ok(Outcome::Blocked) => (None, Next::Reschedule),
            Ok(Outcome::Yield) => (Some(0), Next::Reschedule),
            Ok(Outcome::Gone) => (None, Next::Reschedule),
            Err(e) => (Some(e.to_ret()), Next::Continue),
        };
        if let Some(ret) = ret {
            if let Some(v) = self.vcpu_of(id) {
                v.regs().rax = ret;
            }
        }
        next
    }

    fn vcpu_of(&mut self, id: DomId) -> Option<&mut B::Vcpu> {
        self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut())
    }

    /// Reads a plain struct argument from the caller's memory.
    pub(crate) fn read_struct<T: Copy>(&self, id: DomId, gpa: u64, mut value: T) -> Result<T, HvError> {
        // SAFETY: only instantiated with plain #[repr(C)] ABI structs (integers and arrays),
        // for which every byte pattern is a valid value.
        self.read_guest(id, gpa, unsafe { bytes_of_mut(&mut value) })?;
        Ok(value)
    }

    /// Writes a plain struct result into the caller's memory.
    pub(crate) fn write_struct<T>(&mut self, id: DomId, gpa: u64, value: &T) -> Result<(), HvError> {
        // SAFETY: only instantiated with plain #[repr(C)] ABI structs.
        let bytes = unsafe { bytes_of(value) };
        self.write_guest(id, gpa, bytes, false)
    }

    fn common(&mut self, id: DomId, privileged: bool, number: u64, a: [u64; 6]) -> HcResult {
        match number {
            nr::CONSOLE_WRITE => {
                let (gpa, len) = (a[0], a[1]);
                self.check_range(id, gpa, len)?;
                if len > CONSOLE_WRITE_MAX_BYTES {
                    return Err(HvError::InvalidArgument);
                }
                // dom0's output is the console the user reads: it is taken only as fast as
                // the serial line sends it (a short write), never dropped. Another domain's
                // console is a bounded history: of a write longer than it, only the end
                // that the history keeps is copied.
                let len = if privileged { self.dom0_console_room(id, len) } else { len };
                let mut done = 0u64;
                if len > CONSOLE_RING_BYTES as u64 {
                    done = len - CONSOLE_RING_BYTES as u64;
                    if let Some(d) = self.domains.get_mut(id) {
                        d.console.lose(done);
                    }
                }
                let mut buf = [0u8; 256];
                while done < len {
                    let n = (len - done).min(buf.len() as u64) as usize;
                    self.read_guest(id, gpa + done, &mut buf[..n])?;
                    self.console_out(id, &buf[..n]);
                    done += n as u64;
                }
                Ok(Outcome::Value(len))
            }
            nr::SHUTDOWN => {
                if privileged && Some(id) == self.dom0 {
                    self.poweroff = Some(a[0] == 0);
                }
                self.exit(id, a[0]);
                Ok(Outcome::Gone)
            }
            nr::YIELD => Ok(Outcome::Yield),
            nr::BLOCK => {
                let pending = self.domains.get(id).map(|d| d.events.pending).unwrap_or(0);
                if pending != 0 {
                    return Ok(Outcome::Value(pending));
                }
                let deadline = (a[0] != 0).then(|| self.platform.now_ns().saturating_add(a[0]));
                self.block(id, deadline, true);
                Ok(Outcome::Blocked)
            }
            nr::TIME => Ok(Outcome::Value(self.guest_time_ns(self.dom(id)?))),
            nr::EVENT_ACK => {
                let d = self.dom_mut(id)?;
                let bits = core::mem::take(&mut d.events.pending);
                d.events.in_service = false;
                Ok(Outcome::Value(bits))
            }
            nr::SET_UPCALL => {
                let vector = a[0];
                if vector != 0 && !(32..=255).contains(&vector) {
                    return Err(HvError::InvalidArgument);
                }
                let d = self.dom_mut(id)?;
                d.events.upcall_vector = vector as u8;
                d.events.in_service = false;
                Ok(Outcome::Value(0))
            }
            nr::NULL => Ok(Outcome::Value(0)),
            nr::PAGER_RING => {
                self.pager_ring(id, a[0])?;
                Ok(Outcome::Value(0))
            }
            nr::PAGER_SUPPLY => {
                let args = self.read_struct(id, a[0], SupplyArgs::default())?;
                Ok(Outcome::Value(self.pager_supply(id, &args)?))
            }
            nr::PAGER_FAIL => {
                let code = u32::try_from(a[2]).map_err(|_| HvError::InvalidArgument)?;
                self.pager_fail(id, a[0], a[1], code)?;
                Ok(Outcome::Value(0))
            }
            nr::PAGER_DROP => Ok(Outcome::Value(self.pager_drop(id, a[0])?)),
            nr::CHANNEL_OPEN => {
                self.channel_open(id, a[0], a[1])?;
                Ok(Outcome::Value(0))
            }
            nr::CHANNEL_NOTIFY => {
                self.channel_notify(id)?;
                Ok(Outcome::Value(0))
            }
            nr::SELF_CHECKPOINT => Ok(Outcome::Value(self.self_checkpoint(id)?)),
            nr::SELF_CHECKPOINT_READ => {
                self.self_checkpoint_read(id, a[0], a[1], a[2])?;
                Ok(Outcome::Value(0))
            }
            nr::SELF_CHECKPOINT_END => {
                self.self_checkpoint_end(id)?;
                Ok(Outcome::Value(0))
            }
            nr::CONSOLE_READ => {
                if !privileged {
                    return Err(HvError::NotPermitted);
                }
                let (gpa, len) = (a[0], a[1].min(super::INPUT_BUFFER_BYTES as u64));
                self.check_range(id, gpa, len)?;
                self.poll_console();
                let n = (len as usize).min(self.input.len());
                let bytes: Vec<u8> = self.input.iter().take(n).copied().collect();
                self.write_guest(id, gpa, &bytes, false)?;
                self.input.drain(..n);
                Ok(Outcome::Value(n as u64))
            }
            nr::FREEZE_SELF => {
                self.freeze(id, true)?;
                Ok(Outcome::Gone)
            }
            nr::MEM_PROTECT => {
                let (gpa, pages) = (a[0], a[1]);
                if gpa % PAGE_SIZE != 0 || pages == 0 || pages > self.dom(id)?.mem_bytes / PAGE_SIZE {
                    return Err(HvError::InvalidArgument);
                }
                let d = self.domains.get_mut(id).ok_or(HvError::NoSuchDomain)?;
                let quota_left = d.quota_left();
                let p2m = d.p2m.as_mut().ok_or(HvError::WrongState)?;
                let result = p2m.write_protect(&mut self.frames, &self.mem, gpa / PAGE_SIZE, pages, id, quota_left);
                // Whatever happened, translations that allowed writing may be cached: flush on
                // every path, not only on success.
                if let Some(v) = d.vcpu.as_mut() {
                    v.flush_translations();
                }
                match result {
                    Ok(copied) => {
                        d.owned_tables += u64::from(copied);
                        Ok(Outcome::Value(0))
                    }
                    Err(P2mError::ReadOnly(..)) => Err(HvError::ReadOnly),
                    Err(P2mError::OutOfMemory) => Err(HvError::OutOfMemory),
                    Err(P2mError::QuotaExceeded) => Err(HvError::QuotaExceeded),
                    Err(_) => Err(HvError::BadAddress),
                }
            }
            _ => Err(HvError::NoSuchHypercall),
        }
    }

    /// A target domain for a control operation: it must exist and not be the caller (dom0
    /// may not destroy, pause, freeze or rewrite itself).
    fn other(&self, caller: DomId, target: u64) -> Result<DomId, HvError> {
        let target = u32::try_from(target).map_err(|_| HvError::NoSuchDomain)?;
        self.dom(target)?;
        if target == caller {
            return Err(HvError::NotPermitted);
        }
        Ok(target)
    }

    fn control(&mut self, id: DomId, number: u64, a: [u64; 6]) -> HcResult {
        match number {
            nr::DOM_CREATE => {
                let args = self.read_struct(id, a[0], CreateArgs { mem_bytes: 0, vcpus: 0, flags: 0, name: [0; NAME_MAX_BYTES] })?;
                if args.vcpus != 1 || args.flags & !domctl::CREATE_FLAGS_ALL != 0 {
                    return Err(HvError::InvalidArgument);
                }
                let name = parse_name(&args.name).map_err(|_| HvError::InvalidArgument)?;
                let lazy = args.flags & domctl::CREATE_LAZY != 0;
                let new = self.create_domain_with(name, args.mem_bytes, false, lazy)?;
                if args.flags & domctl::CREATE_PC_PLATFORM != 0 {
                    self.give_pc_platform(new);
                }
                if lazy {
                    // dom0 is the pager until it hands the role to another domain.
                    self.make_lazy(new, id)?;
                }
                Ok(Outcome::Value(new as u64))
            }
            nr::DOM_DESTROY => {
                let t = self.other(id, a[0])?;
                self.destroy_domain(t)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_PAUSE => {
                let t = self.other(id, a[0])?;
                self.pause(t, PauseReason::User)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_UNPAUSE => {
                let t = self.other(id, a[0])?;
                self.unpause(t)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_INFO => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let info = self.domain_info(t)?;
                self.write_struct(id, a[1], &info)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_LIST => {
                let first = u32::try_from(a[0]).unwrap_or(u32::MAX);
                let (out, max) = (a[1], a[2].min(LIST_MAX_IDS));
                self.check_range(id, out, max * 4)?;
                // Copied through a small stack buffer: nothing here allocates.
                let mut chunk = [0u8; LIST_CHUNK_IDS * 4];
                let (mut count, mut next) = (0u64, first);
                while count < max {
                    let mut n = 0;
                    for d in self.domains.ids_from(next).take((max - count).min(LIST_CHUNK_IDS as u64) as usize) {
                        chunk[n * 4..n * 4 + 4].copy_from_slice(&d.to_le_bytes());
                        n += 1;
                        next = d.saturating_add(1);
                    }
                    if n == 0 {
                        break;
                    }
                    self.write_guest(id, out + count * 4, &chunk[..n * 4], false)?;
                    count += n as u64;
                    if next == u32::MAX {
                        break;
                    }
                }
                Ok(Outcome::Value(count))
            }
            nr::MEM_WRITE => {
                let t = self.other(id, a[0])?;
                let (dst, src, len) = (a[1], a[2], a[3]);
                self.check_range(id, src, len)?;
                self.check_range(t, dst, len)?;
                if len > MEM_COPY_MAX_BYTES {
                    return Err(HvError::InvalidArgument);
                }
                self.copy_guest(id, src, t, dst, len, true)?;
                Ok(Outcome::Value(0))
            }
            nr::MEM_READ => {
                let t = self.other(id, a[0])?;
                let (src, dst, len) = (a[1], a[2], a[3]);
                self.check_range(t, src, len)?;
                self.check_range(id, dst, len)?;
                if len > MEM_COPY_MAX_BYTES {
                    return Err(HvError::InvalidArgument);
                }
                self.copy_guest(t, src, id, dst, len, false)?;
                Ok(Outcome::Value(0))
            }
            nr::VCPU_SET => {
                let t = self.other(id, a[0])?;
                let ctx = self.read_struct(id, a[1], VcpuContext::default())?;
                self.set_context(t, &ctx)?;
                Ok(Outcome::Value(0))
            }
            nr::VCPU_GET => {
                let t = self.other(id, a[0])?;
                let ctx = self.context(t)?;
                self.write_struct(id, a[1], &ctx)?;
                Ok(Outcome::Value(0))
            }
            nr::CONSOLE_GET => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let (offset, out, len) = (a[1], a[2], a[3].min(super::super::console::CONSOLE_RING_BYTES as u64));
                self.check_range(id, out, len)?;
                // Reading starts at the oldest byte still kept if `offset` fell off the ring.
                let begin = {
                    let c = &self.dom(t)?.console;
                    offset.clamp(c.first(), c.total())
                };
                // Copied through a small stack buffer: nothing here allocates.
                let mut chunk = [0u8; CONSOLE_COPY_CHUNK_BYTES];
                let (mut at, mut done) = (begin, 0u64);
                while done < len {
                    let want = (len - done).min(CONSOLE_COPY_CHUNK_BYTES as u64) as usize;
                    let (start, n) = self.dom(t)?.console.read(at, &mut chunk[..want]);
                    if n == 0 {
                        break;
                    }
                    self.write_guest(id, out + done, &chunk[..n], false)?;
                    done += n as u64;
                    at = start + n as u64;
                }
                let skipped = begin.saturating_sub(offset).min(u32::MAX as u64);
                Ok(Outcome::Value(done | (skipped << 32)))
            }
            nr::HV_INFO => {
                let info = self.info();
                self.write_struct(id, a[0], &info)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_FREEZE => {
                let t = self.other(id, a[0])?;
                self.freeze(t, false)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_CLONE => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let args = self.read_struct(id, a[1], CloneArgs { quota_pages: 0, index: 0, flags: 0, name: [0; NAME_MAX_BYTES] })?;
                if args.flags & !guest_abi::domctl::CLONE_PAUSED != 0 || parse_name(&args.name).is_err() {
                    return Err(HvError::InvalidArgument);
                }
                Ok(Outcome::Value(self.clone_domain(t, &args)? as u64))
            }
            nr::DOM_STAT => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let stat = self.domain_stat(t)?;
                self.write_struct(id, a[1], &stat)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_SET_NAME => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let name = self.name_arg(id, a[1], a[2], false)?;
                self.set_name(t, name.as_str())?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_SNAPSHOT => {
                let t = self.other(id, a[0])?;
                let name = self.name_arg(id, a[1], a[2], true)?;
                Ok(Outcome::Value(self.snapshot(t, name.as_str())? as u64))
            }
            nr::DOM_STATE_GET => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let state = self.saved_state(t)?;
                self.write_struct(id, a[1], &state)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_STATE_SET => {
                let t = self.other(id, a[0])?;
                let state = self.read_struct(id, a[1], SavedState::default())?;
                self.restore_state(t, &state)?;
                Ok(Outcome::Value(0))
            }
            nr::MEM_PRIVATE_MAP => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let (first, out, count) = (a[1], a[2], a[3]);
                if count == 0 || count > nr::PRIVATE_MAP_MAX_PAGES {
                    return Err(HvError::InvalidArgument);
                }
                let bytes = count.div_ceil(8);
                self.check_range(id, out, bytes)?;
                let mut map = [0u8; (nr::PRIVATE_MAP_MAX_PAGES / 8) as usize];
                let map = &mut map[..bytes as usize];
                let covered = self.private_map(t, first, map)?.min(count);
                self.write_guest(id, out, &map[..covered.div_ceil(8) as usize], false)?;
                Ok(Outcome::Value(covered))
            }
            nr::DOM_CONSOLE_INPUT => {
                let t = self.other(id, a[0])?;
                let (src, len) = (a[1], a[2]);
                if len > nr::CONSOLE_INPUT_MAX_BYTES {
                    return Err(HvError::InvalidArgument);
                }
                let mut buf = [0u8; nr::CONSOLE_INPUT_MAX_BYTES as usize];
                let buf = &mut buf[..len as usize];
                self.read_guest(id, src, buf)?;
                Ok(Outcome::Value(self.console_input(t, buf)? as u64))
            }
            nr::DOM_PLATFORM_GET => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let (out, len) = (a[1], a[2]);
                let bytes = self.platform_state(t)?;
                if len < bytes.len() as u64 {
                    return Err(HvError::BufferTooSmall);
                }
                self.check_range(id, out, bytes.len() as u64)?;
                self.write_guest(id, out, &bytes, false)?;
                Ok(Outcome::Value(bytes.len() as u64))
            }
            nr::DOM_PLATFORM_SET => {
                let t = self.other(id, a[0])?;
                let (src, len) = (a[1], a[2]);
                if len != PC_STATE_BYTES as u64 {
                    return Err(HvError::InvalidArgument);
                }
                let mut buf = [0u8; PC_STATE_BYTES];
                self.check_range(id, src, len)?;
                self.read_guest(id, src, &mut buf)?;
                self.set_platform_state(t, &buf)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_PAGER_SET => {
                let t = self.other(id, a[0])?;
                let pager = u32::try_from(a[1]).map_err(|_| HvError::NoSuchDomain)?;
                self.set_pager(t, pager, a[2])?;
                Ok(Outcome::Value(0))
            }
            nr::PAGER_STATUS => {
                let t = u32::try_from(a[0]).map_err(|_| HvError::NoSuchDomain)?;
                let status = self.lazy_status(t)?;
                self.write_struct(id, a[1], &status)?;
                Ok(Outcome::Value(0))
            }
            nr::DOM_CHANNEL => Ok(Outcome::Value(self.dom_channel(id, a[0], a[1], a[2])?)),
            nr::FRAME_CHECK => match self.check_invariants() {
                Ok(()) => Ok(Outcome::Value(0)),
                Err(InvariantError::NoMemory) => Err(HvError::OutOfMemory),
                Err(e) => {
                    log::error!("invariant check failed: {e:?}");
                    Err(HvError::Busy)
                }
            },
            _ => Err(HvError::NoSuchHypercall),
        }
    }

    /// A name passed as (gpa, len): UTF-8 without NULs, at most [`NAME_MAX_BYTES`]; empty
    /// only where `empty_ok` (a default name is then chosen).
    fn name_arg(&self, id: DomId, gpa: u64, len: u64, empty_ok: bool) -> Result<crate::domain::Name, HvError> {
        if (len == 0 && !empty_ok) || len > NAME_MAX_BYTES as u64 {
            return Err(HvError::InvalidArgument);
        }
        let mut buf = [0u8; NAME_MAX_BYTES];
        self.read_guest(id, gpa, &mut buf[..len as usize])?;
        let name = core::str::from_utf8(&buf[..len as usize]).map_err(|_| HvError::InvalidArgument)?;
        if name.contains('\0') {
            return Err(HvError::InvalidArgument);
        }
        Ok(crate::domain::Name::new(name))
    }

}

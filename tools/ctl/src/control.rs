//! Typed wrappers for every hypercall dom0 makes, over a [`Hypercalls`] transport: the real
//! `vmcall`/`vmmcall` in dom0, a fake in host tests. Pointer arguments are the addresses of
//! Rust values, which are guest-physical addresses in an identity-mapped guest.

use alloc::vec;
use alloc::vec::Vec;
use guest_abi::domctl::{CloneArgs, CreateArgs, DomainInfo, DomainStat, HvInfo, NAME_MAX_BYTES, name_field};
use guest_abi::hypercall::nr;
use guest_abi::pager::{LazyStatus, SupplyArgs};
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;
use guest_abi::{HvError, HvResult};

/// How hypercalls are made.
pub trait Hypercalls {
    /// Makes hypercall `number` with up to six arguments.
    fn call(&mut self, number: u64, args: &[u64]) -> HvResult<u64>;
}

/// The real hypercall instruction (only meaningful inside a guest of this hypervisor).
#[cfg(target_arch = "x86_64")]
pub struct Native(());

#[cfg(target_arch = "x86_64")]
impl Native {
    /// The native transport.
    ///
    /// # Safety
    /// Only inside a guest of this hypervisor, whose memory is identity mapped (pointers are
    /// guest-physical addresses).
    pub const unsafe fn new() -> Self {
        Self(())
    }
}

#[cfg(target_arch = "x86_64")]
impl Hypercalls for Native {
    fn call(&mut self, number: u64, args: &[u64]) -> HvResult<u64> {
        // SAFETY: `new` is unsafe and requires that we run as a guest of this hypervisor with
        // identity-mapped memory; arguments are addresses of live Rust values.
        unsafe { guest_abi::hypercall::hypercall(number, args) }
    }
}

fn addr<T>(v: &T) -> u64 {
    v as *const T as u64
}

fn addr_mut<T>(v: &mut T) -> u64 {
    v as *mut T as u64
}

/// Domains per `dom_list` call.
const LIST_BATCH: usize = 256;

/// The control interface.
pub struct Control<H: Hypercalls> {
    /// The transport.
    pub hc: H,
}

impl<H: Hypercalls> Control<H> {
    /// A control interface over `hc`.
    pub fn new(hc: H) -> Self {
        Self { hc }
    }

    /// Creates a paused domain with `mem_bytes` of RAM.
    pub fn create(&mut self, name: &str, mem_bytes: u64) -> HvResult<u32> {
        if name.len() > NAME_MAX_BYTES {
            return Err(HvError::InvalidArgument);
        }
        let args = CreateArgs { mem_bytes, vcpus: 1, flags: 0, name: name_field(name) };
        self.hc.call(nr::DOM_CREATE, &[addr(&args)]).map(|id| id as u32)
    }

    /// Creates an empty, paused domain with `flags` (`domctl::CREATE_PC_PLATFORM`).
    pub fn create_with(&mut self, name: &str, mem_bytes: u64, flags: u32) -> HvResult<u32> {
        if name.len() > NAME_MAX_BYTES {
            return Err(HvError::InvalidArgument);
        }
        let args = CreateArgs { mem_bytes, vcpus: 1, flags, name: name_field(name) };
        self.hc.call(nr::DOM_CREATE, &[addr(&args)]).map(|id| id as u32)
    }

    /// Types `bytes` (at most `nr::CONSOLE_INPUT_MAX_BYTES`) into a PC domain's UART; returns
    /// how many it took.
    pub fn console_input(&mut self, id: u32, bytes: &[u8]) -> HvResult<usize> {
        let n = bytes.len().min(nr::CONSOLE_INPUT_MAX_BYTES as usize);
        self.hc.call(nr::DOM_CONSOLE_INPUT, &[id as u64, bytes.as_ptr() as u64, n as u64]).map(|n| n as usize)
    }

    /// Destroys a domain.
    pub fn destroy(&mut self, id: u32) -> HvResult<()> {
        self.hc.call(nr::DOM_DESTROY, &[id as u64]).map(drop)
    }

    /// Pauses a domain.
    pub fn pause(&mut self, id: u32) -> HvResult<()> {
        self.hc.call(nr::DOM_PAUSE, &[id as u64]).map(drop)
    }

    /// Unpauses a domain.
    pub fn unpause(&mut self, id: u32) -> HvResult<()> {
        self.hc.call(nr::DOM_UNPAUSE, &[id as u64]).map(drop)
    }

    /// A domain's state and accounting.
    pub fn info(&mut self, id: u32) -> HvResult<DomainInfo> {
        let mut out = DomainInfo {
            domid: 0,
            state: 0,
            pause_reason: 0,
            flags: 0,
            parent: 0,
            clones: 0,
            mem_bytes: 0,
            private_pages: 0,
            shared_pages: 0,
            exit_code: 0,
            cpu_ns: 0,
            name: [0; NAME_MAX_BYTES],
            reason: [0; guest_abi::domctl::REASON_MAX_BYTES],
        };
        self.hc.call(nr::DOM_INFO, &[id as u64, addr_mut(&mut out)])?;
        Ok(out)
    }

    /// Every domain id, ascending.
    pub fn list(&mut self) -> HvResult<Vec<u32>> {
        let mut ids = Vec::new();
        let mut batch = [0u32; LIST_BATCH];
        let mut first = 0u64;
        loop {
            let n = self.hc.call(nr::DOM_LIST, &[first, batch.as_mut_ptr() as u64, LIST_BATCH as u64])? as usize;
            let got = &batch[..n.min(LIST_BATCH)];
            ids.extend_from_slice(got);
            match got.last() {
                Some(&last) if n == LIST_BATCH => first = last as u64 + 1,
                _ => return Ok(ids),
            }
        }
    }

    /// Copies `src` (dom0 memory) to `dst_gpa` in domain `id`.
    pub fn mem_write(&mut self, id: u32, dst_gpa: u64, src: &[u8]) -> HvResult<()> {
        self.hc.call(nr::MEM_WRITE, &[id as u64, dst_gpa, src.as_ptr() as u64, src.len() as u64]).map(drop)
    }

    /// Copies from `src_gpa` in domain `id` into `dst`.
    pub fn mem_read(&mut self, id: u32, src_gpa: u64, dst: &mut [u8]) -> HvResult<()> {
        self.hc.call(nr::MEM_READ, &[id as u64, src_gpa, dst.as_mut_ptr() as u64, dst.len() as u64]).map(drop)
    }

    /// Sets a domain's vCPU state.
    pub fn vcpu_set(&mut self, id: u32, ctx: &VcpuContext) -> HvResult<()> {
        self.hc.call(nr::VCPU_SET, &[id as u64, addr(ctx)]).map(drop)
    }

    /// A domain's vCPU state.
    pub fn vcpu_get(&mut self, id: u32) -> HvResult<VcpuContext> {
        let mut ctx = VcpuContext::default();
        self.hc.call(nr::VCPU_GET, &[id as u64, addr_mut(&mut ctx)])?;
        Ok(ctx)
    }

    /// Console bytes of domain `id` from `offset` into `out`: returns (bytes copied, bytes
    /// skipped because they had already been dropped from the ring).
    pub fn console(&mut self, id: u32, offset: u64, out: &mut [u8]) -> HvResult<(usize, u64)> {
        let r = self.hc.call(nr::CONSOLE_GET, &[id as u64, offset, out.as_mut_ptr() as u64, out.len() as u64])?;
        Ok(((r & 0xFFFF_FFFF) as usize, r >> 32))
    }

    /// Machine-wide figures.
    pub fn hv_info(&mut self) -> HvResult<HvInfo> {
        let mut out = HvInfo::default();
        self.hc.call(nr::HV_INFO, &[addr_mut(&mut out)])?;
        Ok(out)
    }

    /// Turns a domain into a template.
    pub fn freeze(&mut self, id: u32) -> HvResult<()> {
        self.hc.call(nr::DOM_FREEZE, &[id as u64]).map(drop)
    }

    /// Clones a template.
    pub fn clone_domain(&mut self, template: u32, name: &str, index: u32, quota_pages: u64) -> HvResult<u32> {
        self.clone_with(template, name, index, quota_pages, 0)
    }

    /// Clones a template with [`CloneArgs::flags`] (`CLONE_PAUSED`).
    pub fn clone_with(&mut self, template: u32, name: &str, index: u32, quota_pages: u64, flags: u32) -> HvResult<u32> {
        if name.len() > NAME_MAX_BYTES {
            return Err(HvError::InvalidArgument);
        }
        let args = CloneArgs { quota_pages, index, flags, name: name_field(name) };
        self.hc.call(nr::DOM_CLONE, &[template as u64, addr(&args)]).map(|id| id as u32)
    }

    /// Starts a live checkpoint epoch: a frozen domain `name` with `id`'s state of this
    /// instant, sharing its pages; `id` runs on.
    pub fn snapshot(&mut self, id: u32, name: &str) -> HvResult<u32> {
        if name.len() > NAME_MAX_BYTES {
            return Err(HvError::InvalidArgument);
        }
        self.hc.call(nr::DOM_SNAPSHOT, &[id as u64, name.as_ptr() as u64, name.len() as u64]).map(|id| id as u32)
    }

    /// What an image carries beyond the context and memory.
    pub fn state_get(&mut self, id: u32) -> HvResult<SavedState> {
        let mut out = SavedState::default();
        self.hc.call(nr::DOM_STATE_GET, &[id as u64, addr_mut(&mut out)])?;
        Ok(out)
    }

    /// Applies a restored state to a paused domain (new generation, `RESTORED` event).
    pub fn state_set(&mut self, id: u32, state: &SavedState) -> HvResult<()> {
        self.hc.call(nr::DOM_STATE_SET, &[id as u64, addr(state)]).map(drop)
    }

    /// The emulated PC devices of domain `id` (live, paused, frozen or a checkpoint epoch), in
    /// the hypervisor's versioned encoding: opaque bytes for the image's PLATFORM record.
    /// `InvalidArgument` if the domain has no platform.
    pub fn platform_get(&mut self, id: u32) -> HvResult<Vec<u8>> {
        let mut buf = vec![0u8; nr::PLATFORM_STATE_MAX_BYTES as usize];
        let n = self.hc.call(nr::DOM_PLATFORM_GET, &[id as u64, buf.as_mut_ptr() as u64, buf.len() as u64])?;
        buf.truncate((n as usize).min(buf.len()));
        Ok(buf)
    }

    /// Gives paused domain `id` the devices `bytes` encode (from [`Self::platform_get`] or an
    /// image), and so the platform if it had none. The hypervisor checks every field:
    /// `InvalidArgument` if one is refused, `WrongState` unless the domain is paused.
    pub fn platform_set(&mut self, id: u32, bytes: &[u8]) -> HvResult<()> {
        self.hc.call(nr::DOM_PLATFORM_SET, &[id as u64, bytes.as_ptr() as u64, bytes.len() as u64]).map(drop)
    }

    /// One bit per page from `first_gfn` (LSB first), set where the page is not shared with
    /// the domain's template; returns how many pages the bits cover.
    pub fn private_map(&mut self, id: u32, first_gfn: u64, out: &mut [u8]) -> HvResult<u64> {
        let count = (out.len() as u64 * 8).min(nr::PRIVATE_MAP_MAX_PAGES);
        self.hc.call(nr::MEM_PRIVATE_MAP, &[id as u64, first_gfn, out.as_mut_ptr() as u64, count])
    }

    /// Copy-on-write and exit statistics.
    pub fn stat(&mut self, id: u32) -> HvResult<DomainStat> {
        let mut out = DomainStat::default();
        self.hc.call(nr::DOM_STAT, &[id as u64, addr_mut(&mut out)])?;
        Ok(out)
    }

    /// Renames a domain.
    pub fn set_name(&mut self, id: u32, name: &str) -> HvResult<()> {
        self.hc.call(nr::DOM_SET_NAME, &[id as u64, name.as_ptr() as u64, name.len() as u64]).map(drop)
    }

    /// Asks the hypervisor to check its frame-table invariants.
    pub fn frame_check(&mut self) -> HvResult<()> {
        self.hc.call(nr::FRAME_CHECK, &[]).map(drop)
    }

    /// Nanoseconds since boot.
    pub fn time_ns(&mut self) -> HvResult<u64> {
        self.hc.call(nr::TIME, &[])
    }

    /// Sleeps until an event or `timeout_ns` (0 = none); returns the pending events.
    pub fn block(&mut self, timeout_ns: u64) -> HvResult<u64> {
        self.hc.call(nr::BLOCK, &[timeout_ns])
    }

    /// Returns and clears the pending events.
    pub fn event_ack(&mut self) -> HvResult<u64> {
        self.hc.call(nr::EVENT_ACK, &[])
    }

    /// Bytes typed on the serial console.
    pub fn console_read(&mut self, out: &mut [u8]) -> HvResult<usize> {
        self.hc.call(nr::CONSOLE_READ, &[out.as_mut_ptr() as u64, out.len() as u64]).map(|n| n as usize)
    }

    /// Ends dom0, which powers the machine off (code 0: cleanly).
    pub fn shutdown(&mut self, code: u64) -> HvResult<u64> {
        self.hc.call(nr::SHUTDOWN, &[code])
    }

    /// Gives up the rest of the time slice.
    pub fn yield_now(&mut self) -> HvResult<u64> {
        self.hc.call(nr::YIELD, &[])
    }

    /// Registers (or with 0 drops) the caller's pager request ring page.
    pub fn pager_ring(&mut self, ring_gpa: u64) -> HvResult<()> {
        self.hc.call(nr::PAGER_RING, &[ring_gpa]).map(|_| ())
    }

    /// Supplies pages to a lazy client; returns the pages mapped.
    pub fn pager_supply(&mut self, args: &SupplyArgs) -> HvResult<u64> {
        self.hc.call(nr::PAGER_SUPPLY, &[addr(args)])
    }

    /// Gives up on a page: the client is crashed with the reason.
    pub fn pager_fail(&mut self, client: u32, gfn: u64, code: u32) -> HvResult<()> {
        self.hc.call(nr::PAGER_FAIL, &[u64::from(client), gfn, u64::from(code)]).map(|_| ())
    }

    /// Drops the shared frames supplied under `key`; returns the frames freed.
    pub fn pager_drop(&mut self, key: u64) -> HvResult<u64> {
        self.hc.call(nr::PAGER_DROP, &[key])
    }

    /// Makes `pager` the pager of lazy client `client` (`timeout_ms` 0: the default).
    pub fn pager_set(&mut self, client: u32, pager: u32, timeout_ms: u64) -> HvResult<()> {
        self.hc.call(nr::DOM_PAGER_SET, &[u64::from(client), u64::from(pager), timeout_ms]).map(|_| ())
    }

    /// Where a lazy restore is.
    pub fn pager_status(&mut self, client: u32) -> HvResult<LazyStatus> {
        let mut s = LazyStatus::default();
        self.hc.call(nr::PAGER_STATUS, &[u64::from(client), addr_mut(&mut s)])?;
        Ok(s)
    }

    /// Allows (or forbids) domain `id` a channel to dom0.
    pub fn channel_allow(&mut self, id: u32, allow: bool) -> HvResult<()> {
        self.hc.call(nr::DOM_CHANNEL, &[guest_abi::channel::op::ALLOW, u64::from(id), u64::from(allow)]).map(|_| ())
    }

    /// The next domain that kicked its channel, if any.
    pub fn channel_next(&mut self) -> HvResult<Option<u32>> {
        let id = self.hc.call(nr::DOM_CHANNEL, &[guest_abi::channel::op::NEXT, 0, 0])? as u32;
        Ok((id != guest_abi::domctl::NO_DOMAIN).then_some(id))
    }

    /// Where domain `id`'s channel ring is and its running self-checkpoint epoch.
    pub fn channel_info(&mut self, id: u32) -> HvResult<guest_abi::channel::ChannelInfo> {
        let mut i = guest_abi::channel::ChannelInfo::default();
        self.hc.call(nr::DOM_CHANNEL, &[guest_abi::channel::op::INFO, u64::from(id), addr_mut(&mut i)])?;
        Ok(i)
    }

    /// Raises the channel event in domain `id` (dom0 answered).
    pub fn channel_kick(&mut self, id: u32) -> HvResult<()> {
        self.hc.call(nr::DOM_CHANNEL, &[guest_abi::channel::op::KICK, u64::from(id), 0]).map(|_| ())
    }
}

//! Hypercall numbers and the calling convention: number in RAX, arguments in RDI, RSI, RDX,
//! R10, R8, R9, result in RAX (negative = `-HvError`). The instruction is `vmcall` on Intel
//! and `vmmcall` on AMD; CPUID leaf [`CPUID_LEAF_FEATURES`] says which. Pointer arguments are
//! guest-physical addresses in the caller's memory.

use crate::error::{HvResult, decode_ret};

/// CPUID leaf with the hypervisor signature in EBX, ECX, EDX and the highest leaf in EAX.
pub const CPUID_LEAF_SIGNATURE: u32 = 0x4000_0000;
/// CPUID leaf with features: EAX = [`CallInsn`], EBX = ABI version.
pub const CPUID_LEAF_FEATURES: u32 = 0x4000_0001;
/// The 12-byte signature returned by [`CPUID_LEAF_SIGNATURE`].
pub const SIGNATURE: [u8; 12] = *b"CowVisorCoW!";
/// ABI version returned in EBX of [`CPUID_LEAF_FEATURES`].
pub const ABI_VERSION: u32 = 1;

/// Which instruction makes a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CallInsn {
    /// Intel VMX: `vmcall` (0F 01 C1).
    Vmcall = 0,
    /// AMD SVM: `vmmcall` (0F 01 D9).
    Vmmcall = 1,
}

/// Hypercall numbers. Numbers below [`CONTROL_BASE`] are for every domain; from it on they
/// are control operations that only privileged domains (dom0) may make.
pub mod nr {
    /// `console_write(gpa, len) -> n`: append to the caller's console. dom0's console is
    /// taken only as fast as the serial line sends it: `n` may be short (0: yield and retry).
    pub const CONSOLE_WRITE: u64 = 1;
    /// `shutdown(code) -> !`: the domain ends; code 0 is a clean exit.
    pub const SHUTDOWN: u64 = 2;
    /// `yield()`: give up the rest of the time slice.
    pub const YIELD: u64 = 3;
    /// `block(timeout_ns) -> pending events`: sleep until an event is pending or the timeout
    /// passes (0 = no timeout). Returns (and keeps) the pending event bits.
    pub const BLOCK: u64 = 4;
    /// `time() -> ns`: nanoseconds since the hypervisor booted.
    pub const TIME: u64 = 5;
    /// `event_ack() -> bits`: returns and clears the caller's pending event bits.
    pub const EVENT_ACK: u64 = 6;
    /// `set_upcall(vector)`: deliver events as this interrupt vector (0 = poll only).
    pub const SET_UPCALL: u64 = 7;
    /// `null() -> 0`: does nothing (benchmarks).
    pub const NULL: u64 = 8;
    /// `console_read(gpa, len) -> n`: bytes typed on the serial console (dom0 only).
    pub const CONSOLE_READ: u64 = 9;
    /// `freeze_self() -> 0`: turn the caller into a template; returns only in its clones.
    pub const FREEZE_SELF: u64 = 10;
    /// `mem_protect(gpa, pages)`: write-protect pages of the caller's own memory; the next
    /// write to each takes a second-level fault that the hypervisor resolves (dirty tracking).
    pub const MEM_PROTECT: u64 = 11;
    /// `pager_ring(ring_gpa)`: a pager registers the page its requests are posted in
    /// (`crate::pager::ring`); 0 unregisters. Only a domain that is some client's pager.
    pub const PAGER_RING: u64 = 12;
    /// `pager_supply(args_gpa: *const SupplyArgs) -> pages mapped`: a pager fills missing
    /// pages of one of its clients (pages already there are skipped, not overwritten).
    pub const PAGER_SUPPLY: u64 = 13;
    /// `pager_fail(client, gfn, code)`: a pager cannot supply this page (`crate::pager::fail`):
    /// the client alone is crashed, with the reason.
    pub const PAGER_FAIL: u64 = 14;
    /// `pager_drop(share_key) -> frames released`: the pager no longer offers the shared
    /// frames it supplied under this key (clients keep what they map).
    pub const PAGER_DROP: u64 = 15;
    /// `channel_open(ring_gpa, pages)`: registers the caller's channel ring (`crate::channel`),
    /// page aligned, 2 to `MAX_SLOTS + 1` pages of its own memory; `pages` 0 closes it. Only
    /// a domain dom0 allowed a channel.
    pub const CHANNEL_OPEN: u64 = 16;
    /// `channel_notify()`: tells dom0 the caller's ring has news (event `CHANNEL` there).
    pub const CHANNEL_NOTIFY: u64 = 17;
    /// `self_checkpoint() -> TAKEN | RESTORED`: starts a copy-on-write epoch of the caller;
    /// returns `crate::channel::TAKEN` now and `RESTORED` in a domain restored from it.
    /// `busy` while one is running.
    pub const SELF_CHECKPOINT: u64 = 18;
    /// `self_checkpoint_read(gpa, dst_gpa, pages)`: copies pages of the caller's epoch (its
    /// memory at the instant of the call) to its own memory at `dst_gpa`.
    pub const SELF_CHECKPOINT_READ: u64 = 19;
    /// `self_checkpoint_end()`: ends the caller's epoch and returns its frames.
    pub const SELF_CHECKPOINT_END: u64 = 20;

    /// First control hypercall.
    pub const CONTROL_BASE: u64 = 0x100;
    /// `dom_create(args_gpa: *const CreateArgs) -> domid`.
    pub const DOM_CREATE: u64 = 0x100;
    /// `dom_destroy(domid)`.
    pub const DOM_DESTROY: u64 = 0x101;
    /// `dom_pause(domid)`.
    pub const DOM_PAUSE: u64 = 0x102;
    /// `dom_unpause(domid)`.
    pub const DOM_UNPAUSE: u64 = 0x103;
    /// `dom_info(domid, out_gpa: *mut DomainInfo)`.
    pub const DOM_INFO: u64 = 0x104;
    /// `dom_list(first_domid, out_gpa: *mut u32, max) -> count`: ids from `first_domid` on.
    pub const DOM_LIST: u64 = 0x105;
    /// `mem_write(domid, dst_gpa, src_gpa, len)`: copy from the caller into a domain.
    pub const MEM_WRITE: u64 = 0x106;
    /// `mem_read(domid, src_gpa, dst_gpa, len)`: copy from a domain into the caller.
    pub const MEM_READ: u64 = 0x107;
    /// `vcpu_set(domid, ctx_gpa: *const VcpuContext)`.
    pub const VCPU_SET: u64 = 0x108;
    /// `vcpu_get(domid, ctx_gpa: *mut VcpuContext)`.
    pub const VCPU_GET: u64 = 0x109;
    /// `console_get(domid, offset, out_gpa, len) -> n`: a domain's console bytes from
    /// `offset` (bytes since the domain started; older bytes may have been dropped).
    pub const CONSOLE_GET: u64 = 0x10A;
    /// `hv_info(out_gpa: *mut HvInfo)`.
    pub const HV_INFO: u64 = 0x10B;
    /// `dom_freeze(domid)`: turn a domain into a template.
    pub const DOM_FREEZE: u64 = 0x10C;
    /// `dom_clone(template, args_gpa: *const CloneArgs) -> domid`.
    pub const DOM_CLONE: u64 = 0x10D;
    /// `dom_stat(domid, out_gpa: *mut DomainStat)`.
    pub const DOM_STAT: u64 = 0x10E;
    /// `dom_set_name(domid, name_gpa, len)`.
    pub const DOM_SET_NAME: u64 = 0x10F;
    /// `frame_check() -> 0`: check the frame-table invariants (debug; fails with Busy).
    pub const FRAME_CHECK: u64 = 0x110;
    /// `dom_snapshot(domid, name_gpa, len) -> snapid`: a live checkpoint epoch. A new frozen
    /// domain holds the state of this instant, sharing every page with `domid`, which runs
    /// on and copies what it writes from now on (O(1) in its memory size).
    pub const DOM_SNAPSHOT: u64 = 0x111;
    /// `dom_state_get(domid, out_gpa: *mut SavedState)`: what an image carries beyond the
    /// context and memory (`saved::SavedState`).
    pub const DOM_STATE_GET: u64 = 0x112;
    /// `dom_state_set(domid, in_gpa: *const SavedState)`: applies a restored state to a
    /// paused domain (validated), gives it a new generation and the `RESTORED` event.
    pub const DOM_STATE_SET: u64 = 0x113;
    /// `mem_private_map(domid, first_gfn, out_gpa, count) -> n`: one bit per page from
    /// `first_gfn` (at most [`PRIVATE_MAP_MAX_PAGES`]): set if the page is not shared with
    /// the domain's template (a delta image carries only those).
    pub const MEM_PRIVATE_MAP: u64 = 0x114;
    /// `dom_console_input(domid, gpa, len) -> bytes taken`: types bytes into a PC domain's
    /// UART (what `console DOMAIN` forwards); takes what fits (0 when the receiver is full).
    pub const DOM_CONSOLE_INPUT: u64 = 0x115;
    /// `dom_platform_get(domid, out_gpa, len) -> bytes written`: the emulated PC devices of
    /// a domain created with `CREATE_PC_PLATFORM` (a live, paused or frozen one: a template
    /// and a checkpoint epoch keep theirs), in the hypervisor's stable, versioned encoding
    /// (`hypervisor/src/pc/state.rs`; [`PLATFORM_STATE_MAX_BYTES`] at most). `bad argument`
    /// if the domain has no platform, `buffer too small` if `len` is short.
    pub const DOM_PLATFORM_GET: u64 = 0x116;
    /// `dom_platform_set(domid, in_gpa, len)`: gives a paused live domain the devices
    /// encoded at `in_gpa` (every field validated; `bad argument` if one is refused), and so
    /// the platform if it had none. `wrong domain state` unless the domain is paused.
    pub const DOM_PLATFORM_SET: u64 = 0x117;
    /// `dom_pager_set(client, pager, timeout_ms)`: make `pager` the pager of lazily restored
    /// `client` (a takeover if it had one: a waiting request is posted again to the new one,
    /// and a client paused because its pager failed goes on). `timeout_ms` 0 = the default.
    pub const DOM_PAGER_SET: u64 = 0x118;
    /// `pager_status(client, out_gpa: *mut LazyStatus)`: where a lazy restore is.
    pub const PAGER_STATUS: u64 = 0x119;
    /// `dom_channel(op, domid, arg)`: dom0's side of guest channels (`crate::channel::op`).
    pub const DOM_CHANNEL: u64 = 0x11A;
    /// One past the last control hypercall.
    pub const CONTROL_END: u64 = 0x11B;
    /// Most bytes a platform state takes (what dom0 should offer `dom_platform_get`).
    pub const PLATFORM_STATE_MAX_BYTES: u64 = 2048;
    /// Most bytes one `dom_console_input` call takes.
    pub const CONSOLE_INPUT_MAX_BYTES: u64 = 256;

    /// Most pages one `mem_private_map` call reports.
    pub const PRIVATE_MAP_MAX_PAGES: u64 = 32768;
}

/// Event bits delivered to a domain.
pub mod event {
    /// Bytes arrived on the serial console (dom0).
    pub const CONSOLE_INPUT: u64 = 1 << 0;
    /// The domain is a fresh clone: read its identity from the start-of-day page.
    pub const CLONED: u64 = 1 << 1;
    /// A `block` timeout expired.
    pub const TIMER: u64 = 1 << 2;
    /// Another domain changed state (dom0).
    pub const DOMAIN_STATE: u64 = 1 << 3;
    /// The domain was restored from an image: its generation changed and time may have
    /// jumped for the world outside (its own clock continues where it was saved).
    pub const RESTORED: u64 = 1 << 4;
    /// A pager's ring has new requests.
    pub const PAGER: u64 = 1 << 5;
    /// A channel has news: a guest kicked its ring (dom0), or dom0 answered (the guest).
    pub const CHANNEL: u64 = 1 << 6;
    /// Every event bit.
    pub const ALL: u64 = CONSOLE_INPUT | CLONED | TIMER | DOMAIN_STATE | RESTORED | PAGER | CHANNEL;
}

#[cfg(target_arch = "x86_64")]
mod raw {
    use core::arch::asm;
    use core::sync::atomic::{AtomicU32, Ordering};

    /// 0 = unknown (probe CPUID), 1 = vmcall, 2 = vmmcall.
    static INSN: AtomicU32 = AtomicU32::new(0);

    fn insn() -> u32 {
        match INSN.load(Ordering::Relaxed) {
            0 => {
                let r = core::arch::x86_64::__cpuid_count(super::CPUID_LEAF_FEATURES, 0);
                let v = if r.eax == super::CallInsn::Vmmcall as u32 { 2 } else { 1 };
                INSN.store(v, Ordering::Relaxed);
                v
            }
            v => v,
        }
    }

    /// Makes a hypercall with six arguments.
    ///
    /// # Safety
    /// Only inside a guest of this hypervisor; pointer arguments must be valid for the call.
    #[inline]
    pub unsafe fn call6(nr: u64, a: [u64; 6]) -> u64 {
        let ret: u64;
        // SAFETY: the caller vouches that we run under the hypervisor; the call only reads
        // and writes the memory the arguments describe.
        unsafe {
            if insn() == 2 {
                asm!("vmmcall", inlateout("rax") nr => ret, in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
                     in("r10") a[3], in("r8") a[4], in("r9") a[5], options(nostack));
            } else {
                asm!("vmcall", inlateout("rax") nr => ret, in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
                     in("r10") a[3], in("r8") a[4], in("r9") a[5], options(nostack));
            }
        }
        ret
    }
}

#[cfg(target_arch = "x86_64")]
pub use raw::call6;

/// Makes a hypercall and decodes its result.
///
/// # Safety
/// Only inside a guest of this hypervisor; pointer arguments must be valid for the call.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn hypercall(nr: u64, args: &[u64]) -> HvResult<u64> {
    // Element by element, so that with the constant-length slices callers pass the
    // arguments go straight into registers (a copy into an array can become a `memcpy` whose
    // `rep` iterations a benchmark would count).
    let at = |i: usize| args.get(i).copied().unwrap_or(0);
    let a = [at(0), at(1), at(2), at(3), at(4), at(5)];
    // SAFETY: forwarded from the caller.
    decode_ret(unsafe { call6(nr, a) })
}

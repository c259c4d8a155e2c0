//! The guest runtime: everything a tiny guest kernel of this hypervisor needs to start, print,
//! take exceptions and events, and end.
//!
//! A guest is a `no_std` binary built for `x86_64-unknown-none` (a static PIE the domain
//! builder relocates to `IMAGE_BASE_GPA`). It runs in 64-bit mode from its first instruction
//! with the first 4 GiB identity-mapped, so pointers are guest-physical addresses and can be
//! handed to hypercalls as they are. A guest looks like this:
//!
//! ```text
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//! use guest_abi::{println, rt, start_info::StartInfo};
//!
//! guest_abi::guest_main!(hello);
//!
//! fn hello(si: &'static StartInfo) -> i32 {
//!     println!("hello from domain {}", si.domid);
//!     rt::test::report(rt::test::Status::Success)
//! }
//! ```
//!
//! [`guest_main!`](crate::guest_main) emits the `_start` entry point, the panic handler and
//! (with the `rt-alloc` feature) the global allocator into the guest binary, so the library
//! itself defines no global items: a kernel that links `guest-abi` with `rt` enabled by
//! feature unification (the hypervisor, built in the same cargo invocation) is unaffected.
//! On the host the macro emits an empty `main`, so the workspace still builds and tests there.

pub mod console;
pub mod cpu;
pub mod entry;
pub mod events;
pub mod hc;
#[cfg(feature = "rt-alloc")]
pub mod heap;
pub mod idt;
pub mod panic;
pub mod test;

use crate::start_info::{START_INFO_MAGIC, START_INFO_VERSION, StartInfo};
use core::sync::atomic::{AtomicPtr, Ordering};

/// Command-line parsing, also at [`crate::cmdline`] (it needs no runtime).
pub use crate::cmdline;
pub use cmdline::CmdlineError;
pub use cpu::rdtsc;

/// Shutdown code after a panic.
pub const EXIT_PANIC: u64 = 255;
/// Shutdown code after an unhandled exception or unexpected interrupt.
pub const EXIT_EXCEPTION: u64 = 254;
/// Shutdown code when RDI did not point at a valid start-of-day page.
pub const EXIT_BAD_START_INFO: u64 = 253;

/// Highest address the boot page tables map (the start-of-day page must lie below it).
const IDENTITY_MAP_END_GPA: u64 = 4 << 30;

static START_INFO: AtomicPtr<StartInfo> = AtomicPtr::new(core::ptr::null_mut());
static NO_START_INFO: StartInfo = StartInfo::empty();

/// Validates the start-of-day page the builder left at `gpa` and makes it [`start_info`].
pub(crate) fn adopt_start_info(gpa: u64) -> Option<&'static StartInfo> {
    let align = core::mem::align_of::<StartInfo>() as u64;
    let size = core::mem::size_of::<StartInfo>() as u64;
    if gpa == 0 || gpa % align != 0 || gpa.checked_add(size).is_none_or(|end| end > IDENTITY_MAP_END_GPA) {
        return None;
    }
    let ptr = gpa as *mut StartInfo;
    // SAFETY: the address is aligned and identity-mapped; the builder wrote a StartInfo there
    // (checked by magic and version below), it stays mapped for the domain's lifetime and the
    // guest never writes it. StartInfo is plain data, so any bytes are a valid value.
    let si = unsafe { &*ptr };
    if si.magic != START_INFO_MAGIC || si.version != START_INFO_VERSION {
        return None;
    }
    START_INFO.store(ptr, Ordering::Release);
    Some(si)
}

/// The start-of-day page (an empty one before the runtime has started, e.g. on the host).
pub fn start_info() -> &'static StartInfo {
    let ptr = START_INFO.load(Ordering::Acquire);
    if ptr.is_null() {
        return &NO_START_INFO;
    }
    // SAFETY: only `adopt_start_info` stores a non-null pointer, after validating it.
    unsafe { &*ptr }
}

/// A fresh copy of the start-of-day page, read with volatile loads. The hypervisor rewrites a
/// clone's page (its identity) under the guest, so code that runs after `freeze_self` or a
/// `CLONED` event must not rely on values the compiler may have kept from before.
pub fn start_info_now() -> StartInfo {
    let src = start_info() as *const StartInfo;
    // SAFETY: `src` points at a valid, 8-byte aligned StartInfo (checked in adopt_start_info);
    // a volatile read copies whatever the page holds now.
    unsafe { core::ptr::read_volatile(src) }
}

/// Who this domain is now: the fields of the start-of-day page the hypervisor rewrites in a
/// clone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub domid: u32,
    pub parent: u32,
    pub clone_index: u32,
    pub flags: u32,
    pub generation: u64,
}

/// The identity fields of the start-of-day page, read with volatile loads (as
/// [`start_info_now`], without copying the whole page onto the stack: in a clone each stack
/// page touched is a page copied).
pub fn identity_now() -> Identity {
    let si = start_info() as *const StartInfo;
    // SAFETY: `si` points at a valid, aligned StartInfo (checked in adopt_start_info); each
    // field is read in place with a volatile load.
    unsafe {
        Identity {
            domid: (&raw const (*si).domid).read_volatile(),
            parent: (&raw const (*si).parent).read_volatile(),
            clone_index: (&raw const (*si).clone_index).read_volatile(),
            flags: (&raw const (*si).flags).read_volatile(),
            generation: (&raw const (*si).generation).read_volatile(),
        }
    }
}

/// The value of `key=value` on the command line (last occurrence wins; a bare `key` gives "").
pub fn cmdline_value(key: &str) -> Option<&'static str> {
    cmdline::value(start_info().cmdline(), key)
}

/// The command-line value of `key` as a number (decimal or `0x` hex), `Ok(None)` if absent.
pub fn cmdline_u64(key: &str) -> Result<Option<u64>, CmdlineError> {
    match cmdline_value(key) {
        None => Ok(None),
        Some(v) => cmdline::parse_u64(v).map(Some).ok_or(CmdlineError::NotANumber),
    }
}

/// Page-aligned end of the guest image including `.bss`: the first address the image does not
/// use. Computed from the linker-defined `_end` symbol (rust-lld defines it at the end of the
/// last section of the last `PT_LOAD`; the reference is PC-relative, so it is the relocated
/// address). The domain builder reports the same value as `Built::image_end`.
#[cfg(target_os = "none")]
pub fn image_end() -> u64 {
    unsafe extern "C" {
        static _end: u8;
    }
    (&raw const _end as u64).next_multiple_of(crate::layout::PAGE_SIZE)
}

/// Page-aligned end of the guest image; there is no guest image on the host, so 0.
#[cfg(not(target_os = "none"))]
pub fn image_end() -> u64 {
    0
}

/// Flushes the console and shuts the domain down with `code`.
pub fn exit(code: u64) -> ! {
    console::flush();
    hc::shutdown(code)
}

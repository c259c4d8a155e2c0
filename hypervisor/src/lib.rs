//! A type-1 hypervisor whose headline is copy-on-write cloning of domains. The
//! machine-independent logic (frame table, configuration, ...) compiles and is unit-tested on
//! the host; the bare-metal code (`arch`, `kernel`) builds only for `x86_64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod config;
pub mod console;
pub mod domain;
pub mod entropy;
pub mod hv;
pub mod insn;
pub mod mm;
pub mod msr;
pub mod p2m;
pub mod pager;
pub mod pc;
pub mod platform;
pub mod policy;
pub mod sched;
#[cfg(test)]
mod testing;
pub mod txqueue;
pub mod vcpu;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
mod kernel;
#[cfg(target_os = "none")]
pub use kernel::start;

/// Name printed in the boot banner.
pub const NAME: &str = "cowvisor";
/// Version printed in the boot banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

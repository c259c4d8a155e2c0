//! The contract shared by the hypervisor, dom0 and guests: hypercall numbers and calling
//! convention, error codes, control-hypercall structs, the vCPU context, the start-of-day page,
//! the guest memory layout, and the boot bundle format.
#![no_std]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;

pub mod agent;
pub mod bundle;
pub mod channel;
pub mod cmdline;
pub mod crc32;
pub mod domctl;
pub mod error;
pub mod hypercall;
pub mod layout;
pub mod pager;
pub mod saved;
pub mod start_info;
pub mod vcpu;

/// The guest runtime (entry point, console, IDT, events, panic handler) for guest kernels.
#[cfg(all(feature = "rt", target_arch = "x86_64"))]
pub mod rt;

pub use error::{HvError, HvResult};

/// Views a plain `#[repr(C)]` value as bytes.
///
/// # Safety
/// `T` must be plain data (integers and arrays of them) so every byte is initialized.
pub unsafe fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: the caller guarantees T is plain data.
    unsafe { core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>()) }
}

/// Views a plain `#[repr(C)]` value as mutable bytes.
///
/// # Safety
/// `T` must be plain data for which every bit pattern is valid.
pub unsafe fn bytes_of_mut<T>(v: &mut T) -> &mut [u8] {
    // SAFETY: the caller guarantees every bit pattern is a valid T.
    unsafe { core::slice::from_raw_parts_mut(v as *mut T as *mut u8, core::mem::size_of::<T>()) }
}

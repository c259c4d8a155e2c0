//! The contract shared by the hypervisor, dom0 and guests: the boot bundle format, checksums,
//! and (as the project grows) hypercall numbers, argument structs, error codes and the
//! start-of-day information a guest receives.
#![no_std]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;

pub mod bundle;
pub mod crc32;

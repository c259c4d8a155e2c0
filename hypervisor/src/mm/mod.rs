//! Memory management: the frame table (host-testable) and, on bare metal, the boot-time setup
//! of the frame table, the kernel heap and access to physical memory.

pub mod frame;

#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod phys;

//! Memory management: the frame table and physical-memory access (host-testable), and on bare
//! metal the boot-time setup of the frame table, the kernel heap and the linear map.

pub mod frame;
pub mod layout;
pub mod physmem;

#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod phys;

//! dom0's control library (no_std + alloc): typed wrappers for the control hypercalls, the
//! domain builder, and the save-image formats.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod ata;
pub mod bench;
pub mod boot_tables;
pub mod control;
pub mod launch;
pub mod line;
pub mod linux;
pub mod pager;
pub mod registers;
pub mod save;
pub mod selfckpt;
pub mod shell;
pub mod builder;
pub mod elf;
pub mod error;
pub mod memory;
pub mod page_buf;

#[cfg(test)]
mod tests;

pub use builder::{BuildSpec, Built, build};
pub use error::{BuildError, DynamicError};
pub use memory::DomainMemory;

//! The image store on dom0's data disk: named images in contiguous extents behind a
//! crash-safe, double-buffered directory. `no_std` + `alloc`, shared by dom0 and the host's
//! `boot store` command.
#![no_std]

extern crate alloc;

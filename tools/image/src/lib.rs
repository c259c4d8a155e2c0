//! The domain image format (docs/image-format.md): a versioned header, typed and checksummed
//! records, memory as runs of pages with zero pages elided, and a digest over the whole image.
//! `no_std` + `alloc`; every byte read is treated as hostile.
#![no_std]

extern crate alloc;

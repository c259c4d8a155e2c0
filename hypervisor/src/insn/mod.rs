//! Fetching and decoding the guest instruction behind an exit the CPU did not decode (AMD
//! SVM reports a CR write without its operand when it lacks decode assists): a read-only
//! walk of the guest's page tables, a decoder for the control-register instructions, and one
//! for the MOVs a kernel uses on memory-mapped device registers.
//! Everything here reads guest-controlled bytes and fails with an error, never a panic.

pub mod decode;
pub mod mmio;
pub mod walk;

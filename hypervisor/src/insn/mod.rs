//! Fetching and decoding the guest instruction behind an exit the CPU did not decode (AMD
//! SVM reports a CR write without its operand when it lacks decode assists): a read-only
//! walk of the guest's page tables and a decoder for the control-register instructions.
//! Everything here reads guest-controlled bytes and fails with an error, never a panic.

pub mod decode;
pub mod walk;

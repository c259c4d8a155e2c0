//! Host tests of the domain builder: a hand-assembled PIE, hostile variants of it, and the real
//! `hello` guest when it has been built.

mod build;
mod hostile;
mod real_guest;
pub(crate) mod synth;

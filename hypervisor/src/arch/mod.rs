//! Bare-metal x86-64 code: instructions, console, descriptor tables, interrupts, APIC, CPU
//! identification and power control. Built only for `x86_64-unknown-none`.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod pic;
pub mod platform;
pub mod svm;
pub mod vmx;
pub mod time;
pub mod power;
pub mod serial;
pub mod x86;

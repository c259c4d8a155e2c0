//! Bare-metal x86-64 code: instructions, console, descriptor tables, interrupts, APIC, CPU
//! identification and power control. Built only for `x86_64-unknown-none`.

/// Assembly that loads RBX..R15 from the `GuestRegs` at RAX (RAX itself is left to the
/// caller). The offsets are checked against the struct below.
macro_rules! guest_regs_load {
    () => {
        "
    mov rbx, [rax + 8]
    mov rcx, [rax + 16]
    mov rdx, [rax + 24]
    mov rsi, [rax + 32]
    mov rdi, [rax + 40]
    mov rbp, [rax + 48]
    mov r8,  [rax + 56]
    mov r9,  [rax + 64]
    mov r10, [rax + 72]
    mov r11, [rax + 80]
    mov r12, [rax + 88]
    mov r13, [rax + 96]
    mov r14, [rax + 104]
    mov r15, [rax + 112]
"
    };
}

/// Assembly that stores RBX..R15 into the `GuestRegs` at RAX (RAX itself is left to the
/// caller).
macro_rules! guest_regs_store {
    () => {
        "
    mov [rax + 8], rbx
    mov [rax + 16], rcx
    mov [rax + 24], rdx
    mov [rax + 32], rsi
    mov [rax + 40], rdi
    mov [rax + 48], rbp
    mov [rax + 56], r8
    mov [rax + 64], r9
    mov [rax + 72], r10
    mov [rax + 80], r11
    mov [rax + 88], r12
    mov [rax + 96], r13
    mov [rax + 104], r14
    mov [rax + 112], r15
"
    };
}

// The offsets the two macros above use.
const _: () = {
    use crate::vcpu::GuestRegs;
    use core::mem::offset_of;
    assert!(offset_of!(GuestRegs, rax) == 0 && offset_of!(GuestRegs, rbx) == 8);
    assert!(offset_of!(GuestRegs, rcx) == 16 && offset_of!(GuestRegs, rdx) == 24);
    assert!(offset_of!(GuestRegs, rsi) == 32 && offset_of!(GuestRegs, rdi) == 40);
    assert!(offset_of!(GuestRegs, rbp) == 48 && offset_of!(GuestRegs, r8) == 56);
    assert!(offset_of!(GuestRegs, r9) == 64 && offset_of!(GuestRegs, r10) == 72);
    assert!(offset_of!(GuestRegs, r11) == 80 && offset_of!(GuestRegs, r12) == 88);
    assert!(offset_of!(GuestRegs, r13) == 96 && offset_of!(GuestRegs, r14) == 104);
    assert!(offset_of!(GuestRegs, r15) == 112 && size_of::<GuestRegs>() == 120);
};

pub mod apic;
pub mod cpu;
pub mod event;
pub mod extended;
pub mod gdt;
pub mod idt;
pub mod pic;
pub mod platform;
pub mod svm;
pub mod vmx;
pub mod time;
pub mod power;
pub mod serial;
pub mod spec;
pub mod stamps;
pub mod x86;

//! The privileged x86-64 instructions the hypervisor uses, wrapped once: port I/O, MSRs,
//! control registers, interrupts and descriptor-table loads go through the `x86_64` crate;
//! CPUID and the TSC through `core::arch`. Everything else calls these.

use x86_64::instructions::{interrupts, port::Port};
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};
use x86_64::registers::model_specific::Msr;

/// The MSR numbers (host-visible, so the core can match guest accesses against them).
pub use crate::msr;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the hypervisor owns; a write can have any side effect.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the port.
    unsafe { Port::<u16>::new(port).write(value) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: reads can have side effects (e.g. popping a FIFO).
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller vouches for the port.
    unsafe { Port::<u8>::new(port).read() }
}

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist on this CPU, otherwise the CPU raises #GP.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the caller vouches for the MSR.
    unsafe { Msr::new(msr).read() }
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must be valid for it; MSRs change machine behaviour.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and value.
    unsafe { Msr::new(msr).write(value) }
}

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID for `leaf`/`subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    Cpuid { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter; every x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// CR0.
pub fn read_cr0() -> u64 {
    Cr0::read_raw()
}

/// Writes CR0.
///
/// # Safety
/// The value changes paging, protection or feature state of the whole machine.
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { Cr0::write_raw(v) }
}

/// CR3 as the CPU holds it (the PML4 address and the PCID or cache bits).
pub fn read_cr3() -> u64 {
    let (frame, low) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(low)
}

/// CR4.
pub fn read_cr4() -> u64 {
    Cr4::read_raw()
}

/// Writes CR4.
///
/// # Safety
/// As for [`write_cr0`].
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { Cr4::write_raw(v) }
}

/// CR2 (the faulting linear address of the last page fault).
pub fn read_cr2() -> u64 {
    Cr2::read_raw()
}

/// Disables maskable interrupts.
pub fn cli() {
    interrupts::disable();
}

/// Enables maskable interrupts, waits for one, and disables them again.
pub fn wait_for_interrupt() {
    // `sti; hlt` has no window in which an interrupt could be missed (STI's shadow covers HLT).
    interrupts::enable_and_hlt();
    interrupts::disable();
}

/// Lets one pending interrupt be delivered (`sti; nop; cli`).
pub fn deliver_pending_interrupts() {
    interrupts::enable();
    x86_64::instructions::nop();
    interrupts::disable();
}

/// Stops the CPU for good.
pub fn halt_forever() -> ! {
    loop {
        interrupts::disable();
        x86_64::instructions::hlt();
    }
}

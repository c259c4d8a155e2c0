//! Typed wrappers for the privileged x86-64 instructions the hypervisor uses: port I/O, MSRs,
//! control registers, CPUID, TSC, interrupt flag and descriptor-table loads.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the hypervisor owns; a write can have any side effect.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the port.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: reads can have side effects (e.g. popping a FIFO).
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the port.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags)) }
    value
}

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist on this CPU, otherwise the CPU raises #GP.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller vouches for the MSR.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must be valid for it; MSRs change machine behaviour.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
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
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

macro_rules! control_register {
    ($read:ident, $write:ident, $reg:literal) => {
        /// Reads the control register.
        pub fn $read() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effects in ring 0.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) }
            v
        }

        /// Writes the control register.
        ///
        /// # Safety
        /// The value changes paging, protection or feature state of the whole machine.
        pub unsafe fn $write(v: u64) {
            // SAFETY: the caller vouches for the value.
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags)) }
        }
    };
}

control_register!(read_cr0, write_cr0, "cr0");
control_register!(read_cr3, write_cr3, "cr3");
control_register!(read_cr4, write_cr4, "cr4");

/// Reads CR2 (the faulting linear address of the last page fault).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Reads RFLAGS.
pub fn read_rflags() -> u64 {
    let v: u64;
    // SAFETY: pushfq/pop only touch the stack slot they use.
    unsafe { asm!("pushfq", "pop {}", out(reg) v, options(nomem, preserves_flags)) }
    v
}

/// Disables maskable interrupts.
pub fn cli() {
    // SAFETY: the hypervisor runs in ring 0; masking interrupts is always safe.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

/// Enables maskable interrupts, waits for one, and disables them again.
pub fn wait_for_interrupt() {
    // SAFETY: the IDT is loaded before this is called; `sti; hlt` has no window in which an
    // interrupt could be missed (STI's shadow covers HLT).
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

/// Lets one pending interrupt be delivered (`sti; nop; cli`).
pub fn deliver_pending_interrupts() {
    // SAFETY: as for `wait_for_interrupt`; the handlers only acknowledge the interrupt.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) }
}

/// Stops the CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts off, HLT parks the CPU; nothing is left to run.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// A pointer to a descriptor table as LGDT/LIDT take it.
#[repr(C, packed)]
pub struct DescriptorTablePointer {
    pub limit: u16,
    pub base: u64,
}

/// Model-specific register numbers used by the hypervisor.
pub mod msr {
    pub const IA32_APIC_BASE: u32 = 0x1B;
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_PAT: u32 = 0x277;
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    pub const IA32_VMX_MISC: u32 = 0x485;
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_STAR: u32 = 0xC000_0081;
    pub const IA32_LSTAR: u32 = 0xC000_0082;
    pub const IA32_CSTAR: u32 = 0xC000_0083;
    pub const IA32_FMASK: u32 = 0xC000_0084;
    pub const IA32_FS_BASE: u32 = 0xC000_0100;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
    pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
    pub const IA32_TSC_AUX: u32 = 0xC000_0103;
    pub const IA32_PRED_CMD: u32 = 0x49;
    pub const IA32_ARCH_CAPABILITIES: u32 = 0x10A;
    pub const AMD_VM_CR: u32 = 0xC001_0114;
    pub const AMD_VM_HSAVE_PA: u32 = 0xC001_0117;
}

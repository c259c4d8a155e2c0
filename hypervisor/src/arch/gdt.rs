//! The hypervisor's GDT and TSS. VMX needs a non-null host TR, and the TSS's interrupt stack
//! table gives double faults, NMIs and machine checks a known-good stack.

use super::x86::DescriptorTablePointer;
use core::arch::asm;
use core::cell::UnsafeCell;

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// Task-state segment selector.
pub const TSS_SELECTOR: u16 = 0x18;

/// IST slot (1-based) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;

const IST_STACK_BYTES: usize = 16 * 1024;

#[repr(C, packed)]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_BYTES]);

/// Boot-CPU descriptor state. Written once in [`init`] before anything else runs, then only
/// read by the CPU.
struct CpuTables {
    gdt: UnsafeCell<[u64; 5]>,
    tss: UnsafeCell<Tss>,
    ist_stacks: UnsafeCell<[Stack; 3]>,
}

// SAFETY: single boot CPU; written only in `init` with interrupts off.
unsafe impl Sync for CpuTables {}

static TABLES: CpuTables = CpuTables {
    gdt: UnsafeCell::new([0; 5]),
    tss: UnsafeCell::new(Tss {
        _reserved0: 0,
        rsp: [0; 3],
        _reserved1: 0,
        ist: [0; 7],
        _reserved2: 0,
        _reserved3: 0,
        iomap_base: core::mem::size_of::<Tss>() as u16,
    }),
    ist_stacks: UnsafeCell::new([const { Stack([0; IST_STACK_BYTES]) }; 3]),
};

/// Linear base of the TSS (for VMCS host state).
pub fn tss_base() -> u64 {
    TABLES.tss.get() as u64
}

/// Linear base of the GDT (for VMCS host state).
pub fn gdt_base() -> u64 {
    TABLES.gdt.get() as u64
}

/// Builds and loads the GDT and TSS, reloads the segment registers.
pub fn init() {
    // SAFETY: called once on the boot CPU before interrupts are enabled; nothing else holds
    // references into TABLES.
    unsafe {
        let stacks = &mut *TABLES.ist_stacks.get();
        let tss = &mut *TABLES.tss.get();
        for (i, stack) in stacks.iter_mut().enumerate() {
            tss.ist[i] = stack.0.as_ptr() as u64 + IST_STACK_BYTES as u64;
        }
        let base = TABLES.tss.get() as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        let gdt = &mut *TABLES.gdt.get();
        gdt[0] = 0;
        gdt[1] = 0x00AF_9A00_0000_FFFF; // 64-bit code, DPL 0
        gdt[2] = 0x00CF_9200_0000_FFFF; // data, DPL 0
        gdt[3] = (limit & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x89 << 40) // present, 64-bit available TSS
            | (((limit >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        gdt[4] = base >> 32;
        let ptr = DescriptorTablePointer { limit: (5 * 8 - 1) as u16, base: gdt.as_ptr() as u64 };
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = in(reg) KERNEL_CS as u64,
            ds = in(reg) KERNEL_DS as u64,
            tss = in(reg) TSS_SELECTOR as u64,
            tmp = out(reg) _,
        );
    }
}

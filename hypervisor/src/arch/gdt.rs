//! The hypervisor's GDT and TSS, built with the `x86_64` crate's structures. VMX needs a
//! non-null host TR, and the TSS's interrupt stack table gives double faults, NMIs and machine
//! checks a known-good stack.

use core::cell::UnsafeCell;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// Kernel code segment selector (the first descriptor after the null one).
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// Task-state segment selector.
pub const TSS_SELECTOR: u16 = 0x18;

/// IST slot (1-based, as the IDT gate encodes it) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;
const IST_STACKS: usize = 3;
const IST_STACK_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_BYTES]);

struct Stacks(UnsafeCell<[Stack; IST_STACKS]>);

// SAFETY: the CPU alone uses the stacks (on exceptions); the hypervisor only takes their
// addresses, once, in `init`.
unsafe impl Sync for Stacks {}

static IST_STACK_MEMORY: Stacks = Stacks(UnsafeCell::new([const { Stack([0; IST_STACK_BYTES]) }; IST_STACKS]));
static TSS: spin::Once<TaskStateSegment> = spin::Once::new();
static GDT: spin::Once<GlobalDescriptorTable> = spin::Once::new();

/// Linear base of the TSS (for VMCS host state; 0 before [`init`]).
pub fn tss_base() -> u64 {
    TSS.get().map_or(0, |t| t as *const TaskStateSegment as u64)
}

/// Linear base of the GDT (for VMCS host state; 0 before [`init`]).
pub fn gdt_base() -> u64 {
    GDT.get().map_or(0, |g| g as *const GlobalDescriptorTable as u64)
}

/// Builds and loads the GDT and TSS, reloads the segment registers.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut t = TaskStateSegment::new();
        let stacks = IST_STACK_MEMORY.0.get() as *const Stack;
        for i in 0..IST_STACKS {
            // SAFETY: `stacks` points at IST_STACKS stacks; only their end addresses are taken.
            let top = unsafe { stacks.add(i + 1) } as u64;
            t.interrupt_stack_table[i] = VirtAddr::new_truncate(top);
        }
        t
    });
    let gdt = GDT.call_once(|| {
        let mut g = GlobalDescriptorTable::new();
        let code = g.append(Descriptor::kernel_code_segment());
        let data = g.append(Descriptor::kernel_data_segment());
        let task = g.append(Descriptor::tss_segment(tss));
        if (code.0, data.0, task.0) != (KERNEL_CS, KERNEL_DS, TSS_SELECTOR) {
            log::error!("gdt: selectors {:#x} {:#x} {:#x} differ from the ones the VMCS uses", code.0, data.0, task.0);
        }
        g
    });
    gdt.load();
    // SAFETY: the GDT just loaded holds these descriptors: a 64-bit code segment, a data
    // segment and an available TSS; FS and GS become null, as the hypervisor never uses them.
    unsafe {
        CS::set_reg(SegmentSelector(KERNEL_CS));
        DS::set_reg(SegmentSelector(KERNEL_DS));
        ES::set_reg(SegmentSelector(KERNEL_DS));
        SS::set_reg(SegmentSelector(KERNEL_DS));
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(SegmentSelector(TSS_SELECTOR));
    }
}

//! The hypervisor's IDT: one assembly stub per vector saves every general register into a
//! [`TrapFrame`]; exceptions are reported (vector, error code, RIP, CR2, registers) and the
//! machine is powered off with a failure status; interrupt vectors go to their handlers.

use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use super::x86::{self, DescriptorTablePointer};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;

/// Vector of the local APIC timer (preemption tick).
pub const TIMER_VECTOR: u8 = 0xF0;
/// Timer interrupts taken (diagnostics).
pub static TIMER_INTERRUPTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Vector of the local APIC's spurious interrupt.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// Registers saved by the trap stubs, lowest address first.
#[derive(Debug)]
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// 256 stubs, 16 bytes apart: push a zero error code where the CPU pushes none, push the vector,
// jump to the common path that saves the general registers and calls `hv_trap_dispatch`.
global_asm!(
    r#"
    .section .text.hv_traps, "ax"
    .balign 16
    .global hv_trap_stubs
hv_trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp hv_trap_common
    .set vec, vec + 1
    .endr

hv_trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call hv_trap_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
    .text
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static hv_trap_stubs: u8;
}

const STUB_BYTES: u64 = 16;

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    _reserved: u32,
}

impl Gate {
    const EMPTY: Self = Self { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, _reserved: 0 };

    fn interrupt(handler: u64, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist,
            type_attr: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            _reserved: 0,
        }
    }
}

struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: written once in `init` on the boot CPU before interrupts are enabled.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::EMPTY; 256]));

/// Fills and loads the IDT.
pub fn init() {
    // SAFETY: taking the address of the stub table defined in the assembly above.
    let base = unsafe { &hv_trap_stubs as *const u8 as u64 };
    // SAFETY: single boot CPU, interrupts disabled, no other reference to the IDT exists.
    unsafe {
        let idt = &mut *IDT.0.get();
        for (vector, gate) in idt.iter_mut().enumerate() {
            let ist = match vector {
                8 => IST_DOUBLE_FAULT,
                2 => IST_NMI,
                18 => IST_MACHINE_CHECK,
                _ => 0,
            };
            *gate = Gate::interrupt(base + vector as u64 * STUB_BYTES, ist);
        }
        let ptr = DescriptorTablePointer { limit: (256 * 16 - 1) as u16, base: idt.as_ptr() as u64 };
        asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
    }
}

/// Linear base of the IDT (for VMCS host state).
pub fn idt_base() -> u64 {
    IDT.0.get() as u64
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved",
];

#[unsafe(no_mangle)]
extern "C" fn hv_trap_dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        0..=31 => fatal_exception(frame),
        v if v == TIMER_VECTOR as u64 => {
            TIMER_INTERRUPTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            super::apic::eoi()
        }
        v if v == SPURIOUS_VECTOR as u64 => {}
        // Spurious lines of the masked legacy PICs: no EOI to the APIC.
        0x27 | 0x2F => {}
        v => {
            log::warn!("unexpected interrupt vector {v:#x}");
            super::apic::eoi();
        }
    }
}

fn fatal_exception(f: &TrapFrame) -> ! {
    let name = EXCEPTION_NAMES[f.vector as usize & 31];
    super::serial::emergency_write(format_args!(
        "(hv) EXCEPTION {name} (vector {}) error={:#x} rip={:#018x} cr2={:#018x}\r\n\
         (hv)   rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\r\n\
         (hv)   rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}\r\n\
         (hv)   r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}\r\n\
         (hv)   r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\r\n\
         (hv)   cs={:#x} ss={:#x} rflags={:#x} cr0={:#x} cr3={:#x} cr4={:#x}\r\n",
        f.vector,
        f.error,
        f.rip,
        x86::read_cr2(),
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp,
        f.rsp,
        f.r8,
        f.r9,
        f.r10,
        f.r11,
        f.r12,
        f.r13,
        f.r14,
        f.r15,
        f.cs,
        f.ss,
        f.rflags,
        x86::read_cr0(),
        x86::read_cr3(),
        x86::read_cr4(),
    ));
    super::power::power_off(super::power::ExitStatus::Failure)
}

//! The hypervisor's IDT: one assembly stub per vector saves every general register into a
//! [`TrapFrame`]; exceptions are reported (vector, error code, RIP, CR2, registers) and the
//! machine is powered off with a failure status; interrupt vectors go to their handlers.

use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};
use super::x86;
use core::arch::global_asm;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

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

static IDT: spin::Once<InterruptDescriptorTable> = spin::Once::new();

/// The stub for `vector`.
fn stub(vector: u8) -> VirtAddr {
    // SAFETY: taking the address of the stub table defined in the assembly above.
    let base = unsafe { &hv_trap_stubs as *const u8 as u64 };
    VirtAddr::new_truncate(base + u64::from(vector) * STUB_BYTES)
}

/// Fills and loads the IDT: every vector enters its stub; double faults, NMIs and machine
/// checks on their own IST stacks. Called after the GDT is loaded (gates take the current CS).
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut t = InterruptDescriptorTable::new();
        // SAFETY: each address is the stub for that vector: it saves every register, calls
        // the dispatcher and returns with IRETQ after dropping the error-code slot, which the
        // stubs of the vectors without a CPU error code push themselves; the IST indexes
        // name the TSS's three stacks.
        unsafe {
            macro_rules! gate {
                ($($field:ident = $v:expr),* $(,)?) => { $( t.$field.set_handler_addr(stub($v)); )* };
            }
            gate!(
                divide_error = 0, debug = 1, breakpoint = 3, overflow = 4, bound_range_exceeded = 5,
                invalid_opcode = 6, device_not_available = 7,
                invalid_tss = 10, segment_not_present = 11, stack_segment_fault = 12,
                general_protection_fault = 13, page_fault = 14, x87_floating_point = 16,
                alignment_check = 17, simd_floating_point = 19, virtualization = 20,
                cp_protection_exception = 21, hv_injection_exception = 28,
                vmm_communication_exception = 29, security_exception = 30,
            );
            t.double_fault.set_handler_addr(stub(8)).set_stack_index(u16::from(IST_DOUBLE_FAULT - 1));
            t.non_maskable_interrupt.set_handler_addr(stub(2)).set_stack_index(u16::from(IST_NMI - 1));
            t.machine_check.set_handler_addr(stub(18)).set_stack_index(u16::from(IST_MACHINE_CHECK - 1));
            // Vector 9 (coprocessor segment overrun) is reserved on 64-bit CPUs and cannot occur.
            t[9].set_handler_addr(stub(9));
            for v in 32..=255u8 {
                t[v].set_handler_addr(stub(v));
            }
        }
        t
    });
    idt.load();
}

/// Linear base of the IDT (for VMCS host state; 0 before [`init`]).
pub fn idt_base() -> u64 {
    IDT.get().map_or(0, |t| t as *const InterruptDescriptorTable as u64)
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

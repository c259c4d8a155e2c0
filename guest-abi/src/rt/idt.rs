//! The guest IDT: 256 assembly stubs save every general register into a [`Frame`] and call
//! one dispatcher. A handler installed with [`set_handler`] takes its vector; otherwise the
//! event upcall vector goes to [`super::events`], and anything else is reported in one line
//! (`guest exception: vector N (name) error=0x.. rip=0x.. cr2=0x..`) before the domain shuts
//! down with [`super::EXIT_EXCEPTION`].

use super::{cpu, events};
use crate::layout::BOOT_CS;
use crate::println;
use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Number of IDT vectors.
pub const VECTORS: usize = 256;
/// Vectors reserved for CPU exceptions.
pub const EXCEPTION_VECTORS: u8 = 32;
/// Distance between two stubs in the stub table.
const STUB_BYTES: u64 = 16;

/// Registers saved by the stubs, lowest address first. Handlers may change them; they are
/// restored on return (`iretq`).
#[derive(Debug)]
#[repr(C)]
pub struct Frame {
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
    /// The CPU's error code, or 0 for vectors without one.
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// One stub per vector, 16 bytes apart: push a zero error code where the CPU pushes none, push
// the vector, jump to the common path, which saves the general registers and calls the
// dispatcher with RSP 16-byte aligned (the CPU aligns it before pushing its 5-word frame).
global_asm!(
    r#"
    .pushsection .text.guest_abi_rt_traps, "ax", @progbits
    .balign 16
    .globl guest_abi_rt_trap_stubs
    .hidden guest_abi_rt_trap_stubs
guest_abi_rt_trap_stubs:
    .set .Lguest_abi_rt_vec, 0
    .rept 256
    .balign 16
    .if (.Lguest_abi_rt_vec == 8) || (.Lguest_abi_rt_vec == 10) || (.Lguest_abi_rt_vec == 11) || (.Lguest_abi_rt_vec == 12) || (.Lguest_abi_rt_vec == 13) || (.Lguest_abi_rt_vec == 14) || (.Lguest_abi_rt_vec == 17) || (.Lguest_abi_rt_vec == 21) || (.Lguest_abi_rt_vec == 29) || (.Lguest_abi_rt_vec == 30)
    .else
    pushq $0
    .endif
    pushq $.Lguest_abi_rt_vec
    jmp 1f
    .set .Lguest_abi_rt_vec, .Lguest_abi_rt_vec + 1
    .endr
1:
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
    call {dispatch}
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
    .popsection
    "#,
    dispatch = sym dispatch,
    options(att_syntax)
);

unsafe extern "C" {
    static guest_abi_rt_trap_stubs: u8;
}

/// A 64-bit interrupt gate to `handler` through the boot code selector, as two quadwords.
pub const fn interrupt_gate(handler: u64) -> [u64; 2] {
    const PRESENT_DPL0_INTERRUPT_GATE: u64 = 0x8E;
    let low = (handler & 0xFFFF)
        | ((BOOT_CS as u64) << 16)
        | (PRESENT_DPL0_INTERRUPT_GATE << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

#[repr(C, align(16))]
struct Table(UnsafeCell<[[u64; 2]; VECTORS]>);

// SAFETY: written only by `init`, before interrupts are enabled on the guest's single vCPU.
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new([[0; 2]; VECTORS]));

static HANDLERS: [AtomicPtr<()>; VECTORS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; VECTORS];

/// A handler installed for one vector.
pub type Handler = fn(&mut Frame);

/// Fills the IDT with the stubs and loads it (the runtime does this before `main`).
pub fn init() {
    let stubs = &raw const guest_abi_rt_trap_stubs as u64;
    // SAFETY: single vCPU, interrupts disabled; nobody else holds a reference to the table.
    let table = unsafe { &mut *TABLE.get() };
    for (vector, gate) in table.iter_mut().enumerate() {
        *gate = interrupt_gate(stubs + vector as u64 * STUB_BYTES);
    }
    let limit = (core::mem::size_of::<[[u64; 2]; VECTORS]>() - 1) as u16;
    // SAFETY: every gate points at a stub that saves state and calls `dispatch`.
    unsafe { cpu::load_idt(TABLE.get() as u64, limit) };
}

impl Table {
    fn get(&self) -> *mut [[u64; 2]; VECTORS] {
        self.0.get()
    }
}

/// Lets `handler` take `vector` (e.g. a test expecting #UD advances `frame.rip`).
pub fn set_handler(vector: u8, handler: Handler) {
    HANDLERS[usize::from(vector)].store(handler as *mut (), Ordering::Release);
}

/// Lets user space (CPL 3) raise `vector` with `int` (sets the gate's DPL to 3).
pub fn allow_from_user(vector: u8) {
    const DPL3_BITS: u64 = 3 << 45;
    // SAFETY: single vCPU; the gate is changed in place with one store, and the CPU reads it
    // only when the vector is raised.
    unsafe { (*TABLE.get())[usize::from(vector)][0] |= DPL3_BITS };
}

/// Gives `vector` back to the runtime's default handling.
pub fn clear_handler(vector: u8) {
    HANDLERS[usize::from(vector)].store(core::ptr::null_mut(), Ordering::Release);
}

/// The general-protection exception vector.
pub const VECTOR_GP: u8 = 13;

static GP_SKIP_BYTES: AtomicU64 = AtomicU64::new(0);
static GP_SKIPPED: AtomicU64 = AtomicU64::new(0);

fn skip_gp(frame: &mut Frame) {
    GP_SKIPPED.fetch_add(1, Ordering::Relaxed);
    frame.rip += GP_SKIP_BYTES.load(Ordering::Relaxed);
}

/// Makes every #GP resume after the faulting instruction, counting it (see
/// [`gp_faults_skipped`]): for a test that expects an instruction of `insn_bytes` bytes to
/// fault, such as a refused `mov cr4, rax`. `clear_handler(VECTOR_GP)` ends it.
pub fn skip_gp_faults(insn_bytes: u64) {
    GP_SKIP_BYTES.store(insn_bytes, Ordering::Relaxed);
    set_handler(VECTOR_GP, skip_gp);
}

/// How many #GP faults [`skip_gp_faults`] has skipped.
pub fn gp_faults_skipped() -> u64 {
    GP_SKIPPED.load(Ordering::Relaxed)
}

fn handler(vector: usize) -> Option<Handler> {
    let ptr = HANDLERS.get(vector)?.load(Ordering::Acquire);
    if ptr.is_null() {
        return None;
    }
    // SAFETY: only `set_handler` stores non-null values, and it stores `Handler`s.
    Some(unsafe { core::mem::transmute::<*mut (), Handler>(ptr) })
}

/// Name of an exception vector (or "interrupt" above the exceptions).
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; EXCEPTION_VECTORS as usize] = [
        "divide error",
        "debug",
        "nmi",
        "breakpoint",
        "overflow",
        "bound range exceeded",
        "invalid opcode",
        "device not available",
        "double fault",
        "coprocessor segment overrun",
        "invalid tss",
        "segment not present",
        "stack fault",
        "general protection",
        "page fault",
        "reserved",
        "x87 floating point",
        "alignment check",
        "machine check",
        "simd floating point",
        "virtualization",
        "control protection",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "hypervisor injection",
        "vmm communication",
        "security",
        "reserved",
    ];
    usize::try_from(vector).ok().and_then(|v| NAMES.get(v)).copied().unwrap_or("interrupt")
}

extern "C" fn dispatch(frame: *mut Frame) {
    // SAFETY: the stub passes its own stack frame, laid out as `Frame`, live until we return.
    let frame = unsafe { &mut *frame };
    let vector = frame.vector as usize;
    if let Some(h) = handler(vector) {
        h(frame);
    } else if vector == usize::from(events::UPCALL_VECTOR) {
        events::upcall();
    } else {
        let cr2 = cpu::read_cr2();
        println!(
            "guest exception: vector {} ({}) error={:#x} rip={:#x} cr2={:#x}",
            frame.vector,
            exception_name(frame.vector),
            frame.error,
            frame.rip,
            cr2
        );
        super::exit(super::EXIT_EXCEPTION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_encodes_handler_selector_and_type() {
        let [low, high] = interrupt_gate(0x1234_5678_9ABC_DEF0);
        assert_eq!(low & 0xFFFF, 0xDEF0);
        assert_eq!((low >> 16) & 0xFFFF, 0x08);
        assert_eq!((low >> 32) & 0xFF, 0, "no IST");
        assert_eq!((low >> 40) & 0xFF, 0x8E);
        assert_eq!(low >> 48, 0x9ABC);
        assert_eq!(high, 0x1234_5678);
    }

    #[test]
    fn exception_names_cover_the_architectural_vectors() {
        assert_eq!(exception_name(0), "divide error");
        assert_eq!(exception_name(6), "invalid opcode");
        assert_eq!(exception_name(8), "double fault");
        assert_eq!(exception_name(13), "general protection");
        assert_eq!(exception_name(14), "page fault");
        assert_eq!(exception_name(31), "reserved");
        assert_eq!(exception_name(0x30), "interrupt");
        assert_eq!(exception_name(u64::MAX), "interrupt");
    }
}

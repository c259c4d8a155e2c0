//! Test guest `userspace`: drops to ring 3 and checks what the hypervisor does there.
//!
//! It loads its own GDT (with user segments and a TSS), opens its page tables to user mode,
//! and runs code at CPL 3 that makes hypercalls (each must fail with `not permitted`, control
//! calls included), then takes an alignment-check exception (#AC: CR0.AM and RFLAGS.AC set,
//! a misaligned load), which the hypervisor intercepts and must reflect into the guest with
//! error code 0. Back in ring 0 it single-steps one instruction (#DB, also intercepted and
//! reflected) and checks that hypercalls work again.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::error::HvError;
use guest_abi::hypercall::{call6, nr};
use guest_abi::println;
use guest_abi::rt::idt::{self, Frame};
use guest_abi::rt::test::Verdict;
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(userspace);

const KERNEL_CS: u64 = 0x08;
const KERNEL_DS: u64 = 0x10;
const USER_DS: u64 = 0x18 | 3;
const USER_CS: u64 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;
/// The software interrupt user code raises to come back to ring 0.
const RETURN_VECTOR: u8 = 0x80;
const STACK_BYTES: usize = 16 * 1024;
const TSS_BYTES: usize = 104;
/// Page-table entry bits.
const PTE_PRESENT: u64 = 1;
const PTE_USER: u64 = 1 << 2;
const PTE_HUGE: u64 = 1 << 7;
const PTE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const CR0_AM: u64 = 1 << 18;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_AC: u64 = 1 << 18;
/// Hypercalls user code tries: common ones and control ones.
const USER_CALLS: [u64; 5] = [nr::NULL, nr::CONSOLE_WRITE, nr::TIME, nr::DOM_LIST, nr::DOM_CREATE];
/// What a user-mode hypercall left in a result slot before it ran.
const NOT_RUN: u64 = 0xDEAD;

#[repr(C, align(16))]
struct Aligned<T>(UnsafeCell<T>);

// SAFETY: one vCPU; each static is written either before ring 3 is entered or only by the
// code running at that moment (ring 3 or a handler), never concurrently.
unsafe impl<T> Sync for Aligned<T> {}

static GDT: Aligned<[u64; 7]> = Aligned(UnsafeCell::new([0; 7]));
static TSS: Aligned<[u8; TSS_BYTES]> = Aligned(UnsafeCell::new([0; TSS_BYTES]));
static KERNEL_STACK: Aligned<[u8; STACK_BYTES]> = Aligned(UnsafeCell::new([0; STACK_BYTES]));
static USER_STACK: Aligned<[u8; STACK_BYTES]> = Aligned(UnsafeCell::new([0; STACK_BYTES]));
/// Results of the user-mode hypercalls.
static USER_RESULTS: [AtomicU64; USER_CALLS.len()] = [const { AtomicU64::new(NOT_RUN) }; USER_CALLS.len()];
/// The kernel stack pointer to resume on when user mode ends.
#[unsafe(no_mangle)]
static USERSPACE_SAVED_RSP: AtomicU64 = AtomicU64::new(0);
/// The vector, error code and CPL of the exception that ended user mode.
static USER_EXIT: [AtomicU64; 3] = [const { AtomicU64::new(u64::MAX) }; 3];
static SINGLE_STEPS: AtomicU64 = AtomicU64::new(0);

// enter_user(rip, rsp): saves the callee-saved registers and the stack pointer, then IRETs to
// ring 3. user_return is where a handler sends the CPU (in ring 0) to come back from it.
global_asm!(
    r#"
    .globl userspace_enter_user
userspace_enter_user:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + USERSPACE_SAVED_RSP], rsp
    push {user_ds}
    push rsi
    pushfq
    push {user_cs}
    push rdi
    iretq
    .globl userspace_user_return
userspace_user_return:
    mov rsp, [rip + USERSPACE_SAVED_RSP]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    "#,
    user_ds = const USER_DS,
    user_cs = const USER_CS,
);

unsafe extern "C" {
    fn userspace_enter_user(rip: u64, rsp: u64);
    fn userspace_user_return();
}

/// Runs at CPL 3: every hypercall must be refused; then a misaligned load with AC set.
extern "C" fn user_main() -> ! {
    for (slot, &n) in USER_RESULTS.iter().zip(USER_CALLS.iter()) {
        // SAFETY: the hypervisor must refuse the call before looking at the arguments.
        slot.store(unsafe { call6(n, [0x2000, 8, 0, 0, 0, 0]) }, Ordering::Relaxed);
    }
    let bytes = [0u8; 16];
    // SAFETY: sets RFLAGS.AC and loads 4 bytes at an odd address inside `bytes`: with CR0.AM
    // this raises #AC, whose handler leaves user mode; without it, the `int` does.
    unsafe {
        asm!(
            "pushfq", "or qword ptr [rsp], {ac}", "popfq",
            "mov eax, [{p}]",
            "int {v}",
            p = in(reg) bytes.as_ptr().add(1),
            ac = const RFLAGS_AC,
            v = const RETURN_VECTOR,
            out("eax") _,
        );
    }
    loop {
        core::hint::spin_loop();
    }
}

/// #AC or the return interrupt: note what happened and resume the kernel in ring 0.
fn leave_user(f: &mut Frame) {
    USER_EXIT[0].store(f.vector, Ordering::Relaxed);
    USER_EXIT[1].store(f.error, Ordering::Relaxed);
    USER_EXIT[2].store(f.cs & 3, Ordering::Relaxed);
    f.rip = userspace_user_return as *const () as u64;
    f.cs = KERNEL_CS;
    f.ss = KERNEL_DS;
    f.rsp = USERSPACE_SAVED_RSP.load(Ordering::Relaxed);
    f.rflags &= !(RFLAGS_AC | RFLAGS_TF);
}

fn single_step(f: &mut Frame) {
    SINGLE_STEPS.fetch_add(1, Ordering::Relaxed);
    f.rflags &= !RFLAGS_TF;
}

/// A GDT with kernel and user segments and a 64-bit TSS whose RSP0 is `KERNEL_STACK`.
fn load_gdt_and_tss() {
    let tss = TSS.0.get() as u64;
    let rsp0 = KERNEL_STACK.0.get() as u64 + STACK_BYTES as u64;
    // SAFETY: nothing else references the TSS; RSP0 is at offset 4.
    let tss_bytes: &mut [u8; TSS_BYTES] = unsafe { &mut *TSS.0.get() };
    tss_bytes[4..12].copy_from_slice(&rsp0.to_le_bytes());
    let limit = TSS_BYTES as u64 - 1;
    let tss_low = (limit & 0xFFFF)
        | ((tss & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, DPL 0, available 64-bit TSS
        | (((tss >> 24) & 0xFF) << 56);
    let gdt = [
        0,
        0x00AF_9A00_0000_FFFF, // 0x08 kernel code, 64-bit
        0x00CF_9200_0000_FFFF, // 0x10 kernel data
        0x00CF_F200_0000_FFFF, // 0x18 user data, DPL 3
        0x00AF_FA00_0000_FFFF, // 0x20 user code, 64-bit, DPL 3
        tss_low,
        tss >> 32,
    ];
    // SAFETY: the new GDT holds the same kernel descriptors at the same selectors as the
    // boot GDT, so the loaded CS/SS stay valid; the TSS descriptor points at a TSS static.
    unsafe {
        *GDT.0.get() = gdt;
        #[repr(C, packed)]
        struct Gdtr {
            limit: u16,
            base: u64,
        }
        let gdtr = Gdtr { limit: (core::mem::size_of::<[u64; 7]>() - 1) as u16, base: GDT.0.get() as u64 };
        asm!("lgdt [{}]", in(reg) &gdtr, options(readonly, nostack, preserves_flags));
        asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nomem, nostack, preserves_flags));
    }
}

/// Sets the user bit on the boot page tables' entries for the first 1 GiB (where the image,
/// its statics and stacks live), then flushes the TLB.
fn open_low_memory_to_user() {
    // SAFETY: the boot tables are identity-mapped guest RAM owned by this guest; setting U on
    // present entries only widens access, and reloading CR3 flushes stale translations.
    unsafe {
        let cr3: u64;
        asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
        let pml4 = (cr3 & PTE_ADDR_MASK) as *mut u64;
        *pml4 |= PTE_USER;
        let pdpt = (*pml4 & PTE_ADDR_MASK) as *mut u64;
        *pdpt |= PTE_USER;
        if *pdpt & PTE_HUGE == 0 {
            let pd = (*pdpt & PTE_ADDR_MASK) as *mut u64;
            for i in 0..512 {
                let e = pd.add(i);
                if *e & PTE_PRESENT != 0 {
                    *e |= PTE_USER;
                }
            }
        }
        asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags));
    }
}

fn userspace(_si: &'static StartInfo) -> i32 {
    let mut verdict = Verdict::new();
    load_gdt_and_tss();
    open_low_memory_to_user();
    idt::set_handler(17, leave_user);
    idt::set_handler(RETURN_VECTOR, leave_user);
    idt::allow_from_user(RETURN_VECTOR);
    idt::set_handler(1, single_step);

    // SAFETY: AM only makes misaligned accesses at CPL 3 with RFLAGS.AC fault, which the
    // handler above takes; the kernel never sets AC.
    unsafe {
        let cr0: u64;
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        asm!("mov cr0, {}", in(reg) cr0 | CR0_AM, options(nomem, nostack, preserves_flags));
    }
    let user_rsp = USER_STACK.0.get() as u64 + STACK_BYTES as u64;
    // SAFETY: ring 3 runs `user_main` on its own stack; the handlers bring the CPU back to
    // `userspace_user_return`, which restores this stack and returns here.
    unsafe { userspace_enter_user(user_main as *const () as u64, user_rsp) };

    for (slot, &n) in USER_RESULTS.iter().zip(USER_CALLS.iter()) {
        let r = slot.load(Ordering::Relaxed);
        if r != HvError::NotPermitted.to_ret() {
            verdict.fail(format_args!("hypercall {n:#x} from ring 3 returned {:#x}, expected not permitted", r));
        }
    }
    let (vector, error, cpl) =
        (USER_EXIT[0].load(Ordering::Relaxed), USER_EXIT[1].load(Ordering::Relaxed), USER_EXIT[2].load(Ordering::Relaxed));
    println!("userspace: {} hypercalls from ring 3 refused", USER_CALLS.len());
    match (vector, error, cpl) {
        (17, 0, 3) => println!("userspace: alignment check reflected"),
        // QEMU's TCG does not implement alignment checking: the load succeeds and the
        // return interrupt ends user mode.
        (v, 0, 3) if v == u64::from(RETURN_VECTOR) => println!("userspace: this CPU raised no alignment check"),
        _ => verdict.fail(format_args!(
            "user mode ended with vector {vector} error {error:#x} at cpl {cpl}, expected an alignment check (17, 0) at cpl 3"
        )),
    }

    // Single-step one instruction in ring 0: the hypervisor intercepts #DB and reflects it.
    // SAFETY: TF raises #DB after the next instruction; the handler clears TF.
    unsafe {
        asm!("pushfq", "or qword ptr [rsp], {tf}", "popfq", "nop", "nop", tf = const RFLAGS_TF);
    }
    let steps = SINGLE_STEPS.load(Ordering::Relaxed);
    if steps != 1 {
        verdict.fail(format_args!("single-stepping took {steps} debug exceptions, expected 1"));
    }
    // SAFETY: a null hypercall from ring 0 has no arguments.
    let r = unsafe { call6(nr::NULL, [0; 6]) };
    if r != 0 {
        verdict.fail(format_args!("null hypercall back in ring 0 returned {r:#x}"));
    } else {
        println!("userspace: single step reflected; ring 0 hypercalls work");
    }
    verdict.report()
}

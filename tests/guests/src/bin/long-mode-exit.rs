//! Test guest `long-mode-exit`: guests run in long mode only, on both vendors alike. With
//! `mode=64` (the default) it clears CR0.PG from 64-bit code, which must raise #GP (as the CPU
//! does) and let it go on. With `mode=compat` it far-jumps to a 32-bit compatibility-mode
//! segment and clears CR0.PG there, leaving long mode: the hypervisor must stop the domain
//! (`crashed: guest left long mode`). SVM used to let the guest leave long mode while VMX
//! crashed it; if the write is let through, the guest writes `L` to port 0xE9 and halts.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::{asm, global_asm};
use guest_abi::println;
use guest_abi::rt::idt;
use guest_abi::rt::test::{Status, Verdict, report};
use guest_abi::rt::{self, cpu};
use guest_abi::start_info::StartInfo;
use guest_abi::vcpu::Cr0Flags;

guest_abi::guest_main!(long_mode_exit);

/// `mov cr0, rax` is 0F 22 C0.
const MOV_CR0_RAX_BYTES: u64 = 3;
/// Selector of the 32-bit code segment in [`GDT`].
const COMPAT_CS: u64 = 0x18;

/// Null, 64-bit code (0x08), data (0x10), 32-bit code (0x18): flat, ring 0.
#[repr(C, align(16))]
struct Gdt([u64; 4]);
static GDT: Gdt = Gdt([0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0x00CF_9A00_0000_FFFF]);

// 32-bit code reached by a far return: turn paging off (leaving long mode), then, if still
// running, say so on the debug port and halt for good.
global_asm!(
    r#"
    .pushsection .text.long_mode_exit_compat, "ax", @progbits
    .code32
    .globl long_mode_exit_compat
    .hidden long_mode_exit_compat
long_mode_exit_compat:
    mov eax, cr0
    and eax, 0x7fffffff
    mov cr0, eax
    mov dx, 0xe9
    mov al, 0x4c
    out dx, al
    mov al, 0x0a
    out dx, al
2:
    hlt
    jmp 2b
    .code64
    .popsection
"#
);

unsafe extern "C" {
    fn long_mode_exit_compat();
}

fn long_mode_exit(si: &'static StartInfo) -> i32 {
    let mode = rt::cmdline_value("mode").unwrap_or("64");
    let mut v = Verdict::new();
    match mode {
        "64" => {
            idt::skip_gp_faults(MOV_CR0_RAX_BYTES);
            let without_paging = cpu::read_cr0() - Cr0Flags::PAGING;
            // SAFETY: clearing PG from 64-bit code must fault (#GP), which the handler skips;
            // if it did not fault, the test fails below (and this guest has lost its paging).
            unsafe { asm!("mov cr0, rax", in("rax") without_paging.bits(), options(nomem, nostack)) };
            if idt::gp_faults_skipped() != 1 {
                v.fail(format_args!("clearing CR0.PG in 64-bit mode did not raise #GP"));
            }
            println!("long-mode-exit {}: clearing CR0.PG in 64-bit code raised #GP", si.name());
            v.report()
        }
        "compat" => {
            println!("long-mode-exit {}: leaving long mode from compatibility mode", si.name());
            let gdtr: [u16; 5] = {
                let base = GDT.0.as_ptr() as u64;
                let limit = (core::mem::size_of::<Gdt>() - 1) as u16;
                [limit, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16]
            };
            // SAFETY: loads a GDT whose 64-bit code and data descriptors match the ones in
            // use, then far-returns into the 32-bit code above, which never comes back.
            unsafe {
                asm!(
                    "lgdt [{gdtr}]",
                    "push {cs}",
                    "push {target}",
                    "retfq",
                    gdtr = in(reg) gdtr.as_ptr(),
                    cs = in(reg) COMPAT_CS,
                    target = in(reg) long_mode_exit_compat as *const () as u64,
                    options(noreturn)
                );
            }
        }
        _ => {
            println!("long-mode-exit: bad mode= option (64 or compat)");
            report(Status::Error)
        }
    }
}

//! Start of day: the [`guest_main!`](crate::guest_main) macro that emits a guest's `_start`,
//! panic handler and global allocator, and [`run`], which sets up the runtime and calls the
//! guest's main function.
//!
//! `_start` (section `.text._start`) loads RSP with the top of [`BOOT_STACK`] (64 KiB in
//! `.bss`, 16-byte aligned), clears RBP and the direction flag and calls into Rust with RDI
//! (the start-of-day page) untouched. It never returns.

use super::{adopt_start_info, exit, idt};
use crate::println;
use crate::start_info::StartInfo;
use core::cell::UnsafeCell;

/// Size of the boot stack.
pub const STACK_BYTES: usize = 64 * 1024;

/// The stack `_start` switches to.
#[repr(C, align(16))]
pub struct Stack(UnsafeCell<[u8; STACK_BYTES]>);

// SAFETY: only the CPU uses the stack memory, through RSP; Rust never makes references to it.
unsafe impl Sync for Stack {}

/// The boot stack (zero-initialised, so it lives in `.bss`).
#[doc(hidden)]
pub static BOOT_STACK: Stack = Stack(UnsafeCell::new([0; STACK_BYTES]));

/// A guest's main function: it gets the start-of-day page; returning `code` shuts the domain
/// down with `code as u32` zero-extended (0 = clean exit). Test guests end in
/// `rt::test::report`, which never returns.
pub type GuestMain = fn(&'static StartInfo) -> i32;

/// Sets up the runtime and runs `main` (called by `_start`).
#[doc(hidden)]
pub fn run(start_info_gpa: u64, main: GuestMain) -> ! {
    let Some(si) = adopt_start_info(start_info_gpa) else {
        println!("guest: no valid start-of-day page at {start_info_gpa:#x}");
        exit(super::EXIT_BAD_START_INFO)
    };
    idt::init();
    #[cfg(feature = "rt-alloc")]
    super::heap::init(super::image_end(), si.mem_bytes);
    let code = main(si);
    exit(u64::from(code as u32))
}

/// Makes `$main` (a [`GuestMain`]: `fn(&'static StartInfo) -> i32`, not itself named `main`)
/// the guest's main function.
///
/// On `target_os = "none"` it emits `_start`, the `#[panic_handler]` (see
/// [`crate::rt::panic`]) and, with the `rt-alloc` feature, the `#[global_allocator]`. On the
/// host it emits an empty `fn main()` that only type-checks `$main`, so guest binaries
/// (`#![cfg_attr(target_os = "none", no_std, no_main)]`) still build there.
#[macro_export]
macro_rules! guest_main {
    ($main:path) => {
        #[cfg(target_os = "none")]
        ::core::arch::global_asm!(
            ".pushsection .text._start, \"ax\", @progbits",
            ".globl _start",
            ".type _start, @function",
            "_start:",
            "    lea rsp, [rip + {stack} + {stack_bytes}]",
            "    xor ebp, ebp",
            "    cld",
            "    call {entry}",
            "    ud2",
            ".size _start, . - _start",
            ".popsection",
            stack = sym $crate::rt::entry::BOOT_STACK,
            stack_bytes = const $crate::rt::entry::STACK_BYTES,
            entry = sym __guest_rt_entry,
        );

        #[cfg(target_os = "none")]
        #[doc(hidden)]
        extern "C" fn __guest_rt_entry(start_info_gpa: u64) -> ! {
            $crate::rt::entry::run(start_info_gpa, $main)
        }

        #[cfg(target_os = "none")]
        #[doc(hidden)]
        #[panic_handler]
        fn __guest_rt_panic(info: &::core::panic::PanicInfo<'_>) -> ! {
            $crate::rt::panic::report(info)
        }

        #[cfg(target_os = "none")]
        $crate::__guest_rt_global_allocator!();

        #[cfg(not(target_os = "none"))]
        fn main() {
            let _: $crate::rt::entry::GuestMain = $main;
        }
    };
}

/// Emits the guest's `#[global_allocator]` (feature `rt-alloc`).
#[cfg(feature = "rt-alloc")]
#[doc(hidden)]
#[macro_export]
macro_rules! __guest_rt_global_allocator {
    () => {
        #[global_allocator]
        static __GUEST_RT_HEAP: $crate::rt::heap::GuestHeap = $crate::rt::heap::GuestHeap;
    };
}

/// Without `rt-alloc` a guest has no allocator.
#[cfg(not(feature = "rt-alloc"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __guest_rt_global_allocator {
    () => {};
}

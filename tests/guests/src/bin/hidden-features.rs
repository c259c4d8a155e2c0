//! Test guest `hidden-features`: CPU state the hypervisor does not switch per vCPU must not be
//! reachable. CPUID must not show protection keys, XSAVE/AVX, the speculation-control MSRs or
//! the virtualization extensions, and setting the CR4 bit of a hidden feature must raise
//! #GP and leave CR4 as it was. On a CPU with protection keys, PKU used to pass through and
//! CR4.PKE was guest-writable while PKRU belonged to nobody: one guest's WRPKRU changed every
//! guest's user-mode protections.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use guest_abi::println;
use guest_abi::rt::cpu::read_cr4;
use guest_abi::rt::idt;
use guest_abi::rt::test::Verdict;
use guest_abi::start_info::StartInfo;
use guest_abi::vcpu::Cr4Flags;

guest_abi::guest_main!(hidden_features);

/// Length of `mov cr4, rax` (0F 22 E0), skipped by the #GP handler.
const MOV_CR4_RAX_BYTES: u64 = 3;

/// CR4 bits of features that are hidden (Intel SDM Vol 3A 2.5).
const HIDDEN_CR4: [(Cr4Flags, &str); 7] = [
    (Cr4Flags::PROTECTION_KEY_USER, "PKE"),
    (Cr4Flags::OSXSAVE, "OSXSAVE"),
    (Cr4Flags::CONTROL_FLOW_ENFORCEMENT, "CET"),
    (Cr4Flags::PROTECTION_KEY_SUPERVISOR, "PKS"),
    (Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS, "VMXE"),
    (Cr4Flags::SAFER_MODE_EXTENSIONS, "SMXE"),
    (Cr4Flags::KEY_LOCKER, "KL"),
];

/// Tries `mov cr4, rax` with `value`; true if it raised #GP.
fn cr4_write_faults(value: Cr4Flags) -> bool {
    let before = idt::gp_faults_skipped();
    // SAFETY: the #GP handler skips the 3-byte instruction if it faults; if it does not, the
    // bit of a hidden feature is set, which the test reports (and undoes) before using it.
    unsafe { asm!("mov cr4, rax", in("rax") value.bits(), options(nomem, nostack)) };
    idt::gp_faults_skipped() != before
}

fn hidden_features(si: &'static StartInfo) -> i32 {
    let mut v = Verdict::new();
    let l1 = __cpuid(1);
    let l7 = __cpuid_count(7, 0);
    let e1 = __cpuid(0x8000_0001);
    let checks: [(bool, &str); 9] = [
        (l7.ecx & (1 << 3) != 0, "PKU (CPUID 7.ECX[3])"),
        (l7.ecx & (1 << 4) != 0, "OSPKE (CPUID 7.ECX[4])"),
        (l1.ecx & (1 << 26) != 0, "XSAVE (CPUID 1.ECX[26])"),
        (l1.ecx & (1 << 28) != 0, "AVX (CPUID 1.ECX[28])"),
        (l1.ecx & (1 << 5) != 0, "VMX (CPUID 1.ECX[5])"),
        (e1.ecx & (1 << 2) != 0, "SVM (CPUID 0x80000001.ECX[2])"),
        (l7.edx & (1 << 26) != 0, "IBRS/IBPB (CPUID 7.EDX[26])"),
        (l7.edx & (1 << 31) != 0, "SSBD (CPUID 7.EDX[31])"),
        (l7.ebx & (1 << 5) != 0, "AVX2 (CPUID 7.EBX[5])"),
    ];
    for (shown, what) in checks {
        if shown {
            v.fail(format_args!("CPUID shows {what}, whose state is not switched"));
        }
    }
    idt::skip_gp_faults(MOV_CR4_RAX_BYTES);
    let cr4 = read_cr4();
    let mut refused = 0;
    for (bit, name) in HIDDEN_CR4 {
        if !cr4_write_faults(cr4 | bit) {
            v.fail(format_args!("setting CR4.{name} did not fault"));
            let _ = cr4_write_faults(cr4);
        } else {
            refused += 1;
        }
        if read_cr4() != cr4 {
            v.fail(format_args!("CR4 changed to {:#x} (was {:#x}) after setting {name}", read_cr4().bits(), cr4.bits()));
        }
    }
    // An allowed bit still works: PGE on and off again.
    let pge = Cr4Flags::PAGE_GLOBAL;
    if cr4_write_faults(cr4 ^ pge) || read_cr4() != cr4 ^ pge || cr4_write_faults(cr4) {
        v.fail(format_args!("toggling CR4.PGE was refused"));
    }
    idt::clear_handler(idt::VECTOR_GP);
    println!(
        "hidden-features {}: none of {} hidden features shown, {refused} of {} CR4 bits refused",
        si.name(),
        checks.len(),
        HIDDEN_CR4.len()
    );
    v.report()
}

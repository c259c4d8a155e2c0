//! The VMX instructions, each reading CF/ZF in the same asm block so a failure cannot be
//! missed (VMfailInvalid sets CF, VMfailValid sets ZF).

use core::arch::asm;

/// A VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxFail {
    /// No current VMCS or a bad operand (CF).
    Invalid,
    /// Failed with an error number in the VM-instruction error field (ZF).
    Valid,
}

fn check(cf: u8, zf: u8) -> Result<(), VmxFail> {
    if cf != 0 {
        Err(VmxFail::Invalid)
    } else if zf != 0 {
        Err(VmxFail::Valid)
    } else {
        Ok(())
    }
}

/// VMXON with the region at `pa`.
///
/// # Safety
/// CR4.VMXE must be set and the region initialized with the VMCS revision.
pub unsafe fn vmxon(pa: u64) -> Result<(), VmxFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the function contract.
    unsafe { asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
    check(cf, zf)
}

/// VMCLEAR of the VMCS at `pa`.
///
/// # Safety
/// VMX must be on; `pa` must be a VMCS region owned by the caller.
pub unsafe fn vmclear(pa: u64) -> Result<(), VmxFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the function contract.
    unsafe { asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
    check(cf, zf)
}

/// VMPTRLD of the VMCS at `pa`.
///
/// # Safety
/// As for [`vmclear`].
pub unsafe fn vmptrld(pa: u64) -> Result<(), VmxFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the function contract.
    unsafe { asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
    check(cf, zf)
}

/// Reads a field of the current VMCS (0 on failure).
pub fn vmread(field: u64) -> u64 {
    let v: u64;
    // SAFETY: VMREAD only reads the current VMCS; with none or a bad field it fails without
    // side effects (and the value is then meaningless, reported as 0 by callers' checks).
    unsafe { asm!("vmread {}, {}", out(reg) v, in(reg) field, options(nostack, nomem)) };
    v
}

/// Writes a field of the current VMCS.
pub fn vmwrite(field: u64, value: u64) -> Result<(), VmxFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: VMWRITE only changes the current VMCS; a bad field fails without side effects.
    unsafe {
        asm!("vmwrite {}, {}", "setc {}", "setz {}", in(reg) field, in(reg) value, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack, nomem))
    };
    check(cf, zf)
}

/// INVEPT of `kind` (1 = single context, 2 = all contexts) for `eptp`.
///
/// # Safety
/// VMX must be on and INVEPT of that kind supported.
pub unsafe fn invept(kind: u64, eptp: u64) -> Result<(), VmxFail> {
    let descriptor: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: per the function contract.
    unsafe {
        asm!("invept {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &descriptor, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack))
    };
    check(cf, zf)
}

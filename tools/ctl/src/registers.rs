//! Registers of a [`VcpuContext`] by name, for the shell's `vcpu` command: the general
//! registers, RIP/RSP/RFLAGS, the control and debug registers the context holds, and the
//! MSRs it carries.

use guest_abi::vcpu::VcpuContext;

/// Every register name, in the order `vcpu` prints them.
pub const NAMES: &[&str] = &[
    "rip", "rsp", "rflags", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "pat", "dr7", "fs_base", "gs_base", "kernel_gs_base",
    "star", "lstar", "cstar", "sfmask", "sysenter_cs", "sysenter_esp", "sysenter_eip", "tsc_aux",
];

fn field<'a>(c: &'a mut VcpuContext, name: &str) -> Option<&'a mut u64> {
    Some(match name {
        "rip" => &mut c.rip,
        "rsp" => &mut c.rsp,
        "rflags" => &mut c.rflags,
        "rax" => &mut c.rax,
        "rbx" => &mut c.rbx,
        "rcx" => &mut c.rcx,
        "rdx" => &mut c.rdx,
        "rsi" => &mut c.rsi,
        "rdi" => &mut c.rdi,
        "rbp" => &mut c.rbp,
        "r8" => &mut c.r8,
        "r9" => &mut c.r9,
        "r10" => &mut c.r10,
        "r11" => &mut c.r11,
        "r12" => &mut c.r12,
        "r13" => &mut c.r13,
        "r14" => &mut c.r14,
        "r15" => &mut c.r15,
        "cr0" => &mut c.cr0,
        "cr2" => &mut c.cr2,
        "cr3" => &mut c.cr3,
        "cr4" => &mut c.cr4,
        "cr8" => &mut c.cr8,
        "efer" => &mut c.efer,
        "pat" => &mut c.pat,
        "dr7" => &mut c.dr7,
        "fs_base" => &mut c.fs.base,
        "gs_base" => &mut c.gs.base,
        "kernel_gs_base" => &mut c.kernel_gs_base,
        "star" => &mut c.star,
        "lstar" => &mut c.lstar,
        "cstar" => &mut c.cstar,
        "sfmask" => &mut c.sfmask,
        "sysenter_cs" => &mut c.sysenter_cs,
        "sysenter_esp" => &mut c.sysenter_esp,
        "sysenter_eip" => &mut c.sysenter_eip,
        "tsc_aux" => &mut c.tsc_aux,
        _ => return None,
    })
}

/// The value of register `name`, if the context has one by that name.
pub fn get(c: &VcpuContext, name: &str) -> Option<u64> {
    let mut copy = *c;
    field(&mut copy, name).map(|v| *v)
}

/// Sets register `name`; false if there is none by that name.
pub fn set(c: &mut VcpuContext, name: &str, value: u64) -> bool {
    match field(c, name) {
        Some(v) => {
            *v = value;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_register_reads_back_what_was_set_and_others_are_unknown() {
        let mut c = VcpuContext::default();
        for (i, name) in NAMES.iter().enumerate() {
            assert!(set(&mut c, name, 0x1000 + i as u64), "{name}");
        }
        for (i, name) in NAMES.iter().enumerate() {
            assert_eq!(get(&c, name), Some(0x1000 + i as u64), "{name}");
        }
        assert_eq!(get(&c, "cr5"), None);
        assert!(!set(&mut c, "xmm0", 1));
    }
}

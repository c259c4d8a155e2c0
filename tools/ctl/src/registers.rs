//! Registers of a [`VcpuContext`] by name, for the shell's `vcpu` command: the general
//! registers, RIP/RSP/RFLAGS, the control and debug registers the context holds, and the
//! MSRs it carries.

use guest_abi::vcpu::VcpuContext;

/// A register `vcpu` knows by name: where it lives in a [`VcpuContext`].
pub struct Register {
    /// What `vcpu` calls it.
    pub name: &'static str,
    read: fn(&VcpuContext) -> u64,
    field: fn(&mut VcpuContext) -> &mut u64,
}

impl Register {
    /// Its value in `c`.
    pub fn read(&self, c: &VcpuContext) -> u64 {
        (self.read)(c)
    }

    /// Sets it in `c`.
    pub fn write(&self, c: &mut VcpuContext, value: u64) {
        *(self.field)(c) = value;
    }
}

/// Defines [`REGISTERS`] and [`NAMES`] from one list of `name => context field`.
macro_rules! registers {
    ($($name:literal => $($field:ident).+),* $(,)?) => {
        /// Every register, in the order `vcpu` prints them.
        pub const REGISTERS: &[Register] =
            &[$(Register { name: $name, read: |c| c.$($field).+, field: |c| &mut c.$($field).+ }),*];
        /// Every register name, in the order `vcpu` prints them.
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

registers! {
    "rip" => rip,
    "rsp" => rsp,
    "rflags" => rflags,
    "rax" => rax,
    "rbx" => rbx,
    "rcx" => rcx,
    "rdx" => rdx,
    "rsi" => rsi,
    "rdi" => rdi,
    "rbp" => rbp,
    "r8" => r8,
    "r9" => r9,
    "r10" => r10,
    "r11" => r11,
    "r12" => r12,
    "r13" => r13,
    "r14" => r14,
    "r15" => r15,
    "cr0" => cr0,
    "cr2" => cr2,
    "cr3" => cr3,
    "cr4" => cr4,
    "cr8" => cr8,
    "efer" => efer,
    "pat" => pat,
    "dr7" => dr7,
    "fs_base" => fs.base,
    "gs_base" => gs.base,
    "kernel_gs_base" => kernel_gs_base,
    "star" => star,
    "lstar" => lstar,
    "cstar" => cstar,
    "sfmask" => sfmask,
    "sysenter_cs" => sysenter_cs,
    "sysenter_esp" => sysenter_esp,
    "sysenter_eip" => sysenter_eip,
    "tsc_aux" => tsc_aux,
}

/// The register called `name`, if there is one.
pub fn by_name(name: &str) -> Option<&'static Register> {
    REGISTERS.iter().find(|r| r.name == name)
}

/// The value of register `name`, if the context has one by that name.
pub fn get(c: &VcpuContext, name: &str) -> Option<u64> {
    by_name(name).map(|r| r.read(c))
}

/// Sets register `name`; false if there is none by that name.
pub fn set(c: &mut VcpuContext, name: &str, value: u64) -> bool {
    match by_name(name) {
        Some(r) => {
            r.write(c, value);
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
        assert_eq!(REGISTERS.len(), NAMES.len());
        assert!(REGISTERS.iter().zip(NAMES).all(|(r, n)| r.name == *n));
        let fs_base = NAMES.iter().position(|&n| n == "fs_base").unwrap() as u64;
        assert_eq!(c.fs.base, 0x1000 + fs_base, "a nested field");
        assert!(!set(&mut c, "xmm0", 1));
    }
}

//! Which cross-domain barriers and scrubs a CPU needs, decided from its CPUID: an indirect
//! branch prediction barrier on a switch between domains, VERW before VM entry (MDS), the
//! x87 pointer scrub for FXRSTOR on older AMD CPUs. Pure decisions, tested on the host; `arch::spec` and `arch::extended` act on them.

use super::cpuid::{Ext8Ebx, Leaf7Edx};

/// IA32_ARCH_CAPABILITIES bit 5, MDS_NO (Intel SDM Vol 4 table 2-2).
pub const ARCH_CAP_MDS_NO: u64 = 1 << 5;
/// "AuthenticAMD" as CPUID leaf 0 returns it in EBX, EDX, ECX.
const AMD_VENDOR: (u32, u32, u32) = (0x6874_7541, 0x6974_6E65, 0x444D_4163);

/// What the hypervisor does between domains on this CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    /// IBPB (IA32_PRED_CMD) when the CPU switches to another domain's vCPU.
    pub ibpb: bool,
    /// VERW before every VM entry: the CPU has MD_CLEAR and is not known to be immune to MDS.
    pub verw: bool,
    /// FXRSTOR leaves FOP/FIP/FDP alone unless an x87 exception is pending (AMD before
    /// Zen 2, CVE-2006-1056): overwrite them before loading another vCPU's state.
    pub scrub_x87_pointers: bool,
}

impl Isolation {
    /// Decides from `cpuid(leaf, subleaf)` and, when CPUID says it exists, the value of
    /// IA32_ARCH_CAPABILITIES (`arch_capabilities` is called only then).
    pub fn new(cpuid: &dyn Fn(u32, u32) -> [u32; 4], arch_capabilities: &dyn Fn() -> u64) -> Self {
        let l0 = cpuid(0, 0);
        let max_ext = cpuid(0x8000_0000, 0)[0];
        let l7 = if l0[0] >= 7 { cpuid(7, 0) } else { [0; 4] };
        let ext8 = if max_ext >= 0x8000_0008 { cpuid(0x8000_0008, 0) } else { [0; 4] };
        let amd = (l0[1], l0[3], l0[2]) == AMD_VENDOR;
        let (edx7, ebx_ext8) = (Leaf7Edx::from_bits_retain(l7[3]), Ext8Ebx::from_bits_retain(ext8[1]));
        let mds_no = edx7.contains(Leaf7Edx::ARCH_CAPABILITIES) && arch_capabilities() & ARCH_CAP_MDS_NO != 0;
        Self {
            ibpb: edx7.contains(Leaf7Edx::IBRS_IBPB) || ebx_ext8.contains(Ext8Ebx::IBPB),
            verw: edx7.contains(Leaf7Edx::MD_CLEAR) && !mds_no,
            scrub_x87_pointers: amd && !ebx_ext8.contains(Ext8Ebx::XSAVE_ERPTR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(vendor: (u32, u32, u32), l7: [u32; 4], ext8_ebx: u32) -> impl Fn(u32, u32) -> [u32; 4] {
        move |leaf, _| match leaf {
            0 => [0xD, vendor.0, vendor.2, vendor.1],
            7 => l7,
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            0x8000_0008 => [0x3030, ext8_ebx, 0, 0],
            _ => [0; 4],
        }
    }
    const INTEL: (u32, u32, u32) = (0x756E_6547, 0x4965_6E69, 0x6C65_746E);

    #[test]
    fn old_amd_cpus_scrub_the_x87_pointers_and_new_ones_do_not() {
        let never = || unreachable!("no ARCH_CAPABILITIES");
        assert!(Isolation::new(&cpu(AMD_VENDOR, [0; 4], 0), &never).scrub_x87_pointers);
        assert!(!Isolation::new(&cpu(AMD_VENDOR, [0; 4], Ext8Ebx::XSAVE_ERPTR.bits()), &never).scrub_x87_pointers);
        assert!(!Isolation::new(&cpu(INTEL, [0; 4], 0), &never).scrub_x87_pointers, "Intel always saves them");
    }

    #[test]
    fn ibpb_comes_from_either_vendors_bit() {
        let never = || 0;
        assert!(Isolation::new(&cpu(INTEL, [0, 0, 0, Leaf7Edx::IBRS_IBPB.bits()], 0), &never).ibpb);
        assert!(Isolation::new(&cpu(AMD_VENDOR, [0; 4], Ext8Ebx::IBPB.bits()), &never).ibpb);
        assert!(!Isolation::new(&cpu(INTEL, [0; 4], 0), &never).ibpb);
    }

    #[test]
    fn verw_is_issued_unless_the_cpu_says_it_is_not_affected_by_mds() {
        let md_clear = [0, 0, 0, Leaf7Edx::MD_CLEAR.bits()];
        assert!(Isolation::new(&cpu(INTEL, md_clear, 0), &|| unreachable!()).verw);
        let with_caps = [0, 0, 0, Leaf7Edx::MD_CLEAR.bits() | Leaf7Edx::ARCH_CAPABILITIES.bits()];
        assert!(!Isolation::new(&cpu(INTEL, with_caps, 0), &|| ARCH_CAP_MDS_NO).verw);
        assert!(Isolation::new(&cpu(INTEL, with_caps, 0), &|| 0).verw);
        assert!(!Isolation::new(&cpu(INTEL, [0; 4], 0), &|| 0).verw, "no MD_CLEAR: VERW clears nothing");
    }
}

//! The CPUID a guest sees: an allow-list. Every leaf not listed reads as zeros, and in a
//! listed leaf only the bits named here pass through from the host; each one is a feature
//! whose state the hypervisor switches per vCPU (x87/SSE through FXSAVE, FS/GS bases, TSC_AUX)
//! or that has no state (instructions such as POPCNT, AES, BMI). Features with state nobody
//! switches (PKRU, XSAVE/AVX, CET, the speculation-control MSRs, performance counters) stay
//! hidden, and so do the CR4 bits that would enable them (see [`CpuidPolicy::cr4_allowed`]).
//!
//! Bit positions: Intel SDM Vol 2A, CPUID (Tables 3-8 to 3-10 and "Structured Extended
//! Feature Flags"); AMD APM Vol 3, Appendix E.

use guest_abi::vcpu::cr4;

/// Highest basic leaf shown (7: structured extended features).
pub const MAX_BASIC_LEAF: u32 = 0x7;
/// Highest extended leaf shown (0x8000_0008: address sizes).
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;
/// Guest-physical addresses the second-level tables translate (four levels: 48 bits).
pub const P2M_PHYS_ADDR_BITS: u8 = 48;

const fn bits(list: &[u32]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

/// Leaf 1 ECX: SSE3 0, PCLMULQDQ 1, SSSE3 9, CX16 13, PCID 17, SSE4.1 19, SSE4.2 20,
/// MOVBE 22, POPCNT 23, AES 25, RDRAND 30. Hidden: MONITOR, VMX, SMX, the power and debug
/// interfaces, FMA/AVX/F16C (AVX state needs XSAVE), XSAVE/OSXSAVE, x2APIC, TSC-deadline.
pub const LEAF1_ECX: u32 = bits(&[0, 1, 9, 13, 17, 19, 20, 22, 23, 25, 30]);
/// Leaf 1 ECX bit 31: "running under a hypervisor", always set.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: FPU 0, VME 1, DE 2, PSE 3, TSC 4, MSR 5, PAE 6, MCE 7, CX8 8, SEP 11, MTRR 12,
/// PGE 13, CMOV 15, PAT 16, PSE36 17, CLFSH 19, MMX 23, FXSR 24, SSE 25, SSE2 26, SS 27.
/// Hidden: APIC 9 (none is emulated yet), MCA 14, PSN 18, DS 21, ACPI 22, HTT 28, TM 29, PBE 31.
pub const LEAF1_EDX: u32 = bits(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 15, 16, 17, 19, 23, 24, 25, 26, 27]);
/// Leaf 1 EBX: only the CLFLUSH line size (bits 15:8) and brand index (7:0); the APIC id
/// and logical-processor count read as zero (one vCPU).
pub const LEAF1_EBX: u32 = 0xFFFF;

/// Leaf 7.0 EBX: FSGSBASE 0, BMI1 3, FDP_EXCPTN_ONLY 6, SMEP 7, BMI2 8, ERMS 9, INVPCID 10,
/// FPU-CS/DS deprecated 13, RDSEED 18, ADX 19, SMAP 20, CLFLUSHOPT 23, CLWB 24, SHA 29.
/// Hidden: TSC_ADJUST, TSX (HLE/RTM), AVX2/AVX-512, MPX, resource monitoring, Intel PT.
pub const LEAF7_EBX: u32 = bits(&[0, 3, 6, 7, 8, 9, 10, 13, 18, 19, 20, 23, 24, 29]);
/// Leaf 7.0 ECX: UMIP 2, RDPID 22, CLDEMOTE 25, MOVDIRI 27, MOVDIR64B 28. Hidden: PKU 3 and
/// OSPKE 4 (PKRU is not switched), WAITPKG, CET shadow stacks, LA57, key locker, SGX, AVX-512.
pub const LEAF7_ECX: u32 = bits(&[2, 22, 25, 27, 28]);
/// Leaf 7.0 EDX: FSRM 4, MD_CLEAR 10 (VERW clears buffers), SERIALIZE 14. Hidden: the
/// speculation-control MSRs (IBRS/IBPB 26, STIBP 27, L1D_FLUSH 28, ARCH_CAPABILITIES 29,
/// CORE_CAPABILITIES 30, SSBD 31: not emulated), CET-IBT, AMX, hybrid, user interrupts.
pub const LEAF7_EDX: u32 = bits(&[4, 10, 14]);

/// Leaf 0x8000_0001 ECX: LAHF 0, ABM/LZCNT 5, SSE4A 6, MISALIGNSSE 7, PREFETCHW 8, TBM 21.
/// Hidden: SVM, the extended APIC, AltMovCr8, OSVW, IBS, XOP/FMA4 (AVX state), SKINIT, WDT,
/// LWP, topology and performance-counter extensions, MONITORX.
pub const EXT1_ECX: u32 = bits(&[0, 5, 6, 7, 8, 21]);
/// Leaf 0x8000_0001 EDX: the leaf-1 bits AMD repeats, SYSCALL 11, NX 20, MMXEXT 22,
/// PDPE1GB 26, RDTSCP 27, LM 29, 3DNOWEXT 30, 3DNOW 31. Hidden: FFXSR 25 (EFER.FFXSR is refused).
pub const EXT1_EDX: u32 = (LEAF1_EDX & bits(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 15, 16, 17, 23, 24]))
    | bits(&[11, 20, 22, 26, 27, 29, 30, 31]);
/// Leaf 0x8000_0007 EDX: invariant TSC 8.
pub const EXT7_EDX: u32 = bits(&[8]);
/// Leaf 0x8000_0008 EBX: CLZERO 0, XSAVEERPTR 2 (FXSAVE always saves the error pointers).
/// Hidden: IRPERF, RDPRU, the speculation-control bits (IBPB 12 and up).
pub const EXT8_EBX: u32 = bits(&[0, 2]);

/// CPUID leaf 1 ECX PCID.
const LEAF1_ECX_PCID: u32 = 1 << 17;
/// CPUID leaf 1 EDX bits that CR4 bits depend on.
const LEAF1_EDX_VME: u32 = 1 << 1;
const LEAF1_EDX_DE: u32 = 1 << 2;
const LEAF1_EDX_PSE: u32 = 1 << 3;
const LEAF1_EDX_TSC: u32 = 1 << 4;
const LEAF1_EDX_PAE: u32 = 1 << 6;
const LEAF1_EDX_MCE: u32 = 1 << 7;
const LEAF1_EDX_PGE: u32 = 1 << 13;
const LEAF1_EDX_FXSR: u32 = 1 << 24;
const LEAF1_EDX_SSE: u32 = 1 << 25;
const LEAF7_EBX_FSGSBASE: u32 = 1 << 0;
const LEAF7_EBX_SMEP: u32 = 1 << 7;
const LEAF7_EBX_SMAP: u32 = 1 << 20;
const LEAF7_ECX_UMIP: u32 = 1 << 2;
const LEAF7_ECX_RDPID: u32 = 1 << 22;
const EXT1_EDX_RDTSCP: u32 = 1 << 27;

/// The CPUID leaves shown to guests, filtered once from the host's at boot.
#[derive(Clone, Copy, Debug)]
pub struct CpuidPolicy {
    max_basic: u32,
    max_extended: u32,
    leaf1: [u32; 4],
    leaf7: [u32; 4],
    ext1: [u32; 4],
    ext8_eax: u32,
}

impl CpuidPolicy {
    /// Filters the host's CPUID (`host(leaf, subleaf)`).
    pub fn new(host: &dyn Fn(u32, u32) -> [u32; 4]) -> Self {
        let max_basic = host(0, 0)[0].min(MAX_BASIC_LEAF);
        let max_ext_host = host(0x8000_0000, 0)[0];
        let max_extended = if max_ext_host >= 0x8000_0000 { max_ext_host.min(MAX_EXTENDED_LEAF) } else { 0 };
        let basic = |leaf: u32| if leaf <= max_basic { host(leaf, 0) } else { [0; 4] };
        let ext = |leaf: u32| if max_extended >= leaf { host(leaf, 0) } else { [0; 4] };
        let h1 = basic(1);
        let h7 = basic(7);
        let e1 = ext(0x8000_0001);
        let e8 = ext(0x8000_0008);
        // Physical-address width (bits 7:0) and linear width (15:8); the P2M translates 48 bits.
        let phys = ((e8[0] & 0xFF) as u8).clamp(36, P2M_PHYS_ADDR_BITS);
        let linear = (e8[0] >> 8) & 0xFF;
        Self {
            max_basic,
            max_extended,
            leaf1: [h1[0], h1[1] & LEAF1_EBX, (h1[2] & LEAF1_ECX) | LEAF1_ECX_HYPERVISOR, h1[3] & LEAF1_EDX],
            leaf7: [0, h7[1] & LEAF7_EBX, h7[2] & LEAF7_ECX, h7[3] & LEAF7_EDX],
            ext1: [e1[0], e1[1], e1[2] & EXT1_ECX, e1[3] & EXT1_EDX],
            ext8_eax: u32::from(phys) | (linear.min(48) << 8),
        }
    }

    /// What a guest's CPUID(`leaf`, `subleaf`) returns; `host` is the host's answer for the
    /// same leaf (used only for the leaves that pass through whole: vendor, brand, caches).
    /// The hypervisor's own leaves (0x4000_0000 on) are answered by the caller.
    pub fn filter(&self, leaf: u32, subleaf: u32, host: [u32; 4]) -> [u32; 4] {
        let basic = leaf < 0x8000_0000;
        if (basic && leaf > self.max_basic) || (!basic && leaf > self.max_extended) {
            return [0; 4];
        }
        match leaf {
            0 => [self.max_basic, host[1], host[2], host[3]],
            1 => self.leaf1,
            // Cache descriptors and the deterministic cache parameters; the core and thread
            // counts sharing a cache (EAX 31:14) read as one.
            2 => host,
            4 => [host[0] & 0x3FFF, host[1], host[2], host[3]],
            7 if subleaf == 0 => self.leaf7,
            0x8000_0000 => [self.max_extended, host[1], host[2], host[3]],
            0x8000_0001 => self.ext1,
            // Brand string and L1/L2/L3 cache and TLB descriptions.
            0x8000_0002..=0x8000_0006 => host,
            0x8000_0007 => [0, 0, 0, host[3] & EXT7_EDX],
            // Address sizes; the core count (ECX) reads as one.
            0x8000_0008 => [self.ext8_eax, host[1] & EXT8_EBX, 0, 0],
            _ => [0; 4],
        }
    }

    /// Whether the guest sees `bit` of leaf-1 EDX.
    fn leaf1_edx(&self, bit: u32) -> bool {
        self.leaf1[3] & bit != 0
    }

    /// CR4 bits a guest may set: the architectural ones whose feature is shown, and nothing
    /// that enables hidden state (PKE, OSXSAVE, CET, LA57, VMXE, SMXE, key locker, PKS).
    pub fn cr4_allowed(&self) -> u64 {
        let mut a = cr4::PCE;
        let pairs = [
            (LEAF1_EDX_TSC, cr4::TSD),
            (LEAF1_EDX_VME, cr4::VME | cr4::PVI),
            (LEAF1_EDX_DE, cr4::DE),
            (LEAF1_EDX_PSE, cr4::PSE),
            (LEAF1_EDX_PAE, cr4::PAE),
            (LEAF1_EDX_MCE, cr4::MCE),
            (LEAF1_EDX_PGE, cr4::PGE),
            (LEAF1_EDX_FXSR, cr4::OSFXSR),
            (LEAF1_EDX_SSE, cr4::OSXMMEXCPT),
        ];
        for (feature, bit) in pairs {
            if self.leaf1_edx(feature) {
                a |= bit;
            }
        }
        let shown = |word: u32, bit: u32, cr: u64| if word & bit != 0 { cr } else { 0 };
        a | shown(self.leaf1[2], LEAF1_ECX_PCID, cr4::PCIDE)
            | shown(self.leaf7[1], LEAF7_EBX_FSGSBASE, cr4::FSGSBASE)
            | shown(self.leaf7[1], LEAF7_EBX_SMEP, cr4::SMEP)
            | shown(self.leaf7[1], LEAF7_EBX_SMAP, cr4::SMAP)
            | shown(self.leaf7[2], LEAF7_ECX_UMIP, cr4::UMIP)
    }

    /// Whether RDTSCP or RDPID is shown, so IA32_TSC_AUX exists for guests (and for the host).
    pub fn shows_tsc_aux(&self) -> bool {
        self.ext1[3] & EXT1_EDX_RDTSCP != 0 || self.leaf7[2] & LEAF7_ECX_RDPID != 0
    }

    /// Physical-address width shown.
    pub fn phys_addr_bits(&self) -> u8 {
        (self.ext8_eax & 0xFF) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that sets every bit of every leaf, with the maximum leaves the test asks for.
    fn everything(max_basic: u32, max_ext: u32) -> impl Fn(u32, u32) -> [u32; 4] {
        move |leaf, _| match leaf {
            0 => [max_basic, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],
            0x8000_0000 => [max_ext, 0, 0, 0],
            0x8000_0008 => [0x3030, !0, !0, !0],
            _ => [!0; 4],
        }
    }

    #[test]
    fn a_host_with_every_feature_shows_only_the_allow_list() {
        let host = everything(0x20, 0x8000_0021);
        let p = CpuidPolicy::new(&host);
        assert_eq!(p.filter(1, 0, host(1, 0)), [!0, LEAF1_EBX, LEAF1_ECX | LEAF1_ECX_HYPERVISOR, LEAF1_EDX]);
        assert_eq!(p.filter(7, 0, host(7, 0)), [0, LEAF7_EBX, LEAF7_ECX, LEAF7_EDX]);
        assert_eq!(p.filter(0x8000_0001, 0, host(0x8000_0001, 0))[2..], [EXT1_ECX, EXT1_EDX]);
        assert_eq!(p.filter(0, 0, host(0, 0))[0], MAX_BASIC_LEAF);
        assert_eq!(p.filter(0x8000_0000, 0, host(0x8000_0000, 0))[0], MAX_EXTENDED_LEAF);
    }

    #[test]
    fn protection_keys_xsave_and_speculation_msrs_never_show() {
        let host = everything(0x20, 0x8000_0021);
        let p = CpuidPolicy::new(&host);
        let l1 = p.filter(1, 0, host(1, 0));
        assert_eq!(l1[2] & ((1 << 26) | (1 << 27) | (1 << 28) | (1 << 5) | (1 << 21)), 0, "XSAVE, OSXSAVE, AVX, VMX, x2APIC");
        let l7 = p.filter(7, 0, host(7, 0));
        assert_eq!(l7[2] & ((1 << 3) | (1 << 4)), 0, "PKU and OSPKE");
        assert_eq!(l7[1] & (1 << 5), 0, "AVX2");
        assert_eq!(l7[3] & (0x3F << 26), 0, "IBRS/IBPB, STIBP, L1D_FLUSH, ARCH_CAPABILITIES, SSBD");
        assert_eq!(p.filter(0x8000_0001, 0, host(0x8000_0001, 0))[2] & (1 << 2), 0, "SVM");
        assert_eq!(p.filter(0x8000_0008, 0, host(0x8000_0008, 0))[1] & !EXT8_EBX, 0, "AMD IBPB and friends");
        for leaf in [0xA, 0xD, 0x14, 0x8000_000A, 0x8000_001F] {
            assert_eq!(p.filter(leaf, 0, host(leaf, 0)), [0; 4], "leaf {leaf:#x}");
        }
        assert_eq!(p.filter(7, 1, host(7, 1)), [0; 4], "subleaf 1 of leaf 7");
    }

    #[test]
    fn cr4_allows_only_bits_of_shown_features() {
        let host = everything(0x20, 0x8000_0021);
        let a = CpuidPolicy::new(&host).cr4_allowed();
        for forbidden in [cr4::PKE, cr4::OSXSAVE, cr4::CET, cr4::LA57, cr4::VMXE, cr4::SMXE, cr4::KL, cr4::PKS] {
            assert_eq!(a & forbidden, 0, "{forbidden:#x}");
        }
        for allowed in [cr4::PAE, cr4::PGE, cr4::OSFXSR, cr4::FSGSBASE, cr4::SMEP, cr4::SMAP, cr4::PCIDE, cr4::UMIP] {
            assert_ne!(a & allowed, 0, "{allowed:#x}");
        }
        // A host without FSGSBASE/SMEP/SMAP/UMIP/PCID: their bits are refused.
        let bare = |leaf: u32, sub: u32| match leaf {
            1 => [0, 0, 0, !0],
            7 => [0, 0, 0, 0],
            _ => everything(0x20, 0x8000_0008)(leaf, sub),
        };
        let a = CpuidPolicy::new(&bare).cr4_allowed();
        assert_eq!(a & (cr4::FSGSBASE | cr4::SMEP | cr4::SMAP | cr4::UMIP | cr4::PCIDE), 0);
        assert_ne!(a & cr4::PAE, 0);
    }

    #[test]
    fn leaves_beyond_the_host_maximum_read_as_zeros() {
        let host = everything(1, 0x8000_0001);
        let p = CpuidPolicy::new(&host);
        assert_eq!(p.filter(0, 0, host(0, 0))[0], 1);
        assert_eq!(p.filter(7, 0, host(7, 0)), [0; 4]);
        assert_eq!(p.filter(0x8000_0008, 0, host(0x8000_0008, 0)), [0; 4]);
        assert_eq!(p.filter(0x5, 0, host(5, 0)), [0; 4]);
        assert!(!p.shows_tsc_aux() || p.filter(0x8000_0001, 0, host(0x8000_0001, 0))[3] & EXT1_EDX_RDTSCP != 0);
    }

    #[test]
    fn tsc_aux_exists_with_rdtscp_or_rdpid_only() {
        let with = |ext1_edx: u32, l7_ecx: u32| {
            move |leaf: u32, sub: u32| match leaf {
                7 => [0, 0, l7_ecx, 0],
                0x8000_0001 => [0, 0, 0, ext1_edx],
                _ => everything(0x20, 0x8000_0008)(leaf, sub),
            }
        };
        assert!(!CpuidPolicy::new(&with(0, 0)).shows_tsc_aux());
        assert!(CpuidPolicy::new(&with(EXT1_EDX_RDTSCP, 0)).shows_tsc_aux());
        assert!(CpuidPolicy::new(&with(0, LEAF7_ECX_RDPID)).shows_tsc_aux());
    }

    #[test]
    fn physical_address_width_is_capped_at_what_the_p2m_translates() {
        let wide = |leaf: u32, sub: u32| if leaf == 0x8000_0008 { [0x3034, 0, 0, 0] } else { everything(0x20, 0x8000_0008)(leaf, sub) };
        assert_eq!(CpuidPolicy::new(&wide).phys_addr_bits(), 48);
        let narrow = |leaf: u32, sub: u32| if leaf == 0x8000_0008 { [0x3024, 0, 0, 0] } else { everything(0x20, 0x8000_0008)(leaf, sub) };
        assert_eq!(CpuidPolicy::new(&narrow).phys_addr_bits(), 36);
    }
}

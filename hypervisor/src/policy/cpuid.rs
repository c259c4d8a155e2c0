//! The CPUID a guest sees: an allow-list. Every leaf not listed reads as zeros, and in a
//! listed leaf only the bits named here pass through from the host; each one is a feature
//! whose state the hypervisor switches per vCPU (x87/SSE through FXSAVE, FS/GS bases, TSC_AUX)
//! or that has no state (instructions such as POPCNT, AES, BMI). Features with state nobody
//! switches (PKRU, XSAVE/AVX, CET, the speculation-control MSRs, performance counters) stay
//! hidden, and so do the CR4 bits that would enable them (see [`CpuidPolicy::cr4_allowed`]).
//!
//! Bit positions: Intel SDM Vol 2A, CPUID (Tables 3-8 to 3-10 and "Structured Extended
//! Feature Flags"); AMD APM Vol 3, Appendix E.

use bitflags::bitflags;
use guest_abi::vcpu::Cr4Flags;

/// Highest basic leaf shown (7: structured extended features).
pub const MAX_BASIC_LEAF: u32 = 0x7;
/// Highest extended leaf shown (0x8000_0008: address sizes).
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;
/// Guest-physical addresses the second-level tables translate (four levels: 48 bits).
pub const P2M_PHYS_ADDR_BITS: u8 = 48;

bitflags! {
    /// CPUID leaf 1 ECX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Leaf1Ecx: u32 {
        const SSE3 = 1 << 0; const PCLMULQDQ = 1 << 1; const DTES64 = 1 << 2; const MONITOR = 1 << 3;
        const DS_CPL = 1 << 4; const VMX = 1 << 5; const SMX = 1 << 6; const EST = 1 << 7; const TM2 = 1 << 8;
        const SSSE3 = 1 << 9; const CNXT_ID = 1 << 10; const SDBG = 1 << 11; const FMA = 1 << 12;
        const CX16 = 1 << 13; const XTPR = 1 << 14; const PDCM = 1 << 15; const PCID = 1 << 17;
        const DCA = 1 << 18; const SSE4_1 = 1 << 19; const SSE4_2 = 1 << 20; const X2APIC = 1 << 21;
        const MOVBE = 1 << 22; const POPCNT = 1 << 23; const TSC_DEADLINE = 1 << 24; const AES = 1 << 25;
        const XSAVE = 1 << 26; const OSXSAVE = 1 << 27; const AVX = 1 << 28; const F16C = 1 << 29;
        const RDRAND = 1 << 30; const HYPERVISOR = 1 << 31;
    }

    /// CPUID leaf 1 EDX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Leaf1Edx: u32 {
        const FPU = 1 << 0; const VME = 1 << 1; const DE = 1 << 2; const PSE = 1 << 3; const TSC = 1 << 4;
        const MSR = 1 << 5; const PAE = 1 << 6; const MCE = 1 << 7; const CX8 = 1 << 8; const APIC = 1 << 9;
        const SEP = 1 << 11; const MTRR = 1 << 12; const PGE = 1 << 13; const MCA = 1 << 14; const CMOV = 1 << 15;
        const PAT = 1 << 16; const PSE36 = 1 << 17; const PSN = 1 << 18; const CLFSH = 1 << 19; const DS = 1 << 21;
        const ACPI = 1 << 22; const MMX = 1 << 23; const FXSR = 1 << 24; const SSE = 1 << 25; const SSE2 = 1 << 26;
        const SS = 1 << 27; const HTT = 1 << 28; const TM = 1 << 29; const PBE = 1 << 31;
    }

    /// CPUID leaf 7 subleaf 0 EBX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Leaf7Ebx: u32 {
        const FSGSBASE = 1 << 0; const TSC_ADJUST = 1 << 1; const SGX = 1 << 2; const BMI1 = 1 << 3;
        const HLE = 1 << 4; const AVX2 = 1 << 5; const FDP_EXCPTN_ONLY = 1 << 6; const SMEP = 1 << 7;
        const BMI2 = 1 << 8; const ERMS = 1 << 9; const INVPCID = 1 << 10; const RTM = 1 << 11;
        const RDT_M = 1 << 12; const FPU_CS_DS_DEPRECATED = 1 << 13; const MPX = 1 << 14; const RDT_A = 1 << 15;
        const AVX512F = 1 << 16; const AVX512DQ = 1 << 17; const RDSEED = 1 << 18; const ADX = 1 << 19;
        const SMAP = 1 << 20; const AVX512_IFMA = 1 << 21; const CLFLUSHOPT = 1 << 23; const CLWB = 1 << 24;
        const PT = 1 << 25; const AVX512PF = 1 << 26; const AVX512ER = 1 << 27; const AVX512CD = 1 << 28;
        const SHA = 1 << 29; const AVX512BW = 1 << 30; const AVX512VL = 1 << 31;
    }

    /// CPUID leaf 7 subleaf 0 ECX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Leaf7Ecx: u32 {
        const PREFETCHWT1 = 1 << 0; const AVX512_VBMI = 1 << 1; const UMIP = 1 << 2; const PKU = 1 << 3;
        const OSPKE = 1 << 4; const WAITPKG = 1 << 5; const AVX512_VBMI2 = 1 << 6; const CET_SS = 1 << 7;
        const GFNI = 1 << 8; const VAES = 1 << 9; const VPCLMULQDQ = 1 << 10; const AVX512_VNNI = 1 << 11;
        const AVX512_BITALG = 1 << 12; const TME = 1 << 13; const AVX512_VPOPCNTDQ = 1 << 14; const LA57 = 1 << 16;
        const RDPID = 1 << 22; const KL = 1 << 23; const CLDEMOTE = 1 << 25; const MOVDIRI = 1 << 27;
        const MOVDIR64B = 1 << 28; const ENQCMD = 1 << 29; const SGX_LC = 1 << 30; const PKS = 1 << 31;
    }

    /// CPUID leaf 7 subleaf 0 EDX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Leaf7Edx: u32 {
        const AVX512_4VNNIW = 1 << 2; const AVX512_4FMAPS = 1 << 3; const FSRM = 1 << 4; const UINTR = 1 << 5;
        const AVX512_VP2INTERSECT = 1 << 8; const SRBDS_CTRL = 1 << 9; const MD_CLEAR = 1 << 10;
        const TSX_FORCE_ABORT = 1 << 13; const SERIALIZE = 1 << 14; const HYBRID = 1 << 15; const TSXLDTRK = 1 << 16;
        const PCONFIG = 1 << 18; const ARCH_LBR = 1 << 19; const CET_IBT = 1 << 20; const AMX_BF16 = 1 << 22;
        const AVX512_FP16 = 1 << 23; const AMX_TILE = 1 << 24; const AMX_INT8 = 1 << 25; const IBRS_IBPB = 1 << 26;
        const STIBP = 1 << 27; const L1D_FLUSH = 1 << 28; const ARCH_CAPABILITIES = 1 << 29;
        const CORE_CAPABILITIES = 1 << 30; const SSBD = 1 << 31;
    }

    /// CPUID leaf 0x8000_0001 ECX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ext1Ecx: u32 {
        const LAHF_LM = 1 << 0; const CMP_LEGACY = 1 << 1; const SVM = 1 << 2; const EXTAPIC = 1 << 3;
        const CR8_LEGACY = 1 << 4; const ABM = 1 << 5; const SSE4A = 1 << 6; const MISALIGNSSE = 1 << 7;
        const PREFETCHW = 1 << 8; const OSVW = 1 << 9; const IBS = 1 << 10; const XOP = 1 << 11;
        const SKINIT = 1 << 12; const WDT = 1 << 13; const LWP = 1 << 15; const FMA4 = 1 << 16; const TCE = 1 << 17;
        const NODEID_MSR = 1 << 19; const TBM = 1 << 21; const TOPOEXT = 1 << 22; const PERFCTR_CORE = 1 << 23;
        const PERFCTR_NB = 1 << 24; const DBX = 1 << 26; const PERFTSC = 1 << 27; const PCX_L2I = 1 << 28;
        const MONITORX = 1 << 29;
    }

    /// CPUID leaf 0x8000_0001 EDX (AMD repeats most leaf-1 EDX bits here).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ext1Edx: u32 {
        const FPU = 1 << 0; const VME = 1 << 1; const DE = 1 << 2; const PSE = 1 << 3; const TSC = 1 << 4;
        const MSR = 1 << 5; const PAE = 1 << 6; const MCE = 1 << 7; const CX8 = 1 << 8; const APIC = 1 << 9;
        const SYSCALL = 1 << 11; const MTRR = 1 << 12; const PGE = 1 << 13; const MCA = 1 << 14; const CMOV = 1 << 15;
        const PAT = 1 << 16; const PSE36 = 1 << 17; const NX = 1 << 20; const MMXEXT = 1 << 22; const MMX = 1 << 23;
        const FXSR = 1 << 24; const FXSR_OPT = 1 << 25; const PDPE1GB = 1 << 26; const RDTSCP = 1 << 27;
        const LM = 1 << 29; const EXT_3DNOW = 1 << 30; const THREE_DNOW = 1 << 31;
    }

    /// CPUID leaf 0x8000_0007 EDX (power management).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ext7Edx: u32 {
        const INVARIANT_TSC = 1 << 8;
    }

    /// CPUID leaf 0x8000_0008 EBX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ext8Ebx: u32 {
        const CLZERO = 1 << 0; const IRPERF = 1 << 1; const XSAVE_ERPTR = 1 << 2; const RDPRU = 1 << 4;
        const WBNOINVD = 1 << 9; const IBPB = 1 << 12; const IBRS = 1 << 14; const STIBP = 1 << 15;
        const SSBD = 1 << 24;
    }
}

/// Leaf 1 ECX shown. Hidden: MONITOR, VMX, SMX, the power and debug interfaces, FMA/AVX/F16C
/// (AVX state needs XSAVE), XSAVE/OSXSAVE, x2APIC and TSC-deadline (no APIC is emulated yet).
pub const LEAF1_ECX: Leaf1Ecx = Leaf1Ecx::SSE3
    .union(Leaf1Ecx::PCLMULQDQ)
    .union(Leaf1Ecx::SSSE3)
    .union(Leaf1Ecx::CX16)
    .union(Leaf1Ecx::PCID)
    .union(Leaf1Ecx::SSE4_1)
    .union(Leaf1Ecx::SSE4_2)
    .union(Leaf1Ecx::MOVBE)
    .union(Leaf1Ecx::POPCNT)
    .union(Leaf1Ecx::AES)
    .union(Leaf1Ecx::RDRAND);
/// Leaf 1 EDX shown. Hidden: APIC, MCA, PSN, DS, ACPI, HTT, TM, PBE.
pub const LEAF1_EDX: Leaf1Edx = Leaf1Edx::FPU
    .union(Leaf1Edx::VME)
    .union(Leaf1Edx::DE)
    .union(Leaf1Edx::PSE)
    .union(Leaf1Edx::TSC)
    .union(Leaf1Edx::MSR)
    .union(Leaf1Edx::PAE)
    .union(Leaf1Edx::MCE)
    .union(Leaf1Edx::CX8)
    .union(Leaf1Edx::SEP)
    .union(Leaf1Edx::MTRR)
    .union(Leaf1Edx::PGE)
    .union(Leaf1Edx::CMOV)
    .union(Leaf1Edx::PAT)
    .union(Leaf1Edx::PSE36)
    .union(Leaf1Edx::CLFSH)
    .union(Leaf1Edx::MMX)
    .union(Leaf1Edx::FXSR)
    .union(Leaf1Edx::SSE)
    .union(Leaf1Edx::SSE2)
    .union(Leaf1Edx::SS);
/// Leaf 1 EBX: only the CLFLUSH line size (bits 15:8) and brand index (7:0); the APIC id
/// and logical-processor count read as zero (one vCPU).
pub const LEAF1_EBX: u32 = 0xFFFF;
/// Leaf 7.0 EBX shown. Hidden: TSC_ADJUST, SGX, TSX (HLE/RTM), AVX2/AVX-512, MPX, resource
/// monitoring, Intel PT.
pub const LEAF7_EBX: Leaf7Ebx = Leaf7Ebx::FSGSBASE
    .union(Leaf7Ebx::BMI1)
    .union(Leaf7Ebx::FDP_EXCPTN_ONLY)
    .union(Leaf7Ebx::SMEP)
    .union(Leaf7Ebx::BMI2)
    .union(Leaf7Ebx::ERMS)
    .union(Leaf7Ebx::INVPCID)
    .union(Leaf7Ebx::FPU_CS_DS_DEPRECATED)
    .union(Leaf7Ebx::RDSEED)
    .union(Leaf7Ebx::ADX)
    .union(Leaf7Ebx::SMAP)
    .union(Leaf7Ebx::CLFLUSHOPT)
    .union(Leaf7Ebx::CLWB)
    .union(Leaf7Ebx::SHA);
/// Leaf 7.0 ECX shown. Hidden: PKU and OSPKE (PKRU is not switched), WAITPKG, CET shadow
/// stacks, LA57, key locker, SGX, AVX-512, ENQCMD, PKS.
pub const LEAF7_ECX: Leaf7Ecx = Leaf7Ecx::UMIP
    .union(Leaf7Ecx::RDPID)
    .union(Leaf7Ecx::CLDEMOTE)
    .union(Leaf7Ecx::MOVDIRI)
    .union(Leaf7Ecx::MOVDIR64B);
/// Leaf 7.0 EDX shown. Hidden: the speculation-control MSRs (not emulated), CET-IBT, AMX,
/// hybrid, user interrupts.
pub const LEAF7_EDX: Leaf7Edx = Leaf7Edx::FSRM.union(Leaf7Edx::MD_CLEAR).union(Leaf7Edx::SERIALIZE);
/// Leaf 0x8000_0001 ECX shown. Hidden: SVM, the extended APIC, AltMovCr8, OSVW, IBS,
/// XOP/FMA4 (AVX state), SKINIT, WDT, LWP, topology and performance-counter extensions.
pub const EXT1_ECX: Ext1Ecx = Ext1Ecx::LAHF_LM
    .union(Ext1Ecx::ABM)
    .union(Ext1Ecx::SSE4A)
    .union(Ext1Ecx::MISALIGNSSE)
    .union(Ext1Ecx::PREFETCHW)
    .union(Ext1Ecx::TBM);
/// Leaf 0x8000_0001 EDX shown: the leaf-1 bits AMD repeats (those shown there), and SYSCALL,
/// NX, MMXEXT, 1 GiB pages, RDTSCP, long mode, 3DNow!. Hidden: FFXSR (EFER.FFXSR is refused).
pub const EXT1_EDX: Ext1Edx = Ext1Edx::FPU
    .union(Ext1Edx::VME)
    .union(Ext1Edx::DE)
    .union(Ext1Edx::PSE)
    .union(Ext1Edx::TSC)
    .union(Ext1Edx::MSR)
    .union(Ext1Edx::PAE)
    .union(Ext1Edx::MCE)
    .union(Ext1Edx::CX8)
    .union(Ext1Edx::MTRR)
    .union(Ext1Edx::PGE)
    .union(Ext1Edx::CMOV)
    .union(Ext1Edx::PAT)
    .union(Ext1Edx::PSE36)
    .union(Ext1Edx::MMX)
    .union(Ext1Edx::FXSR)
    .union(Ext1Edx::SYSCALL)
    .union(Ext1Edx::NX)
    .union(Ext1Edx::MMXEXT)
    .union(Ext1Edx::PDPE1GB)
    .union(Ext1Edx::RDTSCP)
    .union(Ext1Edx::LM)
    .union(Ext1Edx::EXT_3DNOW)
    .union(Ext1Edx::THREE_DNOW);
/// Leaf 0x8000_0007 EDX shown: the invariant TSC.
pub const EXT7_EDX: Ext7Edx = Ext7Edx::INVARIANT_TSC;
/// Leaf 0x8000_0008 EBX shown: CLZERO, XSAVEERPTR. Hidden: IRPERF, RDPRU, the speculation
/// controls.
pub const EXT8_EBX: Ext8Ebx = Ext8Ebx::CLZERO.union(Ext8Ebx::XSAVE_ERPTR);

/// CPUID 6 EAX: the APIC timer keeps running in deep C-states (ARAT).
pub const LEAF6_EAX_ARAT: u32 = 1 << 2;

/// What a domain with the emulated PC platform (`crate::pc`) sees beyond the allow-list: the
/// local APIC (in xAPIC mode), the TSC-deadline timer, and ARAT (its timer never stops),
/// which with a known TSC rate let Linux use the APIC timer without calibrating it against
/// a PIT the platform does not have.
pub fn with_pc_platform(leaf: u32, mut r: [u32; 4]) -> [u32; 4] {
    match leaf {
        1 => {
            r[2] |= Leaf1Ecx::TSC_DEADLINE.bits();
            r[3] |= Leaf1Edx::APIC.bits();
        }
        6 => r[0] |= LEAF6_EAX_ARAT,
        0x8000_0001 => r[3] |= Ext1Edx::APIC.bits(),
        _ => {}
    }
    r
}

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
            leaf1: [h1[0], h1[1] & LEAF1_EBX, (h1[2] & LEAF1_ECX.bits()) | Leaf1Ecx::HYPERVISOR.bits(), h1[3] & LEAF1_EDX.bits()],
            leaf7: [0, h7[1] & LEAF7_EBX.bits(), h7[2] & LEAF7_ECX.bits(), h7[3] & LEAF7_EDX.bits()],
            ext1: [e1[0], e1[1], e1[2] & EXT1_ECX.bits(), e1[3] & EXT1_EDX.bits()],
            ext8_eax: u32::from(phys) | (linear.min(48) << 8),
        }
    }

    /// What a guest's CPUID(`leaf`, `subleaf`) returns; `host_cpuid` asks the host, and is
    /// called only for the leaves that pass through (vendor, brand, caches, address sizes).
    /// The hypervisor's own leaves (0x4000_0000 on) are answered by the caller.
    pub fn filter(&self, leaf: u32, subleaf: u32, host_cpuid: &dyn Fn(u32, u32) -> [u32; 4]) -> [u32; 4] {
        let basic = leaf < 0x8000_0000;
        if (basic && leaf > self.max_basic) || (!basic && leaf > self.max_extended) {
            return [0; 4];
        }
        // On nested hardware each host CPUID is itself an exit.
        let host = || host_cpuid(leaf, subleaf);
        match leaf {
            0 => { let h = host(); [self.max_basic, h[1], h[2], h[3]] }
            1 => self.leaf1,
            // Cache descriptors and the deterministic cache parameters; the core and thread
            // counts sharing a cache (EAX 31:14) read as one.
            2 => host(),
            4 => { let h = host(); [h[0] & 0x3FFF, h[1], h[2], h[3]] }
            7 if subleaf == 0 => self.leaf7,
            0x8000_0000 => { let h = host(); [self.max_extended, h[1], h[2], h[3]] }
            0x8000_0001 => self.ext1,
            // Brand string and L1/L2/L3 cache and TLB descriptions.
            0x8000_0002..=0x8000_0006 => host(),
            0x8000_0007 => [0, 0, 0, host()[3] & EXT7_EDX.bits()],
            // Address sizes; the core count (ECX) reads as one.
            0x8000_0008 => [self.ext8_eax, host()[1] & EXT8_EBX.bits(), 0, 0],
            _ => [0; 4],
        }
    }

    /// CR4 bits a guest may set: the architectural ones whose feature is shown, and nothing
    /// that enables hidden state (PKE, OSXSAVE, CET, LA57, VMXE, SMXE, key locker, PKS).
    pub fn cr4_allowed(&self) -> u64 {
        let edx = Leaf1Edx::from_bits_retain(self.leaf1[3]);
        let ecx = Leaf1Ecx::from_bits_retain(self.leaf1[2]);
        let ebx7 = Leaf7Ebx::from_bits_retain(self.leaf7[1]);
        let ecx7 = Leaf7Ecx::from_bits_retain(self.leaf7[2]);
        let pairs = [
            (edx.contains(Leaf1Edx::TSC), Cr4Flags::TIMESTAMP_DISABLE),
            (edx.contains(Leaf1Edx::VME), Cr4Flags::VIRTUAL_8086_MODE_EXTENSIONS | Cr4Flags::PROTECTED_MODE_VIRTUAL_INTERRUPTS),
            (edx.contains(Leaf1Edx::DE), Cr4Flags::DEBUGGING_EXTENSIONS),
            (edx.contains(Leaf1Edx::PSE), Cr4Flags::PAGE_SIZE_EXTENSION),
            (edx.contains(Leaf1Edx::PAE), Cr4Flags::PHYSICAL_ADDRESS_EXTENSION),
            (edx.contains(Leaf1Edx::MCE), Cr4Flags::MACHINE_CHECK_EXCEPTION),
            (edx.contains(Leaf1Edx::PGE), Cr4Flags::PAGE_GLOBAL),
            (edx.contains(Leaf1Edx::FXSR), Cr4Flags::OSFXSR),
            (edx.contains(Leaf1Edx::SSE), Cr4Flags::OSXMMEXCPT_ENABLE),
            (ecx.contains(Leaf1Ecx::PCID), Cr4Flags::PCID),
            (ebx7.contains(Leaf7Ebx::FSGSBASE), Cr4Flags::FSGSBASE),
            (ebx7.contains(Leaf7Ebx::SMEP), Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION),
            (ebx7.contains(Leaf7Ebx::SMAP), Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION),
            (ecx7.contains(Leaf7Ecx::UMIP), Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION),
        ];
        let mut a = Cr4Flags::PERFORMANCE_MONITOR_COUNTER;
        for (shown, bits) in pairs {
            if shown {
                a |= bits;
            }
        }
        a.bits()
    }

    /// Whether RDTSCP or RDPID is shown, so IA32_TSC_AUX exists for guests (and for the host).
    pub fn shows_tsc_aux(&self) -> bool {
        Ext1Edx::from_bits_retain(self.ext1[3]).contains(Ext1Edx::RDTSCP)
            || Leaf7Ecx::from_bits_retain(self.leaf7[2]).contains(Leaf7Ecx::RDPID)
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
        assert_eq!(p.filter(1, 0, &host), [!0, LEAF1_EBX, (LEAF1_ECX | Leaf1Ecx::HYPERVISOR).bits(), LEAF1_EDX.bits()]);
        assert_eq!(p.filter(7, 0, &host), [0, LEAF7_EBX.bits(), LEAF7_ECX.bits(), LEAF7_EDX.bits()]);
        assert_eq!(p.filter(0x8000_0001, 0, &host)[2..], [EXT1_ECX.bits(), EXT1_EDX.bits()]);
        assert_eq!(p.filter(0, 0, &host)[0], MAX_BASIC_LEAF);
        assert_eq!(p.filter(0x8000_0000, 0, &host)[0], MAX_EXTENDED_LEAF);
    }

    #[test]
    fn protection_keys_xsave_and_speculation_msrs_never_show() {
        let host = everything(0x20, 0x8000_0021);
        let p = CpuidPolicy::new(&host);
        let l1 = p.filter(1, 0, &host);
        assert_eq!(l1[2] & ((1 << 26) | (1 << 27) | (1 << 28) | (1 << 5) | (1 << 21)), 0, "XSAVE, OSXSAVE, AVX, VMX, x2APIC");
        let l7 = p.filter(7, 0, &host);
        assert_eq!(l7[2] & ((1 << 3) | (1 << 4)), 0, "PKU and OSPKE");
        assert_eq!(l7[1] & (1 << 5), 0, "AVX2");
        assert_eq!(l7[3] & (0x3F << 26), 0, "IBRS/IBPB, STIBP, L1D_FLUSH, ARCH_CAPABILITIES, SSBD");
        assert_eq!(p.filter(0x8000_0001, 0, &host)[2] & (1 << 2), 0, "SVM");
        assert_eq!(p.filter(0x8000_0008, 0, &host)[1] & !EXT8_EBX.bits(), 0, "AMD IBPB and friends");
        for leaf in [0xA, 0xD, 0x14, 0x8000_000A, 0x8000_001F] {
            assert_eq!(p.filter(leaf, 0, &host), [0; 4], "leaf {leaf:#x}");
        }
        assert_eq!(p.filter(7, 1, &host), [0; 4], "subleaf 1 of leaf 7");
    }

    #[test]
    fn cr4_allows_only_bits_of_shown_features() {
        let host = everything(0x20, 0x8000_0021);
        let a = CpuidPolicy::new(&host).cr4_allowed();
        let a = Cr4Flags::from_bits_retain(a);
        let forbidden = Cr4Flags::PROTECTION_KEY_USER
            | Cr4Flags::OSXSAVE
            | Cr4Flags::CONTROL_FLOW_ENFORCEMENT
            | Cr4Flags::L5_PAGING
            | Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS
            | Cr4Flags::SAFER_MODE_EXTENSIONS
            | Cr4Flags::KEY_LOCKER
            | Cr4Flags::PROTECTION_KEY_SUPERVISOR;
        assert!(!a.intersects(forbidden), "{a:?}");
        let allowed = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION
            | Cr4Flags::PAGE_GLOBAL
            | Cr4Flags::OSFXSR
            | Cr4Flags::FSGSBASE
            | Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION
            | Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION
            | Cr4Flags::PCID
            | Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION;
        assert!(a.contains(allowed), "{a:?}");
        // A host without FSGSBASE/SMEP/SMAP/UMIP/PCID: their bits are refused.
        let bare = |leaf: u32, sub: u32| match leaf {
            1 => [0, 0, 0, !0],
            7 => [0, 0, 0, 0],
            _ => everything(0x20, 0x8000_0008)(leaf, sub),
        };
        let a = Cr4Flags::from_bits_retain(CpuidPolicy::new(&bare).cr4_allowed());
        let feature_bits = Cr4Flags::FSGSBASE
            | Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION
            | Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION
            | Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION
            | Cr4Flags::PCID;
        assert!(!a.intersects(feature_bits));
        assert!(a.contains(Cr4Flags::PHYSICAL_ADDRESS_EXTENSION));
    }

    #[test]
    fn leaves_beyond_the_host_maximum_read_as_zeros() {
        let host = everything(1, 0x8000_0001);
        let p = CpuidPolicy::new(&host);
        assert_eq!(p.filter(0, 0, &host)[0], 1);
        assert_eq!(p.filter(7, 0, &host), [0; 4]);
        assert_eq!(p.filter(0x8000_0008, 0, &host), [0; 4]);
        assert_eq!(p.filter(0x5, 0, &host), [0; 4]);
        assert!(!p.shows_tsc_aux() || p.filter(0x8000_0001, 0, &host)[3] & Ext1Edx::RDTSCP.bits() != 0);
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
        assert!(CpuidPolicy::new(&with(Ext1Edx::RDTSCP.bits(), 0)).shows_tsc_aux());
        assert!(CpuidPolicy::new(&with(0, Leaf7Ecx::RDPID.bits())).shows_tsc_aux());
    }

    #[test]
    fn physical_address_width_is_capped_at_what_the_p2m_translates() {
        let wide = |leaf: u32, sub: u32| if leaf == 0x8000_0008 { [0x3034, 0, 0, 0] } else { everything(0x20, 0x8000_0008)(leaf, sub) };
        assert_eq!(CpuidPolicy::new(&wide).phys_addr_bits(), 48);
        let narrow = |leaf: u32, sub: u32| if leaf == 0x8000_0008 { [0x3024, 0, 0, 0] } else { everything(0x20, 0x8000_0008)(leaf, sub) };
        assert_eq!(CpuidPolicy::new(&narrow).phys_addr_bits(), 36);
    }
}

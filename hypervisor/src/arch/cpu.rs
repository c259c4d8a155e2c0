//! CPU identification: vendor, and whether VMX+EPT (Intel) or SVM+NPT (AMD) are usable.

use super::x86::{cpuid, msr, rdmsr};
use core::fmt;

/// CPU vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

impl Vendor {
    /// Lower-case name as `info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Intel => "intel",
            Self::Amd => "amd",
            Self::Other => "unknown",
        }
    }
}

/// Intel VMX capabilities relevant to us.
#[derive(Clone, Copy, Debug, Default)]
pub struct VmxCaps {
    /// VMCS revision identifier.
    pub revision: u32,
    /// Secondary controls can be activated and EPT is allowed.
    pub ept: bool,
    /// 4-level EPT walk and write-back memory type are supported.
    pub ept_wb_4level: bool,
    /// VPID is allowed.
    pub vpid: bool,
    /// Unrestricted guest is allowed.
    pub unrestricted: bool,
    /// INVEPT (single-context) is supported.
    pub invept_single: bool,
    /// VMX-preemption timer is allowed.
    pub preemption_timer: bool,
    /// IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled (BIOS switched VMX off).
    pub disabled_by_firmware: bool,
}

/// AMD SVM capabilities relevant to us.
#[derive(Clone, Copy, Debug, Default)]
pub struct SvmCaps {
    /// SVM revision.
    pub revision: u32,
    /// Number of ASIDs.
    pub asids: u32,
    /// Nested paging.
    pub npt: bool,
    /// Next-RIP saved on #VMEXIT.
    pub nrips: bool,
    /// TLB flush by ASID.
    pub flush_by_asid: bool,
    /// VM_CR.SVMDIS is set (firmware switched SVM off).
    pub disabled_by_firmware: bool,
}

/// What was found.
#[derive(Clone, Copy, Debug)]
pub struct CpuInfo {
    pub vendor: Vendor,
    pub vendor_string: [u8; 12],
    pub family: u32,
    pub model: u32,
    pub vmx: Option<VmxCaps>,
    pub svm: Option<SvmCaps>,
}

/// The hardware virtualization backend the CPU supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    VmxEpt,
    SvmNpt,
}

impl Backend {
    /// Name as `info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::VmxEpt => "vmx-ept",
            Self::SvmNpt => "svm-npt",
        }
    }
}

impl CpuInfo {
    /// The backend to use, if the CPU has a usable one.
    pub fn backend(&self) -> Option<Backend> {
        if let Some(v) = self.vmx {
            if v.ept && v.ept_wb_4level && !v.disabled_by_firmware {
                return Some(Backend::VmxEpt);
            }
        }
        if let Some(s) = self.svm {
            if s.npt && !s.disabled_by_firmware && s.asids > 1 {
                return Some(Backend::SvmNpt);
            }
        }
        None
    }

    /// Vendor string as text.
    pub fn vendor_str(&self) -> &str {
        core::str::from_utf8(&self.vendor_string).unwrap_or("?")
    }
}

const CPUID1_ECX_VMX: u32 = 1 << 5;
const CPUID_EXT1_ECX_SVM: u32 = 1 << 2;
const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

fn detect_vmx() -> VmxCaps {
    // SAFETY: CPUID reported VMX, so the VMX capability MSRs and IA32_FEATURE_CONTROL exist.
    unsafe {
        let basic = rdmsr(msr::IA32_VMX_BASIC);
        let true_ctls = basic & (1 << 55) != 0;
        let pin = rdmsr(if true_ctls { msr::IA32_VMX_TRUE_PINBASED_CTLS } else { msr::IA32_VMX_PINBASED_CTLS });
        let proc = rdmsr(if true_ctls { msr::IA32_VMX_TRUE_PROCBASED_CTLS } else { msr::IA32_VMX_PROCBASED_CTLS });
        let secondary_allowed = proc & (1 << 63) != 0;
        let proc2 = if secondary_allowed { rdmsr(msr::IA32_VMX_PROCBASED_CTLS2) } else { 0 };
        let ept = secondary_allowed && proc2 & (1 << (32 + 1)) != 0;
        let cap = if ept { rdmsr(msr::IA32_VMX_EPT_VPID_CAP) } else { 0 };
        let fc = rdmsr(msr::IA32_FEATURE_CONTROL);
        VmxCaps {
            revision: (basic & 0x7FFF_FFFF) as u32,
            ept,
            ept_wb_4level: cap & (1 << 6) != 0 && cap & (1 << 14) != 0,
            vpid: secondary_allowed && proc2 & (1 << (32 + 5)) != 0,
            unrestricted: secondary_allowed && proc2 & (1 << (32 + 7)) != 0,
            invept_single: cap & (1 << 20) != 0 && cap & (1 << 25) != 0,
            preemption_timer: pin & (1 << (32 + 6)) != 0,
            disabled_by_firmware: fc & FEATURE_CONTROL_LOCKED != 0 && fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0,
        }
    }
}

fn detect_svm() -> SvmCaps {
    let l = cpuid(0x8000_000A, 0);
    // SAFETY: CPUID reported SVM, so VM_CR exists.
    let vm_cr = unsafe { rdmsr(msr::AMD_VM_CR) };
    SvmCaps {
        revision: l.eax & 0xFF,
        asids: l.ebx,
        npt: l.edx & (1 << 0) != 0,
        nrips: l.edx & (1 << 3) != 0,
        flush_by_asid: l.edx & (1 << 6) != 0,
        disabled_by_firmware: vm_cr & (1 << 4) != 0,
    }
}

/// Identifies the CPU.
pub fn detect() -> CpuInfo {
    let l0 = cpuid(0, 0);
    let mut vendor_string = [0u8; 12];
    vendor_string[0..4].copy_from_slice(&l0.ebx.to_le_bytes());
    vendor_string[4..8].copy_from_slice(&l0.edx.to_le_bytes());
    vendor_string[8..12].copy_from_slice(&l0.ecx.to_le_bytes());
    let vendor = match &vendor_string {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" => Vendor::Amd,
        _ => Vendor::Other,
    };
    let l1 = cpuid(1, 0);
    let base_family = (l1.eax >> 8) & 0xF;
    let family = if base_family == 0xF { base_family + ((l1.eax >> 20) & 0xFF) } else { base_family };
    let model = ((l1.eax >> 4) & 0xF) | (((l1.eax >> 16) & 0xF) << 4);
    let vmx = (l1.ecx & CPUID1_ECX_VMX != 0).then(detect_vmx);
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let svm = (max_ext >= 0x8000_000A && cpuid(0x8000_0001, 0).ecx & CPUID_EXT1_ECX_SVM != 0).then(detect_svm);
    CpuInfo { vendor, vendor_string, family, model, vmx, svm }
}

impl fmt::Display for CpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (vendor {}, family {:#x}, model {:#x})", self.vendor_str(), self.vendor.name(), self.family, self.model)
    }
}

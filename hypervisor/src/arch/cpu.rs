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

use super::svm::SvmFeatures;
use super::vmx::{ControlCaps, PinControls, Proc2Controls, caps};
use crate::policy::cpuid::{Ext1Ecx, Leaf1Ecx};

fn detect_vmx() -> VmxCaps {
    let ControlCaps { basic, pin, proc2, .. } = ControlCaps::read();
    // The may-be-one half of each control MSR.
    let allowed = |cap: u64| (cap >> caps::ALLOWED_ONE_SHIFT) as u32;
    let proc2 = Proc2Controls::from_bits_retain(allowed(proc2));
    // SAFETY: CPUID reported VMX, so IA32_FEATURE_CONTROL and (with EPT) the EPT/VPID
    // capability MSR exist.
    unsafe {
        let ept = proc2.contains(Proc2Controls::ENABLE_EPT);
        let cap = if ept { rdmsr(msr::IA32_VMX_EPT_VPID_CAP) } else { 0 };
        let fc = rdmsr(msr::IA32_FEATURE_CONTROL);
        let all = |bits: u64| cap & bits == bits;
        VmxCaps {
            revision: (basic & caps::BASIC_REVISION_MASK) as u32,
            ept,
            ept_wb_4level: all(caps::EPT_WALK_4_LEVELS | caps::EPT_WRITE_BACK),
            vpid: proc2.contains(Proc2Controls::ENABLE_VPID),
            unrestricted: proc2.contains(Proc2Controls::UNRESTRICTED_GUEST),
            invept_single: all(caps::EPT_INVEPT | caps::EPT_INVEPT_SINGLE),
            preemption_timer: PinControls::from_bits_retain(allowed(pin)).contains(PinControls::PREEMPTION_TIMER),
            disabled_by_firmware: fc & caps::FEATURE_CONTROL_LOCKED != 0 && fc & caps::FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0,
        }
    }
}

/// CPUID 0x8000_000A EAX bits 7:0: the SVM revision.
const SVM_REVISION_MASK: u32 = 0xFF;
/// VM_CR bit 4: SVM disabled by firmware (AMD APM Vol 2 15.30.1).
const VM_CR_SVMDIS: u64 = 1 << 4;

fn detect_svm() -> SvmCaps {
    let l = cpuid(0x8000_000A, 0);
    // SAFETY: CPUID reported SVM, so VM_CR exists.
    let vm_cr = unsafe { rdmsr(msr::AMD_VM_CR) };
    let f = SvmFeatures::from_bits_retain(l.edx);
    SvmCaps {
        revision: l.eax & SVM_REVISION_MASK,
        asids: l.ebx,
        npt: f.contains(SvmFeatures::NESTED_PAGING),
        nrips: f.contains(SvmFeatures::NRIP_SAVE),
        flush_by_asid: f.contains(SvmFeatures::FLUSH_BY_ASID),
        disabled_by_firmware: vm_cr & VM_CR_SVMDIS != 0,
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
    let vmx = Leaf1Ecx::from_bits_retain(l1.ecx).contains(Leaf1Ecx::VMX).then(detect_vmx);
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let svm = (max_ext >= 0x8000_000A && Ext1Ecx::from_bits_retain(cpuid(0x8000_0001, 0).ecx).contains(Ext1Ecx::SVM))
        .then(detect_svm);
    CpuInfo { vendor, vendor_string, family, model, vmx, svm }
}

impl fmt::Display for CpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (vendor {}, family {:#x}, model {:#x})", self.vendor_str(), self.vendor.name(), self.family, self.model)
    }
}

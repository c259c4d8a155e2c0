//! VMCS field encodings (Intel SDM Vol 3C appendix B), the VM-execution, exit and entry
//! control flags, exit reasons and exit-qualification layouts the backend uses.

pub const VPID: u64 = 0x0000;

pub const GUEST_ES_SELECTOR: u64 = 0x0800;
pub const GUEST_CS_SELECTOR: u64 = 0x0802;
pub const GUEST_SS_SELECTOR: u64 = 0x0804;
pub const GUEST_DS_SELECTOR: u64 = 0x0806;
pub const GUEST_FS_SELECTOR: u64 = 0x0808;
pub const GUEST_GS_SELECTOR: u64 = 0x080A;
pub const GUEST_LDTR_SELECTOR: u64 = 0x080C;
pub const GUEST_TR_SELECTOR: u64 = 0x080E;

pub const HOST_ES_SELECTOR: u64 = 0x0C00;
pub const HOST_CS_SELECTOR: u64 = 0x0C02;
pub const HOST_SS_SELECTOR: u64 = 0x0C04;
pub const HOST_DS_SELECTOR: u64 = 0x0C06;
pub const HOST_FS_SELECTOR: u64 = 0x0C08;
pub const HOST_GS_SELECTOR: u64 = 0x0C0A;
pub const HOST_TR_SELECTOR: u64 = 0x0C0C;

pub const IO_BITMAP_A: u64 = 0x2000;
pub const IO_BITMAP_B: u64 = 0x2002;
pub const TSC_OFFSET: u64 = 0x2010;
pub const EPT_POINTER: u64 = 0x201A;
pub const GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;
pub const VMCS_LINK_POINTER: u64 = 0x2800;
pub const GUEST_IA32_DEBUGCTL: u64 = 0x2802;
pub const GUEST_IA32_PAT: u64 = 0x2804;
pub const GUEST_IA32_EFER: u64 = 0x2806;
pub const HOST_IA32_PAT: u64 = 0x2C00;
pub const HOST_IA32_EFER: u64 = 0x2C02;

pub const PIN_BASED_CONTROLS: u64 = 0x4000;
pub const PROC_BASED_CONTROLS: u64 = 0x4002;
pub const EXCEPTION_BITMAP: u64 = 0x4004;
pub const PAGE_FAULT_ERROR_MASK: u64 = 0x4006;
pub const PAGE_FAULT_ERROR_MATCH: u64 = 0x4008;
pub const CR3_TARGET_COUNT: u64 = 0x400A;
pub const EXIT_CONTROLS: u64 = 0x400C;
pub const EXIT_MSR_STORE_COUNT: u64 = 0x400E;
pub const EXIT_MSR_LOAD_COUNT: u64 = 0x4010;
pub const ENTRY_CONTROLS: u64 = 0x4012;
pub const ENTRY_MSR_LOAD_COUNT: u64 = 0x4014;
pub const ENTRY_INTERRUPTION_INFO: u64 = 0x4016;
pub const ENTRY_EXCEPTION_ERROR: u64 = 0x4018;
pub const ENTRY_INSTRUCTION_LENGTH: u64 = 0x401A;
pub const SECONDARY_CONTROLS: u64 = 0x401E;

pub const VM_INSTRUCTION_ERROR: u64 = 0x4400;
pub const EXIT_REASON: u64 = 0x4402;
pub const EXIT_INTERRUPTION_INFO: u64 = 0x4404;
pub const EXIT_INTERRUPTION_ERROR: u64 = 0x4406;
pub const IDT_VECTORING_INFO: u64 = 0x4408;
pub const IDT_VECTORING_ERROR: u64 = 0x440A;
pub const EXIT_INSTRUCTION_LENGTH: u64 = 0x440C;

pub const GUEST_ES_LIMIT: u64 = 0x4800;
pub const GUEST_CS_LIMIT: u64 = 0x4802;
pub const GUEST_SS_LIMIT: u64 = 0x4804;
pub const GUEST_DS_LIMIT: u64 = 0x4806;
pub const GUEST_FS_LIMIT: u64 = 0x4808;
pub const GUEST_GS_LIMIT: u64 = 0x480A;
pub const GUEST_LDTR_LIMIT: u64 = 0x480C;
pub const GUEST_TR_LIMIT: u64 = 0x480E;
pub const GUEST_GDTR_LIMIT: u64 = 0x4810;
pub const GUEST_IDTR_LIMIT: u64 = 0x4812;
pub const GUEST_ES_ACCESS_RIGHTS: u64 = 0x4814;
pub const GUEST_CS_ACCESS_RIGHTS: u64 = 0x4816;
pub const GUEST_SS_ACCESS_RIGHTS: u64 = 0x4818;
pub const GUEST_DS_ACCESS_RIGHTS: u64 = 0x481A;
pub const GUEST_FS_ACCESS_RIGHTS: u64 = 0x481C;
pub const GUEST_GS_ACCESS_RIGHTS: u64 = 0x481E;
pub const GUEST_LDTR_ACCESS_RIGHTS: u64 = 0x4820;
pub const GUEST_TR_ACCESS_RIGHTS: u64 = 0x4822;
pub const GUEST_INTERRUPTIBILITY: u64 = 0x4824;
pub const GUEST_ACTIVITY_STATE: u64 = 0x4826;
pub const GUEST_SYSENTER_CS: u64 = 0x482A;
pub const GUEST_PREEMPTION_TIMER: u64 = 0x482E;
pub const HOST_SYSENTER_CS: u64 = 0x4C00;

pub const CR0_GUEST_HOST_MASK: u64 = 0x6000;
pub const CR4_GUEST_HOST_MASK: u64 = 0x6002;
pub const CR0_READ_SHADOW: u64 = 0x6004;
pub const CR4_READ_SHADOW: u64 = 0x6006;
pub const EXIT_QUALIFICATION: u64 = 0x6400;

pub const GUEST_CR0: u64 = 0x6800;
pub const GUEST_CR3: u64 = 0x6802;
pub const GUEST_CR4: u64 = 0x6804;
pub const GUEST_ES_BASE: u64 = 0x6806;
pub const GUEST_CS_BASE: u64 = 0x6808;
pub const GUEST_SS_BASE: u64 = 0x680A;
pub const GUEST_DS_BASE: u64 = 0x680C;
pub const GUEST_FS_BASE: u64 = 0x680E;
pub const GUEST_GS_BASE: u64 = 0x6810;
pub const GUEST_LDTR_BASE: u64 = 0x6812;
pub const GUEST_TR_BASE: u64 = 0x6814;
pub const GUEST_GDTR_BASE: u64 = 0x6816;
pub const GUEST_IDTR_BASE: u64 = 0x6818;
pub const GUEST_DR7: u64 = 0x681A;
pub const GUEST_RSP: u64 = 0x681C;
pub const GUEST_RIP: u64 = 0x681E;
pub const GUEST_RFLAGS: u64 = 0x6820;
pub const GUEST_PENDING_DEBUG: u64 = 0x6822;
pub const GUEST_SYSENTER_ESP: u64 = 0x6824;
pub const GUEST_SYSENTER_EIP: u64 = 0x6826;

pub const HOST_CR0: u64 = 0x6C00;
pub const HOST_CR3: u64 = 0x6C02;
pub const HOST_CR4: u64 = 0x6C04;
pub const HOST_FS_BASE: u64 = 0x6C06;
pub const HOST_GS_BASE: u64 = 0x6C08;
pub const HOST_TR_BASE: u64 = 0x6C0A;
pub const HOST_GDTR_BASE: u64 = 0x6C0C;
pub const HOST_IDTR_BASE: u64 = 0x6C0E;
pub const HOST_SYSENTER_ESP: u64 = 0x6C10;
pub const HOST_SYSENTER_EIP: u64 = 0x6C12;
pub const HOST_RIP: u64 = 0x6C16;

bitflags::bitflags! {
    /// Pin-based VM-execution controls (Intel SDM Vol 3C 25.6.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PinControls: u32 {
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        const NMI_EXITING = 1 << 3;
        const PREEMPTION_TIMER = 1 << 6;
    }

    /// Primary processor-based VM-execution controls (Intel SDM Vol 3C 25.6.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ProcControls: u32 {
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        const USE_TSC_OFFSETTING = 1 << 3;
        const HLT_EXITING = 1 << 7;
        const MWAIT_EXITING = 1 << 10;
        const RDPMC_EXITING = 1 << 11;
        const CR3_LOAD_EXITING = 1 << 15;
        const CR3_STORE_EXITING = 1 << 16;
        const CR8_LOAD_EXITING = 1 << 19;
        const CR8_STORE_EXITING = 1 << 20;
        const USE_TPR_SHADOW = 1 << 21;
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        const USE_IO_BITMAPS = 1 << 25;
        const USE_MSR_BITMAPS = 1 << 28;
        const MONITOR_EXITING = 1 << 29;
        const SECONDARY_CONTROLS = 1 << 31;
    }

    /// Secondary processor-based VM-execution controls (Intel SDM Vol 3C 25.6.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Proc2Controls: u32 {
        const ENABLE_EPT = 1 << 1;
        const ENABLE_RDTSCP = 1 << 3;
        const ENABLE_VPID = 1 << 5;
        const UNRESTRICTED_GUEST = 1 << 7;
        const ENABLE_INVPCID = 1 << 12;
    }

    /// VM-exit controls (Intel SDM Vol 3C 25.7.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ExitControls: u32 {
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        const HOST_ADDRESS_SPACE_64 = 1 << 9;
        const SAVE_PAT = 1 << 18;
        const LOAD_PAT = 1 << 19;
        const SAVE_EFER = 1 << 20;
        const LOAD_EFER = 1 << 21;
        const SAVE_PREEMPTION_TIMER = 1 << 22;
    }

    /// VM-entry controls (Intel SDM Vol 3C 25.8.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EntryControls: u32 {
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        const IA32E_MODE_GUEST = 1 << 9;
        const LOAD_PAT = 1 << 14;
        const LOAD_EFER = 1 << 15;
    }

    /// Exit qualification of an EPT violation (Intel SDM Vol 3C table 28-7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EptViolation: u64 {
        const READ = 1 << 0;
        const WRITE = 1 << 1;
        const FETCH = 1 << 2;
    }

    /// Flag bits of an I/O-instruction exit qualification (Intel SDM Vol 3C table 28-5);
    /// the access size is bits 2:0 and the port bits 31:16.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IoQualification: u64 {
        const IN = 1 << 3;
        const STRING = 1 << 4;
    }

    /// Guest interruptibility state (Intel SDM Vol 3C table 25-3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Interruptibility: u64 {
        const BLOCKING_BY_STI = 1 << 0;
        const BLOCKING_BY_MOV_SS = 1 << 1;
    }
}

/// Exit-qualification layout of a control-register access (Intel SDM Vol 3C table 28-3):
/// CR number 3:0, access type 5:4, general register 11:8, LMSW source data 31:16.
pub mod cr_access {
    pub const CR_MASK: u64 = 0xF;
    pub const TYPE_SHIFT: u32 = 4;
    pub const TYPE_MASK: u64 = 3;
    pub const GPR_SHIFT: u32 = 8;
    pub const GPR_MASK: u64 = 0xF;
    pub const LMSW_SOURCE_SHIFT: u32 = 16;
    pub const MOV_TO: u64 = 0;
    pub const MOV_FROM: u64 = 1;
    pub const CLTS: u64 = 2;
    pub const LMSW: u64 = 3;
}

/// Bits of the VMX capability MSRs and IA32_FEATURE_CONTROL (Intel SDM Vol 3D appendix A;
/// Vol 3C 24.7).
pub mod caps {
    /// IA32_FEATURE_CONTROL: locked, and VMX allowed outside SMX.
    pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
    pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
    /// IA32_VMX_BASIC: the VMCS revision (bits 30:0) and the TRUE_* control MSRs (bit 55).
    pub const BASIC_REVISION_MASK: u64 = 0x7FFF_FFFF;
    pub const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
    /// IA32_VMX_MISC bits 4:0: the preemption timer counts TSC >> this.
    pub const MISC_PREEMPTION_RATE_MASK: u64 = 0x1F;
    /// The may-be-one half of a control capability MSR starts at bit 32.
    pub const ALLOWED_ONE_SHIFT: u32 = 32;
    /// IA32_VMX_EPT_VPID_CAP: 4-level walks, write-back paging structures, INVEPT and its
    /// single-context type.
    pub const EPT_WALK_4_LEVELS: u64 = 1 << 6;
    pub const EPT_WRITE_BACK: u64 = 1 << 14;
    pub const EPT_INVEPT: u64 = 1 << 20;
    pub const EPT_INVEPT_SINGLE: u64 = 1 << 25;
}

/// The flag bit of the exit reason that says the VM entry failed (Intel SDM Vol 3C 26.9.1).
pub const EXIT_REASON_ENTRY_FAILURE: u32 = 1 << 31;

/// Basic exit reasons.
pub mod reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const CPUID: u32 = 10;
    pub const GETSEC: u32 = 11;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const RDPMC: u32 = 15;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const INVVPID: u32 = 53;
    pub const XSETBV: u32 = 55;
    pub const INVPCID: u32 = 58;
    pub const VMFUNC: u32 = 59;
}

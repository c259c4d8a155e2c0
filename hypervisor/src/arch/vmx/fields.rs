//! VMCS field encodings (Intel SDM vol. 3, appendix B) and control bits used by the backend.

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

/// Pin-based controls.
pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based controls.
pub mod proc {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based controls.
pub mod proc2 {
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
}

/// VM-exit controls.
pub mod exit_ctl {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_64: u32 = 1 << 9;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls.
pub mod entry_ctl {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}

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

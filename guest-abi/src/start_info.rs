//! The start-of-day page: who the domain is and what it was given. RDI holds its address at
//! the first instruction. It is read-only to the guest; the hypervisor rewrites the identity
//! fields when it makes a clone (and raises the `CLONED` event).

use crate::domctl::NAME_MAX_BYTES;

/// `StartInfo::magic`: "HVSTART1".
pub const START_INFO_MAGIC: u64 = u64::from_le_bytes(*b"HVSTART1");
/// Version of the layout below.
pub const START_INFO_VERSION: u32 = 1;
/// Longest command line in bytes.
pub const CMDLINE_MAX_BYTES: usize = 1024;
/// Most boot modules.
pub const MODULES_MAX: usize = 32;
/// Longest module name in bytes.
pub const MODULE_NAME_MAX_BYTES: usize = 40;

bitflags::bitflags! {
    /// Flags of [`StartInfo::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct StartFlags: u32 {
        /// The domain may make control hypercalls (dom0).
        const PRIVILEGED = 1 << 0;
        /// The domain is a clone; `parent`, `clone_index` and `generation` say whose.
        const CLONE = 1 << 1;
        /// The domain was restored from an image; `generation` is new.
        const RESTORED = 1 << 2;
    }
}

/// A boot module (an image from the boot bundle, mapped read-only).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ModuleInfo {
    pub name: [u8; MODULE_NAME_MAX_BYTES],
    pub gpa: u64,
    pub len: u64,
}

/// The start-of-day page.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct StartInfo {
    pub magic: u64,
    pub version: u32,
    /// [`StartFlags`].
    pub flags: u32,
    pub domid: u32,
    /// Template domid for clones, else `u32::MAX`.
    pub parent: u32,
    /// Clone index (clones only).
    pub clone_index: u32,
    /// 0 = vmcall, 1 = vmmcall.
    pub call_insn: u32,
    /// Changes on every clone and restore (like VMGenID).
    pub generation: u64,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// TSC frequency in kHz.
    pub tsc_khz: u64,
    pub name: [u8; NAME_MAX_BYTES],
    pub cmdline_len: u32,
    pub module_count: u32,
    pub cmdline: [u8; CMDLINE_MAX_BYTES],
    pub modules: [ModuleInfo; MODULES_MAX],
}

const _: () = assert!(core::mem::size_of::<StartInfo>() <= 4096);

impl StartInfo {
    /// An empty start-of-day page with magic and version set.
    pub const fn empty() -> Self {
        Self {
            magic: START_INFO_MAGIC,
            version: START_INFO_VERSION,
            flags: 0,
            domid: 0,
            parent: u32::MAX,
            clone_index: 0,
            call_insn: 0,
            generation: 0,
            mem_bytes: 0,
            tsc_khz: 0,
            name: [0; NAME_MAX_BYTES],
            cmdline_len: 0,
            module_count: 0,
            cmdline: [0; CMDLINE_MAX_BYTES],
            modules: [ModuleInfo { name: [0; MODULE_NAME_MAX_BYTES], gpa: 0, len: 0 }; MODULES_MAX],
        }
    }

    /// The command line.
    pub fn cmdline(&self) -> &str {
        let n = (self.cmdline_len as usize).min(CMDLINE_MAX_BYTES);
        core::str::from_utf8(&self.cmdline[..n]).unwrap_or("")
    }

    /// The domain name.
    pub fn name(&self) -> &str {
        crate::domctl::name_str(&self.name)
    }

    /// The boot modules.
    pub fn modules(&self) -> &[ModuleInfo] {
        &self.modules[..(self.module_count as usize).min(MODULES_MAX)]
    }

    /// Whether the domain is a clone.
    pub fn is_clone(&self) -> bool {
        StartFlags::from_bits_retain(self.flags).contains(StartFlags::CLONE)
    }

    /// Bytes of the start-of-day page as a slice (for writing it into a domain).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: StartInfo is repr(C) plain data without padding holes that matter for
        // reading (all fields are integers/arrays); viewing it as bytes is sound.
        unsafe { core::slice::from_raw_parts(self as *const Self as *const u8, core::mem::size_of::<Self>()) }
    }
}

impl ModuleInfo {
    /// The module's name.
    pub fn name(&self) -> &str {
        crate::domctl::name_str(&self.name)
    }
}

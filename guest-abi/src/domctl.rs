//! Argument and result structs of the control hypercalls (dom0's interface to the hypervisor).
//! All are `#[repr(C)]` and passed by guest-physical address.

/// Longest domain name in bytes.
pub const NAME_MAX_BYTES: usize = 32;

/// Copies `name` into a fixed NUL-padded field (truncating at a character boundary).
pub fn name_field(name: &str) -> [u8; NAME_MAX_BYTES] {
    let mut out = [0u8; NAME_MAX_BYTES];
    let mut n = name.len().min(NAME_MAX_BYTES);
    while !name.is_char_boundary(n) {
        n -= 1;
    }
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// Reads a NUL-padded name field.
pub fn name_str(field: &[u8]) -> &str {
    let n = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..n]).unwrap_or("?")
}

/// Why a name from a guest was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Not UTF-8.
    NotUtf8,
    /// A NUL inside the name (NULs may only pad its end): the name would display as a
    /// shorter one that another domain may have.
    EmbeddedNul,
}

/// Validates a NUL-padded name field sent by a guest: UTF-8, NULs only after the name.
/// The empty name (all NULs) is valid (it asks for a default name).
pub fn parse_name(field: &[u8]) -> Result<&str, NameError> {
    let n = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    if field[n..].iter().any(|&b| b != 0) {
        return Err(NameError::EmbeddedNul);
    }
    core::str::from_utf8(&field[..n]).map_err(|_| NameError::NotUtf8)
}

/// `dom_create` arguments.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CreateArgs {
    /// Guest RAM in bytes (multiple of 4 KiB, at most [`crate::layout::MAX_DOMAIN_MEM_BYTES`]).
    pub mem_bytes: u64,
    /// Virtual CPUs (must be 1 for now).
    pub vcpus: u32,
    /// [`CREATE_PC_PLATFORM`] or 0.
    pub flags: u32,
    /// Name (NUL padded; empty means `domN`).
    pub name: [u8; NAME_MAX_BYTES],
}

/// Exit codes of domains that end without the `shutdown` hypercall (a PC guest).
pub mod exit_code {
    /// Halted with interrupts off: how a kernel without ACPI powers off.
    pub const POWER_OFF: u64 = 0;
    /// Reset the machine (keyboard controller or port 0x92): a reboot, which ends the domain.
    pub const REBOOT: u64 = 0x100;
}

/// [`CreateArgs::flags`]: the domain gets the emulated PC platform (local APIC in x2APIC
/// mode, 8259 pair, 16550A UART on COM1, legacy port stubs), for an unmodified guest kernel.
pub const CREATE_PC_PLATFORM: u32 = 1 << 0;
/// Create the domain without guest memory (only its start-of-day page): a lazy restore,
/// whose pages its pager (dom0, until `dom_pager_set`) supplies on first touch.
pub const CREATE_LAZY: u32 = 1 << 1;
/// Every flag `dom_create` knows.
pub const CREATE_FLAGS_ALL: u32 = CREATE_PC_PLATFORM | CREATE_LAZY;

/// `dom_clone` arguments.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CloneArgs {
    /// Private pages the clone may own beyond what it shares ([`QUOTA_DEFAULT`] = the
    /// template's memory size).
    pub quota_pages: u64,
    /// Clone index the clone sees in its start-of-day page.
    pub index: u32,
    /// [`CLONE_PAUSED`] or 0.
    pub flags: u32,
    /// Name (NUL padded; empty means `domN`).
    pub name: [u8; NAME_MAX_BYTES],
}

/// [`CloneArgs::flags`]: the clone starts paused (restore writes its private pages first).
pub const CLONE_PAUSED: u32 = 1 << 0;

/// `quota_pages` meaning "as many pages as the template has".
pub const QUOTA_DEFAULT: u64 = u64::MAX;

/// Domain states as reported in [`DomainInfo::state`].
pub mod state {
    /// Runnable or running.
    pub const RUNNING: u32 = 1;
    /// Waiting for an event (HLT or `block`).
    pub const BLOCKED: u32 = 2;
    /// Paused; see [`super::DomainInfo::pause_reason`].
    pub const PAUSED: u32 = 3;
    /// A frozen template: never runs again, clones start from it.
    pub const FROZEN: u32 = 4;
    /// Shut down cleanly; see [`super::DomainInfo::exit_code`].
    pub const DEAD: u32 = 5;
    /// Stopped by the hypervisor; see [`super::DomainInfo::reason`].
    pub const CRASHED: u32 = 6;
    /// Built but never unpaused.
    pub const CREATED: u32 = 7;

    /// Name as `list` prints it.
    pub fn name(state: u32) -> &'static str {
        match state {
            RUNNING => "running",
            BLOCKED => "blocked",
            PAUSED => "paused",
            FROZEN => "frozen",
            DEAD => "dead",
            CRASHED => "crashed",
            CREATED => "created",
            _ => "unknown",
        }
    }
}

/// Why a paused domain is paused.
pub mod pause {
    /// Not paused.
    pub const NONE: u32 = 0;
    /// Paused by dom0.
    pub const USER: u32 = 1;
    /// A copy-on-write copy would exceed its private-page quota.
    pub const QUOTA: u32 = 2;
    /// The host ran out of frames during a copy-on-write copy.
    pub const NOMEM: u32 = 3;
    /// Its agent parked it at the freeze point: freeze it there, or unpause it.
    pub const PARKED: u32 = 4;
    /// A lazily restored domain whose pager died or did not answer in time.
    pub const PAGER: u32 = 5;

    /// Qualifier as `list` prints it (`paused(quota)`).
    pub fn name(reason: u32) -> &'static str {
        match reason {
            USER => "",
            QUOTA => "quota",
            NOMEM => "nomem",
            PARKED => "parked",
            PAGER => "pager",
            _ => "",
        }
    }
}

bitflags::bitflags! {
    /// Flags of [`DomainInfo::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DomainFlags: u32 {
        /// The domain may make control hypercalls (dom0).
        const PRIVILEGED = 1 << 0;
        /// The domain is a clone of a template.
        const CLONE = 1 << 1;
        /// The domain has the emulated PC platform (its console is a UART one can type into).
        const PC_PLATFORM = 1 << 2;
        /// Restored lazily and not yet fully resident: pages still come from its pager.
        const LAZY = 1 << 3;
    }
}

/// Longest crash/exit reason in bytes.
pub const REASON_MAX_BYTES: usize = 64;

/// `dom_info` result.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct DomainInfo {
    pub domid: u32,
    /// One of [`state`].
    pub state: u32,
    /// One of [`pause`] when paused.
    pub pause_reason: u32,
    /// [`DomainFlags`].
    pub flags: u32,
    /// Template this domain was cloned from, or [`NO_DOMAIN`].
    pub parent: u32,
    /// Live clones of this domain (if it is a template).
    pub clones: u32,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// RAM pages only this domain maps.
    pub private_pages: u64,
    /// RAM pages it maps that are shared with a template or clones.
    pub shared_pages: u64,
    /// Shutdown code when dead.
    pub exit_code: u64,
    /// Guest time consumed, nanoseconds.
    pub cpu_ns: u64,
    /// Name.
    pub name: [u8; NAME_MAX_BYTES],
    /// Why it crashed or was paused (NUL padded).
    pub reason: [u8; REASON_MAX_BYTES],
}

/// No domain (e.g. the parent of a non-clone).
pub const NO_DOMAIN: u32 = u32::MAX;

/// `dom_stat` result.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct DomainStat {
    pub domid: u32,
    pub _pad: u32,
    /// Copy-on-write faults resolved by copying a page.
    pub cow_faults: u64,
    /// Second-level faults resolved without copying (sole owner, write-protect tracking).
    pub wp_faults: u64,
    /// RAM pages only this domain maps.
    pub private_pages: u64,
    /// Private-page quota ([`QUOTA_DEFAULT`] if unlimited).
    pub quota_pages: u64,
    /// RAM pages shared with others.
    pub shared_pages: u64,
    /// Second-level page-table pages this domain holds alone.
    pub pagetable_pages: u64,
    /// VM exits.
    pub exits: u64,
    /// Hypercalls made.
    pub hypercalls: u64,
    /// Hypervisor bytes spent on this domain beyond its pages (control block, heap).
    pub overhead_bytes: u64,
    /// Generation number (changes on every clone/restore).
    pub generation: u64,
    /// Frames charged to the quota: private RAM pages plus the page tables the domain's
    /// writes made it copy.
    pub quota_used_pages: u64,
    /// The page-table part of `quota_used_pages`.
    pub quota_table_pages: u64,
}

/// `hv_info` result.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct HvInfo {
    /// 1 = intel, 2 = amd.
    pub vendor: u32,
    /// 1 = vmx-ept, 2 = svm-npt.
    pub backend: u32,
    pub total_kib: u64,
    pub free_kib: u64,
    /// RAM frames mapped by more than one domain.
    pub shared_kib: u64,
    /// Second-level page-table frames.
    pub pagetable_kib: u64,
    /// Frames the hypervisor itself uses (frame table, heap, control blocks).
    pub hypervisor_kib: u64,
    /// Domains (all states).
    pub domains: u64,
    /// Frozen templates.
    pub templates: u64,
    /// Memory sharing saves: mapped RAM pages minus distinct RAM frames, in KiB.
    pub saved_kib: u64,
    /// Free kernel heap, KiB.
    pub heap_free_kib: u64,
    /// TSC frequency in kHz.
    pub tsc_khz: u64,
    /// Boot firmware: 1 = bios, 2 = uefi.
    pub firmware: u32,
    pub _pad: u32,
    /// Cycles the last successful `dom_clone` spent in each of its phases
    /// ([`CLONE_PHASE_NAMES`]); TSC cycles, instructions under QEMU `-icount` and Bochs.
    pub last_clone_cycles: [u64; CLONE_PHASES],
    /// Free memory already zeroed (the pool idle time fills for new tables and control
    /// blocks), KiB; part of `free_kib`.
    pub zeroed_kib: u64,
}

/// Phases of a clone, as [`HvInfo::last_clone_cycles`] counts them.
pub const CLONE_PHASES: usize = 5;
/// What each clone phase does.
pub const CLONE_PHASE_NAMES: [&str; CLONE_PHASES] = [
    "checks (name, memory, id)",
    "second-level root copy",
    "own start-of-day page and the tables to it",
    "control block (VMCB/VMCS)",
    "domain record",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_an_embedded_nul_or_bad_utf8_are_refused() {
        assert_eq!(parse_name(&name_field("web-1")), Ok("web-1"));
        assert_eq!(parse_name(&[0; NAME_MAX_BYTES]), Ok(""));
        let mut f = name_field("ab");
        f[3] = b'c';
        assert_eq!(parse_name(&f), Err(NameError::EmbeddedNul), "a\\0\\0c would show as \"ab\"");
        assert_eq!(parse_name(b"\xff\xfe"), Err(NameError::NotUtf8));
        assert_eq!(parse_name(b"full-length-name-without-padding"), Ok("full-length-name-without-padding"));
    }
}

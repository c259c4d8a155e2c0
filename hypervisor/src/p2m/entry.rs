//! The two second-level entry formats. EPT (Intel) and NPT (AMD) tables have the same
//! four-level shape; they differ only in where the permission bits live, which is all this
//! module knows. Software bits 52-55 of leaf entries hold the [`P2mType`].

use crate::mm::frame::Pfn;

/// What a guest-physical page is, recorded in the leaf entry's software bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum P2mType {
    /// Guest RAM: writable unless shared copy-on-write or write-protected.
    Ram = 0,
    /// The start-of-day page: read-only to the guest, written by the hypervisor.
    Info = 1,
    /// Read-only memory (boot bundle images in dom0); writes are refused.
    Rom = 2,
}

impl P2mType {
    fn from_bits(v: u64) -> Self {
        match v {
            1 => Self::Info,
            2 => Self::Rom,
            _ => Self::Ram,
        }
    }
}

const PFN_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const TYPE_SHIFT: u32 = 52;
const TYPE_MASK: u64 = 0xF << TYPE_SHIFT;

/// A second-level page-table entry format.
pub trait EntryFormat: Copy + 'static {
    /// Name for logs (`ept`, `npt`).
    const NAME: &'static str;
    /// Bit that grants write access (same position in both formats).
    const WRITE: u64 = 1 << 1;

    /// A non-leaf entry pointing at the table `pfn`, granting everything.
    fn table(pfn: Pfn) -> u64;
    /// A leaf entry mapping the 4 KiB frame `pfn`.
    fn leaf(pfn: Pfn, writable: bool, ty: P2mType) -> u64;
    /// Whether the entry maps anything.
    fn is_present(e: u64) -> bool;

    /// Whether the entry grants write access.
    #[inline]
    fn is_writable(e: u64) -> bool {
        e & Self::WRITE != 0
    }

    /// The entry with write access granted or removed.
    #[inline]
    fn with_writable(e: u64, writable: bool) -> u64 {
        if writable { e | Self::WRITE } else { e & !Self::WRITE }
    }

    /// The frame the entry points at.
    #[inline]
    fn pfn(e: u64) -> Pfn {
        Pfn((e & PFN_MASK) >> 12)
    }

    /// The page type of a leaf entry.
    #[inline]
    fn p2m_type(e: u64) -> P2mType {
        P2mType::from_bits((e & TYPE_MASK) >> TYPE_SHIFT)
    }
}

/// Intel EPT: bits 0/1/2 = read/write/execute; leaves carry memory type WB in bits 3-5.
#[derive(Clone, Copy, Debug)]
pub struct Ept;

const EPT_READ: u64 = 1 << 0;
const EPT_WRITE: u64 = 1 << 1;
const EPT_EXEC: u64 = 1 << 2;
const EPT_MEMTYPE_WB: u64 = 6 << 3;

impl EntryFormat for Ept {
    const NAME: &'static str = "ept";

    fn table(pfn: Pfn) -> u64 {
        pfn.addr() | EPT_READ | EPT_WRITE | EPT_EXEC
    }

    fn leaf(pfn: Pfn, writable: bool, ty: P2mType) -> u64 {
        let w = if writable { EPT_WRITE } else { 0 };
        pfn.addr() | EPT_READ | w | EPT_EXEC | EPT_MEMTYPE_WB | ((ty as u64) << TYPE_SHIFT)
    }

    fn is_present(e: u64) -> bool {
        e & (EPT_READ | EPT_WRITE | EPT_EXEC) != 0
    }
}

/// AMD NPT: long-mode page-table entries; U/S must be set at every level, and accessed/dirty
/// are preset so the walker never writes (shared) tables.
#[derive(Clone, Copy, Debug)]
pub struct Npt;

const NPT_PRESENT: u64 = 1 << 0;
const NPT_WRITE: u64 = 1 << 1;
const NPT_USER: u64 = 1 << 2;
const NPT_ACCESSED: u64 = 1 << 5;
const NPT_DIRTY: u64 = 1 << 6;

impl EntryFormat for Npt {
    const NAME: &'static str = "npt";

    fn table(pfn: Pfn) -> u64 {
        pfn.addr() | NPT_PRESENT | NPT_WRITE | NPT_USER | NPT_ACCESSED
    }

    fn leaf(pfn: Pfn, writable: bool, ty: P2mType) -> u64 {
        let w = if writable { NPT_WRITE } else { 0 };
        pfn.addr() | NPT_PRESENT | w | NPT_USER | NPT_ACCESSED | NPT_DIRTY | ((ty as u64) << TYPE_SHIFT)
    }

    fn is_present(e: u64) -> bool {
        e & NPT_PRESENT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<F: EntryFormat>() {
        let e = F::leaf(Pfn(0x12345), true, P2mType::Info);
        assert!(F::is_present(e));
        assert!(F::is_writable(e));
        assert_eq!(F::pfn(e), Pfn(0x12345));
        assert_eq!(F::p2m_type(e), P2mType::Info);
        let ro = F::with_writable(e, false);
        assert!(!F::is_writable(ro) && F::is_present(ro));
        assert_eq!(F::pfn(ro), Pfn(0x12345));
        let t = F::table(Pfn(7));
        assert!(F::is_present(t) && F::is_writable(t));
        assert_eq!(F::pfn(t), Pfn(7));
        assert!(!F::is_present(0));
    }

    #[test]
    fn ept_entries_round_trip() {
        round_trip::<Ept>();
        // Leaves carry write-back memory type; non-leaf entries must not.
        assert_eq!(Ept::leaf(Pfn(1), false, P2mType::Ram) & 0x38, 0x30);
        assert_eq!(Ept::table(Pfn(1)) & 0x38, 0);
    }

    #[test]
    fn npt_entries_round_trip() {
        round_trip::<Npt>();
        // User bit at every level, or the guest's own page walk faults.
        assert_ne!(Npt::table(Pfn(1)) & NPT_USER, 0);
        assert_ne!(Npt::leaf(Pfn(1), false, P2mType::Ram) & NPT_USER, 0);
    }
}

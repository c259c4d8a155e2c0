//! The two second-level entry formats. EPT (Intel) and NPT (AMD) tables have the same
//! four-level shape; they differ only in where the permission bits live, which is all this
//! module knows. Software bits 52-55 of leaf entries hold the [`P2mType`].

use crate::mm::frame::Pfn;
use bitflags::bitflags;
use x86_64::structures::paging::PageTableFlags;

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
    /// Bit that grants write access (bit 1 in both formats).
    const WRITE: u64;

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

bitflags! {
    /// The EPT entry bits this engine uses (Intel SDM Vol 3C 29.3.2, tables 29-1 to 29-6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EptFlags: u64 {
        const READ = 1 << 0;
        const WRITE = 1 << 1;
        const EXECUTE = 1 << 2;
        /// Memory type write-back (6) in bits 5:3 of a leaf; non-leaf entries must leave
        /// them 0 (or the walk is an EPT misconfiguration).
        const MEMORY_TYPE_WB = 6 << 3;
    }
}

/// Intel EPT: read/write/execute bits; leaves carry memory type WB.
#[derive(Clone, Copy, Debug)]
pub struct Ept;

impl EntryFormat for Ept {
    const NAME: &'static str = "ept";
    const WRITE: u64 = EptFlags::WRITE.bits();

    fn table(pfn: Pfn) -> u64 {
        pfn.addr() | (EptFlags::READ | EptFlags::WRITE | EptFlags::EXECUTE).bits()
    }

    fn leaf(pfn: Pfn, writable: bool, ty: P2mType) -> u64 {
        let mut f = EptFlags::READ | EptFlags::EXECUTE | EptFlags::MEMORY_TYPE_WB;
        f.set(EptFlags::WRITE, writable);
        pfn.addr() | f.bits() | ((ty as u64) << TYPE_SHIFT)
    }

    fn is_present(e: u64) -> bool {
        e & (EptFlags::READ | EptFlags::WRITE | EptFlags::EXECUTE).bits() != 0
    }
}

/// AMD NPT: long-mode page-table entries (the `x86_64` crate's flags); USER must be set at
/// every level, and accessed/dirty are preset so the walker never writes (shared) tables
/// (AMD APM Vol 2 15.25.5).
#[derive(Clone, Copy, Debug)]
pub struct Npt;

/// What every NPT entry carries: present, user, accessed.
const NPT_BASE: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::USER_ACCESSIBLE).union(PageTableFlags::ACCESSED);

impl EntryFormat for Npt {
    const NAME: &'static str = "npt";
    const WRITE: u64 = PageTableFlags::WRITABLE.bits();

    fn table(pfn: Pfn) -> u64 {
        pfn.addr() | (NPT_BASE | PageTableFlags::WRITABLE).bits()
    }

    fn leaf(pfn: Pfn, writable: bool, ty: P2mType) -> u64 {
        let mut f = NPT_BASE | PageTableFlags::DIRTY;
        f.set(PageTableFlags::WRITABLE, writable);
        pfn.addr() | f.bits() | ((ty as u64) << TYPE_SHIFT)
    }

    fn is_present(e: u64) -> bool {
        e & PageTableFlags::PRESENT.bits() != 0
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
        assert_ne!(Npt::table(Pfn(1)) & PageTableFlags::USER_ACCESSIBLE.bits(), 0);
        assert_ne!(Npt::leaf(Pfn(1), false, P2mType::Ram) & PageTableFlags::USER_ACCESSIBLE.bits(), 0);
        assert_eq!(Npt::WRITE, Ept::WRITE, "write access is bit 1 in both formats");
    }
}

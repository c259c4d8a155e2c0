//! Guest-linear to guest-physical translation through the guest's own page tables, for the
//! few exits where the hypervisor must read the instruction the guest just executed (AMD SVM
//! without decode assists). A read-only walk: no accessed or dirty bits are set and no
//! permission is checked (the CPU already fetched these bytes for the guest). Long mode with
//! 4-level paging only, which is all a guest of this hypervisor can run in.

use crate::policy::state::canonical;
use guest_abi::vcpu::{Cr0Flags, Cr4Flags, EferFlags};
use x86_64::structures::paging::PageTableFlags;

/// Reads guest-physical memory (the hypervisor implements it over the domain's P2M).
pub trait GuestPhys {
    /// Copies `buf.len()` bytes at `gpa`; `Err` if any byte is not backed by the domain.
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unmapped>;
}

/// A guest-physical address nothing backs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped;

/// The registers that decide how linear addresses translate.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagingRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// Why a linear address could not be translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at `level` (4 = PML4 .. 1 = PT) is not present.
    NotPresent { linear: u64, level: u8 },
    /// A paging structure lies outside the guest's memory.
    Unmapped { gpa: u64 },
    /// The address is not canonical.
    NonCanonical(u64),
    /// A reserved bit is set (PS in a PML4 entry).
    Reserved { level: u8 },
    /// Paging that long-mode guests cannot use (5-level, 32-bit, PAE without long mode).
    UnsupportedPaging,
}

const PAGE_BYTES: u64 = 4096;
const CR0_PG: u64 = Cr0Flags::PAGING.bits();
const CR4_PAE: u64 = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits();
const CR4_LA57: u64 = Cr4Flags::L5_PAGING.bits();
const EFER_LMA: u64 = EferFlags::LONG_MODE_ACTIVE.bits();
/// Page-table entry bits (Intel SDM Vol 3A 4.5, tables 4-15 to 4-20).
const PTE_PRESENT: u64 = PageTableFlags::PRESENT.bits();
const PTE_PS: u64 = PageTableFlags::HUGE_PAGE.bits();
/// Physical-address bits 51:12 of an entry.
const PTE_ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// CR3 bits 51:12: the PML4's address (the low bits are PCID or flags).
pub const CR3_ADDR: u64 = PTE_ADDR;

fn entry(mem: &impl GuestPhys, gpa: u64) -> Result<u64, WalkError> {
    let mut b = [0u8; 8];
    mem.read_phys(gpa, &mut b).map_err(|Unmapped| WalkError::Unmapped { gpa })?;
    Ok(u64::from_le_bytes(b))
}

/// Walks the four long-mode levels from the PML4 at physical address `pml4` for `linear`,
/// reading each entry with `read_entry(its physical address)`. The one page walker: guest
/// tables (through [`translate`]) and the hypervisor's own (`mm::phys::translate`) use it.
pub fn walk_long_mode(
    pml4: u64,
    linear: u64,
    read_entry: &mut dyn FnMut(u64) -> Result<u64, WalkError>,
) -> Result<u64, WalkError> {
    let mut table = pml4;
    for level in (1..=4u8).rev() {
        let shift = 12 + 9 * (u32::from(level) - 1);
        let e = read_entry(table + ((linear >> shift) & 0x1FF) * 8)?;
        if e & PTE_PRESENT == 0 {
            return Err(WalkError::NotPresent { linear, level });
        }
        // PT entries have no PS bit (bit 7 is PAT there); a PML4 entry's must be clear.
        if e & PTE_PS != 0 && level > 1 {
            if level == 4 {
                return Err(WalkError::Reserved { level });
            }
            let size = 1u64 << shift;
            return Ok((e & PTE_ADDR & !(size - 1)) | (linear & (size - 1)));
        }
        table = e & PTE_ADDR;
    }
    Ok(table | (linear & (PAGE_BYTES - 1)))
}

/// The guest-physical address `linear` translates to.
pub fn translate(mem: &impl GuestPhys, regs: &PagingRegs, linear: u64) -> Result<u64, WalkError> {
    if regs.cr0 & CR0_PG == 0 {
        return Ok(linear);
    }
    if regs.efer & EFER_LMA == 0 || regs.cr4 & CR4_PAE == 0 || regs.cr4 & CR4_LA57 != 0 {
        return Err(WalkError::UnsupportedPaging);
    }
    if !canonical(linear) {
        return Err(WalkError::NonCanonical(linear));
    }
    walk_long_mode(regs.cr3 & CR3_ADDR, linear, &mut |gpa| entry(mem, gpa))
}

/// Reads `buf.len()` bytes at a guest-linear address, page by page (each page translated on
/// its own); returns how many bytes were read before the first one that could not be, with
/// that error (`Ok` when all were).
pub fn read_linear(mem: &impl GuestPhys, regs: &PagingRegs, linear: u64, buf: &mut [u8]) -> (usize, Result<(), WalkError>) {
    let mut done = 0;
    while done < buf.len() {
        let at = linear.wrapping_add(done as u64);
        let gpa = match translate(mem, regs, at) {
            Ok(g) => g,
            Err(e) => return (done, Err(e)),
        };
        let n = ((PAGE_BYTES - at % PAGE_BYTES) as usize).min(buf.len() - done);
        if mem.read_phys(gpa, &mut buf[done..done + n]).is_err() {
            return (done, Err(WalkError::Unmapped { gpa }));
        }
        done += n;
    }
    (done, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Guest memory of `len` bytes at guest-physical 0.
    struct Ram(Vec<u8>);

    impl GuestPhys for Ram {
        fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unmapped> {
            let start = usize::try_from(gpa).map_err(|_| Unmapped)?;
            let src = self.0.get(start..start + buf.len()).ok_or(Unmapped)?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    impl Ram {
        fn set(&mut self, gpa: u64, v: u64) {
            self.0[gpa as usize..gpa as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    const LONG: PagingRegs = PagingRegs { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PAE, efer: EFER_LMA | (1 << 8) };

    /// PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000: linear 0 -> PT, a 2 MiB
    /// page at linear 2 MiB -> 0x20_0000, a 1 GiB page at linear 1 GiB -> 0 (aliasing).
    fn tables() -> Ram {
        let mut m = Ram(vec![0; 0x40_0000]);
        m.set(0x1000, 0x2000 | 1);
        m.set(0x2000, 0x3000 | 1);
        m.set(0x2008, PTE_PS | 1);
        m.set(0x3000, 0x4000 | 1);
        m.set(0x3008, 0x20_0000 | PTE_PS | 1);
        m.set(0x4000 + 5 * 8, 0x9000 | 1);
        m.set(0x4000 + 6 * 8, 0x7000 | 1);
        m
    }

    #[test]
    fn four_kib_two_mib_and_one_gib_pages_translate() {
        let m = tables();
        assert_eq!(translate(&m, &LONG, 0x5123), Ok(0x9123));
        assert_eq!(translate(&m, &LONG, 0x20_0000 + 0x1234), Ok(0x20_1234));
        assert_eq!(translate(&m, &LONG, (1 << 30) + 0x3456), Ok(0x3456));
        let off = PagingRegs { cr0: 1, ..LONG };
        assert_eq!(translate(&m, &off, 0xABCD), Ok(0xABCD), "paging off: linear is physical");
    }

    #[test]
    fn missing_entries_name_their_level() {
        let m = tables();
        assert_eq!(translate(&m, &LONG, 0x8000), Err(WalkError::NotPresent { linear: 0x8000, level: 1 }));
        assert_eq!(translate(&m, &LONG, 0x40_0000), Err(WalkError::NotPresent { linear: 0x40_0000, level: 2 }));
        assert_eq!(translate(&m, &LONG, 2 << 30), Err(WalkError::NotPresent { linear: 2 << 30, level: 3 }));
        assert_eq!(translate(&m, &LONG, 1 << 39), Err(WalkError::NotPresent { linear: 1 << 39, level: 4 }));
    }

    #[test]
    fn hostile_tables_and_addresses_give_errors() {
        let mut m = tables();
        assert_eq!(translate(&m, &LONG, 0x0000_8000_0000_0000), Err(WalkError::NonCanonical(0x0000_8000_0000_0000)));
        assert_eq!(translate(&m, &PagingRegs { cr4: CR4_PAE | CR4_LA57, ..LONG }, 0), Err(WalkError::UnsupportedPaging));
        assert_eq!(translate(&m, &PagingRegs { efer: 0, ..LONG }, 0), Err(WalkError::UnsupportedPaging));
        m.set(0x1000 + 8, PTE_PS | 1);
        assert_eq!(translate(&m, &LONG, 1 << 39), Err(WalkError::Reserved { level: 4 }));
        m.set(0x1000 + 16, 0x7FFF_F000 | 1);
        assert_eq!(translate(&m, &LONG, 2 << 39), Err(WalkError::Unmapped { gpa: 0x7FFF_F000 }), "a table beyond RAM");
        let wild = PagingRegs { cr3: 0x000F_FFFF_FFFF_F000, ..LONG };
        assert!(matches!(translate(&m, &wild, 0), Err(WalkError::Unmapped { .. })));
    }

    #[test]
    fn reads_cross_pages_mapped_apart_and_stop_at_a_hole() {
        let mut m = tables();
        m.0[0x9FFE] = 0xAA;
        m.0[0x9FFF] = 0xBB;
        m.0[0x7000] = 0xCC;
        let mut buf = [0u8; 3];
        assert_eq!(read_linear(&m, &LONG, 0x5FFE, &mut buf), (3, Ok(())));
        assert_eq!(buf, [0xAA, 0xBB, 0xCC], "linear 0x5FFE.. spans frames 0x9000 and 0x7000");
        let mut buf = [0u8; 4];
        let (n, r) = read_linear(&m, &LONG, 0x6FFE, &mut buf);
        assert_eq!((n, r), (2, Err(WalkError::NotPresent { linear: 0x7000, level: 1 })));
    }
}

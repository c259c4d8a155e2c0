//! Decoding the instructions a guest kernel uses on memory-mapped device registers (the local
//! APIC's page): MOV r/m, r (89), MOV r, r/m (8B) and MOV r/m, imm32 (C7 /0), 32- or 64-bit
//! operands. The device's address comes from the second-level fault, so only the direction,
//! the register or immediate, the width and the length matter. Every byte is guest
//! controlled: anything else is an error, never a panic.

use super::decode::{Bytes, CpuMode, DecodeError, Gpr, Operand16, operand, prefixes};

/// What a decoded MMIO instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioAccess {
    /// Load the register at the address into `gpr`.
    Load { gpr: Gpr },
    /// Store `gpr` to the address.
    Store { gpr: Gpr },
    /// Store an immediate.
    StoreImmediate { value: u32 },
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInsn {
    pub access: MmioAccess,
    /// Operand bytes: 4 or 8 (16-bit operands are refused).
    pub width: u8,
    /// Instruction bytes, prefixes included.
    pub length: u8,
}

/// Decodes the MMIO access at the start of `bytes`.
pub fn decode_mmio(bytes: &[u8], mode: CpuMode) -> Result<MmioInsn, DecodeError> {
    let mut c = Bytes { bytes, at: 0 };
    let (p, op) = prefixes(&mut c, mode)?;
    if p.lock || p.operand_size {
        return Err(DecodeError::NotMmio);
    }
    if !matches!(op, 0x89 | 0x8B | 0xC7) {
        return Err(DecodeError::NotMmio);
    }
    let width = if p.rex_w() { 8 } else { 4 };
    let modrm = c.next()?;
    let reg = ((modrm >> 3) & 7) | (p.rex_r() << 3);
    if modrm >> 6 == 3 {
        // A register operand touches no memory.
        return Err(DecodeError::NotMmio);
    }
    let access = match op {
        0x89 => MmioAccess::Store { gpr: reg },
        0x8B => MmioAccess::Load { gpr: reg },
        0xC7 if (modrm >> 3) & 7 == 0 => MmioAccess::StoreImmediate { value: 0 },
        _ => return Err(DecodeError::NotMmio),
    };
    match operand(&mut c, &p, modrm, mode)? {
        Operand16::Memory(_) => {}
        Operand16::Register(_) => return Err(DecodeError::NotMmio),
    }
    let access = match access {
        MmioAccess::StoreImmediate { .. } => MmioAccess::StoreImmediate { value: c.displacement(4)? as u32 },
        a => a,
    };
    Ok(MmioInsn { access, width, length: c.at as u8 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_apic_read_and_write_decode_with_their_lengths() {
        // mov eax, [rdi - 0xa03000] and mov [rdi - 0xa03000], esi (native_apic_mem_read/write).
        let r = decode_mmio(&[0x8b, 0x87, 0x00, 0xd0, 0x5f, 0xff], CpuMode::Long64).unwrap();
        assert_eq!(r, MmioInsn { access: MmioAccess::Load { gpr: 0 }, width: 4, length: 6 });
        let w = decode_mmio(&[0x89, 0xb7, 0x00, 0xd0, 0x5f, 0xff], CpuMode::Long64).unwrap();
        assert_eq!(w, MmioInsn { access: MmioAccess::Store { gpr: 6 }, width: 4, length: 6 });
    }

    #[test]
    fn rex_selects_high_registers_and_64_bit_width() {
        // mov r9, [rax] (REX.WR 8B 08)
        let r = decode_mmio(&[0x4c, 0x8b, 0x08], CpuMode::Long64).unwrap();
        assert_eq!(r, MmioInsn { access: MmioAccess::Load { gpr: 9 }, width: 8, length: 3 });
    }

    #[test]
    fn store_immediate_carries_its_value() {
        // mov dword [rip + 0x10], 0x12345678
        let w = decode_mmio(&[0xc7, 0x05, 0x10, 0, 0, 0, 0x78, 0x56, 0x34, 0x12], CpuMode::Long64).unwrap();
        assert_eq!(w.access, MmioAccess::StoreImmediate { value: 0x1234_5678 });
        assert_eq!(w.length, 10);
    }

    #[test]
    fn other_instructions_and_truncated_bytes_are_refused() {
        assert_eq!(decode_mmio(&[0x90], CpuMode::Long64), Err(DecodeError::NotMmio));
        assert_eq!(decode_mmio(&[0x8b], CpuMode::Long64), Err(DecodeError::Truncated));
        assert_eq!(decode_mmio(&[0x8b, 0xc0], CpuMode::Long64), Err(DecodeError::NotMmio));
        assert_eq!(decode_mmio(&[0x66, 0x89, 0x07], CpuMode::Long64), Err(DecodeError::NotMmio));
        assert_eq!(decode_mmio(&[0xf0, 0x89, 0x07], CpuMode::Long64), Err(DecodeError::NotMmio));
        assert_eq!(decode_mmio(&[0x66; 20], CpuMode::Long64), Err(DecodeError::TooLong));
    }
}

//! Decoding the instructions that write or read control registers: MOV to/from CRn
//! (0F 22 /r, 0F 20 /r), CLTS (0F 06) and LMSW (0F 01 /6), from bytes fetched at the guest's
//! RIP. Used where the CPU reports a CR-write intercept without the operand (AMD SVM without
//! decode assists). Every byte is guest-controlled: anything else, anything truncated or
//! longer than the architectural 15 bytes is an error, never a panic.
//!
//! See: Intel SDM Vol 2A chapter 2 (instruction format, ModR/M and SIB) and Vol 2B MOV (Control
//! Registers); AMD APM Vol 3 1.2 (legacy and REX prefixes) and "MOV CRn" (the LOCK-prefixed
//! CR8 alias).

/// The mode the bytes execute in (from EFER.LMA, CS.L and CS.D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// 64-bit mode: REX prefixes, 64-bit operands for MOV CR, 64/32-bit addressing.
    Long64,
    /// Compatibility mode with a 32-bit code segment.
    Compat32,
    /// Compatibility mode with a 16-bit code segment.
    Compat16,
}

/// General register numbers in the encoding's order: RAX 0, RCX 1, RDX 2, RBX 3, RSP 4,
/// RBP 5, RSI 6, RDI 7, R8-R15 8-15.
pub type Gpr = u8;

/// A segment register, for a memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentReg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

/// A ModR/M (and SIB) memory operand before its effective address is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    pub base: Option<Gpr>,
    pub index: Option<Gpr>,
    /// 1, 2, 4 or 8.
    pub scale: u8,
    pub displacement: i64,
    /// Relative to the next instruction (64-bit mode, mod 00 r/m 101).
    pub rip_relative: bool,
    pub segment: SegmentReg,
    /// 16, 32 or 64.
    pub address_bits: u8,
}

/// LMSW's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand16 {
    Register(Gpr),
    Memory(MemOperand),
}

/// What the instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    /// MOV CRn, r: write general register `gpr` into CR `cr`.
    Write { cr: u8, gpr: Gpr },
    /// MOV r, CRn.
    Read { cr: u8, gpr: Gpr },
    /// CLTS: clear CR0.TS.
    Clts,
    /// LMSW r/m16: load CR0 bits 3:0 (PE cannot be cleared).
    Lmsw(Operand16),
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub access: CrAccess,
    /// Bytes, prefixes included.
    pub length: u8,
}

/// Why the bytes are not a control-register access this decoder accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// More than 15 bytes (the CPU would raise #GP).
    TooLong,
    /// Another instruction.
    NotCrAccess,
    /// Not a memory MOV the device emulation handles.
    NotMmio,
    /// MOV to or from a control register that does not exist (#UD).
    InvalidCr(u8),
    /// A LOCK prefix (#UD, except the AMD alias for CR8).
    Lock,
}

/// Longest x86 instruction.
pub const MAX_INSN_BYTES: usize = 15;
/// Control registers MOV accepts in long mode.
const VALID_CRS: [u8; 5] = [0, 2, 3, 4, 8];

/// Prefix state collected before the opcode.
#[derive(Default)]
pub(super) struct Prefixes {
    pub(super) lock: bool,
    pub(super) address_size: bool,
    /// 0x66: 16-bit operands.
    pub(super) operand_size: bool,
    pub(super) segment: Option<SegmentReg>,
    pub(super) rex: u8,
}

impl Prefixes {
    pub(super) fn rex_w(&self) -> bool {
        self.rex & 0x08 != 0
    }
    pub(super) fn rex_r(&self) -> u8 {
        (self.rex >> 2) & 1
    }
    fn rex_x(&self) -> u8 {
        (self.rex >> 1) & 1
    }
    fn rex_b(&self) -> u8 {
        self.rex & 1
    }
}

/// A cursor over the instruction bytes, bounded by [`MAX_INSN_BYTES`].
pub(super) struct Bytes<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl Bytes<'_> {
    pub(super) fn next(&mut self) -> Result<u8, DecodeError> {
        if self.at >= MAX_INSN_BYTES {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    pub(super) fn displacement(&mut self, bytes: usize) -> Result<i64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..bytes {
            v |= u64::from(self.next()?) << (8 * i);
        }
        let shift = 64 - 8 * bytes as u32;
        Ok(((v << shift) as i64) >> shift)
    }
}

/// Decodes one control-register access at the start of `bytes`. `amd_cr8_alias`: a LOCK
/// prefix on a MOV with CR0 means CR8 (AMD's AltMovCr8).
pub fn decode_cr_access(bytes: &[u8], mode: CpuMode, amd_cr8_alias: bool) -> Result<Decoded, DecodeError> {
    let mut c = Bytes { bytes, at: 0 };
    let (p, op) = prefixes(&mut c, mode)?;
    decode_cr_after_prefixes(&mut c, &p, op, mode, amd_cr8_alias)
}

/// The prefixes at the cursor and the opcode byte after them.
pub(super) fn prefixes(c: &mut Bytes<'_>, mode: CpuMode) -> Result<(Prefixes, u8), DecodeError> {
    let mut p = Prefixes::default();
    let op = loop {
        let b = c.next()?;
        match b {
            0xF0 => p.lock = true,
            0x67 => p.address_size = true,
            0x66 => p.operand_size = true,
            0xF2 | 0xF3 => {}
            // In 64-bit mode ES, CS, SS and DS overrides are null prefixes (AMD APM Vol 3
            // 1.2.4): they neither replace an FS/GS override nor take effect.
            0x26 | 0x2E | 0x36 | 0x3E if mode == CpuMode::Long64 => {}
            0x26 => p.segment = Some(SegmentReg::Es),
            0x2E => p.segment = Some(SegmentReg::Cs),
            0x36 => p.segment = Some(SegmentReg::Ss),
            0x3E => p.segment = Some(SegmentReg::Ds),
            0x64 => p.segment = Some(SegmentReg::Fs),
            0x65 => p.segment = Some(SegmentReg::Gs),
            // REX (64-bit mode only; elsewhere these are INC/DEC): the last one wins.
            0x40..=0x4F if mode == CpuMode::Long64 => {
                p.rex = b;
                continue;
            }
            _ => break b,
        }
        // A REX prefix counts only right before the opcode: a legacy prefix after it cancels it.
        p.rex = 0;
    };
    Ok((p, op))
}

fn decode_cr_after_prefixes(c: &mut Bytes<'_>, p: &Prefixes, op: u8, mode: CpuMode, amd_cr8_alias: bool) -> Result<Decoded, DecodeError> {
    if op != 0x0F {
        return Err(DecodeError::NotCrAccess);
    }
    let op2 = c.next()?;
    let access = match op2 {
        0x20 | 0x22 => {
            // MOV CR: always a register operand, whatever ModR/M.mod says.
            let modrm = c.next()?;
            let mut cr = ((modrm >> 3) & 7) | (p.rex_r() << 3);
            let gpr = (modrm & 7) | (p.rex_b() << 3);
            if p.lock {
                if !amd_cr8_alias || cr != 0 {
                    return Err(DecodeError::Lock);
                }
                cr = 8;
            }
            if !VALID_CRS.contains(&cr) {
                return Err(DecodeError::InvalidCr(cr));
            }
            if op2 == 0x22 { CrAccess::Write { cr, gpr } } else { CrAccess::Read { cr, gpr } }
        }
        0x06 if !p.lock => CrAccess::Clts,
        0x01 if !p.lock => {
            let modrm = c.next()?;
            if (modrm >> 3) & 7 != 6 {
                return Err(DecodeError::NotCrAccess);
            }
            CrAccess::Lmsw(operand(c, p, modrm, mode)?)
        }
        0x06 | 0x01 => return Err(DecodeError::Lock),
        _ => return Err(DecodeError::NotCrAccess),
    };
    Ok(Decoded { access, length: c.at as u8 })
}

/// The r/m operand of `modrm` (the rest of ModR/M, SIB and displacement).
pub(super) fn operand(c: &mut Bytes<'_>, p: &Prefixes, modrm: u8, mode: CpuMode) -> Result<Operand16, DecodeError> {
    let (md, rm) = (modrm >> 6, modrm & 7);
    if md == 3 {
        return Ok(Operand16::Register(rm | (p.rex_b() << 3)));
    }
    let address_bits = match (mode, p.address_size) {
        (CpuMode::Long64, false) => 64,
        (CpuMode::Long64, true) | (CpuMode::Compat32, false) | (CpuMode::Compat16, true) => 32,
        (CpuMode::Compat32, true) | (CpuMode::Compat16, false) => 16,
    };
    let mut m = MemOperand {
        base: None,
        index: None,
        scale: 1,
        displacement: 0,
        rip_relative: false,
        segment: SegmentReg::Ds,
        address_bits,
    };
    if address_bits == 16 {
        // 16-bit addressing: fixed base/index pairs (Intel SDM Vol 2A table 2-1).
        const PAIRS: [(Option<Gpr>, Option<Gpr>); 8] = [
            (Some(3), Some(6)),
            (Some(3), Some(7)),
            (Some(5), Some(6)),
            (Some(5), Some(7)),
            (Some(6), None),
            (Some(7), None),
            (Some(5), None),
            (Some(3), None),
        ];
        let (base, index) = PAIRS[usize::from(rm)];
        (m.base, m.index) = (base, index);
        m.displacement = match md {
            0 if rm == 6 => {
                m.base = None;
                c.displacement(2)?
            }
            0 => 0,
            1 => c.displacement(1)?,
            _ => c.displacement(2)?,
        };
        if m.base == Some(5) {
            m.segment = SegmentReg::Ss;
        }
    } else {
        if rm == 4 {
            let sib = c.next()?;
            let (scale, index, base) = (sib >> 6, ((sib >> 3) & 7) | (p.rex_x() << 3), sib & 7);
            m.scale = 1 << scale;
            m.index = (index != 4).then_some(index);
            m.base = if base == 5 && md == 0 { None } else { Some(base | (p.rex_b() << 3)) };
            if base == 5 && md == 0 {
                m.displacement = c.displacement(4)?;
            }
        } else if rm == 5 && md == 0 {
            // In 64-bit mode, whatever the address size (EIP-relative with 0x67).
            m.rip_relative = mode == CpuMode::Long64;
            m.displacement = c.displacement(4)?;
        } else {
            m.base = Some(rm | (p.rex_b() << 3));
        }
        m.displacement += match md {
            1 => c.displacement(1)?,
            2 => c.displacement(4)?,
            _ => 0,
        };
        if matches!(m.base, Some(4 | 5)) && mode != CpuMode::Long64 {
            m.segment = SegmentReg::Ss;
        }
    }
    if let Some(s) = p.segment {
        m.segment = s;
    }
    Ok(Operand16::Memory(m))
}

/// The effective linear address of `op`: base + index * scale + displacement (or the next
/// instruction + displacement), truncated to the address size, plus `segment_base` (which
/// the caller takes from the segment `op.segment`; in 64-bit mode only FS and GS have one).
pub fn effective_address(op: &MemOperand, gprs: &[u64; 16], next_rip: u64, segment_base: u64) -> u64 {
    let reg = |r: Option<Gpr>| r.and_then(|r| gprs.get(usize::from(r))).copied().unwrap_or(0);
    let offset = if op.rip_relative {
        next_rip.wrapping_add(op.displacement as u64)
    } else {
        reg(op.base).wrapping_add(reg(op.index).wrapping_mul(u64::from(op.scale))).wrapping_add(op.displacement as u64)
    };
    let offset = match op.address_bits {
        16 => offset & 0xFFFF,
        32 => offset & 0xFFFF_FFFF,
        _ => offset,
    };
    segment_base.wrapping_add(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8], mode: CpuMode) -> Decoded {
        decode_cr_access(bytes, mode, false).unwrap_or_else(|e| panic!("{bytes:x?}: {e:?}"))
    }

    #[test]
    fn mov_to_and_from_control_registers() {
        use CpuMode::Long64 as L;
        // mov cr0, rax
        assert_eq!(ok(&[0x0F, 0x22, 0xC0], L), Decoded { access: CrAccess::Write { cr: 0, gpr: 0 }, length: 3 });
        // mov cr4, rax
        assert_eq!(ok(&[0x0F, 0x22, 0xE0], L).access, CrAccess::Write { cr: 4, gpr: 0 });
        // mov cr4, r9
        assert_eq!(ok(&[0x41, 0x0F, 0x22, 0xE1], L), Decoded { access: CrAccess::Write { cr: 4, gpr: 9 }, length: 4 });
        // mov cr8, rcx
        assert_eq!(ok(&[0x44, 0x0F, 0x22, 0xC1], L).access, CrAccess::Write { cr: 8, gpr: 1 });
        // mov rdx, cr3
        assert_eq!(ok(&[0x0F, 0x20, 0xDA], L).access, CrAccess::Read { cr: 3, gpr: 2 });
        // mov cr0, rsp (ModR/M mod bits are ignored: 0x04 decodes as register RSP)
        assert_eq!(ok(&[0x0F, 0x22, 0x04], L).access, CrAccess::Write { cr: 0, gpr: 4 });
        // mov cr0, eax in compatibility mode: 0x41 is INC ECX there, not REX.
        assert_eq!(decode_cr_access(&[0x41, 0x0F, 0x22, 0xC0], CpuMode::Compat32, false), Err(DecodeError::NotCrAccess));
        assert_eq!(ok(&[0x0F, 0x22, 0xC0], CpuMode::Compat32).access, CrAccess::Write { cr: 0, gpr: 0 });
    }

    #[test]
    fn prefixes_are_counted_and_a_rex_before_another_prefix_is_dropped() {
        // 66 2e mov cr4, rbx
        assert_eq!(ok(&[0x66, 0x2E, 0x0F, 0x22, 0xE3], CpuMode::Long64), Decoded { access: CrAccess::Write { cr: 4, gpr: 3 }, length: 5 });
        // REX.B, then 66, then mov cr0, rax: the REX does not apply.
        assert_eq!(ok(&[0x41, 0x66, 0x0F, 0x22, 0xC0], CpuMode::Long64).access, CrAccess::Write { cr: 0, gpr: 0 });
        let mut long = [0x66u8; 16];
        long[13..16].copy_from_slice(&[0x0F, 0x22, 0xC0]);
        assert_eq!(decode_cr_access(&long, CpuMode::Long64, false), Err(DecodeError::TooLong));
    }

    #[test]
    fn lock_means_cr8_only_with_the_amd_alias() {
        // lock mov cr0, rax
        let b = [0xF0, 0x0F, 0x22, 0xC0];
        assert_eq!(decode_cr_access(&b, CpuMode::Long64, false), Err(DecodeError::Lock));
        assert_eq!(decode_cr_access(&b, CpuMode::Long64, true).map(|d| d.access), Ok(CrAccess::Write { cr: 8, gpr: 0 }));
        // lock mov cr4, rax
        assert_eq!(decode_cr_access(&[0xF0, 0x0F, 0x22, 0xE0], CpuMode::Long64, true), Err(DecodeError::Lock));
        // lock clts
        assert_eq!(decode_cr_access(&[0xF0, 0x0F, 0x06], CpuMode::Long64, true), Err(DecodeError::Lock));
    }

    #[test]
    fn clts_and_lmsw_in_register_and_memory_forms() {
        use CpuMode::Long64 as L;
        assert_eq!(ok(&[0x0F, 0x06], L), Decoded { access: CrAccess::Clts, length: 2 });
        // lmsw ax
        assert_eq!(ok(&[0x0F, 0x01, 0xF0], L).access, CrAccess::Lmsw(Operand16::Register(0)));
        // lmsw [rax + rbx*4 + 0x10]
        let d = ok(&[0x0F, 0x01, 0x74, 0x98, 0x10], L);
        let CrAccess::Lmsw(Operand16::Memory(m)) = d.access else { panic!("{d:?}") };
        assert_eq!((m.base, m.index, m.scale, m.displacement, d.length), (Some(0), Some(3), 4, 0x10, 5));
        let mut gprs = [0u64; 16];
        (gprs[0], gprs[3]) = (0x1000, 0x20);
        assert_eq!(effective_address(&m, &gprs, 0, 0), 0x1090);
        // lmsw [rip + 0x100]
        let d = ok(&[0x0F, 0x01, 0x35, 0x00, 0x01, 0x00, 0x00], L);
        let CrAccess::Lmsw(Operand16::Memory(m)) = d.access else { panic!("{d:?}") };
        assert!(m.rip_relative);
        assert_eq!(effective_address(&m, &gprs, 0x5007, 0), 0x5107);
        // fs cs lmsw [rax]: the CS override is a null prefix in 64-bit mode.
        let d = ok(&[0x64, 0x2E, 0x0F, 0x01, 0x30], L);
        let CrAccess::Lmsw(Operand16::Memory(m)) = d.access else { panic!("{d:?}") };
        assert_eq!(m.segment, SegmentReg::Fs);
        // lmsw fs:[r12 - 8]
        let d = ok(&[0x64, 0x41, 0x0F, 0x01, 0x74, 0x24, 0xF8], L);
        let CrAccess::Lmsw(Operand16::Memory(m)) = d.access else { panic!("{d:?}") };
        assert_eq!((m.base, m.index, m.displacement, m.segment), (Some(12), None, -8, SegmentReg::Fs));
        // lmsw [ebp + 8] in compatibility mode uses SS
        let d = ok(&[0x0F, 0x01, 0x75, 0x08], CpuMode::Compat32);
        let CrAccess::Lmsw(Operand16::Memory(m)) = d.access else { panic!("{d:?}") };
        assert_eq!((m.base, m.segment, m.address_bits), (Some(5), SegmentReg::Ss, 32));
        // lmsw [bx + si] with a 16-bit code segment
        let d = ok(&[0x0F, 0x01, 0x30], CpuMode::Compat16);
        let CrAccess::Lmsw(Operand16::Memory(m)) = d.access else { panic!("{d:?}") };
        assert_eq!((m.base, m.index, m.address_bits), (Some(3), Some(6), 16));
        // 0F 01 /7 is INVLPG, not LMSW.
        assert_eq!(decode_cr_access(&[0x0F, 0x01, 0x38], L, false), Err(DecodeError::NotCrAccess));
    }

    #[test]
    fn invalid_control_registers_other_instructions_and_truncation() {
        // mov cr5, rax
        assert_eq!(decode_cr_access(&[0x0F, 0x22, 0xE8], CpuMode::Long64, false), Err(DecodeError::InvalidCr(5)));
        // mov cr9, rax
        assert_eq!(decode_cr_access(&[0x44, 0x0F, 0x22, 0xC8], CpuMode::Long64, false), Err(DecodeError::InvalidCr(9)));
        assert_eq!(decode_cr_access(&[0x90], CpuMode::Long64, false), Err(DecodeError::NotCrAccess));
        let full = [0x64, 0x41, 0x0F, 0x01, 0x74, 0x24, 0xF8];
        for n in 0..full.len() {
            assert_eq!(decode_cr_access(&full[..n], CpuMode::Long64, false), Err(DecodeError::Truncated), "{n} bytes");
        }
    }

    #[test]
    fn no_input_makes_the_decoder_panic() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for mode in [CpuMode::Long64, CpuMode::Compat32, CpuMode::Compat16] {
                    let _ = decode_cr_access(&[a, b], mode, true);
                    let _ = decode_cr_access(&[0x0F, a, b], mode, false);
                    let _ = decode_cr_access(&[0x67, 0x0F, 0x01, a, b], mode, false);
                }
            }
        }
        let mut next = crate::testing::xorshift(0x2545_F491_4F6C_DD1D);
        for _ in 0..100_000 {
            let mut buf = [0u8; 15];
            let mut x = 0;
            for b in buf.iter_mut() {
                x = next();
                *b = x as u8;
            }
            buf[(x as usize >> 8) % 4] = 0x0F;
            if let Ok(d) = decode_cr_access(&buf, CpuMode::Long64, true) {
                assert!(usize::from(d.length) <= MAX_INSN_BYTES);
                if let CrAccess::Lmsw(Operand16::Memory(m)) = d.access {
                    let _ = effective_address(&m, &[u64::MAX; 16], u64::MAX, u64::MAX);
                }
            }
        }
    }
}

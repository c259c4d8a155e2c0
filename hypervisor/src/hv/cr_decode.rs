//! Control-register writes the CPU intercepted without decoding them (AMD SVM without
//! decode assists): the instruction at the guest's RIP is fetched through its page tables,
//! decoded, and the value it would write goes through the same policy as a decoded write.
//! An instruction that cannot be fetched or decoded stops only that domain, with the reason.

use super::{Hypervisor, Next};
use crate::insn::decode::{CpuMode, CrAccess, Operand16, SegmentReg, decode_cr_access, effective_address};
use crate::insn::walk::{GuestPhys, PagingRegs, Unmapped, read_linear};
use crate::mm::physmem::PhysMem;
use crate::platform::Platform;
use crate::sched::DomId;
use crate::vcpu::{Backend, Vcpu, VcpuContext};
use crate::policy::state::{clts_value, lmsw_value};
use guest_abi::vcpu::{EferFlags, SegmentAttrs};

/// A domain's memory as the page walker reads it.
pub(super) struct DomainMemory<'a, B: Backend, M: PhysMem, P: Platform> {
    pub(super) hv: &'a Hypervisor<B, M, P>,
    pub(super) id: DomId,
}

impl<B: Backend, M: PhysMem, P: Platform> GuestPhys for DomainMemory<'_, B, M, P> {
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unmapped> {
        self.hv.read_guest(self.id, gpa, buf).map_err(|_| Unmapped)
    }
}

pub(super) fn mode(c: &VcpuContext) -> CpuMode {
    if c.efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0 && c.cs.flags().contains(SegmentAttrs::LONG) {
        CpuMode::Long64
    } else if c.cs.flags().contains(SegmentAttrs::DEFAULT_BIG) {
        CpuMode::Compat32
    } else {
        CpuMode::Compat16
    }
}

fn segment_base(c: &VcpuContext, s: SegmentReg, mode: CpuMode) -> u64 {
    let seg = match s {
        SegmentReg::Fs => c.fs,
        SegmentReg::Gs => c.gs,
        // In 64-bit mode only FS and GS have a base.
        _ if mode == CpuMode::Long64 => return 0,
        SegmentReg::Es => c.es,
        SegmentReg::Cs => c.cs,
        SegmentReg::Ss => c.ss,
        SegmentReg::Ds => c.ds,
    };
    seg.base
}

/// Why an undecoded write could not be carried out.
enum Failure {
    Fetch(crate::insn::walk::WalkError),
    Decode(crate::insn::decode::DecodeError),
    /// The bytes decode as something other than a write to the intercepted register.
    Mismatch(CrAccess),
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Fetch(e) => write!(f, "instruction fetch failed ({e:?})"),
            Self::Decode(e) => write!(f, "not decodable ({e:?})"),
            Self::Mismatch(a) => write!(f, "decoded as {a:?}"),
        }
    }
}

impl<B: Backend, M: PhysMem, P: Platform> Hypervisor<B, M, P> {
    /// Handles [`crate::vcpu::Exit::ControlRegisterUndecoded`].
    pub(crate) fn undecoded_control_register_write(&mut self, id: DomId, cr: u8) -> Next {
        let Some(ctx) = self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()).map(|v| v.context()) else {
            return Next::Reschedule;
        };
        match self.decode_write(id, cr, &ctx) {
            Ok((value, length)) => {
                if let Some(v) = self.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()) {
                    v.set_instruction_length(u64::from(length));
                }
                self.control_register_write(id, cr, value)
            }
            Err(f) => {
                self.crash(id, format_args!("cannot emulate the write to cr{cr} at rip {:#x}: {f}", ctx.rip));
                Next::Reschedule
            }
        }
    }

    /// The value the instruction at RIP writes to `cr`, and its length.
    fn decode_write(&self, id: DomId, cr: u8, c: &VcpuContext) -> Result<(u64, u8), Failure> {
        let mode = mode(c);
        let paging = PagingRegs { cr0: c.cr0, cr3: c.cr3, cr4: c.cr4, efer: c.efer };
        let mem = DomainMemory { hv: self, id };
        let rip = if mode == CpuMode::Long64 { c.rip } else { c.cs.base.wrapping_add(c.rip) & 0xFFFF_FFFF };
        let mut bytes = [0u8; crate::insn::decode::MAX_INSN_BYTES];
        // Fetch what can be fetched: an instruction may end just before an unmapped page.
        let (got, fetched) = read_linear(&mem, &paging, rip, &mut bytes);
        let d = match decode_cr_access(&bytes[..got], mode, true) {
            Ok(d) => d,
            Err(crate::insn::decode::DecodeError::Truncated) => return Err(fetched.err().map_or(Failure::Decode(crate::insn::decode::DecodeError::Truncated), Failure::Fetch)),
            Err(e) => return Err(Failure::Decode(e)),
        };
        let gprs = [
            c.rax, c.rcx, c.rdx, c.rbx, c.rsp, c.rbp, c.rsi, c.rdi, c.r8, c.r9, c.r10, c.r11, c.r12, c.r13, c.r14, c.r15,
        ];
        let operand_mask = if mode == CpuMode::Long64 { u64::MAX } else { 0xFFFF_FFFF };
        let value = match d.access {
            CrAccess::Write { cr: w, gpr } if w == cr => gprs[usize::from(gpr & 15)] & operand_mask,
            CrAccess::Clts if cr == 0 => clts_value(c.cr0),
            CrAccess::Lmsw(op) if cr == 0 => {
                let source = match op {
                    Operand16::Register(r) => gprs[usize::from(r & 15)],
                    Operand16::Memory(m) => {
                        let next = c.rip.wrapping_add(u64::from(d.length));
                        let mut at = effective_address(&m, &gprs, next, segment_base(c, m.segment, mode));
                        if mode != CpuMode::Long64 {
                            at &= 0xFFFF_FFFF;
                        }
                        let mut w = [0u8; 2];
                        let (_, r) = read_linear(&mem, &paging, at, &mut w);
                        r.map_err(Failure::Fetch)?;
                        u64::from(u16::from_le_bytes(w))
                    }
                };
                lmsw_value(c.cr0, source)
            }
            other => return Err(Failure::Mismatch(other)),
        };
        Ok((value, d.length))
    }
}

//! Byte layouts: the header, record headers and the fixed payloads, field by field in
//! little-endian, independent of how the Rust structs are laid out. Every struct is taken
//! apart with an exhaustive pattern, so a field added to guest-abi fails to compile here
//! until the format says where it goes.

use crate::{Digest, ImageKind, MAX_NAME_BYTES, MAX_RUN_PAGES, PAGE_BYTES};
use guest_abi::saved::{ExtendedContext, FXSAVE_BYTES, SavedState};
use guest_abi::vcpu::{Segment, VcpuContext};

/// Bytes of the image header.
pub const HEADER_BYTES: usize = 64;
/// Bytes of a record header: type, flags, length, reserved, checksum.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Bytes of the MEMORY payload before its pages.
pub const MEMORY_HEADER_BYTES: usize = 16;
/// Longest record payload a reader accepts: a full MEMORY record.
pub const MAX_RECORD_PAYLOAD: usize = MEMORY_HEADER_BYTES + MAX_RUN_PAGES * PAGE_BYTES;
/// DOMAIN payload bytes.
pub const DOMAIN_BYTES: usize = 56;
/// VCPU payload bytes.
pub const VCPU_BYTES: usize = 432;
/// STATE payload bytes.
pub const STATE_BYTES: usize = 624;
/// TEMPLATE_REF payload bytes.
pub const TEMPLATE_REF_BYTES: usize = 80;
/// END payload bytes.
pub const END_BYTES: usize = 48;
/// The part of STATE the content digest covers (see `content.rs`).
pub const CONTENT_STATE_BYTES: usize = 576;

/// Bytes of padding after a payload of `len` bytes (records are 8-byte aligned).
pub const fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Little-endian writer over a fixed buffer.
pub struct Put<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Put<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, at: 0 }
    }
    pub fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn zeros(&mut self, n: usize) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + n) {
            dst.fill(0);
        }
        self.at += n;
    }
    /// Bytes written; equal to the buffer's length when the layout is right.
    pub fn done(&self) -> usize {
        self.at
    }
}

/// Little-endian reader over a buffer whose length the caller checked.
pub struct Get<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Get<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.at..self.at + N) {
            out.copy_from_slice(src);
        }
        self.at += N;
        out
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    pub fn done(&self) -> usize {
        self.at
    }
}

// ---- header ----------------------------------------------------------------------------

/// The fields of the image header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub min_reader: u16,
    /// The raw kind code (validated by the reader after the checksum).
    pub kind: u16,
    pub flags: u32,
}

pub fn encode_header(h: &Header) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    let mut p = Put::new(&mut out);
    p.bytes(&crate::MAGIC);
    p.u16(h.version);
    p.u16(h.min_reader);
    p.u16(h.kind);
    p.u16(0); // reserved
    p.u32(h.flags);
    p.zeros(36); // reserved
    debug_assert_eq!(p.done(), 56);
    let sum = header_checksum(&out);
    out[56..].copy_from_slice(&sum.to_le_bytes());
    out
}

/// The rapidhash v3 secrets of record checksums (seed 0).
pub static RECORD_SECRETS: rapidhash::v3::RapidSecrets = rapidhash::v3::RapidSecrets::seed(0);

/// A record checksum being computed: rapidhash v3 (seed 0) of header bytes 0-15, the
/// payload and the padding, fed in any pieces.
pub fn record_hasher() -> rapidhash::v3::RapidStreamHasherV3<'static> {
    rapidhash::v3::RapidStreamHasherV3::new(&RECORD_SECRETS)
}

/// XXH3-64 of header bytes 0..56.
pub fn header_checksum(raw: &[u8; HEADER_BYTES]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&raw[..56])
}

/// The header's fields and stored checksum (magic not checked here).
pub fn parse_header(raw: &[u8; HEADER_BYTES]) -> (Header, u64) {
    let mut g = Get::new(&raw[8..]);
    let version = g.u16();
    let min_reader = g.u16();
    let kind = g.u16();
    let _reserved = g.u16();
    let flags = g.u32();
    let mut s = Get::new(&raw[56..]);
    (
        Header {
            version,
            min_reader,
            kind,
            flags,
        },
        s.u64(),
    )
}

// ---- record header ---------------------------------------------------------------------

/// A record header as read.
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    pub ty: u32,
    pub flags: u32,
    pub length: u32,
    pub reserved: u32,
    pub checksum: u64,
}

impl RecordHeader {
    pub fn parse(raw: &[u8; RECORD_HEADER_BYTES]) -> Self {
        let mut g = Get::new(raw);
        Self {
            ty: g.u32(),
            flags: g.u32(),
            length: g.u32(),
            reserved: g.u32(),
            checksum: g.u64(),
        }
    }

    /// The 16 bytes the checksum covers.
    pub fn head(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let mut p = Put::new(&mut out);
        p.u32(self.ty);
        p.u32(self.flags);
        p.u32(self.length);
        p.u32(self.reserved);
        out
    }

    pub fn encode(&self) -> [u8; RECORD_HEADER_BYTES] {
        let mut out = [0u8; RECORD_HEADER_BYTES];
        out[..16].copy_from_slice(&self.head());
        out[16..].copy_from_slice(&self.checksum.to_le_bytes());
        out
    }
}

// ---- DOMAIN ------------------------------------------------------------------------------

/// The DOMAIN payload's fields (name still raw).
pub struct DomainWire {
    pub mem_bytes: u64,
    pub quota_pages: u64,
    pub origin_domid: u32,
    pub kind: u16,
    pub name_len: u16,
    pub name: [u8; MAX_NAME_BYTES],
}

pub fn encode_domain(kind: ImageKind, d: &crate::DomainRecord) -> [u8; DOMAIN_BYTES] {
    let mut out = [0u8; DOMAIN_BYTES];
    let mut p = Put::new(&mut out);
    p.u64(d.mem_bytes);
    p.u64(d.quota_pages);
    p.u32(d.origin_domid);
    p.u16(kind.code());
    p.u16(d.name.len() as u16);
    p.bytes(d.name.as_bytes());
    p.zeros(MAX_NAME_BYTES - d.name.len().min(MAX_NAME_BYTES));
    debug_assert_eq!(p.done(), DOMAIN_BYTES);
    out
}

pub fn decode_domain(raw: &[u8; DOMAIN_BYTES]) -> DomainWire {
    let mut g = Get::new(raw);
    let w = DomainWire {
        mem_bytes: g.u64(),
        quota_pages: g.u64(),
        origin_domid: g.u32(),
        kind: g.u16(),
        name_len: g.u16(),
        name: g.array(),
    };
    debug_assert_eq!(g.done(), DOMAIN_BYTES);
    w
}

// ---- TEMPLATE_REF ------------------------------------------------------------------------

pub struct TemplateWire {
    pub digest: Digest,
    pub mem_bytes: u64,
    pub name_len: u32,
    pub reserved: u32,
    pub name: [u8; MAX_NAME_BYTES],
}

pub fn encode_template(t: &crate::TemplateRef) -> [u8; TEMPLATE_REF_BYTES] {
    let mut out = [0u8; TEMPLATE_REF_BYTES];
    let mut p = Put::new(&mut out);
    p.bytes(&t.digest);
    p.u64(t.mem_bytes);
    p.u32(t.name.len() as u32);
    p.u32(0);
    p.bytes(t.name.as_bytes());
    p.zeros(MAX_NAME_BYTES - t.name.len().min(MAX_NAME_BYTES));
    debug_assert_eq!(p.done(), TEMPLATE_REF_BYTES);
    out
}

pub fn decode_template(raw: &[u8; TEMPLATE_REF_BYTES]) -> TemplateWire {
    let mut g = Get::new(raw);
    let w = TemplateWire {
        digest: g.array(),
        mem_bytes: g.u64(),
        name_len: g.u32(),
        reserved: g.u32(),
        name: g.array(),
    };
    debug_assert_eq!(g.done(), TEMPLATE_REF_BYTES);
    w
}

// ---- END ---------------------------------------------------------------------------------

pub struct EndWire {
    pub records: u64,
    pub pages: u64,
    pub digest: Digest,
}

pub fn encode_end(e: &EndWire) -> [u8; END_BYTES] {
    let mut out = [0u8; END_BYTES];
    let mut p = Put::new(&mut out);
    p.u64(e.records);
    p.u64(e.pages);
    p.bytes(&e.digest);
    debug_assert_eq!(p.done(), END_BYTES);
    out
}

pub fn decode_end(raw: &[u8; END_BYTES]) -> EndWire {
    let mut g = Get::new(raw);
    EndWire {
        records: g.u64(),
        pages: g.u64(),
        digest: g.array(),
    }
}

// ---- MEMORY ------------------------------------------------------------------------------

pub fn encode_memory_header(first_gfn: u64, pages: u32) -> [u8; MEMORY_HEADER_BYTES] {
    let mut out = [0u8; MEMORY_HEADER_BYTES];
    let mut p = Put::new(&mut out);
    p.u64(first_gfn);
    p.u32(pages);
    p.u32(0);
    out
}

/// first_gfn, page_count, reserved.
pub fn decode_memory_header(raw: &[u8; MEMORY_HEADER_BYTES]) -> (u64, u32, u32) {
    let mut g = Get::new(raw);
    (g.u64(), g.u32(), g.u32())
}

// ---- VCPU --------------------------------------------------------------------------------

fn put_segment(p: &mut Put<'_>, s: &Segment) {
    let Segment {
        selector,
        attrs,
        limit,
        base,
    } = *s;
    p.u16(selector);
    p.u16(attrs);
    p.u32(limit);
    p.u64(base);
}

fn get_segment(g: &mut Get<'_>) -> Segment {
    Segment {
        selector: g.u16(),
        attrs: g.u16(),
        limit: g.u32(),
        base: g.u64(),
    }
}

pub fn encode_vcpu(v: &VcpuContext) -> [u8; VCPU_BYTES] {
    let VcpuContext {
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi,
        rbp,
        rsp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        rip,
        rflags,
        cr0,
        cr2,
        cr3,
        cr4,
        efer,
        pat,
        dr7,
        cs,
        ds,
        es,
        fs,
        gs,
        ss,
        tr,
        ldtr,
        gdtr_base,
        gdtr_limit,
        idtr_limit,
        idtr_base,
        star,
        lstar,
        cstar,
        sfmask,
        kernel_gs_base,
        sysenter_cs,
        sysenter_esp,
        sysenter_eip,
        cr8,
        tsc_aux,
    } = *v;
    let mut out = [0u8; VCPU_BYTES];
    let mut p = Put::new(&mut out);
    for r in [
        rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags,
        cr0, cr2, cr3, cr4, efer, pat, dr7,
    ] {
        p.u64(r);
    }
    for s in [cs, ds, es, fs, gs, ss, tr, ldtr] {
        put_segment(&mut p, &s);
    }
    p.u64(gdtr_base);
    p.u32(gdtr_limit);
    p.u32(idtr_limit);
    p.u64(idtr_base);
    for r in [
        star,
        lstar,
        cstar,
        sfmask,
        kernel_gs_base,
        sysenter_cs,
        sysenter_esp,
        sysenter_eip,
        cr8,
        tsc_aux,
    ] {
        p.u64(r);
    }
    debug_assert_eq!(p.done(), VCPU_BYTES);
    out
}

pub fn decode_vcpu(raw: &[u8; VCPU_BYTES]) -> VcpuContext {
    let mut g = Get::new(raw);
    // Struct-literal fields are evaluated in the order written, which is the wire order.
    let v = VcpuContext {
        rax: g.u64(),
        rbx: g.u64(),
        rcx: g.u64(),
        rdx: g.u64(),
        rsi: g.u64(),
        rdi: g.u64(),
        rbp: g.u64(),
        rsp: g.u64(),
        r8: g.u64(),
        r9: g.u64(),
        r10: g.u64(),
        r11: g.u64(),
        r12: g.u64(),
        r13: g.u64(),
        r14: g.u64(),
        r15: g.u64(),
        rip: g.u64(),
        rflags: g.u64(),
        cr0: g.u64(),
        cr2: g.u64(),
        cr3: g.u64(),
        cr4: g.u64(),
        efer: g.u64(),
        pat: g.u64(),
        dr7: g.u64(),
        cs: get_segment(&mut g),
        ds: get_segment(&mut g),
        es: get_segment(&mut g),
        fs: get_segment(&mut g),
        gs: get_segment(&mut g),
        ss: get_segment(&mut g),
        tr: get_segment(&mut g),
        ldtr: get_segment(&mut g),
        gdtr_base: g.u64(),
        gdtr_limit: g.u32(),
        idtr_limit: g.u32(),
        idtr_base: g.u64(),
        star: g.u64(),
        lstar: g.u64(),
        cstar: g.u64(),
        sfmask: g.u64(),
        kernel_gs_base: g.u64(),
        sysenter_cs: g.u64(),
        sysenter_esp: g.u64(),
        sysenter_eip: g.u64(),
        cr8: g.u64(),
        tsc_aux: g.u64(),
    };
    debug_assert_eq!(g.done(), VCPU_BYTES);
    v
}

// ---- STATE -------------------------------------------------------------------------------

/// The STATE payload. Its first [`CONTENT_STATE_BYTES`] bytes are the part the content digest
/// covers (extended registers and event/block state), the rest is clock and identity.
pub fn encode_state(s: &SavedState) -> [u8; STATE_BYTES] {
    let SavedState {
        extended: ExtendedContext { fxsave, dr, dr6 },
        events_pending,
        upcall_vector,
        upcall_in_service,
        blocked,
        has_deadline,
        block_remaining_ns,
        guest_time_ns,
        guest_tsc,
        domid,
        parent,
        clone_index,
        reserved,
        generation,
    } = *s;
    let mut out = [0u8; STATE_BYTES];
    let mut p = Put::new(&mut out);
    p.bytes(&fxsave);
    for r in dr {
        p.u64(r);
    }
    p.u64(dr6);
    p.u64(events_pending);
    p.u32(upcall_vector);
    p.u32(upcall_in_service);
    p.u32(blocked);
    p.u32(has_deadline);
    debug_assert_eq!(p.done(), CONTENT_STATE_BYTES);
    p.u64(block_remaining_ns);
    p.u64(guest_time_ns);
    p.u64(guest_tsc);
    p.u32(domid);
    p.u32(parent);
    p.u32(clone_index);
    p.u32(reserved);
    p.u64(generation);
    debug_assert_eq!(p.done(), STATE_BYTES);
    out
}

pub fn decode_state(raw: &[u8; STATE_BYTES]) -> SavedState {
    let mut g = Get::new(raw);
    let s = SavedState {
        extended: ExtendedContext {
            fxsave: g.array::<FXSAVE_BYTES>(),
            dr: [g.u64(), g.u64(), g.u64(), g.u64()],
            dr6: g.u64(),
        },
        events_pending: g.u64(),
        upcall_vector: g.u32(),
        upcall_in_service: g.u32(),
        blocked: g.u32(),
        has_deadline: g.u32(),
        block_remaining_ns: g.u64(),
        guest_time_ns: g.u64(),
        guest_tsc: g.u64(),
        domid: g.u32(),
        parent: g.u32(),
        clone_index: g.u32(),
        reserved: g.u32(),
        generation: g.u64(),
    };
    debug_assert_eq!(g.done(), STATE_BYTES);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_fields_land_at_their_documented_offsets() {
        let v = VcpuContext {
            rax: 0x1111,
            rip: 0x2222,
            dr7: 0x3333,
            cs: Segment {
                selector: 0x08,
                attrs: 0x0A9B,
                limit: 0xFFFF_FFFF,
                base: 0x4444,
            },
            ldtr: Segment {
                selector: 0x55,
                attrs: 0,
                limit: 0x66,
                base: 0x77,
            },
            gdtr_base: 0x88,
            gdtr_limit: 0x99,
            idtr_limit: 0xAA,
            idtr_base: 0xBB,
            star: 0xCC,
            tsc_aux: 0xDD,
            ..VcpuContext::default()
        };
        let raw = encode_vcpu(&v);
        let at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap());
        assert_eq!(at(0), 0x1111);
        assert_eq!(at(16 * 8), 0x2222);
        assert_eq!(at(24 * 8), 0x3333);
        assert_eq!(
            &raw[200..208],
            &[0x08, 0, 0x9B, 0x0A, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        assert_eq!(at(208), 0x4444);
        assert_eq!(&raw[312..320], &[0x55, 0, 0, 0, 0x66, 0, 0, 0]);
        assert_eq!(at(320), 0x77);
        assert_eq!(at(328), 0x88);
        assert_eq!(&raw[336..344], &[0x99, 0, 0, 0, 0xAA, 0, 0, 0]);
        assert_eq!(at(344), 0xBB);
        assert_eq!(at(352), 0xCC);
        assert_eq!(at(424), 0xDD);
        assert_eq!(decode_vcpu(&raw), v);
    }

    #[test]
    fn state_fields_land_at_their_documented_offsets() {
        let mut s = SavedState::default();
        s.extended.fxsave[0] = 0x7F;
        s.extended.fxsave[511] = 0x80;
        s.extended.dr = [1, 2, 3, 4];
        s.extended.dr6 = 0xFFFF_0FF0;
        s.events_pending = 5;
        s.upcall_vector = 0x40;
        s.has_deadline = 1;
        s.block_remaining_ns = 6;
        s.guest_time_ns = 7;
        s.guest_tsc = 8;
        s.domid = 9;
        s.parent = 10;
        s.clone_index = 11;
        s.reserved = 12;
        s.generation = 13;
        let raw = encode_state(&s);
        let at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap());
        assert_eq!((raw[0], raw[511]), (0x7F, 0x80));
        assert_eq!((at(512), at(536), at(544), at(552)), (1, 4, 0xFFFF_0FF0, 5));
        assert_eq!(
            &raw[560..576],
            &[0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!((at(576), at(584), at(592)), (6, 7, 8));
        assert_eq!(
            &raw[600..616],
            &[9, 0, 0, 0, 10, 0, 0, 0, 11, 0, 0, 0, 12, 0, 0, 0]
        );
        assert_eq!(at(616), 13);
        assert_eq!(decode_state(&raw), s);
    }

    #[test]
    fn header_round_trips_and_its_checksum_covers_bytes_0_to_56() {
        let h = Header {
            version: 1,
            min_reader: 1,
            kind: 3,
            flags: 0,
        };
        let raw = encode_header(&h);
        assert_eq!(&raw[..8], b"COWVIMG\0");
        let (back, sum) = parse_header(&raw);
        assert_eq!(back, h);
        assert_eq!(sum, header_checksum(&raw));
    }
}

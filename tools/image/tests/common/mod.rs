//! Shared by the integration tests: sample domains, a whole-image decode, and a raw image
//! editor written from docs/image-format.md (not from the crate's code) that takes an image
//! apart into records and puts it back together with fresh checksums and digest, so a test
//! can break exactly one rule.
#![allow(dead_code)]

use core::convert::Infallible;
use domimage::*;
use guest_abi::saved::SavedState;
use guest_abi::vcpu::VcpuContext;

pub type Err = DecodeError<Infallible>;

pub const NO_LIMIT: Limits = Limits {
    max_mem_bytes: u64::MAX,
};

/// A deterministic xorshift64* generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

pub fn vcpu(seed: u64) -> VcpuContext {
    let mut v = VcpuContext::long_mode(0x10_0000 + seed, 0x20_0000, 0x3000, 7, 0x1000);
    v.rax = 0xAAAA_0000 + seed;
    v.r15 = u64::MAX - seed;
    v.lstar = 0xFFFF_8000_0000_1234;
    v.tsc_aux = 3;
    v.cr8 = 2;
    v
}

pub fn state(seed: u64) -> SavedState {
    let mut s = SavedState::default();
    for (i, b) in s.extended.fxsave.iter_mut().enumerate() {
        *b = (i as u64 * 7 + seed) as u8;
    }
    s.extended.dr = [1, 2, 3, seed];
    s.extended.dr6 = 0xFFFF_0FF0;
    s.events_pending = 0b101;
    s.upcall_vector = 0x40;
    s.blocked = 1;
    s.has_deadline = 1;
    s.block_remaining_ns = 5_000_000;
    s.guest_time_ns = 123_456_789 + seed;
    s.guest_tsc = 987_654_321;
    s.domid = 3;
    s.parent = guest_abi::saved::NO_PARENT;
    s.generation = 9;
    s
}

pub fn domain(name: &str, mem_bytes: u64) -> DomainRecord {
    DomainRecord {
        name: name.into(),
        mem_bytes,
        quota_pages: mem_bytes / 4096,
        origin_domid: 3,
    }
}

/// A page whose bytes depend on `gfn` and `seed` (never all zero).
pub fn page(gfn: u64, seed: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_BYTES];
    let mut r = Rng(gfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed ^ 1);
    r.fill(&mut p[..64]);
    p[100] = 1;
    p[4095] = gfn as u8 | 1;
    p
}

/// Write an image with `pages` (gfn, bytes) passed one call per page, in the order given.
pub fn encode(
    kind: ImageKind,
    mem_bytes: u64,
    template: Option<&TemplateRef>,
    notes: &[&str],
    pages: &[(u64, Vec<u8>)],
) -> Vec<u8> {
    let mut enc = Encoder::new(
        Vec::new(),
        kind,
        &domain("dom", mem_bytes),
        &vcpu(1),
        &state(1),
        template,
    )
    .unwrap();
    for n in notes {
        enc.note(n).unwrap();
    }
    for (gfn, p) in pages {
        enc.memory(*gfn, p).unwrap();
    }
    enc.finish().unwrap().0
}

pub fn template_ref(mem_bytes: u64) -> TemplateRef {
    TemplateRef {
        digest: [0x5A; 32],
        mem_bytes,
        name: "tmpl".into(),
    }
}

/// A small image of each kind with pages and notes.
pub fn samples() -> Vec<Vec<u8>> {
    let t = template_ref(64 * 4096);
    vec![
        encode(
            ImageKind::Domain,
            64 * 4096,
            None,
            &["saved from d3"],
            &[(0, page(0, 1)), (5, page(5, 1)), (6, page(6, 1))],
        ),
        encode(
            ImageKind::Template,
            32 * 4096,
            None,
            &[],
            &[(31, page(31, 2))],
        ),
        encode(
            ImageKind::Delta,
            64 * 4096,
            Some(&t),
            &["delta", "two"],
            &[(1, page(1, 3)), (2, vec![0; 4096]), (40, page(40, 3))],
        ),
        encode(ImageKind::Domain, 16 * 4096, None, &[], &[]),
    ]
}

/// Decode a whole image: the prologue and every run as (first_gfn, bytes).
pub fn decode(
    image: &[u8],
    limits: Limits,
) -> Result<(Prologue, Vec<(u64, Vec<u8>)>, Digest), Err> {
    let (mut dec, pro) = Decoder::new(image, limits)?;
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    let mut runs = Vec::new();
    while let Some((gfn, n)) = dec.next_run(&mut buf)? {
        runs.push((gfn, buf[..n * PAGE_BYTES].to_vec()));
    }
    let digest = dec.digest().unwrap();
    Ok((pro, runs, digest))
}

pub fn decode_err(image: &[u8]) -> Err {
    match decode(image, NO_LIMIT) {
        Ok(_) => panic!("image accepted"),
        Err(e) => e,
    }
}

// ---- raw image editing, from the spec ---------------------------------------------------

pub const DOMAIN: u32 = 1;
pub const VCPU: u32 = 2;
pub const STATE: u32 = 3;
pub const TEMPLATE_REF: u32 = 4;
pub const MEMORY: u32 = 5;
pub const NOTE: u32 = 6;
pub const END: u32 = 7;

#[derive(Clone, Debug)]
pub struct Raw {
    pub ty: u32,
    pub flags: u32,
    pub reserved: u32,
    pub payload: Vec<u8>,
}

impl Raw {
    pub fn new(ty: u32, mandatory: bool, payload: Vec<u8>) -> Self {
        Raw {
            ty,
            flags: mandatory as u32,
            reserved: 0,
            payload,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RawImage {
    pub header: [u8; 64],
    /// Every record, END last.
    pub records: Vec<Raw>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Take a well-formed image apart.
pub fn parse(image: &[u8]) -> RawImage {
    let header: [u8; 64] = image[..64].try_into().unwrap();
    let mut records = Vec::new();
    let mut at = 64;
    while at < image.len() {
        let (ty, flags, len, reserved) = (
            u32_at(image, at),
            u32_at(image, at + 4),
            u32_at(image, at + 8) as usize,
            u32_at(image, at + 12),
        );
        let payload = image[at + 24..at + 24 + len].to_vec();
        records.push(Raw {
            ty,
            flags,
            reserved,
            payload,
        });
        at += 24 + len + (8 - len % 8) % 8;
    }
    RawImage { header, records }
}

/// Where each record starts in an image (header offset), END included.
pub fn record_offsets(image: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 64;
    while at < image.len() {
        out.push(at);
        let len = u32_at(image, at + 8) as usize;
        at += 24 + len + (8 - len % 8) % 8;
    }
    out
}

pub fn record_bytes(r: &Raw) -> Vec<u8> {
    let pad = (8 - r.payload.len() % 8) % 8;
    let mut head = Vec::new();
    head.extend_from_slice(&r.ty.to_le_bytes());
    head.extend_from_slice(&r.flags.to_le_bytes());
    head.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
    head.extend_from_slice(&r.reserved.to_le_bytes());
    let mut body = r.payload.clone();
    body.extend(std::iter::repeat_n(0u8, pad));
    let mut sumd = head.clone();
    sumd.extend_from_slice(&body);
    let sum = rapidhash::v3::rapidhash_v3_seeded(&sumd, &rapidhash::v3::RapidSecrets::seed(0));
    let mut out = head;
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Put the header (its checksum recomputed) and the records back together. The last record
/// must be END; its counts and digest are recomputed from the records before it.
pub fn build(raw: &RawImage) -> Vec<u8> {
    let mut header = raw.header;
    let sum = xxhash_rust::xxh3::xxh3_64(&header[..56]);
    header[56..].copy_from_slice(&sum.to_le_bytes());
    let mut out = header.to_vec();
    let (end, body) = raw.records.split_last().unwrap();
    let mut pages = 0u64;
    // The digest covers the header and every record's 24-byte header (with its checksum).
    let mut digested = header.to_vec();
    for r in body {
        if r.ty == MEMORY && r.payload.len() >= 16 {
            pages += u32_at(&r.payload, 8) as u64;
        }
        let bytes = record_bytes(r);
        digested.extend_from_slice(&bytes[..24]);
        out.extend_from_slice(&bytes);
    }
    let digest = blake3::hash(&digested);
    let mut end = end.clone();
    if end.ty == END && end.payload.len() == 48 {
        end.payload[..8].copy_from_slice(&(body.len() as u64).to_le_bytes());
        end.payload[8..16].copy_from_slice(&pages.to_le_bytes());
        end.payload[16..48].copy_from_slice(digest.as_bytes());
    }
    out.extend_from_slice(&record_bytes(&end));
    out
}

/// A MEMORY payload.
pub fn memory_payload(first_gfn: u64, pages: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&first_gfn.to_le_bytes());
    p.extend_from_slice(&(pages.len() as u32).to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    for pg in pages {
        p.extend_from_slice(pg);
    }
    p
}

/// Index of the first record of type `ty`.
pub fn find(raw: &RawImage, ty: u32) -> usize {
    raw.records.iter().position(|r| r.ty == ty).unwrap()
}

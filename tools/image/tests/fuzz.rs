//! Mutation fuzzing with a seeded PRNG: valid images cut, bit-flipped, with fields set to huge
//! values, record types changed, and structural rules broken with every checksum and the
//! digest recomputed. Every variant of those must be refused, none may panic, and decoding
//! any of them may not allocate more than a fixed bound: a counting global allocator (this
//! test binary only, one test, per thread) measures the peak.
//!
//! `cargo test --release -p domimage --test fuzz -- --nocapture` prints the counts.

mod common;

use common::*;
use domimage::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

// ---- counting allocator ------------------------------------------------------------------

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    // try_with: the thread may be tearing down its locals.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `f` and return its result and the most heap it held at once (bytes).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, i64) {
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let r = f();
    TRACKING.set(false);
    (r, PEAK.get())
}

// ---- the run -----------------------------------------------------------------------------

/// Most heap decoding one image may take (the caller's page buffer not included): the 4 KiB
/// buffer, the prologue's strings and at most 16 notes of 1 KiB, with room to spare.
const DECODE_PEAK_LIMIT: i64 = 64 << 10;
const LIMITS: Limits = Limits {
    max_mem_bytes: 1 << 30,
};

#[derive(Default)]
struct Tally {
    must_refuse: u64,
    may_accept: u64,
    accepted: u64,
    by_kind: BTreeMap<&'static str, u64>,
    max_peak: i64,
}

impl Tally {
    fn check(&mut self, what: &str, image: &[u8], must_refuse: bool, buf: &mut [u8]) {
        let run = catch_unwind(AssertUnwindSafe(|| {
            peak_of(|| -> Result<u64, Err> {
                let (mut dec, _pro) = Decoder::new(image, LIMITS)?;
                let mut pages = 0;
                while let Some((_, n)) = dec.next_run(buf)? {
                    pages += n as u64;
                }
                Ok(pages)
            })
        }));
        let (result, peak) = match run {
            Ok(r) => r,
            Err(p) => {
                TRACKING.set(false);
                eprintln!("decoder panicked on variant: {what}");
                resume_unwind(p)
            }
        };
        assert!(
            peak <= DECODE_PEAK_LIMIT,
            "variant {what}: decoding allocated {peak} bytes at once"
        );
        self.max_peak = self.max_peak.max(peak);
        if must_refuse {
            self.must_refuse += 1;
        } else {
            self.may_accept += 1;
        }
        match result {
            Ok(_) if must_refuse => panic!("variant accepted: {what}"),
            Ok(_) => self.accepted += 1,
            Err(e) => *self.by_kind.entry(e.code()).or_default() += 1,
        }
    }
}

/// Byte ranges of the structural fields: the header, every record header and END.
fn structural_offsets(image: &[u8]) -> Vec<usize> {
    let mut v: Vec<usize> = (0..64).collect();
    let offs = record_offsets(image);
    for &o in &offs {
        v.extend(o..o + 24);
    }
    let end = *offs.last().unwrap();
    v.extend(end + 24..image.len());
    v
}

fn images() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = samples()
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("sample{i}"), s))
        .collect();
    // One with unknown optional records mixed in and the maximum number of notes.
    let mut raw = parse(&out[0].1);
    raw.records
        .insert(1, Raw::new(0x4000, false, vec![0xAB; 300]));
    let m = find(&raw, MEMORY);
    raw.records
        .insert(m + 1, Raw::new(0x4001, false, b"x".to_vec()));
    for i in 0..MAX_NOTES - 1 {
        raw.records
            .insert(2, Raw::new(NOTE, false, format!("note {i}").into_bytes()));
    }
    out.push(("optional".into(), build(&raw)));
    out
}

/// One full 256-page record: few variants (it is 1 MiB).
fn big_image() -> Vec<u8> {
    let mut run = Vec::new();
    for g in 0..MAX_RUN_PAGES as u64 {
        run.extend_from_slice(&page(g, 3));
    }
    encode(ImageKind::Domain, 1 << 20, None, &[], &[(0, run)])
}

const HUGE32: [u32; 6] = [
    u32::MAX,
    0x8000_0000,
    0x7FFF_FFFF,
    0x0010_0011,
    0x0010_0010 + 8,
    0x1_0000,
];
const HUGE64: [u64; 6] = [
    u64::MAX,
    u64::MAX / 4096,
    1 << 63,
    1 << 52,
    0x1_0000_0000,
    u64::MAX - 255,
];

#[test]
fn mutated_images_are_refused_without_panics_or_unbounded_allocation() {
    let started = Instant::now();
    let mut rng = Rng(0x0C0F_FEE0_D15E_A5E5);
    let mut t = Tally::default();
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    let images = images();
    for (name, image) in &images {
        // The unmutated image decodes.
        let before = t.accepted;
        t.check(name, image, false, &mut buf);
        assert_eq!(t.accepted, before + 1, "{name} refused");
        let offs = record_offsets(image);
        let structural = structural_offsets(image);

        // 1. Truncation at every record boundary, inside every record header, and at random
        //    offsets; and one byte of garbage appended.
        for &o in &offs {
            for cut in [o, o + 1, o + 8, o + 16, o + 23, o + 24, o + 25] {
                t.check(
                    &format!("{name} cut at {cut}"),
                    &image[..cut.min(image.len() - 1)],
                    true,
                    &mut buf,
                );
            }
        }
        for cut in 0..64 {
            t.check(
                &format!("{name} cut at {cut}"),
                &image[..cut],
                true,
                &mut buf,
            );
        }
        for _ in 0..150 {
            let cut = rng.below(image.len() as u64) as usize;
            t.check(
                &format!("{name} cut at {cut}"),
                &image[..cut],
                true,
                &mut buf,
            );
        }
        let mut longer = image.clone();
        longer.push(rng.next() as u8);
        t.check(
            &format!("{name} one byte appended"),
            &longer,
            true,
            &mut buf,
        );

        // 2. Single bit flips anywhere, and in structural fields.
        for i in 0..1200 {
            let at = if i % 3 == 0 {
                structural[rng.below(structural.len() as u64) as usize]
            } else {
                rng.below(image.len() as u64) as usize
            };
            let bit = rng.below(8);
            let mut v = image.clone();
            v[at] ^= 1 << bit;
            t.check(
                &format!("{name} bit {bit} of byte {at}"),
                &v,
                true,
                &mut buf,
            );
        }

        // 3. Multi-bit flips (2-16 bits), sometimes within one byte, sometimes spread.
        for _ in 0..400 {
            let mut v = image.clone();
            let n = 2 + rng.below(15);
            let base = rng.below(image.len() as u64) as usize;
            for k in 0..n {
                let at = if k % 2 == 0 {
                    base
                } else {
                    rng.below(image.len() as u64) as usize
                };
                v[at] ^= 1 << rng.below(8);
            }
            if v != *image {
                t.check(
                    &format!("{name} {n} bits flipped near {base}"),
                    &v,
                    true,
                    &mut buf,
                );
            }
        }

        // 4. Length, type and flag fields set to other values in place (checksums left as
        //    they are); MEMORY page count and gfn likewise.
        for (ri, &o) in offs.iter().enumerate() {
            for h in HUGE32 {
                let mut v = image.clone();
                v[o + 8..o + 12].copy_from_slice(&h.to_le_bytes());
                t.check(
                    &format!("{name} record {ri} length {h:#x}"),
                    &v,
                    true,
                    &mut buf,
                );
            }
            for ty in [0u32, 1, 2, 3, 4, 5, 6, 7, 8, 0xFFFF_FFFF, 0x8000_0000] {
                let mut v = image.clone();
                v[o..o + 4].copy_from_slice(&ty.to_le_bytes());
                if v != *image {
                    t.check(
                        &format!("{name} record {ri} type {ty:#x}"),
                        &v,
                        true,
                        &mut buf,
                    );
                }
            }
            let mut v = image.clone();
            v[o + 4] ^= 1;
            t.check(
                &format!("{name} record {ri} mandatory bit flipped"),
                &v,
                true,
                &mut buf,
            );
            let raw = parse(image);
            if raw.records[ri].ty == MEMORY {
                for h in HUGE32 {
                    let mut v = image.clone();
                    v[o + 24 + 8..o + 24 + 12].copy_from_slice(&h.to_le_bytes());
                    t.check(
                        &format!("{name} record {ri} page_count {h:#x}"),
                        &v,
                        true,
                        &mut buf,
                    );
                }
                for h in HUGE64 {
                    let mut v = image.clone();
                    v[o + 24..o + 24 + 8].copy_from_slice(&h.to_le_bytes());
                    t.check(
                        &format!("{name} record {ri} first_gfn {h:#x}"),
                        &v,
                        true,
                        &mut buf,
                    );
                }
            }
        }

        // 5. Rules broken with every checksum and the digest recomputed: only the rule
        //    checks can refuse these.
        let raw = parse(image);
        let n = raw.records.len();
        let resealed = |t: &mut Tally, what: String, f: &dyn Fn(&mut RawImage), buf: &mut [u8]| {
            let mut r = raw.clone();
            f(&mut r);
            t.check(&format!("{name} resealed: {what}"), &build(&r), true, buf);
        };
        for ri in 0..n {
            let rty = raw.records[ri].ty;
            if rty == MEMORY {
                for h in HUGE32.iter().copied().chain([0, 2, 257]) {
                    resealed(
                        &mut t,
                        format!("record {ri} page_count {h:#x}"),
                        &|r| r.records[ri].payload[8..12].copy_from_slice(&h.to_le_bytes()),
                        &mut buf,
                    );
                }
                for h in HUGE64 {
                    resealed(
                        &mut t,
                        format!("record {ri} first_gfn {h:#x}"),
                        &|r| r.records[ri].payload[..8].copy_from_slice(&h.to_le_bytes()),
                        &mut buf,
                    );
                }
                resealed(
                    &mut t,
                    format!("record {ri} duplicated"),
                    &|r| {
                        let d = r.records[ri].clone();
                        r.records.insert(ri + 1, d);
                    },
                    &mut buf,
                );
            }
            // Type changed to each known type and to unknown mandatory ones.
            for ty in [
                DOMAIN,
                VCPU,
                STATE,
                TEMPLATE_REF,
                MEMORY,
                NOTE,
                END,
                0,
                9,
                0x8000_0000,
                u32::MAX,
            ] {
                if ty == rty {
                    continue;
                }
                // A NOTE turned into an unknown type is an unknown record: valid if optional.
                let is_unknown = record_name(ty).is_none();
                resealed(
                    &mut t,
                    format!("record {ri} type {rty} -> {ty:#x}"),
                    &|r| {
                        r.records[ri].ty = ty;
                        if is_unknown {
                            r.records[ri].flags |= 1;
                        }
                    },
                    &mut buf,
                );
            }
            // Removing any record but a NOTE or an optional one breaks a rule.
            if raw.records[ri].flags & 1 != 0 && rty != MEMORY {
                resealed(
                    &mut t,
                    format!("record {ri} removed"),
                    &|r| {
                        r.records.remove(ri);
                    },
                    &mut buf,
                );
            }
            // Reserved bits.
            resealed(
                &mut t,
                format!("record {ri} flag bit"),
                &|r| r.records[ri].flags |= 1 << (1 + (ri % 31)),
                &mut buf,
            );
            resealed(
                &mut t,
                format!("record {ri} reserved"),
                &|r| r.records[ri].reserved = 1 + ri as u32,
                &mut buf,
            );
            // Lengths off by a little (fixed-size records and MEMORY).
            if rty != NOTE && raw.records[ri].flags & 1 != 0 {
                for d in [-1isize, 1, -8, 8, 4096] {
                    resealed(
                        &mut t,
                        format!("record {ri} length {d:+}"),
                        &|r| {
                            let p = &mut r.records[ri].payload;
                            let len = (p.len() as isize + d).max(0) as usize;
                            p.resize(len, 0);
                        },
                        &mut buf,
                    );
                }
            }
        }
        // DOMAIN fields.
        for h in HUGE64
            .iter()
            .copied()
            .chain([0, 4095, 4097, (1 << 30) + 4096])
        {
            resealed(
                &mut t,
                format!("mem_bytes {h:#x}"),
                &|r| r.records[0].payload[..8].copy_from_slice(&h.to_le_bytes()),
                &mut buf,
            );
        }
        for h in [0u16, 33, 0xFFFF, 0x8000] {
            resealed(
                &mut t,
                format!("name_len {h:#x}"),
                &|r| r.records[0].payload[22..24].copy_from_slice(&h.to_le_bytes()),
                &mut buf,
            );
        }
        for k in [0u16, 4, 0xFFFF] {
            resealed(
                &mut t,
                format!("domain kind {k}"),
                &|r| r.records[0].payload[20..22].copy_from_slice(&k.to_le_bytes()),
                &mut buf,
            );
        }
        // END counts, with END's checksum fixed (`build` would recompute the counts).
        let end_at = offs[n - 1];
        for (field, at) in [("records", 0), ("pages", 8)] {
            for h in HUGE64.iter().copied().chain([0, 1]) {
                let mut end = parse(image).records.pop().unwrap();
                if u64_at(&end.payload, at) == h {
                    continue;
                }
                end.payload[at..at + 8].copy_from_slice(&h.to_le_bytes());
                let mut v = image[..end_at].to_vec();
                v.extend_from_slice(&record_bytes(&end));
                t.check(&format!("{name} END {field} {h:#x}"), &v, true, &mut buf);
            }
        }
        // Header: versions outside the window, unknown kinds and flags, resealed.
        for (ver, min) in [
            (0u16, 0u16),
            (1, 0),
            (1, 2),
            (2, 2),
            (0xFFFF, 0xFFFF),
            (0, 1),
        ] {
            resealed(
                &mut t,
                format!("version {ver} min_reader {min}"),
                &|r| {
                    r.header[8..10].copy_from_slice(&ver.to_le_bytes());
                    r.header[10..12].copy_from_slice(&min.to_le_bytes());
                },
                &mut buf,
            );
        }
        for bit in 0..16 {
            resealed(
                &mut t,
                format!("header flag {bit}"),
                &|r| r.header[16 + bit / 8] |= 1 << (bit % 8),
                &mut buf,
            );
        }

        // 6. Content changed and its record checksum fixed, END left as it was: the image
        //    digest must catch it (unless a rule check does first).
        let original_end = &image[offs[n - 1]..];
        for _ in 0..200 {
            let mut r = raw.clone();
            let ri = rng.below(n as u64 - 1) as usize;
            let p = &mut r.records[ri].payload;
            if p.is_empty() {
                continue;
            }
            let at = rng.below(p.len() as u64) as usize;
            p[at] ^= 1 + rng.below(255) as u8;
            let mut v = build(&r);
            v.truncate(offs[n - 1]);
            v.extend_from_slice(original_end);
            t.check(
                &format!("{name} record {ri} byte {at} changed, checksum fixed, digest not"),
                &v,
                true,
                &mut buf,
            );
        }

        // 7. Resealed random content changes: may decode (a changed page is still a valid
        //    image) but must not panic or allocate beyond the bound.
        for _ in 0..200 {
            let mut r = raw.clone();
            let ri = rng.below(n as u64) as usize;
            let p = &mut r.records[ri].payload;
            if !p.is_empty() {
                let at = rng.below(p.len() as u64) as usize;
                p[at] = rng.next() as u8;
            }
            t.check(
                &format!("{name} resealed random byte in record {ri}"),
                &build(&r),
                false,
                &mut buf,
            );
        }
    }

    // 8. Random record sequences with valid checksums and digest: mostly nonsense.
    for i in 0..300 {
        let mut raw = parse(&images[0].1);
        let count = rng.below(8) as usize;
        raw.records
            .truncate(1 + rng.below(raw.records.len() as u64 - 1) as usize);
        for _ in 0..count {
            let ty =
                [DOMAIN, VCPU, STATE, TEMPLATE_REF, MEMORY, NOTE, 9, 0x100][rng.below(8) as usize];
            let mut payload = vec![0u8; rng.below(700) as usize];
            rng.fill(&mut payload);
            raw.records.push(Raw::new(ty, rng.below(2) == 0, payload));
        }
        raw.records.push(Raw::new(END, true, vec![0; 48]));
        t.check(
            &format!("random sequence {i}"),
            &build(&raw),
            false,
            &mut buf,
        );
    }
    // And pure garbage behind a valid header.
    for i in 0..100 {
        let mut v = images[0].1[..64].to_vec();
        let mut tail = vec![0u8; rng.below(3000) as usize];
        rng.fill(&mut tail);
        v.extend_from_slice(&tail);
        t.check(&format!("garbage {i}"), &v, true, &mut buf);
    }

    // 9. The 1 MiB record: a few cuts and flips.
    let big = big_image();
    t.check("big", &big, false, &mut buf);
    for _ in 0..20 {
        let mut v = big.clone();
        let at = rng.below(big.len() as u64) as usize;
        v[at] ^= 1 << rng.below(8);
        t.check(&format!("big bit flip at {at}"), &v, true, &mut buf);
        let cut = rng.below(big.len() as u64) as usize;
        t.check(&format!("big cut at {cut}"), &big[..cut], true, &mut buf);
    }

    let refused: u64 = t.by_kind.values().sum();
    println!(
        "fuzz: {} variants ({} must-refuse, all refused; {} resealed content or random, {} of them decoded) in {:.2?}",
        t.must_refuse + t.may_accept,
        t.must_refuse,
        t.may_accept,
        t.accepted,
        started.elapsed()
    );
    println!(
        "fuzz: peak decoder heap {} bytes (bound {DECODE_PEAK_LIMIT}), page buffer {} bytes",
        t.max_peak,
        buf.len()
    );
    println!("fuzz: {refused} refusals by kind:");
    for (k, n) in &t.by_kind {
        println!("  {k:20} {n}");
    }
    assert!(t.must_refuse >= 10_000, "only {} variants", t.must_refuse);
}

fn record_name(ty: u32) -> Option<&'static str> {
    domimage::record::name(ty)
}

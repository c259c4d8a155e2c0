//! Random access to memory: `index_runs` lists the same runs, page count and digest as the
//! sequential decoder, `read_run` hands out the same bytes as `next_run`, and between them
//! they refuse every image the sequential decoder refuses (the index alone refuses everything
//! but a corrupt MEMORY record, which `read_run` refuses), without panicking on any input.

mod common;

use common::*;
use domimage::*;

/// The index of an image, from the start `Decoder::new` gives.
fn index_of(image: &[u8]) -> Result<RunIndex, Err> {
    let (dec, _) = Decoder::new(image, NO_LIMIT)?;
    let start = dec.index_start().expect("before the first next_run");
    index_runs(&mut &image[..], &start)
}

/// The start from `clean`, the walk over `image`: the index alone over a changed image.
fn index_over(clean: &[u8], image: &[u8]) -> Result<RunIndex, Err> {
    let (dec, _) = Decoder::new(clean, NO_LIMIT).unwrap();
    index_runs(&mut &image[..], &dec.index_start().unwrap())
}

/// Memory runs as (first_gfn, bytes).
type Runs = Vec<(u64, Vec<u8>)>;

/// Every run of `idx` read from `image`.
fn read_all(image: &[u8], idx: &RunIndex) -> Result<Runs, Err> {
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    let mut out = Vec::new();
    for e in &idx.runs {
        read_run(&mut &image[..], e, &mut buf)?;
        out.push((e.first_gfn, buf[..e.pages as usize * PAGE_BYTES].to_vec()));
    }
    Ok(out)
}

/// The whole image by random access: the index, then every run.
fn random_access(image: &[u8]) -> Result<(Runs, Digest, u64), Err> {
    let idx = index_of(image)?;
    Ok((read_all(image, &idx)?, idx.digest, idx.pages))
}

fn platform_image() -> Vec<u8> {
    let mem = 64 * 4096;
    let t = template_ref(mem);
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Delta,
        &domain("pc", mem),
        &vcpu(4),
        &state(4),
        Some(&t),
    )
    .unwrap();
    enc.platform(&[0xC3; 468]).unwrap();
    enc.note("a pc domain").unwrap();
    enc.memory(3, &page(3, 5)).unwrap();
    enc.memory(10, &[0u8; PAGE_BYTES]).unwrap();
    enc.finish().unwrap().0
}

/// A template whose memory has zero pages inside runs and more than one full run: runs of 256
/// pages (1 MiB records), then runs split at zero pages.
fn big_template() -> Vec<u8> {
    let mem = 600 * 4096;
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Template,
        &domain("big", mem),
        &vcpu(5),
        &state(5),
        None,
    )
    .unwrap();
    let mut run = Vec::new();
    for g in 0..256u64 {
        run.extend_from_slice(&page(g, 6));
    }
    enc.memory(0, &run).unwrap();
    let mut run = Vec::new();
    for g in 256..400u64 {
        if g % 37 == 0 || (300..310).contains(&g) {
            run.extend_from_slice(&[0u8; PAGE_BYTES]);
        } else {
            run.extend_from_slice(&page(g, 6));
        }
    }
    enc.memory(256, &run).unwrap();
    enc.memory(599, &page(599, 6)).unwrap();
    enc.finish().unwrap().0
}

/// An optional record of a type this version does not define, between two MEMORY records.
fn with_unknown_between_memory() -> Vec<u8> {
    let mut raw = parse(&samples()[0]);
    let i = find(&raw, MEMORY);
    raw.records
        .insert(i + 1, Raw::new(0x7777, false, b"from the future".to_vec()));
    build(&raw)
}

fn images() -> Vec<Vec<u8>> {
    let mut v = samples();
    v.push(platform_image());
    v.push(big_template());
    v.push(with_unknown_between_memory());
    v
}

#[test]
fn the_index_lists_the_runs_pages_and_digest_sequential_decoding_yields() {
    for (n, image) in images().iter().enumerate() {
        let (_, runs, digest) = decode(image, NO_LIMIT).unwrap();
        let idx = index_of(image).unwrap();
        assert_eq!(idx.digest, digest, "image {n}");
        let want: Vec<(u64, u32)> = runs
            .iter()
            .map(|(g, b)| (*g, (b.len() / PAGE_BYTES) as u32))
            .collect();
        let got: Vec<(u64, u32)> = idx.runs.iter().map(|e| (e.first_gfn, e.pages)).collect();
        assert_eq!(got, want, "image {n}");
        assert_eq!(idx.pages, want.iter().map(|r| r.1 as u64).sum::<u64>());
        // Each entry names its record: where it is, its length and checksum, its number.
        let raw = parse(image);
        let offsets = record_offsets(image);
        let memory: Vec<usize> = (0..raw.records.len())
            .filter(|&i| raw.records[i].ty == MEMORY)
            .collect();
        assert_eq!(memory.len(), idx.runs.len());
        for (e, &i) in idx.runs.iter().zip(&memory) {
            assert_eq!(e.record, i as u32);
            assert_eq!(e.offset, offsets[i] as u64);
            assert_eq!(e.length as usize, raw.records[i].payload.len());
            assert_eq!(e.checksum, u64_at(image, offsets[i] + 16));
        }
    }
    // The empty domain: no runs, and its digest still checked.
    let empty = &samples()[3];
    let idx = index_of(empty).unwrap();
    assert_eq!((idx.runs.len(), idx.pages), (0, 0));
}

#[test]
fn read_run_returns_the_bytes_next_run_does() {
    for (n, image) in images().iter().enumerate() {
        let (_, runs, digest) = decode(image, NO_LIMIT).unwrap();
        assert_eq!(random_access(image).unwrap().0, runs, "image {n}");
        assert_eq!(random_access(image).unwrap().1, digest);
    }
    // A buffer of exactly the run's pages is enough, one page fewer is not.
    let image = big_template();
    let idx = index_of(&image).unwrap();
    let e = idx.runs[0];
    assert_eq!(e.pages, 256);
    let mut exact = vec![0u8; e.pages as usize * PAGE_BYTES];
    read_run(&mut &image[..], &e, &mut exact).unwrap();
    let mut short = vec![0u8; exact.len() - PAGE_BYTES];
    assert_eq!(
        read_run(&mut &image[..], &e, &mut short),
        Err(Err::BufferTooSmall)
    );
}

#[test]
fn index_start_is_given_only_before_the_first_next_run_and_covers_the_prologue() {
    let image = &samples()[0];
    let (mut dec, _) = Decoder::new(&image[..], NO_LIMIT).unwrap();
    let start = dec.index_start().unwrap();
    let raw = parse(image);
    let first = find(&raw, MEMORY);
    assert_eq!(start.offset(), record_offsets(image)[first] as u64);
    assert_eq!(start.records(), first as u64);
    assert_eq!(
        (start.kind(), start.mem_bytes()),
        (ImageKind::Domain, 64 * 4096)
    );
    // A refused buffer consumes nothing; a run does.
    assert_eq!(dec.next_run(&mut [0u8; 8]), Err(Err::BufferTooSmall));
    assert!(dec.index_start().is_some());
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    dec.next_run(&mut buf).unwrap().unwrap();
    assert!(dec.index_start().is_none());
    // The same start works for an image without memory (END pending, not in the digest) and
    // can be used more than once.
    let empty = &samples()[3];
    let (dec, _) = Decoder::new(&empty[..], NO_LIMIT).unwrap();
    let start = dec.index_start().unwrap();
    let want = decode(empty, NO_LIMIT).unwrap().2;
    for _ in 0..2 {
        assert_eq!(index_runs(&mut &empty[..], &start).unwrap().digest, want);
    }
    // And the sequential decoder, which now digests the pending header later, still agrees
    // with the encoder.
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Domain,
        &domain("d", 8 * 4096),
        &vcpu(1),
        &state(1),
        None,
    )
    .unwrap();
    enc.memory(2, &page(2, 9)).unwrap();
    let (img, written, _) = enc.finish().unwrap();
    assert_eq!(decode(&img, NO_LIMIT).unwrap().2, written);
    assert_eq!(index_of(&img).unwrap().digest, written);
}

#[test]
fn find_returns_the_run_containing_a_gfn_or_where_one_would_go() {
    // Runs [1, 4), [7, 8), [10, 12) in a 16-page domain.
    let mem = 16 * 4096;
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Domain,
        &domain("d", mem),
        &vcpu(1),
        &state(1),
        None,
    )
    .unwrap();
    for (g, n) in [(1u64, 3u64), (7, 1), (10, 2)] {
        let run: Vec<u8> = (g..g + n).flat_map(|x| page(x, 1)).collect();
        enc.memory(g, &run).unwrap();
    }
    let image = enc.finish().unwrap().0;
    let idx = index_of(&image).unwrap();
    assert_eq!(idx.runs.len(), 3);
    for gfn in 0..20u64 {
        let want = match idx
            .runs
            .iter()
            .position(|r| (r.first_gfn..r.first_gfn + r.pages as u64).contains(&gfn))
        {
            Some(i) => Ok(i),
            None => Err(idx.runs.iter().filter(|r| r.first_gfn < gfn).count()),
        };
        assert_eq!(idx.find(gfn), want, "gfn {gfn}");
    }
    assert_eq!(idx.find(u64::MAX), Err(3));
    let none = RunIndex {
        runs: Vec::new(),
        digest: [0; 32],
        pages: 0,
    };
    assert_eq!(none.find(5), Err(0));
}

#[test]
fn a_flipped_bit_in_a_page_passes_the_index_and_fails_read_run_for_that_run_only() {
    let image = big_template();
    let clean = index_of(&image).unwrap();
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    for (k, e) in clean.runs.iter().enumerate() {
        for at in [40usize, 40 + 4095, e.length as usize + 23] {
            let mut bad = image.clone();
            bad[e.offset as usize + at] ^= 0x10;
            let idx = index_of(&bad).unwrap();
            assert_eq!(idx, clean);
            assert_eq!(
                read_run(&mut &bad[..], e, &mut buf),
                Err(Err::RecordChecksum {
                    record: e.record,
                    offset: e.offset
                }),
                "run {k} byte {at}"
            );
            for other in clean.runs.iter().filter(|o| o != &e) {
                read_run(&mut &bad[..], other, &mut buf).unwrap();
            }
        }
    }
}

#[test]
fn a_flipped_bit_in_any_record_header_after_the_prologue_is_refused_by_the_index() {
    for image in images() {
        let (dec, _) = Decoder::new(&image[..], NO_LIMIT).unwrap();
        let start = dec.index_start().unwrap();
        for &at in record_offsets(&image)
            .iter()
            .filter(|&&o| o as u64 >= start.offset())
        {
            for bit in 0..24 * 8 {
                let mut bad = image.clone();
                bad[at + bit / 8] ^= 1 << (bit % 8);
                let r = index_runs(&mut &bad[..], &start);
                assert!(r.is_err(), "record at {at} bit {bit}: {r:?}");
                // And the sequential decoder refuses it too (big_template: too slow here).
                if image.len() < 64 << 10 {
                    assert!(decode(&bad, NO_LIMIT).is_err());
                }
            }
        }
    }
}

#[test]
fn a_changed_memory_header_is_refused_by_read_run_even_where_the_index_accepts_it() {
    // The memory header is not in the digest: a flipped first_gfn the order rules allow gets
    // into the index, and read_run refuses the run.
    let image = &samples()[2]; // delta: runs 1, 2 and 40 of 64 pages
    let clean = index_of(image).unwrap();
    let e = clean.runs[2];
    assert_eq!(e.first_gfn, 40);
    let mut bad = image.clone();
    bad[e.offset as usize + 24] ^= 1; // first_gfn 40 -> 41
    let idx = index_of(&bad).unwrap();
    assert_eq!(idx.runs[2].first_gfn, 41);
    assert_eq!(idx.find(41), Ok(2));
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    let refused = Err(Err::RecordChecksum {
        record: e.record,
        offset: e.offset,
    });
    assert_eq!(read_run(&mut &bad[..], &idx.runs[2], &mut buf), refused);
    // Every bit of first_gfn, count and reserved of every run: refused by one or the other.
    for image in images() {
        let clean = index_of(&image).unwrap();
        for (k, e) in clean.runs.iter().enumerate() {
            for bit in 0..16 * 8 {
                let mut bad = image.clone();
                bad[e.offset as usize + 24 + bit / 8] ^= 1 << (bit % 8);
                if let Ok(idx) = index_of(&bad) {
                    // The same records, so entry k is the changed one.
                    assert_eq!(idx.runs[k].offset, e.offset);
                    let r = read_run(&mut &bad[..], &idx.runs[k], &mut buf);
                    assert!(r.is_err(), "run at {} bit {bit}", e.offset);
                }
            }
        }
    }
    // An entry that does not match the image (the image changed under the index) is refused.
    let image = &samples()[0];
    let idx = index_of(image).unwrap();
    let mut moved = idx.runs[1];
    moved.first_gfn += 1;
    assert!(matches!(
        read_run(&mut &image[..], &moved, &mut buf),
        Err(Err::RecordChecksum { .. })
    ));
    let mut other = idx.runs[1];
    other.checksum ^= 1;
    assert_eq!(
        read_run(&mut &image[..], &other, &mut buf),
        Err(Err::DigestMismatch)
    );
    let mut swapped = idx.runs[1];
    swapped.offset = idx.runs[0].offset;
    assert_eq!(
        read_run(&mut &image[..], &swapped, &mut buf),
        Err(Err::DigestMismatch)
    );
    let mut impossible = idx.runs[1];
    impossible.pages = 0;
    assert_eq!(
        read_run(&mut &image[..], &impossible, &mut buf),
        Err(Err::BadLength { ty: MEMORY })
    );
}

/// `image` with its END payload changed by `f` and END's record checksum recomputed.
fn reseal_end(image: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let raw = parse(image);
    let at = *record_offsets(image).last().unwrap();
    let mut end = raw.records.last().unwrap().clone();
    assert_eq!(end.ty, END);
    f(&mut end.payload);
    let mut out = image[..at].to_vec();
    out.extend_from_slice(&record_bytes(&end));
    out
}

#[test]
fn a_tampered_end_is_refused() {
    for image in images() {
        let end_at = *record_offsets(&image).last().unwrap();
        let end_index = parse(&image).records.len() as u32 - 1;
        // The digest changed, END's checksum fixed up to match.
        let bad = reseal_end(&image, |p| p[16] ^= 1);
        assert_eq!(index_of(&bad), Err(Err::DigestMismatch));
        assert_eq!(decode_err(&bad), Err::DigestMismatch);
        // The digest changed and END's checksum left: the checksum catches it first.
        let mut bad = image.clone();
        bad[end_at + 24 + 31] ^= 0x80;
        assert_eq!(
            index_of(&bad),
            Err(Err::RecordChecksum {
                record: end_index,
                offset: end_at as u64
            })
        );
        // The counts.
        assert_eq!(
            index_of(&reseal_end(&image, |p| p[0] ^= 1)),
            Err(Err::CountMismatch)
        );
        assert_eq!(
            index_of(&reseal_end(&image, |p| p[8] ^= 1)),
            Err(Err::CountMismatch)
        );
        // A byte after END.
        let mut long = image.clone();
        long.push(0);
        assert_eq!(index_of(&long), Err(Err::TrailingBytes));
    }
}

#[test]
fn truncating_the_image_anywhere_is_refused_by_the_index_and_inside_a_run_by_read_run() {
    for image in images() {
        if image.len() > 64 << 10 {
            continue; // big_template: same code paths, a thousand times the cuts
        }
        let idx = index_of(&image).unwrap();
        let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
        for cut in 0..image.len() {
            let short = &image[..cut];
            let r = index_over(&image, short);
            assert!(matches!(r, Err(Err::Truncated { .. })), "cut {cut}: {r:?}");
        }
        // read_run: every cut through a run's headers and around its end, every 61st between.
        for e in &idx.runs {
            let (start, end) = (
                e.offset as usize,
                (e.offset + 24 + e.length as u64) as usize,
            );
            let cuts = (start.saturating_sub(8)..start + 48)
                .chain((start..end).step_by(61))
                .chain(end - 8..=end + 8);
            for cut in cuts.filter(|&c| c <= image.len()) {
                let r = read_run(&mut &image[..cut], e, &mut buf);
                if cut < end {
                    assert!(matches!(r, Err(Err::Truncated { .. })), "cut {cut}: {r:?}");
                } else {
                    assert_eq!(r, Ok(()));
                }
            }
        }
    }
    // The big one at a few places: in the middle of a 1 MiB run, at its end, inside END.
    let image = big_template();
    let idx = index_of(&image).unwrap();
    let e = idx.runs[0];
    for cut in [
        e.offset as usize + 24 + 500_000,
        (e.offset + 24 + e.length as u64) as usize,
        image.len() - 1,
    ] {
        assert!(matches!(
            index_over(&image, &image[..cut]),
            Err(Err::Truncated { .. })
        ));
    }
}

#[test]
fn the_index_refuses_what_the_sequential_decoder_refuses_after_memory_with_the_same_error() {
    // Resealed images (every checksum and the digest valid) that break a rule after the first
    // MEMORY record.
    let image = &samples()[0]; // domain: NOTE, then runs 0, 5-6
    let raw = parse(image);
    let first = find(&raw, MEMORY);
    let after = |f: &dyn Fn(&mut Vec<Raw>)| {
        let mut r = raw.clone();
        f(&mut r.records);
        build(&r)
    };
    let copy = |ty: u32| {
        let i = find(&raw, ty);
        raw.records[i].clone()
    };
    let variants: Vec<(&str, Vec<u8>)> = vec![
        (
            "note after memory",
            after(&|r| r.insert(first + 1, copy(NOTE))),
        ),
        (
            "domain after memory",
            after(&|r| r.insert(first + 1, copy(DOMAIN))),
        ),
        (
            "vcpu after memory",
            after(&|r| r.insert(first + 1, copy(VCPU))),
        ),
        (
            "state after memory",
            after(&|r| r.insert(first + 1, copy(STATE))),
        ),
        (
            "template ref in a domain image",
            after(&|r| r.insert(first + 1, Raw::new(TEMPLATE_REF, true, vec![0; 80]))),
        ),
        (
            "platform after memory",
            after(&|r| r.insert(first + 1, Raw::new(8, false, vec![1; 10]))),
        ),
        (
            "unknown mandatory",
            after(&|r| r.insert(first + 1, Raw::new(0x7777, true, vec![1; 3]))),
        ),
        (
            "unknown with reserved flags",
            after(&|r| {
                let mut u = Raw::new(0x7777, false, vec![]);
                u.flags = 4;
                r.insert(first + 1, u)
            }),
        ),
        (
            "memory with reserved flags",
            after(&|r| r[first].flags |= 2),
        ),
        (
            "memory with reserved field",
            after(&|r| r[first].reserved = 1),
        ),
        (
            "memory header reserved",
            after(&|r| r[first].payload[12] = 1),
        ),
        (
            "runs not ascending",
            after(&|r| {
                let m = r.remove(first);
                r.insert(first + 1, m)
            }),
        ),
        (
            "overlapping runs",
            after(&|r| r[first + 1].payload[..8].copy_from_slice(&0u64.to_le_bytes())),
        ),
        (
            "run out of range",
            after(&|r| r[first + 1].payload[..8].copy_from_slice(&64u64.to_le_bytes())),
        ),
        (
            "gfn overflow",
            after(&|r| r[first + 1].payload[..8].copy_from_slice(&u64::MAX.to_le_bytes())),
        ),
        ("count 0", after(&|r| r[first].payload[8..12].fill(0))),
        ("count above length", after(&|r| r[first].payload[8] = 2)),
        (
            "memory of 15 bytes",
            after(&|r| r[first].payload.truncate(15)),
        ),
        (
            "memory not whole pages",
            after(&|r| r[first].payload.truncate(16 + 100)),
        ),
        (
            "memory without pages",
            after(&|r| r[first].payload.truncate(16)),
        ),
        (
            "memory of 257 pages",
            after(&|r| {
                let m = memory_payload(0, &vec![page(0, 1); 257]);
                r[first].payload = m;
            }),
        ),
        (
            "end too short",
            after(&|r| r.last_mut().unwrap().payload.truncate(40)),
        ),
        (
            "end padding",
            after(&|r| {
                let e = r.last_mut().unwrap();
                e.payload.push(0);
            }),
        ),
        (
            "end reserved",
            after(&|r| r.last_mut().unwrap().reserved = 1),
        ),
    ];
    for (what, bad) in &variants {
        let seq = decode_err(bad);
        let ra = random_access(bad);
        assert_eq!(ra.as_ref().err(), Some(&seq), "{what}");
        // The start comes from the prologue, which these do not change.
        assert_eq!(index_over(image, bad).err(), Some(seq), "{what}");
    }
    // Non-zero padding of an optional record after memory, checksum fixed: Reserved. The raw
    // editor writes zero padding, so patch the bytes and recompute the checksum by hand.
    let img = with_unknown_between_memory();
    let raw = parse(&img);
    let i = find(&raw, 0x7777);
    let at = record_offsets(&img)[i];
    let len = raw.records[i].payload.len();
    assert_ne!(len % 8, 0);
    let mut bad = img.clone();
    bad[at + 24 + len] = 1;
    let mut sumd = bad[at..at + 16].to_vec();
    sumd.extend_from_slice(&bad[at + 24..at + 24 + len + (8 - len % 8)]);
    let sum = rapidhash::v3::rapidhash_v3_seeded(&sumd, &rapidhash::v3::RapidSecrets::seed(0));
    bad[at + 16..at + 24].copy_from_slice(&sum.to_le_bytes());
    assert_eq!(decode_err(&bad), Err::Reserved { ty: 0x7777 });
    assert_eq!(index_of(&bad), Err(Err::Reserved { ty: 0x7777 }));
}

#[test]
fn a_corrupt_optional_record_after_memory_is_refused_by_the_index() {
    // The index reads and checksums every non-MEMORY record, skipped ones included.
    let image = with_unknown_between_memory();
    let raw = parse(&image);
    let i = find(&raw, 0x7777);
    let at = record_offsets(&image)[i];
    let mut bad = image.clone();
    bad[at + 24 + 3] ^= 1;
    let want = Err::RecordChecksum {
        record: i as u32,
        offset: at as u64,
    };
    assert_eq!(index_of(&bad), Err(want.clone()));
    assert_eq!(decode_err(&bad), want);
    // Optional and longer than the 4 KiB scratch: streamed through it, and still checked.
    let mut raw = parse(&samples()[0]);
    let first = find(&raw, MEMORY);
    raw.records
        .insert(first + 1, Raw::new(0x7777, false, vec![0xAB; 10_001]));
    let image = build(&raw);
    let (_, runs, digest) = decode(&image, NO_LIMIT).unwrap();
    assert_eq!(random_access(&image).unwrap().0, runs);
    assert_eq!(index_of(&image).unwrap().digest, digest);
    let at = record_offsets(&image)[first + 1];
    for off in [24, 24 + 4096, 24 + 10_000] {
        let mut bad = image.clone();
        bad[at + off] ^= 1;
        assert!(matches!(index_of(&bad), Err(Err::RecordChecksum { .. })));
    }
}

/// A source that hands out at most 7 bytes a read and fails at `fail_at` if set.
struct Trickle<'a> {
    image: &'a [u8],
    fail_at: Option<u64>,
}

#[derive(Debug, PartialEq)]
struct Broken;

impl ReadAt for Trickle<'_> {
    type Error = Broken;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Broken> {
        if self.fail_at.is_some_and(|f| offset >= f) {
            return Err(Broken);
        }
        let n = buf.len().min(7);
        let mut s = self.image;
        s.read_at(offset, &mut buf[..n]).map_err(|e| match e {})
    }
}

#[test]
fn short_reads_are_continued_and_a_failing_source_is_reported() {
    let image = big_template();
    let (dec, _) = Decoder::new(&image[..], NO_LIMIT).unwrap();
    let start = dec.index_start().unwrap();
    let mut t = Trickle {
        image: &image,
        fail_at: None,
    };
    let idx = index_runs(&mut t, &start).unwrap();
    assert_eq!(idx, index_of(&image).unwrap());
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    let mut want = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    for e in &idx.runs {
        read_run(&mut t, e, &mut buf).unwrap();
        read_run(&mut &image[..], e, &mut want).unwrap();
        assert_eq!(buf, want);
    }
    // A Vec is a source too.
    let mut v = image.clone();
    assert_eq!(index_runs(&mut v, &start).unwrap(), idx);
    // The source's error comes back as it is, from the walk and from a run.
    let mut t = Trickle {
        image: &image,
        fail_at: Some(idx.runs[1].offset + 3),
    };
    assert_eq!(index_runs(&mut t, &start), Err(DecodeError::Source(Broken)));
    assert_eq!(
        read_run(&mut t, &idx.runs[1], &mut buf),
        Err(DecodeError::Source(Broken))
    );
    read_run(&mut t, &idx.runs[0], &mut buf).unwrap();
}

#[test]
fn random_mutations_and_truncations_never_panic_and_agree_with_the_sequential_decoder() {
    // Whatever the change, random access (index, then every run) accepts exactly what the
    // sequential decoder accepts, with the same runs and digest.
    let mut images = samples();
    images.push(platform_image());
    images.push(with_unknown_between_memory());
    let mut rng = Rng(0x1D3A_5EED);
    let (mut accepted, mut index_only) = (0u32, 0u32);
    for round in 0..6000u32 {
        let image = &images[round as usize % images.len()];
        // Where the prologue ends: the first MEMORY record, or END.
        let first = parse(image)
            .records
            .iter()
            .position(|r| r.ty == MEMORY || r.ty == END)
            .unwrap();
        let prologue = record_offsets(image)[first];
        let mut bad = image.clone();
        let offsets = record_offsets(image);
        match rng.below(6) {
            0 => {
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] = rng.next() as u8;
            }
            1 => {
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] ^= 1 << rng.below(8);
            }
            2 => bad.truncate(rng.below(bad.len() as u64) as usize),
            3 => {
                // A record header's field set to a random (often huge) value.
                let rec = offsets[rng.below(offsets.len() as u64) as usize];
                let field = rec + 4 * rng.below(4) as usize;
                bad[field..field + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
            }
            4 => {
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] ^= 1 << rng.below(8);
                bad.truncate(rng.below(bad.len() as u64 + 1) as usize);
            }
            _ => {
                // Near the end, where END and the last run are.
                let back = 1 + rng.below(200.min(bad.len() as u64 - 1)) as usize;
                let at = bad.len() - back;
                bad[at] ^= 1 << rng.below(8);
            }
        }
        let seq = decode(&bad, NO_LIMIT);
        let ra = random_access(&bad);
        match (&seq, &ra) {
            (Ok((_, runs, digest)), Ok((ra_runs, ra_digest, _))) => {
                assert_eq!((runs, digest), (ra_runs, ra_digest), "round {round}");
                accepted += 1;
            }
            (Err(_), Err(_)) => {}
            _ => panic!(
                "round {round}: sequential {:?}, random access {:?}",
                seq.err(),
                ra.err()
            ),
        }
        // The index alone over the changed bytes, from the clean prologue: never panics, and
        // accepts only what differs in MEMORY payloads (which read_run then refuses).
        let same_prologue = bad.get(..prologue) == Some(&image[..prologue]);
        if let Ok(idx) = index_over(image, &bad)
            && seq.is_err()
            && same_prologue
        {
            index_only += 1;
            assert!(read_all(&bad, &idx).is_err(), "round {round}");
        }
    }
    // The mix made some of each (`-- --nocapture` prints the counts).
    eprintln!("random access: {accepted} accepted, {index_only} passed the index alone");
    assert!(accepted > 0 && index_only > 0, "{accepted} {index_only}");
}

// The incremental walk: `IndexWalker`.

/// The start `Decoder::new` gives for `image`.
fn start_of(image: &[u8]) -> IndexStart {
    let (dec, _) = Decoder::new(image, NO_LIMIT).unwrap();
    dec.index_start().unwrap()
}

/// A source that records every read it is asked for: (offset, bytes asked).
struct Counting<'a> {
    image: &'a [u8],
    reads: Vec<(u64, usize)>,
}

impl<'a> Counting<'a> {
    fn new(image: &'a [u8]) -> Self {
        Counting {
            image,
            reads: Vec::new(),
        }
    }
    /// One past the last byte any read asked for (0 before the first read).
    fn reach(&self) -> u64 {
        self.reads
            .iter()
            .map(|&(o, n)| o + n as u64)
            .max()
            .unwrap_or(0)
    }
}

impl ReadAt for Counting<'_> {
    type Error = core::convert::Infallible;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.reads.push((offset, buf.len()));
        let mut s = self.image;
        s.read_at(offset, buf)
    }
}

/// A 16-page domain with runs [1, 4), [7, 8), [10, 12), a NOTE before memory and an optional
/// record of an unknown type between the second and third run.
fn gaps_image() -> Vec<u8> {
    let mem = 16 * 4096;
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Domain,
        &domain("gaps", mem),
        &vcpu(2),
        &state(2),
        None,
    )
    .unwrap();
    enc.note("runs with gaps").unwrap();
    for (g, n) in [(1u64, 3u64), (7, 1), (10, 2)] {
        let run: Vec<u8> = (g..g + n).flat_map(|x| page(x, 3)).collect();
        enc.memory(g, &run).unwrap();
    }
    let mut raw = parse(&enc.finish().unwrap().0);
    let third = (0..raw.records.len())
        .filter(|&i| raw.records[i].ty == MEMORY)
        .nth(2)
        .unwrap();
    raw.records
        .insert(third, Raw::new(0x7777, false, b"skip me".to_vec()));
    build(&raw)
}

/// `runs` single-page runs at the even gfns from 0, in a domain of twice that many pages.
fn many_runs_image(runs: u64) -> Vec<u8> {
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Domain,
        &domain("many", 2 * runs * 4096),
        &vcpu(3),
        &state(3),
        None,
    )
    .unwrap();
    for k in 0..runs {
        enc.memory(2 * k, &page(2 * k, 4)).unwrap();
    }
    enc.finish().unwrap().0
}

/// How far a walk to `gfn` may read: through the record and memory headers of the first run
/// that ends above `gfn`, or through END (and the one byte after, which must not be there)
/// if none does. And how many runs it indexed by then.
fn walk_limit(image: &[u8], idx: &RunIndex, gfn: u64) -> (u64, usize) {
    match idx
        .runs
        .iter()
        .position(|r| r.first_gfn + r.pages as u64 > gfn)
    {
        Some(k) => (idx.runs[k].offset + 40, k + 1),
        None => (image.len() as u64 + 1, idx.runs.len()),
    }
}

fn all_images() -> Vec<Vec<u8>> {
    let mut v = images();
    v.push(gaps_image());
    v.push(many_runs_image(40));
    v
}

#[test]
fn stepping_one_record_at_a_time_builds_the_index_index_runs_does_without_reading_a_page() {
    for (n, image) in all_images().iter().enumerate() {
        let start = start_of(image);
        let idx = index_of(image).unwrap();
        let raw = parse(image);
        let mut w = IndexWalker::new(&start);
        assert_eq!((w.runs().len(), w.pages(), w.covered_gfns()), (0, 0, 0));
        assert_eq!((w.is_complete(), w.digest()), (false, None));
        let mut src = Counting::new(image);
        for r in &raw.records[start.records() as usize..] {
            let (before, covered) = (w.runs().len(), w.covered_gfns());
            assert!(w.clone().into_index().is_none(), "image {n}");
            let step = w.step(&mut src).unwrap();
            match r.ty {
                MEMORY => {
                    assert_eq!(w.runs(), &idx.runs[..before + 1], "image {n}");
                    let e = idx.runs[before];
                    assert_eq!(step, WalkStep::Run(e));
                    assert_eq!(w.covered_gfns(), e.first_gfn + e.pages as u64);
                }
                END => assert_eq!(step, WalkStep::End(idx.digest), "image {n}"),
                _ => {
                    assert_eq!(step, WalkStep::Skipped, "image {n}");
                    assert_eq!((w.runs().len(), w.covered_gfns()), (before, covered));
                }
            }
            assert!(w.covered_gfns() >= covered);
            assert_eq!(w.is_complete(), r.ty == END);
            let pages: u64 = w.runs().iter().map(|e| e.pages as u64).sum();
            assert_eq!(w.pages(), pages);
        }
        assert_eq!(w.digest(), Some(idx.digest));
        assert_eq!(w.pages(), idx.pages);
        assert_eq!(w.covered_gfns(), start.mem_bytes() / 4096);
        // No read touched a page.
        for e in &idx.runs {
            let pages = e.offset + 40..e.offset + 24 + e.length as u64;
            for &(o, len) in &src.reads {
                let read = o..o + len as u64;
                assert!(
                    read.end <= pages.start || read.start >= pages.end,
                    "image {n}: read {read:?} in the pages of the run at {}",
                    e.offset
                );
            }
        }
        // Complete: stepping again or walking anywhere reads nothing and answers the same.
        let reads = src.reads.len();
        assert_eq!(w.step(&mut src), Ok(WalkStep::End(idx.digest)));
        for gfn in [0, 1, 7, 599, u64::MAX] {
            assert_eq!(w.walk_to(&mut src, gfn), Ok(idx.find(gfn)));
        }
        assert_eq!(src.reads.len(), reads);
        assert_eq!(w.into_index(), Some(idx));
    }
}

#[test]
fn walk_to_answers_as_the_complete_index_and_reads_no_record_past_the_first_beyond_the_gfn() {
    for image in [gaps_image(), many_runs_image(40), samples()[2].clone()] {
        let start = start_of(&image);
        let idx = index_of(&image).unwrap();
        let mem_pages = start.mem_bytes() / 4096;
        for gfn in (0..mem_pages + 3).chain([u64::MAX]) {
            let mut w = IndexWalker::new(&start);
            let mut src = Counting::new(&image);
            assert_eq!(w.walk_to(&mut src, gfn), Ok(idx.find(gfn)), "gfn {gfn}");
            let (limit, runs) = walk_limit(&image, &idx, gfn);
            assert_eq!(src.reach(), limit, "gfn {gfn}");
            assert!(src.reads.iter().all(|&(o, _)| o >= start.offset()));
            assert_eq!(w.runs(), &idx.runs[..runs]);
            assert_eq!(w.is_complete(), limit > image.len() as u64, "gfn {gfn}");
            assert!(w.covered_gfns() > gfn || w.is_complete());
            // Every gfn the walk now covers is answered without another read, and as the
            // complete index answers it.
            let reads = src.reads.len();
            for g in 0..w.covered_gfns() {
                assert_eq!(
                    w.walk_to(&mut src, g),
                    Ok(idx.find(g)),
                    "gfn {gfn}, then {g}"
                );
            }
            assert_eq!(src.reads.len(), reads);
            // And walking on from there ends with the same index.
            while !matches!(w.step(&mut src), Ok(WalkStep::End(_))) {}
            assert_eq!(w.into_index().as_ref(), Some(&idx));
        }
    }
    // Gfn 0 of an image of 300 runs: the first record's two headers, 40 bytes in two reads.
    let image = many_runs_image(300);
    let idx = index_of(&image).unwrap();
    let mut w = IndexWalker::new(&start_of(&image));
    let mut src = Counting::new(&image);
    assert_eq!(w.walk_to(&mut src, 0), Ok(Ok(0)));
    assert_eq!(
        src.reads,
        vec![(idx.runs[0].offset, 24), (idx.runs[0].offset + 24, 16)]
    );
    // The gap after it needs the next run (its start bounds the gap), nothing more.
    assert_eq!(w.walk_to(&mut src, 1), Ok(Err(1)));
    assert_eq!(src.reads.len(), 4);
    // Run 150: two reads for each run up to it.
    assert_eq!(w.walk_to(&mut src, 300), Ok(Ok(150)));
    assert_eq!(src.reads.len(), 2 * 151);
    assert_eq!(src.reach(), idx.runs[150].offset + 40);
    // A gfn past the last run walks to END.
    assert_eq!(w.walk_to(&mut src, 599), Ok(Err(300)));
    assert!(w.is_complete());
    // The empty domain: END is all there is.
    let empty = &samples()[3];
    let mut w = IndexWalker::new(&start_of(empty));
    assert_eq!(w.walk_to(&mut &empty[..], 0), Ok(Err(0)));
    assert!(w.is_complete());
}

#[test]
fn a_walker_that_failed_stays_failed() {
    // A corrupt optional record between runs: the runs before it stay listed, and nothing
    // is read or answered after it, even with the clean image as the source.
    let image = gaps_image();
    let raw = parse(&image);
    let i = find(&raw, 0x7777);
    let at = record_offsets(&image)[i];
    let mut bad = image.clone();
    bad[at + 24 + 2] ^= 1;
    let start = start_of(&image);
    let want = Err::RecordChecksum {
        record: i as u32,
        offset: at as u64,
    };
    let mut w = IndexWalker::new(&start);
    assert_eq!(w.walk_to(&mut &bad[..], 7), Ok(Ok(1)));
    assert_eq!(w.step(&mut &bad[..]), Err(want));
    assert_eq!(w.runs().len(), 2);
    let mut clean = Counting::new(&image);
    for _ in 0..3 {
        assert_eq!(w.step(&mut clean), Err(Err::Failed));
    }
    // Covered gfns included: the image is known bad.
    assert_eq!(w.walk_to(&mut clean, 1), Err(Err::Failed));
    assert_eq!(w.walk_to(&mut clean, 15), Err(Err::Failed));
    assert!(clean.reads.is_empty());
    assert!(!w.is_complete() && w.digest().is_none());
    assert_eq!(w.clone().into_index(), None);
    assert_eq!(w.runs().len(), 2);
    // A source error, then a good source: still failed.
    let idx = index_of(&image).unwrap();
    let mut w = IndexWalker::new(&start);
    let mut t = Trickle {
        image: &image,
        fail_at: Some(idx.runs[1].offset),
    };
    assert_eq!(w.walk_to(&mut t, 0), Ok(Err(0)));
    assert_eq!(w.walk_to(&mut t, 5), Err(DecodeError::Source(Broken)));
    t.fail_at = None;
    assert_eq!(w.step(&mut t), Err(DecodeError::Failed));
    assert_eq!(w.walk_to(&mut t, 0), Err(DecodeError::Failed));
    // A refusal at END (the digest): every run was indexed, and the walk is still failed.
    let bad = reseal_end(&image, |p| p[16] ^= 1);
    let mut w = IndexWalker::new(&start);
    assert_eq!(w.walk_to(&mut &bad[..], 11), Ok(Ok(2)));
    assert_eq!(w.walk_to(&mut &bad[..], 12), Err(Err::DigestMismatch));
    assert_eq!(w.step(&mut &bad[..]), Err(Err::Failed));
    assert_eq!(w.step(&mut &image[..]), Err(Err::Failed));
    assert_eq!(w.runs(), &idx.runs[..]);
    assert!(!w.is_complete());
    assert_eq!(w.into_index(), None);
    // index_runs on the walker: the same errors, from a fresh walk each time.
    assert_eq!(index_over(&image, &bad), Err(Err::DigestMismatch));
}

#[test]
fn a_truncated_image_answers_for_the_records_it_has_and_refuses_the_rest() {
    let image = gaps_image();
    let start = start_of(&image);
    let idx = index_of(&image).unwrap();
    let last = idx.runs[2];
    // Cut inside the last run's pages: its headers are there, so the walk indexes it (and
    // read_run refuses it); the record after it, END, is not.
    let cut = (last.offset + 40 + 4096 + 7) as usize;
    let short = &image[..cut];
    let mut w = IndexWalker::new(&start);
    assert_eq!(w.walk_to(&mut &short[..], 2), Ok(Ok(0)));
    assert_eq!(w.walk_to(&mut &short[..], 5), Ok(Err(1)));
    assert_eq!(w.walk_to(&mut &short[..], 11), Ok(Ok(2)));
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    read_run(&mut &short[..], &w.runs()[0], &mut buf).unwrap();
    assert!(matches!(
        read_run(&mut &short[..], &w.runs()[2], &mut buf),
        Err(Err::Truncated { .. })
    ));
    assert!(matches!(
        w.walk_to(&mut &short[..], 12),
        Err(Err::Truncated { .. })
    ));
    assert_eq!(w.step(&mut &short[..]), Err(Err::Failed));
    assert_eq!(w.walk_to(&mut &short[..], 2), Err(Err::Failed));
    // Every cut, every gfn: a walk succeeds exactly when what it needs is inside the cut.
    for cut in 0..image.len() {
        let short = &image[..cut];
        for gfn in 0..18u64 {
            let mut w = IndexWalker::new(&start);
            let r = w.walk_to(&mut &short[..], gfn);
            let (limit, runs) = walk_limit(&image, &idx, gfn);
            // The byte after END is only looked for, not needed.
            if limit.min(image.len() as u64) <= cut as u64 {
                assert_eq!(r, Ok(idx.find(gfn)), "cut {cut} gfn {gfn}");
                assert_eq!(w.runs().len(), runs);
            } else {
                assert!(
                    matches!(r, Err(Err::Truncated { .. })),
                    "cut {cut} gfn {gfn}: {r:?}"
                );
                assert_eq!(w.step(&mut &image[..]), Err(Err::Failed));
            }
        }
    }
    // The big template cut inside its first 1 MiB run: gfn 0 is answered, gfn 256 is not.
    let image = big_template();
    let start = start_of(&image);
    let idx = index_of(&image).unwrap();
    let short = &image[..(idx.runs[0].offset + 500_000) as usize];
    let mut w = IndexWalker::new(&start);
    assert_eq!(w.walk_to(&mut &short[..], 0), Ok(Ok(0)));
    assert_eq!(w.walk_to(&mut &short[..], 255), Ok(Ok(0)));
    assert!(matches!(
        w.walk_to(&mut &short[..], 256),
        Err(Err::Truncated { .. })
    ));
}

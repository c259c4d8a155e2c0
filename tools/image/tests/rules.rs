//! Each rule of docs/image-format.md, broken alone in an otherwise valid image (checksums and
//! digest recomputed by the raw editor in common/), and the refusal it must give.

mod common;

use common::*;
use domimage::*;

fn base() -> RawImage {
    parse(&samples()[0])
}

fn delta() -> RawImage {
    parse(&samples()[2])
}

fn with(mut raw: RawImage, f: impl FnOnce(&mut Vec<Raw>)) -> Vec<u8> {
    f(&mut raw.records);
    build(&raw)
}

fn refused(image: &[u8]) -> Err {
    decode_err(image)
}

#[test]
fn the_raw_editor_rebuilds_the_encoder_output_byte_for_byte() {
    for image in samples() {
        assert_eq!(build(&parse(&image)), image);
    }
}

#[test]
fn an_unknown_optional_record_is_skipped_before_and_between_memory() {
    let good = decode(&samples()[0], NO_LIMIT).unwrap();
    let image = with(base(), |r| {
        let m = r.iter().position(|x| x.ty == MEMORY).unwrap();
        r.insert(m + 1, Raw::new(0x1234, false, b"future stuff".to_vec()));
        r.insert(m, Raw::new(0x8000_0001, false, vec![0xEE; 5000]));
        r.insert(1, Raw::new(99, false, Vec::new()));
    });
    let (pro, runs, _) = decode(&image, NO_LIMIT).unwrap();
    assert_eq!((pro, runs), (good.0, good.1));
}

#[test]
fn an_unknown_mandatory_record_is_refused() {
    let image = with(base(), |r| {
        r.insert(2, Raw::new(0x1234, true, vec![1, 2, 3]))
    });
    assert_eq!(refused(&image), Err::UnknownMandatory { ty: 0x1234 });
    let image = with(base(), |r| {
        let e = r.len() - 1;
        r.insert(e, Raw::new(0x77, true, Vec::new()))
    });
    assert_eq!(refused(&image), Err::UnknownMandatory { ty: 0x77 });
}

#[test]
fn domain_must_be_the_first_record() {
    let image = with(base(), |r| r.swap(0, 1));
    assert_eq!(refused(&image), Err::OutOfOrder { ty: VCPU });
    let image = with(base(), |r| {
        r.insert(0, Raw::new(NOTE, false, b"hi".to_vec()))
    });
    assert_eq!(refused(&image), Err::OutOfOrder { ty: NOTE });
    let image = with(base(), |r| r.insert(0, Raw::new(0x999, false, Vec::new())));
    assert_eq!(refused(&image), Err::OutOfOrder { ty: 0x999 });
}

#[test]
fn vcpu_state_and_template_ref_come_in_any_order_before_memory() {
    let want = decode(&samples()[2], NO_LIMIT).unwrap();
    // DOMAIN VCPU STATE TEMPLATE_REF NOTE NOTE ... -> DOMAIN NOTE TEMPLATE_REF STATE NOTE VCPU
    let image = with(delta(), |r| {
        let v = r.remove(1);
        let s = r.remove(1);
        let t = r.remove(1);
        r.insert(2, t);
        r.insert(2, s);
        r.insert(4, v);
    });
    let got = decode(&image, NO_LIMIT).unwrap();
    assert_eq!((got.0, got.1), (want.0, want.1));
}

#[test]
fn each_prologue_record_appears_exactly_once() {
    for ty in [DOMAIN, VCPU, STATE] {
        let image = with(base(), |r| {
            let i = r.iter().position(|x| x.ty == ty).unwrap();
            let dup = r[i].clone();
            r.insert(3, dup);
        });
        assert_eq!(refused(&image), Err::Duplicate { ty }, "{ty}");
    }
    let image = with(delta(), |r| {
        let dup = r[find_in(r, TEMPLATE_REF)].clone();
        r.insert(4, dup);
    });
    assert_eq!(refused(&image), Err::Duplicate { ty: TEMPLATE_REF });
    // After memory they are duplicates too.
    let image = with(base(), |r| {
        let m = find_in(r, MEMORY);
        let dup = r[1].clone();
        r.insert(m + 1, dup);
    });
    assert_eq!(refused(&image), Err::Duplicate { ty: VCPU });
    for ty in [VCPU, STATE] {
        let image = with(base(), |r| r.retain(|x| x.ty != ty));
        assert_eq!(refused(&image), Err::Missing { ty });
    }
}

fn find_in(r: &[Raw], ty: u32) -> usize {
    r.iter().position(|x| x.ty == ty).unwrap()
}

#[test]
fn template_ref_goes_with_a_delta_and_only_there() {
    let image = with(delta(), |r| r.retain(|x| x.ty != TEMPLATE_REF));
    assert_eq!(refused(&image), Err::KindMismatch);
    let t = delta().records[3].clone();
    let image = with(base(), |r| r.insert(1, t));
    assert_eq!(refused(&image), Err::KindMismatch);
    // Header says delta, DOMAIN says domain.
    let mut raw = delta();
    raw.header[12] = 1;
    assert_eq!(refused(&build(&raw)), Err::KindMismatch);
    // Template and delta sizes differ.
    let image = with(delta(), |r| {
        let i = find_in(r, TEMPLATE_REF);
        r[i].payload[32..40].copy_from_slice(&(128u64 * 4096).to_le_bytes());
    });
    assert_eq!(refused(&image), Err::TemplateMismatch);
}

#[test]
fn every_prologue_record_comes_before_the_first_memory_and_notes_too() {
    let image = with(base(), |r| {
        let s = r.remove(find_in(r, STATE));
        let m = find_in(r, MEMORY);
        r.insert(m + 1, s);
    });
    assert_eq!(refused(&image), Err::Missing { ty: STATE });
    let image = with(base(), |r| {
        let m = find_in(r, MEMORY);
        r.insert(m + 1, Raw::new(NOTE, false, b"late".to_vec()));
    });
    assert_eq!(refused(&image), Err::OutOfOrder { ty: NOTE });
}

#[test]
fn memory_runs_must_ascend_without_overlap() {
    // Runs in sample 0: [0], [5], [6] (one call per page).
    let image = with(base(), |r| {
        let m = find_in(r, MEMORY);
        r.swap(m, m + 1);
    });
    assert_eq!(refused(&image), Err::RunNotAscending { gfn: 0 });
    let image = with(base(), |r| {
        let m = find_in(r, MEMORY);
        r.insert(
            m + 2,
            Raw::new(MEMORY, true, memory_payload(6, &[page(6, 1)])),
        );
    });
    assert_eq!(refused(&image), Err::RunNotAscending { gfn: 6 });
    // Adjacent is fine.
    let image = with(base(), |r| {
        let e = r.len() - 1;
        r.insert(e, Raw::new(MEMORY, true, memory_payload(7, &[page(7, 1)])));
    });
    assert!(decode(&image, NO_LIMIT).is_ok());
}

#[test]
fn memory_runs_must_lie_inside_mem_bytes() {
    // Sample 0 is 64 pages.
    let run = |gfn: u64, n: usize| {
        with(base(), move |r| {
            let e = r.len() - 1;
            r.insert(
                e,
                Raw::new(MEMORY, true, memory_payload(gfn, &vec![page(0, 1); n])),
            );
        })
    };
    assert!(decode(&run(63, 1), NO_LIMIT).is_ok());
    assert_eq!(
        refused(&run(63, 2)),
        Err::RunOutOfRange { gfn: 63, pages: 2 }
    );
    assert_eq!(
        refused(&run(64, 1)),
        Err::RunOutOfRange { gfn: 64, pages: 1 }
    );
    assert_eq!(
        refused(&run(u64::MAX, 1)),
        Err::RunOutOfRange {
            gfn: u64::MAX,
            pages: 1
        }
    );
    assert_eq!(
        refused(&run(u64::MAX / 4096, 1)),
        Err::RunOutOfRange {
            gfn: u64::MAX / 4096,
            pages: 1
        }
    );
}

#[test]
fn a_memory_record_length_must_match_its_page_count() {
    let set = |f: fn(&mut Vec<u8>)| {
        with(base(), move |r| {
            let m = find_in(r, MEMORY);
            f(&mut r[m].payload);
        })
    };
    assert_eq!(
        refused(&set(|p| p[8..12].copy_from_slice(&2u32.to_le_bytes()))),
        Err::BadLength { ty: MEMORY }
    );
    assert_eq!(
        refused(&set(|p| p[8..12].copy_from_slice(&0u32.to_le_bytes()))),
        Err::BadLength { ty: MEMORY }
    );
    assert_eq!(
        refused(&set(|p| p[8..12].copy_from_slice(&u32::MAX.to_le_bytes()))),
        Err::BadLength { ty: MEMORY }
    );
    assert_eq!(
        refused(&set(|p| p.truncate(16 + 100))),
        Err::BadLength { ty: MEMORY }
    );
    assert_eq!(
        refused(&set(|p| p.truncate(8))),
        Err::BadLength { ty: MEMORY }
    );
    assert_eq!(refused(&set(|p| p[12] = 1)), Err::Reserved { ty: MEMORY });
}

#[test]
fn fixed_records_must_have_their_exact_length() {
    for (ty, delta_img) in [
        (DOMAIN, false),
        (VCPU, false),
        (STATE, false),
        (TEMPLATE_REF, true),
        (END, false),
    ] {
        for change in [-8isize, 8, 1] {
            let raw = if delta_img { delta() } else { base() };
            let image = with(raw, |r| {
                let i = find_in(r, ty);
                let len = (r[i].payload.len() as isize + change) as usize;
                r[i].payload.resize(len, 0);
            });
            assert_eq!(refused(&image), Err::BadLength { ty }, "{ty} {change}");
        }
    }
}

#[test]
fn end_is_last_and_nothing_may_follow_it() {
    let mut image = samples()[0].clone();
    image.push(0);
    assert_eq!(refused(&image), Err::TrailingBytes);
    let image = with(base(), |r| r.push(Raw::new(NOTE, false, b"after".to_vec())));
    // The editor recomputes only the last END; the real END is now followed by a record.
    assert!(matches!(
        refused(&image),
        Err::TrailingBytes | Err::DigestMismatch | Err::CountMismatch
    ));
    let image = with(base(), |r| {
        let e = r.pop().unwrap();
        r.push(e.clone());
        r.push(e);
    });
    assert_eq!(refused(&image), Err::TrailingBytes);
    // No END at all: truncated at the end of the last record.
    let image = samples()[0].clone();
    let end_at = *record_offsets(&image).last().unwrap();
    assert_eq!(
        refused(&image[..end_at]),
        Err::Truncated { at: end_at as u64 }
    );
}

#[test]
fn end_counts_and_digest_must_match() {
    let mut image = samples()[0].clone();
    let n = image.len();
    image[n - 33] ^= 1; // last digest byte... of END's payload: checksum catches it first
    assert!(matches!(refused(&image), Err::RecordChecksum { .. }));
    // END resealed with a wrong count and a right digest.
    let mut raw = base();
    let good = build(&raw);
    let last = raw.records.len() - 1;
    let mut end = parse(&good).records[last].clone();
    end.payload[0] ^= 1;
    raw.records[last] = end.clone();
    let body_len = good.len() - record_bytes(&end).len();
    let mut image = good[..body_len].to_vec();
    image.extend_from_slice(&record_bytes(&end));
    assert_eq!(refused(&image), Err::CountMismatch);
    // Digest wrong, checksum right.
    end.payload[0] ^= 1;
    end.payload[20] ^= 1;
    let mut image = good[..body_len].to_vec();
    image.extend_from_slice(&record_bytes(&end));
    assert_eq!(refused(&image), Err::DigestMismatch);
}

#[test]
fn a_changed_byte_anywhere_before_end_breaks_the_digest_even_with_record_checksums_fixed() {
    // Change a memory page and fix its record checksum (but not END): the digest catches it.
    let good = samples()[0].clone();
    let mut raw = base();
    let m = find(&raw, MEMORY);
    raw.records[m].payload[16 + 50] ^= 0x80;
    let mut image = Vec::new();
    let mut header = raw.header;
    let sum = xxhash_rust::xxh3::xxh3_64(&header[..56]);
    header[56..].copy_from_slice(&sum.to_le_bytes());
    image.extend_from_slice(&header);
    for r in &raw.records[..raw.records.len() - 1] {
        image.extend_from_slice(&record_bytes(r));
    }
    image.extend_from_slice(&good[*record_offsets(&good).last().unwrap()..]);
    assert_eq!(image.len(), good.len());
    assert_eq!(refused(&image), Err::DigestMismatch);
}

#[test]
fn a_flipped_bit_in_a_memory_page_is_a_record_checksum_mismatch_at_that_record() {
    let mut image = samples()[0].clone();
    let offs = record_offsets(&image);
    let raw = parse(&image);
    let m = find(&raw, MEMORY);
    image[offs[m] + 24 + 16 + 4000] ^= 4;
    assert_eq!(
        refused(&image),
        Err::RecordChecksum {
            record: m as u32,
            offset: offs[m] as u64
        }
    );
    assert_eq!(
        refused(&image).to_string(),
        format!("record {m} checksum mismatch (at byte {})", offs[m])
    );
}

#[test]
fn reserved_fields_flags_and_padding_must_be_zero() {
    let image = with(base(), |r| r[1].flags |= 2);
    assert_eq!(refused(&image), Err::BadFlags { ty: VCPU });
    let image = with(base(), |r| r[2].reserved = 1);
    assert_eq!(refused(&image), Err::Reserved { ty: STATE });
    // Non-zero padding after a 5-byte note, checksum and digest right.
    let mut raw = base();
    let note = find(&raw, NOTE);
    raw.records[note].payload = b"abcde".to_vec();
    let mut image = build(&raw);
    let at = record_offsets(&image)[note] + 24 + 5;
    image[at] = 1;
    // Reseal: recompute that record's checksum and the END digest by hand.
    let sum_at = record_offsets(&image)[note] + 16;
    let mut covered = image[sum_at - 16..sum_at].to_vec();
    covered.extend_from_slice(&image[sum_at + 8..sum_at + 8 + 8]);
    let sum = rapidhash::v3::rapidhash_v3_seeded(&covered, &rapidhash::v3::RapidSecrets::seed(0));
    image[sum_at..sum_at + 8].copy_from_slice(&sum.to_le_bytes());
    let end_at = *record_offsets(&image).last().unwrap();
    let mut end = parse(&image).records.pop().unwrap();
    // The digest: the header and each record's header, up to END.
    let mut digested = image[..64].to_vec();
    for &at in &record_offsets(&image)[..record_offsets(&image).len() - 1] {
        digested.extend_from_slice(&image[at..at + 24]);
    }
    end.payload[16..].copy_from_slice(blake3::hash(&digested).as_bytes());
    image.truncate(end_at);
    image.extend_from_slice(&record_bytes(&end));
    assert_eq!(refused(&image), Err::Reserved { ty: NOTE });
}

#[test]
fn names_and_notes_are_checked() {
    let set_name = |bytes: &[u8], len: u16| {
        let bytes = bytes.to_vec();
        with(base(), move |r| {
            let p = &mut r[0].payload;
            p[22..24].copy_from_slice(&len.to_le_bytes());
            p[24..56].fill(0);
            p[24..24 + bytes.len()].copy_from_slice(&bytes);
        })
    };
    assert!(decode(&set_name(b"ok-name", 7), NO_LIMIT).is_ok());
    assert_eq!(refused(&set_name(b"", 0)), Err::BadName);
    assert_eq!(refused(&set_name(b"abc", 33)), Err::BadName);
    assert_eq!(refused(&set_name(b"abc", 2)), Err::BadName); // a non-zero byte after the name
    assert_eq!(refused(&set_name(&[0xFF, 0xFE], 2)), Err::BadName);
    assert_eq!(refused(&set_name(b"a\x07b", 3)), Err::BadName);
    let note = |text: Vec<u8>| {
        with(base(), move |r| {
            let i = find_in(r, NOTE);
            r[i].payload = text
        })
    };
    assert_eq!(refused(&note(vec![0xC3])), Err::BadNote);
    assert_eq!(refused(&note(vec![b'n'; MAX_NOTE_BYTES + 1])), Err::BadNote);
    assert!(decode(&note(vec![b'n'; MAX_NOTE_BYTES]), NO_LIMIT).is_ok());
    let many = with(base(), |r| {
        for _ in 0..MAX_NOTES {
            r.insert(1, Raw::new(NOTE, false, b"n".to_vec()));
        }
    });
    assert_eq!(refused(&many), Err::TooManyNotes);
}

#[test]
fn mem_bytes_must_be_whole_pages_and_within_the_readers_limit() {
    let image = samples()[0].clone();
    let mem = 64 * 4096;
    assert!(decode(&image, Limits { max_mem_bytes: mem }).is_ok());
    assert_eq!(
        decode(
            &image,
            Limits {
                max_mem_bytes: mem - 1
            }
        )
        .unwrap_err(),
        Err::MemoryTooLarge {
            mem_bytes: mem,
            limit: mem - 1
        }
    );
    for bad in [0u64, 4095, 4097] {
        let image = with(base(), |r| {
            r[0].payload[..8].copy_from_slice(&bad.to_le_bytes())
        });
        assert_eq!(refused(&image), Err::BadMemSize { mem_bytes: bad });
    }
}

#[test]
fn a_huge_length_field_is_refused_before_anything_is_read_for_it() {
    // Only the header and a record header with length 0xFFFF_FFFF: refused as too long, not
    // truncated (nothing past the record header was asked for).
    let image = samples()[0].clone();
    let mut cut = image[..64 + 24].to_vec();
    cut[64 + 8..64 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        refused(&cut),
        Err::RecordTooLong {
            record: 0,
            length: u32::MAX
        }
    );
    let mut cut = image[..64 + 24].to_vec();
    cut[64 + 8..64 + 12].copy_from_slice(&(MAX_RECORD_PAYLOAD as u32 + 1).to_le_bytes());
    assert_eq!(
        refused(&cut),
        Err::RecordTooLong {
            record: 0,
            length: MAX_RECORD_PAYLOAD as u32 + 1
        }
    );
}

fn with_header(f: impl FnOnce(&mut [u8; 64])) -> Vec<u8> {
    let mut raw = base();
    f(&mut raw.header);
    build(&raw)
}

fn set_version(version: u16, min_reader: u16) -> Vec<u8> {
    with_header(|h| {
        h[8..10].copy_from_slice(&version.to_le_bytes());
        h[10..12].copy_from_slice(&min_reader.to_le_bytes());
    })
}

#[test]
fn the_version_window_admits_newer_writers_that_allow_this_reader_and_nothing_else() {
    // A newer writer that says version-1 readers can read it (with records they skip).
    let mut raw = parse(&set_version(FORMAT_VERSION + 1, 1));
    raw.records.insert(1, Raw::new(0x100, false, vec![9; 40]));
    let (pro, _, _) = decode(&build(&raw), NO_LIMIT).unwrap();
    assert_eq!(pro.version, FORMAT_VERSION + 1);
    assert!(decode(&set_version(7, 1), NO_LIMIT).is_ok());
    // One that needs a newer reader.
    let uv = |version, min_reader| Err::UnsupportedVersion {
        version,
        min_reader,
    };
    assert_eq!(refused(&set_version(2, 2)), uv(2, 2));
    assert_eq!(
        refused(&set_version(9, FORMAT_VERSION + 1)),
        uv(9, FORMAT_VERSION + 1)
    );
    // Older than this reader reads, and inconsistent ones.
    assert_eq!(refused(&set_version(0, 0)), uv(0, 0));
    assert_eq!(refused(&set_version(1, 0)), uv(1, 0));
    assert_eq!(refused(&set_version(1, 2)), uv(1, 2));
    assert!(
        refused(&set_version(2, 2))
            .to_string()
            .starts_with("unsupported image version 2")
    );
}

#[test]
fn header_magic_checksum_kind_and_flags_are_checked() {
    let mut image = samples()[0].clone();
    image[0] = b'X';
    assert_eq!(refused(&image), Err::BadMagic);
    let mut image = samples()[0].clone();
    image[30] ^= 1; // a reserved header byte
    assert_eq!(refused(&image), Err::HeaderChecksum);
    let mut image = samples()[0].clone();
    image[63] ^= 1;
    assert_eq!(refused(&image), Err::HeaderChecksum);
    for kind in [0u16, 4, 0xFFFF] {
        assert_eq!(
            refused(&with_header(
                |h| h[12..14].copy_from_slice(&kind.to_le_bytes())
            )),
            Err::BadKind { kind }
        );
    }
    assert_eq!(
        refused(&with_header(|h| h[16] = 1)),
        Err::UnknownFlags { flags: 1 }
    );
    assert_eq!(
        refused(&with_header(|h| h[17] = 0x80)),
        Err::UnknownFlags { flags: 0x8000 }
    );
    // Compatible flags (16-31) and reserved header bytes a newer writer may use are ignored.
    assert!(decode(&with_header(|h| h[18] = 1), NO_LIMIT).is_ok());
    assert!(decode(&with_header(|h| h[40] = 0xAB), NO_LIMIT).is_ok());
    assert_eq!(refused(&samples()[0][..63]), Err::Truncated { at: 63 });
    assert_eq!(refused(&[]), Err::Truncated { at: 0 });
}

#[test]
fn the_decoder_stays_failed_after_a_refusal_and_wants_a_full_buffer() {
    let mut image = samples()[0].clone();
    let n = image.len();
    image[n - 1] ^= 1;
    let (mut dec, _) = Decoder::new(image.as_slice(), NO_LIMIT).unwrap();
    let mut small = vec![0u8; PAGE_BYTES];
    assert_eq!(dec.next_run(&mut small), Err(Err::BufferTooSmall));
    let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
    let r = loop {
        match dec.next_run(&mut buf) {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(r, Err(Err::RecordChecksum { .. })));
    assert_eq!(dec.next_run(&mut buf), Err(Err::Failed));
    assert_eq!(dec.digest(), None);
}

#[test]
fn refusals_read_as_short_lower_case_text() {
    assert_eq!(
        Err::Truncated { at: 4096 }.to_string(),
        "image truncated at byte 4096"
    );
    assert_eq!(
        Err::RecordChecksum {
            record: 7,
            offset: 99
        }
        .to_string(),
        "record 7 checksum mismatch (at byte 99)"
    );
    assert_eq!(
        Err::UnknownMandatory { ty: 0x42 }.to_string(),
        "unknown mandatory record 0x42"
    );
    assert_eq!(
        Err::Duplicate { ty: VCPU }.to_string(),
        "duplicate VCPU record"
    );
    assert_eq!(
        Err::OutOfOrder { ty: 0x99 }.to_string(),
        "type 0x99 record out of order"
    );
    assert_eq!(Err::DigestMismatch.to_string(), "image digest mismatch");
    assert_eq!(DecodeError::Source("eio").to_string(), "read failed: eio");
}

#[test]
fn the_content_digest_is_the_documented_formula_over_the_image_records() {
    // docs/image-format.md, "Content digest", computed by hand from a template image's
    // VCPU and STATE payloads and its pages.
    let image = samples()[1].clone();
    let raw = parse(&image);
    let (pro, runs, _) = decode(&image, NO_LIMIT).unwrap();
    let mut gfns = blake3::Hasher::new();
    let mut pages = blake3::Hasher::new();
    for (gfn, bytes) in &runs {
        for (i, p) in bytes.chunks(PAGE_BYTES).enumerate() {
            gfns.update(&(gfn + i as u64).to_le_bytes());
            pages.update(p);
        }
    }
    let mut h = blake3::Hasher::new();
    h.update(b"cowvisor-content-v1");
    h.update(&pro.domain.mem_bytes.to_le_bytes());
    h.update(&[1]);
    h.update(&raw.records[find(&raw, VCPU)].payload);
    h.update(&raw.records[find(&raw, STATE)].payload[..576]);
    h.update(gfns.finalize().as_bytes());
    h.update(pages.finalize().as_bytes());
    let mut c = ContentHasher::new(pro.domain.mem_bytes);
    c.context(&pro.vcpu, &pro.state);
    for (gfn, bytes) in &runs {
        c.run(*gfn, bytes).unwrap();
    }
    assert_eq!(c.finish(), *h.finalize().as_bytes());
}

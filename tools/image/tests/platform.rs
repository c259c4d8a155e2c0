//! The PLATFORM record (type 8, optional): the emulated PC devices of a domain, opaque to the
//! format, carried through every kind of image, checksummed like every record, refused when
//! corrupted or misplaced, and skipped by a reader that does not know the type.

mod common;

use common::*;
use domimage::*;

const PLATFORM: u32 = 8;

/// Bytes that look like the hypervisor's encoding (the format does not care what they are).
fn platform_bytes(seed: u64) -> Vec<u8> {
    let mut b = vec![0u8; 468];
    Rng(seed).fill(&mut b);
    b[..4].copy_from_slice(b"CWPC");
    b
}

/// An image with a PLATFORM record between the fixed records and the notes.
fn with_platform(kind: ImageKind, platform: &[u8]) -> Vec<u8> {
    let mem = 64 * 4096;
    let t = template_ref(mem);
    let mut enc = Encoder::new(
        Vec::new(),
        kind,
        &domain("dom", mem),
        &vcpu(1),
        &state(1),
        (kind == ImageKind::Delta).then_some(&t),
    )
    .unwrap();
    enc.platform(platform).unwrap();
    enc.note("a pc domain").unwrap();
    enc.memory(3, &page(3, 5)).unwrap();
    enc.memory(10, &page(10, 5)).unwrap();
    enc.finish().unwrap().0
}

#[test]
fn an_image_with_a_platform_record_round_trips() {
    let bytes = platform_bytes(7);
    for kind in [ImageKind::Domain, ImageKind::Template, ImageKind::Delta] {
        let image = with_platform(kind, &bytes);
        let (pro, runs, digest) = decode(&image, NO_LIMIT).unwrap();
        assert_eq!(pro.kind, kind);
        assert_eq!(pro.platform.as_deref(), Some(&bytes[..]), "{kind:?}");
        assert_eq!(pro.notes, vec!["a pc domain".to_string()]);
        assert_eq!(pro.vcpu, vcpu(1));
        assert_eq!(pro.state, state(1));
        assert_eq!(runs.len(), 2);
        // The record is optional (flag 0), type 8, and the digest covers it.
        let raw = parse(&image);
        let i = find(&raw, PLATFORM);
        assert_eq!((raw.records[i].flags, raw.records[i].payload.len()), (0, bytes.len()));
        let other = with_platform(kind, &platform_bytes(8));
        assert_ne!(decode(&other, NO_LIMIT).unwrap().2, digest);
    }
    // One byte and the largest payload are both fine; an image without one has none.
    for len in [1, MAX_PLATFORM_BYTES] {
        let pro = decode(&with_platform(ImageKind::Domain, &vec![0xC3; len]), NO_LIMIT).unwrap().0;
        assert_eq!(pro.platform.map(|p| p.len()), Some(len));
    }
    assert_eq!(decode(&samples()[0], NO_LIMIT).unwrap().0.platform, None);
    // A reader knows the type, so a writer that marked it mandatory is read as well.
    let mut raw = parse(&with_platform(ImageKind::Domain, &bytes));
    let i = find(&raw, PLATFORM);
    raw.records[i].flags = 1;
    assert_eq!(decode(&build(&raw), NO_LIMIT).unwrap().0.platform.as_deref(), Some(&bytes[..]));
    assert_eq!(record::name(PLATFORM), Some("PLATFORM"));
}

#[test]
fn a_reader_that_does_not_know_the_platform_record_skips_it() {
    // What a reader from before the PLATFORM record sees: an optional record of a type it
    // does not know. It is skipped, and the rest of the image reads the same.
    let image = with_platform(ImageKind::Domain, &platform_bytes(1));
    let mut raw = parse(&image);
    let i = find(&raw, PLATFORM);
    raw.records[i].ty = 0x7777;
    let (pro, runs, _) = decode(&build(&raw), NO_LIMIT).unwrap();
    let (want, want_runs, _) = decode(&image, NO_LIMIT).unwrap();
    assert_eq!(pro.platform, None);
    assert_eq!((pro.vcpu, pro.state, pro.notes), (want.vcpu, want.state, want.notes));
    assert_eq!(runs, want_runs);
}

#[test]
fn a_corrupted_platform_record_is_refused() {
    let bytes = platform_bytes(3);
    let image = with_platform(ImageKind::Domain, &bytes);
    let raw = parse(&image);
    let i = find(&raw, PLATFORM);
    let at = record_offsets(&image)[i];
    // A flipped byte of the record (type, flags, checksum, payload, padding) breaks its checksum.
    let len = 24 + bytes.len() + (8 - bytes.len() % 8) % 8;
    for off in [0, 4, 16, 24, 24 + 100, 24 + bytes.len() - 1, len - 1] {
        let mut bad = image.clone();
        bad[at + off] ^= 0x20;
        assert_eq!(decode_err(&bad), Err::RecordChecksum { record: i as u32, offset: at as u64 }, "byte {off}");
    }
    // Resealed (valid checksums and digest), but breaking the record's own rules.
    let resealed = |f: &dyn Fn(&mut Vec<Raw>)| {
        let mut r = raw.clone();
        f(&mut r.records);
        decode_err(&build(&r))
    };
    assert_eq!(resealed(&|r| r[i].payload.clear()), Err::BadLength { ty: PLATFORM });
    assert_eq!(
        resealed(&|r| r[i].payload = vec![1; MAX_PLATFORM_BYTES + 1]),
        Err::BadLength { ty: PLATFORM }
    );
    assert_eq!(
        resealed(&|r| {
            let dup = Raw::new(PLATFORM, false, bytes.clone());
            r.insert(i + 1, dup);
        }),
        Err::Duplicate { ty: PLATFORM }
    );
    assert_eq!(
        resealed(&|r| {
            let p = r.remove(i);
            let end = r.len() - 1;
            r.insert(end, p);
        }),
        Err::OutOfOrder { ty: PLATFORM }
    );
    assert_eq!(resealed(&|r| r[i].flags = 2), Err::BadFlags { ty: PLATFORM });
    assert_eq!(resealed(&|r| r[i].reserved = 1), Err::Reserved { ty: PLATFORM });
    // A truncated image ends inside the record.
    assert!(matches!(decode_err(&image[..at + 24 + 10]), Err::Truncated { .. }));
}

#[test]
fn the_encoder_refuses_a_bad_platform_record_and_writes_nothing_for_it() {
    let mem = 16 * 4096;
    let mut enc =
        Encoder::new(Vec::new(), ImageKind::Domain, &domain("dom", mem), &vcpu(1), &state(1), None).unwrap();
    assert_eq!(enc.platform(&[]), Err(EncodeError::BadPlatform { bytes: 0 }));
    let long = vec![0; MAX_PLATFORM_BYTES + 1];
    assert_eq!(enc.platform(&long), Err(EncodeError::BadPlatform { bytes: MAX_PLATFORM_BYTES + 1 }));
    enc.platform(b"devices").unwrap();
    assert_eq!(enc.platform(b"again"), Err(EncodeError::DuplicatePlatform));
    enc.memory(1, &page(1, 1)).unwrap();
    let mut late =
        Encoder::new(Vec::new(), ImageKind::Domain, &domain("dom", mem), &vcpu(1), &state(1), None).unwrap();
    late.memory(1, &page(1, 1)).unwrap();
    assert_eq!(late.platform(b"devices"), Err(EncodeError::PlatformAfterMemory));
    let image = enc.finish().unwrap().0;
    let pro = decode(&image, NO_LIMIT).unwrap().0;
    assert_eq!(pro.platform.as_deref(), Some(&b"devices"[..]));
}

//! Images written by the encoder read back exactly; zero pages are left out; the content
//! digest does not depend on how an image was encoded.

mod common;

use common::*;
use core::convert::Infallible;
use domimage::*;
use std::collections::BTreeMap;

/// Every page of `runs`, by gfn.
fn pages_of(runs: &[(u64, Vec<u8>)]) -> BTreeMap<u64, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (gfn, bytes) in runs {
        for (i, p) in bytes.chunks(PAGE_BYTES).enumerate() {
            assert!(m.insert(gfn + i as u64, p.to_vec()).is_none());
        }
    }
    m
}

#[test]
fn domain_image_round_trips_domain_vcpu_state_notes_and_pages() {
    let mem = 64 * 4096;
    let pages: Vec<(u64, Vec<u8>)> = [0u64, 1, 2, 9, 63]
        .iter()
        .map(|&g| (g, page(g, 7)))
        .collect();
    let image = encode(
        ImageKind::Domain,
        mem,
        None,
        &["saved from d3 at 12:00", ""],
        &pages,
    );
    let (pro, runs, _) = decode(&image, Limits { max_mem_bytes: mem }).unwrap();
    assert_eq!(pro.kind, ImageKind::Domain);
    assert_eq!(pro.version, FORMAT_VERSION);
    assert_eq!(pro.domain, domain("dom", mem));
    assert_eq!(pro.vcpu, vcpu(1));
    assert_eq!(pro.state, state(1));
    assert_eq!(pro.template, None);
    assert_eq!(
        pro.notes,
        vec!["saved from d3 at 12:00".to_string(), String::new()]
    );
    let got = pages_of(&runs);
    assert_eq!(got, pages.into_iter().collect::<BTreeMap<_, _>>());
}

#[test]
fn template_image_round_trips() {
    let mem = 8 * 4096;
    let mut raw = vec![0u8; mem as usize];
    for g in [1usize, 2, 3, 7] {
        raw[g * PAGE_BYTES..(g + 1) * PAGE_BYTES].copy_from_slice(&page(g as u64, 2));
    }
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Template,
        &domain("tmpl", mem),
        &vcpu(2),
        &state(2),
        None,
    )
    .unwrap();
    enc.memory(0, &raw).unwrap();
    let (image, _, stats) = enc.finish().unwrap();
    assert_eq!((stats.pages_written, stats.pages_zero), (4, 4));
    // Runs [1,2,3] and [7]: DOMAIN VCPU STATE MEMORY MEMORY END.
    assert_eq!(stats.records, 6);
    assert_eq!(stats.bytes, image.len() as u64);
    let (pro, runs, _) = decode(&image, NO_LIMIT).unwrap();
    assert_eq!(pro.kind, ImageKind::Template);
    assert_eq!(pro.vcpu, vcpu(2));
    assert_eq!(pro.state, state(2));
    assert_eq!(
        runs.iter()
            .map(|(g, b)| (*g, b.len() / PAGE_BYTES))
            .collect::<Vec<_>>(),
        vec![(1, 3), (7, 1)]
    );
    let mut back = vec![0u8; mem as usize];
    for (g, p) in pages_of(&runs) {
        back[g as usize * PAGE_BYTES..][..PAGE_BYTES].copy_from_slice(&p);
    }
    assert_eq!(back, raw);
}

#[test]
fn delta_image_round_trips_its_template_ref_and_keeps_zero_pages() {
    let mem = 64 * 4096;
    let t = TemplateRef {
        digest: [7; 32],
        mem_bytes: mem,
        name: String::new(),
    };
    let mut run = page(10, 4);
    run.extend_from_slice(&[0u8; PAGE_BYTES]); // the clone zeroed page 11: must be written
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Delta,
        &domain("clone-1", mem),
        &vcpu(3),
        &state(3),
        Some(&t),
    )
    .unwrap();
    enc.memory(10, &run).unwrap();
    let (image, _, stats) = enc.finish().unwrap();
    assert_eq!((stats.pages_written, stats.pages_zero), (2, 0));
    let (pro, runs, _) = decode(&image, NO_LIMIT).unwrap();
    assert_eq!(pro.kind, ImageKind::Delta);
    assert_eq!(pro.template, Some(t));
    assert_eq!(pro.domain.name, "clone-1");
    assert_eq!(runs, vec![(10, run)]);
}

#[test]
fn zero_pages_are_elided_so_a_mostly_zero_64_mib_domain_encodes_to_a_tiny_image() {
    let mem: u64 = 64 << 20;
    let mut raw = vec![0u8; mem as usize];
    let used = [0u64, 1, 4000, 16383];
    for &g in &used {
        raw[g as usize * PAGE_BYTES..][..PAGE_BYTES].copy_from_slice(&page(g, 5));
    }
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Domain,
        &domain("big", mem),
        &vcpu(1),
        &state(1),
        None,
    )
    .unwrap();
    for (i, chunk) in raw.chunks(MAX_RUN_PAGES * PAGE_BYTES).enumerate() {
        enc.memory((i * MAX_RUN_PAGES) as u64, chunk).unwrap();
    }
    let (image, digest, stats) = enc.finish().unwrap();
    assert_eq!(stats.pages_written, 4);
    assert_eq!(stats.pages_zero, 16384 - 4);
    assert!(image.len() < 4 * PAGE_BYTES + 4096, "{} bytes", image.len());
    let (_, runs, dig) = decode(&image, NO_LIMIT).unwrap();
    assert_eq!(dig, digest);
    let got = pages_of(&runs);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), used);
}

#[test]
fn runs_longer_than_zero_gaps_split_only_at_zero_pages_and_a_full_run_is_one_record() {
    let mut run = Vec::new();
    for g in 0..MAX_RUN_PAGES as u64 {
        run.extend_from_slice(&page(g, 9));
    }
    let image = encode(ImageKind::Domain, 1 << 20, None, &[], &[(0, run.clone())]);
    let (_, runs, _) = decode(&image, NO_LIMIT).unwrap();
    assert_eq!(runs, vec![(0, run)]);
}

#[test]
fn the_digest_finish_returns_is_the_one_the_reader_checks() {
    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Domain,
        &domain("d", 4096),
        &vcpu(1),
        &state(1),
        None,
    )
    .unwrap();
    enc.memory(0, &page(0, 1)).unwrap();
    let (image, digest, _) = enc.finish().unwrap();
    assert_eq!(&image[image.len() - 32..], &digest);
    // BLAKE3 over the header and the 24-byte header of every record before END.
    let offsets = common::record_offsets(&image);
    let mut digested = image[..64].to_vec();
    for &at in &offsets[..offsets.len() - 1] {
        digested.extend_from_slice(&image[at..at + 24]);
    }
    assert_eq!(*blake3::hash(&digested).as_bytes(), digest);
    assert_eq!(decode(&image, NO_LIMIT).unwrap().2, digest);
}

/// A source that hands out at most `n` bytes per call.
struct Trickle<'a>(&'a [u8], usize);

impl Source for Trickle<'_> {
    type Error = Infallible;
    fn take(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.1);
        let mut s = self.0;
        let got = s.take(&mut buf[..n])?;
        self.0 = s;
        Ok(got)
    }
}

#[test]
fn a_source_that_returns_a_few_bytes_at_a_time_reads_the_same() {
    for image in samples() {
        let whole = decode(&image, NO_LIMIT).unwrap();
        for step in [1, 7, 4095] {
            let (mut dec, pro) = Decoder::new(Trickle(&image, step), NO_LIMIT).unwrap();
            assert_eq!(pro, whole.0);
            let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
            let mut runs = Vec::new();
            while let Some((g, n)) = dec.next_run(&mut buf).unwrap() {
                runs.push((g, buf[..n * PAGE_BYTES].to_vec()));
            }
            assert_eq!(runs, whole.1);
            assert_eq!(dec.position(), image.len() as u64);
            assert_eq!(dec.next_run(&mut buf), Ok(None));
        }
    }
}

#[test]
fn content_digest_is_the_same_live_and_from_the_image_with_or_without_zero_pages() {
    let mem = 32 * 4096u64;
    let mut raw = vec![0u8; mem as usize];
    for g in [0usize, 3, 4, 31] {
        raw[g * PAGE_BYTES..][..PAGE_BYTES].copy_from_slice(&page(g as u64, 11));
    }
    // Live: every page fed, zero ones included.
    let mut live = ContentHasher::new(mem);
    for (g, p) in raw.as_chunks::<PAGE_BYTES>().0.iter().enumerate() {
        live.page(g as u64, p).unwrap();
    }
    live.context(&vcpu(1), &state(1));
    let live = live.finish();
    // From an image (two differently encoded images: one call per page with notes, and one call).
    let a = encode(
        ImageKind::Template,
        mem,
        None,
        &["x"],
        &raw.chunks(PAGE_BYTES)
            .enumerate()
            .map(|(g, p)| (g as u64, p.to_vec()))
            .collect::<Vec<_>>(),
    );
    let b = encode(ImageKind::Template, mem, None, &[], &[(0, raw.clone())]);
    assert_ne!(a, b);
    for image in [a, b] {
        let (mut dec, pro) = Decoder::new(image.as_slice(), NO_LIMIT).unwrap();
        let mut h = ContentHasher::new(pro.domain.mem_bytes);
        h.context(&pro.vcpu, &pro.state);
        let mut buf = vec![0u8; MAX_RUN_PAGES * PAGE_BYTES];
        while let Some((g, n)) = dec.next_run(&mut buf).unwrap() {
            h.run(g, &buf[..n * PAGE_BYTES]).unwrap();
        }
        assert_eq!(h.finish(), live);
    }
    // And the one-call form, non-zero pages only.
    let nz: Vec<(u64, &[u8; PAGE_BYTES])> = raw
        .as_chunks::<PAGE_BYTES>()
        .0
        .iter()
        .enumerate()
        .map(|(g, p)| (g as u64, p))
        .filter(|(_, p)| p.iter().any(|&b| b != 0))
        .collect();
    assert_eq!(content_digest(mem, &vcpu(1), &state(1), nz).unwrap(), live);
}

#[test]
fn content_digest_ignores_identity_and_clock_but_covers_registers_events_and_pages() {
    let mem = 4 * 4096u64;
    let p = page(1, 1);
    let p: &[u8; PAGE_BYTES] = p.as_slice().try_into().unwrap();
    let d = |v: &guest_abi::vcpu::VcpuContext,
             s: &guest_abi::saved::SavedState,
             gfn: u64,
             m: u64| content_digest(m, v, s, [(gfn, p)]).unwrap();
    let (v, s) = (vcpu(1), state(1));
    let base = d(&v, &s, 1, mem);
    let mut other = s;
    other.domid = 99;
    other.parent = 4;
    other.clone_index = 5;
    other.generation = 77;
    other.guest_time_ns += 1_000_000;
    other.guest_tsc += 12345;
    other.block_remaining_ns = 1;
    assert_eq!(d(&v, &other, 1, mem), base);
    let mut s2 = s;
    s2.extended.fxsave[200] ^= 1;
    assert_ne!(d(&v, &s2, 1, mem), base);
    let mut s3 = s;
    s3.events_pending ^= 2;
    assert_ne!(d(&v, &s3, 1, mem), base);
    let mut v2 = v;
    v2.rip += 1;
    assert_ne!(d(&v2, &s, 1, mem), base);
    assert_ne!(d(&v, &s, 2, mem), base);
    assert_ne!(d(&v, &s, 1, mem + 4096), base);
}

#[test]
fn content_hasher_refuses_pages_out_of_order_or_range_and_then_matches_nothing() {
    let z = [0u8; PAGE_BYTES];
    let mut h = ContentHasher::new(2 * 4096);
    h.context(&vcpu(1), &state(1));
    let good = h.clone().finish();
    h.page(1, &z).unwrap();
    assert_eq!(h.page(1, &z), Err(ContentError::NotAscending { gfn: 1 }));
    assert_ne!(h.finish(), good);
    let mut h = ContentHasher::new(2 * 4096);
    h.context(&vcpu(1), &state(1));
    assert_eq!(h.page(2, &z), Err(ContentError::OutOfRange { gfn: 2 }));
    assert_eq!(
        ContentHasher::new(2 * 4096).page(u64::MAX, &z),
        Err(ContentError::OutOfRange { gfn: u64::MAX })
    );
    assert_ne!(h.finish(), good);
}

#[test]
fn the_encoder_refuses_bad_names_sizes_kinds_notes_and_runs_without_writing() {
    type E = EncodeError<Infallible>;
    let new = |kind, d: &DomainRecord, t: Option<&TemplateRef>| {
        Encoder::new(Vec::new(), kind, d, &vcpu(1), &state(1), t).err()
    };
    let mem = 16 * 4096;
    assert_eq!(
        new(ImageKind::Domain, &domain("", mem), None),
        Some(E::BadName)
    );
    assert_eq!(
        new(ImageKind::Domain, &domain(&"x".repeat(33), mem), None),
        Some(E::BadName)
    );
    assert_eq!(
        new(ImageKind::Domain, &domain("a\nb", mem), None),
        Some(E::BadName)
    );
    assert!(new(ImageKind::Domain, &domain(&"é".repeat(16), mem), None).is_none());
    assert_eq!(
        new(ImageKind::Domain, &domain("d", 0), None),
        Some(E::BadMemSize { mem_bytes: 0 })
    );
    assert_eq!(
        new(ImageKind::Domain, &domain("d", 4097), None),
        Some(E::BadMemSize { mem_bytes: 4097 })
    );
    assert_eq!(
        new(ImageKind::Delta, &domain("d", mem), None),
        Some(E::KindMismatch)
    );
    assert_eq!(
        new(
            ImageKind::Template,
            &domain("d", mem),
            Some(&template_ref(mem))
        ),
        Some(E::KindMismatch)
    );
    assert_eq!(
        new(
            ImageKind::Delta,
            &domain("d", mem),
            Some(&template_ref(mem * 2))
        ),
        Some(E::TemplateMismatch)
    );

    let mut enc = Encoder::new(
        Vec::new(),
        ImageKind::Domain,
        &domain("d", mem),
        &vcpu(1),
        &state(1),
        None,
    )
    .unwrap();
    assert_eq!(
        enc.note(&"n".repeat(MAX_NOTE_BYTES + 1)),
        Err(E::NoteTooLong)
    );
    for _ in 0..MAX_NOTES {
        enc.note("n").unwrap();
    }
    assert_eq!(enc.note("n"), Err(E::TooManyNotes));
    assert_eq!(
        enc.memory(0, &[1u8; 100]),
        Err(E::RunNotAligned { bytes: 100 })
    );
    assert_eq!(
        enc.memory(0, &vec![1u8; (MAX_RUN_PAGES + 1) * PAGE_BYTES]),
        Err(E::RunTooLong {
            pages: MAX_RUN_PAGES + 1
        })
    );
    assert_eq!(
        enc.memory(15, &page(0, 0).repeat(2)),
        Err(E::RunOutOfRange { gfn: 15, pages: 2 })
    );
    assert_eq!(
        enc.memory(u64::MAX, &page(0, 0)),
        Err(E::RunOutOfRange {
            gfn: u64::MAX,
            pages: 1
        })
    );
    enc.memory(4, &page(4, 0)).unwrap();
    assert_eq!(
        enc.memory(4, &page(4, 0)),
        Err(E::RunNotAscending { gfn: 4 })
    );
    assert_eq!(enc.note("late"), Err(E::NoteAfterMemory));
    enc.memory(5, &page(5, 0)).unwrap();
    let (image, _, _) = enc.finish().unwrap();
    let (pro, runs, _) = decode(&image, NO_LIMIT).unwrap();
    assert_eq!(pro.notes.len(), MAX_NOTES);
    assert_eq!(runs, vec![(4, page(4, 0)), (5, page(5, 0))]);
}

/// A sink that fails after `n` bytes.
struct Full(usize);

impl Sink for Full {
    type Error = &'static str;
    fn put(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        self.0 = self.0.checked_sub(bytes.len()).ok_or("disk full")?;
        Ok(())
    }
}

#[test]
fn a_failing_sink_stops_the_encoder_for_good() {
    let mut enc = Encoder::new(
        Full(2000),
        ImageKind::Domain,
        &domain("d", 1 << 20),
        &vcpu(1),
        &state(1),
        None,
    )
    .unwrap();
    assert_eq!(
        enc.memory(0, &page(0, 1)),
        Err(EncodeError::Sink("disk full"))
    );
    assert_eq!(enc.memory(1, &page(1, 1)), Err(EncodeError::Failed));
    assert!(matches!(enc.finish(), Err(EncodeError::Failed)));
    assert_eq!(
        EncodeError::Sink("disk full").to_string(),
        "write failed: disk full"
    );
}

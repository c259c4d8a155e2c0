//! Test guest `selfckpt`: checkpoints itself (docs/self-checkpoint.md). It fills `pages=`
//! pages (default 512) with a pattern and notes their CRC-32, calls `self_checkpoint`, and
//! streams its own frozen memory to dom0 over its channel while it rewrites the pattern;
//! dom0 stores the image as `NAME.TAG` (`tag=`, default `one`). A domain restored from that
//! image returns from the same call with RESTORED, checks that its memory is the memory of
//! the moment of the call (the pattern's CRC, a phase word written just after the call) and
//! prints one result line. `mode=` tries what must be refused: `garbage` (a stream not
//! starting with BEGIN, then pages out of order), `beyond` (reads and pages past its memory),
//! `cut` (a stream that stops), `twice` (a second checkpoint while one runs), `denied` (no
//! channel allowed), `abandon` (a checkpoint never ended: the guest exits). `bench=1` prints
//! the pause the call costs in guest TSC cycles.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::HvError;
use guest_abi::channel::{Desc, READ_MAX_PAGES, RESTORED, TAKEN, msg, ring, status};
use guest_abi::crc32::crc32;
use guest_abi::println;
use guest_abi::rt::test::{Status, report};
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(selfckpt);

const PAGE: u64 = 4096;
/// Slot pages of the ring.
const SLOTS: u32 = 32;
/// How long the guest waits for dom0's answer.
const ANSWER_WAIT_NS: u64 = 60_000_000_000;
/// Calls whose pause `bench=1` measures (the median is printed).
const BENCH_CALLS: usize = 9;

/// Where things are: the ring, then the pattern pages, above the image.
#[derive(Clone, Copy)]
struct Layout {
    ring: u64,
    data: u64,
    pages: u64,
    mem: u64,
}

/// The phase word: 1 before the call, 2 once the original went on.
static mut PHASE: u64 = 0;

fn set_phase(v: u64) {
    // SAFETY: a plain static only this single-threaded guest touches.
    unsafe { (&raw mut PHASE).write_volatile(v) };
}

fn phase() -> u64 {
    // SAFETY: as above.
    unsafe { (&raw const PHASE).read_volatile() }
}

fn pattern(page: u64, word: u64, round: u64) -> u64 {
    (page * 8 + word + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round
}

fn fill(l: &Layout, page: u64, round: u64) {
    for w in 0..8 {
        // SAFETY: inside this domain's identity-mapped RAM, above its image (checked).
        unsafe { ((l.data + page * PAGE + w * 512) as *mut u64).write_volatile(pattern(page, w, round)) };
    }
}

fn data_crc(l: &Layout) -> u32 {
    // SAFETY: as for `fill`.
    let bytes = unsafe { core::slice::from_raw_parts(l.data as *const u8, (l.pages * PAGE) as usize) };
    crc32(bytes)
}

fn rd(at: u64) -> u32 {
    // SAFETY: `at` is inside the ring, in our RAM.
    unsafe { (at as *const u32).read_volatile() }
}

fn wr(at: u64, v: u32) {
    // SAFETY: as for `rd`.
    unsafe { (at as *mut u32).write_volatile(v) }
}

/// The producer side of the ring.
struct Ring {
    base: u64,
    prod: u32,
}

impl Ring {
    fn open(base: u64) -> Result<Self, HvError> {
        // SAFETY: the ring's pages are ours and nothing else uses them.
        unsafe { core::ptr::write_bytes(base as *mut u8, 0, PAGE as usize) };
        wr(base + ring::MAGIC_OFFSET, ring::MAGIC);
        wr(base + ring::SLOTS_OFFSET, SLOTS);
        hc::channel_open(base, u64::from(SLOTS) + 1)?;
        Ok(Self { base, prod: 0 })
    }

    fn slot(&self, index: u32) -> u64 {
        self.base + (1 + u64::from(index % SLOTS)) * PAGE
    }

    fn status(&self) -> u32 {
        rd(self.base + ring::STATUS_OFFSET)
    }

    fn cons(&self) -> u32 {
        rd(self.base + ring::CONS_OFFSET)
    }

    /// A new stream: no answer yet, and everything before is consumed.
    fn reset(&mut self) {
        wr(self.base + ring::STATUS_OFFSET, status::PENDING);
        self.prod = self.cons();
        wr(self.base + ring::PROD_OFFSET, self.prod);
    }

    fn free(&self) -> u32 {
        SLOTS - self.prod.wrapping_sub(self.cons())
    }

    /// Waits for room (or an answer, which ends the stream early).
    fn wait_room(&self) -> Result<(), u32> {
        let t0 = hc::time_ns().unwrap_or(0);
        while self.free() == 0 {
            if self.status() != status::PENDING {
                return Err(self.status());
            }
            let _ = hc::channel_notify();
            hc::sleep(10_000_000);
            if hc::time_ns().unwrap_or(0).saturating_sub(t0) > ANSWER_WAIT_NS {
                return Err(status::PENDING);
            }
        }
        if self.status() != status::PENDING {
            return Err(self.status());
        }
        Ok(())
    }

    fn put(&mut self, d: Desc) {
        let at = self.base + ring::DESC0_OFFSET + u64::from(self.prod % SLOTS) * ring::DESC_BYTES;
        let b = d.to_bytes();
        for (i, chunk) in b.chunks(4).enumerate() {
            wr(at + i as u64 * 4, u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        }
        self.prod = self.prod.wrapping_add(1);
    }

    fn publish(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        wr(self.base + ring::PROD_OFFSET, self.prod);
        let _ = hc::channel_notify();
    }

    fn begin(&mut self, tag: &str, mem: u64) -> Result<(), u32> {
        self.wait_room()?;
        // SAFETY: the slot page is ours; the tag is at most a page.
        unsafe { core::ptr::copy_nonoverlapping(tag.as_ptr(), self.slot(self.prod) as *mut u8, tag.len()) };
        self.put(Desc { kind: msg::BEGIN, len: tag.len() as u32, arg: mem });
        self.publish();
        Ok(())
    }

    /// Waits for dom0's answer to the stream.
    fn answer(&self) -> u32 {
        let t0 = hc::time_ns().unwrap_or(0);
        while self.status() == status::PENDING {
            if hc::time_ns().unwrap_or(0).saturating_sub(t0) > ANSWER_WAIT_NS {
                break;
            }
            hc::sleep(10_000_000);
        }
        self.status()
    }
}

fn status_name(s: u32) -> &'static str {
    match s {
        status::PENDING => "no answer",
        status::STORED => "stored",
        status::BAD_MESSAGE => "bad message",
        status::NO_EPOCH => "no epoch",
        status::BAD_NAME => "bad name",
        status::STORE_FAILED => "store failed",
        status::CUT_OFF => "cut off",
        _ => "unknown",
    }
}

fn is_zero(at: u64) -> bool {
    // SAFETY: a page of our RAM.
    let words = unsafe { core::slice::from_raw_parts(at as *const u64, (PAGE / 8) as usize) };
    words.iter().all(|&w| w == 0)
}

/// Streams the whole checkpoint: every non-zero page, ascending, read from the epoch straight
/// into the ring's slots, rewriting one pattern page per batch meanwhile.
fn stream(r: &mut Ring, l: &Layout, tag: &str) -> Result<u64, u32> {
    r.begin(tag, l.mem)?;
    let total = l.mem / PAGE;
    let (mut gfn, mut sent, mut rewritten) = (0u64, 0u64, 0u64);
    while gfn < total {
        r.wait_room()?;
        // Contiguous free slots from the producer's slot, at most one read's worth.
        let to_wrap = SLOTS - r.prod % SLOTS;
        let n = u64::from(r.free().min(to_wrap)).min(READ_MAX_PAGES).min(total - gfn);
        let dst = r.slot(r.prod);
        // SAFETY: `dst` is `n` slot pages of ours; the buffer is page aligned.
        let buf = unsafe { core::slice::from_raw_parts_mut(dst as *mut u8, (n * PAGE) as usize) };
        if let Err(e) = hc::self_checkpoint_read(gfn * PAGE, buf) {
            println!("selfckpt: reading gpa {:#x}: {e}", gfn * PAGE);
            return Err(status::PENDING);
        }
        // Zero pages stay out (an image takes an absent page as zero): the non-zero ones are
        // packed down into the slots in order.
        let mut used = 0u64;
        for i in 0..n {
            let from = dst + i * PAGE;
            if is_zero(from) {
                continue;
            }
            let to = dst + used * PAGE;
            if to != from {
                // SAFETY: two distinct slot pages of ours.
                unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, PAGE as usize) };
            }
            r.put(Desc { kind: msg::PAGE, len: PAGE as u32, arg: (gfn + i) * PAGE });
            used += 1;
        }
        sent += used;
        gfn += n;
        if used > 0 {
            r.publish();
        }
        // The guest keeps running and writing: the checkpoint must not see this.
        if rewritten < l.pages {
            fill(l, rewritten, 2);
            rewritten += 1;
        }
    }
    r.wait_room()?;
    r.put(Desc { kind: msg::END, len: 0, arg: sent });
    r.publish();
    Ok(sent)
}

fn restored(l: &Layout, crc: u32) -> i32 {
    let now = data_crc(l);
    println!("selfckpt: restored: phase {} crc {now:08x} (at the call {crc:08x})", phase());
    let ok = now == crc && phase() == 1;
    if ok {
        println!("selfckpt: memory is the memory at the moment of the call");
    }
    report(if ok { Status::Success } else { Status::Failure })
}

fn selfckpt(si: &'static StartInfo) -> i32 {
    let pages = rt::cmdline_u64("pages").ok().flatten().unwrap_or(512).max(1);
    let mode = rt::cmdline_value("mode").unwrap_or("normal");
    let tag = rt::cmdline_value("tag").unwrap_or("one");
    let base = rt::image_end().div_ceil(2 << 20) * (2 << 20);
    let l = Layout { ring: base, data: base + (2 << 20), pages, mem: si.mem_bytes };
    if l.data + pages * PAGE > si.mem_bytes {
        println!("selfckpt: {} MiB is too small for {pages} pages", si.mem_bytes >> 20);
        report(Status::Error);
    }
    for p in 0..pages {
        fill(&l, p, 1);
    }
    let crc = data_crc(&l);
    set_phase(1);
    if mode == "denied" {
        let a = hc::channel_open(l.ring, u64::from(SLOTS) + 1);
        let b = hc::self_checkpoint();
        println!("selfckpt: without a channel: open {a:?}, checkpoint {b:?}");
        let ok = a == Err(HvError::NotPermitted) && b == Err(HvError::NotPermitted);
        report(if ok { Status::Success } else { Status::Failure });
    }
    let mut r = match Ring::open(l.ring) {
        Ok(r) => r,
        Err(e) => {
            println!("selfckpt: channel_open: {e}");
            report(Status::Error);
        }
    };
    println!("selfckpt: filled {pages} pages, crc {crc:08x}, mode {mode}");
    if rt::cmdline_value("bench").is_some() {
        return bench(&l);
    }
    let t0 = rt::rdtsc();
    let ret = hc::self_checkpoint();
    let pause = rt::rdtsc().wrapping_sub(t0);
    match ret {
        Ok(RESTORED) => return restored(&l, crc),
        Ok(TAKEN) => {}
        other => {
            println!("selfckpt: self_checkpoint: {other:?}");
            report(Status::Failure);
        }
    }
    set_phase(2);
    let _ = hc::event_ack();
    println!("selfckpt: checkpoint taken, paused {pause} cycles");
    let ok = match mode {
        "normal" => normal(&mut r, &l, tag),
        "garbage" => garbage(&mut r, &l, tag),
        "beyond" => beyond(&mut r, &l, tag),
        "cut" => cut(&mut r, &l, tag),
        "twice" => {
            let again = hc::self_checkpoint();
            println!("selfckpt: a second checkpoint: {again:?}");
            again == Err(HvError::Busy) && normal(&mut r, &l, tag)
        }
        "abandon" => {
            println!("selfckpt: abandoning the checkpoint");
            true
        }
        _ => {
            println!("selfckpt: unknown mode {mode}");
            report(Status::Error);
        }
    };
    report(if ok { Status::Success } else { Status::Failure })
}

fn normal(r: &mut Ring, l: &Layout, tag: &str) -> bool {
    r.reset();
    let sent = stream(r, l, tag);
    let answer = r.answer();
    println!("selfckpt: streamed {sent:?} pages: {}", status_name(answer));
    let _ = hc::self_checkpoint_end();
    // The original went on: its memory is no longer the checkpoint's.
    let moved = data_crc(l) != 0 && phase() == 2;
    if answer == status::STORED && moved {
        println!("selfckpt: running on after the checkpoint");
    }
    answer == status::STORED && moved
}

fn expect_refused(r: &Ring, what: &str, want: u32) -> bool {
    let got = r.answer();
    println!("selfckpt: {what}: {}", status_name(got));
    got == want
}

fn garbage(r: &mut Ring, l: &Layout, tag: &str) -> bool {
    // A message that is not BEGIN opens nothing.
    r.reset();
    r.put(Desc { kind: 77, len: 9, arg: 1 });
    r.publish();
    let a = expect_refused(r, "a stream without BEGIN", status::BAD_MESSAGE);
    // Pages out of order.
    r.reset();
    let mut b = r.begin(tag, l.mem).is_ok();
    for gpa in [l.data + PAGE, l.data] {
        if hc::self_checkpoint_read(gpa, slot_buf(r)).is_err() {
            b = false;
        }
        r.put(Desc { kind: msg::PAGE, len: PAGE as u32, arg: gpa });
    }
    r.publish();
    b &= expect_refused(r, "pages out of order", status::BAD_MESSAGE);
    // A wrong memory size at BEGIN.
    r.reset();
    let c = r.begin(tag, l.mem + PAGE).is_ok() && expect_refused(r, "a BEGIN with the wrong size", status::BAD_MESSAGE);
    a && b && c && normal(r, l, tag)
}

fn slot_buf(r: &Ring) -> &'static mut [u8] {
    // SAFETY: the producer's slot page is ours and not in use until it is published.
    unsafe { core::slice::from_raw_parts_mut(r.slot(r.prod) as *mut u8, PAGE as usize) }
}

fn beyond(r: &mut Ring, l: &Layout, tag: &str) -> bool {
    let read = hc::self_checkpoint_read(l.mem, slot_buf(r));
    // SAFETY: two free slot pages of ours (the ring has more than two slots).
    let two = unsafe { core::slice::from_raw_parts_mut(r.slot(0) as *mut u8, 2 * PAGE as usize) };
    let read2 = hc::self_checkpoint_read(l.mem - PAGE, two);
    println!("selfckpt: reading past its memory: {read:?}, {read2:?}");
    let a = read == Err(HvError::BadAddress) && read2 == Err(HvError::BadAddress);
    r.reset();
    let mut b = r.begin(tag, l.mem).is_ok();
    r.put(Desc { kind: msg::PAGE, len: PAGE as u32, arg: l.mem });
    r.publish();
    b &= expect_refused(r, "a page past its memory", status::BAD_MESSAGE);
    a && b && normal(r, l, tag)
}

fn cut(r: &mut Ring, l: &Layout, tag: &str) -> bool {
    r.reset();
    let mut ok = r.begin(tag, l.mem).is_ok();
    for i in 0..4 {
        let gpa = l.data + i * PAGE;
        ok &= hc::self_checkpoint_read(gpa, slot_buf(r)).is_ok();
        r.put(Desc { kind: msg::PAGE, len: PAGE as u32, arg: gpa });
    }
    r.publish();
    println!("selfckpt: stream stops after 4 pages");
    ok && expect_refused(r, "a stream that stops", status::CUT_OFF) && normal(r, l, tag)
}

/// The pause of `self_checkpoint` (call to running again), the median of several calls,
/// each epoch ended before the next.
fn bench(l: &Layout) -> i32 {
    let mut t = [0u64; BENCH_CALLS];
    for x in t.iter_mut() {
        let t0 = rt::rdtsc();
        let r = hc::self_checkpoint();
        *x = rt::rdtsc().wrapping_sub(t0);
        if r != Ok(TAKEN) {
            println!("selfckpt: self_checkpoint: {r:?}");
            report(Status::Failure);
        }
        // Some writes, so each epoch does copy a few pages.
        for p in 0..l.pages.min(16) {
            fill(l, p, 3);
        }
        let _ = hc::self_checkpoint_end();
    }
    t.sort_unstable();
    println!("selfckpt: pause {} cycles ({} MiB)", t[BENCH_CALLS / 2], l.mem >> 20);
    report(Status::Success)
}

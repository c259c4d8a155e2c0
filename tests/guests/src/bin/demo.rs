//! The demo template guest (image `demo`): it fills a working set (`ws_mib=`, default 32 MiB)
//! with computed data and freezes itself into a template. Every clone then checks a sample of
//! the shared data (`check=` pages, default 64), prints
//! `clone INDEX domain ID generation GEN shared-data ok` (or `... FAILED`), writes `writes=`
//! pages of its own (default 4, in one 2 MiB window; the addresses come from `seed=` and are
//! the same in every clone, the values are its own), lets its siblings run, and checks that its writes stayed its
//! own: `clone INDEX own-writes ok`. It then idles; if it is itself frozen and cloned, the
//! clones repeat all this with their own identity. Every clone records what it wrote in its
//! own memory, so a clone of a clone expects its ancestors' writes on top of the template's
//! data: the check then proves that sharing works through every level. `check=all` checks
//! every page of the working set.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::hypercall::event;
use guest_abi::println;
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(demo);

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
/// Working-set data starts on a 2 MiB boundary above the image.
const WS_ALIGN: u64 = 2 * MIB;

/// The template's data at `addr`.
fn shared_value(addr: u64) -> u64 {
    let mut x = addr ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^ (x >> 29)
}

/// What clone `domid` writes at `addr`.
fn own_value(addr: u64, domid: u32) -> u64 {
    shared_value(addr) ^ ((domid as u64) << 40) ^ 0xC0DE
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn word(addr: u64) -> *mut u64 {
    addr as *mut u64
}

/// Most writes remembered across generations of clones.
const LOG_ENTRIES: usize = 256;

/// Writes made by this clone and its ancestors: (address, value). It lives in guest memory,
/// so clones of a clone inherit it copy-on-write like everything else.
struct WriteLog {
    entries: [(u64, u64); LOG_ENTRIES],
    len: usize,
}

struct SharedLog(core::cell::UnsafeCell<WriteLog>);

// SAFETY: a guest has one vCPU and the log is only used from its main flow.
unsafe impl Sync for SharedLog {}

static LOG: SharedLog = SharedLog(core::cell::UnsafeCell::new(WriteLog { entries: [(0, 0); LOG_ENTRIES], len: 0 }));

fn log() -> &'static mut WriteLog {
    // SAFETY: single vCPU, and no reference to the log outlives the calls below.
    unsafe { &mut *LOG.0.get() }
}

/// What the word at `addr` must hold: the latest logged write, or the template's data.
fn expected(addr: u64) -> u64 {
    let l = log();
    l.entries[..l.len].iter().rev().find(|(a, _)| *a == addr).map(|&(_, v)| v).unwrap_or_else(|| shared_value(addr))
}

/// Checks every word of a page against the template's data and the logged writes.
fn check_page(page: u64) -> Option<u64> {
    let l = log();
    let logged = l.entries[..l.len].iter().any(|&(a, _)| a & !(PAGE - 1) == page);
    for a in (page..page + PAGE).step_by(8) {
        let want = if logged { expected(a) } else { shared_value(a) };
        // SAFETY: the address lies in this domain's identity-mapped working set.
        if unsafe { word(a).read_volatile() } != want {
            return Some(a);
        }
    }
    None
}

/// Checks `pages` pseudo-random pages of the working set (every page if `pages` is
/// `u64::MAX`). Returns the first wrong address.
fn check_shared(ws: (u64, u64), rng: &mut Rng, pages: u64) -> Option<u64> {
    let count = (ws.1 - ws.0) / PAGE;
    if pages == u64::MAX {
        return (0..count).find_map(|i| check_page(ws.0 + i * PAGE));
    }
    (0..pages).find_map(|_| check_page(ws.0 + (rng.next() % count) * PAGE))
}

fn clone_work(ws: (u64, u64)) {
    // The CLONED event that announced this identity is handled by doing this work.
    let _ = hc::event_ack();
    let si = rt::identity_now();
    let check = match rt::cmdline_value("check") {
        Some("all") => u64::MAX,
        _ => rt::cmdline_u64("check").ok().flatten().unwrap_or(64),
    };
    let writes = rt::cmdline_u64("writes").ok().flatten().unwrap_or(4).min(64) as usize;
    let seed = rt::cmdline_u64("seed").ok().flatten().unwrap_or(0x5EED) | 1;
    let mut sample = Rng(si.generation.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let shared_ok = check_shared(ws, &mut sample, check);
    let verdict = if shared_ok.is_none() { "ok" } else { "FAILED" };
    println!("clone {} domain {} generation {} shared-data {verdict}", si.clone_index, si.domid, si.generation);
    if let Some(a) = shared_ok {
        println!("clone {}: template data wrong at {a:#x}", si.clone_index);
    }
    // Every clone writes the same pages (common seed) with its own values, a few pages in
    // one 2 MiB window of the working set.
    let mut pick = Rng(seed);
    let windows = ((ws.1 - ws.0) / WS_ALIGN).max(1);
    let window = ws.0 + (pick.next() % windows) * WS_ALIGN;
    let window_pages = (WS_ALIGN.min(ws.1 - window)) / PAGE;
    let mut pages = [0u64; 64];
    for p in pages.iter_mut().take(writes) {
        *p = window + (pick.next() % window_pages) * PAGE + (pick.next() % (PAGE / 8)) * 8;
        let v = own_value(*p, si.domid);
        // SAFETY: inside this domain's working set.
        unsafe { word(*p).write_volatile(v) };
        let l = log();
        if l.len < LOG_ENTRIES {
            l.entries[l.len] = (*p, v);
            l.len += 1;
        }
    }
    for _ in 0..3 {
        let _ = hc::yield_now();
    }
    let mine = pages[..writes].iter().all(|&a| {
        // SAFETY: as above.
        unsafe { word(a).read_volatile() == own_value(a, si.domid) }
    });
    let untouched = check_shared(ws, &mut sample, check.min(16)).is_none();
    if mine && untouched {
        println!("clone {} own-writes ok", si.clone_index);
    } else {
        println!("clone {} own-writes FAILED (mine {mine}, shared {untouched})", si.clone_index);
    }
}

fn demo(si: &'static StartInfo) -> i32 {
    let ws_base = rt::image_end().div_ceil(WS_ALIGN) * WS_ALIGN;
    let wanted = rt::cmdline_u64("ws_mib").ok().flatten().unwrap_or(32).max(1) * MIB;
    let room = si.mem_bytes.saturating_sub(ws_base);
    if room < PAGE {
        println!("demo: no room for a working set ({} MiB of memory)", si.mem_bytes / MIB);
        return 1;
    }
    let ws = (ws_base, ws_base + wanted.min(room) / PAGE * PAGE);
    println!("demo: domain {} filling a {} KiB working set", si.domid, (ws.1 - ws.0) / 1024);
    for a in (ws.0..ws.1).step_by(8) {
        // SAFETY: inside this domain's identity-mapped RAM.
        unsafe { word(a).write_volatile(shared_value(a)) };
    }
    println!("demo: freezing into a template");
    if let Err(e) = hc::freeze_self() {
        println!("demo: cannot freeze: {e}");
        return 1;
    }
    // Only clones get here.
    loop {
        clone_work(ws);
        // Idle until something happens; a CLONED event means we are a new clone (of a clone
        // that was frozen) and must take on the new identity.
        loop {
            let _ = hc::block(0);
            if hc::event_ack().unwrap_or(0) & event::CLONED != 0 {
                break;
            }
        }
    }
}

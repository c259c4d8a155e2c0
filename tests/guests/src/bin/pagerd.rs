//! Test guest `pagerd`: a memory-manager pager domain. dom0 fills a mirror of a client image
//! in its memory (`guest_abi::pager::MIRROR_BASE_GPA` + page address) and makes it the pager
//! of lazily restored clients; it answers each request on its ring by supplying the page
//! (shared among the clients, copy-on-write) and, with `background=1`, the rest of a client's
//! memory after its first request. It prints `pagerd: ready` and a line per 64 answers. With
//! `intrude=D` it instead tries to supply a page to domain D, which is not its client, and
//! prints what the hypervisor said.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::hypercall::nr;
use guest_abi::pager::{MIRROR_BASE_GPA, Request, SUPPLY_MAX_PAGES, SUPPLY_SHARED, SupplyArgs, ring};
use guest_abi::println;
use guest_abi::rt::{self, hc};
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(pagerd);

const PAGE: u64 = 4096;
/// The pages of every client image it serves are named by this key.
const SHARE_KEY: u64 = 1;
/// Clients it keeps background state for.
const MAX_CLIENTS: usize = 16;

#[repr(C, align(4096))]
struct RingPage([u8; 4096]);

static mut RING: RingPage = RingPage([0; 4096]);

fn ring_addr() -> u64 {
    // SAFETY: only its address is taken; the page is read with volatile loads below.
    (&raw const RING) as u64
}

fn ring_u32(off: u64) -> u32 {
    // SAFETY: inside the ring page, 4-byte aligned; the hypervisor writes it between exits.
    unsafe { ((ring_addr() + off) as *const u32).read_volatile() }
}

fn set_cons(v: u32) {
    // SAFETY: as above.
    unsafe { ((ring_addr() + ring::CONS_OFFSET) as *mut u32).write_volatile(v) };
}

fn request(i: u32) -> Request {
    let off = ring::SLOT0_OFFSET + u64::from(i % ring::RING_SLOTS) * ring::SLOT_BYTES;
    // SAFETY: a whole slot inside the ring page; Request is plain data.
    unsafe { ((ring_addr() + off) as *const Request).read_volatile() }
}

fn supply(a: &SupplyArgs) -> Result<u64, guest_abi::HvError> {
    // SAFETY: the argument block is a live value of this identity-mapped domain.
    unsafe { guest_abi::hypercall::hypercall(nr::PAGER_SUPPLY, &[a as *const SupplyArgs as u64]) }
}

fn pagerd(si: &'static StartInfo) -> i32 {
    if let Ok(Some(victim)) = rt::cmdline_u64("intrude") {
        let a = SupplyArgs { client: victim as u32, flags: SUPPLY_SHARED, gfn: 0x10, count: 1, src_gpa: MIRROR_BASE_GPA, request: 0, share_key: SHARE_KEY };
        match supply(&a) {
            Ok(n) => println!("pagerd: supplied {n} pages to domain {victim}"),
            Err(e) => println!("pagerd: supply to domain {victim} refused: {e}"),
        }
        // SAFETY: as in `supply`.
        match unsafe { guest_abi::hypercall::hypercall(nr::PAGER_RING, &[ring_addr()]) } {
            Ok(_) => println!("pagerd: ring registered"),
            Err(e) => println!("pagerd: ring refused: {e}"),
        }
        return 0;
    }
    let background = rt::cmdline_u64("background").ok().flatten().unwrap_or(0) != 0;
    let mirror_pages = si.mem_bytes.saturating_sub(MIRROR_BASE_GPA) / PAGE;
    // dom0 makes it a pager first; until then the ring is refused.
    loop {
        // SAFETY: as in `supply`.
        if unsafe { guest_abi::hypercall::hypercall(nr::PAGER_RING, &[ring_addr()]) }.is_ok() {
            break;
        }
        hc::sleep(10_000_000);
    }
    println!("pagerd: ready, mirror of {} MiB", mirror_pages * PAGE >> 20);
    let mut cons = 0u32;
    let mut answered = 0u64;
    // Background cursor per client seen.
    let mut clients = [(0u32, 0u64); MAX_CLIENTS];
    let mut nclients = 0;
    loop {
        let prod = ring_u32(ring::PROD_OFFSET);
        while cons != prod {
            let r = request(cons);
            cons = cons.wrapping_add(1);
            set_cons(cons);
            if r.gfn >= mirror_pages {
                continue;
            }
            let a = SupplyArgs { client: r.client, flags: SUPPLY_SHARED, gfn: r.gfn, count: 1, src_gpa: MIRROR_BASE_GPA + r.gfn * PAGE, request: r.id, share_key: SHARE_KEY };
            if supply(&a).is_ok() {
                answered += 1;
                if answered % 64 == 0 {
                    println!("pagerd: {answered} requests answered");
                }
            }
            if background && nclients < MAX_CLIENTS && !clients[..nclients].iter().any(|c| c.0 == r.client) {
                clients[nclients] = (r.client, 0);
                nclients += 1;
            }
        }
        let mut worked = false;
        for c in clients.iter_mut().take(nclients) {
            if c.1 >= mirror_pages {
                continue;
            }
            let n = (mirror_pages - c.1).min(SUPPLY_MAX_PAGES);
            let a = SupplyArgs { client: c.0, flags: SUPPLY_SHARED, gfn: c.1, count: n, src_gpa: MIRROR_BASE_GPA + c.1 * PAGE, request: 0, share_key: SHARE_KEY };
            match supply(&a) {
                Ok(_) => c.1 += n,
                Err(guest_abi::HvError::BadAddress) => c.1 = mirror_pages,
                Err(_) => c.1 = mirror_pages,
            }
            worked = true;
        }
        if !worked {
            let _ = hc::block(0);
            let _ = hc::event_ack();
        }
    }
}

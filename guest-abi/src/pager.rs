//! The pager protocol (docs/pager.md): how a lazily restored domain's pages reach it. A
//! *client* domain starts with no guest memory; its first touch of a page pauses its vCPU and
//! posts a [`Request`] on its *pager*'s request ring (a page in the pager's memory, the Xen
//! vm_event pattern) and raises [`crate::hypercall::event::PAGER`] there. The pager answers
//! with [`nr::PAGER_SUPPLY`](crate::hypercall::nr::PAGER_SUPPLY) and may supply pages nobody
//! asked for (background fetch) until the client is fully resident and independent of it.

/// Request ring layout: a 4 KiB page in the pager's memory, registered with `pager_ring`.
/// The hypervisor is the only producer, the pager the only consumer. Indices run freely and
/// wrap at `u32`; slot = index % [`RING_SLOTS`].
pub mod ring {
    /// Offset of the producer index (u32, written by the hypervisor).
    pub const PROD_OFFSET: u64 = 0;
    /// Offset of the consumer index (u32, written by the pager).
    pub const CONS_OFFSET: u64 = 4;
    /// Offset of the slot count (u32, written by the hypervisor when the ring is registered).
    pub const SLOTS_OFFSET: u64 = 8;
    /// Offset of the first slot.
    pub const SLOT0_OFFSET: u64 = 64;
    /// Bytes of one slot ([`super::Request`]).
    pub const SLOT_BYTES: u64 = 32;
    /// Slots in the ring.
    pub const RING_SLOTS: u32 = ((4096 - SLOT0_OFFSET) / SLOT_BYTES) as u32;
}

/// One request on the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Request {
    /// The client domain.
    pub client: u32,
    /// [`REQ_WRITE`] if the touch was a write.
    pub flags: u32,
    /// The guest frame it touched.
    pub gfn: u64,
    /// Names this request in the answer (never 0).
    pub id: u64,
    /// Host TSC when the client touched the page.
    pub tsc: u64,
}

/// The touch that made the request was a write.
pub const REQ_WRITE: u32 = 1 << 0;

/// `pager_supply` arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SupplyArgs {
    /// The client.
    pub client: u32,
    /// [`SUPPLY_SHARED`] or 0.
    pub flags: u32,
    /// First guest frame of the client to fill.
    pub gfn: u64,
    /// Pages, 1 to [`SUPPLY_MAX_PAGES`].
    pub count: u64,
    /// Where the pages are in the pager's memory (page aligned); with [`SUPPLY_ZERO`] unused.
    pub src_gpa: u64,
    /// The request this answers ([`Request::id`]), or 0 for pages nobody asked for yet.
    pub request: u64,
    /// With [`SUPPLY_SHARED`]: the pager's name for the content (one per image): clients
    /// supplied the same (key, gfn) share one read-only frame, copied on their first write.
    pub share_key: u64,
}

/// Supply the pages as frames shared read-only with every client given the same
/// (share_key, gfn): copy-on-write exactly as clones share a template.
pub const SUPPLY_SHARED: u32 = 1 << 0;
/// The pages are zero (src_gpa is not read). With [`SUPPLY_SHARED`], every zero page of
/// the key's clients maps one read-only zero frame.
pub const SUPPLY_ZERO: u32 = 1 << 1;
/// Every supply flag.
pub const SUPPLY_FLAGS_ALL: u32 = SUPPLY_SHARED | SUPPLY_ZERO;
/// Most pages one `pager_supply` maps (one image run).
pub const SUPPLY_MAX_PAGES: u64 = 256;

/// Why a pager gives up on a page (`pager_fail`): the client is crashed with this reason.
pub mod fail {
    /// The page failed its checksum in the image.
    pub const CHECKSUM: u32 = 1;
    /// The image could not be read.
    pub const READ_ERROR: u32 = 2;
    /// The image as a whole failed its digest (or is truncated).
    pub const IMAGE: u32 = 3;

    /// Text for the crash reason.
    pub fn name(code: u32) -> &'static str {
        match code {
            CHECKSUM => "failed its checksum",
            READ_ERROR => "could not be read",
            IMAGE => "is in an image that failed verification",
            _ => "could not be supplied",
        }
    }
}

/// `pager_status` result: where a lazily restored client is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct LazyStatus {
    /// The client.
    pub client: u32,
    /// Its pager, or [`crate::domctl::NO_DOMAIN`] while it has none (its pager died).
    pub pager: u32,
    /// Guest pages not yet supplied (0: fully resident, no longer lazy).
    pub missing_pages: u64,
    /// Demand faults so far (touches of a missing page).
    pub demand_faults: u64,
    /// Pages supplied so far, of which `shared_supplied` as shared frames.
    pub supplied_pages: u64,
    pub shared_supplied: u64,
    /// The page its vCPU waits for (`u64::MAX`: none).
    pub waiting_gfn: u64,
    /// Host TSC of its first demand fault (0: none yet).
    pub first_fault_tsc: u64,
    /// Host TSC when its first demand fault was answered (0: not yet).
    pub first_answer_tsc: u64,
    /// Total TSC cycles its vCPU spent waiting for the pager.
    pub wait_cycles: u64,
}

/// The default time a pager has to answer a request before its client is paused
/// (`paused(pager)`); `dom_pager_set` can change it per client.
pub const PAGER_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Where the memory-manager pager guest (`pagerd`) keeps a client image's pages: page `gfn`
/// of the client at `MIRROR_BASE_GPA + gfn * 4096` of the pager's own memory. A convention
/// between dom0, which fills that mirror, and that guest; the hypervisor knows nothing of it.
pub const MIRROR_BASE_GPA: u64 = 16 << 20;

//! dom0's side of guest channels: it reads a self-checkpoint a guest streams over its ring
//! (docs/self-checkpoint.md) and stores it as an ordinary domain image. Everything on the ring
//! is hostile input, checked here in one place: the header, each descriptor's kind and
//! length, the page addresses (ascending, inside the domain's memory), the count at the end,
//! and the time between messages. The registers, saved state, devices and clock in the image
//! come from the hypervisor's epoch of the call, never from the guest.

use crate::control::{Control, Hypercalls};
use crate::page_buf::PageBuf;
use crate::save::StoreSink;
use alloc::format;
use alloc::string::String;
use core::fmt;
use domimage::{DomainRecord, EncodeError, Encoder, ImageKind, PAGE_BYTES};
use guest_abi::HvError;
use guest_abi::channel::{Desc, MAX_SLOTS, TAG_MAX_BYTES, msg, ring, status};
use guest_abi::domctl::{DomainFlags, NO_DOMAIN, name_str, state};
use store::{BlockDevice, Store, StoreError};

/// How long dom0 waits for the next message of a stream before it calls it cut off.
pub const STREAM_STALL_LIMIT_NS: u64 = 15_000_000_000;
/// How long dom0 sleeps between looks at a ring that has nothing new.
const STREAM_POLL_NS: u64 = 2_000_000;
/// Pages gathered into one image run at most.
const RUN_PAGES: usize = domimage::MAX_RUN_PAGES;
/// Bytes of the ring header dom0 reads (the header fields and every descriptor).
const HEADER_BYTES: usize = (ring::DESC0_OFFSET + MAX_SLOTS as u64 * ring::DESC_BYTES) as usize;

/// Why a stream was refused; each maps to the status the guest reads back.
#[derive(Debug)]
pub enum StreamError {
    /// The ring header is not a ring (magic, slot count, indices).
    BadRing(&'static str),
    /// A message out of place or malformed.
    BadMessage(String),
    /// The guest has no self-checkpoint epoch running.
    NoEpoch,
    /// The tag does not make a valid image name, or the image exists.
    BadName(String),
    /// The store refused the image.
    Store(StoreError),
    /// No message within [`STREAM_STALL_LIMIT_NS`], or the guest aborted.
    CutOff(&'static str),
    /// The guest ended mid-stream (nothing can be answered).
    GuestGone,
    /// A hypercall failed.
    Hv(HvError),
}

impl StreamError {
    /// The status word the guest reads.
    pub fn status(&self) -> u32 {
        match self {
            Self::BadRing(_) | Self::BadMessage(_) => status::BAD_MESSAGE,
            Self::NoEpoch => status::NO_EPOCH,
            Self::BadName(_) => status::BAD_NAME,
            Self::Store(_) | Self::Hv(_) => status::STORE_FAILED,
            Self::CutOff(_) | Self::GuestGone => status::CUT_OFF,
        }
    }
}

impl From<HvError> for StreamError {
    fn from(e: HvError) -> Self {
        Self::Hv(e)
    }
}

impl From<StoreError> for StreamError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<EncodeError<StoreError>> for StreamError {
    fn from(e: EncodeError<StoreError>) -> Self {
        match e {
            EncodeError::Sink(s) => Self::Store(s),
            other => Self::BadMessage(format!("{other:?}")),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRing(why) => write!(f, "bad ring: {why}"),
            Self::BadMessage(why) => write!(f, "bad message: {why}"),
            Self::NoEpoch => write!(f, "no self-checkpoint running"),
            Self::BadName(n) => write!(f, "bad image name {n:?} (invalid or taken)"),
            Self::Store(e) => write!(f, "store: {e}"),
            Self::CutOff(why) => write!(f, "stream cut off: {why}"),
            Self::GuestGone => write!(f, "the guest ended mid-stream"),
            Self::Hv(e) => write!(f, "{e}"),
        }
    }
}

/// A stream stored as an image.
#[derive(Clone, Debug)]
pub struct Stored {
    pub image: String,
    pub pages: u64,
    pub bytes: u64,
}

/// The ring's header as dom0 read it.
struct Header {
    slots: u32,
    prod: u32,
    bytes: PageBuf,
}

impl Header {
    fn desc(&self, index: u32) -> Desc {
        let at = (ring::DESC0_OFFSET + u64::from(index % self.slots) * ring::DESC_BYTES) as usize;
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.bytes[at..at + 16]);
        Desc::from_bytes(&b)
    }
}

fn word(b: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A tag the image name can carry: 1 to [`TAG_MAX_BYTES`] of `a-z0-9_-`.
pub fn valid_tag(tag: &[u8]) -> bool {
    (1..=TAG_MAX_BYTES).contains(&tag.len()) && tag.iter().all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// Serves one domain's ring, for the time of one stream.
pub struct Receiver<'a, H: Hypercalls, D: BlockDevice> {
    pub ctl: &'a mut Control<H>,
    pub store: &'a mut Store<D>,
}

/// Reads and checks the ring header of domain `id`.
fn header<H: Hypercalls>(ctl: &mut Control<H>, id: u32, ring_gpa: u64, pages: u32) -> Result<Header, StreamError> {
    let mut bytes = PageBuf::zeroed(HEADER_BYTES);
    ctl.mem_read(id, ring_gpa, &mut bytes[..])?;
    if word(&bytes, ring::MAGIC_OFFSET) != ring::MAGIC {
        return Err(StreamError::BadRing("magic"));
    }
    let slots = word(&bytes, ring::SLOTS_OFFSET);
    if slots == 0 || slots > MAX_SLOTS || slots + 1 > pages {
        return Err(StreamError::BadRing("slot count"));
    }
    Ok(Header { slots, prod: word(&bytes, ring::PROD_OFFSET), bytes })
}

impl<H: Hypercalls, D: BlockDevice> Receiver<'_, H, D> {

    fn answer(&mut self, id: u32, ring_gpa: u64, cons: u32, st: u32) {
        let _ = self.ctl.mem_write(id, ring_gpa + ring::CONS_OFFSET, &cons.to_le_bytes());
        let _ = self.ctl.mem_write(id, ring_gpa + ring::STATUS_OFFSET, &st.to_le_bytes());
        let _ = self.ctl.channel_kick(id);
    }

    /// Serves domain `id`, which kicked its ring: a stream from BEGIN to END is stored as
    /// image `NAME.TAG`. The status word and the consumer index are written back either way.
    /// `Ok(None)`: nothing was waiting.
    pub fn serve(&mut self, id: u32) -> Result<Option<Stored>, StreamError> {
        let info = self.ctl.channel_info(id)?;
        if info.ring_gpa == 0 {
            return Ok(None);
        }
        let (gpa, pages) = (info.ring_gpa, info.pages);
        let h = match header(self.ctl, id, gpa, pages) {
            Ok(h) => h,
            Err(e) => {
                // Nothing can be consumed from what is not a ring: only the status is written.
                let _ = self.ctl.mem_write(id, gpa + ring::STATUS_OFFSET, &e.status().to_le_bytes());
                let _ = self.ctl.channel_kick(id);
                return Err(e);
            }
        };
        let mut cons = word(&h.bytes, ring::CONS_OFFSET);
        if h.prod == cons {
            return Ok(None);
        }
        let result = self.stream(id, gpa, pages, h, &mut cons);
        let st = match &result {
            Ok(_) => status::STORED,
            Err(e) => e.status(),
        };
        if !matches!(result, Err(StreamError::GuestGone)) {
            self.answer(id, gpa, cons, st);
        }
        result.map(Some)
    }

    fn stream(&mut self, id: u32, gpa: u64, pages: u32, mut h: Header, cons: &mut u32) -> Result<Stored, StreamError> {
        let pending = h.prod.wrapping_sub(*cons);
        if pending > h.slots {
            *cons = h.prod;
            return Err(StreamError::BadRing("more messages than slots"));
        }
        let first = h.desc(*cons);
        if first.kind != msg::BEGIN {
            // Whatever is there is dropped: a stream starts with BEGIN.
            *cons = h.prod;
            return Err(StreamError::BadMessage(format!("kind {} where BEGIN was expected", first.kind)));
        }
        let info = self.ctl.info(id)?;
        let mut slot = PageBuf::zeroed(PAGE_BYTES);
        let slot_gpa = |i: u32| gpa + (1 + u64::from(i % h.slots)) * PAGE_BYTES as u64;
        let len = first.len as usize;
        if len == 0 || len > TAG_MAX_BYTES {
            *cons = h.prod;
            return Err(StreamError::BadMessage(format!("BEGIN with a tag of {len} bytes")));
        }
        self.ctl.mem_read(id, slot_gpa(*cons), &mut slot[..len])?;
        *cons = cons.wrapping_add(1);
        if !valid_tag(&slot[..len]) {
            *cons = h.prod;
            return Err(StreamError::BadName(String::from_utf8_lossy(&slot[..len]).into_owned()));
        }
        if first.arg != info.mem_bytes {
            *cons = h.prod;
            return Err(StreamError::BadMessage(format!("BEGIN says {} bytes of memory, the domain has {}", first.arg, info.mem_bytes)));
        }
        let name = String::from(name_str(&info.name));
        let image = format!("{name}.{}", core::str::from_utf8(&slot[..len]).unwrap_or("?"));
        if !store::is_valid_name(&image) || self.store.find(&image).is_some() {
            *cons = h.prod;
            return Err(StreamError::BadName(image));
        }
        let epoch = self.ctl.channel_info(id)?.epoch;
        if epoch == NO_DOMAIN {
            *cons = h.prod;
            return Err(StreamError::NoEpoch);
        }
        // The image's prologue comes from the epoch (the instant of the call).
        let vcpu = self.ctl.vcpu_get(epoch)?;
        let st = self.ctl.state_get(epoch)?;
        let platform = if info.flags & DomainFlags::PC_PLATFORM.bits() != 0 { Some(self.ctl.platform_get(epoch)?) } else { None };
        let quota_pages = self.ctl.stat(id)?.quota_pages;
        let record = DomainRecord { name: name.clone(), mem_bytes: info.mem_bytes, quota_pages, origin_domid: id };
        let mut origin = format!("d{id} {name} (self)");
        while origin.len() > store::MAX_ORIGIN_BYTES {
            origin.pop();
        }
        let mut writer = self.store.begin_self_checked(&image, store::ImageKind::Domain, &origin)?;
        let r = self.receive(id, gpa, pages, &mut h, cons, &mut writer, &record, &vcpu, &st, platform.as_deref());
        match r {
            Ok((count, bytes)) => {
                self.store.commit(writer)?;
                // The epoch is no longer needed: its frames go back now.
                let _ = self.ctl.destroy(epoch);
                Ok(Stored { image, pages: count, bytes })
            }
            Err(e) => {
                self.store.abort(writer);
                // What else is on the ring belongs to the refused stream.
                *cons = h.prod;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn receive(
        &mut self,
        id: u32,
        gpa: u64,
        pages: u32,
        h: &mut Header,
        cons: &mut u32,
        writer: &mut store::ImageWriter,
        record: &DomainRecord,
        vcpu: &guest_abi::vcpu::VcpuContext,
        st: &guest_abi::saved::SavedState,
        platform: Option<&[u8]>,
    ) -> Result<(u64, u64), StreamError> {
        let ctl = &mut *self.ctl;
        let sink = StoreSink { store: &mut *self.store, writer };
        let mut enc = Encoder::new(sink, ImageKind::Domain, record, vcpu, st, None)?;
        if let Some(p) = platform {
            enc.platform(p)?;
        }
        enc.note(&format!("self-checkpoint of d{} {}", record.origin_domid, record.name))?;
        let mem_pages = record.mem_bytes / PAGE_BYTES as u64;
        // Contiguous pages are gathered into one run (one record, one checksum pass).
        let mut run = PageBuf::zeroed(RUN_PAGES * PAGE_BYTES);
        let (mut run_first, mut run_len) = (0u64, 0usize);
        let mut next_gfn = 0u64;
        let mut count = 0u64;
        let mut stalled_since = ctl.time_ns()?;
        // Whether messages came since the stall clock was last started (a clock read per
        // message would be a hypercall per page).
        let mut progressed = false;
        let refresh = |ctl: &mut Control<H>, h: &Header, cons: &mut u32| -> Result<Header, StreamError> {
            let fresh = header(ctl, id, gpa, pages)?;
            if fresh.slots != h.slots {
                return Err(StreamError::BadRing("slot count changed"));
            }
            if fresh.prod.wrapping_sub(*cons) > h.slots {
                *cons = fresh.prod;
                return Err(StreamError::BadRing("more messages than slots"));
            }
            Ok(fresh)
        };
        loop {
            if *cons == h.prod {
                // Tell the guest there is room. A message it published before it could see
                // this consumer index came without a notify (it notifies only into an empty
                // ring), so the producer index is read again before waiting.
                let _ = ctl.mem_write(id, gpa + ring::CONS_OFFSET, &cons.to_le_bytes());
                let _ = ctl.channel_kick(id);
                *h = refresh(ctl, h, cons)?;
                if *cons != h.prod {
                    continue;
                }
                let now = ctl.time_ns()?;
                if core::mem::take(&mut progressed) {
                    stalled_since = now;
                }
                let i = ctl.info(id)?;
                if matches!(i.state, state::DEAD | state::CRASHED) {
                    return Err(StreamError::GuestGone);
                }
                if now.saturating_sub(stalled_since) > STREAM_STALL_LIMIT_NS {
                    return Err(StreamError::CutOff("no message in time"));
                }
                let _ = ctl.block(STREAM_POLL_NS);
                let _ = ctl.event_ack();
                *h = refresh(ctl, h, cons)?;
                continue;
            }
            progressed = true;
            let at = *cons;
            let d = h.desc(at);
            let slot_gpa = gpa + (1 + u64::from(at % h.slots)) * PAGE_BYTES as u64;
            *cons = cons.wrapping_add(1);
            match d.kind {
                msg::PAGE => {
                    if d.len as usize != PAGE_BYTES || d.arg % PAGE_BYTES as u64 != 0 {
                        return Err(StreamError::BadMessage(format!("PAGE of {} bytes at {:#x}", d.len, d.arg)));
                    }
                    let gfn = d.arg / PAGE_BYTES as u64;
                    if gfn >= mem_pages {
                        return Err(StreamError::BadMessage(format!("PAGE at {:#x}, beyond the domain's {} bytes", d.arg, record.mem_bytes)));
                    }
                    if gfn < next_gfn {
                        return Err(StreamError::BadMessage(format!("PAGE at {:#x} out of order", d.arg)));
                    }
                    if run_len > 0 && (gfn != run_first + run_len as u64 || run_len == RUN_PAGES) {
                        enc.memory(run_first, &run[..run_len * PAGE_BYTES])?;
                        run_len = 0;
                    }
                    if run_len == 0 {
                        run_first = gfn;
                    }
                    // The PAGEs right after it that continue it (the next page in the next
                    // slot, with room in the run) come in the same read.
                    let mut n = 1usize;
                    while run_len + n < RUN_PAGES && at.wrapping_add(n as u32) != h.prod && (at % h.slots) as usize + n < h.slots as usize {
                        let e = h.desc(at.wrapping_add(n as u32));
                        let next = gfn + n as u64;
                        if e.kind != msg::PAGE || e.len as usize != PAGE_BYTES || e.arg != next * PAGE_BYTES as u64 || next >= mem_pages {
                            break;
                        }
                        n += 1;
                    }
                    ctl.mem_read(id, slot_gpa, &mut run[run_len * PAGE_BYTES..(run_len + n) * PAGE_BYTES])?;
                    *cons = cons.wrapping_add(n as u32 - 1);
                    run_len += n;
                    next_gfn = gfn + n as u64;
                    count += n as u64;
                }
                msg::END => {
                    if d.arg != count {
                        return Err(StreamError::BadMessage(format!("END counts {} pages, {} were sent", d.arg, count)));
                    }
                    if run_len > 0 {
                        enc.memory(run_first, &run[..run_len * PAGE_BYTES])?;
                    }
                    let (_, _, stats) = enc.finish()?;
                    return Ok((count, stats.bytes));
                }
                msg::ABORT => return Err(StreamError::CutOff("the guest aborted")),
                k => return Err(StreamError::BadMessage(format!("kind {k} in a stream"))),
            }
        }
    }
}

#[cfg(test)]
#[path = "selfckpt_tests.rs"]
mod tests;

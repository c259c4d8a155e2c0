//! The dom0 channel and self-checkpoints (docs/self-checkpoint.md).
//!
//! A **channel** is a ring in a guest's own memory that dom0 reads and acknowledges: the guest
//! registers it with [`nr::CHANNEL_OPEN`](crate::hypercall::nr::CHANNEL_OPEN) (only if dom0
//! allowed it), writes [`Desc`]riptors and slot pages, advances [`ring::PROD_OFFSET`] and
//! kicks dom0 with [`nr::CHANNEL_NOTIFY`](crate::hypercall::nr::CHANNEL_NOTIFY) (event
//! [`crate::hypercall::event::CHANNEL`] there), which it needs to do only when the message
//! went into an empty ring or the ring is full: dom0 reads the producer index again after
//! writing the consumer index, before it waits. dom0 consumes, advances
//! [`ring::CONS_OFFSET`], writes its answer at [`ring::STATUS_OFFSET`] and kicks back.
//!
//! A **self-checkpoint**: [`nr::SELF_CHECKPOINT`](crate::hypercall::nr::SELF_CHECKPOINT)
//! starts a copy-on-write epoch of the caller and returns [`TAKEN`]; a domain restored from
//! that checkpoint returns from the same call with [`RESTORED`]. The caller reads its frozen
//! memory with [`nr::SELF_CHECKPOINT_READ`](crate::hypercall::nr::SELF_CHECKPOINT_READ) and
//! streams it to dom0: [`msg::BEGIN`], one [`msg::PAGE`] per page in ascending order,
//! [`msg::END`]. dom0 stores an ordinary image whose registers, devices and clock come from
//! the hypervisor's epoch, never from the guest.

/// What `self_checkpoint` returns in the domain that asked.
pub const TAKEN: u64 = 0;
/// What `self_checkpoint` returns in a domain restored from that checkpoint.
pub const RESTORED: u64 = 1;
/// Most pages one `self_checkpoint_read` copies.
pub const READ_MAX_PAGES: u64 = 16;
/// How long an epoch may last (guest time) before the hypervisor reclaims it.
pub const EPOCH_MAX_NS: u64 = 120_000_000_000;
/// Most slot pages a ring may have.
pub const MAX_SLOTS: u32 = 64;

/// The ring: a header page, then `slots` data pages, in the guest's memory.
pub mod ring {
    /// The header's first word.
    pub const MAGIC: u32 = u32::from_le_bytes(*b"CHN1");
    /// Offset of [`MAGIC`] (u32, guest).
    pub const MAGIC_OFFSET: u64 = 0;
    /// Offset of the slot count (u32, guest; 1 to [`super::MAX_SLOTS`]).
    pub const SLOTS_OFFSET: u64 = 4;
    /// Offset of the producer index (u32, guest). Indices run freely; slot = index % slots.
    pub const PROD_OFFSET: u64 = 8;
    /// Offset of the consumer index (u32, dom0).
    pub const CONS_OFFSET: u64 = 12;
    /// Offset of dom0's answer to the last stream ([`super::status`], u32, dom0).
    pub const STATUS_OFFSET: u64 = 16;
    /// Offset of the first descriptor.
    pub const DESC0_OFFSET: u64 = 64;
    /// Bytes of one descriptor ([`super::Desc`]).
    pub const DESC_BYTES: u64 = 16;
}

/// One message: its kind, its length in its slot page, and its argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Desc {
    /// One of [`msg`].
    pub kind: u32,
    /// Bytes used in the slot page.
    pub len: u32,
    /// The kind's argument.
    pub arg: u64,
}

impl Desc {
    /// Its bytes on the ring.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.kind.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.arg.to_le_bytes());
        b
    }

    /// From its bytes on the ring.
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[8..16]);
        Self { kind: w(0), len: w(4), arg: u64::from_le_bytes(a) }
    }
}

/// Message kinds of a self-checkpoint stream.
pub mod msg {
    /// Starts a stream; slot: the image tag (1 to [`super::TAG_MAX_BYTES`] of `a-z0-9_-`),
    /// arg: the domain's memory size in bytes.
    pub const BEGIN: u32 = 1;
    /// One page of the checkpoint; slot: its 4096 bytes, arg: its guest-physical address.
    pub const PAGE: u32 = 2;
    /// Ends a stream; arg: the number of PAGE messages sent.
    pub const END: u32 = 3;
    /// The guest gives the stream up.
    pub const ABORT: u32 = 4;
}

/// Longest image tag (dom0 names the image `DOMAIN.TAG`).
pub const TAG_MAX_BYTES: usize = 24;

/// dom0's answer to a stream, at [`ring::STATUS_OFFSET`].
pub mod status {
    /// No answer yet.
    pub const PENDING: u32 = 0;
    /// The image is in the store.
    pub const STORED: u32 = 1;
    /// Refused: a malformed message (kind, length, order, an address beyond memory).
    pub const BAD_MESSAGE: u32 = 2;
    /// Refused: the caller has no checkpoint epoch running.
    pub const NO_EPOCH: u32 = 3;
    /// Refused: the tag is not a valid name, or the image exists already.
    pub const BAD_NAME: u32 = 4;
    /// Refused: the store failed or is full.
    pub const STORE_FAILED: u32 = 5;
    /// Refused: the stream stopped (no progress within dom0's time limit) or was aborted.
    pub const CUT_OFF: u32 = 6;
}

/// dom0's view of a domain's channel (`dom_channel(INFO)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ChannelInfo {
    /// Where the ring is in the guest's memory (0: none registered).
    pub ring_gpa: u64,
    /// Pages of the ring (header + slots).
    pub pages: u32,
    /// The domain's running self-checkpoint epoch, or `domctl::NO_DOMAIN`.
    pub epoch: u32,
}

/// Operations of `dom_channel(op, domid, arg)` (dom0).
pub mod op {
    /// Allow (`arg` 1) or forbid (0) the domain a channel; forbidding closes an open one.
    pub const ALLOW: u64 = 0;
    /// The next domain that kicked its channel since dom0 last asked (its kick is taken),
    /// or `domctl::NO_DOMAIN`.
    pub const NEXT: u64 = 1;
    /// Writes the domain's [`super::ChannelInfo`] at dom0's `arg`.
    pub const INFO: u64 = 2;
    /// Raises [`crate::hypercall::event::CHANNEL`] in the domain (dom0 has answered).
    pub const KICK: u64 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_through_their_bytes() {
        let d = Desc { kind: msg::PAGE, len: 4096, arg: 0x1234_5000 };
        assert_eq!(Desc::from_bytes(&d.to_bytes()), d);
        assert_eq!(core::mem::size_of::<Desc>() as u64, ring::DESC_BYTES);
        assert!(ring::DESC0_OFFSET + u64::from(MAX_SLOTS) * ring::DESC_BYTES <= 4096);
    }
}

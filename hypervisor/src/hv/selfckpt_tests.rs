//! Host tests of guest channels and self-checkpoints: who may open a channel, the kick that
//! reaches dom0, the epoch that returns twice, reads confined to the caller's own epoch, a
//! second checkpoint refused, and epochs reclaimed when abandoned or when the guest ends.

use super::*;
use guest_abi::channel::{ChannelInfo, EPOCH_MAX_NS, RESTORED, TAKEN, op};
use guest_abi::hypercall::event;

const RING_GPA: u64 = 0x40_0000;
const DST_GPA: u64 = 0x50_0000;

fn allow(h: &mut Hv, d0: DomId, d: DomId) {
    call(h, d0, nr::DOM_CHANNEL, &[op::ALLOW, u64::from(d), 1]).unwrap();
}

fn info(h: &mut Hv, d0: DomId, d: DomId) -> ChannelInfo {
    call(h, d0, nr::DOM_CHANNEL, &[op::INFO, u64::from(d), 0x20_0000]).unwrap();
    h.read_struct(d0, 0x20_0000, ChannelInfo::default()).unwrap()
}

#[test]
fn only_a_domain_dom0_allowed_opens_a_channel_and_its_kick_reaches_dom0() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let g = started(&mut h, "g", 8 * MIB);
    assert_eq!(call(&mut h, g, nr::CHANNEL_OPEN, &[RING_GPA, 4]), Err(HvError::NotPermitted));
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT, &[]), Err(HvError::NotPermitted));
    assert_eq!(call(&mut h, g, nr::DOM_CHANNEL, &[op::ALLOW, u64::from(g), 1]), Err(HvError::NotPermitted), "a guest allows itself nothing");
    allow(&mut h, d0, g);
    assert_eq!(call(&mut h, g, nr::CHANNEL_NOTIFY, &[]), Err(HvError::WrongState), "no ring yet");
    assert_eq!(call(&mut h, g, nr::CHANNEL_OPEN, &[RING_GPA + 1, 4]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, g, nr::CHANNEL_OPEN, &[RING_GPA, 1]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, g, nr::CHANNEL_OPEN, &[8 * MIB - PAGE_SIZE, 4]), Err(HvError::BadAddress));
    assert_eq!(call(&mut h, g, nr::CHANNEL_OPEN, &[RING_GPA, 4]), Ok(0));
    assert_eq!(info(&mut h, d0, g), ChannelInfo { ring_gpa: RING_GPA, pages: 4, epoch: NO_DOMAIN });
    assert_eq!(call(&mut h, d0, nr::DOM_CHANNEL, &[op::NEXT, 0, 0]), Ok(u64::from(NO_DOMAIN)));
    h.domains.get_mut(d0).unwrap().events.pending = 0;
    call(&mut h, g, nr::CHANNEL_NOTIFY, &[]).unwrap();
    assert!(h.domains.get(d0).unwrap().events.pending & event::CHANNEL != 0);
    assert_eq!(call(&mut h, d0, nr::DOM_CHANNEL, &[op::NEXT, 0, 0]), Ok(u64::from(g)));
    assert_eq!(call(&mut h, d0, nr::DOM_CHANNEL, &[op::NEXT, 0, 0]), Ok(u64::from(NO_DOMAIN)), "a kick is taken once");
    call(&mut h, d0, nr::DOM_CHANNEL, &[op::KICK, u64::from(g), 0]).unwrap();
    assert!(h.domains.get(g).unwrap().events.pending & event::CHANNEL != 0);
    assert_eq!(call(&mut h, d0, nr::DOM_CHANNEL, &[9, u64::from(g), 0]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, d0, nr::DOM_CHANNEL, &[op::ALLOW, u64::from(d0), 1]), Err(HvError::NotPermitted));
    // Forbidding closes it.
    call(&mut h, d0, nr::DOM_CHANNEL, &[op::ALLOW, u64::from(g), 0]).unwrap();
    assert_eq!(call(&mut h, g, nr::CHANNEL_NOTIFY, &[]), Err(HvError::NotPermitted));
}

#[test]
fn a_self_checkpoint_returns_taken_now_and_restored_in_its_epoch_and_keeps_its_instant() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let g = started(&mut h, "g", 8 * MIB);
    allow(&mut h, d0, g);
    for p in 0..32 {
        guest_write(&mut h, g, 0x10_0000 + p * PAGE_SIZE, 100 + p);
    }
    let free = h.frames.free_frames();
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT, &[]), Ok(TAKEN));
    assert_eq!(free - h.frames.free_frames(), 1, "an epoch costs one frame, whatever the guest's size");
    let e = info(&mut h, d0, g).epoch;
    assert_ne!(e, NO_DOMAIN);
    let epoch = h.domains.get(e).unwrap();
    assert_eq!(epoch.name.as_str(), "g.self");
    assert_eq!(epoch.frozen_context.as_ref().unwrap().rax, RESTORED, "the restored copy returns RESTORED from the same call");
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT, &[]), Err(HvError::Busy), "one at a time");
    for p in 0..32 {
        guest_write(&mut h, g, 0x10_0000 + p * PAGE_SIZE, 900 + p);
    }
    call(&mut h, g, nr::SELF_CHECKPOINT_READ, &[0x10_0000, DST_GPA, 16]).unwrap();
    for p in 0..16 {
        assert_eq!(guest_read(&h, g, DST_GPA + p * PAGE_SIZE), 100 + p, "the epoch, not the memory now");
    }
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT_READ, &[0x10_0000, DST_GPA, 17]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT_READ, &[0x10_0001, DST_GPA, 1]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT_READ, &[8 * MIB - PAGE_SIZE, DST_GPA, 2]), Err(HvError::BadAddress), "beyond its memory");
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT_READ, &[0, 8 * MIB, 1]), Err(HvError::BadAddress));
    h.check_invariants().unwrap();
    call(&mut h, g, nr::SELF_CHECKPOINT_END, &[]).unwrap();
    assert!(h.domains.get(e).is_none(), "the epoch is gone");
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT_READ, &[0, DST_GPA, 1]), Err(HvError::WrongState));
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT_END, &[]), Err(HvError::WrongState));
    h.check_invariants().unwrap();
}

#[test]
fn a_guest_reads_only_its_own_epoch() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let a = started(&mut h, "a", 8 * MIB);
    let b = started(&mut h, "b", 8 * MIB);
    allow(&mut h, d0, a);
    allow(&mut h, d0, b);
    guest_write(&mut h, a, 0x10_0000, 0xAAAA);
    guest_write(&mut h, b, 0x10_0000, 0xBBBB);
    call(&mut h, a, nr::SELF_CHECKPOINT, &[]).unwrap();
    assert_eq!(call(&mut h, b, nr::SELF_CHECKPOINT_READ, &[0x10_0000, DST_GPA, 1]), Err(HvError::WrongState), "b has no epoch; a's is not reachable");
    call(&mut h, b, nr::SELF_CHECKPOINT, &[]).unwrap();
    call(&mut h, b, nr::SELF_CHECKPOINT_READ, &[0x10_0000, DST_GPA, 1]).unwrap();
    assert_eq!(guest_read(&h, b, DST_GPA), 0xBBBB);
    assert_eq!(call(&mut h, d0, nr::SELF_CHECKPOINT, &[]), Err(HvError::NotPermitted), "dom0 has no channel");
}

#[test]
fn an_abandoned_epoch_is_reclaimed_at_its_time_limit_and_when_its_guest_ends() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let free = h.frames.free_frames();
    let g = started(&mut h, "g", 8 * MIB);
    allow(&mut h, d0, g);
    call(&mut h, g, nr::SELF_CHECKPOINT, &[]).unwrap();
    for p in 0..16 {
        guest_write(&mut h, g, 0x10_0000 + p * PAGE_SIZE, p);
    }
    let e = info(&mut h, d0, g).epoch;
    let start = h.platform.now.get();
    h.expire_epochs(start + EPOCH_MAX_NS - 1);
    assert!(h.domains.get(e).is_some(), "not before its limit");
    h.platform.now.set(start + EPOCH_MAX_NS - 1);
    h.platform.now.set(h.platform.now.get() + 2);
    h.run_once();
    assert!(h.domains.get(e).is_none(), "reclaimed at its limit");
    assert_eq!(info(&mut h, d0, g).epoch, NO_DOMAIN);
    // A new one may start; the guest then dies and its epoch goes with it.
    call(&mut h, g, nr::SELF_CHECKPOINT, &[]).unwrap();
    let e = info(&mut h, d0, g).epoch;
    h.exit(g, 0);
    assert!(h.domains.get(e).is_none());
    h.destroy_domain(g).unwrap();
    assert_eq!(h.frames.free_frames(), free, "every frame back");
    h.check_invariants().unwrap();
}

#[test]
fn dom0_may_end_an_epoch_by_destroying_it_and_the_guest_may_start_another() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let g = started(&mut h, "g", 8 * MIB);
    allow(&mut h, d0, g);
    call(&mut h, g, nr::SELF_CHECKPOINT, &[]).unwrap();
    let e = info(&mut h, d0, g).epoch;
    call(&mut h, d0, nr::DOM_DESTROY, &[u64::from(e)]).unwrap();
    assert_eq!(info(&mut h, d0, g).epoch, NO_DOMAIN);
    assert_eq!(call(&mut h, g, nr::SELF_CHECKPOINT, &[]), Ok(TAKEN));
    h.check_invariants().unwrap();
}

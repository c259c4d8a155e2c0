//! Host tests of the save/restore mechanism: checkpoint epochs, the saved state and its
//! validation, clocks that continue across restores, the private-page map, and the disk
//! ports only dom0 reaches.

use super::*;
use guest_abi::domctl::CLONE_PAUSED;
use guest_abi::hypercall::event;
use guest_abi::saved::{BLOCKED_CALL, NO_PARENT, SavedState};

fn snapshot_name(h: &mut Hv, d0: DomId, src: DomId, name: &str) -> Result<u64, HvError> {
    let gpa = 0x20_0000;
    h.write_guest(d0, gpa, name.as_bytes(), false).unwrap();
    call(h, d0, nr::DOM_SNAPSHOT, &[u64::from(src), gpa, name.len() as u64])
}

#[test]
fn a_checkpoint_epoch_keeps_its_instant_while_the_domain_writes_on() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let d = started(&mut h, "web", 8 * MIB);
    for g in 0..64 {
        guest_write(&mut h, d, 0x10_0000 + g * PAGE_SIZE, 1000 + g);
    }
    let free_before = h.frames.free_frames();
    let s = snapshot_name(&mut h, d0, d, "web.ckpt").unwrap() as DomId;
    // One frame (the snapshot's root), whatever the domain's size.
    assert_eq!(free_before - h.frames.free_frames(), 1);
    assert_eq!(h.domains.get(s).unwrap().life, Life::Frozen);
    assert_eq!(h.domains.get(s).unwrap().snapshot_of, Some(d));
    for g in 0..64 {
        guest_write(&mut h, d, 0x10_0000 + g * PAGE_SIZE, 2000 + g);
    }
    for g in 0..64 {
        assert_eq!(guest_read(&h, s, 0x10_0000 + g * PAGE_SIZE), 1000 + g);
        assert_eq!(guest_read(&h, d, 0x10_0000 + g * PAGE_SIZE), 2000 + g);
    }
    h.check_invariants().unwrap();
    // Ending the epoch gives back the pages only the snapshot still held.
    let held = h.frames.free_frames();
    h.destroy_domain(s).unwrap();
    assert!(h.frames.free_frames() >= held + 64);
    h.check_invariants().unwrap();
    // The domain goes on writing (its pages are its own again) and is destroyed cleanly.
    guest_write(&mut h, d, 0x10_0000, 3000);
    assert_eq!(guest_read(&h, d, 0x10_0000), 3000);
    h.destroy_domain(d).unwrap();
    h.check_invariants().unwrap();
}

#[test]
fn a_snapshot_costs_the_same_for_a_small_and_a_large_domain() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let mut cost = Vec::new();
    for (name, mib) in [("small", 2), ("large", 48)] {
        let d = started(&mut h, name, mib * MIB);
        let before = h.frames.free_frames();
        let s = snapshot_name(&mut h, d0, d, &alloc::format!("{name}.ckpt")).unwrap() as DomId;
        cost.push(before - h.frames.free_frames());
        h.destroy_domain(s).unwrap();
        h.destroy_domain(d).unwrap();
    }
    assert_eq!(cost[0], cost[1]);
}

#[test]
fn snapshots_are_refused_for_dom0_templates_and_unprivileged_callers() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let u = started(&mut h, "u", 4 * MIB);
    let t = template(&mut h, 4);
    assert_eq!(snapshot_name(&mut h, d0, d0, "x"), Err(HvError::NotPermitted));
    assert_eq!(snapshot_name(&mut h, d0, t, "x"), Err(HvError::WrongState));
    assert_eq!(call(&mut h, u, nr::DOM_SNAPSHOT, &[u64::from(t), 0, 0]), Err(HvError::NotPermitted));
    assert_eq!(snapshot_name(&mut h, d0, u, "tpl"), Err(HvError::NameTaken));
}

#[test]
fn the_saved_state_of_a_snapshot_is_the_instant_it_was_taken() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let d = started(&mut h, "web", 4 * MIB);
    assert_eq!(call(&mut h, d, nr::SET_UPCALL, &[0x40]), Ok(0));
    vcpu(&mut h, d).ext.dr[1] = 0x1234_5000;
    let s = snapshot_name(&mut h, d0, d, "web.ckpt").unwrap() as DomId;
    let first = h.saved_state(s).unwrap();
    h.platform.now.set(h.platform.now.get() + 5_000_000_000);
    let later = h.saved_state(s).unwrap();
    assert_eq!(first, later, "a frozen state does not age");
    assert_eq!(first.upcall_vector, 0x40);
    assert_eq!(first.extended.dr[1], 0x1234_5000);
    assert_eq!(first.parent, NO_PARENT);
    assert!(h.saved_state(d).unwrap().guest_time_ns > first.guest_time_ns + 4_000_000_000);
}

fn paused(h: &mut Hv, name: &str) -> DomId {
    let id = h.create_domain(name, 4 * MIB, false).unwrap();
    let mut info = StartInfo::empty();
    info.domid = 77;
    info.generation = 3;
    h.write_guest(id, START_INFO_GPA, info.as_bytes(), true).unwrap();
    id
}

#[test]
fn a_restored_domain_gets_a_new_generation_the_restored_event_and_its_own_clock() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let r = paused(&mut h, "restored");
    let generation = h.domains.get(r).unwrap().generation;
    let state = SavedState { guest_time_ns: 9_000_000_000_000, guest_tsc: 1 << 50, upcall_vector: 0x50, ..SavedState::default() };
    h.write_guest(d0, 0x20_0000, unsafe { guest_abi::bytes_of(&state) }, false).unwrap();
    assert_eq!(call(&mut h, d0, nr::DOM_STATE_SET, &[u64::from(r), 0x20_0000]), Ok(0));
    let d = h.domains.get(r).unwrap();
    assert_ne!(d.generation, generation);
    assert_eq!(d.events.pending & event::RESTORED, event::RESTORED);
    assert_eq!(d.events.upcall_vector, 0x50);
    let new_generation = d.generation;
    // The clock continues from the saved instant and runs on, in this "boot" or another.
    h.unpause(r).unwrap();
    let t1 = call(&mut h, r, nr::TIME, &[]).unwrap();
    assert!((9_000_000_000_000..9_000_000_100_000).contains(&t1), "{t1}");
    let t2 = call(&mut h, r, nr::TIME, &[]).unwrap();
    assert!(t2 > t1);
    let tsc = h.platform.cycles().wrapping_add(vcpu(&mut h, r).tsc_offset);
    assert!(((1 << 50)..(1 << 50) + 100_000).contains(&tsc));
    // The start-of-day page names the new domain and generation and says it was restored.
    let mut info = StartInfo::empty();
    h.read_guest(r, START_INFO_GPA, unsafe { guest_abi::bytes_of_mut(&mut info) }).unwrap();
    assert_eq!((info.domid, info.generation, info.parent), (r, new_generation, NO_PARENT));
    assert!(StartFlags::from_bits_retain(info.flags).contains(StartFlags::RESTORED));
    // Clones of a restored template inherit its clock.
    h.freeze(r, false).unwrap();
    let c = h.clone_domain(r, &clone_args("c", 0, QUOTA_DEFAULT)).unwrap();
    assert!(call(&mut h, c, nr::TIME, &[]).unwrap() > t2);
    let template_offset = h.domains.get(r).unwrap().tsc_offset;
    assert_eq!(vcpu(&mut h, c).tsc_offset, template_offset);
}

#[test]
fn a_restored_state_that_would_fault_the_host_is_refused_and_changes_nothing() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let r = paused(&mut h, "restored");
    let good = SavedState::default();
    let mut bad_mxcsr = good;
    bad_mxcsr.extended.fxsave[24..28].copy_from_slice(&0x1_0000u32.to_le_bytes());
    let mut bad_dr = good;
    bad_dr.extended.dr[3] = 0x8000_0000_0000;
    let mut bad_dr6 = good;
    bad_dr6.extended.dr6 = 1 << 33;
    let bads = [
        bad_mxcsr,
        bad_dr,
        bad_dr6,
        SavedState { upcall_vector: 16, ..good },
        SavedState { upcall_vector: 256, ..good },
        SavedState { events_pending: 1 << 40, ..good },
        SavedState { blocked: 3, ..good },
        SavedState { upcall_in_service: 2, ..good },
        SavedState { reserved: 1, ..good },
    ];
    let generation = h.domains.get(r).unwrap().generation;
    for bad in bads {
        h.write_guest(d0, 0x20_0000, unsafe { guest_abi::bytes_of(&bad) }, false).unwrap();
        assert_eq!(call(&mut h, d0, nr::DOM_STATE_SET, &[u64::from(r), 0x20_0000]), Err(HvError::InvalidArgument), "{bad:?}");
        let d = h.domains.get(r).unwrap();
        assert_eq!((d.generation, d.events.pending, d.clock_offset_ns), (generation, 0, 0));
    }
    // Only paused live domains take a state.
    h.unpause(r).unwrap();
    h.write_guest(d0, 0x20_0000, unsafe { guest_abi::bytes_of(&good) }, false).unwrap();
    assert_eq!(call(&mut h, d0, nr::DOM_STATE_SET, &[u64::from(r), 0x20_0000]), Err(HvError::WrongState));
}

#[test]
fn a_domain_saved_inside_block_wakes_with_the_pending_events_in_rax() {
    let mut h = hv();
    let r = paused(&mut h, "restored");
    let state = SavedState { blocked: BLOCKED_CALL, has_deadline: 1, block_remaining_ns: 1_000_000, ..SavedState::default() };
    vcpu(&mut h, r).regs.rax = nr::BLOCK;
    h.restore_state(r, &state).unwrap();
    assert!(!h.domains.get(r).unwrap().blocked);
    assert_eq!(vcpu(&mut h, r).regs.rax, event::RESTORED);
}

#[test]
fn the_private_map_names_exactly_the_pages_a_clone_made_its_own() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let t = template(&mut h, 8);
    let c = h.clone_domain(t, &CloneArgs { flags: CLONE_PAUSED, ..clone_args("c", 0, QUOTA_DEFAULT) }).unwrap();
    assert!(h.domains.get(c).unwrap().paused.is_some(), "CLONE_PAUSED");
    h.unpause(c).unwrap();
    for g in [0x105u64, 0x200, 0x201, 0x7FF] {
        guest_write(&mut h, c, g * PAGE_SIZE, g);
    }
    let pages = 8 * MIB / PAGE_SIZE;
    let out = 0x20_0000;
    assert_eq!(call(&mut h, d0, nr::MEM_PRIVATE_MAP, &[u64::from(c), 0, out, pages]), Ok(pages));
    let mut map = vec![0u8; (pages / 8) as usize];
    h.read_guest(d0, out, &mut map).unwrap();
    let private: Vec<u64> = (0..pages).filter(|g| map[(g / 8) as usize] & (1 << (g % 8)) != 0).collect();
    // The start-of-day page is the clone's own too.
    assert_eq!(private, [1, 0x105, 0x200, 0x201, 0x7FF]);
    // Asking past the end covers only what exists; a zero or huge count is refused.
    assert_eq!(call(&mut h, d0, nr::MEM_PRIVATE_MAP, &[u64::from(c), pages - 3, out, 64]), Ok(3));
    assert_eq!(call(&mut h, d0, nr::MEM_PRIVATE_MAP, &[u64::from(c), 0, out, 0]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, d0, nr::MEM_PRIVATE_MAP, &[u64::from(c), 0, out, 1 << 40]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, d0, nr::MEM_PRIVATE_MAP, &[u64::from(c), pages + 1, out, 8]), Err(HvError::InvalidArgument));
}

#[test]
fn only_dom0s_vcpu_reaches_the_disk_ports() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let u = started(&mut h, "u", 4 * MIB);
    assert!(vcpu(&mut h, d0).ports_granted);
    assert!(!vcpu(&mut h, u).ports_granted);
    let t = template(&mut h, 1);
    let c = h.clone_domain(t, &clone_args("c", 0, QUOTA_DEFAULT)).unwrap();
    assert!(!vcpu(&mut h, c).ports_granted);
    // Another domain's accesses to those ports exit and read all-ones.
    vcpu(&mut h, u).regs.rax = 0;
    h.handle_exit(u, Exit::Io { port: 0x170, size: 2, write: false, string: false });
    assert_eq!(vcpu(&mut h, u).regs.rax & 0xFFFF, 0xFFFF);
}

/// A running PC domain whose devices hold state: typed-ahead UART bytes, its scratch
/// register, a masked 8259 and a CMOS index.
fn pc_domain(h: &mut Hv, name: &str) -> DomId {
    let id = started(h, name, 4 * MIB);
    h.give_pc_platform(id);
    let pc = h.domains.get_mut(id).unwrap().pc.as_deref_mut().unwrap();
    for (port, v) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xEF), (0x3FF, 0x5A), (0x70, 0x0B)] {
        pc.io_write(port, v).unwrap();
    }
    assert_eq!(pc.receive(b"uname -a\r"), 9);
    id
}

fn platform_bytes(h: &Hv, id: DomId) -> [u8; crate::pc::PC_STATE_BYTES] {
    crate::pc::state::encode(h.domains.get(id).unwrap().pc.as_deref().unwrap())
}

const PLATFORM_GPA: u64 = 0x20_0000;

fn platform_get(h: &mut Hv, d0: DomId, id: DomId, len: u64) -> Result<Vec<u8>, HvError> {
    let n = call(h, d0, nr::DOM_PLATFORM_GET, &[u64::from(id), PLATFORM_GPA, len])?;
    let mut out = vec![0u8; n as usize];
    h.read_guest(d0, PLATFORM_GPA, &mut out).unwrap();
    Ok(out)
}

fn platform_set(h: &mut Hv, d0: DomId, id: DomId, bytes: &[u8]) -> Result<u64, HvError> {
    h.write_guest(d0, PLATFORM_GPA, bytes, false).unwrap();
    call(h, d0, nr::DOM_PLATFORM_SET, &[u64::from(id), PLATFORM_GPA, bytes.len() as u64])
}

#[test]
fn a_platform_got_from_one_domain_and_set_on_another_brings_its_devices() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let src = pc_domain(&mut h, "linux");
    h.pause(src, PauseReason::User).unwrap();
    let bytes = platform_get(&mut h, d0, src, nr::PLATFORM_STATE_MAX_BYTES).unwrap();
    assert_eq!(bytes.len(), crate::pc::PC_STATE_BYTES);
    assert_eq!(bytes[..], platform_bytes(&h, src)[..]);
    // A domain created without the platform gets it, with every device's state.
    let dst = paused(&mut h, "restored");
    assert!(h.domains.get(dst).unwrap().pc.is_none());
    assert_eq!(h.domain_info(dst).unwrap().flags & domctl::DomainFlags::PC_PLATFORM.bits(), 0);
    assert_eq!(platform_set(&mut h, d0, dst, &bytes), Ok(0));
    assert_eq!(platform_bytes(&h, dst)[..], bytes[..]);
    assert_ne!(h.domain_info(dst).unwrap().flags & domctl::DomainFlags::PC_PLATFORM.bits(), 0);
    let pc = h.domains.get_mut(dst).unwrap().pc.as_deref_mut().unwrap();
    assert_eq!(pc.io_read(0x3FF, 1, 0), Some(0x5A));
    assert_eq!(pc.io_read(0x21, 1, 0), Some(0xEF));
    assert_eq!(pc.uart.rx_waiting(), 9);
    // A domain that had one has it replaced.
    let other = pc_domain(&mut h, "other");
    h.domains.get_mut(other).unwrap().pc.as_deref_mut().unwrap().io_write(0x3FF, 0x11).unwrap();
    h.pause(other, PauseReason::User).unwrap();
    assert_eq!(platform_set(&mut h, d0, other, &bytes), Ok(0));
    assert_eq!(platform_bytes(&h, other)[..], bytes[..]);
    h.check_invariants().unwrap();
}

#[test]
fn templates_and_checkpoint_epochs_keep_the_platform_of_their_instant() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let d = pc_domain(&mut h, "linux");
    let before = platform_bytes(&h, d);
    let s = snapshot_name(&mut h, d0, d, "linux.ckpt").unwrap() as DomId;
    // The domain runs on and its devices change; the epoch's do not.
    h.domains.get_mut(d).unwrap().pc.as_deref_mut().unwrap().io_write(0x3FF, 0x99).unwrap();
    assert_eq!(platform_get(&mut h, d0, s, 4096).unwrap()[..], before[..]);
    assert_ne!(platform_get(&mut h, d0, d, 4096).unwrap()[..], before[..]);
    h.destroy_domain(s).unwrap();
    // A template keeps its platform, and hands it out.
    h.freeze(d, false).unwrap();
    let frozen = platform_get(&mut h, d0, d, 4096).unwrap();
    assert_eq!(frozen[..], platform_bytes(&h, d)[..]);
    assert_eq!(frozen[196 + 3], 0x99, "the UART scratch register as frozen");
    h.check_invariants().unwrap();
}

#[test]
fn platform_calls_refuse_bad_targets_lengths_states_and_bytes_and_change_nothing() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let pc = pc_domain(&mut h, "linux");
    let plain = paused(&mut h, "plain");
    h.pause(pc, PauseReason::User).unwrap();
    let good = platform_get(&mut h, d0, pc, 4096).unwrap();
    // No platform; a short buffer; no such domain; a pointer outside dom0.
    assert_eq!(platform_get(&mut h, d0, plain, 4096), Err(HvError::InvalidArgument));
    assert_eq!(platform_get(&mut h, d0, pc, good.len() as u64 - 1), Err(HvError::BufferTooSmall));
    assert_eq!(platform_get(&mut h, d0, 999, 4096), Err(HvError::NoSuchDomain));
    assert_eq!(call(&mut h, d0, nr::DOM_PLATFORM_GET, &[u64::from(pc), 1 << 40, 4096]), Err(HvError::BadAddress));
    // Set: dom0 itself, a running domain, a template, a wrong length, corrupted bytes.
    assert_eq!(platform_set(&mut h, d0, d0, &good), Err(HvError::NotPermitted));
    let running = pc_domain(&mut h, "running");
    assert_eq!(platform_set(&mut h, d0, running, &good), Err(HvError::WrongState));
    let t = template(&mut h, 1);
    assert_eq!(platform_set(&mut h, d0, t, &good), Err(HvError::WrongState));
    assert_eq!(platform_set(&mut h, d0, plain, &good[..good.len() - 1]), Err(HvError::InvalidArgument));
    let mut bad = good.clone();
    bad[196 + 8] = 0xFF; // the receive buffer's head, far beyond it
    bad[196 + 9] = 0xFF;
    assert_eq!(platform_set(&mut h, d0, plain, &bad), Err(HvError::InvalidArgument));
    assert!(h.domains.get(plain).unwrap().pc.is_none(), "a refused state gives no platform");
    let mut bad = good.clone();
    bad[4] = 9; // version
    assert_eq!(platform_set(&mut h, d0, pc, &bad), Err(HvError::InvalidArgument));
    assert_eq!(platform_bytes(&h, pc)[..], good[..], "a refused state changes nothing");
    assert_eq!(call(&mut h, d0, nr::DOM_PLATFORM_SET, &[u64::from(plain), 1 << 40, good.len() as u64]), Err(HvError::BadAddress));
    // Unprivileged callers get neither call.
    let u = started(&mut h, "u", 2 * MIB);
    h.write_guest(u, 0x10_0000, &good, false).unwrap();
    assert_eq!(call(&mut h, u, nr::DOM_PLATFORM_GET, &[u64::from(pc), 0x10_0000, 4096]), Err(HvError::NotPermitted));
    assert_eq!(call(&mut h, u, nr::DOM_PLATFORM_SET, &[u64::from(plain), 0x10_0000, good.len() as u64]), Err(HvError::NotPermitted));
    assert!(h.domains.get(plain).unwrap().pc.is_none());
    h.check_invariants().unwrap();
}

#[test]
fn console_input_refuses_long_writes_wild_pointers_and_non_pc_domains_and_takes_what_fits() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let lx = pc_domain(&mut h, "linux");
    let plain = started(&mut h, "plain", 4 * MIB);
    h.write_guest(d0, PLATFORM_GPA, &[b'x'; 256], false).unwrap();
    let input = |h: &mut Hv, t: DomId, gpa: u64, len: u64| call(h, d0, nr::DOM_CONSOLE_INPUT, &[u64::from(t), gpa, len]);
    assert_eq!(input(&mut h, lx, PLATFORM_GPA, nr::CONSOLE_INPUT_MAX_BYTES + 1), Err(HvError::InvalidArgument));
    assert_eq!(input(&mut h, lx, u64::MAX - 8, 16), Err(HvError::BadAddress));
    assert_eq!(input(&mut h, plain, PLATFORM_GPA, 4), Err(HvError::InvalidArgument));
    assert_eq!(input(&mut h, lx, PLATFORM_GPA, 0), Ok(0));
    // pc_domain typed 9 bytes already; the 256-byte buffer takes 247 more, then none.
    assert_eq!(input(&mut h, lx, PLATFORM_GPA, 256), Ok(247));
    assert_eq!(input(&mut h, lx, PLATFORM_GPA, 16), Ok(0));
    assert_eq!(call(&mut h, lx, nr::DOM_CONSOLE_INPUT, &[u64::from(plain), PLATFORM_GPA, 4]), Err(HvError::NotPermitted));
}

#[test]
fn agent_leaves_park_report_identity_and_never_repeat_entropy() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let lx = pc_domain(&mut h, "linux");
    let cpuid = |h: &mut Hv, id: DomId, leaf: u32, sub: u32| {
        let v = vcpu(h, id);
        (v.regs.rax, v.regs.rcx) = (u64::from(leaf), u64::from(sub));
        h.handle_exit(id, Exit::Cpuid);
        let r = vcpu(h, id).regs;
        [r.rax as u32, r.rbx as u32, r.rcx as u32, r.rdx as u32]
    };
    let e1 = cpuid(&mut h, lx, guest_abi::agent::CPUID_LEAF_ENTROPY, 0);
    let e2 = cpuid(&mut h, lx, guest_abi::agent::CPUID_LEAF_ENTROPY, 0);
    assert_ne!(e1, e2);
    let id = cpuid(&mut h, lx, guest_abi::agent::CPUID_LEAF_IDENTITY, 0);
    assert_eq!(id[..2], [lx, guest_abi::agent::NO_PARENT]);
    // dom0 is never parked; an unprivileged domain is, paused with the reason.
    assert_eq!(cpuid(&mut h, d0, guest_abi::agent::CPUID_LEAF_PARK, 0)[0], 0);
    assert_eq!(cpuid(&mut h, lx, guest_abi::agent::CPUID_LEAF_PARK, 0)[0], guest_abi::agent::PARK_ACCEPTED);
    assert_eq!(h.domains.get(lx).unwrap().paused, Some(PauseReason::Parked));
}

#[test]
fn a_pc_guest_that_resets_or_halts_with_interrupts_off_ends_and_bad_mmio_crashes_only_it() {
    let mut h = hv();
    let _d0 = dom0(&mut h);
    let reset = pc_domain(&mut h, "reset");
    vcpu(&mut h, reset).regs.rax = 0xFE;
    h.handle_exit(reset, Exit::Io { port: 0x64, size: 1, write: true, string: false });
    assert_eq!(h.domains.get(reset).unwrap().life, Life::Dead(guest_abi::domctl::exit_code::REBOOT));
    let off = pc_domain(&mut h, "off");
    vcpu(&mut h, off).interruptible = false;
    h.handle_exit(off, Exit::Hlt);
    assert_eq!(h.domains.get(off).unwrap().life, Life::Dead(guest_abi::domctl::exit_code::POWER_OFF));
    // An access to the APIC page whose instruction cannot be fetched (RIP in unmapped memory)
    // crashes that domain only.
    let wild = pc_domain(&mut h, "wild");
    let other = pc_domain(&mut h, "other");
    h.handle_exit(wild, Exit::NestedPageFault { gpa: 0xFEE0_00B0, write: true, fetch: false });
    assert_eq!(h.domains.get(wild).unwrap().life, Life::Crashed);
    assert_eq!(h.domains.get(other).unwrap().life, Life::Live);
    h.check_invariants().unwrap();
}

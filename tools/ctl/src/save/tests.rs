//! Host tests of save, restore and checkpoint against a fake hypervisor that keeps each
//! domain's memory, registers and state, and an in-memory disk.

use super::*;
use guest_abi::domctl::{CREATE_PC_PLATFORM, CloneArgs, CreateArgs, DomainStat, REASON_MAX_BYTES, name_field};
use guest_abi::HvResult;
use guest_abi::hypercall::nr;
use store::MemDevice;

const MIB: u64 = 1 << 20;

#[derive(Clone)]
struct Dom {
    name: String,
    state: u32,
    mem: Vec<u8>,
    vcpu: VcpuContext,
    st: SavedState,
    parent: u32,
    generation: u64,
    privileged: bool,
    /// Pages written since cloning (a clone's private pages).
    private: Vec<bool>,
    /// The emulated PC devices, as the hypervisor would encode them (opaque here).
    pc: Option<Vec<u8>>,
}

/// What the fake hands out for a fresh platform; a state starting with 0xFF it refuses.
const FRESH_PLATFORM: [u8; 468] = [0x11; 468];

#[derive(Default)]
struct Fake {
    doms: BTreeMap<u32, Dom>,
    next: u32,
    generation: u64,
    /// The domains `dom_platform_get` was asked about, in order.
    platform_gets: Vec<u32>,
}

impl Fake {
    fn new() -> Self {
        let mut f = Fake { next: 1, generation: 1, ..Default::default() };
        f.insert(0, "dom0", MIB, true);
        f
    }

    fn insert(&mut self, id: u32, name: &str, mem: u64, privileged: bool) {
        self.generation += 1;
        let d = Dom {
            name: name.into(),
            state: state::PAUSED,
            mem: vec![0; mem as usize],
            vcpu: VcpuContext { rip: 0x10_0000, ..VcpuContext::default() },
            st: SavedState::default(),
            parent: NO_DOMAIN,
            generation: self.generation,
            privileged,
            private: vec![true; (mem / 4096) as usize],
            pc: None,
        };
        self.doms.insert(id, d);
    }

    fn dom(&mut self, id: u64) -> HvResult<&mut Dom> {
        self.doms.get_mut(&(id as u32)).ok_or(HvError::NoSuchDomain)
    }

    fn frames(&self) -> usize {
        self.doms.values().map(|d| d.private.iter().filter(|p| **p).count()).sum()
    }
}

impl Hypercalls for Fake {
    fn call(&mut self, n: u64, a: &[u64]) -> HvResult<u64> {
        // SAFETY (all pointer reads/writes below): the control library passes addresses of
        // live host values of the types each hypercall takes.
        unsafe {
            match n {
                nr::DOM_CREATE => {
                    let args = &*(a[0] as *const CreateArgs);
                    let id = self.next;
                    self.next += 1;
                    self.insert(id, name_str(&args.name), args.mem_bytes, false);
                    if args.flags & CREATE_PC_PLATFORM != 0 {
                        self.dom(u64::from(id))?.pc = Some(FRESH_PLATFORM.to_vec());
                    }
                    Ok(u64::from(id))
                }
                nr::DOM_DESTROY => {
                    if self.doms.values().any(|d| d.parent == a[0] as u32) {
                        return Err(HvError::Busy);
                    }
                    self.doms.remove(&(a[0] as u32)).map(|_| 0).ok_or(HvError::NoSuchDomain)
                }
                nr::DOM_PAUSE => {
                    self.dom(a[0])?.state = state::PAUSED;
                    Ok(0)
                }
                nr::DOM_UNPAUSE => {
                    self.dom(a[0])?.state = state::RUNNING;
                    Ok(0)
                }
                nr::DOM_INFO => {
                    let parent_clones = self.doms.values().filter(|d| d.parent == a[0] as u32).count() as u32;
                    let d = self.dom(a[0])?;
                    let info = DomainInfo {
                        domid: a[0] as u32,
                        state: d.state,
                        pause_reason: 0,
                        flags: if d.privileged { DomainFlags::PRIVILEGED.bits() } else { 0 }
                            | if d.pc.is_some() { DomainFlags::PC_PLATFORM.bits() } else { 0 },
                        parent: d.parent,
                        clones: parent_clones,
                        mem_bytes: d.mem.len() as u64,
                        private_pages: 0,
                        shared_pages: 0,
                        exit_code: 0,
                        cpu_ns: 0,
                        name: name_field(&d.name),
                        reason: [0; REASON_MAX_BYTES],
                    };
                    *(a[1] as *mut DomainInfo) = info;
                    Ok(0)
                }
                nr::DOM_LIST => {
                    let ids: Vec<u32> = self.doms.keys().copied().filter(|&i| u64::from(i) >= a[0]).take(a[2] as usize).collect();
                    core::ptr::copy_nonoverlapping(ids.as_ptr(), a[1] as *mut u32, ids.len());
                    Ok(ids.len() as u64)
                }
                nr::MEM_READ => {
                    let d = self.dom(a[0])?;
                    let (src, len) = (a[1] as usize, a[3] as usize);
                    let bytes = d.mem.get(src..src + len).ok_or(HvError::BadAddress)?;
                    core::ptr::copy_nonoverlapping(bytes.as_ptr(), a[2] as *mut u8, len);
                    Ok(0)
                }
                nr::MEM_WRITE => {
                    let d = self.dom(a[0])?;
                    let (dst, len) = (a[1] as usize, a[3] as usize);
                    if d.state == state::FROZEN {
                        return Err(HvError::ReadOnly);
                    }
                    let slot = d.mem.get_mut(dst..dst + len).ok_or(HvError::BadAddress)?;
                    core::ptr::copy_nonoverlapping(a[2] as *const u8, slot.as_mut_ptr(), len);
                    for p in dst / 4096..(dst + len).div_ceil(4096) {
                        d.private[p] = true;
                    }
                    Ok(0)
                }
                nr::VCPU_GET => {
                    *(a[1] as *mut VcpuContext) = self.dom(a[0])?.vcpu;
                    Ok(0)
                }
                nr::VCPU_SET => {
                    let ctx = *(a[1] as *const VcpuContext);
                    // The hypervisor's rules, reduced to one: a zero RIP is refused.
                    if ctx.rip == 0 {
                        return Err(HvError::InvalidArgument);
                    }
                    self.dom(a[0])?.vcpu = ctx;
                    Ok(0)
                }
                nr::DOM_STAT => {
                    let g = self.dom(a[0])?.generation;
                    *(a[1] as *mut DomainStat) = DomainStat { generation: g, quota_pages: u64::MAX, ..DomainStat::default() };
                    Ok(0)
                }
                nr::DOM_STATE_GET => {
                    let d = self.dom(a[0])?;
                    *(a[1] as *mut SavedState) = SavedState { parent: d.parent, generation: d.generation, ..d.st };
                    Ok(0)
                }
                nr::DOM_STATE_SET => {
                    let s = *(a[1] as *const SavedState);
                    if s.reserved != 0 {
                        return Err(HvError::InvalidArgument);
                    }
                    self.generation += 1;
                    let g = self.generation;
                    let d = self.dom(a[0])?;
                    if d.state != state::PAUSED {
                        return Err(HvError::WrongState);
                    }
                    d.st = s;
                    d.generation = g;
                    Ok(0)
                }
                nr::DOM_FREEZE => {
                    self.dom(a[0])?.state = state::FROZEN;
                    Ok(0)
                }
                nr::DOM_SNAPSHOT | nr::DOM_CLONE => {
                    let (src, name, flags) = if n == nr::DOM_SNAPSHOT {
                        let name = core::str::from_utf8(core::slice::from_raw_parts(a[1] as *const u8, a[2] as usize)).unwrap_or("");
                        (a[0], String::from(name), 0)
                    } else {
                        let args = &*(a[1] as *const CloneArgs);
                        (a[0], String::from(name_str(&args.name)), args.flags)
                    };
                    let mut d = self.dom(src)?.clone();
                    let id = self.next;
                    self.next += 1;
                    d.name = name;
                    if n == nr::DOM_SNAPSHOT {
                        d.state = state::FROZEN;
                    } else {
                        d.parent = src as u32;
                        d.private = vec![false; d.private.len()];
                        d.private[1] = true;
                        d.state = if flags & CLONE_PAUSED != 0 { state::PAUSED } else { state::RUNNING };
                    }
                    self.doms.insert(id, d);
                    Ok(u64::from(id))
                }
                nr::DOM_PLATFORM_GET => {
                    self.platform_gets.push(a[0] as u32);
                    let d = self.dom(a[0])?;
                    let pc = d.pc.as_ref().ok_or(HvError::InvalidArgument)?;
                    if (a[2] as usize) < pc.len() {
                        return Err(HvError::BufferTooSmall);
                    }
                    core::ptr::copy_nonoverlapping(pc.as_ptr(), a[1] as *mut u8, pc.len());
                    Ok(pc.len() as u64)
                }
                nr::DOM_PLATFORM_SET => {
                    let bytes = core::slice::from_raw_parts(a[1] as *const u8, a[2] as usize).to_vec();
                    let d = self.dom(a[0])?;
                    if d.state != state::PAUSED {
                        return Err(HvError::WrongState);
                    }
                    // The hypervisor's validation, reduced to one rule.
                    if bytes.len() != FRESH_PLATFORM.len() || bytes[0] == 0xFF {
                        return Err(HvError::InvalidArgument);
                    }
                    d.pc = Some(bytes);
                    Ok(0)
                }
                nr::MEM_PRIVATE_MAP => {
                    let d = self.dom(a[0])?;
                    let (first, out, count) = (a[1] as usize, a[2] as *mut u8, a[3] as usize);
                    let count = count.min(d.private.len() - first);
                    core::ptr::write_bytes(out, 0, count.div_ceil(8));
                    for i in 0..count {
                        if d.private[first + i] {
                            *out.add(i / 8) |= 1 << (i % 8);
                        }
                    }
                    Ok(count as u64)
                }
                _ => Err(HvError::NoSuchHypercall),
            }
        }
    }
}

/// A UI that Ctrl-Cs after `after` questions.
struct Interrupt {
    after: u32,
    asked: u32,
}

impl Ui for Interrupt {
    fn progress(&mut self, _: &str, _: &str, _: u64, _: u64) {}
    fn clear(&mut self) {}
    fn interrupted(&mut self) -> bool {
        self.asked += 1;
        self.asked > self.after
    }
}

struct World {
    ctl: Control<Fake>,
    store: Store<MemDevice>,
    digests: DigestCache,
}

impl World {
    fn new() -> Self {
        World { ctl: Control::new(Fake::new()), store: Store::format(MemDevice::new(64 * 1024)).unwrap(), digests: DigestCache::default() }
    }

    fn with<R>(&mut self, ui: &mut dyn Ui, f: impl FnOnce(&mut Saver<'_, Fake, MemDevice>) -> R) -> R {
        let mut s = Saver { ctl: &mut self.ctl, store: &mut self.store, digests: &mut self.digests, ui, cycles: || 0 };
        f(&mut s)
    }

    /// A running domain of `mib` MiB with data in some pages.
    fn domain(&mut self, name: &str, mib: u64) -> u32 {
        let id = self.ctl.create(name, mib * MIB).unwrap();
        for p in [2u64, 3, 100, 255] {
            let data: Vec<u8> = (0..4096).map(|i| (i as u64 * 7 + p) as u8).collect();
            self.ctl.mem_write(id, p * 4096, &data).unwrap();
        }
        self.ctl.unpause(id).unwrap();
        id
    }

    fn memory(&mut self, id: u32) -> Vec<u8> {
        let mut m = vec![0u8; self.ctl.info(id).unwrap().mem_bytes as usize];
        self.ctl.mem_read(id, 0, &mut m).unwrap();
        m
    }
}

#[test]
fn save_destroys_and_restore_brings_back_memory_registers_and_state() {
    let mut w = World::new();
    let d = w.domain("web", 2);
    w.ctl.hc.dom(u64::from(d)).unwrap().st.upcall_vector = 0x40;
    let before = w.memory(d);
    let saved = w.with(&mut Quiet, |s| s.save(d, "web.img", Mode::Save, false)).unwrap();
    assert_eq!(saved.kind, ImageKind::Domain);
    assert_eq!(saved.pages_written, 4, "zero pages are elided");
    assert!(w.ctl.info(d).is_err(), "a save destroys the domain");
    let r = w.with(&mut Quiet, |s| s.restore("web.img", None, false)).unwrap();
    assert_eq!(r.name, "web");
    assert_eq!(w.memory(r.domid), before);
    let dom = w.ctl.hc.dom(u64::from(r.domid)).unwrap();
    assert_eq!(dom.st.upcall_vector, 0x40);
    assert_eq!(dom.state, state::RUNNING);
    assert!(w.with(&mut Quiet, |s| s.verify("web.img")).is_ok());
}

#[test]
fn a_checkpoint_leaves_the_domain_running_and_no_epoch_behind() {
    let mut w = World::new();
    let d = w.domain("web", 2);
    let saved = w.with(&mut Quiet, |s| s.save(d, "ckpt.img", Mode::Live, false)).unwrap();
    assert_eq!(saved.kind, ImageKind::Domain);
    assert_eq!(w.ctl.info(d).unwrap().state, state::RUNNING);
    assert_eq!(w.ctl.list().unwrap(), vec![0, d], "the epoch is gone");
}

#[test]
fn ctrl_c_leaves_the_domain_as_it_was_and_no_image() {
    let mut w = World::new();
    let d = w.domain("web", 2);
    for after in 0..2 {
        let mut ui = Interrupt { after, asked: 0 };
        let e = w.with(&mut ui, |s| s.save(d, "web.img", Mode::Save, false)).unwrap_err();
        assert!(matches!(e, SaveError::Interrupted), "{e}");
        assert_eq!(w.ctl.info(d).unwrap().state, state::RUNNING, "unpaused again");
        assert!(w.store.list().is_empty());
    }
    w.with(&mut Quiet, |s| s.save(d, "web.img", Mode::Live, false)).unwrap();
    let frames = w.ctl.hc.frames();
    for after in 0..3 {
        let mut ui = Interrupt { after, asked: 0 };
        let e = w.with(&mut ui, |s| s.restore("web.img", Some("copy"), false)).unwrap_err();
        assert!(matches!(e, SaveError::Interrupted), "{e}");
        assert_eq!(w.ctl.list().unwrap(), vec![0, d], "no half-restored domain");
        assert_eq!(w.ctl.hc.frames(), frames);
    }
}

#[test]
fn a_damaged_image_is_refused_and_creates_nothing() {
    let mut w = World::new();
    let d = w.domain("web", 2);
    w.with(&mut Quiet, |s| s.save(d, "web.img", Mode::Live, false)).unwrap();
    let size = w.store.find("web.img").unwrap().size_bytes as usize;
    let mut image = vec![0u8; size];
    w.store.read_at("web.img", 0, &mut image).unwrap();
    let put = |w: &mut World, name: &str, bytes: &[u8]| {
        let mut wr = w.store.begin(name, store::ImageKind::Domain, "test").unwrap();
        w.store.write(&mut wr, bytes).unwrap();
        w.store.commit(wr).unwrap();
    };
    let mut flipped = image.clone();
    flipped[size / 2] ^= 0x10;
    put(&mut w, "flipped.img", &flipped);
    put(&mut w, "short.img", &image[..size - 100]);
    put(&mut w, "empty.img", &[]);
    let frames = w.ctl.hc.frames();
    for bad in ["flipped.img", "short.img", "empty.img"] {
        let e = w.with(&mut Quiet, |s| s.restore(bad, Some("copy"), false)).unwrap_err();
        assert!(matches!(e, SaveError::Image(_)), "{bad}: {e}");
        assert_eq!(w.ctl.list().unwrap(), vec![0, d], "{bad}");
        assert_eq!(w.ctl.hc.frames(), frames);
        assert!(w.with(&mut Quiet, |s| s.verify(bad)).is_err(), "{bad}");
    }
    assert!(matches!(w.with(&mut Quiet, |s| s.restore("nope.img", None, false)), Err(SaveError::Store(StoreError::NoSuchImage))));
    assert!(matches!(w.with(&mut Quiet, |s| s.restore("web.img", None, false)), Err(SaveError::NameTaken(_))));
}

#[test]
fn refused_vcpu_and_state_records_destroy_what_restore_created() {
    let mut w = World::new();
    let d = w.domain("web", 2);
    w.ctl.hc.dom(u64::from(d)).unwrap().vcpu.rip = 0;
    w.with(&mut Quiet, |s| s.save(d, "badvcpu.img", Mode::Live, false)).unwrap();
    w.ctl.hc.dom(u64::from(d)).unwrap().vcpu.rip = 0x10_0000;
    w.ctl.hc.dom(u64::from(d)).unwrap().st.reserved = 1;
    w.with(&mut Quiet, |s| s.save(d, "badstate.img", Mode::Live, false)).unwrap();
    let e = w.with(&mut Quiet, |s| s.restore("badvcpu.img", Some("a"), false)).unwrap_err();
    assert!(matches!(e, SaveError::VcpuRefused), "{e}");
    let e = w.with(&mut Quiet, |s| s.restore("badstate.img", Some("b"), false)).unwrap_err();
    assert!(matches!(e, SaveError::StateRefused), "{e}");
    assert_eq!(w.ctl.list().unwrap(), vec![0, d]);
}

#[test]
fn a_clone_saves_as_a_delta_that_restores_only_over_its_template() {
    let mut w = World::new();
    let t = w.domain("tpl", 2);
    w.ctl.freeze(t).unwrap();
    let c = w.ctl.clone_domain(t, "c0", 0, u64::MAX).unwrap();
    let page: Vec<u8> = vec![0xAB; 4096];
    w.ctl.mem_write(c, 50 * 4096, &page).unwrap();
    // A private page the clone zeroed must come back zero, not as the template's.
    w.ctl.mem_write(c, 100 * 4096, &[0u8; 4096]).unwrap();
    let clone_mem = w.memory(c);
    let delta = w.with(&mut Quiet, |s| s.save(c, "c0.img", Mode::Live, false)).unwrap();
    let full = w.with(&mut Quiet, |s| s.save(c, "c0-full.img", Mode::Live, true)).unwrap();
    assert_eq!(delta.kind, ImageKind::Delta);
    assert_eq!(delta.pages_written, 3, "start-of-day page, the written page and the zeroed one");
    assert!(delta.bytes < full.bytes);
    let tpl = w.with(&mut Quiet, |s| s.save(t, "tpl.img", Mode::Save, false)).unwrap();
    assert_eq!(tpl.kind, ImageKind::Template);
    assert_eq!(w.ctl.info(t).unwrap().state, state::FROZEN, "a template stays");
    let r = w.with(&mut Quiet, |s| s.restore("c0.img", Some("c0-back"), false)).unwrap();
    assert_eq!(w.memory(r.domid), clone_mem);
    // After "a reboot": only the template's image; the delta needs it restored first.
    w.ctl.destroy(r.domid).unwrap();
    w.ctl.destroy(c).unwrap();
    w.ctl.destroy(t).unwrap();
    w.digests = DigestCache::default();
    let e = w.with(&mut Quiet, |s| s.restore("c0.img", None, false)).unwrap_err();
    assert!(matches!(e, SaveError::TemplateMissing { .. }), "{e}");
    let rt = w.with(&mut Quiet, |s| s.restore("tpl.img", None, false)).unwrap();
    assert_eq!(w.ctl.info(rt.domid).unwrap().state, state::FROZEN, "restored frozen");
    let r = w.with(&mut Quiet, |s| s.restore("c0.img", None, false)).unwrap();
    assert_eq!(w.memory(r.domid), clone_mem);
    assert_eq!(w.ctl.info(r.domid).unwrap().parent, rt.domid);
}

#[test]
fn dom0_and_dead_domains_are_not_saved_and_bad_image_names_touch_nothing() {
    let mut w = World::new();
    assert!(matches!(w.with(&mut Quiet, |s| s.save(0, "x.img", Mode::Save, false)), Err(SaveError::Dom0)));
    let d = w.domain("web", 2);
    assert!(matches!(w.with(&mut Quiet, |s| s.save(d, "../x", Mode::Save, false)), Err(SaveError::Store(StoreError::BadName))));
    assert_eq!(w.ctl.info(d).unwrap().state, state::RUNNING);
    w.ctl.hc.dom(u64::from(d)).unwrap().state = state::DEAD;
    assert!(matches!(w.with(&mut Quiet, |s| s.save(d, "x.img", Mode::Save, false)), Err(SaveError::NotRunning)));
}

#[test]
fn a_store_that_fills_up_mid_save_gives_store_full_and_leaves_everything_as_it_was() {
    // A 32 KiB store with 20 KiB taken: the 18 KiB image would fit an empty one, not this.
    let mut w = World { store: Store::format(MemDevice::new(264 + 64)).unwrap(), ..World::new() };
    let mut blob = w.store.begin("other.img", store::ImageKind::Domain, "test").unwrap();
    w.store.write(&mut blob, &[7u8; 20 * 1024]).unwrap();
    w.store.commit(blob).unwrap();
    let d = w.domain("web", 2);
    let before = w.memory(d);
    let e = w.with(&mut Quiet, |s| s.save(d, "web.img", Mode::Save, false)).unwrap_err();
    assert_eq!(e.to_string(), "store: store full", "{e:?}");
    assert_eq!(w.store.list().len(), 1, "no partial image");
    w.store.verify("other.img").unwrap();
    assert_eq!(w.ctl.info(d).unwrap().state, state::RUNNING, "the domain runs on");
    assert_eq!(w.memory(d), before);
    let e = w.with(&mut Quiet, |s| s.save(d, "web.img", Mode::Live, false)).unwrap_err();
    assert_eq!(e.to_string(), "store: store full", "{e:?}");
    assert_eq!(w.ctl.list().unwrap(), vec![0, d], "the checkpoint epoch is gone");
}


#[test]
fn a_pc_domain_comes_back_with_its_devices() {
    let mut w = World::new();
    let devices: Vec<u8> = (0..468).map(|i| (i * 13 + 1) as u8).collect();
    let d = w.ctl.create_with("linux", 2 * MIB, CREATE_PC_PLATFORM).unwrap();
    w.ctl.mem_write(d, 5 * 4096, &[0x42; 4096]).unwrap();
    w.ctl.hc.dom(u64::from(d)).unwrap().pc = Some(devices.clone());
    w.ctl.unpause(d).unwrap();
    let pc_flag = DomainFlags::PC_PLATFORM.bits();

    // A checkpoint reads the devices from the epoch, not from the running domain.
    w.with(&mut Quiet, |s| s.save(d, "ckpt.img", Mode::Live, false)).unwrap();
    let epoch = *w.ctl.hc.platform_gets.last().unwrap();
    assert_ne!(epoch, d, "read from the checkpoint epoch");
    assert_eq!(w.ctl.list().unwrap(), vec![0, d], "the epoch is gone");
    let (pro, _, _) = w.with(&mut Quiet, |s| s.verify("ckpt.img")).unwrap();
    assert_eq!(pro.platform.as_deref(), Some(&devices[..]), "the image carries a PLATFORM record");
    // A save pauses, reads, destroys; the restore creates the domain with the platform and
    // sets the saved devices before it runs.
    let before = w.memory(d);
    w.with(&mut Quiet, |s| s.save(d, "linux.img", Mode::Save, false)).unwrap();
    assert_eq!(w.ctl.hc.platform_gets.last(), Some(&d));
    let r = w.with(&mut Quiet, |s| s.restore("linux.img", None, false)).unwrap();
    let info = w.ctl.info(r.domid).unwrap();
    assert_ne!(info.flags & pc_flag, 0);
    assert_eq!(info.state, state::RUNNING);
    assert_eq!(w.ctl.hc.dom(u64::from(r.domid)).unwrap().pc.as_deref(), Some(&devices[..]));
    assert_eq!(w.memory(r.domid), before);
    let c = w.with(&mut Quiet, |s| s.restore("ckpt.img", Some("copy"), true)).unwrap();
    assert_eq!(w.ctl.hc.dom(u64::from(c.domid)).unwrap().pc.as_deref(), Some(&devices[..]));
    w.ctl.destroy(c.domid).unwrap();

    // A domain without the platform is saved without the record and comes back without it.
    let plain = w.domain("plain", 2);
    w.with(&mut Quiet, |s| s.save(plain, "plain.img", Mode::Save, false)).unwrap();
    assert_eq!(w.with(&mut Quiet, |s| s.verify("plain.img")).unwrap().0.platform, None);
    let p = w.with(&mut Quiet, |s| s.restore("plain.img", None, false)).unwrap();
    assert_eq!(w.ctl.info(p.domid).unwrap().flags & pc_flag, 0);

    // A template keeps its devices through save and restore; a clone saved as a delta
    // inherits the template's at restore, then gets its own from the image.
    let t = r.domid;
    w.ctl.pause(t).unwrap();
    w.ctl.freeze(t).unwrap();
    let k = w.ctl.clone_domain(t, "k0", 0, u64::MAX).unwrap();
    let mine: Vec<u8> = devices.iter().map(|b| b ^ 0x5A).collect();
    w.ctl.hc.dom(u64::from(k)).unwrap().pc = Some(mine.clone());
    let delta = w.with(&mut Quiet, |s| s.save(k, "k0.img", Mode::Live, false)).unwrap();
    assert_eq!(delta.kind, ImageKind::Delta);
    let tpl = w.with(&mut Quiet, |s| s.save(t, "tpl.img", Mode::Save, false)).unwrap();
    assert_eq!(tpl.kind, ImageKind::Template);
    assert_eq!(w.ctl.hc.platform_gets.last(), Some(&t), "a template is read directly");
    w.ctl.destroy(k).unwrap();
    w.ctl.destroy(t).unwrap();
    w.digests = DigestCache::default();
    let rt = w.with(&mut Quiet, |s| s.restore("tpl.img", None, false)).unwrap();
    assert_eq!(w.ctl.info(rt.domid).unwrap().state, state::FROZEN);
    assert_eq!(w.ctl.hc.dom(u64::from(rt.domid)).unwrap().pc.as_deref(), Some(&devices[..]));
    let rk = w.with(&mut Quiet, |s| s.restore("k0.img", None, false)).unwrap();
    assert_eq!(w.ctl.info(rk.domid).unwrap().parent, rt.domid);
    assert_eq!(w.ctl.hc.dom(u64::from(rk.domid)).unwrap().pc.as_deref(), Some(&mine[..]));

    // Devices the hypervisor refuses: a clear error, and nothing is left behind.
    let bad = w.ctl.create_with("bad", 2 * MIB, CREATE_PC_PLATFORM).unwrap();
    let mut refused = devices.clone();
    refused[0] = 0xFF;
    w.ctl.hc.dom(u64::from(bad)).unwrap().pc = Some(refused);
    w.with(&mut Quiet, |s| s.save(bad, "bad.img", Mode::Save, false)).unwrap();
    let ids = w.ctl.list().unwrap();
    let e = w.with(&mut Quiet, |s| s.restore("bad.img", None, false)).unwrap_err();
    assert!(matches!(e, SaveError::PlatformRefused), "{e}");
    assert_eq!(e.to_string(), "bad image: platform state refused by the hypervisor");
    assert_eq!(w.ctl.list().unwrap(), ids, "the half-restored domain is destroyed");
}

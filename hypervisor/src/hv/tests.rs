//! Host tests of the hypervisor core against a mock vCPU backend and platform: hypercalls and
//! their permission checks, exits, copy-on-write cloning, quotas, scheduling and accounting.

use super::*;
use crate::mm::frame::FrameInfo;
use crate::mm::physmem::SimMem;
use crate::p2m::Npt;
use crate::vcpu::{Exit, ExtendedState, GuestMsr, GuestRegs, vector};
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::mem::MaybeUninit;
use guest_abi::domctl::{CreateArgs, QUOTA_DEFAULT, name_field, pause, state};
use guest_abi::error::decode_ret;
use guest_abi::hypercall::{CallInsn, nr};
use guest_abi::vcpu::{Cr0Flags, Cr4Flags, EferFlags};

#[derive(Default)]
struct MockVcpu {
    regs: GuestRegs,
    ctx: VcpuContext,
    root: u64,
    script: VecDeque<Exit>,
    injected: Vec<(u8, bool)>,
    window: bool,
    flushes: u32,
    skips: u32,
    interruptible: bool,
    ext: ExtendedState,
    /// DR0 in the CPU each time this vCPU entered (what it would read).
    seen_dr0: Vec<u64>,
    /// The value this vCPU's guest writes to DR0 while it runs.
    writes_dr0: u64,
    cpl: u8,
    tpr: u8,
    instruction_length: u64,
    /// A flush was asked for and the vCPU has not run since (a new vCPU flushes first).
    flush_pending: bool,
    tsc_offset: u64,
    /// Reaches dom0's device ports without exits.
    ports_granted: bool,
}

impl Vcpu for MockVcpu {
    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }
    fn rip(&self) -> u64 {
        self.ctx.rip
    }
    fn cpl(&self) -> u8 {
        self.cpl
    }
    fn code_segment(&self) -> guest_abi::vcpu::Segment {
        self.ctx.cs
    }
    fn gpr(&mut self, n: u8) -> u64 {
        if n == 4 { self.ctx.rsp } else { self.regs.get(n).unwrap_or(0) }
    }
    fn set_gpr(&mut self, n: u8, v: u64) {
        if n == 4 {
            self.ctx.rsp = v;
        } else {
            self.regs.set(n, v);
        }
    }
    fn set_rip(&mut self, rip: u64) {
        self.ctx.rip = rip;
    }
    fn skip_instruction(&mut self) {
        self.skips += 1;
        self.ctx.rip += if self.instruction_length != 0 { core::mem::take(&mut self.instruction_length) } else { 3 };
    }
    fn set_instruction_length(&mut self, bytes: u64) {
        self.instruction_length = bytes;
    }
    fn tpr(&self) -> u8 {
        self.tpr
    }
    fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }
    fn interruptible(&self) -> bool {
        self.interruptible
    }
    fn interrupts_enabled(&self) -> bool {
        self.interruptible || self.ctx.rflags & 0x200 != 0
    }
    fn inject_interrupt(&mut self, v: u8) {
        self.injected.push((v, false));
    }
    fn inject_exception(&mut self, v: u8, _error: Option<u32>) {
        self.injected.push((v, true));
    }
    fn set_interrupt_window(&mut self, on: bool) {
        self.window = on;
    }
    fn msr(&mut self, m: GuestMsr) -> u64 {
        // Like the real backends, TSC_AUX lives in the extended state.
        if m == GuestMsr::TscAux { self.ext.tsc_aux } else { m.get(&self.ctx) }
    }
    fn set_msr(&mut self, m: GuestMsr, v: u64) {
        if m == GuestMsr::TscAux {
            self.ext.tsc_aux = v;
        } else {
            m.set(&mut self.ctx, v)
        }
    }
    fn set_control_register(&mut self, cr: u8, v: u64) {
        if cr == 0 {
            self.ctx.cr0 = v
        } else {
            self.ctx.cr4 = v
        }
    }
    fn context(&mut self) -> VcpuContext {
        let mut c = self.ctx;
        self.regs.store(&mut c);
        c.cr8 = u64::from(self.tpr);
        c.tsc_aux = self.ext.tsc_aux;
        c
    }
    fn set_context(&mut self, ctx: &VcpuContext) {
        self.ctx = *ctx;
        self.regs = GuestRegs::from_context(ctx);
        self.tpr = ctx.cr8 as u8;
        self.ext.tsc_aux = ctx.tsc_aux;
    }
    fn flush_translations(&mut self) {
        self.flushes += 1;
        self.flush_pending = true;
    }
    fn extended(&self) -> &ExtendedState {
        &self.ext
    }
    fn extended_mut(&mut self) -> &mut ExtendedState {
        &mut self.ext
    }
    fn set_tsc_offset(&mut self, offset: u64) {
        self.tsc_offset = offset;
    }
}

#[derive(Default)]
struct MockBackend {
    live: u32,
    /// The extended state in the simulated CPU.
    cpu: ExtendedState,
    loads: u32,
}

impl Backend for MockBackend {
    type Vcpu = MockVcpu;
    type Format = Npt;
    const NAME: &'static str = "mock";
    const CALL_INSN: CallInsn = CallInsn::Vmmcall;

    fn create_vcpu(&mut self, ft: &mut FrameTable<'_>, ctx: &VcpuContext, root: Pfn, _id: u32) -> Result<MockVcpu, VcpuError> {
        // Like the real backends: one frame for the control block.
        let block = ft.alloc(FrameKind::Hypervisor, crate::mm::frame::OWNER_HYPERVISOR).map_err(|_| VcpuError::OutOfMemory)?;
        self.live += 1;
        let mut v = MockVcpu { root: root.0 | (block.0 << 32), interruptible: true, flush_pending: true, ..Default::default() };
        v.set_context(ctx);
        Ok(v)
    }

    fn pass_through_ports(&mut self, v: &mut MockVcpu) {
        v.ports_granted = true;
    }

    fn destroy_vcpu(&mut self, ft: &mut FrameTable<'_>, v: MockVcpu) {
        self.live -= 1;
        ft.free(Pfn(v.root >> 32)).unwrap();
    }

    fn run(&mut self, v: &mut MockVcpu) -> Exit {
        v.flush_pending = false;
        v.seen_dr0.push(self.cpu.dr[0]);
        if v.writes_dr0 != 0 {
            self.cpu.dr[0] = v.writes_dr0;
        }
        v.script.pop_front().unwrap_or(Exit::Hlt)
    }

    fn save_extended(&mut self, v: &mut MockVcpu) {
        v.ext = self.cpu.clone();
    }

    fn load_extended(&mut self, v: &MockVcpu) {
        self.loads += 1;
        self.cpu = v.ext.clone();
    }
}

#[derive(Default)]
struct MockPlatform {
    now: Cell<u64>,
    /// What reached the simulated serial line (CR LF shown as LF).
    out: Vec<u8>,
    /// The transmit queue.
    tx: crate::txqueue::TxQueue<{ crate::txqueue::TX_QUEUE_BYTES }>,
    /// Bytes the simulated UART takes per drain call (0 = all it is offered).
    uart_fifo: usize,
    /// Bytes sent by each drain call.
    drained: Vec<usize>,
    input: VecDeque<u8>,
    timers: u32,
    /// Heap bytes reported free (0 = plenty).
    heap_free: usize,
}

impl Platform for MockPlatform {
    fn now_ns(&self) -> u64 {
        self.now.set(self.now.get() + 1000);
        self.now.get()
    }
    fn cycles(&self) -> u64 {
        self.now.get()
    }
    fn tsc_khz(&self) -> u64 {
        1_000_000
    }
    fn cpuid(&self, leaf: u32, _sub: u32) -> [u32; 4] {
        // A host with every feature bit set, so the allow-list alone decides what shows.
        match leaf {
            0 => [0x16, 1, 2, 3],
            1 => [0x600, 0, 0xFFFF_FFFF, 0xFFFF_FFFF],
            7 => [0, !0, !0, !0],
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            0x8000_0001 => [0, 0, 0xFFFF_FFFF, 0xFFFF_FFFF],
            0x8000_0008 => [0x3030, !0, 0, 0],
            _ => [leaf, 1, 2, 3],
        }
    }
    fn console_queue(&mut self, parts: &[&[u8]]) -> bool {
        self.tx.push(parts)
    }
    fn console_drain(&mut self, max_bytes: usize) -> (usize, usize) {
        let (out, fifo) = (&mut self.out, self.uart_fifo);
        let mut sent = 0;
        let left = self.tx.drain(max_bytes, &mut |b| {
            let n = if fifo == 0 { b.len() } else { b.len().min(fifo - sent) };
            out.extend(b[..n].iter().filter(|&&c| c != b'\r'));
            sent += n;
            n
        });
        self.drained.push(sent);
        (sent, left.1)
    }
    fn console_poll(&mut self) -> Option<u8> {
        self.input.pop_front()
    }
    fn arm_timer(&mut self, _ns: u64) {
        self.timers += 1;
    }
    fn ack_interrupts(&mut self) {}
    fn idle(&mut self, until: u64) {
        if until != u64::MAX {
            self.now.set(self.now.get().max(until));
        }
    }
    fn heap_free_bytes(&self) -> usize {
        if self.heap_free == 0 { 64 << 20 } else { self.heap_free }
    }
}

type Hv = Hypervisor<MockBackend, SimMem, MockPlatform>;

/// Everything printed so far, once the serial line has sent all of it.
fn serial(h: &mut Hv) -> Vec<u8> {
    h.flush_serial();
    h.platform.out.clone()
}

const FRAMES: usize = 16384;
const MIB: u64 = 1 << 20;

fn hv() -> Hv {
    let storage: &'static mut [MaybeUninit<FrameInfo>] =
        Box::leak((0..FRAMES).map(|_| MaybeUninit::uninit()).collect::<Vec<_>>().into_boxed_slice());
    let mut ft = FrameTable::new(storage);
    ft.add_free_range(Pfn(1), Pfn(FRAMES as u64)).unwrap();
    Hypervisor::new(
        MockBackend::default(),
        SimMem::new(FRAMES),
        ft,
        MockPlatform::default(),
        Identity { vendor: 2, backend: 2, firmware: 1 },
        Settings { echo_guests: true, ..Settings::default() },
    )
}

fn vcpu(h: &mut Hv, id: DomId) -> &mut MockVcpu {
    h.domains.get_mut(id).unwrap().vcpu.as_mut().unwrap()
}

/// Makes hypercall `n` from domain `id` and returns the decoded result.
fn call(h: &mut Hv, id: DomId, n: u64, args: &[u64]) -> Result<u64, HvError> {
    let v = vcpu(h, id);
    v.regs.rax = n;
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    (v.regs.rdi, v.regs.rsi, v.regs.rdx, v.regs.r10, v.regs.r8, v.regs.r9) = (a[0], a[1], a[2], a[3], a[4], a[5]);
    h.handle_exit(id, Exit::Hypercall);
    decode_ret(vcpu(h, id).regs.rax)
}

fn started(h: &mut Hv, name: &str, mem: u64) -> DomId {
    let id = h.create_domain(name, mem, false).unwrap();
    h.unpause(id).unwrap();
    id
}

fn dom0(h: &mut Hv) -> DomId {
    let id = h.create_domain("dom0", 4 * MIB, true).unwrap();
    h.unpause(id).unwrap();
    id
}

/// A guest write resolved the way the hardware path does it: fault if read-only, then store.
fn guest_write(h: &mut Hv, id: DomId, gpa: u64, v: u64) {
    let leaf = h.domains.get(id).unwrap().p2m.as_ref().unwrap().lookup(&h.mem, gpa / PAGE_SIZE).unwrap();
    if !leaf.writable {
        h.handle_exit(id, Exit::NestedPageFault { gpa, write: true, fetch: false });
    }
    let d = h.domains.get(id).unwrap();
    if d.life != Life::Live || d.paused.is_some() {
        return;
    }
    let leaf = d.p2m.as_ref().unwrap().lookup(&h.mem, gpa / PAGE_SIZE).unwrap();
    assert!(leaf.writable);
    h.mem.write_bytes(leaf.pfn, (gpa % PAGE_SIZE) as usize, &v.to_le_bytes());
}

fn guest_read(h: &Hv, id: DomId, gpa: u64) -> u64 {
    let mut b = [0u8; 8];
    h.read_guest(id, gpa, &mut b).unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn create_and_destroy_return_every_frame() {
    let mut h = hv();
    let baseline = h.info();
    let a = h.create_domain("a", 8 * MIB, false).unwrap();
    let b = h.create_domain("", 2 * MIB, false).unwrap();
    assert_eq!(h.domains.get(b).unwrap().name.as_str(), "dom2");
    assert!(h.info().free_kib < baseline.free_kib - 10 * 1024);
    h.check_invariants().unwrap();
    assert_eq!(h.create_domain("a", 2 * MIB, false), Err(HvError::NameTaken));
    assert_eq!(h.create_domain("x", 1000, false), Err(HvError::InvalidArgument));
    assert_eq!(h.create_domain("x", 64 << 30, false), Err(HvError::InvalidArgument));
    assert_eq!(h.create_domain("x", 512 * MIB, false), Err(HvError::OutOfMemory), "more than the machine has");
    h.destroy_domain(a).unwrap();
    h.destroy_domain(b).unwrap();
    assert_eq!(h.info().free_kib, baseline.free_kib);
    assert_eq!(h.backend.live, 0);
    h.check_invariants().unwrap();
}

#[test]
fn unprivileged_control_hypercalls_are_refused() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let u = started(&mut h, "u", 2 * MIB);
    for n in nr::CONTROL_BASE..nr::CONTROL_END {
        assert_eq!(call(&mut h, u, n, &[d0 as u64, 0x2000, 0x3000, 64]), Err(HvError::NotPermitted), "hypercall {n:#x}");
    }
    assert_eq!(call(&mut h, u, nr::CONSOLE_READ, &[0x2000, 16]), Err(HvError::NotPermitted));
    assert_eq!(h.domains.get(d0).unwrap().life, Life::Live);
    assert_eq!(call(&mut h, d0, nr::DOM_PAUSE, &[u as u64]), Ok(0), "dom0 may");
}

#[test]
fn hypercalls_from_guest_user_space_are_refused_even_in_dom0() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let u = started(&mut h, "u", 2 * MIB);
    let before = h.info();
    for id in [d0, u] {
        vcpu(&mut h, id).cpl = 3;
        for n in [nr::NULL, nr::CONSOLE_WRITE, nr::SHUTDOWN, nr::FREEZE_SELF, nr::DOM_CREATE, nr::DOM_DESTROY] {
            assert_eq!(call(&mut h, id, n, &[u as u64]), Err(HvError::NotPermitted), "nr {n:#x} from d{id} ring 3");
        }
        vcpu(&mut h, id).cpl = 0;
        assert_eq!(call(&mut h, id, nr::NULL, &[]), Ok(0), "the same call from ring 0 works");
    }
    assert_eq!(h.domain_info(u).unwrap().state, state::RUNNING, "nothing happened to u");
    assert_eq!(h.info().free_kib, before.free_kib);
}

#[test]
fn unnamed_domains_get_a_default_name_no_other_domain_has() {
    let mut h = hv();
    let a = h.create_domain("dom2", 2 * MIB, false).unwrap();
    let b = h.create_domain("", 2 * MIB, false).unwrap();
    assert_eq!(b, 2, "b's default name would be a's");
    assert_eq!(guest_abi::domctl::name_str(&h.domain_info(b).unwrap().name), "dom2-1");
    assert_eq!(h.domains.by_name("dom2").map(|d| d.id), Some(a));
    assert_eq!(h.domains.by_name("dom2-1").map(|d| d.id), Some(b));
    assert_eq!(h.create_domain("dom2-1", 2 * MIB, false), Err(HvError::NameTaken));
    h.check_invariants().unwrap();
}

#[test]
fn a_short_heap_refuses_new_work_and_stops_console_growth_but_nothing_dies() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let u = started(&mut h, "u", 2 * MIB);
    h.write_guest(u, 0x2000, b"first line\n", false).unwrap();
    assert_eq!(call(&mut h, u, nr::CONSOLE_WRITE, &[0x2000, 11]), Ok(11));
    let kept = h.domains.get(u).unwrap().console.heap_bytes();
    h.platform.heap_free = HEAP_RESERVE_BYTES / 4;
    let long = [b'z'; 4096];
    h.write_guest(u, 0x3000, &long, false).unwrap();
    assert_eq!(call(&mut h, u, nr::CONSOLE_WRITE, &[0x3000, 4096]), Ok(4096), "the write still succeeds");
    assert_eq!(h.domains.get(u).unwrap().console.heap_bytes(), kept, "but the history does not grow");
    assert_eq!(h.create_domain("v", 2 * MIB, false), Err(HvError::OutOfMemory));
    assert_eq!(h.freeze(u, false), Err(HvError::OutOfMemory));
    assert_eq!(h.domain_info(u).unwrap().state, state::RUNNING, "a refused freeze changes nothing");
    // dom0 can still read the console (no allocation) and check the frame table.
    let r = call(&mut h, d0, nr::CONSOLE_GET, &[u as u64, 0, 0x3000, 4096]).unwrap();
    assert!(r & 0xFFFF_FFFF > 0);
    assert_eq!(call(&mut h, d0, nr::FRAME_CHECK, &[]), Ok(0));
    h.platform.heap_free = 0;
    h.freeze(u, false).unwrap();
    h.check_invariants().unwrap();
}

#[test]
fn bad_hypercalls_get_error_codes_and_change_nothing() {
    let mut h = hv();
    let u = started(&mut h, "u", 2 * MIB);
    let before = h.info();
    assert_eq!(call(&mut h, u, 0xDEAD, &[]), Err(HvError::NoSuchHypercall));
    assert_eq!(call(&mut h, u, u64::MAX, &[]), Err(HvError::NoSuchHypercall));
    assert_eq!(call(&mut h, u, nr::CONSOLE_WRITE, &[2 * MIB - 8, 64]), Err(HvError::BadAddress), "crosses the end");
    assert_eq!(call(&mut h, u, nr::CONSOLE_WRITE, &[u64::MAX - 3, 8]), Err(HvError::BadAddress), "wraps");
    assert_eq!(call(&mut h, u, nr::CONSOLE_WRITE, &[0x2000, 1 << 40]), Err(HvError::BadAddress), "beyond RAM");
    assert_eq!(call(&mut h, u, nr::CONSOLE_WRITE, &[0x10000, 128 * 1024]), Err(HvError::InvalidArgument), "too long");
    assert_eq!(call(&mut h, u, nr::SET_UPCALL, &[3]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, u, nr::MEM_PROTECT, &[0x2001, 1]), Err(HvError::InvalidArgument));
    assert_eq!(call(&mut h, u, nr::MEM_PROTECT, &[2 * MIB - 4096, 2]), Err(HvError::BadAddress));
    assert_eq!(call(&mut h, u, nr::MEM_PROTECT, &[0x1000, 1]), Err(HvError::ReadOnly), "the start-of-day page");
    assert_eq!(call(&mut h, u, nr::NULL, &[]), Ok(0));
    assert_eq!(h.info().free_kib, before.free_kib);
    assert_eq!(vcpu(&mut h, u).skips, 11, "every hypercall returns past the instruction");
    h.check_invariants().unwrap();
}

#[test]
fn names_with_an_embedded_nul_are_refused_everywhere() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let a = h.create_domain("a", 2 * MIB, false).unwrap();
    let mut name = name_field("a");
    name[2] = b'b';
    let args = CreateArgs { mem_bytes: 2 * MIB, vcpus: 1, flags: 0, name };
    // SAFETY: CreateArgs is plain data.
    h.write_guest(d0, 0x2000, unsafe { guest_abi::bytes_of(&args) }, false).unwrap();
    assert_eq!(call(&mut h, d0, nr::DOM_CREATE, &[0x2000]), Err(HvError::InvalidArgument), "a\\0b would list as a");
    h.write_guest(d0, 0x3000, b"x\0y", false).unwrap();
    assert_eq!(call(&mut h, d0, nr::DOM_SET_NAME, &[a as u64, 0x3000, 3]), Err(HvError::InvalidArgument));
    assert_eq!(h.domains.get(a).unwrap().name.as_str(), "a");
    assert_eq!(h.info().domains, 2);
}

#[test]
fn dom_list_returns_every_id_across_its_copy_steps() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let t = template(&mut h, 0);
    let mut ids = vec![t];
    ids.extend((0..150).map(|i| h.clone_domain(t, &clone_args("", i, QUOTA_DEFAULT)).unwrap()));
    let out = 0x4000;
    assert_eq!(call(&mut h, d0, nr::DOM_LIST, &[0, out, 1000]), Ok(152));
    let mut got = vec![0u8; 152 * 4];
    h.read_guest(d0, out, &mut got).unwrap();
    let got: Vec<u32> = got.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(got[0], d0);
    assert_eq!(&got[1..], &ids[..]);
    assert_eq!(call(&mut h, d0, nr::DOM_LIST, &[ids[100] as u64, out, 30]), Ok(30), "from an id, bounded by max");
    assert_eq!(call(&mut h, d0, nr::DOM_LIST, &[u64::from(u32::MAX), out, 10]), Ok(0));
}

#[test]
fn console_output_is_kept_per_domain_and_echoed_with_a_prefix() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let u = started(&mut h, "u", 2 * MIB);
    h.write_guest(u, 0x2000, b"hi\nthere\n", false).unwrap();
    assert_eq!(call(&mut h, u, nr::CONSOLE_WRITE, &[0x2000, 9]), Ok(9));
    assert_eq!(serial(&mut h), b"(d1) hi\n(d1) there\n");
    let out_gpa = 0x3000;
    let r = call(&mut h, d0, nr::CONSOLE_GET, &[u as u64, 3, out_gpa, 100]).unwrap();
    assert_eq!(r & 0xFFFF_FFFF, 6);
    let mut b = [0u8; 6];
    h.read_guest(d0, out_gpa, &mut b).unwrap();
    assert_eq!(&b, b"there\n");
    // Port 0xE9 is a console too.
    vcpu(&mut h, u).regs.rax = b'!' as u64;
    h.handle_exit(u, Exit::Io { port: 0xE9, size: 1, write: true, string: false });
    assert_eq!(h.domains.get(u).unwrap().console.total(), 10);
}

#[test]
fn partial_console_lines_of_two_domains_never_share_a_serial_line() {
    let mut h = hv();
    let _d0 = dom0(&mut h);
    let a = started(&mut h, "a", 2 * MIB);
    let b = started(&mut h, "b", 2 * MIB);
    h.write_guest(a, 0x2000, b"abc", false).unwrap();
    h.write_guest(b, 0x2000, b"line\n", false).unwrap();
    assert_eq!(call(&mut h, a, nr::CONSOLE_WRITE, &[0x2000, 3]), Ok(3));
    assert_eq!(call(&mut h, b, nr::CONSOLE_WRITE, &[0x2000, 5]), Ok(5));
    assert_eq!(call(&mut h, a, nr::CONSOLE_WRITE, &[0x2000, 3]), Ok(3));
    assert_eq!(serial(&mut h), b"(d2) line\n", "a's partial line waits for its newline");
    h.exit(a, 0);
    assert_eq!(serial(&mut h), b"(d2) line\n(d1) abcabc\n", "ending a domain flushes its last line");
    h.platform.out.clear();
    let long = [b'x'; super::ECHO_LINE_MAX_BYTES + 10];
    h.write_guest(b, 0x3000, &long, false).unwrap();
    assert_eq!(call(&mut h, b, nr::CONSOLE_WRITE, &[0x3000, long.len() as u64]), Ok(long.len() as u64));
    let out = alloc::string::String::from_utf8(serial(&mut h)).unwrap();
    assert_eq!(out.lines().count(), 1, "a long line is broken at the limit, the rest waits");
    assert_eq!(out.len(), "(d2) \n".len() + super::ECHO_LINE_MAX_BYTES);
}

/// 64 KiB of numbered 64-byte lines.
fn numbered_lines(count: usize) -> Vec<u8> {
    let mut text = Vec::new();
    for i in 0..count {
        let line = alloc::format!("line {i:05} {}\n", "x".repeat(52));
        text.extend_from_slice(line.as_bytes());
    }
    text
}

#[test]
fn a_huge_console_write_costs_one_exit_a_bounded_amount_of_serial_work() {
    let mut h = hv();
    let u = started(&mut h, "u", 2 * MIB);
    let text = numbered_lines(1024);
    assert_eq!(text.len(), 64 * 1024);
    h.write_guest(u, 0x10000, &text, false).unwrap();
    // A UART with a 16-byte FIFO that is busy between drains, as on hardware.
    h.platform.uart_fifo = 16;
    vcpu(&mut h, u).script.push_back(Exit::Hypercall);
    let v = vcpu(&mut h, u);
    (v.regs.rax, v.regs.rdi, v.regs.rsi) = (nr::CONSOLE_WRITE, 0x10000, text.len() as u64);
    h.run_once();
    assert_eq!(vcpu(&mut h, u).regs.rax, text.len() as u64, "the write is taken whole");
    assert!(h.platform.drained.iter().all(|&n| n <= 16), "{:?}", h.platform.drained);
    assert!(h.platform.out.len() <= SERIAL_DRAIN_BYTES_PER_EXIT);
    // The rest follows over later exits and idle time; the ring kept the newest 16 KiB.
    h.platform.uart_fifo = 0;
    for _ in 0..200 {
        if !h.serial_pending() {
            break;
        }
        h.platform.now.set(h.platform.now.get() + 2_000_000);
        vcpu(&mut h, u).script.push_back(Exit::Hypercall);
        vcpu(&mut h, u).regs.rax = nr::NULL;
        h.run_once();
    }
    assert!(!h.serial_pending());
    let out = alloc::string::String::from_utf8(h.platform.out.clone()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("(d1) line ") && l.len() == 68), "whole lines only");
    let numbers: Vec<usize> = lines.iter().map(|l| l[10..15].parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "in order");
    assert_eq!(numbers.last(), Some(&1023), "the newest line arrives");
}

#[test]
fn dom0_output_is_slowed_to_the_line_and_never_lost() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let text = numbered_lines(1024);
    h.write_guest(d0, 0x10000, &text, false).unwrap();
    h.platform.uart_fifo = 16;
    let mut done = 0u64;
    let mut short = 0;
    for _ in 0..100_000 {
        if done == text.len() as u64 {
            break;
        }
        let n = call(&mut h, d0, nr::CONSOLE_WRITE, &[0x10000 + done, text.len() as u64 - done]).unwrap();
        assert!(n <= crate::console::CONSOLE_RING_BYTES as u64);
        short += u32::from(n < text.len() as u64 - done);
        done += n;
        // The UART's FIFO empties while time passes.
        h.platform.now.set(h.platform.now.get() + 2_000_000);
        h.drain_serial(SERIAL_DRAIN_BYTES_PER_EXIT);
    }
    assert_eq!(done, text.len() as u64);
    assert!(short > 0, "dom0 had to wait for the line");
    assert_eq!(serial(&mut h), text, "every byte, in order");
}

#[test]
fn wild_accesses_crash_only_the_offending_domain() {
    let mut h = hv();
    let a = started(&mut h, "a", 2 * MIB);
    let b = started(&mut h, "b", 2 * MIB);
    guest_write(&mut h, b, 0x4000, 77);
    h.handle_exit(a, Exit::NestedPageFault { gpa: 3 << 30, write: false, fetch: false });
    let info = h.domain_info(a).unwrap();
    assert_eq!(info.state, state::CRASHED);
    assert!(guest_abi::domctl::name_str(&info.reason).contains("unmapped gpa 0xc0000000"));
    assert_eq!(guest_read(&h, b, 0x4000), 77);
    // The hypervisor (builder, dom0) writing the start-of-day page leaves it read-only to b.
    h.write_guest(b, 0x1000, b"sod", true).unwrap();
    h.write_guest(b, 0x1008, b"again", true).unwrap();
    let leaf = h.domains.get(b).unwrap().p2m.as_ref().unwrap().lookup(&h.mem, 1).unwrap();
    assert!(!leaf.writable, "the start-of-day page must stay read-only to its guest");
    let mut sod = [0u8; 13];
    h.read_guest(b, 0x1000, &mut sod).unwrap();
    assert_eq!(&sod[..3], b"sod");
    assert_eq!(&sod[8..], b"again");
    h.handle_exit(b, Exit::NestedPageFault { gpa: 0x1000, write: true, fetch: false });
    assert!(guest_abi::domctl::name_str(&h.domain_info(b).unwrap().reason).contains("start-of-day"));
    let c = started(&mut h, "c", 2 * MIB);
    h.handle_exit(c, Exit::TripleFault);
    assert_eq!(h.domain_info(c).unwrap().state, state::CRASHED);
    let e = started(&mut h, "e", 2 * MIB);
    h.handle_exit(e, Exit::InvalidState(33));
    assert_eq!(h.domain_info(e).unwrap().state, state::CRASHED);
    assert_eq!(h.backend.live, 0, "crashed domains release their vCPUs");
    h.check_invariants().unwrap();
}

#[test]
fn intercepted_debug_and_alignment_exceptions_are_reflected_into_the_guest() {
    let mut h = hv();
    let u = started(&mut h, "u", 2 * MIB);
    assert!(matches!(h.handle_exit(u, Exit::Exception { vector: vector::AC, error: Some(0) }), Next::Continue));
    assert!(matches!(h.handle_exit(u, Exit::Exception { vector: vector::DB, error: None }), Next::Continue));
    assert_eq!(vcpu(&mut h, u).injected, vec![(vector::AC, true), (vector::DB, true)]);
    assert_eq!(h.domain_info(u).unwrap().state, state::RUNNING);
}

#[test]
fn cpuid_identifies_the_hypervisor_and_hides_virtualization() {
    let mut h = hv();
    let u = started(&mut h, "u", 2 * MIB);
    vcpu(&mut h, u).regs.rax = 0x4000_0000;
    h.handle_exit(u, Exit::Cpuid);
    let r = vcpu(&mut h, u).regs;
    let mut sig = Vec::new();
    for w in [r.rbx, r.rcx, r.rdx] {
        sig.extend_from_slice(&(w as u32).to_le_bytes());
    }
    assert_eq!(&sig[..], &guest_abi::hypercall::SIGNATURE[..]);
    vcpu(&mut h, u).regs.rax = 0x4000_0001;
    h.handle_exit(u, Exit::Cpuid);
    assert_eq!(vcpu(&mut h, u).regs.rax, CallInsn::Vmmcall as u64);
    vcpu(&mut h, u).regs.rax = 1;
    h.handle_exit(u, Exit::Cpuid);
    let ecx = vcpu(&mut h, u).regs.rcx as u32;
    assert_eq!(ecx & (1 << 5), 0, "no VMX");
    assert_ne!(ecx & (1 << 31), 0, "hypervisor bit");
    vcpu(&mut h, u).regs.rax = 0x8000_0001;
    h.handle_exit(u, Exit::Cpuid);
    assert_eq!(vcpu(&mut h, u).regs.rcx & 4, 0, "no SVM");
}

#[test]
fn msr_accesses_are_filtered() {
    let mut h = hv();
    let u = started(&mut h, "u", 2 * MIB);
    let v = vcpu(&mut h, u);
    v.ctx.efer = (EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE | EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE).bits();
    v.regs.rcx = 0xC000_0080;
    h.handle_exit(u, Exit::Rdmsr);
    assert_eq!(vcpu(&mut h, u).regs.rax & (1 << 12), 0, "SVME hidden");
    let v = vcpu(&mut h, u);
    (v.regs.rcx, v.regs.rax, v.regs.rdx) = (0xC000_0080, 0, 0);
    h.handle_exit(u, Exit::Wrmsr);
    assert_eq!(vcpu(&mut h, u).injected.pop(), Some((vector::GP, true)), "clearing LME");
    let v = vcpu(&mut h, u);
    (v.regs.rcx, v.regs.rax, v.regs.rdx) = (0xC000_0100, 0x1234, 0);
    h.handle_exit(u, Exit::Wrmsr);
    assert_eq!(vcpu(&mut h, u).ctx.fs.base, 0x1234);
    let v = vcpu(&mut h, u);
    (v.regs.rcx, v.regs.rax, v.regs.rdx) = (0xC000_0100, 0, 0x8000);
    h.handle_exit(u, Exit::Wrmsr);
    assert_eq!(vcpu(&mut h, u).injected.pop(), Some((vector::GP, true)), "non-canonical base");
    vcpu(&mut h, u).regs.rcx = 0x3A;
    h.handle_exit(u, Exit::Rdmsr);
    assert_eq!(vcpu(&mut h, u).injected.pop(), Some((vector::GP, true)), "unknown MSR");
}

/// A domain whose vCPU runs 64-bit code at `rip` through identity-mapping page tables
/// (one 2 MiB page) with `code` at `rip`.
fn with_code(h: &mut Hv, code: &[u8]) -> DomId {
    let u = started(h, "", 4 * MIB);
    h.write_guest(u, 0x10000, &(0x11000u64 | 1).to_le_bytes(), false).unwrap();
    h.write_guest(u, 0x11000, &(0x12000u64 | 1).to_le_bytes(), false).unwrap();
    h.write_guest(u, 0x12000, &((1u64 << 7) | 1).to_le_bytes(), false).unwrap();
    h.write_guest(u, 0x20000, code, false).unwrap();
    let v = vcpu(h, u);
    v.ctx = VcpuContext::long_mode(0x20000, 0x30000, 0x10000, 0, 0x2000);
    // Without NXE, which the context's default EFER has.
    v.ctx.efer = EferFlags::LONG_MODE_ENABLE.bits() | EferFlags::LONG_MODE_ACTIVE.bits();
    u
}

#[test]
fn undecoded_cr_writes_are_fetched_decoded_and_vetted_like_decoded_ones() {
    let mut h = hv();
    // mov cr4, rax
    let u = with_code(&mut h, &[0x0F, 0x22, 0xE0]);
    let old = vcpu(&mut h, u).ctx.cr4;
    vcpu(&mut h, u).regs.rax = old | Cr4Flags::PROTECTION_KEY_USER.bits();
    h.handle_exit(u, Exit::ControlRegisterUndecoded { cr: 4 });
    assert_eq!(vcpu(&mut h, u).injected.pop(), Some((vector::GP, true)), "a hidden feature's bit");
    assert_eq!(vcpu(&mut h, u).ctx.cr4, old);
    vcpu(&mut h, u).regs.rax = old | Cr4Flags::PAGE_GLOBAL.bits();
    let flushes = vcpu(&mut h, u).flushes;
    h.handle_exit(u, Exit::ControlRegisterUndecoded { cr: 4 });
    let v = vcpu(&mut h, u);
    assert_eq!((v.ctx.cr4, v.ctx.rip), (old | Cr4Flags::PAGE_GLOBAL.bits(), 0x20003), "applied, RIP past the 3 bytes");
    assert!(v.flushes > flushes, "the emulated write flushes like the CPU would");
    // lock mov cr0, rcx is AMD's way to write CR8.
    let u2 = with_code(&mut h, &[0xF0, 0x0F, 0x22, 0xC1]);
    vcpu(&mut h, u2).regs.rcx = 9;
    h.handle_exit(u2, Exit::ControlRegisterUndecoded { cr: 8 });
    assert_eq!((vcpu(&mut h, u2).tpr, vcpu(&mut h, u2).ctx.rip), (9, 0x20004));
    // clts
    let u3 = with_code(&mut h, &[0x0F, 0x06]);
    vcpu(&mut h, u3).ctx.cr0 |= Cr0Flags::TASK_SWITCHED.bits();
    h.handle_exit(u3, Exit::ControlRegisterUndecoded { cr: 0 });
    assert_eq!(vcpu(&mut h, u3).ctx.cr0 & Cr0Flags::TASK_SWITCHED.bits(), 0);
    h.check_invariants().unwrap();
}

#[test]
fn leaving_long_mode_stops_the_domain_and_undecodable_writes_crash_it() {
    use guest_abi::vcpu::Segment;
    let mut h = hv();
    // mov cr0, rax from a 32-bit compatibility-mode segment with PG cleared.
    let u = with_code(&mut h, &[0x0F, 0x22, 0xC0]);
    let v = vcpu(&mut h, u);
    v.ctx.cs = Segment { selector: 0x18, attrs: 0x0C9B, limit: 0xFFFF_FFFF, base: 0 };
    v.regs.rax = v.ctx.cr0 & !Cr0Flags::PAGING.bits();
    h.handle_exit(u, Exit::ControlRegisterUndecoded { cr: 0 });
    let i = h.domain_info(u).unwrap();
    assert_eq!(i.state, state::CRASHED);
    assert!(guest_abi::domctl::name_str(&i.reason).starts_with("guest left long mode"), "{}", guest_abi::domctl::name_str(&i.reason));
    // The same from 64-bit code is #GP, as on the CPU.
    let w = with_code(&mut h, &[0x0F, 0x22, 0xC0]);
    vcpu(&mut h, w).regs.rax = vcpu(&mut h, w).ctx.cr0 & !Cr0Flags::PAGING.bits();
    h.handle_exit(w, Exit::ControlRegisterUndecoded { cr: 0 });
    assert_eq!(vcpu(&mut h, w).injected.pop(), Some((vector::GP, true)));
    // Bytes that are not a CR write, and a RIP on an unmapped page.
    let x = with_code(&mut h, &[0x90, 0x90]);
    h.handle_exit(x, Exit::ControlRegisterUndecoded { cr: 4 });
    let r = h.domain_info(x).unwrap();
    assert_eq!(r.state, state::CRASHED);
    assert!(guest_abi::domctl::name_str(&r.reason).contains("cannot emulate"));
    let y = with_code(&mut h, &[0x0F, 0x22, 0xE0]);
    vcpu(&mut h, y).ctx.rip = 0x4000_0000;
    h.handle_exit(y, Exit::ControlRegisterUndecoded { cr: 4 });
    assert_eq!(h.domain_info(y).unwrap().state, state::CRASHED);
    h.check_invariants().unwrap();
}

#[test]
fn block_returns_pending_events_and_wakes_on_events() {
    let mut h = hv();
    let u = started(&mut h, "u", 2 * MIB);
    assert_eq!(call(&mut h, u, nr::EVENT_ACK, &[]), Ok(0));
    // Nothing pending: the domain blocks.
    vcpu(&mut h, u).regs.rax = nr::BLOCK;
    vcpu(&mut h, u).regs.rdi = 0;
    assert_eq!(h.handle_exit(u, Exit::Hypercall), Next::Reschedule);
    assert_eq!(h.domain_info(u).unwrap().state, state::BLOCKED);
    h.raise(u, event::CONSOLE_INPUT);
    assert_eq!(h.domain_info(u).unwrap().state, state::RUNNING);
    assert_eq!(vcpu(&mut h, u).regs.rax, event::CONSOLE_INPUT, "block returns the bits");
    // Pending already: returns at once.
    assert_eq!(call(&mut h, u, nr::BLOCK, &[0]), Ok(event::CONSOLE_INPUT));
    assert_eq!(call(&mut h, u, nr::EVENT_ACK, &[]), Ok(event::CONSOLE_INPUT));
    // A timeout wakes it with the TIMER event.
    vcpu(&mut h, u).regs.rax = nr::BLOCK;
    vcpu(&mut h, u).regs.rdi = 1_000_000;
    h.handle_exit(u, Exit::Hypercall);
    for _ in 0..3 {
        h.run_once();
    }
    assert_eq!(h.domains.get(u).unwrap().events.pending & event::TIMER, event::TIMER);
}

#[test]
fn upcalls_are_injected_when_the_guest_can_take_them() {
    let mut h = hv();
    let u = started(&mut h, "u", 2 * MIB);
    assert_eq!(call(&mut h, u, nr::SET_UPCALL, &[0x30]), Ok(0));
    vcpu(&mut h, u).interruptible = false;
    h.raise(u, event::DOMAIN_STATE);
    h.prepare_entry(u);
    assert!(vcpu(&mut h, u).window && vcpu(&mut h, u).injected.is_empty());
    vcpu(&mut h, u).interruptible = true;
    h.handle_exit(u, Exit::InterruptWindow);
    h.prepare_entry(u);
    assert_eq!(vcpu(&mut h, u).injected, vec![(0x30, false)]);
    h.prepare_entry(u);
    assert_eq!(vcpu(&mut h, u).injected.len(), 1, "not again until acknowledged");
    assert_eq!(call(&mut h, u, nr::EVENT_ACK, &[]), Ok(event::DOMAIN_STATE));
}

#[test]
fn preemption_alternates_between_runnable_domains() {
    let mut h = hv();
    let a = started(&mut h, "a", 2 * MIB);
    let b = started(&mut h, "b", 2 * MIB);
    for id in [a, b] {
        vcpu(&mut h, id).script = (0..10).map(|_| Exit::ExternalInterrupt).collect();
    }
    let ran: Vec<DomId> = (0..8)
        .filter_map(|_| match h.run_once() {
            Step::Ran(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ran, vec![a, b, a, b, a, b, a, b]);
}

#[test]
fn clones_start_with_the_templates_tpr_tsc_aux_dr7_and_kernel_gs_base() {
    let mut h = hv();
    let g = started(&mut h, "g", 4 * MIB);
    // The guest sets them through the same exits it would use.
    h.handle_exit(g, Exit::ControlRegisterWrite { cr: 8, value: 7 });
    let v = vcpu(&mut h, g);
    (v.regs.rcx, v.regs.rax, v.regs.rdx) = (u64::from(crate::msr::IA32_TSC_AUX), 0x1234, 0);
    h.handle_exit(g, Exit::Wrmsr);
    let v = vcpu(&mut h, g);
    (v.regs.rcx, v.regs.rax, v.regs.rdx) = (u64::from(crate::msr::IA32_KERNEL_GS_BASE), 0x5000, 0xFFFF_8000);
    h.handle_exit(g, Exit::Wrmsr);
    vcpu(&mut h, g).ctx.dr7 = 0xD0401;
    h.freeze(g, false).unwrap();
    let c = h.clone_domain(g, &clone_args("c", 0, QUOTA_DEFAULT)).unwrap();
    let ctx = vcpu(&mut h, c).context();
    assert_eq!((ctx.cr8, ctx.tsc_aux, ctx.dr7, ctx.kernel_gs_base), (7, 0x1234, 0xD0401, 0xFFFF_8000_0000_5000));
    assert_eq!(vcpu(&mut h, c).tpr, 7, "the clone's TPR masks what the template's did");
    // A CR8 value above 15 is #GP and changes nothing.
    h.handle_exit(c, Exit::ControlRegisterWrite { cr: 8, value: 16 });
    assert_eq!(vcpu(&mut h, c).injected.pop(), Some((vector::GP, true)));
    assert_eq!(vcpu(&mut h, c).tpr, 7);
}

#[test]
fn an_upcall_waits_while_the_tpr_masks_its_class() {
    let mut h = hv();
    let u = started(&mut h, "u", 2 * MIB);
    assert_eq!(call(&mut h, u, nr::SET_UPCALL, &[0x30]), Ok(0));
    h.handle_exit(u, Exit::ControlRegisterWrite { cr: 8, value: 3 });
    h.raise(u, event::TIMER);
    h.run_once();
    assert!(vcpu(&mut h, u).injected.is_empty(), "class 3 is masked by TPR 3");
    assert!(!vcpu(&mut h, u).window, "and no window exit is asked for: the CR8 write will come");
    vcpu(&mut h, u).script.push_back(Exit::ControlRegisterWrite { cr: 8, value: 2 });
    h.run_once();
    h.run_once();
    assert_eq!(vcpu(&mut h, u).injected, vec![(0x30, false)], "lowering CR8 lets it in");
}

#[test]
fn register_state_outside_the_control_block_follows_its_domain() {
    let mut h = hv();
    let a = started(&mut h, "a", 2 * MIB);
    let b = started(&mut h, "b", 2 * MIB);
    for (id, dr0) in [(a, 0xA), (b, 0xB)] {
        vcpu(&mut h, id).writes_dr0 = dr0;
        vcpu(&mut h, id).script = (0..4).map(|_| Exit::ExternalInterrupt).collect();
    }
    for _ in 0..4 {
        h.run_once();
    }
    assert_eq!(vcpu(&mut h, a).seen_dr0, vec![0, 0xA], "a sees its own registers, never b's");
    assert_eq!(vcpu(&mut h, b).seen_dr0, vec![0, 0xB]);
    let loads = h.backend.loads;
    vcpu(&mut h, a).script = VecDeque::from([Exit::ExternalInterrupt, Exit::ExternalInterrupt]);
    h.pause(b, PauseReason::User).unwrap();
    h.run_once();
    h.run_once();
    assert_eq!(h.backend.loads, loads + 1, "running the same vCPU again reloads nothing");

    // A dead domain owns nothing (its id may come back); a new one starts from reset state.
    h.destroy_domain(a).unwrap();
    assert_eq!(h.extended_owner, None);
    let c = started(&mut h, "c", 2 * MIB);
    vcpu(&mut h, c).script = VecDeque::from([Exit::ExternalInterrupt]);
    h.run_once();
    assert_eq!(vcpu(&mut h, c).seen_dr0, vec![0]);

    // A template keeps the state it had in the CPU when frozen, and its clones start from it.
    vcpu(&mut h, c).writes_dr0 = 0xC;
    vcpu(&mut h, c).script = VecDeque::from([Exit::ExternalInterrupt]);
    h.run_once();
    h.freeze(c, false).unwrap();
    let k = h.clone_domain(c, &clone_args("k", 0, QUOTA_DEFAULT)).unwrap();
    vcpu(&mut h, k).script = VecDeque::from([Exit::ExternalInterrupt]);
    h.run_once();
    assert_eq!(vcpu(&mut h, k).seen_dr0, vec![0xC]);
    h.check_invariants().unwrap();
}

#[test]
fn hlt_blocks_until_an_event_and_bare_mode_ends_when_all_die() {
    let mut h = hv();
    let a = started(&mut h, "a", 2 * MIB);
    vcpu(&mut h, a).script = VecDeque::from([Exit::Hlt]);
    assert_eq!(h.run_once(), Step::Ran(a));
    assert_eq!(h.domain_info(a).unwrap().state, state::BLOCKED);
    assert_eq!(h.run_once(), Step::Idle);
    h.raise(a, event::TIMER);
    vcpu(&mut h, a).script = VecDeque::from([Exit::TripleFault]);
    assert_eq!(h.run_once(), Step::Ran(a));
    assert_eq!(h.run_once(), Step::NothingLeft);
}

fn template(h: &mut Hv, pages_written: u64) -> DomId {
    let t = started(h, "tpl", 8 * MIB);
    for g in 0..pages_written {
        guest_write(h, t, 0x10_0000 + g * PAGE_SIZE, 0xABC0_0000 + g);
    }
    let mut info = StartInfo::empty();
    info.domid = t;
    h.write_guest(t, START_INFO_GPA, info.as_bytes(), true).unwrap();
    h.freeze(t, false).unwrap();
    t
}

fn clone_args(name: &str, index: u32, quota: u64) -> CloneArgs {
    CloneArgs { quota_pages: quota, index, flags: 0, name: name_field(name) }
}

#[test]
fn clones_share_read_only_and_copy_on_write() {
    let mut h = hv();
    let t = template(&mut h, 16);
    let before = h.info();
    let c1 = h.clone_domain(t, &clone_args("c0", 0, QUOTA_DEFAULT)).unwrap();
    let c2 = h.clone_domain(t, &clone_args("c1", 1, QUOTA_DEFAULT)).unwrap();
    // A clone costs a root, three tables to its start-of-day page, that page and a control block.
    assert_eq!((before.free_kib - h.info().free_kib) / 4, 2 * 6);
    assert_eq!(guest_read(&h, c1, 0x10_0000 + 3 * PAGE_SIZE), 0xABC0_0003);
    guest_write(&mut h, c1, 0x10_0000 + 3 * PAGE_SIZE, 1);
    guest_write(&mut h, c2, 0x10_0000 + 3 * PAGE_SIZE, 2);
    assert_eq!(guest_read(&h, c1, 0x10_0000 + 3 * PAGE_SIZE), 1);
    assert_eq!(guest_read(&h, c2, 0x10_0000 + 3 * PAGE_SIZE), 2);
    assert_eq!(guest_read(&h, t, 0x10_0000 + 3 * PAGE_SIZE), 0xABC0_0003);
    let s = h.domain_stat(c1).unwrap();
    assert_eq!((s.cow_faults, s.private_pages), (1, 1));
    let i = h.domain_info(c1).unwrap();
    assert_eq!((i.parent, i.private_pages, i.shared_pages), (t, 1, 8 * MIB / PAGE_SIZE - 2));
    assert_eq!(h.domain_info(t).unwrap().clones, 2);
    assert!(h.info().saved_kib > 2 * 8 * 1024 - 64);
    h.check_invariants().unwrap();
}

#[test]
fn clone_learns_its_identity_from_its_start_of_day_page_and_an_event() {
    let mut h = hv();
    let t = template(&mut h, 1);
    let c = h.clone_domain(t, &clone_args("web", 7, QUOTA_DEFAULT)).unwrap();
    let mut info = StartInfo::empty();
    // SAFETY: StartInfo is plain data.
    h.read_guest(c, START_INFO_GPA, unsafe { guest_abi::bytes_of_mut(&mut info) }).unwrap();
    assert_eq!((info.domid, info.parent, info.clone_index), (c, t, 7));
    assert!(info.is_clone());
    assert_eq!(info.name(), "web");
    assert_eq!(info.generation, h.domain_stat(c).unwrap().generation);
    let mut tinfo = StartInfo::empty();
    // SAFETY: as above.
    h.read_guest(t, START_INFO_GPA, unsafe { guest_abi::bytes_of_mut(&mut tinfo) }).unwrap();
    assert!(!tinfo.is_clone(), "the template's page is untouched");
    assert_eq!(call(&mut h, c, nr::EVENT_ACK, &[]), Ok(event::CLONED));
    let c2 = h.clone_domain(t, &clone_args("web2", 8, QUOTA_DEFAULT)).unwrap();
    assert_ne!(h.domain_stat(c2).unwrap().generation, info.generation);
}

#[test]
fn self_freeze_returns_zero_only_in_clones() {
    let mut h = hv();
    let g = started(&mut h, "g", 4 * MIB);
    vcpu(&mut h, g).regs.rax = nr::FREEZE_SELF;
    vcpu(&mut h, g).regs.rbx = 0x5555;
    assert_eq!(h.handle_exit(g, Exit::Hypercall), Next::Reschedule);
    assert_eq!(h.domain_info(g).unwrap().state, state::FROZEN);
    let c = h.clone_domain(g, &clone_args("", 0, QUOTA_DEFAULT)).unwrap();
    let ctx = vcpu(&mut h, c).context();
    assert_eq!((ctx.rax, ctx.rbx), (0, 0x5555));
    assert_eq!(h.freeze(c, false), Ok(()), "clones can become templates");
    let d0 = dom0(&mut h);
    assert_eq!(call(&mut h, d0, nr::FREEZE_SELF, &[]), Err(HvError::NotPermitted));
}

#[test]
fn quota_and_memory_exhaustion_pause_the_clone_and_nothing_else() {
    let mut h = hv();
    let t = template(&mut h, 4);
    let q = h.clone_domain(t, &clone_args("q", 0, 2)).unwrap();
    let other = h.clone_domain(t, &clone_args("o", 1, QUOTA_DEFAULT)).unwrap();
    guest_write(&mut h, other, 0x10_0000, 5);
    guest_write(&mut h, q, 0x20_0000, 1);
    guest_write(&mut h, q, 0x20_1000, 1);
    guest_write(&mut h, q, 0x20_2000, 1);
    let i = h.domain_info(q).unwrap();
    assert_eq!((i.state, i.pause_reason), (state::PAUSED, pause::QUOTA));
    assert!(guest_abi::domctl::name_str(&i.reason).contains("quota"));
    assert_eq!(guest_read(&h, other, 0x10_0000), 5);
    let zero = h.clone_domain(t, &clone_args("z", 2, 0)).unwrap();
    guest_write(&mut h, zero, 0x10_0000, 1);
    assert_eq!(h.domain_info(zero).unwrap().pause_reason, pause::QUOTA, "quota=0: no private pages at all");
    assert_eq!(h.domain_info(zero).unwrap().private_pages, 0);
    // Eat all memory, then a copy must pause the writer with nomem.
    let hog = started(&mut h, "hog", 2 * MIB);
    let mut hogs = vec![hog];
    while let Ok(id) = h.create_domain("", 2 * MIB, false) {
        hogs.push(id);
    }
    let free = h.frames.free_frames();
    let mut g = 0x30_0000;
    while h.domain_info(other).unwrap().state != state::PAUSED {
        guest_write(&mut h, other, g, 9);
        g += PAGE_SIZE;
        assert!(g < 8 * MIB, "memory ({free} frames) should run out first");
    }
    assert_eq!(h.domain_info(other).unwrap().pause_reason, pause::NOMEM);
    h.check_invariants().unwrap();
    for id in hogs {
        h.destroy_domain(id).unwrap();
    }
    h.unpause(other).unwrap();
    guest_write(&mut h, other, g, 9);
    assert_eq!(h.domain_info(other).unwrap().state, state::RUNNING);
}

#[test]
fn page_tables_count_against_the_quota_and_a_refused_write_allocates_nothing() {
    let mut h = hv();
    let t = template(&mut h, 4);
    // The first write into a still-shared 2 MiB region copies its last-level table and then
    // the page: two frames, more than a quota of one allows.
    let q = h.clone_domain(t, &clone_args("q", 0, 1)).unwrap();
    let free = h.frames.free_frames();
    let tables = h.domain_stat(q).unwrap().pagetable_pages;
    guest_write(&mut h, q, 0x20_0000, 1);
    let i = h.domain_info(q).unwrap();
    assert_eq!((i.state, i.pause_reason), (state::PAUSED, pause::QUOTA));
    assert_eq!(h.frames.free_frames(), free, "nothing was allocated");
    let s = h.domain_stat(q).unwrap();
    assert_eq!((s.pagetable_pages, s.quota_used_pages, s.private_pages), (tables, 0, 0));
    // With room for both, the table and the page are charged.
    let r = h.clone_domain(t, &clone_args("r", 1, 2)).unwrap();
    guest_write(&mut h, r, 0x20_0000, 1);
    let s = h.domain_stat(r).unwrap();
    assert_eq!((s.quota_used_pages, s.quota_table_pages, s.private_pages), (2, 1, 1));
    assert_eq!(h.domain_info(r).unwrap().state, state::RUNNING);
    h.check_invariants().unwrap();
}

#[test]
fn mem_protect_charges_the_tables_it_copies_and_flushes_even_when_refused() {
    let mut h = hv();
    let t = template(&mut h, 4);
    // All RAM above the start-of-day page: an 8 MiB clone shares three of its four
    // last-level tables (its start-of-day path made the first private), so three are copied.
    let (gpa, pages) = (2 * PAGE_SIZE, 8 * MIB / PAGE_SIZE - 2);
    let q = h.clone_domain(t, &clone_args("q", 0, 2)).unwrap();
    let free = h.frames.free_frames();
    let flushes = vcpu(&mut h, q).flushes;
    assert_eq!(call(&mut h, q, nr::MEM_PROTECT, &[gpa, pages]), Err(HvError::QuotaExceeded));
    assert_eq!(h.frames.free_frames(), free, "nothing was allocated");
    assert!(vcpu(&mut h, q).flushes > flushes, "a refused call flushes too");
    assert_eq!(h.domain_stat(q).unwrap().quota_used_pages, 0);
    let r = h.clone_domain(t, &clone_args("r", 1, QUOTA_DEFAULT)).unwrap();
    assert_eq!(call(&mut h, r, nr::MEM_PROTECT, &[gpa, pages]), Ok(0));
    let s = h.domain_stat(r).unwrap();
    assert_eq!((s.quota_used_pages, s.quota_table_pages), (3, 3));
    h.check_invariants().unwrap();
}

#[test]
fn template_with_clones_cannot_be_destroyed_and_teardown_returns_every_frame() {
    let mut h = hv();
    let baseline = h.info();
    let t = template(&mut h, 8);
    let clones: Vec<DomId> = (0..5).map(|i| h.clone_domain(t, &clone_args("", i, QUOTA_DEFAULT)).unwrap()).collect();
    for (i, &c) in clones.iter().enumerate() {
        guest_write(&mut h, c, 0x40_0000 + i as u64 * 0x20_0000 % (4 * MIB), 3);
    }
    // A chain: freeze a clone, clone it.
    h.freeze(clones[0], false).unwrap();
    let grandchild = h.clone_domain(clones[0], &clone_args("gc", 0, QUOTA_DEFAULT)).unwrap();
    assert_eq!(guest_read(&h, grandchild, 0x40_0000), 3);
    assert_eq!(h.destroy_domain(t), Err(HvError::Busy));
    assert_eq!(h.destroy_domain(clones[0]), Err(HvError::Busy));
    h.check_invariants().unwrap();
    h.destroy_domain(grandchild).unwrap();
    for c in clones {
        h.destroy_domain(c).unwrap();
    }
    assert_eq!(h.domain_info(t).unwrap().clones, 0);
    h.destroy_domain(t).unwrap();
    assert_eq!(h.info().free_kib, baseline.free_kib);
    assert_eq!(h.info().domains, 0);
    h.check_invariants().unwrap();
}

#[test]
fn dom0_copies_into_and_out_of_other_domains() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let u = h.create_domain("u", 2 * MIB, false).unwrap();
    h.write_guest(d0, 0x8000, b"payload!", false).unwrap();
    assert_eq!(call(&mut h, d0, nr::MEM_WRITE, &[u as u64, 0x10_0000, 0x8000, 8]), Ok(0));
    assert_eq!(call(&mut h, d0, nr::MEM_READ, &[u as u64, 0x10_0000, 0x9000, 8]), Ok(0));
    let mut b = [0u8; 8];
    h.read_guest(d0, 0x9000, &mut b).unwrap();
    assert_eq!(&b, b"payload!");
    assert_eq!(call(&mut h, d0, nr::MEM_WRITE, &[u as u64, 2 * MIB - 4, 0x8000, 8]), Err(HvError::BadAddress));
    assert_eq!(call(&mut h, d0, nr::MEM_WRITE, &[999, 0, 0x8000, 8]), Err(HvError::NoSuchDomain));
    assert_eq!(call(&mut h, d0, nr::DOM_DESTROY, &[d0 as u64]), Err(HvError::NotPermitted));
    // Create through the hypercall interface.
    let args = CreateArgs { mem_bytes: 2 * MIB, vcpus: 1, flags: 0, name: name_field("made") };
    // SAFETY: plain data.
    h.write_guest(d0, 0xA000, unsafe { guest_abi::bytes_of(&args) }, false).unwrap();
    let made = call(&mut h, d0, nr::DOM_CREATE, &[0xA000]).unwrap() as DomId;
    assert_eq!(h.domain_info(made).unwrap().state, state::PAUSED);
    assert_eq!(call(&mut h, d0, nr::DOM_LIST, &[0, 0xB000, 16]), Ok(3));
}

#[test]
fn random_hypercalls_from_a_guest_never_hurt_anyone_else() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let victim = started(&mut h, "victim", 2 * MIB);
    guest_write(&mut h, victim, 0x10_0000, 0xFEED);
    let fuzzer = started(&mut h, "fuzzer", 2 * MIB);
    let mut next = crate::testing::xorshift(0x1234_5678_9ABC_DEF1);
    let edges = [0, 1, u64::MAX, 2 * MIB - 1, 2 * MIB, 0x1000, 0xFFF, 1 << 40, victim as u64, d0 as u64];
    for _ in 0..20_000 {
        let n = match next() % 4 {
            0 => next() % 16,
            1 => nr::CONTROL_BASE + next() % 0x20,
            2 => next(),
            _ => next() % 0x400,
        };
        if matches!(n, nr::SHUTDOWN | nr::FREEZE_SELF | nr::BLOCK) {
            continue;
        }
        let args: Vec<u64> = (0..6).map(|_| if next() % 2 == 0 { edges[(next() % 10) as usize] } else { next() }).collect();
        let r = call(&mut h, fuzzer, n, &args);
        if (nr::CONTROL_BASE..nr::CONTROL_END).contains(&n) {
            assert_eq!(r, Err(HvError::NotPermitted));
        }
        let d = h.domains.get(fuzzer).unwrap();
        assert_eq!(d.life, Life::Live, "hypercall {n:#x} {args:x?} killed the caller");
    }
    assert_eq!(guest_read(&h, victim, 0x10_0000), 0xFEED);
    assert_eq!(h.domain_info(d0).unwrap().state, state::RUNNING);
    h.check_invariants().unwrap();
}

/// Every live vCPU's control block must still be an allocated hypervisor frame.
fn assert_control_blocks_live(h: &Hv) {
    for d in h.domains.iter() {
        if let Some(v) = &d.vcpu {
            let block = Pfn(v.root >> 32);
            assert_eq!(h.frames.kind(block), FrameKind::Hypervisor, "d{}'s control block {block:?} was freed", d.id);
        }
    }
}

#[test]
fn random_lifecycles_at_the_edge_of_memory_keep_every_reference_exact() {
    // The full invariant check scans the whole frame table, so it runs every few steps (a
    // broken count stays broken) and once at the end.
    const STEPS: u64 = 400;
    const CHECK_EVERY_STEPS: u64 = 8;
    for seed in 1..=6u64 {
        let mut h = hv();
        let mut next = crate::testing::xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let t = template(&mut h, 8);
        // Eat most of memory so that allocations fail in every path.
        let mut hogs = Vec::new();
        while h.frames.free_frames() > 700 {
            match h.create_domain("", 2 * MIB, false) {
                Ok(id) => hogs.push(id),
                Err(_) => break,
            }
        }
        let mut templates = vec![t];
        let mut clones: Vec<DomId> = Vec::new();
        for step in 0..STEPS {
            match next() % 10 {
                0..=2 => {
                    let t = templates[(next() % templates.len() as u64) as usize];
                    let quota = if next() % 4 == 0 { next() % 8 } else { QUOTA_DEFAULT };
                    if let Ok(c) = h.clone_domain(t, &clone_args("", 0, quota)) {
                        clones.push(c);
                    }
                }
                3..=5 if !clones.is_empty() => {
                    let c = clones[(next() % clones.len() as u64) as usize];
                    let gpa = 0x10_0000 + (next() % 1024) * PAGE_SIZE;
                    if h.domain_info(c).map(|i| i.state) == Ok(state::RUNNING) {
                        guest_write(&mut h, c, gpa, step);
                    }
                }
                6 if !clones.is_empty() => {
                    let i = (next() % clones.len() as u64) as usize;
                    if h.freeze(clones[i], false).is_ok() {
                        templates.push(clones.swap_remove(i));
                    }
                }
                7 if !clones.is_empty() => {
                    let i = (next() % clones.len() as u64) as usize;
                    if h.destroy_domain(clones[i]).is_ok() {
                        clones.swap_remove(i);
                    }
                }
                8 if !hogs.is_empty() && next() % 3 == 0 => {
                    let id = hogs.swap_remove((next() % hogs.len() as u64) as usize);
                    h.destroy_domain(id).unwrap();
                }
                9 if !clones.is_empty() => {
                    let c = clones[(next() % clones.len() as u64) as usize];
                    let _ = h.unpause(c);
                    vcpu_script(&mut h, c);
                    let _ = h.run_once();
                }
                _ => {
                    let i = (next() % templates.len() as u64) as usize;
                    if templates.len() > 1 && h.destroy_domain(templates[i]).is_ok() {
                        templates.swap_remove(i);
                    }
                }
            }
            if step % CHECK_EVERY_STEPS == 0 || step == STEPS - 1 {
                if let Err(e) = h.check_invariants() {
                    panic!("seed {seed} step {step}: {e:?}");
                }
            }
            assert_control_blocks_live(&h);
        }
    }
}

fn vcpu_script(h: &mut Hv, id: DomId) {
    if let Some(v) = h.domains.get_mut(id).and_then(|d| d.vcpu.as_mut()) {
        v.script = VecDeque::from([Exit::NestedPageFault { gpa: 0x10_0000, write: true, fetch: false }, Exit::Hlt]);
    }
}

/// Every live domain's translations as its vCPU may have cached them: gfn -> (frame, writable).
fn translations(h: &Hv) -> BTreeMap<DomId, BTreeMap<u64, (Pfn, bool)>> {
    let mut all = BTreeMap::new();
    for d in h.domains.iter().filter(|d| d.vcpu.is_some()) {
        let Some(p) = &d.p2m else { continue };
        let mut m = BTreeMap::new();
        for gfn in 0..d.gpa_limit / PAGE_SIZE {
            if let Some(l) = p.lookup(&h.mem, gfn) {
                m.insert(gfn, (l.pfn, l.writable));
            }
        }
        all.insert(d.id, m);
    }
    all
}

/// Fails if some live domain lost a translation, or write access, or saw a guest frame move
/// to another machine frame, without its vCPU having a flush pending: it could go on using a
/// stale cached translation (emulators flush on every world switch and cannot show this).
fn assert_downgrades_flushed(h: &mut Hv, before: &BTreeMap<DomId, BTreeMap<u64, (Pfn, bool)>>, what: &str) {
    let after = translations(h);
    for (id, old) in before {
        let Some(new) = after.get(id) else { continue };
        let downgraded = old.iter().find(|(g, (pfn, w))| match new.get(g) {
            None => true,
            Some((p, nw)) => p != pfn || (*w && !nw),
        });
        if let Some((g, _)) = downgraded {
            assert!(vcpu(h, *id).flush_pending, "{what}: d{id} gfn {g:#x} downgraded without a flush");
        }
    }
}

#[test]
fn every_mapping_downgrade_is_followed_by_a_flush_before_the_vcpu_runs_again() {
    let mut h = hv();
    let d0 = dom0(&mut h);
    let mut next = crate::testing::xorshift(0xDEAD_BEEF_1234_5678);
    let t = template(&mut h, 64);
    let mut live: Vec<DomId> = vec![started(&mut h, "plain", 4 * MIB)];
    for i in 0..4 {
        live.push(h.clone_domain(t, &clone_args("", i, QUOTA_DEFAULT)).unwrap());
    }
    for step in 0..3000 {
        // The vCPUs run (and so take their pending flushes) between operations.
        for &id in &live {
            vcpu(&mut h, id).flush_pending = false;
        }
        let before = translations(&h);
        let id = live[(next() % live.len() as u64) as usize];
        let mem = h.domains.get(id).map(|d| d.mem_bytes).unwrap_or(0);
        let gpa = (2 + next() % (mem / PAGE_SIZE - 2)) * PAGE_SIZE;
        let what = match next() % 6 {
            0 | 1 => {
                guest_write(&mut h, id, gpa, step);
                "a guest write"
            }
            2 => {
                let pages = 1 + next() % 700;
                let _ = call(&mut h, id, nr::MEM_PROTECT, &[gpa, pages]);
                "mem_protect"
            }
            3 => {
                let _ = call(&mut h, d0, nr::MEM_WRITE, &[id as u64, gpa, 0x8000, 64]);
                "dom0's mem_write"
            }
            4 if live.len() < 8 => {
                // Freeze a clone and clone it: its tables lose write access at the root.
                if id != live[0] && h.freeze(id, false).is_ok() {
                    live.retain(|&l| l != id);
                    if let Ok(c) = h.clone_domain(id, &clone_args("", step as u32, QUOTA_DEFAULT)) {
                        live.push(c);
                    }
                }
                "freeze and clone"
            }
            _ => {
                if let Ok(c) = h.clone_domain(t, &clone_args("", step as u32, 1 + next() % 64)) {
                    live.push(c);
                }
                if live.len() > 6 {
                    let victim = live.remove(1 + (next() % (live.len() as u64 - 1)) as usize);
                    let _ = h.destroy_domain(victim);
                }
                "clone and destroy"
            }
        };
        live.retain(|&l| h.domains.get(l).is_some_and(|d| d.vcpu.is_some()));
        for &l in &live {
            if h.domains.get(l).is_some_and(|d| d.paused.is_some()) {
                let _ = h.unpause(l);
            }
        }
        assert_downgrades_flushed(&mut h, &before, what);
        if live.is_empty() {
            live.push(h.clone_domain(t, &clone_args("", step as u32, QUOTA_DEFAULT)).unwrap());
        }
    }
    h.check_invariants().unwrap();
}

#[path = "saved_tests.rs"]
mod saved;

#[path = "pager_tests.rs"]
mod pager;

#[path = "selfckpt_tests.rs"]
mod selfckpt;

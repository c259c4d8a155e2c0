//! Host tests of the shell against a fake hypervisor that keeps domains in a map.

use super::*;
use crate::control::Hypercalls;
use alloc::collections::BTreeMap;
use alloc::vec;
use guest_abi::domctl::{CloneArgs, CreateArgs, DomainStat, HvInfo, REASON_MAX_BYTES, name_field};
use guest_abi::hypercall::nr;

#[derive(Clone)]
struct FakeDom {
    name: String,
    state: u32,
    pause: u32,
    mem: u64,
    console: Vec<u8>,
    parent: u32,
    clones: u32,
}

#[derive(Default)]
struct FakeHv {
    doms: BTreeMap<u32, FakeDom>,
    next: u32,
    now: u64,
    written: u64,
    calls: Vec<u64>,
}

impl FakeHv {
    fn with_dom0() -> Self {
        let mut f = FakeHv { next: 1, ..Default::default() };
        f.doms.insert(0, FakeDom { name: "dom0".into(), state: state::RUNNING, pause: 0, mem: 64 << 20, console: vec![], parent: NO_DOMAIN, clones: 0 });
        f
    }

    fn dom(&mut self, id: u64) -> HvResult<&mut FakeDom> {
        self.doms.get_mut(&(id as u32)).ok_or(HvError::NoSuchDomain)
    }
}

impl Hypercalls for FakeHv {
    fn call(&mut self, n: u64, a: &[u64]) -> HvResult<u64> {
        self.calls.push(n);
        // SAFETY (all pointer reads/writes below): the shell passes addresses of live host
        // values of the types each hypercall takes.
        match n {
            nr::DOM_CREATE => {
                let args = unsafe { &*(a[0] as *const CreateArgs) };
                let id = self.next;
                self.next += 1;
                let mut name = String::from(name_str(&args.name));
                if name.is_empty() {
                    name = format!("dom{id}");
                }
                if self.doms.values().any(|d| d.name == name) {
                    return Err(HvError::NameTaken);
                }
                self.doms.insert(id, FakeDom { name, state: state::PAUSED, pause: pause::USER, mem: args.mem_bytes, console: vec![], parent: NO_DOMAIN, clones: 0 });
                Ok(id as u64)
            }
            nr::DOM_DESTROY => {
                if self.dom(a[0])?.clones > 0 {
                    return Err(HvError::Busy);
                }
                self.doms.remove(&(a[0] as u32));
                Ok(0)
            }
            nr::DOM_PAUSE => {
                let d = self.dom(a[0])?;
                d.state = state::PAUSED;
                d.pause = pause::USER;
                Ok(0)
            }
            nr::DOM_UNPAUSE => {
                let d = self.dom(a[0])?;
                d.state = state::RUNNING;
                d.pause = 0;
                Ok(0)
            }
            nr::DOM_INFO => {
                let id = a[0] as u32;
                let d = self.dom(a[0])?.clone();
                let out = unsafe { &mut *(a[1] as *mut DomainInfo) };
                *out = DomainInfo {
                    domid: id,
                    state: d.state,
                    pause_reason: d.pause,
                    flags: 0,
                    parent: d.parent,
                    clones: d.clones,
                    mem_bytes: d.mem,
                    private_pages: d.mem / 4096,
                    shared_pages: 0,
                    exit_code: 0,
                    cpu_ns: 0,
                    name: name_field(&d.name),
                    reason: [0; REASON_MAX_BYTES],
                };
                Ok(0)
            }
            nr::DOM_LIST => {
                let ids: Vec<u32> = self.doms.keys().copied().filter(|&i| i as u64 >= a[0]).take(a[2] as usize).collect();
                let out = unsafe { core::slice::from_raw_parts_mut(a[1] as *mut u32, ids.len()) };
                out.copy_from_slice(&ids);
                Ok(ids.len() as u64)
            }
            nr::MEM_WRITE => {
                self.dom(a[0])?;
                self.written += a[3];
                Ok(0)
            }
            nr::VCPU_SET => self.dom(a[0]).map(|_| 0),
            nr::CONSOLE_GET => {
                let d = self.dom(a[0])?.clone();
                let start = (a[1] as usize).min(d.console.len());
                let n = (d.console.len() - start).min(a[3] as usize);
                let out = unsafe { core::slice::from_raw_parts_mut(a[2] as *mut u8, n) };
                out.copy_from_slice(&d.console[start..start + n]);
                Ok(n as u64)
            }
            nr::HV_INFO => {
                let out = unsafe { &mut *(a[0] as *mut HvInfo) };
                *out = HvInfo { vendor: 2, backend: 2, total_kib: 1 << 20, free_kib: 1000, domains: self.doms.len() as u64, ..HvInfo::default() };
                Ok(0)
            }
            nr::DOM_FREEZE => {
                if a[0] == 0 {
                    return Err(HvError::NotPermitted);
                }
                let d = self.dom(a[0])?;
                if d.state == state::FROZEN {
                    return Err(HvError::WrongState);
                }
                d.state = state::FROZEN;
                Ok(0)
            }
            nr::DOM_CLONE => {
                let args = unsafe { &*(a[1] as *const CloneArgs) };
                let t = self.dom(a[0])?;
                if t.state != state::FROZEN {
                    return Err(HvError::NotTemplate);
                }
                let name = name_str(&args.name);
                if self.doms.values().any(|d| d.name == name) {
                    return Err(HvError::NameTaken);
                }
                let t = self.dom(a[0])?;
                t.clones += 1;
                let mem = t.mem;
                let id = self.next;
                self.next += 1;
                self.doms.insert(id, FakeDom { name: name_str(&args.name).into(), state: state::RUNNING, pause: 0, mem, console: vec![], parent: a[0] as u32, clones: 0 });
                Ok(id as u64)
            }
            nr::DOM_STAT => {
                self.dom(a[0])?;
                let out = unsafe { &mut *(a[1] as *mut DomainStat) };
                *out = DomainStat { domid: a[0] as u32, cow_faults: 7, quota_pages: QUOTA_DEFAULT, generation: 3, ..DomainStat::default() };
                Ok(0)
            }
            nr::DOM_SET_NAME => {
                let name = unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(a[1] as *const u8, a[2] as usize)) };
                let name = String::from(name);
                if self.doms.iter().any(|(&id, d)| d.name == name && u64::from(id) != a[0]) {
                    return Err(HvError::NameTaken);
                }
                self.dom(a[0])?.name = name;
                Ok(0)
            }
            nr::FRAME_CHECK => Ok(0),
            nr::TIME => {
                self.now += 10_000_000;
                Ok(self.now)
            }
            nr::BLOCK | nr::EVENT_ACK => Ok(0),
            _ => Err(HvError::NoSuchHypercall),
        }
    }
}

fn shell() -> Shell<FakeHv> {
    let pie: &'static [u8] = alloc::boxed::Box::leak(crate::tests::synth::pie().into_boxed_slice());
    Shell {
        ctl: Control::new(FakeHv::with_dom0()),
        images: vec![Image { name: "hello", data: pie }, Image { name: "junk", data: b"\x7fELF junk" }],
        call_insn: CallInsn::Vmmcall,
        tsc_khz: 1_000_000,
        cycles: || 0,
        storage: crate::save::Storage::none("no disk"),
    }
}

fn run(s: &mut Shell<FakeHv>, line: &str) -> String {
    let mut out = String::new();
    assert_eq!(s.execute(line, &mut out), Flow::Continue, "{line}");
    out
}

#[test]
fn tokenizer_groups_quoted_words_and_key_values() {
    assert_eq!(tokenize(r#"create hello cmdline="a b  c" mem=8"#).unwrap(), vec!["create", "hello", "cmdline=a b  c", "mem=8"]);
    assert_eq!(tokenize("  list  ").unwrap(), vec!["list"]);
    assert_eq!(tokenize(r#"x """#).unwrap(), vec!["x", ""]);
    assert_eq!(tokenize(r#"create "oops"#), Err(ParseError::UnterminatedQuote));
}

#[test]
fn commands_parse_with_defaults_and_reject_junk() {
    assert_eq!(parse("").unwrap(), Command::Empty);
    assert_eq!(parse("   # a comment").unwrap(), Command::Empty);
    assert_eq!(
        parse("create hello").unwrap(),
        Command::Create { image: "hello".into(), name: None, mem_mib: None, cmdline: String::new(), paused: false, channel: false }
    );
    assert_eq!(parse("console web").unwrap(), Command::Console { target: Target::Name("web".into()), history: false });
    assert_eq!(parse("destroy 12").unwrap(), Command::Destroy(vec![Target::Id(12)]));
    assert_eq!(parse("destroy 1 web").unwrap(), Command::Destroy(vec![Target::Id(1), Target::Name("web".into())]));
    assert_eq!(
        parse("clone demo count=3 name=c quota=2").unwrap(),
        Command::Clone { template: Target::Name("demo".into()), count: 3, prefix: Some("c".into()), quota_kib: Some(2048) }
    );
    assert_eq!(
        parse("clone demo quota=300k").unwrap(),
        Command::Clone { template: Target::Name("demo".into()), count: 1, prefix: None, quota_kib: Some(300) }
    );
    assert_eq!(
        parse("vcpu web lstar=0xffff800000001000 cr8=5").unwrap(),
        Command::Vcpu { target: Target::Name("web".into()), set: alloc::vec![("lstar".into(), 0xffff_8000_0000_1000), ("cr8".into(), 5)] }
    );
    assert!(parse("vcpu web xmm0=1").is_err(), "unknown registers are refused");
    assert!(parse("vcpu web rax=zz").is_err());
    assert_eq!(
        parse("vcpu 3").unwrap(),
        Command::Vcpu { target: Target::Id(3), set: alloc::vec![] }
    );
    assert_eq!(parse("wait 3 frozen 5").unwrap(), Command::Wait { target: Target::Id(3), state: WaitState::Frozen, secs: 5 });
    assert!(matches!(parse("frobnicate"), Err(ParseError::UnknownCommand(_))));
    assert!(matches!(parse("create"), Err(ParseError::Missing("image"))));
    assert!(matches!(parse("create hello mem=lots"), Err(ParseError::Bad(_))));
    assert!(matches!(parse("create hello colour=red"), Err(ParseError::Bad(_))));
    assert!(matches!(parse("list extra"), Err(ParseError::Bad(_))));
    assert!(matches!(parse("clone t count=0"), Err(ParseError::Bad(_))));
    assert!(matches!(parse("wait 1 sleeping"), Err(ParseError::Bad(_))));
    assert!(matches!(parse("pause"), Err(ParseError::Missing("domain"))));
    assert_eq!(parse("sleep 250ms").unwrap(), Command::Sleep { ms: 250 });
    assert_eq!(
        parse("bench clone sizes=16,64 count=4").unwrap(),
        Command::Bench(Bench::Clone { image: "demo".into(), sizes: vec![16, 64], count: 4 })
    );
    assert_eq!(parse("bench cow").unwrap(), Command::Bench(Bench::Cow { image: "cowbench".into() }));
    assert!(matches!(parse("bench fast"), Err(ParseError::Bad(_))));
    assert!(matches!(parse("bench clone sizes=a"), Err(ParseError::Bad(_))));
    assert_eq!(parse("sleep 2").unwrap(), Command::Sleep { ms: 2000 });
    assert!(matches!(parse("sleep forever"), Err(ParseError::Bad(_))));
    assert!(matches!(parse("sleep 100000s"), Err(ParseError::Bad(_))));
}

#[test]
fn create_builds_through_hypercalls_and_list_shows_it() {
    let mut s = shell();
    let out = run(&mut s, "create hello name=web mem=8");
    assert_eq!(out, "created domain 1 web\n");
    assert!(s.ctl.hc.written > 0, "the image was written with mem_write");
    assert!(s.ctl.hc.calls.contains(&nr::VCPU_SET) && s.ctl.hc.calls.contains(&nr::DOM_UNPAUSE));
    let list = run(&mut s, "list");
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("Name") && lines[0].contains("Private(KiB)") && lines[0].ends_with("Parent"));
    assert!(lines[2].starts_with("web") && lines[2].contains(" 1 ") && lines[2].contains("running"), "{list}");
}

#[test]
fn a_bad_image_is_refused_and_leaves_no_domain() {
    let mut s = shell();
    let out = run(&mut s, "create junk");
    assert!(out.starts_with("error: bad image"), "{out}");
    assert_eq!(s.ctl.hc.doms.len(), 1, "the half-built domain was destroyed");
    assert!(run(&mut s, "create nosuch").starts_with("error: bad argument: no image"));
}

#[test]
fn unnamed_domains_are_named_after_their_image() {
    let mut s = shell();
    assert_eq!(run(&mut s, "create hello"), "created domain 1 hello\n");
    assert_eq!(run(&mut s, "create hello"), "created domain 2 hello-2\n");
    assert_eq!(run(&mut s, "create hello"), "created domain 3 hello-3\n");
}

#[test]
fn names_work_wherever_ids_do_and_unknown_domains_are_errors() {
    let mut s = shell();
    run(&mut s, "create hello name=web");
    assert_eq!(run(&mut s, "pause web"), "paused domain 1\n");
    assert!(run(&mut s, "list").contains("paused"));
    assert_eq!(run(&mut s, "unpause 1"), "unpaused domain 1\n");
    assert_eq!(run(&mut s, "pause nosuch"), "error: unknown domain nosuch\n");
    assert_eq!(run(&mut s, "destroy 42"), "error: unknown domain 42\n");
    assert_eq!(run(&mut s, "destroy web"), "destroyed domain 1 web\n");
    run(&mut s, "create hello name=a");
    run(&mut s, "create hello name=b");
    assert_eq!(run(&mut s, "destroy a nosuch b"), "destroyed domain 2 a\nerror: unknown domain nosuch\ndestroyed domain 3 b\n");
    assert!(!run(&mut s, "list").contains("web"));
}

#[test]
fn console_prints_the_buffer_and_ends_with_a_newline() {
    let mut s = shell();
    run(&mut s, "create hello name=h");
    s.ctl.hc.dom(1).unwrap().console = b"line one\nno newline".to_vec();
    assert_eq!(run(&mut s, "console h"), "line one\nno newline\n");
}

#[test]
fn info_prints_key_value_lines() {
    let mut s = shell();
    let out = run(&mut s, "info");
    for key in ["vendor: amd", "backend: svm-npt", "total_kib: ", "free_kib: ", "shared_kib: ", "pagetable_kib: ", "domains: 1"] {
        assert!(out.lines().any(|l| l.starts_with(key)), "{key} missing in\n{out}");
    }
}

#[test]
fn clone_names_clones_prefix_and_index_and_template_destroy_is_refused() {
    let mut s = shell();
    run(&mut s, "create hello name=tpl");
    assert_eq!(run(&mut s, "freeze tpl name=base"), "froze domain 1 base into a template\n");
    let out = run(&mut s, "clone base count=3 name=web");
    assert_eq!(out, "cloned domain 2 web0 from base\ncloned domain 3 web1 from base\ncloned domain 4 web2 from base\n");
    assert_eq!(run(&mut s, "clone base"), "cloned domain 5 base-0 from base\n");
    assert_eq!(
        run(&mut s, "clone base count=2"),
        "cloned domain 6 base-1 from base\ncloned domain 7 base-2 from base\n",
        "cloning again continues the default names"
    );
    assert!(run(&mut s, "clone base name=web").starts_with("error: name already in use (after 0 clones)"));
    assert!(run(&mut s, "destroy base").starts_with("error: domain 1 is a template with 6 live clones"));
    assert!(run(&mut s, "clone web0").starts_with("error: not a template"));
    let stat = run(&mut s, "stat web1");
    assert!(stat.contains("cow_faults: 7") && stat.contains("parent: 1"), "{stat}");
}

#[test]
fn freeze_with_a_bad_name_leaves_the_domain_as_it_was() {
    let mut s = shell();
    run(&mut s, "create hello name=a");
    run(&mut s, "create hello name=b");
    assert!(run(&mut s, "freeze a name=b").starts_with("error: name already in use"));
    assert!(run(&mut s, "list").contains("a                        1"), "a keeps its name");
    assert_eq!(run(&mut s, "wait a running 1"), "domain 1 is running\n", "a is not frozen");
    assert!(run(&mut s, "freeze dom0 name=x").starts_with("error: not permitted"));
    assert_eq!(run(&mut s, "wait dom0 running 1"), "domain 0 is running\n", "dom0 keeps its name");
    assert_eq!(run(&mut s, "freeze a name=c"), "froze domain 1 c into a template\n");
}

#[test]
fn wait_returns_when_the_state_is_reached_or_times_out() {
    let mut s = shell();
    run(&mut s, "create hello name=w");
    assert_eq!(run(&mut s, "wait w running 1"), "domain 1 is running\n");
    assert_eq!(run(&mut s, "wait w frozen 1"), "error: timeout\n");
    assert_eq!(run(&mut s, "wait 99 dead 1"), "domain 99 is dead\n");
}

#[test]
fn poweroff_ends_the_shell_and_nothing_else_does() {
    let mut s = shell();
    for line in ["", "help", "bogus", "create", "destroy", "console 0 0", "\u{7f}\u{1b}[A", "\"", "check"] {
        let mut out = String::new();
        assert_eq!(s.execute(line, &mut out), Flow::Continue, "{line:?}");
    }
    let mut out = String::new();
    assert_eq!(s.execute("poweroff", &mut out), Flow::PowerOff);
}

#[test]
fn register_values_take_decimal_and_hex_with_underscores_and_a_plus_sign() {
    for (text, want) in [
        ("5", 5),
        ("+5", 5),
        ("0x1f", 0x1f),
        ("0X1F", 0x1f),
        ("0x_1f", 0x1f),
        ("0x1_f", 0x1f),
        ("0xffff_8000_0000_1000", 0xffff_8000_0000_1000),
        ("18446744073709551615", u64::MAX),
        ("1_000", 1000),
        ("+0x5", 5),
    ] {
        assert_eq!(parse_register_value(text), Some(want), "{text:?}");
    }
    for bad in ["", "+", "0x", "0x_", "0x+", "-1", "0x-1", "++5", "zz", "1.5", "18446744073709551616", "0x1_0000_0000_0000_0000"] {
        assert_eq!(parse_register_value(bad), None, "{bad:?}");
    }
}

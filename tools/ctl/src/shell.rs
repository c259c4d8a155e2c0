//! The dom0 shell: an `xl`-style command language parsed into [`Command`]s and executed with
//! the control library. Output goes to any `fmt::Write`; errors are one line starting with
//! `error:`; nothing typed can end the shell except `poweroff`.

use crate::bench::Bench;
use crate::control::{Control, Hypercalls};
use crate::launch::{LaunchSpec, launch};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;
use guest_abi::domctl::{DomainInfo, NO_DOMAIN, QUOTA_DEFAULT, name_str, pause, state};
use guest_abi::hypercall::CallInsn;
use guest_abi::{HvError, HvResult};

/// Default memory of `create`.
pub const CREATE_MEM_MIB: u64 = 16;
/// Default timeout of `wait`.
pub const WAIT_SECS: u64 = 30;
/// Most clones one `clone` command makes.
pub const CLONE_COUNT_MAX: u32 = 100_000;

/// A domain named by id or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Id(u32),
    Name(String),
}

impl Target {
    fn parse(s: &str) -> Self {
        match s.parse::<u32>() {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Name(s.to_string()),
        }
    }
}

/// A state `wait` can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitState {
    /// Live and not paused (running or blocked).
    Running,
    /// Blocked waiting for an event.
    Blocked,
    /// Paused for any reason.
    Paused,
    /// A template.
    Frozen,
    /// Ended: shut down, crashed or destroyed.
    Dead,
    /// Crashed.
    Crashed,
}

impl WaitState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "blocked" => Self::Blocked,
            "paused" => Self::Paused,
            "frozen" => Self::Frozen,
            "dead" => Self::Dead,
            "crashed" => Self::Crashed,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
            Self::Frozen => "frozen",
            Self::Dead => "dead",
            Self::Crashed => "crashed",
        }
    }

    /// Whether a domain in `info` (None: it no longer exists) is in this state.
    pub fn matches(self, info: Option<&DomainInfo>) -> bool {
        let Some(i) = info else { return self == Self::Dead };
        match self {
            Self::Running => matches!(i.state, state::RUNNING | state::BLOCKED),
            Self::Blocked => i.state == state::BLOCKED,
            Self::Paused => i.state == state::PAUSED,
            Self::Frozen => i.state == state::FROZEN,
            Self::Dead => matches!(i.state, state::DEAD | state::CRASHED),
            Self::Crashed => i.state == state::CRASHED,
        }
    }
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Nothing typed.
    Empty,
    Help,
    Images,
    /// `mem_mib`: `None` for the image's default (16 MiB, or 128 MiB for Linux).
    Create { image: String, name: Option<String>, mem_mib: Option<u64>, cmdline: String, paused: bool, channel: bool },
    List,
    /// Attach to a PC domain's UART, or print the history (`history=1`, or no UART).
    Console { target: Target, history: bool },
    /// Wait until the domain's console shows `text` (scripts waiting for a guest's shell).
    Expect { target: Target, text: String, secs: u64 },
    Pause(Target),
    Unpause(Target),
    Destroy(Vec<Target>),
    Info,
    Poweroff,
    Freeze { target: Target, name: Option<String> },
    Clone { template: Target, count: u32, prefix: Option<String>, quota_kib: Option<u64> },
    Stat(Target),
    /// Show a domain's vCPU registers, or set some (`reg=value`).
    Vcpu { target: Target, set: Vec<(String, u64)> },
    /// CRC-32 of a domain's whole RAM (to show that something did not change it).
    Checksum(Target),
    Wait { target: Target, state: WaitState, secs: u64 },
    Check,
    /// Sleep (for scripts).
    Sleep { ms: u64 },
    /// A benchmark.
    Bench(Bench),
    /// Save a domain to an image (pause, write, destroy; `keep`: a live checkpoint instead).
    Save { target: Target, image: String, keep: bool, full: bool },
    /// A live checkpoint: the domain runs on while its image is written.
    Checkpoint { target: Target, image: String, full: bool },
    /// Restore an image as a new domain (`lazy`: before its memory is read, pages follow on
    /// first touch from `pager`, dom0 by default; `background`: and all the rest meanwhile).
    Restore { image: String, name: Option<String>, paused: bool, lazy: bool, pager: Option<Target>, background: bool },
    /// The lazy restores and their pagers.
    PagerList,
    /// The guest channels and what became of their streams.
    ChannelList,
    /// Allow (`on`) or forbid a domain a channel to dom0.
    ChannelSet { target: Target, allow: bool },
    /// Make `to` the pager of lazy client `client` (a takeover if it had one).
    PagerSet { client: Target, to: Target, timeout_ms: u64 },
    /// The images in the store.
    StoreList,
    /// Remove images.
    Rm(Vec<String>),
    /// Check an image: the store's checksum and every record and the digest.
    Verify(String),
}

/// Why a line could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A `"` without its partner.
    UnterminatedQuote,
    /// Not a command.
    UnknownCommand(String),
    /// The command needs an argument.
    Missing(&'static str),
    /// An argument the command does not take, or a malformed one.
    Bad(String),
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnterminatedQuote => write!(f, "bad argument: unterminated quote"),
            Self::UnknownCommand(c) => write!(f, "unknown command {c:?} (try help)"),
            Self::Missing(what) => write!(f, "bad argument: missing {what}"),
            Self::Bad(what) => write!(f, "bad argument: {what}"),
        }
    }
}

/// Splits a line into words; `"..."` groups spaces (also inside `key="a b"`).
pub fn tokenize(line: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    words.push(core::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if in_quotes {
        return Err(ParseError::UnterminatedQuote);
    }
    if have {
        words.push(cur);
    }
    Ok(words)
}

fn number<T: core::str::FromStr>(key: &str, v: &str) -> Result<T, ParseError> {
    v.parse().map_err(|_| ParseError::Bad(format!("{key}={v} is not a number")))
}

/// Bytes `checksum` reads per hypercall.
const CHECKSUM_CHUNK_BYTES: usize = 64 * 1024;

/// A register value: decimal or `0x` hex as guests read their command lines (`_` between
/// digits), after an optional `+` (which the `str::parse` this used before took).
fn parse_register_value(v: &str) -> Option<u64> {
    guest_abi::cmdline::parse_u64(v.strip_prefix('+').unwrap_or(v))
}

/// Longest `sleep`.
pub const SLEEP_MAX_MS: u64 = 600_000;

/// `250ms`, `2s` or `2` (seconds).
fn parse_duration_ms(s: &str) -> Result<u64, ParseError> {
    let (digits, scale) = match s.strip_suffix("ms") {
        Some(d) => (d, 1),
        None => (s.strip_suffix('s').unwrap_or(s), 1000),
    };
    let v: u64 = digits.parse().map_err(|_| ParseError::Bad(format!("bad duration {s:?} (e.g. 250ms or 2s)")))?;
    let ms = v.saturating_mul(scale);
    if ms > SLEEP_MAX_MS {
        return Err(ParseError::Bad(format!("sleep is limited to {} s", SLEEP_MAX_MS / 1000)));
    }
    Ok(ms)
}

/// Parses one line.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let line = line.split('#').next().unwrap_or("");
    let words = tokenize(line)?;
    let Some((cmd, args)) = words.split_first() else { return Ok(Command::Empty) };
    let mut positional = Vec::new();
    let mut options: Vec<(&str, &str)> = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => options.push((k, v)),
            None => positional.push(a.as_str()),
        }
    }
    let take_target = |what: &'static str| -> Result<Target, ParseError> {
        positional.first().map(|s| Target::parse(s)).ok_or(ParseError::Missing(what))
    };
    let no_extra = |allowed: &[&str], max_positional: usize| -> Result<(), ParseError> {
        if let Some(p) = positional.get(max_positional) {
            return Err(ParseError::Bad(format!("unexpected {p:?}")));
        }
        if let Some((k, _)) = options.iter().find(|(k, _)| !allowed.contains(k)) {
            return Err(ParseError::Bad(format!("unknown option {k:?}")));
        }
        Ok(())
    };
    let opt = |key: &str| options.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let flag = |key: &str| -> Result<bool, ParseError> {
        match opt(key) {
            None | Some("0" | "no" | "false") => Ok(false),
            Some("1" | "yes" | "true") => Ok(true),
            Some(v) => Err(ParseError::Bad(format!("{key}={v} (1 or 0)"))),
        }
    };
    let cmd = match cmd.as_str() {
        "help" | "?" => Command::Help,
        "images" => {
            no_extra(&[], 0)?;
            Command::Images
        }
        "create" => {
            no_extra(&["name", "mem", "cmdline", "paused", "channel"], 1)?;
            let image = positional.first().ok_or(ParseError::Missing("image"))?.to_string();
            let mem_mib = match opt("mem") {
                Some(v) => Some(number("mem", v)?),
                None => None,
            };
            let paused = matches!(opt("paused"), Some("1" | "yes" | "true"));
            let channel = flag("channel")?;
            Command::Create { image, name: opt("name").map(String::from), mem_mib, cmdline: opt("cmdline").unwrap_or("").to_string(), paused, channel }
        }
        "list" | "ls" => {
            no_extra(&[], 0)?;
            Command::List
        }
        "console" => {
            no_extra(&["history"], 1)?;
            Command::Console { target: take_target("domain")?, history: flag("history")? }
        }
        "pause" => {
            no_extra(&[], 1)?;
            Command::Pause(take_target("domain")?)
        }
        "unpause" => {
            no_extra(&[], 1)?;
            Command::Unpause(take_target("domain")?)
        }
        "destroy" => {
            no_extra(&[], usize::MAX)?;
            if positional.is_empty() {
                return Err(ParseError::Missing("domain"));
            }
            Command::Destroy(positional.iter().map(|s| Target::parse(s)).collect())
        }
        "info" => {
            no_extra(&[], 0)?;
            Command::Info
        }
        "poweroff" => {
            no_extra(&[], 0)?;
            Command::Poweroff
        }
        "freeze" => {
            no_extra(&["name"], 1)?;
            Command::Freeze { target: take_target("domain")?, name: opt("name").map(String::from) }
        }
        "clone" => {
            no_extra(&["count", "name", "quota"], 1)?;
            let count: u32 = match opt("count") {
                Some(v) => number("count", v)?,
                None => 1,
            };
            if count == 0 || count > CLONE_COUNT_MAX {
                return Err(ParseError::Bad(format!("count must be 1..={CLONE_COUNT_MAX}")));
            }
            // MiB, or KiB with a `k` suffix.
            let quota_kib = match opt("quota") {
                Some(v) => Some(match v.strip_suffix('k') {
                    Some(k) => number::<u64>("quota", k)?,
                    None => number::<u64>("quota", v)?.saturating_mul(1024),
                }),
                None => None,
            };
            Command::Clone { template: take_target("template")?, count, prefix: opt("name").map(String::from), quota_kib }
        }
        "stat" => {
            no_extra(&[], 1)?;
            Command::Stat(take_target("domain")?)
        }
        "checksum" => {
            no_extra(&[], 1)?;
            Command::Checksum(take_target("domain")?)
        }
        "vcpu" => {
            no_extra(crate::registers::NAMES, 1)?;
            let mut set = Vec::new();
            for (k, v) in &options {
                let value = parse_register_value(v).ok_or_else(|| ParseError::Bad(format!("{k}={v} is not a number")))?;
                set.push((k.to_string(), value));
            }
            Command::Vcpu { target: take_target("domain")?, set }
        }
        "wait" => {
            no_extra(&[], 3)?;
            let target = take_target("domain")?;
            let st = positional.get(1).ok_or(ParseError::Missing("state"))?;
            let state = WaitState::parse(st).ok_or_else(|| {
                ParseError::Bad(format!("unknown state {st:?} (running blocked paused frozen dead crashed)"))
            })?;
            let secs = match positional.get(2) {
                Some(v) => number("seconds", v)?,
                None => WAIT_SECS,
            };
            Command::Wait { target, state, secs }
        }
        "expect" => {
            no_extra(&[], 3)?;
            let target = take_target("domain")?;
            let text = positional.get(1).ok_or(ParseError::Missing("text"))?.to_string();
            if text.is_empty() {
                return Err(ParseError::Missing("text"));
            }
            let secs = match positional.get(2) {
                Some(v) => number("seconds", v)?,
                None => WAIT_SECS,
            };
            Command::Expect { target, text, secs }
        }
        "check" => {
            no_extra(&[], 0)?;
            Command::Check
        }
        "bench" => {
            let what = positional.first().ok_or(ParseError::Missing("benchmark (clone memory density cow lifecycle save)"))?;
            let image = opt("image").unwrap_or(if *what == "cow" { "cowbench" } else { "demo" }).to_string();
            let count = |default: u32| -> Result<u32, ParseError> {
                match opt("count") {
                    Some(v) => number::<u32>("count", v).and_then(|c| {
                        if (1..=CLONE_COUNT_MAX).contains(&c) { Ok(c) } else { Err(ParseError::Bad(format!("count must be 1..={CLONE_COUNT_MAX}"))) }
                    }),
                    None => Ok(default),
                }
            };
            let mib = |default: u64| -> Result<u64, ParseError> {
                opt("mib").map(|v| number::<u64>("mib", v)).transpose().map(|m| m.unwrap_or(default))
            };
            let b = match *what {
                "clone" => {
                    no_extra(&["image", "sizes", "count"], 1)?;
                    let sizes = match opt("sizes") {
                        Some(list) => list.split(',').map(|v| number::<u64>("sizes", v)).collect::<Result<Vec<_>, _>>()?,
                        None => alloc::vec![16, 256, 1024],
                    };
                    if sizes.is_empty() {
                        return Err(ParseError::Missing("sizes"));
                    }
                    Bench::Clone { image, sizes, count: count(16)? }
                }
                "memory" => {
                    no_extra(&["image", "count", "mib"], 1)?;
                    Bench::Memory { image, count: count(64)?, mem_mib: mib(16)? }
                }
                "density" => {
                    no_extra(&["image", "mib", "max"], 1)?;
                    let max = match opt("max") {
                        Some(v) => number("max", v)?,
                        None => CLONE_COUNT_MAX,
                    };
                    Bench::Density { image, mem_mib: mib(16)?, max }
                }
                "lifecycle" => {
                    no_extra(&["image", "count"], 1)?;
                    Bench::Lifecycle { image, count: count(10_000)? }
                }
                "cow" => {
                    no_extra(&["image"], 1)?;
                    Bench::Cow { image }
                }
                "save" => {
                    no_extra(&["mib", "big"], 1)?;
                    let big = opt("big").map(|v| number::<u64>("big", v)).transpose()?.unwrap_or(1024);
                    Bench::Save { mem_mib: mib(16)?, big_mib: big }
                }
                "linux" => {
                    no_extra(&["count", "mib"], 1)?;
                    Bench::Linux { count: count(8)?, mem_mib: mib(linux::LINUX_MEM_MIB)? }
                }
                "linux-density" => {
                    no_extra(&["mib", "max"], 1)?;
                    let max = opt("max").map(|v| number::<u32>("max", v)).transpose()?.unwrap_or(u32::MAX);
                    Bench::LinuxDensity { mem_mib: mib(linux::LINUX_MEM_MIB)?, max }
                }
                "lazy" => {
                    no_extra(&["mib", "big"], 1)?;
                    let big = opt("big").map(|v| number::<u64>("big", v)).transpose()?.unwrap_or(1024);
                    Bench::Lazy { mem_mib: mib(16)?, big_mib: big }
                }
                other => return Err(ParseError::Bad(format!("unknown benchmark {other:?} (clone memory density cow lifecycle save linux linux-density lazy)"))),
            };
            Command::Bench(b)
        }
        "save" => {
            no_extra(&["keep", "full"], 2)?;
            let target = take_target("domain")?;
            let image = positional.get(1).ok_or(ParseError::Missing("image name"))?.to_string();
            Command::Save { target, image, keep: flag("keep")?, full: flag("full")? }
        }
        "checkpoint" => {
            no_extra(&["full"], 2)?;
            let target = take_target("domain")?;
            let image = positional.get(1).ok_or(ParseError::Missing("image name"))?.to_string();
            Command::Checkpoint { target, image, full: flag("full")? }
        }
        "restore" => {
            no_extra(&["name", "paused", "lazy", "pager", "background"], 1)?;
            let image = positional.first().ok_or(ParseError::Missing("image name"))?.to_string();
            let lazy = flag("lazy")?;
            let pager = opt("pager").map(Target::parse);
            let background = match opt("background") {
                Some(_) => flag("background")?,
                None => true,
            };
            if !lazy && (pager.is_some() || opt("background").is_some()) {
                return Err(ParseError::Bad("pager= and background= go with lazy=1".to_string()));
            }
            Command::Restore { image, name: opt("name").map(String::from), paused: flag("paused")?, lazy, pager, background }
        }
        "pager" => {
            no_extra(&["to", "timeout"], 1)?;
            match positional.first() {
                None => {
                    if opt("to").is_some() || opt("timeout").is_some() {
                        return Err(ParseError::Missing("client domain"));
                    }
                    Command::PagerList
                }
                Some(c) => {
                    let to = Target::parse(opt("to").ok_or(ParseError::Missing("to=DOMAIN"))?);
                    let timeout_ms = match opt("timeout") {
                        Some(v) => parse_duration_ms(v)?,
                        None => 0,
                    };
                    Command::PagerSet { client: Target::parse(c), to, timeout_ms }
                }
            }
        }
        "channel" => {
            no_extra(&[], 2)?;
            match (positional.first(), positional.get(1).map(|s| &**s)) {
                (None, _) => Command::ChannelList,
                (Some(d), Some("on")) => Command::ChannelSet { target: Target::parse(d), allow: true },
                (Some(d), Some("off")) => Command::ChannelSet { target: Target::parse(d), allow: false },
                (Some(_), _) => return Err(ParseError::Bad("channel DOMAIN on|off".to_string())),
            }
        }
        "store" => {
            no_extra(&[], 0)?;
            Command::StoreList
        }
        "rm" => {
            no_extra(&[], usize::MAX)?;
            if positional.is_empty() {
                return Err(ParseError::Missing("image name"));
            }
            Command::Rm(positional.iter().map(|s| s.to_string()).collect())
        }
        "verify" => {
            no_extra(&[], 1)?;
            Command::Verify(positional.first().ok_or(ParseError::Missing("image name"))?.to_string())
        }
        "sleep" => {
            no_extra(&[], 1)?;
            let d = positional.first().ok_or(ParseError::Missing("duration"))?;
            Command::Sleep { ms: parse_duration_ms(d)? }
        }
        other => return Err(ParseError::UnknownCommand(other.to_string())),
    };
    Ok(cmd)
}

/// A guest image dom0 can start.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    pub name: &'static str,
    pub data: &'static [u8],
}

/// What the shell should do after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    PowerOff,
}

/// The shell's state.
pub struct Shell<H: Hypercalls> {
    pub ctl: Control<H>,
    pub images: Vec<Image>,
    pub call_insn: CallInsn,
    pub tsc_khz: u64,
    /// A cycle counter for benchmarks (the TSC in dom0).
    pub cycles: fn() -> u64,
    /// The image store and what long operations report to.
    pub storage: crate::save::Storage,
}

const HELP: &str = "\
commands (a domain is an ID or a NAME):
  images                          guest images available
  create IMAGE [name=NAME] [mem=MIB] [cmdline=\"...\"] [paused=1] [channel=1]
                                  (a Linux bzImage gets its IMAGE-initrd, 128 MiB, the PC platform)
  list                            domains and their memory
  console DOMAIN [history=1]      attach to a Linux domain's console (Ctrl-] detaches),
                                  or print the console output so far
  pause DOMAIN | unpause DOMAIN | destroy DOMAIN...
  freeze DOMAIN [name=NAME]       turn a domain into a template
  clone TEMPLATE [count=N] [name=PREFIX] [quota=MIB|KIBk]
  stat DOMAIN                     copy-on-write and exit statistics
  vcpu DOMAIN [REG=VALUE]...      show the vCPU's registers, or set some (checked)
  checksum DOMAIN                 CRC-32 of the domain's RAM (but its start-of-day page)
  wait DOMAIN STATE [SECS]        STATE: running blocked paused frozen dead crashed
  expect DOMAIN TEXT [SECS]       wait until the domain's console shows TEXT
  info                            machine figures
  check                           verify the hypervisor's frame accounting
  sleep DURATION                  wait, e.g. 250ms or 2s (for scripts)
  bench clone [sizes=16,256,1024] [count=N]   clone latency by template size, vs building
  bench memory [count=N] [mib=M]  hypervisor memory per idle clone
  bench density [mib=M] [max=N]   clone a template until memory runs out
  bench cow                       copy-on-write fault vs a 4 KiB copy + null hypercall
  bench lifecycle [count=N]       create/clone/destroy N times; memory must come back exactly
  save DOMAIN IMAGE [keep=1] [full=1]   pause, write to the store, destroy (keep=1: live, runs on)
  checkpoint DOMAIN IMAGE [full=1]      live checkpoint: the domain pauses only to start an epoch
  restore IMAGE [name=NAME] [paused=1]  a domain (or template) from an image
  restore IMAGE lazy=1 [pager=DOMAIN] [background=0]
                                  run it before its memory is read: pages come on first touch
                                  from dom0 (or a pagerd domain) and the rest in the background
  pager [CLIENT to=DOMAIN [timeout=DURATION]]   lazy restores, or give one a new pager
  channel [DOMAIN on|off]         guest channels and their self-checkpoints, or allow one
                                  (also create ... channel=1)
  store | rm IMAGE... | verify IMAGE    the images on dom0's disk
  bench save [mib=M] [big=M]      save/restore per MiB vs the raw disk, checkpoint pause, delta size
  bench linux [count=N] [mib=M]   Linux: boot to ready vs clone to first line, idle clone memory
  bench linux-density [mib=M] [max=N]   Linux clones until memory runs out
  bench lazy [mib=M] [big=M]      lazy restore: first instruction at two sizes, demand fault,
                                  working-set prefetch, memory shared through the pager
  poweroff                        end the machine
";

fn state_text(i: &DomainInfo) -> String {
    let s = state::name(i.state);
    match (i.state, i.pause_reason) {
        (state::PAUSED, pause::QUOTA | pause::NOMEM | pause::PARKED | pause::PAGER) => format!("{s}({})", pause::name(i.pause_reason)),
        _ => s.to_string(),
    }
}

impl<H: Hypercalls> Shell<H> {
    /// Finds a domain by id or name.
    pub fn resolve(&mut self, t: &Target) -> HvResult<u32> {
        match t {
            Target::Id(id) => Ok(*id),
            Target::Name(name) => {
                for id in self.ctl.list()? {
                    if self.ctl.info(id).is_ok_and(|i| name_str(&i.name) == name) {
                        return Ok(id);
                    }
                }
                Err(HvError::NoSuchDomain)
            }
        }
    }

    /// The names of all domains.
    fn names(&mut self) -> HvResult<Vec<String>> {
        let mut names = Vec::new();
        for id in self.ctl.list()? {
            if let Ok(i) = self.ctl.info(id) {
                names.push(String::from(name_str(&i.name)));
            }
        }
        Ok(names)
    }

    /// `base`, or `base-N` for the smallest N >= 2 not in use.
    fn free_name(&mut self, base: &str) -> HvResult<String> {
        let taken = self.names()?;
        let base: String = base.chars().take(guest_abi::domctl::NAME_MAX_BYTES - 6).collect();
        if !taken.contains(&base) {
            return Ok(base);
        }
        (2u32..).map(|n| format!("{base}-{n}")).find(|c| !taken.contains(c)).ok_or(HvError::NameTaken)
    }

    fn describe(&mut self, t: &Target) -> String {
        match t {
            Target::Id(id) => format!("{id}"),
            Target::Name(n) => n.clone(),
        }
    }

    /// Runs one line; never panics on bad input.
    pub fn execute(&mut self, line: &str, out: &mut dyn Write) -> Flow {
        let cmd = match parse(line) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
                return Flow::Continue;
            }
        };
        let target = match &cmd {
            Command::Console { target: t, .. } | Command::Pause(t) | Command::Unpause(t) | Command::Stat(t) => Some(t.clone()),
            Command::Vcpu { target, .. } | Command::Checksum(target) => Some(target.clone()),
            Command::Freeze { target, .. } | Command::Wait { target, .. } | Command::Expect { target, .. } => Some(target.clone()),
            Command::Clone { template, .. } => Some(template.clone()),
            Command::Save { target, .. } | Command::Checkpoint { target, .. } => Some(target.clone()),
            _ => None,
        };
        match self.run(cmd, out) {
            Ok(flow) => flow,
            Err(e) => {
                match (e, target) {
                    (HvError::NoSuchDomain, Some(t)) => {
                        let d = self.describe(&t);
                        let _ = writeln!(out, "error: unknown domain {d}");
                    }
                    (e, _) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
                Flow::Continue
            }
        }
    }

    fn run(&mut self, cmd: Command, out: &mut dyn Write) -> HvResult<Flow> {
        match cmd {
            Command::Empty => {}
            Command::Help => {
                let _ = out.write_str(HELP);
            }
            Command::Images => {
                let _ = writeln!(out, "{:<24} {:>10}", "Name", "Size(KiB)");
                for i in &self.images {
                    let _ = writeln!(out, "{:<24} {:>10}", i.name, i.data.len().div_ceil(1024));
                }
            }
            Command::Create { image, name, mem_mib, cmdline, paused, channel } => {
                let Some(img) = self.images.iter().find(|i| i.name == image).copied() else {
                    let _ = writeln!(out, "error: bad argument: no image {image:?} (see images)");
                    return Ok(Flow::Continue);
                };
                // Unnamed domains are named after their image: hello, hello-2, hello-3, ...
                let name = match name {
                    Some(n) => n,
                    None => self.free_name(img.name)?,
                };
                if linux::is_linux(&img) {
                    let mib = mem_mib.unwrap_or(linux::LINUX_MEM_MIB);
                    self.create_linux(img, &name, mib, &cmdline, paused, out)?;
                    return Ok(Flow::Continue);
                }
                let mem_bytes = mem_mib.unwrap_or(CREATE_MEM_MIB).checked_mul(1 << 20).ok_or(HvError::InvalidArgument)?;
                // A channel is allowed before the guest's first instruction.
                let spec = LaunchSpec { image: img.data, name: &name, mem_bytes, cmdline: &cmdline, paused: paused || channel };
                match launch(&mut self.ctl, &spec, self.call_insn, self.tsc_khz) {
                    Ok(id) => {
                        if channel {
                            if let Err(e) = self.ctl.channel_allow(id, true) {
                                let _ = self.ctl.destroy(id);
                                let _ = writeln!(out, "error: channel: {e}");
                                return Ok(Flow::Continue);
                            }
                            if !paused {
                                self.ctl.unpause(id)?;
                            }
                        }
                        let info = self.ctl.info(id)?;
                        let _ = writeln!(out, "created domain {id} {}", name_str(&info.name));
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            Command::List => self.list(out)?,
            Command::Console { target, history } => {
                let id = self.resolve(&target)?;
                self.console_command(id, history, out)?;
            }
            Command::Pause(t) => {
                let id = self.resolve(&t)?;
                self.ctl.pause(id)?;
                let _ = writeln!(out, "paused domain {id}");
            }
            Command::Unpause(t) => {
                let id = self.resolve(&t)?;
                self.ctl.unpause(id)?;
                let _ = writeln!(out, "unpaused domain {id}");
            }
            Command::Destroy(targets) => {
                for t in targets {
                    let resolved = self.resolve(&t).and_then(|id| Ok((id, self.ctl.info(id)?)));
                    let (id, info) = match resolved {
                        Ok(x) => x,
                        Err(HvError::NoSuchDomain) => {
                            let d = self.describe(&t);
                            let _ = writeln!(out, "error: unknown domain {d}");
                            continue;
                        }
                        Err(e) => {
                            let _ = writeln!(out, "error: {e}");
                            continue;
                        }
                    };
                    match self.ctl.destroy(id) {
                        Ok(()) => {
                            let _ = writeln!(out, "destroyed domain {id} {}", name_str(&info.name));
                        }
                        Err(HvError::Busy) => {
                            let _ = writeln!(out, "error: domain {id} is a template with {} live clones", info.clones);
                        }
                        Err(e) => {
                            let _ = writeln!(out, "error: {e}");
                        }
                    }
                }
            }
            Command::Info => self.info(out)?,
            Command::Poweroff => {
                let _ = writeln!(out, "powering off");
                return Ok(Flow::PowerOff);
            }
            Command::Freeze { target, name } => {
                let id = self.resolve(&target)?;
                // Rename first: a taken or bad name must leave the domain as it was.
                let old = self.ctl.info(id)?;
                if let Some(n) = &name {
                    self.ctl.set_name(id, n)?;
                }
                if let Err(e) = self.ctl.freeze(id) {
                    if name.is_some() {
                        let _ = self.ctl.set_name(id, name_str(&old.name));
                    }
                    return Err(e);
                }
                let info = self.ctl.info(id)?;
                let _ = writeln!(out, "froze domain {id} {} into a template", name_str(&info.name));
            }
            Command::Clone { template, count, prefix, quota_kib } => {
                let tid = self.resolve(&template)?;
                let tinfo = self.ctl.info(tid)?;
                let tname = String::from(name_str(&tinfo.name));
                // Without name=, cloning again continues the numbering (TEMPLATE-3, ...)
                // instead of colliding with the clones already there.
                let taken = if prefix.is_none() { self.names()? } else { Vec::new() };
                let prefix = prefix.unwrap_or_else(|| format!("{tname}-"));
                let quota = quota_kib.map(|k| k / 4).unwrap_or(QUOTA_DEFAULT);
                let mut index = 0u32;
                for made in 0..count {
                    while taken.contains(&format!("{prefix}{index}")) {
                        index += 1;
                    }
                    let name = format!("{prefix}{index}");
                    match self.ctl.clone_domain(tid, &name, index, quota) {
                        Ok(id) => {
                            let _ = writeln!(out, "cloned domain {id} {name} from {tname}");
                        }
                        Err(e) => {
                            let _ = writeln!(out, "error: {e} (after {made} clones)");
                            return Ok(Flow::Continue);
                        }
                    }
                    index += 1;
                }
            }
            Command::Stat(t) => {
                let id = self.resolve(&t)?;
                let info = self.ctl.info(id)?;
                let s = self.ctl.stat(id)?;
                let kib = |pages: u64| pages * 4;
                let _ = writeln!(out, "domain: {id} {}", name_str(&info.name));
                let _ = writeln!(out, "state: {}", state_text(&info));
                let reason = name_str(&info.reason);
                if !reason.is_empty() {
                    let _ = writeln!(out, "reason: {reason}");
                }
                let _ = writeln!(out, "cow_faults: {}", s.cow_faults);
                let _ = writeln!(out, "wp_faults: {}", s.wp_faults);
                let _ = writeln!(out, "private_pages: {}", s.private_pages);
                let _ = writeln!(out, "private_kib: {}", kib(s.private_pages));
                if s.quota_pages == QUOTA_DEFAULT {
                    let _ = writeln!(out, "quota: unlimited");
                } else {
                    let _ = writeln!(out, "quota_pages: {}", s.quota_pages);
                    let _ = writeln!(out, "quota_kib: {}", kib(s.quota_pages));
                }
                let _ = writeln!(out, "quota_used_kib: {}", kib(s.quota_used_pages));
                let _ = writeln!(out, "quota_pagetable_kib: {}", kib(s.quota_table_pages));
                let _ = writeln!(out, "shared_kib: {}", kib(s.shared_pages));
                let _ = writeln!(out, "pagetable_kib: {}", kib(s.pagetable_pages));
                let _ = writeln!(out, "overhead_bytes: {}", s.overhead_bytes);
                let _ = writeln!(out, "exits: {}", s.exits);
                let _ = writeln!(out, "hypercalls: {}", s.hypercalls);
                let _ = writeln!(out, "generation: {}", s.generation);
                if info.parent != NO_DOMAIN {
                    let _ = writeln!(out, "parent: {}", info.parent);
                }
                if info.clones > 0 {
                    let _ = writeln!(out, "clones: {}", info.clones);
                }
                if let Ok(l) = self.ctl.pager_status(id) {
                    self.lazy_stat(&l, out);
                }
            }
            Command::Checksum(target) => {
                let id = self.resolve(&target)?;
                // All of its memory is read: a lazy restore of it is completed first.
                self.complete_lazy(id);
                let mem = self.ctl.info(id)?.mem_bytes;
                let mut crc = guest_abi::crc32::Crc32::new();
                let mut chunk = alloc::vec![0u8; CHECKSUM_CHUNK_BYTES];
                // The start-of-day page is left out: it says who the domain is, which a
                // restore changes (and the guest cannot write it).
                let info_page = guest_abi::layout::START_INFO_GPA..guest_abi::layout::START_INFO_GPA + 4096;
                let mut at = 0u64;
                while at < mem {
                    let end = if at < info_page.start { info_page.start } else { mem.min(at + CHECKSUM_CHUNK_BYTES as u64) };
                    let n = (end - at).min(CHECKSUM_CHUNK_BYTES as u64) as usize;
                    self.ctl.mem_read(id, at, &mut chunk[..n])?;
                    crc.update(&chunk[..n]);
                    at += n as u64;
                    if at == info_page.start {
                        at = info_page.end;
                    }
                }
                let _ = writeln!(out, "checksum of domain {id}: {:#010x} over {} KiB (start-of-day page left out)", crc.finish(), mem / 1024 - 4);
            }
            Command::Vcpu { target, set } => {
                let id = self.resolve(&target)?;
                let mut ctx = self.ctl.vcpu_get(id)?;
                if set.is_empty() {
                    for r in crate::registers::REGISTERS {
                        let _ = writeln!(out, "{}: {:#x}", r.name, r.read(&ctx));
                    }
                } else {
                    for (name, value) in &set {
                        crate::registers::set(&mut ctx, name, *value);
                    }
                    self.ctl.vcpu_set(id, &ctx)?;
                    let _ = writeln!(out, "set {} registers of domain {id}", set.len());
                }
            }
            Command::Wait { target, state: want, secs } => {
                let id = self.resolve(&target);
                let id = match (id, want) {
                    (Ok(id), _) => id,
                    (Err(HvError::NoSuchDomain), WaitState::Dead) => {
                        let _ = writeln!(out, "domain {} is dead", self.describe(&target));
                        return Ok(Flow::Continue);
                    }
                    (Err(e), _) => return Err(e),
                };
                if self.wait_for(id, want, secs)? {
                    let _ = writeln!(out, "domain {id} is {}", want.name());
                } else {
                    let _ = writeln!(out, "error: timeout");
                }
            }
            Command::Expect { target, text, secs } => {
                let id = self.resolve(&target)?;
                if self.expect_output(id, &text, secs)? {
                    let _ = writeln!(out, "domain {id} printed {text:?}");
                } else {
                    let _ = writeln!(out, "error: timeout");
                }
            }
            Command::Check => match self.ctl.frame_check() {
                Ok(()) => {
                    let _ = writeln!(out, "frame table consistent");
                }
                Err(HvError::Busy) => {
                    let _ = writeln!(out, "error: frame table inconsistent (the hypervisor log has the details)");
                }
                Err(e) => return Err(e),
            },
            Command::Bench(b) => self.bench(b, out)?,
            c @ (Command::ChannelList | Command::ChannelSet { .. }) => self.channel_command(c, out)?,
            c @ (Command::Save { .. }
            | Command::Checkpoint { .. }
            | Command::Restore { .. }
            | Command::PagerList
            | Command::PagerSet { .. }
            | Command::StoreList
            | Command::Rm(_)
            | Command::Verify(_)) => self.storage_command(c, out)?,
            Command::Sleep { ms } => {
                let deadline = self.ctl.time_ns()?.saturating_add(ms * 1_000_000);
                loop {
                    let now = self.ctl.time_ns()?;
                    if now >= deadline {
                        break;
                    }
                    self.idle(deadline - now);
                }
            }
        }
        Ok(Flow::Continue)
    }

    fn list(&mut self, out: &mut dyn Write) -> HvResult<()> {
        let _ = writeln!(
            out,
            "{:<20} {:>5} {:>8} {:<14} {:>12} {:>11} {}",
            "Name", "ID", "Mem(MiB)", "State", "Private(KiB)", "Shared(KiB)", "Parent"
        );
        for id in self.ctl.list()? {
            let Ok(i) = self.ctl.info(id) else { continue };
            let parent = if i.parent == NO_DOMAIN { String::from("-") } else { format!("{}", i.parent) };
            let _ = writeln!(
                out,
                "{:<20} {:>5} {:>8} {:<14} {:>12} {:>11} {}",
                name_str(&i.name),
                id,
                i.mem_bytes >> 20,
                state_text(&i),
                i.private_pages * 4,
                i.shared_pages * 4,
                parent
            );
        }
        Ok(())
    }

    fn info(&mut self, out: &mut dyn Write) -> HvResult<()> {
        let i = self.ctl.hv_info()?;
        let vendor = match i.vendor {
            1 => "intel",
            2 => "amd",
            _ => "unknown",
        };
        let backend = match i.backend {
            1 => "vmx-ept",
            2 => "svm-npt",
            _ => "unknown",
        };
        let firmware = if i.firmware == 2 { "uefi" } else { "bios" };
        let lines: [(&str, String); 15] = [
            ("vendor", vendor.to_string()),
            ("backend", backend.to_string()),
            ("firmware", firmware.to_string()),
            ("total_kib", format!("{}", i.total_kib)),
            ("free_kib", format!("{}", i.free_kib)),
            ("shared_kib", format!("{}", i.shared_kib)),
            ("saved_kib", format!("{}", i.saved_kib)),
            ("pagetable_kib", format!("{}", i.pagetable_kib)),
            ("hypervisor_kib", format!("{}", i.hypervisor_kib)),
            ("heap_free_kib", format!("{}", i.heap_free_kib)),
            ("zeroed_kib", format!("{}", i.zeroed_kib)),
            ("domains", format!("{}", i.domains)),
            ("templates", format!("{}", i.templates)),
            ("tsc_khz", format!("{}", i.tsc_khz)),
            ("abi", format!("{}", guest_abi::hypercall::ABI_VERSION)),
        ];
        for (k, v) in lines {
            let _ = writeln!(out, "{k}: {v}");
        }
        Ok(())
    }
}

mod attach;
mod channel;
mod linux;
mod pager;
mod storage;
#[cfg(test)]
mod tests;

//! Boot configuration: the `key=value` lines of the boot bundle's `config` entry.
//! Unknown keys and bad values are reported and skipped; boot goes on with defaults.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use log::LevelFilter;

/// A deliberate fault, for tests that check that crashes are reported as failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// Dereference an unmapped address (#PF).
    PageFault,
    /// Execute `ud2` (#UD).
    InvalidOpcode,
    /// Call `panic!`.
    Panic,
    /// Stop with interrupts off and never power off (for runner timeout tests).
    Hang,
}

/// Which domains to start at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootMode {
    /// dom0 if the bundle has an image named `dom0`, otherwise every image.
    Auto,
    /// Start the `dom0` image as the privileged control domain.
    Dom0,
    /// Start every image as an unprivileged domain and power off when all have ended.
    All,
}

/// Per-image settings for domains started at boot (`guest.NAME.KEY=VALUE`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestConfig {
    /// Command line.
    pub cmdline: Option<String>,
    /// Memory in MiB.
    pub mem_mib: Option<u64>,
}

/// Default dom0 memory.
pub const DOM0_MEM_MIB: u64 = 64;
/// Default memory of domains started at boot in bare mode.
pub const GUEST_MEM_MIB: u64 = 16;

/// Settings read at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// Hypervisor log level (`loglevel=off|error|warn|info|debug|trace`).
    pub log_level: LevelFilter,
    /// Trigger a fault after the boot report (`selftest=pagefault|ud|panic|hang`).
    pub selftest: Option<SelfTest>,
    /// Which domains start at boot (`boot=auto|dom0|all`).
    pub boot: BootMode,
    /// dom0 memory (`dom0_mem_mib=`).
    pub dom0_mem_mib: u64,
    /// Memory of bare-mode domains (`guest_mem_mib=`).
    pub guest_mem_mib: u64,
    /// Echo unprivileged domains' consoles on the serial line (`echo_guests=on|off`);
    /// default: on in bare mode, off with dom0.
    pub echo_guests: Option<bool>,
    /// Preemption time slice (`timeslice_us=`).
    pub timeslice_us: u64,
    /// Stamp the exit path's phases and print them when bare mode ends (`profile_exits=on|off`).
    pub profile_exits: bool,
    /// Per-image settings.
    pub guests: BTreeMap<String, GuestConfig>,
}

impl Default for BootConfig {
    fn default() -> Self {
        Self {
            log_level: LevelFilter::Info,
            selftest: None,
            boot: BootMode::Auto,
            dom0_mem_mib: DOM0_MEM_MIB,
            guest_mem_mib: GUEST_MEM_MIB,
            echo_guests: None,
            timeslice_us: 5000,
            profile_exits: false,
            guests: BTreeMap::new(),
        }
    }
}

fn parse_mib(v: &str) -> Option<u64> {
    v.parse::<u64>().ok().filter(|&m| (2..=3072).contains(&m))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "on" | "yes" | "true" | "1" => Some(true),
        "off" | "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// A line of the configuration that was not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A line without `=`.
    NotKeyValue(String),
    /// A key this hypervisor does not know.
    UnknownKey(String),
    /// A known key with a value it does not accept.
    BadValue { key: String, value: String },
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotKeyValue(l) => write!(f, "config line {l:?} is not key=value"),
            Self::UnknownKey(k) => write!(f, "unknown config key {k:?}"),
            Self::BadValue { key, value } => write!(f, "bad value {value:?} for config key {key:?}"),
        }
    }
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    Some(match v {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

impl BootConfig {
    /// Parses configuration text; `#` starts a comment. Returns the settings and every line
    /// that was not understood.
    pub fn parse(text: &str) -> (Self, Vec<ConfigError>) {
        let mut cfg = Self::default();
        let mut errors = Vec::new();
        for raw in text.lines() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                errors.push(ConfigError::NotKeyValue(line.to_string()));
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let bad = || ConfigError::BadValue { key: key.to_string(), value: value.to_string() };
            match key {
                "loglevel" => match parse_level(value) {
                    Some(l) => cfg.log_level = l,
                    None => errors.push(bad()),
                },
                "selftest" => match value {
                    "pagefault" => cfg.selftest = Some(SelfTest::PageFault),
                    "ud" => cfg.selftest = Some(SelfTest::InvalidOpcode),
                    "panic" => cfg.selftest = Some(SelfTest::Panic),
                    "hang" => cfg.selftest = Some(SelfTest::Hang),
                    "none" => cfg.selftest = None,
                    _ => errors.push(bad()),
                },
                "boot" => match value {
                    "auto" => cfg.boot = BootMode::Auto,
                    "dom0" => cfg.boot = BootMode::Dom0,
                    "all" => cfg.boot = BootMode::All,
                    _ => errors.push(bad()),
                },
                "dom0_mem_mib" => match parse_mib(value) {
                    Some(m) => cfg.dom0_mem_mib = m,
                    None => errors.push(bad()),
                },
                "guest_mem_mib" => match parse_mib(value) {
                    Some(m) => cfg.guest_mem_mib = m,
                    None => errors.push(bad()),
                },
                "echo_guests" => match parse_bool(value) {
                    Some(b) => cfg.echo_guests = Some(b),
                    None => errors.push(bad()),
                },
                "profile_exits" => match parse_bool(value) {
                    Some(b) => cfg.profile_exits = b,
                    None => errors.push(bad()),
                },
                "timeslice_us" => match value.parse::<u64>().ok().filter(|&t| (100..=1_000_000).contains(&t)) {
                    Some(t) => cfg.timeslice_us = t,
                    None => errors.push(bad()),
                },
                _ => match key.strip_prefix("guest.").and_then(|k| k.rsplit_once('.')) {
                    Some((name, "cmdline")) if !name.is_empty() => {
                        cfg.guests.entry(name.to_string()).or_default().cmdline = Some(value.to_string())
                    }
                    Some((name, "mem_mib")) if !name.is_empty() => match parse_mib(value) {
                        Some(m) => cfg.guests.entry(name.to_string()).or_default().mem_mib = Some(m),
                        None => errors.push(bad()),
                    },
                    _ => errors.push(ConfigError::UnknownKey(key.to_string())),
                },
            }
        }
        (cfg, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_defaults() {
        let (cfg, errors) = BootConfig::parse("");
        assert_eq!(cfg, BootConfig::default());
        assert!(errors.is_empty());
    }

    #[test]
    fn known_keys_are_applied_and_comments_skipped() {
        let (cfg, errors) = BootConfig::parse("# comment\nloglevel = debug  # trailing\nselftest=ud\n");
        assert_eq!(cfg.log_level, LevelFilter::Debug);
        assert_eq!(cfg.selftest, Some(SelfTest::InvalidOpcode));
        assert!(errors.is_empty());
    }

    #[test]
    fn per_guest_settings_and_boot_mode_are_parsed() {
        let (cfg, errors) = BootConfig::parse(
            "boot=all\nguest.spin-a.cmdline=ms=300 mib=2\nguest.spin-a.mem_mib=8\necho_guests=off\ndom0_mem_mib=32\nprofile_exits=on",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(cfg.boot, BootMode::All);
        assert_eq!(cfg.guests["spin-a"].cmdline.as_deref(), Some("ms=300 mib=2"));
        assert_eq!(cfg.guests["spin-a"].mem_mib, Some(8));
        assert_eq!(cfg.echo_guests, Some(false));
        assert_eq!(cfg.dom0_mem_mib, 32);
        assert!(cfg.profile_exits);
        let (_, errors) = BootConfig::parse("guest.x.mem_mib=1\nguest..cmdline=a\nguest.x.colour=red\ndom0_mem_mib=999999");
        assert_eq!(errors.len(), 4);
    }

    #[test]
    fn bad_lines_are_reported_and_do_not_stop_parsing() {
        let (cfg, errors) = BootConfig::parse("loglevel=loud\nnonsense\ncolour=blue\nloglevel=warn");
        assert_eq!(cfg.log_level, LevelFilter::Warn);
        assert_eq!(errors.len(), 3);
        assert!(matches!(errors[0], ConfigError::BadValue { .. }));
        assert!(matches!(errors[1], ConfigError::NotKeyValue(_)));
        assert!(matches!(errors[2], ConfigError::UnknownKey(_)));
    }
}

//! Boot configuration: the `key=value` lines of the boot bundle's `config` entry.
//! Unknown keys and bad values are reported and skipped; boot goes on with defaults.

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

/// Settings read at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// Hypervisor log level (`loglevel=off|error|warn|info|debug|trace`).
    pub log_level: LevelFilter,
    /// Trigger a fault after the boot report (`selftest=pagefault|ud|panic|hang`).
    pub selftest: Option<SelfTest>,
}

impl Default for BootConfig {
    fn default() -> Self {
        Self { log_level: LevelFilter::Info, selftest: None }
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
                _ => errors.push(ConfigError::UnknownKey(key.to_string())),
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
    fn bad_lines_are_reported_and_do_not_stop_parsing() {
        let (cfg, errors) = BootConfig::parse("loglevel=loud\nnonsense\ncolour=blue\nloglevel=warn");
        assert_eq!(cfg.log_level, LevelFilter::Warn);
        assert_eq!(errors.len(), 3);
        assert!(matches!(errors[0], ConfigError::BadValue { .. }));
        assert!(matches!(errors[1], ConfigError::NotKeyValue(_)));
        assert!(matches!(errors[2], ConfigError::UnknownKey(_)));
    }
}

//! Command-line parsing: whitespace-separated `key=value` tokens and numbers in them. Pure
//! text handling, so guests (through `rt`) and dom0's shell read numbers the same way.

use core::fmt;

/// Why a command-line option could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// The value is not a decimal or `0x` hexadecimal `u64`.
    NotANumber,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANumber => f.write_str("value is not a number"),
        }
    }
}

/// The value of `key` in `cmdline`: the text after `key=` in the last token that has it, or ""
/// for a bare `key` token.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    if key.is_empty() {
        return None;
    }
    cmdline
        .split_ascii_whitespace()
        .filter_map(|token| match token.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if token == key => Some(""),
            _ => None,
        })
        .last()
}

/// Parses a decimal or `0x`-prefixed hexadecimal `u64`. Underscores may separate digits and,
/// as in Rust literals, follow the `0x`; a decimal number cannot start with one.
pub fn parse_u64(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if text.starts_with('_') => return None,
        None => (text, 10),
    };
    let mut v: Option<u64> = None;
    for c in digits.chars().filter(|&c| c != '_') {
        let d = c.to_digit(radix)?;
        v = Some(v.unwrap_or(0).checked_mul(u64::from(radix))?.checked_add(u64::from(d))?);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_finds_key_among_whitespace_separated_tokens() {
        let line = "seed=42  count=0x10\tverbose name=a=b";
        assert_eq!(value(line, "seed"), Some("42"));
        assert_eq!(value(line, "count"), Some("0x10"));
        assert_eq!(value(line, "verbose"), Some(""));
        assert_eq!(value(line, "name"), Some("a=b"));
        assert_eq!(value(line, "see"), None);
        assert_eq!(value(line, "eed"), None);
        assert_eq!(value(line, ""), None);
        assert_eq!(value("", "seed"), None);
    }

    #[test]
    fn last_occurrence_of_a_key_wins() {
        assert_eq!(value("ms=1 ms=2", "ms"), Some("2"));
    }

    #[test]
    fn numbers_parse_in_decimal_and_hex_and_refuse_garbage() {
        assert_eq!(parse_u64("300"), Some(300));
        assert_eq!(parse_u64("0x1F"), Some(31));
        assert_eq!(parse_u64("1_000"), Some(1000));
        assert_eq!(parse_u64("0x_ffff_8000"), Some(0xffff_8000));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        for bad in ["", "0x", "0x_", "_", "-1", "12a", "_1", "0xg", " 1", "+1"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }
}

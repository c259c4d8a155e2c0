//! A line editor for the serial console: printable input is echoed, backspace/DEL erases,
//! Ctrl-U kills the line, Ctrl-C abandons it, escape sequences (arrow keys) are swallowed,
//! and CR, LF or CR LF end a line.

use alloc::string::String;
use alloc::vec::Vec;

/// Longest line kept (more input is ignored until Enter).
pub const LINE_MAX_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    Started,
    Sequence,
}

/// Line-editing state.
#[derive(Debug)]
pub struct LineEditor {
    buf: Vec<u8>,
    escape: Escape,
    last_was_cr: bool,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An empty editor.
    pub fn new() -> Self {
        Self { buf: Vec::new(), escape: Escape::None, last_was_cr: false }
    }

    /// Feeds one byte; appends what should be echoed to `echo`, and returns the finished line
    /// when the byte ended one.
    pub fn feed(&mut self, b: u8, echo: &mut Vec<u8>) -> Option<String> {
        let after_cr = core::mem::replace(&mut self.last_was_cr, false);
        match self.escape {
            Escape::Started => {
                self.escape = if b == b'[' || b == b'O' { Escape::Sequence } else { Escape::None };
                return None;
            }
            Escape::Sequence => {
                if (0x40..=0x7E).contains(&b) {
                    self.escape = Escape::None;
                }
                return None;
            }
            Escape::None => {}
        }
        match b {
            b'\r' | b'\n' => {
                if b == b'\n' && after_cr {
                    return None;
                }
                self.last_was_cr = b == b'\r';
                echo.extend_from_slice(b"\r\n");
                let line = String::from_utf8_lossy(&self.buf).into_owned();
                self.buf.clear();
                Some(line)
            }
            0x08 | 0x7F => {
                if let Some(last) = self.buf.pop() {
                    // Remove a whole UTF-8 character.
                    if last >= 0x80 {
                        while self.buf.last().is_some_and(|&c| c & 0xC0 == 0x80) {
                            self.buf.pop();
                        }
                        if self.buf.last().is_some_and(|&c| c >= 0xC0) && last & 0xC0 == 0x80 {
                            self.buf.pop();
                        }
                    }
                    echo.extend_from_slice(b"\x08 \x08");
                }
                None
            }
            0x15 => {
                for _ in 0..self.buf.len() {
                    echo.extend_from_slice(b"\x08 \x08");
                }
                self.buf.clear();
                None
            }
            0x03 => {
                self.buf.clear();
                echo.extend_from_slice(b"^C\r\n");
                Some(String::new())
            }
            0x1B => {
                self.escape = Escape::Started;
                None
            }
            b if b >= 0x20 && b != 0x7F => {
                if self.buf.len() < LINE_MAX_BYTES {
                    self.buf.push(b);
                    echo.push(b);
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn feed_all(e: &mut LineEditor, input: &[u8]) -> (Vec<String>, Vec<u8>) {
        let mut echo = Vec::new();
        let lines = input.iter().filter_map(|&b| e.feed(b, &mut echo)).collect();
        (lines, echo)
    }

    #[test]
    fn backspace_and_delete_erase_and_echo_rubout() {
        let mut e = LineEditor::new();
        let (lines, echo) = feed_all(&mut e, b"lsx\x08t\x7f\x7fist\r");
        assert_eq!(lines, vec!["list"]);
        assert_eq!(echo, b"lsx\x08 \x08t\x08 \x08\x08 \x08ist\r\n");
        let (lines, _) = feed_all(&mut e, b"\x08\x08\r");
        assert_eq!(lines, vec![""], "backspace on an empty line does nothing");
    }

    #[test]
    fn cr_lf_and_crlf_each_end_one_line() {
        let mut e = LineEditor::new();
        let (lines, _) = feed_all(&mut e, b"a\rb\nc\r\nd\r\n\r\n");
        assert_eq!(lines, vec!["a", "b", "c", "d", ""]);
    }

    #[test]
    fn arrow_keys_are_swallowed_and_ctrl_keys_edit() {
        let mut e = LineEditor::new();
        let (lines, echo) = feed_all(&mut e, b"li\x1b[A\x1b[Dst\r");
        assert_eq!(lines, vec!["list"]);
        assert_eq!(echo, b"list\r\n");
        let (lines, _) = feed_all(&mut e, b"junk\x15help\r");
        assert_eq!(lines, vec!["help"]);
        let (lines, _) = feed_all(&mut e, b"half\x03");
        assert_eq!(lines, vec![""]);
    }

    #[test]
    fn utf8_characters_are_erased_whole() {
        let mut e = LineEditor::new();
        let (lines, _) = feed_all(&mut e, "ab\u{e9}\x08c\r".as_bytes());
        assert_eq!(lines, vec!["abc"]);
    }

    #[test]
    fn very_long_lines_are_capped() {
        let mut e = LineEditor::new();
        let input: Vec<u8> = core::iter::repeat_n(b'x', LINE_MAX_BYTES + 100).chain(*b"\r").collect();
        let (lines, _) = feed_all(&mut e, &input);
        assert_eq!(lines[0].len(), LINE_MAX_BYTES);
    }
}

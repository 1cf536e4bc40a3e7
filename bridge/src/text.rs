//! Hostile text stays text: fields that come from outside the daemon
//! (keywords, details, a recovery program's output) are escaped before they
//! reach a log line, the activity log or a terminal, so a newline cannot
//! forge a line and an escape sequence cannot drive a terminal.
//!
//! Only control characters are escaped (C0, DEL, C1, the Unicode line and
//! paragraph separators and the bidirectional overrides); backslashes and
//! everything printable pass unchanged, so escaping is for reading, not a
//! reversible encoding.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for a character that must not reach a log line or a terminal as is.
fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'          // line / paragraph separator
            | '\u{200E}' | '\u{200F}'        // left-to-right / right-to-left mark
            | '\u{202A}'..='\u{202E}'        // bidirectional embeddings and overrides
            | '\u{2066}'..='\u{2069}'        // bidirectional isolates
        )
}

fn escape_with(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_hostile(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_hostile(c) || keep(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// `s` with every control character escaped (`\n`, `\r`, `\t`, `\x1b`,
/// `\u{85}`, …): one line of plain text, whatever `s` holds.
pub fn escape_line(s: &str) -> Cow<'_, str> {
    escape_with(s, |_| false)
}

/// As [`escape_line`], but newlines and tabs stay: for multi-line text kept
/// as a field of its own (a program's output), never printed as log lines.
pub fn escape_block(s: &str) -> Cow<'_, str> {
    escape_with(s, |c| c == '\n' || c == '\t')
}

/// Bytes from outside (a record's detail) as one escaped line: invalid
/// UTF-8 shows as U+FFFD.
pub fn escape_bytes(b: &[u8]) -> String {
    escape_line(&String::from_utf8_lossy(b)).into_owned()
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` at the
/// end when something was cut (the result is then at most `max` bytes too).
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    if max >= MARK.len() {
        s.push_str(MARK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert!(matches!(escape_line("eth0 ünï\\"), Cow::Borrowed(_)));
        assert_eq!(
            escape_line("host1\nfaultbridge: [Success] forged"),
            "host1\\nfaultbridge: [Success] forged"
        );
        assert_eq!(escape_line("\x1b[31mred\x07\x7f"), "\\x1b[31mred\\x07\\x7f");
        assert_eq!(
            escape_line("a\u{85}b\u{202e}c\u{2028}"),
            "a\\u{85}b\\u{202e}c\\u{2028}"
        );
        assert_eq!(escape_line("\r\t\0"), "\\r\\t\\x00");
    }

    #[test]
    fn a_block_keeps_its_lines_but_not_terminal_escapes() {
        assert_eq!(escape_block("one\ntwo\t\x1b[2J\r"), "one\ntwo\t\\x1b[2J\\r");
    }

    #[test]
    fn bytes_become_one_line() {
        assert_eq!(escape_bytes(b"ok\n\xff"), "ok\\n\u{fffd}");
    }

    #[test]
    fn truncation_respects_characters_and_the_bound() {
        let mut s = "ééééé".to_string(); // 10 bytes
        truncate(&mut s, 6);
        assert!(s.len() <= 6, "{s:?}");
        assert_eq!(s, "é…");
        let mut t = "short".to_string();
        truncate(&mut t, 6);
        assert_eq!(t, "short");
    }
}

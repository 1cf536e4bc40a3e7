//! How faults and loss notices are printed: a readable line, or one JSON
//! object per line whose keys are the D-Bus `Fault` signal's argument names.

use faultbridge_bus::{Fault, Lost};
use std::fmt::Write as _;

/// Lowercase hex of the detail bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses lowercase or uppercase hex.
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if !b.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!("{s:?} is not hex"));
    }
    if !b.len().is_multiple_of(2) {
        return Err(format!("hex {s:?} has an odd number of digits"));
    }
    let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    Ok(b.chunks_exact(2)
        .map(|p| digit(p[0]) << 4 | digit(p[1]))
        .collect())
}

/// `{"type":"fault", …}` with the `Fault` signal's argument names.
pub fn fault_json(f: &Fault) -> serde_json::Value {
    serde_json::json!({
        "type": "fault",
        "source": f.source().name(),
        "category": f.category().name(),
        "keyword": f.keyword(),
        "severity": f.severity().name(),
        "cleared": f.cleared(),
        "event_code": f.event_code(),
        "sequence": f.sequence(),
        "timestamp_ns": f.timestamp_ns(),
        "detail": hex(f.detail()),
        "device_index": f.device_index(),
        "flags": f.flags(),
    })
}

/// `{"type":"lost","source":…,"first_sequence":…,"last_sequence":…}`.
pub fn lost_json(l: &Lost) -> serde_json::Value {
    serde_json::json!({
        "type": "lost",
        "source": l.source.name(),
        "first_sequence": l.first_sequence,
        "last_sequence": l.last_sequence,
        "count": l.count,
        "reason": l.reason.name(),
    })
}

/// A readable line.
pub fn fault_line(f: &Fault) -> String {
    let what = if f.cleared() { "CLEAR" } else { "FAULT" };
    let kw = if f.keyword().is_empty() {
        "*"
    } else {
        f.keyword()
    };
    let mut s = format!(
        "{what:<5} #{:<8} {:<6} {:<12} {:<7} event {:#010x}  source {}",
        f.sequence(),
        f.category().name(),
        kw,
        f.severity().name(),
        f.event_code(),
        f.source().name()
    );
    if f.is_snapshot() {
        s.push_str("  (snapshot)");
    }
    if !f.detail().is_empty() {
        let _ = write!(s, "  detail {}", detail_text(f.detail()));
    }
    s
}

/// The detail bytes for a readable line: quoted text when they are
/// printable UTF-8 (escaped as Rust escapes a string, so no control
/// character reaches the terminal), else the hex of the first 16 bytes;
/// long details are cut with "…".
pub fn detail_text(detail: &[u8]) -> String {
    const TEXT_MAX: usize = 64;
    const HEX_MAX: usize = 16;
    match std::str::from_utf8(detail) {
        Ok(t) if !t.chars().any(char::is_control) => {
            let cut: String = t.chars().take(TEXT_MAX).collect();
            let more = if cut.len() < t.len() { "…" } else { "" };
            format!("{cut:?}{more}")
        }
        _ => {
            let more = if detail.len() > HEX_MAX { "…" } else { "" };
            format!("{}{more}", hex(&detail[..detail.len().min(HEX_MAX)]))
        }
    }
}

/// A readable loss line.
pub fn lost_line(l: &Lost) -> String {
    format!(
        "LOST  {} record(s) of {}, sequence {}..={} ({})",
        l.count,
        l.source.name(),
        l.first_sequence,
        l.last_sequence,
        l.reason.name()
    )
}

/// `s` safe for a terminal: control characters (newlines, escape
/// sequences, C1 codes) are written as Rust-style escapes (`\n`, `\u{1b}`)
/// and a backslash as `\\`, so a fault field can neither forge a line nor
/// drive the terminal.
///
/// ```
/// use faultbridge::cli::format::printable;
/// assert_eq!(printable("eth0"), "eth0");
/// assert_eq!(printable("a\nFAULT b\x1b[2J\\"), "a\\nFAULT b\\u{1b}[2J\\\\");
/// ```
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_details_show_as_text_and_others_as_hex() {
        assert_eq!(detail_text(b"target 0:0:1"), "\"target 0:0:1\"");
        assert_eq!(detail_text(b"say \"hi\""), "\"say \\\"hi\\\"\"");
        // control characters never reach the terminal
        assert_eq!(detail_text(b"a\x1b[2Jb"), "611b5b324a62");
        assert_eq!(detail_text(b"a\nb"), "610a62");
        assert_eq!(detail_text(&[0xff, 0x00]), "ff00");
        assert_eq!(detail_text(&[7u8; 20]), format!("{}…", "07".repeat(16)));
        let long = "x".repeat(100);
        assert_eq!(
            detail_text(long.as_bytes()),
            format!("\"{}\"…", "x".repeat(64))
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_non_hex() {
        assert_eq!(unhex("00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(hex(&unhex("ABcd").unwrap()), "abcd");
        assert!(unhex("abc").is_err());
        assert!(unhex("aéb").is_err());
        assert!(unhex("zz").is_err());
    }
}

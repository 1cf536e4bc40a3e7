//! What one history row becomes on the stream: its subject, its body and
//! its `Nats-Msg-Id`. Pure functions, no I/O.
//!
//! - a fault or CLEAR: `<prefix>.fault.<host>.<category>.<keyword>`
//!   (keyword `-` when empty);
//! - a loss notice: `<prefix>.lost.<host>`;
//! - the body: the `faultbridge watch --json` object with `"host"` added;
//! - `Nats-Msg-Id: <host>:<source>:<driver_id>:<sequence>`, so the stream
//!   keeps each fault once however often it is sent.
//!
//! Fault fields are outside text: in a subject token `.`, `*`, `>`, `%`,
//! white space and control characters are percent-encoded (`%2E`), so a
//! keyword can neither add tokens nor become a wildcard.

use crate::history::HistoryRow;
use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` as one subject token: `-` when empty, the bytes of `.`, `*`, `>`,
/// `%`, white space and control characters as `%XX`.
pub fn token(s: &str) -> Cow<'_, str> {
    if s.is_empty() {
        return Cow::Borrowed("-");
    }
    let special =
        |c: char| matches!(c, '.' | '*' | '>' | '%') || c.is_whitespace() || c.is_control();
    if !s.chars().any(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if special(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Reverses [`token`] (`-` stays `-`: it is both the empty keyword and a
/// keyword `-`). Invalid escapes are kept as written.
pub fn untoken(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lowercase hex (the body's `detail`, as `watch --json` writes it).
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The subject of a row.
pub fn subject(prefix: &str, host: &str, row: &HistoryRow) -> String {
    if row.kind == "lost" {
        format!("{prefix}.lost.{}", token(host))
    } else {
        format!(
            "{prefix}.fault.{}.{}.{}",
            token(host),
            token(&row.category),
            token(&row.keyword)
        )
    }
}

/// The `Nats-Msg-Id` of a row.
pub fn msg_id(host: &str, row: &HistoryRow) -> String {
    if row.kind == "lost" {
        format!(
            "{host}:{}:lost:{}:{}",
            row.source,
            row.sequence,
            row.last_sequence.unwrap_or(row.sequence)
        )
    } else {
        format!("{host}:{}:{}:{}", row.source, row.driver_id, row.sequence)
    }
}

/// The body of a row: `watch --json`'s object with `"host"` added.
pub fn body(host: &str, row: &HistoryRow) -> serde_json::Value {
    if row.kind == "lost" {
        serde_json::json!({
            "type": "lost",
            "source": row.source,
            "first_sequence": row.sequence,
            "last_sequence": row.last_sequence.unwrap_or(row.sequence),
            "host": host,
        })
    } else {
        serde_json::json!({
            "type": "fault",
            "source": row.source,
            "category": row.category,
            "keyword": row.keyword,
            "severity": row.severity,
            "cleared": row.kind == "clear",
            "event_code": row.event_code,
            "sequence": row.sequence,
            "timestamp_ns": row.timestamp_ns,
            "detail": hex(&row.detail),
            "host": host,
        })
    }
}

/// A fault's body as the session sends it: the same object as [`body`],
/// serialized from borrowed fields without building a JSON tree.
#[derive(serde::Serialize)]
struct FaultBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'a str,
    category: &'a str,
    keyword: &'a str,
    severity: &'a str,
    cleared: bool,
    event_code: u32,
    sequence: u64,
    timestamp_ns: u64,
    detail: String,
    host: &'a str,
}

/// The body of a row as bytes (what is published).
pub fn body_bytes(host: &str, row: &HistoryRow) -> Vec<u8> {
    if row.kind == "lost" {
        return body(host, row).to_string().into_bytes();
    }
    serde_json::to_vec(&FaultBody {
        kind: "fault",
        source: &row.source,
        category: &row.category,
        keyword: &row.keyword,
        severity: &row.severity,
        cleared: row.kind == "clear",
        event_code: row.event_code,
        sequence: row.sequence,
        timestamp_ns: row.timestamp_ns,
        detail: hex(&row.detail),
        host,
    })
    .unwrap_or_else(|_| body(host, row).to_string().into_bytes())
}

/// The loss notice of history rows `first..=last` that retention removed
/// before they were forwarded (source `history`, the row ids as sequences).
pub fn retention_gap(host: &str, first: i64, last: i64) -> (HistoryRow, serde_json::Value) {
    let row = HistoryRow {
        id: 0,
        kind: "lost".into(),
        source: "history".into(),
        driver_id: 0,
        sequence: first as u64,
        last_sequence: Some(last as u64),
        category: String::new(),
        keyword: String::new(),
        severity: String::new(),
        event_code: 0,
        device_index: 0,
        timestamp_ns: 0,
        detail: Vec::new(),
        recorded_at_ms: 0,
    };
    let mut b = body(host, &row);
    b["reason"] = "removed from the history database before it was forwarded".into();
    (row, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultbridge_bus::dbus::client::FaultSignal;

    fn row(kind: &str, keyword: &str) -> HistoryRow {
        HistoryRow {
            id: 9,
            kind: kind.into(),
            source: "expdrv".into(),
            driver_id: 3,
            sequence: 42,
            last_sequence: None,
            category: "HA/SS".into(),
            keyword: keyword.into(),
            severity: "fatal".into(),
            event_code: 7,
            device_index: 0,
            timestamp_ns: 1_000,
            detail: vec![0xab, 0x01],
            recorded_at_ms: 0,
        }
    }

    #[test]
    fn subjects_and_ids_are_as_designed() {
        let r = row("fault", "eth0");
        assert_eq!(
            subject("faultbridge", "node1", &r),
            "faultbridge.fault.node1.HA/SS.eth0"
        );
        assert_eq!(msg_id("node1", &r), "node1:expdrv:3:42");
        assert_eq!(
            subject("fb", "node1", &row("clear", "")),
            "fb.fault.node1.HA/SS.-"
        );
        let mut l = row("lost", "");
        l.last_sequence = Some(50);
        assert_eq!(subject("fb", "node1", &l), "fb.lost.node1");
        assert_eq!(msg_id("node1", &l), "node1:expdrv:lost:42:50");
    }

    #[test]
    fn a_keyword_cannot_add_tokens_or_wildcards() {
        assert_eq!(token("a.b"), "a%2Eb");
        assert_eq!(token("*"), "%2A");
        assert_eq!(token(">"), "%3E");
        assert_eq!(token("50%"), "50%25");
        assert_eq!(token("a b\tc\nd"), "a%20b%09c%0Ad");
        assert_eq!(token("\u{85}x\u{a0}"), "%C2%85x%C2%A0");
        assert_eq!(token("eth0"), "eth0");
        let s = subject("fb", "node.1", &row("fault", "x.>* %"));
        assert_eq!(s, "fb.fault.node%2E1.HA/SS.x%2E%3E%2A%20%25");
        assert_eq!(s.split('.').count(), 5);
        for k in ["a.b", "*", "50%", "a b\tc", "\u{85}x\u{a0}", "plain", "%zz"] {
            assert_eq!(untoken(&token(k)), k, "{k:?}");
        }
    }

    #[test]
    fn the_body_is_the_watch_json_object_with_host_added() {
        let r = row("clear", "eth0");
        let sig = FaultSignal {
            source: r.source.clone(),
            category: r.category.clone(),
            keyword: r.keyword.clone(),
            severity: r.severity.clone(),
            cleared: true,
            event_code: r.event_code,
            sequence: r.sequence,
            timestamp_ns: r.timestamp_ns,
            detail: r.detail.clone(),
        };
        let mut want = crate::cli::watch::fault_json(&sig);
        want["host"] = "node1".into();
        assert_eq!(body("node1", &r), want);
        let sent: serde_json::Value = serde_json::from_slice(&body_bytes("node1", &r)).unwrap();
        assert_eq!(sent, want, "what is published is the same object");
        let mut l = row("lost", "");
        l.last_sequence = Some(50);
        let sent: serde_json::Value = serde_json::from_slice(&body_bytes("node1", &l)).unwrap();
        assert_eq!(sent, body("node1", &l));
    }
}

//! The activity log: every monitor state change and every recovery action
//! (start, exit value, output, timeout, Undo) as a structured entry with a
//! severity, kept in a bounded ring for `faultbridge status` and D-Bus, and
//! told to listeners (history) as it happens.
//!
//! Everything outside the daemon can put in an entry (a keyword, a
//! program's output) is escaped ([`crate::text`]) and bounded: a message
//! holds at most [`MESSAGE_MAX`] bytes, each output stream [`OUTPUT_MAX`],
//! and the ring at most its entry count and [`RING_BYTES_MAX`] bytes.

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of an entry's message, after escaping.
pub const MESSAGE_MAX: usize = 4096;
/// Bytes of each of an entry's output streams, after escaping.
pub const OUTPUT_MAX: usize = 64 * 1024;
/// Bytes the ring holds in all (messages and output); the oldest entries
/// go first beyond it.
pub const RING_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How an entry reads to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActivitySeverity {
    Success,
    /// A task in progress (an upgrade step or custom action started).
    Pending,
    Information,
    Warning,
    Error,
}

impl ActivitySeverity {
    pub const fn name(self) -> &'static str {
        match self {
            ActivitySeverity::Success => "Success",
            ActivitySeverity::Pending => "Pending",
            ActivitySeverity::Information => "Information",
            ActivitySeverity::Warning => "Warning",
            ActivitySeverity::Error => "Error",
        }
    }
}

/// One entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActivityEntry {
    /// Increasing id of the entry.
    pub id: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub severity: ActivitySeverity,
    /// The monitor concerned (empty for the daemon itself).
    pub monitor: String,
    /// What happened, in a word: `state`, `action-start`, `action-exit`,
    /// `action-timeout`, `not-performed`, `suppressed`, `coalesced`, `undo`, `indoubt`.
    pub kind: String,
    pub message: String,
    /// Exit status of a process, when there was one.
    pub exit_code: Option<i32>,
    /// Bounded process output, when there was some.
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<ActivityEntry>,
    /// Text bytes of `entries`.
    bytes: usize,
}

impl ActivityEntry {
    /// Escapes and bounds what came from outside.
    fn sanitize(&mut self) {
        for (field, max, line) in [
            (&mut self.message, MESSAGE_MAX, true),
            (&mut self.monitor, MESSAGE_MAX, true),
            (&mut self.kind, MESSAGE_MAX, true),
            (&mut self.stdout, OUTPUT_MAX, false),
            (&mut self.stderr, OUTPUT_MAX, false),
        ] {
            let escaped = if line {
                crate::text::escape_line(field)
            } else {
                crate::text::escape_block(field)
            };
            if let std::borrow::Cow::Owned(e) = escaped {
                *field = e;
            }
            crate::text::truncate(field, max);
        }
    }

    fn text_bytes(&self) -> usize {
        self.message.len()
            + self.monitor.len()
            + self.kind.len()
            + self.stdout.len()
            + self.stderr.len()
    }
}

/// The log: a bounded ring and listeners.
#[derive(Debug)]
pub struct ActivityLog {
    ring: Mutex<Ring>,
    capacity: usize,
    next_id: AtomicU64,
    /// Each listener's queue and its bound (the queue grows on demand).
    listeners: Mutex<Vec<(Sender<ActivityEntry>, usize)>>,
    /// Lines for stderr, written by a thread of their own: the ingest
    /// thread adds entries and must never wait for a slow log reader.
    log: Option<Sender<String>>,
    printer: Option<std::thread::JoinHandle<()>>,
    /// Lines not printed because the printer was behind (the ring and the
    /// listeners still have every entry).
    pub log_drops: AtomicU64,
}

impl ActivityLog {
    pub fn new(capacity: usize) -> ActivityLog {
        let (tx, rx) = crossbeam_channel::bounded::<String>(4096);
        let printer = std::thread::Builder::new()
            .name("fb-log".into())
            .spawn(move || {
                for line in rx {
                    eprintln!("{line}");
                }
            });
        ActivityLog {
            ring: Mutex::new(Ring::default()),
            capacity: capacity.max(1),
            next_id: AtomicU64::new(1),
            listeners: Mutex::new(Vec::new()),
            // Without a printer thread the lines go straight to stderr.
            log: printer.is_ok().then_some(tx),
            printer: printer.ok(),
            log_drops: AtomicU64::new(0),
        }
    }

    /// Adds an entry (also printed on stderr, the daemon's log).
    pub fn add(
        &self,
        severity: ActivitySeverity,
        monitor: &str,
        kind: &str,
        message: impl Into<String>,
    ) -> ActivityEntry {
        self.add_entry(ActivityEntry {
            id: 0,
            time_ms: 0,
            severity,
            monitor: monitor.to_string(),
            kind: kind.to_string(),
            message: message.into(),
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
        })
    }

    /// Adds a prepared entry; id and time are filled in, and its text is
    /// escaped and bounded.
    pub fn add_entry(&self, mut e: ActivityEntry) -> ActivityEntry {
        e.sanitize();
        e.id = self.next_id.fetch_add(1, Relaxed);
        e.time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let line = format!(
            "faultbridge: [{}] {}{}{}: {}",
            e.severity.name(),
            e.monitor,
            if e.monitor.is_empty() { "" } else { " " },
            e.kind,
            e.message
        );
        match &self.log {
            Some(tx) => {
                if tx.try_send(line).is_err() {
                    self.log_drops.fetch_add(1, Relaxed);
                }
            }
            None => eprintln!("{line}"),
        }
        {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            let size = e.text_bytes();
            while !ring.entries.is_empty()
                && (ring.entries.len() >= self.capacity || ring.bytes + size > RING_BYTES_MAX)
            {
                if let Some(old) = ring.entries.pop_front() {
                    ring.bytes -= old.text_bytes();
                }
            }
            ring.bytes += size;
            ring.entries.push_back(e.clone());
        }
        let mut ls = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ls.retain(|(l, bound)| l.len() >= *bound || l.send(e.clone()).is_ok());
        e
    }

    /// The newest `n` entries, oldest first.
    pub fn recent(&self, n: usize) -> Vec<ActivityEntry> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.entries
            .iter()
            .skip(ring.entries.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Entries for one monitor, oldest first.
    pub fn for_monitor(&self, monitor: &str) -> Vec<ActivityEntry> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.entries
            .iter()
            .filter(|e| e.monitor == monitor)
            .cloned()
            .collect()
    }

    /// Listens to new entries (bounded; a full listener misses entries but
    /// the ring keeps them).
    pub fn listen(&self, capacity: usize) -> Receiver<ActivityEntry> {
        // Unbounded in memory (blocks made as entries come, freed as they
        // are read), bounded in entries by the check in `add`.
        let (tx, rx) = crossbeam_channel::unbounded();
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((tx, capacity.max(1)));
        rx
    }
}

impl Drop for ActivityLog {
    /// Prints what is still queued before the log goes.
    fn drop(&mut self) {
        self.log = None;
        if let Some(p) = self.printer.take() {
            let _ = p.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped_and_bounded() {
        let log = ActivityLog::new(8);
        let e = log.add(
            ActivitySeverity::Information,
            "m",
            "state",
            "keyword host1\nfaultbridge: [Success] m action-exit: forged\x1b[2J",
        );
        assert!(!e.message.contains('\n') && !e.message.contains('\x1b'));
        assert!(e.message.contains("host1\\nfaultbridge"), "{}", e.message);
        let big = log.add_entry(ActivityEntry {
            id: 0,
            time_ms: 0,
            severity: ActivitySeverity::Error,
            monitor: "m".into(),
            kind: "action-exit".into(),
            message: "x".repeat(100_000),
            exit_code: Some(1),
            stdout: "line\n\x07".repeat(100_000),
            stderr: String::new(),
        });
        assert!(big.message.len() <= MESSAGE_MAX);
        assert!(big.stdout.len() <= OUTPUT_MAX);
        assert!(big.stdout.starts_with("line\n\\x07line\n"));
    }

    #[test]
    fn the_ring_is_bounded_by_entries_and_bytes() {
        let log = ActivityLog::new(1_000_000);
        let out = "o".repeat(OUTPUT_MAX);
        for _ in 0..(2 * RING_BYTES_MAX / OUTPUT_MAX) {
            log.add_entry(ActivityEntry {
                id: 0,
                time_ms: 0,
                severity: ActivitySeverity::Success,
                monitor: "m".into(),
                kind: "action-exit".into(),
                message: String::new(),
                exit_code: Some(0),
                stdout: out.clone(),
                stderr: String::new(),
            });
        }
        let kept = log.recent(usize::MAX);
        let bytes: usize = kept.iter().map(ActivityEntry::text_bytes).sum();
        assert!(bytes <= RING_BYTES_MAX, "{bytes}");
        assert!(kept.len() < 2 * RING_BYTES_MAX / OUTPUT_MAX);
        let small = ActivityLog::new(3);
        for i in 0..10 {
            small.add(ActivitySeverity::Information, "m", "state", format!("{i}"));
        }
        let kept: Vec<String> = small.recent(10).into_iter().map(|e| e.message).collect();
        assert_eq!(kept, ["7", "8", "9"]);
    }
}

//! The activity log: every monitor state change and every recovery action
//! (start, exit value, output, timeout, Undo) as a structured entry with a
//! severity, kept in a bounded ring for `faultbridge status` and D-Bus, and
//! told to listeners (history) as it happens.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// How an entry reads to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActivitySeverity {
    Success,
    Information,
    Warning,
    Error,
}

impl ActivitySeverity {
    pub const fn name(self) -> &'static str {
        match self {
            ActivitySeverity::Success => "Success",
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

/// The log: a bounded ring and listeners.
#[derive(Debug)]
pub struct ActivityLog {
    ring: Mutex<VecDeque<ActivityEntry>>,
    capacity: usize,
    next_id: AtomicU64,
    listeners: Mutex<Vec<Sender<ActivityEntry>>>,
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
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
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

    /// Adds a prepared entry; id and time are filled in.
    pub fn add_entry(&self, mut e: ActivityEntry) -> ActivityEntry {
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
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(e.clone());
        }
        let mut ls = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ls.retain(|l| !matches!(l.try_send(e.clone()), Err(TrySendError::Disconnected(_))));
        e
    }

    /// The newest `n` entries, oldest first.
    pub fn recent(&self, n: usize) -> Vec<ActivityEntry> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter()
            .skip(ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Entries for one monitor, oldest first.
    pub fn for_monitor(&self, monitor: &str) -> Vec<ActivityEntry> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter()
            .filter(|e| e.monitor == monitor)
            .cloned()
            .collect()
    }

    /// Listens to new entries (bounded; a full listener misses entries but
    /// the ring keeps them).
    pub fn listen(&self, capacity: usize) -> Receiver<ActivityEntry> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
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

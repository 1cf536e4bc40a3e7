//! Counters of the ingest path, per source: written by the ingest thread
//! (relaxed atomics on their own cache lines), read by anyone.

use crate::sources::auth::Refusal;
use crossbeam_utils::CachePadded;
use faultbridge_bus::Source;
use faultbridge_ffi::wire::record::MalformedReason;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one source.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Datagrams (or reads) received.
    pub datagrams: CachePadded<AtomicU64>,
    /// Well-formed records received.
    pub received: CachePadded<AtomicU64>,
    /// Records published to the bus.
    pub delivered: CachePadded<AtomicU64>,
    /// Malformed records, by reason.
    pub malformed: [AtomicU64; MalformedReason::COUNT],
    /// Datagrams cut short (`MSG_TRUNC`) or with bytes that form no whole message.
    pub truncated: AtomicU64,
    /// Messages of reserved types (>= 0x0012), counted and skipped.
    pub reserved_types: AtomicU64,
    /// Records known to be lost (sum of the reported ranges).
    pub lost: CachePadded<AtomicU64>,
    /// `ENOBUFS` overruns of the socket.
    pub overruns: AtomicU64,
    /// Sequence gaps detected.
    pub gaps: AtomicU64,
    /// Records with the sequence of the cursor again (duplicates).
    pub duplicates: AtomicU64,
    /// Records behind the cursor: replays, or the first record of a reload.
    pub behind: AtomicU64,
    /// Records too far ahead of the cursor to be a loss (the cursor stays).
    pub implausible: AtomicU64,
    /// Records of driver ids beyond the bound of tracked cursors.
    pub untracked: AtomicU64,
    /// Driver reloads seen (sequence restarting at 1).
    pub restarts: AtomicU64,
    /// Datagrams refused by sender authentication, by reason; never parsed.
    pub refused: [AtomicU64; Refusal::COUNT],
    /// Socket errors other than the above.
    pub errors: AtomicU64,
    /// Records taken without a message type whose FAULT or CLEAR could not
    /// be told apart (the char device read alone, a category without a
    /// dedicated clear event code): published as faults.
    pub untyped: AtomicU64,
}

/// Counters of every source.
#[derive(Debug, Default)]
pub struct Stats {
    pub sources: [SourceCounters; Source::COUNT],
    /// Deliveries dropped because a subscriber's queue was full (all subscribers).
    pub subscriber_drops: CachePadded<AtomicU64>,
    /// Whether each configured source runs.
    pub health: crate::health::Health,
}

impl Stats {
    pub fn source(&self, s: Source) -> &SourceCounters {
        &self.sources[s.index()]
    }

    /// A consistent-enough copy for display and tests.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            sources: Source::ALL
                .iter()
                .map(|&s| self.source(s).snapshot(s))
                .filter(|s| {
                    s.datagrams > 0
                        || s.received > 0
                        || s.lost > 0
                        || s.malformed_total > 0
                        || s.refused_total > 0
                })
                .collect(),
            subscriber_drops: self.subscriber_drops.load(Relaxed),
        }
    }
}

impl SourceCounters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self, source: Source) -> SourceSnapshot {
        let malformed: Vec<(String, u64)> = MalformedReason::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    self.malformed[r.index()].load(Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let refused: Vec<(String, u64)> = Refusal::ALL
            .iter()
            .map(|r| (r.name().to_string(), self.refused[r.index()].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        SourceSnapshot {
            source: source.name().to_string(),
            refused_total: refused.iter().map(|(_, n)| n).sum(),
            refused,
            datagrams: self.datagrams.load(Relaxed),
            received: self.received.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            malformed_total: malformed.iter().map(|(_, n)| n).sum(),
            malformed,
            truncated: self.truncated.load(Relaxed),
            reserved_types: self.reserved_types.load(Relaxed),
            lost: self.lost.load(Relaxed),
            overruns: self.overruns.load(Relaxed),
            gaps: self.gaps.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            behind: self.behind.load(Relaxed),
            implausible: self.implausible.load(Relaxed),
            untracked: self.untracked.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            errors: self.errors.load(Relaxed),
            untyped: self.untyped.load(Relaxed),
        }
    }
}

/// A copy of one source's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceSnapshot {
    pub source: String,
    pub datagrams: u64,
    pub received: u64,
    pub delivered: u64,
    pub malformed_total: u64,
    pub malformed: Vec<(String, u64)>,
    pub truncated: u64,
    pub reserved_types: u64,
    pub lost: u64,
    pub overruns: u64,
    pub gaps: u64,
    pub duplicates: u64,
    pub behind: u64,
    pub implausible: u64,
    pub untracked: u64,
    pub restarts: u64,
    pub refused_total: u64,
    pub refused: Vec<(String, u64)>,
    pub errors: u64,
    pub untyped: u64,
}

impl SourceSnapshot {
    /// Datagrams refused for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused
            .iter()
            .find(|(n, _)| n == reason.name())
            .map_or(0, |(_, c)| *c)
    }

    /// Malformed records counted under `reason`.
    pub fn malformed(&self, reason: MalformedReason) -> u64 {
        self.malformed
            .iter()
            .find(|(n, _)| n == reason.name())
            .map_or(0, |(_, c)| *c)
    }
}

/// A copy of all counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub sources: Vec<SourceSnapshot>,
    pub subscriber_drops: u64,
}

impl StatsSnapshot {
    /// The counters of `source` (zeros if it saw nothing).
    pub fn source(&self, source: Source) -> SourceSnapshot {
        self.sources
            .iter()
            .find(|s| s.source == source.name())
            .cloned()
            .unwrap_or_else(|| SourceSnapshot {
                source: source.name().to_string(),
                ..SourceSnapshot::default()
            })
    }
}

impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.sources.is_empty() {
            writeln!(f, "no records received")?;
        }
        for s in &self.sources {
            writeln!(
                f,
                "{:<14} received {}  delivered {}  malformed {}  lost {}  (datagrams {}, overruns {}, gaps {}, truncated {}, reserved types {}, duplicates {}, behind {}, implausible {})",
                s.source,
                s.received,
                s.delivered,
                s.malformed_total,
                s.lost,
                s.datagrams,
                s.overruns,
                s.gaps,
                s.truncated,
                s.reserved_types,
                s.duplicates,
                s.behind,
                s.implausible
            )?;
            if s.refused_total > 0 {
                write!(f, "{:<14}   refused {}:", "", s.refused_total)?;
                for (reason, n) in &s.refused {
                    write!(f, " {reason} {n}")?;
                }
                writeln!(f)?;
            }
            if s.untracked > 0 {
                writeln!(
                    f,
                    "{:<14}   records of untracked driver ids (beyond the bound of cursors) {}",
                    "", s.untracked
                )?;
            }
            for (reason, n) in &s.malformed {
                writeln!(f, "{:<14}   malformed {reason}: {n}", "")?;
            }
        }
        write!(f, "subscriber queue drops {}", self.subscriber_drops)
    }
}

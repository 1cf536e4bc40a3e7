//! ABI v1 records made by sources that read another format (rtnetlink, FC
//! transport, uevents): each is encoded into one reusable buffer, then goes
//! through the same checked [`Record::parse`] as a driver's record, so every
//! consumer downstream sees one format.

use super::Dispatch;
use super::seq::{MAX_DRIVERS, MAX_JUMP, Seen};
use crate::error::thinned;
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, Lost, LostReason, Source};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::wire::record::{Category, Record, RecordSpec, Severity};
use std::sync::atomic::Ordering::Relaxed;

/// What to say about one device.
#[derive(Clone, Copy, Debug)]
pub struct Synthesized<'a> {
    pub kind: FaultKind,
    pub category: Category,
    pub severity: Severity,
    pub event_code: u32,
    pub device_index: u32,
    pub keyword: &'a str,
    pub detail: &'a [u8],
    /// `F_SNAPSHOT` for state found by a dump rather than reported live.
    pub flags: u32,
}

/// A source's record builder and its own sequence (starting at 1).
#[derive(Debug)]
pub struct Synth {
    source: Source,
    next_seq: u64,
    buf: Vec<u8>,
}

impl Synth {
    pub fn new(source: Source) -> Synth {
        Synth {
            source,
            next_seq: 1,
            buf: Vec::with_capacity(512),
        }
    }

    /// The sequence the next record gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// Continues from `next` (handed over by the other side of a live
    /// upgrade); never goes back.
    pub fn continue_from(&mut self, next: u64) {
        self.next_seq = self.next_seq.max(next);
    }

    /// Builds, validates and publishes one record with the next sequence.
    pub fn emit(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters, s: &Synthesized<'_>) {
        let seq = self.next_seq;
        if self.emit_as(out, c, s, seq) {
            self.next_seq += 1;
        }
    }

    /// Builds, validates and publishes one record with sequence `seq`
    /// (sources whose kernel messages carry their own counter). Returns
    /// false when the record could not be built (counted as malformed).
    pub fn emit_as(
        &mut self,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
        s: &Synthesized<'_>,
        seq: u64,
    ) -> bool {
        self.buf.clear();
        RecordSpec {
            flags: s.flags,
            sequence: seq,
            timestamp_ns: monotonic_ns(),
            category: s.category.code(),
            severity: s.severity.code(),
            event_code: s.event_code,
            device_index: s.device_index,
            keyword: s.keyword.as_bytes(),
            detail: s.detail,
            driver_id: 0,
        }
        .encode_into(&mut self.buf);
        match Record::parse(&self.buf) {
            Ok(r) => {
                c.received.fetch_add(1, Relaxed);
                out.fault(self.source, s.kind, &r);
                c.delivered.fetch_add(1, Relaxed);
                true
            }
            Err(e) => {
                // Only an oversize keyword or detail can get here.
                c.malformed[e.reason().index()].fetch_add(1, Relaxed);
                eprintln!(
                    "faultbridge: {}: cannot make a record for {:?}: {e}",
                    self.source, s.keyword
                );
                false
            }
        }
    }
}

/// Reports what a sequence check saw: a gap becomes a [`Lost`] event with
/// its range, a confirmed reload a [`Lost`] for the part of the new load
/// that was missed; duplicates, records behind the cursor, implausible
/// jumps and untracked driver ids are counted (and thinly logged). The
/// record itself is published by the caller in every case.
pub fn report_seen(seen: Seen, source: Source, out: &mut Dispatch<'_>, c: &SourceCounters) {
    match seen {
        Seen::InOrder => {}
        Seen::Gap {
            first,
            last,
            reason,
        } => report_lost(source, first, last, reason, out, c),
        Seen::Duplicate => {
            let n = c.duplicates.fetch_add(1, Relaxed) + 1;
            if thinned(n) {
                eprintln!(
                    "faultbridge: {source}: a record repeated the last sequence ({n} so far)"
                );
            }
        }
        Seen::Behind { cursor } => {
            let n = c.behind.fetch_add(1, Relaxed) + 1;
            if thinned(n) {
                eprintln!(
                    "faultbridge: {source}: a record behind the cursor {cursor}: a replay, or a driver reload if the next record continues it ({n} so far)"
                );
            }
        }
        Seen::Implausible { cursor } => {
            let n = c.implausible.fetch_add(1, Relaxed) + 1;
            if thinned(n) {
                eprintln!(
                    "faultbridge: {source}: a record more than {MAX_JUMP} ahead of the cursor {cursor}: implausible, the cursor stays ({n} so far)"
                );
            }
        }
        Seen::Jumped { from } => {
            eprintln!(
                "faultbridge: {source}: the sequence jumped from {from} by more than {MAX_JUMP}, confirmed by two records in a row"
            );
        }
        Seen::Restart { missed } => {
            c.restarts.fetch_add(1, Relaxed);
            eprintln!("faultbridge: {source}: sequence went back: the driver was reloaded");
            if let Some((first, last)) = missed {
                report_lost(source, first, last, LostReason::SequenceGap, out, c);
            }
        }
        Seen::Untracked => {
            let n = c.untracked.fetch_add(1, Relaxed) + 1;
            if thinned(n) {
                eprintln!(
                    "faultbridge: {source}: a record of a driver id beyond the {MAX_DRIVERS} tracked: its sequence is not checked ({n} so far)"
                );
            }
        }
    }
}

/// Publishes the loss of `first..=last` (an empty range, `last < first`,
/// when the lost kernel messages carried no sequence: count 0, unknown).
pub fn report_lost(
    source: Source,
    first: u64,
    last: u64,
    reason: LostReason,
    out: &mut Dispatch<'_>,
    c: &SourceCounters,
) {
    let count = (last + 1).saturating_sub(first);
    let n = c.gaps.fetch_add(u64::from(count > 0), Relaxed) + 1;
    c.lost.fetch_add(count, Relaxed);
    // The ingest thread must not stall on a slow log reader during an
    // overrun storm (the counters and the Lost events carry every one).
    if thinned(n) {
        if count > 0 {
            eprintln!(
                "faultbridge: {source}: lost {count} record(s), sequence {first}..={last} ({}; {n} losses so far)",
                reason.name()
            );
        } else {
            eprintln!(
                "faultbridge: {source}: records lost in an overrun from sequence {first}; the range follows with the next record ({})",
                reason.name()
            );
        }
    }
    out.lost(Lost {
        source,
        first_sequence: first,
        last_sequence: last,
        count,
        reason,
    });
}

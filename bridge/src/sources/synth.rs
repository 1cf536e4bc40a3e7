//! ABI v1 records made by sources that read another format (rtnetlink, FC
//! transport, uevents): each is encoded into one reusable buffer, then goes
//! through the same checked [`Record::parse`] as a driver's record, so every
//! consumer downstream sees one format.

use super::Dispatch;
use super::seq::Seen;
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

/// Loss lines logged before logging thins out.
const LOG_FIRST: u64 = 5;

/// Reports what a sequence check saw: a gap becomes a [`Lost`] event with
/// its range; duplicates and restarts are counted.
pub fn report_seen(seen: Seen, source: Source, out: &mut Dispatch<'_>, c: &SourceCounters) {
    match seen {
        Seen::InOrder => {}
        Seen::Gap {
            first,
            last,
            reason,
        } => report_lost(source, first, last, reason, out, c),
        Seen::Backwards => {
            c.out_of_order.fetch_add(1, Relaxed);
        }
        Seen::Restart { missed } => {
            c.restarts.fetch_add(1, Relaxed);
            eprintln!("faultbridge: {source}: sequence went back: the driver was reloaded");
            if let Some((first, last)) = missed {
                report_lost(source, first, last, LostReason::SequenceGap, out, c);
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
    // overrun storm: the first few, then every 1000th (the counters and the
    // Lost events carry every one).
    if n <= LOG_FIRST || n % 1000 == 0 {
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

/// Holds back a source's start-up report (the state it found when it
/// opened) until the bus has a subscriber to hear it, or until
/// [`StartupGate::GRACE`] has passed with none: `Bridge::start` returns
/// before its caller can subscribe, and the ingest thread would otherwise
/// publish the report to nobody. Monitors get it all the same, at most
/// `GRACE` later. A live message opens the gate at once, so the report
/// always comes before what followed it. Subscribers that arrive within
/// [`StartupGate::SETTLE`] of each other all get it.
#[derive(Debug)]
pub struct StartupGate {
    timer: nix::sys::timerfd::TimerFd,
    opened: std::time::Instant,
    open: bool,
}

impl StartupGate {
    /// The longest a start-up report waits for a subscriber.
    pub const GRACE: std::time::Duration = std::time::Duration::from_secs(1);
    /// Subscribers that arrive together (D-Bus, a printer) all get it.
    const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);
    const CHECK: std::time::Duration = std::time::Duration::from_millis(5);

    pub fn new() -> std::io::Result<StartupGate> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(StartupGate {
            timer,
            opened: std::time::Instant::now(),
            open: false,
        })
    }

    /// The timer to poll: readable when the gate should be checked again.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::{AsFd, AsRawFd};
        self.timer.as_fd().as_raw_fd()
    }

    /// Opens the gate now.
    pub fn force_open(&mut self) {
        self.open = true;
        let _ = self.timer.unset();
    }

    /// Whether the start-up report may go out now; if not, the timer is
    /// armed to ask again shortly.
    pub fn is_open(&mut self, out: &mut Dispatch<'_>) -> bool {
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        if self.open {
            return true;
        }
        // Clear an expiry (non-blocking: EAGAIN when none).
        let _ = self.timer.wait();
        out.publisher.adopt();
        let age = self.opened.elapsed();
        if (out.publisher.stats().subscribers > 0 && age >= Self::SETTLE) || age >= Self::GRACE {
            self.force_open();
            return true;
        }
        let when = Expiration::OneShot(nix::sys::time::TimeSpec::from_duration(Self::CHECK));
        let _ = self.timer.set(when, TimerSetTimeFlags::empty());
        false
    }
}

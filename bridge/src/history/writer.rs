//! The writer: a bus subscriber of its own, on its own thread, that writes
//! events, monitor state changes and activity-log entries in batched
//! transactions, and says once a second what is safely on disk.

use super::cursors::{BatchCursors, Committed};
use super::{HistoryDb, Retention, now_ms};
use crate::activity::ActivityEntry;
use crate::monitor::{MonitorChange, MonitorView};
use crossbeam_channel::Receiver;
use faultbridge_bus::{Event, Subscription};
use rusqlite::params;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Rows written per transaction at most.
const BATCH: usize = 8192;

/// Columns of one `events` row as the writer inserts it.
const EVENT_COLUMNS: usize = 14;
/// Rows per multi-row `INSERT`.
const ROWS_PER_INSERT: usize = 256;

fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; EVENT_COLUMNS].join(", "));
    format!(
        "INSERT OR IGNORE INTO events (kind, source, driver_id, sequence, last_sequence, category, keyword, severity, event_code, device_index, flags, timestamp_ns, detail, recorded_at_ms) VALUES {}",
        vec![one; rows].join(", ")
    )
}

static SINGLE_INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_sql(1));
static MULTI_INSERT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_sql(ROWS_PER_INSERT));

/// One `events` row, borrowed from the event it records.
struct EventRow<'a> {
    kind: &'static str,
    source: &'static str,
    driver_id: u32,
    sequence: i64,
    last_sequence: Option<i64>,
    category: &'static str,
    keyword: &'a str,
    severity: &'static str,
    event_code: u32,
    device_index: u32,
    flags: u32,
    timestamp_ns: i64,
    detail: &'a [u8],
}

impl<'a> EventRow<'a> {
    fn of(ev: &'a Event) -> EventRow<'a> {
        match ev {
            Event::Fault(f) => EventRow {
                kind: if f.cleared() { "clear" } else { "fault" },
                source: f.source().name(),
                driver_id: f.driver_id(),
                sequence: f.sequence() as i64,
                last_sequence: None,
                category: f.category().name(),
                keyword: f.keyword(),
                severity: f.severity().name(),
                event_code: f.event_code(),
                device_index: f.device_index(),
                flags: f.flags(),
                timestamp_ns: f.timestamp_ns() as i64,
                detail: f.detail(),
            },
            Event::Lost(l) => EventRow {
                kind: "lost",
                source: l.source.name(),
                driver_id: 0,
                sequence: l.first_sequence as i64,
                last_sequence: Some(l.last_sequence as i64),
                category: "",
                keyword: "",
                severity: l.reason.name(),
                event_code: 0,
                device_index: 0,
                flags: 0,
                timestamp_ns: 0,
                detail: &[],
            },
        }
    }

    /// Binds the row's columns at parameters `base+1 ..= base+14`.
    fn bind(
        &self,
        st: &mut rusqlite::CachedStatement<'_>,
        base: usize,
        now: i64,
    ) -> rusqlite::Result<()> {
        st.raw_bind_parameter(base + 1, self.kind)?;
        st.raw_bind_parameter(base + 2, self.source)?;
        st.raw_bind_parameter(base + 3, self.driver_id)?;
        st.raw_bind_parameter(base + 4, self.sequence)?;
        st.raw_bind_parameter(base + 5, self.last_sequence)?;
        st.raw_bind_parameter(base + 6, self.category)?;
        st.raw_bind_parameter(base + 7, self.keyword)?;
        st.raw_bind_parameter(base + 8, self.severity)?;
        st.raw_bind_parameter(base + 9, self.event_code)?;
        st.raw_bind_parameter(base + 10, self.device_index)?;
        st.raw_bind_parameter(base + 11, self.flags)?;
        st.raw_bind_parameter(base + 12, self.timestamp_ns)?;
        st.raw_bind_parameter(base + 13, self.detail)?;
        st.raw_bind_parameter(base + 14, now)
    }
}

/// Counters of the writer.
#[derive(Debug, Default)]
pub struct HistoryStats {
    pub rows: AtomicU64,
    pub batches: AtomicU64,
    pub lost: AtomicU64,
    pub removed: AtomicU64,
    pub errors: AtomicU64,
}

/// Everything the writer drains.
#[derive(Debug)]
pub struct WriterInputs {
    pub events: Subscription,
    pub changes: Receiver<MonitorChange>,
    pub activity: Receiver<ActivityEntry>,
    pub monitors: Arc<MonitorView>,
    /// Told after each commit (the forwarder waits on it).
    pub committed: Option<Arc<tokio::sync::Notify>>,
}

/// Runs the writer until the bridge stops (its subscription closes).
pub fn run_writer(
    db: HistoryDb,
    inputs: WriterInputs,
    retention: Retention,
    stats: Arc<HistoryStats>,
) {
    let mut w = Writer {
        db,
        stats,
        retention,
        last_report: Instant::now(),
        committed: Committed::default(),
        cursors: BatchCursors::default(),
        unwritten: Vec::new(),
        resync_monitors: false,
        committed_hook: inputs.committed.clone(),
    };
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        let mut closed = false;
        match inputs.events.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => batch.push(ev),
            Err(faultbridge_bus::fanout::RecvError::Timeout) => {}
            Err(faultbridge_bus::fanout::RecvError::Closed) => closed = true,
        }
        while batch.len() < BATCH {
            match inputs.events.try_recv() {
                Some(ev) => batch.push(ev),
                None => break,
            }
        }
        let changes: Vec<MonitorChange> = inputs.changes.try_iter().collect();
        let activity: Vec<ActivityEntry> = inputs.activity.try_iter().collect();
        let owed = !w.unwritten.is_empty() || w.resync_monitors;
        if owed || !(batch.is_empty() && changes.is_empty() && activity.is_empty()) {
            w.write_retrying(&batch, &changes, &activity, &inputs.monitors);
        }
        if batch.len() < BATCH {
            match w.db.enforce(&w.retention) {
                Ok(n) => {
                    w.stats.removed.fetch_add(n, Relaxed);
                }
                Err(e) => eprintln!("faultbridge: history: retention: {e}"),
            }
            if let Err(e) = w.db.prune_cursors() {
                eprintln!("faultbridge: history: pruning cursors: {e}");
            }
        }
        if closed && batch.is_empty() {
            w.report(true);
            return;
        }
    }
}

struct Writer {
    db: HistoryDb,
    stats: Arc<HistoryStats>,
    retention: Retention,
    last_report: Instant,
    /// Cursors committed since the last report.
    committed: Committed,
    /// Cursors the batch being written moves.
    cursors: BatchCursors,
    /// Records of batches that could not be written (per source: first and
    /// last sequence, count), recorded as `lost` rows by the next write.
    unwritten: Vec<(&'static str, u64, u64, u64)>,
    /// A batch of monitor changes was not written: the next write records
    /// every monitor's state.
    resync_monitors: bool,
    /// Told after each commit.
    committed_hook: Option<Arc<tokio::sync::Notify>>,
}

/// Records a `lost` row for sequences `first..=last` of `source` that the
/// writer could not store.
fn unwritten_row(
    tx: &rusqlite::Transaction<'_>,
    source: &str,
    first: u64,
    last: u64,
    now: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO events (kind, source, sequence, last_sequence, severity, recorded_at_ms)
         VALUES ('lost', ?1, ?2, ?3, 'history_write_failed', ?4)",
        params![source, first as i64, last as i64, now],
    )
    .map(drop)
}

/// Attempts at writing one batch before it is given up as lost.
const WRITE_ATTEMPTS: u32 = 3;

impl Writer {
    /// Writes a batch, retrying a failing database (disk full, a lock held
    /// too long) a few times; a batch that still fails is never silent: its
    /// records become `lost` rows of the next write that succeeds.
    fn write_retrying(
        &mut self,
        events: &[Event],
        changes: &[MonitorChange],
        activity: &[ActivityEntry],
        view: &MonitorView,
    ) {
        for attempt in 1..=WRITE_ATTEMPTS {
            match self.write(events, changes, activity, view) {
                Ok(()) => return,
                Err(e) => {
                    self.stats.errors.fetch_add(1, Relaxed);
                    eprintln!(
                        "faultbridge: history: batch of {} not written (attempt {attempt} of {WRITE_ATTEMPTS}): {e}",
                        events.len()
                    );
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
            }
        }
        for ev in events {
            if let Event::Fault(f) = ev {
                let source = f.source().name();
                let seq = f.sequence();
                match self.unwritten.iter_mut().find(|u| u.0 == source) {
                    Some(u) => {
                        u.1 = u.1.min(seq);
                        u.2 = u.2.max(seq);
                        u.3 += 1;
                    }
                    None => self.unwritten.push((source, seq, seq, 1)),
                }
                self.stats.lost.fetch_add(1, Relaxed);
            }
        }
        self.resync_monitors |= !changes.is_empty();
        eprintln!(
            "faultbridge: history: gave up on a batch of {} record(s); they are recorded as lost",
            events.len()
        );
    }

    fn write(
        &mut self,
        events: &[Event],
        changes: &[MonitorChange],
        activity: &[ActivityEntry],
        view: &MonitorView,
    ) -> Result<(), rusqlite::Error> {
        let now = now_ms();
        let tx = self.db.conn.transaction()?;
        self.cursors.clear();
        {
            // Rows go in ROWS_PER_INSERT at a time (one statement, bound in
            // place without allocating), the remainder one by one.
            let mut many = tx.prepare_cached(&MULTI_INSERT)?;
            let mut one = tx.prepare_cached(&SINGLE_INSERT)?;
            for ev in events {
                match ev {
                    Event::Fault(f) if !f.is_snapshot() => {
                        self.cursors
                            .note(f.source().name(), f.driver_id(), f.sequence());
                    }
                    Event::Lost(l) => {
                        self.stats.lost.fetch_add(l.count, Relaxed);
                    }
                    Event::Fault(_) => {}
                }
            }
            let mut chunks = events.chunks_exact(ROWS_PER_INSERT);
            for chunk in &mut chunks {
                for (i, ev) in chunk.iter().enumerate() {
                    EventRow::of(ev).bind(&mut many, i * EVENT_COLUMNS, now)?;
                }
                many.raw_execute()?;
            }
            for ev in chunks.remainder() {
                EventRow::of(ev).bind(&mut one, 0, now)?;
                one.raw_execute()?;
            }
            self.cursors.save(&tx)?;
            let mut mon = tx.prepare_cached(
                "INSERT INTO monitor_state (name, state, error_count, last_sequence, changed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET state = excluded.state, error_count = excluded.error_count,
                 last_sequence = excluded.last_sequence, changed_at_ms = excluded.changed_at_ms",
            )?;
            for (source, first, last, _count) in &self.unwritten {
                unwritten_row(&tx, source, *first, *last, now)?;
            }
            let all: Vec<usize> = if self.resync_monitors {
                (0..view.monitors.len()).collect()
            } else {
                changes.iter().map(|c| c.index).collect()
            };
            for index in all {
                if let Some(m) = view.monitors.get(index) {
                    // The state now, not the state of the change: a burst of
                    // changes collapses to the latest.
                    mon.execute(params![
                        m.config.name,
                        m.state().name(),
                        m.error_count() as i64,
                        m.last_sequence() as i64,
                        now
                    ])?;
                }
            }
            let mut act = tx.prepare_cached(
                "INSERT INTO activity (time_ms, severity, monitor, kind, message, exit_code, stdout, stderr)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for a in activity {
                act.execute(params![
                    a.time_ms as i64,
                    a.severity.name(),
                    a.monitor,
                    a.kind,
                    a.message,
                    a.exit_code,
                    a.stdout,
                    a.stderr
                ])?;
            }
        }
        tx.commit()?;
        if let Some(n) = &self.committed_hook {
            n.notify_one();
        }
        self.unwritten.clear();
        self.resync_monitors = false;
        self.stats.rows.fetch_add(events.len() as u64, Relaxed);
        self.stats.batches.fetch_add(1, Relaxed);
        for (source, driver, seq) in self.cursors.iter() {
            self.committed.note(source, driver, seq);
        }
        self.report(false);
        Ok(())
    }

    /// Says, at most once a second, what is safely on disk.
    fn report(&mut self, last: bool) {
        if self.committed.is_empty()
            || (!last && self.last_report.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_report = Instant::now();
        for line in self.committed.take_lines() {
            eprintln!("{line}");
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Query;

    #[test]
    fn a_batch_that_cannot_be_written_becomes_lost_rows_of_the_next_write() {
        use faultbridge_bus::{Fault, FaultKind, Source};
        use faultbridge_ffi::wire::record::{Record, RecordSpec};
        let dir = std::env::temp_dir().join(format!("fb-history-fail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("h.db");
        drop(HistoryDb::open(&path).unwrap());
        let events: Vec<Event> = (7..=9)
            .map(|seq| {
                let mut v = Vec::new();
                RecordSpec {
                    flags: 0,
                    sequence: seq,
                    timestamp_ns: seq,
                    category: 1,
                    severity: 2,
                    event_code: 1,
                    device_index: 0,
                    keyword: b"eth0",
                    detail: b"",
                    driver_id: 1,
                }
                .encode_into(&mut v);
                Event::Fault(Fault::from_record(
                    Source::Expdrv,
                    FaultKind::Fault,
                    &Record::parse(&v).unwrap(),
                ))
            })
            .collect();
        let view = crate::monitor::Monitors::new(&[]).view();
        // A database that refuses writes: the batch is given up, not lost silently.
        let mut w = Writer {
            db: HistoryDb::open_read_only(&path).unwrap(),
            stats: Arc::new(HistoryStats::default()),
            retention: Retention {
                max_age: None,
                max_rows: None,
            },
            last_report: Instant::now(),
            committed: Committed::default(),
            cursors: BatchCursors::default(),
            unwritten: Vec::new(),
            resync_monitors: false,
            committed_hook: None,
        };
        w.write_retrying(&events, &[], &[], &view);
        assert_eq!(w.unwritten, vec![("expdrv", 7, 9, 3)]);
        assert_eq!(w.stats.lost.load(Relaxed), 3);
        // Writable again: the next write records the loss.
        w.db = HistoryDb::open(&path).unwrap();
        w.write_retrying(&[], &[], &[], &view);
        let rows =
            w.db.query(&Query {
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].kind.as_str(),
                rows[0].sequence,
                rows[0].last_sequence
            ),
            ("lost", 7, Some(9))
        );
        assert_eq!(rows[0].severity, "history_write_failed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

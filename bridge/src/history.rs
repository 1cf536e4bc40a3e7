//! Fault history in an embedded SQLite database (WAL mode): every fault,
//! CLEAR, loss notice, monitor state change and activity-log entry, written
//! off the hot path by a subscriber of its own in batched transactions.
//!
//! The schema is versioned (`PRAGMA user_version`); migrations run at
//! start-up, and a database from a newer version is refused. Retention by
//! age and by row count runs in small chunks between batches, so it never
//! stalls writing. The database also carries what a restart needs: the last
//! recorded sequence per source (so a gap across the restart is reported)
//! and each monitor's latched state.

use crate::activity::ActivityEntry;
use crate::monitor::{MonitorChange, MonitorState, MonitorView};
use crossbeam_channel::Receiver;
use faultbridge_bus::{Event, Subscription};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The schema this build writes.
pub const SCHEMA_VERSION: i32 = 2;

/// Rows written per transaction at most.
const BATCH: usize = 8192;
/// Rows removed per retention step at most.
const RETENTION_CHUNK: i64 = 5000;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error("history database {path}: cannot open")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("history database {path}: cannot create its directory")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "history database {path} has schema version {found}, newer than the {SCHEMA_VERSION} this faultbridge knows: refusing to touch it (use the newer faultbridge, or move the file away)"
    )]
    TooNew { path: PathBuf, found: i32 },
    #[error("history database {path}: migration from schema version {from} failed")]
    Migrate {
        path: PathBuf,
        from: i32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("history database: query failed")]
    Query(#[source] rusqlite::Error),
}

/// `[history]` retention and location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Rows older than this are removed.
    pub max_age: Option<Duration>,
    /// At most this many event rows are kept (the oldest go first).
    pub max_rows: Option<u64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const SCHEMA_V1: &str = "
CREATE TABLE faults (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    category TEXT NOT NULL,
    keyword TEXT NOT NULL,
    severity TEXT NOT NULL,
    cleared INTEGER NOT NULL,
    event_code INTEGER NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    detail BLOB NOT NULL,
    recorded_at_ms INTEGER NOT NULL
);
PRAGMA user_version = 1;
";

const MIGRATE_1_TO_2: &str = "
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                 -- fault | clear | lost
    source TEXT NOT NULL,
    driver_id INTEGER NOT NULL DEFAULT 0,
    sequence INTEGER NOT NULL,          -- lost: first_sequence
    last_sequence INTEGER,              -- lost only
    category TEXT NOT NULL DEFAULT '',
    keyword TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL DEFAULT '',
    event_code INTEGER NOT NULL DEFAULT 0,
    device_index INTEGER NOT NULL DEFAULT 0,
    flags INTEGER NOT NULL DEFAULT 0,
    timestamp_ns INTEGER NOT NULL DEFAULT 0,
    detail BLOB NOT NULL DEFAULT x'',
    recorded_at_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_once ON events (source, driver_id, sequence, timestamp_ns) WHERE kind != 'lost';
INSERT OR IGNORE INTO events (kind, source, sequence, category, keyword, severity, event_code, timestamp_ns, detail, recorded_at_ms)
    SELECT CASE cleared WHEN 0 THEN 'fault' ELSE 'clear' END, source, sequence, category, keyword, severity,
           event_code, timestamp_ns, detail, recorded_at_ms FROM faults ORDER BY id;
DROP TABLE faults;
CREATE INDEX events_time ON events (recorded_at_ms);
CREATE TABLE activity (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    severity TEXT NOT NULL,
    monitor TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    exit_code INTEGER,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT ''
);
CREATE INDEX activity_monitor ON activity (monitor, time_ms);
CREATE TABLE monitor_state (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    error_count INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    changed_at_ms INTEGER NOT NULL
);
CREATE TABLE cursors (
    source TEXT NOT NULL,
    driver_id INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    PRIMARY KEY (source, driver_id)
);
INSERT OR REPLACE INTO cursors (source, driver_id, last_sequence)
    SELECT source, 0, max(sequence) FROM events WHERE kind != 'lost' GROUP BY source;
PRAGMA user_version = 2;
";

/// Creates a database of schema version 1 (for migration tests and fixtures).
pub fn create_v1(path: &Path) -> Result<Connection, HistoryError> {
    let conn = Connection::open(path).map_err(|source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.execute_batch(SCHEMA_V1).map_err(HistoryError::Query)?;
    Ok(conn)
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub id: i64,
    /// `fault`, `clear` or `lost`.
    pub kind: String,
    pub source: String,
    pub sequence: u64,
    /// For `lost`: the last missing sequence.
    pub last_sequence: Option<u64>,
    pub category: String,
    pub keyword: String,
    pub severity: String,
    pub event_code: u32,
    pub device_index: u32,
    pub timestamp_ns: u64,
    pub detail: Vec<u8>,
    pub recorded_at_ms: i64,
}

/// What `faultbridge history` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub since_ms: Option<i64>,
    pub category: Option<String>,
    pub keyword: Option<String>,
    pub after_id: Option<i64>,
    pub limit: usize,
}

/// A monitor's state as last recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedMonitor {
    pub name: String,
    pub state: MonitorState,
    pub error_count: u64,
    pub last_sequence: u64,
}

/// An open history database.
#[derive(Debug)]
pub struct HistoryDb {
    conn: Connection,
    path: PathBuf,
}

impl HistoryDb {
    /// Opens (creating it and its directory if needed) and migrates.
    pub fn open(path: &Path) -> Result<HistoryDb, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| HistoryError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        let mut db = HistoryDb {
            conn,
            path: path.to_path_buf(),
        };
        db.migrate()?;
        Ok(db)
    }

    /// Opens for reading only (the CLI, while the daemon writes).
    pub fn open_read_only(path: &Path) -> Result<HistoryDb, HistoryError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| HistoryError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = conn.busy_timeout(Duration::from_secs(5));
        let db = HistoryDb {
            conn,
            path: path.to_path_buf(),
        };
        let v = db.version()?;
        if v > SCHEMA_VERSION {
            return Err(HistoryError::TooNew {
                path: db.path.clone(),
                found: v,
            });
        }
        if v < SCHEMA_VERSION {
            return Err(HistoryError::Migrate {
                path: db.path.clone(),
                from: v,
                source: rusqlite::Error::InvalidQuery,
            });
        }
        Ok(db)
    }

    pub fn version(&self) -> Result<i32, HistoryError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(HistoryError::Query)
    }

    fn migrate(&mut self) -> Result<(), HistoryError> {
        let mut v = self.version()?;
        if v > SCHEMA_VERSION {
            return Err(HistoryError::TooNew {
                path: self.path.clone(),
                found: v,
            });
        }
        while v < SCHEMA_VERSION {
            let step = match v {
                0 => format!("{SCHEMA_V1}{MIGRATE_1_TO_2}"),
                1 => MIGRATE_1_TO_2.to_string(),
                _ => break,
            };
            let from = v;
            let tx = self
                .conn
                .transaction()
                .map_err(|source| HistoryError::Migrate {
                    path: self.path.clone(),
                    from,
                    source,
                })?;
            tx.execute_batch(&step)
                .and_then(|()| tx.commit())
                .map_err(|source| HistoryError::Migrate {
                    path: self.path.clone(),
                    from,
                    source,
                })?;
            v = self.version()?;
            if from != 0 {
                eprintln!(
                    "faultbridge: history: {} migrated from schema {from} to {v}",
                    self.path.display()
                );
            }
        }
        Ok(())
    }

    /// Events matching `q`, oldest first (the newest `limit` of them).
    pub fn query(&self, q: &Query) -> Result<Vec<HistoryRow>, HistoryError> {
        let mut sql = String::from(
            "SELECT id, kind, source, sequence, last_sequence, category, keyword, severity, event_code, device_index, timestamp_ns, detail, recorded_at_ms FROM events WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = q.since_ms {
            sql.push_str(" AND recorded_at_ms >= ?");
            args.push(s.into());
        }
        if let Some(c) = &q.category {
            sql.push_str(" AND category = ?");
            args.push(c.clone().into());
        }
        if let Some(k) = &q.keyword {
            sql.push_str(" AND keyword = ?");
            args.push(k.clone().into());
        }
        let newest_first = q.after_id.is_none();
        if let Some(a) = q.after_id {
            sql.push_str(" AND id > ? ORDER BY id ASC LIMIT ?");
            args.push(a.into());
        } else {
            sql.push_str(" ORDER BY id DESC LIMIT ?");
        }
        args.push((q.limit.min(i64::MAX as usize) as i64).into());
        let mut st = self.conn.prepare(&sql).map_err(HistoryError::Query)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(HistoryRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    source: r.get(2)?,
                    sequence: r.get::<_, i64>(3)? as u64,
                    last_sequence: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                    category: r.get(5)?,
                    keyword: r.get(6)?,
                    severity: r.get(7)?,
                    event_code: r.get::<_, i64>(8)? as u32,
                    device_index: r.get::<_, i64>(9)? as u32,
                    timestamp_ns: r.get::<_, i64>(10)? as u64,
                    detail: r.get(11)?,
                    recorded_at_ms: r.get(12)?,
                })
            })
            .map_err(HistoryError::Query)?;
        let mut out: Vec<HistoryRow> = rows
            .collect::<Result<_, _>>()
            .map_err(HistoryError::Query)?;
        if newest_first {
            out.reverse();
        }
        Ok(out)
    }

    /// Activity-log entries of `monitor` (all monitors when `None`), newest `limit`, oldest first.
    pub fn activity(
        &self,
        monitor: Option<&str>,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityEntry>, HistoryError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, time_ms, severity, monitor, kind, message, exit_code, stdout, stderr FROM activity
                 WHERE (?1 IS NULL OR monitor = ?1) AND (?2 IS NULL OR time_ms >= ?2) ORDER BY id DESC LIMIT ?3",
            )
            .map_err(HistoryError::Query)?;
        let rows = st
            .query_map(params![monitor, since_ms, limit as i64], |r| {
                let sev: String = r.get(2)?;
                Ok(ActivityEntry {
                    id: r.get::<_, i64>(0)? as u64,
                    time_ms: r.get::<_, i64>(1)? as u64,
                    severity: match sev.as_str() {
                        "Success" => crate::activity::ActivitySeverity::Success,
                        "Warning" => crate::activity::ActivitySeverity::Warning,
                        "Error" => crate::activity::ActivitySeverity::Error,
                        _ => crate::activity::ActivitySeverity::Information,
                    },
                    monitor: r.get(3)?,
                    kind: r.get(4)?,
                    message: r.get(5)?,
                    exit_code: r.get(6)?,
                    stdout: r.get(7)?,
                    stderr: r.get(8)?,
                })
            })
            .map_err(HistoryError::Query)?;
        let mut out: Vec<ActivityEntry> = rows
            .collect::<Result<_, _>>()
            .map_err(HistoryError::Query)?;
        out.reverse();
        Ok(out)
    }

    /// The last recorded sequence per (source, driver_id).
    pub fn cursors(&self) -> Result<Vec<(String, u32, u64)>, HistoryError> {
        let mut st = self
            .conn
            .prepare("SELECT source, driver_id, last_sequence FROM cursors")
            .map_err(HistoryError::Query)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u32,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(HistoryError::Query)?;
        rows.collect::<Result<_, _>>().map_err(HistoryError::Query)
    }

    /// Each monitor's state as last recorded.
    pub fn monitor_states(&self) -> Result<Vec<SavedMonitor>, HistoryError> {
        let mut st = self
            .conn
            .prepare("SELECT name, state, error_count, last_sequence FROM monitor_state")
            .map_err(HistoryError::Query)?;
        let rows = st
            .query_map([], |r| {
                let s: String = r.get(1)?;
                Ok(SavedMonitor {
                    name: r.get(0)?,
                    state: if s == "Error" {
                        MonitorState::Error
                    } else {
                        MonitorState::Normal
                    },
                    error_count: r.get::<_, i64>(2)? as u64,
                    last_sequence: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(HistoryError::Query)?;
        rows.collect::<Result<_, _>>().map_err(HistoryError::Query)
    }

    /// Rows in the events table.
    pub fn count(&self) -> Result<u64, HistoryError> {
        self.conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(HistoryError::Query)
    }

    /// Removes at most one chunk of rows beyond the retention limits.
    /// Returns the rows removed.
    pub fn enforce(&self, r: &Retention) -> Result<u64, HistoryError> {
        let mut removed = 0;
        if let Some(max) = r.max_rows {
            let cut: Option<i64> = self
                .conn
                .query_row(
                    "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?",
                    [max as i64],
                    |row| row.get(0),
                )
                .optional()
                .map_err(HistoryError::Query)?;
            if let Some(cut) = cut {
                removed += self
                    .conn
                    .execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? ORDER BY id LIMIT ?)",
                        params![cut, RETENTION_CHUNK],
                    )
                    .map_err(HistoryError::Query)? as u64;
            }
        }
        if let Some(age) = r.max_age {
            let horizon = now_ms() - age.as_millis() as i64;
            removed += self
                .conn
                .execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE recorded_at_ms < ? ORDER BY id LIMIT ?)",
                    params![horizon, RETENTION_CHUNK],
                )
                .map_err(HistoryError::Query)? as u64;
            removed += self
                .conn
                .execute(
                    "DELETE FROM activity WHERE id IN (SELECT id FROM activity WHERE time_ms < ? ORDER BY id LIMIT ?)",
                    params![horizon, RETENTION_CHUNK],
                )
                .map_err(HistoryError::Query)? as u64;
        }
        Ok(removed)
    }
}

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
        committed: std::collections::BTreeMap::new(),
        unwritten: Vec::new(),
        resync_monitors: false,
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
    committed: std::collections::BTreeMap<(String, u32), u64>,
    /// Records of batches that could not be written (per source: first and
    /// last sequence, count), recorded as `lost` rows by the next write.
    unwritten: Vec<(&'static str, u64, u64, u64)>,
    /// A batch of monitor changes was not written: the next write records
    /// every monitor's state.
    resync_monitors: bool,
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
        let mut cursors: Vec<((&'static str, u32), u64)> = Vec::new();
        {
            // Rows go in ROWS_PER_INSERT at a time (one statement, bound in
            // place without allocating), the remainder one by one.
            let mut many = tx.prepare_cached(&MULTI_INSERT)?;
            let mut one = tx.prepare_cached(&SINGLE_INSERT)?;
            for ev in events {
                match ev {
                    Event::Fault(f) if !f.is_snapshot() => {
                        let key = (f.source().name(), f.driver_id());
                        match cursors.iter_mut().find(|c| c.0 == key) {
                            Some(c) => c.1 = f.sequence(),
                            None => cursors.push((key, f.sequence())),
                        }
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
            let mut cur = tx.prepare_cached(
                "INSERT INTO cursors (source, driver_id, last_sequence) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source, driver_id) DO UPDATE SET last_sequence = excluded.last_sequence",
            )?;
            for ((source, driver), seq) in &cursors {
                cur.execute(params![source, driver, *seq as i64])?;
            }
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
        self.unwritten.clear();
        self.resync_monitors = false;
        self.stats.rows.fetch_add(events.len() as u64, Relaxed);
        self.stats.batches.fetch_add(1, Relaxed);
        for ((source, driver), seq) in cursors {
            self.committed.insert((source.to_string(), driver), seq);
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
        for ((source, driver), seq) in &self.committed {
            eprintln!(
                "faultbridge: history: committed {source} driver {driver} through sequence {seq}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(db: &HistoryDb, seq: i64, at_ms: i64) {
        db.conn
            .execute(
                "INSERT INTO events (kind, source, sequence, recorded_at_ms) VALUES ('fault', 'expdrv', ?1, ?2)",
                params![seq, at_ms],
            )
            .unwrap();
    }

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
            committed: std::collections::BTreeMap::new(),
            unwritten: Vec::new(),
            resync_monitors: false,
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

    #[test]
    fn retention_by_age_and_by_count_removes_the_oldest_in_chunks() {
        let dir = std::env::temp_dir().join(format!("fb-history-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = HistoryDb::open(&dir.join("h.db")).unwrap();
        let now = now_ms();
        for s in 1..=100 {
            insert(&db, s, now - 3_600_000); // an hour old
        }
        for s in 101..=110 {
            insert(&db, s, now);
        }
        let by_age = Retention {
            max_age: Some(Duration::from_secs(600)),
            max_rows: None,
        };
        assert_eq!(db.enforce(&by_age).unwrap(), 100);
        assert_eq!(db.count().unwrap(), 10);
        let by_count = Retention {
            max_age: None,
            max_rows: Some(4),
        };
        assert_eq!(db.enforce(&by_count).unwrap(), 6);
        let left: Vec<u64> = db
            .query(&Query {
                limit: 10,
                ..Query::default()
            })
            .unwrap()
            .iter()
            .map(|r| r.sequence)
            .collect();
        assert_eq!(left, vec![107, 108, 109, 110]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

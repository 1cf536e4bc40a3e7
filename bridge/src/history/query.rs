//! Reading the history back: events for `faultbridge history` and
//! `History`, the activity log, and what a restart restores (cursors and
//! monitor states).

use super::{HistoryDb, HistoryError};
use crate::activity::ActivityEntry;
use crate::monitor::SavedMonitor;
use faultbridge_bus::MonitorState;
use rusqlite::params;
use serde::Serialize;

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub id: i64,
    /// `fault`, `clear` or `lost`.
    pub kind: String,
    pub source: String,
    pub driver_id: u32,
    /// For `lost`: the first missing sequence.
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

impl HistoryRow {
    /// The columns `from_sql` reads, in its order.
    pub(crate) const COLUMNS: &'static str = "id, kind, source, driver_id, sequence, last_sequence, category, keyword, severity, event_code, device_index, timestamp_ns, detail, recorded_at_ms";

    /// The row `r` of a `SELECT` of `COLUMNS`.
    pub(crate) fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryRow> {
        Ok(HistoryRow {
            id: r.get(0)?,
            kind: r.get(1)?,
            source: r.get(2)?,
            driver_id: r.get::<_, i64>(3)? as u32,
            sequence: r.get::<_, i64>(4)? as u64,
            last_sequence: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
            category: r.get(6)?,
            keyword: r.get(7)?,
            severity: r.get(8)?,
            event_code: r.get::<_, i64>(9)? as u32,
            device_index: r.get::<_, i64>(10)? as u32,
            timestamp_ns: r.get::<_, i64>(11)? as u64,
            detail: r.get(12)?,
            recorded_at_ms: r.get(13)?,
        })
    }
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

impl HistoryDb {
    /// Events matching `q`, oldest first (the newest `limit` of them).
    pub fn query(&self, q: &Query) -> Result<Vec<HistoryRow>, HistoryError> {
        let mut sql = format!("SELECT {} FROM events WHERE 1=1", HistoryRow::COLUMNS);
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
            .query_map(rusqlite::params_from_iter(args), HistoryRow::from_sql)
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
                        "Pending" => crate::activity::ActivitySeverity::Pending,
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
                    state: MonitorState::from_name(&s).unwrap_or(MonitorState::Normal),
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
}

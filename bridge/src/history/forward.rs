//! What a forwarder reads from the history database: the rows after its
//! cursor, in the order they were recorded, and the cursor itself (the id
//! of the last row the other end acknowledged), kept in `forward_cursor`
//! so that forwarding resumes there after a restart.

use super::{HistoryDb, HistoryError, HistoryRow, now_ms};
use rusqlite::{OptionalExtension, params};

impl HistoryDb {
    /// Rows with an id above `after`, oldest first, at most `limit`.
    pub fn forward_rows(&self, after: i64, limit: usize) -> Result<Vec<HistoryRow>, HistoryError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
                HistoryRow::COLUMNS
            ))
            .map_err(HistoryError::Query)?;
        let rows = st
            .query_map(
                params![after, limit.min(i64::MAX as usize) as i64],
                HistoryRow::from_sql,
            )
            .map_err(HistoryError::Query)?;
        rows.collect::<Result<_, _>>().map_err(HistoryError::Query)
    }

    /// The highest row id (0 when the table is empty).
    pub fn last_id(&self) -> Result<i64, HistoryError> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
            .map_err(HistoryError::Query)
    }

    /// Rows with an id above `after`.
    pub fn count_after(&self, after: i64) -> Result<u64, HistoryError> {
        self.conn
            .prepare_cached("SELECT count(*) FROM events WHERE id > ?1")
            .and_then(|mut st| st.query_row([after], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(HistoryError::Query)
    }

    /// The cursor of forwarder `name`; `None` when it never ran.
    pub fn forward_cursor(&self, name: &str) -> Result<Option<i64>, HistoryError> {
        self.conn
            .query_row(
                "SELECT last_id FROM forward_cursor WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(HistoryError::Query)
    }

    /// The lowest row id (0 when the table is empty).
    pub fn first_id(&self) -> Result<i64, HistoryError> {
        self.conn
            .query_row("SELECT coalesce(min(id), 0) FROM events", [], |r| r.get(0))
            .map_err(HistoryError::Query)
    }

    /// Stores the cursor of forwarder `name`. It only moves forward: two
    /// forwarders on one database (the two sides of a live upgrade, for
    /// the moment both run) never take it back to rows already sent.
    pub fn save_forward_cursor(&self, name: &str, last_id: i64) -> Result<(), HistoryError> {
        self.conn
            .prepare_cached(
                "INSERT INTO forward_cursor (name, last_id, updated_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET last_id = max(last_id, excluded.last_id), updated_at_ms = excluded.updated_at_ms",
            )
            .and_then(|mut st| st.execute(params![name, last_id, now_ms()]))
            .map(drop)
            .map_err(HistoryError::Query)
    }
}

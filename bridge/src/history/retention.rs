//! Retention: rows older than `max_age` and beyond `max_rows` are removed
//! a small chunk at a time, between batches, so removal never stalls writing.

use super::{HistoryDb, HistoryError, Retention, now_ms};
use rusqlite::{OptionalExtension, params};

/// Rows removed per retention step at most.
const RETENTION_CHUNK: i64 = 5000;

impl HistoryDb {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Query;
    use std::time::Duration;

    fn insert(db: &HistoryDb, seq: i64, at_ms: i64) {
        db.conn
            .execute(
                "INSERT INTO events (kind, source, sequence, recorded_at_ms) VALUES ('fault', 'expdrv', ?1, ?2)",
                params![seq, at_ms],
            )
            .unwrap();
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

//! The tables of each schema version (`PRAGMA user_version`) and the
//! migrations between them, run at start-up in one transaction each.

use super::{HistoryDb, HistoryError};
use rusqlite::Connection;
use std::path::Path;

/// The schema this build writes.
pub const SCHEMA_VERSION: i32 = 3;

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

/// Version 3: where each forwarder is in the `events` table (the id of
/// the last row the stream acknowledged), so forwarding resumes there
/// after a restart.
const MIGRATE_2_TO_3: &str = "
CREATE TABLE forward_cursor (
    name TEXT PRIMARY KEY,              -- nats:<stream>
    last_id INTEGER NOT NULL,           -- events.id acknowledged last
    updated_at_ms INTEGER NOT NULL
);
PRAGMA user_version = 3;
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

impl HistoryDb {
    /// Brings the database to [`SCHEMA_VERSION`]; a newer one is refused.
    pub(super) fn migrate(&mut self) -> Result<(), HistoryError> {
        let mut v = self.version()?;
        if v > SCHEMA_VERSION {
            return Err(HistoryError::TooNew {
                path: self.path.clone(),
                found: v,
            });
        }
        while v < SCHEMA_VERSION {
            let step = match v {
                0 => format!("{SCHEMA_V1}{MIGRATE_1_TO_2}{MIGRATE_2_TO_3}"),
                1 => MIGRATE_1_TO_2.to_string(),
                2 => MIGRATE_2_TO_3.to_string(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_v2_database_gains_the_forward_cursor_and_keeps_its_rows() {
        let dir = std::env::temp_dir().join(format!("fb-schema-v2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.db");
        {
            let conn = create_v1(&path).unwrap();
            conn.execute_batch(MIGRATE_1_TO_2).unwrap();
            conn.execute(
                "INSERT INTO events (kind, source, driver_id, sequence, category, keyword, severity, recorded_at_ms)
                 VALUES ('fault', 'expdrv', 1, 5, 'NIC', 'eth0', 'fatal', 1)",
                [],
            )
            .unwrap();
        }
        let db = HistoryDb::open(&path).unwrap();
        assert_eq!(db.version().unwrap(), 3);
        assert_eq!(
            db.forward_cursor("nats:FAULTBRIDGE").unwrap(),
            None,
            "no cursor yet"
        );
        let rows = db.forward_rows(0, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].driver_id, rows[0].sequence), (1, 5));
        db.save_forward_cursor("nats:FAULTBRIDGE", rows[0].id)
            .unwrap();
        drop(db);
        let db = HistoryDb::open(&path).unwrap();
        assert_eq!(
            db.forward_cursor("nats:FAULTBRIDGE").unwrap(),
            Some(rows[0].id),
            "kept across a reopen"
        );
        // A second forwarder behind the first (the other side of a live
        // upgrade) never takes the cursor back.
        db.save_forward_cursor("nats:FAULTBRIDGE", rows[0].id - 1)
            .unwrap();
        assert_eq!(
            db.forward_cursor("nats:FAULTBRIDGE").unwrap(),
            Some(rows[0].id),
            "the cursor only moves forward"
        );
        db.save_forward_cursor("nats:FAULTBRIDGE", rows[0].id + 7)
            .unwrap();
        assert_eq!(
            db.forward_cursor("nats:FAULTBRIDGE").unwrap(),
            Some(rows[0].id + 7)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The last recorded sequence per (source, driver id), so a restart reports
//! a gap across it. Driver ids come from outside (any record names one), so
//! the table is bounded: per source, only the [`MAX_STORED_CURSORS`] most
//! recently written are kept and restored, the same bound as the sequence
//! tracker's in memory. Older rows are pruned a chunk at a time between
//! batches, so neither start-up nor a write grows with their number.
//!
//! Recency is the row id: a cursor is written with `INSERT OR REPLACE`,
//! which gives its row a new id, the highest.

use super::{HistoryDb, HistoryError};
use faultbridge_bus::Source;
use rusqlite::{Transaction, params};
use std::collections::{BTreeMap, HashMap};

/// The cursors kept per source: as many driver ids as the sequence tracker
/// keeps in memory (1024).
pub const MAX_STORED_CURSORS: usize = 1024;

/// Rows removed per source and pruning step at most.
const PRUNE_CHUNK: i64 = 50_000;

/// Lines of one "committed" report at most; further driver ids are counted.
const REPORT_LINES: usize = 16;

impl HistoryDb {
    /// The last recorded sequence per (source, driver id): per source the
    /// [`MAX_STORED_CURSORS`] most recently written, newest first.
    pub fn cursors(&self) -> Result<Vec<(String, u32, u64)>, HistoryError> {
        let mut any = self
            .conn
            .prepare_cached("SELECT 1 FROM cursors WHERE source = ?1 LIMIT 1")
            .map_err(HistoryError::Query)?;
        // `+source`: walk the table from the newest row id, not the
        // primary key's order.
        let mut newest = self
            .conn
            .prepare_cached(
                "SELECT driver_id, last_sequence FROM cursors WHERE +source = ?1 ORDER BY rowid DESC LIMIT ?2",
            )
            .map_err(HistoryError::Query)?;
        let mut out = Vec::new();
        for source in Source::ALL.map(Source::name) {
            if !any.exists([source]).map_err(HistoryError::Query)? {
                continue;
            }
            let rows = newest
                .query_map(params![source, MAX_STORED_CURSORS as i64], |r| {
                    Ok((
                        source.to_string(),
                        r.get::<_, i64>(0)? as u32,
                        r.get::<_, i64>(1)? as u64,
                    ))
                })
                .map_err(HistoryError::Query)?;
            for row in rows {
                out.push(row.map_err(HistoryError::Query)?);
            }
        }
        Ok(out)
    }

    /// Removes at most one chunk per source of cursors beyond
    /// [`MAX_STORED_CURSORS`], the oldest written first. Returns the rows
    /// removed.
    pub fn prune_cursors(&self) -> Result<u64, HistoryError> {
        let mut prune = self
            .conn
            .prepare_cached(
                "DELETE FROM cursors WHERE rowid IN
                 (SELECT rowid FROM cursors WHERE +source = ?1 ORDER BY rowid DESC LIMIT ?2 OFFSET ?3)",
            )
            .map_err(HistoryError::Query)?;
        let mut removed = 0;
        for source in Source::ALL.map(Source::name) {
            removed += prune
                .execute(params![source, PRUNE_CHUNK, MAX_STORED_CURSORS as i64])
                .map_err(HistoryError::Query)? as u64;
        }
        Ok(removed)
    }
}

/// The cursors one batch moves: each (source, driver id) once, at its last
/// sequence in the batch, in the order first seen.
#[derive(Debug, Default)]
pub(super) struct BatchCursors {
    order: Vec<((&'static str, u32), u64)>,
    index: HashMap<(&'static str, u32), usize>,
}

impl BatchCursors {
    pub fn clear(&mut self) {
        self.order.clear();
        self.index.clear();
    }

    pub fn note(&mut self, source: &'static str, driver_id: u32, sequence: u64) {
        let key = (source, driver_id);
        match self.index.get(&key) {
            Some(&i) => self.order[i].1 = sequence,
            None => {
                self.index.insert(key, self.order.len());
                self.order.push((key, sequence));
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32, u64)> + '_ {
        self.order.iter().map(|&((s, d), q)| (s, d, q))
    }

    /// Writes them (each row becomes the newest of its source).
    pub fn save(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let mut st = tx.prepare_cached(
            "INSERT OR REPLACE INTO cursors (source, driver_id, last_sequence) VALUES (?1, ?2, ?3)",
        )?;
        for (source, driver, seq) in self.iter() {
            st.execute(params![source, driver, seq as i64])?;
        }
        Ok(())
    }
}

/// What was committed since the last report: a few cursors by name, the
/// rest counted, so a flood of driver ids cannot flood the log.
#[derive(Debug, Default)]
pub(super) struct Committed {
    shown: BTreeMap<(&'static str, u32), u64>,
    more: u64,
}

impl Committed {
    pub fn note(&mut self, source: &'static str, driver_id: u32, sequence: u64) {
        let key = (source, driver_id);
        if self.shown.len() < REPORT_LINES || self.shown.contains_key(&key) {
            self.shown.insert(key, sequence);
        } else {
            self.more += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }

    /// The report's lines; empties it.
    pub fn take_lines(&mut self) -> Vec<String> {
        let mut lines: Vec<String> = std::mem::take(&mut self.shown)
            .into_iter()
            .map(|((source, driver), seq)| {
                format!(
                    "faultbridge: history: committed {source} driver {driver} through sequence {seq}"
                )
            })
            .collect();
        if self.more > 0 {
            lines.push(format!(
                "faultbridge: history: committed {} more cursor update(s) of other driver ids",
                std::mem::take(&mut self.more)
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(tag: &str) -> (std::path::PathBuf, HistoryDb) {
        let dir = std::env::temp_dir().join(format!("fb-cursors-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = HistoryDb::open(&dir.join("h.db")).unwrap();
        (dir, db)
    }

    fn write(db: &mut HistoryDb, batch: &BatchCursors) {
        let tx = db.conn.transaction().unwrap();
        batch.save(&tx).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn the_newest_cursors_per_source_are_restored_and_the_rest_pruned() {
        let (dir, mut db) = db("bound");
        let n = MAX_STORED_CURSORS as u32 + 500;
        let mut batch = BatchCursors::default();
        for d in 1..=n {
            batch.note("expdrv", d, u64::from(d) * 10);
        }
        batch.note("rtnetlink", 0, 7);
        write(&mut db, &batch);
        // Driver 1 written again: now the newest of expdrv.
        batch.clear();
        batch.note("expdrv", 1, 11);
        batch.note("expdrv", 1, 12);
        write(&mut db, &batch);

        let restored = db.cursors().unwrap();
        let expdrv: Vec<(u32, u64)> = restored
            .iter()
            .filter(|c| c.0 == "expdrv")
            .map(|c| (c.1, c.2))
            .collect();
        assert_eq!(expdrv.len(), MAX_STORED_CURSORS);
        assert_eq!(expdrv[0], (1, 12), "newest first, at its last sequence");
        assert_eq!(expdrv[1], (n, u64::from(n) * 10));
        assert!(
            !expdrv.iter().any(|c| c.0 == 2),
            "the oldest is not restored"
        );
        assert!(restored.contains(&("rtnetlink".into(), 0, 7)));

        assert_eq!(db.prune_cursors().unwrap(), 500);
        assert_eq!(db.prune_cursors().unwrap(), 0);
        let count: i64 = db
            .conn
            .query_row("SELECT count(*) FROM cursors", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count as usize, MAX_STORED_CURSORS + 1);
        assert_eq!(
            db.cursors().unwrap(),
            restored,
            "pruning kept what is restored"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flood_of_driver_ids_is_reported_in_a_few_lines() {
        let mut c = Committed::default();
        for d in 0..100_000 {
            c.note("expdrv", d, 1);
        }
        c.note("expdrv", 3, 9);
        let lines = c.take_lines();
        assert_eq!(lines.len(), REPORT_LINES + 1);
        assert!(lines.contains(
            &"faultbridge: history: committed expdrv driver 3 through sequence 9".to_string()
        ));
        assert!(lines[REPORT_LINES].contains(&format!("{} more", 100_000 - REPORT_LINES)));
        assert!(c.is_empty() && c.take_lines().is_empty());
    }
}

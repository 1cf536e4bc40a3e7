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
//!
//! - [`schema`]: the tables of each schema version and the migrations;
//! - [`query`]: what the CLI, D-Bus and a restart read back;
//! - [`cursors`]: the last sequence per driver, bounded and pruned;
//! - [`forward`]: the rows a forwarder sends and its cursor;
//! - [`retention`]: removing rows beyond `max_age` and `max_rows`;
//! - [`writer`]: the subscriber thread that writes batches.

mod cursors;
mod forward;
mod query;
mod retention;
mod schema;
mod writer;

pub use cursors::MAX_STORED_CURSORS;
pub use query::{HistoryRow, Query};
pub use schema::{SCHEMA_VERSION, create_v1};
pub use writer::{HistoryStats, WriterInputs, run_writer};

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error("history database {path}: cannot open")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("history database {path}: cannot create its directory{hint}")]
    CreateDir {
        path: PathBuf,
        /// What to do about it (empty when there is nothing to say).
        hint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("history database {path}: cannot create the file{hint}")]
    CreateFile {
        path: PathBuf,
        hint: String,
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

/// An open history database.
#[derive(Debug)]
pub struct HistoryDb {
    conn: Connection,
    path: PathBuf,
}

impl HistoryDb {
    /// Opens (creating it and its directory if needed) and migrates.
    /// A directory it creates is 0700 and a database file 0600 (SQLite gives
    /// the `-wal` and `-shm` files the database file's mode), whatever the
    /// umask: fault details are nobody else's business.
    pub fn open(path: &Path) -> Result<HistoryDb, HistoryError> {
        create_private(path)?;
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
}

/// Creates the directories leading to `path` (0700) and an empty `path`
/// (0600) when they do not exist; existing ones are left as they are.
fn create_private(path: &Path) -> Result<(), HistoryError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| HistoryError::CreateDir {
                path: dir.to_path_buf(),
                hint: permission_hint(&source, dir),
                source,
            })?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(HistoryError::CreateFile {
            path: path.to_path_buf(),
            hint: permission_hint(&source, path.parent().unwrap_or(Path::new("."))),
            source,
        }),
    }
}

/// What to do when this user may not create `dir` (or a file in it): the
/// packages and systemd's `StateDirectory=` create the state directory for
/// the service user; started by hand, someone with the right must.
fn permission_hint(e: &std::io::Error, dir: &Path) -> String {
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return String::new();
    }
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    format!(
        " as user {user}: create it for that user first, e.g. as root `install -d -m 0700 -o {user} {}` (the packages and systemd's StateDirectory= do this for the service), or set [history] path to a place {user} may write",
        dir.display()
    )
}

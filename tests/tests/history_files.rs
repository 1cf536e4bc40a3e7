//! The history database as the daemon leaves it on disk: private files, and
//! a start-up whose time does not grow with what the database holds.
#![allow(clippy::unwrap_used)]

use faultbridge::history::{HistoryDb, MAX_STORED_CURSORS};
use faultbridge_tests::{Daemon, TempDir, binary, private_netns};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn history_files_are_private_whatever_the_umask() {
    private_netns();
    let dir = TempDir::new("history-modes");
    let state = dir.path().join("state/faultbridge");
    let db = state.join("history.db");
    let cfg = dir.write(
        "c.toml",
        &format!("bus = \"none\"\n[history]\npath = \"{}\"\n", db.display()),
    );
    // umask 0: every mode below comes from the daemon, not from the umask.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "umask 0; exec \"$0\" run --print json --config \"$1\"",
        ])
        .arg(binary())
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"ready\""), "not ready: {first}");
    let modes: Vec<(String, u32)> = [
        state.clone(),
        db.clone(),
        state.join("history.db-wal"),
        state.join("history.db-shm"),
    ]
    .iter()
    .map(|p| {
        (
            p.file_name().unwrap().to_string_lossy().into_owned(),
            mode(p),
        )
    })
    .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        modes,
        [
            ("faultbridge".to_string(), 0o700),
            ("history.db".to_string(), 0o600),
            ("history.db-wal".to_string(), 0o600),
            ("history.db-shm".to_string(), 0o600),
        ]
    );
    // Created by the daemon, the parent directory too (0700).
    assert_eq!(mode(&dir.path().join("state")), 0o700);
}

#[test]
fn start_up_does_not_grow_with_stored_cursors_or_history() {
    private_netns();
    let dir = TempDir::new("history-startup");
    let path = dir.path().join("history.db");
    drop(HistoryDb::open(&path).unwrap());
    let fill = Instant::now();
    // What an earlier version left after a flood of driver ids: 500 000
    // stored cursors, and 100 000 events.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500000)
           INSERT INTO cursors (source, driver_id, last_sequence) SELECT 'expdrv', i, i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
           INSERT INTO events (kind, source, driver_id, sequence, category, keyword, severity, recorded_at_ms)
           SELECT 'fault', 'expdrv', i, 1, 'NIC', 'eth0', 'error', 0 FROM n;
         COMMIT;",
    )
    .unwrap();
    drop(conn);
    eprintln!("filled in {:?}", fill.elapsed());

    let t = Instant::now();
    let d = Daemon::start(&format!(
        "bus = \"none\"\n[history]\npath = \"{}\"\n",
        path.display()
    ));
    let took = t.elapsed();
    eprintln!("ready in {took:?}");
    // 94 s before cursors were bounded; a few seconds on a loaded machine now.
    assert!(
        took < Duration::from_secs(10),
        "start-up took {took:?} with 500 000 stored cursors"
    );
    // The writer prunes the old cursors in the background, a chunk at a
    // time, oldest first (all the way down to the bound is a unit test).
    let deadline = Instant::now() + Duration::from_secs(30);
    let count = loop {
        let n: i64 = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM cursors", [], |r| r.get(0))
            .unwrap();
        if n < 500_000 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("first prune step after {:?}", t.elapsed());
    d.stop();
    assert!(count < 500_000, "stored cursors are not being pruned");
    // The newest ones stay, and a restart restores them at once.
    let kept = HistoryDb::open(&path).unwrap().cursors().unwrap();
    assert_eq!(kept.len(), MAX_STORED_CURSORS);
    assert_eq!(kept[0], ("expdrv".to_string(), 500_000, 500_000));
    assert!(
        kept.iter()
            .all(|c| c.1 > 500_000 - MAX_STORED_CURSORS as u32)
    );
}

//! Fault history on SQLite: crash safety across SIGKILL, restart continuity
//! (the gap across the kill reported as lost, latched monitors restored
//! without re-running their action), schema migration, retention while
//! writing, and the `history` command.
#![allow(clippy::unwrap_used)]

use faultbridge::history::{HistoryDb, HistoryError, Query, SCHEMA_VERSION};
use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Bridge, Config, Event, SubscribeOptions};
use faultbridge_ffi::wire::record::Category;
use faultbridge_tests::{Daemon, TempDir, binary, faultbridge, private_netns};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn config(dir: &TempDir, action: &std::path::Path) -> String {
    format!(
        r#"bus = "none"
[sources.expdrv]
accept = "root"
netlink_protocol = 2
netlink_group = 1
recv_buffer = 33554432
[history]
path = "{}/state/history.db"
[[monitor]]
name = "latched"
category = "FC"
keyword = "host9"
adapter = "exec"
command = "{}"
"#,
        dir.path().display(),
        action.display()
    )
}

fn last_committed(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("faultbridge: history: committed expdrv driver 1 through sequence ")
        })
        .filter_map(|n| n.trim().parse().ok())
        .max()
}

#[test]
fn sigkill_mid_stream_loses_nothing_committed_and_the_restart_reports_the_gap() {
    private_netns();
    let dir = TempDir::new("crash");
    let ran = dir.path().join("action-ran");
    let action = dir.write(
        "action",
        &format!("#!/bin/sh\necho ran >> {}\n", ran.display()),
    );
    std::fs::set_permissions(&action, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = config(&dir, &action);

    let d = Daemon::start(&cfg);
    // trip the monitor, then flood
    faultbridge(&["sim", "send", "-k", "FC.host9"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&ran).is_err() {
        assert!(Instant::now() < deadline, "the action never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let total: u64 = 150_000;
    let mut flood = std::process::Command::new(binary())
        .args([
            "sim",
            "flood",
            "--rate",
            "50000",
            "--seq",
            "2",
            "--count",
            &total.to_string(),
            "-k",
            "NIC.eth0",
            "-k",
            "NIC.eth1",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait for two commit reports, then kill without warning
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = d.stderr().matches("committed expdrv").count();
        if n >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no commit reports:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut d = d;
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let reported = last_committed(&d.stderr()).unwrap();
    drop(d);
    assert!(flood.wait().unwrap().success());

    // The database opens cleanly; everything reported committed is there once.
    let db_path = dir.path().join("state/history.db");
    {
        let db = HistoryDb::open(&db_path).unwrap();
        let rows = db
            .query(&Query {
                limit: usize::MAX,
                ..Query::default()
            })
            .unwrap();
        let mut seen = vec![0u32; total as usize + 2];
        let mut lost = vec![false; total as usize + 2];
        for r in &rows {
            if r.kind == "lost" {
                for s in r.sequence..=r.last_sequence.unwrap() {
                    lost[s as usize] = true;
                }
            } else {
                seen[r.sequence as usize] += 1;
            }
        }
        for s in 1..=reported {
            assert!(
                seen[s as usize] == 1 || (seen[s as usize] == 0 && lost[s as usize]),
                "sequence {s} (≤ committed {reported}) recorded {} times",
                seen[s as usize]
            );
        }
        assert!(seen.iter().all(|&n| n <= 1), "a record is recorded twice");
    }

    // Restart: the latched monitor is back, its action not run again, and
    // the next record shows the gap across the kill.
    let mut d = Daemon::start(&cfg);
    let cursor = HistoryDb::open(&db_path)
        .unwrap()
        .cursors()
        .unwrap()
        .into_iter()
        .find(|c| c.0 == "expdrv")
        .unwrap()
        .2;
    assert!(cursor >= reported);
    let next = total + 2;
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--seq", &next.to_string()]);
    let got = d.until(Duration::from_secs(10), |v| v["sequence"] == next);
    let lost: Vec<_> = got.iter().filter(|v| v["type"] == "lost").collect();
    if cursor + 1 < next {
        assert_eq!(lost.len(), 1, "{got:?}");
        assert_eq!(lost[0]["first_sequence"], cursor + 1);
        assert_eq!(lost[0]["last_sequence"], next - 1);
    } else {
        assert!(lost.is_empty());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.stderr().contains("Error restored from history") {
        assert!(
            Instant::now() < deadline,
            "monitor state not restored:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        "ran\n",
        "the recovery action ran again"
    );
    let stats = d.stop();
    assert_eq!(stats["type"], "stats");
}

#[test]
fn a_schema_v1_database_is_migrated_and_a_newer_one_refused() {
    let dir = TempDir::new("migrate");
    let path = dir.path().join("old.db");
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/history-v1.sql"
    ))
    .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&fixture)
        .unwrap();
    let db = HistoryDb::open(&path).unwrap();
    assert_eq!(db.version().unwrap(), SCHEMA_VERSION);
    let rows = db
        .query(&Query {
            limit: 10,
            ..Query::default()
        })
        .unwrap();
    let got: Vec<(String, u64, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.kind.clone(),
                r.sequence,
                r.category.clone(),
                r.keyword.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("fault".into(), 41, "NIC".into(), "eth0".into()),
            ("fault".into(), 42, "FC".into(), "host3".into()),
            ("clear".into(), 43, "NIC".into(), "eth0".into()),
        ]
    );
    assert_eq!(rows[0].detail, vec![1, 2]);
    assert_eq!(db.cursors().unwrap(), vec![("expdrv".to_string(), 0, 43)]);
    drop(db);

    let newer = dir.path().join("newer.db");
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7;")
        .unwrap();
    match HistoryDb::open(&newer) {
        Err(e @ HistoryError::TooNew { found: 7, .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "schema version 7, newer than the {SCHEMA_VERSION}"
                )),
                "{msg}"
            );
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    // and the daemon refuses to start on it, saying why
    let cfg = dir.write(
        "f.toml",
        &format!(
            "bus = \"none\"\n[sources.expdrv]\nenabled = false\n[history]\npath = \"{}\"\n",
            newer.display()
        ),
    );
    let out = std::process::Command::new(binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("newer than the {SCHEMA_VERSION}"))
    );
}

#[test]
fn retention_removes_rows_beyond_the_limits_while_writes_continue() {
    private_netns();
    let dir = TempDir::new("retention");
    let db_path = dir.path().join("h.db");
    let text = format!(
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_group = 1\nrecv_buffer = 33554432\n[history]\npath = \"{}\"\nmax_rows = 1000\n",
        db_path.display()
    );
    let cfg = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    let bridge = Bridge::start(&cfg).unwrap();
    let sub = bridge
        .subscribe(SubscribeOptions::new("check").capacity(1 << 16))
        .unwrap();
    let mut sim = Simulator::new(2, 1).unwrap();
    let n = 30_000u64;
    sim.flood(&[FaultSpec::new(Category::Nic, "eth0")], n, 100_000, 32)
        .unwrap();
    let mut got = 0;
    while got < n {
        match sub.recv_timeout(Duration::from_secs(30)).unwrap() {
            Event::Fault(_) => got += 1,
            Event::Lost(l) => panic!("lost {l:?}"),
        }
    }
    // Generous: a debug build's writer on a loaded machine takes seconds
    // for 30 000 rows and their removal; only a failure waits this long.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let db = HistoryDb::open_read_only(&db_path).unwrap();
        let count = db.count().unwrap();
        let newest = db
            .query(&Query {
                limit: 1,
                ..Query::default()
            })
            .unwrap();
        if count <= 1000 && newest.first().is_some_and(|r| r.sequence == n) {
            let oldest = db
                .query(&Query {
                    after_id: Some(0),
                    limit: 1,
                    ..Query::default()
                })
                .unwrap();
            assert!(
                oldest[0].sequence > n - 1001,
                "kept {} rows, oldest {}",
                count,
                oldest[0].sequence
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention never got to 1000 rows: {count}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let hs = bridge.history_stats().unwrap();
    assert!(hs.removed.load(std::sync::atomic::Ordering::Relaxed) >= n - 1000);
    bridge.shutdown();
}

#[test]
fn the_history_command_reads_the_database_while_the_daemon_runs_and_after() {
    private_netns();
    let dir = TempDir::new("histcmd");
    let db = dir.path().join("h.db");
    let cfg = format!(
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_group = 1\n[history]\npath = \"{}\"\n",
        db.display()
    );
    let mut d = Daemon::start(&cfg);
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--detail-hex", "abcd"]);
    faultbridge(&["sim", "send", "-k", "FC.host3", "--seq", "2"]);
    faultbridge(&["sim", "send", "-k", "FC.host3", "--seq", "5", "--clear"]);
    d.until(Duration::from_secs(5), |v| v["sequence"] == 5);
    let dbs = db.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let out = loop {
        let out = faultbridge(&["history", "--db", dbs, "--json"]);
        if out.lines().count() == 4 {
            break out;
        }
        assert!(Instant::now() < deadline, "history while running: {out}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["type"], "fault");
    assert_eq!(rows[0]["keyword"], "eth0");
    assert_eq!(rows[0]["detail"], "abcd");
    assert_eq!(rows[2]["type"], "lost");
    assert_eq!(
        (
            rows[2]["first_sequence"].as_u64(),
            rows[2]["last_sequence"].as_u64()
        ),
        (Some(3), Some(4))
    );
    assert_eq!(rows[3]["type"], "clear");
    d.stop();
    let fc = faultbridge(&["history", "--db", dbs, "--category", "FC", "--since", "1h"]);
    assert_eq!(fc.lines().count(), 3, "{fc}"); // header + 2 rows
    assert!(fc.contains("host3") && !fc.contains("eth0"), "{fc}");
    let none = faultbridge(&[
        "history",
        "--db",
        dbs,
        "--since",
        "2000-01-01 00:00:00",
        "--keyword",
        "eth9",
    ]);
    assert!(none.is_empty(), "{none}");
}

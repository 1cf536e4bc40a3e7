//! `faultbridge history` asks the daemon over D-Bus (`History`, paged), so
//! a user who cannot read the database still gets the faults; `--db FILE`
//! reads the file directly while the daemon is stopped. A `History` reply
//! is bounded by bytes: big details cannot knock the daemon off the bus.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{BusPolicy, as_nobody, client, private_bus, require_real_root};
use faultbridge_tests::{Daemon, TempDir, faultbridge, private_netns, text};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn config(bus: &str, dir: &TempDir) -> String {
    format!(
        r#"bus = "{bus}"
[sources.expdrv]
accept = "root"
netlink_protocol = 2
netlink_group = 1
recv_buffer = 67108864
[history]
path = "{}/state/history.db"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"
"#,
        dir.path().display()
    )
}

fn json_lines(o: &std::process::Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `history --json` over the bus until it shows `n` rows.
fn wait_rows(bus: &str, n: usize, limit: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = json_lines(&client(bus, &["history", "--json", "--limit", limit]));
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "history shows {} rows, not {n}",
            rows.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn history_reaches_a_user_who_cannot_read_the_database_and_the_file_serves_a_stopped_daemon() {
    private_netns();
    require_real_root("running history as nobody");
    let bus = private_bus(BusPolicy::SystemLike);
    let a = bus.address().to_string();
    let dir = TempDir::new("history-bus");
    let daemon = Daemon::start(&config(&a, &dir));
    let state = dir.path().join("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = state.join("history.db");

    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--seq", "1"]);
    faultbridge(&[
        "sim", "send", "-k", "FC.host3", "--seq", "2", "--detail", "abc",
    ]);
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--seq", "3", "--clear"]);
    let rows = wait_rows(&a, 3, "50");
    assert_eq!(rows.len(), 3, "{rows:?}");

    let fb = faultbridge_tests::binary();
    // nobody cannot read the file…
    let out = as_nobody(&fb, &["history", "--db", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // …and gets the faults from the daemon, oldest first.
    let rows = json_lines(&as_nobody(&fb, &["history", "--bus", &a, "--json"]));
    let got: Vec<(&str, &str, &str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap(),
                r["category"].as_str().unwrap(),
                r["keyword"].as_str().unwrap(),
                r["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("fault", "NIC", "eth0", 1),
            ("fault", "FC", "host3", 2),
            ("clear", "NIC", "eth0", 3)
        ]
    );
    assert_eq!(rows[1]["detail"], "616263");
    assert_eq!(rows[0]["source"], "expdrv");
    let out = as_nobody(&fb, &["history", "--bus", &a]);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert_eq!(t.lines().count(), 4, "{t}");
    assert!(t.lines().nth(2).unwrap().contains("host3"), "{t}");
    // The filters and the limit (the newest rows).
    let rows = json_lines(&client(&a, &["history", "--json", "--keyword", "host3"]));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let rows = json_lines(&client(&a, &["history", "--json", "--limit", "1"]));
    assert_eq!((rows.len(), rows[0]["type"].as_str()), (1, Some("clear")));

    // The daemon stopped: the bus has nobody to ask, the file still answers.
    daemon.stop();
    let out = client(&a, &["history"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not running") && err.contains("--db"),
        "{}",
        text(&out)
    );
    let rows = json_lines(
        &std::process::Command::new(&fb)
            .args(["history", "--json", "--db", db.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    let kinds: Vec<&str> = rows.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["fault", "fault", "clear"], "{rows:?}");
}

//! Monitors over D-Bus: a fault trips a monitor whose action runs; the
//! activity log (state change, action start and exit) and the action
//! counters are in `Status()` and `faultbridge status`, and `History`
//! returns the recorded rows.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{BusPolicy, client, daemon_config, private_bus, status};
use faultbridge_tests::{Daemon, TempDir, faultbridge, private_netns};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn activity_and_history_reach_dbus_clients() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address();
    let dir = TempDir::new("dbus-activity");
    let extra = format!(
        "[history]\npath = \"{}/h.db\"\n[[monitor]]\nname = \"mrw-fc\"\ncategory = \"FC\"\nkeyword = \"host2\"\nadapter = \"exec\"\ncommand = \"/bin/sh -c 'echo recovered $FAULTBRIDGE_KEYWORD; exit 3'\"\n",
        dir.path().display()
    );
    let d = Daemon::start(&daemon_config(&bus, &extra));
    faultbridge(&["sim", "send", "-k", "FC.host2", "--detail", "x"]);

    // the action's exit reaches the activity log in Status()
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = status(a);
        let done = st["activity"]
            .as_array()
            .is_some_and(|v| v.iter().any(|e| e[3] == "action-exit"));
        if done {
            break st;
        }
        assert!(Instant::now() < deadline, "no action exit in Status: {st}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let entries = st["activity"].as_array().unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e[3].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"state") && kinds.contains(&"action-start"),
        "{kinds:?}"
    );
    let exit = entries.iter().find(|e| e[3] == "action-exit").unwrap();
    assert_eq!(exit[1], "Error");
    assert_eq!(exit[2], "mrw-fc");
    assert_eq!(exit[5], 3);
    assert_eq!(st["actions"]["started"], 1);
    assert_eq!(st["actions"]["failed"], 1);
    let text = String::from_utf8_lossy(&client(a, &["status"]).stdout).into_owned();
    assert!(text.contains("actions: 1 started"), "{text}");
    assert!(text.contains("action-exit"), "{text}");

    // History(after_sequence, limit) over D-Bus, read by busctl
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("busctl")
            .args([
                &format!("--address={a}"),
                "--json=short",
                "call",
                "org.faultbridge.Bridge1",
                "/org/faultbridge/Bridge1",
                "org.faultbridge.Bridge1",
                "History",
                "tu",
                "0",
                "10",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let rows = v["data"][0].as_array().cloned().unwrap_or_default();
        if let Some(r) = rows.first() {
            assert_eq!(r[1], "expdrv");
            assert_eq!(r[2], "FC");
            assert_eq!(r[3], "host2");
            assert_eq!(r[4], "error");
            assert_eq!(r[5], false);
            assert_eq!(r[7], 1);
            assert_eq!(r[9], serde_json::json!([120]));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "History stayed empty: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
}

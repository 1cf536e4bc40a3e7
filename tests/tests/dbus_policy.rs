//! The shipped policy file (`dist/dbus/org.faultbridge.Bridge1.conf`),
//! included into a private bus with the system bus's default-deny policy:
//! an unprivileged user (`nobody`, no groups) can watch the signals,
//! introspect, read properties and call Status, but gets
//! `org.freedesktop.DBus.Error.AccessDenied` for `Notify` and `Reset` and
//! cannot own `org.faultbridge.Bridge1`; root can do all of it.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{
    BusPolicy, LineReader, as_nobody, client, daemon_config, ensure_service_user, nobody_command,
    private_bus, require_real_root, status,
};
use faultbridge_tests::{Daemon, binary, faultbridge, private_netns, text};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const MONITORS: &str = r#"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"
"#;

const T: Duration = Duration::from_secs(10);

#[test]
fn nobody_may_watch_and_read_but_not_notify_reset_or_own_the_name() {
    private_netns();
    require_real_root("dropping to nobody");
    let bus = private_bus(BusPolicy::SystemLike);
    let a = bus.address().to_string();
    // The daemon runs as root, which the policy lets own the name.
    let daemon = Daemon::start(&daemon_config(&bus, MONITORS));
    let fb = binary();

    // nobody watches: the signals reach an unprivileged subscriber.
    let mut cmd = nobody_command(&fb);
    cmd.args(["watch", "--bus", &a, "--json"]);
    let watcher = LineReader::spawn(cmd);
    watcher.wait_stderr("listening", T);
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--group", "1"]);
    let seen = watcher.until_json(T, |v| v["type"] == "fault");
    let fault = seen
        .last()
        .unwrap_or_else(|| panic!("nobody saw no fault: {}", watcher.stderr()));
    assert_eq!(
        (fault["source"].as_str(), fault["keyword"].as_str()),
        (Some("expdrv"), Some("eth0"))
    );

    // nobody reads: Status, properties, introspection, the Check script.
    let out = as_nobody(&fb, &["status", "--bus", &a, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["monitors"]["mrw1"]["State"], "Error", "{st}");
    let out = as_nobody(&fb, &["check", "--bus", &a, "--ocf", "mrw1"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let busctl = Path::new("/usr/bin/busctl");
    let out = as_nobody(
        busctl,
        &[
            &format!("--address={a}"),
            "get-property",
            "org.faultbridge.Bridge1",
            "/org/faultbridge/Bridge1/monitor/mrw1",
            "org.faultbridge.Monitor1",
            "State",
            "ErrorCount",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s \"Error\"\nt 1\n");
    let out = as_nobody(
        busctl,
        &[
            &format!("--address={a}"),
            "introspect",
            "org.faultbridge.Bridge1",
            "/org/faultbridge/Bridge1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(".Notify"));
    let out = as_nobody(
        busctl,
        &[
            &format!("--address={a}"),
            "call",
            "org.faultbridge.Bridge1",
            "/org/faultbridge/Bridge1",
            "org.faultbridge.Bridge1",
            "ListMonitors",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // nobody may not report faults nor reset monitors.
    let out = as_nobody(&fb, &["notify", "--bus", &a, "-k", "NIC.eth0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(&out)
    );
    let out = as_nobody(&fb, &["reset", "--bus", &a, "mrw1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(&out)
    );
    // The same refusals as another client shows them.
    let gdbus = Path::new("/usr/bin/gdbus");
    let out = as_nobody(
        gdbus,
        &[
            "call",
            "--address",
            &a,
            "--dest",
            "org.faultbridge.Bridge1",
            "--object-path",
            "/org/faultbridge/Bridge1/monitor/mrw1",
            "--method",
            "org.faultbridge.Monitor1.Reset",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("GDBus.Error:org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(&out)
    );

    // nobody may not own the name, whether or not the daemon holds it.
    let request_name = |flags: &str| {
        as_nobody(
            gdbus,
            &[
                "call",
                "--address",
                &a,
                "--dest",
                "org.freedesktop.DBus",
                "--object-path",
                "/org/freedesktop/DBus",
                "--method",
                "org.freedesktop.DBus.RequestName",
                "org.faultbridge.Bridge1",
                flags,
            ],
        )
    };
    let out = request_name("4");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("GDBus.Error:org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(&out)
    );

    // The refused calls changed nothing: still Error, nothing reported.
    let st = status(&a);
    assert_eq!(st["monitors"]["mrw1"]["State"], "Error");
    assert!(st["sources"].get("notify").is_none(), "{st}");
    assert_eq!(st["dbus"]["notify_calls"], 0, "{st}");

    // root (the policy's other holder) may.
    let out = client(&a, &["notify", "-k", "NIC.eth0"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = client(&a, &["reset", "mrw1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status(&a)["monitors"]["mrw1"]["State"], "Normal");

    // With the daemon gone, the name is free, and still not nobody's.
    daemon.stop();
    let out = request_name("4");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("GDBus.Error:org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_service_user_of_the_unit_may_own_the_name() {
    private_netns();
    require_real_root("switching to the service user");
    ensure_service_user();
    let bus = private_bus(BusPolicy::SystemLike);
    let dir = faultbridge_tests::TempDir::new("service-user");
    let cfg = dir.write(
        "f.toml",
        &format!(
            "bus = \"{}\"\n[sources.expdrv]\nenabled = false\n",
            bus.address()
        ),
    );
    // The daemon as the unit runs it: user and group faultbridge, no other groups.
    let out = std::process::Command::new("timeout")
        .args([
            "-s",
            "TERM",
            "3",
            "setpriv",
            "--reuid=faultbridge",
            "--regid=faultbridge",
            "--clear-groups",
            "--",
        ])
        .arg(faultbridge_tests::binary())
        .args(["run", "--print", "json", "--config"])
        .arg(&cfg)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains("\"ready\"")),
        "the daemon as user faultbridge did not get the name: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
}

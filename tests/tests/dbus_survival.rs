//! D-Bus that cannot be used against the daemon: a `History` reply over
//! big records stays within its byte bound and the daemon stays on the bus
//! with bounded memory; a restarted dbus-daemon is reconnected to, the
//! name owned again, and what happened meanwhile is there; `Notify` and
//! `Reset` check the caller themselves, whatever the bus policy lets
//! through.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{
    BusPolicy, as_nobody, client, daemon_config, ensure_service_user, private_bus,
    require_real_root, status, status_kib,
};
use faultbridge_tests::{Daemon, TempDir, binary, faultbridge, private_netns, text};
use std::time::{Duration, Instant};

const MONITOR: &str = r#"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"
"#;

fn wait_stderr(d: &Daemon, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !d.stderr().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} from the daemon within {timeout:?}:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_restarted_bus_is_reconnected_and_a_fault_of_the_outage_shows_afterwards() {
    private_netns();
    let mut bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let daemon = Daemon::start(&daemon_config(&bus, MONITOR));
    assert_eq!(client(&a, &["check", "mrw1"]).status.code(), Some(0));

    bus.kill();
    wait_stderr(&daemon, "was lost", Duration::from_secs(10));
    // The daemon goes on without the bus: the fault trips the monitor.
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--seq", "1"]);
    std::thread::sleep(Duration::from_millis(200));
    bus.restart().unwrap();
    wait_stderr(&daemon, "owned again", Duration::from_secs(15));

    let out = client(&a, &["check", "mrw1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let st = status(&a);
    let d = &st["dbus"];
    assert_eq!(
        (
            d["connected"].as_u64(),
            d["disconnects"].as_u64(),
            d["reconnects"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{st}"
    );
    // The fault found the bus down: D-Bus subscribers were told as Lost.
    assert_eq!(d["bus_down_drops"], 1, "{st}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&a)["dbus"]["lost_signals"] != 1 {
        assert!(Instant::now() < deadline, "no Lost signal after the outage");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Signals flow again.
    let w = faultbridge_tests::dbus::watch(&a, &[]);
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--seq", "2"]);
    let got = w.until_json(Duration::from_secs(10), |v| v["type"] == "fault");
    assert_eq!(got.last().map(|v| v["sequence"].clone()), Some(2.into()));
    daemon.stop();
}

#[test]
fn notify_and_reset_check_the_caller_even_when_the_policy_lets_anyone_call() {
    private_netns();
    require_real_root("calling as nobody and as the faultbridge user");
    ensure_service_user();
    // An open bus: the policy lets everyone call everything.
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let daemon = Daemon::start(&daemon_config(&bus, MONITOR));
    let fb = binary();

    let out = as_nobody(&fb, &["notify", "--bus", &a, "-k", "NIC.eth0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.faultbridge.Bridge1.Error.AccessDenied") && err.contains("uid 65534"),
        "{}",
        text(&out)
    );
    faultbridge(&["sim", "send", "-k", "NIC.eth0"]);
    let out = as_nobody(&fb, &["reset", "--bus", &a, "mrw1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("org.faultbridge.Bridge1.Error.AccessDenied"),
        "{}",
        text(&out)
    );
    let st = status(&a);
    assert_eq!(st["monitors"]["mrw1"]["State"], "Error", "{st}");
    assert!(st["sources"].get("notify").is_none(), "{st}");
    assert_eq!(st["dbus"]["denied_requests"], 2, "{st}");

    // A member of group faultbridge may.
    let as_service_user = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=faultbridge",
                "--regid=faultbridge",
                "--clear-groups",
                "--",
            ])
            .arg(&fb)
            .args(args)
            .env("HOME", "/nonexistent")
            .output()
            .unwrap()
    };
    let out = as_service_user(&["reset", "--bus", &a, "mrw1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = as_service_user(&["notify", "--bus", &a, "-k", "FC.host1"]);
    assert!(out.status.success(), "{}", text(&out));
    let st = status(&a);
    assert_eq!(st["monitors"]["mrw1"]["State"], "Normal", "{st}");
    assert_eq!(st["dbus"]["denied_requests"], 2, "{st}");
    daemon.stop();
}

#[test]
fn history_over_600_records_of_65000_byte_details_keeps_the_daemon_on_the_bus_in_bounded_memory() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("history-big");
    let db = dir.path().join("history.db");
    let cfg = format!(
        "{}\n[history]\npath = \"{}\"\n",
        daemon_config(&bus, MONITOR).replacen(
            "netlink_group = 1\n",
            "netlink_group = 1\nrecv_buffer = 67108864\n",
            1
        ),
        db.display()
    );
    let daemon = Daemon::start(&cfg);
    let pid = daemon.child.id();
    let detail = "d".repeat(65_000);
    faultbridge(&[
        "sim", "send", "-k", "FC.host1", "--count", "600", "--detail", &detail,
    ]);
    let dbs = db.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new(binary())
            .args(["history", "--db", dbs, "--limit", "1000"])
            .output()
            .unwrap();
        // A header line, then one line per row (no details in text).
        let n = String::from_utf8_lossy(&out.stdout).lines().count();
        if n > 600 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of 600 rows recorded");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = status_kib(pid, "VmHWM:");

    // One call asking for everything gets one bounded page.
    let out = std::process::Command::new("busctl")
        .args([
            &format!("--address={a}"),
            "call",
            "org.faultbridge.Bridge1",
            "/org/faultbridge/Bridge1",
            "org.faultbridge.Bridge1",
            "History",
            "tu",
            "0",
            "10000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let reply = String::from_utf8_lossy(&out.stdout);
    let rows: usize = reply
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", &reply[..reply.len().min(200)]));
    // 1 MiB of 65 000-byte rows.
    assert!((1..=16).contains(&rows), "{rows} rows in one reply");

    // Three clients ask for everything at once, and one pages through the
    // whole history (39 MB of detail) meanwhile.
    let greedy: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new("busctl")
                .args([
                    &format!("--address={a}"),
                    "call",
                    "org.faultbridge.Bridge1",
                    "/org/faultbridge/Bridge1",
                    "org.faultbridge.Bridge1",
                    "History",
                    "tu",
                    "0",
                    "10000",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let readers: Vec<_> = (0..1)
        .map(|_| {
            std::process::Command::new(binary())
                .args(["history", "--bus", &a, "--limit", "1000"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in readers {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let t = String::from_utf8_lossy(&out.stdout);
        assert_eq!(t.lines().count(), 601, "a header and 600 rows");
        assert!(t.lines().skip(1).all(|l| l.contains("host1")));
    }

    for g in greedy {
        let out = g.wait_with_output().unwrap();
        // Answered, or refused as over the bound of calls at once: never
        // more than the bound in memory.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("calls are in progress already"),
            "{err}"
        );
    }

    // Still on the bus, and answering.
    let out = client(&a, &["check", "mrw1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let st = status(&a);
    assert_eq!(st["dbus"]["disconnects"], 0, "{st}");
    let after = status_kib(pid, "VmHWM:");
    let now = status_kib(pid, "VmRSS:");
    eprintln!(
        "daemon peak RSS: {} MiB before the History calls, {} MiB after; RSS now {} MiB",
        before / 1024,
        after / 1024,
        now / 1024
    );
    // The whole history is 39 MB of detail; at most two pages are built at
    // once, so the peak grows by a few MiB, not by the history's size.
    assert!(
        after < before + 32 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    daemon.stop();
}

/// Waits up to `limit` for `child` to exit; kills it and fails if it does
/// not.
fn exits_within(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} still hangs after {limit:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bus_that_never_answers_hello_fails_a_client_and_the_daemon_with_a_clear_error() {
    // A bus whose policy lets nothing be received: it accepts connections
    // and authenticates them, but the reply to `Hello` never arrives.
    let bus = private_bus(BusPolicy::Silent);
    let address = bus.address().to_string();
    let dir = TempDir::new("mute-bus");
    let start = Instant::now();
    let status = std::process::Command::new(binary())
        .args(["status", "--bus", &address])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let config = dir.write(
        "faultbridge.toml",
        &format!("bus = \"{address}\"\n[sources.expdrv]\nnetlink_group = 3\n"),
    );
    let daemon = std::process::Command::new(binary())
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = exits_within(status, Duration::from_secs(30), "faultbridge status");
    let daemon = exits_within(daemon, Duration::from_secs(30), "faultbridge run");
    drop(bus);
    for (what, out) in [("status", &status), ("run", &daemon)] {
        assert!(!out.status.success(), "{what}: {}", text(out));
        assert!(
            text(out)
                .contains("did not answer the connection's authentication and Hello within 10 s"),
            "{what}: {}",
            text(out)
        );
    }
    eprintln!("both gave up after {:?}", start.elapsed());
}

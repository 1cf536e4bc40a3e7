//! `faultbridge check` as a cluster Check script: its exit code follows the
//! monitor's state (0 Normal, 2 Error, 1 unknown; `--ocf` 0 / 7 / 1), and a
//! daemon that is down, a bus that is gone or a bus that never answers all
//! give 1, within the deadline.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{BusPolicy, client, daemon_config, private_bus};
use faultbridge_tests::{Daemon, faultbridge, private_netns};
use std::time::{Duration, Instant};

const MONITORS: &str = r#"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"
"#;

/// `check MONITOR` and `check --ocf MONITOR`: both exit codes.
fn codes(bus: &str, monitor: &str) -> (i32, i32) {
    let plain = client(bus, &["check", monitor]).status.code().unwrap();
    let ocf = client(bus, &["check", "--ocf", monitor])
        .status
        .code()
        .unwrap();
    (plain, ocf)
}

/// Waits until `check` answers `want` (the fault travels asynchronously).
fn wait_codes(bus: &str, monitor: &str, want: (i32, i32)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = codes(bus, monitor);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "check {monitor}: {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_exit_codes_follow_the_monitor_state() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address();
    let daemon = Daemon::start(&daemon_config(&bus, MONITORS));

    assert_eq!(codes(a, "mrw1"), (0, 0), "Normal");
    let out = client(a, &["check", "mrw1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mrw1: Normal");

    // A fault of the monitored device, through the real netlink socket.
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--group", "1"]);
    wait_codes(a, "mrw1", (2, 7));
    // Latched: a CLEAR does not end the Error of a monitor without auto_clear.
    faultbridge(&[
        "sim", "send", "-k", "NIC.eth0", "--clear", "--seq", "2", "--group", "1",
    ]);
    // Wait until the daemon has the CLEAR, then the state must be unchanged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while faultbridge_tests::dbus::status(a)["sources"]["expdrv"]["received"] != 2 {
        assert!(
            Instant::now() < deadline,
            "the CLEAR never reached the daemon"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(codes(a, "mrw1"), (2, 7), "Error is latched");

    let out = client(a, &["reset", "mrw1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(codes(a, "mrw1"), (0, 0), "Normal after reset");

    // An unknown monitor.
    assert_eq!(codes(a, "mrw2"), (1, 1));
    let out = client(a, &["check", "mrw2"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no monitor named \"mrw2\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The daemon stopped: nobody owns the name.
    daemon.stop();
    assert_eq!(codes(a, "mrw1"), (1, 1));
    let out = client(a, &["check", "mrw1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("faultbridge is not running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unreachable_or_silent_bus_gives_1_within_the_deadline() {
    private_netns();
    let mut bus = private_bus(BusPolicy::Open);
    let address = bus.address().to_string();
    bus.kill();
    // No bus at all behind the socket path.
    let t = Instant::now();
    assert_eq!(codes(&address, "mrw1"), (1, 1));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // A socket that accepts and never answers: the deadline (200 ms) holds.
    let dir = faultbridge_tests::TempDir::new("silent-bus");
    let path = dir.path().join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let _held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let silent = format!("unix:path={}", path.display());
    let t = Instant::now();
    let out = client(&silent, &["check", "mrw1"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(took < Duration::from_secs(2), "check took {took:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no answer from the daemon"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = client(&silent, &["check", "--ocf", "--timeout", "100", "mrw1"]);
    assert_eq!(out.status.code(), Some(1));
}

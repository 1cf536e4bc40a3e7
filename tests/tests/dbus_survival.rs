//! D-Bus that cannot be used against the daemon: a restarted dbus-daemon
//! is reconnected to, the name owned again, and what happened meanwhile is
//! there; `Notify` and `Reset` check the caller themselves, whatever the
//! bus policy lets through.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{
    BusPolicy, as_nobody, client, daemon_config, ensure_service_user, private_bus,
    require_real_root, status,
};
use faultbridge_tests::{Daemon, binary, faultbridge, private_netns};
use std::time::{Duration, Instant};

const MONITOR: &str = r#"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"
"#;

fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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

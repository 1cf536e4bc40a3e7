//! The D-Bus service against a real `dbus-daemon` (private, per test) and
//! clients nobody here wrote: `busctl` and `gdbus` see the `Fault` signal
//! of a record sent by the simulator through the real netlink socket with
//! every argument right, introspect both interfaces, read the monitor
//! properties and see `PropertiesChanged` on Error and on Reset; bad
//! `Notify` input gets a named error and changes nothing.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{
    BusPolicy, LineReader, PrivateBus, client, daemon_config, private_bus, status, watch,
};
use faultbridge_tests::{Daemon, faultbridge, private_netns};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const MONITORS: &str = r#"
[[monitor]]
name = "nic-eth0"
category = "NIC"
keyword = "eth0"

[[monitor]]
name = "fc any"
category = "FC"
"#;

const T: Duration = Duration::from_secs(10);

/// `busctl monitor` of the daemon's name, JSON lines, once it monitors.
fn busctl_monitor(bus: &PrivateBus) -> LineReader {
    let mut cmd = Command::new("busctl");
    cmd.arg(format!("--address={}", bus.address())).args([
        "monitor",
        "--json=short",
        "org.faultbridge.Bridge1",
    ]);
    let m = LineReader::spawn(cmd);
    m.wait_stderr("Monitoring", T);
    // BecomeMonitor is sent right after that line; give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    m
}

fn busctl(bus: &PrivateBus, args: &[&str]) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={}", bus.address()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "busctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn busctl_monitor_sees_every_argument_of_a_fault_sent_through_netlink() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let mut daemon = Daemon::start(&daemon_config(&bus, MONITORS));
    let monitor = busctl_monitor(&bus);
    let watcher = watch(bus.address(), &[]);

    faultbridge(&[
        "sim",
        "send",
        "-k",
        "FC.host3",
        "--severity",
        "fatal",
        "--event-code",
        "0x00020003",
        "--device-index",
        "3",
        "--detail-hex",
        "0102ff",
        "--seq",
        "1",
        "--group",
        "1",
    ]);
    faultbridge(&[
        "sim", "send", "-k", "NIC.eth0", "--clear", "--seq", "2", "--group", "1",
    ]);

    // The daemon's own view of the two records: the reference.
    let printed = daemon.until(T, |v| v["sequence"] == 2);
    let fc = printed.iter().find(|v| v["sequence"] == 1).unwrap().clone();
    let clear = printed.last().unwrap().clone();
    assert_eq!(clear["cleared"], true, "{printed:?}");

    let signals: Vec<Value> = monitor
        .until_json(T, |v| {
            v["member"] == "Fault" && v["payload"]["data"][6] == 2
        })
        .into_iter()
        .filter(|v| v["member"] == "Fault")
        .collect();
    assert_eq!(signals.len(), 2, "{signals:?}\n{}", monitor.stderr());
    let s = &signals[0];
    assert_eq!(s["type"], "signal");
    assert_eq!(s["path"], "/org/faultbridge/Bridge1");
    assert_eq!(s["interface"], "org.faultbridge.Bridge1");
    assert_eq!(s["payload"]["type"], "ssssbuttay");
    assert_eq!(
        s["payload"]["data"],
        json!([
            "expdrv",
            "FC",
            "host3",
            "fatal",
            false,
            0x0002_0003u32,
            1,
            fc["timestamp_ns"],
            [1, 2, 255]
        ])
    );
    assert_eq!(
        signals[1]["payload"]["data"],
        json!([
            "expdrv",
            "NIC",
            "eth0",
            "info",
            true,
            clear["event_code"],
            2,
            clear["timestamp_ns"],
            []
        ])
    );

    // `faultbridge watch --json`: the same arguments, named as the signal's.
    let lines = watcher.until_json(T, |v| v["sequence"] == 2);
    assert_eq!(
        lines[0],
        json!({"type": "fault", "source": "expdrv", "category": "FC", "keyword": "host3",
               "severity": "fatal", "cleared": false, "event_code": 0x0002_0003u32,
               "sequence": 1, "timestamp_ns": fc["timestamp_ns"], "detail": "0102ff"})
    );
    assert_eq!(lines.len(), 2, "{lines:?}");

    // A filtered watch: the bus routes only FC faults to it.
    let fc_only = watch(bus.address(), &["--category", "FC"]);
    faultbridge(&[
        "sim", "send", "-k", "NIC.eth1", "--seq", "3", "--group", "1",
    ]);
    faultbridge(&[
        "sim", "send", "-k", "FC.host9", "--seq", "4", "--group", "1",
    ]);
    let got = fc_only.until_json(T, |v| v["sequence"] == 4);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["keyword"], "host9");

    let stats = daemon.stop();
    assert_eq!(stats["dbus"]["fault_signals"], 4, "{stats}");
    assert_eq!(stats["dbus"]["dropped"], 0, "{stats}");
}

#[test]
fn busctl_introspects_both_interfaces_and_reads_monitor_properties() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let daemon = Daemon::start(&daemon_config(&bus, MONITORS));

    let bridge = busctl(
        &bus,
        &[
            "introspect",
            "org.faultbridge.Bridge1",
            "/org/faultbridge/Bridge1",
        ],
    );
    for want in [
        "org.faultbridge.Bridge1",
        ".Notify                           method    ssss",
        ".ListMonitors",
        ".Status",
        ".History                          method    tu",
        "a(tssssbuttay)",
        ".Fault                            signal    ssssbuttay",
        ".Lost                             signal    stt",
    ] {
        let want_words: Vec<&str> = want.split_whitespace().collect();
        assert!(
            bridge.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words
                    .windows(want_words.len())
                    .any(|w| w == want_words.as_slice())
            }),
            "introspection lacks {want:?}:\n{bridge}"
        );
    }

    let tree = busctl(&bus, &["tree", "org.faultbridge.Bridge1"]);
    assert!(
        tree.contains("/org/faultbridge/Bridge1/monitor/nic_2deth0"),
        "{tree}"
    );
    assert!(
        tree.contains("/org/faultbridge/Bridge1/monitor/fc_20any"),
        "{tree}"
    );

    let path = "/org/faultbridge/Bridge1/monitor/nic_2deth0";
    let mon = busctl(&bus, &["introspect", "org.faultbridge.Bridge1", path]);
    assert!(mon.contains("org.faultbridge.Monitor1"), "{mon}");
    assert!(mon.contains(".Reset"), "{mon}");
    for p in [
        "Name",
        "Category",
        "Keyword",
        "State",
        "ErrorCount",
        "LastSequence",
    ] {
        assert!(mon.contains(&format!(".{p} ")), "no property {p}:\n{mon}");
    }

    let props = busctl(
        &bus,
        &[
            "get-property",
            "org.faultbridge.Bridge1",
            path,
            "org.faultbridge.Monitor1",
            "Name",
            "Category",
            "Keyword",
            "State",
            "ErrorCount",
            "LastSequence",
        ],
    );
    assert_eq!(
        props.lines().collect::<Vec<_>>(),
        [
            "s \"nic-eth0\"",
            "s \"NIC\"",
            "s \"eth0\"",
            "s \"Normal\"",
            "t 0",
            "t 0"
        ],
        "{props}"
    );

    let list = busctl(
        &bus,
        &[
            "call",
            "org.faultbridge.Bridge1",
            "/org/faultbridge/Bridge1",
            "org.faultbridge.Bridge1",
            "ListMonitors",
        ],
    );
    assert_eq!(
        list.trim(),
        "ao 2 \"/org/faultbridge/Bridge1/monitor/nic_2deth0\" \"/org/faultbridge/Bridge1/monitor/fc_20any\""
    );
    let history = busctl(
        &bus,
        &[
            "call",
            "org.faultbridge.Bridge1",
            "/org/faultbridge/Bridge1",
            "org.faultbridge.Bridge1",
            "History",
            "tu",
            "0",
            "100",
        ],
    );
    assert_eq!(history.trim(), "a(tssssbuttay) 0");

    let st = status(bus.address());
    assert_eq!(st["monitors"]["nic-eth0"]["State"], "Normal", "{st}");
    assert_eq!(st["monitors"]["fc any"]["Keyword"], "", "{st}");
    assert_eq!(st["pid"], daemon.child.id());
    drop(daemon);
}

#[test]
fn gdbus_sees_properties_changed_on_error_and_after_reset() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let daemon = Daemon::start(&daemon_config(&bus, MONITORS));
    let mut cmd = Command::new("gdbus");
    cmd.args([
        "monitor",
        "--address",
        bus.address(),
        "--dest",
        "org.faultbridge.Bridge1",
    ]);
    let gdbus = LineReader::spawn(cmd);
    gdbus.until(T, |l| l.contains("is owned by"));

    let out = client(
        bus.address(),
        &["notify", "-k", "NIC.eth0", "--detail", "carrier lost"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The state change and the Fault signal, in either order.
    let (mut to_error, mut fault) = (None, None);
    gdbus.until(T, |l| {
        if l.contains("PropertiesChanged") && l.contains("'Error'") {
            to_error = Some(l.to_string());
        }
        if l.contains("org.faultbridge.Bridge1.Fault") {
            fault = Some(l.to_string());
        }
        to_error.is_some() && fault.is_some()
    });
    let line = to_error.expect("PropertiesChanged to Error");
    assert!(
        line.starts_with("/org/faultbridge/Bridge1/monitor/nic_2deth0: org.freedesktop.DBus.Properties.PropertiesChanged ('org.faultbridge.Monitor1', {"),
        "{line}"
    );
    assert!(line.contains("'State': <'Error'>"), "{line}");
    assert!(line.contains("'ErrorCount': <uint64 1>"), "{line}");
    assert!(line.contains("'LastSequence': <uint64 1>"), "{line}");
    let fault = fault.expect("the Fault signal of the notify source");
    assert!(
        fault.contains(
            "/org/faultbridge/Bridge1: org.faultbridge.Bridge1.Fault ('notify', 'NIC', 'eth0', 'error', false, uint32 65537, uint64 1,"
        ),
        "{fault}"
    );
    // The detail: "carrier lost" as bytes.
    assert!(
        fault.ends_with(
            "[byte 0x63, 0x61, 0x72, 0x72, 0x69, 0x65, 0x72, 0x20, 0x6c, 0x6f, 0x73, 0x74])"
        ),
        "{fault}"
    );

    let out = client(bus.address(), &["reset", "nic-eth0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let to_normal = gdbus.until(T, |l| {
        l.contains("PropertiesChanged") && l.contains("'Normal'")
    });
    assert!(
        to_normal
            .last()
            .unwrap()
            .contains("/org/faultbridge/Bridge1/monitor/nic_2deth0"),
        "{to_normal:?}"
    );
    let st = status(bus.address());
    assert_eq!(st["monitors"]["nic-eth0"]["State"], "Normal");
    assert_eq!(st["dbus"]["property_signals"], 2, "{st}");
    drop(daemon);
}

#[test]
fn bad_notify_input_gets_a_named_error_and_changes_nothing() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let daemon = Daemon::start(&daemon_config(&bus, MONITORS));
    let watcher = watch(bus.address(), &[]);
    let call = |category: &str, keyword: &str, severity: &str| {
        Command::new("gdbus")
            .args([
                "call",
                "--address",
                bus.address(),
                "--dest",
                "org.faultbridge.Bridge1",
                "--object-path",
                "/org/faultbridge/Bridge1",
                "--method",
                "org.faultbridge.Bridge1.Notify",
                category,
                keyword,
                severity,
                "",
            ])
            .output()
            .unwrap()
    };
    let long_category = "N".repeat(33);
    let long_keyword = "k".repeat(1024);
    for (category, keyword, severity, error, message) in [
        (
            "NICE",
            "eth0",
            "error",
            "UnknownCategory",
            "unknown category \"NICE\"",
        ),
        (
            long_category.as_str(),
            "eth0",
            "error",
            "CategoryTooLong",
            "category is 33 bytes, more than 32",
        ),
        (
            "NIC",
            long_keyword.as_str(),
            "error",
            "KeywordTooLong",
            "keyword is 1024 bytes, more than 1023",
        ),
        (
            "NIC",
            "eth0",
            "bad",
            "UnknownSeverity",
            "unknown severity \"bad\"",
        ),
    ] {
        let out = call(category, keyword, severity);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!(
                "GDBus.Error:org.faultbridge.Bridge1.Error.{error}: {message}"
            )),
            "{error}: {err}"
        );
    }
    // faultbridge notify says the same, and exits 1.
    let out = client(
        bus.address(),
        &["notify", "-k", "SPS.x", "--severity", "loud"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("org.faultbridge.Bridge1.Error.UnknownSeverity: unknown severity \"loud\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing else changed: no fault published, no signal, no state.
    let st = status(bus.address());
    assert_eq!(st["rejected_requests"], 5, "{st}");
    assert!(st["sources"].get("notify").is_none(), "{st}");
    assert_eq!(st["monitors"]["nic-eth0"]["State"], "Normal");
    assert_eq!(st["monitors"]["nic-eth0"]["ErrorCount"], 0);
    assert_eq!(st["dbus"]["fault_signals"], 0, "{st}");

    // A good report still works, and is the first thing the watcher sees.
    let out = client(bus.address(), &["notify", "-k", "NIC.eth0"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "reported NIC.eth0 as sequence 1 of source notify"
    );
    let first = watcher.next(T).expect("the good report as a signal");
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (v["source"].clone(), v["sequence"].clone()),
        (json!("notify"), json!(1))
    );
    drop(daemon);
}

#[test]
fn a_second_daemon_on_the_same_bus_is_refused_the_name() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let first = Daemon::start(&daemon_config(&bus, MONITORS));
    let dir = faultbridge_tests::TempDir::new("second");
    let cfg = dir.write("faultbridge.toml", &daemon_config(&bus, MONITORS));
    let out = Command::new(faultbridge_tests::binary())
        .args(["run", "--print", "json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.faultbridge.Bridge1 is owned by another connection"),
        "{err}"
    );
    // It never said it was ready; the first one still serves.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
    assert_eq!(status(bus.address())["pid"], first.child.id());
    drop(first);
}

//! NIC faults from the kernel's own rtnetlink reports: a veth pair in the
//! test's own network namespace, the bridge inside it, and the peer really
//! set down and up. The fault must name the interface, its ifindex and the
//! link-down code, reach an in-process subscriber and the JSON stream of the
//! real daemon, and drive a NIC monitor with that keyword.
#![allow(clippy::unwrap_used)]

use faultbridge::monitor::MonitorState;
use faultbridge::{Bridge, Config, Event, Fault, Source, SubscribeOptions, Subscription};
use faultbridge_ffi::wire::record::{Category, F_SNAPSHOT};
use faultbridge_tests::dbus::{BusPolicy, PrivateBus, status, watch};
use faultbridge_tests::{Daemon, private_netns, source_stats};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args} failed");
}

/// `ip -o link show dev NAME`: (ifindex, has LOWER_UP).
fn link(name: &str) -> (u32, bool) {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let index = s.split(':').next().unwrap().trim().parse().unwrap();
    (index, s.contains("LOWER_UP"))
}

fn wait_carrier(name: &str, want: bool) {
    let deadline = Instant::now() + T;
    while link(name).1 != want {
        assert!(
            Instant::now() < deadline,
            "{name} carrier never became {want}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn veth(a: &str, b: &str) -> u32 {
    ip(&format!("link add {a} type veth peer name {b}"));
    ip(&format!("link set {a} up"));
    ip(&format!("link set {b} up"));
    wait_carrier(a, true);
    link(a).0
}

fn next_fault(sub: &Subscription) -> Fault {
    match sub.recv_timeout(T) {
        Ok(Event::Fault(f)) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

fn config(text: &str) -> Config {
    Config::parse(text, Path::new("kernel_rtnetlink.toml")).unwrap()
}

const MONITORS: &str = r#"
[[monitor]]
name = "nic-auto"
category = "NIC"
keyword = "fbv0"
auto_clear = true
[[monitor]]
name = "nic-latched"
category = "NIC"
keyword = "fbv0"
[[monitor]]
name = "nic-other"
category = "NIC"
keyword = "eth9"
"#;

#[test]
fn veth_carrier_loss_is_a_nic_fault_and_its_return_a_clear() {
    private_netns();
    let ifindex = veth("fbv0", "fbv1");
    let cfg = config(&format!(
        "bus = \"none\"\n[sources.expdrv]\nenabled = false\n[sources.rtnetlink]\ninclude = [\"fbv0\"]\n{MONITORS}"
    ));
    let mut bridge = Bridge::open(&cfg).unwrap();
    let sub = bridge.subscribe(SubscribeOptions::new("test")).unwrap();
    bridge.run().unwrap();
    let monitors = bridge.monitors();
    let state = |name: &str| monitors.find(name).unwrap().1.state();

    ip("link set fbv1 down");
    let f = next_fault(&sub);
    assert_eq!(f.source(), Source::Rtnetlink);
    assert_eq!(f.category(), Category::Nic);
    assert_eq!(f.keyword(), "fbv0");
    assert_eq!(f.device_index(), ifindex);
    assert_eq!(f.event_code(), 0x0001_0001);
    assert!(!f.cleared());
    assert_eq!(f.flags() & F_SNAPSHOT, 0);
    let detail = String::from_utf8_lossy(f.detail()).into_owned();
    assert!(detail.contains("carrier=0"), "{detail}");
    // The monitor decision is taken on the ingest thread before publishing.
    assert_eq!(state("nic-auto"), MonitorState::Error);
    assert_eq!(state("nic-latched"), MonitorState::Error);
    assert_eq!(state("nic-other"), MonitorState::Normal);

    ip("link set fbv1 up");
    let f = next_fault(&sub);
    assert!(f.cleared());
    assert_eq!(f.event_code(), 0x0001_0002);
    assert_eq!((f.keyword(), f.device_index()), ("fbv0", ifindex));
    assert_eq!(state("nic-auto"), MonitorState::Normal);
    assert_eq!(state("nic-latched"), MonitorState::Error);

    // Nothing about the peer, which is not watched.
    assert!(sub.recv_timeout(Duration::from_millis(300)).is_err());
    let s = bridge.shutdown().source(Source::Rtnetlink);
    assert_eq!((s.delivered, s.lost), (2, 0));
}

/// Toggles the peer `n` times as fast as `ip` runs and returns every fault
/// and CLEAR reported for `fbv0` until `final_up` is reached and things
/// have been quiet for a while.
fn flap(sub: &Subscription, n: usize, final_up: bool) -> Vec<bool> {
    for _ in 0..n {
        ip("link set fbv1 down");
        ip("link set fbv1 up");
    }
    if !final_up {
        ip("link set fbv1 down");
    }
    let mut cleared = Vec::new();
    while let Ok(ev) = sub.recv_timeout(Duration::from_millis(1500)) {
        if let Event::Fault(f) = ev {
            assert_eq!(f.keyword(), "fbv0");
            cleared.push(f.cleared());
        }
    }
    cleared
}

#[test]
fn a_flapping_link_is_reported_without_losing_its_final_state() {
    private_netns();
    veth("fbv0", "fbv1");
    let cfg = config(&format!(
        "bus = \"none\"\n[sources.expdrv]\nenabled = false\n[sources.rtnetlink]\ninclude = [\"fbv*\"]\nexclude = [\"fbv1\"]\n{MONITORS}"
    ));
    let mut bridge = Bridge::open(&cfg).unwrap();
    let sub = bridge.subscribe(SubscribeOptions::new("test")).unwrap();
    bridge.run().unwrap();
    let monitors = bridge.monitors();
    let state = |name: &str| monitors.find(name).unwrap().1.state();

    let seen = flap(&sub, 20, true);
    assert!(!seen.is_empty());
    // Faults and CLEARs alternate, starting with a fault, ending with the
    // final state: up.
    for (i, &c) in seen.iter().enumerate() {
        assert_eq!(c, i % 2 == 1, "not alternating: {seen:?}");
    }
    assert_eq!(seen.last(), Some(&true), "{seen:?}");
    assert_eq!(state("nic-auto"), MonitorState::Normal);
    assert_eq!(state("nic-latched"), MonitorState::Error);

    let seen = flap(&sub, 20, false);
    assert_eq!(seen.last(), Some(&false), "{seen:?}");
    assert_eq!(state("nic-auto"), MonitorState::Error);
    let s = bridge.shutdown().source(Source::Rtnetlink);
    assert_eq!(s.lost, 0);
    eprintln!("40 flaps reported as {} records", s.delivered);
}

#[test]
fn the_daemon_reports_the_start_up_state_and_live_changes_on_its_json_stream() {
    private_netns();
    let ifindex = veth("fbv0", "fbv1");
    // Down before the daemon starts: found by the start-up dump.
    ip("link set fbv1 down");
    wait_carrier("fbv0", false);
    let mut d = Daemon::start(
        "bus = \"none\"\n[sources.expdrv]\nenabled = false\n[sources.rtnetlink]\ninclude = [\"fbv0\"]\n",
    );
    let initial = d.next(T).unwrap();
    assert_eq!(initial["type"], "fault");
    assert_eq!(initial["source"], "rtnetlink");
    assert_eq!(initial["category"], "NIC");
    assert_eq!(initial["keyword"], "fbv0");
    assert_eq!(initial["device_index"], ifindex);
    assert_eq!(initial["event_code"], 0x0001_0001);
    assert_eq!(initial["flags"], F_SNAPSHOT);
    assert_eq!(initial["sequence"], 1);

    ip("link set fbv1 up");
    let up = d.next(T).unwrap();
    assert_eq!(up["cleared"], true, "{up}");
    assert_eq!(up["event_code"], 0x0001_0002);
    assert_eq!(up["flags"], 0);
    assert_eq!(up["sequence"], 2);

    // Deleting the watched interface: the kernel first reports it down,
    // then removed; the removal is a fault of its own.
    ip("link del fbv0");
    let down = d.next(T).unwrap();
    assert_eq!(down["event_code"], 0x0001_0001, "{down}");
    let gone = d.next(T).unwrap();
    assert_eq!(gone["keyword"], "fbv0");
    assert_eq!(gone["cleared"], false);
    assert_eq!(gone["event_code"], 0x0001_00ff);
    assert_eq!(gone["device_index"], ifindex);
    let stats = d.stop();
    assert_eq!(source_stats(&stats, "rtnetlink")["delivered"], 4);
}

#[test]
fn veth_carrier_loss_reaches_a_dbus_watcher_and_the_monitor_status() {
    private_netns();
    veth("fbv0", "fbv1");
    let bus = PrivateBus::start(BusPolicy::Open);
    let _daemon = Daemon::start(&format!(
        "bus = \"{}\"\n[sources.expdrv]\nenabled = false\n[sources.rtnetlink]\ninclude = [\"fbv0\"]\n{MONITORS}",
        bus.address()
    ));
    let watcher = watch(bus.address(), &[]);

    ip("link set fbv1 down");
    let got = watcher.until_json(T, |v| v["type"] == "fault");
    let f = got.last().unwrap();
    assert_eq!(f["type"], "fault", "{got:?}");
    assert_eq!(f["source"], "rtnetlink");
    assert_eq!(f["category"], "NIC");
    assert_eq!(f["keyword"], "fbv0");
    assert_eq!(f["event_code"], 0x0001_0001);
    assert_eq!(f["cleared"], false);
    let st = status(bus.address());
    assert_eq!(st["monitors"]["nic-auto"]["State"], "Error", "{st}");
    assert_eq!(st["monitors"]["nic-latched"]["State"], "Error", "{st}");
    assert_eq!(st["monitors"]["nic-other"]["State"], "Normal", "{st}");

    ip("link set fbv1 up");
    let got = watcher.until_json(T, |v| v["type"] == "fault");
    let f = got.last().unwrap();
    assert_eq!(
        (f["keyword"].as_str(), f["cleared"].as_bool()),
        (Some("fbv0"), Some(true))
    );
    assert_eq!(f["event_code"], 0x0001_0002);
    let st = status(bus.address());
    assert_eq!(st["monitors"]["nic-auto"]["State"], "Normal", "{st}");
    assert_eq!(st["monitors"]["nic-latched"]["State"], "Error", "{st}");
}

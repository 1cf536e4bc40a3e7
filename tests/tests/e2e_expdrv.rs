//! End-to-end: the driver simulator → the real `faultbridge run` daemon over
//! a real netlink socket → its JSON subscriber. Each test runs in a network
//! namespace of its own.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{Daemon, TempDir, binary, faultbridge, private_netns, source_stats};
use serde_json::Value;
use std::time::Duration;

const CONFIG: &str = "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_protocol = 2\nnetlink_group = 1\n";
const T: Duration = Duration::from_secs(10);

fn faults(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["type"] == "fault").collect()
}

#[test]
fn single_records_arrive_in_order_with_every_field_intact() {
    private_netns();
    let mut d = Daemon::start(CONFIG);
    faultbridge(&[
        "sim",
        "send",
        "-k",
        "NIC.eth0",
        "--severity",
        "fatal",
        "--event-code",
        "0x00010003",
        "--device-index",
        "7",
        "--detail-hex",
        "00ff10",
        "--driver-id",
        "9",
        "--count",
        "3",
    ]);
    faultbridge(&[
        "sim",
        "send",
        "-k",
        "FC.host3",
        "--clear",
        "--seq",
        "4",
        "--driver-id",
        "9",
    ]);
    let got = d.until(T, |v| v["sequence"] == 4);
    let f = faults(&got);
    assert_eq!(f.len(), 4, "{got:?}");
    for (i, v) in f[..3].iter().enumerate() {
        assert_eq!(v["sequence"], i as u64 + 1);
        assert_eq!(v["source"], "expdrv");
        assert_eq!(v["category"], "NIC");
        assert_eq!(v["keyword"], "eth0");
        assert_eq!(v["severity"], "fatal");
        assert_eq!(v["cleared"], false);
        assert_eq!(v["event_code"], 0x0001_0003);
        assert_eq!(v["device_index"], 7);
        assert_eq!(v["detail"], "00ff10");
        assert!(v["timestamp_ns"].as_u64().unwrap() > 0);
    }
    assert_eq!(f[3]["category"], "FC");
    assert_eq!(f[3]["keyword"], "host3");
    assert_eq!(f[3]["cleared"], true);
    assert_eq!(f[3]["event_code"], 0x0002_0002);
    let stats = d.stop();
    let s = source_stats(&stats, "expdrv");
    assert_eq!(s["received"], 4);
    assert_eq!(s["delivered"], 4);
    assert_eq!(s["lost"], 0);
    assert_eq!(s["malformed_total"], 0);
}

#[test]
fn multi_message_datagrams_are_walked_completely() {
    private_netns();
    let mut d = Daemon::start(CONFIG);
    // 500 records, 25 per datagram, cycling over three devices.
    faultbridge(&[
        "sim",
        "send",
        "-k",
        "NIC.eth0",
        "-k",
        "FC.host1",
        "-k",
        "HA/SS.vol1",
        "--count",
        "500",
        "--batch",
        "25",
    ]);
    let got = d.until(T, |v| v["sequence"] == 500);
    let f = faults(&got);
    assert_eq!(f.len(), 500);
    let keys = ["eth0", "host1", "vol1"];
    for (i, v) in f.iter().enumerate() {
        assert_eq!(v["sequence"], i as u64 + 1, "out of order at {i}");
        assert_eq!(v["keyword"], keys[i % 3]);
    }
    let stats = d.stop();
    let s = source_stats(&stats, "expdrv");
    assert_eq!(s["datagrams"], 20);
    assert_eq!(s["received"], 500);
    assert_eq!(s["lost"], 0);
}

#[test]
fn a_sequence_gap_is_reported_with_its_range() {
    private_netns();
    let mut d = Daemon::start(CONFIG);
    faultbridge(&["sim", "send", "--count", "2"]);
    faultbridge(&["sim", "send", "--seq", "10"]);
    let got = d.until(T, |v| v["sequence"] == 10);
    let lost: Vec<_> = got.iter().filter(|v| v["type"] == "lost").collect();
    assert_eq!(lost.len(), 1, "{got:?}");
    assert_eq!(lost[0]["first_sequence"], 3);
    assert_eq!(lost[0]["last_sequence"], 9);
    assert_eq!(lost[0]["count"], 7);
    assert_eq!(lost[0]["reason"], "sequence_gap");
    // the loss notice comes between record 2 and record 10
    let order: Vec<String> = got
        .iter()
        .map(|v| format!("{}{}", v["type"].as_str().unwrap(), v["sequence"]))
        .collect();
    assert_eq!(order, vec!["fault1", "fault2", "lostnull", "fault10"]);
    let stats = d.stop();
    assert_eq!(source_stats(&stats, "expdrv")["lost"], 7);
}

#[test]
fn reserved_message_types_are_counted_and_skipped() {
    private_netns();
    let mut d = Daemon::start(CONFIG);
    faultbridge(&["sim", "send"]);
    faultbridge(&["sim", "send", "--reserved-type", "18"]);
    faultbridge(&["sim", "send", "--seq", "2"]);
    let got = d.until(T, |v| v["sequence"] == 2);
    assert_eq!(faults(&got).len(), 2);
    let stats = d.stop();
    let s = source_stats(&stats, "expdrv");
    assert_eq!(s["reserved_types"], 1);
    assert_eq!(s["lost"], 0);
}

/// Sends a good record, one broken as `reason`, and another good one: the bad
/// one is counted under its reason; the others arrive untouched; its
/// sequence is reported lost (never silently).
fn malformed_case(reason: &str) {
    private_netns();
    let mut d = Daemon::start(CONFIG);
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--detail", "before"]);
    let out = faultbridge(&[
        "sim",
        "send",
        "-k",
        "NIC.eth0",
        "--seq",
        "2",
        "--malformed",
        reason,
    ]);
    assert!(out.contains(reason), "{out}");
    faultbridge(&[
        "sim", "send", "-k", "FC.host2", "--seq", "3", "--detail", "after",
    ]);
    let got = d.until(T, |v| v["sequence"] == 3);
    let f = faults(&got);
    assert_eq!(f.len(), 2, "{got:?}");
    assert_eq!(
        (f[0]["sequence"].as_u64(), f[0]["keyword"].as_str()),
        (Some(1), Some("eth0"))
    );
    assert_eq!(f[0]["detail"], "6265666f7265"); // "before"
    assert_eq!(
        (f[1]["sequence"].as_u64(), f[1]["keyword"].as_str()),
        (Some(3), Some("host2"))
    );
    assert_eq!(f[1]["detail"], "6166746572"); // "after"
    let lost: Vec<_> = got.iter().filter(|v| v["type"] == "lost").collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (
            lost[0]["first_sequence"].as_u64(),
            lost[0]["last_sequence"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let stats = d.stop();
    let s = source_stats(&stats, "expdrv");
    assert_eq!(s["malformed_total"], 1, "{s}");
    let by_reason = s["malformed"].as_array().unwrap();
    assert_eq!(by_reason.len(), 1, "{s}");
    assert_eq!(by_reason[0][0], reason);
    assert_eq!(by_reason[0][1], 1);
    assert_eq!(s["delivered"], 2);
}

macro_rules! malformed_tests {
    ($($name:ident => $reason:literal,)*) => {
        $(
            #[test]
            fn $name() {
                malformed_case($reason);
            }
        )*
    };
}

malformed_tests! {
    malformed_fewer_than_64_bytes => "short",
    malformed_wrong_magic => "bad_magic",
    malformed_wrong_version => "bad_version",
    malformed_header_len_below_64 => "bad_header_len",
    malformed_total_len_beyond_what_arrived => "bad_total_len",
    malformed_keyword_outside_the_record => "keyword_out_of_bounds",
    malformed_detail_outside_the_record => "detail_out_of_bounds",
    malformed_keyword_and_detail_overlap => "overlap",
    malformed_keyword_longer_than_1023 => "keyword_too_long",
    malformed_keyword_not_utf8 => "keyword_not_utf8",
    malformed_keyword_holding_nul => "keyword_nul",
    malformed_unknown_category => "unknown_category",
    malformed_unknown_severity => "unknown_severity",
    malformed_offset_zero_with_a_length => "length_without_offset",
}

#[test]
fn a_config_mistake_is_refused_with_its_line_and_column() {
    let dir = TempDir::new("badcfg");
    let cfg = dir.write(
        "bad.toml",
        "bus = \"none\"\n[sources.expdrv]\nnetlink_protocol = 2\nnetlink_group = 99\n",
    );
    let out = std::process::Command::new(binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4:17: netlink_group = 99: must be in 1..=32"),
        "{err}"
    );
}

#[test]
fn sigint_stops_the_daemon_cleanly_with_its_counters() {
    private_netns();
    let mut d = Daemon::start(CONFIG);
    faultbridge(&["sim", "send", "--count", "3"]);
    assert_eq!(faults(&d.until(T, |v| v["sequence"] == 3)).len(), 3);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let got = d.until(T, |v| v["type"] == "stats");
    assert_eq!(got.last().unwrap()["type"], "stats");
    assert!(d.child.wait().unwrap().success());
}

#[test]
fn a_driver_reload_is_noticed_and_its_missed_records_reported() {
    private_netns();
    let mut d = Daemon::start(CONFIG);
    faultbridge(&["sim", "send", "--seq", "100"]);
    // The driver was reloaded; the daemon missed records 1..=4 of the new
    // load. Record 5 alone could be a replay (delivered, counted behind the
    // cursor); record 6 continuing it confirms the reload.
    faultbridge(&["sim", "send", "--seq", "5"]);
    let got = d.until(T, |v| v["sequence"] == 5);
    assert!(got.iter().all(|v| v["type"] != "lost"), "{got:?}");
    faultbridge(&["sim", "send", "--seq", "6"]);
    let got = d.until(T, |v| v["sequence"] == 6);
    let lost: Vec<_> = got.iter().filter(|v| v["type"] == "lost").collect();
    assert_eq!(lost.len(), 1, "{got:?}");
    assert_eq!(
        (
            lost[0]["first_sequence"].as_u64(),
            lost[0]["last_sequence"].as_u64()
        ),
        (Some(1), Some(4))
    );
    // and gaps are seen again from the new cursor
    faultbridge(&["sim", "send", "--seq", "9"]);
    let got = d.until(T, |v| v["sequence"] == 9);
    let lost: Vec<_> = got.iter().filter(|v| v["type"] == "lost").collect();
    assert_eq!(
        (
            lost[0]["first_sequence"].as_u64(),
            lost[0]["last_sequence"].as_u64()
        ),
        (Some(7), Some(8))
    );
    let stats = d.stop();
    assert_eq!(source_stats(&stats, "expdrv")["restarts"], 1);
    assert_eq!(source_stats(&stats, "expdrv")["behind"], 1);
}

//! Who may make the bridge act, through the real daemon: a record sent by a
//! user-space process (as `nobody` and as root) is refused by the default
//! configuration and counted; `accept = "root"` takes root's and still
//! refuses `nobody`'s; and no record can poison the sequence check (a
//! forged sequence of 2^64-1, a replay). Each test runs in a network
//! namespace of its own.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{Daemon, binary, faultbridge, private_netns, source_stats};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const HEAD: &str = "bus = \"none\"\n[sources.expdrv]\nnetlink_protocol = 2\nnetlink_group = 1\n";

/// `faultbridge ARGS` run as `nobody` (uid and gid 65534, no groups).
fn as_nobody(args: &[&str]) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(binary())
        .args(args)
        .output()
        .expect("setpriv (util-linux) is needed to send as nobody");
    assert!(
        out.status.success(),
        "faultbridge {args:?} as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The refusals of `source` by reason, from the final stats line.
fn refused(stats: &Value, source: &str, reason: &str) -> u64 {
    source_stats(stats, source)["refused"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r[0] == reason))
        .map_or(0, |r| r[1].as_u64().unwrap())
}

fn faults(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .filter(|v| v["type"] == "fault")
        .map(|v| v["sequence"].as_u64().unwrap())
        .collect()
}

fn losses(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["type"] == "lost").collect()
}

#[test]
fn the_default_configuration_refuses_user_space_records_and_counts_them() {
    private_netns();
    let d = Daemon::start(HEAD);
    as_nobody(&["sim", "send", "-k", "NIC.eth0"]);
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--count", "2"]);
    as_nobody(&["sim", "send", "-k", "NIC.eth0", "--clear"]);
    let stats = d.stop();
    let s = source_stats(&stats, "expdrv");
    assert_eq!(refused(&stats, "expdrv", "user_space"), 4, "{s}");
    assert_eq!(s["datagrams"], 4, "{s}");
    assert_eq!(s["received"], 0, "{s}");
    assert_eq!(s["delivered"], 0, "{s}");
    assert_eq!(s["malformed_total"], 0, "{s}");
}

#[test]
fn accept_root_takes_roots_records_and_still_refuses_nobodys() {
    private_netns();
    let mut d = Daemon::start(&format!("{HEAD}accept = \"root\"\n"));
    as_nobody(&["sim", "send", "-k", "NIC.eth0", "--seq", "1"]);
    faultbridge(&["sim", "send", "-k", "NIC.eth1", "--seq", "2"]);
    let got = d.until(T, |v| v["sequence"] == 2);
    let keywords: Vec<_> = got
        .iter()
        .filter(|v| v["type"] == "fault")
        .map(|v| v["keyword"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keywords, ["eth1"], "{got:?}");
    let stats = d.stop();
    assert_eq!(refused(&stats, "expdrv", "not_root"), 1);
    assert_eq!(refused(&stats, "expdrv", "user_space"), 0);
    assert_eq!(source_stats(&stats, "expdrv")["delivered"], 1);
}

#[test]
fn a_forged_huge_sequence_and_a_replay_poison_nothing() {
    private_netns();
    let mut d = Daemon::start(&format!("{HEAD}accept = \"root\"\n"));
    let send = |seq: &str| faultbridge(&["sim", "send", "-k", "NIC.eth0", "--seq", seq]);
    send("10");
    send("11");
    // A forger's record with the highest sequence there is.
    send("18446744073709551615");
    // The real driver goes on: delivered, nothing reported lost, no reload.
    send("12");
    send("13");
    // A replay of a record already delivered.
    send("11");
    send("14");
    let got = d.until(T, |v| v["sequence"] == 14);
    assert_eq!(
        faults(&got),
        [10, 11, u64::MAX, 12, 13, 11, 14],
        "every record is delivered: {got:?}"
    );
    assert_eq!(
        losses(&got),
        Vec::<&Value>::new(),
        "nothing is invented lost"
    );
    let stats = d.stop();
    let s = source_stats(&stats, "expdrv");
    assert_eq!(s["implausible"], 1, "{s}");
    assert_eq!(s["behind"], 1, "{s}");
    assert_eq!(s["restarts"], 0, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(s["delivered"], 7, "{s}");
}

//! Device removal from real kernel uevents: the test creates and deletes a
//! veth pair in its own network namespace; the daemon inside that
//! namespace receives the uevents and reports each watched interface's
//! removal as a NIC fault. A second daemon in another namespace hears none
//! of it: the kernel sends a net device's uevents only to the namespace the
//! device lives in.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{Daemon, TempDir, binary, private_netns, source_stats};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const CONFIG: &str = "bus = \"none\"\n[sources.expdrv]\nenabled = false\n\
                      [sources.uevent]\nsubsystems = [\"net\", \"block\"]\ninclude = [\"fbu*\"]\n";

fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args} failed");
}

fn ifindex(name: &str) -> u64 {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.split(':').next().unwrap().trim().parse().unwrap()
}

#[test]
fn deleting_a_veth_in_the_tests_namespace_is_a_removal_fault() {
    private_netns();
    // A daemon in a namespace of its own, started before the veth exists.
    let dir = TempDir::new("uevent-elsewhere");
    let cfg = dir.write("faultbridge.toml", CONFIG);
    let mut elsewhere = Command::new("unshare")
        .arg("-n")
        .arg(binary())
        .args(["run", "--print", "json", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(elsewhere.stdout.take().unwrap()).lines();
    let ready: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ready["type"], "ready");

    let mut d = Daemon::start(CONFIG);
    ip("link add fbu0 type veth peer name fbu1");
    let (i0, i1) = (ifindex("fbu0"), ifindex("fbu1"));
    ip("link del fbu0");

    let mut faults: Vec<Value> = Vec::new();
    while faults.len() < 2 {
        let v = d.next(T).expect("no removal fault");
        assert_eq!(v["type"], "fault", "{v}");
        faults.push(v);
    }
    faults.sort_by_key(|v| v["keyword"].as_str().unwrap().to_string());
    for (f, (name, index)) in faults.iter().zip([("fbu0", i0), ("fbu1", i1)]) {
        assert_eq!(f["source"], "uevent");
        assert_eq!(f["category"], "NIC");
        assert_eq!(f["keyword"], name);
        assert_eq!(f["device_index"], index);
        assert_eq!(f["event_code"], 0x0001_00ff);
        assert_eq!(f["severity"], "error");
        assert_eq!(f["cleared"], false);
        let detail = f["detail"].as_str().unwrap();
        let detail = String::from_utf8(
            (0..detail.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&detail[i..i + 2], 16).unwrap())
                .collect(),
        )
        .unwrap();
        assert_eq!(detail, format!("remove@/devices/virtual/net/{name}"));
    }
    let stats = d.stop();
    let u = source_stats(&stats, "uevent");
    assert_eq!(u["delivered"], 2);
    // Every uevent of the pair reached the source: add and remove of two
    // net devices and of their queues.
    assert!(u["datagrams"].as_u64().unwrap() >= 4, "{u}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(elsewhere.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let rest: Vec<Value> = lines
        .map_while(Result::ok)
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert!(elsewhere.wait().unwrap().success());
    assert!(
        rest.iter().all(|v| v["type"] != "fault"),
        "another namespace heard the veth: {rest:?}"
    );
    let stats = rest.last().unwrap();
    assert_eq!(stats["type"], "stats");
    let heard = stats["stats"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "uevent")
        .map_or(0, |s| s["datagrams"].as_u64().unwrap());
    eprintln!("the other namespace received {heard} uevent(s), none of the veth's");
}

//! The cluster adapters' default commands, run by the real daemon with the
//! cluster's tools (`clprexec`, `attrd_updater`, `crm_resource`) played by scripts on PATH
//! that record their arguments.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{Daemon, TempDir, faultbridge, private_netns};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn expresscluster_and_pacemaker_adapters_run_their_default_commands() {
    private_netns();
    let bin = TempDir::new("cluster-tools");
    for name in ["clprexec", "crm_resource", "attrd_updater"] {
        recorder(bin.path(), name, "");
    }
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let d = Daemon::start_with(
        r#"bus = "none"
[sources.expdrv]
accept = "root"
netlink_protocol = 2
netlink_group = 1
[[monitor]]
name = "mrw-nic"
category = "NIC"
keyword = "eth0"
adapter = "expresscluster"
[[monitor]]
name = "mrw-fc-any"
category = "FC"
adapter = "pacemaker"
recovery_target = "vip-group"
node = "node-a"
"#,
        &[("PATH", &path)],
    );
    faultbridge(&["sim", "send", "-k", "NIC.eth0"]);
    assert_eq!(
        wait_calls(bin.path(), "clprexec", 1),
        vec!["--notice|-k|NIC.eth0|"]
    );
    faultbridge(&["sim", "send", "-k", "FC.host7", "--seq", "2"]);
    assert_eq!(
        wait_calls(bin.path(), "crm_resource", 1),
        vec!["--fail|--resource|vip-group|--node|node-a|"]
    );
    assert_eq!(
        wait_calls(bin.path(), "attrd_updater", 1),
        vec!["-n|faultbridge-mrw-fc-any|-U|0|"]
    );
    drop(d);
}

/// A stand-in for the cluster tool `name` that runs the shell lines
/// `before`, then appends its arguments to NAME.calls: one call per line,
/// each argument followed by `|` (so "a b" and "a" "b" differ).
fn recorder(dir: &Path, name: &str, before: &str) {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n{before}{{ printf '%s|' \"$@\"; echo; }} >> {}/{name}.calls\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn wait_calls(dir: &Path, name: &str, n: usize) -> Vec<String> {
    let p = dir.join(format!("{name}.calls"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls: Vec<String> = std::fs::read_to_string(&p)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if calls.len() >= n {
            return calls;
        }
        assert!(
            Instant::now() < deadline,
            "{name} ran {} times, not {n}: {calls:?}",
            calls.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_pacemaker_attribute_goes_to_0_on_a_trip_and_back_to_1_when_normal_again() {
    private_netns();
    let bin = TempDir::new("attrd");
    recorder(bin.path(), "attrd_updater", "");
    recorder(bin.path(), "crm_resource", "");
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let d = Daemon::start_with(
        r#"bus = "none"
[sources.expdrv]
accept = "root"
netlink_protocol = 2
netlink_group = 1
[[monitor]]
name = "nic-any"
category = "NIC"
adapter = "pacemaker"
auto_clear = true
[[monitor]]
name = "fc-named"
category = "FC"
adapter = "pacemaker"
attribute = "fc-paths-ok"
"#,
        &[("PATH", &path)],
    );
    // A keyword written like options and shell: the command line is the
    // configuration's alone.
    faultbridge(&["sim", "send", "-k", "NIC.-D;rm -rf x", "--detail=-U 7"]);
    assert_eq!(
        wait_calls(bin.path(), "attrd_updater", 1),
        vec!["-n|faultbridge-nic-any|-U|0|"]
    );
    faultbridge(&[
        "sim",
        "send",
        "-k",
        "NIC.-D;rm -rf x",
        "--clear",
        "--seq",
        "2",
    ]);
    assert_eq!(
        wait_calls(bin.path(), "attrd_updater", 2)[1],
        "-n|faultbridge-nic-any|-U|1|"
    );
    faultbridge(&["sim", "send", "-k", "FC.host1", "--seq", "3"]);
    assert_eq!(
        wait_calls(bin.path(), "attrd_updater", 3)[2],
        "-n|fc-paths-ok|-U|0|"
    );
    // Neither has a recovery_target: no crm_resource --fail.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!bin.path().join("crm_resource.calls").exists());
    drop(d);
}

#[test]
fn a_trip_a_clear_and_a_trip_while_attrd_updater_is_slow_set_0_1_0_in_order() {
    private_netns();
    let bin = TempDir::new("attrd-slow");
    recorder(bin.path(), "attrd_updater", "sleep 0.3\n");
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let d = Daemon::start_with(
        r#"bus = "none"
[sources.expdrv]
accept = "root"
netlink_protocol = 2
netlink_group = 1
[[monitor]]
name = "nic"
category = "NIC"
keyword = "eth0"
adapter = "pacemaker"
auto_clear = true
"#,
        &[("PATH", &path)],
    );
    // All three within the first call's 300 ms: the Normal waits for the
    // trip's action, and the second trip follows the Normal instead of
    // being coalesced into the first.
    faultbridge(&["sim", "send", "-k", "NIC.eth0"]);
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--clear", "--seq", "2"]);
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--seq", "3"]);
    assert_eq!(
        wait_calls(bin.path(), "attrd_updater", 3),
        vec![
            "-n|faultbridge-nic|-U|0|",
            "-n|faultbridge-nic|-U|1|",
            "-n|faultbridge-nic|-U|0|"
        ]
    );
    drop(d);
}

/// The ```python block of a page under docs/.
fn doc_example(page: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(page);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("```python\n").expect("a python example") + "```python\n".len();
    let len = text[start..].find("```").expect("the end of the example");
    text[start..start + len].to_string()
}

#[test]
fn the_exit_program_example_of_the_docs_runs_failover_then_start() {
    private_netns();
    let dir = TempDir::new("fbex-example");
    let prog = dir.write("web-exit", &doc_example("exit-program.md"));
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(&format!(
        r#"bus = "none"
[sources.expdrv]
accept = "root"
netlink_protocol = 2
netlink_group = 1
[[monitor]]
name = "mrw-eth0"
category = "NIC"
keyword = "eth0"
recovery_action = "failover"
recovery_target = "web-group"
adapter = "exit-program"
command = "{}"
exit_data = "site=tokyo"
timeout = "10s"
"#,
        prog.display()
    ));
    faultbridge(&["sim", "send", "-k", "NIC.eth0"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let want = [
        "Failover of web-group for mrw-eth0: NIC.eth0 sequence 1 event 0x00010001 restarts 0/1 data 'site=tokyo'",
        "Start of web-group for mrw-eth0: NIC.eth0 sequence 1",
    ];
    while !want.iter().all(|w| d.stderr().contains(w)) {
        assert!(
            Instant::now() < deadline,
            "the example's output is missing:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!d.stderr().contains("Undo"), "{}", d.stderr());
    drop(d);
}

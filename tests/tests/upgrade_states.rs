//! `faultbridge upgrade …` against the real daemon on a private bus: the
//! state model as the operator meets it (illegal requests refused naming
//! the state, a failing custom action leaving the step Broken until
//! `retry`, abort and finish), custom actions' variables, a second build
//! of the binary that reports another version, its Upgrade side receiving
//! beside the running daemon without acting, and root-only control.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{
    BusPolicy, LineReader, as_nobody, client, daemon_config, is_root, private_bus,
};
use faultbridge_tests::{Daemon, TempDir, alive, binary, faultbridge, private_netns, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The second build: the same code, reporting version `<package>+next`.
fn next_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_faultbridge-next"))
}

fn upgrade(bus: &str, args: &[&str]) -> Output {
    let mut a = vec!["upgrade"];
    a.extend_from_slice(args);
    client(bus, &a)
}

fn status(bus: &str) -> Value {
    let o = upgrade(bus, &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn at(s: &Value) -> (String, String) {
    (
        s["state"].as_str().unwrap().to_string(),
        s["operational"].as_str().unwrap().to_string(),
    )
}

fn state(bus: &str) -> (String, String) {
    at(&status(bus))
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

/// Asserts `args` is refused with a message naming `state`, and that the
/// state did not change.
fn refused(bus: &str, args: &[&str], state_name: &str) {
    let before = status(bus);
    let o = upgrade(bus, args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?} was not refused: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("org.faultbridge.Upgrade1.Error.Refused")
            && err.contains(&format!("in state {state_name}")),
        "{args:?}: {err}"
    );
    let after = status(bus);
    assert_eq!(at(&after), at(&before), "{args:?} changed the state");
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

const T: Duration = Duration::from_secs(20);

/// `busctl` calls `method` of `org.faultbridge.Upgrade1` on the Upgrade
/// side's own name (its reply as JSON with `json`).
fn upgrade_side(a: &str, method: &str, json: bool) -> Output {
    let address = format!("--address={a}");
    let mut args = vec![address.as_str()];
    if json {
        args.push("--json=short");
    }
    args.extend([
        "call",
        "org.faultbridge.Bridge1.Upgrade",
        "/org/faultbridge/Bridge1",
        "org.faultbridge.Upgrade1",
        method,
    ]);
    std::process::Command::new("busctl")
        .args(args)
        .output()
        .unwrap()
}

/// Ends the detached Upgrade side should the test stop half-way (it exits
/// by itself otherwise).
struct Reaper(u64);

impl Drop for Reaper {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn failing_custom_action_breaks_the_step_retry_succeeds_and_illegal_requests_are_refused() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("upgrade-actions");
    let log = dir.path().join("actions.log");
    let marker = dir.path().join("ready");
    let extra = format!(
        r#"
[[upgrade.action]]
command = '''/bin/sh -c 'echo "readiness $FAULTBRIDGE_UPGRADE_SIDE $FAULTBRIDGE_UPGRADE_STATE $FAULTBRIDGE_UPGRADE_REQUEST $FAULTBRIDGE_UPGRADE_SPLIT" >> {log}; test -e {marker}' '''
control = "readiness"

[[upgrade.action]]
command = '''/bin/sh -c 'echo "late $FAULTBRIDGE_UPGRADE_REQUEST" >> {log}' '''
control = "advanced"
timing = "late"

[[upgrade.action]]
command = '''/bin/sh -c 'echo "early $FAULTBRIDGE_UPGRADE_REQUEST $FAULTBRIDGE_UPGRADE_SPLIT" >> {log}' '''
control = "advanced"
timing = "early"
"#,
        log = log.display(),
        marker = marker.display()
    );
    let _daemon = Daemon::start(&daemon_config(&bus, &extra));
    let next = next_binary();
    let next_s = next.to_str().unwrap();
    // Every StateChanged signal, as a client nobody here wrote sees it.
    let mut cmd = std::process::Command::new("busctl");
    cmd.arg(format!("--address={a}"))
        .args(["monitor", "--json=short", "org.faultbridge.Bridge1"]);
    let monitor = LineReader::spawn(cmd);
    monitor.wait_stderr("Monitoring", T);
    std::thread::sleep(Duration::from_millis(200));

    assert_eq!(state(&a), pair("Idle", "Ready"));
    // Illegal from Idle: nothing to merge, commit, abort, finish or retry.
    for verb in ["merge", "commit", "abort", "finish", "retry"] {
        refused(&a, &[verb], "Idle");
    }

    // The readiness action fails: the check is Broken, split is refused.
    let o = upgrade(&a, &["check", "--new-binary", next_s]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Idle", "Broken"), "{s}");
    assert_eq!(s["failed_step"], "CheckReadiness");
    let activity = s["activity"].to_string();
    assert!(activity.contains("Error upgrade-action"), "{activity}");
    assert!(activity.contains("exited with 1"), "{activity}");
    refused(&a, &["split", "--new-binary", next_s], "Idle");

    // Fixed: retry runs the check again and succeeds.
    std::fs::write(&marker, "").unwrap();
    let o = upgrade(&a, &["retry"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Idle", "Ready"), "{s}");
    assert!(s["new_version"].as_str().unwrap().ends_with("+next"), "{s}");
    let activity = s["activity"].to_string();
    for finding in [
        "executable",
        "reports version",
        "accepts the running configuration",
        "hand-over state version",
    ] {
        assert!(activity.contains(finding), "no {finding:?} in {activity}");
    }

    // Split, then what Split does not allow.
    let o = upgrade(&a, &["split", "--new-binary", next_s]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(state(&a), pair("Split", "Ready"));
    for (verb, st) in [
        ("commit", "Split"),
        ("split", "Split"),
        ("check", "Split"),
        ("finish", "Split"),
    ] {
        refused(&a, &[verb], st);
    }
    // Abort from Split; abort again is refused; finish returns to Idle.
    let peer = status(&a)["peer"]["pid"].as_u64().unwrap();
    let o = upgrade(&a, &["abort"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(state(&a), pair("Abort", "Ready"));
    wait_until("the Upgrade side to exit", T, || !alive(peer));
    refused(&a, &["abort"], "Abort");
    refused(&a, &["merge"], "Abort");
    let o = upgrade(&a, &["finish"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(state(&a), pair("Idle", "Ready"));

    // The actions ran one after another, in timing order, with the
    // variables of each step.
    let got = lines(&log);
    let expect = [
        "early CheckReadiness No",
        "late CheckReadiness",
        "readiness Production Idle CheckReadiness No",
        "early CheckReadiness No",
        "late CheckReadiness",
        "readiness Production Idle CheckReadiness No",
        "early PrepareSplit No",
        "late PrepareSplit",
        "readiness Production PrepareSplit CheckReadiness No",
        "early ExecuteSplit Yes",
        "late ExecuteSplit",
        "early Abort No",
        "late Abort",
        "early Idle No",
        "late Idle",
    ];
    assert_eq!(got, expect);

    let mut seen = 0;
    let changes: Vec<(String, String, String)> = monitor
        .until_json(T, |v| {
            seen += usize::from(v["member"] == "StateChanged");
            seen == 11
        })
        .into_iter()
        .filter(|v| v["member"] == "StateChanged")
        .map(|v| {
            assert_eq!(v["interface"], "org.faultbridge.Upgrade1");
            assert_eq!(v["payload"]["type"], "sss");
            let d = &v["payload"]["data"];
            (
                d[0].as_str().unwrap().to_string(),
                d[1].as_str().unwrap().to_string(),
                d[2].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("Idle", "Busy"),
        ("Idle", "Broken"),
        ("Idle", "Busy"),
        ("Idle", "Ready"),
        // One request, two steps: Busy until both are done.
        ("PrepareSplit", "Busy"),
        ("Split", "Busy"),
        ("Split", "Ready"),
        ("Abort", "Busy"),
        ("Abort", "Ready"),
        ("Finish", "Busy"),
        ("Idle", "Ready"),
    ]
    .into_iter()
    .map(|(s, o)| (s.to_string(), o.to_string(), "Production".to_string()))
    .collect();
    assert_eq!(changes, want, "{}", monitor.stderr());
}

#[test]
fn two_builds_split_the_new_side_receives_without_acting_merge_moves_acting_and_abort_hands_it_back()
 {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("upgrade-split");
    let acted = dir.path().join("acted");
    let extra = format!(
        r#"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"
adapter = "exec"
command = '''/bin/sh -c 'echo "$FAULTBRIDGE_MONITOR $FAULTBRIDGE_SEQUENCE" >> {acted}' '''

[[monitor]]
name = "mrw2"
category = "NIC"
keyword = "eth1"
adapter = "exec"
command = '''/bin/sh -c 'echo "$FAULTBRIDGE_MONITOR $FAULTBRIDGE_SEQUENCE" >> {acted}' '''
"#,
        acted = acted.display()
    );
    let _daemon = Daemon::start(&daemon_config(&bus, &extra));
    let next = next_binary();
    let o = upgrade(&a, &["split", "--new-binary", next.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Split", "Ready"), "{s}");
    let ours = s["version"].as_str().unwrap().to_string();
    let theirs = s["peer"]["version"].as_str().unwrap().to_string();
    assert!(
        !ours.ends_with("+next") && theirs == format!("{ours}+next"),
        "{s}"
    );
    assert_eq!(s["peer"]["side"], "Upgrade");
    assert_eq!(s["peer"]["acting"], false);
    // The new binary's own --version tells the same.
    let v = std::process::Command::new(&next)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("faultbridge {theirs}")
    );

    // A fault while split: the old side acts once, the new one receives it.
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--group", "1"]);
    wait_until("the old side's action", T, || lines(&acted).len() == 1);
    wait_until("the Upgrade side to receive the fault", T, || {
        status(&a)["peer"]["sequences"]["expdrv"].as_u64() == Some(1)
    });
    // The Upgrade side is on the bus under its own name, read-only.
    let o = upgrade_side(&a, "Status", true);
    assert!(o.status.success(), "{}", text(&o));
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(
        body.contains("\"Upgrade\"") && body.contains(&theirs),
        "{body}"
    );
    let o = upgrade_side(&a, "Abort", false);
    assert!(
        !o.status.success(),
        "the Upgrade side took a request: {}",
        text(&o)
    );

    // Merge: acting and the bus name move to the new build, which now
    // answers and names the old one as its peer; abort (driven there)
    // hands acting back and the new side exits.
    let peer = s["peer"]["pid"].as_u64().unwrap();
    let _reaper = Reaper(peer);
    let o = upgrade(&a, &["merge"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Merge", "Ready"), "{s}");
    assert_eq!(s["side"], "Upgrade", "{s}");
    assert_eq!(s["version"].as_str(), Some(theirs.as_str()), "{s}");
    assert_eq!(s["pid"].as_u64(), Some(peer), "{s}");
    assert_eq!(s["peer"]["side"], "Production", "{s}");
    assert!(
        s["activity"]
            .to_string()
            .contains("acts from the record after the old side's last: expdrv driver 1 after #1"),
        "{s}"
    );
    let o = upgrade(&a, &["abort"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Abort", "Ready"), "{s}");
    assert_eq!(s["side"], "Production", "{s}");
    wait_until("the Upgrade side to exit", T, || !alive(peer));
    faultbridge(&["sim", "send", "-k", "NIC.eth1", "--group", "1"]);
    wait_until("the old side's second action", T, || {
        lines(&acted).len() == 2
    });
    std::thread::sleep(Duration::from_millis(300));
    let who: Vec<String> = lines(&acted)
        .iter()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(who, ["mrw1", "mrw2"], "an action ran twice or not at all");
    let o = upgrade(&a, &["finish"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Idle", "Ready"), "{s}");
    assert!(s.get("peer").is_none(), "{s}");

    // Upgraded after all: split, merge and commit; the new build is the
    // daemon, the old one has exited; finish, and it is the Production
    // side of the next upgrade.
    let old = s["pid"].as_u64().unwrap();
    let o = upgrade(&a, &["split", "--new-binary", next.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let new = status(&a)["peer"]["pid"].as_u64().unwrap();
    let _reaper2 = Reaper(new);
    let o = upgrade(&a, &["merge"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = upgrade(&a, &["commit"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_until("the old side to exit", T, || !alive(old));
    let o = upgrade(&a, &["finish"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Idle", "Ready"), "{s}");
    assert_eq!(
        (s["side"].as_str(), s["pid"].as_u64(), s["version"].as_str()),
        (Some("Production"), Some(new), Some(theirs.as_str())),
        "{s}"
    );
    // The monitors' latches came across both hand-overs.
    for m in ["mrw1", "mrw2"] {
        let o = client(&a, &["check", m]);
        assert_eq!(o.status.code(), Some(2), "{m}: {}", text(&o));
    }
}

#[test]
fn a_new_binary_that_cannot_take_the_state_or_the_history_is_refused() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("upgrade-refuse");
    let db = dir.path().join("history.db");
    let _daemon = Daemon::start(&daemon_config(
        &bus,
        &format!("[history]\npath = \"{}\"\n", db.display()),
    ));
    // A "new binary" that speaks another hand-over layout and an older
    // history schema than the database the daemon writes.
    let info = serde_json::json!({
        "version": "0.0.1-old",
        "handover_version": 999,
        "history_schema_min": 0,
        "history_schema_max": 1,
        "config_accepted": true,
        "config_error": null,
    });
    let fake = dir.write("faultbridge-old", &format!("#!/bin/sh\necho '{info}'\n"));
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = upgrade(&a, &["check", "--new-binary", fake.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Idle", "Broken"));
    let activity = s["activity"].to_string();
    assert!(
        activity.contains("hand-over state version 999"),
        "{activity}"
    );
    assert!(
        activity.contains("newer than the 1 the new binary reads"),
        "{activity}"
    );
    // Not a faultbridge at all: a check with another binary runs, and fails.
    let o = upgrade(&a, &["check", "--new-binary", "/bin/false"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Idle", "Broken"));
    assert!(
        s["activity"]
            .to_string()
            .contains("not a faultbridge that can be upgraded to"),
        "{s}"
    );
    // The real one passes.
    let o = upgrade(&a, &["check", "--new-binary", binary().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(state(&a), pair("Idle", "Ready"));
}

#[test]
fn only_root_drives_an_upgrade_anyone_reads_its_status() {
    private_netns();
    assert!(
        is_root(),
        "this test drops to user nobody: it needs the real root (not a user namespace)"
    );
    let bus = private_bus(BusPolicy::SystemLike);
    let a = bus.address().to_string();
    let _daemon = Daemon::start(&daemon_config(&bus, ""));
    let fb = binary();
    let o = as_nobody(&fb, &["upgrade", "status", "--json", "--bus", &a]);
    assert!(o.status.success(), "{}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(at(&s), pair("Idle", "Ready"));
    for verb in [
        "check", "split", "merge", "commit", "abort", "finish", "retry",
    ] {
        let o = as_nobody(&fb, &["upgrade", verb, "--bus", &a]);
        assert_eq!(o.status.code(), Some(1), "{verb}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("AccessDenied"),
            "{verb}: {}",
            text(&o)
        );
    }
    // Root may.
    let o = client(
        &a,
        &["upgrade", "check", "--new-binary", fb.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(state(&a), pair("Idle", "Ready"));
}

#[test]
fn upgrade1_is_there_again_after_the_bus_comes_back() {
    private_netns();
    let mut bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let daemon = Daemon::start(&daemon_config(&bus, ""));
    assert_eq!(state(&a), pair("Idle", "Ready"));
    bus.kill();
    wait_until("the daemon to see the bus gone", T, || {
        daemon.stderr().contains("was lost")
    });
    bus.restart().unwrap();
    wait_until("the daemon to be back on the bus", T, || {
        daemon.stderr().contains("owned again")
    });
    // Driven as before, on the new connection.
    let o = upgrade(&a, &["check", "--new-binary", binary().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&a);
    assert_eq!(at(&s), pair("Idle", "Ready"), "{s}");
    assert!(
        s["activity"].to_string().contains("reports version"),
        "{s}\n{}",
        daemon.stderr()
    );
}

#[test]
fn the_old_side_stopped_after_merge_exits_cleanly_and_commit_still_succeeds() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("upgrade-old-stopped");
    let acted = dir.path().join("acted");
    let daemon = Daemon::start(&daemon_config(
        &bus,
        &format!(
            r#"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"
adapter = "exec"
command = '''/bin/sh -c 'echo "$FAULTBRIDGE_MONITOR $FAULTBRIDGE_SEQUENCE" >> {acted}' '''
"#,
            acted = acted.display()
        ),
    ));
    let next = next_binary();
    let o = upgrade(&a, &["split", "--new-binary", next.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let new = status(&a)["peer"]["pid"].as_u64().unwrap();
    let _reaper = Reaper(new);
    let o = upgrade(&a, &["merge"]);
    assert!(o.status.success(), "{}", text(&o));
    // The old side is stopped (say by an operator) before the commit: it
    // exits cleanly, the new side acts on and the commit succeeds.
    let stats = daemon.stop();
    assert_eq!(stats["type"], "stats");
    let o = upgrade(&a, &["commit"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(state(&a), pair("Commit", "Ready"));
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--group", "1"]);
    wait_until("the new side's action", T, || lines(&acted) == ["mrw1 1"]);
    assert!(alive(new));
}

#[test]
fn the_upgrade_side_starts_from_the_running_sides_monitor_states() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let _daemon = Daemon::start(&daemon_config(
        &bus,
        "[[monitor]]\nname = \"mrw1\"\ncategory = \"NIC\"\nkeyword = \"eth0\"\n\
         [[monitor]]\nname = \"mrw2\"\ncategory = \"NIC\"\nkeyword = \"eth1\"\n",
    ));
    // mrw1 trips before the Upgrade side exists.
    faultbridge(&["sim", "send", "-k", "NIC.eth0", "--group", "1"]);
    wait_until("mrw1's Error", T, || {
        client(&a, &["check", "mrw1"]).status.code() == Some(2)
    });
    let next = next_binary();
    let o = upgrade(&a, &["split", "--new-binary", next.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let _reaper = Reaper(status(&a)["peer"]["pid"].as_u64().unwrap());
    let o = upgrade_side(&a, "Status", true);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let in_error = &v["data"][0]["monitors_in_error"]["data"];
    assert_eq!(in_error, &serde_json::json!(["mrw1"]), "{v}");
    let o = upgrade(&a, &["abort"]);
    assert!(o.status.success(), "{}", text(&o));
}

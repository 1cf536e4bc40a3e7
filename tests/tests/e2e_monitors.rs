//! External link monitors and recovery actions with real processes:
//! simulator fault → real netlink socket → the matching monitor (and only
//! it) in Error → its adapter's program runs with the right arguments and
//! environment. Each test has a network namespace of its own.
#![allow(clippy::unwrap_used)]

use faultbridge::activity::ActivityEntry;
use faultbridge::monitor::MonitorState;
use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Bridge, Config};
use faultbridge_ffi::wire::record::Category;
use faultbridge_tests::{TempDir, private_netns};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HEAD: &str = "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_protocol = 2\nnetlink_group = 1\n";

fn start(dir: &TempDir, monitors: &str) -> Bridge {
    let text = format!("{HEAD}{monitors}");
    let cfg = Config::parse(&text, &dir.path().join("t.toml")).unwrap();
    Bridge::start(&cfg).unwrap()
}

fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.write(name, body);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// An exec program that writes its argv and FAULTBRIDGE_* environment to OUT.
fn env_recorder(dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
    let out = dir.path().join(format!("{name}.out"));
    let p = script(
        dir,
        name,
        &format!(
            "#!/bin/sh\n{{ echo \"argv=$*\"; env | grep '^FAULTBRIDGE_' | sort; }} > {}.tmp && mv {}.tmp {}\n",
            out.display(),
            out.display(),
            out.display()
        ),
    );
    (p, out)
}

fn wait_file(p: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        // A file that exists but is still empty is being written.
        match std::fs::read_to_string(p) {
            Ok(s) if !s.is_empty() => return s,
            _ => {}
        }
        assert!(Instant::now() < deadline, "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kv(s: &str) -> HashMap<String, String> {
    s.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn state(b: &Bridge, name: &str) -> MonitorState {
    b.monitors().find(name).unwrap().1.state()
}

fn wait_state(b: &Bridge, name: &str, want: MonitorState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(b, name) != want {
        assert!(Instant::now() < deadline, "{name} never became {want:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_activity(
    b: &Bridge,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&[ActivityEntry]) -> bool,
) -> Vec<ActivityEntry> {
    let deadline = Instant::now() + timeout;
    loop {
        let log = b.activity().for_monitor(name);
        if pred(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "activity of {name} never matched: {log:#?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn fault(sim: &mut Simulator, cat: Category, kw: &str) -> u64 {
    sim.send(&FaultSpec::new(cat, kw)).unwrap()
}

#[test]
fn keyword_and_any_device_monitors_trip_and_run_exec_with_the_right_environment() {
    private_netns();
    let dir = TempDir::new("exec");
    let (eth0, eth0_out) = env_recorder(&dir, "on-eth0");
    let (any, any_out) = env_recorder(&dir, "on-any-nic");
    let (fc, fc_out) = env_recorder(&dir, "on-fc");
    let b = start(
        &dir,
        &format!(
            r#"
[[monitor]]
name = "mrw-eth0"
category = "NIC"
keyword = "eth0"
recovery_action = "failover"
recovery_target = "failover1"
final_action = "none"
adapter = "exec"
command = "{} --target {{recovery_target}}"
[[monitor]]
name = "mrw-any-nic"
category = "NIC"
recovery_action = "restart"
recovery_target = "web"
adapter = "exec"
command = "{}"
[[monitor]]
name = "mrw-fc"
category = "FC"
adapter = "exec"
command = "{}"
"#,
            eth0.display(),
            any.display(),
            fc.display()
        ),
    );
    let mut sim = Simulator::new(2, 1).unwrap();
    let mut f = FaultSpec::new(Category::Nic, "eth1");
    f.device_index = 5;
    sim.send(&f).unwrap();
    let got = kv(&wait_file(&any_out, Duration::from_secs(5)));
    assert_eq!(state(&b, "mrw-any-nic"), MonitorState::Error);
    assert_eq!(state(&b, "mrw-eth0"), MonitorState::Normal);
    assert_eq!(state(&b, "mrw-fc"), MonitorState::Normal);
    assert_eq!(got["FAULTBRIDGE_MONITOR"], "mrw-any-nic");
    assert_eq!(got["FAULTBRIDGE_CATEGORY"], "NIC");
    assert_eq!(got["FAULTBRIDGE_KEYWORD"], "eth1");
    assert_eq!(got["FAULTBRIDGE_SEVERITY"], "error");
    assert_eq!(got["FAULTBRIDGE_EVENT_CODE"], "0x00010001");
    assert_eq!(got["FAULTBRIDGE_SEQUENCE"], "1");
    assert_eq!(got["FAULTBRIDGE_RECOVERY_ACTION"], "restart");
    assert_eq!(got["FAULTBRIDGE_RECOVERY_TARGET"], "web");
    assert_eq!(got["FAULTBRIDGE_FINAL_ACTION"], "none");
    assert_eq!(got["FAULTBRIDGE_DEVICE_INDEX"], "5");

    fault(&mut sim, Category::Nic, "eth0");
    let got = kv(&wait_file(&eth0_out, Duration::from_secs(5)));
    assert_eq!(got["argv"], "--target failover1");
    assert_eq!(got["FAULTBRIDGE_MONITOR"], "mrw-eth0");
    assert_eq!(got["FAULTBRIDGE_KEYWORD"], "eth0");
    assert_eq!(got["FAULTBRIDGE_SEQUENCE"], "2");
    assert_eq!(got["FAULTBRIDGE_RECOVERY_ACTION"], "failover");
    assert_eq!(state(&b, "mrw-fc"), MonitorState::Normal);
    assert!(!fc_out.exists());
    // the exit value is recorded
    let log = wait_activity(&b, "mrw-eth0", Duration::from_secs(5), |l| {
        l.iter().any(|e| e.kind == "action-exit")
    });
    let exit = log.iter().find(|e| e.kind == "action-exit").unwrap();
    assert_eq!(exit.exit_code, Some(0));
}

#[test]
fn threshold_needs_count_faults_within_the_window() {
    private_netns();
    let dir = TempDir::new("threshold");
    let b = start(
        &dir,
        "[[monitor]]\nname = \"flappy\"\ncategory = \"NIC\"\nkeyword = \"eth0\"\nthreshold = { count = 3, window = \"400ms\" }\n",
    );
    let mut sim = Simulator::new(2, 1).unwrap();
    // two faults, then a pause longer than the window: no Error
    fault(&mut sim, Category::Nic, "eth0");
    fault(&mut sim, Category::Nic, "eth0");
    std::thread::sleep(Duration::from_millis(600));
    fault(&mut sim, Category::Nic, "eth0");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(state(&b, "flappy"), MonitorState::Normal);
    // two more within the window (with the previous one): Error
    fault(&mut sim, Category::Nic, "eth0");
    fault(&mut sim, Category::Nic, "eth0");
    wait_state(&b, "flappy", MonitorState::Error);
    assert_eq!(b.monitors().find("flappy").unwrap().1.error_count(), 5);
}

#[test]
fn auto_clear_reset_and_the_grace_period() {
    private_netns();
    let dir = TempDir::new("grace");
    let count = dir.path().join("count");
    let bump = script(
        &dir,
        "bump",
        &format!("#!/bin/sh\necho x >> {}\n", count.display()),
    );
    let b = start(
        &dir,
        &format!(
            "[[monitor]]\nname = \"auto\"\ncategory = \"FC\"\nkeyword = \"host1\"\nauto_clear = true\ngrace_period = \"30s\"\nadapter = \"exec\"\ncommand = \"{}\"\n[[monitor]]\nname = \"latched\"\ncategory = \"FC\"\nkeyword = \"host1\"\n",
            bump.display()
        ),
    );
    let mut sim = Simulator::new(2, 1).unwrap();
    fault(&mut sim, Category::Fc, "host1");
    wait_state(&b, "auto", MonitorState::Error);
    wait_state(&b, "latched", MonitorState::Error);
    assert_eq!(wait_file(&count, Duration::from_secs(5)), "x\n");
    sim.send(&FaultSpec::new(Category::Fc, "host1").clear())
        .unwrap();
    wait_state(&b, "auto", MonitorState::Normal);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        state(&b, "latched"),
        MonitorState::Error,
        "a CLEAR must not clear a latched monitor"
    );
    // second fault within the grace period: Error again, but no second action
    fault(&mut sim, Category::Fc, "host1");
    wait_state(&b, "auto", MonitorState::Error);
    wait_activity(&b, "auto", Duration::from_secs(5), |l| {
        l.iter().any(|e| e.kind == "suppressed")
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n");
    // Reset clears the latched one
    assert!(b.control().reset("latched").unwrap());
    assert_eq!(state(&b, "latched"), MonitorState::Normal);
    assert!(!b.control().reset("no-such-monitor").unwrap());
}

#[test]
fn an_inactive_recovery_target_means_no_action() {
    private_netns();
    let dir = TempDir::new("inactive");
    let (prog, out) = env_recorder(&dir, "act");
    let b = start(
        &dir,
        &format!(
            "[[monitor]]\nname = \"m\"\ncategory = \"SPS\"\nrecovery_target = \"grp1\"\ntarget_check = \"/bin/sh -c 'exit 1'\"\nadapter = \"exec\"\ncommand = \"{}\"\n",
            prog.display()
        ),
    );
    let mut sim = Simulator::new(2, 1).unwrap();
    fault(&mut sim, Category::Sps, "path0");
    let log = wait_activity(&b, "m", Duration::from_secs(5), |l| {
        l.iter().any(|e| e.kind == "not-performed")
    });
    assert!(
        log.iter()
            .any(|e| e.message.contains("\"grp1\" is inactive")),
        "{log:#?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !out.exists(),
        "the action ran although the target is inactive"
    );
    assert_eq!(state(&b, "m"), MonitorState::Error);
}

#[test]
fn a_hung_action_is_killed_at_its_timeout_while_another_monitor_is_served_on_time() {
    private_netns();
    let dir = TempDir::new("hung");
    let marker = dir.path().join("hung-started");
    // A duration no other process on the machine sleeps, so the check
    // below sees this test's sleepers only.
    let nap = format!("{}.5", 100_000 + std::process::id());
    let hung = script(
        &dir,
        "hang",
        &format!(
            "#!/bin/sh\necho started > {}\nsleep {nap} & sleep {nap}\n",
            marker.display()
        ),
    );
    let (quick, quick_out) = env_recorder(&dir, "quick");
    let b = start(
        &dir,
        &format!(
            "[[monitor]]\nname = \"hung\"\ncategory = \"HA/AM\"\nadapter = \"exec\"\ncommand = \"{}\"\ntimeout = \"1500ms\"\n[[monitor]]\nname = \"quick\"\ncategory = \"HA/RS\"\nadapter = \"exec\"\ncommand = \"{}\"\n",
            hung.display(),
            quick.display()
        ),
    );
    let mut sim = Simulator::new(2, 1).unwrap();
    fault(&mut sim, Category::HaAm, "app");
    wait_file(&marker, Duration::from_secs(5));
    let sent = Instant::now();
    fault(&mut sim, Category::HaRs, "res");
    wait_file(&quick_out, Duration::from_secs(5));
    let served = sent.elapsed();
    assert!(
        served < Duration::from_millis(1000),
        "the other monitor waited {served:?} behind the hung action"
    );
    let log = wait_activity(&b, "hung", Duration::from_secs(10), |l| {
        l.iter().any(|e| e.kind == "action-timeout")
    });
    assert!(
        log.iter()
            .any(|e| e.message.contains("process group was killed"))
    );
    // nothing of the hung action's process group survives
    std::thread::sleep(Duration::from_millis(200));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {nap}")])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "left over: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

/// An exit program written from the protocol page: parses the FBEX0100
/// block from stdin, logs what it got as JSON, and exits as PLAN says for
/// its action code.
const EXIT_PROGRAM: &str = r#"#!/usr/bin/python3
import json, os, struct, sys
code = int(sys.argv[1]); fmt = sys.argv[2]
blk = sys.stdin.buffer.read()
(length, action, prior, done, limit, flags, seq, ts, cat, sev, ev, dev, _r1) = struct.unpack_from("=IIIIIIQQHHIII", blk, 0)
name = blk[56:120].split(b"\0")[0].decode()
target = blk[120:184].split(b"\0")[0].decode()
catname = blk[184:216].split(b"\0")[0].decode()
kwoff, kwlen = struct.unpack_from("=HH", blk, 216)
kw = blk[kwoff:kwoff + kwlen].decode() if kwoff else ""
here = os.path.dirname(os.path.abspath(sys.argv[0]))
plan = json.load(open(os.path.join(here, "plan.json")))
rec = dict(argv1=code, fmt=fmt, length=length, len_ok=(length == len(blk)), action=action, prior=prior,
           done=done, limit=limit, flags=flags, seq=seq, cat=cat, sev=sev, ev=ev, dev=dev, name=name,
           target=target, catname=catname, kw=kw, data=os.environ.get("FAULTBRIDGE_EXIT_DATA"), cwd=os.getcwd())
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    f.write(json.dumps(rec) + "\n")
step = plan.get(str(code), 0)
if isinstance(step, list):
    n = sum(1 for l in open(os.path.join(here, "calls.jsonl")) if json.loads(l)["action"] == code)
    step = step[min(n, len(step)) - 1]
if step == "hang":
    import time; time.sleep(1000)
sys.exit(step)
"#;

fn exit_program_case(
    plan: &str,
    monitor: &str,
) -> (Vec<serde_json::Value>, Vec<ActivityEntry>, Bridge) {
    private_netns();
    let dir = TempDir::new("exitprog");
    let prog = script(&dir, "exitprog", EXIT_PROGRAM);
    dir.write("plan.json", plan);
    // A short timeout only where a call hangs on purpose: on a loaded
    // machine, starting Python alone can take most of a second.
    let timeout = if plan.contains("hang") { "1s" } else { "20s" };
    let b = start(
        &dir,
        &format!(
            "[[monitor]]\nname = \"xp\"\ncategory = \"NIC\"\nkeyword = \"eth0\"\nrecovery_target = \"grp1\"\nfailover_outside_server_group = true\nadapter = \"exit-program\"\ncommand = \"{}\"\nexit_data = \"hello exit\"\ntimeout = \"{timeout}\"\n{monitor}",
            prog.display()
        ),
    );
    let mut sim = Simulator::new(2, 1).unwrap();
    let mut f = FaultSpec::new(Category::Nic, "eth0");
    f.device_index = 3;
    sim.send(&f).unwrap();
    // Done when the last entry is a final outcome and nothing follows it
    // for a while (a busy machine may pause the worker between one call's
    // end and the next call's start).
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = wait_activity(&b, "xp", Duration::from_secs(30), |l| {
            let last = l.last();
            last.is_some_and(|e| e.kind != "action-start" && e.kind != "state")
                && l.iter().filter(|e| e.kind == "action-start").count()
                    == l.iter()
                        .filter(|e| e.kind == "action-exit" || e.kind == "action-timeout")
                        .count()
        });
        std::thread::sleep(Duration::from_millis(500));
        if b.activity().for_monitor("xp").len() == log.len() {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the activity of xp never settled"
        );
    };
    let calls = std::fs::read_to_string(dir.path().join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (calls, log, b)
}

fn codes(calls: &[serde_json::Value]) -> Vec<(u64, u64)> {
    calls
        .iter()
        .map(|c| (c["action"].as_u64().unwrap(), c["prior"].as_u64().unwrap()))
        .collect()
}

#[test]
fn exit_program_failover_then_start_with_the_block_as_specified() {
    let (calls, _log, b) = exit_program_case("{}", "recovery_action = \"failover\"\n");
    assert_eq!(codes(&calls), vec![(9, 0), (2, 0)]);
    let c = &calls[0];
    assert_eq!(c["argv1"], 9);
    assert_eq!(c["fmt"], "FBEX0100");
    assert_eq!(c["len_ok"], true);
    assert_eq!(c["length"], 224 + 4);
    assert_eq!(c["flags"], 1);
    assert_eq!(c["seq"], 1);
    assert_eq!(c["cat"], 1);
    assert_eq!(c["sev"], 2);
    assert_eq!(c["ev"], 0x0001_0001);
    assert_eq!(c["dev"], 3);
    assert_eq!(c["name"], "xp");
    assert_eq!(c["target"], "grp1");
    assert_eq!(c["catname"], "NIC");
    assert_eq!(c["kw"], "eth0");
    assert_eq!(c["data"], "hello exit");
    assert_eq!(c["cwd"], "/");
    assert_eq!(c["limit"], 1);
    assert_eq!(state(&b, "xp"), MonitorState::Error);
}

#[test]
fn exit_program_restart_restart_then_failover_at_the_limit() {
    let (calls, log, _b) = exit_program_case(
        r#"{"3": 2}"#,
        "recovery_action = \"restart\"\nrestart_limit = 2\n",
    );
    assert_eq!(codes(&calls), vec![(3, 0), (3, 0), (9, 0), (2, 0)]);
    let done: Vec<u64> = calls.iter().map(|c| c["done"].as_u64().unwrap()).collect();
    assert_eq!(done, vec![0, 1, 2, 2]);
    assert!(log.iter().any(|e| e.kind == "restart-limit"));
}

#[test]
fn exit_program_failure_is_undone_with_the_prior_code() {
    let (calls, log, _b) = exit_program_case(r#"{"9": 1}"#, "recovery_action = \"failover\"\n");
    assert_eq!(codes(&calls), vec![(9, 0), (15, 9)]);
    assert!(!log.iter().any(|e| e.kind == "indoubt"));
    let (calls, _log, _b) = exit_program_case(r#"{"3": 1}"#, "recovery_action = \"restart\"\n");
    assert_eq!(codes(&calls), vec![(3, 0), (15, 3)]);
}

#[test]
fn exit_program_failing_undo_leaves_the_monitor_in_error_indoubt() {
    let (calls, log, b) = exit_program_case(
        r#"{"9": 0, "2": 1, "15": 1}"#,
        "recovery_action = \"failover\"\n",
    );
    assert_eq!(codes(&calls), vec![(9, 0), (2, 0), (15, 2)]);
    assert!(
        log.iter()
            .any(|e| e.kind == "indoubt" && e.message.contains("Indoubt")),
        "{log:#?}"
    );
    assert_eq!(state(&b, "xp"), MonitorState::Error);
}

#[test]
fn exit_program_timeout_is_killed_and_undone() {
    let (calls, log, _b) =
        exit_program_case(r#"{"9": "hang"}"#, "recovery_action = \"failover\"\n");
    assert_eq!(codes(&calls), vec![(9, 0), (15, 9)]);
    assert!(log.iter().any(|e| e.kind == "action-timeout"), "{log:#?}");
}

#[test]
fn exit_program_end_node_is_not_undone() {
    let (calls, log, _b) = exit_program_case(r#"{"16": 1}"#, "recovery_action = \"final\"\n");
    assert_eq!(codes(&calls), vec![(16, 0)]);
    assert!(log.iter().any(|e| e.kind == "final-failed"), "{log:#?}");
}

#[test]
fn a_trip_after_reset_gets_its_action_even_while_the_old_one_still_runs() {
    private_netns();
    let dir = TempDir::new("reset-trip");
    let log = dir.path().join("runs");
    let slow = script(
        &dir,
        "slow",
        &format!(
            "#!/bin/sh\necho \"$FAULTBRIDGE_SEQUENCE\" >> {}\nsleep 1\n",
            log.display()
        ),
    );
    let b = start(
        &dir,
        &format!(
            "[[monitor]]\nname = \"m\"\ncategory = \"FC\"\nkeyword = \"host4\"\nadapter = \"exec\"\ncommand = \"{}\"\n",
            slow.display()
        ),
    );
    let mut sim = Simulator::new(2, 1).unwrap();
    fault(&mut sim, Category::Fc, "host4");
    assert_eq!(wait_file(&log, Duration::from_secs(5)), "1\n");
    // the first action is still sleeping: Reset, and the fault comes back
    assert!(b.control().reset("m").unwrap());
    fault(&mut sim, Category::Fc, "host4");
    wait_state(&b, "m", MonitorState::Error);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log).unwrap() != "1\n2\n" {
        assert!(
            Instant::now() < deadline,
            "the second Error got no action: {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = b.activity().for_monitor("m");
    assert!(!log.iter().any(|e| e.kind == "coalesced"), "{log:#?}");
}

//! `ocf:faultbridge:monitor` and the `pacemaker` adapter on a real
//! single-node corosync + Pacemaker cluster, started once for every step
//! (DC election is the slow part): `ocf-tester` passes on the agent, and
//! the agent fails as documented without its parameter, its programs or a
//! monitor the daemon knows; a veth carrier drop, seen by faultbridge on
//! rtnetlink, stops an `ocf:pacemaker:Dummy` resource through the agent's
//! node attribute and a location rule (one node: the resource is stopped,
//! there is nowhere to move it); the carrier's return leaves it stopped
//! (Error is latched, and the agent's monitor puts a drifted attribute back
//! to 0), a Reset starts it again; and `crm_resource --fail` raises the
//! resource's fail-count and Pacemaker recovers it. At the end no cluster
//! process is left.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{BusPolicy, daemon_config, private_bus};
use faultbridge_tests::pacemaker::{AGENT, Cluster, NODE, cluster_processes};
use faultbridge_tests::{Daemon, TempDir, faultbridge, private_netns, text};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// The agent's monitor interval in this test.
const AGENT_INTERVAL_MS: u64 = 2000;

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(o.status.success(), "ip {args:?}: {}", text(&o));
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

#[test]
fn agent_and_adapter_on_a_real_cluster() {
    private_netns();
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "add", "fb0", "type", "veth", "peer", "name", "fb1"]);
    ip(&["link", "set", "fb0", "up"]);
    ip(&["link", "set", "fb1", "up"]);
    let bus = private_bus(BusPolicy::Open);
    let cluster = Cluster::start();
    let d = Daemon::start_with(
        &daemon_config(
            &bus,
            &format!(
                r#"[sources.rtnetlink]
enabled = true
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "fb0"
adapter = "pacemaker"
[[monitor]]
name = "mrw-app"
category = "HA/AM"
keyword = "web"
adapter = "pacemaker"
recovery_target = "web"
node = "{NODE}"
attribute = ""
"#
            ),
        ),
        &[("PATH", &cluster.path)],
    );

    // --- ocf-tester, with an attribute of its own ---------------------------
    let o = Command::new("ocf-tester")
        .args(["-n", "fb-ocf-tester", "-o", "monitor=mrw1", "-o"])
        .arg(format!("bus={}", bus.address()))
        .args(["-o", "name=fb-ocf-tester", AGENT])
        .env("PATH", &cluster.path)
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("passed all tests"),
        "ocf-tester: {}",
        text(&o)
    );
    // Its stop deleted the attribute it had set.
    assert_eq!(cluster.attribute("fb-ocf-tester"), None);

    // --- the agent's own failures: configuration, programs, the daemon ------
    let agent = |action: &str, env: &[(&str, &str)], path: &str| {
        Command::new(AGENT)
            .arg(action)
            .env_clear()
            .env("PATH", path)
            .env("OCF_ROOT", "/usr/lib/ocf")
            .env("OCF_RESOURCE_INSTANCE", "fb-probe")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let bus_env = ("OCF_RESKEY_bus", bus.address());
    let o = agent("validate-all", &[bus_env], &cluster.path);
    assert_eq!(o.status.code(), Some(6), "no monitor: {}", text(&o));
    assert!(text(&o).contains("ocf-exit-reason:the monitor parameter"));
    let bad_name = [("OCF_RESKEY_monitor", "mrw1"), ("OCF_RESKEY_name", "-D")];
    let o = agent("validate-all", &bad_name, &cluster.path);
    assert_eq!(o.status.code(), Some(6), "name -D: {}", text(&o));
    let o = agent(
        "validate-all",
        &[("OCF_RESKEY_monitor", "mrw1")],
        "/usr/sbin:/usr/bin:/sbin:/bin",
    );
    assert_eq!(
        o.status.code(),
        Some(5),
        "no faultbridge in PATH: {}",
        text(&o)
    );
    assert!(text(&o).contains("faultbridge is not in PATH"));
    // A monitor the daemon does not know: start fails, says why, and leaves
    // the attribute at 0 (nothing watches that hardware); stop deletes it.
    let unknown = [bus_env, ("OCF_RESKEY_monitor", "no-such-monitor")];
    let o = agent("start", &unknown, &cluster.path);
    assert_eq!(o.status.code(), Some(1), "unknown monitor: {}", text(&o));
    assert!(
        text(&o).contains("ocf-exit-reason:faultbridge check no-such-monitor"),
        "{}",
        text(&o)
    );
    assert_eq!(
        cluster.attribute("faultbridge-no-such-monitor").as_deref(),
        Some("0")
    );
    let o = agent("stop", &unknown, &cluster.path);
    assert_eq!(o.status.code(), Some(0), "stop: {}", text(&o));
    cluster.wait("stop deletes the attribute", Duration::from_secs(5), || {
        cluster.attribute("faultbridge-no-such-monitor").is_none()
    });
    let o = agent("monitor", &unknown, &cluster.path);
    assert_eq!(o.status.code(), Some(7), "monitor after stop: {}", text(&o));

    // --- the agent cloned, a Dummy resource with the location rule ---------
    let state = TempDir::new("dummy");
    let web_state = state.path().join("web.state");
    cluster.add_agent_clone("mrw1", bus.address(), &format!("{AGENT_INTERVAL_MS}ms"));
    cluster.add_dummy_following("web", &web_state, "faultbridge-mrw1");
    let t = Duration::from_secs(30);
    cluster.wait("the agent sets faultbridge-mrw1=1", t, || {
        cluster.attribute("faultbridge-mrw1").as_deref() == Some("1")
    });
    cluster.wait("web runs", t, || {
        web_state.exists() && cluster.running("web")
    });

    // --- the carrier drops: the resource stops -------------------------------
    let dropped = Instant::now();
    ip(&["link", "set", "fb1", "down"]);
    cluster.wait(
        "the adapter sets faultbridge-mrw1=0",
        Duration::from_secs(10),
        || cluster.attribute("faultbridge-mrw1").as_deref() == Some("0"),
    );
    let to_attribute = dropped.elapsed();
    cluster.wait("Pacemaker stops web", Duration::from_secs(20), || {
        !web_state.exists()
    });
    let to_stop = dropped.elapsed();
    eprintln!(
        "carrier drop → attribute 0 in {:.0} ms, → web stopped in {:.0} ms",
        to_attribute.as_secs_f64() * 1e3,
        to_stop.as_secs_f64() * 1e3
    );
    assert!(
        d.stderr()
            .contains("attrd_updater -n faultbridge-mrw1 -U 0"),
        "the adapter did not run attrd_updater:\n{}",
        d.stderr()
    );

    // --- the carrier returns: Error is latched, the agent's monitor agrees --
    ip(&["link", "set", "fb1", "up"]);
    std::thread::sleep(Duration::from_millis(AGENT_INTERVAL_MS * 5 / 2));
    assert_eq!(
        cluster.attribute("faultbridge-mrw1").as_deref(),
        Some("0"),
        "the agent's monitor disagrees with the latched Error"
    );
    assert!(!cluster.running("web"), "web runs while mrw1 is in Error");
    // The agent reported its own health, not the fault: never restarted.
    assert_eq!(cluster.fail_count("fb-mrw1"), 0);
    // The attribute set to 1 behind faultbridge's back: the agent's next
    // monitor puts it back to 0, and web stops again.
    // (Seen at 1 first: a monitor just then could put it back unseen, so
    // once more if so.)
    let seen_at_1 = (0..2).any(|_| {
        cluster.ok("attrd_updater", &["-n", "faultbridge-mrw1", "-U", "1"]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(500) {
            if cluster.attribute("faultbridge-mrw1").as_deref() == Some("1") {
                return true;
            }
        }
        false
    });
    assert!(seen_at_1, "attrd_updater -U 1 never showed");
    cluster.wait(
        "the agent's monitor sets faultbridge-mrw1 back to 0",
        Duration::from_millis(AGENT_INTERVAL_MS * 3),
        || cluster.attribute("faultbridge-mrw1").as_deref() == Some("0"),
    );
    cluster.wait("web is stopped", t, || {
        !web_state.exists() && !cluster.running("web")
    });

    // --- Reset: the attribute is 1 again, the resource runs again -----------
    faultbridge(&["reset", "--bus", bus.address(), "mrw1"]);
    cluster.wait(
        "Reset sets faultbridge-mrw1=1",
        Duration::from_secs(10),
        || cluster.attribute("faultbridge-mrw1").as_deref() == Some("1"),
    );
    cluster.wait("web runs again", t, || {
        web_state.exists() && cluster.running("web")
    });

    // --- crm_resource --fail: fail-count rises, Pacemaker recovers ---------
    assert_eq!(cluster.fail_count("web"), 0);
    let started = mtime(&web_state).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    faultbridge(&["sim", "send", "-k", "HA/AM.web"]);
    cluster.wait("web's fail-count rises", Duration::from_secs(10), || {
        cluster.fail_count("web") >= 1
    });
    cluster.wait("Pacemaker restarts web", t, || {
        mtime(&web_state).is_some_and(|m| m > started) && cluster.running("web")
    });
    let log = d.stderr();
    assert!(
        log.contains(&format!("crm_resource --fail --resource web --node {NODE}")),
        "the adapter did not run crm_resource --fail:\n{log}"
    );

    // --- no cluster left behind -----------------------------------------------
    drop(d);
    cluster.stop();
    let left = cluster_processes();
    assert!(left.is_empty(), "cluster processes left running: {left:?}");
    assert!(
        !Path::new("/var/lib/pacemaker/cib/cib.xml").exists()
            || std::fs::read_to_string("/var/lib/pacemaker/cib/cib.xml")
                .is_ok_and(|s| !s.contains("fb-mrw1")),
        "the test's CIB was left in /var/lib/pacemaker/cib"
    );
}

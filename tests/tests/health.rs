//! A daemon that cannot hear a configured source never looks healthy:
//! a required source that cannot start stops the start (non-zero exit, no
//! READY); an optional one, or one that fails later, shows as down in
//! `Status`, `status`, the systemd `STATUS=` line and `check` ("unknown"
//! for the monitors it feeds), and is started again once it can be.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{BusPolicy, client, private_bus, require_real_root, status};
use faultbridge_tests::simdev::SimDevice;
use faultbridge_tests::{Daemon, TempDir, binary, faultbridge, private_netns, text};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A netlink protocol no kernel implements: a source on it cannot start.
const NO_SUCH_PROTOCOL: &str = "31";

/// Datagrams on a notify socket (what systemd would receive).
struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
    got: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &TempDir) -> NotifySocket {
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        // Any user may send (the daemon may run as nobody).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            got: Vec::new(),
        }
    }

    /// Reads for up to `timeout`, until `pred` holds for a datagram.
    fn until(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = pred(&m);
                self.got.push(m);
                if hit {
                    return true;
                }
            }
        }
        false
    }
}

fn check(bus: &str, monitor: &str) -> (i32, String) {
    let out = client(bus, &["check", monitor, "--timeout", "2000"]);
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Polls `status --json` until `pred` holds (or fails after `timeout`).
fn wait_status(bus: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(bus);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {timeout:?}; last Status: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_required_source_that_cannot_start_ends_the_start_without_ready() {
    require_real_root("running the daemon as nobody, without CAP_NET_ADMIN");
    private_netns();
    let dir = TempDir::new("health-required");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.write(
        "f.toml",
        "bus = \"none\"\n[sources.expdrv]\nnetlink_group = 3\n",
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut notify = NotifySocket::bind(&dir);
    let mut child = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(binary())
        .args(["run", "--print", "json", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the daemon runs without its only source"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("\"ready\""),
        "{all}"
    );
    assert!(all.contains("source expdrv: cannot start"), "{all}");
    assert!(all.contains("Operation not permitted"), "{all}");
    assert!(all.contains("CAP_NET_ADMIN"), "the cause is named: {all}");
    assert!(
        all.contains("optional = true"),
        "the way out is named: {all}"
    );
    notify.until(Duration::from_millis(300), |_| false);
    assert!(
        !notify.got.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "READY=1 sent by a daemon that did not start: {:?}",
        notify.got
    );
    // The service manager hears at once that the start failed, and why
    // (start-stop-daemon --notify-await and systemd stop waiting).
    assert!(
        notify.got.iter().any(|m| {
            m.lines().any(|l| l == "ERRNO=1")
                && m.lines()
                    .any(|l| l.starts_with("STATUS=cannot start: source expdrv"))
        }),
        "no ERRNO=1 (EPERM) with a STATUS= saying why: {:?}",
        notify.got
    );
}

#[test]
fn an_optional_source_that_cannot_start_is_degraded_in_status_and_check() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let addr = bus.address().to_string();
    let dir = TempDir::new("health-optional");
    let mut notify = NotifySocket::bind(&dir);
    let config = format!(
        "bus = \"{addr}\"\n\
         [sources.expdrv]\naccept = \"root\"\nnetlink_protocol = 2\nnetlink_group = 1\n\
         [sources.fc]\noptional = true\nnetlink_protocol = {NO_SUCH_PROTOCOL}\n\
         [[monitor]]\nname = \"fc1\"\ncategory = \"FC\"\n\
         [[monitor]]\nname = \"nic1\"\ncategory = \"NIC\"\n"
    );
    let d = Daemon::start_with(&config, &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())]);
    assert!(
        d.stderr()
            .contains("warning: running DEGRADED: source fc-transport down"),
        "{}",
        d.stderr()
    );
    assert!(
        notify.until(Duration::from_secs(5), |m| m
            .lines()
            .any(|l| l == "READY=1")),
        "an optional source down still lets the daemon start: {:?}",
        notify.got
    );
    assert!(
        notify.until(Duration::from_secs(8), |m| {
            m.starts_with("STATUS=DEGRADED: source fc-transport down")
        }),
        "STATUS= says degraded: {:?}",
        notify.got
    );

    let s = status(&addr);
    assert_eq!(s["health"], "degraded", "{s}");
    assert_eq!(s["source_states"]["expdrv"], "running", "{s}");
    let fc = s["source_states"]["fc-transport"].as_str().unwrap_or("");
    assert!(fc.starts_with("down: "), "{s}");
    assert!(fc.contains("protocol 31"), "the cause is named: {s}");
    assert_eq!(s["monitors"]["nic1"]["Degraded"], "", "{s}");
    assert!(
        s["monitors"]["fc1"]["Degraded"]
            .as_str()
            .is_some_and(|d| d.contains("fc-transport")),
        "{s}"
    );
    let out = client(&addr, &["status"]);
    let t = text(&out);
    assert!(t.contains("health: DEGRADED"), "{t}");
    assert!(t.contains("fc-transport   DOWN ("), "{t}");
    assert!(t.contains("(unknown: source fc-transport is down"), "{t}");

    // The monitor fed by the source that is down: unknown, not Normal.
    let (code, out) = check(&addr, "fc1");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("fc1: unknown (source fc-transport is down"),
        "{out}"
    );
    let ocf = client(&addr, &["check", "--ocf", "fc1"]);
    assert_eq!(ocf.status.code(), Some(1), "{}", text(&ocf));
    // One whose sources all run: Normal.
    assert_eq!(check(&addr, "nic1").0, 0);
    // busctl reads the property as any D-Bus client would.
    let busctl = Command::new("busctl")
        .args([
            "--address",
            &addr,
            "get-property",
            "org.faultbridge.Bridge1",
            "/org/faultbridge/Bridge1/monitor/fc1",
            "org.faultbridge.Monitor1",
            "Degraded",
        ])
        .output()
        .unwrap();
    let b = text(&busctl);
    assert!(busctl.status.success() && b.contains("fc-transport"), "{b}");

    // A fault the running source did deliver: Error is known, down or not.
    faultbridge(&["sim", "send", "-k", "FC.host1", "--seq", "1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while check(&addr, "fc1").0 != 2 {
        assert!(Instant::now() < deadline, "fc1 never went into Error");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Retried with a growing delay, and told each time.
    let s = wait_status(&addr, Duration::from_secs(10), "a retry", |s| {
        s["source_states"]["fc-transport"]
            .as_str()
            .is_some_and(|f| f.starts_with("down"))
            && d.stderr().contains("faultbridge: running")
    });
    assert_eq!(s["health"], "degraded");
    d.stop();
}

#[test]
fn a_device_that_fails_at_run_time_is_reported_and_read_again_once_back() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let addr = bus.address().to_string();
    let simdir = TempDir::new("health-device");
    let mut sim = SimDevice::start_in(simdir.path(), &[]);
    let config = format!(
        "bus = \"{addr}\"\n\
         [sources.expdrv]\naccept = \"root\"\ndevice = \"{}\"\nresync_interval = \"50ms\"\n\
         [[monitor]]\nname = \"nic1\"\ncategory = \"NIC\"\nkeyword = \"eth0\"\n",
        sim.device.display()
    );
    let mut d = Daemon::start(&config);
    let s = status(&addr);
    assert_eq!(s["health"], "ok", "{s}");
    assert_eq!(s["source_states"]["expdrv-device"], "running", "{s}");
    assert_eq!(check(&addr, "nic1").0, 0);

    // The driver goes away: the daemon says so, everywhere.
    sim.stop();
    let s = wait_status(&addr, Duration::from_secs(10), "the device down", |s| {
        s["health"] == "degraded"
    });
    let st = s["source_states"]["expdrv-device"].as_str().unwrap_or("");
    assert!(
        st.starts_with("down: ") && st.contains("read failed"),
        "{s}"
    );
    let (code, out) = check(&addr, "nic1");
    assert_eq!(code, 1, "a deaf monitor is not Normal: {out}");
    assert!(
        out.contains("unknown (source expdrv-device is down"),
        "{out}"
    );

    // It comes back: read again (after a resync), and healthy again.
    let mut sim = SimDevice::start_in(simdir.path(), &["--seq", "10"]);
    wait_status(
        &addr,
        Duration::from_secs(20),
        "the device running again",
        |s| s["health"] == "ok" && s["source_states"]["expdrv-device"] == "running",
    );
    assert!(
        d.stderr().contains("reading it again"),
        "the restart is told: {}",
        d.stderr()
    );
    assert_eq!(check(&addr, "nic1").0, 0);
    sim.send("fault NIC.eth0");
    let got = d.until(Duration::from_secs(10), |v| {
        v["type"] == "fault" && v["keyword"] == "eth0"
    });
    assert!(
        got.last().is_some_and(|v| v["keyword"] == "eth0"),
        "a record after the restart arrives: {got:?}\n{}",
        d.stderr()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while check(&addr, "nic1").0 != 2 {
        assert!(Instant::now() < deadline, "nic1 never went into Error");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
}

/// `CMD | head -1` in bash: (CMD's exit status, what CMD wrote on stderr,
/// what head printed).
fn into_head(dir: &TempDir, cmd: &str) -> (i32, String, String) {
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("{cmd} 2>stderr.txt | head -1; echo \"status ${{PIPESTATUS[0]}}\""),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    let code = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("status "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1);
    (code, stderr, stdout)
}

#[test]
fn client_commands_end_quietly_when_their_reader_goes() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let addr = bus.address().to_string();
    let dir = TempDir::new("health-pipe");
    let db = dir.path().join("history.db");
    let config = format!(
        "bus = \"{addr}\"\n\
         [sources.expdrv]\naccept = \"root\"\nnetlink_protocol = 2\nnetlink_group = 1\n\
         [history]\npath = \"{}\"\n",
        db.display()
    );
    let d = Daemon::start(&config);
    // More rows than a pipe holds, so the writer meets a closed pipe.
    faultbridge(&["sim", "flood", "--rate", "20000", "--count", "3000"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = client(&addr, &["history", "--limit", "5000"]);
        if text(&out).lines().count() > 3000 {
            break;
        }
        assert!(Instant::now() < deadline, "history never held 3000 rows");
        std::thread::sleep(Duration::from_millis(200));
    }
    let me = binary();
    let me = me.display();
    for cmd in [
        format!("{me} history --bus '{addr}' --limit 5000"),
        format!("{me} history --db '{}' --limit 5000", db.display()),
        format!("{me} status --bus '{addr}'"),
        format!("{me} man"),
    ] {
        for _ in 0..3 {
            let (code, stderr, stdout) = into_head(&dir, &cmd);
            assert!(
                code == 0 || code == 141,
                "{cmd}: exit {code} (0, or 141 for SIGPIPE, like any Unix tool)\n{stderr}"
            );
            assert!(stderr.is_empty(), "{cmd}: said on stderr: {stderr}");
            assert!(stdout.lines().count() == 2, "{cmd}: {stdout}");
        }
    }
    d.stop();
}

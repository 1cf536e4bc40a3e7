//! Helpers for the D-Bus end-to-end tests: a private `dbus-daemon` per test
//! on a `unix:path=` socket in a temporary directory (never an abstract
//! socket, never the real system bus), with an open policy or with the
//! system bus's default-deny policy plus faultbridge's shipped policy file;
//! and readers for the line-oriented D-Bus clients the tests use
//! (`faultbridge watch --json`, `busctl monitor --json=short`,
//! `gdbus monitor`).
#![allow(clippy::unwrap_used)]

use crate::binary;
use faultbridge::dbus::private_bus::PrivatePolicy;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The policy file faultbridge ships (`dist/dbus/org.faultbridge.Bridge1.conf`).
pub fn policy_file() -> PathBuf {
    crate::repo()
        .join("dist/dbus/org.faultbridge.Bridge1.conf")
        .canonicalize()
        .unwrap()
}

/// Which policy the private bus enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusPolicy {
    /// Everything allowed (a session-bus-like bus).
    Open,
    /// The system bus's default policy of Debian's `system.conf` (deny
    /// owning and method calls unless a service's file allows them), with
    /// the shipped `org.faultbridge.Bridge1.conf` included.
    SystemLike,
    /// Connections accepted, nothing ever received, not even the reply to
    /// `Hello` ([`PrivatePolicy::Silent`]).
    Silent,
}

pub use faultbridge::dbus::private_bus::PrivateBus;

/// Starts a private bus for a test (the project's one launcher,
/// [`faultbridge::dbus::private_bus`]); panics with the reason when it
/// cannot.
pub fn private_bus(policy: BusPolicy) -> PrivateBus {
    let p = match policy {
        BusPolicy::Open => PrivatePolicy::Open,
        BusPolicy::SystemLike => PrivatePolicy::SystemLike {
            include: vec![policy_file()],
        },
        BusPolicy::Silent => PrivatePolicy::Silent,
    };
    PrivateBus::start("test-dbus", &p).unwrap_or_else(|e| {
        let why = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
        panic!("{e}{why}; scripts/test.sh installs dbus-daemon")
    })
}

/// A daemon configuration on `bus` reading the simulator's group 1, with
/// `extra` TOML after it (monitors, `[ingest]`).
pub fn daemon_config(bus: &PrivateBus, extra: &str) -> String {
    format!(
        "bus = \"{}\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_protocol = 2\nnetlink_group = 1\n{extra}",
        bus.address()
    )
}

/// A line-reading child process (a D-Bus client), killed on drop.
#[derive(Debug)]
pub struct LineReader {
    pub child: Child,
    lines: Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl LineReader {
    /// Spawns `cmd` and reads its stdout line by line.
    pub fn spawn(mut cmd: Command) -> LineReader {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        LineReader {
            child,
            lines: rx,
            stderr,
        }
    }

    /// What the child wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr holds `text`.
    pub fn wait_stderr(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} on stderr within {timeout:?}; stderr so far:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The next line, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Lines until one satisfies `pred` (returned last) or `timeout`.
    pub fn until(&self, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> Vec<String> {
        crate::recv_until(&self.lines, timeout, |l: &String| pred(l))
    }

    /// JSON lines until one satisfies `pred` or `timeout`; non-JSON lines
    /// are skipped.
    pub fn until_json(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let mut got = Vec::new();
        self.until(timeout, |l| match serde_json::from_str::<Value>(l) {
            Ok(v) => {
                let done = pred(&v);
                got.push(v);
                done
            }
            Err(_) => false,
        });
        got
    }
}

impl Drop for LineReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `faultbridge watch --bus ADDRESS --json ARGS…`, once it is listening.
pub fn watch(bus: &str, args: &[&str]) -> LineReader {
    let mut cmd = Command::new(binary());
    cmd.args(["watch", "--bus", bus, "--json"]).args(args);
    let w = LineReader::spawn(cmd);
    w.wait_stderr("listening", Duration::from_secs(10));
    w
}

/// `faultbridge SUBCOMMAND --bus ADDRESS ARGS…` to completion (`args`
/// starts with the subcommand).
pub fn client(bus: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .args(&args[..1])
        .args(["--bus", bus])
        .args(&args[1..])
        .output()
        .unwrap()
}

/// `cmd ARGS…` as user `nobody`, group `nogroup`, no supplementary groups.
pub fn as_nobody(cmd: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(cmd)
        .args(args)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

/// A command line that runs as `nobody` (for long-running clients).
pub fn nobody_command(cmd: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(cmd)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("HOME", "/nonexistent");
    c
}

/// Fails the test, saying why, unless it runs as the real root: `what`
/// needs it (switching users does not work in a user namespace).
pub fn require_real_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs the real root, not a user namespace (run the end-to-end tests as root, as CI does); this test cannot run here"
    );
}

/// Makes the `faultbridge` system group and user when the machine has none
/// (what the packages' sysusers.d file does on a real host).
pub fn ensure_service_user() {
    let have = |db: &str| {
        std::process::Command::new("getent")
            .args([db, "faultbridge"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("group") {
        let st = std::process::Command::new("groupadd")
            .args(["--system", "faultbridge"])
            .status()
            .unwrap();
        assert!(st.success(), "groupadd faultbridge failed");
    }
    if !have("passwd") {
        let st = std::process::Command::new("useradd")
            .args([
                "--system",
                "--gid",
                "faultbridge",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "faultbridge",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "useradd faultbridge failed");
    }
}

/// True when running as the real root (needed to drop to `nobody`).
pub fn is_root() -> bool {
    nix::unistd::Uid::current().is_root()
        && std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| {
                m.split_whitespace().collect::<Vec<_>>().get(..3) == Some(&["0", "0", "4294967295"])
            })
            .unwrap_or(false)
}

/// A field of `/proc/PID/status` given in kB (`"VmRSS:"` the resident
/// set now, `"VmHWM:"` its peak), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The value of `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The daemon's `Status` as JSON (`faultbridge status --json`).
pub fn status(bus: &str) -> Value {
    let out = client(bus, &["status", "--json"]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

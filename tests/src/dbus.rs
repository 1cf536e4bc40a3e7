//! Helpers for the D-Bus end-to-end tests: a private `dbus-daemon` per test
//! on a `unix:path=` socket in a temporary directory (never an abstract
//! socket, never the real system bus), with an open policy or with the
//! system bus's default-deny policy plus faultbridge's shipped policy file;
//! and readers for the line-oriented D-Bus clients the tests use
//! (`faultbridge watch --json`, `busctl monitor --json=short`,
//! `gdbus monitor`).
#![allow(clippy::unwrap_used)]

use crate::{TempDir, binary};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// The policy file faultbridge ships (`dist/dbus/org.faultbridge.Bridge1.conf`).
pub fn policy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
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
}

/// A private `dbus-daemon`, killed on drop.
#[derive(Debug)]
pub struct PrivateBus {
    child: Child,
    address: String,
    socket: PathBuf,
    dir: TempDir,
}

const HEADER: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">"#;

/// The default context of Debian's `/usr/share/dbus-1/system.conf`.
const SYSTEM_DEFAULT_POLICY: &str = r#"
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
"#;

impl PrivateBus {
    /// Starts a bus with `policy` and waits until it accepts connections.
    pub fn start(policy: BusPolicy) -> PrivateBus {
        let dir = TempDir::new("dbus");
        // Unprivileged clients must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus");
        let (kind, body) = match policy {
            BusPolicy::Open => (
                "session",
                r#"
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
"#
                .to_string(),
            ),
            BusPolicy::SystemLike => (
                "system",
                format!(
                    "{SYSTEM_DEFAULT_POLICY}  <include>{}</include>\n",
                    policy_file().display()
                ),
            ),
        };
        let conf = dir.write(
            "bus.conf",
            &format!(
                "{HEADER}\n<busconfig>\n  <type>{kind}</type>\n  <listen>unix:path={}</listen>\n  <auth>EXTERNAL</auth>\n{body}</busconfig>\n",
                socket.display()
            ),
        );
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "cannot run dbus-daemon: scripts/test.sh installs it (Debian package dbus-daemon)",
            );
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim().is_empty() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("dbus-daemon did not start: {err}");
        }
        // Its complaints (such as not raising the fd limit) are not the test's.
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        PrivateBus {
            child,
            address: format!("unix:path={}", socket.display()),
            socket,
            dir,
        }
    }

    /// `unix:path=…`
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the bus now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.kill();
    }
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
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Lines until one satisfies `pred` (returned last) or `timeout`.
    pub fn until(&self, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(l) => {
                    let done = pred(&l);
                    got.push(l);
                    if done {
                        break;
                    }
                }
                None => break,
            }
        }
        got
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

/// `faultbridge --bus ADDRESS watch --json ARGS…`, once it is listening.
pub fn watch(bus: &str, args: &[&str]) -> LineReader {
    let mut cmd = Command::new(binary());
    cmd.args(["--bus", bus, "watch", "--json"]).args(args);
    let w = LineReader::spawn(cmd);
    w.wait_stderr("listening", Duration::from_secs(10));
    w
}

/// `faultbridge ARGS…` (with `--bus ADDRESS` first) to completion.
pub fn client(bus: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .args(["--bus", bus])
        .args(args)
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

/// True when running as the real root (needed to drop to `nobody`).
pub fn is_root() -> bool {
    nix::unistd::Uid::current().is_root()
        && std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| {
                m.split_whitespace().collect::<Vec<_>>().get(..3) == Some(&["0", "0", "4294967295"])
            })
            .unwrap_or(false)
}

/// The value of `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
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

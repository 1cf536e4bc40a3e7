//! Helpers for the end-to-end tests: find (or build) the real `faultbridge`
//! binary, give each test a network namespace of its own, and run the daemon
//! with its JSON event stream read line by line.
#![allow(clippy::unwrap_used)]

pub mod dbus;
pub mod nats;
pub mod pacemaker;
pub mod rpmspec;
pub mod simdev;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The workspace's `target/<profile>` directory of this test binary (or
/// of a program of this crate, such as `pacemaker-figures`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>, or target/<profile>/<program>
    let dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A finished command's exit code, stdout and stderr, for assertion
/// messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether process `pid` is running (a zombie counts as gone).
pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// The workspace's root (the repository checkout).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lies in the workspace")
        .to_path_buf()
}

/// The real `faultbridge` binary, built once if this test run did not build it.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = target_dir();
        let bin = dir.join("faultbridge");
        if !bin.exists() {
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-p", "faultbridge", "--bin", "faultbridge"]);
            if release {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("cannot run cargo to build faultbridge");
            assert!(st.success(), "building the faultbridge binary failed");
        }
        assert!(bin.exists(), "no faultbridge binary at {}", bin.display());
        bin
    })
    .clone()
}

/// Moves the calling thread (and every process and thread it starts from
/// now on) into a network namespace of its own, so netlink multicast groups
/// and interfaces of concurrent tests never meet. Needs root (or run the
/// suite under `unshare -Urn`).
pub fn private_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
        panic!(
            "cannot create a network namespace ({e}): the end-to-end tests need root or CAP_SYS_ADMIN; run them as root or under `unshare -Urn`"
        )
    });
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("faultbridge-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `faultbridge run --print json` process and its output, line by line.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    lines: Receiver<Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: TempDir,
}

impl Daemon {
    /// Starts the daemon on `config` (TOML text) and waits for `ready`.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(config, &[])
    }

    /// As [`Daemon::start`], with extra environment variables.
    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_under(&[], config, env)
    }

    /// As [`Daemon::start_with`], started through `wrapper` (a command
    /// that ends by executing its arguments, such as `setpriv …`).
    pub fn start_under(wrapper: &[&str], config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = TempDir::new("daemon");
        let cfg = dir.write("faultbridge.toml", config);
        let mut cmd = match wrapper.split_first() {
            None => Command::new(binary()),
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(binary());
                c
            }
        };
        let mut child = cmd
            .args(["run", "--print", "json", "--config"])
            .arg(&cfg)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start faultbridge run");
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("faultbridge printed a line that is not JSON ({e}): {line}"),
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
        let mut d = Daemon {
            child,
            lines: rx,
            stderr,
            _dir: dir,
        };
        let ready = d.next(Duration::from_secs(20));
        match ready {
            Some(v) if v["type"] == "ready" => d,
            other => panic!(
                "daemon did not get ready: {other:?}\nstderr:\n{}",
                d.stderr()
            ),
        }
    }

    /// What the daemon wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next JSON line, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Lines until `pred` holds for one (returned last) or the timeout.
    pub fn until(&mut self, timeout: Duration, pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
        recv_until(&self.lines, timeout, pred)
    }

    /// Sends SIGTERM and returns the final `stats` object.
    pub fn stop(mut self) -> Value {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let got = self.until(Duration::from_secs(20), |v| v["type"] == "stats");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "daemon exited with {status}\nstderr:\n{}",
            self.stderr()
        );
        got.last()
            .filter(|v| v["type"] == "stats")
            .cloned()
            .unwrap_or_else(|| panic!("no stats line at exit\nstderr:\n{}", self.stderr()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `faultbridge ARGS…` to completion; panics with its output on failure.
pub fn faultbridge(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "faultbridge {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The counters of `source` in a `stats` line.
pub fn source_stats<'a>(stats: &'a Value, source: &str) -> &'a Value {
    stats["stats"]["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["source"] == source))
        .unwrap_or_else(|| panic!("no counters for {source} in {stats}"))
}

/// What `rx` receives until `pred` holds for an item (returned last), the
/// sender is gone, or `timeout` has passed.
pub fn recv_until<T>(
    rx: &Receiver<T>,
    timeout: Duration,
    mut pred: impl FnMut(&T) -> bool,
) -> Vec<T> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(v) = rx.recv_timeout(left) else { break };
        let done = pred(&v);
        got.push(v);
        if done {
            break;
        }
    }
    got
}

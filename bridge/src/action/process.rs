//! Running one program for an action: its own process group, stdin fed
//! from memory, stdout/stderr captured up to a bound, and a timeout after
//! which the whole process group is killed.
//!
//! A program starts with a clean environment: [`CHILD_PATH`], `LANG=C.UTF-8`
//! and what the action passes (the `FAULTBRIDGE_*` variables), nothing of
//! the daemon's own (no `NOTIFY_SOCKET`, no `WATCHDOG_*`). A program named
//! without a `/` is looked up in the daemon's `PATH` (where the
//! administrator installed the cluster's tools), then started by its full
//! path with `argv[0]` as written. Descriptors other than the three pipes
//! are never passed on: the daemon opens everything close-on-exec, and the
//! runner marks what it inherited at start-up
//! ([`faultbridge_ffi::sys::caps::cloexec_above_stderr`]).

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `PATH` of every program an action starts.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `LANG` of every program an action starts.
pub const CHILD_LANG: &str = "C.UTF-8";

/// The daemon is stopping: programs still running at the deadline are
/// killed with their process group, and no new call starts.
#[derive(Debug, Default)]
pub struct Stop {
    deadline: OnceLock<Instant>,
}

impl Stop {
    /// From now on, wait for running programs until `grace` has passed.
    pub fn begin(&self, grace: Duration) {
        let now = Instant::now();
        let _ = self.deadline.set(now.checked_add(grace).unwrap_or(now));
    }

    /// True once the daemon is stopping.
    pub fn stopping(&self) -> bool {
        self.deadline.get().is_some()
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Exited with this status.
    Exited(i32),
    /// Killed by this signal (not by us).
    Signaled(i32),
    /// Still running at the timeout: its process group was killed.
    TimedOut,
    /// Could not be started.
    SpawnFailed,
    /// Still running when the daemon stopped: its process group was killed.
    Interrupted,
}

impl Ending {
    /// The exit status, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            Ending::Exited(c) => Some(c),
            _ => None,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Ending::Exited(c) => format!("exited with {c}"),
            Ending::Signaled(s) => format!("killed by signal {s}"),
            Ending::TimedOut => "timed out; its process group was killed".into(),
            Ending::SpawnFailed => "could not be started".into(),
            Ending::Interrupted => {
                "was still running when the daemon stopped; its process group was killed".into()
            }
        }
    }
}

/// What a process did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ending: Ending,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond the bound was discarded.
    pub truncated: bool,
    pub elapsed: Duration,
    /// Why it could not be started.
    pub error: Option<String>,
}

fn append_bounded(buf: &mut Vec<u8>, data: &[u8], limit: usize, truncated: &mut bool) {
    let room = limit.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

fn ending_of(st: ExitStatus) -> Ending {
    match (st.code(), st.signal()) {
        (Some(c), _) => Ending::Exited(c),
        (None, Some(s)) => Ending::Signaled(s),
        (None, None) => Ending::Signaled(0),
    }
}

/// A started process, not yet waited for.
#[derive(Debug)]
pub struct Spawned {
    /// Taken by [`Spawned::finish`]; still here on drop means nobody will
    /// wait for the process, so its process group is killed.
    child: Option<Child>,
    start: Instant,
}

/// `prog` as a path: as written when it holds a `/`, else the first
/// executable file of that name in the daemon's `PATH` ([`CHILD_PATH`] when
/// it has none).
pub fn resolve(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    if prog.is_empty() {
        return None;
    }
    let path = std::env::var_os("PATH");
    let dirs = path.as_deref().unwrap_or(CHILD_PATH.as_ref());
    std::env::split_paths(dirs)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(prog))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `argv` with a clean environment plus `env`, and `stdin`, in `/`,
/// in a new process group. On failure, the outcome to record.
pub fn spawn(argv: &[String], env: &[(String, String)], stdin: &[u8]) -> Result<Spawned, Outcome> {
    let start = Instant::now();
    let Some((prog, args)) = argv.split_first() else {
        return Err(spawn_failed("empty command", start));
    };
    let Some(path) = resolve(prog) else {
        return Err(spawn_failed(&format!("{prog}: not found in PATH"), start));
    };
    let mut cmd = Command::new(&path);
    cmd.arg0(prog)
        .args(args)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("LANG", CHILD_LANG)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir("/")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Err(spawn_failed(&format!("{prog}: {e}"), start)),
    };
    // The vfork wait is over: the child is loading its program and is
    // usually runnable on this CPU, where this thread would otherwise
    // preempt it to log the start and make the thread that waits for it.
    // Let the program run first: its start is what a recovery waits for.
    let _ = nix::sched::sched_yield();
    if let Some(mut si) = child.stdin.take() {
        // The block is far smaller than a pipe buffer; a program that exits
        // without reading it gets EPIPE here, which is its business.
        let _ = si.write_all(stdin);
    }
    Ok(Spawned {
        child: Some(child),
        start,
    })
}

impl Spawned {
    /// Waits for the process, capturing its output, killing its process
    /// group at `timeout` (counted from the start) or at the deadline of
    /// `stop`.
    pub fn finish(mut self, timeout: Duration, output_limit: usize, stop: &Stop) -> Outcome {
        match self.child.take() {
            Some(child) => wait_capturing(child, self.start, timeout, output_limit, stop),
            None => spawn_failed("the process was already waited for", self.start),
        }
    }
}

impl Drop for Spawned {
    /// A process nobody will wait for (its waiting thread could not be
    /// made) is not left running without a timeout, nor as a zombie.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Runs `argv` as [`spawn`] does and waits as [`Spawned::finish`] does.
pub fn run(
    argv: &[String],
    env: &[(String, String)],
    stdin: &[u8],
    timeout: Duration,
    output_limit: usize,
    stop: &Stop,
) -> Outcome {
    match spawn(argv, env, stdin) {
        Ok(s) => s.finish(timeout, output_limit, stop),
        Err(o) => o,
    }
}

fn spawn_failed(msg: &str, start: Instant) -> Outcome {
    Outcome {
        ending: Ending::SpawnFailed,
        stdout: String::new(),
        stderr: String::new(),
        truncated: false,
        elapsed: start.elapsed(),
        error: Some(msg.to_string()),
    }
}

fn wait_capturing(
    mut child: Child,
    start: Instant,
    timeout: Duration,
    limit: usize,
    stop: &Stop,
) -> Outcome {
    // A timeout beyond what the clock can hold never comes.
    let deadline = start.checked_add(timeout);
    // Both pipes as plain files, so one loop serves them.
    let mut out = child.stdout.take().map(|p| File::from(OwnedFd::from(p)));
    let mut err = child.stderr.take().map(|p| File::from(OwnedFd::from(p)));
    let (mut obuf, mut ebuf) = (Vec::new(), Vec::new());
    let mut truncated = false;
    let mut chunk = [0u8; 4096];
    let pgid = Pid::from_raw(child.id() as i32);
    let ending = loop {
        if let Ok(Some(st)) = child.try_wait() {
            // Take what is already there; a background grandchild may keep
            // the pipes open, so do not wait for end-of-file.
            for (pipe, buf) in [(&mut out, &mut obuf), (&mut err, &mut ebuf)] {
                if let Some(p) = pipe.as_mut() {
                    drain_ready(p, buf, limit, &mut truncated);
                }
            }
            break ending_of(st);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            break Ending::TimedOut;
        }
        if stop.deadline().is_some_and(|d| now >= d) {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            break Ending::Interrupted;
        }
        let wait_ms = deadline
            .map_or(Duration::from_millis(20), |d| d - now)
            .as_millis()
            .clamp(1, 20) as u16;
        let mut fds = Vec::with_capacity(2);
        if let Some(o) = out.as_ref() {
            fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
        }
        if let Some(e) = err.as_ref() {
            fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
        }
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(wait_ms as u64).min(Duration::from_millis(5)));
            continue;
        }
        let ready: Vec<bool> = match poll(&mut fds, PollTimeout::from(wait_ms)) {
            Ok(_) => fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect(),
            Err(_) => vec![false; fds.len()],
        };
        drop(fds);
        let mut i = 0;
        for (pipe, buf) in [(&mut out, &mut obuf), (&mut err, &mut ebuf)] {
            if pipe.is_none() {
                continue;
            }
            if ready.get(i).copied().unwrap_or(false) {
                let eof = match pipe.as_mut().map(|p| p.read(&mut chunk)) {
                    Some(Ok(0)) | Some(Err(_)) | None => true,
                    Some(Ok(n)) => {
                        append_bounded(buf, &chunk[..n], limit, &mut truncated);
                        false
                    }
                };
                if eof {
                    *pipe = None;
                }
            }
            i += 1;
        }
    };
    Outcome {
        ending,
        stdout: String::from_utf8_lossy(&obuf).into_owned(),
        stderr: String::from_utf8_lossy(&ebuf).into_owned(),
        truncated,
        elapsed: start.elapsed(),
        error: None,
    }
}

/// Reads whatever is ready without blocking.
fn drain_ready(p: &mut (impl Read + AsFd), buf: &mut Vec<u8>, limit: usize, truncated: &mut bool) {
    let mut chunk = [0u8; 4096];
    loop {
        let mut fds = [PollFd::new(p.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        match p.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => append_bounded(buf, &chunk[..n], limit, truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exit_status_output_and_stdin() {
        let o = run(
            &sh("cat; echo err >&2; exit 3"),
            &[],
            b"hello",
            Duration::from_secs(5),
            100,
            &Stop::default(),
        );
        assert_eq!(o.ending, Ending::Exited(3));
        assert_eq!(o.stdout, "hello");
        assert_eq!(o.stderr, "err\n");
    }

    #[test]
    fn output_is_bounded() {
        let o = run(
            &sh("head -c 10000 /dev/zero | tr '\\0' x"),
            &[],
            b"",
            Duration::from_secs(5),
            100,
            &Stop::default(),
        );
        assert_eq!(o.stdout.len(), 100);
        assert!(o.truncated);
    }

    #[test]
    fn a_hung_process_group_is_killed_at_the_timeout() {
        let o = run(
            &sh("sleep 60 & sleep 60"),
            &[],
            b"",
            Duration::from_millis(200),
            100,
            &Stop::default(),
        );
        assert_eq!(o.ending, Ending::TimedOut);
        assert!(o.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_is_a_spawn_failure() {
        let o = run(
            &["/nonexistent/prog".to_string()],
            &[],
            b"",
            Duration::from_secs(1),
            100,
            &Stop::default(),
        );
        assert_eq!(o.ending, Ending::SpawnFailed);
        assert!(o.error.unwrap().contains("/nonexistent/prog"));
        let o = run(
            &["no-such-program-anywhere".to_string()],
            &[],
            b"",
            Duration::from_secs(1),
            100,
            &Stop::default(),
        );
        assert_eq!(o.ending, Ending::SpawnFailed);
        assert!(o.error.unwrap().contains("not found in PATH"));
    }

    #[test]
    fn a_timeout_beyond_the_clock_never_panics() {
        let o = run(
            &sh("exit 4"),
            &[],
            b"",
            Duration::from_secs(u64::MAX),
            100,
            &Stop::default(),
        );
        assert_eq!(o.ending, Ending::Exited(4));
    }

    #[test]
    fn stopping_kills_what_still_runs() {
        let stop = Stop::default();
        stop.begin(Duration::from_millis(100));
        let o = run(
            &sh("sleep 60"),
            &[],
            b"",
            Duration::from_secs(u64::MAX),
            100,
            &stop,
        );
        assert_eq!(o.ending, Ending::Interrupted);
        assert!(o.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn the_environment_is_clean_and_argv0_as_written() {
        // The test process has HOME, USER, … of its own: none reaches the child.
        let o = run(
            &[
                "sh".to_string(),
                "-c".to_string(),
                "echo \"$0\"; env | sort".to_string(),
            ],
            &[("FAULTBRIDGE_KEYWORD".into(), "eth0".into())],
            b"",
            Duration::from_secs(5),
            4096,
            &Stop::default(),
        );
        assert_eq!(o.ending, Ending::Exited(0), "{o:?}");
        let mut lines = o.stdout.lines();
        assert_eq!(lines.next(), Some("sh"));
        let env: Vec<&str> = lines
            .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
            .collect();
        assert_eq!(
            env,
            [
                "FAULTBRIDGE_KEYWORD=eth0",
                "LANG=C.UTF-8",
                &format!("PATH={CHILD_PATH}")
            ]
        );
    }
}

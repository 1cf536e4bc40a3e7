//! Running one program for an action: its own process group, stdin fed
//! from memory, stdout/stderr captured up to a bound, and a timeout after
//! which the whole process group is killed.

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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

/// Splits `template` shell-style and fills `{name}` placeholders in each word
/// (after splitting, so a value with spaces stays one argument).
pub fn command_words(template: &str, vars: &[(&str, String)]) -> Option<Vec<String>> {
    let words = shlex::split(template)?;
    if words.is_empty() {
        return None;
    }
    Some(
        words
            .into_iter()
            .map(|w| {
                let mut w = w;
                for (k, v) in vars {
                    let key = format!("{{{k}}}");
                    if w.contains(&key) {
                        w = w.replace(&key, v);
                    }
                }
                w
            })
            .collect(),
    )
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

/// Starts `argv` with `env` and `stdin`, in `/`, in a new process group.
/// On failure, the outcome to record.
pub fn spawn(argv: &[String], env: &[(String, String)], stdin: &[u8]) -> Result<Spawned, Outcome> {
    let start = Instant::now();
    let Some((prog, args)) = argv.split_first() else {
        return Err(spawn_failed("empty command", start));
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
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
    /// group at `timeout` (counted from the start).
    pub fn finish(mut self, timeout: Duration, output_limit: usize) -> Outcome {
        match self.child.take() {
            Some(child) => wait_capturing(child, self.start, timeout, output_limit),
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

/// Runs `argv` with `env` and `stdin`, in `/`, in a new process group.
pub fn run(
    argv: &[String],
    env: &[(String, String)],
    stdin: &[u8],
    timeout: Duration,
    output_limit: usize,
) -> Outcome {
    match spawn(argv, env, stdin) {
        Ok(s) => s.finish(timeout, output_limit),
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

fn wait_capturing(mut child: Child, start: Instant, timeout: Duration, limit: usize) -> Outcome {
    let deadline = start + timeout;
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
        if now >= deadline {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            break Ending::TimedOut;
        }
        let wait_ms = (deadline - now).as_millis().clamp(1, 20) as u16;
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
        );
        assert_eq!(o.ending, Ending::SpawnFailed);
        assert!(o.error.unwrap().contains("/nonexistent/prog"));
    }

    #[test]
    fn placeholders_fill_whole_words() {
        let w = command_words(
            "clprexec --notice -k {category}.{keyword}",
            &[("category", "NIC".into()), ("keyword", "eth 0".into())],
        )
        .unwrap();
        assert_eq!(w, vec!["clprexec", "--notice", "-k", "NIC.eth 0"]);
    }
}

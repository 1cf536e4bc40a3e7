//! Custom actions (`[[upgrade.action]]`): programs the operator adds to the
//! upgrade, as the seed's console runs them. They run one after another,
//! never two at once, each in a new process group with a clean environment
//! (`PATH` and the `FAULTBRIDGE_UPGRADE_*` variables only), in `/`; one
//! that exits non-zero, is killed by a signal, cannot be started or outlives
//! its timeout (its process group is then killed) fails the step.

use super::state::{Request, Side, Step, UpgradeState};
use crate::activity::{ActivityEntry, ActivityLog, ActivitySeverity};
pub use crate::config::upgrade::{
    Control, DEFAULT_TIMEOUT, RawAction, RawUpgrade, Timing, UpgradeAction, UpgradeConfig,
    UpgradeConfigError,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the actions of one batch are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionContext {
    pub side: Side,
    pub state: UpgradeState,
    pub request: Request,
    pub split: bool,
}

impl ActionContext {
    /// The context of the actions a step runs on a side.
    pub fn of_step(step: Step, side: Side, split: bool) -> ActionContext {
        ActionContext {
            side,
            state: step.state(),
            request: step.request(),
            split,
        }
    }

    /// The same, with another request (`Start`, `Stop`, `Backup`, `CheckReadiness`).
    pub fn with_request(self, request: Request) -> ActionContext {
        ActionContext { request, ..self }
    }

    /// The whole environment of an action.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("FAULTBRIDGE_UPGRADE_SIDE", self.side.name().into()),
            ("FAULTBRIDGE_UPGRADE_STATE", self.state.name().into()),
            ("FAULTBRIDGE_UPGRADE_REQUEST", self.request.name().into()),
            (
                "FAULTBRIDGE_UPGRADE_SPLIT",
                if self.split { "Yes" } else { "No" }.into(),
            ),
        ]
    }
}

/// How one action went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionResult {
    pub command: String,
    /// The exit status, when it exited.
    pub exit_code: Option<i32>,
    /// Why it failed (`None`: it exited 0).
    pub failure: Option<String>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl ActionResult {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Output kept per stream.
const OUTPUT_LIMIT: usize = 4096;

fn read_bounded(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// Runs one action to its end or its timeout.
pub fn run_one(a: &UpgradeAction, ctx: &ActionContext) -> ActionResult {
    let start = Instant::now();
    let mut cmd = Command::new(&a.argv[0]);
    cmd.args(&a.argv[1..])
        .env_clear()
        .envs(ctx.environment())
        .current_dir("/")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut result = ActionResult {
        command: a.command.clone(),
        exit_code: None,
        failure: None,
        elapsed: Duration::ZERO,
        stdout: String::new(),
        stderr: String::new(),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            result.failure = Some(format!("cannot be started: {e}"));
            result.elapsed = start.elapsed();
            return result;
        }
    };
    let out = child.stdout.take().map(read_bounded);
    let err = child.stderr.take().map(read_bounded);
    let pgid = Pid::from_raw(child.id() as i32);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= a.timeout => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                result.failure = Some(format!("cannot be waited for: {e}"));
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
        }
    };
    // What is left of its process group goes with it: nothing of an
    // action outlives its step.
    let _ = killpg(pgid, Signal::SIGKILL);
    match status {
        None if result.failure.is_none() => {
            result.failure = Some(format!(
                "still running after {:?}; its process group was killed",
                a.timeout
            ));
        }
        None => {}
        Some(st) => {
            result.exit_code = st.code();
            match (st.code(), st.signal()) {
                (Some(0), _) => {}
                (Some(c), _) => result.failure = Some(format!("exited with {c}")),
                (None, s) => {
                    result.failure = Some(format!("killed by signal {}", s.unwrap_or(0)));
                }
            }
        }
    }
    result.stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    result.stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    result.elapsed = start.elapsed();
    result
}

/// The activity log's name for the daemon's upgrade entries.
pub const ACTIVITY_SUBJECT: &str = "upgrade";

/// Runs `actions` one after another, logging each; stops at the first
/// failure. `Ok` when all exited 0.
pub fn run_batch(
    actions: &[&UpgradeAction],
    ctx: &ActionContext,
    log: &ActivityLog,
) -> Result<(), ActionResult> {
    for a in actions {
        log.add(
            ActivitySeverity::Pending,
            ACTIVITY_SUBJECT,
            "upgrade-action",
            format!(
                "{} {}: {} (side {}, state {})",
                ctx.request, "custom action", a.command, ctx.side, ctx.state
            ),
        );
        let r = run_one(a, ctx);
        log.add_entry(ActivityEntry {
            id: 0,
            time_ms: 0,
            severity: if r.ok() {
                ActivitySeverity::Success
            } else {
                ActivitySeverity::Error
            },
            monitor: ACTIVITY_SUBJECT.into(),
            kind: "upgrade-action".into(),
            message: match &r.failure {
                None => format!("{}: exited with 0 in {:?}", a.command, r.elapsed),
                Some(f) => format!("{}: {f}", a.command),
            },
            exit_code: r.exit_code,
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
        });
        if !r.ok() {
            return Err(r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn parse(text: &str) -> Result<UpgradeConfig, UpgradeConfigError> {
        #[derive(Deserialize)]
        struct Top {
            upgrade: RawUpgrade,
        }
        let top: Top = toml::from_str(text).expect("toml");
        UpgradeConfig::from_raw(top.upgrade)
    }

    #[test]
    fn actions_parse_and_order_by_timing() {
        let c = parse(
            r#"
[[upgrade.action]]
command = "/bin/echo late"
control = "advanced"
timing = "late"
[[upgrade.action]]
command = "/bin/echo 'one word' default"
control = "advanced"
timeout = "5s"
[[upgrade.action]]
command = "/bin/true"
control = "readiness"
[[upgrade.action]]
command = "/bin/echo early"
control = "advanced"
timing = "early"
"#,
        )
        .unwrap();
        let adv: Vec<&str> = c
            .of(Control::Advanced)
            .iter()
            .map(|a| a.argv[1].as_str())
            .collect();
        assert_eq!(adv, ["early", "one word", "late"]);
        assert_eq!(c.of(Control::Readiness).len(), 1);
        assert_eq!(c.actions[1].timeout, Duration::from_secs(5));
        assert_eq!(c.actions[0].timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[[upgrade.action]]\ncommand = \"hook\"\ncontrol = \"start\"\n").unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
        let e =
            parse("[[upgrade.action]]\ncommand = \"/x 'a\"\ncontrol = \"start\"\n").unwrap_err();
        assert!(matches!(
            e,
            UpgradeConfigError::CommandSplit { index: 0, .. }
        ));
        let e =
            parse("[[upgrade.action]]\ncommand = \"/x\"\ncontrol = \"stop\"\ntiming = \"early\"\n")
                .unwrap_err();
        assert_eq!(e, UpgradeConfigError::TimingNotAdvanced { index: 0 });
        let e =
            parse("[[upgrade.action]]\ncommand = \"/x\"\ncontrol = \"stop\"\ntimeout = \"0s\"\n")
                .unwrap_err();
        assert!(matches!(e, UpgradeConfigError::Timeout { index: 0, .. }));
        // Unknown control or key: refused by the parser.
        assert!(
            toml::from_str::<RawUpgrade>("[[action]]\ncommand = \"/x\"\ncontrol = \"later\"\n")
                .is_err()
        );
        assert!(
            toml::from_str::<RawUpgrade>(
                "[[action]]\ncommand = \"/x\"\ncontrol = \"stop\"\nwhen = 1\n"
            )
            .is_err()
        );
    }

    fn action(cmd: &str, timeout: Duration) -> UpgradeAction {
        UpgradeAction {
            command: cmd.into(),
            argv: shlex::split(cmd).unwrap(),
            control: Control::Advanced,
            timing: Timing::Default,
            timeout,
        }
    }

    #[test]
    fn an_action_sees_the_variables_and_nothing_else() {
        // The test process's own environment (cargo's, the shell's) must
        // not reach the action.
        let a = action("/bin/sh -c 'env | sort'", Duration::from_secs(10));
        let ctx = ActionContext::of_step(Step::ExecuteSplit, Side::Upgrade, true);
        let r = run_one(&a, &ctx);
        assert!(r.ok(), "{r:?}");
        let vars: Vec<&str> = r
            .stdout
            .lines()
            .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
            .collect();
        assert_eq!(
            vars,
            [
                "FAULTBRIDGE_UPGRADE_REQUEST=ExecuteSplit",
                "FAULTBRIDGE_UPGRADE_SIDE=Upgrade",
                "FAULTBRIDGE_UPGRADE_SPLIT=Yes",
                "FAULTBRIDGE_UPGRADE_STATE=Split",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ]
        );
    }

    #[test]
    fn failure_timeout_and_missing_program_fail_the_batch() {
        let log = ActivityLog::new(64);
        let ctx = ActionContext::of_step(Step::PrepareMerge, Side::Production, true);
        let ok = action("/bin/true", Duration::from_secs(10));
        let fails = action(
            "/bin/sh -c 'echo broken >&2; exit 3'",
            Duration::from_secs(10),
        );
        let r = run_batch(&[&ok, &fails, &ok], &ctx, &log).unwrap_err();
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.stderr, "broken\n");
        let entries = log.recent(64);
        // Pending + Success for the first, Pending + Error for the second,
        // nothing for the third.
        let sev: Vec<&str> = entries.iter().map(|e| e.severity.name()).collect();
        assert_eq!(sev, ["Pending", "Success", "Pending", "Error"]);
        assert!(entries[3].message.contains("exited with 3"));

        let slow = action("/bin/sh -c 'sleep 30'", Duration::from_millis(200));
        let t = Instant::now();
        let r = run_one(&slow, &ctx);
        assert!(r.failure.unwrap().contains("still running"));
        assert!(t.elapsed() < Duration::from_secs(20));

        let missing = action("/nonexistent/hook", Duration::from_secs(1));
        let r = run_one(&missing, &ctx);
        assert!(r.failure.unwrap().contains("cannot be started"));
    }
}

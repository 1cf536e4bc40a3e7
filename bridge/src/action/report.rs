//! What an action did, told to the activity log and counted: the start of
//! a program, its end, and an action refused before it could start.

use super::context::RunnerStats;
use super::process::{Ending, Outcome};
use crate::activity::{ActivityEntry, ActivityLog, ActivitySeverity};
use crate::argv::CommandError;
use std::sync::atomic::Ordering::Relaxed;

/// Logs a finished process and counts it; true when it exited 0.
pub fn finished(
    activity: &ActivityLog,
    stats: &RunnerStats,
    monitor: &str,
    what: &str,
    o: &Outcome,
) -> bool {
    let ok = o.ending == Ending::Exited(0);
    let (severity, kind) = match o.ending {
        Ending::Exited(0) => (ActivitySeverity::Success, "action-exit"),
        Ending::TimedOut => (ActivitySeverity::Error, "action-timeout"),
        _ => (ActivitySeverity::Error, "action-exit"),
    };
    match o.ending {
        Ending::Exited(0) => stats.succeeded.fetch_add(1, Relaxed),
        Ending::TimedOut => stats.timed_out.fetch_add(1, Relaxed),
        _ => stats.failed.fetch_add(1, Relaxed),
    };
    let mut message = format!(
        "{what} {} after {:.1} ms",
        o.ending.describe(),
        o.elapsed.as_secs_f64() * 1e3
    );
    if let Some(e) = &o.error {
        message.push_str(": ");
        message.push_str(e);
    }
    if let Some(line) = o
        .stdout
        .lines()
        .chain(o.stderr.lines())
        .find(|l| !l.trim().is_empty())
    {
        message.push_str(" — ");
        message.push_str(line.trim());
    }
    if o.truncated {
        message.push_str(" (output truncated)");
    }
    activity.add_entry(ActivityEntry {
        id: 0,
        time_ms: 0,
        severity,
        monitor: monitor.to_string(),
        kind: kind.to_string(),
        message,
        exit_code: o.ending.code(),
        stdout: o.stdout.clone(),
        stderr: o.stderr.clone(),
    });
    ok
}

/// Logs and counts an action whose command line was refused (a fault field
/// would have become an option); nothing was started.
pub fn refused(
    activity: &ActivityLog,
    stats: &RunnerStats,
    monitor: &str,
    what: &str,
    sequence: u64,
    e: &CommandError,
) {
    stats.refused.fetch_add(1, Relaxed);
    activity.add(
        ActivitySeverity::Error,
        monitor,
        "action-refused",
        format!("{what} for fault #{sequence} not started: {e}"),
    );
}

/// The words of a command line as one line a shell would read back.
pub fn quoted(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

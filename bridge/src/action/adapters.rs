//! The adapters that carry a monitor's Error to the cluster manager.
//!
//! | adapter | runs |
//! |---|---|
//! | `exec` | `command` with the `FAULTBRIDGE_*` environment |
//! | `expresscluster` | the notice command, default `clprexec --notice -k {key}` (`{key}` = CATEGORY.KEYWORD, or CATEGORY when there is no keyword), so the cluster's mrw goes abnormal |
//! | `pacemaker` | `crm_resource --fail --resource {recovery_target}` by default, so Pacemaker recovers at once |
//! | `exit-program` | the FBEX0100 exit-program protocol ([`super::exit_program`]) |
//! | `none` | nothing: the cluster polls `faultbridge check` |

use super::process::{self, Ending, Outcome};
use super::{RunnerStats, Trip, environment, variables};
use crate::activity::{ActivityEntry, ActivityLog, ActivitySeverity};
use crate::config::{AdapterKind, MonitorConfig};
use std::sync::atomic::Ordering::Relaxed;

/// The default notice command of the `expresscluster` adapter.
pub const EXPRESSCLUSTER_TEMPLATE: &str = "clprexec --notice -k {key}";
/// The default command of the `pacemaker` adapter.
pub const PACEMAKER_TEMPLATE: &str = "crm_resource --fail --resource {recovery_target}";

/// Logs a finished process and counts it; true when it exited 0.
pub fn record(
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

/// A program's argv and its environment.
pub type CommandLine = (Vec<String>, Vec<(String, String)>);

/// The single command of the `exec`, `expresscluster` and `pacemaker`
/// adapters (argv with placeholders filled in, environment), or `None` for
/// the others.
pub fn single_command(m: &MonitorConfig, trip: &Trip) -> Option<CommandLine> {
    let template = match m.adapter {
        AdapterKind::None | AdapterKind::ExitProgram => return None,
        AdapterKind::Exec => m.command.clone().unwrap_or_default(),
        AdapterKind::ExpressCluster => m
            .command
            .clone()
            .unwrap_or_else(|| EXPRESSCLUSTER_TEMPLATE.into()),
        AdapterKind::Pacemaker => m
            .command
            .clone()
            .unwrap_or_else(|| PACEMAKER_TEMPLATE.into()),
    };
    let argv = process::command_words(&template, &variables(m, trip)).unwrap_or_default();
    Some((argv, environment(m, trip)))
}

/// Logs the start of a single-command action.
pub fn log_start(activity: &ActivityLog, m: &MonitorConfig, trip: &Trip, argv: &[String]) {
    activity.add(
        ActivitySeverity::Information,
        &m.name,
        "action-start",
        format!(
            "{} ({} of {:?}) for fault #{}: {}",
            m.adapter.name(),
            m.recovery_action.name(),
            m.recovery_target,
            trip.sequence,
            shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
        ),
    );
}

/// Runs the monitor's adapter; returns the restart count afterwards.
pub fn perform(
    m: &MonitorConfig,
    trip: &Trip,
    restarts_done: u32,
    activity: &ActivityLog,
    stats: &RunnerStats,
    output_limit: usize,
) -> u32 {
    if m.adapter == AdapterKind::ExitProgram {
        return super::exit_program::perform(m, trip, restarts_done, activity, stats, output_limit);
    }
    let Some((argv, env)) = single_command(m, trip) else {
        activity.add(
            ActivitySeverity::Information,
            &m.name,
            "no-adapter",
            format!(
                "fault #{} put the monitor in Error; no adapter: the cluster sees it through `faultbridge check {}`",
                trip.sequence, m.name
            ),
        );
        return restarts_done;
    };
    stats.started.fetch_add(1, Relaxed);
    let spawned = process::spawn(&argv, &env, b"");
    log_start(activity, m, trip, &argv);
    let o = match spawned {
        Ok(s) => s.finish(m.timeout, output_limit),
        Err(o) => o,
    };
    record(activity, stats, &m.name, m.adapter.name(), &o);
    restarts_done
}

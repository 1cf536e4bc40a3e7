//! The adapters that carry a monitor's Error to the cluster manager.
//!
//! | adapter | runs |
//! |---|---|
//! | `exec` | `command` with the `FAULTBRIDGE_*` environment |
//! | `expresscluster` | the notice command, default `clprexec --notice -k {key}` (`{key}` = CATEGORY.KEYWORD, or CATEGORY when there is no keyword), so the cluster's mrw goes abnormal |
//! | `pacemaker` | `crm_resource --fail --resource {recovery_target}` by default, so Pacemaker recovers at once |
//! | `exit-program` | the FBEX0100 exit-program protocol ([`super::exit_program`]) |
//! | `none` | nothing: the cluster polls `faultbridge check` |
//!
//! Every action goes one way: [`begin`] on the runner thread, then
//! [`Begun::finish`] on a worker. `begin` starts a single command with
//! nothing to check first at once, before a worker thread is made, so the
//! cluster hears of the fault as soon as the process can run; everything
//! else (a target check, the exit-program protocol) waits for the worker.

use super::context::Context;
use super::exit_program;
use super::process::{self, Outcome, Spawned};
use super::report;
use super::trip::{Trip, environment, variables};
use crate::activity::ActivitySeverity;
use crate::argv;
use crate::config::{AdapterKind, MonitorConfig};
use std::sync::atomic::Ordering::Relaxed;

/// The default notice command of the `expresscluster` adapter.
pub const EXPRESSCLUSTER_TEMPLATE: &str = "clprexec --notice -k {key}";
/// The default command of the `pacemaker` adapter.
pub const PACEMAKER_TEMPLATE: &str = "crm_resource --fail --resource {recovery_target}";

/// The command template of the `exec`, `expresscluster` and `pacemaker`
/// adapters (the configured one or the default), `None` for the others.
pub fn template(m: &MonitorConfig) -> Option<&str> {
    match m.adapter {
        AdapterKind::None | AdapterKind::ExitProgram => None,
        AdapterKind::Exec => Some(m.command.as_deref().unwrap_or_default()),
        AdapterKind::ExpressCluster => {
            Some(m.command.as_deref().unwrap_or(EXPRESSCLUSTER_TEMPLATE))
        }
        AdapterKind::Pacemaker => Some(m.command.as_deref().unwrap_or(PACEMAKER_TEMPLATE)),
    }
}

/// An action on its way.
#[derive(Debug)]
pub enum Begun {
    /// A single command, started (or failed to start).
    Started(Result<Spawned, Outcome>),
    /// Refused before anything started (already logged and counted).
    Refused,
    /// Everything happens on the worker.
    Later,
}

/// Starts what can start at once: a single command without a target check.
pub fn begin(m: &MonitorConfig, trip: &Trip, cx: &Context) -> Begun {
    if m.target_check.is_none() && template(m).is_some() {
        start_single(m, trip, cx)
    } else {
        Begun::Later
    }
}

impl Begun {
    /// Carries the action through; returns the restart count afterwards.
    pub fn finish(self, m: &MonitorConfig, trip: &Trip, restarts_done: u32, cx: &Context) -> u32 {
        let started = match self {
            Begun::Started(s) => s,
            Begun::Refused => return restarts_done,
            Begun::Later => {
                if !target_active(m, trip, cx) {
                    return restarts_done;
                }
                match m.adapter {
                    AdapterKind::ExitProgram => {
                        return exit_program::perform(m, trip, restarts_done, cx);
                    }
                    AdapterKind::None => {
                        cx.activity.add(
                            ActivitySeverity::Information,
                            &m.name,
                            "no-adapter",
                            format!(
                                "fault #{} put the monitor in Error; no adapter: the cluster sees it through `faultbridge check {}`",
                                trip.sequence, m.name
                            ),
                        );
                        return restarts_done;
                    }
                    _ => match start_single(m, trip, cx) {
                        Begun::Started(s) => s,
                        _ => return restarts_done,
                    },
                }
            }
        };
        let o = match started {
            Ok(s) => s.finish(m.timeout, cx.output_limit, &cx.stop),
            Err(o) => o,
        };
        report::finished(&cx.activity, &cx.stats, &m.name, m.adapter.name(), &o);
        restarts_done
    }
}

/// Runs the monitor's recovery action from start to end (on the calling
/// thread); returns the restart count afterwards.
pub fn perform(m: &MonitorConfig, trip: &Trip, restarts_done: u32, cx: &Context) -> u32 {
    begin(m, trip, cx).finish(m, trip, restarts_done, cx)
}

fn start_single(m: &MonitorConfig, trip: &Trip, cx: &Context) -> Begun {
    let template = template(m).unwrap_or_default();
    let argv = match argv::expand(template, &variables(m, trip)) {
        Ok(a) => a,
        Err(e) => {
            report::refused(
                &cx.activity,
                &cx.stats,
                &m.name,
                m.adapter.name(),
                trip.sequence,
                &e,
            );
            return Begun::Refused;
        }
    };
    cx.stats.started.fetch_add(1, Relaxed);
    let spawned = process::spawn(&argv, &environment(m, trip), b"");
    cx.activity.add(
        ActivitySeverity::Information,
        &m.name,
        "action-start",
        format!(
            "{} ({} of {:?}) for fault #{}: {}",
            m.adapter.name(),
            m.recovery_action.name(),
            m.recovery_target,
            trip.sequence,
            report::quoted(&argv)
        ),
    );
    Begun::Started(spawned)
}

/// Runs the monitor's `target_check`, if any: true when there is none or it
/// exits 0; otherwise the action is not performed (logged and counted).
fn target_active(m: &MonitorConfig, trip: &Trip, cx: &Context) -> bool {
    let Some(check) = &m.target_check else {
        return true;
    };
    let argv = match argv::expand(check, &variables(m, trip)) {
        Ok(a) => a,
        Err(e) => {
            report::refused(
                &cx.activity,
                &cx.stats,
                &m.name,
                "target_check",
                trip.sequence,
                &e,
            );
            return false;
        }
    };
    let o = process::run(
        &argv,
        &environment(m, trip),
        b"",
        m.timeout,
        cx.output_limit,
        &cx.stop,
    );
    if o.ending == process::Ending::Exited(0) {
        return true;
    }
    cx.stats.not_performed.fetch_add(1, Relaxed);
    cx.activity.add(
        ActivitySeverity::Warning,
        &m.name,
        "not-performed",
        format!(
            "recovery target {:?} is inactive (target_check {}): {} not performed",
            m.recovery_target,
            o.ending.describe(),
            m.recovery_action.name()
        ),
    );
    false
}

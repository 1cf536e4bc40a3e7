//! The adapters that carry a monitor's Error to the cluster manager.
//!
//! | adapter | runs |
//! |---|---|
//! | `exec` | `command` with the `FAULTBRIDGE_*` environment |
//! | `expresscluster` | the notice command, default `clprexec --notice -k {key}` (`{key}` = CATEGORY.KEYWORD, or CATEGORY when there is no keyword), so the cluster's mrw goes abnormal |
//! | `pacemaker` | `attrd_updater -n ATTRIBUTE -U 0` at once (and `-U 1` when the monitor is Normal again), so a location rule moves resources away; with a `recovery_target` (or a `command`) also `crm_resource --fail --resource {recovery_target} --node {node}`, so Pacemaker recovers that resource at once |
//! | `exit-program` | the FBEX0100 exit-program protocol ([`super::exit_program`]) |
//! | `none` | nothing: the cluster polls `faultbridge check` |
//!
//! Every action goes one way: [`begin`] on the runner thread, then
//! [`Begun::finish`] on a worker. `begin` starts a single command with
//! nothing to check first at once, before a worker thread is made, so the
//! cluster hears of the fault as soon as the process can run (the
//! `pacemaker` adapter's attribute too, whatever follows it); everything
//! else (a target check, the exit-program protocol) waits for the worker.
//! [`normal`] sets the `pacemaker` adapter's attribute back when the
//! monitor is Normal again.
//!
//! The attribute's name and values come from the configuration only,
//! never from a fault field.

use super::context::Context;
use super::exit_program;
use super::process::{self, Outcome, Spawned};
use super::report;
use super::trip::{Trip, environment, environment_of, variables};
use crate::activity::ActivitySeverity;
use crate::argv;
use crate::config::{AdapterKind, MonitorConfig};
use std::sync::atomic::Ordering::Relaxed;

/// The default notice command of the `expresscluster` adapter.
pub const EXPRESSCLUSTER_TEMPLATE: &str = "clprexec --notice -k {key}";
/// The default command of the `pacemaker` adapter.
pub const PACEMAKER_TEMPLATE: &str =
    "crm_resource --fail --resource {recovery_target} --node {node}";
/// The program that sets the `pacemaker` adapter's node attribute
/// (`attrd_updater -n ATTRIBUTE -U VALUE`).
pub const ATTRD_UPDATER: &str = "attrd_updater";
/// The attribute's value while the monitor is in Error.
pub const ATTRIBUTE_ERROR: &str = "0";
/// The attribute's value while the monitor is Normal.
pub const ATTRIBUTE_NORMAL: &str = "1";

/// The command template of the `exec`, `expresscluster` and `pacemaker`
/// adapters (the configured one or the default), `None` for the others and
/// for a `pacemaker` monitor with neither `command` nor `recovery_target`
/// (it only sets its attribute).
pub fn template(m: &MonitorConfig) -> Option<&str> {
    match m.adapter {
        AdapterKind::None | AdapterKind::ExitProgram => None,
        AdapterKind::Exec => Some(m.command.as_deref().unwrap_or_default()),
        AdapterKind::ExpressCluster => {
            Some(m.command.as_deref().unwrap_or(EXPRESSCLUSTER_TEMPLATE))
        }
        AdapterKind::Pacemaker => match &m.command {
            Some(c) => Some(c),
            None if m.recovery_target.is_empty() => None,
            None => Some(PACEMAKER_TEMPLATE),
        },
    }
}

/// The command line that sets the `pacemaker` adapter's attribute to
/// `value` (`None` without an attribute). Every word comes from the
/// configuration.
pub fn attribute_argv(m: &MonitorConfig, value: &str) -> Option<Vec<String>> {
    let name = m.attribute.as_ref()?;
    Some(vec![
        ATTRD_UPDATER.to_string(),
        "-n".to_string(),
        name.clone(),
        "-U".to_string(),
        value.to_string(),
    ])
}

/// An action on its way.
#[derive(Debug)]
pub struct Begun {
    /// The `pacemaker` adapter's attribute, started first.
    attribute: Option<Result<Spawned, Outcome>>,
    rest: Rest,
}

/// The part of an action after the attribute.
#[derive(Debug)]
enum Rest {
    /// A single command, started (or failed to start).
    Started(Result<Spawned, Outcome>),
    /// Refused before anything started (already logged and counted).
    Refused,
    /// Everything happens on the worker.
    Later,
    /// Nothing more (a `pacemaker` monitor that only sets its attribute).
    Nothing,
}

/// Starts what can start at once: the `pacemaker` adapter's attribute,
/// and a single command without a target check.
pub fn begin(m: &MonitorConfig, trip: &Trip, cx: &Context) -> Begun {
    let attribute = attribute_argv(m, ATTRIBUTE_ERROR).map(|argv| {
        start_program(
            m,
            &argv,
            &environment(m, trip),
            &format!("attribute for fault #{}", trip.sequence),
            cx,
        )
    });
    let rest = if m.adapter == AdapterKind::Pacemaker && template(m).is_none() {
        Rest::Nothing
    } else if m.target_check.is_none() && template(m).is_some() {
        start_single(m, trip, cx)
    } else {
        Rest::Later
    };
    Begun { attribute, rest }
}

/// Sets the `pacemaker` adapter's attribute back to Normal (on the calling
/// thread; nothing for a monitor without an attribute).
pub fn normal(m: &MonitorConfig, cx: &Context) {
    let Some(argv) = attribute_argv(m, ATTRIBUTE_NORMAL) else {
        return;
    };
    let env = [("FAULTBRIDGE_MONITOR".to_string(), m.name.clone())];
    let o = match start_program(m, &argv, &env, "attribute, Normal again", cx) {
        Ok(s) => s.finish(m.timeout, cx.output_limit, &cx.stop),
        Err(o) => o,
    };
    report::finished(&cx.activity, &cx.stats, &m.name, ATTRD_UPDATER, &o);
}

impl Begun {
    /// Carries the action through; returns the restart count afterwards.
    pub fn finish(self, m: &MonitorConfig, trip: &Trip, restarts_done: u32, cx: &Context) -> u32 {
        if let Some(started) = self.attribute {
            let o = match started {
                Ok(s) => s.finish(m.timeout, cx.output_limit, &cx.stop),
                Err(o) => o,
            };
            report::finished(&cx.activity, &cx.stats, &m.name, ATTRD_UPDATER, &o);
        }
        let started = match self.rest {
            Rest::Started(s) => s,
            Rest::Refused | Rest::Nothing => return restarts_done,
            Rest::Later => {
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
                        Rest::Started(s) => s,
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

fn start_single(m: &MonitorConfig, trip: &Trip, cx: &Context) -> Rest {
    let Some(template) = template(m) else {
        return Rest::Nothing;
    };
    let vars = variables(m, trip);
    let argv = match argv::expand(template, &vars) {
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
            return Rest::Refused;
        }
    };
    let what = format!(
        "{} of {:?} for fault #{}",
        m.recovery_action.name(),
        m.recovery_target,
        trip.sequence
    );
    Rest::Started(start_program(m, &argv, &environment_of(vars), &what, cx))
}

/// Starts one program of an action, counted and logged.
fn start_program(
    m: &MonitorConfig,
    argv: &[String],
    env: &[(String, String)],
    what: &str,
    cx: &Context,
) -> Result<Spawned, Outcome> {
    cx.stats.started.fetch_add(1, Relaxed);
    let spawned = process::spawn(argv, env, b"");
    cx.activity.add(
        ActivitySeverity::Information,
        &m.name,
        "action-start",
        format!("{} ({what}): {}", m.adapter.name(), report::quoted(argv)),
    );
    spawned
}

/// Runs the monitor's `target_check`, if any: true when there is none or it
/// exits 0; otherwise the action is not performed (logged and counted).
fn target_active(m: &MonitorConfig, trip: &Trip, cx: &Context) -> bool {
    let Some(check) = &m.target_check else {
        return true;
    };
    let vars = variables(m, trip);
    let argv = match argv::expand(check, &vars) {
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
        &environment_of(vars),
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

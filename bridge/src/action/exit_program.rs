//! The exit-program protocol, format FBEX0100 (`docs/exit-program.md`):
//! `PROGRAM [ITS ARGUMENTS…] ACTION_CODE FBEX0100` (the command split
//! shell-style, placeholders filled in as for `exec`), the information block on stdin, the exit
//! status as success indicator (0 success, 1 failed — do not restart,
//! 2 failed — attempt restart; anything else, a signal or the timeout counts
//! as 1), Undo after an unsuccessful call (except Undo and End Node), the
//! restart count then Failover, and Failover followed by Start.

use super::context::Context;
use super::process::{self, Ending};
use super::report;
use super::trip::{Trip, environment, variables};
use crate::activity::ActivitySeverity;
use crate::argv;
use crate::config::{MonitorConfig, RecoveryAction};
use faultbridge_ffi::wire::fbex::{ExitBlock, FBEX_F_OUTSIDE_SERVER_GROUP, FBEX0100, action};
use std::sync::atomic::Ordering::Relaxed;

/// The success indicator of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indicator {
    Successful,
    FailedNoRestart,
    FailedRestart,
}

fn indicator(e: Ending) -> Indicator {
    match e {
        Ending::Exited(0) => Indicator::Successful,
        Ending::Exited(2) => Indicator::FailedRestart,
        _ => Indicator::FailedNoRestart,
    }
}

fn action_name(code: u32) -> &'static str {
    match code {
        action::START => "Start",
        action::RESTART => "Restart",
        action::FAILOVER => "Failover",
        action::UNDO => "Undo",
        action::END_NODE => "End Node",
        _ => "unknown",
    }
}

struct Call<'a> {
    m: &'a MonitorConfig,
    trip: &'a Trip,
    cx: &'a Context,
    /// The program and its own arguments.
    command: Vec<String>,
}

impl Call<'_> {
    fn call(&self, code: u32, prior: u32, restarts_done: u32) -> Indicator {
        let block = ExitBlock {
            action_code: code,
            prior_action_code: prior,
            restarts_done,
            restart_limit: self.m.restart_limit,
            flags: if self.m.failover_outside_server_group {
                FBEX_F_OUTSIDE_SERVER_GROUP
            } else {
                0
            },
            sequence: self.trip.sequence,
            timestamp_ns: self.trip.timestamp_ns,
            category: self.trip.category.code(),
            severity: self.trip.severity.code(),
            event_code: self.trip.event_code,
            device_index: self.trip.device_index,
            monitor_name: &self.m.name,
            recovery_target: &self.m.recovery_target,
            category_name: self.trip.category.name(),
            keyword: &self.trip.keyword,
        }
        .encode();
        if self.cx.stop.stopping() {
            self.cx.activity.add(
                ActivitySeverity::Error,
                &self.m.name,
                "action-exit",
                format!(
                    "exit program {} ({code}) not started: the daemon is stopping",
                    action_name(code)
                ),
            );
            return Indicator::FailedNoRestart;
        }
        let mut argv = self.command.clone();
        argv.extend([code.to_string(), FBEX0100.to_string()]);
        let mut env = environment(self.m, self.trip);
        env.push(("FAULTBRIDGE_EXIT_DATA".into(), self.m.exit_data.clone()));
        self.cx.stats.started.fetch_add(1, Relaxed);
        self.cx.activity.add(
            ActivitySeverity::Information,
            &self.m.name,
            "action-start",
            format!(
                "exit program {} {} ({}) {FBEX0100}, restarts done {restarts_done}/{}{}",
                report::quoted(&self.command),
                code,
                action_name(code),
                self.m.restart_limit,
                if prior != 0 {
                    format!(", undoing {} ({prior})", action_name(prior))
                } else {
                    String::new()
                }
            ),
        );
        let o = process::run(
            &argv,
            &env,
            &block,
            self.m.timeout,
            self.cx.output_limit,
            &self.cx.stop,
        );
        report::finished(
            &self.cx.activity,
            &self.cx.stats,
            &self.m.name,
            &format!("exit program {} ({code})", action_name(code)),
            &o,
        );
        indicator(o.ending)
    }

    /// Undo of a failed call; a failing Undo leaves the monitor in doubt.
    fn undo(&self, prior: u32, restarts_done: u32) {
        if self.call(action::UNDO, prior, restarts_done) != Indicator::Successful {
            self.cx.activity.add(
                ActivitySeverity::Error,
                &self.m.name,
                "indoubt",
                format!(
                    "Indoubt: Undo of {} failed; the monitor stays in Error and the Undo is not retried",
                    action_name(prior)
                ),
            );
        }
    }

    fn failover_then_start(&self, restarts_done: u32) {
        match self.call(action::FAILOVER, 0, restarts_done) {
            Indicator::Successful => {
                if self.call(action::START, 0, restarts_done) != Indicator::Successful {
                    self.undo(action::START, restarts_done);
                }
            }
            _ => self.undo(action::FAILOVER, restarts_done),
        }
    }
}

/// Runs the protocol for the monitor's recovery action; returns the restart
/// count afterwards (it only goes back to 0 on Reset).
pub fn perform(m: &MonitorConfig, trip: &Trip, mut restarts_done: u32, cx: &Context) -> u32 {
    let activity = &cx.activity;
    let command = match argv::expand(
        m.command.as_deref().unwrap_or_default(),
        &variables(m, trip),
    ) {
        Ok(c) => c,
        Err(e) => {
            report::refused(
                activity,
                &cx.stats,
                &m.name,
                "exit program",
                trip.sequence,
                &e,
            );
            return restarts_done;
        }
    };
    let c = Call {
        m,
        trip,
        cx,
        command,
    };
    match m.recovery_action {
        RecoveryAction::Restart => loop {
            match c.call(action::RESTART, 0, restarts_done) {
                Indicator::Successful => return restarts_done,
                Indicator::FailedRestart => {
                    restarts_done += 1;
                    if restarts_done < m.restart_limit {
                        continue;
                    }
                    activity.add(
                        ActivitySeverity::Warning,
                        &m.name,
                        "restart-limit",
                        format!("restart limit {} reached: failing over", m.restart_limit),
                    );
                    c.failover_then_start(restarts_done);
                    return restarts_done;
                }
                Indicator::FailedNoRestart => {
                    c.undo(action::RESTART, restarts_done);
                    return restarts_done;
                }
            }
        },
        RecoveryAction::Failover => {
            c.failover_then_start(restarts_done);
            restarts_done
        }
        RecoveryAction::Final => {
            // No Undo after End Node (code 16).
            if c.call(action::END_NODE, 0, restarts_done) != Indicator::Successful {
                activity.add(
                    ActivitySeverity::Error,
                    &m.name,
                    "final-failed",
                    format!(
                        "End Node failed; final action {:?} not confirmed",
                        m.final_action
                    ),
                );
            }
            restarts_done
        }
    }
}

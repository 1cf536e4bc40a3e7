//! Recovery actions, off the ingest path. The ingest thread hands a request
//! to the runner thread when a monitor goes into Error; the runner starts a
//! worker per action (at most one in flight per monitor — further requests
//! are coalesced and counted — and at most `max_concurrent` in all), and the
//! worker runs the monitor's adapter: `exec`, `expresscluster`, `pacemaker`,
//! `exit-program` or `none`. A hung or failing program never delays another
//! monitor or the ingest loop: it is killed with its process group at the
//! monitor's `timeout`, or when the daemon stops (after [`SHUTDOWN_GRACE`]).
//!
//! Least privilege: the runner thread empties its ambient and inheritable
//! capability sets when it starts (the sets are per thread, and every
//! worker is made by it), so an action program of a daemon running as a
//! non-root user holds no capability while the daemon keeps CAP_NET_ADMIN;
//! it marks inherited descriptors close-on-exec; and each program starts
//! with a clean environment ([`process`]) and a command line in which fault
//! fields are data only ([`crate::argv`]).
//!
//! Modules, lowest first: [`trip`] (the fault and its fields), [`process`] (one program), [`context`] and [`report`]
//! (counting and logging), [`exit_program`] (the FBEX0100 protocol),
//! [`adapters`] (the one way every action goes), and this runner.

pub mod adapters;
pub mod context;
pub mod exit_program;
pub mod process;
pub mod report;
pub mod trip;

pub use context::{Context, RunnerStats};
pub use trip::{Trip, environment, variables};

use crate::activity::{ActivityLog, ActivitySeverity};
use crate::config::{ActionsConfig, MonitorConfig};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use faultbridge_ffi::sys::doorbell::{Bell, Door, doorbell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a stopping daemon waits for action programs still running
/// before it kills their process groups.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A message to the runner.
#[derive(Debug)]
pub enum RunnerMsg {
    /// Monitor `monitor` went into Error: run its recovery action.
    Act { monitor: usize, trip: Trip },
    /// Monitor `monitor` was Reset: its exit-program restart count starts over.
    Reset { monitor: usize },
    /// Monitor `monitor` is Normal again (Reset, or a CLEAR with
    /// `auto_clear`): the `pacemaker` adapter sets its attribute back, after
    /// the action of the Error, if one is still running.
    Normal { monitor: usize },
    /// Every monitor's exit-program restart count (a live upgrade hands
    /// them to the other side).
    Counts { reply: Sender<Vec<u32>> },
    /// Restart counts taken over from the other side of a live upgrade
    /// (by monitor index; a monitor with an action in flight keeps its own).
    SetCounts { counts: Vec<(usize, u32)> },
}

/// The ingest thread's end of the runner's queue. A message is queued,
/// then the runner's doorbell rung: the runner, asleep, is woken on the
/// ingest thread's CPU as that thread goes back to waiting, so the action
/// starts without the wake-up of an idle CPU (see
/// [`faultbridge_ffi::sys::doorbell`]). Dropping the last one ends the
/// runner once its actions are done.
#[derive(Debug, Clone)]
pub struct RunnerTx {
    /// Always `Some` but while it is dropped (see `Drop`).
    tx: Option<Sender<RunnerMsg>>,
    bell: Arc<Bell>,
}

impl RunnerTx {
    /// Queues `m` without blocking (a full queue hands it back).
    pub fn try_send(&self, m: RunnerMsg) -> Result<(), TrySendError<RunnerMsg>> {
        match &self.tx {
            Some(tx) => tx.try_send(m)?,
            None => return Err(TrySendError::Disconnected(m)),
        }
        self.bell.ring();
        Ok(())
    }
}

impl Drop for RunnerTx {
    fn drop(&mut self) {
        // The runner learns that a sender is gone (the last one ends it)
        // only by looking: wake it to look, once this one is gone.
        drop(self.tx.take());
        self.bell.ring();
    }
}

/// The runner thread.
#[derive(Debug)]
pub struct Runner {
    tx: Option<RunnerTx>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<RunnerStats>,
    cx: Arc<Context>,
}

struct Done {
    monitor: usize,
    restarts_done: u32,
    /// The monitor's reset generation when the action started: a count from
    /// before a Reset must not overwrite the Reset's zero.
    generation: u64,
}

/// What the runner does for a monitor, one at a time per monitor.
#[derive(Debug)]
enum Job {
    /// The recovery action of a trip.
    Act(Trip),
    /// The monitor is Normal again.
    Normal,
}

#[derive(Default, Clone)]
struct PerMonitor {
    in_flight: bool,
    /// The job in flight is a [`Job::Normal`] (a trip after it is a new
    /// Error, never coalesced into it).
    in_flight_normal: bool,
    /// The reset generation of the action in flight.
    in_flight_generation: u64,
    restarts_done: u32,
    generation: u64,
}

impl PerMonitor {
    fn done(&mut self, d: &Done) {
        self.in_flight = false;
        if d.generation == self.generation {
            self.restarts_done = d.restarts_done;
        }
    }
}

impl Runner {
    /// Starts the runner for `monitors`.
    pub fn start(
        monitors: Vec<MonitorConfig>,
        cfg: ActionsConfig,
        activity: Arc<ActivityLog>,
    ) -> std::io::Result<Runner> {
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let (bell, door) = doorbell()?;
        let bell = Arc::new(bell);
        let stats = Arc::new(RunnerStats::default());
        let cx = Arc::new(Context {
            activity,
            stats: stats.clone(),
            output_limit: cfg.output_limit,
            stop: process::Stop::default(),
        });
        let c = cx.clone();
        let b = bell.clone();
        let thread = std::thread::Builder::new()
            .name("fb-actions".into())
            .spawn(move || run(rx, door, b, monitors.into(), cfg, c))?;
        Ok(Runner {
            tx: Some(RunnerTx { tx: Some(tx), bell }),
            thread: Some(thread),
            stats,
            cx,
        })
    }

    /// The sender the ingest thread uses (never blocks: `try_send`).
    pub fn sender(&self) -> Option<RunnerTx> {
        self.tx.clone()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // The runner ends when every sender is gone and its workers are
        // done: programs still running after the grace are killed.
        self.cx.stop.begin(SHUTDOWN_GRACE);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Before the first program: no capability and no stray descriptor may
/// reach a child (see the module's documentation).
fn drop_privileges_for_children(activity: &ActivityLog) {
    use faultbridge_ffi::sys::caps;
    if let Err(e) = caps::drop_inheritable() {
        activity.add(
            ActivitySeverity::Error,
            "",
            "privileges",
            format!(
                "cannot empty the ambient and inheritable capabilities of action programs: {e}"
            ),
        );
    }
    if let Err(e) = caps::cloexec_above_stderr() {
        activity.add(
            ActivitySeverity::Error,
            "",
            "privileges",
            format!("cannot mark inherited descriptors close-on-exec: {e}"),
        );
    }
}

fn run(
    rx: Receiver<RunnerMsg>,
    door: Door,
    bell: Arc<Bell>,
    monitors: Arc<[MonitorConfig]>,
    cfg: ActionsConfig,
    cx: Arc<Context>,
) {
    let (activity, stats) = (&cx.activity, &cx.stats);
    drop_privileges_for_children(activity);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let mut per: Vec<PerMonitor> = vec![PerMonitor::default(); monitors.len()];
    let mut waiting: VecDeque<(usize, Job)> = VecDeque::new();
    let mut running = 0usize;
    let mut open = true;
    while open || running > 0 {
        // Finished actions first, then one message; with neither, sleep
        // (at the end of the loop) until the ingest thread or a worker rings.
        let mut finished = false;
        while let Ok(d) = done_rx.try_recv() {
            finished = true;
            running -= 1;
            if let Some(p) = per.get_mut(d.monitor) {
                p.done(&d);
            }
        }
        let msg = if open {
            match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    None
                }
                Err(TryRecvError::Empty) => None,
            }
        } else {
            None
        };
        let idle = msg.is_none() && !finished;
        match msg {
            Some(RunnerMsg::Reset { monitor }) => {
                if let Some(p) = per.get_mut(monitor) {
                    p.restarts_done = 0;
                    p.generation += 1;
                }
            }
            Some(RunnerMsg::Counts { reply }) => {
                let _ = reply.send(per.iter().map(|p| p.restarts_done).collect());
            }
            Some(RunnerMsg::SetCounts { counts }) => {
                for (monitor, n) in counts {
                    if let Some(p) = per.get_mut(monitor).filter(|p| !p.in_flight) {
                        p.restarts_done = n;
                    }
                }
            }
            Some(RunnerMsg::Normal { monitor })
                if monitors.get(monitor).is_some_and(|m| m.attribute.is_some()) =>
            {
                waiting.push_back((monitor, Job::Normal));
            }
            Some(RunnerMsg::Act { monitor, trip }) => {
                let Some(p) = per.get(monitor) else { continue };
                // The last job queued for this monitor: a trip joins an
                // action still waiting, but follows a Normal.
                let queued = waiting.iter().rev().find(|(m, _)| *m == monitor);
                // An action started before the last Reset belongs to the old
                // Error: a trip after the Reset waits for it, then runs.
                let same_error = queued.is_none()
                    && p.in_flight
                    && !p.in_flight_normal
                    && p.in_flight_generation == p.generation;
                if same_error || queued.is_some_and(|(_, j)| matches!(j, Job::Act(_))) {
                    stats.coalesced.fetch_add(1, Relaxed);
                    activity.add(
                        ActivitySeverity::Information,
                        &monitors[monitor].name,
                        "coalesced",
                        format!(
                            "fault #{} coalesced into the recovery action already under way",
                            trip.sequence
                        ),
                    );
                } else {
                    waiting.push_back((monitor, Job::Act(trip)));
                }
            }
            Some(RunnerMsg::Normal { .. }) | None => {}
        }
        while running < cfg.max_concurrent {
            // The oldest request whose monitor has no action in flight: at
            // most one action per monitor at a time.
            let Some(pos) = waiting
                .iter()
                .position(|(m, _)| per.get(*m).is_some_and(|p| !p.in_flight))
            else {
                break;
            };
            let Some((monitor, job)) = waiting.remove(pos) else {
                break;
            };
            let Some(p) = per.get_mut(monitor) else {
                continue;
            };
            p.in_flight = true;
            p.in_flight_normal = matches!(job, Job::Normal);
            p.in_flight_generation = p.generation;
            running += 1;
            let restarts_done = p.restarts_done;
            let generation = p.generation;
            // A single command with nothing to check first starts here,
            // before any thread is made; the worker carries the rest.
            let begun = match &job {
                Job::Act(trip) => Some(adapters::begin(&monitors[monitor], trip, &cx)),
                Job::Normal => None,
            };
            let (mons, c, dtx) = (monitors.clone(), cx.clone(), done_tx.clone());
            let b = bell.clone();
            let spawned = std::thread::Builder::new()
                .name("fb-action".into())
                .spawn(move || {
                    let m = &mons[monitor];
                    let restarts_done = match (begun, &job) {
                        (Some(begun), Job::Act(trip)) => begun.finish(m, trip, restarts_done, &c),
                        _ => {
                            adapters::normal(m, &c);
                            restarts_done
                        }
                    };
                    let _ = dtx.send(Done {
                        monitor,
                        restarts_done,
                        generation,
                    });
                    b.ring();
                });
            if let Err(e) = spawned {
                running = running.saturating_sub(1);
                p.in_flight = false;
                activity.add(
                    ActivitySeverity::Error,
                    &monitors[monitor].name,
                    "action-exit",
                    format!("cannot start an action worker: {e}"),
                );
            }
        }
        // A ring that comes after these checks stays in the doorbell, so
        // the wait returns at once.
        if idle && rx.is_empty() && done_rx.is_empty() && (open || running > 0) {
            door.wait(None);
        }
    }
}

//! Recovery actions, off the ingest path. The ingest thread hands a request
//! to the runner thread when a monitor goes into Error; the runner starts a
//! worker per action (at most one in flight per monitor — further requests
//! are coalesced and counted — and at most `max_concurrent` in all), and the
//! worker runs the monitor's adapter: `exec`, `expresscluster`, `pacemaker`,
//! `exit-program` or `none`. A hung or failing program never delays another
//! monitor or the ingest loop: it is killed with its process group at the
//! monitor's `timeout`.

pub mod adapters;
pub mod exit_program;
pub mod process;

use crate::activity::{ActivityLog, ActivitySeverity};
use crate::config::{ActionsConfig, MonitorConfig};
use crossbeam_channel::{Receiver, Sender, select};
use faultbridge_bus::Source;
use faultbridge_ffi::wire::record::{Category, Severity};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;

/// The fault that tripped a monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trip {
    pub source: Source,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub category: Category,
    pub severity: Severity,
    pub event_code: u32,
    pub device_index: u32,
    pub keyword: String,
}

/// A message to the runner.
#[derive(Debug)]
pub enum RunnerMsg {
    /// Monitor `monitor` went into Error: run its recovery action.
    Act { monitor: usize, trip: Trip },
    /// Monitor `monitor` was Reset: its exit-program restart count starts over.
    Reset { monitor: usize },
}

/// Counters of the runner.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub started: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    pub coalesced: AtomicU64,
    pub not_performed: AtomicU64,
}

/// The runner thread.
#[derive(Debug)]
pub struct Runner {
    tx: Sender<RunnerMsg>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<RunnerStats>,
}

struct Done {
    monitor: usize,
    restarts_done: u32,
    /// The monitor's reset generation when the action started: a count from
    /// before a Reset must not overwrite the Reset's zero.
    generation: u64,
}

#[derive(Default, Clone)]
struct PerMonitor {
    in_flight: bool,
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
        let stats = Arc::new(RunnerStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("fb-actions".into())
            .spawn(move || run(rx, monitors.into(), cfg, activity, st))?;
        Ok(Runner {
            tx,
            thread: Some(thread),
            stats,
        })
    }

    /// The sender the ingest thread uses (never blocks: `try_send`).
    pub fn sender(&self) -> Sender<RunnerMsg> {
        self.tx.clone()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // The runner ends when every sender is gone; running workers finish
        // on their own (each is bounded by its timeout).
        let (dummy, _) = crossbeam_channel::bounded(1);
        self.tx = dummy;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    rx: Receiver<RunnerMsg>,
    monitors: Arc<[MonitorConfig]>,
    cfg: ActionsConfig,
    activity: Arc<ActivityLog>,
    stats: Arc<RunnerStats>,
) {
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let mut per: Vec<PerMonitor> = vec![PerMonitor::default(); monitors.len()];
    let mut waiting: VecDeque<(usize, Trip)> = VecDeque::new();
    let mut running = 0usize;
    let mut open = true;
    while open || running > 0 {
        let msg = if open {
            select! {
                recv(rx) -> m => match m {
                    Ok(m) => Some(m),
                    Err(_) => { open = false; None }
                },
                recv(done_rx) -> d => {
                    if let Ok(d) = d {
                        running -= 1;
                        if let Some(p) = per.get_mut(d.monitor) {
                            p.done(&d);
                        }
                    }
                    None
                }
            }
        } else {
            match done_rx.recv() {
                Ok(d) => {
                    running -= 1;
                    if let Some(p) = per.get_mut(d.monitor) {
                        p.done(&d);
                    }
                }
                Err(_) => break,
            }
            None
        };
        match msg {
            Some(RunnerMsg::Reset { monitor }) => {
                if let Some(p) = per.get_mut(monitor) {
                    p.restarts_done = 0;
                    p.generation += 1;
                }
            }
            Some(RunnerMsg::Act { monitor, trip }) => {
                let Some(p) = per.get(monitor) else { continue };
                let queued = waiting.iter().any(|(m, _)| *m == monitor);
                // An action started before the last Reset belongs to the old
                // Error: a trip after the Reset waits for it, then runs.
                let same_error = p.in_flight && p.in_flight_generation == p.generation;
                if same_error || queued {
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
                    waiting.push_back((monitor, trip));
                }
            }
            None => {}
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
            let Some((monitor, trip)) = waiting.remove(pos) else {
                break;
            };
            let Some(p) = per.get_mut(monitor) else {
                continue;
            };
            p.in_flight = true;
            p.in_flight_generation = p.generation;
            running += 1;
            let restarts_done = p.restarts_done;
            let generation = p.generation;
            let (mons, act, st, dtx, out_limit) = (
                monitors.clone(),
                activity.clone(),
                stats.clone(),
                done_tx.clone(),
                cfg.output_limit,
            );
            let m = &monitors[monitor];
            // Fast path: a single command with no target check is started
            // here, before any thread is made, so the cluster hears of the
            // fault as soon as the process can run; a thread then waits for it.
            let direct = match m.target_check {
                None => adapters::single_command(m, &trip),
                Some(_) => None,
            };
            let spawned = match direct {
                Some((argv, env)) => {
                    stats.started.fetch_add(1, Relaxed);
                    let started = process::spawn(&argv, &env, b"");
                    adapters::log_start(&activity, m, &trip, &argv);
                    std::thread::Builder::new()
                        .name("fb-action".into())
                        .spawn(move || {
                            let m = &mons[monitor];
                            let o = match started {
                                Ok(s) => s.finish(m.timeout, out_limit),
                                Err(o) => o,
                            };
                            adapters::record(&act, &st, &m.name, m.adapter.name(), &o);
                            let _ = dtx.send(Done {
                                monitor,
                                restarts_done,
                                generation,
                            });
                        })
                }
                None => std::thread::Builder::new()
                    .name("fb-action".into())
                    .spawn(move || {
                        let restarts_done =
                            perform(&mons[monitor], &trip, restarts_done, &act, &st, out_limit);
                        let _ = dtx.send(Done {
                            monitor,
                            restarts_done,
                            generation,
                        });
                    }),
            };
            if let Err(e) = spawned {
                running -= 1;
                p.in_flight = false;
                activity.add(
                    ActivitySeverity::Error,
                    &monitors[monitor].name,
                    "action-exit",
                    format!("cannot start an action worker: {e}"),
                );
            }
        }
    }
}

/// The `FAULTBRIDGE_*` environment and the `{placeholders}` of templates.
pub fn variables(m: &MonitorConfig, t: &Trip) -> Vec<(&'static str, String)> {
    let key = if t.keyword.is_empty() {
        t.category.name().to_string()
    } else {
        format!("{}.{}", t.category.name(), t.keyword)
    };
    vec![
        ("monitor", m.name.clone()),
        ("category", t.category.name().to_string()),
        ("keyword", t.keyword.clone()),
        ("key", key),
        ("severity", t.severity.name().to_string()),
        ("event_code", format!("{:#010x}", t.event_code)),
        ("sequence", t.sequence.to_string()),
        ("source", t.source.name().to_string()),
        ("device_index", t.device_index.to_string()),
        ("recovery_action", m.recovery_action.name().to_string()),
        ("recovery_target", m.recovery_target.clone()),
        ("final_action", m.final_action.clone()),
    ]
}

/// `FAULTBRIDGE_MONITOR`, `FAULTBRIDGE_CATEGORY`, … for the exec adapter.
pub fn environment(m: &MonitorConfig, t: &Trip) -> Vec<(String, String)> {
    variables(m, t)
        .into_iter()
        .filter(|(k, _)| *k != "key")
        .map(|(k, v)| (format!("FAULTBRIDGE_{}", k.to_ascii_uppercase()), v))
        .collect()
}

/// Runs one monitor's recovery; returns its restart count afterwards.
fn perform(
    m: &MonitorConfig,
    trip: &Trip,
    restarts_done: u32,
    activity: &ActivityLog,
    stats: &RunnerStats,
    output_limit: usize,
) -> u32 {
    if let Some(check) = &m.target_check {
        let vars = variables(m, trip);
        let argv = process::command_words(check, &vars).unwrap_or_default();
        let o = process::run(&argv, &environment(m, trip), b"", m.timeout, output_limit);
        if o.ending != process::Ending::Exited(0) {
            stats.not_performed.fetch_add(1, Relaxed);
            activity.add(
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
            return restarts_done;
        }
    }
    adapters::perform(m, trip, restarts_done, activity, stats, output_limit)
}

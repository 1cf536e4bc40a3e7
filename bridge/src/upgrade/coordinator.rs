//! The coordinator: takes operator requests, runs their steps one at a time
//! on a thread of its own (never on the ingest thread), runs the custom
//! actions of each step, and tells listeners every state change.

use super::UpgradeConfig;
use super::actions::{ActionContext, Control, run_batch};
use super::info::{check_binary, default_binary, version};
use super::state::{Command, Machine, Operational, Refused, Request, Side, Step, UpgradeState};
use crate::activity::{ActivityEntry, ActivityLog, ActivitySeverity};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The activity log's subject for upgrade entries.
pub const SUBJECT: &str = "upgrade";

/// The state as `StateChanged` tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StateChange {
    pub state: UpgradeState,
    pub operational: Operational,
    pub side: Side,
}

/// What the other process reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PeerStatus {
    pub side: String,
    pub version: String,
    pub pid: u32,
    /// Whether it acts on faults (runs actions, writes history).
    pub acting: bool,
    /// Per source, the last sequence it received.
    pub sequences: std::collections::BTreeMap<String, u64>,
}

/// The process work of the steps that have some: starting the Upgrade side,
/// switching which side acts, ending one of them.
pub trait Sides: Send + 'static {
    /// Starts `binary` as the Upgrade side and waits until it receives.
    fn split(&mut self, binary: &Path) -> Result<(), String>;
    /// Checks the Upgrade side is alive and receiving (PrepareMerge).
    fn check_peer(&mut self) -> Result<(), String>;
    /// Hands acting over to the Upgrade side.
    fn merge(&mut self) -> Result<(), String>;
    /// Ends the old side.
    fn commit(&mut self) -> Result<(), String>;
    /// Ends the new side; the old one acts (again).
    fn abort(&mut self) -> Result<(), String>;
    /// The other side now, when there is one.
    fn peer(&mut self) -> Option<PeerStatus>;
    /// The coordinator these sides work for (told once, after it is made).
    fn attach(&mut self, coordinator: std::sync::Weak<Coordinator>) {
        let _ = coordinator;
    }
    /// A step ended (the other side may follow the outcome).
    fn step_done(&mut self, step: Step, result: &Result<(), String>) {
        let _ = (step, result);
    }
}

/// Where the coordinator finds what the readiness check looks at.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The running configuration file (None: the built-in defaults).
    pub config_path: Option<PathBuf>,
    /// The history database the running daemon writes.
    pub history_path: Option<PathBuf>,
    pub upgrade: UpgradeConfig,
}

struct Inner {
    machine: Machine,
    /// The binary named by the last `check` or `split`.
    binary: Option<PathBuf>,
    /// The version the new binary reported.
    new_version: Option<String>,
    /// How long each step took, last run of each.
    step_times: Vec<(Step, Duration)>,
    /// Whether the Upgrade side acts (after a merge, until commit or abort).
    merged: bool,
    /// The other side as last seen (while a step holds the sides).
    peer: Option<PeerStatus>,
    /// How long acting paused at the last hand-over to this side.
    acting_gap: Option<Duration>,
}

/// The upgrade of this daemon.
pub struct Coordinator {
    inner: Mutex<Inner>,
    /// Apart from `inner`: a step holds it while it works, and `status`
    /// must still answer meanwhile.
    sides: Mutex<Box<dyn Sides>>,
    settings: Settings,
    activity: Arc<ActivityLog>,
    side: std::sync::atomic::AtomicU8,
    listeners: Mutex<Vec<Sender<StateChange>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("side", &self.side())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    pub fn new(
        settings: Settings,
        activity: Arc<ActivityLog>,
        sides: Box<dyn Sides>,
    ) -> Arc<Coordinator> {
        Coordinator::resume(settings, activity, sides, Side::Production, Machine::new())
    }

    /// A coordinator that continues an upgrade where `machine` is: the
    /// Upgrade side's once acting has moved to it at Merge.
    pub fn resume(
        settings: Settings,
        activity: Arc<ActivityLog>,
        sides: Box<dyn Sides>,
        side: Side,
        machine: Machine,
    ) -> Arc<Coordinator> {
        let merged = side == Side::Upgrade;
        let c = Arc::new(Coordinator {
            inner: Mutex::new(Inner {
                machine,
                binary: None,
                new_version: None,
                step_times: Vec::new(),
                merged,
                peer: None,
                acting_gap: None,
            }),
            sides: Mutex::new(sides),
            settings,
            activity,
            side: std::sync::atomic::AtomicU8::new(side as u8),
            listeners: Mutex::new(Vec::new()),
            worker: Mutex::new(None),
        });
        c.sides
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .attach(Arc::downgrade(&c));
        c
    }

    /// Puts `sides` in place of the current ones (waits for a step that
    /// holds them).
    pub fn replace_sides(self: &Arc<Self>, mut sides: Box<dyn Sides>) {
        sides.attach(Arc::downgrade(self));
        let mut s = self.sides.lock().unwrap_or_else(PoisonError::into_inner);
        *s = sides;
    }

    /// The side this process is.
    pub fn side(&self) -> Side {
        if self.side.load(std::sync::atomic::Ordering::Relaxed) == Side::Upgrade as u8 {
            Side::Upgrade
        } else {
            Side::Production
        }
    }

    /// The other side took acting back (an abort from Merge driven there):
    /// this side acts again and the upgrade is aborted.
    pub fn taken_back(&self) {
        {
            let mut inner = self.lock();
            inner.machine = Machine::restore(UpgradeState::Abort, Operational::Ready);
            inner.merged = false;
        }
        self.log(
            ActivitySeverity::Success,
            "upgrade-step",
            "Abort: acting is back on this side, from the exact sequence the other side stopped after".into(),
        );
        self.tell(self.state());
    }

    /// Acting moved to this side; it had paused for `gap` (from the other
    /// side's last record to this side reading the next).
    pub fn acting_gap(&self, gap: Duration) {
        self.lock().acting_gap = Some(gap);
        self.log(
            ActivitySeverity::Information,
            "upgrade-step",
            format!("acting paused for {gap:?} while it moved to this side (records meanwhile waited in the sockets)"),
        );
    }

    /// How the Merge step ended on the other side (this side acts since
    /// it took over in that step), with the other side's step times.
    pub fn merge_done(&self, ok: bool, message: &str, step_times_ns: &[(String, u64)]) {
        {
            let mut inner = self.lock();
            for (name, ns) in step_times_ns {
                if let Some(step) = Step::parse(name) {
                    inner.step_times.retain(|(s, _)| *s != step);
                    inner.step_times.push((step, Duration::from_nanos(*ns)));
                }
            }
            inner.machine = if ok {
                Machine::restore(UpgradeState::Merge, Operational::Ready)
            } else {
                Machine::failed(UpgradeState::Merge, vec![Step::ExecuteMerge])
            };
        }
        if ok {
            self.log(
                ActivitySeverity::Success,
                "upgrade-step",
                "ExecuteMerge done: this side acts".into(),
            );
        } else {
            self.log(
                ActivitySeverity::Error,
                "upgrade-step",
                format!("ExecuteMerge failed: {message}; retry it or abort"),
            );
        }
        self.tell(self.state());
    }

    /// Adds an upgrade entry to the activity log.
    pub fn note(&self, severity: ActivitySeverity, message: String) {
        self.log(severity, "upgrade-step", message);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state now.
    pub fn state(&self) -> StateChange {
        let inner = self.lock();
        StateChange {
            state: inner.machine.state(),
            operational: self.operational(&inner),
            side: self.side(),
        }
    }

    /// The operational state told: the old side, passive since acting
    /// moved away at Merge, is Busy (the other side drives the upgrade and
    /// owns the bus name; a client reaching this side while the name moves
    /// back at an abort waits for it).
    fn operational(&self, inner: &Inner) -> Operational {
        if inner.merged && self.side() == Side::Production {
            Operational::Busy
        } else {
            inner.machine.operational()
        }
    }

    /// Listens to state changes (bounded; a full listener misses some, the
    /// state itself is always in [`Coordinator::status`]).
    pub fn listen(&self) -> Receiver<StateChange> {
        let (tx, rx) = crossbeam_channel::bounded(256);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx
    }

    fn tell(&self, c: StateChange) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|l| !matches!(l.try_send(c), Err(TrySendError::Disconnected(_))));
    }

    fn log(&self, severity: ActivitySeverity, kind: &str, message: String) {
        self.activity.add(severity, SUBJECT, kind, message);
    }

    /// Accepts `command` (its steps then run on the coordinator's thread)
    /// or refuses it, changing nothing. `binary` names the new build for
    /// `check` and `split` (None or empty: the path this daemon was started
    /// from).
    pub fn request(
        self: &Arc<Self>,
        command: Command,
        binary: Option<&Path>,
    ) -> Result<(), Refused> {
        // The first step is entered before the reply, so whoever asks
        // the state after the reply sees Busy, never the state before.
        let first = {
            let mut inner = self.lock();
            inner.machine.request(command)?;
            if matches!(command, Command::Check | Command::Split) {
                inner.binary = Some(
                    binary
                        .filter(|p| !p.as_os_str().is_empty())
                        .map(Path::to_path_buf)
                        .unwrap_or_else(default_binary),
                );
            }
            inner.machine.next_step()
        };
        self.log(
            ActivitySeverity::Information,
            "upgrade-request",
            format!("{} requested", command.verb()),
        );
        let me = self.clone();
        let mut w = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = w.take() {
            // The machine was not Busy, so the previous request is over.
            let _ = old.join();
        }
        match std::thread::Builder::new()
            .name("fb-upgrade".into())
            .spawn(move || me.run_request(first))
        {
            Ok(t) => *w = Some(t),
            Err(e) => {
                // Without a thread the steps cannot run: the first one fails.
                if let Some(s) = first {
                    self.lock().machine.step_done(s, false);
                }
                self.log(
                    ActivitySeverity::Error,
                    "upgrade-step",
                    format!("cannot start the upgrade thread: {e}"),
                );
                self.tell(self.state());
            }
        }
        Ok(())
    }

    /// Waits for the request in progress to end (tests, shutdown).
    pub fn wait_idle(&self) {
        let t = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    fn run_request(&self, first: Option<Step>) {
        let mut next = first;
        while let Some(step) = next {
            self.tell(self.state());
            self.log(
                ActivitySeverity::Pending,
                "upgrade-step",
                format!("{} started", step.name()),
            );
            let start = Instant::now();
            let result = self.run_step(step);
            let took = start.elapsed();
            {
                let mut inner = self.lock();
                inner.step_times.retain(|(s, _)| *s != step);
                inner.step_times.push((step, took));
                inner.machine.step_done(step, result.is_ok());
            }
            self.with_sides(|s| {
                s.step_done(step, &result);
                Ok(())
            })
            .ok();
            match &result {
                Ok(()) => self.log(
                    ActivitySeverity::Success,
                    "upgrade-step",
                    format!("{} done in {took:?}", step.name()),
                ),
                Err(why) => self.log(
                    ActivitySeverity::Error,
                    "upgrade-step",
                    format!("{} failed: {why}; retry it or abort", step.name()),
                ),
            }
            // Between two steps of one request the upgrade stays Busy:
            // nothing to tell until the next step starts.
            let now = self.state();
            if now.operational != Operational::Busy || result.is_err() {
                self.tell(now);
            }
            if result.is_err() {
                break;
            }
            next = self.lock().machine.next_step();
        }
    }

    /// The custom actions of `control` for this step, on `side`.
    fn actions(
        &self,
        control: Control,
        step: Step,
        side: Side,
        request: Request,
    ) -> Result<(), String> {
        let list = self.settings.upgrade.of(control);
        if list.is_empty() {
            return Ok(());
        }
        let split = self.lock().machine.split();
        let ctx = ActionContext::of_step(step, side, split).with_request(request);
        run_batch(&list, &ctx, &self.activity).map_err(|r| {
            format!(
                "custom action {} {}",
                r.command,
                r.failure.unwrap_or_default()
            )
        })
    }

    fn readiness(&self, step: Step) -> Result<(), String> {
        let binary = self.lock().binary.clone().unwrap_or_else(default_binary);
        let (findings, info) = check_binary(
            &binary,
            self.settings.config_path.as_deref(),
            self.settings.history_path.as_deref(),
        );
        let mut failed = None;
        for f in &findings {
            self.log(
                if f.ok {
                    ActivitySeverity::Success
                } else {
                    ActivitySeverity::Error
                },
                "upgrade-readiness",
                f.message.clone(),
            );
            if !f.ok && failed.is_none() {
                failed = Some(f.message.clone());
            }
        }
        self.lock().new_version = info.map(|i| i.version);
        if let Some(f) = failed {
            return Err(f);
        }
        self.actions(
            Control::Readiness,
            step,
            self.side(),
            Request::CheckReadiness,
        )
    }

    fn run_step(&self, step: Step) -> Result<(), String> {
        let me = self.side();
        // Advanced actions first: a hook may veto the step.
        self.actions(Control::Advanced, step, me, step.request())?;
        match step {
            Step::CheckReadiness | Step::PrepareSplit => self.readiness(step),
            Step::ExecuteSplit => {
                let binary = self.lock().binary.clone().unwrap_or_else(default_binary);
                self.with_sides(|s| s.split(&binary))
            }
            Step::PrepareMerge => self.with_sides(|s| s.check_peer()),
            Step::ExecuteMerge => {
                self.actions(Control::Stop, step, Side::Production, Request::Stop)?;
                self.with_sides(|s| s.merge())?;
                self.lock().merged = true;
                self.actions(Control::Start, step, Side::Upgrade, Request::Start)?;
                self.actions(Control::Backup, step, Side::Production, Request::Backup)
            }
            Step::Commit => self.with_sides(|s| s.commit()),
            Step::Abort => {
                let merged = self.lock().merged;
                if merged {
                    self.actions(Control::Stop, step, Side::Upgrade, Request::Stop)?;
                }
                self.with_sides(|s| s.abort())?;
                self.lock().merged = false;
                if merged {
                    self.actions(Control::Start, step, Side::Production, Request::Start)?;
                }
                Ok(())
            }
            Step::Finish => {
                let mut inner = self.lock();
                inner.merged = false;
                inner.binary = None;
                drop(inner);
                // The upgraded daemon is the Production side of the next one.
                self.side
                    .store(Side::Production as u8, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn with_sides<T>(
        &self,
        f: impl FnOnce(&mut dyn Sides) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut sides = self.sides.lock().unwrap_or_else(PoisonError::into_inner);
        f(sides.as_mut())
    }

    /// Everything `upgrade status` shows.
    pub fn status(&self) -> UpgradeStatus {
        // A step at work holds the sides: show the peer as last seen.
        let fresh = match self.sides.try_lock() {
            Ok(mut s) => Some(s.peer()),
            Err(_) => None,
        };
        let mut inner = self.lock();
        if let Some(p) = fresh {
            inner.peer = p;
        }
        let peer = inner.peer.clone();
        UpgradeStatus {
            state: inner.machine.state(),
            operational: self.operational(&inner),
            side: self.side(),
            version: version().to_string(),
            pid: std::process::id(),
            failed_step: inner.machine.failed_step(),
            new_binary: inner.binary.as_ref().map(|p| p.display().to_string()),
            new_version: inner.new_version.clone(),
            step_times_ns: inner
                .step_times
                .iter()
                .map(|(s, d)| (s.name().to_string(), d.as_nanos() as u64))
                .collect(),
            peer,
            acting_gap_ns: inner.acting_gap.map(|d| d.as_nanos() as u64),
            activity: self
                .activity
                .recent(4096)
                .into_iter()
                .filter(|e| e.monitor == SUBJECT)
                .rev()
                .take(64)
                .collect::<Vec<ActivityEntry>>()
                .into_iter()
                .rev()
                .collect(),
        }
    }
}

/// What `upgrade status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct UpgradeStatus {
    pub state: UpgradeState,
    pub operational: Operational,
    pub side: Side,
    pub version: String,
    pub pid: u32,
    pub failed_step: Option<Step>,
    pub new_binary: Option<String>,
    pub new_version: Option<String>,
    pub step_times_ns: Vec<(String, u64)>,
    pub peer: Option<PeerStatus>,
    /// How long acting paused at the last hand-over to this side.
    pub acting_gap_ns: Option<u64>,
    /// The newest upgrade entries of the activity log, oldest first.
    pub activity: Vec<ActivityEntry>,
}

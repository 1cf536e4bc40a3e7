//! External link monitors ("mrw"): a category plus an optional device
//! keyword. A matching fault puts a monitor into Error; Error is latched
//! until `Reset`, or cleared by a CLEAR when the monitor has `auto_clear`.
//!
//! The table is owned by the ingest thread, so a fault reaches its monitor
//! without a queue hop. Matching is O(1) per record whatever the number of
//! monitors (one hash lookup on the keyword, one list for "any device") and
//! allocates nothing. Readers on other threads see each monitor's state
//! through atomics ([`MonitorView`]) and hear of changes on a channel.

use crate::action::{RunnerMsg, RunnerTx, Trip};
use crate::activity::{ActivityLog, ActivitySeverity};
use crate::config::MonitorConfig;
use crossbeam_channel::{Receiver, Sender};
use faultbridge_bus::{FaultKind, Source};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::wire::record::{Category, Record};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

pub use faultbridge_bus::MonitorState;

/// A monitor's state as last recorded (in the history database), restored
/// at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedMonitor {
    pub name: String,
    pub state: MonitorState,
    pub error_count: u64,
    pub last_sequence: u64,
}

/// Why a monitor's state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeCause {
    /// A matching fault.
    Fault,
    /// A matching CLEAR on an `auto_clear` monitor.
    Clear,
    /// `Reset` (D-Bus, `faultbridge reset`).
    Reset,
    /// The state was taken over from the other side of a live upgrade.
    HandOver,
}

/// Per source, the last sequence seen (the passive side of a live upgrade).
#[derive(Debug, Default)]
pub struct Positions([AtomicU64; Source::COUNT]);

impl Positions {
    /// Per source seen at all, its last sequence.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        Source::ALL
            .iter()
            .filter_map(|s| {
                let n = self.0[s.index()].load(Relaxed);
                (n > 0).then(|| (s.name().to_string(), n))
            })
            .collect()
    }
}

/// A monitor's state as one side of a live upgrade hands it to the other:
/// the latch, the counters, and the anti-flap bookkeeping (times on the
/// system-wide monotonic clock, so they mean the same in both processes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandedMonitor {
    pub name: String,
    pub error: bool,
    pub error_count: u64,
    pub last_sequence: u64,
    /// Arrival times of the recent matching faults (threshold window).
    pub window: Vec<u64>,
    /// When its last recovery action was handed to the runner.
    pub last_action_ns: Option<u64>,
}

/// One state change, told to every change listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorChange {
    /// Index into [`MonitorView::monitors`].
    pub index: usize,
    pub state: MonitorState,
    pub cause: ChangeCause,
    /// The fault that caused it (for Fault/Clear).
    pub source: Option<Source>,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub error_count: u64,
}

/// The part of a monitor any thread may read.
#[derive(Debug)]
pub struct MonitorShared {
    pub config: MonitorConfig,
    state: AtomicU8,
    error_count: AtomicU64,
    last_sequence: AtomicU64,
}

impl MonitorShared {
    pub fn state(&self) -> MonitorState {
        MonitorState::from_u8(self.state.load(Relaxed))
    }
    /// Matching faults counted since start.
    pub fn error_count(&self) -> u64 {
        self.error_count.load(Relaxed)
    }
    /// Sequence of the last matching fault (0: none).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence.load(Relaxed)
    }
}

/// Every monitor, readable from any thread, and the change listeners.
#[derive(Debug)]
pub struct MonitorView {
    pub monitors: Vec<MonitorShared>,
    /// Each listener's queue and its bound (the queue grows on demand).
    listeners: Mutex<Vec<(Sender<MonitorChange>, usize)>>,
    /// Changes a listener missed because its queue was full.
    pub listener_drops: AtomicU64,
}

impl MonitorView {
    /// The monitor named `name`.
    pub fn find(&self, name: &str) -> Option<(usize, &MonitorShared)> {
        self.monitors
            .iter()
            .enumerate()
            .find(|(_, m)| m.config.name == name)
    }

    /// Listens to state changes (bounded; a full queue counts a drop, and
    /// the current state stays readable through the atomics).
    pub fn listen(&self, capacity: usize) -> Receiver<MonitorChange> {
        // Unbounded in memory (blocks made as changes come, freed as they
        // are read), bounded in changes by the check in `tell`.
        let (tx, rx) = crossbeam_channel::unbounded();
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((tx, capacity.max(1)));
        rx
    }

    fn tell(&self, change: MonitorChange) {
        let mut ls = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ls.retain(|(l, bound)| {
            if l.len() >= *bound {
                self.listener_drops.fetch_add(1, Relaxed);
                return true;
            }
            l.send(change.clone()).is_ok()
        });
    }
}

/// What only the ingest thread keeps of a monitor: the anti-flap state.
#[derive(Debug)]
struct Local {
    /// Arrival times (monotonic ns) of recent matching faults, for the threshold.
    window: VecDeque<u64>,
    /// When the last recovery action was requested (monotonic ns).
    last_action_ns: Option<u64>,
}

/// The ingest thread's monitor table.
#[derive(Debug)]
pub struct Monitors {
    view: Arc<MonitorView>,
    local: Vec<Local>,
    activity: Arc<ActivityLog>,
    actions: Option<RunnerTx>,
    /// The runner's queue while the table does not act (the passive side
    /// of a live upgrade): states change, no action is handed over.
    parked: Option<RunnerTx>,
    /// While passive: the last sequence seen per source (nothing is
    /// published then; see [`Monitors::passive_positions`]).
    passive: Option<Arc<Positions>>,
    /// Per category (index = code - 1): keyword → monitors of that device.
    by_keyword: [HashMap<Box<str>, Vec<usize>>; 6],
    /// Per category: monitors without a keyword (any device).
    any_device: [Vec<usize>; 6],
}

fn cat_index(c: Category) -> usize {
    c.code() as usize - 1
}

impl Monitors {
    /// A table without recovery actions (state only).
    pub fn new(configs: &[MonitorConfig]) -> Monitors {
        Monitors::with_actions(configs, Arc::new(ActivityLog::new(1024)), None)
    }

    /// A table that hands recovery actions to the runner behind `actions`
    /// and records every change in `activity`.
    pub fn with_actions(
        configs: &[MonitorConfig],
        activity: Arc<ActivityLog>,
        actions: Option<RunnerTx>,
    ) -> Monitors {
        let mut by_keyword: [HashMap<Box<str>, Vec<usize>>; 6] = Default::default();
        let mut any_device: [Vec<usize>; 6] = Default::default();
        for (i, m) in configs.iter().enumerate() {
            let c = cat_index(m.category);
            match &m.keyword {
                Some(k) => by_keyword[c].entry(k.as_str().into()).or_default().push(i),
                None => any_device[c].push(i),
            }
        }
        let view = Arc::new(MonitorView {
            monitors: configs
                .iter()
                .map(|c| MonitorShared {
                    config: c.clone(),
                    state: AtomicU8::new(MonitorState::Normal as u8),
                    error_count: AtomicU64::new(0),
                    last_sequence: AtomicU64::new(0),
                })
                .collect(),
            listeners: Mutex::new(Vec::new()),
            listener_drops: AtomicU64::new(0),
        });
        let local = configs
            .iter()
            .map(|c| Local {
                window: VecDeque::with_capacity(c.threshold.count as usize),
                last_action_ns: None,
            })
            .collect();
        Monitors {
            view,
            local,
            activity,
            actions,
            parked: None,
            passive: None,
            by_keyword,
            any_device,
        }
    }

    pub fn view(&self) -> Arc<MonitorView> {
        self.view.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.view.monitors.is_empty()
    }

    /// Applies one published record to the monitors it matches.
    #[inline]
    pub fn on_record(&mut self, source: Source, kind: FaultKind, r: &Record<'_>) {
        let c = cat_index(r.category());
        let keyed = self.by_keyword[c]
            .get(r.keyword())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if keyed.is_empty() && self.any_device[c].is_empty() {
            return;
        }
        let (keyed_n, any_n) = (keyed.len(), self.any_device[c].len());
        for k in 0..keyed_n + any_n {
            // Re-borrow per step: `apply` needs `&mut self`.
            let i = if k < keyed_n {
                self.by_keyword[c]
                    .get(r.keyword())
                    .map_or(usize::MAX, |v| v[k])
            } else {
                self.any_device[c][k - keyed_n]
            };
            if i != usize::MAX {
                self.apply(i, source, kind, r);
            }
        }
    }

    /// True when the threshold is met by this fault (arriving `now`).
    fn threshold_met(&mut self, i: usize, now: u64) -> bool {
        let t = self.view.monitors[i].config.threshold;
        if t.count <= 1 {
            return true;
        }
        let w = &mut self.local[i].window;
        let horizon = now.saturating_sub(t.window.as_nanos() as u64);
        while w.front().is_some_and(|&at| at < horizon) {
            w.pop_front();
        }
        if w.len() == t.count as usize {
            w.pop_front();
        }
        w.push_back(now);
        if w.len() >= t.count as usize {
            w.clear();
            return true;
        }
        false
    }

    fn apply(&mut self, i: usize, source: Source, kind: FaultKind, r: &Record<'_>) {
        match kind {
            FaultKind::Fault => {
                let m = &self.view.monitors[i];
                if r.severity() < m.config.min_severity {
                    return;
                }
                let n = m.error_count.fetch_add(1, Relaxed) + 1;
                m.last_sequence.store(r.sequence(), Relaxed);
                if m.state() != MonitorState::Normal {
                    return;
                }
                let now = monotonic_ns();
                if !self.threshold_met(i, now) {
                    return;
                }
                let m = &self.view.monitors[i];
                m.state.store(MonitorState::Error as u8, Relaxed);
                // The recovery action is handed over first: the runner's
                // thread is woken before any listener's, so the cluster
                // hears of the fault without waiting behind them.
                self.recover(i, source, r, now);
                self.view.tell(MonitorChange {
                    index: i,
                    state: MonitorState::Error,
                    cause: ChangeCause::Fault,
                    source: Some(source),
                    sequence: r.sequence(),
                    timestamp_ns: r.timestamp_ns(),
                    error_count: n,
                });
                let m = &self.view.monitors[i];
                self.activity.add(
                    ActivitySeverity::Error,
                    &m.config.name,
                    "state",
                    format!(
                        "Normal → Error: {} fault #{} on {:?} ({}, event {:#010x}, from {source})",
                        r.category(),
                        r.sequence(),
                        r.keyword(),
                        r.severity(),
                        r.event_code()
                    ),
                );
            }
            FaultKind::Clear => {
                let m = &self.view.monitors[i];
                if m.config.auto_clear && m.state() == MonitorState::Error {
                    m.state.store(MonitorState::Normal as u8, Relaxed);
                    self.normal_again(i);
                    let m = &self.view.monitors[i];
                    self.activity.add(
                        ActivitySeverity::Information,
                        &m.config.name,
                        "state",
                        format!(
                            "Error → Normal: CLEAR #{} on {:?} (auto_clear)",
                            r.sequence(),
                            r.keyword()
                        ),
                    );
                    self.view.tell(MonitorChange {
                        index: i,
                        state: MonitorState::Normal,
                        cause: ChangeCause::Clear,
                        source: Some(source),
                        sequence: r.sequence(),
                        timestamp_ns: r.timestamp_ns(),
                        error_count: m.error_count(),
                    });
                }
            }
        }
    }

    /// Hands the recovery action to the runner, unless within the grace period.
    fn recover(&mut self, i: usize, source: Source, r: &Record<'_>, now: u64) {
        let Some(tx) = &self.actions else { return };
        let m = &self.view.monitors[i];
        let grace = m.config.grace_period.as_nanos() as u64;
        if let Some(last) = self.local[i].last_action_ns
            && grace > 0
            && now.saturating_sub(last) < grace
        {
            self.activity.add(
                    ActivitySeverity::Warning,
                    &m.config.name,
                    "suppressed",
                    format!(
                        "no recovery action for fault #{}: within the grace period of {:?} after the last one",
                        r.sequence(),
                        m.config.grace_period
                    ),
                );
            return;
        }
        let trip = Trip {
            source,
            sequence: r.sequence(),
            timestamp_ns: r.timestamp_ns(),
            category: r.category(),
            severity: r.severity(),
            event_code: r.event_code(),
            device_index: r.device_index(),
            keyword: r.keyword().to_string(),
        };
        match tx.try_send(RunnerMsg::Act { monitor: i, trip }) {
            // The grace period counts from an action really handed over.
            Ok(()) => self.local[i].last_action_ns = Some(now),
            Err(e) => {
                let why = match e {
                    crossbeam_channel::TrySendError::Full(_) => "the action queue is full",
                    crossbeam_channel::TrySendError::Disconnected(_) => {
                        "the action runner has stopped"
                    }
                };
                self.activity.add(
                    ActivitySeverity::Error,
                    &m.config.name,
                    "action-exit",
                    format!(
                        "recovery action for fault #{} not started: {why}",
                        r.sequence()
                    ),
                );
            }
        }
    }

    /// Tells the runner that monitor `i` is Normal again (the `pacemaker`
    /// adapter sets its attribute back); nothing while not acting.
    fn normal_again(&self, i: usize) {
        let Some(tx) = &self.actions else { return };
        if tx.try_send(RunnerMsg::Normal { monitor: i }).is_err() {
            self.activity.add(
                ActivitySeverity::Error,
                &self.view.monitors[i].config.name,
                "action-exit",
                "the action runner's queue is full: the monitor's Normal state was not passed on to the cluster",
            );
        }
    }

    /// Restores a state recorded before a restart: a latched Error comes
    /// back as Error without running its recovery action again.
    pub fn restore(&mut self, saved: &SavedMonitor) -> bool {
        let Some((i, m)) = self.view.find(&saved.name) else {
            return false;
        };
        m.error_count.store(saved.error_count, Relaxed);
        m.last_sequence.store(saved.last_sequence, Relaxed);
        if saved.state == MonitorState::Error {
            m.state.store(MonitorState::Error as u8, Relaxed);
            self.local[i].last_action_ns = Some(monotonic_ns());
            self.activity.add(
                ActivitySeverity::Warning,
                &saved.name,
                "restored",
                format!(
                    "Error restored from history (last fault #{}); its recovery action is not run again",
                    saved.last_sequence
                ),
            );
        }
        true
    }

    /// Whether the bridge acts: trips hand recovery actions to the runner
    /// and records are published. A table that does not act keeps its
    /// states and the last sequence per source (the passive side of a
    /// live upgrade), and publishing stops.
    pub fn set_acting(&mut self, acting: bool) {
        if acting {
            if self.actions.is_none() {
                self.actions = self.parked.take();
            }
            self.passive = None;
        } else {
            if let Some(a) = self.actions.take() {
                self.parked = Some(a);
            }
            self.passive.get_or_insert_with(Default::default);
        }
    }

    /// Passes `m` to the recovery-action runner, acting or not (dropped
    /// when its queue is full or there is none: the sender of a request
    /// with a reply then sees it closed).
    pub fn to_runner(&self, m: RunnerMsg) {
        if let Some(tx) = self.actions.as_ref().or(self.parked.as_ref()) {
            let _ = tx.try_send(m);
        }
    }

    /// Whether records are published (false on a passive side).
    #[inline]
    pub fn is_acting(&self) -> bool {
        self.passive.is_none()
    }

    /// Notes a record seen while passive.
    pub fn seen_passive(&self, source: Source, sequence: u64) {
        if let Some(p) = &self.passive {
            p.0[source.index()].fetch_max(sequence, Relaxed);
        }
    }

    /// The positions a passive table keeps (None while acting).
    pub fn passive_positions(&self) -> Option<Arc<Positions>> {
        self.passive.clone()
    }

    /// Every monitor's state, for the other side of a live upgrade.
    pub fn snapshot(&self) -> Vec<HandedMonitor> {
        self.view
            .monitors
            .iter()
            .zip(&self.local)
            .map(|(m, l)| HandedMonitor {
                name: m.config.name.clone(),
                error: m.state() == MonitorState::Error,
                error_count: m.error_count(),
                last_sequence: m.last_sequence(),
                window: l.window.iter().copied().collect(),
                last_action_ns: l.last_action_ns,
            })
            .collect()
    }

    /// Takes the states the other side of a live upgrade handed over (by
    /// name; monitors it does not know keep theirs). A state that changes
    /// is told to the listeners; no recovery action runs for it. Returns
    /// how many were taken.
    pub fn adopt(&mut self, handed: &[HandedMonitor]) -> usize {
        let mut n = 0;
        for h in handed {
            let Some((i, m)) = self.view.find(&h.name) else {
                continue;
            };
            n += 1;
            let state = if h.error {
                MonitorState::Error
            } else {
                MonitorState::Normal
            };
            let changed = m.state() != state;
            m.state.store(state as u8, Relaxed);
            m.error_count.store(h.error_count, Relaxed);
            m.last_sequence.store(h.last_sequence, Relaxed);
            self.local[i].window = h.window.iter().copied().collect();
            self.local[i].last_action_ns = h.last_action_ns;
            if changed {
                self.view.tell(MonitorChange {
                    index: i,
                    state,
                    cause: ChangeCause::HandOver,
                    source: None,
                    sequence: h.last_sequence,
                    timestamp_ns: monotonic_ns(),
                    error_count: h.error_count,
                });
            }
        }
        n
    }

    /// Clears a monitor's Error. Returns false for an unknown name.
    pub fn reset(&mut self, name: &str) -> bool {
        let Some((i, m)) = self.view.find(name) else {
            return false;
        };
        self.local[i].window.clear();
        if let Some(tx) = &self.actions
            && tx.try_send(RunnerMsg::Reset { monitor: i }).is_err()
        {
            self.activity.add(
                ActivitySeverity::Error,
                name,
                "reset",
                "the action runner's queue is full: its exit-program restart count was not reset",
            );
        }
        if m.state() == MonitorState::Error {
            self.activity.add(
                ActivitySeverity::Information,
                name,
                "state",
                "Error → Normal: Reset",
            );
            m.state.store(MonitorState::Normal as u8, Relaxed);
            self.normal_again(i);
            let m = &self.view.monitors[i];
            self.view.tell(MonitorChange {
                index: i,
                state: MonitorState::Normal,
                cause: ChangeCause::Reset,
                source: None,
                sequence: m.last_sequence(),
                timestamp_ns: faultbridge_ffi::sys::monotonic_ns(),
                error_count: m.error_count(),
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use faultbridge_ffi::wire::record::RecordSpec;

    fn monitors(toml: &str) -> Monitors {
        Monitors::new(
            &Config::parse(toml, std::path::Path::new("t"))
                .unwrap()
                .monitors,
        )
    }

    fn rec(cat: Category, kw: &str, sev: u16, seq: u64) -> Vec<u8> {
        let mut v = Vec::new();
        RecordSpec {
            flags: 0,
            sequence: seq,
            timestamp_ns: 1,
            category: cat.code(),
            severity: sev,
            event_code: 1,
            device_index: 0,
            keyword: kw.as_bytes(),
            detail: b"",
            driver_id: 1,
        }
        .encode_into(&mut v);
        v
    }

    #[test]
    fn keyword_monitors_match_their_device_and_keywordless_ones_any_device() {
        let mut m = monitors(
            "[[monitor]]\nname='eth0'\ncategory='NIC'\nkeyword='eth0'\n[[monitor]]\nname='anynic'\ncategory='NIC'\n[[monitor]]\nname='fc'\ncategory='FC'\n",
        );
        let changes = m.view().listen(16);
        let b = rec(Category::Nic, "eth1", 2, 1);
        m.on_record(
            Source::Expdrv,
            FaultKind::Fault,
            &Record::parse(&b).unwrap(),
        );
        let v = m.view();
        assert_eq!(v.monitors[0].state(), MonitorState::Normal);
        assert_eq!(v.monitors[1].state(), MonitorState::Error);
        assert_eq!(v.monitors[2].state(), MonitorState::Normal);
        let b = rec(Category::Nic, "eth0", 3, 2);
        m.on_record(
            Source::Expdrv,
            FaultKind::Fault,
            &Record::parse(&b).unwrap(),
        );
        assert_eq!(v.monitors[0].state(), MonitorState::Error);
        assert_eq!(v.monitors[0].last_sequence(), 2);
        assert_eq!(v.monitors[1].error_count(), 2);
        let got: Vec<_> = changes.try_iter().map(|c| (c.index, c.state)).collect();
        assert_eq!(
            got,
            vec![(1, MonitorState::Error), (0, MonitorState::Error)]
        );
        assert!(m.reset("eth0"));
        assert!(!m.reset("nope"));
        assert_eq!(v.monitors[0].state(), MonitorState::Normal);
    }

    #[test]
    fn below_minimum_severity_is_ignored_and_clear_needs_auto_clear() {
        let mut m = monitors(
            "[[monitor]]\nname='a'\ncategory='FC'\nauto_clear=true\n[[monitor]]\nname='b'\ncategory='FC'\n",
        );
        let b = rec(Category::Fc, "host1", 1, 1);
        m.on_record(
            Source::Expdrv,
            FaultKind::Fault,
            &Record::parse(&b).unwrap(),
        );
        let v = m.view();
        assert_eq!(v.monitors[0].state(), MonitorState::Normal);
        let b = rec(Category::Fc, "host1", 2, 2);
        m.on_record(
            Source::Expdrv,
            FaultKind::Fault,
            &Record::parse(&b).unwrap(),
        );
        assert_eq!(v.monitors[0].state(), MonitorState::Error);
        let b = rec(Category::Fc, "host1", 0, 3);
        m.on_record(
            Source::Expdrv,
            FaultKind::Clear,
            &Record::parse(&b).unwrap(),
        );
        assert_eq!(v.monitors[0].state(), MonitorState::Normal);
        assert_eq!(v.monitors[1].state(), MonitorState::Error);
    }
}

//! The daemon: one ingest thread owns the one mio loop, every source's
//! descriptors, parsing and publishing. Nothing on it waits for a consumer.
//! Requests from other threads (D-Bus `Notify`, stop) arrive on a channel
//! and a waker. A bridge is opened paused, so its first subscribers are in
//! place before the sources' start-up reports are published.

use crate::action::{Runner, RunnerStats};
use crate::activity::ActivityLog;
use crate::config::Config;
use crate::history::{HistoryDb, HistoryError, HistoryStats, Retention, WriterInputs, run_writer};
use crate::monitor::{MonitorView, Monitors};
use crate::notify::{NotifyError, NotifyRequest, NotifySource};
use crate::sources::{Dispatch, IngestSource, SourceTokens};
use crate::stats::{Stats, StatsSnapshot};
use crossbeam_channel::{Receiver, Sender};
use faultbridge_bus::{BusHandle, Publisher, Source, SubscribeOptions, Subscription, bus};
use faultbridge_ffi::sys::netlink::NetlinkError;
use mio::{Events, Poll, Token, Waker};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why the bridge could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BridgeError {
    #[error("source {source_name}: cannot start")]
    SourceOpen {
        source_name: Source,
        #[source]
        source: NetlinkError,
    },
    #[error(
        "source {source_name}: cannot start: {reason}; the daemon does not run without a configured source unless its table says optional = true ([{table}])"
    )]
    SourceStart {
        source_name: Source,
        table: &'static str,
        reason: String,
        /// The error number of the cause, when there is one.
        errno: Option<i32>,
    },
    #[error("cannot set up the event loop")]
    Poll(#[source] io::Error),
    #[error("source {source_name}: cannot register with the event loop")]
    SourceRegister {
        source_name: Source,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the ingest thread")]
    Thread(#[source] io::Error),
    #[error("the bridge has stopped")]
    Stopped,
    #[error("cannot use the history database")]
    History(#[source] HistoryError),
}

/// What a token of the ingest loop's poll stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    /// The waker: control requests, stop.
    Wake,
    /// Descriptor `slot` of source `index`.
    Source { index: usize, slot: usize },
}

impl Tok {
    fn token(self) -> Token {
        match self {
            Tok::Wake => Token(0),
            Tok::Source { index, slot } => Token(1 + index * SourceTokens::SLOTS + slot),
        }
    }

    fn of(t: Token) -> Tok {
        match t.0 {
            0 => Tok::Wake,
            n => Tok::Source {
                index: (n - 1) / SourceTokens::SLOTS,
                slot: (n - 1) % SourceTokens::SLOTS,
            },
        }
    }

    /// The tokens of source `index`.
    fn source(index: usize) -> SourceTokens {
        SourceTokens::new(Tok::Source { index, slot: 0 }.token().0)
    }
}

/// A request to the ingest thread.
#[derive(Debug)]
pub enum Control {
    /// Publish a fault reported from user space; the reply is its sequence.
    Notify {
        request: NotifyRequest,
        reply: Sender<Result<u64, NotifyError>>,
    },
    /// Clear a monitor's Error; the reply is false for an unknown monitor.
    Reset {
        monitor: String,
        reply: Sender<bool>,
    },
    /// Answered at once: proves the ingest loop is turning (watchdog).
    Ping { reply: Sender<()> },
    /// The sources that could not be handed over now (a live upgrade's
    /// PrepareMerge).
    HandOverCheck { reply: Sender<Vec<Source>> },
    /// Stop acting after the record in hand: every source leaves the loop
    /// and is handed back with the monitors' states (a live upgrade). The
    /// loop then acts on nothing until [`Control::TakeOver`].
    Release {
        reply: Sender<Result<Released, String>>,
    },
    /// Act from now on over sources handed over by the other side, with
    /// its monitor states; this side's own sources are closed.
    TakeOver { taken: Taken, reply: Sender<()> },
    /// Passed on to the recovery-action runner (never waited for here):
    /// the restart counts of a live upgrade.
    Runner(crate::action::RunnerMsg),
    /// Every monitor's state (a live upgrade's Split: the new side starts
    /// from the running side's states).
    MonitorSnapshot {
        reply: Sender<Vec<crate::monitor::HandedMonitor>>,
    },
    /// Takes monitor states while passive (ignored while acting); the
    /// reply is how many were taken.
    AdoptMonitors {
        monitors: Vec<crate::monitor::HandedMonitor>,
        reply: Sender<usize>,
    },
}

/// What a bridge gives up when it stops acting at a live upgrade.
#[derive(Debug)]
pub struct Released {
    pub sources: Vec<crate::sources::HandedSource>,
    pub monitors: Vec<crate::monitor::HandedMonitor>,
    /// The sequence the next `Notify` would have been given.
    pub notify_next: u64,
    /// When acting stopped (CLOCK_MONOTONIC).
    pub released_at_ns: u64,
    /// Per monitor name, its exit-program restart count (filled by the
    /// caller from the runner: the ingest thread never waits for it).
    pub restart_counts: Vec<(String, u32)>,
}

/// What a bridge takes over at a live upgrade.
#[derive(Debug)]
pub struct Taken {
    pub sources: Vec<Box<dyn IngestSource>>,
    pub monitors: Vec<crate::monitor::HandedMonitor>,
    pub notify_next: u64,
    /// When the other side stopped acting (CLOCK_MONOTONIC; 0: unknown).
    pub released_at_ns: u64,
    /// Per monitor name, its exit-program restart count on the other side
    /// (applied by the caller, see [`crate::upgrade::handover::Local`]).
    pub restart_counts: Vec<(String, u32)>,
}

/// A cloneable handle for sending requests to the ingest thread.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    tx: Sender<Control>,
    waker: Arc<Waker>,
}

impl ControlHandle {
    /// Sends a request and wakes the ingest loop.
    pub fn send(&self, c: Control) -> Result<(), BridgeError> {
        self.tx.send(c).map_err(|_| BridgeError::Stopped)?;
        self.waker.wake().map_err(|_| BridgeError::Stopped)
    }

    /// Reports a fault from user space (D-Bus `Notify`, `faultbridge notify`)
    /// and waits for the ingest thread to publish it; returns its sequence.
    pub fn notify(&self, request: NotifyRequest) -> Result<u64, NotifyError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Control::Notify { request, reply })
            .map_err(|_| NotifyError::Stopped)?;
        rx.recv().map_err(|_| NotifyError::Stopped)?
    }

    /// Waits at most `timeout` for the ingest loop to answer.
    pub fn ping(&self, timeout: std::time::Duration) -> Result<(), BridgeError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Control::Ping { reply })?;
        rx.recv_timeout(timeout).map_err(|_| BridgeError::Stopped)
    }

    /// Every monitor's state now.
    pub fn monitor_snapshot(&self) -> Result<Vec<crate::monitor::HandedMonitor>, BridgeError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Control::MonitorSnapshot { reply })?;
        rx.recv().map_err(|_| BridgeError::Stopped)
    }

    /// Takes monitor states while passive; returns how many were taken
    /// (none while acting).
    pub fn adopt_monitors(
        &self,
        monitors: Vec<crate::monitor::HandedMonitor>,
    ) -> Result<usize, BridgeError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Control::AdoptMonitors { monitors, reply })?;
        rx.recv().map_err(|_| BridgeError::Stopped)
    }

    /// The sources that cannot be handed over to another process now.
    pub fn hand_over_check(&self) -> Result<Vec<Source>, BridgeError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Control::HandOverCheck { reply })?;
        rx.recv().map_err(|_| BridgeError::Stopped)
    }

    /// Stops acting after the record in hand and gives up the sources and
    /// monitor states (see [`Control::Release`]).
    pub fn release(&self) -> Result<Released, String> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Control::Release { reply })
            .map_err(|e| e.to_string())?;
        rx.recv().map_err(|_| BridgeError::Stopped.to_string())?
    }

    /// Acts from now on over `taken` (see [`Control::TakeOver`]); returns
    /// once the loop has the sources.
    pub fn take_over(&self, taken: Taken) -> Result<(), BridgeError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Control::TakeOver { taken, reply })?;
        rx.recv().map_err(|_| BridgeError::Stopped)
    }

    /// Clears monitor `name`'s Error state; `Ok(false)` if there is no such monitor.
    pub fn reset(&self, name: &str) -> Result<bool, BridgeError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Control::Reset {
            monitor: name.to_string(),
            reply,
        })?;
        rx.recv().map_err(|_| BridgeError::Stopped)
    }
}

/// A bridge: subscribe to it, run it, read its counters, stop it.
///
/// Embedding it takes a few lines (this example runs as a doctest; receiving
/// netlink multicast needs `CAP_NET_ADMIN`). [`Bridge::open`] opens the
/// sources and returns paused: subscribe, then [`Bridge::run`], and the
/// subscription sees everything from the first record on, the sources'
/// start-up reports included. ([`Bridge::start`] opens and runs at once.)
///
/// ```
/// use faultbridge::sim::{FaultSpec, Simulator};
/// use faultbridge::{Bridge, Config, Event, SubscribeOptions};
/// use faultbridge_ffi::wire::record::Category;
/// use std::time::Duration;
///
/// // The daemon, reading the simulator's protocol on multicast group 30
/// // (the simulator is a user-space process: `accept = "root"`).
/// let mut bridge = Bridge::open(&Config::simulator(30))?;
/// let faults = bridge.subscribe(SubscribeOptions::new("my-agent"))?;
/// bridge.run()?;
///
/// // A driver reports that eth0 lost its link.
/// Simulator::new(2, 30)?.send(&FaultSpec::new(Category::Nic, "eth0"))?;
///
/// match faults.recv_timeout(Duration::from_secs(5)) {
///     Ok(Event::Fault(f)) => {
///         assert_eq!((f.category(), f.keyword()), (Category::Nic, "eth0"));
///         println!("{} {} {}", f.category(), f.keyword(), f.severity());
///     }
///     other => panic!("expected the fault, got {other:?}"),
/// }
/// let counters = bridge.shutdown();
/// assert_eq!(counters.source(faultbridge::Source::Expdrv).delivered, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Bridge {
    handle: BusHandle,
    control: ControlHandle,
    monitors: Arc<MonitorView>,
    activity: Arc<ActivityLog>,
    history_path: Option<std::path::PathBuf>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    /// The ingest loop until [`Bridge::run`] hands it to its thread.
    paused: Option<Box<Ingest>>,
    thread: Option<JoinHandle<()>>,
    /// The history writer; it ends once the ingest thread has stopped.
    history: Option<(JoinHandle<()>, Arc<HistoryStats>)>,
    /// The fleet forwarder (`[forward.nats]`), fed from the history database.
    forward: Option<crate::forward::Forwarder>,
    /// Dropped after the ingest thread has stopped (field order).
    runner: Option<Runner>,
}

#[derive(Debug)]
struct Ingest {
    poll: Poll,
    sources: Vec<Box<dyn IngestSource>>,
    notify: NotifySource,
    monitors: Monitors,
    control: Receiver<Control>,
    publisher: Publisher,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    /// Faults published when the C heap was last given back (see
    /// [`Ingest::poll_timeout`]).
    trimmed_at: u64,
    /// False on the passive side of a live upgrade: nothing is published
    /// and no action is handed over.
    acting: bool,
    /// Sources that could not start (optional ones) or stopped working,
    /// tried again with a growing delay.
    retries: Vec<Retry>,
    /// The configuration, to open a source again.
    config: Config,
}

/// A source to start again, and when.
#[derive(Debug)]
struct Retry {
    source: Source,
    /// Index into `sources` for a source that recovers by itself
    /// ([`IngestSource::recover`]); `None`: it is opened anew.
    index: Option<usize>,
    at: Instant,
    delay: Duration,
}

/// The first delay before a failed source is tried again; it doubles up
/// to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

impl Retry {
    fn new(source: Source) -> Retry {
        Retry {
            source,
            index: None,
            at: Instant::now() + RETRY_FIRST,
            delay: RETRY_FIRST,
        }
    }

    fn later(&mut self) {
        self.delay = (self.delay * 2).min(RETRY_MAX);
        self.at = Instant::now() + self.delay;
    }
}

/// Faults published since the heap was last given back that make a storm
/// worth giving memory back after.
const STORM: u64 = 4096;
/// How long the sources must be quiet, and the subscribers' queues empty,
/// before the memory of a storm is given back.
const QUIET: Duration = Duration::from_secs(1);

impl Bridge {
    /// Opens the configured sources (so a source that cannot start is
    /// reported here) and starts the ingest thread at once: what the
    /// sources find at start-up is published before anyone can subscribe
    /// (monitors and history get it). See [`Bridge::open`] to subscribe first.
    pub fn start(config: &Config) -> Result<Bridge, BridgeError> {
        let mut bridge = Bridge::open(config)?;
        bridge.run()?;
        Ok(bridge)
    }

    /// Opens the configured sources, registered with the ingest loop, and
    /// returns the bridge paused: nothing is read until [`Bridge::run`].
    /// A configured source that cannot start is an error, unless its table
    /// says `optional = true`: then the bridge runs without it, says so
    /// (its health, `Status`, the `Degraded` property of the monitors it
    /// feeds) and tries to start it again with a growing delay.
    pub fn open(config: &Config) -> Result<Bridge, BridgeError> {
        let (opened, failed) = crate::sources::open_all(config);
        if let Some(f) = failed.iter().find(|f| !f.optional) {
            return Err(BridgeError::SourceStart {
                source_name: f.source,
                table: crate::sources::table(f.source),
                reason: f.reason.clone(),
                errno: f.errno,
            });
        }
        let mut bridge = Bridge::assemble(config, opened, true)?;
        if let Some(ingest) = bridge.paused.as_mut() {
            for f in failed {
                ingest.stats.health.configure(f.source, f.optional);
                ingest.stats.health.down(f.source, &f.reason);
                // The device is not reopened beside the netlink group read
                // in its place (a restart picks it up).
                if f.source != Source::ExpdrvDevice {
                    ingest.retries.push(Retry::new(f.source));
                }
            }
        }
        Ok(bridge)
    }

    /// Starts the ingest thread over sources opened by the caller (or handed
    /// over by a previous daemon).
    pub fn start_with_sources(
        config: &Config,
        sources: Vec<Box<dyn IngestSource>>,
    ) -> Result<Bridge, BridgeError> {
        let mut bridge = Bridge::open_with_sources(config, sources)?;
        bridge.run()?;
        Ok(bridge)
    }

    /// Like [`Bridge::open`], over sources opened by the caller: each must
    /// register with the loop.
    pub fn open_with_sources(
        config: &Config,
        sources: Vec<Box<dyn IngestSource>>,
    ) -> Result<Bridge, BridgeError> {
        Bridge::assemble(config, sources, false)
    }

    /// The one poll of the ingest loop, with every source registered. With
    /// `configured`, a source that cannot be polled is reported and left
    /// out, and the expanded driver's netlink group is opened when its char
    /// device is not there.
    fn assemble(
        config: &Config,
        opened: Vec<Box<dyn IngestSource>>,
        configured: bool,
    ) -> Result<Bridge, BridgeError> {
        let poll = Poll::new().map_err(BridgeError::Poll)?;
        let mut sources = Vec::new();
        for mut src in opened {
            if configured {
                register_or_report(&poll, &mut sources, src);
                continue;
            }
            src.register(poll.registry(), Tok::source(sources.len()))
                .map_err(|source| BridgeError::SourceRegister {
                    source_name: src.source(),
                    source,
                })?;
            sources.push(src);
        }
        if !configured {
            return Bridge::paused(config, poll, sources);
        }
        if config.expdrv.enabled && config.expdrv.accept == crate::config::Accept::Any {
            eprintln!(
                "faultbridge: warning: [sources.expdrv] accept = \"any\": any local user can send records that make monitors act; for demos only"
            );
        }
        Bridge::paused(config, poll, sources)
    }

    fn paused(
        config: &Config,
        poll: Poll,
        mut sources: Vec<Box<dyn IngestSource>>,
    ) -> Result<Bridge, BridgeError> {
        let waker =
            Arc::new(Waker::new(poll.registry(), Tok::Wake.token()).map_err(BridgeError::Poll)?);
        let (publisher, handle) = bus();
        let (ctx, crx) = crossbeam_channel::unbounded();
        let stats = Arc::new(Stats::default());
        for src in &sources {
            let name = src.source();
            stats
                .health
                .configure(name, crate::sources::optional(config, name));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let activity = Arc::new(ActivityLog::new(4096));
        let runner = if config.monitors.is_empty() {
            None
        } else {
            Some(
                Runner::start(
                    config.monitors.clone(),
                    config.actions.clone(),
                    activity.clone(),
                )
                .map_err(BridgeError::Thread)?,
            )
        };
        let monitors = Monitors::with_actions(
            &config.monitors,
            activity.clone(),
            runner.as_ref().and_then(Runner::sender),
        );
        let mut monitors = monitors;
        let monitor_view = monitors.view();
        let history = match &config.history {
            None => None,
            Some(h) => {
                let db = HistoryDb::open(&h.path).map_err(BridgeError::History)?;
                // Restart continuity: where each source was, and which
                // monitors were latched in Error.
                for (source, driver_id, last) in db.cursors().map_err(BridgeError::History)? {
                    for src in sources.iter_mut().filter(|s| s.source().name() == source) {
                        src.restore_cursor(driver_id, last);
                    }
                }
                for saved in db.monitor_states().map_err(BridgeError::History)? {
                    monitors.restore(&saved);
                }
                Some(start_writer(
                    db,
                    h,
                    &handle,
                    &monitor_view,
                    &activity,
                    config,
                )?)
            }
        };
        let forward = start_forwarder(config, history.as_ref())?;
        let ingest = Ingest {
            poll,
            sources,
            notify: NotifySource::default(),
            monitors,
            control: crx,
            publisher,
            stats: stats.clone(),
            stop: stop.clone(),
            trimmed_at: 0,
            acting: true,
            retries: Vec::new(),
            config: config.clone(),
        };
        Ok(Bridge {
            handle,
            control: ControlHandle { tx: ctx, waker },
            monitors: monitor_view,
            activity,
            history_path: config.history.as_ref().map(|h| h.path.clone()),
            stats,
            stop,
            paused: Some(Box::new(ingest)),
            thread: None,
            history: history.map(|(t, s, _)| (t, s)),
            forward,
            runner,
        })
    }

    /// Starts the ingest thread: each source publishes what it found at
    /// start-up, then the loop reads as records arrive. Does nothing once
    /// running.
    pub fn run(&mut self) -> Result<(), BridgeError> {
        let Some(mut ingest) = self.paused.take() else {
            return Ok(());
        };
        let thread = std::thread::Builder::new()
            .name("fb-ingest".into())
            .spawn(move || ingest.run())
            .map_err(BridgeError::Thread)?;
        self.thread = Some(thread);
        Ok(())
    }

    /// Makes a bridge not yet running passive: it reads its sources, keeps
    /// its monitors' states and the last sequence per source (returned),
    /// but publishes nothing and hands no action over until it takes over from the other side of a live upgrade
    /// ([`ControlHandle::take_over`]). Does nothing once running.
    pub fn set_passive(&mut self) -> Option<Arc<crate::monitor::Positions>> {
        let i = self.paused.as_mut()?;
        i.acting = false;
        i.monitors.set_acting(false);
        i.monitors.passive_positions()
    }

    /// Opens the history database of `config` and starts its writer, when
    /// `[history]` is configured and no writer runs (the side of a live
    /// upgrade that takes over starts writing history then).
    pub fn start_history(&mut self, config: &Config) -> Result<(), BridgeError> {
        let Some(h) = &config.history else {
            return Ok(());
        };
        if self.history.is_some() {
            return Ok(());
        }
        let db = HistoryDb::open(&h.path).map_err(BridgeError::History)?;
        let started = start_writer(db, h, &self.handle, &self.monitors, &self.activity, config)?;
        self.forward = start_forwarder(config, Some(&started))?;
        self.history = Some((started.0, started.1));
        self.history_path = Some(h.path.clone());
        Ok(())
    }

    /// Subscribes to every fault and loss notice published from now on.
    pub fn subscribe(&self, opts: SubscribeOptions) -> Result<Subscription, BridgeError> {
        self.handle.subscribe(opts).ok_or(BridgeError::Stopped)
    }

    /// A handle to subscribe from elsewhere.
    pub fn bus(&self) -> BusHandle {
        self.handle.clone()
    }

    /// A handle to send requests (such as `Notify`) to the ingest thread.
    pub fn control(&self) -> ControlHandle {
        self.control.clone()
    }

    /// The monitors' states, readable from any thread, with change listeners.
    pub fn monitors(&self) -> Arc<MonitorView> {
        self.monitors.clone()
    }

    /// The live counters, for adapters that report them (D-Bus `Status`).
    pub fn counters(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The history database, when `[history]` is configured.
    pub fn history_path(&self) -> Option<&std::path::Path> {
        self.history_path.as_deref()
    }

    /// Counters of the history writer (absent without `[history]`).
    pub fn history_stats(&self) -> Option<Arc<HistoryStats>> {
        self.history.as_ref().map(|h| h.1.clone())
    }

    /// The fleet forwarder's state (absent without `[forward.nats]`).
    pub fn forward_state(&self) -> Option<Arc<crate::forward::ForwardState>> {
        self.forward.as_ref().map(crate::forward::Forwarder::state)
    }

    /// The activity log: state changes and recovery actions.
    pub fn activity(&self) -> Arc<ActivityLog> {
        self.activity.clone()
    }

    /// Counters of the recovery-action runner (absent without monitors).
    pub fn action_stats(&self) -> Option<Arc<RunnerStats>> {
        self.runner.as_ref().map(|r| r.stats.clone())
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops the ingest thread (after it finishes the datagram in hand) and
    /// returns the final counters. Subscriptions then drain and close.
    pub fn shutdown(mut self) -> StatsSnapshot {
        self.stop_and_join();
        self.stats.snapshot()
    }

    fn stop_and_join(&mut self) {
        // A bridge never run: its loop (and publisher) goes now.
        self.paused = None;
        self.stop.store(true, Ordering::Release);
        let _ = self.control.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The ingest thread dropped the publisher: the writer drains what is
        // queued, commits, and ends.
        if let Some((t, _)) = self.history.take() {
            let _ = t.join();
        }
        // Everything is committed: the forwarder sends what it can for a
        // moment, saves its cursor and ends.
        if let Some(f) = self.forward.take() {
            f.stop();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the history writer over `db`: it subscribes now, so it records
/// everything published from here on.
fn start_writer(
    db: HistoryDb,
    h: &crate::config::HistoryConfig,
    handle: &BusHandle,
    monitor_view: &Arc<MonitorView>,
    activity: &Arc<ActivityLog>,
    config: &Config,
) -> Result<StartedWriter, BridgeError> {
    let committed = config
        .forward
        .as_ref()
        .map(|_| Arc::new(tokio::sync::Notify::new()));
    let inputs = WriterInputs {
        committed: committed.clone(),
        events: handle
            .subscribe(
                SubscribeOptions::new("history")
                    .capacity(config.ingest.queue)
                    // Batched writes: no spinning for latency.
                    .spin_limit(std::time::Duration::ZERO),
            )
            .ok_or(BridgeError::Stopped)?,
        changes: monitor_view.listen(65536),
        activity: activity.listen(65536),
        monitors: monitor_view.clone(),
    };
    let retention = Retention {
        max_age: h.max_age,
        max_rows: h.max_rows,
    };
    let hstats = Arc::new(HistoryStats::default());
    let hs = hstats.clone();
    let t = std::thread::Builder::new()
        .name("fb-history".into())
        .spawn(move || run_writer(db, inputs, retention, hs))
        .map_err(BridgeError::Thread)?;
    Ok((t, hstats, committed))
}

/// A started history writer: its thread, its counters, and what it tells
/// after each commit when a forwarder reads the database.
type StartedWriter = (
    JoinHandle<()>,
    Arc<HistoryStats>,
    Option<Arc<tokio::sync::Notify>>,
);

/// Starts the fleet forwarder when `[forward.nats]` is configured, over
/// the database the writer (`started`) writes.
fn start_forwarder(
    config: &Config,
    started: Option<&StartedWriter>,
) -> Result<Option<crate::forward::Forwarder>, BridgeError> {
    let (Some(f), Some(h), Some((_, _, Some(wake)))) = (&config.forward, &config.history, started)
    else {
        return Ok(None);
    };
    crate::forward::Forwarder::start(f, &h.path, wake.clone())
        .map(Some)
        .map_err(BridgeError::Thread)
}

/// Registers `src` under the next source index, or reports why it cannot
/// be polled and leaves it out.
fn register_or_report(
    poll: &Poll,
    sources: &mut Vec<Box<dyn IngestSource>>,
    mut src: Box<dyn IngestSource>,
) {
    match src.register(poll.registry(), Tok::source(sources.len())) {
        Ok(()) => sources.push(src),
        Err(e) => eprintln!(
            "faultbridge: source {}: cannot start: cannot poll it: {e}",
            src.source()
        ),
    }
}

impl Ingest {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        // What each source found at start-up, and anything that arrived
        // between bind and the first poll.
        for i in 0..self.sources.len() {
            self.on_source(i, None);
        }
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, self.poll_timeout()) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("faultbridge: event loop failed: {e}");
                break;
            }
            if !self.retries.is_empty() {
                self.retry_due();
            }
            if events.is_empty() {
                self.after_storm();
                continue;
            }
            for ev in events.iter() {
                match Tok::of(ev.token()) {
                    Tok::Wake => self.on_control(),
                    Tok::Source { index, slot } => self.on_source(index, Some(slot)),
                }
            }
        }
    }

    /// No timeout at rest; [`QUIET`] while a storm's memory may be given
    /// back, so the loop wakes once the sources have been quiet that long;
    /// and no later than the next retry of a source that is down.
    fn poll_timeout(&self) -> Option<Duration> {
        let published = self.publisher.stats().published;
        let storm = (published.saturating_sub(self.trimmed_at) >= STORM).then_some(QUIET);
        let now = Instant::now();
        let retry = self
            .retries
            .iter()
            .map(|r| r.at.saturating_duration_since(now))
            .min();
        match (storm, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Tries again the sources whose time has come: a source that could
    /// not start is opened anew, one whose part stopped working recovers
    /// it. Success is told everywhere the failure was; a failure waits
    /// twice as long for the next try.
    fn retry_due(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.retries.len() {
            if self.retries[i].at > now {
                i += 1;
                continue;
            }
            let source = self.retries[i].source;
            let r = match self.retries[i].index {
                Some(index) => match self.sources.get_mut(index) {
                    Some(src) => src.recover(),
                    None => Err("the source is gone".into()),
                },
                None => self.reopen(source),
            };
            match r {
                Ok(()) => {
                    self.retries.swap_remove(i);
                    if self.stats.health.up(source) {
                        eprintln!("faultbridge: source {source}: running again");
                    }
                }
                Err(why) => {
                    self.retries[i].later();
                    self.stats.health.down(source, &why);
                    i += 1;
                }
            }
        }
    }

    /// Opens `source` anew, registers it and lets it publish what it finds.
    fn reopen(&mut self, source: Source) -> Result<(), String> {
        let mut src = crate::sources::reopen(&self.config, source).map_err(|f| f.reason)?;
        let index = self.sources.len();
        src.register(self.poll.registry(), Tok::source(index))
            .map_err(|e| format!("cannot poll it: {e}"))?;
        self.sources.push(src);
        self.on_source(index, None);
        Ok(())
    }

    /// Source `i` says part of it stopped working: down until it recovers.
    fn check_trouble(&mut self, i: usize) {
        let Some(src) = self.sources.get(i) else {
            return;
        };
        let Some(why) = src.trouble() else {
            return;
        };
        let source = src.source();
        if self.retries.iter().any(|r| r.index == Some(i)) {
            return;
        }
        if self.stats.health.down(source, &why) {
            eprintln!("faultbridge: source {source}: down: {why}; trying to start it again");
        }
        let mut r = Retry::new(source);
        r.index = Some(i);
        self.retries.push(r);
    }

    /// The sources have been quiet for [`QUIET`] after a storm: once every
    /// subscriber has caught up (their queues' segments and the record
    /// buffers beyond what the pools keep are freed by then), the C heap's
    /// free pages go back to the kernel, so the daemon's resident memory
    /// returns to its size at rest. Until then the loop keeps waking.
    fn after_storm(&mut self) {
        if self.poll_timeout().is_none() || self.publisher.queued() > 0 {
            return;
        }
        self.trimmed_at = self.publisher.stats().published;
        faultbridge_ffi::sys::heap::release_free_heap();
    }

    /// Source `i`'s descriptor `slot` is ready; `None`: the source starts.
    fn on_source(&mut self, i: usize, slot: Option<usize>) {
        let Some(src) = self.sources.get_mut(i) else {
            return;
        };
        let name = src.source();
        let mut out = Dispatch {
            publisher: &mut self.publisher,
            monitors: &mut self.monitors,
        };
        let c = self.stats.source(name);
        let r = match slot {
            None => src.start(&mut out, c),
            Some(slot) => src.on_event(slot, &mut out, c),
        };
        if let Err(e) = r {
            eprintln!("faultbridge: {name}: receive failed: {e}");
        }
        self.check_trouble(i);
        self.after_publish();
    }

    fn on_control(&mut self) {
        while let Ok(c) = self.control.try_recv() {
            match c {
                Control::Notify { reply, .. } if !self.acting => {
                    let _ = reply.send(Err(NotifyError::NotActing));
                }
                Control::Notify { request, reply } => {
                    let mut out = Dispatch {
                        publisher: &mut self.publisher,
                        monitors: &mut self.monitors,
                    };
                    let r =
                        self.notify
                            .publish(&request, &mut out, self.stats.source(Source::Notify));
                    let _ = reply.send(r);
                }
                Control::Reset { monitor, reply } => {
                    let _ = reply.send(self.monitors.reset(&monitor));
                }
                Control::Ping { reply } => {
                    let _ = reply.send(());
                }
                Control::HandOverCheck { reply } => {
                    let _ = reply.send(
                        self.sources
                            .iter()
                            .filter(|s| !s.can_hand_over())
                            .map(|s| s.source())
                            .collect(),
                    );
                }
                Control::Release { reply } => {
                    let _ = reply.send(self.release());
                }
                Control::TakeOver { taken, reply } => {
                    self.take_over(taken);
                    let _ = reply.send(());
                }
                Control::Runner(m) => self.monitors.to_runner(m),
                Control::MonitorSnapshot { reply } => {
                    let _ = reply.send(self.monitors.snapshot());
                }
                Control::AdoptMonitors { monitors, reply } => {
                    let n = if self.acting {
                        0
                    } else {
                        self.monitors.adopt(&monitors)
                    };
                    let _ = reply.send(n);
                }
            }
        }
        self.after_publish();
    }

    /// Stops acting: every source leaves the poll and is handed over, with
    /// the monitors' states. All or nothing: a source that cannot be handed
    /// over leaves everything as it was.
    fn release(&mut self) -> Result<Released, String> {
        if !self.acting {
            return Err("this side is not acting".into());
        }
        if let Some(s) = self.sources.iter().find(|s| !s.can_hand_over()) {
            return Err(format!(
                "source {} cannot be handed over by this build",
                s.source()
            ));
        }
        let registry = self.poll.registry();
        for i in 0..self.sources.len() {
            if let Err(e) = self.sources[i].deregister(registry) {
                let name = self.sources[i].source();
                for (j, s) in self.sources.iter_mut().enumerate().take(i) {
                    if let Err(e) = s.register(registry, Tok::source(j)) {
                        eprintln!(
                            "faultbridge: source {}: cannot poll it again: {e}",
                            s.source()
                        );
                    }
                }
                return Err(format!("source {name}: cannot leave the event loop: {e}"));
            }
        }
        let mut handed = Vec::new();
        for s in &self.sources {
            match s.hand_over() {
                Some(h) => handed.push(h),
                None => {
                    let name = s.source();
                    let registry = self.poll.registry();
                    for (j, s) in self.sources.iter_mut().enumerate() {
                        if let Err(e) = s.register(registry, Tok::source(j)) {
                            eprintln!(
                                "faultbridge: source {}: cannot poll it again: {e}",
                                s.source()
                            );
                        }
                    }
                    return Err(format!(
                        "source {name}: its descriptors cannot be duplicated"
                    ));
                }
            }
        }
        // Closed here; the other side holds the sockets from now on.
        self.sources.clear();
        self.retries.clear();
        self.acting = false;
        self.monitors.set_acting(false);
        Ok(Released {
            sources: handed,
            monitors: self.monitors.snapshot(),
            notify_next: self.notify.next_sequence(),
            released_at_ns: faultbridge_ffi::sys::monotonic_ns(),
            restart_counts: Vec::new(),
        })
    }

    /// Acts from now on over `taken`, this side's own sources closed; what
    /// is queued in the taken sockets is read at once.
    fn take_over(&mut self, taken: Taken) {
        self.sources.clear();
        self.retries.clear();
        self.monitors.adopt(&taken.monitors);
        self.monitors.set_acting(true);
        self.notify.set_next_sequence(taken.notify_next);
        self.acting = true;
        for src in taken.sources {
            register_or_report(&self.poll, &mut self.sources, src);
        }
        for i in 0..self.sources.len() {
            self.on_source(i, Some(0));
        }
    }

    fn after_publish(&mut self) {
        self.stats
            .subscriber_drops
            .store(self.publisher.stats().dropped, Ordering::Relaxed);
    }
}

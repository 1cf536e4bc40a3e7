//! Starting and stopping the service. Its threads:
//!
//! - the connection's own work (reading the socket, answering method calls
//!   and property reads) runs on zbus's runtime, on a helper thread of its
//!   own; `Notify` and `Reset` wait for the ingest thread on its pool for
//!   blocking work;
//! - `fb-dbus-signals`, the pump: drains the service's bus subscription,
//!   paces, builds `Fault` and `Lost` signals (see `signals.rs`);
//! - `fb-dbus-send`: writes the built signals to the socket, several per
//!   write, from a queue of at most [`Service::MAX_IN_FLIGHT`];
//! - `fb-dbus-monitors`: turns the monitors' state changes into
//!   `PropertiesChanged`;
//! - `fb-dbus-link`: waits for the connection to close and makes it again
//!   (see `link.rs`).

use super::bridge1::BridgeObject;
use super::counters::{Counters, DbusStats};
use super::guard::Gates;
use super::link::{BusHealth, Link};
use super::monitor1::MonitorObject;
use super::names::{BUS_NAME, MONITOR_INTERFACE, PROPERTIES_INTERFACE, monitor_path};
use super::signals::{Pump, TokenBucket, in_flight, run_sender};
use super::{Backend, BusAddress, MonitorSnapshot, MonitorState, MonitorUpdate, ServiceError};
use crate::fanout::Subscription;
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use zbus::connection::Builder;
use zbus::fdo::{RequestNameFlags, RequestNameReply};
use zbus::{Connection, OwnedObjectPath, Variant};

/// How the service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceOptions {
    pub bus: BusAddress,
    /// `Fault` and `Lost` signals emitted per second at most, sustained;
    /// 0: no limit (the socket to the bus is then the only brake).
    pub max_signals_per_second: u32,
    /// Signals that may go out at once above that pace.
    pub signal_burst: u32,
    /// Start without `org.faultbridge.Bridge1` and with the signals held
    /// (a live upgrade's new side): [`Service::take_name`] then takes the
    /// name from its owner, which allows replacement and waits in the
    /// name's queue (so the name is never missing), and lets the signals
    /// go. Without it, a name owned already fails the start.
    pub take_name: bool,
}

impl ServiceOptions {
    /// The default pace: 10 000 signals/s sustained, bursts of 1 000. Far
    /// above what fault sources produce outside a storm, and a fraction of
    /// what one `dbus-daemon` routes on a small machine (45 000 to 120 000
    /// signals/s to a single subscriber on 2 cores, less with each more
    /// subscriber), so the bus stays responsive to everyone else during a
    /// storm (figures in `docs/performance.md`).
    pub const DEFAULT_MAX_SIGNALS_PER_SECOND: u32 = 10_000;
    pub const DEFAULT_SIGNAL_BURST: u32 = 1_000;

    pub fn new(bus: BusAddress) -> ServiceOptions {
        ServiceOptions {
            bus,
            max_signals_per_second: Self::DEFAULT_MAX_SIGNALS_PER_SECOND,
            signal_burst: Self::DEFAULT_SIGNAL_BURST,
            take_name: false,
        }
    }
}

impl DbusStats {
    /// Faults D-Bus subscribers did not get as a `Fault` signal because of
    /// the D-Bus side (queue or pace).
    pub fn dropped(&self) -> u64 {
        self.queue_drops + self.rate_drops + self.backlog_drops + self.bus_down_drops
    }

    /// As the `dbus` entry of `Status`.
    pub fn to_map(&self) -> HashMap<String, u64> {
        [
            ("faults_in", self.faults_in),
            ("fault_signals", self.fault_signals),
            ("lost_signals", self.lost_signals),
            ("queue_drops", self.queue_drops),
            ("rate_drops", self.rate_drops),
            ("backlog_drops", self.backlog_drops),
            ("dropped", self.dropped()),
            ("source_losses", self.source_losses),
            ("send_errors", self.send_errors),
            ("property_signals", self.property_signals),
            ("notify_calls", self.notify_calls),
            ("notify_accepted", self.notify_accepted),
            ("rejected_requests", self.rejected_requests),
            ("reset_calls", self.reset_calls),
            ("denied_requests", self.denied_requests),
            ("busy_refusals", self.busy_refusals),
            ("bus_down_drops", self.bus_down_drops),
            ("connected", u64::from(self.connected)),
            ("disconnects", self.disconnects),
            ("reconnects", self.reconnects),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The running service. Stop it with [`Service::stop`] after the bridge
/// has stopped, so the last faults go out first.
#[derive(Debug)]
pub struct Service {
    probe: crate::fanout::BacklogProbe,
    want_name: Arc<AtomicBool>,
    hooks: Arc<Hooks>,
    link: Arc<Link>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    stop_tx: Option<Sender<()>>,
    link_stop: Option<Sender<()>>,
    pump: Option<JoinHandle<()>>,
    sender: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
    supervisor: Option<JoinHandle<()>>,
}

/// How long the bus may take to answer while the service starts (`Hello`,
/// `RequestName`) before starting fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for a service's signals to go out (a live upgrade: the side that
/// stops acting lets its last signals leave before the other side takes
/// the name).
#[derive(Clone, Debug)]
pub struct Settler {
    probe: crate::fanout::BacklogProbe,
    counters: Arc<Counters>,
    link: Arc<Link>,
}

impl Settler {
    /// Holds the signals (they wait in the service's queue) or lets them
    /// go: a side taking acting back holds them until it owns the name.
    pub fn hold(&self, held: bool) {
        self.counters.pump_held.store(held, Ordering::Release);
    }

    /// Waits until this connection owns `org.faultbridge.Bridge1`, at most
    /// `timeout`; false if it does not by then.
    pub fn wait_owner(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(conn) = self.link.current() {
                let me = conn.unique_name().map(|n| n.to_string());
                let owner = zbus::block_on(async {
                    let proxy = zbus::fdo::DBusProxy::new(&conn).await?;
                    proxy
                        .get_name_owner(BUS_NAME.try_into()?)
                        .await
                        .map_err(zbus::Error::from)
                });
                if let (Some(me), Ok(owner)) = (me, owner)
                    && owner.as_str() == me
                {
                    return true;
                }
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until every fault and loss notice published to the service so
    /// far has gone out as a signal (or been counted as dropped and told as
    /// `Lost`), at most `timeout`; false if it had not by then.
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let c = &self.counters;
            let done = self.probe.backlog() == 0
                && self.probe.taken() == c.events_done.load(Ordering::Acquire)
                && !c.pump_pending.load(Ordering::Acquire)
                && c.signals_queued.load(Ordering::Acquire)
                    == c.signals_done.load(Ordering::Acquire);
            if done {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The first wait before reconnecting, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn connect_builder(bus: &BusAddress) -> Builder<'_> {
    super::client::builder(bus).method_timeout(START_TIMEOUT)
}

fn is_access_denied(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::FDO(f) => matches!(**f, zbus::fdo::Error::AccessDenied(_)),
        zbus::Error::MethodError(name, _, _) => {
            name.as_str() == "org.freedesktop.DBus.Error.AccessDenied"
        }
        _ => false,
    }
}

/// Exports more objects on a new connection (before the name is asked
/// for): interfaces added beside the bridge's, after a reconnection.
pub type ConnectHook = Arc<dyn Fn(&Connection) -> zbus::Result<()> + Send + Sync>;

/// The hooks of a service.
#[derive(Default)]
struct Hooks(std::sync::Mutex<Vec<ConnectHook>>);

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooks")
    }
}

impl Hooks {
    fn all(&self) -> Vec<ConnectHook> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What a connection is made of: the objects to export on it.
#[derive(Clone)]
struct Objects {
    bus: BusAddress,
    /// Whether connections ask for the name (not before `take_name`).
    want_name: Arc<AtomicBool>,
    /// Whether they take it from its owner.
    take_name: bool,
    hooks: Arc<Hooks>,
    backend: Arc<dyn Backend>,
    counters: Arc<Counters>,
    gates: Arc<Gates>,
    monitors: Vec<super::MonitorInfo>,
    paths: Vec<OwnedObjectPath>,
}

impl Objects {
    /// Connects, exports the bridge object and one object per monitor, and
    /// owns `org.faultbridge.Bridge1`.
    fn connect(&self) -> Result<Connection, ServiceError> {
        let conn = zbus::block_on(async {
            let conn = super::client::build_within(connect_builder(&self.bus), START_TIMEOUT)
                .await
                .map_err(|source| ServiceError::Connect {
                    bus: self.bus.to_string(),
                    source,
                })?;
            let server = conn.object_server();
            server
                .at(
                    super::OBJECT_PATH,
                    BridgeObject {
                        backend: self.backend.clone(),
                        counters: self.counters.clone(),
                        gates: self.gates.clone(),
                        monitors: self.monitors.clone(),
                        paths: self.paths.clone(),
                    },
                )
                .await
                .map_err(ServiceError::Export)?;
            for (i, m) in self.monitors.iter().enumerate() {
                server
                    .at(
                        &self.paths[i],
                        MonitorObject {
                            index: i,
                            info: m.clone(),
                            backend: self.backend.clone(),
                            counters: self.counters.clone(),
                            gates: self.gates.clone(),
                        },
                    )
                    .await
                    .map_err(ServiceError::Export)?;
            }
            Ok::<Connection, ServiceError>(conn)
        })?;
        for h in self.hooks.all() {
            h(&conn).map_err(ServiceError::Export)?;
        }
        if !self.want_name.load(Ordering::Acquire) {
            return Ok(conn);
        }
        zbus::block_on(async {
            // Replacement allowed, and queued when replaced: a live
            // upgrade's new side takes the name at once, and gives it back
            // to this connection at once if it ends (abort).
            let mut flags = RequestNameFlags::ALLOW_REPLACEMENT;
            if self.take_name {
                flags |= RequestNameFlags::REPLACE_EXISTING;
            }
            match conn.request_name_with_flags(BUS_NAME, flags).await {
                Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => Ok(conn),
                Ok(RequestNameReply::InQueue) => {
                    let _ = conn.release_name(BUS_NAME).await;
                    Err(ServiceError::NameTaken)
                }
                Ok(_) | Err(zbus::Error::NameTaken) => Err(ServiceError::NameTaken),
                Err(e) if is_access_denied(&e) => Err(ServiceError::NameDenied(e)),
                Err(e) => Err(ServiceError::NameRequest(e)),
            }
        })
    }
}

/// The supervisor: waits for the connection to close, then reconnects.
struct Supervisor {
    objects: Objects,
    link: Arc<Link>,
    stop: Arc<AtomicBool>,
    stop_rx: Receiver<()>,
    resync: Sender<()>,
}

impl Supervisor {
    fn run(self) {
        let bus = &self.objects.bus;
        loop {
            let Some(conn) = self.link.current() else {
                return;
            };
            zbus::block_on(conn.closed());
            drop(conn);
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            self.link.set_down();
            eprintln!(
                "faultbridge: D-Bus: the connection to the {bus} bus was lost; ingest, monitors, actions and history go on, D-Bus subscribers will be told what they missed as Lost; reconnecting"
            );
            let mut delay = BACKOFF_FIRST;
            let mut attempts = 0u64;
            loop {
                match self.stop_rx.recv_timeout(delay) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                attempts += 1;
                match self.objects.connect() {
                    Ok(conn) => {
                        if self.stop.load(Ordering::Acquire) {
                            let _ = zbus::block_on(conn.close());
                            return;
                        }
                        let down = self.link.set_up(conn);
                        eprintln!(
                            "faultbridge: D-Bus: reconnected to the {bus} bus after {:.1} s ({attempts} attempt(s)); {BUS_NAME} owned again",
                            down.as_secs_f64()
                        );
                        let _ = self.resync.try_send(());
                        break;
                    }
                    Err(e) => {
                        if attempts == 1 || attempts.is_multiple_of(20) {
                            let mut why = e.to_string();
                            if let Some(s) = std::error::Error::source(&e) {
                                why = format!("{why}: {s}");
                            }
                            eprintln!(
                                "faultbridge: D-Bus: reconnecting to the {bus} bus failed ({attempts} attempt(s)): {why}; retrying every {} s at most",
                                BACKOFF_MAX.as_secs()
                            );
                        }
                        delay = (delay * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }
}

impl Service {
    /// Signals built and waiting for the socket to the bus at most; beyond
    /// that faults are dropped (`backlog_drops`) rather than queued.
    pub const MAX_IN_FLIGHT: usize = super::signals::MAX_IN_FLIGHT;

    /// Connects, exports the bridge object and one object per monitor,
    /// owns `org.faultbridge.Bridge1`, and starts emitting: `faults` is the
    /// service's own bus subscription, `changes` the monitors' state
    /// changes. Returns once the name is owned. A connection lost later
    /// is made again (see `link.rs`).
    pub fn start<T>(
        opts: &ServiceOptions,
        backend: Arc<dyn Backend>,
        faults: Subscription,
        changes: Receiver<T>,
    ) -> Result<Service, ServiceError>
    where
        T: Into<MonitorUpdate> + Send + 'static,
    {
        Service::start_with_hooks(opts, backend, faults, changes, Vec::new())
    }

    /// Like [`Service::start`], `hooks` run on the first connection too,
    /// before the name is asked for (see [`Service::on_connect`]): whoever
    /// reaches the name finds what they export.
    pub fn start_with_hooks<T>(
        opts: &ServiceOptions,
        backend: Arc<dyn Backend>,
        faults: Subscription,
        changes: Receiver<T>,
        hooks: Vec<ConnectHook>,
    ) -> Result<Service, ServiceError>
    where
        T: Into<MonitorUpdate> + Send + 'static,
    {
        let counters = Arc::new(Counters::default());
        counters.pump_held.store(opts.take_name, Ordering::Release);
        let monitors = backend.monitors();
        let paths = monitors
            .iter()
            .map(|m| OwnedObjectPath::try_from(monitor_path(&m.name)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ServiceError::Export)?;
        let probe = faults.probe();
        let want_name_handle;
        let hooks = Arc::new(Hooks(std::sync::Mutex::new(hooks)));
        let objects = Objects {
            bus: opts.bus.clone(),
            want_name: {
                want_name_handle = Arc::new(AtomicBool::new(!opts.take_name));
                want_name_handle.clone()
            },
            take_name: opts.take_name,
            hooks: hooks.clone(),
            backend: backend.clone(),
            counters: counters.clone(),
            gates: Arc::new(Gates::default()),
            monitors,
            paths: paths.clone(),
        };
        let conn = objects.connect()?;
        let link = Arc::new(Link::new(Some(conn), counters.clone()));

        let stop = Arc::new(AtomicBool::new(false));
        let (out, queued) = in_flight();
        let sender = {
            let link = link.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("fb-dbus-send".into())
                .spawn(move || run_sender(&link, queued, counters))
                .map_err(ServiceError::Thread)?
        };
        let pump = Pump::new(
            faults,
            out,
            counters.clone(),
            TokenBucket::new(opts.max_signals_per_second, opts.signal_burst),
            stop.clone(),
            link.clone(),
        );
        let pump = std::thread::Builder::new()
            .name("fb-dbus-signals".into())
            .spawn(move || pump.run())
            .map_err(ServiceError::Thread)?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let (resync_tx, resync_rx) = crossbeam_channel::bounded(1);
        let watcher = MonitorWatcher {
            link: link.clone(),
            backend,
            paths,
            counters: counters.clone(),
        };
        let watcher = std::thread::Builder::new()
            .name("fb-dbus-monitors".into())
            .spawn(move || watcher.run(changes, stop_rx, resync_rx))
            .map_err(ServiceError::Thread)?;
        let (link_stop, link_stop_rx) = crossbeam_channel::bounded(1);
        let supervisor = Supervisor {
            objects,
            link: link.clone(),
            stop: stop.clone(),
            stop_rx: link_stop_rx,
            resync: resync_tx,
        };
        let supervisor = std::thread::Builder::new()
            .name("fb-dbus-link".into())
            .spawn(move || supervisor.run())
            .map_err(ServiceError::Thread)?;
        Ok(Service {
            probe,
            want_name: want_name_handle,
            hooks,
            link,
            counters,
            stop,
            stop_tx: Some(stop_tx),
            link_stop: Some(link_stop),
            pump: Some(pump),
            sender: Some(sender),
            watcher: Some(watcher),
            supervisor: Some(supervisor),
        })
    }

    /// Waits until every fault and loss notice published to the service so
    /// far has gone out as a signal (see [`Settler::settle`]).
    pub fn settle(&self, timeout: Duration) -> bool {
        self.settler().settle(timeout)
    }

    /// Runs `hook` on every connection made from now on (after a lost
    /// bus comes back), before the name is asked for; a hook that fails
    /// fails that connection, which is then tried again.
    pub fn on_connect(&self, hook: ConnectHook) {
        self.hooks
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(hook);
    }

    /// Takes `org.faultbridge.Bridge1` from its owner now (a service
    /// started with [`ServiceOptions::take_name`]), and lets the signals
    /// held meanwhile go. Reconnections ask for the name from then on.
    pub fn take_name(&self) -> Result<(), ServiceError> {
        let conn = self.link.current().ok_or_else(|| {
            ServiceError::NameRequest(zbus::Error::Failure("the bus is down".into()))
        })?;
        let flags = RequestNameFlags::ALLOW_REPLACEMENT | RequestNameFlags::REPLACE_EXISTING;
        match zbus::block_on(conn.request_name_with_flags(BUS_NAME, flags)) {
            Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => {
                self.want_name.store(true, Ordering::Release);
                self.counters.pump_held.store(false, Ordering::Release);
                Ok(())
            }
            Ok(_) => Err(ServiceError::NameTaken),
            Err(e) if is_access_denied(&e) => Err(ServiceError::NameDenied(e)),
            Err(e) => Err(ServiceError::NameRequest(e)),
        }
    }

    /// A handle to [`Settler::settle`] from elsewhere.
    pub fn settler(&self) -> Settler {
        Settler {
            probe: self.probe.clone(),
            counters: self.counters.clone(),
            link: self.link.clone(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> DbusStats {
        self.counters.snapshot()
    }

    /// Whether the service is on the bus now (shareable).
    pub fn health(&self) -> BusHealth {
        BusHealth(self.link.clone())
    }

    /// The connection's unique name on the bus (`None` while the bus is
    /// down).
    pub fn unique_name(&self) -> Option<String> {
        self.link
            .current()
            .and_then(|c| c.unique_name().map(|n| n.to_string()))
    }

    /// The connection now, for interfaces added beside the bridge's
    /// (`org.faultbridge.Upgrade1`); `None` while the bus is down.
    pub fn connection(&self) -> Option<Connection> {
        self.link.current()
    }

    /// Stops emitting (waiting for the pump to send what the bridge
    /// published before it stopped), gives up the name and closes the
    /// connection. Returns the final counters.
    pub fn stop(mut self) -> DbusStats {
        self.halt();
        if let Some(c) = self.link.current() {
            let _ = zbus::block_on(c.release_name(BUS_NAME));
        }
        self.end_link();
        self.counters.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        drop(self.stop_tx.take());
        if let Some(t) = self.watcher.take() {
            let _ = t.join();
        }
        if let Some(t) = self.pump.take() {
            let _ = t.join();
        }
        // The pump is gone: the sender writes what is queued, then ends.
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
    }

    /// Ends the supervisor and closes the connection.
    fn end_link(&mut self) {
        drop(self.link_stop.take());
        if let Some(c) = self.link.current() {
            let _ = zbus::block_on(c.close());
        }
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.halt();
        self.end_link();
    }
}

/// How often a monitor in Error is looked at for a moved count.
const REFRESH: Duration = Duration::from_millis(250);

struct MonitorWatcher {
    link: Arc<Link>,
    backend: Arc<dyn Backend>,
    paths: Vec<OwnedObjectPath>,
    counters: Arc<Counters>,
}

impl MonitorWatcher {
    fn run<T: Into<MonitorUpdate>>(
        self,
        changes: Receiver<T>,
        stop: Receiver<()>,
        resync: Receiver<()>,
    ) {
        let n = self.paths.len();
        let mut told: Vec<Option<MonitorSnapshot>> =
            (0..n).map(|i| self.backend.monitor(i)).collect();
        loop {
            let in_error = told
                .iter()
                .any(|s| matches!(s, Some(s) if s.state == MonitorState::Error));
            let tick = if in_error {
                crossbeam_channel::after(REFRESH)
            } else {
                crossbeam_channel::never()
            };
            crossbeam_channel::select! {
                recv(changes) -> c => match c {
                    Ok(c) => {
                        let mut c: MonitorUpdate = c.into();
                        loop {
                            if c.index < n {
                                self.emit(c.index, &c.snapshot, told[c.index]);
                                told[c.index] = Some(c.snapshot);
                            }
                            match changes.try_recv() {
                                Ok(next) => c = next.into(),
                                Err(_) => break,
                            }
                        }
                        // A change a full listener queue dropped shows here.
                        self.refresh(&mut told);
                    }
                    Err(_) => return,
                },
                recv(stop) -> _ => return,
                recv(tick) -> _ => self.refresh(&mut told),
                // Back on the bus: tell every monitor's properties afresh.
                recv(resync) -> r => match r {
                    Ok(()) => {
                        told.iter_mut().for_each(|t| *t = None);
                        self.refresh(&mut told);
                    }
                    Err(_) => return,
                },
            }
        }
    }

    /// Tells what moved since the last signal.
    fn refresh(&self, told: &mut [Option<MonitorSnapshot>]) {
        for (i, t) in told.iter_mut().enumerate() {
            let Some(now) = self.backend.monitor(i) else {
                continue;
            };
            if *t != Some(now) {
                self.emit(i, &now, *t);
                *t = Some(now);
            }
        }
    }

    /// `PropertiesChanged` with what differs from `before` (everything
    /// when the state changed).
    fn emit(&self, i: usize, now: &MonitorSnapshot, before: Option<MonitorSnapshot>) {
        let mut changed: HashMap<&str, Variant<'_>> = HashMap::with_capacity(3);
        let all = before.is_none_or(|b| b.state != now.state);
        if all {
            changed.insert("State", Variant::from(now.state.name()));
        }
        if all || before.is_some_and(|b| b.error_count != now.error_count) {
            changed.insert("ErrorCount", Variant::from(now.error_count));
        }
        if all || before.is_some_and(|b| b.last_sequence != now.last_sequence) {
            changed.insert("LastSequence", Variant::from(now.last_sequence));
        }
        if changed.is_empty() {
            return;
        }
        let Some(conn) = self.link.current() else {
            // Down: told afresh once the bus is back.
            return;
        };
        let body = (MONITOR_INTERFACE, changed, Vec::<&str>::new());
        let r = zbus::block_on(conn.emit_signal(
            Option::<&str>::None,
            &self.paths[i],
            PROPERTIES_INTERFACE,
            "PropertiesChanged",
            &body,
        ));
        match r {
            Ok(()) => Counters::add(&self.counters.property_signals, 1),
            Err(_) => Counters::add(&self.counters.send_errors, 1),
        }
    }
}

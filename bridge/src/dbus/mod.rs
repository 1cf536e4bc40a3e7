//! The daemon's side of the D-Bus service: the [`Backend`] that answers
//! `Notify`, `Reset`, `Status` and the monitor properties from the running
//! [`Bridge`], and [`start`], which wires the service to it (its own bus
//! subscription, the monitors' change stream).
//!
//! The service itself (`org.faultbridge.Bridge1`, threads, pacing) lives in
//! [`faultbridge_bus::dbus`]; nothing here runs on the ingest thread.
//! [`private_bus`] starts a `dbus-daemon` of one's own (the demo, the
//! benches and the tests use it).

pub mod private_bus;

use crate::action::RunnerStats;
use crate::activity::ActivityLog;
use crate::config::BusSelect;
use crate::daemon::{Bridge, BridgeError, ControlHandle};
use crate::history::{HistoryDb, Query};
use crate::monitor::{MonitorChange, MonitorView};
use crate::notify::{NotifyError, NotifyRequest};
use crate::stats::Stats;
use faultbridge_bus::SubscribeOptions;
use faultbridge_bus::dbus::{
    Backend, BusAddress, Error, HISTORY_REPLY_BYTES, HistoryRow, MonitorInfo, MonitorSnapshot,
    MonitorUpdate, NotifyCall, Service, ServiceError, ServiceOptions, history_row_bytes,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use thiserror::Error as ThisError;
use zbus::{OwnedVariant, Str};

/// Queue depth of the D-Bus side's subscription: deep enough to absorb a
/// burst while signals go out, shallow enough that a storm never holds
/// D-Bus subscribers seconds behind (what does not fit is told as `Lost`).
pub const DBUS_QUEUE: usize = 8192;

/// Rows one `History` call returns at most (the reply's bytes are
/// bounded too: [`HISTORY_REPLY_BYTES`]).
pub const HISTORY_LIMIT_MAX: usize = 10_000;

/// Activity-log entries `Status()` carries (the newest).
pub const ACTIVITY_IN_STATUS: usize = 50;

/// Why the D-Bus side could not start.
#[derive(Debug, ThisError)]
pub enum DbusStartError {
    #[error("cannot subscribe the D-Bus side to the bridge")]
    Subscribe(#[source] BridgeError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// The system bus's socket when `DBUS_SYSTEM_BUS_ADDRESS` is not set.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// The bus a configuration selects; `None` for `bus = "none"`.
pub fn bus_address(bus: &BusSelect) -> Option<BusAddress> {
    bus.clone()
}

/// Starts the D-Bus service over `bridge`; returns once the name is owned.
/// `queue` caps the depth of its subscription (at most [`DBUS_QUEUE`]).
pub fn start(
    bridge: &Bridge,
    opts: &ServiceOptions,
    queue: usize,
) -> Result<Service, DbusStartError> {
    start_with_hooks(bridge, opts, queue, Vec::new())
}

/// Like [`start`], with `hooks` run on every connection before the name is
/// asked for (more interfaces on the bridge's object).
pub fn start_with_hooks(
    bridge: &Bridge,
    opts: &ServiceOptions,
    queue: usize,
    hooks: Vec<faultbridge_bus::dbus::ConnectHook>,
) -> Result<Service, DbusStartError> {
    let sub = bridge
        .subscribe(
            SubscribeOptions::new("dbus")
                .capacity(queue.clamp(1, DBUS_QUEUE))
                // Paced signals: no spinning for the last microseconds.
                .spin_limit(std::time::Duration::ZERO),
        )
        .map_err(DbusStartError::Subscribe)?;
    let view = bridge.monitors();
    let changes = view.listen(1024);
    let backend = Arc::new(BridgeBackend::new(bridge));
    Ok(Service::start_with_hooks(
        opts, backend, sub, changes, hooks,
    )?)
}

/// Answers the D-Bus service from a running bridge.
#[derive(Debug)]
pub struct BridgeBackend {
    control: ControlHandle,
    monitors: Arc<MonitorView>,
    stats: Arc<Stats>,
    activity: Arc<ActivityLog>,
    actions: Option<Arc<RunnerStats>>,
    history: Option<std::path::PathBuf>,
    forward: Option<Arc<crate::forward::ForwardState>>,
    started: Instant,
}

impl BridgeBackend {
    pub fn new(bridge: &Bridge) -> BridgeBackend {
        BridgeBackend {
            control: bridge.control(),
            monitors: bridge.monitors(),
            stats: bridge.counters(),
            activity: bridge.activity(),
            actions: bridge.action_stats(),
            history: bridge.history_path().map(std::path::Path::to_path_buf),
            forward: bridge.forward_state(),
            started: Instant::now(),
        }
    }
}

impl From<MonitorChange> for MonitorUpdate {
    fn from(c: MonitorChange) -> MonitorUpdate {
        MonitorUpdate {
            index: c.index,
            snapshot: MonitorSnapshot {
                state: c.state,
                error_count: c.error_count,
                last_sequence: c.sequence,
            },
        }
    }
}

/// The error a refused `Notify` is replied with on the bus.
pub fn notify_error(e: NotifyError) -> Error {
    let m = e.to_string();
    match e {
        NotifyError::CategoryTooLong { .. } => Error::CategoryTooLong(m),
        NotifyError::UnknownCategory(_) => Error::UnknownCategory(m),
        NotifyError::KeywordTooLong { .. } => Error::KeywordTooLong(m),
        NotifyError::KeywordNul { .. } => Error::KeywordHasNul(m),
        NotifyError::UnknownSeverity(_) => Error::UnknownSeverity(m),
        NotifyError::DetailTooLong { .. } => Error::DetailTooLong(m),
        NotifyError::Stopped | NotifyError::NotActing => Error::Stopped(m),
    }
}

fn text(s: &str) -> OwnedVariant {
    OwnedVariant::from(Str::from(s.to_string()))
}

impl Backend for BridgeBackend {
    fn notify(&self, call: NotifyCall) -> Result<u64, Error> {
        let request = NotifyRequest {
            category: call.category,
            keyword: call.keyword,
            severity: call.severity,
            detail: call.detail,
            clear: false,
        };
        // Refuse bad input here, without a round trip to the ingest thread.
        request.validate().map_err(notify_error)?;
        self.control.notify(request).map_err(notify_error)
    }

    fn reset(&self, name: &str) -> Result<(), Error> {
        match self.control.reset(name) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::UnknownMonitor(format!("no monitor named {name:?}"))),
            Err(e) => Err(Error::Stopped(e.to_string())),
        }
    }

    fn monitors(&self) -> Vec<MonitorInfo> {
        self.monitors
            .monitors
            .iter()
            .map(|m| MonitorInfo {
                name: m.config.name.clone(),
                category: m.config.category.name().to_string(),
                keyword: m.config.keyword.clone().unwrap_or_default(),
            })
            .collect()
    }

    fn monitor(&self, index: usize) -> Option<MonitorSnapshot> {
        let m = self.monitors.monitors.get(index)?;
        Some(MonitorSnapshot {
            state: m.state(),
            error_count: m.error_count(),
            last_sequence: m.last_sequence(),
        })
    }

    fn degraded(&self, index: usize) -> String {
        self.monitors
            .monitors
            .get(index)
            .and_then(|m| self.stats.health.degrades(m.config.category))
            .unwrap_or_default()
    }

    fn status(&self) -> HashMap<String, OwnedVariant> {
        let snap = self.stats.snapshot();
        let mut sources: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for s in &snap.sources {
            let c: HashMap<String, u64> = [
                ("datagrams", s.datagrams),
                ("received", s.received),
                ("delivered", s.delivered),
                ("malformed", s.malformed_total),
                ("truncated", s.truncated),
                ("reserved_types", s.reserved_types),
                ("lost", s.lost),
                ("overruns", s.overruns),
                ("gaps", s.gaps),
                ("duplicates", s.duplicates),
                ("behind", s.behind),
                ("implausible", s.implausible),
                ("untracked", s.untracked),
                ("refused", s.refused_total),
                ("restarts", s.restarts),
                ("errors", s.errors),
                ("untyped", s.untyped),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(s.refused.iter().map(|(r, n)| (format!("refused_{r}"), *n)))
            .collect();
            sources.insert(s.source.clone(), c);
        }
        let mut out: HashMap<String, OwnedVariant> = HashMap::new();
        out.insert("version".into(), text(crate::upgrade::info::version()));
        out.insert("pid".into(), std::process::id().into());
        out.insert(
            "uptime_ns".into(),
            (self.started.elapsed().as_nanos() as u64).into(),
        );
        out.insert("sources".into(), sources.into());
        // Every configured source: "running", or "down: why".
        let health = self.stats.health.snapshot();
        let states: HashMap<String, String> = health
            .iter()
            .map(|h| {
                let state = match &h.down {
                    None => "running".to_string(),
                    Some(d) => format!("down: {}", d.reason),
                };
                (h.source.name().to_string(), state)
            })
            .collect();
        let degraded = health.iter().any(|h| h.down.is_some());
        out.insert(
            "health".into(),
            text(if degraded { "degraded" } else { "ok" }),
        );
        out.insert("source_states".into(), states.into());
        out.insert("subscriber_drops".into(), snap.subscriber_drops.into());
        out.insert(
            "monitor_change_drops".into(),
            self.monitors.listener_drops.load(Relaxed).into(),
        );
        if let Some(a) = &self.actions {
            let c: HashMap<String, u64> = [
                ("started", a.started.load(Relaxed)),
                ("succeeded", a.succeeded.load(Relaxed)),
                ("failed", a.failed.load(Relaxed)),
                ("timed_out", a.timed_out.load(Relaxed)),
                ("coalesced", a.coalesced.load(Relaxed)),
                ("not_performed", a.not_performed.load(Relaxed)),
                ("refused", a.refused.load(Relaxed)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            out.insert("actions".into(), c.into());
        }
        if let Some(f) = &self.forward {
            out.insert("forward".into(), forward_status(&f.snapshot()).into());
        }
        // The activity log's newest entries: (time_ms, severity, monitor,
        // kind, message, exit_code or -1).
        let recent: Vec<(u64, String, String, String, String, i32)> = self
            .activity
            .recent(ACTIVITY_IN_STATUS)
            .into_iter()
            .map(|e| {
                (
                    e.time_ms,
                    e.severity.name().to_string(),
                    e.monitor,
                    e.kind,
                    e.message,
                    e.exit_code.unwrap_or(-1),
                )
            })
            .collect();
        if let Ok(v) = OwnedVariant::try_from(zbus::Variant::from(recent)) {
            out.insert("activity".into(), v);
        }
        out
    }

    fn history(&self, after_sequence: u64, limit: u32) -> Vec<HistoryRow> {
        let Some(path) = &self.history else {
            return Vec::new();
        };
        match history_page(path, after_sequence, limit) {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("faultbridge: D-Bus History: {e}");
                Vec::new()
            }
        }
    }
}

/// The fleet forwarder's state in `Status`: `forward` → a{sv}.
fn forward_status(f: &crate::forward::ForwardSnapshot) -> HashMap<String, OwnedVariant> {
    let mut m: HashMap<String, OwnedVariant> = [
        ("cursor", f.cursor),
        ("backlog", f.backlog),
        ("forwarded", f.forwarded),
        ("duplicates", f.duplicates),
        ("last_ack_sequence", f.last_ack_sequence),
        ("last_ack_ms", f.last_ack_ms),
        ("errors", f.errors),
        ("last_error_ms", f.last_error_ms),
        ("removed_unforwarded", f.removed_unforwarded),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), OwnedVariant::from(v)))
    .collect();
    m.insert("connected".into(), f.connected.into());
    m.insert("server".into(), text(&f.server));
    m.insert("stream".into(), text(&f.stream));
    m.insert("host".into(), text(&f.host));
    m.insert("last_error".into(), text(&f.last_error));
    m
}

/// Rows of the database read at a time while a `History` reply is built.
const HISTORY_CHUNK: usize = 32;

/// One page of `History`: fault and clear rows with a record id above
/// `after`, oldest first, at most `limit` (and [`HISTORY_LIMIT_MAX`]) rows
/// and [`HISTORY_REPLY_BYTES`] bytes (one row at least, whatever its size).
/// Loss rows are left out: the reply's type carries faults only.
pub fn history_page(
    path: &std::path::Path,
    after: u64,
    limit: u32,
) -> Result<Vec<HistoryRow>, crate::history::HistoryError> {
    let limit = (limit as usize).min(HISTORY_LIMIT_MAX);
    let db = HistoryDb::open_read_only(path)?;
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut cursor = after.min(i64::MAX as u64) as i64;
    while out.len() < limit {
        let rows = db.query(&Query {
            after_id: Some(cursor),
            limit: (limit - out.len()).min(HISTORY_CHUNK),
            ..Query::default()
        })?;
        if rows.is_empty() {
            break;
        }
        for r in rows {
            cursor = r.id;
            if r.kind == "lost" {
                continue;
            }
            let row: HistoryRow = (
                r.id as u64,
                r.source,
                r.category,
                r.keyword,
                r.severity,
                r.kind == "clear",
                r.event_code,
                r.sequence,
                r.timestamp_ns,
                r.detail,
            );
            let size = history_row_bytes(&row);
            if !out.is_empty() && bytes + size > HISTORY_REPLY_BYTES {
                return Ok(out);
            }
            bytes += size;
            out.push(row);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError as _;

    #[test]
    fn notify_errors_get_their_bus_names() {
        let cases = [
            (
                NotifyError::UnknownCategory("X".into()),
                "org.faultbridge.Bridge1.Error.UnknownCategory",
            ),
            (
                NotifyError::CategoryTooLong { len: 40 },
                "org.faultbridge.Bridge1.Error.CategoryTooLong",
            ),
            (
                NotifyError::KeywordTooLong { len: 2000 },
                "org.faultbridge.Bridge1.Error.KeywordTooLong",
            ),
            (
                NotifyError::KeywordNul { at: 1 },
                "org.faultbridge.Bridge1.Error.KeywordHasNul",
            ),
            (
                NotifyError::UnknownSeverity("x".into()),
                "org.faultbridge.Bridge1.Error.UnknownSeverity",
            ),
        ];
        for (e, name) in cases {
            let msg = e.to_string();
            let b = notify_error(e);
            assert_eq!(b.name().as_str(), name);
            assert_eq!(b.description(), Some(msg.as_str()));
            assert!(b.is_rejection());
        }
        assert!(!notify_error(NotifyError::Stopped).is_rejection());
    }

    #[test]
    fn bus_selection() {
        assert_eq!(bus_address(&None), None);
        assert_eq!(
            bus_address(&Some(BusAddress::System)),
            Some(BusAddress::System)
        );
    }
}

//! The `org.faultbridge.Bridge1` interface at `/org/faultbridge/Bridge1`.

// The `Fault` signal has nine arguments by contract; the code the interface
// macro generates for it takes them one by one.
#![allow(clippy::too_many_arguments)]

use super::counters::Counters;
use super::guard::{Gates, check_actor};
use super::{Backend, Error, HistoryRow, MonitorInfo, NotifyCall};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, OwnedVariant, Str};

pub(crate) struct BridgeObject {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) gates: Arc<Gates>,
    pub(crate) monitors: Vec<MonitorInfo>,
    pub(crate) paths: Vec<OwnedObjectPath>,
}

/// A string as a variant.
pub(crate) fn text(s: &str) -> OwnedVariant {
    OwnedVariant::from(Str::from(s.to_string()))
}

impl BridgeObject {
    fn monitors_status(&self) -> HashMap<String, HashMap<String, OwnedVariant>> {
        let mut out = HashMap::with_capacity(self.monitors.len());
        for (i, m) in self.monitors.iter().enumerate() {
            let mut d: HashMap<String, OwnedVariant> = HashMap::new();
            d.insert("Path".into(), self.paths[i].clone().into_inner().into());
            d.insert("Category".into(), text(&m.category));
            d.insert("Keyword".into(), text(&m.keyword));
            if let Some(s) = self.backend.monitor(i) {
                d.insert("State".into(), text(s.state.name()));
                d.insert("ErrorCount".into(), s.error_count.into());
                d.insert("LastSequence".into(), s.last_sequence.into());
            }
            d.insert("Degraded".into(), text(&self.backend.degraded(i)));
            out.insert(m.name.clone(), d);
        }
        out
    }
}

/// faultbridge: hardware faults from the expanded device driver and the
/// kernel, as signals, and the daemon's state.
#[zbus::interface(name = "org.faultbridge.Bridge1")]
impl BridgeObject {
    /// Reports a fault from user space, like `clprexec --notice`: category
    /// (NIC, FC, HA/SS, HA/AM, HA/RS, SPS; at most 32 bytes), keyword (the
    /// device, at most 1023 bytes, no NUL; empty for none), severity (info,
    /// warning, error, fatal) and detail text. Returns the sequence the
    /// fault got in the `notify` source. For root, the daemon's user and
    /// group faultbridge only.
    #[zbus(out_args("sequence"))]
    async fn notify(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        category: String,
        keyword: String,
        severity: String,
        detail: String,
    ) -> Result<u64, Error> {
        self.counters.notify_calls.fetch_add(1, Relaxed);
        let _pass = self.gates.calls.enter(&self.counters)?;
        check_actor(conn, &hdr, "Notify", &self.counters).await?;
        let backend = self.backend.clone();
        let call = NotifyCall {
            category,
            keyword,
            severity,
            detail: detail.into_bytes(),
        };
        let r = zruntime::unblock(move || backend.notify(call)).await;
        match &r {
            Ok(_) => self.counters.notify_accepted.fetch_add(1, Relaxed),
            Err(e) if e.is_rejection() => self.counters.rejected_requests.fetch_add(1, Relaxed),
            Err(_) => 0,
        };
        r
    }

    /// The object paths of the monitors (interface org.faultbridge.Monitor1).
    #[zbus(out_args("monitors"))]
    async fn list_monitors(&self) -> Vec<OwnedObjectPath> {
        self.paths.clone()
    }

    /// Counters and states: version, pid, uptime_ns, sources (per source:
    /// received, delivered, malformed, lost, …), subscriber_drops, monitors,
    /// dbus (signals sent and dropped), rejected_requests.
    #[zbus(out_args("status"))]
    async fn status(&self) -> HashMap<String, OwnedVariant> {
        let mut s = self.backend.status();
        s.insert("monitors".into(), self.monitors_status().into());
        let stats = self.counters.snapshot();
        s.insert("dbus".into(), stats.to_map().into());
        s.insert("rejected_requests".into(), stats.rejected_requests.into());
        s
    }

    /// Recorded faults whose record id is above after_sequence, oldest
    /// first, at most limit rows and 1 MiB: (record id, source, category,
    /// keyword, severity, cleared, event_code, sequence, timestamp_ns,
    /// detail). A reply may hold fewer rows than asked while more follow:
    /// call again with the last row's record id until a reply is empty.
    #[zbus(out_args("faults"))]
    async fn history(&self, after_sequence: u64, limit: u32) -> Result<Vec<HistoryRow>, Error> {
        let _pass = self.gates.calls.enter(&self.counters)?;
        let _history = self.gates.history.enter(&self.counters)?;
        let backend = self.backend.clone();
        Ok(zruntime::unblock(move || backend.history(after_sequence, limit)).await)
    }

    /// A fault (cleared = false) or the end of one (cleared = true).
    /// sequence counts per source; timestamp_ns is CLOCK_MONOTONIC at
    /// detection; detail is the driver's opaque bytes.
    #[zbus(signal)]
    pub(crate) async fn fault(
        emitter: &SignalEmitter<'_>,
        source: &str,
        category: &str,
        keyword: &str,
        severity: &str,
        cleared: bool,
        event_code: u32,
        sequence: u64,
        timestamp_ns: u64,
        detail: &[u8],
    ) -> zbus::Result<()>;

    /// Faults of source whose sequences lie in first_sequence..=last_sequence
    /// did not reach D-Bus subscribers (lost before faultbridge, or dropped
    /// by the D-Bus side under a storm).
    #[zbus(signal)]
    pub(crate) async fn lost(
        emitter: &SignalEmitter<'_>,
        source: &str,
        first_sequence: u64,
        last_sequence: u64,
    ) -> zbus::Result<()>;
}

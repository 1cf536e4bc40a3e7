//! The `org.faultbridge.Monitor1` interface, one object per monitor.

use super::counters::Counters;
use super::guard::{Gates, check_actor};
use super::{Backend, Error, MonitorInfo, MonitorSnapshot, MonitorState};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use zbus::Connection;
use zbus::message::Header;

pub(crate) struct MonitorObject {
    pub(crate) index: usize,
    pub(crate) info: MonitorInfo,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) gates: Arc<Gates>,
}

impl MonitorObject {
    fn now(&self) -> MonitorSnapshot {
        self.backend.monitor(self.index).unwrap_or(MonitorSnapshot {
            state: MonitorState::Normal,
            error_count: 0,
            last_sequence: 0,
        })
    }
}

/// An external link monitor: a category and an optional device keyword.
/// A matching fault puts it into Error until Reset.
#[zbus::interface(name = "org.faultbridge.Monitor1")]
impl MonitorObject {
    /// The monitor's configured name.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.info.name.clone()
    }

    /// The category it watches (NIC, FC, HA/SS, HA/AM, HA/RS, SPS).
    #[zbus(property(emits_changed_signal = "const"))]
    fn category(&self) -> String {
        self.info.category.clone()
    }

    /// The device it watches; empty for any device of the category.
    #[zbus(property(emits_changed_signal = "const"))]
    fn keyword(&self) -> String {
        self.info.keyword.clone()
    }

    /// "Normal" or "Error".
    #[zbus(property)]
    fn state(&self) -> String {
        self.now().state.name().to_string()
    }

    /// Matching faults counted since the daemon started.
    #[zbus(property)]
    fn error_count(&self) -> u64 {
        self.now().error_count
    }

    /// The sequence of the last matching fault (0: none).
    #[zbus(property)]
    fn last_sequence(&self) -> u64 {
        self.now().last_sequence
    }

    /// Empty while every source that reports this monitor's category runs;
    /// otherwise why its Normal cannot be trusted (a source is down), so
    /// `faultbridge check` answers "unknown". Read it when needed: no
    /// change signal is sent for it.
    #[zbus(property(emits_changed_signal = "false"))]
    fn degraded(&self) -> String {
        self.backend.degraded(self.index)
    }

    /// Clears the Error state. For root, the daemon's user and group
    /// faultbridge only.
    async fn reset(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.counters.reset_calls.fetch_add(1, Relaxed);
        let _pass = self.gates.calls.enter(&self.counters)?;
        check_actor(conn, &hdr, "Reset", &self.counters).await?;
        let backend = self.backend.clone();
        let name = self.info.name.clone();
        let r = zruntime::unblock(move || backend.reset(&name)).await;
        if matches!(&r, Err(e) if e.is_rejection()) {
            self.counters.rejected_requests.fetch_add(1, Relaxed);
        }
        r
    }
}

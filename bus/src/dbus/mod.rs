//! The D-Bus service of faultbridge (like `systemd-logind`'s or
//! `NetworkManager`'s bus API, for hardware faults) and the client side the
//! `faultbridge` commands use.
//!
//! # The contract (fixed: clients rely on it)
//!
//! Name `org.faultbridge.Bridge1`, object `/org/faultbridge/Bridge1`,
//! interface `org.faultbridge.Bridge1`:
//!
//! | member | signature | what |
//! |---|---|---|
//! | signal `Fault` | `s source, s category, s keyword, s severity, b cleared, u event_code, t sequence, t timestamp_ns, ay detail` | one fault or CLEAR; `sequence` counts per `source`; `timestamp_ns` is `CLOCK_MONOTONIC` at detection |
//! | signal `Lost` | `s source, t first_sequence, t last_sequence` | faults of `source` in that range did not reach D-Bus subscribers (lost before faultbridge, or dropped by the D-Bus side under a storm) — never silent |
//! | method `Notify` | `s category, s keyword, s severity, s detail` → `t sequence` | report a fault from user space (`clprexec --notice` style); the reply is the sequence it got in the `notify` source; bad input → an `org.faultbridge.Bridge1.Error.*` error and nothing else changes |
//! | method `ListMonitors` | → `ao` | the monitor objects |
//! | method `Status` | → `a{sv}` | counters and states, see below |
//! | method `History` | `t after_sequence, u limit` → `a(tssssbuttay)` | recorded faults with a record id above `after_sequence`, oldest first, at most `limit`: each row is the record id then the `Fault` signal's nine arguments; one page (see below); empty while no history is kept |
//!
//! One object per configured monitor at
//! `/org/faultbridge/Bridge1/monitor/<name escaped by [`escape_label`]>`,
//! interface `org.faultbridge.Monitor1`: properties `Name` `s`, `Category`
//! `s`, `Keyword` `s` (empty: any device), `State` `s` (`"Normal"` or
//! `"Error"`), `ErrorCount` `t`, `LastSequence` `t`; method `Reset()`.
//! `org.freedesktop.DBus.Properties.PropertiesChanged` is emitted on every
//! state change with `State`, `ErrorCount` and `LastSequence`, and, while a
//! monitor is in Error, at most four times a second when its count moves.
//!
//! `Status` keys: `version` `s`, `pid` `u`, `uptime_ns` `t`, `sources`
//! `a{sa{st}}` (per source: `received`, `delivered`, `malformed`, `lost`,
//! `datagrams`, `overruns`, `gaps`, …), `subscriber_drops` `t`, `monitors`
//! `a{sa{sv}}` (per monitor: `Path`, `Category`, `Keyword`, `State`,
//! `ErrorCount`, `LastSequence`), `dbus` `a{st}` (see [`DbusStats`]), and
//! `rejected_requests` `t` (requests refused with an error).
//!
//! # Paging `History`
//!
//! Any local user may call `History`, so a reply is bounded: at most
//! `limit` rows (and 10 000), and at most [`HISTORY_REPLY_BYTES`] bytes of
//! rows (one row at least, whatever its size). A reply may therefore hold
//! fewer rows than asked for while more follow: to read everything, call
//! again with `after_sequence` set to the record id of the last row
//! received, until a reply is empty. Record ids only grow; loss notices
//! kept in the history are not rows of this reply (they were `Lost`
//! signals).
//!
//! # Storms
//!
//! The service reads faults from a bus subscription of its own on a thread
//! of its own, never on the ingest thread. The subscription's queue is
//! bounded, and signals are paced by a token bucket
//! ([`ServiceOptions::max_signals_per_second`]): what does not fit is
//! dropped, counted, and announced to D-Bus subscribers by a `Lost` signal
//! with the sequence range, before the next `Fault` of that source.
//!
//! # Access
//!
//! `dist/dbus/org.faultbridge.Bridge1.conf` (installed in
//! `/usr/share/dbus-1/system.d/`): anyone may receive the signals,
//! introspect, read properties and call `ListMonitors`, `Status` and
//! `History`; only root or group `faultbridge` may call `Notify` and
//! `Reset`; only root may own the name.

mod bridge1;
pub mod client;
mod counters;
mod error;
mod guard;
mod link;
mod monitor1;
mod names;
mod service;
mod signals;
pub mod upgrade1;

pub use client::{BusSignal, FaultSignal, LostSignal, Owner, OwnerChange};
pub use counters::DbusStats;
pub use error::{Error, ServiceError};
pub use guard::{ACTOR_GROUP, MAX_CALLS, MAX_HISTORY_CALLS, may_act};
pub use link::BusHealth;
pub use names::{
    BUS_NAME, ERROR_PREFIX, INTERFACE, MONITOR_INTERFACE, MONITOR_PATH_PREFIX, OBJECT_PATH,
    PROPERTIES_INTERFACE, escape_label, monitor_path, unescape_label,
};
pub use service::{ConnectHook, Service, ServiceOptions, Settler};

use std::collections::HashMap;
use std::fmt;
use zbus::OwnedVariant;

/// Which bus to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusAddress {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else
    /// `unix:path=/run/dbus/system_bus_socket`).
    System,
    /// The session bus of the user (`DBUS_SESSION_BUS_ADDRESS`).
    Session,
    /// A D-Bus address such as `unix:path=/run/x/bus`.
    Address(String),
}

impl BusAddress {
    /// `system`, `session`, or a D-Bus address (`transport:key=value,…`).
    pub fn parse(s: &str) -> Result<BusAddress, String> {
        match s {
            "system" => Ok(BusAddress::System),
            "session" => Ok(BusAddress::Session),
            a if a.contains(':') && a.contains('=') => Ok(BusAddress::Address(a.to_string())),
            other => Err(format!(
                "bus {other:?}: expected \"system\", \"session\" or a D-Bus address such as \"unix:path=/run/x/bus\""
            )),
        }
    }
}

impl fmt::Display for BusAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusAddress::System => f.write_str("system"),
            BusAddress::Session => f.write_str("session"),
            BusAddress::Address(a) => f.write_str(a),
        }
    }
}

/// A `Notify` call, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyCall {
    pub category: String,
    /// Empty: no particular device.
    pub keyword: String,
    pub severity: String,
    pub detail: Vec<u8>,
}

pub use crate::MonitorState;

/// What never changes about a monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorInfo {
    pub name: String,
    pub category: String,
    /// Empty: any device of the category.
    pub keyword: String,
}

/// A monitor's changing properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorSnapshot {
    pub state: MonitorState,
    pub error_count: u64,
    pub last_sequence: u64,
}

/// A monitor's state changed: `index` into [`Backend::monitors`], and its
/// properties as of the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorUpdate {
    pub index: usize,
    pub snapshot: MonitorSnapshot,
}

/// One row of `History`: the record id, then the `Fault` signal's
/// arguments (`source, category, keyword, severity, cleared, event_code,
/// sequence, timestamp_ns, detail`).
pub type HistoryRow = (
    u64,
    String,
    String,
    String,
    String,
    bool,
    u32,
    u64,
    u64,
    Vec<u8>,
);

/// The bytes of rows one `History` reply carries at most (1 MiB, far below
/// the 32 MiB a system bus lets one message hold).
pub const HISTORY_REPLY_BYTES: usize = 1 << 20;

/// The bytes `row` takes in a `History` reply (its D-Bus encoding, padding
/// counted generously).
pub fn history_row_bytes(row: &HistoryRow) -> usize {
    let text = row.1.len() + row.2.len() + row.3.len() + row.4.len();
    // 8-byte struct alignment, the id, four string lengths and NULs, the
    // bool, the code, two u64 and the array length, with their padding.
    64 + text + row.9.len()
}

/// What the daemon gives the D-Bus service. The service calls these from
/// its own threads (a blocking-work pool for `notify` and `reset`), never
/// from the ingest thread.
pub trait Backend: Send + Sync + 'static {
    /// Validates and publishes a fault reported from user space; its
    /// sequence in the `notify` source, or why it was refused.
    fn notify(&self, call: NotifyCall) -> Result<u64, Error>;
    /// Clears monitor `name`'s Error ([`Error::UnknownMonitor`] if none).
    fn reset(&self, name: &str) -> Result<(), Error>;
    /// The configured monitors, in a fixed order (their indexes).
    fn monitors(&self) -> Vec<MonitorInfo>;
    /// Monitor `index`'s properties now.
    fn monitor(&self, index: usize) -> Option<MonitorSnapshot>;
    /// Why monitor `index`'s Normal cannot be trusted now (a source that
    /// reports its category is down); empty when it can.
    fn degraded(&self, index: usize) -> String {
        let _ = index;
        String::new()
    }
    /// The daemon's counters for `Status` (`version`, `pid`, `uptime_ns`,
    /// `sources`, `subscriber_drops`, …); the service adds `monitors`,
    /// `dbus` and `rejected_requests`.
    fn status(&self) -> HashMap<String, OwnedVariant>;
    /// Recorded faults after record id `after_sequence`, oldest first, at
    /// most `limit` rows and [`HISTORY_REPLY_BYTES`] bytes (one page, see
    /// the module's docs).
    fn history(&self, after_sequence: u64, limit: u32) -> Vec<HistoryRow> {
        let _ = (after_sequence, limit);
        Vec::new()
    }
}

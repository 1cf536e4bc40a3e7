//! The connection to the bus, which may be lost (dbus-daemon restarted, or
//! it disconnected faultbridge) and is then made again.
//!
//! [`Link`] holds the current connection, or none while the bus is down.
//! The signal pump, the sender and the monitor watcher take the connection
//! from it for each write; while there is none, faults are not queued for
//! the bus but remembered as missed ranges, told to D-Bus subscribers as
//! `Lost` once the connection is back. The supervisor thread
//! (`fb-dbus-link`) waits for the connection to close, logs it, and
//! reconnects with backoff (100 ms doubling to 5 s): connect, export the
//! bridge object and the monitor objects again, own the name again.

use super::counters::Counters;
use crate::event::Source;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use zbus::Connection;

/// Faults of one source that a write to the bus could not carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Missed {
    pub(crate) source: Source,
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) count: u64,
}

/// The current connection, and what could not go out on a lost one.
#[derive(Debug)]
pub(crate) struct Link {
    conn: Mutex<Option<Connection>>,
    down_since: Mutex<Option<Instant>>,
    missed: Mutex<Vec<Missed>>,
    counters: Arc<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    /// A link on `conn` (`None`: up, with nowhere to write, for tests).
    pub(crate) fn new(conn: Option<Connection>, counters: Arc<Counters>) -> Link {
        counters.connected.store(true, Release);
        Link {
            conn: Mutex::new(conn),
            down_since: Mutex::new(None),
            missed: Mutex::new(Vec::new()),
            counters,
        }
    }

    /// The connection to write on, `None` while the bus is down.
    pub(crate) fn current(&self) -> Option<Connection> {
        lock(&self.conn).clone()
    }

    pub(crate) fn is_up(&self) -> bool {
        self.counters.connected.load(Acquire)
    }

    /// The connection was lost.
    pub(crate) fn set_down(&self) {
        *lock(&self.conn) = None;
        *lock(&self.down_since) = Some(Instant::now());
        self.counters.connected.store(false, Release);
        Counters::add(&self.counters.disconnects, 1);
    }

    /// Connected again, the name owned: how long the bus was down.
    pub(crate) fn set_up(&self, conn: Connection) -> Duration {
        *lock(&self.conn) = Some(conn);
        let since = lock(&self.down_since).take();
        self.counters.connected.store(true, Release);
        Counters::add(&self.counters.reconnects, 1);
        since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// How long the bus has been down, `None` while connected.
    pub(crate) fn down_for(&self) -> Option<Duration> {
        if self.is_up() {
            return None;
        }
        lock(&self.down_since).map(|t| t.elapsed())
    }

    /// Faults a write could not carry, to be told as `Lost`.
    pub(crate) fn miss(&self, m: impl IntoIterator<Item = Missed>) {
        let mut v = lock(&self.missed);
        v.extend(m);
        self.counters.has_missed.store(!v.is_empty(), Release);
    }

    /// What was missed since the last call.
    pub(crate) fn take_missed(&self) -> Vec<Missed> {
        if !self.counters.has_missed.load(Relaxed) {
            return Vec::new();
        }
        let mut v = lock(&self.missed);
        self.counters.has_missed.store(false, Release);
        std::mem::take(&mut *v)
    }
}

/// Whether the service is on the bus now: for the daemon's watchdog and
/// status line.
#[derive(Clone, Debug)]
pub struct BusHealth(pub(crate) Arc<Link>);

impl BusHealth {
    /// True while connected and owning the name.
    pub fn is_connected(&self) -> bool {
        self.0.is_up()
    }

    /// How long the bus has been down (reconnecting meanwhile); `None`
    /// while connected.
    pub fn down_for(&self) -> Option<Duration> {
        self.0.down_for()
    }

    /// The connection of the moment (`None` while the bus is down).
    pub fn connection(&self) -> Option<zbus::Connection> {
        self.0.current()
    }
}

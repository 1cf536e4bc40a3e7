//! The D-Bus service's live counters, shared by the objects, the signal
//! pump and the connection's keeper, and read into `DbusStats`.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// The D-Bus side's counters (the `dbus` entry of `Status`).
///
/// Every fault published while the service runs is accounted for:
/// `faults_in + queue_drops` faults reached the service's subscription,
/// and `faults_in = fault_signals + rate_drops + backlog_drops` (plus
/// `send_errors` when the connection failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbusStats {
    /// Faults taken off the service's subscription.
    pub faults_in: u64,
    /// `Fault` signals sent.
    pub fault_signals: u64,
    /// `Lost` signals sent.
    pub lost_signals: u64,
    /// Faults the subscription's queue had no room for.
    pub queue_drops: u64,
    /// Faults dropped to keep to the signal pace.
    pub rate_drops: u64,
    /// Faults dropped because [`MAX_IN_FLIGHT`](Service::MAX_IN_FLIGHT)
    /// signals were already waiting for the socket to the bus.
    pub backlog_drops: u64,
    /// Faults lost before they reached faultbridge (sequence gaps,
    /// overruns), told on as `Lost` too.
    pub source_losses: u64,
    /// Signals the connection failed to build or send.
    pub send_errors: u64,
    /// `PropertiesChanged` signals sent.
    pub property_signals: u64,
    pub notify_calls: u64,
    pub notify_accepted: u64,
    /// `Notify` and `Reset` calls refused with an error.
    pub rejected_requests: u64,
    pub reset_calls: u64,
    /// `Notify` and `Reset` calls refused because of who called (also
    /// counted in `rejected_requests`).
    pub denied_requests: u64,
    /// Calls refused with `Busy` (too many in progress).
    pub busy_refusals: u64,
    /// Faults that found the bus connection down (told as `Lost` once it
    /// is back).
    pub bus_down_drops: u64,
    /// True while connected to the bus and owning the name.
    pub connected: bool,
    /// Times the connection to the bus was lost.
    pub disconnects: u64,
    /// Times it was made again (the name owned, the objects exported).
    pub reconnects: u64,
}

/// Live counters of the service.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) faults_in: CachePadded<AtomicU64>,
    pub(crate) fault_signals: CachePadded<AtomicU64>,
    pub(crate) lost_signals: AtomicU64,
    pub(crate) queue_drops: AtomicU64,
    pub(crate) rate_drops: AtomicU64,
    pub(crate) backlog_drops: AtomicU64,
    pub(crate) source_losses: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) property_signals: AtomicU64,
    pub(crate) notify_calls: AtomicU64,
    pub(crate) notify_accepted: AtomicU64,
    pub(crate) rejected_requests: AtomicU64,
    pub(crate) reset_calls: AtomicU64,
    pub(crate) denied_requests: AtomicU64,
    pub(crate) busy_refusals: AtomicU64,
    pub(crate) bus_down_drops: AtomicU64,
    pub(crate) connected: AtomicBool,
    pub(crate) disconnects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) has_missed: AtomicBool,
    /// Events the pump has finished with (queued as a signal, dropped or
    /// kept as a pending loss).
    pub(crate) events_done: AtomicU64,
    /// Signals handed to the sender, and those it has finished writing.
    pub(crate) signals_queued: AtomicU64,
    pub(crate) signals_done: AtomicU64,
    /// The pump holds losses it has yet to tell.
    pub(crate) pump_pending: AtomicBool,
    /// Signals are held (not sent) until the name is taken.
    pub(crate) pump_held: AtomicBool,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DbusStats {
        DbusStats {
            faults_in: self.faults_in.load(Relaxed),
            fault_signals: self.fault_signals.load(Relaxed),
            lost_signals: self.lost_signals.load(Relaxed),
            queue_drops: self.queue_drops.load(Relaxed),
            rate_drops: self.rate_drops.load(Relaxed),
            backlog_drops: self.backlog_drops.load(Relaxed),
            source_losses: self.source_losses.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            property_signals: self.property_signals.load(Relaxed),
            notify_calls: self.notify_calls.load(Relaxed),
            notify_accepted: self.notify_accepted.load(Relaxed),
            rejected_requests: self.rejected_requests.load(Relaxed),
            reset_calls: self.reset_calls.load(Relaxed),
            denied_requests: self.denied_requests.load(Relaxed),
            busy_refusals: self.busy_refusals.load(Relaxed),
            bus_down_drops: self.bus_down_drops.load(Relaxed),
            connected: self.connected.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
        }
    }
}

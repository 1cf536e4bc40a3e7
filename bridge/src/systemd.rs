//! systemd integration (`Type=notify`): `READY=1` once the sources are bound
//! and the bus name is owned, `STATUS=` lines with the counters, and the
//! watchdog keep-alive when `WatchdogSec=` is set — sent only while the
//! ingest loop answers, so a stuck daemon is restarted. Without systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.

use crate::daemon::ControlHandle;
use crate::monitor::{MonitorState, MonitorView};
use crate::stats::Stats;
use faultbridge_bus::dbus::BusHealth;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// True when started by systemd with a notification socket.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Tells systemd the daemon is ready.
pub fn ready() {
    if enabled() {
        let _ = sd_notify::notify(&[NotifyState::Ready]);
    }
}

/// Tells systemd that process `pid` is the unit's main process now (a
/// live upgrade's new side, before the old one exits; the unit needs
/// `NotifyAccess=all` for it to be heard from a process not yet main).
pub fn main_pid(pid: u32) {
    if enabled() {
        let _ = sd_notify::notify(&[NotifyState::MainPid(pid)]);
    }
}

/// Tells systemd (or `start-stop-daemon --notify-await`) that the daemon
/// could not start: `STATUS=` with why, and `ERRNO=` with the error number
/// of the cause (EIO when none is known), so the start fails at once
/// instead of waiting for a READY that never comes.
pub fn failed(e: &(dyn std::error::Error + 'static)) {
    if !enabled() {
        return;
    }
    let errno = crate::error::errno(e)
        .or_else(|| {
            crate::error::chain(e).find_map(|c| match c.downcast_ref() {
                Some(crate::daemon::BridgeError::SourceStart { errno, .. }) => *errno,
                _ => None,
            })
        })
        .unwrap_or(nix::errno::Errno::EIO as i32);
    let status = format!("cannot start: {}", crate::error::error_chain(e));
    let _ = sd_notify::notify(&[
        NotifyState::Status(&status),
        NotifyState::Errno(errno as u32),
    ]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    if enabled() {
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
    }
}

/// One `STATUS=` line: what an operator sees in `systemctl status`; it
/// says so while the D-Bus connection is down (the daemon goes on and
/// reconnects meanwhile).
pub fn status_line(stats: &Stats, monitors: &MonitorView, bus: Option<&BusHealth>) -> String {
    let s = stats.snapshot();
    let received: u64 = s.sources.iter().map(|x| x.received).sum();
    let lost: u64 = s.sources.iter().map(|x| x.lost).sum();
    let malformed: u64 = s.sources.iter().map(|x| x.malformed_total).sum();
    let in_error = monitors
        .monitors
        .iter()
        .filter(|m| m.state() == MonitorState::Error)
        .count();
    let mut line = format!(
        "{received} records, {lost} lost, {malformed} malformed; {in_error} of {} monitors in Error",
        monitors.monitors.len()
    );
    if let Some(h) = stats.health.summary() {
        line = format!("{h}; {line}");
    }
    if let Some(down) = bus.and_then(BusHealth::down_for) {
        line.push_str(&format!(
            "; D-Bus down for {} s, reconnecting",
            down.as_secs()
        ));
    }
    line
}

/// The watchdog interval systemd asked for, if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| enabled() && !d.is_zero())
}

/// Sends STATUS= every few seconds (at once when the D-Bus connection is
/// lost or back) and WATCHDOG=1 at half the watchdog interval while the
/// ingest loop answers a ping, until `stop` is set. A lost bus does not
/// stop the keep-alives: the daemon goes on without it.
pub fn spawn_keepalive(
    control: ControlHandle,
    stats: Arc<Stats>,
    monitors: Arc<MonitorView>,
    bus: Option<BusHealth>,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    if !enabled() {
        return None;
    }
    let watchdog = watchdog_interval();
    let tick = watchdog.map_or(Duration::from_secs(5), |w| {
        (w / 2).min(Duration::from_secs(5))
    });
    std::thread::Builder::new()
        .name("fb-systemd".into())
        .spawn(move || {
            let mut last_status = std::time::Instant::now() - Duration::from_secs(60);
            let mut was_up = true;
            let mut health_seen = u64::MAX;
            while !stop.load(Ordering::Acquire) {
                if watchdog.is_some() && control.ping(tick).is_ok() {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                }
                let up = bus.as_ref().is_none_or(BusHealth::is_connected);
                let health = stats.health.generation();
                if last_status.elapsed() >= Duration::from_secs(5)
                    || up != was_up
                    || health != health_seen
                {
                    was_up = up;
                    health_seen = health;
                    let line = status_line(&stats, &monitors, bus.as_ref());
                    let _ = sd_notify::notify(&[NotifyState::Status(&line)]);
                    last_status = std::time::Instant::now();
                }
                std::thread::sleep(tick.min(Duration::from_millis(500)));
            }
        })
        .ok()
}

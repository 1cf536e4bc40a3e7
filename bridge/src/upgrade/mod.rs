//! Live self-upgrade: a new build of faultbridge takes over from the running
//! daemon without a fault going unheard, following the Active Upgrade model
//! (split, merge, then commit or abort). See `docs/upgrade.md`.
//!
//! - [`state`]: the state model, pure.
//! - [`actions`]: `[[upgrade.action]]` custom actions and their runner.
//! - [`info`]: what a build says about itself; the readiness check.
//! - [`coordinator`]: runs requests step by step, off the ingest thread.
//! - [`handover`]: the second process and the protocol between the sides.
//! - [`bus`]: `org.faultbridge.Upgrade1` answered from the coordinator.
//! - [`side`]: the Upgrade side's own run (`faultbridge upgrade-side`).

pub mod actions;
pub mod bus;
pub mod coordinator;
pub mod handover;
pub mod info;
pub mod side;
pub mod state;

pub use actions::{RawUpgrade, UpgradeAction, UpgradeConfig, UpgradeConfigError};
pub use coordinator::{Coordinator, PeerStatus, Settings, Sides, StateChange, UpgradeStatus};
pub use state::{Command, Machine, Operational, Refused, Request, Side, Step, UpgradeState};

use crate::config::Config;
use crate::daemon::Bridge;
use faultbridge_bus::dbus::Service;
use faultbridge_bus::dbus::upgrade1::UpgradeExport;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// The `run --print` mode of this daemon, if it prints faults on its
/// standard output: the new side of an upgrade gets the same output and
/// prints from the moment it acts.
static PRINTER: std::sync::OnceLock<(&'static str, std::os::fd::OwnedFd)> =
    std::sync::OnceLock::new();

/// This daemon prints faults as `mode` (`json`, `text`) on `out` (a
/// duplicate of the output it prints on): an upgrade hands it on.
pub fn set_printer(mode: &'static str, out: std::os::fd::OwnedFd) {
    let _ = PRINTER.set((mode, out));
}

/// The print mode and output an upgrade's new side takes over, if any.
pub(crate) fn printer() -> Option<(&'static str, std::io::Result<std::os::fd::OwnedFd>)> {
    PRINTER.get().map(|(m, fd)| (*m, fd.try_clone()))
}

/// True once this process has handed acting to the other side for good
/// (the old side at Commit, the new side at an abort from Merge): it is
/// ending, and is not the one to tell systemd the unit stops.
pub fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::Acquire)
}

/// Ends this process the way a stop signal does, as one that handed over.
pub(crate) fn exit_handed_over() {
    HANDED_OVER.store(true, Ordering::Release);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM);
}

/// The live self-upgrade of a running daemon: its coordinator and its
/// D-Bus interface.
#[derive(Debug)]
pub struct Upgrade {
    pub coordinator: Arc<Coordinator>,
    export: Option<UpgradeExport>,
}

/// Offers `org.faultbridge.Upgrade1` beside the bridge's D-Bus service.
/// `config_path` is the file the daemon runs (None: built-in defaults).
pub fn start(
    bridge: &Bridge,
    config: &Config,
    config_path: Option<&Path>,
    service: &Service,
) -> zbus::Result<Upgrade> {
    let settings = Settings {
        config_path: config_path.map(Path::to_path_buf),
        history_path: bridge.history_path().map(Path::to_path_buf),
        upgrade: config.upgrade.clone(),
    };
    let local = handover::Local {
        control: bridge.control(),
        settler: Some(service.settler()),
        config: Arc::new(config.clone()),
    };
    let sides = Box::new(handover::ProcessSides::new(
        settings.config_path.clone(),
        Some(local),
    ));
    let coordinator = Coordinator::new(settings, bridge.activity(), sides);
    let export = bus::export_on(service, coordinator.clone())?;
    Ok(Upgrade {
        coordinator,
        export: Some(export),
    })
}

impl Upgrade {
    /// Ends an Upgrade side that was started and not merged, and waits for
    /// the step in progress.
    pub fn stop(self) {
        self.coordinator.wait_idle();
        let _ = self.export;
    }
}

//! The daemon's side of `org.faultbridge.Upgrade1`: requests go to the
//! [`Coordinator`] (after the caller's user id is checked), `Status`
//! answers from it, and its state changes become `StateChanged`.

use super::coordinator::{Coordinator, UpgradeStatus};
use super::state::Command;
use faultbridge_bus::dbus::upgrade1::{UpgradeBackend, UpgradeChange, UpgradeError, UpgradeExport};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use zbus::{Connection, OwnedVariant, Str};

fn text(s: &str) -> OwnedVariant {
    OwnedVariant::from(Str::from(s.to_string()))
}

/// Whether `uid` may drive an upgrade: root, or the user the daemon runs
/// as (who can replace the daemon anyway).
pub fn may_drive(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// `Status` as `a{sv}`: `state`, `operational`, `side`, `version`, `pid`,
/// `failed_step`, `new_binary`, `new_version` (strings, empty when
/// unknown), `step_times_ns` `a{st}`, `acting_gap_ns` `t` (how long
/// acting paused when it last moved to this side; 0: it has not), `peer` `a{sv}` (`side`, `version`,
/// `pid`, `acting`, `sequences` `a{st}`) while there is one, and `activity`
/// `as` (the newest upgrade entries, `severity kind: message`).
pub fn status_map(s: &UpgradeStatus) -> HashMap<String, OwnedVariant> {
    let mut m: HashMap<String, OwnedVariant> = HashMap::new();
    m.insert("state".into(), text(s.state.name()));
    m.insert("operational".into(), text(s.operational.name()));
    m.insert("side".into(), text(s.side.name()));
    m.insert("version".into(), text(&s.version));
    m.insert("pid".into(), s.pid.into());
    m.insert(
        "failed_step".into(),
        text(s.failed_step.map(|x| x.name()).unwrap_or("")),
    );
    m.insert(
        "new_binary".into(),
        text(s.new_binary.as_deref().unwrap_or("")),
    );
    m.insert(
        "new_version".into(),
        text(s.new_version.as_deref().unwrap_or("")),
    );
    let times: HashMap<String, u64> = s.step_times_ns.iter().cloned().collect();
    m.insert("step_times_ns".into(), times.into());
    m.insert("acting_gap_ns".into(), s.acting_gap_ns.unwrap_or(0).into());
    if let Some(p) = &s.peer {
        let mut pm: HashMap<String, OwnedVariant> = HashMap::new();
        pm.insert("side".into(), text(&p.side));
        pm.insert("version".into(), text(&p.version));
        pm.insert("pid".into(), p.pid.into());
        pm.insert("acting".into(), p.acting.into());
        let seqs: HashMap<String, u64> = p.sequences.clone().into_iter().collect();
        pm.insert("sequences".into(), seqs.into());
        m.insert("peer".into(), pm.into());
    }
    let lines: Vec<String> = s
        .activity
        .iter()
        .map(|e| format!("{} {}: {}", e.severity.name(), e.kind, e.message))
        .collect();
    if let Ok(v) = OwnedVariant::try_from(zbus::Variant::from(lines)) {
        m.insert("activity".into(), v);
    }
    m
}

struct CoordinatorBackend(Arc<Coordinator>);

impl UpgradeBackend for CoordinatorBackend {
    fn request(
        &self,
        command: &str,
        new_binary: &str,
        caller_uid: u32,
    ) -> Result<(), UpgradeError> {
        let c = Command::parse(command)
            .ok_or_else(|| UpgradeError::Refused(format!("unknown request {command:?}")))?;
        if !may_drive(caller_uid) {
            return Err(UpgradeError::AccessDenied(format!(
                "{}: only root may drive an upgrade (caller uid {caller_uid})",
                c.verb()
            )));
        }
        let binary = (!new_binary.is_empty()).then(|| Path::new(new_binary));
        self.0
            .request(c, binary)
            .map_err(|e| UpgradeError::Refused(e.to_string()))
    }

    fn status(&self) -> HashMap<String, OwnedVariant> {
        status_map(&self.0.status())
    }
}

/// Exports `org.faultbridge.Upgrade1` for `coordinator` on `service`'s
/// connection, and again on each connection it makes after the bus was
/// lost; `StateChanged` goes out on the connection of the moment.
pub fn export_on(
    service: &faultbridge_bus::dbus::Service,
    coordinator: Arc<Coordinator>,
) -> zbus::Result<UpgradeExport> {
    let conn = service
        .connection()
        .ok_or_else(|| zbus::Error::Failure("the bus is down".into()))?;
    let hook = hook(&coordinator);
    hook(&conn)?;
    service.on_connect(hook);
    signals_on(service, &coordinator)
}

/// What exports `org.faultbridge.Upgrade1` for `coordinator` on a
/// connection (for [`faultbridge_bus::dbus::Service::start_with_hooks`]).
pub fn hook(coordinator: &Arc<Coordinator>) -> faultbridge_bus::dbus::ConnectHook {
    let backend: Arc<dyn faultbridge_bus::dbus::upgrade1::UpgradeBackend> =
        Arc::new(CoordinatorBackend(coordinator.clone()));
    Arc::new(move |c: &Connection| UpgradeExport::serve(c, backend.clone()))
}

/// `StateChanged` for `coordinator`, on `service`'s connection of the moment.
pub fn signals_on(
    service: &faultbridge_bus::dbus::Service,
    coordinator: &Coordinator,
) -> zbus::Result<UpgradeExport> {
    let health = service.health();
    UpgradeExport::signals_following(changes_of(coordinator)?, move || health.connection())
}

/// The coordinator's state changes as `StateChanged` arguments.
fn changes_of(
    coordinator: &Coordinator,
) -> zbus::Result<crossbeam_channel::Receiver<UpgradeChange>> {
    let changes = coordinator.listen();
    let (tx, rx) = crossbeam_channel::bounded(256);
    std::thread::Builder::new()
        .name("fb-upgrade-changes".into())
        .spawn(move || {
            for c in changes {
                let c = UpgradeChange {
                    state: c.state.name().into(),
                    operational: c.operational.name().into(),
                    side: c.side.name().into(),
                };
                if tx.send(c).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| zbus::Error::Failure(format!("cannot start a thread: {e}")))?;
    Ok(rx)
}

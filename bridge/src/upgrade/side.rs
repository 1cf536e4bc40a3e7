//! The Upgrade side's own run (`faultbridge upgrade-side`, started by the
//! Production side at Split): the new binary reads the running
//! configuration, opens its own sources (netlink multicast lets several
//! sockets join the same group, so it receives every record the running
//! daemon receives), keeps its monitors' states, runs no action, writes no
//! history, sends no `Fault` signal, and owns
//! `org.faultbridge.Bridge1.Upgrade`, where `org.faultbridge.Upgrade1.Status`
//! shows it. It talks to the Production side over its standard input and
//! output (see [`super::handover`]) and exits when told to or when that
//! socket closes.

use super::bus::status_map;
use super::coordinator::{PeerStatus, UpgradeStatus};
use super::handover::{FromUpgrade, ToUpgrade};
use super::info::{HANDOVER_VERSION, version};
use super::state::{Operational, Side, UpgradeState};
use crate::config::{AdapterKind, Config};
use crate::daemon::Bridge;
use faultbridge_bus::dbus::upgrade1::{
    UPGRADE_SIDE_NAME, UpgradeBackend, UpgradeError, UpgradeExport,
};
use faultbridge_bus::{Event, SubscribeOptions};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex, PoisonError};
use zbus::OwnedVariant;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

/// The configuration as the Upgrade side runs it: the same netlink sources
/// and monitors, no action, no history, and not the driver's char device
/// (a read there may take a record from the Production side's queue; the
/// driver's netlink multicast reaches both).
pub fn passive(config: &Config) -> Config {
    let mut c = config.clone();
    c.history = None;
    c.expdrv.device = None;
    for m in &mut c.monitors {
        m.adapter = AdapterKind::None;
    }
    c
}

/// Per source, the last sequence received.
#[derive(Debug, Default)]
pub struct Sequences(Mutex<BTreeMap<String, u64>>);

impl Sequences {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows `bridge`'s faults on a thread of its own until it stops.
    pub fn follow(bridge: &Bridge) -> Result<Arc<Sequences>, String> {
        let sub = bridge
            .subscribe(SubscribeOptions::new("upgrade-sequences").capacity(65536))
            .map_err(|e| e.to_string())?;
        let seqs = Arc::new(Sequences::default());
        let s = seqs.clone();
        std::thread::Builder::new()
            .name("fb-upgrade-seq".into())
            .spawn(move || {
                for ev in sub.iter() {
                    let (source, last) = match &ev {
                        Event::Fault(f) => (f.source(), f.sequence()),
                        Event::Lost(l) => (l.source, l.last_sequence),
                    };
                    let mut m = s.0.lock().unwrap_or_else(PoisonError::into_inner);
                    let e = m.entry(source.name().to_string()).or_insert(0);
                    *e = (*e).max(last);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(seqs)
    }
}

struct SideBackend {
    seqs: Arc<Sequences>,
}

impl SideBackend {
    fn peer_status(&self) -> PeerStatus {
        PeerStatus {
            side: Side::Upgrade.name().into(),
            version: version().into(),
            pid: std::process::id(),
            acting: false,
            sequences: self.seqs.snapshot(),
        }
    }
}

impl UpgradeBackend for SideBackend {
    fn request(&self, command: &str, _: &str, _: u32) -> Result<(), UpgradeError> {
        Err(UpgradeError::Refused(format!(
            "{command}: this is the Upgrade side (pid {}); the upgrade is driven through org.faultbridge.Bridge1",
            std::process::id()
        )))
    }

    fn status(&self) -> HashMap<String, OwnedVariant> {
        status_map(&UpgradeStatus {
            state: UpgradeState::Split,
            operational: Operational::Ready,
            side: Side::Upgrade,
            version: version().into(),
            pid: std::process::id(),
            failed_step: None,
            new_binary: None,
            new_version: None,
            step_times_ns: Vec::new(),
            peer: None,
            activity: Vec::new(),
        })
        .into_iter()
        .chain([(
            "sequences".to_string(),
            OwnedVariant::from(
                self.seqs
                    .snapshot()
                    .into_iter()
                    .collect::<HashMap<String, u64>>(),
            ),
        )])
        .collect()
    }
}

fn say(out: &mut impl Write, m: &FromUpgrade) -> std::io::Result<()> {
    let mut line = serde_json::to_string(m).map_err(std::io::Error::other)?;
    line.push('\n');
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// Runs the Upgrade side until the Production side says exit or goes.
pub fn run(config: &Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let bridge = Bridge::start(&passive(config))?;
    let seqs = Sequences::follow(&bridge)?;
    let backend = Arc::new(SideBackend { seqs: seqs.clone() });
    // Inspectable on the bus under a name of its own; no Fault signals.
    let mut export: Option<(
        zbus::Connection,
        UpgradeExport,
        crossbeam_channel::Sender<_>,
    )> = None;
    if let Some(bus) = crate::dbus::bus_address(&config.bus) {
        let conn = zbus::block_on(faultbridge_bus::dbus::client::connect(&bus, None))?;
        match zbus::block_on(
            conn.request_name_with_flags(UPGRADE_SIDE_NAME, RequestNameFlags::DO_NOT_QUEUE),
        )? {
            RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => {}
            _ => return Err(format!("{UPGRADE_SIDE_NAME} is owned by another process").into()),
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let e = UpgradeExport::start(&conn, backend.clone(), rx)?;
        export = Some((conn, e, tx));
    }
    eprintln!(
        "faultbridge: Upgrade side {} (pid {}) receiving; acting on nothing",
        version(),
        std::process::id()
    );
    let mut out = std::io::stdout().lock();
    say(
        &mut out,
        &FromUpgrade::Ready {
            handover_version: HANDOVER_VERSION,
            version: version().into(),
            pid: std::process::id(),
        },
    )?;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<ToUpgrade>(line.trim()) {
            Ok(ToUpgrade::Status { .. }) => FromUpgrade::Status {
                handover_version: HANDOVER_VERSION,
                status: backend.peer_status(),
            },
            Ok(ToUpgrade::Exit { .. }) => {
                let _ = say(
                    &mut out,
                    &FromUpgrade::Bye {
                        handover_version: HANDOVER_VERSION,
                    },
                );
                break;
            }
            Err(e) => FromUpgrade::Refused {
                handover_version: HANDOVER_VERSION,
                message: format!("unreadable request ({e})"),
            },
        };
        if say(&mut out, &reply).is_err() {
            break;
        }
    }
    if let Some((conn, e, tx)) = export {
        drop(tx);
        e.join();
        let _ = zbus::block_on(conn.release_name(UPGRADE_SIDE_NAME));
    }
    let _ = bridge.shutdown();
    eprintln!(
        "faultbridge: Upgrade side (pid {}) exits",
        std::process::id()
    );
    Ok(())
}

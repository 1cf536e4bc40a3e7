//! The Upgrade side's own run (`faultbridge upgrade-side`, started by the
//! Production side at Split).
//!
//! Until Merge the new binary reads the running configuration, opens its
//! own sources (netlink multicast lets several sockets join the same
//! group, so it receives every record the running daemon receives), keeps
//! its monitors' states and the last sequence per source, publishes
//! nothing (no action, no history, no `Fault` signal), and owns `org.faultbridge.Bridge1.Upgrade`, where
//! `org.faultbridge.Upgrade1.Status` shows it. It talks to the Production
//! side over its standard input and output (see [`super::handover`]) and
//! exits when told to or when that socket closes.
//!
//! At Merge it takes the Production side's sockets, cursors and monitor
//! states, closes its own sockets, starts writing history, takes
//! `org.faultbridge.Bridge1` (the old owner waits in the name's queue) and
//! acts from the record after the old side's last. From then on it is the
//! daemon: it drives Commit (the old side exits; `MAINPID=` under systemd)
//! or an abort (acting goes back, then this process exits).

use super::bus::status_map;
use super::coordinator::{Coordinator, PeerStatus, Settings, Sides, UpgradeStatus};
use super::handover::{Channel, HandOverState, Local, Msg, NewSides, taken};
use super::info::version;
use super::state::{Machine, Operational, Side, UpgradeState};
use crate::config::Config;
use crate::daemon::Bridge;
use crate::monitor::Positions;
use crate::signals::block_stop_signals;
use faultbridge_bus::dbus::upgrade1::{
    UPGRADE_SIDE_NAME, UpgradeBackend, UpgradeError, UpgradeExport,
};
use faultbridge_bus::dbus::{BUS_NAME, Service, ServiceOptions};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zbus::OwnedVariant;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

type DynError = Box<dyn std::error::Error + Send + Sync>;

/// The configuration as the Upgrade side starts with it: the same netlink
/// sources and monitors, no history (opened when it takes over), and not
/// the driver's char device (a read there may take a record from the
/// Production side's queue; the driver's netlink multicast reaches both).
pub fn passive(config: &Config) -> Config {
    let mut c = config.clone();
    c.history = None;
    c.expdrv.device = None;
    c
}

struct SideBackend {
    seqs: Arc<Positions>,
    monitors: Arc<crate::monitor::MonitorView>,
}

impl SideBackend {
    fn peer_status(&self, acting: bool) -> PeerStatus {
        PeerStatus {
            side: Side::Upgrade.name().into(),
            version: version().into(),
            pid: std::process::id(),
            acting,
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

    /// `Upgrade1.Status`, plus `sequences` `a{st}` (per source, the last
    /// sequence received) and `monitors_in_error` `as`.
    fn status(&self) -> HashMap<String, OwnedVariant> {
        let mut m = status_map(&UpgradeStatus {
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
            acting_gap_ns: None,
            activity: Vec::new(),
        });
        let seqs: HashMap<String, u64> = self.seqs.snapshot().into_iter().collect();
        m.insert("sequences".into(), OwnedVariant::from(seqs));
        let in_error: Vec<String> = self
            .monitors
            .monitors
            .iter()
            .filter(|x| x.state() == crate::monitor::MonitorState::Error)
            .map(|x| x.config.name.clone())
            .collect();
        if let Ok(v) = OwnedVariant::try_from(zbus::Variant::from(in_error)) {
            m.insert("monitors_in_error".into(), v);
        }
        m
    }
}

/// Sides while the old side's Merge step still runs its actions.
#[derive(Debug)]
struct Waiting;

impl Sides for Waiting {
    fn split(&mut self, _: &Path) -> Result<(), String> {
        Err("the Merge step is still running".into())
    }
    fn check_peer(&mut self) -> Result<(), String> {
        Err("the Merge step is still running".into())
    }
    fn merge(&mut self) -> Result<(), String> {
        Err("the Merge step is still running".into())
    }
    fn commit(&mut self) -> Result<(), String> {
        Err("the Merge step is still running".into())
    }
    fn abort(&mut self) -> Result<(), String> {
        Err("the Merge step is still running".into())
    }
    fn peer(&mut self) -> Option<PeerStatus> {
        None
    }
}

/// The read-only export under `org.faultbridge.Bridge1.Upgrade`.
struct SideExport {
    conn: zbus::Connection,
    export: UpgradeExport,
    tx: crossbeam_channel::Sender<faultbridge_bus::dbus::upgrade1::UpgradeChange>,
}

impl SideExport {
    fn start(config: &Config, backend: Arc<SideBackend>) -> Result<Option<SideExport>, DynError> {
        let Some(bus) = crate::dbus::bus_address(&config.bus) else {
            return Ok(None);
        };
        let conn = zbus::block_on(faultbridge_bus::dbus::client::connect(&bus, None))?;
        match zbus::block_on(
            conn.request_name_with_flags(UPGRADE_SIDE_NAME, RequestNameFlags::DO_NOT_QUEUE),
        )? {
            RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => {}
            _ => return Err(format!("{UPGRADE_SIDE_NAME} is owned by another process").into()),
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let export = UpgradeExport::start(&conn, backend, rx)?;
        Ok(Some(SideExport { conn, export, tx }))
    }

    fn stop(self) {
        drop(self.tx);
        self.export.join();
        let _ = zbus::block_on(self.conn.release_name(UPGRADE_SIDE_NAME));
        let _ = zbus::block_on(self.conn.close());
    }
}

/// What this side runs once it acts.
struct Acting {
    service: Option<Service>,
    upgrade: super::Upgrade,
}

/// Runs the Upgrade side until the Production side says exit or goes, or,
/// once it has taken over, until it is stopped like the daemon.
/// With `printer`, it prints faults there as the running daemon did (`run
/// --print`): nothing while passive, every fault it publishes once acting.
pub fn run(
    config: &Config,
    config_path: Option<&Path>,
    printer: Option<(crate::cli::run::Print, OwnedFd)>,
) -> Result<(), DynError> {
    let signals = block_stop_signals()?;
    let mut bridge = Bridge::open(&passive(config))?;
    let seqs = bridge
        .set_passive()
        .ok_or("the bridge was running before it could be made passive")?;
    // Subscribed before it runs: a passive bridge publishes nothing, so
    // the first line printed is the first record it acts on.
    let printing = match printer {
        None => None,
        Some((mode, fd)) => {
            // Handed on again at this side's own next upgrade.
            if let Some(name) = mode.name() {
                crate::upgrade::set_printer(name, fd.try_clone()?);
            }
            let sub = bridge.subscribe(
                faultbridge_bus::SubscribeOptions::new("stdout").capacity(config.ingest.queue),
            )?;
            Some(
                std::thread::Builder::new()
                    .name("fb-print".into())
                    .spawn(move || {
                        crate::cli::run::print_events_to(sub, mode, std::fs::File::from(fd))
                    })?,
            )
        }
    };
    bridge.run()?;
    let backend = Arc::new(SideBackend {
        seqs: seqs.clone(),
        monitors: bridge.monitors(),
    });
    // Inspectable on the bus under a name of its own; no Fault signals.
    let side_export = SideExport::start(config, backend.clone())?;
    let stdin: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut chan = Channel::new(
        UnixStream::from(stdin),
        nix::unistd::getppid().as_raw() as u32,
    );
    eprintln!(
        "faultbridge: Upgrade side {} (pid {}) receiving; acting on nothing",
        version(),
        std::process::id()
    );
    chan.send(
        &Msg::Ready {
            version: version().into(),
            pid: std::process::id(),
        },
        &[],
    )?;
    let config = Arc::new(config.clone());
    let mut acting = None;
    loop {
        let (m, fds) = match chan.recv(None) {
            Ok(x) => x,
            Err(_) => break,
        };
        let reply = match m {
            Msg::Status => Msg::StatusIs {
                status: backend.peer_status(false),
            },
            Msg::Exit => {
                let _ = chan.send(&Msg::Bye, &[]);
                break;
            }
            Msg::Monitors { monitors } => match bridge.control().adopt_monitors(monitors) {
                Ok(count) => Msg::Adopted { count },
                Err(e) => Msg::Refused {
                    message: e.to_string(),
                },
            },
            Msg::HandOver { state } => {
                match take_over(&mut bridge, &config, config_path, state, fds) {
                    Ok(a) => {
                        acting = Some(a);
                        break;
                    }
                    Err(message) => Msg::Refused {
                        message: message.to_string(),
                    },
                }
            }
            other => Msg::Refused {
                message: format!("{other:?} is not served by the Upgrade side before Merge"),
            },
        };
        if chan.send(&reply, &[]).is_err() {
            break;
        }
    }
    let Some(acting) = acting else {
        if let Some(e) = side_export {
            e.stop();
        }
        let _ = bridge.shutdown();
        if let Some(p) = printing {
            let _ = p.join();
        }
        eprintln!(
            "faultbridge: Upgrade side (pid {}) exits",
            std::process::id()
        );
        return Ok(());
    };
    // Acting: the read-only name goes (the next upgrade's new side takes it).
    if let Some(e) = side_export {
        e.stop();
    }
    let pid = std::process::id();
    chan.send(
        &Msg::Took {
            status: backend.peer_status(true),
        },
        &[],
    )?;
    eprintln!("faultbridge: Upgrade side (pid {pid}) acts now");
    // The old side's Merge step ends (its start and backup actions).
    let coordinator = acting.upgrade.coordinator.clone();
    let (ok, message, step_times_ns) = match chan.recv(None) {
        Ok((
            Msg::MergeDone {
                ok,
                message,
                step_times_ns,
            },
            _,
        )) => (ok, message, step_times_ns),
        Ok((other, _)) => (
            false,
            format!("the old side sent {other:?} instead of the end of its Merge step"),
            Vec::new(),
        ),
        Err(e) => (false, e, Vec::new()),
    };
    let local = Local {
        control: bridge.control(),
        settler: acting.service.as_ref().map(Service::settler),
        config: config.clone(),
    };
    let conn = acting.service.as_ref().and_then(Service::connection);
    let release_name = Box::new(move || match &conn {
        Some(c) => zbus::block_on(c.release_name(BUS_NAME))
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => Ok(()),
    });
    // The sides (and so the peer in Status) are in place before the step
    // is told done: a client that sees Merge Ready sees both sides.
    coordinator.replace_sides(Box::new(NewSides::new(
        chan,
        local,
        config_path.map(Path::to_path_buf),
        release_name,
    )));
    coordinator.merge_done(ok, &message, &step_times_ns);
    let keepalive_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keepalive = crate::systemd::spawn_keepalive(
        bridge.control(),
        bridge.counters(),
        bridge.monitors(),
        acting.service.as_ref().map(Service::health),
        keepalive_stop.clone(),
    );
    let sig = signals.wait()?;
    if super::handed_over() {
        eprintln!("faultbridge: acting handed back to the old side: exiting (pid {pid})");
    } else {
        eprintln!("faultbridge: {sig}: stopping");
        crate::systemd::stopping();
    }
    keepalive_stop.store(true, std::sync::atomic::Ordering::Release);
    if let Some(k) = keepalive {
        let _ = k.join();
    }
    acting.upgrade.stop();
    let stats = bridge.shutdown();
    if let Some(s) = acting.service {
        s.stop();
    }
    if let Some(p) = printing {
        let _ = p.join();
        // The stats line `run --print json` ends with.
        if let Some(("json", Ok(fd))) = crate::upgrade::printer() {
            use std::io::Write;
            let mut out = std::fs::File::from(fd);
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({"type": "stats", "stats": stats})
            );
        }
    }
    eprintln!("{stats}");
    Ok(())
}

/// Takes acting over: the sources handed over, history, the bus name,
/// the upgrade's coordinator, then the ingest loop reads on.
fn take_over(
    bridge: &mut Bridge,
    config: &Arc<Config>,
    config_path: Option<&Path>,
    state: HandOverState,
    fds: Vec<OwnedFd>,
) -> Result<Acting, DynError> {
    let boundary = state.boundary();
    let taken = taken(state, fds, config)?;
    bridge.start_history(config)?;
    let settings = Settings {
        config_path: config_path.map(PathBuf::from),
        history_path: bridge.history_path().map(Path::to_path_buf),
        upgrade: config.upgrade.clone(),
    };
    let coordinator = Coordinator::resume(
        settings,
        bridge.activity(),
        Box::new(Waiting),
        Side::Upgrade,
        Machine::restore(UpgradeState::Merge, Operational::Busy),
    );
    // Connected without the name: Upgrade1 is on the connection before the
    // name moves to it, so a client waiting for the merge always finds it.
    let service = match crate::dbus::bus_address(&config.bus) {
        Some(bus) => {
            let mut opts = ServiceOptions::new(bus);
            opts.take_name = true;
            Some(crate::dbus::start_with_hooks(
                bridge,
                &opts,
                config.ingest.queue,
                vec![super::bus::hook(&coordinator)],
            )?)
        }
        None => None,
    };
    let export = match &service {
        Some(s) => Some(super::bus::signals_on(s, &coordinator)?),
        None => None,
    };
    let released_at_ns = taken.released_at_ns;
    // Acting moves with the monitor states first, its signals held; then
    // the name: a Check script reaching this side finds the states taken
    // over, never this side's own.
    Local {
        control: bridge.control(),
        settler: None,
        config: config.clone(),
    }
    .take(taken)?;
    if let Some(s) = &service
        && let Err(e) = s.take_name()
    {
        eprintln!(
            "faultbridge: upgrade: cannot take {}: {}; this side acts without it",
            faultbridge_bus::dbus::BUS_NAME,
            crate::error::error_chain(&e)
        );
    }
    coordinator.acting_gap(super::handover::gap_since(released_at_ns));
    coordinator.note(
        crate::activity::ActivitySeverity::Information,
        format!(
            "this side (pid {}) acts from the record after the old side's last: {boundary}",
            std::process::id()
        ),
    );
    Ok(Acting {
        service,
        upgrade: super::Upgrade {
            coordinator,
            export,
        },
    })
}

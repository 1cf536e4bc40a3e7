//! `faultbridge run`: the daemon in the foreground.

use super::CliResult;
use super::format::{fault_json, fault_line, lost_json, lost_line};
use crate::config::{Config, DEFAULT_PATH};
use crate::daemon::Bridge;
use crate::dbus::{self, SYSTEM_BUS_SOCKET};
use crate::signals::block_stop_signals;
use faultbridge_bus::dbus::{BusAddress, Service, ServiceOptions};
use faultbridge_bus::{Event, SubscribeOptions, Subscription};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Print {
    /// Print nothing but errors.
    None,
    /// A readable line per fault.
    Text,
    /// One JSON object per line: faults, loss notices, `ready`, final `stats`.
    Json,
}

impl Print {
    /// The option's value (`None` for [`Print::None`]).
    pub fn name(self) -> Option<&'static str> {
        match self {
            Print::None => None,
            Print::Text => Some("text"),
            Print::Json => Some("json"),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also print every fault on standard output.
    #[arg(long, value_enum, default_value_t = Print::None)]
    pub print: Print,
}

pub fn run(args: RunArgs) -> CliResult {
    let r = run_daemon(args);
    if let Err(e) = &r {
        crate::systemd::failed(e.as_ref());
    }
    r
}

fn run_daemon(args: RunArgs) -> CliResult {
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => {
            let p = PathBuf::from(DEFAULT_PATH);
            if p.exists() {
                Config::load(&p)?
            } else {
                eprintln!("faultbridge: no {DEFAULT_PATH}: running with the built-in defaults");
                Config::parse("", &p)?
            }
        }
    };
    let signals = block_stop_signals()?;
    if let Some(mode) = args.print.name() {
        use std::os::fd::AsFd;
        crate::upgrade::set_printer(mode, std::io::stdout().as_fd().try_clone_to_owned()?);
    }
    // Opened paused: D-Bus and the printer subscribe before the sources'
    // start-up reports are published.
    let mut bridge = Bridge::open(&config)?;
    if let Some(h) = bridge.counters().health.summary() {
        eprintln!(
            "faultbridge: warning: running {h}; retried with a growing delay (the monitors those sources feed answer \"unknown\" meanwhile)"
        );
    }
    let dbus = start_dbus(&bridge, &config)?;
    // Live self-upgrade, driven over D-Bus beside the bridge's service.
    let config_path = args
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()));
    let upgrade = match &dbus {
        Some(d) => Some(crate::upgrade::start(
            &bridge,
            &config,
            config_path.as_deref(),
            d,
        )?),
        None => None,
    };
    // Subscribe before announcing readiness, so nothing sent after `ready`
    // is missed; the printer locks stdout for good, so `ready` goes first.
    let sub = match args.print {
        Print::None => None,
        _ => Some(bridge.subscribe(SubscribeOptions::new("stdout").capacity(config.ingest.queue))?),
    };
    if args.print == Print::Json {
        println!(
            "{}",
            serde_json::json!({"type": "ready", "pid": std::process::id()})
        );
    }
    bridge.run()?;
    let mode = args.print;
    let printer = match sub {
        None => None,
        Some(sub) => Some(
            std::thread::Builder::new()
                .name("fb-print".into())
                .spawn(move || print_events(sub, mode))?,
        ),
    };
    eprintln!("faultbridge: running (pid {})", std::process::id());
    // Sources bound, bus name owned: ready, and keep-alives while the ingest
    // loop answers.
    crate::systemd::ready();
    let keepalive_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keepalive = crate::systemd::spawn_keepalive(
        bridge.control(),
        bridge.counters(),
        bridge.monitors(),
        dbus.as_ref().map(Service::health),
        keepalive_stop.clone(),
    );
    let sig = signals.wait()?;
    if crate::upgrade::handed_over() {
        // Committed: the new side is the unit's main process already.
        eprintln!(
            "faultbridge: the upgraded daemon acts now: exiting (pid {})",
            std::process::id()
        );
    } else {
        eprintln!("faultbridge: {sig}: stopping");
        crate::systemd::stopping();
    }
    keepalive_stop.store(true, std::sync::atomic::Ordering::Release);
    if let Some(k) = keepalive {
        let _ = k.join();
    }
    if let Some(u) = upgrade {
        u.stop();
    }
    let stats = bridge.shutdown();
    // After the bridge: the D-Bus side sends what it still holds, then goes.
    let dbus = dbus.map(Service::stop);
    if let Some(p) = printer {
        let _ = p.join();
    }
    if args.print == Print::Json {
        let mut line = serde_json::json!({"type": "stats", "stats": stats});
        if let Some(d) = &dbus {
            line["dbus"] = serde_json::json!(d.to_map());
        }
        println!("{line}");
    }
    eprintln!("{stats}");
    if let Some(d) = &dbus {
        eprintln!(
            "D-Bus: {} Fault and {} Lost signals sent, {} faults dropped (queue {}, pace {}, backlog {})",
            d.fault_signals,
            d.lost_signals,
            d.dropped(),
            d.queue_drops,
            d.rate_drops,
            d.backlog_drops
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// True when `bus = "system"` and this machine has no system bus at all
/// (a container, a minimal host): the daemon then runs without D-Bus.
fn no_system_bus() -> bool {
    std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_none()
        && !std::path::Path::new(SYSTEM_BUS_SOCKET).exists()
}

/// Starts the D-Bus service on the configured bus (none for `bus = "none"`);
/// returns once `org.faultbridge.Bridge1` is owned.
fn start_dbus(
    bridge: &Bridge,
    config: &Config,
) -> Result<Option<Service>, Box<dyn std::error::Error + Send + Sync>> {
    let Some(bus) = dbus::bus_address(&config.bus) else {
        return Ok(None);
    };
    if bus == BusAddress::System && no_system_bus() {
        eprintln!(
            "faultbridge: no system bus ({SYSTEM_BUS_SOCKET} is absent): running without D-Bus; set bus = \"none\" to silence this"
        );
        return Ok(None);
    }
    let service = dbus::start(
        bridge,
        &ServiceOptions::new(bus.clone()),
        config.ingest.queue,
    )?;
    eprintln!(
        "faultbridge: D-Bus: {} owned on the {bus} bus",
        faultbridge_bus::dbus::BUS_NAME
    );
    Ok(Some(service))
}

/// Prints events until the bridge stops; flushes whenever the queue is empty.
pub fn print_events(sub: Subscription, mode: Print) {
    print_events_to(sub, mode, std::io::stdout().lock());
}

/// [`print_events`] on `out` (the output a live upgrade's new side took
/// over from the old one).
pub fn print_events_to(sub: Subscription, mode: Print, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    for ev in sub.iter() {
        let line = match (&ev, mode) {
            (Event::Fault(f), Print::Json) => fault_json(f).to_string(),
            (Event::Lost(l), Print::Json) => lost_json(l).to_string(),
            (Event::Fault(f), _) => fault_line(f),
            (Event::Lost(l), _) => lost_line(l),
        };
        if writeln!(out, "{line}").is_err() {
            return;
        }
        if sub.is_empty() && out.flush().is_err() {
            return;
        }
    }
    let _ = out.flush();
}

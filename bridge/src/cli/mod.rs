//! The `faultbridge` command: one file per subcommand.

pub mod check;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod format;
pub mod history;
pub mod notify;
pub mod reset;
pub mod run;
pub mod sim;
pub mod status;
pub mod upgrade;
pub mod watch;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use faultbridge_bus::dbus::BusAddress;
use faultbridge_bus::dbus::client::{error_message, error_name};
use std::process::ExitCode;

/// Bridges hardware fault messages from the expanded device driver and the
/// kernel to cluster managers, D-Bus and in-process subscribers.
#[derive(Debug, Parser)]
#[command(
    name = "faultbridge",
    version,
    about,
    long_about = None,
    after_long_help = "The daemon's configuration file, /etc/faultbridge/faultbridge.toml, is described in faultbridge.toml(5)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--bus`: the bus a client command reaches the daemon on.
#[derive(Debug, Clone, clap::Args)]
pub struct BusArg {
    /// The bus the daemon is on: system, session, or a D-Bus address such
    /// as unix:path=/run/x/bus (the daemon's own bus is `bus` in its
    /// configuration).
    #[arg(
        long,
        env = "FAULTBRIDGE_BUS",
        value_name = "ADDRESS",
        default_value = "system"
    )]
    pub bus: String,
}

impl BusArg {
    /// The address, or why it is not one.
    pub fn address(&self) -> Result<BusAddress, String> {
        BusAddress::parse(&self.bus).map_err(|e| format!("--bus: {e}"))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Run(run::RunArgs),
    /// A newcomer's first run: daemon, driver simulator and a live view.
    Demo(demo::DemoArgs),
    /// The driver simulator: emit ABI v1 records on netlink.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Live stream of faults over D-Bus, one line each.
    Watch(watch::WatchArgs),
    /// Report a fault from user space (like `clprexec --notice`).
    Notify(notify::NotifyArgs),
    /// Monitors, states and counters of the running daemon.
    Status(status::StatusArgs),
    /// A cluster Check script: exit 0 Normal, 2 Error, 1 unknown or unreachable.
    Check(check::CheckArgs),
    /// Clear a monitor's Error state.
    Reset(reset::ResetArgs),
    /// Recorded faults, loss notices and monitor activity.
    History(history::HistoryArgs),
    /// Live self-upgrade of the running daemon (root only): check, split,
    /// merge, commit, abort, finish, retry, status.
    Upgrade(upgrade::UpgradeArgs),
    /// What this build is and whether it accepts a configuration (JSON for
    /// the readiness check of an upgrade).
    #[command(hide = true, name = "upgrade-info")]
    UpgradeInfo(upgrade::InfoArgs),
    /// The Upgrade side of a live self-upgrade (started by the daemon).
    #[command(hide = true, name = "upgrade-side")]
    UpgradeSide(upgrade::SideArgs),
    /// The faults of every forwarding host, from the NATS JetStream stream.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Configuration tools.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Write the man pages (roff): faultbridge(1) generated from this
    /// command line, or with --dir every page the packages install.
    #[command(hide = true)]
    Man {
        /// Output file of faultbridge(1) (default: standard output).
        #[arg(long, conflicts_with = "dir")]
        out: Option<std::path::PathBuf>,
        /// Write faultbridge(1), a page per subcommand
        /// (faultbridge-run(1), …) and faultbridge.toml(5) into this
        /// directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

impl Command {
    /// The subcommand's name, as typed: errors start `faultbridge NAME: …`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Demo(_) => "demo",
            Command::Sim(sim::SimCommand::Send(_)) => "sim send",
            Command::Sim(sim::SimCommand::Flood(_)) => "sim flood",
            Command::Sim(sim::SimCommand::Device(_)) => "sim device",
            Command::Watch(_) => "watch",
            Command::Notify(_) => "notify",
            Command::Status(_) => "status",
            Command::Check(_) => "check",
            Command::Reset(_) => "reset",
            Command::History(_) => "history",
            Command::Upgrade(_) => "upgrade",
            Command::UpgradeInfo(_) => "upgrade-info",
            Command::UpgradeSide(_) => "upgrade-side",
            Command::Config(config::ConfigCommand::Check { .. }) => "config check",
            Command::Fleet(fleet::FleetCommand::Watch(_)) => "fleet watch",
            Command::Fleet(fleet::FleetCommand::Status(_)) => "fleet status",
            Command::Man { .. } => "man",
        }
    }
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    // `--version` tells the version this build reports everywhere (a
    // build may carry its own, see `upgrade::info::set_version`).
    let matches = Cli::command()
        .version(crate::upgrade::info::version())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let name = cli.command.name();
    // Client commands end quietly when their reader goes (`| head -1`);
    // the daemon and its helpers keep SIGPIPE ignored and see EPIPE.
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Demo(_) | Command::Sim(_) | Command::UpgradeSide(_)
    ) {
        faultbridge_ffi::sys::process::default_sigpipe();
    }
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Sim(c) => sim::run(c),
        Command::Watch(a) => (a.bus.address())
            .map_err(Into::into)
            .and_then(|b| watch::run(a, &b)),
        Command::Notify(a) => (a.bus.address())
            .map_err(Into::into)
            .and_then(|b| notify::run(a, &b)),
        Command::Status(a) => (a.bus.address())
            .map_err(Into::into)
            .and_then(|b| status::run(a, &b)),
        // A Check script answers 1 (unknown) to anything it cannot judge.
        Command::Check(a) => match a.bus.address() {
            Ok(b) => Ok(check::run(a, &b)),
            Err(e) => {
                eprintln!("faultbridge check: {e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Reset(a) => (a.bus.address())
            .map_err(Into::into)
            .and_then(|b| reset::run(a, &b)),
        Command::History(a) => (a.bus.address())
            .map_err(Into::into)
            .and_then(|b| history::run(a, &b)),
        Command::Upgrade(a) => (a.bus.address())
            .map_err(Into::into)
            .and_then(|b| upgrade::run(a, &b)),
        Command::UpgradeInfo(a) => upgrade::info(a),
        Command::UpgradeSide(a) => upgrade::side(a),
        Command::Config(c) => config::run(c),
        Command::Fleet(c) => fleet::run(c),
        Command::Man { out, dir } => config::man(out, dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faultbridge {name}: {}", error_chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

pub use crate::error::error_chain;

/// The error type of subcommands.
pub type CliResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync + 'static>>;

/// A failed D-Bus call, readably: the peer's error name and message when
/// it replied with one, with a hint for the usual causes.
pub fn dbus_failure(bus: &BusAddress, e: &zbus::Error) -> String {
    match error_name(e).as_deref() {
        Some("org.freedesktop.DBus.Error.ServiceUnknown")
        | Some("org.freedesktop.DBus.Error.NameHasNoOwner") => {
            format!(
                "faultbridge is not running on the {bus} bus (no owner of org.faultbridge.Bridge1)"
            )
        }
        Some("org.freedesktop.DBus.Error.AccessDenied") => format!(
            "org.freedesktop.DBus.Error.AccessDenied: {} (Notify and Reset are for root and group faultbridge)",
            error_message(e).unwrap_or_default()
        ),
        Some(name) => match error_message(e) {
            Some(m) => format!("{name}: {m}"),
            None => name.to_string(),
        },
        None => format!("cannot reach the daemon on the {bus} bus: {e}"),
    }
}

//! `faultbridge upgrade check|split|merge|commit|abort|finish|retry|status`:
//! drives the live self-upgrade of the running daemon over
//! `org.faultbridge.Upgrade1` (root only, except `status`), and the two
//! hidden commands the upgrade runs on the new binary: `upgrade-info` (what
//! this build is and whether it accepts a configuration) and `upgrade-side`
//! (the Upgrade side's own run).

use super::status::status_json;
use super::{CliResult, dbus_failure};
use crate::config::{Config, DEFAULT_PATH};
use crate::upgrade::info::this_build;
use faultbridge_bus::dbus::BUS_NAME;
use faultbridge_bus::dbus::BusAddress;
use faultbridge_bus::dbus::client::connect;
use faultbridge_bus::dbus::upgrade1::client;
use serde_json::Value;
use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Verb {
    /// The readiness check of the new binary (Idle).
    Check,
    /// PrepareSplit then Split: the new binary starts beside the daemon.
    Split,
    /// PrepareMerge then Merge: the new binary acts.
    Merge,
    /// The old side ends (no abort after this).
    Commit,
    /// Back to the old side (from PrepareSplit, Split, PrepareMerge, Merge).
    Abort,
    /// After Commit or Abort: back to Idle.
    Finish,
    /// Run the failed step again.
    Retry,
    /// Both sides, their versions, the state, the step times, the activity.
    Status,
}

impl Verb {
    fn method(self) -> &'static str {
        match self {
            Verb::Check => "Check",
            Verb::Split => "Split",
            Verb::Merge => "Merge",
            Verb::Commit => "Commit",
            Verb::Abort => "Abort",
            Verb::Finish => "Finish",
            Verb::Retry => "Retry",
            Verb::Status => "Status",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub bus: super::BusArg,
    /// What to do.
    #[arg(value_enum)]
    pub verb: Verb,
    /// The new faultbridge binary (check, split; default: the path the
    /// running daemon was started from, where a package puts the new one).
    #[arg(long, value_name = "PATH")]
    pub new_binary: Option<PathBuf>,
    /// Print the final status as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Return once the request is accepted, without waiting for its steps.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the steps, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The configuration to judge (default: the built-in defaults).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One JSON object (what the readiness check reads).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SideArgs {
    /// The running daemon's configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print faults as the running daemon did (`run --print`), once acting.
    #[arg(long, value_enum, default_value_t = super::run::Print::None)]
    pub print: super::run::Print,
    /// The inherited descriptor to print on (the running daemon's output).
    #[arg(long, value_name = "FD", requires = "print")]
    pub print_fd: Option<i32>,
}

fn status(bus: &BusAddress) -> zbus::Result<Value> {
    zbus::block_on(async {
        let conn = connect(bus, Some(Duration::from_secs(5))).await?;
        client::status(&conn, BUS_NAME).await
    })
    .map(|s| status_json(&s))
}

fn str_of<'a>(j: &'a Value, k: &str) -> &'a str {
    j.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The readable form of `Upgrade1.Status`.
pub fn status_text(j: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "upgrade state {} ({}); this side {} {} (pid {})",
        str_of(j, "state"),
        str_of(j, "operational"),
        str_of(j, "side"),
        str_of(j, "version"),
        j.get("pid").and_then(Value::as_u64).unwrap_or(0)
    );
    if !str_of(j, "failed_step").is_empty() {
        let _ = writeln!(
            out,
            "failed step: {} (retry or abort)",
            str_of(j, "failed_step")
        );
    }
    if !str_of(j, "new_binary").is_empty() {
        let _ = writeln!(
            out,
            "new binary: {} {}",
            str_of(j, "new_binary"),
            str_of(j, "new_version")
        );
    }
    if let Some(p) = j.get("peer").filter(|p| p.is_object()) {
        let _ = writeln!(
            out,
            "other side: {} {} (pid {}), {}",
            str_of(p, "side"),
            str_of(p, "version"),
            p.get("pid").and_then(Value::as_u64).unwrap_or(0),
            if p.get("acting").and_then(Value::as_bool) == Some(true) {
                "acting"
            } else {
                "receiving, not acting"
            }
        );
        if let Some(seqs) = p.get("sequences").and_then(Value::as_object) {
            for (src, n) in seqs {
                let _ = writeln!(out, "  {src:<16} last sequence {n}");
            }
        }
    }
    if let Some(times) = j.get("step_times_ns").and_then(Value::as_object)
        && !times.is_empty()
    {
        let _ = write!(out, "step times:");
        for (s, ns) in times {
            let _ = write!(out, " {s} {:.1} ms", ns.as_u64().unwrap_or(0) as f64 / 1e6);
        }
        let _ = writeln!(out);
    }
    if let Some(gap) = j
        .get("acting_gap_ns")
        .and_then(Value::as_u64)
        .filter(|&g| g > 0)
    {
        let _ = writeln!(
            out,
            "acting paused {:.3} ms when it last moved to this side",
            gap as f64 / 1e6
        );
    }
    if let Some(a) = j.get("activity").and_then(Value::as_array)
        && !a.is_empty()
    {
        let _ = writeln!(out, "activity (newest last):");
        for e in a {
            let _ = writeln!(out, "  {}", e.as_str().unwrap_or(""));
        }
    }
    out
}

fn show(j: &Value, json: bool) {
    if json {
        println!("{j}");
    } else {
        print!("{}", status_text(j));
    }
}

pub fn run(args: UpgradeArgs, bus: &BusAddress) -> CliResult {
    if args.verb == Verb::Status {
        return match status(bus) {
            Ok(j) => {
                show(&j, args.json);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("faultbridge upgrade status: {}", dbus_failure(bus, &e));
                Ok(ExitCode::from(1))
            }
        };
    }
    let binary = args
        .new_binary
        .as_ref()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    let binary = binary.as_ref().map(|p| p.to_string_lossy().into_owned());
    let takes_binary = matches!(args.verb, Verb::Check | Verb::Split);
    if binary.is_some() && !takes_binary {
        eprintln!("faultbridge upgrade: --new-binary is for check and split");
        return Ok(ExitCode::from(2));
    }
    let r = zbus::block_on(async {
        let conn = connect(bus, Some(Duration::from_secs(30))).await?;
        client::request(
            &conn,
            BUS_NAME,
            args.verb.method(),
            takes_binary.then(|| binary.as_deref().unwrap_or("")),
        )
        .await
    });
    if let Err(e) = r {
        eprintln!(
            "faultbridge upgrade {}: {}",
            args.verb.method().to_lowercase(),
            dbus_failure(bus, &e)
        );
        return Ok(ExitCode::from(1));
    }
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    // The steps run in the daemon: wait until it is no longer Busy.
    let deadline = Instant::now() + Duration::from_secs(args.wait_timeout);
    let settle_deadline = Instant::now() + Duration::from_secs(args.wait_timeout.min(10));
    loop {
        let j = match status(bus) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("faultbridge upgrade: {}", dbus_failure(bus, &e));
                return Ok(ExitCode::from(1));
            }
        };
        // An abort from Merge ends with acting (and the bus name) back on
        // the Production side: until the name has moved, the Upgrade side
        // still answers; wait for the side that acts.
        let handing_back = args.verb == Verb::Abort
            && str_of(&j, "side") == "Upgrade"
            && str_of(&j, "state") == "Abort"
            && str_of(&j, "operational") == "Ready";
        if handing_back && Instant::now() < settle_deadline {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match str_of(&j, "operational") {
            "Busy" if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            "Busy" => {
                show(&j, args.json);
                eprintln!(
                    "faultbridge upgrade: still Busy after {} s",
                    args.wait_timeout
                );
                return Ok(ExitCode::from(1));
            }
            op => {
                show(&j, args.json);
                return Ok(if op == "Broken" {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                });
            }
        }
    }
}

/// `upgrade-info`: what this build is, and whether it accepts `--config`.
pub fn info(args: InfoArgs) -> CliResult {
    let i = this_build(args.config.as_deref());
    if args.json {
        println!("{}", serde_json::to_string(&i)?);
    } else {
        println!(
            "faultbridge {}: hand-over state version {}, history schema {}..={}, configuration {}",
            i.version,
            i.handover_version,
            i.history_schema_min,
            i.history_schema_max,
            match &i.config_error {
                None => "accepted".to_string(),
                Some(e) => format!("refused: {e}"),
            }
        );
    }
    // In JSON the answer is the object, whatever it says.
    Ok(if i.config_accepted || args.json {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `upgrade-side`: the Upgrade side's run (started by the running daemon).
pub fn side(args: SideArgs) -> CliResult {
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::parse("", std::path::Path::new(DEFAULT_PATH))?,
    };
    let printer = match (args.print, args.print_fd) {
        (super::run::Print::None, _) => None,
        (mode, Some(fd)) => Some((
            mode,
            faultbridge_ffi::sys::process::take_inherited_fd(fd)
                .ok_or_else(|| format!("--print-fd {fd}: not an open descriptor"))?,
        )),
        (mode, None) => Some((mode, std::io::stdout().as_fd().try_clone_to_owned()?)),
    };
    crate::upgrade::side::run(&config, args.config.as_deref(), printer)?;
    Ok(ExitCode::SUCCESS)
}

//! `faultbridge check MONITOR`: a cluster Check script (PRIMECLUSTER
//! Cmdline resource, Pacemaker monitor with `--ocf`). One connection, one
//! `GetAll` of the monitor's properties, a tight deadline on the whole exchange.
//!
//! | state | exit | with `--ocf` |
//! |---|---|---|
//! | Normal | 0 (Online) | 0 (`OCF_SUCCESS`) |
//! | Error | 2 (Faulted) | 7 (`OCF_NOT_RUNNING`) |
//! | unknown monitor, daemon unreachable, no answer in time | 1 (Offline) | 1 (`OCF_ERR_GENERIC`) |
//! | Normal, but a source that reports its category is down (`Degraded`) | 1 (Offline) | 1 (`OCF_ERR_GENERIC`) |
//!
//! A monitor in Error stays Error while a source is down: the fault was seen.

use super::reset::monitor_failure;
use faultbridge_bus::dbus::client::connect;
use faultbridge_bus::dbus::{
    BUS_NAME, BusAddress, MONITOR_INTERFACE, PROPERTIES_INTERFACE, monitor_path,
};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub bus: super::BusArg,
    /// The monitor's name, as configured.
    pub monitor: String,
    /// Exit with OCF codes: 0 Normal, 7 Error, 1 unknown or unreachable.
    #[arg(long)]
    pub ocf: bool,
    /// Give up (exit 1) when there is no answer within this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub timeout: u64,
}

/// The monitor's `State` and `Degraded` properties (one `GetAll`), or why
/// they could not be read.
async fn state(bus: &BusAddress, path: &str, timeout: Duration) -> zbus::Result<(String, String)> {
    let conn = connect(bus, Some(timeout)).await?;
    let reply = conn
        .call_method(
            Some(BUS_NAME),
            path,
            Some(PROPERTIES_INTERFACE),
            "GetAll",
            &(MONITOR_INTERFACE,),
        )
        .await?;
    let mut all: std::collections::HashMap<String, zbus::OwnedVariant> =
        reply.body().deserialize()?;
    let state = all
        .remove("State")
        .ok_or_else(|| zbus::Error::Failure("the monitor has no State property".into()))
        .and_then(String::try_from)?;
    // A daemon without the property: nothing known to be down.
    let degraded = all
        .remove("Degraded")
        .and_then(|v| String::try_from(v).ok())
        .unwrap_or_default();
    Ok((state, degraded))
}

pub fn run(args: CheckArgs, bus: &BusAddress) -> ExitCode {
    let (normal, error, unknown) = if args.ocf { (0, 7, 1) } else { (0, 2, 1) };
    let timeout = Duration::from_millis(args.timeout.max(1));
    let path = monitor_path(&args.monitor);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let target = bus.clone();
    // The exchange runs on a thread of its own so the deadline holds
    // whichever step hangs (connect, authentication, the call).
    let spawned = std::thread::Builder::new()
        .name("check".into())
        .spawn(move || {
            let _ = tx.send(zbus::block_on(state(&target, &path, timeout)));
        });
    if let Err(e) = spawned {
        eprintln!("faultbridge check: cannot start: {e}");
        return ExitCode::from(unknown);
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok((s, why))) if s == "Normal" && !why.is_empty() => {
            println!("{}: unknown ({why})", args.monitor);
            ExitCode::from(unknown)
        }
        Ok(Ok((s, _))) if s == "Normal" => {
            println!("{}: Normal", args.monitor);
            ExitCode::from(normal)
        }
        Ok(Ok((s, _))) if s == "Error" => {
            println!("{}: Error", args.monitor);
            ExitCode::from(error)
        }
        Ok(Ok((s, _))) => {
            eprintln!("faultbridge check: {}: unknown state {s:?}", args.monitor);
            ExitCode::from(unknown)
        }
        Ok(Err(e)) => {
            eprintln!(
                "faultbridge check: {}",
                monitor_failure(bus, &args.monitor, &e)
            );
            ExitCode::from(unknown)
        }
        Err(_) => {
            eprintln!(
                "faultbridge check: no answer from the daemon on the {bus} bus within {} ms",
                timeout.as_millis()
            );
            ExitCode::from(unknown)
        }
    }
}

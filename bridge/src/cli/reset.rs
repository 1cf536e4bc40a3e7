//! `faultbridge reset MONITOR`: clear a monitor's Error state over D-Bus.

use super::{CliResult, dbus_failure};
use faultbridge_bus::dbus::client::{connect, error_name};
use faultbridge_bus::dbus::{BUS_NAME, BusAddress, MONITOR_INTERFACE, monitor_path};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub bus: super::BusArg,
    /// The monitor's name, as configured.
    pub monitor: String,
}

/// The message for a call on a monitor object that failed.
pub fn monitor_failure(bus: &BusAddress, monitor: &str, e: &zbus::Error) -> String {
    match error_name(e).as_deref() {
        Some("org.freedesktop.DBus.Error.UnknownObject")
        | Some("org.freedesktop.DBus.Error.UnknownInterface")
        | Some("org.freedesktop.DBus.Error.UnknownMethod") => {
            format!("no monitor named {monitor:?}")
        }
        _ => dbus_failure(bus, e),
    }
}

pub fn run(args: ResetArgs, bus: &BusAddress) -> CliResult {
    let path = monitor_path(&args.monitor);
    let r: zbus::Result<()> = zbus::block_on(async {
        let conn = connect(bus, Some(Duration::from_secs(5))).await?;
        conn.call_method(
            Some(BUS_NAME),
            path.as_str(),
            Some(MONITOR_INTERFACE),
            "Reset",
            &(),
        )
        .await
        .map(|_| ())
    });
    match r {
        Ok(()) => {
            println!("{}: reset", args.monitor);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "faultbridge reset: {}",
                monitor_failure(bus, &args.monitor, &e)
            );
            Ok(ExitCode::from(1))
        }
    }
}

//! `faultbridge notify`: report a fault from user space over D-Bus, in the
//! style of `clprexec --notice -k CATEGORY.KEYWORD`.

use super::{CliResult, dbus_failure};
use faultbridge_bus::dbus::client::connect;
use faultbridge_bus::dbus::{BUS_NAME, BusAddress, INTERFACE, OBJECT_PATH};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub bus: super::BusArg,
    /// CATEGORY[.KEYWORD]: NIC, FC, HA/SS, HA/AM, HA/RS or SPS, then the
    /// device after the first dot (e.g. NIC.eth0); no keyword: no device.
    #[arg(short = 'k', long = "key", value_name = "CATEGORY[.KEYWORD]")]
    pub key: String,
    /// info | warning | error | fatal
    #[arg(long, default_value = "error")]
    pub severity: String,
    /// Detail text carried with the fault.
    #[arg(long, default_value = "")]
    pub detail: String,
}

pub fn run(args: NotifyArgs, bus: &BusAddress) -> CliResult {
    // The daemon judges the category and keyword: its errors name the rule.
    let (category, keyword) = args.key.split_once('.').unwrap_or((&args.key, ""));
    let r: zbus::Result<u64> = zbus::block_on(async {
        let conn = connect(bus, Some(Duration::from_secs(5))).await?;
        let reply = conn
            .call_method(
                Some(BUS_NAME),
                OBJECT_PATH,
                Some(INTERFACE),
                "Notify",
                &(
                    category,
                    keyword,
                    args.severity.as_str(),
                    args.detail.as_str(),
                ),
            )
            .await?;
        reply.body().deserialize::<u64>()
    });
    match r {
        Ok(seq) => {
            println!("reported {} as sequence {seq} of source notify", args.key);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("faultbridge notify: {}", dbus_failure(bus, &e));
            Ok(ExitCode::from(1))
        }
    }
}

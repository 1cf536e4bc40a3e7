//! `faultbridge watch`: a live stream of faults over D-Bus (like
//! `busctl monitor`, for the `Fault` and `Lost` signals only), one line per
//! signal, flushed as it comes.

use super::format::hex;
use super::{CliResult, dbus_failure};
use faultbridge_bus::dbus::client::{self, next_message};
use faultbridge_bus::dbus::{BusAddress, BusSignal, FaultSignal, LostSignal};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// One JSON object per line: {"type":"fault", …} with the Fault
    /// signal's argument names as keys, or {"type":"lost", …}.
    #[arg(long)]
    pub json: bool,
    /// Only faults of this category (NIC, FC, HA/SS, HA/AM, HA/RS, SPS);
    /// the bus filters.
    #[arg(long, value_name = "C")]
    pub category: Option<String>,
    /// Only faults of this device keyword; the bus filters.
    #[arg(long, value_name = "K")]
    pub keyword: Option<String>,
}

/// Signals queued in the client before the bus has to hold them.
const QUEUE: usize = 1 << 16;

/// `{"type":"fault", …}` with the `Fault` signal's argument names.
pub fn fault_json(f: &FaultSignal) -> serde_json::Value {
    serde_json::json!({
        "type": "fault",
        "source": f.source,
        "category": f.category,
        "keyword": f.keyword,
        "severity": f.severity,
        "cleared": f.cleared,
        "event_code": f.event_code,
        "sequence": f.sequence,
        "timestamp_ns": f.timestamp_ns,
        "detail": hex(&f.detail),
    })
}

/// `{"type":"lost","source":…,"first_sequence":…,"last_sequence":…}`.
pub fn lost_json(l: &LostSignal) -> serde_json::Value {
    serde_json::json!({
        "type": "lost",
        "source": l.source,
        "first_sequence": l.first_sequence,
        "last_sequence": l.last_sequence,
    })
}

/// A readable line.
pub fn fault_line(f: &FaultSignal) -> String {
    let what = if f.cleared { "CLEAR" } else { "FAULT" };
    let kw = if f.keyword.is_empty() {
        "*"
    } else {
        f.keyword.as_str()
    };
    let mut s = format!(
        "{what:<5} #{:<8} {:<6} {:<12} {:<7} event {:#010x}  source {}",
        f.sequence, f.category, kw, f.severity, f.event_code, f.source
    );
    if !f.detail.is_empty() {
        s.push_str("  detail ");
        s.push_str(&super::format::detail_text(&f.detail));
    }
    s
}

/// A readable loss line.
pub fn lost_line(l: &LostSignal) -> String {
    format!(
        "LOST  {}..={} of {} did not reach D-Bus subscribers",
        l.first_sequence, l.last_sequence, l.source
    )
}

/// The line for `sig`, or `None` when the filters leave it out.
pub fn line(sig: &BusSignal, args: &WatchArgs) -> Option<String> {
    match sig {
        BusSignal::Fault(f) => {
            if args.category.as_ref().is_some_and(|c| *c != f.category)
                || args.keyword.as_ref().is_some_and(|k| *k != f.keyword)
            {
                return None;
            }
            Some(if args.json {
                fault_json(f).to_string()
            } else {
                fault_line(f)
            })
        }
        BusSignal::Lost(l) => Some(if args.json {
            lost_json(l).to_string()
        } else {
            lost_line(l)
        }),
    }
}

pub fn run(args: WatchArgs, bus: &BusAddress) -> CliResult {
    zbus::block_on(async {
        let (_conn, mut stream) = client::subscribe(
            bus,
            args.category.as_deref(),
            args.keyword.as_deref(),
            QUEUE,
        )
        .await
        .map_err(|e| dbus_failure(bus, &e))?;
        eprintln!("faultbridge watch: listening on the {bus} bus");
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        while let Some(m) = next_message(&mut stream).await {
            let m = m.map_err(|e| dbus_failure(bus, &e))?;
            let Some(text) = BusSignal::parse(&m).and_then(|s| line(&s, &args)) else {
                continue;
            };
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                // The reader went away (a closed pipe): nothing left to do.
                return Ok(ExitCode::SUCCESS);
            }
        }
        eprintln!("faultbridge watch: the connection to the {bus} bus closed");
        Ok(ExitCode::from(1))
    })
}

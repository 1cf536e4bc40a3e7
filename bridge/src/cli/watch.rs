//! `faultbridge watch`: a live stream of faults over D-Bus (like
//! `busctl monitor`, for the `Fault` and `Lost` signals only), one line per
//! signal, flushed as it comes. Only signals sent by the daemon that owns
//! `org.faultbridge.Bridge1` count; when no daemon owns it, and when one
//! appears or leaves, a note goes to stderr. Text lines escape control
//! characters, so a keyword cannot forge a line or drive the terminal.

use super::format::{hex, printable};
use super::{CliResult, dbus_failure};
use faultbridge_bus::dbus::client::{self, next_message};
use faultbridge_bus::dbus::{
    BUS_NAME, BusAddress, BusSignal, FaultSignal, LostSignal, Owner, OwnerChange,
};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub bus: super::BusArg,
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
        f.sequence,
        printable(&f.category),
        printable(kw),
        printable(&f.severity),
        f.event_code,
        printable(&f.source)
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
        l.first_sequence,
        l.last_sequence,
        printable(&l.source)
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
        let (conn, mut stream) = client::subscribe(
            bus,
            args.category.as_deref(),
            args.keyword.as_deref(),
            QUEUE,
        )
        .await
        .map_err(|e| dbus_failure(bus, &e))?;
        let mut owner = Owner::query(&conn)
            .await
            .map_err(|e| dbus_failure(bus, &e))?;
        eprintln!("faultbridge watch: listening on the {bus} bus");
        if owner.unique_name().is_none() {
            eprintln!(
                "faultbridge watch: no daemon owns {BUS_NAME} on the {bus} bus (is faultbridge running?); waiting for one"
            );
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut foreign = 0u64;
        while let Some(m) = next_message(&mut stream).await {
            let m = m.map_err(|e| dbus_failure(bus, &e))?;
            match owner.update(&m) {
                Some(OwnerChange::Appeared(u)) => {
                    eprintln!("faultbridge watch: a daemon owns {BUS_NAME} now ({u})");
                    continue;
                }
                Some(OwnerChange::Vanished) => {
                    eprintln!(
                        "faultbridge watch: no daemon owns {BUS_NAME} any more; waiting for one"
                    );
                    continue;
                }
                None => {}
            }
            let Some(sig) = BusSignal::parse(&m) else {
                continue;
            };
            if !owner.sent(&m) {
                // Any client may send a signal that looks like the daemon's.
                foreign += 1;
                if foreign == 1 || foreign.is_power_of_two() {
                    eprintln!(
                        "faultbridge watch: ignored {foreign} signal(s) not sent by the owner of {BUS_NAME} (the last from {})",
                        m.header().sender().map_or("?", |s| s.as_str())
                    );
                }
                continue;
            }
            let Some(text) = line(&sig, &args) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_escape_control_characters() {
        let f = FaultSignal {
            source: "expdrv".into(),
            category: "NIC".into(),
            keyword: "eth0\nFAULT #1 NIC eth9\x1b[31m".into(),
            severity: "error".into(),
            cleared: false,
            event_code: 1,
            sequence: 7,
            timestamp_ns: 0,
            detail: vec![],
        };
        let l = fault_line(&f);
        assert!(!l.chars().any(char::is_control), "{l:?}");
        assert!(l.contains("eth0\\nFAULT #1 NIC eth9\\u{1b}[31m"), "{l}");
    }
}

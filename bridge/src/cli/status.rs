//! `faultbridge status`: the running daemon's monitors, states and
//! counters, read over D-Bus (`Status`).

use super::format::printable;
use super::{CliResult, dbus_failure};
use faultbridge_bus::dbus::client::connect;
use faultbridge_bus::dbus::{BUS_NAME, BusAddress, INTERFACE, OBJECT_PATH};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;
use zbus::{OwnedVariant, Variant};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub bus: super::BusArg,
    /// The `Status` dictionary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A D-Bus value as JSON: dictionaries become objects (keys as text),
/// arrays and structures arrays, byte arrays lowercase hex.
pub fn to_json(v: &Variant<'_>) -> Value {
    match v {
        Variant::U8(n) => Value::from(*n),
        Variant::Bool(b) => Value::from(*b),
        Variant::I16(n) => Value::from(*n),
        Variant::U16(n) => Value::from(*n),
        Variant::I32(n) => Value::from(*n),
        Variant::U32(n) => Value::from(*n),
        Variant::I64(n) => Value::from(*n),
        Variant::U64(n) => Value::from(*n),
        Variant::F64(n) => Value::from(*n),
        Variant::Str(s) => Value::from(s.as_str()),
        Variant::Signature(s) => Value::from(s.to_string()),
        Variant::ObjectPath(p) => Value::from(p.as_str()),
        Variant::Variant(inner) => to_json(inner),
        Variant::Array(a) => {
            let items = a.inner();
            if items.iter().all(|i| matches!(i, Variant::U8(_))) && !items.is_empty() {
                let bytes: Vec<u8> = items
                    .iter()
                    .filter_map(|i| match i {
                        Variant::U8(b) => Some(*b),
                        _ => None,
                    })
                    .collect();
                Value::from(super::format::hex(&bytes))
            } else {
                Value::Array(items.iter().map(to_json).collect())
            }
        }
        Variant::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d.iter() {
                let key = match to_json(k) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, to_json(v));
            }
            Value::Object(m)
        }
        Variant::Structure(s) => Value::Array(s.fields().iter().map(to_json).collect()),
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    }
}

/// The `Status` reply as JSON, keys sorted.
pub fn status_json(status: &HashMap<String, OwnedVariant>) -> Value {
    let mut keys: Vec<&String> = status.keys().collect();
    keys.sort();
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), to_json(&status[k]));
    }
    Value::Object(m)
}

fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The readable form.
pub fn status_text(j: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "faultbridge {} (pid {}), up {:.1} s",
        s(j, "version"),
        n(j, "pid"),
        n(j, "uptime_ns") as f64 / 1e9
    );
    let empty = Map::new();
    let monitors = j
        .get("monitors")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if monitors.is_empty() {
        let _ = writeln!(out, "monitors: none configured");
    } else {
        let _ = writeln!(out, "monitors:");
        let mut names: Vec<&String> = monitors.keys().collect();
        names.sort();
        for name in names {
            let m = &monitors[name];
            let kw = match s(m, "Keyword") {
                "" => "*",
                k => k,
            };
            let _ = writeln!(
                out,
                "  {name:<16} {:<6} {kw:<12} {:<6}  errors {}  last sequence {}{}",
                s(m, "Category"),
                s(m, "State"),
                n(m, "ErrorCount"),
                n(m, "LastSequence"),
                match s(m, "Degraded") {
                    "" => String::new(),
                    why => format!("  (unknown: {why})"),
                }
            );
        }
    }
    let sources = j
        .get("sources")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let states = j
        .get("source_states")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if s(j, "health") == "degraded" {
        let _ = writeln!(
            out,
            "health: DEGRADED: a configured source is down; monitors it feeds are unknown"
        );
    } else if !states.is_empty() {
        let _ = writeln!(out, "health: ok, every configured source running");
    }
    let mut names: Vec<&String> = sources.keys().chain(states.keys()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        let _ = writeln!(out, "sources: none running, no records received");
    } else {
        let _ = writeln!(out, "sources:");
        for name in names {
            let state = match states.get(name.as_str()).and_then(Value::as_str) {
                Some(st) if st.starts_with("down") => {
                    format!("DOWN ({})", st.strip_prefix("down: ").unwrap_or(st))
                }
                Some(st) => st.to_string(),
                None => "-".to_string(),
            };
            let _ = write!(out, "  {name:<14} {state}");
            if let Some(c) = sources.get(name.as_str()) {
                let _ = write!(
                    out,
                    "  received {}  delivered {}  malformed {}  lost {}  (datagrams {}, overruns {}, gaps {})",
                    n(c, "received"),
                    n(c, "delivered"),
                    n(c, "malformed"),
                    n(c, "lost"),
                    n(c, "datagrams"),
                    n(c, "overruns"),
                    n(c, "gaps")
                );
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out, "subscriber queue drops {}", n(j, "subscriber_drops"));
    let d = j.get("dbus").cloned().unwrap_or(Value::Null);
    let _ = write!(
        out,
        "D-Bus: {} Fault and {} Lost signals sent, {} faults dropped (queue {}, pace {}, backlog {}), {} property changes; requests: {} Notify, {} Reset, {} rejected",
        n(&d, "fault_signals"),
        n(&d, "lost_signals"),
        n(&d, "dropped"),
        n(&d, "queue_drops"),
        n(&d, "rate_drops"),
        n(&d, "backlog_drops"),
        n(&d, "property_signals"),
        n(&d, "notify_calls"),
        n(&d, "reset_calls"),
        n(j, "rejected_requests"),
    );
    if let Some(a) = j.get("actions") {
        let _ = write!(
            out,
            "\nactions: {} started, {} succeeded, {} failed, {} timed out, {} coalesced, {} not performed, {} refused",
            n(a, "started"),
            n(a, "succeeded"),
            n(a, "failed"),
            n(a, "timed_out"),
            n(a, "coalesced"),
            n(a, "not_performed"),
            n(a, "refused")
        );
    }
    if let Some(f) = j.get("forward") {
        let server = match s(f, "server") {
            "" => "not connected".to_string(),
            x => format!("connected to {}", printable(x)),
        };
        let _ = write!(
            out,
            "\nforward to stream {} as {}: {server}; cursor row {}, backlog {}, {} forwarded, {} duplicates, last ack #{} at {} ms; {} errors",
            printable(s(f, "stream")),
            printable(s(f, "host")),
            n(f, "cursor"),
            n(f, "backlog"),
            n(f, "forwarded"),
            n(f, "duplicates"),
            n(f, "last_ack_sequence"),
            n(f, "last_ack_ms"),
            n(f, "errors"),
        );
        if !s(f, "last_error").is_empty() {
            let _ = write!(out, " (last: {})", printable(s(f, "last_error")));
        }
        if n(f, "removed_unforwarded") > 0 {
            let _ = write!(
                out,
                "; {} rows removed by retention before they were forwarded",
                n(f, "removed_unforwarded")
            );
        }
    }
    // (time_ms, severity, monitor, kind, message, exit_code)
    if let Some(entries) = j
        .get("activity")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        let _ = write!(out, "\nactivity (newest last):");
        for e in entries {
            let f = |i: usize| e.get(i).and_then(Value::as_str).unwrap_or("");
            let _ = write!(out, "\n  {:<11} {:<16} {:<14} {}", f(1), f(2), f(3), f(4));
        }
    }
    out
}

pub fn run(args: StatusArgs, bus: &BusAddress) -> CliResult {
    let r: zbus::Result<HashMap<String, OwnedVariant>> = zbus::block_on(async {
        let conn = connect(bus, Some(Duration::from_secs(5))).await?;
        let reply = conn
            .call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), "Status", &())
            .await?;
        reply.body().deserialize()
    });
    match r {
        Ok(status) => {
            let j = status_json(&status);
            if args.json {
                println!("{j}");
            } else {
                println!("{}", status_text(&j));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("faultbridge status: {}", dbus_failure(bus, &e));
            Ok(ExitCode::from(1))
        }
    }
}

//! `faultbridge fleet watch` and `faultbridge fleet status`: the faults of
//! every forwarding host, read from the JetStream stream the way any user
//! of the fleet would (an ordered consumer of its own, nothing left on the
//! server afterwards). Text lines escape control characters, so a keyword
//! forwarded by one host cannot forge a line or drive the terminal.

use super::CliResult;
use super::format::printable;
use super::watch::{fault_line, lost_line};
use crate::config::forward::{DEFAULT_SERVER, DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX};
use crate::forward::message::token;
use async_nats::jetstream::{self, consumer};
use faultbridge_bus::dbus::client::{FaultSignal, LostSignal};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Live faults of every host from the stream (`--since` replays).
    Watch(WatchArgs),
    /// Per host: last fault, counts by category, last seen.
    Status(StatusArgs),
}

/// Where the stream is.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// A NATS server (several: repeat, or separate with commas).
    #[arg(long, value_name = "URL", default_value = DEFAULT_SERVER, value_delimiter = ',')]
    pub nats: Vec<String>,
    /// The stream the hosts forward to.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STREAM)]
    pub stream: String,
    /// The subject prefix the hosts forward under.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_SUBJECT_PREFIX)]
    pub subject_prefix: String,
    /// A NATS credentials file.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// CA certificates of the servers (TLS required then).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Only faults of this host.
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Only faults of this category (NIC, FC, HA/SS, HA/AM, HA/RS, SPS);
    /// the server filters, and loss notices are left out.
    #[arg(long, value_name = "C")]
    pub category: Option<String>,
    /// First replay what reached the stream since a DURATION ago (`10m`,
    /// `2h`) or a TIME (`"2026-11-23 10:00:00"`, UTC), then go on live.
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// One JSON object per line: the message's body (the `watch --json`
    /// object with `"host"`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// One JSON object: stream and per-host figures.
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: FleetCommand) -> CliResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match c {
        FleetCommand::Watch(a) => rt.block_on(watch(a)),
        FleetCommand::Status(a) => rt.block_on(status(a)),
    }
}

async fn connect(
    n: &NatsArgs,
) -> Result<async_nats::Client, Box<dyn std::error::Error + Send + Sync>> {
    let mut o = async_nats::ConnectOptions::new()
        .name("faultbridge fleet")
        .connection_timeout(Duration::from_secs(5));
    if let Some(p) = &n.credentials {
        o = o
            .credentials_file(p)
            .await
            .map_err(|e| format!("--credentials {}: {e}", p.display()))?;
    }
    if let Some(ca) = &n.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    o.connect(n.nats.as_slice())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", n.nats.join(", ")).into())
}

/// An ordered consumer of `stream` from `deliver`, filtered by `filter`.
async fn consume(
    client: &async_nats::Client,
    n: &NatsArgs,
    filter: String,
    deliver: consumer::DeliverPolicy,
) -> Result<consumer::push::Ordered, Box<dyn std::error::Error + Send + Sync>> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream(&n.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", n.stream))?;
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter,
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {}: cannot read it: {e}", n.stream))?;
    Ok(consumer.messages().await?)
}

fn fault_of(b: &Value) -> FaultSignal {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |k: &str| b.get(k).and_then(Value::as_u64).unwrap_or(0);
    FaultSignal {
        source: s("source"),
        category: s("category"),
        keyword: s("keyword"),
        severity: s("severity"),
        cleared: b.get("cleared").and_then(Value::as_bool).unwrap_or(false),
        event_code: n("event_code") as u32,
        sequence: n("sequence"),
        timestamp_ns: n("timestamp_ns"),
        detail: super::format::unhex(&s("detail")).unwrap_or_default(),
    }
}

fn lost_of(b: &Value) -> LostSignal {
    let n = |k: &str| b.get(k).and_then(Value::as_u64).unwrap_or(0);
    LostSignal {
        source: b
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        first_sequence: n("first_sequence"),
        last_sequence: n("last_sequence"),
    }
}

fn host_of(b: &Value) -> &str {
    b.get("host").and_then(Value::as_str).unwrap_or("")
}

/// The readable line of one message body.
pub fn line(b: &Value) -> String {
    let host = printable(host_of(b));
    match b.get("type").and_then(Value::as_str) {
        Some("lost") => format!("{host:<12} {}", lost_line(&lost_of(b))),
        _ => format!("{host:<12} {}", fault_line(&fault_of(b))),
    }
}

async fn watch(a: WatchArgs) -> CliResult {
    let client = connect(&a.nats).await?;
    let prefix = &a.nats.subject_prefix;
    // The server filters by category (and host with it); a host alone is
    // filtered here, so its loss notices come too.
    let filter = match &a.category {
        Some(c) => format!(
            "{prefix}.fault.{}.{}.>",
            a.host.as_deref().map_or("*".into(), token),
            token(c)
        ),
        None => format!("{prefix}.>"),
    };
    let deliver = match &a.since {
        None => consumer::DeliverPolicy::New,
        Some(s) => {
            let ms = super::history::since_ms(s)?;
            let start_time =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .map_err(|e| format!("--since {s:?}: {e}"))?;
            consumer::DeliverPolicy::ByStartTime { start_time }
        }
    };
    let mut messages = consume(&client, &a.nats, filter, deliver).await?;
    let stdout = std::io::stdout();
    let mut bad = 0u64;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| format!("reading the stream: {e}"))?;
        let Ok(b) = serde_json::from_slice::<Value>(&m.payload) else {
            bad += 1;
            eprintln!(
                "faultbridge fleet watch: message on {} is not a JSON object: skipped ({bad} so far)",
                printable(m.subject.as_str())
            );
            continue;
        };
        if a.host.as_ref().is_some_and(|h| h != host_of(&b)) {
            continue;
        }
        let text = if a.json { b.to_string() } else { line(&b) };
        let mut out = stdout.lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `fleet status` waits for the next message before it takes
/// the stream as read.
const IDLE: Duration = Duration::from_secs(5);

/// What `fleet status` says of one host.
#[derive(Debug, Default, serde::Serialize)]
struct HostFigures {
    faults: u64,
    clears: u64,
    lost: u64,
    by_category: BTreeMap<String, u64>,
    last_fault: Option<Value>,
    /// When its last message reached the stream (ms since the epoch).
    last_seen_ms: i64,
}

async fn status(a: StatusArgs) -> CliResult {
    let client = connect(&a.nats).await?;
    let js = jetstream::new(client.clone());
    let mut stream = js
        .get_stream(&a.nats.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", a.nats.stream))?;
    let info = stream.info().await?.clone();
    let last = info.state.last_sequence;
    let mut hosts: BTreeMap<String, HostFigures> = BTreeMap::new();
    let mut read = 0u64;
    if info.state.messages > 0 {
        let mut messages = consume(
            &client,
            &a.nats,
            format!("{}.>", a.nats.subject_prefix),
            consumer::DeliverPolicy::All,
        )
        .await?;
        // A stream with messages, none of them ours: nothing comes.
        while let Ok(Some(m)) = tokio::time::timeout(IDLE, messages.next()).await {
            let m = m.map_err(|e| format!("reading the stream: {e}"))?;
            // Done at the stream's last message when status started, or
            // when nothing of the prefix is left (the stream may hold other
            // subjects after ours).
            let (seq, pending, published_ms) = match m.info() {
                Ok(i) => (
                    i.stream_sequence,
                    i.pending,
                    (i.published.unix_timestamp_nanos() / 1_000_000) as i64,
                ),
                Err(_) => (0, 1, 0),
            };
            read += 1;
            if let Ok(b) = serde_json::from_slice::<Value>(&m.payload) {
                let h = hosts.entry(host_of(&b).to_string()).or_default();
                h.last_seen_ms = h.last_seen_ms.max(published_ms);
                match b.get("type").and_then(Value::as_str) {
                    Some("lost") => h.lost += 1,
                    _ => {
                        if b.get("cleared").and_then(Value::as_bool) == Some(true) {
                            h.clears += 1;
                        } else {
                            h.faults += 1;
                            h.last_fault = Some(b.clone());
                        }
                        let cat = b.get("category").and_then(Value::as_str).unwrap_or("");
                        *h.by_category.entry(cat.to_string()).or_default() += 1;
                    }
                }
            }
            if seq >= last || pending == 0 {
                break;
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if a.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({
                "stream": a.nats.stream,
                "messages": info.state.messages,
                "first_sequence": info.state.first_sequence,
                "last_sequence": last,
                "read": read,
                "hosts": hosts,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let _ = writeln!(
        out,
        "stream {}: {} messages (sequences {}..={}), {} host(s)",
        printable(&a.nats.stream),
        info.state.messages,
        info.state.first_sequence,
        last,
        hosts.len()
    );
    for (host, h) in &hosts {
        let cats: Vec<String> = h
            .by_category
            .iter()
            .map(|(c, n)| format!("{} {n}", printable(c)))
            .collect();
        let _ = writeln!(
            out,
            "{:<16} last seen {}  faults {}  clears {}  lost {}  by category: {}",
            printable(host),
            super::history::time_text(h.last_seen_ms),
            h.faults,
            h.clears,
            h.lost,
            if cats.is_empty() {
                "-".into()
            } else {
                cats.join(", ")
            }
        );
        if let Some(f) = &h.last_fault {
            let _ = writeln!(out, "{:<16} last fault: {}", "", fault_line(&fault_of(f)));
        }
    }
    Ok(ExitCode::SUCCESS)
}

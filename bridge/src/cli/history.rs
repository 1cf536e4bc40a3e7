//! `faultbridge history`: the recorded faults. By default asked of the
//! daemon over D-Bus (`History`, page after page), so any local user gets
//! them without reading `/var/lib/faultbridge`; with `--db FILE`, read
//! straight from a history database (for when the daemon is stopped; loss
//! notices, `--since` and `--monitor` need it too, as the D-Bus reply
//! carries faults only).

use super::format::{hex, printable};
use super::{CliResult, dbus_failure};
use crate::history::{HistoryDb, Query};
use faultbridge_bus::dbus::client::{connect, error_name};
use faultbridge_bus::dbus::{BUS_NAME, BusAddress, HistoryRow, INTERFACE, OBJECT_PATH};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub bus: super::BusArg,
    /// Only what was recorded since a DURATION ago (`10m`, `2h`) or a TIME
    /// (`2026-11-23 10:00:00`, `2026-11-23T10:00:00Z`, UTC); needs --db.
    #[arg(long, value_name = "DURATION|TIME", requires = "db")]
    pub since: Option<String>,
    /// Only this category (NIC, FC, HA/SS, …).
    #[arg(long)]
    pub category: Option<String>,
    /// Only this device keyword.
    #[arg(long)]
    pub keyword: Option<String>,
    /// The activity log of this monitor (state changes and actions) instead
    /// of faults; needs --db.
    #[arg(long, requires = "db")]
    pub monitor: Option<String>,
    /// At most this many rows (the newest).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Read this history database directly instead of asking the daemon
    /// (works while the daemon is stopped; needs read access to the file).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
}

pub(crate) fn since_ms(s: &str) -> Result<i64, String> {
    if let Ok(d) = crate::config::parse_duration(s) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        return Ok(now - d.as_millis() as i64);
    }
    // Let SQLite's date functions read the time (UTC).
    let conn = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
    let ms: Option<i64> = conn
        .query_row(
            "SELECT CAST(unixepoch(?1, 'subsec') * 1000 AS INTEGER)",
            [s],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    ms.ok_or_else(|| format!("--since {s:?}: expected a duration such as 10m or a time such as \"2026-11-23 10:00:00\""))
}

pub(crate) fn time_text(ms: i64) -> String {
    let conn = rusqlite::Connection::open_in_memory();
    conn.and_then(|c| {
        c.query_row(
            "SELECT strftime('%Y-%m-%d %H:%M:%f', ?1 / 1000.0, 'unixepoch')",
            [ms],
            |r| r.get::<_, String>(0),
        )
    })
    .unwrap_or_else(|_| ms.to_string())
}

/// The daemon's answer while too many calls are in progress.
const BUSY: &str = "org.faultbridge.Bridge1.Error.Busy";
/// Times a busy `History` call is tried again (50 ms apart).
const BUSY_RETRIES: u32 = 200;

/// Rows asked for per `History` call (the daemon may send fewer: a reply
/// is bounded by bytes too).
const PAGE: u32 = 1000;

pub fn run(a: HistoryArgs, bus: &BusAddress) -> CliResult {
    match &a.db {
        Some(path) => run_file(&a, path),
        None => run_bus(&a, bus),
    }
}

/// The newest `--limit` faults, asked of the daemon page after page.
fn run_bus(a: &HistoryArgs, bus: &BusAddress) -> CliResult {
    let keep = a.limit;
    let r: zbus::Result<VecDeque<HistoryRow>> = zbus::block_on(async {
        let conn = connect(bus, Some(Duration::from_secs(10))).await?;
        let mut newest: VecDeque<HistoryRow> = VecDeque::with_capacity(keep.min(4096));
        let mut after = 0u64;
        loop {
            let mut busy = 0;
            let reply = loop {
                let r = conn
                    .call_method(
                        Some(BUS_NAME),
                        OBJECT_PATH,
                        Some(INTERFACE),
                        "History",
                        &(after, PAGE),
                    )
                    .await;
                match r {
                    // Other callers are reading history too: wait our turn.
                    Err(e) if busy < BUSY_RETRIES && error_name(&e).as_deref() == Some(BUSY) => {
                        busy += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    r => break r?,
                }
            };
            let rows: Vec<HistoryRow> = reply.body().deserialize()?;
            let Some(last) = rows.last() else {
                break;
            };
            if last.0 <= after {
                // Ids only grow; a daemon that says otherwise would loop us.
                break;
            }
            after = last.0;
            for r in rows {
                if a.category.as_ref().is_some_and(|c| *c != r.2)
                    || a.keyword.as_ref().is_some_and(|k| *k != r.3)
                {
                    continue;
                }
                if newest.len() == keep {
                    newest.pop_front();
                }
                if keep > 0 {
                    newest.push_back(r);
                }
            }
        }
        Ok(newest)
    });
    let rows = match r {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!(
                "faultbridge history: {} (with --db FILE the database is read directly)",
                dbus_failure(bus, &e)
            );
            return Ok(ExitCode::from(1));
        }
    };
    if !a.json && !rows.is_empty() {
        println!(
            "{:>8}  {:<5} {:<13} {:>8}  {:<6} {:<12} {:<7} {:<10}",
            "record", "what", "source", "sequence", "cat", "keyword", "sev", "event"
        );
    }
    for (id, source, category, keyword, severity, cleared, event_code, sequence, ts, detail) in rows
    {
        if a.json {
            let v = serde_json::json!({"type": if cleared { "clear" } else { "fault" }, "id": id,
                "source": source, "category": category, "keyword": keyword, "severity": severity,
                "cleared": cleared, "event_code": event_code, "sequence": sequence,
                "timestamp_ns": ts, "detail": hex(&detail)});
            println!("{v}");
        } else {
            println!(
                "{:>8}  {:<5} {:<13} {:>8}  {:<6} {:<12} {:<7} {:#010x}",
                id,
                if cleared { "CLEAR" } else { "FAULT" },
                printable(&source),
                sequence,
                printable(&category),
                if keyword.is_empty() {
                    "*".into()
                } else {
                    printable(&keyword)
                },
                printable(&severity),
                event_code
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the database file at `path` cannot be read, naming the real cause:
/// a missing file, or a permission (of the file or of a directory above
/// it, such as the daemon's own 0700 state directory).
fn file_problem(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("no history database at {} (no such file)", path.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            let dir = path
                .ancestors()
                .skip(1)
                .find(|d| std::fs::read_dir(d).is_err() && d.exists())
                .map(|d| {
                    format!(
                        " (the directory {} is not readable for this user)",
                        d.display()
                    )
                })
                .unwrap_or_default();
            format!(
                "history database {}: permission denied{dir}; the file belongs to the daemon's user: read it as root, or without --db over D-Bus from the running daemon",
                path.display()
            )
        }
        _ => format!("history database {}: cannot read it: {e}", path.display()),
    }
}

/// The history database at `path`, read directly.
fn run_file(a: &HistoryArgs, path: &Path) -> CliResult {
    if let Err(e) = std::fs::metadata(path) {
        return Err(file_problem(path, &e).into());
    }
    if let Err(e) = std::fs::File::open(path) {
        return Err(file_problem(path, &e).into());
    }
    let db = HistoryDb::open_read_only(path)?;
    let since = a.since.as_deref().map(since_ms).transpose()?;
    if let Some(m) = &a.monitor {
        for e in db.activity(Some(m), since, a.limit)? {
            if a.json {
                println!("{}", serde_json::json!({"type": "activity", "entry": e}));
            } else {
                println!(
                    "{}  {:<11} {:<14} {}{}",
                    time_text(e.time_ms as i64),
                    e.severity.name(),
                    e.kind,
                    printable(&e.message),
                    e.exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default()
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows = db.query(&Query {
        since_ms: since,
        category: a.category.clone(),
        keyword: a.keyword.clone(),
        after_id: None,
        limit: a.limit,
    })?;
    if !a.json && !rows.is_empty() {
        println!(
            "{:<23}  {:<5} {:<13} {:>8}  {:<6} {:<12} {:<7} {:<10}",
            "recorded (UTC)", "what", "source", "sequence", "cat", "keyword", "sev", "event"
        );
    }
    for r in rows {
        if a.json {
            let v = if r.kind == "lost" {
                serde_json::json!({"type": "lost", "source": r.source, "first_sequence": r.sequence,
                    "last_sequence": r.last_sequence, "reason": r.severity, "recorded_at_ms": r.recorded_at_ms})
            } else {
                serde_json::json!({"type": r.kind, "source": r.source, "category": r.category, "keyword": r.keyword,
                    "severity": r.severity, "cleared": r.kind == "clear", "event_code": r.event_code,
                    "sequence": r.sequence, "timestamp_ns": r.timestamp_ns, "detail": hex(&r.detail),
                    "device_index": r.device_index, "recorded_at_ms": r.recorded_at_ms})
            };
            println!("{v}");
        } else if r.kind == "lost" {
            println!(
                "{:<23}  {:<5} {:<13} {:>8}  lost through {} ({})",
                time_text(r.recorded_at_ms),
                "LOST",
                r.source,
                r.sequence,
                r.last_sequence.unwrap_or(r.sequence),
                r.severity
            );
        } else {
            println!(
                "{:<23}  {:<5} {:<13} {:>8}  {:<6} {:<12} {:<7} {:#010x}",
                time_text(r.recorded_at_ms),
                r.kind.to_uppercase(),
                r.source,
                r.sequence,
                r.category,
                if r.keyword.is_empty() {
                    "*".into()
                } else {
                    printable(&r.keyword)
                },
                r.severity,
                r.event_code
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

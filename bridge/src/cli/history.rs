//! `faultbridge history`: the recorded faults, read straight from the
//! history database (it works while the daemon runs and when it is stopped).

use super::CliResult;
use super::format::hex;
use crate::config::{Config, DEFAULT_HISTORY_PATH, DEFAULT_PATH};
use crate::history::{HistoryDb, Query};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only what was recorded since a DURATION ago (`10m`, `2h`) or a TIME
    /// (`2026-11-23 10:00:00`, `2026-11-23T10:00:00Z`, UTC).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Only this category (NIC, FC, HA/SS, …).
    #[arg(long)]
    pub category: Option<String>,
    /// Only this device keyword.
    #[arg(long)]
    pub keyword: Option<String>,
    /// The activity log of this monitor (state changes and actions) instead of faults.
    #[arg(long)]
    pub monitor: Option<String>,
    /// At most this many rows (the newest).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The history database (default: `[history] path` of the configuration).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// The configuration naming the database.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn since_ms(s: &str) -> Result<i64, String> {
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

fn time_text(ms: i64) -> String {
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

pub fn run(a: HistoryArgs) -> CliResult {
    let path = match (&a.db, &a.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => Config::load(c)?
            .history
            .map(|h| h.path)
            .ok_or_else(|| format!("{}: no [history] section", c.display()))?,
        (None, None) => {
            let p = PathBuf::from(DEFAULT_PATH);
            if p.exists() {
                Config::load(&p)?
                    .history
                    .map_or_else(|| PathBuf::from(DEFAULT_HISTORY_PATH), |h| h.path)
            } else {
                PathBuf::from(DEFAULT_HISTORY_PATH)
            }
        }
    };
    if !path.exists() {
        return Err(format!("no history database at {}", path.display()).into());
    }
    let db = HistoryDb::open_read_only(&path)?;
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
                    e.message,
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
                    "*"
                } else {
                    &r.keyword
                },
                r.severity,
                r.event_code
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

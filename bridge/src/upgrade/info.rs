//! What a build says about itself (`faultbridge upgrade-info --json`), and
//! the readiness check that asks a new binary for it before an upgrade.

use crate::config::Config;
use crate::history::SCHEMA_VERSION;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The layout version of the state handed from one side to the other
/// (monitor states, sequence cursors, action bookkeeping). Two builds with
/// different numbers refuse to upgrade into each other at the readiness
/// check rather than misread each other's state.
pub const HANDOVER_VERSION: u32 = 2;

/// The oldest history schema this build opens (migrating it forward).
pub const HISTORY_SCHEMA_MIN: i32 = 0;

static VERSION: OnceLock<&'static str> = OnceLock::new();

/// The version this build reports (`--version`, D-Bus `Status`,
/// `upgrade-info`): the package version, or what the binary's `main` set.
pub fn version() -> &'static str {
    VERSION.get().copied().unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// Sets the version once, before anything reports it (a binary's `main`).
pub fn set_version(v: &'static str) {
    let _ = VERSION.set(v);
}

/// A build's answer to `upgrade-info --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeInfo {
    pub version: String,
    pub handover_version: u32,
    /// The history schemas it opens: `min..=max` (older ones migrated).
    pub history_schema_min: i32,
    pub history_schema_max: i32,
    /// Whether it accepts the configuration it was given.
    pub config_accepted: bool,
    /// Why not.
    pub config_error: Option<String>,
}

/// This build's answer, about the configuration at `config` (None: the
/// built-in defaults).
pub fn this_build(config: Option<&Path>) -> UpgradeInfo {
    let checked = match config {
        Some(p) => Config::load(p).map(|_| ()),
        None => Config::parse("", Path::new("(built-in defaults)")).map(|_| ()),
    };
    UpgradeInfo {
        version: version().to_string(),
        handover_version: HANDOVER_VERSION,
        history_schema_min: HISTORY_SCHEMA_MIN,
        history_schema_max: SCHEMA_VERSION,
        config_accepted: checked.is_ok(),
        config_error: checked.err().map(|e| crate::error::error_chain(&e)),
    }
}

/// One finding of the readiness check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    /// What was checked and what was found.
    pub message: String,
}

/// The new binary at `path`, asked about the running configuration.
pub fn query(path: &Path, config: Option<&Path>, timeout: Duration) -> Result<UpgradeInfo, String> {
    let mut cmd = Command::new(path);
    cmd.arg("upgrade-info").arg("--json");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.env_clear()
        .current_dir("/")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{} cannot be run: {e}", path.display()))?;
    let start = Instant::now();
    let mut out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.take(64 * 1024).read_to_string(&mut s);
        }
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                return Err(format!(
                    "{} upgrade-info did not answer within {timeout:?}",
                    path.display()
                ));
            }
        }
    };
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{} upgrade-info failed ({status}): it is not a faultbridge that can be upgraded to",
            path.display()
        ));
    }
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "{} upgrade-info answered something unreadable ({e}): {:?}",
            path.display(),
            text.chars().take(200).collect::<String>()
        )
    })
}

/// The schema version of the history database at `path` (0: none yet).
pub fn history_schema(path: &Path) -> Result<i32, String> {
    if !path.exists() {
        return Ok(0);
    }
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("history database {}: {e}", path.display()))?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("history database {}: {e}", path.display()))
}

/// The built-in part of the readiness check (the custom `readiness`
/// actions run after it): the binary exists and is executable, reports its
/// version, accepts the running configuration and history database, and
/// speaks the same hand-over state. The info is there when it answered.
pub fn check_binary(
    binary: &Path,
    config: Option<&Path>,
    history: Option<&Path>,
) -> (Vec<Finding>, Option<UpgradeInfo>) {
    let mut f = Vec::new();
    let mut push = |ok: bool, message: String| f.push(Finding { ok, message });
    let meta = match std::fs::metadata(binary) {
        Ok(m) => m,
        Err(e) => {
            push(false, format!("new binary {}: {e}", binary.display()));
            return (f, None);
        }
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        push(
            false,
            format!("new binary {}: not an executable file", binary.display()),
        );
        return (f, None);
    }
    push(true, format!("new binary {}: executable", binary.display()));
    let info = match query(binary, config, Duration::from_secs(10)) {
        Ok(i) => i,
        Err(e) => {
            push(false, e);
            return (f, None);
        }
    };
    push(
        true,
        format!(
            "new binary reports version {} (running: {})",
            info.version,
            version()
        ),
    );
    match (&info.config_accepted, &info.config_error) {
        (true, _) => push(true, "new binary accepts the running configuration".into()),
        (false, e) => push(
            false,
            format!(
                "new binary refuses the running configuration: {}",
                e.as_deref().unwrap_or("no reason given")
            ),
        ),
    }
    if info.handover_version == HANDOVER_VERSION {
        push(
            true,
            format!("hand-over state version {HANDOVER_VERSION} on both sides"),
        );
    } else {
        push(
            false,
            format!(
                "hand-over state version {} of the new binary differs from {HANDOVER_VERSION} of the running one: the state cannot be handed over",
                info.handover_version
            ),
        );
    }
    if let Some(h) = history {
        match history_schema(h) {
            Err(e) => push(false, e),
            Ok(v) if v > info.history_schema_max => push(
                false,
                format!(
                    "history database {} has schema {v}, newer than the {} the new binary reads",
                    h.display(),
                    info.history_schema_max
                ),
            ),
            Ok(v) if v < info.history_schema_min => push(
                false,
                format!(
                    "history database {} has schema {v}, older than the new binary migrates ({}..={})",
                    h.display(),
                    info.history_schema_min,
                    info.history_schema_max
                ),
            ),
            Ok(v) if v < info.history_schema_max => push(
                true,
                format!(
                    "history database schema {v}: the new binary migrates it to {} at merge",
                    info.history_schema_max
                ),
            ),
            Ok(v) => push(
                true,
                format!("history database schema {v}: read by the new binary"),
            ),
        }
    }
    (f, Some(info))
}

/// The binary that replaced the running one on disk, when none is named:
/// the path this process was started from.
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .map(|p| {
            let s = p.to_string_lossy();
            PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
        })
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/faultbridge"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_reports_itself_and_judges_the_config() {
        let i = this_build(None);
        assert_eq!(i.version, version());
        assert_eq!(i.handover_version, HANDOVER_VERSION);
        assert_eq!(i.history_schema_max, SCHEMA_VERSION);
        assert!(i.config_accepted, "{i:?}");
        let dir = std::env::temp_dir().join(format!("fb-upgrade-info-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "bus = 3\n").unwrap();
        let i = this_build(Some(&bad));
        assert!(!i.config_accepted);
        assert!(i.config_error.unwrap().contains("bad.toml"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_or_non_executable_binary_fails() {
        let (f, i) = check_binary(Path::new("/nonexistent/faultbridge"), None, None);
        assert!(i.is_none() && !f[0].ok, "{f:?}");
        let dir = std::env::temp_dir().join(format!("fb-upgrade-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("faultbridge");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        let (f, _) = check_binary(&p, None, None);
        assert!(f[0].message.contains("not an executable"), "{f:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

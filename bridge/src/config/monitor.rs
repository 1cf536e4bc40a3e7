//! `[[monitor]]`: an external link monitor (mrw) and what it does on Error.

use super::duration::{GRACE_PERIOD_BOUND, TIMEOUT_BOUND, WINDOW_BOUND};
use super::error::{ConfigError, Ctx};
use super::names::named_enum;
use super::raw::{RawMonitor, RawThreshold};
use faultbridge_ffi::wire::record::{CATEGORY_NAME_MAX, Category, KEYWORD_MAX, Severity};
use std::time::Duration;
use toml::Spanned;

/// The longest monitor name (it must fit a NUL-padded 64-byte field).
pub const MONITOR_NAME_MAX: usize = 63;
/// The longest `exit_data` string handed to an exit program.
pub const EXIT_DATA_MAX: usize = 256;
/// The largest `threshold.count`.
pub const THRESHOLD_COUNT_MAX: i64 = 1_000_000;
/// The largest `restart_limit`.
pub const RESTART_LIMIT_MAX: i64 = 1000;
/// The longest node `attribute` of the `pacemaker` adapter.
pub const ATTRIBUTE_MAX: usize = 255;
/// The node attribute of the `pacemaker` adapter when none is written:
/// this prefix and the monitor's name (the resource agent's default too).
pub const ATTRIBUTE_PREFIX: &str = "faultbridge-";
/// The longest `node`.
pub const NODE_MAX: usize = 255;
/// `timeout` when none is written.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

named_enum! {
    /// What a monitor asks the cluster to do when it goes into Error.
    pub enum RecoveryAction {
        Restart = "restart",
        Failover = "failover",
        Final = "final",
    }
}

named_enum! {
    /// The adapters that carry a monitor's Error to the cluster manager.
    pub enum AdapterKind {
        Exec = "exec",
        ExpressCluster = "expresscluster",
        Pacemaker = "pacemaker",
        ExitProgram = "exit-program",
        None = "none",
    }
}

/// `threshold = { count, window }`: Error only after `count` matching faults
/// within `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub count: u32,
    pub window: Duration,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            count: 1,
            window: Duration::ZERO,
        }
    }
}

/// One `[[monitor]]`: an external link monitor (mrw).
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorConfig {
    pub name: String,
    pub category: Category,
    /// `None`: any device of the category.
    pub keyword: Option<String>,
    pub min_severity: Severity,
    pub recovery_action: RecoveryAction,
    pub recovery_target: String,
    pub failover_outside_server_group: bool,
    pub final_action: String,
    pub adapter: AdapterKind,
    /// The program (exec, exit-program) or the command template
    /// (expresscluster, pacemaker), split shell-style, `{placeholders}` filled in.
    pub command: Option<String>,
    pub timeout: Duration,
    pub auto_clear: bool,
    pub threshold: Threshold,
    /// No second recovery action for this monitor within this time.
    pub grace_period: Duration,
    /// A command whose exit 0 means the recovery target is active.
    pub target_check: Option<String>,
    /// Exit-program restarts before failover.
    pub restart_limit: u32,
    /// `FAULTBRIDGE_EXIT_DATA` for exit programs.
    pub exit_data: String,
    /// The `pacemaker` adapter's node attribute (`0` in Error, `1` Normal
    /// again); `None` for the other adapters or with `attribute = ""`.
    pub attribute: Option<String>,
    /// This host's cluster node name, the `{node}` placeholder (the
    /// `pacemaker` adapter's `crm_resource --fail --node`).
    pub node: String,
}

/// Validates one `[[monitor]]` table.
pub(super) fn monitor(cx: &Ctx<'_>, m: &RawMonitor) -> Result<MonitorConfig, ConfigError> {
    let name = name(cx, &m.name)?;
    let category = category(cx, &m.category)?;
    let keyword = m
        .keyword
        .as_ref()
        .map(|k| keyword(cx, k))
        .transpose()?
        .flatten();
    let min_severity = match &m.min_severity {
        None => Severity::Error,
        Some(s) => cx.named(s, "severity")?,
    };
    let recovery_action = match &m.recovery_action {
        None => RecoveryAction::Failover,
        Some(a) => cx.named(a, "recovery_action")?,
    };
    let adapter = match &m.adapter {
        None => AdapterKind::None,
        Some(a) => cx.named(a, "adapter")?,
    };
    commands(cx, m, adapter)?;
    let timeout = match &m.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => cx.duration(t, "timeout", TIMEOUT_BOUND)?,
    };
    let threshold = match &m.threshold {
        None => Threshold::default(),
        Some(t) => threshold(cx, t)?,
    };
    let grace_period = match &m.grace_period {
        None => Duration::ZERO,
        Some(g) => cx.duration(g, "grace_period", GRACE_PERIOD_BOUND)?,
    };
    let restart_limit = match &m.restart_limit {
        None => 1,
        Some(r) => cx.int_in(r, "restart_limit", 0, RESTART_LIMIT_MAX)? as u32,
    };
    let exit_data = match &m.exit_data {
        None => String::new(),
        Some(d) => exit_data(cx, d)?,
    };
    let attribute = attribute(cx, m, adapter)?;
    if adapter == AdapterKind::Pacemaker
        && attribute.is_none()
        && m.command.is_none()
        && m.recovery_target.as_deref().unwrap_or_default().is_empty()
    {
        return Err(cx.spanned(
            &m.name,
            format!(
                "monitor {:?}: adapter pacemaker with attribute = \"\" does nothing without a recovery_target (or a command)",
                m.name.get_ref()
            ),
        ));
    }
    let node = match &m.node {
        Some(n) => node(cx, n)?,
        None => host_name(),
    };
    Ok(MonitorConfig {
        name,
        category,
        keyword,
        min_severity,
        recovery_action,
        recovery_target: recovery_target(cx, m)?,
        failover_outside_server_group: m.failover_outside_server_group.unwrap_or(false),
        final_action: m.final_action.clone().unwrap_or_else(|| "none".into()),
        adapter,
        command: m.command.clone(),
        timeout,
        auto_clear: m.auto_clear.unwrap_or(false),
        threshold,
        grace_period,
        target_check: m.target_check.clone(),
        restart_limit,
        exit_data,
        attribute,
        node,
    })
}

fn name(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<String, ConfigError> {
    let name = v.get_ref();
    if name.is_empty() || name.len() > MONITOR_NAME_MAX {
        return Err(cx.spanned(
            v,
            format!("monitor name {name:?} must be 1..={MONITOR_NAME_MAX} bytes"),
        ));
    }
    if name.contains('\0') {
        return Err(cx.spanned(v, "monitor name must not hold a NUL"));
    }
    Ok(name.clone())
}

fn category(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<Category, ConfigError> {
    let len = v.get_ref().len();
    if len > CATEGORY_NAME_MAX {
        return Err(cx.spanned(
            v,
            format!("category is {len} bytes, more than {CATEGORY_NAME_MAX}"),
        ));
    }
    cx.named(v, "category")
}

/// `None` for an empty keyword (any device of the category).
fn keyword(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<Option<String>, ConfigError> {
    let s = v.get_ref();
    if s.len() > KEYWORD_MAX {
        return Err(cx.spanned(
            v,
            format!("keyword is {} bytes, more than {KEYWORD_MAX}", s.len()),
        ));
    }
    if s.contains('\0') {
        return Err(cx.spanned(v, "keyword must not hold a NUL"));
    }
    Ok((!s.is_empty()).then(|| s.clone()))
}

fn threshold(cx: &Ctx<'_>, t: &Spanned<RawThreshold>) -> Result<Threshold, ConfigError> {
    let r = t.get_ref();
    let count = cx.int_in(&r.count, "threshold.count", 1, THRESHOLD_COUNT_MAX)? as u32;
    let window = match &r.window {
        Some(w) => cx.duration(w, "threshold.window", WINDOW_BOUND)?,
        None if count > 1 => {
            return Err(cx.spanned(
                t,
                "threshold with count > 1 needs a window, e.g. { count = 3, window = \"10s\" }",
            ));
        }
        None => Duration::ZERO,
    };
    Ok(Threshold { count, window })
}

fn exit_data(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<String, ConfigError> {
    let d = v.get_ref();
    if d.len() > EXIT_DATA_MAX {
        return Err(cx.spanned(
            v,
            format!("exit_data is {} bytes, more than {EXIT_DATA_MAX}", d.len()),
        ));
    }
    if d.contains('\0') {
        return Err(cx.spanned(v, "exit_data must not hold a NUL"));
    }
    Ok(d.clone())
}

/// `attribute`: for the `pacemaker` adapter only; by default
/// `faultbridge-<name>`, none when written `""`. A name Pacemaker and a
/// location rule take as written: letters, digits, `_ . : -`, not starting
/// with `-` (it is an argument of `attrd_updater`).
fn attribute(
    cx: &Ctx<'_>,
    m: &RawMonitor,
    adapter: AdapterKind,
) -> Result<Option<String>, ConfigError> {
    let name = m.name.get_ref();
    if adapter != AdapterKind::Pacemaker {
        return match &m.attribute {
            Some(a) => Err(cx.spanned(
                a,
                format!("monitor {name:?}: attribute is for adapter = \"pacemaker\" only"),
            )),
            None => Ok(None),
        };
    }
    let (value, at) = match &m.attribute {
        Some(a) if a.get_ref().is_empty() => return Ok(None),
        Some(a) => (a.get_ref().clone(), a.span().start),
        None => (format!("{ATTRIBUTE_PREFIX}{name}"), m.name.span().start),
    };
    let valid = !value.starts_with('-')
        && value.len() <= ATTRIBUTE_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if !valid {
        let written = if m.attribute.is_some() {
            "attribute"
        } else {
            "the default attribute"
        };
        return Err(cx.at(
            at,
            format!(
                "monitor {name:?}: {written} {value:?} is not a node attribute name: 1..={ATTRIBUTE_MAX} letters, digits, '_', '.', ':' or '-', not starting with '-' (set attribute, or attribute = \"\" for none)"
            ),
        ));
    }
    Ok(Some(value))
}

/// `node`: a name a cluster tool takes as the value of an option.
fn node(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<String, ConfigError> {
    let n = v.get_ref();
    if n.is_empty() || n.len() > NODE_MAX || n.starts_with('-') || n.contains(['\0', '/']) {
        return Err(cx.spanned(
            v,
            format!(
                "node {n:?} must be 1..={NODE_MAX} bytes, without NUL or '/', not starting with '-'"
            ),
        ));
    }
    Ok(n.clone())
}

/// The host name (`uname -n`), Pacemaker's node name when the cluster
/// configuration gives none; empty when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn recovery_target(cx: &Ctx<'_>, m: &RawMonitor) -> Result<String, ConfigError> {
    let target = m.recovery_target.clone().unwrap_or_default();
    if target.len() > MONITOR_NAME_MAX || target.contains('\0') {
        return Err(cx.spanned(
            &m.name,
            format!(
                "monitor {:?}: recovery_target must be at most {MONITOR_NAME_MAX} bytes without NUL (it is passed NUL-padded in 64 bytes)",
                m.name.get_ref()
            ),
        ));
    }
    Ok(target)
}

/// `command` and `target_check`: present where the adapter needs one, split
/// shell-style into at least a program, and with fault fields where they
/// stay data ([`crate::argv::check`]). An exit program may have arguments
/// of its own: `ACTION_CODE FBEX0100` follow them.
fn commands(cx: &Ctx<'_>, m: &RawMonitor, adapter: AdapterKind) -> Result<(), ConfigError> {
    let name = m.name.get_ref();
    if matches!(adapter, AdapterKind::Exec | AdapterKind::ExitProgram) && m.command.is_none() {
        return Err(cx.spanned(
            &m.name,
            format!("monitor {name:?}: adapter {adapter} needs a command"),
        ));
    }
    for (key, cmd) in [("command", &m.command), ("target_check", &m.target_check)] {
        if let Some(c) = cmd
            && let Err(e) = crate::argv::check(c)
        {
            return Err(cx.spanned(&m.name, format!("monitor {name:?}: {key} {c:?}: {e}")));
        }
    }
    Ok(())
}

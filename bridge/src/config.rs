//! The TOML configuration (`/etc/faultbridge/faultbridge.toml`). Keys are
//! the external contract of `shared/DESIGN.md`; a mistake is reported with
//! the file, line and column it is on.

use faultbridge_ffi::wire::record::{CATEGORY_NAME_MAX, Category, KEYWORD_MAX, Severity};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use toml::Spanned;

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/faultbridge/faultbridge.toml";
/// The longest monitor name (it must fit a NUL-padded 64-byte field).
pub const MONITOR_NAME_MAX: usize = 63;

/// A configuration that could not be used: where and why.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Which D-Bus bus to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusSelect {
    System,
    Session,
    None,
    Address(String),
}

impl BusSelect {
    pub fn parse(s: &str) -> Result<BusSelect, String> {
        Ok(match s {
            "system" => BusSelect::System,
            "session" => BusSelect::Session,
            "none" => BusSelect::None,
            a if a.contains(':') && a.contains('=') => BusSelect::Address(a.to_string()),
            other => {
                return Err(format!(
                    "bus = {other:?}: expected \"system\", \"session\", \"none\" or a D-Bus address such as \"unix:path=/run/x/bus\""
                ));
            }
        })
    }
}

/// The whole configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub bus: BusSelect,
    pub expdrv: ExpdrvConfig,
    pub rtnetlink: RtnetlinkConfig,
    pub fc: FcConfig,
    pub uevent: UeventConfig,
    pub history: Option<HistoryConfig>,
    pub monitors: Vec<MonitorConfig>,
    pub ingest: IngestConfig,
    pub actions: ActionsConfig,
}

/// `[actions]`: the recovery-action runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionsConfig {
    /// Actions running at once, all monitors together; more wait their turn.
    pub max_concurrent: usize,
    /// Bytes of stdout and of stderr kept per process for the activity log.
    pub output_limit: usize,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            max_concurrent: 8,
            output_limit: 4096,
        }
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

/// The longest `exit_data` string handed to an exit program.
pub const EXIT_DATA_MAX: usize = 256;

/// `[sources.expdrv]`: the expanded driver (ABI v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpdrvConfig {
    pub enabled: bool,
    pub netlink_protocol: i32,
    pub netlink_group: u32,
    pub device: Option<PathBuf>,
    /// Socket receive buffer in bytes (`SO_RCVBUFFORCE` when permitted).
    pub recv_buffer: usize,
    /// The shortest time between two `EXPDRV_IOC_SNAPSHOT` resyncs of the
    /// char device (`resync_interval`): losses within it share one resync.
    pub resync_interval: Duration,
}

impl Default for ExpdrvConfig {
    fn default() -> Self {
        ExpdrvConfig {
            enabled: true,
            netlink_protocol: faultbridge_ffi::sys::netlink::NETLINK_USERSOCK,
            netlink_group: 1,
            device: None,
            recv_buffer: 8 << 20,
            resync_interval: Duration::from_secs(1),
        }
    }
}

/// Interface or device name patterns (`*` any run, `?` one character): a
/// name is watched when it matches an `include` pattern (or there are
/// none) and no `exclude` pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamePatterns {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl NamePatterns {
    /// Whether `name` is watched.
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, name)))
            && !self.exclude.iter().any(|p| glob_match(p, name))
    }
}

/// Shell-style matching of `name` against `pattern` (`*`, `?`, no classes).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `[sources.rtnetlink]`: NIC carrier faults reported by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtnetlinkConfig {
    pub enabled: bool,
    /// Which interfaces are watched (loopback never is).
    pub interfaces: NamePatterns,
    /// Socket receive buffer in bytes.
    pub recv_buffer: usize,
}

impl Default for RtnetlinkConfig {
    fn default() -> Self {
        RtnetlinkConfig {
            enabled: false,
            interfaces: NamePatterns::default(),
            recv_buffer: 1 << 20,
        }
    }
}

/// `[sources.fc]`: FC transport events reported by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FcConfig {
    pub enabled: bool,
    /// `NETLINK_SCSITRANSPORT` (18); another protocol only for tests.
    pub netlink_protocol: i32,
    /// 4: the group the kernel sends FC events to.
    pub netlink_group: u32,
    pub recv_buffer: usize,
}

impl Default for FcConfig {
    fn default() -> Self {
        FcConfig {
            enabled: false,
            netlink_protocol: faultbridge_ffi::sys::netlink::NETLINK_SCSITRANSPORT,
            netlink_group: faultbridge_ffi::wire::fc::FC_EVENTS_GROUP,
            recv_buffer: 1 << 20,
        }
    }
}

/// The device subsystems whose removal the uevent source reports.
pub const UEVENT_SUBSYSTEMS: [&str; 3] = ["net", "block", "scsi"];

/// `[sources.uevent]`: device removal reported by kernel uevents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UeventConfig {
    pub enabled: bool,
    /// Subsystems watched, a subset of [`UEVENT_SUBSYSTEMS`].
    pub subsystems: Vec<String>,
    /// Which devices (by name: interface, `DEVNAME`, or sysfs name) are watched.
    pub devices: NamePatterns,
    pub recv_buffer: usize,
}

impl Default for UeventConfig {
    fn default() -> Self {
        UeventConfig {
            enabled: false,
            subsystems: UEVENT_SUBSYSTEMS.iter().map(|s| s.to_string()).collect(),
            devices: NamePatterns::default(),
            recv_buffer: 1 << 20,
        }
    }
}

/// `[history]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    pub path: PathBuf,
    /// Rows older than this are removed.
    pub max_age: Option<Duration>,
    /// At most this many event rows are kept.
    pub max_rows: Option<u64>,
}

/// The default history database.
pub const DEFAULT_HISTORY_PATH: &str = "/var/lib/faultbridge/history.db";

/// `[ingest]`: queues of the built-in consumers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestConfig {
    /// Queue depth of each built-in subscriber (D-Bus, history, printer).
    pub queue: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { queue: 65536 }
    }
}

/// What a monitor asks the cluster to do when it goes into Error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryAction {
    Restart,
    Failover,
    Final,
}

impl RecoveryAction {
    pub const fn name(self) -> &'static str {
        match self {
            RecoveryAction::Restart => "restart",
            RecoveryAction::Failover => "failover",
            RecoveryAction::Final => "final",
        }
    }
}

/// The adapters that carry a monitor's Error to the cluster manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    Exec,
    ExpressCluster,
    Pacemaker,
    ExitProgram,
    None,
}

impl AdapterKind {
    pub const fn name(self) -> &'static str {
        match self {
            AdapterKind::Exec => "exec",
            AdapterKind::ExpressCluster => "expresscluster",
            AdapterKind::Pacemaker => "pacemaker",
            AdapterKind::ExitProgram => "exit-program",
            AdapterKind::None => "none",
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
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    bus: Option<Spanned<String>>,
    #[serde(default)]
    sources: RawSources,
    history: Option<RawHistory>,
    ingest: Option<RawIngest>,
    #[serde(default)]
    monitor: Vec<RawMonitor>,
    actions: Option<RawActions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActions {
    max_concurrent: Option<Spanned<i64>>,
    output_limit: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    count: Spanned<i64>,
    window: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSources {
    expdrv: Option<RawExpdrv>,
    rtnetlink: Option<RawRtnetlink>,
    fc: Option<RawFc>,
    uevent: Option<RawUevent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpdrv {
    enabled: Option<bool>,
    netlink_protocol: Option<Spanned<i64>>,
    netlink_group: Option<Spanned<i64>>,
    device: Option<PathBuf>,
    recv_buffer: Option<Spanned<i64>>,
    resync_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRtnetlink {
    enabled: Option<bool>,
    include: Option<Vec<Spanned<String>>>,
    exclude: Option<Vec<Spanned<String>>>,
    recv_buffer: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFc {
    enabled: Option<bool>,
    netlink_protocol: Option<Spanned<i64>>,
    netlink_group: Option<Spanned<i64>>,
    recv_buffer: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUevent {
    enabled: Option<bool>,
    subsystems: Option<Vec<Spanned<String>>>,
    include: Option<Vec<Spanned<String>>>,
    exclude: Option<Vec<Spanned<String>>>,
    recv_buffer: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    path: Option<PathBuf>,
    max_age: Option<Spanned<String>>,
    max_rows: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    queue: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    name: Spanned<String>,
    category: Spanned<String>,
    keyword: Option<Spanned<String>>,
    min_severity: Option<Spanned<String>>,
    recovery_action: Option<Spanned<String>>,
    recovery_target: Option<String>,
    failover_outside_server_group: Option<bool>,
    final_action: Option<String>,
    adapter: Option<Spanned<String>>,
    command: Option<String>,
    timeout: Option<Spanned<String>>,
    auto_clear: Option<bool>,
    threshold: Option<Spanned<RawThreshold>>,
    grace_period: Option<Spanned<String>>,
    target_check: Option<String>,
    restart_limit: Option<Spanned<i64>>,
    exit_data: Option<Spanned<String>>,
}

/// Parses a duration such as `10s`, `250ms`, `2m`, `1h`, `1500us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (expected e.g. \"10s\", \"250ms\")"))?;
    let d = match unit.trim() {
        "ns" => Duration::from_nanos(n),
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ns, us, ms, s, m, h)"
            ));
        }
    };
    Ok(d)
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn at(&self, offset: usize, message: impl Into<String>) -> ConfigError {
        let upto = &self.text[..offset.min(self.text.len())];
        let line = upto.matches('\n').count() + 1;
        let column = upto
            .rfind('\n')
            .map_or(upto.len(), |nl| upto.len() - nl - 1)
            + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn spanned<T>(&self, v: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.at(v.span().start, message)
    }

    fn int_in(&self, v: &Spanned<i64>, key: &str, lo: i64, hi: i64) -> Result<i64, ConfigError> {
        let x = *v.get_ref();
        if x < lo || x > hi {
            return Err(self.spanned(v, format!("{key} = {x}: must be in {lo}..={hi}")));
        }
        Ok(x)
    }

    fn patterns(
        &self,
        include: &Option<Vec<Spanned<String>>>,
        exclude: &Option<Vec<Spanned<String>>>,
    ) -> Result<NamePatterns, ConfigError> {
        let check = |list: &Option<Vec<Spanned<String>>>, key: &str| {
            let mut out = Vec::new();
            for p in list.iter().flatten() {
                let s = p.get_ref();
                if s.is_empty() || s.len() > KEYWORD_MAX || s.contains('\0') {
                    return Err(self.spanned(
                        p,
                        format!("{key} pattern {s:?} must be 1..={KEYWORD_MAX} bytes without NUL"),
                    ));
                }
                out.push(s.clone());
            }
            Ok(out)
        };
        Ok(NamePatterns {
            include: check(include, "include")?,
            exclude: check(exclude, "exclude")?,
        })
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cx = Ctx { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            cx.at(offset, e.message().trim_end().to_string())
        })?;

        let bus = match &raw.bus {
            None => BusSelect::System,
            Some(b) => BusSelect::parse(b.get_ref()).map_err(|m| cx.spanned(b, m))?,
        };

        let mut expdrv = ExpdrvConfig::default();
        if let Some(e) = &raw.sources.expdrv {
            expdrv.enabled = e.enabled.unwrap_or(true);
            if let Some(p) = &e.netlink_protocol {
                expdrv.netlink_protocol = cx.int_in(p, "netlink_protocol", 0, 31)? as i32;
            }
            if let Some(g) = &e.netlink_group {
                expdrv.netlink_group = cx.int_in(g, "netlink_group", 1, 32)? as u32;
            }
            expdrv.device = e.device.clone();
            if let Some(r) = &e.recv_buffer {
                expdrv.recv_buffer = cx.int_in(r, "recv_buffer", 4096, 1 << 30)? as usize;
            }
            if let Some(t) = &e.resync_interval {
                expdrv.resync_interval =
                    parse_duration(t.get_ref()).map_err(|m| cx.spanned(t, m))?;
            }
        }

        let mut rtnetlink = RtnetlinkConfig::default();
        if let Some(r) = &raw.sources.rtnetlink {
            rtnetlink.enabled = r.enabled.unwrap_or(true);
            rtnetlink.interfaces = cx.patterns(&r.include, &r.exclude)?;
            if let Some(b) = &r.recv_buffer {
                rtnetlink.recv_buffer = cx.int_in(b, "recv_buffer", 4096, 1 << 30)? as usize;
            }
        }

        let mut fc = FcConfig::default();
        if let Some(f) = &raw.sources.fc {
            fc.enabled = f.enabled.unwrap_or(true);
            if let Some(p) = &f.netlink_protocol {
                fc.netlink_protocol = cx.int_in(p, "netlink_protocol", 0, 31)? as i32;
            }
            if let Some(g) = &f.netlink_group {
                fc.netlink_group = cx.int_in(g, "netlink_group", 1, 32)? as u32;
            }
            if let Some(b) = &f.recv_buffer {
                fc.recv_buffer = cx.int_in(b, "recv_buffer", 4096, 1 << 30)? as usize;
            }
        }

        let mut uevent = UeventConfig::default();
        if let Some(u) = &raw.sources.uevent {
            uevent.enabled = u.enabled.unwrap_or(true);
            if let Some(list) = &u.subsystems {
                uevent.subsystems.clear();
                for s in list {
                    if !UEVENT_SUBSYSTEMS.contains(&s.get_ref().as_str()) {
                        return Err(cx.spanned(
                            s,
                            format!(
                                "unknown subsystem {:?}: expected some of net, block, scsi",
                                s.get_ref()
                            ),
                        ));
                    }
                    uevent.subsystems.push(s.get_ref().clone());
                }
            }
            uevent.devices = cx.patterns(&u.include, &u.exclude)?;
            if let Some(b) = &u.recv_buffer {
                uevent.recv_buffer = cx.int_in(b, "recv_buffer", 4096, 1 << 30)? as usize;
            }
        }

        let history = match &raw.history {
            None => None,
            Some(h) => Some(HistoryConfig {
                path: h
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_HISTORY_PATH)),
                max_age: match &h.max_age {
                    None => None,
                    Some(a) => Some(parse_duration(a.get_ref()).map_err(|e| cx.spanned(a, e))?),
                },
                max_rows: match &h.max_rows {
                    None => None,
                    Some(r) => Some(cx.int_in(r, "max_rows", 1, i64::MAX)? as u64),
                },
            }),
        };

        let mut ingest = IngestConfig::default();
        if let Some(q) = raw.ingest.as_ref().and_then(|i| i.queue.as_ref()) {
            ingest.queue = cx.int_in(q, "queue", 16, 1 << 24)? as usize;
        }

        let mut actions = ActionsConfig::default();
        if let Some(a) = &raw.actions {
            if let Some(m) = &a.max_concurrent {
                actions.max_concurrent = cx.int_in(m, "max_concurrent", 1, 1024)? as usize;
            }
            if let Some(o) = &a.output_limit {
                actions.output_limit = cx.int_in(o, "output_limit", 0, 1 << 24)? as usize;
            }
        }

        let mut monitors: Vec<MonitorConfig> = Vec::with_capacity(raw.monitor.len());
        for m in &raw.monitor {
            let mon = validate_monitor(&cx, m)?;
            if monitors.iter().any(|o| o.name == mon.name) {
                return Err(cx.spanned(
                    &m.name,
                    format!("monitor name {:?} is used twice", mon.name),
                ));
            }
            monitors.push(mon);
        }

        Ok(Config {
            bus,
            expdrv,
            rtnetlink,
            fc,
            uevent,
            history,
            monitors,
            ingest,
            actions,
        })
    }

    /// A configuration for development and demos: the simulator's netlink
    /// protocol and `group`, no D-Bus, no history.
    pub fn simulator(group: u32) -> Config {
        Config {
            bus: BusSelect::None,
            expdrv: ExpdrvConfig {
                netlink_group: group,
                ..ExpdrvConfig::default()
            },
            rtnetlink: RtnetlinkConfig::default(),
            fc: FcConfig::default(),
            uevent: UeventConfig::default(),
            history: None,
            monitors: Vec::new(),
            ingest: IngestConfig::default(),
            actions: ActionsConfig::default(),
        }
    }
}

fn validate_monitor(cx: &Ctx<'_>, m: &RawMonitor) -> Result<MonitorConfig, ConfigError> {
    let name = m.name.get_ref();
    if name.is_empty() || name.len() > MONITOR_NAME_MAX {
        return Err(cx.spanned(
            &m.name,
            format!("monitor name {name:?} must be 1..={MONITOR_NAME_MAX} bytes"),
        ));
    }
    if name.contains('\0') {
        return Err(cx.spanned(&m.name, "monitor name must not hold a NUL"));
    }
    let cat = m.category.get_ref();
    if cat.len() > CATEGORY_NAME_MAX {
        return Err(cx.spanned(
            &m.category,
            format!(
                "category is {} bytes, more than {CATEGORY_NAME_MAX}",
                cat.len()
            ),
        ));
    }
    let category = Category::from_name(cat).ok_or_else(|| {
        cx.spanned(
            &m.category,
            format!("unknown category {cat:?}: expected one of NIC, FC, HA/SS, HA/AM, HA/RS, SPS"),
        )
    })?;
    let keyword = match &m.keyword {
        None => None,
        Some(k) => {
            let s = k.get_ref();
            if s.len() > KEYWORD_MAX {
                return Err(cx.spanned(
                    k,
                    format!("keyword is {} bytes, more than {KEYWORD_MAX}", s.len()),
                ));
            }
            if s.contains('\0') {
                return Err(cx.spanned(k, "keyword must not hold a NUL"));
            }
            (!s.is_empty()).then(|| s.clone())
        }
    };
    let min_severity = match &m.min_severity {
        None => Severity::Error,
        Some(s) => Severity::from_name(s.get_ref()).ok_or_else(|| {
            cx.spanned(
                s,
                format!(
                    "unknown severity {:?}: expected info, warning, error or fatal",
                    s.get_ref()
                ),
            )
        })?,
    };
    let recovery_action = match m.recovery_action.as_ref() {
        None => RecoveryAction::Failover,
        Some(a) => match a.get_ref().as_str() {
            "restart" => RecoveryAction::Restart,
            "failover" => RecoveryAction::Failover,
            "final" => RecoveryAction::Final,
            other => {
                return Err(cx.spanned(
                    a,
                    format!(
                        "unknown recovery_action {other:?}: expected restart, failover or final"
                    ),
                ));
            }
        },
    };
    let adapter = match m.adapter.as_ref() {
        None => AdapterKind::None,
        Some(a) => match a.get_ref().as_str() {
            "exec" => AdapterKind::Exec,
            "expresscluster" => AdapterKind::ExpressCluster,
            "pacemaker" => AdapterKind::Pacemaker,
            "exit-program" => AdapterKind::ExitProgram,
            "none" => AdapterKind::None,
            other => {
                return Err(cx.spanned(
                    a,
                    format!("unknown adapter {other:?}: expected exec, expresscluster, pacemaker, exit-program or none"),
                ))
            }
        },
    };
    if matches!(adapter, AdapterKind::Exec | AdapterKind::ExitProgram) && m.command.is_none() {
        return Err(cx.spanned(
            &m.name,
            format!(
                "monitor {name:?}: adapter {} needs a command",
                adapter.name()
            ),
        ));
    }
    let timeout = match &m.timeout {
        None => Duration::from_secs(10),
        Some(t) => parse_duration(t.get_ref()).map_err(|e| cx.spanned(t, e))?,
    };
    let threshold = match &m.threshold {
        None => Threshold::default(),
        Some(t) => {
            let r = t.get_ref();
            let count = cx.int_in(&r.count, "threshold.count", 1, 1_000_000)? as u32;
            let window = match &r.window {
                Some(w) => parse_duration(w.get_ref()).map_err(|e| cx.spanned(w, e))?,
                None if count > 1 => return Err(cx.spanned(
                    t,
                    "threshold with count > 1 needs a window, e.g. { count = 3, window = \"10s\" }",
                )),
                None => Duration::ZERO,
            };
            Threshold { count, window }
        }
    };
    let grace_period = match &m.grace_period {
        None => Duration::ZERO,
        Some(g) => parse_duration(g.get_ref()).map_err(|e| cx.spanned(g, e))?,
    };
    let restart_limit = match &m.restart_limit {
        None => 1,
        Some(r) => cx.int_in(r, "restart_limit", 0, 1000)? as u32,
    };
    let exit_data = match &m.exit_data {
        None => String::new(),
        Some(d) => {
            if d.get_ref().len() > EXIT_DATA_MAX {
                return Err(cx.spanned(
                    d,
                    format!(
                        "exit_data is {} bytes, more than {EXIT_DATA_MAX}",
                        d.get_ref().len()
                    ),
                ));
            }
            d.get_ref().clone()
        }
    };
    if adapter == AdapterKind::ExitProgram {
        if let Some(c) = &m.command {
            if shlex::split(c).is_some_and(|w| w.len() > 1) {
                return Err(cx.spanned(
                    &m.name,
                    format!("monitor {name:?}: an exit program is called as `PROGRAM ACTION_CODE FBEX0100`: command must be the program alone, got {c:?}"),
                ));
            }
        }
    }
    for (key, cmd) in [("command", &m.command), ("target_check", &m.target_check)] {
        if let Some(c) = cmd {
            if shlex::split(c).is_none_or(|w| w.is_empty()) {
                return Err(cx.spanned(
                    &m.name,
                    format!("monitor {name:?}: {key} {c:?} is empty or badly quoted"),
                ));
            }
        }
    }
    let recovery_target = m.recovery_target.clone().unwrap_or_default();
    if recovery_target.len() > MONITOR_NAME_MAX || recovery_target.contains('\0') {
        return Err(cx.spanned(
            &m.name,
            format!(
                "monitor {name:?}: recovery_target must be at most {MONITOR_NAME_MAX} bytes without NUL (it is passed NUL-padded in 64 bytes)"
            ),
        ));
    }
    if exit_data.contains('\0') {
        return Err(cx.spanned(
            &m.name,
            format!("monitor {name:?}: exit_data must not hold a NUL"),
        ));
    }
    Ok(MonitorConfig {
        name: name.clone(),
        category,
        keyword,
        min_severity,
        recovery_action,
        recovery_target,
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_design_example_parses() {
        let c = parse(
            r#"
bus = "system"
[sources.expdrv]
netlink_protocol = 2
netlink_group = 1
device = "/dev/expdrv0"
[sources.rtnetlink]
enabled = true
[history]
path = "/var/lib/faultbridge/history.db"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"
recovery_action = "failover"
recovery_target = "failover1"
failover_outside_server_group = false
final_action = "none"
adapter = "exec"
command = "/usr/local/bin/on-fault"
timeout = "10s"
"#,
        )
        .unwrap();
        assert_eq!(c.bus, BusSelect::System);
        assert_eq!(c.expdrv.netlink_group, 1);
        assert!(c.rtnetlink.enabled);
        assert_eq!(c.monitors[0].category, Category::Nic);
        assert_eq!(c.monitors[0].keyword.as_deref(), Some("eth0"));
        assert_eq!(c.monitors[0].timeout, Duration::from_secs(10));
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.expdrv, ExpdrvConfig::default());
        assert!(c.monitors.is_empty());
    }

    #[test]
    fn mistakes_name_their_line_and_column() {
        assert_eq!(
            err("bus = \"system\"\n[sources.expdrv]\nnetlink_group = 40\n"),
            "t.toml:3:17: netlink_group = 40: must be in 1..=32"
        );
        let e = err("\n\n[sources.expdrv]\nnetlink_grup = 1\n");
        assert!(
            e.starts_with("t.toml:4:1: unknown field `netlink_grup`"),
            "{e}"
        );
        let e = err("bus = \"sytem\"\n");
        assert!(e.starts_with("t.toml:1:7: bus = \"sytem\""), "{e}");
        let e = err("[[monitor]]\nname = \"a\"\ncategory = \"NlC\"\n");
        assert!(
            e.starts_with("t.toml:3:12: unknown category \"NlC\""),
            "{e}"
        );
        let e = err(
            "[[monitor]]\nname = \"a\"\ncategory = \"NIC\"\n[[monitor]]\nname = \"a\"\ncategory = \"FC\"\n",
        );
        assert!(
            e.starts_with("t.toml:5:8: monitor name \"a\" is used twice"),
            "{e}"
        );
        let e = err("[[monitor]]\nname = \"a\"\ncategory = \"NIC\"\ntimeout = \"10 parsecs\"\n");
        assert!(e.starts_with("t.toml:4:11: unknown duration unit"), "{e}");
        let e = err("bus = [\n");
        assert!(e.starts_with("t.toml:"), "{e}");
    }

    #[test]
    fn oversize_names_are_refused() {
        let long = "k".repeat(1024);
        let e = err(&format!(
            "[[monitor]]\nname = \"a\"\ncategory = \"NIC\"\nkeyword = \"{long}\"\n"
        ));
        assert!(e.contains("keyword is 1024 bytes, more than 1023"), "{e}");
        let e = err(&format!(
            "[[monitor]]\nname = \"{}\"\ncategory = \"NIC\"\n",
            "n".repeat(64)
        ));
        assert!(e.contains("must be 1..=63 bytes"), "{e}");
        let e = err(&format!(
            "[[monitor]]\nname = \"a\"\ncategory = \"{}\"\n",
            "C".repeat(33)
        ));
        assert!(e.contains("more than 32"), "{e}");
        let e = err(&format!(
            "[[monitor]]\nname = \"a\"\ncategory = \"NIC\"\nrecovery_target = \"{}\"\n",
            "t".repeat(64)
        ));
        assert!(
            e.contains("recovery_target must be at most 63 bytes"),
            "{e}"
        );
    }

    #[test]
    fn kernel_source_sections_parse_and_their_mistakes_name_the_line() {
        let c = parse(
            "[sources.expdrv]\ndevice = \"/dev/expdrv0\"\nresync_interval = \"250ms\"\n\
             [sources.rtnetlink]\ninclude = [\"eth*\", \"ens?\"]\nexclude = [\"eth9\"]\n\
             [sources.fc]\nnetlink_protocol = 2\n\
             [sources.uevent]\nsubsystems = [\"net\"]\ninclude = [\"veth*\"]\n",
        )
        .unwrap();
        assert_eq!(c.expdrv.resync_interval, Duration::from_millis(250));
        assert!(c.rtnetlink.enabled && c.fc.enabled && c.uevent.enabled);
        assert!(c.rtnetlink.interfaces.matches("eth0"));
        assert!(c.rtnetlink.interfaces.matches("ens3"));
        assert!(!c.rtnetlink.interfaces.matches("eth9"));
        assert!(!c.rtnetlink.interfaces.matches("wlan0"));
        assert_eq!((c.fc.netlink_protocol, c.fc.netlink_group), (2, 4));
        assert_eq!(c.uevent.subsystems, ["net"]);
        let d = parse("").unwrap();
        assert!(!d.rtnetlink.enabled && !d.fc.enabled && !d.uevent.enabled);
        assert_eq!(d.fc.netlink_protocol, 18);
        let e = err("[sources.uevent]\nsubsystems = [\"net\", \"usb\"]\n");
        assert!(
            e.starts_with("t.toml:2:22: unknown subsystem \"usb\""),
            "{e}"
        );
        let e = err("[sources.rtnetlink]\n\ninclude = [\"\"]\n");
        assert!(e.starts_with("t.toml:3:12: include pattern \"\""), "{e}");
        let e = err("[sources.fc]\nnetlink_group = 0\n");
        assert!(e.starts_with("t.toml:2:17: netlink_group = 0"), "{e}");
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("eth*", "eth0"));
        assert!(glob_match("*", ""));
        assert!(glob_match("e?h*1", "eth0.1"));
        assert!(glob_match("*a*b", "xxaxxb"));
        assert!(!glob_match("eth*", "veth0"));
        assert!(!glob_match("e?h", "eh"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("fast").is_err());
    }
}

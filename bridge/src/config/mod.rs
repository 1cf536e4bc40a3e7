//! The TOML configuration (`/etc/faultbridge/faultbridge.toml`). Its keys
//! are an external contract; a mistake is reported with the file, line and
//! column it is on.
//!
//! - [`raw`]: the file as written (a serde mirror, every value with its span);
//! - [`error`]: [`ConfigError`] and the line/column context every check uses;
//! - [`names`]: enum values spelled by name, parsed in one place;
//! - [`duration`]: `"10s"`-style durations and the bound of each duration key;
//! - [`sources`] and [`monitor`]: the typed sections and their validation;
//! - this module: the whole [`Config`] and its smaller sections.

pub mod duration;
mod error;
pub mod forward;
mod monitor;
pub mod names;
mod raw;
mod sources;
pub mod upgrade;

pub use duration::{DurationBound, parse_duration};
pub use error::ConfigError;
pub use faultbridge_bus::dbus::BusAddress;
pub use forward::NatsForwardConfig;
pub use monitor::{
    ATTRIBUTE_MAX, ATTRIBUTE_PREFIX, AdapterKind, DEFAULT_TIMEOUT, EXIT_DATA_MAX, MONITOR_NAME_MAX,
    MonitorConfig, RecoveryAction, Threshold,
};
pub use sources::{
    Accept, ExpdrvConfig, FcConfig, NamePatterns, RtnetlinkConfig, UEVENT_SUBSYSTEMS, UeventConfig,
    glob_match,
};

use duration::MAX_AGE_BOUND;
use error::Ctx;
use raw::{RawActions, RawConfig, RawHistory, RawIngest};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/faultbridge/faultbridge.toml";
/// The default history database.
pub const DEFAULT_HISTORY_PATH: &str = "/var/lib/faultbridge/history.db";

/// `bus = …`: the bus to serve on, `None` for `bus = "none"`.
pub type BusSelect = Option<BusAddress>;

/// The whole configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// `None`: no D-Bus (`bus = "none"`).
    pub bus: BusSelect,
    pub expdrv: ExpdrvConfig,
    pub rtnetlink: RtnetlinkConfig,
    pub fc: FcConfig,
    pub uevent: UeventConfig,
    pub history: Option<HistoryConfig>,
    pub monitors: Vec<MonitorConfig>,
    pub ingest: IngestConfig,
    pub actions: ActionsConfig,
    /// `[upgrade]`: the live self-upgrade's custom actions.
    pub upgrade: upgrade::UpgradeConfig,
    /// `[forward.nats]`: fleet forwarding, fed from the history database.
    pub forward: Option<NatsForwardConfig>,
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

/// `[history]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    pub path: PathBuf,
    /// Rows older than this are removed.
    pub max_age: Option<Duration>,
    /// At most this many event rows are kept.
    pub max_rows: Option<u64>,
}

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
            cx.at(offset, error::toml_words(e.message().trim_end()))
        })?;
        let bus = bus(&cx, raw.bus.as_ref())?;
        let expdrv = sources::expdrv(&cx, raw.sources.expdrv.as_ref())?;
        let rtnetlink = sources::rtnetlink(&cx, raw.sources.rtnetlink.as_ref())?;
        let fc = sources::fc(&cx, raw.sources.fc.as_ref())?;
        let uevent = sources::uevent(&cx, raw.sources.uevent.as_ref())?;
        let history = raw.history.as_ref().map(|h| history(&cx, h)).transpose()?;
        let ingest = ingest(&cx, raw.ingest.as_ref())?;
        let actions = actions(&cx, raw.actions.as_ref())?;
        let mut monitors: Vec<MonitorConfig> = Vec::with_capacity(raw.monitor.len());
        for m in &raw.monitor {
            let mon = monitor::monitor(&cx, m)?;
            if monitors.iter().any(|o| o.name == mon.name) {
                return Err(cx.spanned(
                    &m.name,
                    format!("monitor name {:?} is used twice", mon.name),
                ));
            }
            monitors.push(mon);
        }
        let upgrade = match &raw.upgrade {
            None => upgrade::UpgradeConfig::default(),
            Some(u) => upgrade::UpgradeConfig::from_raw(u.get_ref().clone())
                .map_err(|e| cx.spanned(u, e.to_string()))?,
        };
        let forward = raw
            .forward
            .as_ref()
            .and_then(|f| f.nats.as_ref())
            .map(|n| forward::nats(&cx, n, history.is_some()))
            .transpose()?;
        Ok(Config {
            forward,
            bus,
            expdrv,
            rtnetlink,
            fc,
            uevent,
            history,
            monitors,
            ingest,
            actions,
            upgrade,
        })
    }

    /// A configuration for development and demos: the simulator's netlink
    /// protocol and `group`, no D-Bus, no history.
    pub fn simulator(group: u32) -> Config {
        Config {
            bus: None,
            expdrv: ExpdrvConfig {
                netlink_group: group,
                // The simulator is a user-space process, run as root.
                accept: Accept::Root,
                ..ExpdrvConfig::default()
            },
            rtnetlink: RtnetlinkConfig::default(),
            fc: FcConfig::default(),
            uevent: UeventConfig::default(),
            history: None,
            monitors: Vec::new(),
            ingest: IngestConfig::default(),
            actions: ActionsConfig::default(),
            upgrade: upgrade::UpgradeConfig::default(),
            forward: None,
        }
    }
}

fn bus(cx: &Ctx<'_>, raw: Option<&Spanned<String>>) -> Result<BusSelect, ConfigError> {
    let Some(b) = raw else {
        return Ok(Some(BusAddress::System));
    };
    match b.get_ref().as_str() {
        "none" => Ok(None),
        s => BusAddress::parse(s).map(Some).map_err(|_| {
            cx.spanned(
                b,
                format!(
                    "bus = {s:?}: expected \"system\", \"session\", \"none\" or a D-Bus address such as \"unix:path=/run/x/bus\""
                ),
            )
        }),
    }
}

fn history(cx: &Ctx<'_>, h: &RawHistory) -> Result<HistoryConfig, ConfigError> {
    Ok(HistoryConfig {
        path: h
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_HISTORY_PATH)),
        max_age: h
            .max_age
            .as_ref()
            .map(|a| cx.duration(a, "max_age", MAX_AGE_BOUND))
            .transpose()?,
        max_rows: h
            .max_rows
            .as_ref()
            .map(|r| cx.int_in(r, "max_rows", 1, i64::MAX).map(|n| n as u64))
            .transpose()?,
    })
}

fn ingest(cx: &Ctx<'_>, raw: Option<&RawIngest>) -> Result<IngestConfig, ConfigError> {
    let mut c = IngestConfig::default();
    if let Some(q) = raw.and_then(|i| i.queue.as_ref()) {
        c.queue = cx.int_in(q, "queue", 16, 1 << 24)? as usize;
    }
    Ok(c)
}

fn actions(cx: &Ctx<'_>, raw: Option<&RawActions>) -> Result<ActionsConfig, ConfigError> {
    let mut c = ActionsConfig::default();
    let Some(a) = raw else { return Ok(c) };
    if let Some(m) = &a.max_concurrent {
        c.max_concurrent = cx.int_in(m, "max_concurrent", 1, 1024)? as usize;
    }
    if let Some(o) = &a.output_limit {
        c.output_limit = cx.int_in(o, "output_limit", 0, 1 << 24)? as usize;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultbridge_ffi::wire::record::Category;

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
        assert_eq!(c.bus, Some(BusAddress::System));
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
    fn the_pacemaker_attribute_is_faultbridge_monitor_unless_written_and_only_pacemaker_has_one() {
        let mon = |extra: &str| {
            parse(&format!(
                "[[monitor]]\nname = \"mrw1\"\ncategory = \"NIC\"\n{extra}"
            ))
            .map(|c| c.monitors[0].clone())
        };
        let m = mon("adapter = \"pacemaker\"\n").unwrap();
        assert_eq!(m.attribute.as_deref(), Some("faultbridge-mrw1"));
        let m =
            mon("adapter = \"pacemaker\"\nattribute = \"eth0-ok\"\nnode = \"node1\"\n").unwrap();
        assert_eq!(m.attribute.as_deref(), Some("eth0-ok"));
        assert_eq!(m.node, "node1");
        let m =
            mon("adapter = \"pacemaker\"\nattribute = \"\"\nrecovery_target = \"web\"\n").unwrap();
        assert_eq!(m.attribute, None);
        let e = mon("adapter = \"pacemaker\"\nattribute = \"\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("does nothing without a recovery_target"),
            "{e}"
        );
        assert_eq!(
            mon("adapter = \"exec\"\ncommand = \"x\"\n")
                .unwrap()
                .attribute,
            None
        );
        let e = mon("adapter = \"exec\"\ncommand = \"x\"\nattribute = \"a\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "t.toml:6:13: monitor \"mrw1\": attribute is for adapter = \"pacemaker\" only"
            ),
            "{e}"
        );
        for bad in ["-U", "a b", "x;y", "é"] {
            let e = mon(&format!("adapter = \"pacemaker\"\nattribute = \"{bad}\"\n")).unwrap_err();
            assert!(
                e.to_string().contains("is not a node attribute name"),
                "{bad}: {e}"
            );
        }
        let e = parse("[[monitor]]\nname = \"a b\"\ncategory = \"NIC\"\nadapter = \"pacemaker\"\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("the default attribute \"faultbridge-a b\""),
            "{e}"
        );
        let e = mon("adapter = \"pacemaker\"\nnode = \"--all\"\n").unwrap_err();
        assert!(e.to_string().contains("not starting with '-'"), "{e}");
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
    fn accept_is_kernel_unless_written_and_other_values_name_the_line() {
        assert_eq!(parse("").unwrap().expdrv.accept, Accept::Kernel);
        assert_eq!(
            Config::simulator(3).expdrv.accept,
            Accept::Root,
            "the simulator is a user-space process run as root"
        );
        for (word, want) in [
            ("kernel", Accept::Kernel),
            ("root", Accept::Root),
            ("any", Accept::Any),
        ] {
            let c = parse(&format!("[sources.expdrv]\naccept = \"{word}\"\n")).unwrap();
            assert_eq!(c.expdrv.accept, want);
        }
        assert_eq!(
            err("[sources.expdrv]\n\naccept = \"nobody\"\n"),
            "t.toml:3:10: unknown accept \"nobody\": expected kernel, root or any"
        );
    }

    #[test]
    fn bus_none_is_no_bus() {
        assert_eq!(parse("bus = \"none\"\n").unwrap().bus, None);
        assert_eq!(
            parse("bus = \"unix:path=/run/x\"\n").unwrap().bus,
            Some(BusAddress::Address("unix:path=/run/x".into()))
        );
    }
}

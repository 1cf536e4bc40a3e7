//! The configuration file as written: a serde mirror of the TOML, every value
//! kept with its span so a mistake can name its line. Nothing here checks a
//! value; [`super::Config::parse`] does.

use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub bus: Option<Spanned<String>>,
    #[serde(default)]
    pub sources: RawSources,
    pub history: Option<RawHistory>,
    pub ingest: Option<RawIngest>,
    #[serde(default)]
    pub monitor: Vec<RawMonitor>,
    pub actions: Option<RawActions>,
    pub upgrade: Option<Spanned<super::upgrade::RawUpgrade>>,
    pub forward: Option<RawForward>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActions {
    pub max_concurrent: Option<Spanned<i64>>,
    pub output_limit: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSources {
    pub expdrv: Option<RawExpdrv>,
    pub rtnetlink: Option<RawRtnetlink>,
    pub fc: Option<RawFc>,
    pub uevent: Option<RawUevent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpdrv {
    pub enabled: Option<bool>,
    pub optional: Option<bool>,
    pub netlink_protocol: Option<Spanned<i64>>,
    pub netlink_group: Option<Spanned<i64>>,
    pub device: Option<PathBuf>,
    pub recv_buffer: Option<Spanned<i64>>,
    pub resync_interval: Option<Spanned<String>>,
    pub accept: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRtnetlink {
    pub enabled: Option<bool>,
    pub optional: Option<bool>,
    pub include: Option<Vec<Spanned<String>>>,
    pub exclude: Option<Vec<Spanned<String>>>,
    pub recv_buffer: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFc {
    pub enabled: Option<bool>,
    pub optional: Option<bool>,
    pub netlink_protocol: Option<Spanned<i64>>,
    pub netlink_group: Option<Spanned<i64>>,
    pub recv_buffer: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUevent {
    pub enabled: Option<bool>,
    pub optional: Option<bool>,
    pub subsystems: Option<Vec<Spanned<String>>>,
    pub include: Option<Vec<Spanned<String>>>,
    pub exclude: Option<Vec<Spanned<String>>>,
    pub recv_buffer: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub path: Option<PathBuf>,
    pub max_age: Option<Spanned<String>>,
    pub max_rows: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngest {
    pub queue: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitor {
    pub name: Spanned<String>,
    pub category: Spanned<String>,
    pub keyword: Option<Spanned<String>>,
    pub min_severity: Option<Spanned<String>>,
    pub recovery_action: Option<Spanned<String>>,
    pub recovery_target: Option<String>,
    pub failover_outside_server_group: Option<bool>,
    pub final_action: Option<String>,
    pub adapter: Option<Spanned<String>>,
    pub command: Option<String>,
    pub timeout: Option<Spanned<String>>,
    pub auto_clear: Option<bool>,
    pub threshold: Option<Spanned<RawThreshold>>,
    pub grace_period: Option<Spanned<String>>,
    pub target_check: Option<String>,
    pub restart_limit: Option<Spanned<i64>>,
    pub exit_data: Option<Spanned<String>>,
    pub attribute: Option<Spanned<String>>,
    pub node: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThreshold {
    pub count: Spanned<i64>,
    pub window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    pub nats: Option<Spanned<RawNats>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNats {
    pub servers: Option<Spanned<Vec<Spanned<String>>>>,
    pub stream: Option<Spanned<String>>,
    pub subject_prefix: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub credentials: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

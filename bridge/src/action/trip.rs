//! The fault that tripped a monitor, and the fields an action gets from it:
//! the `{placeholders}` of a command and the `FAULTBRIDGE_*` environment.

use crate::config::MonitorConfig;
use faultbridge_bus::Source;
use faultbridge_ffi::wire::record::{Category, Severity};

/// The fault that tripped a monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trip {
    pub source: Source,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub category: Category,
    pub severity: Severity,
    pub event_code: u32,
    pub device_index: u32,
    pub keyword: String,
}

/// The `{placeholders}` of command templates, by name (the names of
/// [`crate::argv::PLACEHOLDERS`]).
pub fn variables(m: &MonitorConfig, t: &Trip) -> Vec<(&'static str, String)> {
    let key = if t.keyword.is_empty() {
        t.category.name().to_string()
    } else {
        format!("{}.{}", t.category.name(), t.keyword)
    };
    vec![
        ("monitor", m.name.clone()),
        ("category", t.category.name().to_string()),
        ("keyword", t.keyword.clone()),
        ("key", key),
        ("severity", t.severity.name().to_string()),
        ("event_code", format!("{:#010x}", t.event_code)),
        ("sequence", t.sequence.to_string()),
        ("source", t.source.name().to_string()),
        ("device_index", t.device_index.to_string()),
        ("recovery_action", m.recovery_action.name().to_string()),
        ("recovery_target", m.recovery_target.clone()),
        ("final_action", m.final_action.clone()),
        ("node", m.node.clone()),
    ]
}

/// `FAULTBRIDGE_MONITOR`, `FAULTBRIDGE_CATEGORY`, … for every program an
/// action starts.
pub fn environment(m: &MonitorConfig, t: &Trip) -> Vec<(String, String)> {
    environment_of(variables(m, t))
}

/// The environment of [`environment`] from the [`variables`] already made.
pub fn environment_of(variables: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    variables
        .into_iter()
        .filter(|(k, _)| *k != "key")
        .map(|(k, v)| (format!("FAULTBRIDGE_{}", k.to_ascii_uppercase()), v))
        .collect()
}

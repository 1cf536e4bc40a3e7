//! The `[upgrade]` table: custom actions (`[[upgrade.action]]`) that a
//! live upgrade runs at its steps, checked at load time. The upgrade
//! module runs them.

use serde::Deserialize;
use std::time::Duration;

/// When an action runs (`control`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Control {
    /// During the readiness check (`check`, and the final one of `split`).
    Readiness,
    /// When the daemon starts acting on a side: the Upgrade side at Merge,
    /// the Production side again at an abort from Merge.
    Start,
    /// When a side stops acting: the Production side at Merge, the Upgrade
    /// side at an abort from Merge.
    Stop,
    /// At every step, ordered by `timing`.
    Advanced,
    /// Once merged, before Commit ends the old side.
    Backup,
}

/// Order among the advanced actions of a step (`timing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timing {
    Early,
    #[default]
    Default,
    Late,
}

/// One `[[upgrade.action]]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    pub command: String,
    pub control: Control,
    pub timing: Option<Timing>,
    pub timeout: Option<String>,
}

/// The `[upgrade]` table as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpgrade {
    #[serde(default)]
    pub action: Vec<RawAction>,
}

/// A checked custom action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeAction {
    /// As written, for the activity log.
    pub command: String,
    /// Split shell-style; `argv[0]` is an absolute path.
    pub argv: Vec<String>,
    pub control: Control,
    pub timing: Timing,
    pub timeout: Duration,
}

/// The `[upgrade]` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// In the order written (advanced ones run sorted by timing, stably).
    pub actions: Vec<UpgradeAction>,
}

/// A mistake in `[upgrade]`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeConfigError {
    #[error(
        "upgrade.action[{index}]: command {command:?} cannot be split shell-style (unclosed quote?) or is empty"
    )]
    CommandSplit { index: usize, command: String },
    #[error("upgrade.action[{index}]: command {program:?} must be an absolute path")]
    CommandNotAbsolute { index: usize, program: String },
    #[error("upgrade.action[{index}]: timeout: {reason}")]
    Timeout { index: usize, reason: String },
    #[error("upgrade.action[{index}]: timing is for control = \"advanced\" only")]
    TimingNotAdvanced { index: usize },
}

/// The timeout of an action that names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl UpgradeConfig {
    /// Checks what was written.
    pub fn from_raw(raw: RawUpgrade) -> Result<UpgradeConfig, UpgradeConfigError> {
        let mut actions = Vec::with_capacity(raw.action.len());
        for (index, a) in raw.action.into_iter().enumerate() {
            let argv = shlex::split(&a.command)
                .filter(|w| !w.is_empty())
                .ok_or_else(|| UpgradeConfigError::CommandSplit {
                    index,
                    command: a.command.clone(),
                })?;
            if !argv[0].starts_with('/') {
                return Err(UpgradeConfigError::CommandNotAbsolute {
                    index,
                    program: argv[0].clone(),
                });
            }
            if a.timing.is_some() && a.control != Control::Advanced {
                return Err(UpgradeConfigError::TimingNotAdvanced { index });
            }
            let timeout = match &a.timeout {
                None => DEFAULT_TIMEOUT,
                Some(t) => crate::config::parse_duration(t)
                    .and_then(|d| {
                        if d.is_zero() {
                            Err("must be more than 0".to_string())
                        } else {
                            Ok(d)
                        }
                    })
                    .map_err(|reason| UpgradeConfigError::Timeout { index, reason })?,
            };
            actions.push(UpgradeAction {
                command: a.command,
                argv,
                control: a.control,
                timing: a.timing.unwrap_or_default(),
                timeout,
            });
        }
        Ok(UpgradeConfig { actions })
    }

    /// The actions of `control`, in the order they run.
    pub fn of(&self, control: Control) -> Vec<&UpgradeAction> {
        let mut v: Vec<&UpgradeAction> = self
            .actions
            .iter()
            .filter(|a| a.control == control)
            .collect();
        // Stable: equal timings keep the order written.
        v.sort_by_key(|a| a.timing);
        v
    }
}

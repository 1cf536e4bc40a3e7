//! Live self-upgrade: a new build of faultbridge takes over from the running
//! daemon without a fault going unheard, following the Active Upgrade model
//! (split, merge, then commit or abort). See `docs/upgrade.md`.
//!
//! - [`state`]: the state model, pure.
//! - [`actions`]: `[[upgrade.action]]` custom actions and their runner.

pub mod actions;
pub mod state;

pub use actions::{RawUpgrade, UpgradeAction, UpgradeConfig, UpgradeConfigError};
pub use state::{Command, Machine, Operational, Refused, Request, Side, Step, UpgradeState};

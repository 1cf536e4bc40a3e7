//! faultbridge: bridges hardware fault messages from the expanded device
//! driver (and the kernel's own fault reports) to the software that must
//! react to them.
//!
//! Embedding the bridge takes a few lines: start it, subscribe, receive.
//! See [`Bridge`].
#![forbid(unsafe_code)]

pub mod action;
pub mod activity;
pub mod argv;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod error;
pub mod forward;
pub mod health;
pub mod history;
pub mod monitor;
pub mod notify;
pub mod signals;
pub mod sim;
pub mod sources;
pub mod stats;
pub mod systemd;
pub mod text;
pub mod upgrade;

pub use config::Config;
pub use daemon::{Bridge, BridgeError, Control, ControlHandle};
pub use faultbridge_bus::{
    Event, Fault, FaultKind, Filter, Lost, LostReason, Source, SubscribeOptions, Subscription,
};
pub use notify::{NotifyError, NotifyRequest};
pub use stats::{SourceSnapshot, StatsSnapshot};

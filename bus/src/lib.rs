//! faultbridge's event model and in-process fan-out.
//!
//! One [`Publisher`] (the ingest thread) hands every fault to any number of
//! [`Subscription`]s. Each subscriber has its own bounded queue and an
//! optional [`Filter`]; the publisher never blocks: when a subscriber's queue
//! is full the record is dropped *for that subscriber only*, counted, and the
//! subscriber receives a [`Lost`] event with the count and sequence range at
//! the place in its stream where the records went missing.
//!
//! Publishing allocates nothing once a subscriber's pool has grown to the
//! load: each subscriber owns a pool of record buffers that travel with the
//! events and come back when an event is dropped; the pool and the queue grow
//! on demand within the subscription's bound and shrink after a storm.
//!
//! [`dbus`] (feature `dbus`, on by default) is the D-Bus service
//! (`org.faultbridge.Bridge1`), one such subscriber, and the client side of
//! it; an in-process consumer builds without it (and without zbus) using
//! `default-features = false`.
#![forbid(unsafe_code)]

#[cfg(feature = "dbus")]
pub mod dbus;
pub mod event;
pub mod fanout;
pub mod monitor;
mod pool;

pub use event::{Event, Fault, FaultKind, Filter, Lost, LostReason, Source};
pub use fanout::{
    BacklogProbe, BusHandle, Publisher, PublisherStats, SubscribeOptions, Subscription,
    SubscriptionStats, bus,
};
pub use monitor::MonitorState;

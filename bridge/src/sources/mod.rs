//! Fault sources. Each has its own name (`Fault(source, …)`), its own
//! counters and its own configuration section; the ingest loop polls them.

pub mod expdrv;
pub mod seq;

use crate::stats::SourceCounters;
use faultbridge_bus::{Publisher, Source};
use std::io;
use std::os::fd::RawFd;

/// A source the ingest loop polls: a descriptor that becomes readable, and
/// a handler that drains it, parses and publishes.
pub trait IngestSource: Send + std::fmt::Debug {
    /// The name of the source (`Fault(source, …)`, counters).
    fn source(&self) -> Source;
    /// The descriptor to poll for readability (edge-triggered: drain fully).
    fn raw_fd(&self) -> RawFd;
    /// Reads until the descriptor would block; returns the records published.
    fn on_readable(&mut self, out: &mut Publisher, counters: &SourceCounters) -> io::Result<u64>;
}

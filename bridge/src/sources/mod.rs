//! Fault sources. Each has its own name (`Fault(source, …)`), its own
//! counters and its own configuration section; the ingest loop polls them.

pub mod expdrv;
pub mod seq;

//! What every action shares: the activity log, the runner's counters, the
//! output bound, and the daemon's stop.

use super::process::Stop;
use crate::activity::ActivityLog;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Counters of the runner.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub started: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    pub coalesced: AtomicU64,
    pub not_performed: AtomicU64,
    /// Actions not started because a fault field would have become an
    /// option of the program.
    pub refused: AtomicU64,
}

/// What every action needs besides its monitor and its fault.
#[derive(Debug)]
pub struct Context {
    pub activity: Arc<ActivityLog>,
    pub stats: Arc<RunnerStats>,
    /// Bytes of stdout and of stderr kept per program.
    pub output_limit: usize,
    pub stop: Stop,
}

//! A subscription's pool of record buffers: a [`crate::event::Fault`]
//! gives its buffer back to the pool it came from when it is dropped, and
//! the publisher takes the next record's buffer from it.

use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The largest record buffer a pool keeps for reuse; a larger one is freed
/// as it comes back (records are at most 64 KiB + 72 bytes, most are a few
/// hundred bytes).
pub const POOL_KEEP_BYTES: usize = 4096;

/// A subscription's record buffers: the idle ones, and how many exist.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) free: Sender<Vec<u8>>,
    /// Buffers in existence (idle, queued or held by the subscriber). Only
    /// the publisher adds to it; a buffer freed instead of kept subtracts.
    pub(crate) allocated: AtomicUsize,
}

impl Pool {
    /// Takes back a buffer of a dropped fault, or frees it when the pool
    /// already keeps enough idle ones (or the subscription is gone).
    pub(crate) fn put(&self, buf: Vec<u8>) {
        // A buffer a large record grew (a detail of tens of KiB) is not
        // kept: 512 of them would hold tens of MiB after one such storm.
        if buf.capacity() > POOL_KEEP_BYTES {
            drop(buf);
            self.allocated.fetch_sub(1, Relaxed);
            return;
        }
        if let Err(e) = self.free.try_send(buf) {
            drop(e.into_inner());
            self.allocated.fetch_sub(1, Relaxed);
        }
    }
}

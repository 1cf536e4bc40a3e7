//! Stop signals taken synchronously, for the daemon and the simulator.

use nix::sys::signal::{SigSet, Signal};

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts) so
/// they can be taken synchronously with `sigwait`.
pub fn block_stop_signals() -> nix::Result<SigSet> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;
    Ok(set)
}

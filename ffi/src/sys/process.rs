//! Process set-up that needs a hook between `fork` and `exec`.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the program `cmd` starts the leader of a new session (`setsid`),
/// so it has no controlling terminal and outlives the process that started
/// it and that process's session (like `setsid(1)`).
pub fn new_session(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe functions may be called; it calls setsid(2)
    // only, which is, allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        })
    }
}

//! Process set-up that needs a hook between `fork` and `exec`, and
//! descriptors passed to another process.

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

/// Descriptors passed between processes over a Unix stream socket
/// (`SCM_RIGHTS`): a live upgrade hands the running daemon's sockets to
/// the new one, so every record unread in them is read by exactly one of
/// the two.
pub mod fdpass {
    use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
    use std::io::{self, IoSlice, IoSliceMut};
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

    /// Descriptors one message may carry at most.
    pub const MAX_FDS: usize = 64;

    /// Sends all of `data` on the stream socket `sock`, with `fds` attached to
    /// its first byte. The descriptors stay open here (the receiver gets
    /// duplicates).
    pub fn send_with_fds(
        sock: BorrowedFd<'_>,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} descriptors, more than {MAX_FDS} in one message",
                    fds.len()
                ),
            ));
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let mut sent = 0;
        while sent < data.len() {
            let iov = [IoSlice::new(&data[sent..])];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
                &cmsg
            } else {
                &[]
            };
            match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Receives up to `buf.len()` bytes from the stream socket `sock`, and the
    /// descriptors that came with them (owned now; closed when dropped).
    /// Returns 0 bytes at end of file.
    pub fn recv_with_fds(
        sock: BorrowedFd<'_>,
        buf: &mut [u8],
    ) -> io::Result<(usize, Vec<OwnedFd>)> {
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        loop {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = match recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut fds = Vec::new();
            let cmsgs = msg.cmsgs().map_err(io::Error::from)?;
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        // SAFETY: the kernel installed `fd` in this process for
                        // this message (SCM_RIGHTS); nothing else refers to it,
                        // so `OwnedFd` may take sole ownership and close it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            let n = msg.bytes;
            if truncated {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "descriptors were cut off (more than fit one message)",
                ));
            }
            return Ok((n, fds));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;

        #[test]
        fn a_descriptor_crosses_with_its_bytes() {
            let (a, b) = UnixStream::pair().unwrap();
            let (mut p, mut q) = UnixStream::pair().unwrap();
            send_with_fds(a.as_fd(), b"hello\n", &[q.as_fd()]).unwrap();
            let mut buf = [0u8; 64];
            let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello\n");
            assert_eq!(fds.len(), 1);
            // The received descriptor is the same socket.
            let mut got = UnixStream::from(fds.into_iter().next().unwrap());
            got.write_all(b"x").unwrap();
            let mut one = [0u8; 1];
            p.read_exact(&mut one).unwrap();
            assert_eq!(&one, b"x");
            let _ = q.flush();
            drop(a);
            let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
            assert_eq!((n, fds.len()), (0, 0));
        }
    }
}

/// Restores the default action of `SIGPIPE` (end the process), as a filter
/// has it: a client command whose reader has gone (`faultbridge history |
/// head -1`) ends quietly at its next write, like any Unix tool, instead of
/// failing on `EPIPE`. Call it before any other thread starts.
pub fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: `SigDfl` installs no handler, so no code of ours runs in
    // signal context; the caller has not started other threads, so no
    // other thread is changing signal dispositions at the same time.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Makes the program `cmd` starts find `fd` open as descriptor `target`
/// (inherited across `exec`, like a shell's `3>&1`); `fd` itself is closed
/// here once `cmd` has been spawned and dropped.
pub fn pass_fd(cmd: &mut Command, fd: std::os::fd::OwnedFd, target: i32) -> &mut Command {
    use std::os::fd::AsRawFd;
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe functions may be called; it calls dup2(2)
    // only (async-signal-safe), which allocates nothing and touches no
    // lock. dup2 leaves the new descriptor without FD_CLOEXEC, so it
    // survives exec; `fd` (close-on-exec, owned by the closure) does not.
    unsafe {
        cmd.pre_exec(move || {
            if fd.as_raw_fd() == target {
                // Already there: clear close-on-exec instead.
                let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD)?;
                let flags =
                    nix::fcntl::FdFlag::from_bits_truncate(flags) & !nix::fcntl::FdFlag::FD_CLOEXEC;
                nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(flags))?;
                return Ok(());
            }
            match libc_dup2(fd.as_raw_fd(), target) {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        })
    }
}

fn libc_dup2(from: i32, to: i32) -> i32 {
    // SAFETY: dup2 on two descriptor numbers: it reads no memory of ours;
    // `from` is open (owned by the caller), `to` is replaced atomically.
    unsafe { libc::dup2(from, to) }
}

/// Takes descriptor `n`, inherited from the parent (see [`pass_fd`]), if it
/// is open; `None` otherwise. Call it once per descriptor: the result owns
/// it.
pub fn take_inherited_fd(n: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{BorrowedFd, FromRawFd};
    if n < 3 {
        return None;
    }
    // SAFETY: `n` is only borrowed for the F_GETFD probe below, which
    // fails with EBADF (and touches nothing) when it is not open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(n) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).ok()?;
    // SAFETY: `n` is open (checked above) and was passed to this process
    // to own; nothing else in the process refers to it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(n) })
}

/// Lowers the calling thread's scheduling priority to nice value `nice`
/// (Linux keeps a nice value per thread): a thread off the hot path, such
/// as the fleet forwarder, then yields the CPU to the ingest thread when
/// both are runnable. Raising it back needs CAP_SYS_NICE.
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority(2) takes no pointers; with PRIO_PROCESS and who 0
    // it changes the calling thread only; the return value is checked.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

//! A doorbell: how one thread wakes another that sleeps until there is
//! work, through a pair of connected unix stream sockets.
//!
//! A socket rather than a futex (what a channel's blocking receive parks
//! on) for the latency: a send on a unix socket wakes its reader *synchronously*
//! (`WF_SYNC`), which tells the scheduler that the writer is about to
//! sleep, so the reader is run on the writer's CPU when that CPU is about
//! to be free instead of on another, idle one. Waking an idle CPU costs an
//! inter-processor interrupt and the CPU's exit from its idle state — tens
//! of microseconds under a hypervisor — which the ingest thread, about to
//! go back to `epoll_wait`, saves its subscribers this way.
//!
//! Both ends are non-blocking: [`Bell::ring`] never blocks the ringing
//! thread (a full socket buffer already holds a ring) and never raises
//! `SIGPIPE` (`MSG_NOSIGNAL`), and [`Door::wait`] sleeps in `ppoll`. When
//! the bell is dropped, a waiting thread wakes and [`Door::wait`] reports
//! [`Waited::Closed`].

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use nix::sys::time::TimeSpec;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The ringing end.
#[derive(Debug)]
pub struct Bell(OwnedFd);

/// The waiting end.
#[derive(Debug)]
pub struct Door(OwnedFd);

/// How a [`Door::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The bell rang (once or more since the last wait).
    Rang,
    /// The deadline passed.
    Timeout,
    /// The bell was dropped.
    Closed,
}

/// A new doorbell: the bell for the waking thread, the door for the one
/// that waits.
pub fn doorbell() -> io::Result<(Bell, Door)> {
    let (w, r) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Bell(w), Door(r)))
}

impl Bell {
    /// Wakes the waiting thread, or the next wait if none waits now.
    pub fn ring(&self) {
        // EAGAIN: the socket is full of rings the door has not yet taken,
        // which wake it as well as this one would. EPIPE: the door is gone,
        // nobody to wake.
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let _ = send(self.0.as_raw_fd(), &[1], flags);
    }
}

impl Door {
    /// Sleeps until the bell rings (a ring since the last wait counts),
    /// until `deadline` (`None`: no deadline), or until the bell is
    /// dropped. Takes every pending ring.
    pub fn wait(&self, deadline: Option<Instant>) -> Waited {
        loop {
            if let Some(w) = self.take() {
                return w;
            }
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Waited::Timeout;
                    }
                    Some(TimeSpec::from_duration(left))
                }
            };
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            match ppoll(&mut fds, timeout, None) {
                Ok(0) => return Waited::Timeout,
                Ok(_) | Err(Errno::EINTR) => {}
                // ppoll on one valid descriptor fails only for want of
                // memory; sleep a little rather than spin.
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Takes the pending rings without sleeping: `None` if there is none.
    fn take(&self) -> Option<Waited> {
        let mut buf = [0u8; 64];
        let mut rang = false;
        loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Some(Waited::Closed),
                Ok(n) if n < buf.len() => return Some(Waited::Rang),
                Ok(_) => rang = true,
                Err(Errno::EINTR) => {}
                Err(_) => return rang.then_some(Waited::Rang),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_before_the_wait_is_not_lost() {
        let (bell, door) = doorbell().unwrap();
        bell.ring();
        bell.ring();
        assert_eq!(door.wait(None), Waited::Rang);
        let t0 = Instant::now();
        assert_eq!(
            door.wait(Some(t0 + Duration::from_millis(30))),
            Waited::Timeout
        );
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_ring_wakes_a_sleeping_waiter_and_dropping_the_bell_too() {
        let (bell, door) = doorbell().unwrap();
        let t = std::thread::spawn(move || (door.wait(None), door.wait(None)));
        std::thread::sleep(Duration::from_millis(20));
        bell.ring();
        std::thread::sleep(Duration::from_millis(20));
        drop(bell);
        assert_eq!(t.join().unwrap(), (Waited::Rang, Waited::Closed));
    }

    #[test]
    fn many_rings_never_block_the_ringer() {
        let (bell, door) = doorbell().unwrap();
        for _ in 0..100_000 {
            bell.ring();
        }
        assert_eq!(door.wait(None), Waited::Rang);
        assert_eq!(
            door.wait(Some(Instant::now() + Duration::from_millis(1))),
            Waited::Timeout
        );
    }
}

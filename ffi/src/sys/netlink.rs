//! A netlink socket, as `ip monitor` opens one: `socket(AF_NETLINK,
//! SOCK_RAW)`, bind, join multicast groups, a large receive buffer, and a
//! `recv` that reports truncation and overruns instead of failing on them.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use thiserror::Error;

/// `NETLINK_ROUTE`.
pub const NETLINK_ROUTE: i32 = libc::NETLINK_ROUTE;
/// `NETLINK_USERSOCK`: the simulator's protocol.
pub const NETLINK_USERSOCK: i32 = libc::NETLINK_USERSOCK;
/// `NETLINK_SCSITRANSPORT`.
pub const NETLINK_SCSITRANSPORT: i32 = libc::NETLINK_SCSITRANSPORT;
/// `NETLINK_KOBJECT_UEVENT`.
pub const NETLINK_KOBJECT_UEVENT: i32 = libc::NETLINK_KOBJECT_UEVENT;

/// A failed netlink socket operation; the source error is not repeated.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetlinkError {
    #[error("cannot open a netlink socket of protocol {protocol}")]
    SocketOpen {
        protocol: i32,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the netlink socket")]
    SocketBind(#[source] io::Error),
    #[error("cannot join netlink multicast group {group}")]
    JoinGroup {
        group: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the netlink socket option {option}")]
    SetOption {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the netlink socket's address")]
    SocketName(#[source] io::Error),
}

/// The outcome of one [`NetlinkSocket::recv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recv {
    /// A datagram of `len` bytes, of which the first `stored` are in the
    /// buffer (`stored < len` when the buffer was too small: `MSG_TRUNC`).
    Datagram { len: usize, stored: usize },
    /// `ENOBUFS`: the socket's receive queue overflowed and messages were
    /// lost. Not an error: the caller reports it as an overrun and goes on.
    Overrun,
    /// Nothing to read on a non-blocking socket.
    WouldBlock,
}

/// What [`NetlinkSocket::set_recv_buffer`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvBuffer {
    /// `SO_RCVBUFFORCE` was permitted (`CAP_NET_ADMIN`); otherwise `SO_RCVBUF`
    /// was used and capped at `net.core.rmem_max`.
    pub forced: bool,
    /// The size the kernel reports (`SO_RCVBUF` read back, doubled by the kernel).
    pub effective: usize,
}

/// An `AF_NETLINK` `SOCK_RAW` socket.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
    protocol: i32,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn sockaddr_nl(pid: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: `sockaddr_nl` is a plain C struct of integers, for which all-zero
    // bytes are a valid value (and the required value of `nl_pad`).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_pid = pid;
    sa.nl_groups = groups;
    sa
}

/// The bind mask bit of multicast group `group` (1..=32); 0 for others.
pub const fn group_mask(group: u32) -> u32 {
    if group >= 1 && group <= 32 {
        1 << (group - 1)
    } else {
        0
    }
}

impl NetlinkSocket {
    /// Opens a non-blocking, close-on-exec netlink socket of `protocol`.
    pub fn open(protocol: i32) -> Result<Self, NetlinkError> {
        // SAFETY: socket(2) takes no pointers; a negative return is checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                protocol,
            )
        };
        if fd < 0 {
            return Err(NetlinkError::SocketOpen {
                protocol,
                source: last_err(),
            });
        }
        // SAFETY: `fd` was just returned by socket(2), is open, and is owned by
        // nothing else, so `OwnedFd` may take sole ownership and close it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(NetlinkSocket { fd, protocol })
    }

    /// Wraps an already-open netlink socket (inherited, or handed over by a
    /// running daemon during an upgrade).
    pub fn from_fd(fd: OwnedFd, protocol: i32) -> Self {
        NetlinkSocket { fd, protocol }
    }

    /// The protocol the socket was opened with.
    pub fn protocol(&self) -> i32 {
        self.protocol
    }

    /// Binds to port `pid` (0: the kernel picks one) and the multicast groups
    /// of the `groups` bit mask (groups 1..=32).
    pub fn bind(&self, pid: u32, groups: u32) -> Result<(), NetlinkError> {
        let sa = sockaddr_nl(pid, groups);
        // SAFETY: `sa` is a live, initialised `sockaddr_nl` and the length
        // passed is exactly its size; the descriptor is open (owned by self).
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::SocketBind(last_err()));
        }
        Ok(())
    }

    /// Joins multicast group `group` with `NETLINK_ADD_MEMBERSHIP` (any group
    /// number, unlike the 32-bit bind mask). Receiving multicast on most
    /// protocols needs `CAP_NET_ADMIN`.
    pub fn join_group(&self, group: u32) -> Result<(), NetlinkError> {
        self.setsockopt_u32(libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, group)
            .map_err(|source| NetlinkError::JoinGroup { group, source })
    }

    fn setsockopt_u32(&self, level: i32, name: i32, value: u32) -> io::Result<()> {
        // SAFETY: `value` is a live u32 and the length passed is its size; the
        // kernel only reads it. The descriptor is open (owned by self).
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&value as *const u32).cast(),
                size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(last_err()) } else { Ok(()) }
    }

    fn getsockopt_u32(&self, level: i32, name: i32) -> io::Result<u32> {
        let mut value: u32 = 0;
        let mut len = size_of::<u32>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live and writable; `len` holds the size
        // of `value`, so the kernel writes at most that many bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&mut value as *mut u32).cast(),
                &mut len,
            )
        };
        if rc < 0 { Err(last_err()) } else { Ok(value) }
    }

    /// Sets the receive buffer to `bytes`: `SO_RCVBUFFORCE` when permitted
    /// (root or `CAP_NET_ADMIN`), else `SO_RCVBUF` (capped by `rmem_max`).
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<RecvBuffer, NetlinkError> {
        let want = bytes.min(i32::MAX as usize) as u32;
        let forced = self
            .setsockopt_u32(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want)
            .is_ok();
        if !forced {
            self.setsockopt_u32(libc::SOL_SOCKET, libc::SO_RCVBUF, want)
                .map_err(|source| NetlinkError::SetOption {
                    option: "SO_RCVBUF",
                    source,
                })?;
        }
        let effective = self
            .getsockopt_u32(libc::SOL_SOCKET, libc::SO_RCVBUF)
            .map_err(|source| NetlinkError::SetOption {
                option: "SO_RCVBUF",
                source,
            })? as usize;
        Ok(RecvBuffer { forced, effective })
    }

    /// Sets `NETLINK_NO_ENOBUFS`. Never set by faultbridge itself: it makes
    /// overruns silent. Exposed so tests can show what it would hide.
    pub fn set_no_enobufs(&self, on: bool) -> Result<(), NetlinkError> {
        self.setsockopt_u32(libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, on as u32)
            .map_err(|source| NetlinkError::SetOption {
                option: "NETLINK_NO_ENOBUFS",
                source,
            })
    }

    /// The port id the kernel assigned (`getsockname`).
    pub fn port_id(&self) -> Result<u32, NetlinkError> {
        let mut sa = sockaddr_nl(0, 0);
        let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `sa` and `len` are live and writable; `len` holds the size of
        // `sa`, so the kernel writes at most that many bytes.
        let rc = unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                (&mut sa as *mut libc::sockaddr_nl).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::SocketName(last_err()));
        }
        Ok(sa.nl_pid)
    }

    /// Receives one datagram into `buf` with `MSG_TRUNC`, so a datagram larger
    /// than `buf` is reported with its real length instead of being cut
    /// silently. `EINTR` is retried; `ENOBUFS` is [`Recv::Overrun`].
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Recv> {
        loop {
            // SAFETY: `buf` is a live, writable slice and the length passed is
            // its length, so the kernel writes within it (MSG_TRUNC only changes
            // the returned length, not how much is written).
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n >= 0 {
                let len = n as usize;
                return Ok(Recv::Datagram {
                    len,
                    stored: len.min(buf.len()),
                });
            }
            let err = last_err();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => return Ok(Recv::Overrun),
                Some(libc::EAGAIN) => return Ok(Recv::WouldBlock),
                _ => return Err(err),
            }
        }
    }

    /// Sends `buf` to the multicast group mask `groups` (port 0, the kernel).
    /// On `NETLINK_USERSOCK` the kernel delivers the multicast and then fails
    /// the unicast to port 0 with `ECONNREFUSED`: that counts as sent.
    pub fn send_to_groups(&self, groups: u32, buf: &[u8]) -> io::Result<usize> {
        self.send_to(0, groups, buf)
    }

    /// Sends `buf` to port `pid` and/or the multicast group mask `groups`.
    pub fn send_to(&self, pid: u32, groups: u32, buf: &[u8]) -> io::Result<usize> {
        let sa = sockaddr_nl(pid, groups);
        loop {
            // SAFETY: `buf` is a live slice of the length passed and `sa` a live
            // `sockaddr_nl` of the size passed; the kernel only reads both.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&sa as *const libc::sockaddr_nl).cast(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = last_err();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECONNREFUSED) if groups != 0 => return Ok(buf.len()),
                _ => return Err(err),
            }
        }
    }

    /// Makes the socket blocking (`false`) or non-blocking (`true`).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = fcntl(&self.fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let mut flags = OFlag::from_bits_truncate(flags);
        flags.set(OFlag::O_NONBLOCK, on);
        fcntl(&self.fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        Ok(())
    }

    /// Gives up the descriptor (for a hand-over to another process).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for NetlinkSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetlinkSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

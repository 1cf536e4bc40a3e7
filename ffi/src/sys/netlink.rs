//! A netlink socket, as `ip monitor` opens one: `socket(AF_NETLINK,
//! SOCK_RAW)`, bind, join multicast groups, a large receive buffer, and a
//! `recv` that reports truncation and overruns instead of failing on them.
//!
//! The toolkit every source uses: [`NetlinkSocket::open_joined`] opens,
//! sizes, binds and joins in one call; a [`NetlinkReceiver`] receives with
//! `recvmsg` into its own buffer and hands out each datagram as a `&[u8]`
//! with its [`Sender`] (port id, groups and, with `SO_PASSCRED`, the
//! sender's `SCM_CREDENTIALS`), ready to be authenticated: the kernel sends
//! from port id 0, a user-space process from its own port id, as udev
//! checks it.

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

/// Who sent a datagram, as `recvmsg` tells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sender {
    /// The sender's port id (`nl_pid`): 0 for the kernel, never 0 for a
    /// user-space socket.
    pub port: u32,
    /// The multicast group mask it was sent to (`nl_groups`; 0 for unicast).
    pub groups: u32,
    /// `SCM_CREDENTIALS`, present when the socket has `SO_PASSCRED` set.
    pub credentials: Option<Credentials>,
}

impl Sender {
    /// Sent by the kernel (port id 0).
    pub const fn is_kernel(&self) -> bool {
        self.port == 0
    }
}

/// The sender's credentials (`struct ucred`), in this process's namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// How to open a socket that listens to one multicast group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The netlink protocol (`NETLINK_ROUTE`, `NETLINK_USERSOCK`, …).
    pub protocol: i32,
    /// The multicast group (1..=32 through the bind mask, any other
    /// through `NETLINK_ADD_MEMBERSHIP`; 0 for none).
    pub group: u32,
    /// The receive buffer to ask for, in bytes.
    pub recv_buffer: usize,
    /// Set `SO_PASSCRED`, so each datagram comes with its sender's
    /// credentials.
    pub pass_credentials: bool,
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

/// What a receive call that returned `n` (into a buffer of `cap` bytes,
/// with `MSG_TRUNC`) got: a datagram of `n` bytes, an overrun (`ENOBUFS`),
/// nothing (`EAGAIN`) or an error; `None` when it was interrupted
/// (`EINTR`) and is to be made again.
fn received(n: isize, cap: usize) -> Option<io::Result<Recv>> {
    if n >= 0 {
        let len = n as usize;
        return Some(Ok(Recv::Datagram {
            len,
            stored: len.min(cap),
        }));
    }
    let err = last_err();
    match err.raw_os_error() {
        Some(libc::EINTR) => None,
        Some(libc::ENOBUFS) => Some(Ok(Recv::Overrun)),
        Some(libc::EAGAIN) => Some(Ok(Recv::WouldBlock)),
        _ => Some(Err(err)),
    }
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

    /// Opens a socket of `m.protocol`, sets its receive buffer, binds it to
    /// a port the kernel picks and joins `m.group` (and sets `SO_PASSCRED`
    /// when asked): everything a listening source needs, in one call.
    pub fn open_joined(m: &Membership) -> Result<Self, NetlinkError> {
        let sock = NetlinkSocket::open(m.protocol)?;
        sock.set_recv_buffer(m.recv_buffer)?;
        let mask = group_mask(m.group);
        sock.bind(0, mask)?;
        if mask == 0 && m.group != 0 {
            sock.join_group(m.group)?;
        }
        if m.pass_credentials {
            sock.set_pass_credentials(true)?;
        }
        Ok(sock)
    }

    /// Sets `SO_PASSCRED`: every datagram received afterwards carries its
    /// sender's `SCM_CREDENTIALS` (the kernel attaches them; a sender
    /// cannot leave them out or forge them without `CAP_SYS_ADMIN`).
    pub fn set_pass_credentials(&self, on: bool) -> Result<(), NetlinkError> {
        self.setsockopt_u32(libc::SOL_SOCKET, libc::SO_PASSCRED, on as u32)
            .map_err(|source| NetlinkError::SetOption {
                option: "SO_PASSCRED",
                source,
            })
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
            if let Some(r) = received(n, buf.len()) {
                return r;
            }
        }
    }

    /// Like [`recv`](Self::recv), with `recvfrom`: also says the sender's
    /// address (its port id and groups), at almost the cost of `recv`
    /// (`recvmsg` copies a message header and an iovec in and out as well).
    /// No credentials: see [`recv_from`](Self::recv_from).
    pub fn recv_addr(&self, buf: &mut [u8]) -> io::Result<(Recv, Sender)> {
        loop {
            let mut sa = sockaddr_nl(0, 0);
            let mut sa_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` is a live, writable slice of the length passed;
            // `sa` is a live `sockaddr_nl` and `sa_len` holds its size, so
            // the kernel writes at most that many bytes of address into it.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    (&mut sa as *mut libc::sockaddr_nl).cast(),
                    &mut sa_len,
                )
            };
            let r = match received(n, buf.len()) {
                None => continue,
                Some(r) => r?,
            };
            let from = match r {
                Recv::Datagram { .. } => Sender {
                    port: sa.nl_pid,
                    groups: sa.nl_groups,
                    credentials: None,
                },
                Recv::Overrun | Recv::WouldBlock => Sender::default(),
            };
            return Ok((r, from));
        }
    }

    /// Whether `SO_PASSCRED` is set (datagrams come with their sender's
    /// credentials).
    pub fn passes_credentials(&self) -> io::Result<bool> {
        nix::sys::socket::getsockopt(&self.fd, nix::sys::socket::sockopt::PassCred)
            .map_err(io::Error::from)
    }

    /// Like [`recv`](Self::recv), with `recvmsg`: also says who sent the
    /// datagram (its address, and its credentials when `SO_PASSCRED` is
    /// set). `EINTR` is retried; `ENOBUFS` is [`Recv::Overrun`].
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(Recv, Sender)> {
        const CMSG_SPACE: usize = 64;
        // Room for one SCM_CREDENTIALS control message, 8-byte aligned.
        #[repr(C, align(8))]
        struct Control([u8; CMSG_SPACE]);
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes from their argument.
        let (space, need) = unsafe {
            (
                libc::CMSG_SPACE(size_of::<libc::ucred>() as u32) as usize,
                libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as usize,
            )
        };
        debug_assert!(space <= CMSG_SPACE);
        loop {
            let mut sa = sockaddr_nl(0, 0);
            let mut control = Control([0; CMSG_SPACE]);
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: `msghdr` is a plain C struct for which all-zero bytes
            // are valid (null pointers, zero lengths); it is filled below.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut sa as *mut libc::sockaddr_nl).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = CMSG_SPACE as _;
            // SAFETY: every pointer in `msg` points at a live, writable
            // buffer of the length given beside it (`buf` through `iov`,
            // `sa`, `control`), all of which outlive the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
            let r = match received(n, buf.len()) {
                None => continue,
                Some(r) => r?,
            };
            if !matches!(r, Recv::Datagram { .. }) {
                return Ok((r, Sender::default()));
            }
            let mut credentials = None;
            // SAFETY: `msg` was filled by a successful recvmsg: its control
            // pointer and length describe `control`, which is live; the
            // CMSG_* macros only walk within msg_controllen.
            let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
            while !cmsg.is_null() {
                // SAFETY: `cmsg` is non-null and was returned by
                // CMSG_FIRSTHDR/CMSG_NXTHDR, so it points at a whole
                // `cmsghdr` inside `control`.
                let h = unsafe { &*cmsg };
                if h.cmsg_level == libc::SOL_SOCKET
                    && h.cmsg_type == libc::SCM_CREDENTIALS
                    && h.cmsg_len as usize >= need
                {
                    // SAFETY: an SCM_CREDENTIALS message carries one `ucred`
                    // after its header (the kernel writes exactly that);
                    // read_unaligned makes no alignment assumption.
                    let u: libc::ucred =
                        unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                    credentials = Some(Credentials {
                        pid: u.pid,
                        uid: u.uid,
                        gid: u.gid,
                    });
                }
                // SAFETY: as for CMSG_FIRSTHDR: `msg` and `cmsg` are valid.
                cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
            }
            return Ok((
                r,
                Sender {
                    port: sa.nl_pid,
                    groups: sa.nl_groups,
                    credentials,
                },
            ));
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

    /// A second descriptor of the same socket (`dup`): what is sent on it
    /// is sent from this socket's port, and answers arrive here.
    pub fn try_clone(&self) -> io::Result<NetlinkSocket> {
        Ok(NetlinkSocket {
            fd: self.fd.try_clone()?,
            protocol: self.protocol,
        })
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

/// One thing a [`NetlinkReceiver`] received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A datagram: the bytes stored (`bytes.len() < len` when it was cut
    /// to the buffer: `MSG_TRUNC`), and who sent it.
    Datagram {
        bytes: &'a [u8],
        len: usize,
        from: Sender,
    },
    /// `ENOBUFS`: the socket's queue overflowed and messages were lost.
    Overrun,
    /// Nothing more to read.
    WouldBlock,
}

/// A socket with its receive buffer: receives one datagram at a time, or
/// drains the socket, handing out each datagram as a slice of its buffer.
#[derive(Debug)]
pub struct NetlinkReceiver {
    sock: NetlinkSocket,
    buf: Vec<u8>,
    stored: usize,
    peer: Peer,
}

/// How much of a datagram's sender a [`NetlinkReceiver`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// Nothing: `recv`.
    Unknown,
    /// The address: `recvfrom`.
    Address,
    /// The address and the credentials (`SO_PASSCRED` is set): `recvmsg`.
    Credentials,
}

impl NetlinkReceiver {
    /// A receiver with a buffer of `buf_size` bytes. With `with_sender`,
    /// each datagram comes with its [`Sender`]: its address (`recvfrom`),
    /// and its credentials too when the socket has `SO_PASSCRED` set
    /// (`recvmsg`); without, with a plain `recv` (the sender is then
    /// unknown).
    pub fn new(sock: NetlinkSocket, buf_size: usize, with_sender: bool) -> Self {
        let peer = match (with_sender, sock.passes_credentials()) {
            (false, _) => Peer::Unknown,
            (true, Ok(false)) => Peer::Address,
            // Not known: recvmsg, which reads whatever is there.
            (true, Ok(true) | Err(_)) => Peer::Credentials,
        };
        NetlinkReceiver {
            sock,
            buf: vec![0; buf_size],
            stored: 0,
            peer,
        }
    }

    /// The socket.
    pub fn socket(&self) -> &NetlinkSocket {
        &self.sock
    }

    /// Receives one datagram (or says why there is none).
    pub fn recv(&mut self) -> io::Result<Received<'_>> {
        let (r, from) = match self.peer {
            Peer::Unknown => (self.sock.recv(&mut self.buf)?, Sender::default()),
            Peer::Address => self.sock.recv_addr(&mut self.buf)?,
            Peer::Credentials => self.sock.recv_from(&mut self.buf)?,
        };
        Ok(match r {
            Recv::Datagram { len, stored } => {
                self.stored = stored;
                Received::Datagram {
                    bytes: &self.buf[..stored],
                    len,
                    from,
                }
            }
            Recv::Overrun => Received::Overrun,
            Recv::WouldBlock => Received::WouldBlock,
        })
    }

    /// The bytes of the last datagram received (until the next receive).
    pub fn last(&self) -> &[u8] {
        &self.buf[..self.stored]
    }

    /// Gives the socket back.
    pub fn into_socket(self) -> NetlinkSocket {
        self.sock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_passcred_the_receiver_tells_the_address_only_and_the_real_length() {
        let rx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
        rx.bind(0, 0).unwrap();
        assert!(!rx.passes_credentials().unwrap());
        let tx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
        tx.bind(0, 0).unwrap();
        let (rx_port, tx_port) = (rx.port_id().unwrap(), tx.port_id().unwrap());
        tx.send_to(rx_port, 0, b"a datagram longer than the buffer")
            .unwrap();
        let mut r = NetlinkReceiver::new(rx, 8, true);
        match r.recv().unwrap() {
            Received::Datagram { bytes, len, from } => {
                assert_eq!((bytes, len), (&b"a datagr"[..], 33));
                assert_eq!((from.port, from.groups), (tx_port, 0));
                assert_eq!(from.credentials, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.recv().unwrap(), Received::WouldBlock);
    }

    #[test]
    fn recv_from_tells_a_user_space_sender_and_its_credentials() {
        // Unicast between two sockets of this process: no privilege needed.
        let rx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
        rx.bind(0, 0).unwrap();
        rx.set_pass_credentials(true).unwrap();
        let tx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
        tx.bind(0, 0).unwrap();
        let (rx_port, tx_port) = (rx.port_id().unwrap(), tx.port_id().unwrap());
        tx.send_to(rx_port, 0, b"hello netlink").unwrap();
        let mut r = NetlinkReceiver::new(rx, 64, true);
        let mut got = Vec::new();
        // The datagram is queued before send_to returns.
        loop {
            match r.recv().unwrap() {
                Received::WouldBlock => break,
                Received::Datagram { bytes, len, from } => got.push((bytes.to_vec(), len, from)),
                Received::Overrun => panic!("no overrun expected"),
            }
        }
        assert_eq!(got.len(), 1);
        let (bytes, len, from) = &got[0];
        assert_eq!((&bytes[..], *len), (&b"hello netlink"[..], 13));
        assert_eq!(from.port, tx_port);
        assert!(!from.is_kernel());
        let c = from.credentials.expect("SO_PASSCRED gives credentials");
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(c.pid, std::process::id() as i32);
    }

    #[test]
    fn a_datagram_larger_than_the_buffer_is_cut_and_its_length_told() {
        let rx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
        rx.bind(0, 0).unwrap();
        let tx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
        tx.send_to(rx.port_id().unwrap(), 0, &[7u8; 100]).unwrap();
        let mut r = NetlinkReceiver::new(rx, 10, true);
        match r.recv().unwrap() {
            Received::Datagram { bytes, len, from } => {
                assert_eq!((bytes.len(), len), (10, 100));
                assert_eq!(from.credentials, None);
            }
            other => panic!("expected a datagram, got {other:?}"),
        }
        assert_eq!(r.last(), &[7u8; 10]);
        assert_eq!(r.recv().unwrap(), Received::WouldBlock);
    }
}

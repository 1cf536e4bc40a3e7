//! Interface state through the classic ioctls, as `ifconfig` and `ethtool`
//! read it: `SIOCGIFFLAGS` (`IFF_UP`, `IFF_RUNNING`) and `SIOCETHTOOL` with
//! `ETHTOOL_GLINK` (the driver's own link test). Used to check the state an
//! `RTM_GETLINK` dump reports at start-up.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ETHTOOL_GLINK` of `linux/ethtool.h`: get link status.
pub const ETHTOOL_GLINK: u32 = 0x0000_000a;
/// `IFNAMSIZ`: interface names are at most 15 bytes plus NUL.
pub const IFNAMSIZ: usize = libc::IFNAMSIZ;

/// `struct ethtool_value` (8 bytes): `cmd`, then the value the driver fills.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthtoolValue {
    pub cmd: u32,
    pub data: u32,
}

const _: () = assert!(std::mem::size_of::<EthtoolValue>() == 8);

/// A socket to address interface ioctls to (`AF_INET`, `SOCK_DGRAM`), in
/// the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct IfQuery {
    fd: OwnedFd,
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name:?} is not an interface name (1..={} bytes, no NUL)",
                IFNAMSIZ - 1
            ),
        ));
    }
    // SAFETY: `ifreq` is a C struct of a char array and a union of plain
    // integers, addresses and a pointer, for which all-zero bytes are a valid
    // value (a NUL-filled name, a null `ifru_data`).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

impl IfQuery {
    /// Opens the query socket.
    pub fn open() -> io::Result<IfQuery> {
        // SAFETY: socket(2) takes no pointers; a negative return is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2), is open and owned by
        // nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(IfQuery { fd })
    }

    /// `SIOCGIFFLAGS`: the interface's `IFF_*` flags (the low 16 bits; for
    /// `IFF_LOWER_UP` use rtnetlink).
    pub fn flags(&self, name: &str) -> io::Result<u32> {
        let mut ifr = ifreq_for(name)?;
        // SAFETY: the descriptor is open (owned by self); `ifr` is a live,
        // writable `struct ifreq` with a NUL-terminated name, which is what
        // SIOCGIFFLAGS reads and the only memory it writes (`ifr_flags`).
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFFLAGS succeeded, so the kernel stored the flags in
        // the `ifru_flags` member of the union (a plain `c_short`).
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        Ok(u32::from(flags as u16))
    }

    /// `SIOCETHTOOL` / `ETHTOOL_GLINK`: whether the driver reports link.
    /// `Unsupported` when the driver has no link test.
    pub fn ethtool_link(&self, name: &str) -> io::Result<bool> {
        let mut ifr = ifreq_for(name)?;
        let mut value = EthtoolValue {
            cmd: ETHTOOL_GLINK,
            data: 0,
        };
        ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
        // SAFETY: the descriptor is open; `ifr` is a live `struct ifreq` with
        // a NUL-terminated name whose `ifru_data` points to `value`, a live,
        // writable `struct ethtool_value` (8 bytes, the size ETHTOOL_GLINK
        // reads and writes) that outlives the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) => io::Error::new(io::ErrorKind::Unsupported, e),
                _ => e,
            });
        }
        Ok(value.data != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_ioctl() {
        assert!(ifreq_for("").is_err());
        assert!(ifreq_for("a-name-of-16-byt").is_err());
        assert!(ifreq_for("eth\0").is_err());
        let r = ifreq_for("eth0").unwrap();
        assert_eq!(
            r.ifr_name[..5],
            [b'e' as libc::c_char, b't' as _, b'h' as _, b'0' as _, 0]
        );
    }

    #[test]
    fn loopback_is_up_and_an_absent_interface_is_an_error() {
        let q = IfQuery::open().unwrap();
        let lo = q.flags("lo").unwrap();
        // `lo` may be down in a fresh network namespace; it always exists.
        assert_ne!(lo & libc::IFF_LOOPBACK as u32, 0);
        let e = q.flags("fb-no-such-if").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    }
}

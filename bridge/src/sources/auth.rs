//! Who may make the bridge act: the sender of every netlink datagram is
//! checked before a byte of it is parsed. The kernel sends from port id 0
//! (as udev checks it); a user-space process from its own port id, with
//! the credentials the kernel attaches (`SO_PASSCRED`), which a sender
//! cannot forge without `CAP_SYS_ADMIN`.

use faultbridge_ffi::sys::netlink::Sender;

/// Who a source takes datagrams from (`[sources.expdrv] accept`).
pub use crate::config::Accept;

impl Accept {
    /// Whether datagrams must be received with their sender's address.
    pub const fn needs_sender(self) -> bool {
        !matches!(self, Accept::Any)
    }

    /// Whether datagrams must come with their sender's credentials.
    pub const fn needs_credentials(self) -> bool {
        matches!(self, Accept::Root)
    }

    /// Whether `from` may send; if not, why.
    #[inline]
    pub fn check(self, from: &Sender) -> Result<(), Refusal> {
        match self {
            Accept::Any => Ok(()),
            _ if from.is_kernel() => Ok(()),
            Accept::Kernel => Err(Refusal::UserSpace),
            Accept::Root => match from.credentials {
                Some(c) if c.uid == 0 => Ok(()),
                Some(_) => Err(Refusal::NotRoot),
                None => Err(Refusal::NoCredentials),
            },
        }
    }
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// From user space to a source that takes the kernel only.
    UserSpace,
    /// From a user-space sender whose credentials are not root's.
    NotRoot,
    /// From a user-space sender without credentials.
    NoCredentials,
}

impl Refusal {
    pub const COUNT: usize = 3;
    pub const ALL: [Refusal; Self::COUNT] =
        [Refusal::UserSpace, Refusal::NotRoot, Refusal::NoCredentials];

    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name in counters (`refused_<name>` in `Status`).
    pub const fn name(self) -> &'static str {
        match self {
            Refusal::UserSpace => "user_space",
            Refusal::NotRoot => "not_root",
            Refusal::NoCredentials => "no_credentials",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultbridge_ffi::sys::netlink::Credentials;

    fn user(uid: Option<u32>) -> Sender {
        Sender {
            port: 4242,
            groups: 1,
            credentials: uid.map(|uid| Credentials {
                pid: 7,
                uid,
                gid: uid,
            }),
        }
    }

    #[test]
    fn the_kernel_is_always_accepted_user_space_by_policy() {
        let kernel = Sender::default();
        for a in [Accept::Kernel, Accept::Root, Accept::Any] {
            assert_eq!(a.check(&kernel), Ok(()));
        }
        assert_eq!(
            Accept::Kernel.check(&user(Some(0))),
            Err(Refusal::UserSpace)
        );
        assert_eq!(Accept::Root.check(&user(Some(0))), Ok(()));
        assert_eq!(
            Accept::Root.check(&user(Some(65534))),
            Err(Refusal::NotRoot)
        );
        assert_eq!(Accept::Root.check(&user(None)), Err(Refusal::NoCredentials));
        assert_eq!(Accept::Any.check(&user(Some(65534))), Ok(()));
    }
}

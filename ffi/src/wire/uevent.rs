//! Kernel uevents (`NETLINK_KOBJECT_UEVENT`, group 1), as `udevadm monitor
//! --kernel` reads them: `ACTION@DEVPATH\0` followed by `KEY=VALUE\0` pairs
//! (`lib/kobject_uevent.c`, `kobject_uevent_env()`), with no netlink
//! header. Zero-copy: every field is a `&str` into the datagram.
//!
//! Messages that libudev re-broadcasts (group 2) begin with the magic
//! string `libudev\0` and a binary header; they are not kernel uevents and
//! are refused here, whatever group they arrived on.

use thiserror::Error;

/// The kernel's uevent multicast group.
pub const UEVENT_KERNEL_GROUP: u32 = 1;
/// The prefix of a libudev monitor message.
pub const LIBUDEV_MAGIC: &[u8] = b"libudev\0";
/// `UEVENT_BUFFER_SIZE`: the largest uevent the kernel builds.
pub const UEVENT_BUFFER_SIZE: usize = 2048;

/// Why a message is not a kernel uevent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UeventError {
    #[error("a libudev monitor message, not a kernel uevent")]
    Libudev,
    #[error("the first string is not ACTION@DEVPATH")]
    NoHeader,
    #[error("not UTF-8 at byte {at}")]
    NotUtf8 { at: usize },
}

/// One kernel uevent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uevent<'a> {
    /// `add`, `remove`, `change`, `move`, `online`, `offline`, `bind`, `unbind`.
    pub action: &'a str,
    /// The sysfs path below `/sys`, e.g. `/devices/virtual/net/veth0`.
    pub devpath: &'a str,
    /// `KEY=VALUE\0…` after the header (NUL-separated).
    env: &'a str,
}

impl<'a> Uevent<'a> {
    /// Reads one datagram.
    pub fn parse(buf: &'a [u8]) -> Result<Uevent<'a>, UeventError> {
        if buf.starts_with(LIBUDEV_MAGIC) {
            return Err(UeventError::Libudev);
        }
        let text = std::str::from_utf8(buf).map_err(|e| UeventError::NotUtf8 {
            at: e.valid_up_to(),
        })?;
        let (head, env) = text.split_once('\0').unwrap_or((text, ""));
        let (action, devpath) = head.split_once('@').ok_or(UeventError::NoHeader)?;
        if action.is_empty() || !devpath.starts_with('/') {
            return Err(UeventError::NoHeader);
        }
        Ok(Uevent {
            action,
            devpath,
            env,
        })
    }

    /// The `KEY=VALUE` pairs, in order (empty strings are skipped; a string
    /// without `=` yields an empty value).
    pub fn vars(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.env
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(|s| s.split_once('=').unwrap_or((s, "")))
    }

    /// The value of `key` (first occurrence).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.vars().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// `SUBSYSTEM`.
    pub fn subsystem(&self) -> Option<&'a str> {
        self.get("SUBSYSTEM")
    }

    /// `SEQNUM` (kernel-wide; uevents of other network namespaces and of
    /// kobjects filtered out by the kernel make gaps that are not losses).
    pub fn seqnum(&self) -> Option<u64> {
        self.get("SEQNUM").and_then(|s| s.parse().ok())
    }

    /// The device's name: `INTERFACE` for net devices, `DEVNAME` for those
    /// with a node, else the last component of `DEVPATH`.
    pub fn device_name(&self) -> &'a str {
        self.get("INTERFACE")
            .or_else(|| self.get("DEVNAME"))
            .unwrap_or_else(|| self.devpath.rsplit('/').next().unwrap_or(self.devpath))
    }
}

#[cfg(test)]
mod tests;

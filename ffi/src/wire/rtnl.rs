//! rtnetlink link messages (`RTM_NEWLINK` / `RTM_DELLINK`), as `ip monitor
//! link` reads them: the `struct ifinfomsg` of `linux/rtnetlink.h` and a walk
//! over its `struct rtattr` list (`linux/if_link.h`), keeping only the
//! attributes a carrier watcher needs. Zero-copy: the interface name is
//! borrowed from the datagram; every other attribute is skipped without
//! being decoded. Unknown or malformed attributes never fail the walk —
//! an attribute whose length runs past the message ends it, as `RTA_OK` does.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};
use thiserror::Error;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_DELLINK`.
pub const RTM_DELLINK: u16 = 17;
/// `RTM_GETLINK`.
pub const RTM_GETLINK: u16 = 18;
/// `RTNLGRP_LINK`: the multicast group of link changes.
pub const RTNLGRP_LINK: u32 = 1;

/// `IFLA_IFNAME`: NUL-terminated interface name.
pub const IFLA_IFNAME: u16 = 3;
/// `IFLA_OPERSTATE`: u8, RFC 2863 operational state (`IF_OPER_*`).
pub const IFLA_OPERSTATE: u16 = 16;
/// `IFLA_CARRIER`: u8, 1 when the device has carrier.
pub const IFLA_CARRIER: u16 = 33;
/// `IFLA_CARRIER_CHANGES`: u32, carrier up + down transitions since creation.
pub const IFLA_CARRIER_CHANGES: u16 = 35;
/// `IFLA_EXT_MASK`: u32, in a dump request.
pub const IFLA_EXT_MASK: u16 = 29;

/// `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`: flag bits of `rta_type`.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

/// `IFF_UP`: administratively up.
pub const IFF_UP: u32 = 0x1;
/// `IFF_RUNNING`: operationally up (RFC 2863 `UP`).
pub const IFF_RUNNING: u32 = 0x40;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 0x8;
/// `IFF_LOWER_UP`: the driver signals L1 up (carrier).
pub const IFF_LOWER_UP: u32 = 0x1_0000;

/// `IF_OPER_*` of `linux/if.h`.
pub mod oper {
    pub const UNKNOWN: u8 = 0;
    pub const NOTPRESENT: u8 = 1;
    pub const DOWN: u8 = 2;
    pub const LOWERLAYERDOWN: u8 = 3;
    pub const TESTING: u8 = 4;
    pub const DORMANT: u8 = 5;
    pub const UP: u8 = 6;

    /// The name `ip link` prints.
    pub const fn name(state: u8) -> &'static str {
        match state {
            UNKNOWN => "UNKNOWN",
            NOTPRESENT => "NOTPRESENT",
            DOWN => "DOWN",
            LOWERLAYERDOWN => "LOWERLAYERDOWN",
            TESTING => "TESTING",
            DORMANT => "DORMANT",
            UP => "UP",
            _ => "?",
        }
    }
}

/// `struct ifinfomsg` (16 bytes, host byte order).
///
/// | Dec | Type | Field |
/// |---|---|---|
/// | 0 | u8 | `ifi_family` (`AF_UNSPEC`) |
/// | 1 | u8 | `__ifi_pad` |
/// | 2 | u16 | `ifi_type` (`ARPHRD_*`) |
/// | 4 | i32 | `ifi_index` |
/// | 8 | u32 | `ifi_flags` (`IFF_*`) |
/// | 12 | u32 | `ifi_change` (not reliable: often 0 or all ones) |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IfInfoMsgRaw {
    pub ifi_family: u8,
    pub ifi_pad: u8,
    pub ifi_type: u16,
    pub ifi_index: i32,
    pub ifi_flags: u32,
    pub ifi_change: u32,
}

/// `sizeof(struct ifinfomsg)`.
pub const IFINFOMSG_LEN: usize = 16;
const _: () = assert!(size_of::<IfInfoMsgRaw>() == IFINFOMSG_LEN);
const _: () = assert!(offset_of!(IfInfoMsgRaw, ifi_type) == 2);
const _: () = assert!(offset_of!(IfInfoMsgRaw, ifi_index) == 4);
const _: () = assert!(offset_of!(IfInfoMsgRaw, ifi_flags) == 8);
const _: () = assert!(offset_of!(IfInfoMsgRaw, ifi_change) == 12);

/// `struct rtattr` header (4 bytes): `rta_len` (header included), `rta_type`.
pub const RTA_HDRLEN: usize = 4;

/// `RTA_ALIGN`: rounds up to 4 bytes.
pub const fn rta_align(len: usize) -> usize {
    (len + 3) & !3
}

/// Why a link message was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtnlError {
    #[error("link message is {got} bytes, fewer than the {IFINFOMSG_LEN}-byte ifinfomsg")]
    Short { got: usize },
    #[error("ifi_index is {got}, not a positive interface index")]
    BadIndex { got: i32 },
    #[error("IFLA_IFNAME is not a NUL-terminated UTF-8 name")]
    BadName,
}

/// One link message: the `ifinfomsg` and the attributes faultbridge reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkMsg<'a> {
    pub header: IfInfoMsgRaw,
    /// `IFLA_IFNAME`, borrowed.
    pub ifname: Option<&'a str>,
    /// `IFLA_OPERSTATE`.
    pub operstate: Option<u8>,
    /// `IFLA_CARRIER`.
    pub carrier: Option<bool>,
    /// `IFLA_CARRIER_CHANGES`.
    pub carrier_changes: Option<u32>,
    /// Attributes walked (read or skipped).
    pub attributes: u16,
    /// Bytes after the last whole attribute (a truncated attribute).
    pub trailing: usize,
}

impl<'a> LinkMsg<'a> {
    /// Reads the payload of an `RTM_NEWLINK`/`RTM_DELLINK` message (what
    /// follows the `nlmsghdr`).
    #[inline]
    pub fn parse(payload: &'a [u8]) -> Result<LinkMsg<'a>, RtnlError> {
        let Some(head) = payload.first_chunk::<IFINFOMSG_LEN>() else {
            return Err(RtnlError::Short { got: payload.len() });
        };
        let header: IfInfoMsgRaw = bytemuck::pod_read_unaligned(head);
        if header.ifi_index <= 0 {
            return Err(RtnlError::BadIndex {
                got: header.ifi_index,
            });
        }
        let mut msg = LinkMsg {
            header,
            ifname: None,
            operstate: None,
            carrier: None,
            carrier_changes: None,
            attributes: 0,
            trailing: 0,
        };
        let mut rest = &payload[IFINFOMSG_LEN..];
        while let Some(&[l0, l1, t0, t1]) = rest.first_chunk::<RTA_HDRLEN>() {
            let len = u16::from_ne_bytes([l0, l1]) as usize;
            if len < RTA_HDRLEN || len > rest.len() {
                break;
            }
            let value = &rest[RTA_HDRLEN..len];
            match u16::from_ne_bytes([t0, t1]) & NLA_TYPE_MASK {
                IFLA_IFNAME => {
                    // The kernel sends the name with its NUL (`nla_put_string`).
                    let name = match value.iter().position(|&b| b == 0) {
                        Some(end) => &value[..end],
                        None => return Err(RtnlError::BadName),
                    };
                    msg.ifname = Some(std::str::from_utf8(name).map_err(|_| RtnlError::BadName)?);
                }
                IFLA_OPERSTATE => msg.operstate = value.first().copied(),
                IFLA_CARRIER => msg.carrier = value.first().map(|&c| c != 0),
                IFLA_CARRIER_CHANGES => {
                    msg.carrier_changes = value.first_chunk::<4>().map(|b| u32::from_ne_bytes(*b))
                }
                _ => {}
            }
            msg.attributes = msg.attributes.saturating_add(1);
            rest = &rest[rta_align(len).min(rest.len())..];
        }
        msg.trailing = rest.len();
        Ok(msg)
    }

    /// The interface index (positive).
    pub fn index(&self) -> u32 {
        self.header.ifi_index as u32
    }

    /// `IFF_*` flags.
    pub fn flags(&self) -> u32 {
        self.header.ifi_flags
    }

    /// Administratively up (`IFF_UP`).
    pub fn admin_up(&self) -> bool {
        self.header.ifi_flags & IFF_UP != 0
    }

    /// Carrier: `IFLA_CARRIER` when present, else `IFF_LOWER_UP`.
    pub fn has_carrier(&self) -> bool {
        self.carrier
            .unwrap_or(self.header.ifi_flags & IFF_LOWER_UP != 0)
    }

    /// The link carries traffic: administratively up and with carrier.
    pub fn link_up(&self) -> bool {
        self.admin_up() && self.has_carrier()
    }
}

/// Appends an `RTM_GETLINK` dump request (`ip link show`) to `out`:
/// `nlmsghdr` + `ifinfomsg` (AF_UNSPEC) + `IFLA_EXT_MASK` = 0.
pub fn push_getlink_dump(out: &mut Vec<u8>, seq: u32) {
    let mut payload = [0u8; IFINFOMSG_LEN + 8];
    // IFLA_EXT_MASK, len 8, value 0: no VF or stats extensions.
    payload[IFINFOMSG_LEN..IFINFOMSG_LEN + 2].copy_from_slice(&8u16.to_ne_bytes());
    payload[IFINFOMSG_LEN + 2..IFINFOMSG_LEN + 4].copy_from_slice(&IFLA_EXT_MASK.to_ne_bytes());
    super::nlmsg::push_nlmsg(
        out,
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0,
        &payload,
    );
}

/// Appends an `RTM_NEWLINK` request that sets interface `index` up or down
/// (`ip link set dev X up|down`): `ifi_flags` = `IFF_UP` or 0, `ifi_change`
/// = `IFF_UP`.
pub fn push_setlink_updown(out: &mut Vec<u8>, seq: u32, index: i32, up: bool) {
    let hdr = IfInfoMsgRaw {
        ifi_index: index,
        ifi_flags: if up { IFF_UP } else { 0 },
        ifi_change: IFF_UP,
        ..IfInfoMsgRaw::default()
    };
    super::nlmsg::push_nlmsg(
        out,
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        bytemuck::bytes_of(&hdr),
    );
}

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;

#[cfg(any(test, feature = "testing"))]
pub mod fixtures;

#[cfg(test)]
mod tests;

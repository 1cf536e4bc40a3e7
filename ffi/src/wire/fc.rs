//! FC transport events (`NETLINK_SCSITRANSPORT`): `struct fc_nl_event` of
//! `include/uapi/scsi/scsi_netlink_fc.h`, behind the `struct scsi_nl_hdr` of
//! `include/uapi/scsi/scsi_netlink.h`, as `fc_host_post_fc_event()` in
//! `drivers/scsi/scsi_transport_fc.c` multicasts them (what `fcoemon` and
//! `lpfc` tools listen to).
//!
//! Two traps of this interface are handled here and in the source:
//! - the kernel multicasts on group *value* 4 (`SCSI_NL_GRP_FC_EVENTS` is
//!   defined as `1 << 2` but passed as a group number), so a reader joins
//!   group 4, bind-mask bit 3 ([`FC_EVENTS_GROUP`]);
//! - the event data is bounded by `event_datalen`, never by `nlmsg_len`:
//!   the message is padded to 8 bytes (`FC_NL_MSGALIGN`), and older kernels
//!   sized it as `sizeof(*event) + data_len` and left the tail uninitialised.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};
use thiserror::Error;

/// `SCSI_TRANSPORT_MSG` (`NLMSG_MIN_TYPE + 1`): the `nlmsg_type` of every
/// SCSI transport message.
pub const SCSI_TRANSPORT_MSG: u16 = 0x11;
/// The multicast group the kernel sends FC events to (`SCSI_NL_GRP_FC_EVENTS`
/// used as a group number).
pub const FC_EVENTS_GROUP: u32 = 4;
/// `SCSI_NL_VERSION`.
pub const SCSI_NL_VERSION: u8 = 1;
/// `SCSI_NL_MAGIC`.
pub const SCSI_NL_MAGIC: u16 = 0xA1B2;
/// `SCSI_NL_TRANSPORT_FC`.
pub const SCSI_NL_TRANSPORT_FC: u8 = 1;
/// `FC_NL_ASYNC_EVENT`: the `msgtype` of an FC event.
pub const FC_NL_ASYNC_EVENT: u16 = 0x0100;

/// `enum fc_host_event_code` of `include/scsi/scsi_transport_fc.h`.
pub mod fch {
    pub const LIP: u32 = 0x1;
    pub const LINKUP: u32 = 0x2;
    pub const LINKDOWN: u32 = 0x3;
    pub const LIPRESET: u32 = 0x4;
    pub const RSCN: u32 = 0x5;
    pub const ADAPTER_CHANGE: u32 = 0x103;
    pub const PORT_UNKNOWN: u32 = 0x200;
    pub const PORT_OFFLINE: u32 = 0x201;
    pub const PORT_ONLINE: u32 = 0x202;
    pub const PORT_FABRIC: u32 = 0x204;
    pub const LINK_UNKNOWN: u32 = 0x500;
    pub const LINK_FPIN: u32 = 0x501;
    pub const LINK_FPIN_ACK: u32 = 0x502;
    pub const VENDOR_UNIQUE: u32 = 0xffff;

    /// The kernel's name (`fc_host_event_code_names`).
    pub const fn name(code: u32) -> &'static str {
        match code {
            LIP => "lip",
            LINKUP => "link_up",
            LINKDOWN => "link_down",
            LIPRESET => "lip_reset",
            RSCN => "rscn",
            ADAPTER_CHANGE => "adapter_chg",
            PORT_UNKNOWN => "port_unknown",
            PORT_OFFLINE => "port_offline",
            PORT_ONLINE => "port_online",
            PORT_FABRIC => "port_fabric",
            LINK_UNKNOWN => "link_unknown",
            LINK_FPIN => "link_FPIN",
            LINK_FPIN_ACK => "link_FPIN_ACK",
            VENDOR_UNIQUE => "vendor_unique",
            _ => "unknown",
        }
    }
}

/// `struct scsi_nl_hdr` (8 bytes, `aligned(8)`).
///
/// | Dec | Type | Field |
/// |---|---|---|
/// | 0 | u8 | `version` (`SCSI_NL_VERSION`) |
/// | 1 | u8 | `transport` (`SCSI_NL_TRANSPORT_FC`) |
/// | 2 | u16 | `magic` (`SCSI_NL_MAGIC`) |
/// | 4 | u16 | `msgtype` (`FC_NL_ASYNC_EVENT`) |
/// | 6 | u16 | `msglen` (the whole `fc_nl_event`, padded to 8) |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ScsiNlHdrRaw {
    pub version: u8,
    pub transport: u8,
    pub magic: u16,
    pub msgtype: u16,
    pub msglen: u16,
}

const _: () = assert!(size_of::<ScsiNlHdrRaw>() == 8);
const _: () = assert!(offset_of!(ScsiNlHdrRaw, magic) == 2);
const _: () = assert!(offset_of!(ScsiNlHdrRaw, msgtype) == 4);
const _: () = assert!(offset_of!(ScsiNlHdrRaw, msglen) == 6);

/// `struct fc_nl_event` (40 bytes, `aligned(8)`, no padding anywhere).
///
/// | Dec | Type | Field |
/// |---|---|---|
/// | 0 | scsi_nl_hdr | `snlh` |
/// | 8 | u64 | `seconds` (wall clock, `ktime_get_real_seconds`) |
/// | 16 | u64 | `vendor_id` (0 except vendor-unique events) |
/// | 24 | u16 | `host_no` (SCSI host number: `hostN`) |
/// | 26 | u16 | `event_datalen` (bytes of event data) |
/// | 28 | u32 | `event_num` (kernel-wide FC event counter, +1 per event) |
/// | 32 | u32 | `event_code` (`enum fc_host_event_code`) |
/// | 36 | u32 / u8[] | `event_data` (union `{ __u32 event_data; __u8 event_data_flex[]; }`) |
///
/// The data starts at offset 36 and is `event_datalen` bytes long; it may
/// be shorter than the `event_data` word (0 bytes) or run past the end of
/// the struct (vendor events). [`FcEvent::data`] is the authoritative view;
/// `event_data` here is only the first word of the union as it lies in the
/// message.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FcNlEventRaw {
    pub snlh: ScsiNlHdrRaw,
    pub seconds: u64,
    pub vendor_id: u64,
    pub host_no: u16,
    pub event_datalen: u16,
    pub event_num: u32,
    pub event_code: u32,
    pub event_data: u32,
}

/// Offset of the event data (`offsetof(struct fc_nl_event, event_data)`):
/// the end of the fixed part of the message.
pub const FC_EVENT_DATA_OFFSET: usize = 36;
/// `sizeof(struct fc_nl_event)`: the fixed part plus the 4-byte union.
pub const FC_NL_EVENT_LEN: usize = 40;
const _: () = assert!(size_of::<FcNlEventRaw>() == FC_NL_EVENT_LEN);
const _: () = assert!(offset_of!(FcNlEventRaw, seconds) == 8);
const _: () = assert!(offset_of!(FcNlEventRaw, vendor_id) == 16);
const _: () = assert!(offset_of!(FcNlEventRaw, host_no) == 24);
const _: () = assert!(offset_of!(FcNlEventRaw, event_datalen) == 26);
const _: () = assert!(offset_of!(FcNlEventRaw, event_num) == 28);
const _: () = assert!(offset_of!(FcNlEventRaw, event_code) == 32);
const _: () = assert!(offset_of!(FcNlEventRaw, event_data) == FC_EVENT_DATA_OFFSET);

/// The message length a current kernel gives an event with `data_len`
/// bytes of data: `FC_NL_MSGALIGN(sizeof(*event) - sizeof(event->event_data)
/// + data_len)` (40 for the usual 4 bytes).
pub const fn fc_event_msglen(data_len: usize) -> usize {
    fc_nl_msgalign(FC_EVENT_DATA_OFFSET + data_len)
}

/// The message length older kernels gave it: `FC_NL_MSGALIGN(sizeof(*event)
/// + data_len)` (48 for 4 bytes of data, the last 8 uninitialised).
pub const fn fc_event_msglen_old(data_len: usize) -> usize {
    fc_nl_msgalign(FC_NL_EVENT_LEN + data_len)
}

/// `FC_NL_MSGALIGN`: rounds up to 8 bytes.
pub const fn fc_nl_msgalign(len: usize) -> usize {
    (len + 7) & !7
}

/// Why an FC transport message was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FcError {
    #[error(
        "message is {got} bytes, fewer than the {FC_EVENT_DATA_OFFSET}-byte fc_nl_event header"
    )]
    Short { got: usize },
    #[error("scsi_nl_hdr magic is {got:#06x}, expected {SCSI_NL_MAGIC:#06x}")]
    BadMagic { got: u16 },
    #[error("scsi_nl_hdr version is {got}, expected {SCSI_NL_VERSION}")]
    BadVersion { got: u8 },
    #[error("not an FC event (transport {transport}, msgtype {msgtype:#06x})")]
    NotFcEvent { transport: u8, msgtype: u16 },
    #[error("event_datalen is {datalen}, but only {available} data bytes arrived")]
    DataTruncated { datalen: u16, available: usize },
}

/// One FC transport event, its data borrowed from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FcEvent<'a> {
    pub raw: FcNlEventRaw,
    /// The event data at offset 36, exactly `event_datalen` bytes.
    pub data: &'a [u8],
}

impl<'a> FcEvent<'a> {
    /// Reads the payload of one `SCSI_TRANSPORT_MSG` message (what follows
    /// the `nlmsghdr`). The data is `event_datalen` bytes at offset 36;
    /// bytes after it (alignment padding, an old kernel's uninitialised
    /// tail) are ignored, whatever `nlmsg_len` and `snlh.msglen` say.
    pub fn parse(payload: &'a [u8]) -> Result<FcEvent<'a>, FcError> {
        let Some(fixed) = payload.first_chunk::<FC_EVENT_DATA_OFFSET>() else {
            return Err(FcError::Short { got: payload.len() });
        };
        // The fixed part, plus whatever of the union's first word arrived.
        let mut head = [0u8; FC_NL_EVENT_LEN];
        head[..FC_EVENT_DATA_OFFSET].copy_from_slice(fixed);
        let word = payload.get(FC_EVENT_DATA_OFFSET..).unwrap_or_default();
        let word = &word[..word.len().min(FC_NL_EVENT_LEN - FC_EVENT_DATA_OFFSET)];
        head[FC_EVENT_DATA_OFFSET..FC_EVENT_DATA_OFFSET + word.len()].copy_from_slice(word);
        let raw: FcNlEventRaw = bytemuck::pod_read_unaligned(&head);
        if raw.snlh.magic != SCSI_NL_MAGIC {
            return Err(FcError::BadMagic {
                got: raw.snlh.magic,
            });
        }
        if raw.snlh.version != SCSI_NL_VERSION {
            return Err(FcError::BadVersion {
                got: raw.snlh.version,
            });
        }
        if raw.snlh.transport != SCSI_NL_TRANSPORT_FC || raw.snlh.msgtype != FC_NL_ASYNC_EVENT {
            return Err(FcError::NotFcEvent {
                transport: raw.snlh.transport,
                msgtype: raw.snlh.msgtype,
            });
        }
        let end = FC_EVENT_DATA_OFFSET + usize::from(raw.event_datalen);
        let Some(data) = payload.get(FC_EVENT_DATA_OFFSET..end) else {
            return Err(FcError::DataTruncated {
                datalen: raw.event_datalen,
                available: payload.len() - FC_EVENT_DATA_OFFSET,
            });
        };
        Ok(FcEvent { raw, data })
    }

    pub fn host_no(&self) -> u16 {
        self.raw.host_no
    }
    pub fn event_num(&self) -> u32 {
        self.raw.event_num
    }
    pub fn event_code(&self) -> u32 {
        self.raw.event_code
    }
    pub fn seconds(&self) -> u64 {
        self.raw.seconds
    }
    pub fn vendor_id(&self) -> u64 {
        self.raw.vendor_id
    }
    /// The whole message up to the end of the data: the header and
    /// `event_data`, without padding.
    pub fn bytes_used(&self) -> usize {
        FC_EVENT_DATA_OFFSET + self.data.len()
    }
}

/// Appends one FC event message (`nlmsghdr` + `fc_nl_event` + data, padded
/// with zeros to [`fc_event_msglen`]) as a current kernel lays it out.
pub fn push_fc_event(
    out: &mut Vec<u8>,
    host_no: u16,
    event_num: u32,
    event_code: u32,
    seconds: u64,
    vendor_id: u64,
    data: &[u8],
) {
    let len = fc_event_msglen(data.len());
    push_fc_event_sized(
        out, len, host_no, event_num, event_code, seconds, vendor_id, data,
    );
}

/// Appends one FC event message of `len` bytes (`snlh.msglen` and the
/// payload of `nlmsg_len`), the data at offset 36 and every byte after it
/// zero. With [`fc_event_msglen_old`] this is an older kernel's padded
/// message (whose tail the kernel did not initialise).
#[allow(clippy::too_many_arguments)]
pub fn push_fc_event_sized(
    out: &mut Vec<u8>,
    len: usize,
    host_no: u16,
    event_num: u32,
    event_code: u32,
    seconds: u64,
    vendor_id: u64,
    data: &[u8],
) {
    let raw = FcNlEventRaw {
        snlh: ScsiNlHdrRaw {
            version: SCSI_NL_VERSION,
            transport: SCSI_NL_TRANSPORT_FC,
            magic: SCSI_NL_MAGIC,
            msgtype: FC_NL_ASYNC_EVENT,
            msglen: len as u16,
        },
        seconds,
        vendor_id,
        host_no,
        event_datalen: data.len() as u16,
        event_num,
        event_code,
        event_data: 0,
    };
    let mut payload = Vec::with_capacity(len.max(FC_NL_EVENT_LEN + data.len()));
    payload.extend_from_slice(&bytemuck::bytes_of(&raw)[..FC_EVENT_DATA_OFFSET]);
    payload.extend_from_slice(data);
    payload.resize(len.max(payload.len()), 0);
    super::nlmsg::push_nlmsg(out, SCSI_TRANSPORT_MSG, 0, 0, 0, &payload);
}

#[cfg(test)]
mod tests;

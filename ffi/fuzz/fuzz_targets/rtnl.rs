//! `LinkMsg::parse` on arbitrary bytes, as the payload of an `RTM_NEWLINK` /
//! `RTM_DELLINK` message (what follows the `nlmsghdr`; the walk over the
//! datagram is the `nlmsg` target's). Nothing may panic; an accepted message
//! has a positive index and the `ifinfomsg` of its first 16 bytes, its name
//! lies inside the input and is followed there by its NUL, the attribute walk
//! stopped only where no whole attribute was left, and cutting off the bytes
//! it reported as trailing gives the same message. The one encoder of a link
//! message, `push_setlink_updown`, round-trips through `NlMsgIter` and the
//! parser.
#![no_main]

use faultbridge_ffi::wire::nlmsg::NlMsgIter;
use faultbridge_ffi::wire::rtnl::{
    IFINFOMSG_LEN, IfInfoMsgRaw, LinkMsg, RTA_HDRLEN, RTM_NEWLINK, RtnlError, oper,
    push_setlink_updown,
};
use libfuzzer_sys::fuzz_target;

/// `part`'s offset inside `whole`, asserting that it lies within it.
fn offset_within(whole: &[u8], part: &[u8]) -> usize {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(start <= whole.len() && part.len() <= whole.len() - start);
    start
}

fuzz_target!(|data: &[u8]| {
    match LinkMsg::parse(data) {
        Ok(m) => {
            assert_eq!(m.header, ifinfomsg(data));
            assert!(m.header.ifi_index > 0);
            assert_eq!(m.index(), m.header.ifi_index as u32);

            let body = &data[IFINFOMSG_LEN..];
            if let Some(name) = m.ifname {
                let at = offset_within(body, name.as_bytes());
                assert!(at >= RTA_HDRLEN, "name inside the attribute header");
                assert_eq!(body.get(at + name.len()), Some(&0), "name without its NUL");
                assert!(!name.contains('\0'));
            }

            // The walk ends only where no whole attribute is left.
            assert!(m.trailing <= body.len());
            let rest = &body[body.len() - m.trailing..];
            if let Some(&[l0, l1, _, _]) = rest.first_chunk::<RTA_HDRLEN>() {
                let len = usize::from(u16::from_ne_bytes([l0, l1]));
                assert!(
                    len < RTA_HDRLEN || len > rest.len(),
                    "stopped before a whole attribute"
                );
            }
            assert!(usize::from(m.attributes) * RTA_HDRLEN <= body.len() - m.trailing);

            // Without the tail it could not read, the same message.
            let whole = &data[..data.len() - m.trailing];
            assert_eq!(LinkMsg::parse(whole), Ok(LinkMsg { trailing: 0, ..m }));

            let _ = (m.link_up(), m.admin_up(), m.has_carrier(), m.flags());
            let _ = m.operstate.map(oper::name);
        }
        Err(RtnlError::Short { got }) => {
            assert!(data.len() < IFINFOMSG_LEN);
            assert_eq!(got, data.len());
        }
        Err(RtnlError::BadIndex { got }) => {
            assert!(got <= 0);
            assert_eq!(got, ifinfomsg(data).ifi_index);
        }
        Err(e) => {
            assert!(data.len() >= IFINFOMSG_LEN, "{e}");
        }
    }

    // push_setlink_updown round trip, index and direction from the input.
    if let Some(&[a, b, c, d, up]) = data.first_chunk::<5>() {
        let index = i32::from_ne_bytes([a, b, c, d]);
        let up = up & 1 == 1;
        let mut dg = Vec::new();
        push_setlink_updown(&mut dg, 7, index, up);
        let mut it = NlMsgIter::new(&dg);
        let msg = it.next().expect("one message");
        assert!(it.next().is_none());
        assert_eq!(it.trailing_bytes(), 0);
        assert_eq!(msg.header.nlmsg_type, RTM_NEWLINK);
        match LinkMsg::parse(msg.payload) {
            Ok(m) => {
                assert!(index > 0);
                assert_eq!(m.index(), index as u32);
                assert_eq!(m.admin_up(), up);
                assert_eq!((m.ifname, m.attributes, m.trailing), (None, 0, 0));
            }
            Err(e) => assert_eq!(e, RtnlError::BadIndex { got: index }),
        }
    }
});

/// The `ifinfomsg` at the start of `data` (at least 16 bytes), read field
/// by field at the offsets of `linux/rtnetlink.h`.
fn ifinfomsg(data: &[u8]) -> IfInfoMsgRaw {
    let u32_at = |i: usize| u32::from_ne_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    IfInfoMsgRaw {
        ifi_family: data[0],
        ifi_pad: data[1],
        ifi_type: u16::from_ne_bytes([data[2], data[3]]),
        ifi_index: u32_at(4) as i32,
        ifi_flags: u32_at(8),
        ifi_change: u32_at(12),
    }
}

use super::fixtures::{DELLINK_FB0A, NEWLINK_FB0A_CARRIER_DOWN, NEWLINK_FB0A_CARRIER_UP};
use super::*;
use crate::wire::nlmsg::{NLMSG_HDRLEN, NlMsgIter};
use proptest::prelude::*;

fn only_message(datagram: &[u8]) -> (u16, &[u8]) {
    let mut it = NlMsgIter::new(datagram);
    let m = it.next().unwrap();
    assert!(it.next().is_none());
    assert_eq!(it.trailing_bytes(), 0);
    (m.header.nlmsg_type, m.payload)
}

#[test]
fn carrier_loss_of_a_veth_is_read_from_the_captured_message() {
    let (ty, payload) = only_message(NEWLINK_FB0A_CARRIER_DOWN);
    assert_eq!(ty, RTM_NEWLINK);
    let m = LinkMsg::parse(payload).unwrap();
    assert_eq!(m.index(), 3);
    assert_eq!(m.ifname, Some("fb0a"));
    assert_eq!(m.operstate, Some(oper::LOWERLAYERDOWN));
    assert_eq!(m.carrier, Some(false));
    assert_eq!(m.carrier_changes, Some(3));
    assert!(m.admin_up());
    assert!(!m.has_carrier());
    assert!(!m.link_up());
    assert_eq!(m.flags() & IFF_RUNNING, 0);
    assert_eq!(m.trailing, 0);
    assert!(m.attributes > 30, "{}", m.attributes);
    // Borrowed from the datagram, not copied.
    let name = m.ifname.unwrap();
    let base = NEWLINK_FB0A_CARRIER_DOWN.as_ptr() as usize;
    assert_eq!(
        name.as_ptr() as usize,
        base + NLMSG_HDRLEN + IFINFOMSG_LEN + 4
    );
}

#[test]
fn carrier_up_of_a_veth_is_read_from_the_captured_message() {
    let (ty, payload) = only_message(NEWLINK_FB0A_CARRIER_UP);
    assert_eq!(ty, RTM_NEWLINK);
    let m = LinkMsg::parse(payload).unwrap();
    assert_eq!((m.index(), m.ifname), (3, Some("fb0a")));
    assert_eq!(m.operstate, Some(oper::UP));
    assert_eq!(m.carrier, Some(true));
    assert_eq!(m.carrier_changes, Some(2));
    assert!(m.link_up());
    assert_ne!(m.flags() & IFF_LOWER_UP, 0);
}

#[test]
fn dellink_is_read_from_the_captured_message() {
    let (ty, payload) = only_message(DELLINK_FB0A);
    assert_eq!(ty, RTM_DELLINK);
    let m = LinkMsg::parse(payload).unwrap();
    assert_eq!((m.index(), m.ifname), (3, Some("fb0a")));
    assert_eq!(m.carrier_changes, Some(3));
}

#[test]
fn a_truncated_message_keeps_the_attributes_before_the_cut() {
    let (_, payload) = only_message(NEWLINK_FB0A_CARRIER_DOWN);
    // Cut inside IFLA_TXQLEN (the second attribute): the name survives.
    let cut = &payload[..IFINFOMSG_LEN + 12 + 6];
    let m = LinkMsg::parse(cut).unwrap();
    assert_eq!(m.ifname, Some("fb0a"));
    assert_eq!(m.operstate, None);
    assert_eq!(m.attributes, 1);
    assert_eq!(m.trailing, 6);
    assert_eq!(
        LinkMsg::parse(&payload[..10]),
        Err(RtnlError::Short { got: 10 })
    );
}

#[test]
fn a_name_without_nul_and_a_bad_index_are_refused() {
    let mut v = vec![0u8; IFINFOMSG_LEN];
    v[4..8].copy_from_slice(&5i32.to_ne_bytes());
    v.extend_from_slice(&[8, 0, 3, 0, b'e', b't', b'h', b'0']);
    assert_eq!(LinkMsg::parse(&v), Err(RtnlError::BadName));
    v[4..8].copy_from_slice(&0i32.to_ne_bytes());
    assert_eq!(LinkMsg::parse(&v), Err(RtnlError::BadIndex { got: 0 }));
}

#[test]
fn nested_flag_bits_are_masked_from_the_attribute_type() {
    let mut v = vec![0u8; IFINFOMSG_LEN];
    v[4..8].copy_from_slice(&7i32.to_ne_bytes());
    // IFLA_CARRIER with NLA_F_NET_BYTEORDER set: still IFLA_CARRIER.
    v.extend_from_slice(&[5, 0, 33, 0x40, 1, 0, 0, 0]);
    let m = LinkMsg::parse(&v).unwrap();
    assert_eq!(m.carrier, Some(true));
    // Without IFLA_CARRIER, carrier is IFF_LOWER_UP.
    v.truncate(IFINFOMSG_LEN);
    v[8..12].copy_from_slice(&(IFF_UP | IFF_LOWER_UP).to_ne_bytes());
    assert!(LinkMsg::parse(&v).unwrap().link_up());
}

#[test]
fn requests_are_laid_out_as_ip_link_sends_them() {
    let mut v = Vec::new();
    push_getlink_dump(&mut v, 9);
    assert_eq!(
        v,
        [
            40, 0, 0, 0, // nlmsg_len 40
            18, 0, // RTM_GETLINK
            0x01, 0x03, // NLM_F_REQUEST | NLM_F_DUMP
            9, 0, 0, 0, // nlmsg_seq
            0, 0, 0, 0, // nlmsg_pid
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ifinfomsg
            8, 0, 29, 0, 0, 0, 0, 0, // IFLA_EXT_MASK = 0
        ]
    );
    v.clear();
    push_setlink_updown(&mut v, 1, 3, false);
    let (ty, payload) = only_message(&v);
    assert_eq!(ty, RTM_NEWLINK);
    let h: IfInfoMsgRaw = bytemuck::pod_read_unaligned(payload);
    assert_eq!((h.ifi_index, h.ifi_flags, h.ifi_change), (3, 0, IFF_UP));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = LinkMsg::parse(&bytes);
    }

    #[test]
    fn mutated_captures_never_panic(
        flips in proptest::collection::vec((0usize..1496, any::<u8>()), 0..8),
        cut in 0usize..1496,
    ) {
        let mut v = NEWLINK_FB0A_CARRIER_DOWN.to_vec();
        for (at, b) in flips {
            if let Some(x) = v.get_mut(at) { *x = b; }
        }
        let end = v.len() - cut.min(v.len());
        for m in NlMsgIter::new(&v[..end]) {
            if let Ok(l) = LinkMsg::parse(m.payload) {
                prop_assert!(l.trailing <= m.payload.len());
            }
        }
        if end >= NLMSG_HDRLEN {
            let _ = LinkMsg::parse(&v[NLMSG_HDRLEN..end]);
        }
    }
}

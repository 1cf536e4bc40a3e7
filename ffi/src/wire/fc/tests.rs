//! Fixtures laid out byte for byte as `fc_host_post_fc_event()`
//! (`drivers/scsi/scsi_transport_fc.c`, Linux 6.x, x86_64) builds them, per
//! `include/uapi/scsi/scsi_netlink.h` (`struct scsi_nl_hdr`,
//! `SCSI_TRANSPORT_MSG`) and `include/uapi/scsi/scsi_netlink_fc.h`
//! (`struct fc_nl_event`, `FC_NL_MSGALIGN`). `fc_host_post_event()` always
//! passes one `u32` of data, so the usual message is the padded 48-byte
//! event. The bytes the kernel leaves uninitialised are filled with
//! `0xde 0xad …` here, so a reader that looked at them would be caught.

use super::*;
use crate::wire::nlmsg::NlMsgIter;
use proptest::prelude::*;

/// `FCH_EVT_LINKDOWN` on host3, as `fc_host_post_event(shost, 17,
/// FCH_EVT_LINKDOWN, 0)` sends it: 16 + 48 bytes.
const LINKDOWN_HOST3: [u8; 64] = [
    // struct nlmsghdr
    0x40, 0x00, 0x00, 0x00, // nlmsg_len 64
    0x11, 0x00, // nlmsg_type SCSI_TRANSPORT_MSG
    0x00, 0x00, // nlmsg_flags 0
    0x00, 0x00, 0x00, 0x00, // nlmsg_seq 0
    0x00, 0x00, 0x00, 0x00, // nlmsg_pid 0 (kernel)
    // struct fc_nl_event, 48 bytes
    0x01, // snlh.version SCSI_NL_VERSION
    0x01, // snlh.transport SCSI_NL_TRANSPORT_FC
    0xb2, 0xa1, // snlh.magic SCSI_NL_MAGIC 0xA1B2
    0x00, 0x01, // snlh.msgtype FC_NL_ASYNC_EVENT 0x0100
    0x30, 0x00, // snlh.msglen 48 = FC_NL_MSGALIGN(48 - 4 + 4)
    0x00, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // seconds 1700000000
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // vendor_id 0
    0x03, 0x00, // host_no 3
    0x04, 0x00, // event_datalen 4
    0x11, 0x00, 0x00, 0x00, // event_num 17
    0x03, 0x00, 0x00, 0x00, // event_code FCH_EVT_LINKDOWN
    0xde, 0xad, 0xbe, 0xef, // hole before the 8-aligned union, never written
    0x00, 0x00, 0x00, 0x00, // event_data 0
    0x00, 0x00, 0x00, 0x00, // padding to 48, zeroed by the kernel
];

/// `FCH_EVT_PORT_ONLINE` on host7 from a kernel before the fix that sized
/// the message `FC_NL_MSGALIGN(sizeof(*event) + data_len)` = 56 and left
/// bytes 44..56 uninitialised: `nlmsg_len` covers 12 bytes of garbage that
/// are not event data.
const PORT_ONLINE_HOST7_OLD_KERNEL: [u8; 72] = [
    // struct nlmsghdr
    0x48, 0x00, 0x00, 0x00, // nlmsg_len 72
    0x11, 0x00, // nlmsg_type SCSI_TRANSPORT_MSG
    0x00, 0x00, // nlmsg_flags 0
    0x00, 0x00, 0x00, 0x00, // nlmsg_seq 0
    0x00, 0x00, 0x00, 0x00, // nlmsg_pid 0
    // struct fc_nl_event, 56 bytes
    0x01, 0x01, 0xb2, 0xa1, // version, transport FC, magic
    0x00, 0x01, 0x38, 0x00, // msgtype FC_NL_ASYNC_EVENT, msglen 56
    0x01, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // seconds 1700000001
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // vendor_id 0
    0x07, 0x00, // host_no 7
    0x04, 0x00, // event_datalen 4
    0x12, 0x00, 0x00, 0x00, // event_num 18
    0x02, 0x02, 0x00, 0x00, // event_code FCH_EVT_PORT_ONLINE 0x202
    0xde, 0xad, 0xbe, 0xef, // hole
    0x2a, 0x00, 0x00, 0x00, // event_data 42
    0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe,
    0xef, // uninitialised tail
];

/// A vendor-unique event of 12 data bytes (`fc_host_post_vendor_event`),
/// `vendor_id` = `SCSI_NL_VID_TYPE_PCI | 0x10df`: 40 + 12 = 52, padded to 56.
const VENDOR_HOST1: [u8; 72] = [
    0x48, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, // nlmsg_len 72, type, flags
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // nlmsg_seq, nlmsg_pid
    0x01, 0x01, 0xb2, 0xa1, 0x00, 0x01, 0x38, 0x00, // snlh, msglen 56
    0x02, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // seconds 1700000002
    0xdf, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // vendor_id PCI | 0x10df
    0x01, 0x00, // host_no 1
    0x0c, 0x00, // event_datalen 12
    0x13, 0x00, 0x00, 0x00, // event_num 19
    0xff, 0xff, 0x00, 0x00, // event_code FCH_EVT_VENDOR_UNIQUE
    0xde, 0xad, 0xbe, 0xef, // hole
    0x76, 0x65, 0x6e, 0x64, 0x6f, 0x72, 0x2d, 0x64, 0x61, 0x74, 0x61,
    0x21, // event_data "vendor-data!"
    0x00, 0x00, 0x00, 0x00, // padding to 56
];

fn payload(datagram: &[u8]) -> &[u8] {
    let mut it = NlMsgIter::new(datagram);
    let m = it.next().unwrap();
    assert_eq!(m.header.nlmsg_type, SCSI_TRANSPORT_MSG);
    m.payload
}

#[test]
fn the_padded_48_byte_linkdown_event_is_read_field_by_field() {
    let p = payload(&LINKDOWN_HOST3);
    assert_eq!(p.len(), FC_NL_EVENT_LEN);
    let e = FcEvent::parse(p).unwrap();
    assert_eq!(e.host_no(), 3);
    assert_eq!(e.event_num(), 17);
    assert_eq!(e.event_code(), fch::LINKDOWN);
    assert_eq!(e.seconds(), 1_700_000_000);
    assert_eq!(e.vendor_id(), 0);
    assert_eq!(e.data, &[0, 0, 0, 0]);
    assert_eq!(e.raw.snlh.msglen, 48);
    assert_eq!(e.bytes_used(), 44);
    assert_eq!(fch::name(e.event_code()), "link_down");
}

#[test]
fn an_old_kernels_uninitialised_tail_is_not_read_as_data() {
    let p = payload(&PORT_ONLINE_HOST7_OLD_KERNEL);
    assert_eq!(p.len(), 56);
    let e = FcEvent::parse(p).unwrap();
    assert_eq!((e.host_no(), e.event_num()), (7, 18));
    assert_eq!(e.event_code(), fch::PORT_ONLINE);
    // Bounded by event_datalen (4), not by nlmsg_len (56 - 40 = 16).
    assert_eq!(e.data, &42u32.to_ne_bytes());
}

#[test]
fn vendor_data_is_borrowed_with_its_exact_length() {
    let p = payload(&VENDOR_HOST1);
    let e = FcEvent::parse(p).unwrap();
    assert_eq!(e.data, b"vendor-data!");
    assert_eq!(e.vendor_id(), (1 << 56) | 0x10df);
    assert_eq!(e.data.as_ptr() as usize, p.as_ptr() as usize + 40);
}

#[test]
fn truncated_messages_are_refused() {
    // The datagram was cut after 40 bytes: nlmsg_len (64) runs past it, so
    // the walker yields nothing and reports the bytes.
    let cut = &LINKDOWN_HOST3[..40];
    let mut it = NlMsgIter::new(cut);
    assert!(it.next().is_none());
    assert_eq!(it.trailing_bytes(), 40);
    // A payload shorter than the fixed header.
    assert_eq!(
        FcEvent::parse(&LINKDOWN_HOST3[16..40]),
        Err(FcError::Short { got: 24 })
    );
    // event_datalen larger than what arrived.
    let mut v = LINKDOWN_HOST3;
    v[16 + 26] = 64;
    assert_eq!(
        FcEvent::parse(&v[16..]),
        Err(FcError::DataTruncated {
            datalen: 64,
            available: 8
        })
    );
}

#[test]
fn wrong_magic_version_and_message_type_are_refused() {
    let mut v = LINKDOWN_HOST3;
    v[18] = 0xa1;
    v[19] = 0xb2;
    assert_eq!(
        FcEvent::parse(&v[16..]),
        Err(FcError::BadMagic { got: 0xb2a1 })
    );
    let mut v = LINKDOWN_HOST3;
    v[16] = 2;
    assert_eq!(
        FcEvent::parse(&v[16..]),
        Err(FcError::BadVersion { got: 2 })
    );
    let mut v = LINKDOWN_HOST3;
    v[17] = 0; // SCSI_NL_TRANSPORT
    v[20] = 1; // SCSI_NL_SHOST_VENDOR
    v[21] = 0;
    assert_eq!(
        FcEvent::parse(&v[16..]),
        Err(FcError::NotFcEvent {
            transport: 0,
            msgtype: 1
        })
    );
}

#[test]
fn push_fc_event_lays_out_what_a_current_kernel_sends() {
    let mut v = Vec::new();
    push_fc_event(&mut v, 3, 17, fch::LINKDOWN, 1_700_000_000, 0, &[0; 4]);
    let mut expected = LINKDOWN_HOST3;
    expected[52..56].copy_from_slice(&[0; 4]); // the hole is zero here
    assert_eq!(v, expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(e) = FcEvent::parse(&bytes) {
            prop_assert!(e.bytes_used() <= bytes.len());
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(
        flips in proptest::collection::vec((0usize..72, any::<u8>()), 0..6),
        cut in 0usize..72,
    ) {
        for fixture in [&VENDOR_HOST1[..], &PORT_ONLINE_HOST7_OLD_KERNEL[..]] {
            let mut v = fixture.to_vec();
            for &(at, b) in &flips {
                if let Some(x) = v.get_mut(at) { *x = b; }
            }
            let end = v.len() - cut.min(v.len());
            for m in NlMsgIter::new(&v[..end]) {
                if let Ok(e) = FcEvent::parse(m.payload) {
                    prop_assert!(e.bytes_used() <= m.payload.len());
                }
            }
        }
    }
}

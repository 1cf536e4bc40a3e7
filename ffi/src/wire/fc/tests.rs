//! Fixtures laid out byte for byte as `fc_host_post_fc_event()`
//! (`drivers/scsi/scsi_transport_fc.c`, x86_64) builds them, per
//! `include/uapi/scsi/scsi_netlink.h` (`struct scsi_nl_hdr`,
//! `SCSI_TRANSPORT_MSG`) and `include/uapi/scsi/scsi_netlink_fc.h`:
//!
//! ```c
//! struct fc_nl_event {
//!         struct scsi_nl_hdr snlh;        /* must be 1st element ! */
//!         uint64_t seconds;
//!         uint64_t vendor_id;
//!         uint16_t host_no;
//!         uint16_t event_datalen;
//!         uint32_t event_num;
//!         uint32_t event_code;
//!         union {
//!                 uint32_t event_data;
//!                 __DECLARE_FLEX_ARRAY(uint8_t, event_data_flex);
//!         };
//! } __attribute__((aligned(sizeof(uint64_t))));
//! ```
//!
//! `snlh` is 8 bytes, so the data starts at offset 36 and `sizeof` is 40
//! with no padding. Current kernels size the message
//! `FC_NL_MSGALIGN(sizeof(*event) - sizeof(event->event_data) + data_len)`
//! and zero what follows the data; older kernels sized it
//! `FC_NL_MSGALIGN(sizeof(*event) + data_len)` and left the bytes after
//! the data uninitialised. `fc_host_post_event()` passes one `u32` of data,
//! so the usual message is 40 bytes (current) or 48 bytes (older). Bytes
//! the kernel leaves uninitialised are filled with `0xde 0xad …` here, so a
//! reader that looked at them would be caught.

use super::*;
use crate::wire::nlmsg::NlMsgIter;
use proptest::prelude::*;

/// `FCH_EVT_LINKDOWN` on host3 from a current kernel, as
/// `fc_host_post_event(shost, 17, FCH_EVT_LINKDOWN, 0)` sends it:
/// 16 + 40 bytes.
const LINKDOWN_HOST3: [u8; 56] = [
    // struct nlmsghdr
    0x38, 0x00, 0x00, 0x00, // nlmsg_len 56
    0x11, 0x00, // nlmsg_type SCSI_TRANSPORT_MSG
    0x00, 0x00, // nlmsg_flags 0
    0x00, 0x00, 0x00, 0x00, // nlmsg_seq 0
    0x00, 0x00, 0x00, 0x00, // nlmsg_pid 0 (kernel)
    // struct fc_nl_event, 40 bytes
    0x01, // snlh.version SCSI_NL_VERSION
    0x01, // snlh.transport SCSI_NL_TRANSPORT_FC
    0xb2, 0xa1, // snlh.magic SCSI_NL_MAGIC 0xA1B2
    0x00, 0x01, // snlh.msgtype FC_NL_ASYNC_EVENT 0x0100
    0x28, 0x00, // snlh.msglen 40 = FC_NL_MSGALIGN(40 - 4 + 4)
    0x00, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // seconds 1700000000
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // vendor_id 0
    0x03, 0x00, // host_no 3
    0x04, 0x00, // event_datalen 4
    0x11, 0x00, 0x00, 0x00, // event_num 17
    0x03, 0x00, 0x00, 0x00, // event_code FCH_EVT_LINKDOWN
    0x00, 0x00, 0x00, 0x00, // event_data 0 (offset 36)
];

/// `FCH_EVT_PORT_ONLINE` on host7 from an older kernel that sized the
/// message `FC_NL_MSGALIGN(sizeof(*event) + data_len)` = 48 and left bytes
/// 40..48 uninitialised: `nlmsg_len` and `msglen` cover 8 bytes of garbage
/// that are not event data.
const PORT_ONLINE_HOST7_OLD_KERNEL: [u8; 64] = [
    // struct nlmsghdr
    0x40, 0x00, 0x00, 0x00, // nlmsg_len 64
    0x11, 0x00, // nlmsg_type SCSI_TRANSPORT_MSG
    0x00, 0x00, // nlmsg_flags 0
    0x00, 0x00, 0x00, 0x00, // nlmsg_seq 0
    0x00, 0x00, 0x00, 0x00, // nlmsg_pid 0
    // struct fc_nl_event, 48 bytes
    0x01, 0x01, 0xb2, 0xa1, // version, transport FC, magic
    0x00, 0x01, 0x30, 0x00, // msgtype FC_NL_ASYNC_EVENT, msglen 48
    0x01, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // seconds 1700000001
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // vendor_id 0
    0x07, 0x00, // host_no 7
    0x04, 0x00, // event_datalen 4
    0x12, 0x00, 0x00, 0x00, // event_num 18
    0x02, 0x02, 0x00, 0x00, // event_code FCH_EVT_PORT_ONLINE 0x202
    0x2a, 0x00, 0x00, 0x00, // event_data 42 (offset 36)
    0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, // uninitialised tail
];

/// A vendor-unique event of 11 data bytes (`fc_host_post_vendor_event`),
/// `vendor_id` = `SCSI_NL_VID_TYPE_PCI | 0x10df`: 36 + 11 = 47, padded to
/// 48 with a zero.
const VENDOR_HOST1: [u8; 64] = [
    0x40, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, // nlmsg_len 64, type, flags
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // nlmsg_seq, nlmsg_pid
    0x01, 0x01, 0xb2, 0xa1, 0x00, 0x01, 0x30, 0x00, // snlh, msglen 48
    0x02, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // seconds 1700000002
    0xdf, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // vendor_id PCI | 0x10df
    0x01, 0x00, // host_no 1
    0x0b, 0x00, // event_datalen 11
    0x13, 0x00, 0x00, 0x00, // event_num 19
    0xff, 0xff, 0x00, 0x00, // event_code FCH_EVT_VENDOR_UNIQUE
    0x76, 0x65, 0x6e, 0x64, 0x6f, 0x72, 0x2d, 0x64, 0x61, 0x74,
    0x61, // event_data_flex "vendor-data" (offset 36)
    0x00, // padding to 48, zeroed by the kernel
];

/// Two current-kernel events in one datagram: LINKDOWN (event 20) and
/// LINKUP (event 21) on host2.
const LINKDOWN_LINKUP_HOST2: [u8; 112] = [
    0x38, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, // nlmsg_len 56, type, flags
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // nlmsg_seq, nlmsg_pid
    0x01, 0x01, 0xb2, 0xa1, 0x00, 0x01, 0x28, 0x00, // snlh, msglen 40
    0x03, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // seconds 1700000003
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // vendor_id 0
    0x02, 0x00, 0x04, 0x00, // host_no 2, event_datalen 4
    0x14, 0x00, 0x00, 0x00, // event_num 20
    0x03, 0x00, 0x00, 0x00, // event_code FCH_EVT_LINKDOWN
    0x00, 0x00, 0x00, 0x00, // event_data 0
    0x38, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, // nlmsg_len 56, type, flags
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // nlmsg_seq, nlmsg_pid
    0x01, 0x01, 0xb2, 0xa1, 0x00, 0x01, 0x28, 0x00, // snlh, msglen 40
    0x04, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // seconds 1700000004
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // vendor_id 0
    0x02, 0x00, 0x04, 0x00, // host_no 2, event_datalen 4
    0x15, 0x00, 0x00, 0x00, // event_num 21
    0x02, 0x00, 0x00, 0x00, // event_code FCH_EVT_LINKUP
    0x05, 0x00, 0x00, 0x00, // event_data 5
];

fn payload(datagram: &[u8]) -> &[u8] {
    let mut it = NlMsgIter::new(datagram);
    let m = it.next().unwrap();
    assert_eq!(m.header.nlmsg_type, SCSI_TRANSPORT_MSG);
    m.payload
}

#[test]
fn a_current_kernels_40_byte_linkdown_event_is_read_field_by_field() {
    let p = payload(&LINKDOWN_HOST3);
    assert_eq!(p.len(), FC_NL_EVENT_LEN);
    assert_eq!(p.len(), fc_event_msglen(4));
    let e = FcEvent::parse(p).unwrap();
    assert_eq!(e.host_no(), 3);
    assert_eq!(e.event_num(), 17);
    assert_eq!(e.event_code(), fch::LINKDOWN);
    assert_eq!(e.seconds(), 1_700_000_000);
    assert_eq!(e.vendor_id(), 0);
    assert_eq!(e.data, &[0, 0, 0, 0]);
    assert_eq!(e.data.as_ptr() as usize, p.as_ptr() as usize + 36);
    assert_eq!(e.raw.snlh.msglen, 40);
    assert_eq!(e.bytes_used(), 40);
    assert_eq!(fch::name(e.event_code()), "link_down");
}

#[test]
fn an_old_kernels_padded_48_byte_message_does_not_leak_its_tail() {
    let p = payload(&PORT_ONLINE_HOST7_OLD_KERNEL);
    assert_eq!(p.len(), 48);
    assert_eq!(p.len(), fc_event_msglen_old(4));
    let e = FcEvent::parse(p).unwrap();
    assert_eq!((e.host_no(), e.event_num()), (7, 18));
    assert_eq!(e.event_code(), fch::PORT_ONLINE);
    assert_eq!(e.raw.event_data, 42);
    // Bounded by event_datalen (4) at offset 36, not by nlmsg_len (48 - 36).
    assert_eq!(e.data, &42u32.to_ne_bytes());
    assert_eq!(e.bytes_used(), 40);
    assert!(!p[..e.bytes_used()].windows(2).any(|w| w == [0xde, 0xad]));
}

#[test]
fn vendor_data_is_borrowed_with_its_exact_length() {
    let p = payload(&VENDOR_HOST1);
    assert_eq!(p.len(), fc_event_msglen(11));
    let e = FcEvent::parse(p).unwrap();
    assert_eq!(e.data, b"vendor-data");
    assert_eq!(e.vendor_id(), (1 << 56) | 0x10df);
    assert_eq!(e.data.as_ptr() as usize, p.as_ptr() as usize + 36);
    assert_eq!(e.bytes_used(), 47);
}

#[test]
fn two_events_in_one_datagram_are_both_read() {
    let got: Vec<_> = NlMsgIter::new(&LINKDOWN_LINKUP_HOST2)
        .map(|m| {
            let e = FcEvent::parse(m.payload).unwrap();
            (e.host_no(), e.event_num(), e.event_code(), e.data.to_vec())
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, 20, fch::LINKDOWN, vec![0, 0, 0, 0]),
            (2, 21, fch::LINKUP, vec![5, 0, 0, 0]),
        ]
    );
}

#[test]
fn an_event_without_data_is_read() {
    // `fc_host_post_fc_event()` with data_len < 4: event_datalen 0, the
    // message still padded to 40.
    let mut v = LINKDOWN_HOST3;
    v[16 + 26] = 0;
    let e = FcEvent::parse(&v[16..]).unwrap();
    assert!(e.data.is_empty());
    assert_eq!(e.bytes_used(), 36);
    // And the fixed part alone is enough.
    let e = FcEvent::parse(&v[16..16 + 36]).unwrap();
    assert_eq!((e.event_num(), e.raw.event_data), (17, 0));
}

#[test]
fn truncated_messages_are_refused() {
    // The datagram was cut after 40 bytes: nlmsg_len (56) runs past it, so
    // the walker yields nothing and reports the bytes.
    let cut = &LINKDOWN_HOST3[..40];
    let mut it = NlMsgIter::new(cut);
    assert!(it.next().is_none());
    assert_eq!(it.trailing_bytes(), 40);
    // A payload shorter than the fixed part.
    assert_eq!(
        FcEvent::parse(&LINKDOWN_HOST3[16..16 + 35]),
        Err(FcError::Short { got: 35 })
    );
    // The data word cut off.
    assert_eq!(
        FcEvent::parse(&LINKDOWN_HOST3[16..16 + 38]),
        Err(FcError::DataTruncated {
            datalen: 4,
            available: 2
        })
    );
    // event_datalen larger than what arrived: not filled from nlmsg_len.
    let mut v = PORT_ONLINE_HOST7_OLD_KERNEL;
    v[16 + 26] = 13;
    assert_eq!(
        FcEvent::parse(&v[16..]),
        Err(FcError::DataTruncated {
            datalen: 13,
            available: 12
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
    assert_eq!(v, LINKDOWN_HOST3);
    let mut v = Vec::new();
    push_fc_event(
        &mut v,
        1,
        19,
        fch::VENDOR_UNIQUE,
        1_700_000_002,
        (1 << 56) | 0x10df,
        b"vendor-data",
    );
    assert_eq!(v, VENDOR_HOST1);
    let mut v = Vec::new();
    push_fc_event(&mut v, 2, 20, fch::LINKDOWN, 1_700_000_003, 0, &[0; 4]);
    push_fc_event(&mut v, 2, 21, fch::LINKUP, 1_700_000_004, 0, &[5, 0, 0, 0]);
    assert_eq!(v, LINKDOWN_LINKUP_HOST2);
}

#[test]
fn push_fc_event_sized_lays_out_an_old_kernels_message() {
    let mut v = Vec::new();
    push_fc_event_sized(
        &mut v,
        fc_event_msglen_old(4),
        7,
        18,
        fch::PORT_ONLINE,
        1_700_000_001,
        0,
        &42u32.to_ne_bytes(),
    );
    let mut expected = PORT_ONLINE_HOST7_OLD_KERNEL;
    expected[56..].fill(0); // the tail is zero here
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
        flips in proptest::collection::vec((0usize..112, any::<u8>()), 0..6),
        cut in 0usize..112,
    ) {
        for fixture in [
            &LINKDOWN_HOST3[..],
            &VENDOR_HOST1[..],
            &PORT_ONLINE_HOST7_OLD_KERNEL[..],
            &LINKDOWN_LINKUP_HOST2[..],
        ] {
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

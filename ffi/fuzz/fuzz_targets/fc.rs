//! `FcEvent::parse` on arbitrary bytes, as the payload of one
//! `SCSI_TRANSPORT_MSG` (what follows the `nlmsghdr`). Nothing may panic; an
//! accepted event carries the header fields of its first 40 bytes (the
//! union's word zero-extended when the input is shorter), a valid
//! `scsi_nl_hdr`, and data of exactly `event_datalen` bytes at offset 36
//! inside the input. Every accepted event round-trips through the encoder,
//! `push_fc_event` (a current kernel's layout) and `push_fc_event_sized` with
//! an older kernel's length: same fields, same data.
#![no_main]

use faultbridge_ffi::wire::fc::{
    FC_EVENT_DATA_OFFSET, FC_NL_ASYNC_EVENT, FC_NL_EVENT_LEN, FcError, FcEvent, SCSI_NL_MAGIC,
    SCSI_NL_TRANSPORT_FC, SCSI_NL_VERSION, SCSI_TRANSPORT_MSG, fc_event_msglen,
    fc_event_msglen_old, fch, push_fc_event, push_fc_event_sized,
};
use faultbridge_ffi::wire::nlmsg::NlMsgIter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let e = match FcEvent::parse(data) {
        Ok(e) => e,
        Err(FcError::Short { got }) => {
            assert!(data.len() < FC_EVENT_DATA_OFFSET);
            assert_eq!(got, data.len());
            return;
        }
        Err(FcError::DataTruncated { datalen, available }) => {
            assert_eq!(available, data.len() - FC_EVENT_DATA_OFFSET);
            assert!(usize::from(datalen) > available);
            return;
        }
        Err(_) => {
            assert!(data.len() >= FC_EVENT_DATA_OFFSET);
            return;
        }
    };

    // The header, read field by field at the offsets of scsi_netlink_fc.h.
    let mut head = [0u8; FC_NL_EVENT_LEN];
    let n = data.len().min(FC_NL_EVENT_LEN);
    head[..n].copy_from_slice(&data[..n]);
    let u16_at = |i: usize| u16::from_ne_bytes([head[i], head[i + 1]]);
    let u32_at = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
    let raw = e.raw;
    assert_eq!(
        (raw.snlh.version, raw.snlh.transport),
        (SCSI_NL_VERSION, SCSI_NL_TRANSPORT_FC)
    );
    assert_eq!(
        (raw.snlh.magic, raw.snlh.msgtype),
        (SCSI_NL_MAGIC, FC_NL_ASYNC_EVENT)
    );
    assert_eq!(
        (head[0], head[1], u16_at(2), u16_at(4)),
        (1, 1, SCSI_NL_MAGIC, FC_NL_ASYNC_EVENT)
    );
    assert_eq!(raw.snlh.msglen, u16_at(6));
    assert_eq!(e.seconds(), u64_at(8));
    assert_eq!(e.vendor_id(), u64_at(16));
    assert_eq!(e.host_no(), u16_at(24));
    assert_eq!(raw.event_datalen, u16_at(26));
    assert_eq!(e.event_num(), u32_at(28));
    assert_eq!(e.event_code(), u32_at(32));
    assert_eq!(raw.event_data, u32_at(36));
    let _ = fch::name(e.event_code());

    // The data: event_datalen bytes at offset 36, inside the input.
    let start = (e.data.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
    assert_eq!(start, FC_EVENT_DATA_OFFSET);
    assert_eq!(e.data.len(), usize::from(raw.event_datalen));
    assert_eq!(e.bytes_used(), FC_EVENT_DATA_OFFSET + e.data.len());
    assert!(e.bytes_used() <= data.len());

    // Re-encoded as a current and as an older kernel lays it out, it reads
    // back the same.
    let (host, num, code, secs, vendor) = (
        e.host_no(),
        e.event_num(),
        e.event_code(),
        e.seconds(),
        e.vendor_id(),
    );
    let mut current = Vec::new();
    push_fc_event(&mut current, host, num, code, secs, vendor, e.data);
    let old_len = fc_event_msglen_old(e.data.len());
    let mut old = Vec::new();
    push_fc_event_sized(&mut old, old_len, host, num, code, secs, vendor, e.data);
    for (dg, len) in [(current, fc_event_msglen(e.data.len())), (old, old_len)] {
        let mut it = NlMsgIter::new(&dg);
        let m = it.next().expect("one message");
        assert!(it.next().is_none());
        assert_eq!(it.trailing_bytes(), 0);
        assert_eq!(m.header.nlmsg_type, SCSI_TRANSPORT_MSG);
        assert_eq!(m.payload.len(), len);
        let back = FcEvent::parse(m.payload).expect("an encoded event parses");
        assert_eq!(back.data, e.data);
        assert_eq!(
            (back.host_no(), back.event_num(), back.event_code()),
            (host, num, code)
        );
        assert_eq!((back.seconds(), back.vendor_id()), (secs, vendor));
        assert_eq!(back.raw.event_datalen, raw.event_datalen);
        if let Ok(msglen) = u16::try_from(len) {
            assert_eq!(back.raw.snlh.msglen, msglen);
        }
    }
});

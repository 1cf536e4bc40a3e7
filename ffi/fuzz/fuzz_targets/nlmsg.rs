//! A netlink datagram of arbitrary bytes: walk it with `NlMsgIter` (the
//! `NLMSG_OK`/`NLMSG_NEXT` loop) and parse every payload as a fault record,
//! as the bridge's receive loop does. Nothing may panic, every message and
//! record must lie inside the datagram, and every byte is either in a
//! message, alignment padding, or reported as trailing.
#![no_main]

use faultbridge_ffi::wire::nlmsg::{NLMSG_HDRLEN, NlMsgIter, nlmsg_align};
use faultbridge_ffi::wire::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut it = NlMsgIter::new(data);
    let mut walked = 0usize;
    for msg in it.by_ref() {
        let len = msg.header.nlmsg_len as usize;
        assert!(len >= NLMSG_HDRLEN);
        assert_eq!(msg.payload.len(), len - NLMSG_HDRLEN);
        // The payload follows its header, where the walk has got to.
        let start = (msg.payload.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        assert_eq!(start, walked + NLMSG_HDRLEN);
        assert!(start + msg.payload.len() <= data.len());
        walked = (walked + nlmsg_align(len)).min(data.len());

        // Every type is parsed, not only EXPDRV_MSG_FAULT/CLEAR: a reserved or
        // garbage payload must be rejected, never panic.
        if let Ok(r) = Record::parse(msg.payload) {
            let rec = r.as_bytes();
            assert_eq!(rec.as_ptr(), msg.payload.as_ptr());
            assert!(rec.len() <= msg.payload.len());
            for part in [r.keyword().as_bytes(), r.detail()] {
                let at = (part.as_ptr() as usize).wrapping_sub(rec.as_ptr() as usize);
                assert!(part.is_empty() || (at <= rec.len() && part.len() <= rec.len() - at));
            }
        }
    }
    assert_eq!(walked + it.trailing_bytes(), data.len());
});

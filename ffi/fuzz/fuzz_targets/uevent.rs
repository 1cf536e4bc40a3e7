//! `Uevent::parse` on an arbitrary datagram, then every accessor the uevent
//! source calls. Nothing may panic; an accepted uevent is `ACTION@DEVPATH`
//! at the very start of the datagram (ACTION non-empty, DEVPATH beginning
//! with `/`, up to the first NUL), and every `KEY=VALUE` pair, the device
//! name and `SEQNUM` are read from inside the datagram after that header.
//! There is no uevent encoder here: the kernel writes them.
#![no_main]

use faultbridge_ffi::wire::uevent::{LIBUDEV_MAGIC, Uevent, UeventError};
use libfuzzer_sys::fuzz_target;

/// `part`'s offset inside `whole`, asserting that it lies within it.
fn offset_within(whole: &[u8], part: &str) -> usize {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(start <= whole.len() && part.len() <= whole.len() - start);
    start
}

fuzz_target!(|data: &[u8]| {
    let u = match Uevent::parse(data) {
        Ok(u) => u,
        Err(UeventError::Libudev) => {
            assert!(data.starts_with(LIBUDEV_MAGIC));
            return;
        }
        Err(UeventError::NotUtf8 { at }) => {
            let e = std::str::from_utf8(data).expect_err("refused as not UTF-8");
            assert_eq!(at, e.valid_up_to());
            return;
        }
        Err(_) => {
            assert!(!data.starts_with(LIBUDEV_MAGIC));
            return;
        }
    };
    assert!(!data.starts_with(LIBUDEV_MAGIC));

    // The header: ACTION@DEVPATH at the start, ended by a NUL or the datagram.
    assert_eq!(offset_within(data, u.action), 0);
    assert!(!u.action.is_empty() && !u.action.contains(['@', '\0']));
    assert_eq!(data[u.action.len()], b'@');
    assert_eq!(offset_within(data, u.devpath), u.action.len() + 1);
    assert!(u.devpath.starts_with('/') && !u.devpath.contains('\0'));
    let head_end = u.action.len() + 1 + u.devpath.len();
    assert!(head_end == data.len() || data[head_end] == 0);

    // The variables: after the header, in order, without NUL.
    let mut vars = Vec::new();
    let mut last = head_end;
    for (k, v) in u.vars() {
        let at = offset_within(data, k);
        assert!(at > head_end && at >= last, "variables out of order");
        assert!(!k.contains(['=', '\0']));
        assert!(!v.contains('\0'));
        if !v.is_empty() {
            assert_eq!(offset_within(data, v), at + k.len() + 1);
            assert_eq!(data[at + k.len()], b'=');
        }
        last = at + k.len() + v.len();
        vars.push((k, v));
    }
    // `get` is a linear search: check it for the first keys only, so that a
    // datagram of a thousand variables stays linear to check.
    for &(k, _) in vars.iter().take(16) {
        let first = vars.iter().find(|(key, _)| *key == k).map(|&(_, v)| v);
        assert_eq!(u.get(k), first);
    }

    // A variable without `=` has an empty value that is not a slice of the
    // datagram (`INTERFACE` alone gives the device name ""): only non-empty
    // names are checked for where they lie.
    let name = u.device_name();
    if !name.is_empty() {
        offset_within(data, name);
    }
    assert_eq!(u.seqnum(), u.get("SEQNUM").and_then(|s| s.parse().ok()));
    assert_eq!(u.subsystem(), u.get("SUBSYSTEM"));
});

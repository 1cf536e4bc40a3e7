//! Uevents captured from Linux 6.18 (x86_64) on a `NETLINK_KOBJECT_UEVENT`
//! socket bound to group 1 inside a fresh network namespace, during
//! `ip link add fb0a type veth peer name fb0b` and `ip link del fb0a`: the
//! kernel delivers the uevents of a net device only to the namespace the
//! device lives in. Layout per `lib/kobject_uevent.c`: the header string
//! `ACTION@DEVPATH`, then one `KEY=VALUE` string per variable, each ended by
//! a NUL, no netlink header.

use super::*;
use proptest::prelude::*;

/// `add` of `fb0a` (126 bytes).
const ADD_FB0A: &[u8] = b"add@/devices/virtual/net/fb0a\0\
    ACTION=add\0\
    DEVPATH=/devices/virtual/net/fb0a\0\
    SUBSYSTEM=net\0\
    INTERFACE=fb0a\0\
    IFINDEX=3\0\
    SEQNUM=1081\0";

/// `remove` of `fb0a` (132 bytes).
const REMOVE_FB0A: &[u8] = b"remove@/devices/virtual/net/fb0a\0\
    ACTION=remove\0\
    DEVPATH=/devices/virtual/net/fb0a\0\
    SUBSYSTEM=net\0\
    INTERFACE=fb0a\0\
    IFINDEX=3\0\
    SEQNUM=1092\0";

/// `remove` of one of `fb0a`'s queues (subsystem `queues`, 134 bytes).
const REMOVE_FB0A_QUEUE: &[u8] = b"remove@/devices/virtual/net/fb0a/queues/tx-1\0\
    ACTION=remove\0\
    DEVPATH=/devices/virtual/net/fb0a/queues/tx-1\0\
    SUBSYSTEM=queues\0\
    SEQNUM=1086\0";

/// The start of a libudev monitor message (`udev_monitor_send_device`):
/// the magic, then `struct udev_monitor_netlink_header` in binary.
const LIBUDEV: &[u8] = b"libudev\0\xfe\xed\xca\xfe\x28\x00\x00\x00";

#[test]
fn the_captured_add_and_remove_of_a_veth_are_read() {
    assert_eq!(ADD_FB0A.len(), 126);
    assert_eq!(REMOVE_FB0A.len(), 132);
    let a = Uevent::parse(ADD_FB0A).unwrap();
    assert_eq!(a.action, "add");
    assert_eq!(a.devpath, "/devices/virtual/net/fb0a");
    assert_eq!(a.subsystem(), Some("net"));
    assert_eq!(a.get("IFINDEX"), Some("3"));
    assert_eq!(a.seqnum(), Some(1081));
    assert_eq!(a.device_name(), "fb0a");
    let r = Uevent::parse(REMOVE_FB0A).unwrap();
    assert_eq!((r.action, r.device_name()), ("remove", "fb0a"));
    assert_eq!(
        r.vars().collect::<Vec<_>>(),
        [
            ("ACTION", "remove"),
            ("DEVPATH", "/devices/virtual/net/fb0a"),
            ("SUBSYSTEM", "net"),
            ("INTERFACE", "fb0a"),
            ("IFINDEX", "3"),
            ("SEQNUM", "1092"),
        ]
    );
    // Borrowed from the datagram.
    let base = REMOVE_FB0A.as_ptr() as usize;
    assert_eq!(r.devpath.as_ptr() as usize, base + "remove@".len());
}

#[test]
fn a_device_without_interface_or_devname_is_named_by_its_path() {
    let q = Uevent::parse(REMOVE_FB0A_QUEUE).unwrap();
    assert_eq!(q.subsystem(), Some("queues"));
    assert_eq!(q.device_name(), "tx-1");
    let b = Uevent::parse(
        b"remove@/devices/pci0000:00/0000:00:10.0/host2/target2:0:1/2:0:1:0/block/sdb\0\
          ACTION=remove\0SUBSYSTEM=block\0DEVNAME=sdb\0DEVTYPE=disk\0MAJOR=8\0MINOR=16\0",
    )
    .unwrap();
    assert_eq!((b.subsystem(), b.device_name()), (Some("block"), "sdb"));
    assert_eq!(b.get("DEVTYPE"), Some("disk"));
    assert_eq!(b.get("SEQNUM"), None);
}

#[test]
fn libudev_messages_and_garbage_are_refused() {
    assert_eq!(Uevent::parse(LIBUDEV), Err(UeventError::Libudev));
    assert_eq!(Uevent::parse(b"hello\0A=b\0"), Err(UeventError::NoHeader));
    assert_eq!(Uevent::parse(b"@/x\0"), Err(UeventError::NoHeader));
    assert_eq!(
        Uevent::parse(b"add@/x\0A=\xff\0"),
        Err(UeventError::NotUtf8 { at: 9 })
    );
    assert_eq!(Uevent::parse(b""), Err(UeventError::NoHeader));
    // A truncated message keeps what arrived.
    let cut = Uevent::parse(&REMOVE_FB0A[..60]).unwrap();
    assert_eq!(cut.get("ACTION"), Some("remove"));
    assert_eq!(cut.get("INTERFACE"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(u) = Uevent::parse(&bytes) {
            let _ = u.vars().count();
            let _ = (u.device_name(), u.seqnum(), u.subsystem());
        }
    }

    #[test]
    fn mutated_captures_never_panic(
        flips in proptest::collection::vec((0usize..134, any::<u8>()), 0..6),
        cut in 0usize..134,
    ) {
        let mut v = REMOVE_FB0A.to_vec();
        for (at, b) in flips {
            if let Some(x) = v.get_mut(at) { *x = b; }
        }
        let end = v.len() - cut.min(v.len());
        if let Ok(u) = Uevent::parse(&v[..end]) {
            let _ = u.vars().count();
            let _ = u.device_name();
        }
    }
}

//! Writes the seed corpora `seeds/<target>/`, so the fuzzer starts from
//! inputs that get past each decoder's magic, version and length checks:
//!
//! - `record`, `nlmsg`: well-formed records as the driver lays them out
//!   (`RecordSpec::encode_into`), alone and packed into netlink datagrams
//!   (`push_nlmsg`);
//! - `rtnl`: the payloads of the link messages captured from Linux
//!   (`wire::rtnl::fixtures`) and of a `push_setlink_updown` request;
//! - `fc`: FC events as a current and an older kernel lay them out
//!   (`push_fc_event`, `push_fc_event_sized`), link and vendor events;
//! - `uevent`: kernel uevents as `lib/kobject_uevent.c` builds them (those of
//!   the uevent tests' captures) and the start of a libudev message;
//! - `fbex`: exit-program blocks written by `ExitBlock::encode`;
//! - `info`: `struct expdrv_info` as the driver and the simulator fill it.
//!
//! ```text
//! cd ffi/fuzz && cargo run --example make_seeds
//! ```
#![allow(clippy::unwrap_used)]

use faultbridge_ffi::wire::fbex::{ExitBlock, FBEX_F_OUTSIDE_SERVER_GROUP, action};
use faultbridge_ffi::wire::fc::{fc_event_msglen_old, fch, push_fc_event, push_fc_event_sized};
use faultbridge_ffi::wire::info::ExpdrvInfoRaw;
use faultbridge_ffi::wire::nlmsg::{NLM_F_MULTI, NLMSG_DONE, NLMSG_HDRLEN, push_nlmsg};
use faultbridge_ffi::wire::record::{
    Category, EXPDRV_MSG_CLEAR, EXPDRV_MSG_FAULT, F_SNAPSHOT, RecordSpec, Severity, event,
};
use faultbridge_ffi::wire::rtnl::{fixtures, push_setlink_updown};
use std::path::Path;

fn spec<'a>(
    seq: u64,
    cat: Category,
    code: u32,
    keyword: &'a [u8],
    detail: &'a [u8],
) -> RecordSpec<'a> {
    RecordSpec {
        flags: 0,
        sequence: seq,
        timestamp_ns: 1_000_000_000 + seq,
        category: cat.code(),
        severity: Severity::Error.code(),
        event_code: code,
        device_index: 3,
        keyword,
        detail,
        driver_id: 1,
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let specs = [
        spec(1, Category::Nic, event::NIC_LINK_DOWN, b"eth0", b""),
        spec(
            2,
            Category::Nic,
            event::NIC_LINK_UP,
            b"eth1",
            b"\x01\x02\x03",
        ),
        spec(3, Category::Fc, event::FC_PATH_LOST, b"host3", b"port 0x10"),
        spec(
            4,
            Category::HaSs,
            event::generic_fatal(3),
            b"/dev/sdb",
            &[0xAA; 64],
        ),
        spec(5, Category::Sps, event::generic_fatal(6), b"", b""),
        RecordSpec {
            flags: F_SNAPSHOT,
            ..spec(6, Category::Fc, event::FC_PORT_OFFLINE, b"", b"detail only")
        },
    ];
    let records: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| {
            let mut v = Vec::new();
            s.encode_into(&mut v);
            v
        })
        .collect();

    let record_dir = dir.join("record");
    std::fs::create_dir_all(&record_dir).unwrap();
    for (i, r) in records.iter().enumerate() {
        std::fs::write(record_dir.join(format!("seed-{i}")), r).unwrap();
    }

    let nlmsg_dir = dir.join("nlmsg");
    std::fs::create_dir_all(&nlmsg_dir).unwrap();
    // One record per datagram, all records in one datagram, and a multi-part
    // dump closed by NLMSG_DONE.
    for (i, (s, r)) in specs.iter().zip(&records).enumerate() {
        let mut dg = Vec::new();
        let ty = if s.event_code & 0xFFFF == 2 {
            EXPDRV_MSG_CLEAR
        } else {
            EXPDRV_MSG_FAULT
        };
        push_nlmsg(&mut dg, ty, 0, s.sequence as u32, 0, r);
        std::fs::write(nlmsg_dir.join(format!("seed-{i}")), dg).unwrap();
    }
    let mut dg = Vec::new();
    for (s, r) in specs.iter().zip(&records) {
        push_nlmsg(
            &mut dg,
            EXPDRV_MSG_FAULT,
            NLM_F_MULTI,
            s.sequence as u32,
            4242,
            r,
        );
    }
    push_nlmsg(
        &mut dg,
        NLMSG_DONE,
        NLM_F_MULTI,
        0,
        4242,
        &0i32.to_ne_bytes(),
    );
    std::fs::write(nlmsg_dir.join("seed-all"), dg).unwrap();

    // rtnl: payloads (what follows the nlmsghdr).
    let mut setlink = Vec::new();
    push_setlink_updown(&mut setlink, 1, 3, true);
    write_all(
        &dir.join("rtnl"),
        [
            fixtures::NEWLINK_FB0A_CARRIER_UP,
            fixtures::NEWLINK_FB0A_CARRIER_DOWN,
            fixtures::DELLINK_FB0A,
            &setlink,
        ]
        .iter()
        .map(|dg| dg[NLMSG_HDRLEN..].to_vec()),
    );

    // fc: payloads of single events.
    let mut fc = Vec::new();
    for (host, num, code, vendor, data) in [
        (3u16, 17u32, fch::LINKDOWN, 0u64, &[0u8; 4][..]),
        (2, 21, fch::LINKUP, 0, &[5, 0, 0, 0][..]),
        (7, 30, fch::PORT_ONLINE, 0, &[0x10, 0, 0, 0][..]),
        (1, 40, fch::VENDOR_UNIQUE, 0x1077, &b"vendor data, 19 b"[..]),
        (0, 41, fch::RSCN, 0, &[][..]),
    ] {
        let mut dg = Vec::new();
        push_fc_event(&mut dg, host, num, code, 1_700_000_000, vendor, data);
        fc.push(dg[NLMSG_HDRLEN..].to_vec());
        let mut dg = Vec::new();
        let len = fc_event_msglen_old(data.len());
        push_fc_event_sized(&mut dg, len, host, num, code, 1_700_000_000, vendor, data);
        fc.push(dg[NLMSG_HDRLEN..].to_vec());
    }
    write_all(&dir.join("fc"), fc);

    // uevent: whole datagrams.
    write_all(
        &dir.join("uevent"),
        [
            &b"add@/devices/virtual/net/fb0a\0ACTION=add\0DEVPATH=/devices/virtual/net/fb0a\0\
               SUBSYSTEM=net\0INTERFACE=fb0a\0IFINDEX=3\0SEQNUM=1081\0"[..],
            b"remove@/devices/virtual/net/fb0a/queues/tx-1\0ACTION=remove\0\
               DEVPATH=/devices/virtual/net/fb0a/queues/tx-1\0SUBSYSTEM=queues\0SEQNUM=1086\0",
            b"change@/devices/pci0000:00/0000:00:1f.2/host3/scsi_host/host3\0ACTION=change\0\
               SUBSYSTEM=scsi_host\0DEVTYPE=scsi_host\0SEQNUM=2001\0",
            b"libudev\0\xfe\xed\xca\xfe\x28\x00\x00\x00",
        ]
        .iter()
        .map(|b| b.to_vec()),
    );

    // fbex: encoded blocks, with and without a keyword.
    let block = ExitBlock {
        action_code: action::FAILOVER,
        prior_action_code: 0,
        restarts_done: 1,
        restart_limit: 2,
        flags: FBEX_F_OUTSIDE_SERVER_GROUP,
        sequence: 42,
        timestamp_ns: 1_000_000_042,
        category: Category::Nic.code(),
        severity: Severity::Error.code(),
        event_code: event::NIC_LINK_DOWN,
        device_index: 3,
        monitor_name: "mrw-eth0",
        recovery_target: "failover1",
        category_name: "NIC",
        keyword: "eth0",
    };
    write_all(
        &dir.join("fbex"),
        [
            block.encode(),
            ExitBlock {
                action_code: action::UNDO,
                prior_action_code: action::RESTART,
                keyword: "",
                monitor_name: "mrw-ストレージ",
                ..block.clone()
            }
            .encode(),
            ExitBlock {
                keyword: &"k".repeat(1023),
                category_name: "HA_SS",
                ..block.clone()
            }
            .encode(),
        ],
    );

    // info: struct expdrv_info.
    let mut driver_name = [0u8; 32];
    driver_name[..6].copy_from_slice(b"expdrv");
    let info = ExpdrvInfoRaw {
        abi_version: 1,
        record_max: 65535,
        last_sequence: 1234,
        netlink_protocol: 31,
        netlink_group: 1,
        driver_name,
    };
    write_all(
        &dir.join("info"),
        [
            info_bytes(&info),
            info_bytes(&ExpdrvInfoRaw {
                driver_name: [b'x'; 32],
                ..info
            }),
        ],
    );
    println!("wrote {}", dir.display());
}

/// Writes `seed-0`, `seed-1`, … into `dir`.
fn write_all(dir: &Path, seeds: impl IntoIterator<Item = Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, s) in seeds.into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
    }
}

/// The 56 bytes of `struct expdrv_info`, field by field in host order.
fn info_bytes(info: &ExpdrvInfoRaw) -> Vec<u8> {
    let mut v = Vec::with_capacity(56);
    v.extend_from_slice(&info.abi_version.to_ne_bytes());
    v.extend_from_slice(&info.record_max.to_ne_bytes());
    v.extend_from_slice(&info.last_sequence.to_ne_bytes());
    v.extend_from_slice(&info.netlink_protocol.to_ne_bytes());
    v.extend_from_slice(&info.netlink_group.to_ne_bytes());
    v.extend_from_slice(&info.driver_name);
    v
}

//! Bounded state where an outsider picks the keys, through the real daemon:
//! records of 500 000 distinct driver ids leave the ingest loop answering
//! and its memory bounded; driver ids beyond the bound of tracked cursors
//! are delivered and counted.
#![allow(clippy::unwrap_used)]

use faultbridge_ffi::sys::netlink::{NETLINK_USERSOCK, NetlinkSocket, group_mask};
use faultbridge_ffi::wire::nlmsg::push_nlmsg;
use faultbridge_ffi::wire::record::{EXPDRV_MSG_FAULT, RecordSpec};
use faultbridge_tests::dbus::{BusPolicy, LineReader, daemon_config, private_bus, rss_kib, status};
use faultbridge_tests::{TempDir, binary, private_netns};
use std::process::Command;
use std::time::{Duration, Instant};

const IDS: u32 = 500_000;
/// The daemon's bound of tracked cursors (`sources::seq::MAX_DRIVERS`).
const TRACKED: u64 = 1024;

#[test]
fn half_a_million_driver_ids_leave_the_loop_answering_and_memory_bounded() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let dir = TempDir::new("ids");
    let cfg = dir.write(
        "faultbridge.toml",
        &daemon_config(&bus, "recv_buffer = 268435456\n"),
    );
    let mut cmd = Command::new(binary());
    cmd.args(["run", "--config"]).arg(&cfg);
    let daemon = LineReader::spawn(cmd);
    daemon.wait_stderr("owned on the", Duration::from_secs(10));
    let pid = daemon.child.id();
    let rss_before = rss_kib(pid);

    let sock = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
    let (mut dg, mut rec) = (Vec::new(), Vec::new());
    for id in 0..IDS {
        rec.clear();
        RecordSpec {
            flags: 0,
            sequence: 1,
            timestamp_ns: 1,
            category: 3,
            severity: 3,
            event_code: 0x0003_00ff,
            device_index: 0,
            keyword: b"",
            detail: b"",
            driver_id: id,
        }
        .encode_into(&mut rec);
        push_nlmsg(&mut dg, EXPDRV_MSG_FAULT, 0, 1, 0, &rec);
        if id % 32 == 31 || id == IDS - 1 {
            sock.send_to_groups(group_mask(1), &dg).unwrap();
            dg.clear();
        }
    }

    // Status keeps answering while the records are taken, and all arrive.
    let deadline = Instant::now() + Duration::from_secs(120);
    let counters = loop {
        let s = status(bus.address());
        let c = s["sources"]["expdrv"].clone();
        if c["received"].as_u64().unwrap_or(0) + c["lost"].as_u64().unwrap_or(0) >= u64::from(IDS) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the records never all arrived: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(counters["received"], u64::from(IDS), "{counters}");
    assert_eq!(counters["delivered"], u64::from(IDS), "{counters}");
    assert_eq!(
        counters["untracked"],
        u64::from(IDS) - TRACKED,
        "{counters}"
    );
    assert_eq!(counters["lost"], 0, "{counters}");
    let grown = rss_kib(pid).saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024,
        "the daemon grew by {grown} KiB for {IDS} driver ids"
    );
}

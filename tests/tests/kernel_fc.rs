//! FC transport events through a real socket: the daemon's FC source is
//! pointed at `NETLINK_USERSOCK` (its protocol number is configuration) and
//! the test multicasts `fc_nl_event` messages laid out as the kernel's
//! `fc_host_post_fc_event()` sends them, on group 4 (bind-mask bit 3), as
//! the kernel does. Per `include/uapi/scsi/scsi_netlink_fc.h` the data of
//! `struct fc_nl_event` starts at offset 36 and the struct is 40 bytes; a
//! current kernel sends 4 bytes of data in a 40-byte message, older kernels
//! in a 48-byte one whose last 8 bytes were never written.
#![allow(clippy::unwrap_used)]

use faultbridge_ffi::sys::netlink::{NETLINK_USERSOCK, NetlinkSocket, group_mask};
use faultbridge_ffi::wire::fc::{fc_event_msglen_old, fch, push_fc_event, push_fc_event_sized};
use faultbridge_tests::{Daemon, private_netns, source_stats};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const CONFIG: &str = "bus = \"none\"\n[sources.expdrv]\nenabled = false\n\
                      [sources.fc]\nnetlink_protocol = 2\nnetlink_group = 4\n";

fn sender() -> NetlinkSocket {
    let s = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
    s.bind(0, 0).unwrap();
    s
}

fn event(host: u16, num: u32, code: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    push_fc_event(&mut v, host, num, code, 1_700_000_000, 0, data);
    v
}

#[test]
fn fc_events_arrive_as_fc_records_and_event_num_gaps_as_losses() {
    private_netns();
    let mut d = Daemon::start(CONFIG);
    let s = sender();
    let fc_group = group_mask(4);
    assert_eq!(fc_group, 0b1000);

    // What a reader of `SCSI_NL_GRP_FC_EVENTS` = (1 << 2) as a bind mask
    // would listen to (group 3): the source does not.
    s.send_to_groups(1 << 2, &event(9, 100, fch::LINKDOWN, &[0; 4]))
        .unwrap();

    // 1. A current kernel's 40-byte LINKDOWN on host3.
    let linkdown = event(3, 1, fch::LINKDOWN, &[0; 4]);
    assert_eq!(linkdown.len(), 16 + 40);
    s.send_to_groups(fc_group, &linkdown).unwrap();
    let f = d.next(T).unwrap();
    assert_eq!(f["type"], "fault", "{f}");
    assert_eq!(f["source"], "fc-transport");
    assert_eq!(f["category"], "FC");
    assert_eq!(f["keyword"], "host3");
    assert_eq!(f["device_index"], 3);
    assert_eq!(f["event_code"], 0x0002_0001);
    assert_eq!(f["severity"], "error");
    assert_eq!(f["cleared"], false);
    assert_eq!(f["sequence"], 1);
    // The detail is the event up to event_datalen: 36 + 4 bytes.
    assert_eq!(f["detail"].as_str().unwrap().len(), 2 * 40);

    // 2. PORT_ONLINE as an older kernel sent it: the padded 48-byte
    //    message, its last 8 bytes uninitialised, nlmsg_len covering them.
    let mut old = Vec::new();
    push_fc_event_sized(
        &mut old,
        fc_event_msglen_old(4),
        3,
        2,
        fch::PORT_ONLINE,
        1_700_000_000,
        0,
        &7u32.to_ne_bytes(),
    );
    assert_eq!(old.len(), 16 + 48);
    old[16 + 40..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef].repeat(2));
    s.send_to_groups(fc_group, &old).unwrap();
    let f = d.next(T).unwrap();
    assert_eq!(f["cleared"], true, "{f}");
    assert_eq!(f["event_code"], 0x0002_0002);
    assert_eq!(f["sequence"], 2);
    let detail = f["detail"].as_str().unwrap();
    assert_eq!(
        detail.len(),
        2 * 40,
        "the uninitialised tail leaked: {detail}"
    );
    assert!(detail.ends_with("07000000"), "{detail}");
    assert!(!detail.contains("dead"), "{detail}");

    // 3. A truncated event (event_datalen runs past the message): counted,
    //    dropped; its event_num 3 is then reported lost.
    let mut cut = event(3, 3, fch::LINKDOWN, &[0; 4]);
    cut[16 + 26..16 + 28].copy_from_slice(&64u16.to_ne_bytes());
    s.send_to_groups(fc_group, &cut).unwrap();

    // 4. Two events in one datagram: an RSCN (informational) and a
    //    LINKDOWN of host5.
    let mut two = event(3, 4, fch::RSCN, &[0; 4]);
    two.extend_from_slice(&event(5, 5, fch::LINKDOWN, &[1, 0, 0, 0]));
    s.send_to_groups(fc_group, &two).unwrap();

    let got = d.until(T, |v| v["sequence"] == 5);
    let kinds: Vec<String> = got
        .iter()
        .map(|v| format!("{}:{}", v["type"].as_str().unwrap(), v["sequence"]))
        .collect();
    assert_eq!(kinds, ["lost:null", "fault:4", "fault:5"], "{got:?}");
    let lost: &Value = &got[0];
    assert_eq!(lost["source"], "fc-transport");
    assert_eq!(
        (
            lost["first_sequence"].clone(),
            lost["last_sequence"].clone()
        ),
        (3.into(), 3.into())
    );
    assert_eq!(got[1]["event_code"], 0x0002_8005);
    assert_eq!(got[1]["severity"], "info");
    assert_eq!(got[2]["keyword"], "host5");
    assert_eq!(got[2]["device_index"], 5);

    let stats = d.stop();
    let fc = source_stats(&stats, "fc-transport");
    assert_eq!(fc["delivered"], 4);
    assert_eq!(fc["lost"], 1);
    assert_eq!(fc["malformed_total"], 1);
    assert_eq!(fc["datagrams"], 4);
}

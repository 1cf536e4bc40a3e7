//! Writes the seed corpora `seeds/record/` and `seeds/nlmsg/`: well-formed
//! records as the driver lays them out (`RecordSpec::encode_into`), alone and
//! packed into netlink datagrams (`push_nlmsg`), so the fuzzer starts from
//! inputs that get past the magic, version and length checks.
//!
//! ```text
//! cd ffi/fuzz && cargo run --example make_seeds
//! ```
#![allow(clippy::unwrap_used)]

use faultbridge_ffi::wire::nlmsg::{NLM_F_MULTI, NLMSG_DONE, push_nlmsg};
use faultbridge_ffi::wire::record::{
    Category, EXPDRV_MSG_CLEAR, EXPDRV_MSG_FAULT, F_SNAPSHOT, RecordSpec, Severity, event,
};
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
    println!("wrote {}", dir.display());
}

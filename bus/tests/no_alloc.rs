//! The publish path allocates nothing once the subscribers' buffers have
//! grown to the record size: counted with a global allocator.

use faultbridge_bus::{Event, FaultKind, Source, SubscribeOptions, bus};
use faultbridge_ffi::sys::alloc::{CountingAlloc, thread_allocations};
use faultbridge_ffi::wire::record::{Record, RecordSpec};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn publishing_and_receiving_allocate_nothing_in_steady_state() {
    let (mut publisher, handle) = bus();
    let a = handle
        .subscribe(SubscribeOptions::new("a").capacity(64))
        .unwrap();
    let b = handle
        .subscribe(SubscribeOptions::new("b").capacity(8))
        .unwrap();
    let mut recs = Vec::new();
    for seq in 1..=2000u64 {
        let mut v = Vec::new();
        RecordSpec {
            flags: 0,
            sequence: seq,
            timestamp_ns: seq,
            category: 1,
            severity: 2,
            event_code: 0x0001_0001,
            device_index: 2,
            keyword: b"eth0",
            detail: &[7u8; 100],
            driver_id: 1,
        }
        .encode_into(&mut v);
        recs.push(v);
    }
    let parsed: Vec<Record<'_>> = recs.iter().map(|v| Record::parse(v).unwrap()).collect();

    // Warm-up: adopt subscribers and let each pool grow to what this load
    // needs (the buffers are made on demand): `b` lags as it will below.
    for r in &parsed[..200] {
        publisher.publish(Source::Expdrv, FaultKind::Fault, r);
        while a.try_recv().is_some() {}
        if r.sequence() % 16 == 0 {
            while b.try_recv().is_some() {}
        }
    }

    let before = thread_allocations();
    let mut faults = 0u64;
    let mut lost = 0u64;
    for r in &parsed[200..] {
        publisher.publish(Source::Expdrv, FaultKind::Fault, r);
        // `a` keeps up; `b` drains only every 16th record, so it overflows
        // and gets loss notices: that path must not allocate either.
        while let Some(ev) = a.try_recv() {
            if let Event::Fault(f) = ev {
                faults += 1;
                assert_eq!(f.keyword(), "eth0");
            }
        }
        if r.sequence() % 16 == 0 {
            while let Some(ev) = b.try_recv() {
                if let Event::Lost(l) = ev {
                    lost += l.count;
                }
            }
        }
    }
    let allocations = thread_allocations() - before;
    assert_eq!(allocations, 0, "publish path allocated {allocations} times");
    assert_eq!(faults, 1800);
    assert!(
        lost > 0,
        "the slow subscriber should have been told of drops"
    );
}

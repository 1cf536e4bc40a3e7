//! Overrun: a flood against a deliberately small socket receive buffer and a
//! slow subscriber. Every loss is reported with its range, at its place in
//! the stream: for each subscriber, the sequences received and the ranges
//! reported lost partition 1..=sent exactly.
#![allow(clippy::unwrap_used)]

use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Bridge, Config, Event, LostReason, Source, SubscribeOptions, Subscription};
use faultbridge_ffi::wire::record::Category;
use faultbridge_tests::private_netns;
use std::time::Duration;

#[derive(Default, Debug)]
struct Seen {
    received: Vec<u64>,
    lost: Vec<(u64, u64, u64, LostReason)>,
}

fn consume(sub: Subscription, delay: Duration, last: u64) -> Seen {
    let mut seen = Seen::default();
    loop {
        match sub.recv_timeout(Duration::from_secs(30)) {
            Ok(Event::Fault(f)) => {
                seen.received.push(f.sequence());
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                if f.sequence() == last {
                    return seen;
                }
            }
            Ok(Event::Lost(l)) => {
                assert_eq!(l.source, Source::Expdrv);
                seen.lost
                    .push((l.first_sequence, l.last_sequence, l.count, l.reason));
                if l.last_sequence >= last {
                    return seen;
                }
            }
            Err(e) => panic!("subscriber stopped before the last record: {e:?} after {seen:?}"),
        }
    }
}

/// Received sequences and lost ranges, merged in stream order, must cover
/// 1..=sent once each.
fn assert_partition(name: &str, seen: &Seen, sent: u64) {
    let lost: u64 = seen.lost.iter().map(|l| l.2).sum();
    assert_eq!(
        seen.received.len() as u64 + lost,
        sent,
        "{name}: delivered {} + reported lost {lost} != sent {sent}",
        seen.received.len()
    );
    let mut covered = vec![false; sent as usize + 1];
    for &s in &seen.received {
        assert!(!covered[s as usize], "{name}: {s} delivered twice");
        covered[s as usize] = true;
    }
    for &(first, last, count, _) in &seen.lost {
        // An overrun is told at once with an empty range (count 0); the
        // next record sizes it.
        assert_eq!(
            (last + 1).saturating_sub(first),
            count,
            "{name}: range {first}..={last} but count {count}"
        );
        for s in first..=last {
            assert!(
                !covered[s as usize],
                "{name}: {s} both delivered and reported lost"
            );
            covered[s as usize] = true;
        }
    }
    assert!(
        covered[1..].iter().all(|&c| c),
        "{name}: some sequence neither delivered nor reported lost"
    );
    let mut prev = 0;
    for &s in &seen.received {
        assert!(s > prev, "{name}: out of order {prev} then {s}");
        prev = s;
    }
}

#[test]
fn every_loss_is_reported_and_delivered_plus_lost_equals_sent() {
    private_netns();
    let mut config = Config::simulator(1);
    config.expdrv.recv_buffer = 4096;
    let bridge = Bridge::start(&config).unwrap();
    let fast = bridge
        .subscribe(SubscribeOptions::new("fast").capacity(1 << 20))
        .unwrap();
    let slow = bridge
        .subscribe(SubscribeOptions::new("slow").capacity(16))
        .unwrap();

    let mut sim = Simulator::new(2, 1).unwrap();
    let templates: Vec<FaultSpec> = ["eth0", "eth1", "eth2"]
        .iter()
        .map(|k| FaultSpec::new(Category::Nic, k))
        .collect();
    // Flood at full speed until the socket has overflowed at least once.
    let mut rounds = 0;
    while bridge.stats().source(Source::Expdrv).overruns == 0 {
        rounds += 1;
        assert!(
            rounds <= 20,
            "no overrun after 20 floods of 50k records: {:?}",
            bridge.stats()
        );
        sim.flood(&templates, 50_000, 0, 32).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // The range of an overrun is known from the next record the driver
    // sends: a last, separate record closes the stream.
    std::thread::sleep(Duration::from_millis(100));
    let last = sim.send(&FaultSpec::new(Category::Fc, "host1")).unwrap();
    let sent = sim.next_sequence() - 1;
    assert_eq!(last, sent);

    let fast_t = std::thread::spawn(move || consume(fast, Duration::ZERO, last));
    let slow_t = std::thread::spawn(move || consume(slow, Duration::from_micros(20), last));
    let fast_seen = fast_t.join().unwrap();
    let slow_seen = slow_t.join().unwrap();
    let stats = bridge.shutdown();
    let s = stats.source(Source::Expdrv);

    assert!(s.overruns > 0);
    assert_eq!(s.received + s.lost, sent, "daemon counters: {s:?}");
    assert!(
        fast_seen.lost.iter().any(|l| l.3 == LostReason::Overrun),
        "no overrun-attributed loss reported: {:?}",
        fast_seen.lost
    );
    // Each overrun is told at once (an empty range, count 0), before the
    // next record sizes it.
    assert!(
        fast_seen
            .lost
            .iter()
            .any(|l| l.2 == 0 && l.3 == LostReason::Overrun),
        "no immediate overrun notice: {:?}",
        fast_seen.lost
    );
    assert_partition("fast", &fast_seen, sent);
    assert_partition("slow", &slow_seen, sent);
    // The slow subscriber also lost records to its own full queue; the fast
    // one lost only what the socket lost.
    assert!(slow_seen.lost.iter().any(|l| l.3 == LostReason::QueueFull));
    assert!(fast_seen.lost.iter().all(|l| l.3 != LostReason::QueueFull));
    assert_eq!(fast_seen.lost.iter().map(|l| l.2).sum::<u64>(), s.lost);
    eprintln!(
        "sent {sent}, socket lost {} in {} overruns; slow subscriber got {} and was told of {} lost",
        s.lost,
        s.overruns,
        slow_seen.received.len(),
        slow_seen.lost.iter().map(|l| l.2).sum::<u64>()
    );
}

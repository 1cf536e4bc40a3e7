//! What sender authentication costs the ingest path, measured in one run:
//! the daemon in-process reading the simulator's group with
//! `accept = "any"` (plain `recv`, no sender checked: the baseline) and with
//! `accept = "root"` (`recvmsg` with the sender's address and
//! `SCM_CREDENTIALS`, every datagram checked), alternated so both see the
//! same machine:
//!
//! 1. throughput: 32 records per datagram sent as fast as possible, records/s
//!    taken by an in-process subscriber;
//! 2. latency: single records at 2 000/s, send → a polling subscriber,
//!    p50/p99.
//!
//! Run as root: `cargo bench -p faultbridge --bench auth`
//! (`FB_BENCH_QUICK=1` for a short run).
#![allow(clippy::unwrap_used)]

use faultbridge::config::Accept;
use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Bridge, Config, Event, SubscribeOptions};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::sys::netlink::{NETLINK_USERSOCK, NetlinkReceiver, NetlinkSocket, Received};
use faultbridge_ffi::wire::record::Category;
use std::time::{Duration, Instant};

fn bridge(group: u32, accept: Accept) -> (Bridge, faultbridge::Subscription) {
    let mut cfg = Config::simulator(group);
    cfg.expdrv.accept = accept;
    cfg.expdrv.recv_buffer = 256 << 20;
    let mut bridge = Bridge::open(&cfg).unwrap();
    let sub = bridge
        .subscribe(SubscribeOptions::new("bench").capacity(1 << 20))
        .unwrap();
    bridge.run().unwrap();
    (bridge, sub)
}

/// Records/s through the bridge for `count` records flooded 32 per datagram.
fn throughput(group: u32, accept: Accept, count: u64) -> f64 {
    let (bridge, sub) = bridge(group, accept);
    let batch: Vec<FaultSpec> = (0..32)
        .map(|_| FaultSpec::new(Category::Nic, "eth0"))
        .collect();
    let sender = std::thread::spawn(move || {
        let mut sim = Simulator::new(NETLINK_USERSOCK, group).unwrap();
        for _ in 0..count / 32 {
            sim.send_batch(&batch).unwrap();
        }
    });
    let start = Instant::now();
    let mut got = 0u64;
    while got < count / 32 * 32 {
        match sub.recv_timeout(Duration::from_secs(10)) {
            Ok(Event::Fault(_)) => got += 1,
            Ok(Event::Lost(l)) => got += l.count,
            Err(e) => panic!("stalled after {got} records: {e:?}"),
        }
    }
    let rate = got as f64 / start.elapsed().as_secs_f64();
    sender.join().unwrap();
    let s = bridge.shutdown().source(faultbridge::Source::Expdrv);
    assert_eq!(s.refused_total, 0);
    rate
}

/// Send → subscriber latencies (ns) of `count` single records at 2 000/s.
fn latency(group: u32, accept: Accept, count: u64) -> Vec<u64> {
    let (bridge, sub) = bridge(group, accept);
    let sender = std::thread::spawn(move || {
        let mut sim = Simulator::new(NETLINK_USERSOCK, group).unwrap();
        let spec = FaultSpec::new(Category::Nic, "eth0");
        let start = Instant::now();
        for i in 0..count {
            let due = start + Duration::from_micros(500) * i as u32;
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            sim.send(&spec).unwrap();
        }
    });
    // The subscriber polls: the wake-up of a sleeping subscriber thread is
    // the same with and without the check and would only add noise.
    let mut lat = Vec::with_capacity(count as usize);
    let deadline =
        Instant::now() + Duration::from_secs(10) + Duration::from_micros(500) * count as u32;
    while (lat.len() as u64) < count {
        match sub.try_recv() {
            Some(Event::Fault(f)) => lat.push(monotonic_ns().saturating_sub(f.timestamp_ns())),
            Some(Event::Lost(l)) => panic!("lost {} records in a paced run", l.count),
            None if Instant::now() > deadline => panic!("stalled after {} records", lat.len()),
            None => std::hint::spin_loop(),
        }
    }
    sender.join().unwrap();
    bridge.shutdown();
    lat.sort_unstable();
    lat
}

/// The receive call alone, ns per datagram: `n` datagrams of a record's
/// size queued on a socket, then read back in a loop (no wake-up, no
/// parsing) as the sources receive: with `recv` (`accept = "any"`), with
/// `recvfrom` and the sender's address (`accept = "kernel"`, the default),
/// or with `recvmsg`, the address and `SCM_CREDENTIALS` (`accept = "root"`).
fn recv_cost(accept: Accept, n: usize) -> f64 {
    let rx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
    rx.bind(0, 0).unwrap();
    rx.set_recv_buffer(512 << 20).unwrap();
    rx.set_pass_credentials(accept == Accept::Root).unwrap();
    let port = rx.port_id().unwrap();
    let tx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
    let datagram = [0x5au8; 96];
    for _ in 0..n {
        tx.send_to(port, 0, &datagram).unwrap();
    }
    // What the daemon's sources receive with.
    let mut rx = NetlinkReceiver::new(rx, 4096, accept != Accept::Any);
    let start = Instant::now();
    for _ in 0..n {
        match rx.recv().unwrap() {
            Received::Datagram { len: 96, from, .. } => {
                assert_eq!(from.credentials.is_some(), accept == Accept::Root)
            }
            other => panic!("{other:?}"),
        }
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn pct(v: &[u64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var_os("FB_BENCH_QUICK").is_some();
    let (n_tp, n_lat, rounds) = if quick {
        (64_000, 1_000, 2)
    } else {
        (320_000, 36_000, 9)
    };
    // The receive call alone, the three settings alternated.
    let n_recv = if quick { 50_000 } else { 200_000 };
    let settings = [Accept::Any, Accept::Kernel, Accept::Root];
    let mut cost: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, a) in settings.iter().enumerate() {
            cost[i].push(recv_cost(*a, n_recv));
        }
    }
    for c in &mut cost {
        c.sort_by(f64::total_cmp);
    }
    let med = |i: usize| cost[i][cost[i].len() / 2];
    println!(
        "the receive call alone, {n_recv} queued datagrams, median of {rounds} alternating rounds:"
    );
    for (i, name) in [
        "recv (accept = any)",
        "recvfrom + address (accept = kernel)",
        "recvmsg + address + credentials (accept = root)",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "  {name:<48} {:>7.1} ns per datagram  ({:.3}x of recv)",
            med(i),
            med(i) / med(0)
        );
    }

    let modes = [
        ("off (accept = any)", Accept::Any),
        ("on (accept = root)", Accept::Root),
    ];
    let mut best_tp = [0f64; 2];
    let mut lats: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    // Per round, on / off: throughput, p50, p99.
    let mut ratios: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        let mut tp = [0f64; 2];
        let mut lat: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        for (i, (_, accept)) in modes.iter().enumerate() {
            let group = 10 + (round * 2 + i) as u32 % 20;
            tp[i] = throughput(group, *accept, n_tp);
            best_tp[i] = best_tp[i].max(tp[i]);
            lat[i] = latency(group, *accept, n_lat / rounds as u64);
            lats[i].extend(&lat[i]);
        }
        ratios[0].push(tp[1] / tp[0]);
        ratios[1].push(pct(&lat[1], 0.5) / pct(&lat[0], 0.5));
        ratios[2].push(pct(&lat[1], 0.99) / pct(&lat[0], 0.99));
    }
    println!(
        "sender authentication, {rounds} alternating rounds, best throughput and pooled latency:"
    );
    for (i, (name, _)) in modes.iter().enumerate() {
        lats[i].sort_unstable();
        println!(
            "  {name:<20} {:>10.0} records/s   latency p50 {:>6.1} us  p99 {:>6.1} us",
            best_tp[i],
            pct(&lats[i], 0.5),
            pct(&lats[i], 0.99)
        );
    }
    println!(
        "  on / off: throughput {:.3}x, p50 {:.3}x, p99 {:.3}x",
        best_tp[1] / best_tp[0],
        pct(&lats[1], 0.5) / pct(&lats[0], 0.5),
        pct(&lats[1], 0.99) / pct(&lats[0], 0.99)
    );
    // The median of the rounds' own ratios: each round's pair ran back to
    // back, so a change in the machine's load between rounds cancels out.
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [t, p50, p99] = &mut ratios;
    println!(
        "  on / off, median of the {rounds} rounds' ratios: throughput {:.3}x, p50 {:.3}x, p99 {:.3}x",
        median(t),
        median(p50),
        median(p99)
    );
}

//! The ingest pipeline, measured end to end over real netlink sockets, in
//! one run so the figures are comparable:
//!
//! 1. the floor: a bare netlink multicast receiver (no parse, no bus);
//! 2. simulator → faultbridge → in-process subscriber latency, one record per
//!    datagram, p50/p99/p99.9 from the record's CLOCK_MONOTONIC timestamp;
//! 3. sustained records/s with zero loss, flooding 32 records per datagram at
//!    rising rates.
//!
//! Run as root (netlink multicast receive needs CAP_NET_ADMIN):
//! `cargo bench -p faultbridge --bench pipeline` (`FB_BENCH_QUICK=1` for a
//! short run, `FB_BENCH_PIN=1` to pin the sender to CPU 0 and the daemon to CPU 1).
#![allow(clippy::unwrap_used)]

use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Bridge, Config, Event, Source, SubscribeOptions};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::sys::netlink::{NETLINK_USERSOCK, NetlinkSocket, Recv, group_mask};
use faultbridge_ffi::wire::nlmsg::NlMsgIter;
use faultbridge_ffi::wire::record::{Category, Record};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn pin(cpu: usize) {
    if std::env::var_os("FB_BENCH_PIN").is_none() {
        return;
    }
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn percentiles(mut v: Vec<u64>) -> (f64, f64, f64, f64) {
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    (
        at(0.5),
        at(0.99),
        at(0.999),
        *v.last().unwrap() as f64 / 1000.0,
    )
}

/// Single-record sends from a thread of its own, one every `1/rate` s
/// (sleeping between sends, so the sender does not compete for a core).
fn paced_sender(group: u32, count: u64, rate: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        pin(0);
        let mut sim = Simulator::new(NETLINK_USERSOCK, group).unwrap();
        let spec = FaultSpec::new(Category::Nic, "eth0");
        let interval = Duration::from_nanos(1_000_000_000 / rate);
        let start = Instant::now();
        for i in 0..count {
            let due = start + interval * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            sim.send(&spec).unwrap();
        }
        count
    })
}

fn floor(count: u64, rate: u64) -> Vec<u64> {
    let group = 3;
    let sock = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
    sock.set_recv_buffer(32 << 20).unwrap();
    sock.bind(0, group_mask(group)).unwrap();
    sock.set_nonblocking(false).unwrap();
    let sender = paced_sender(group, count, rate);
    let mut buf = vec![0u8; 65536];
    let mut lat = Vec::with_capacity(count as usize);
    while (lat.len() as u64) < count {
        match sock.recv(&mut buf).unwrap() {
            Recv::Datagram { stored, .. } => {
                let now = monotonic_ns();
                for m in NlMsgIter::new(&buf[..stored]) {
                    // the floor reads the timestamp without validating the record
                    let ts = u64::from_ne_bytes(m.payload[24..32].try_into().unwrap());
                    lat.push(now.saturating_sub(ts));
                }
            }
            Recv::Overrun => panic!("the floor receiver overran"),
            Recv::WouldBlock => {}
        }
    }
    sender.join().unwrap();
    lat
}

fn pipeline(count: u64, rate: u64, spin: bool) -> Vec<u64> {
    let group = 4;
    let mut cfg = Config::simulator(group);
    cfg.expdrv.recv_buffer = 32 << 20;
    let bridge = Bridge::start(&cfg).unwrap();
    let sub = bridge
        .subscribe(SubscribeOptions::new("bench").capacity(1 << 16))
        .unwrap();
    let sender = paced_sender(group, count, rate);
    let mut lat = Vec::with_capacity(count as usize);
    while (lat.len() as u64) < count {
        let ev = if spin {
            match sub.try_recv() {
                Some(ev) => ev,
                None => {
                    std::hint::spin_loop();
                    continue;
                }
            }
        } else {
            sub.recv_timeout(Duration::from_secs(10))
                .expect("pipeline stalled")
        };
        match ev {
            Event::Fault(f) => lat.push(monotonic_ns().saturating_sub(f.timestamp_ns())),
            Event::Lost(l) => panic!("lost {} records in a paced run", l.count),
        }
    }
    sender.join().unwrap();
    bridge.shutdown();
    lat
}

/// Floods `count` records at `rate`; returns (achieved send rate, received, lost).
fn sustained(count: u64, rate: u64) -> (f64, u64, u64) {
    let group = 5;
    let mut cfg = Config::simulator(group);
    cfg.expdrv.recv_buffer = 32 << 20;
    let bridge = Bridge::start(&cfg).unwrap();
    let sub = bridge
        .subscribe(SubscribeOptions::new("count").capacity(1 << 20))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let counter = std::thread::spawn(move || {
        let (mut got, mut lost) = (0u64, 0u64);
        loop {
            match sub.recv_timeout(Duration::from_millis(200)) {
                Ok(Event::Fault(_)) => got += 1,
                Ok(Event::Lost(l)) => lost += l.count,
                Err(_) if d2.load(Ordering::Acquire) => return (got, lost),
                Err(_) => {}
            }
        }
    });
    let sender = std::thread::spawn(move || {
        pin(0);
        let mut sim = Simulator::new(NETLINK_USERSOCK, group).unwrap();
        let specs: Vec<FaultSpec> = (0..8)
            .map(|i| FaultSpec::new(Category::Nic, &format!("eth{i}")))
            .collect();
        let r = sim.flood(&specs, count, rate, 32).unwrap();
        // a closing record sizes any loss at the tail
        std::thread::sleep(Duration::from_millis(50));
        sim.send(&specs[0]).unwrap();
        r
    });
    let r = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Release);
    let stats = bridge.shutdown();
    let (got, lost) = counter.join().unwrap();
    let s = stats.source(Source::Expdrv);
    assert_eq!(got + lost, count + 1, "subscriber accounting: {s:?}");
    (r.records as f64 / r.elapsed.as_secs_f64(), got, s.lost)
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("pipeline bench: cannot make a private network namespace ({e}); run as root");
        std::process::exit(1);
    }
    pin(1);
    let quick = std::env::var_os("FB_BENCH_QUICK").is_some();
    let n = if quick { 10_000 } else { 100_000 };
    let rate = 5_000;
    // Parse cost alone, for reference: the same record, validated.
    let mut rec = Vec::new();
    faultbridge_ffi::wire::record::RecordSpec {
        flags: 0,
        sequence: 1,
        timestamp_ns: 1,
        category: 1,
        severity: 2,
        event_code: 0x0001_0001,
        device_index: 2,
        keyword: b"eth0",
        detail: b"",
        driver_id: 1,
    }
    .encode_into(&mut rec);
    let t = Instant::now();
    for _ in 0..1_000_000 {
        std::hint::black_box(Record::parse(std::hint::black_box(&rec)).unwrap());
    }
    let parse_ns = t.elapsed().as_nanos() as f64 / 1e6;

    println!("pipeline benchmark ({n} records at {rate}/s, one per datagram)");
    println!("  parse + validate alone: {parse_ns:.1} ns/record");
    let (p50, p99, p999, max) = percentiles(floor(n, rate));
    println!(
        "  netlink floor (bare receiver)         p50 {p50:7.1} µs  p99 {p99:7.1} µs  p99.9 {p999:7.1} µs  max {max:8.1} µs"
    );
    let (b50, b99, b999, bmax) = percentiles(pipeline(n, rate, false));
    println!(
        "  faultbridge → blocking subscriber     p50 {b50:7.1} µs  p99 {b99:7.1} µs  p99.9 {b999:7.1} µs  max {bmax:8.1} µs"
    );
    let (s50, s99, s999, smax) = percentiles(pipeline(n, rate, true));
    println!(
        "  faultbridge → spinning subscriber     p50 {s50:7.1} µs  p99 {s99:7.1} µs  p99.9 {s999:7.1} µs  max {smax:8.1} µs"
    );
    println!(
        "  added over the floor (blocking): p50 {:+.1} µs, p99 {:+.1} µs",
        b50 - p50,
        b99 - p99
    );
    println!("sustained throughput (32 records per datagram, 32 MiB receive buffer)");
    let total = if quick { 200_000 } else { 2_000_000 };
    let mut best = 0.0f64;
    for rate in [250_000u64, 500_000, 750_000, 1_000_000, 1_500_000, 0] {
        let (achieved, got, lost) = sustained(total, rate);
        let label = if rate == 0 {
            "max".to_string()
        } else {
            format!("{rate}")
        };
        println!(
            "  target {label:>9}/s: sent at {achieved:9.0}/s, received {got}, socket lost {lost}{}",
            if lost == 0 { "  (zero loss)" } else { "" }
        );
        if lost == 0 {
            best = best.max(achieved);
        }
    }
    println!("  highest sustained rate with zero loss: {best:.0} records/s");
}

//! The ingest pipeline, measured end to end over real netlink sockets, in
//! one run so the figures are comparable:
//!
//! 1. the floor: a bare netlink multicast receiver (no parse, no bus);
//! 2. simulator → faultbridge → in-process subscriber latency, one record per
//!    datagram, p50/p99/p99.9 from the record's CLOCK_MONOTONIC timestamp: a
//!    subscriber blocked in `recv` (adaptive spin, the default), one blocked
//!    in `recv` that sleeps at once (`spin_limit(ZERO)`), and one polling
//!    `try_recv`; with the CPU the subscriber's thread used meanwhile;
//! 3. the process's CPU at rest, a subscriber blocked in `recv` right after
//!    traffic, with and without the spin;
//!
//! The paths of 2. take turns in five rounds, so a change in the machine's
//! load falls on all of them alike.
//! 4. sustained records/s with zero loss, flooding 32 records per datagram at
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

/// How the latency subscriber waits.
#[derive(Clone, Copy, PartialEq)]
enum Wait {
    /// `recv`, with the default adaptive spin.
    Blocking,
    /// `recv` with `spin_limit(ZERO)`: sleeps at once.
    Sleeping,
    /// `try_recv` in a loop.
    Polling,
}

fn thread_cpu_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// CPU time of every thread of this process so far (`/proc/self/task/*/schedstat`).
fn process_cpu_ns() -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn subscription(bridge: &Bridge, wait: Wait) -> faultbridge::Subscription {
    let opts = SubscribeOptions::new("bench").capacity(1 << 16);
    let opts = match wait {
        Wait::Sleeping => opts.spin_limit(Duration::ZERO),
        _ => opts,
    };
    bridge.subscribe(opts).unwrap()
}

/// Latencies, and the CPU share of the subscriber's thread meanwhile.
fn pipeline(count: u64, rate: u64, wait: Wait) -> (Vec<u64>, f64) {
    let group = 4;
    let mut cfg = Config::simulator(group);
    cfg.expdrv.recv_buffer = 32 << 20;
    let bridge = Bridge::start(&cfg).unwrap();
    let sub = subscription(&bridge, wait);
    let sender = paced_sender(group, count, rate);
    let mut lat = Vec::with_capacity(count as usize);
    let (t0, cpu0) = (Instant::now(), thread_cpu_ns());
    while (lat.len() as u64) < count {
        let ev = if wait == Wait::Polling {
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
    let cpu = (thread_cpu_ns() - cpu0) as f64 / t0.elapsed().as_nanos() as f64;
    sender.join().unwrap();
    bridge.shutdown();
    (lat, cpu)
}

/// CPU of the whole process (the bridge's threads and a subscriber blocked
/// in `recv`) over `secs` seconds at rest, right after 2000 records at
/// 5000/s taught the subscriber's spin that faults come close together.
/// Returns CPU milliseconds per second.
fn idle_cpu(wait: Wait, secs: u64) -> f64 {
    let group = 7;
    let bridge = Bridge::start(&Config::simulator(group)).unwrap();
    let sub = subscription(&bridge, wait);
    let reader = std::thread::spawn(move || {
        let mut n = 0u64;
        while sub.recv().is_ok() {
            n += 1;
        }
        n
    });
    let burst = 2000;
    paced_sender(group, burst, 5000).join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (t0, cpu0) = (Instant::now(), process_cpu_ns());
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = (process_cpu_ns() - cpu0) as f64 / 1e6 / t0.elapsed().as_secs_f64();
    bridge.shutdown();
    assert_eq!(reader.join().unwrap(), burst);
    cpu
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
        (r, sim, specs)
    });
    let (r, mut sim, specs) = sender.join().unwrap();
    // A closing record sizes any loss at the tail. It is sent once the
    // daemon has read everything queued: after an overrun the kernel drops
    // whatever comes to the socket until its queue has been emptied.
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = bridge.stats().source(Source::Expdrv).datagrams;
        if now == last {
            break;
        }
        last = now;
    }
    sim.send(&specs[0]).unwrap();
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

    println!(
        "pipeline benchmark ({n} records at {rate}/s per path, one per datagram, in 5 rounds)"
    );
    println!("  parse + validate alone: {parse_ns:.1} ns/record");
    // The four in turn, in rounds, so a change in the machine's load falls
    // on all of them alike.
    let rounds = 5;
    let per = n / rounds;
    let (mut fl, mut bl, mut zl, mut pl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut b_cpu, mut z_cpu, mut s_cpu) = (0.0, 0.0, 0.0);
    for _ in 0..rounds {
        fl.extend(floor(per, rate));
        let (l, c) = pipeline(per, rate, Wait::Blocking);
        bl.extend(l);
        b_cpu += c / rounds as f64;
        let (l, c) = pipeline(per, rate, Wait::Sleeping);
        zl.extend(l);
        z_cpu += c / rounds as f64;
        let (l, c) = pipeline(per, rate, Wait::Polling);
        pl.extend(l);
        s_cpu += c / rounds as f64;
    }
    let (p50, p99, p999, max) = percentiles(fl);
    println!(
        "  netlink floor (bare receiver)         p50 {p50:7.1} µs  p99 {p99:7.1} µs  p99.9 {p999:7.1} µs  max {max:8.1} µs"
    );
    let (b50, b99, b999, bmax) = percentiles(bl);
    println!(
        "  faultbridge → blocking subscriber     p50 {b50:7.1} µs  p99 {b99:7.1} µs  p99.9 {b999:7.1} µs  max {bmax:8.1} µs  (its thread: {:.0} % CPU)",
        b_cpu * 100.0
    );
    let (z50, z99, z999, zmax) = percentiles(zl);
    println!(
        "  … blocking, spin_limit(ZERO)          p50 {z50:7.1} µs  p99 {z99:7.1} µs  p99.9 {z999:7.1} µs  max {zmax:8.1} µs  (its thread: {:.0} % CPU)",
        z_cpu * 100.0
    );
    let (s50, s99, s999, smax) = percentiles(pl);
    println!(
        "  faultbridge → polling subscriber      p50 {s50:7.1} µs  p99 {s99:7.1} µs  p99.9 {s999:7.1} µs  max {smax:8.1} µs  (its thread: {:.0} % CPU)",
        s_cpu * 100.0
    );
    println!(
        "  blocking / floor: p50 {:.2}, p99 {:.2}   (without the spin: p50 {:.2}, p99 {:.2})",
        b50 / p50,
        b99 / p99,
        z50 / p50,
        z99 / p99
    );
    let secs = if quick { 3 } else { 10 };
    let idle_spin = idle_cpu(Wait::Blocking, secs);
    let idle_sleep = idle_cpu(Wait::Sleeping, secs);
    println!(
        "  at rest, one subscriber blocked in recv ({secs} s, whole process): {idle_spin:.2} ms CPU/s with the spin, {idle_sleep:.2} ms CPU/s without"
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

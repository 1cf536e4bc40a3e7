//! Fleet forwarding against a real `nats-server -js` (started here on a
//! free 127.0.0.1 port, killed at the end):
//!
//! 1. throughput: a history database of N recorded faults forwarded to a
//!    stream (read from the database, a window of 1024 acknowledgements in
//!    flight, cursor saved), beside, in the same run, the same N messages
//!    (same subjects, `Nats-Msg-Id` headers and bodies) published from
//!    memory by a plain publisher: core NATS without acknowledgements (what
//!    `nats bench pub` measures), and JetStream with the same window;
//! 2. latency at a low rate: simulator send → message in the stream (an
//!    ordered consumer receives it after the server stored it), p50/p99;
//! 3. the hot path: the same flood with history on, forwarding off and on:
//!    rate reached, records delivered to a subscriber, lost.
//!
//! Run as root (netlink, network namespace), with `nats-server` on PATH:
//! `cargo bench -p faultbridge --bench forward` (`FB_BENCH_QUICK=1` for a
//! short run).
#![allow(clippy::unwrap_used)]

mod common;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use faultbridge::config::NatsForwardConfig;
use faultbridge::forward::Forwarder;
use faultbridge::forward::message::{body_bytes, msg_id, subject};
use faultbridge::history::{HistoryDb, HistoryRow};
use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Bridge, Config, Event, SubscribeOptions, Subscription};
use faultbridge_ffi::wire::record::Category;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start nats-server ({e}): install the Debian package nats-server")
        });
    let s = Server(child, port);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn forward_config(url: &str, stream: &str, prefix: &str) -> NatsForwardConfig {
    NatsForwardConfig {
        servers: vec![url.to_string()],
        stream: stream.into(),
        subject_prefix: prefix.into(),
        host: "bench".into(),
        credentials: None,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
    }
}

fn config(group: u32, db: Option<&Path>, forward: Option<(&str, &str)>) -> Config {
    let mut t = format!(
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_group = {group}\nrecv_buffer = 67108864\n"
    );
    if let Some(db) = db {
        t.push_str(&format!("[history]\npath = \"{}\"\n", db.display()));
    }
    if let Some((url, stream)) = forward {
        t.push_str(&format!(
            "[forward.nats]\nservers = [\"{url}\"]\nstream = \"{stream}\"\nsubject_prefix = \"{}\"\nhost = \"bench\"\n",
            stream.to_lowercase()
        ));
    }
    Config::parse(&t, Path::new("bench.toml")).unwrap()
}

fn specs() -> Vec<FaultSpec> {
    (0..8)
        .map(|i| FaultSpec::new(Category::Nic, &format!("eth{i}")))
        .collect()
}

/// Records `n` faults in a fresh history database (forwarding off).
fn fill(db: &Path, n: u64, group: u32) {
    let bridge = Bridge::start(&config(group, Some(db), None)).unwrap();
    let mut sim = Simulator::new(2, group).unwrap();
    sim.flood(&specs(), n, 100_000, 32).unwrap();
    bridge.shutdown();
    let got = HistoryDb::open_read_only(db).unwrap().count().unwrap();
    assert_eq!(got, n, "the database holds every record");
}

/// The forwarder over the filled database until its cursor reaches the
/// last row: records/s.
fn forward_rate(url: &str, db: &Path, n: u64) -> f64 {
    let cfg = forward_config(url, "FWD", "fwd");
    let wake = Arc::new(tokio::sync::Notify::new());
    let t = Instant::now();
    let f = Forwarder::start(&cfg, db, wake).unwrap();
    let state = f.state();
    while state.cursor.load(Relaxed) < n {
        std::thread::sleep(Duration::from_millis(2));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(state.duplicates.load(Relaxed), 0);
    f.stop();
    rate
}

fn messages(db: &Path, prefix: &str) -> Vec<(String, HeaderMap, Vec<u8>)> {
    let db = HistoryDb::open_read_only(db).unwrap();
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let rows: Vec<HistoryRow> = db.forward_rows(after, 8192).unwrap();
        let Some(last) = rows.last() else { break };
        after = last.id;
        for r in &rows {
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", msg_id("bench", r).as_str());
            out.push((subject(prefix, "bench", r), h, body_bytes("bench", r)));
        }
    }
    out
}

/// The same messages published from memory: core NATS (no stream, no
/// acknowledgement, one flush at the end), records/s.
fn core_rate(url: &str, msgs: &[(String, HeaderMap, Vec<u8>)]) -> f64 {
    rt().block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        let t = Instant::now();
        for (s, h, b) in msgs {
            c.publish_with_headers(s.clone(), h.clone(), b.clone().into())
                .await
                .unwrap();
        }
        c.flush().await.unwrap();
        msgs.len() as f64 / t.elapsed().as_secs_f64()
    })
}

/// The same messages from memory into a stream with the forwarder's window
/// of acknowledgements, records/s.
fn js_rate(url: &str, msgs: &[(String, HeaderMap, Vec<u8>)], window: usize) -> f64 {
    rt().block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .max_ack_inflight(window * 2)
            .build(c);
        js.create_stream(stream::Config {
            name: "PLAIN".into(),
            subjects: vec!["plain.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let t = Instant::now();
        let mut inflight = VecDeque::with_capacity(window);
        for (s, h, b) in msgs {
            if inflight.len() >= window {
                let a: jetstream::context::PublishAckFuture = inflight.pop_front().unwrap();
                a.await.unwrap();
            }
            let subject = s.replacen("fwd.", "plain.", 1);
            inflight.push_back(
                js.publish_with_headers(subject, h.clone(), b.clone().into())
                    .await
                    .unwrap(),
            );
        }
        for a in inflight {
            a.await.unwrap();
        }
        msgs.len() as f64 / t.elapsed().as_secs_f64()
    })
}

/// CPU time (ns, from each thread's schedstat) of the threads of process
/// `pid` whose name is `name` (all threads when `None`).
fn cpu_ns(pid: u32, name: Option<&str>) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            name.is_none_or(|n| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == n)
            })
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Simulator send → in the stream, one record every `gap`, `n` records:
/// sorted latencies in µs.
fn latency(url: &str, dir: &Path, n: u64, gap: Duration, group: u32) -> Vec<f64> {
    let db = dir.join("latency.db");
    let bridge = Bridge::start(&config(group, Some(&db), Some((url, "LAT")))).unwrap();
    let url = url.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        rt().block_on(async {
            let c = async_nats::connect(url.as_str()).await.unwrap();
            let js = jetstream::new(c.clone());
            // The forwarder creates the stream on its first connection.
            let s = loop {
                match js.get_stream("LAT").await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let cons = s
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: c.new_inbox(),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut msgs = cons.messages().await.unwrap();
            tx.send(()).unwrap();
            let mut lat = Vec::new();
            while (lat.len() as u64) < n {
                let m = msgs.next().await.unwrap().unwrap();
                let now = monotonic_ns();
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                let sent = v["timestamp_ns"].as_u64().unwrap();
                lat.push(now.saturating_sub(sent) as f64 / 1e3);
            }
            lat
        })
    });
    // The stream exists once the forwarder connected: the first record.
    let mut sim = Simulator::new(2, group).unwrap();
    sim.send(&FaultSpec::new(Category::Nic, "eth0")).unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 1..n {
        std::thread::sleep(gap);
        sim.send(&FaultSpec::new(Category::Nic, "eth0")).unwrap();
    }
    let mut lat = reader.join().unwrap();
    lat.remove(0); // the first one waited for the connection
    bridge.shutdown();
    lat.sort_by(f64::total_cmp);
    lat
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One flood with history on, forwarding off or on.
struct Ingest {
    sent_rate: f64,
    delivered: u64,
    lost: u64,
    /// Faults the history database holds after the flood.
    in_db: u64,
    forwarded: u64,
    /// From the end of the flood until the forwarder's cursor reached the
    /// last recorded row.
    forward_drain: f64,
}

fn faults_in(db: &Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM events WHERE kind = 'fault'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map_or(0, |n| n as u64)
}

/// A bridge recording into `DIR/NAME-GROUP.db` (forwarding it to stream
/// `NAMEGROUP` when `forward`), and a subscription of `capacity` taken
/// before its first record.
fn start(
    url: &str,
    dir: &Path,
    name: &str,
    forward: bool,
    group: u32,
    capacity: usize,
) -> (Bridge, Subscription, PathBuf) {
    let db = dir.join(format!("{name}-{group}.db"));
    let stream = format!("{}{group}", name.to_uppercase());
    let bridge = Bridge::start(&config(
        group,
        Some(&db),
        forward.then_some((url, stream.as_str())),
    ))
    .unwrap();
    let sub = bridge
        .subscribe(SubscribeOptions::new(name).capacity(capacity))
        .unwrap();
    (bridge, sub, db)
}

fn ingest(url: &str, dir: &Path, forward: bool, count: u64, rate: u64, group: u32) -> Ingest {
    let (bridge, sub, db) = start(url, dir, "ingest", forward, group, 1 << 20);
    let counter = common::count_events(sub, count);
    std::thread::sleep(Duration::from_millis(300));
    let mut sim = Simulator::new(2, group).unwrap();
    let r = sim.flood(&specs(), count, rate, 32).unwrap();
    let (delivered, lost) = counter.join().unwrap();
    let t = Instant::now();
    let mut forwarded = 0;
    let hs = bridge.history_stats().unwrap();
    let mut last = (u64::MAX, u64::MAX);
    loop {
        // Settled: the writer wrote nothing for 200 ms and the forwarder's
        // cursor is at the last row.
        std::thread::sleep(Duration::from_millis(200));
        let rows = hs.rows.load(Relaxed);
        let cursor = bridge.forward_state().map_or(0, |s| s.cursor.load(Relaxed));
        let last_id = HistoryDb::open_read_only(&db)
            .and_then(|d| d.last_id())
            .unwrap_or(0) as u64;
        let done = !forward || cursor >= last_id;
        if (rows, cursor) == last && done {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            eprintln!("forward bench: not settled after 120 s");
            break;
        }
        last = (rows, cursor);
    }
    let forward_drain = t.elapsed().as_secs_f64() - 0.2;
    if let Some(state) = bridge.forward_state() {
        forwarded = state.forwarded.load(Relaxed);
    }
    bridge.shutdown();
    Ingest {
        sent_rate: r.records as f64 / r.elapsed.as_secs_f64(),
        delivered,
        lost,
        in_db: faults_in(&db),
        forwarded,
        forward_drain,
    }
}

/// What one hot-path round measured: sorted latencies (µs), and the CPU
/// time (ms) of the ingest thread, the forwarder thread and the server.
struct Hot {
    lat: Vec<f64>,
    ingest_ms: f64,
    forwarder_ms: f64,
    server_ms: f64,
}

/// The rate of the hot-path rounds, records/s.
const HOT_RATE: u64 = 5_000;

/// Ingest latency, simulator send → in-process subscriber, `n` records
/// one per datagram at [`HOT_RATE`], history on, forwarding off or on;
/// `pinned`: the daemon's threads on CPU 0, the simulator on CPU 1.
fn hot_latency(
    url: &str,
    srv: &Server,
    dir: &Path,
    forward: bool,
    pinned: bool,
    n: u64,
    group: u32,
) -> Hot {
    if pinned {
        pin_self(Some(0));
    }
    let (bridge, sub, _) = start(url, dir, "hot", forward, group, 1 << 16);
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(n as usize);
        while (lat.len() as u64) < n {
            match sub.recv_timeout(Duration::from_secs(5)) {
                Ok(Event::Fault(f)) => {
                    lat.push(monotonic_ns().saturating_sub(f.timestamp_ns()) as f64 / 1e3)
                }
                Ok(Event::Lost(_)) => {}
                Err(_) => break,
            }
        }
        lat
    });
    std::thread::sleep(Duration::from_millis(300));
    let me = std::process::id();
    let server_pid = srv.0.id();
    let cpu = || {
        [
            cpu_ns(me, Some("fb-ingest")),
            cpu_ns(me, Some("fb-forward")),
            cpu_ns(server_pid, None),
        ]
    };
    let before = cpu();
    if pinned {
        pin_self(Some(1));
    }
    let mut sim = Simulator::new(2, group).unwrap();
    sim.flood(&specs(), n, HOT_RATE, 1).unwrap();
    pin_self(None);
    let mut lat = reader.join().unwrap();
    // What the forwarder still had to send when the last record arrived.
    std::thread::sleep(Duration::from_millis(200));
    let after = cpu();
    bridge.shutdown();
    lat.sort_by(f64::total_cmp);
    let ms = |i: usize| after[i].saturating_sub(before[i]) as f64 / 1e6;
    Hot {
        lat,
        ingest_ms: ms(0),
        forwarder_ms: ms(1),
        server_ms: ms(2),
    }
}

/// Puts every thread of the server on `cpus` (a `taskset` list).
fn pin_server(srv: &Server, cpus: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-c", "-p", cpus, &srv.0.id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset (util-linux) could not move the server");
}

/// Puts this thread (and the threads it starts from now on) on CPU `cpu`,
/// or back on every CPU.
fn pin_self(cpu: Option<usize>) {
    let mut set = nix::sched::CpuSet::new();
    match cpu {
        Some(c) => set.set(c).unwrap(),
        None => {
            for c in 0..nix::sched::CpuSet::count() {
                let _ = set.set(c);
            }
        }
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

fn main() {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("forward bench: cannot make a private network namespace ({e}); run as root");
        std::process::exit(1);
    }
    let _ = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    let quick = std::env::var_os("FB_BENCH_QUICK").is_some();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("fb-bench-forward-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let srv = server(&dir);
    let url = format!("nats://127.0.0.1:{}", srv.1);

    let n = if quick { 50_000 } else { 300_000 };
    let db = dir.join("filled.db");
    fill(&db, n, 21);
    let msgs = messages(&db, "fwd");
    let bytes: usize = msgs.iter().map(|m| m.0.len() + m.2.len() + 40).sum();
    println!(
        "throughput: {n} recorded faults, {} bytes per message on average (subject + Nats-Msg-Id + body)",
        bytes / msgs.len()
    );
    let rounds = if quick { 1 } else { 3 };
    for round in 1..=rounds {
        // Each round forwards into a fresh stream: the cursor starts again.
        rt().block_on(async {
            let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
            let _ = js.delete_stream("FWD").await;
            let _ = js.delete_stream("PLAIN").await;
        });
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute("DELETE FROM forward_cursor", []).unwrap();
        drop(c);
        let fwd = forward_rate(&url, &db, n);
        let core = core_rate(&url, &msgs);
        let js = js_rate(&url, &msgs, faultbridge::forward::WINDOW);
        println!(
            "  round {round}: forwarder (database → stream, acks) {fwd:>9.0}/s | plain JetStream publisher (memory → stream, same window) {js:>9.0}/s ({:.0} %) | core NATS publisher, no stream, no acks {core:>9.0}/s",
            100.0 * fwd / js
        );
    }

    let (count, gap) = if quick {
        (200, Duration::from_millis(10))
    } else {
        (2000, Duration::from_millis(5))
    };
    let lat = latency(&url, &dir, count, gap, 22);
    println!(
        "latency simulator send → in the stream, {} records one every {} ms: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        lat.len(),
        gap.as_millis(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );

    let n_hot = if quick { 5_000 } else { 20_000 };
    let mut group = 23;
    // Twice: with the server sharing both CPUs with the daemon (this
    // machine as it is), then with every thread of the daemon (ingest,
    // history writer, forwarder, the subscriber) on CPU 0 and the server
    // and the simulator (the driver) on CPU 1: as when the server runs on
    // another host, what forwarding costs the daemon's own CPU.
    for pinned in [false, true] {
        if pinned {
            pin_server(&srv, "1");
        }
        println!(
            "ingest latency, simulator send → in-process subscriber, {n_hot} records one per datagram at 5000/s, history on (alternating rounds), {}:",
            if pinned {
                "daemon on CPU 0, server and simulator on CPU 1"
            } else {
                "server and daemon on both CPUs"
            }
        );
        for round in 1..=if quick { 1 } else { 3 } {
            for forward in [false, true] {
                group -= 1;
                let h = hot_latency(&url, &srv, &dir, forward, pinned, n_hot, group);
                let lat = &h.lat;
                println!(
                    "  round {round} forwarding {:<3}: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs | CPU ms: ingest thread {:.0}, forwarder thread {:.0}, nats-server {:.0}",
                    if forward { "on" } else { "off" },
                    pct(lat, 0.5),
                    pct(lat, 0.99),
                    pct(lat, 0.999),
                    h.ingest_ms,
                    h.forwarder_ms,
                    h.server_ms
                );
            }
        }
        if pinned {
            pin_server(&srv, "0-1023");
        }
    }

    let (count, rates) = if quick {
        (200_000, vec![100_000, 500_000])
    } else {
        (1_000_000, vec![100_000, 500_000])
    };
    println!(
        "ingest with history on, forwarding off and on ({count} records per run, 32 per datagram):"
    );
    let mut group = 24;
    for rate in rates {
        for forward in [false, true] {
            group += 1;
            let r = ingest(&url, &dir, forward, count, rate, group);
            println!(
                "  target {rate:>7}/s forwarding {:<3}: sent at {:>9.0}/s, delivered to a subscriber {:>8}, lost {:>6}, faults in the database {:>8}{}",
                if forward { "on" } else { "off" },
                r.sent_rate,
                r.delivered,
                r.lost,
                r.in_db,
                if forward {
                    format!(
                        ", forwarded {} ({:.1} s after the flood)",
                        r.forwarded, r.forward_drain
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

//! Monitors and recovery actions, measured:
//!
//! 1. matching cost per record with 1 and with 10 000 monitors configured
//!    (the same records, the same run);
//! 2. record sent → monitor in Error (the change seen by a listener on
//!    another thread) and record sent → the action program's `main` reached,
//!    p50/p99 over 1000 faults, through the real netlink socket and a real
//!    process (a small C program that reads CLOCK_MONOTONIC first thing).
//!
//! The action path takes turns, fault by fault, with two floors: the same
//! program spawned directly, and spawned by a bare netlink receiver as the
//! fault's datagram comes.
//!
//! Run as root: `cargo bench -p faultbridge --bench monitors`
//! (`FB_BENCH_QUICK=1` for 200 faults, `FB_BENCH_PIN=1` to run everything,
//! the daemon's threads and the programs, on CPU 0).
#![allow(clippy::unwrap_used)]

use faultbridge::monitor::{MonitorState, Monitors};
use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Config, FaultKind, Source};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::sys::netlink::{NETLINK_USERSOCK, NetlinkSocket, Recv, group_mask};
use faultbridge_ffi::wire::nlmsg::NlMsgIter;
use faultbridge_ffi::wire::record::{Category, Record, RecordSpec};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

fn config(monitors: &str) -> Config {
    let text = format!(
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_group = 6\n{monitors}"
    );
    Config::parse(&text, std::path::Path::new("bench.toml")).unwrap()
}

fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut v = Vec::new();
            let kw = format!("eth{}", (i * 7919) % 20_000);
            RecordSpec {
                flags: 0,
                sequence: i as u64 + 1,
                timestamp_ns: 1,
                category: 1,
                severity: 2,
                event_code: 0x0001_0001,
                device_index: 0,
                keyword: kw.as_bytes(),
                detail: b"",
                driver_id: 1,
            }
            .encode_into(&mut v);
            v
        })
        .collect()
}

fn matching_cost(monitors: usize) -> f64 {
    let mut text = String::new();
    for i in 0..monitors {
        text.push_str(&format!(
            "[[monitor]]\nname = \"m{i}\"\ncategory = \"NIC\"\nkeyword = \"eth{i}\"\n"
        ));
    }
    let cfg = config(&text);
    let mut table = Monitors::new(&cfg.monitors);
    let recs = records(4096);
    let parsed: Vec<Record<'_>> = recs.iter().map(|r| Record::parse(r).unwrap()).collect();
    // warm up: every monitor that will match is in Error (steady state)
    for r in &parsed {
        table.on_record(Source::Expdrv, FaultKind::Fault, r);
    }
    let rounds = 500;
    let t = Instant::now();
    for _ in 0..rounds {
        for r in &parsed {
            table.on_record(Source::Expdrv, FaultKind::Fault, std::hint::black_box(r));
        }
    }
    t.elapsed().as_nanos() as f64 / (rounds * parsed.len()) as f64
}

fn percentiles(mut v: Vec<u64>) -> (f64, f64, f64) {
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    (at(0.5), at(0.99), *v.last().unwrap() as f64 / 1000.0)
}

const STAMP_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const char *seq = getenv("FAULTBRIDGE_SEQUENCE");
    FILE *f = fopen(argc > 1 ? argv[1] : "/dev/null", "a");
    if (!f) return 1;
    fprintf(f, "%s %llu\n", seq ? seq : "0", (unsigned long long)ts.tv_sec * 1000000000ULL + ts.tv_nsec);
    fclose(f);
    return 0;
}
"#;

/// The stamp program started as a floor starts it: `posix_spawn` with the
/// same pipes, process group and directory as an action, `seq` as
/// `FAULTBRIDGE_SEQUENCE`.
fn spawn_stamp(bin: &std::path::Path, out: &std::path::Path, seq: u64) -> std::process::Child {
    std::process::Command::new(bin)
        .arg(out)
        .env("FAULTBRIDGE_SEQUENCE", seq.to_string())
        .current_dir("/")
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The program started with `posix_spawn` (the same pipes, process group
/// and directory as an action) on a thread of its own each time a datagram
/// comes on `group`, `count` times; the record's sequence goes to the
/// program as `FAULTBRIDGE_SEQUENCE`.
fn received_spawner(
    group: u32,
    count: u64,
    bin: std::path::PathBuf,
    out: std::path::PathBuf,
) -> std::thread::JoinHandle<()> {
    let sock = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
    sock.bind(0, group_mask(group)).unwrap();
    sock.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut seen = 0;
        while seen < count {
            let Recv::Datagram { stored, .. } = sock.recv(&mut buf).unwrap() else {
                continue;
            };
            for m in NlMsgIter::new(&buf[..stored]) {
                seen += 1;
                let seq = Record::parse(m.payload).unwrap().sequence();
                let _ = spawn_stamp(&bin, &out, seq).wait();
            }
        }
    })
}

fn action_latency(n: u64) {
    let dir = std::env::temp_dir().join(format!("fb-bench-monitors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("stamp.c");
    let bin = dir.join("stamp");
    let out = dir.join("stamps");
    std::fs::write(&src, STAMP_C).unwrap();
    let st = std::process::Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc is needed to build the stamp program");
    assert!(st.success());
    let cfg = config(&format!(
        "[[monitor]]\nname = \"bench\"\ncategory = \"NIC\"\nkeyword = \"eth0\"\nauto_clear = true\nadapter = \"exec\"\ncommand = \"{} {}\"\n",
        bin.display(),
        out.display()
    ));
    let bridge = faultbridge::Bridge::start(&cfg).unwrap();
    let changes = bridge.monitors().listen(4096);
    let mut sim = Simulator::new(2, 6).unwrap();
    let fault = FaultSpec::new(Category::Nic, "eth0");
    let clear = fault.clone().clear();
    let floor_out = dir.join("floor-stamps");
    // The second floor: what any program that starts an action on a fault
    // from the driver must pay at least, a bare netlink receiver (no parse,
    // no monitor, no hand-over) that spawns the program as a datagram
    // comes.
    let received_out = dir.join("received-stamps");
    let receiver = received_spawner(7, n, bin.clone(), received_out.clone());
    let mut direct = Simulator::new(2, 7).unwrap();
    let mut received_ts = std::collections::HashMap::new();
    let mut to_error = Vec::with_capacity(n as usize);
    let mut sent_ts = std::collections::HashMap::new();
    let mut floor_ts = std::collections::HashMap::new();
    // The action path and the two floors take turns, fault by fault, so
    // that a change in the machine's load falls on all three alike.
    for i in 0..n {
        let seq = sim.next_sequence();
        let t0 = monotonic_ns();
        sim.send(&fault).unwrap();
        sent_ts.insert(seq, t0);
        loop {
            let c = changes
                .recv_timeout(Duration::from_secs(5))
                .expect("no state change");
            if c.state == MonitorState::Error {
                to_error.push(monotonic_ns() - c.timestamp_ns);
                break;
            }
        }
        // let the action run before the CLEAR and the next fault
        std::thread::sleep(Duration::from_millis(15));
        sim.send(&clear).unwrap();
        loop {
            let c = changes
                .recv_timeout(Duration::from_secs(5))
                .expect("no clear");
            if c.state == MonitorState::Normal {
                break;
            }
        }
        // The floor: the same program started directly (posix_spawn with
        // the same pipes, process group and directory), paced the same way.
        std::thread::sleep(Duration::from_millis(15));
        let t0 = monotonic_ns();
        let mut child = spawn_stamp(&bin, &floor_out, i);
        floor_ts.insert(i, t0);
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(15));
        let seq = direct.next_sequence();
        received_ts.insert(seq, monotonic_ns());
        direct.send(&fault).unwrap();
        std::thread::sleep(Duration::from_millis(15));
    }
    receiver.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(bridge);
    let stamped = |path: &std::path::Path, sent: &std::collections::HashMap<u64, u64>| {
        let mut v = Vec::new();
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let (seq, ts) = line.split_once(' ').unwrap();
            let ts: u64 = ts.parse().unwrap();
            if let Some(t0) = sent.get(&seq.parse().unwrap()) {
                v.push(ts - t0);
            }
        }
        v
    };
    let to_main = stamped(&out, &sent_ts);
    let floor = stamped(&floor_out, &floor_ts);
    let received = stamped(&received_out, &received_ts);
    let (r50, r99, rmax) = percentiles(received);
    let (f50, f99, fmax) = percentiles(floor);
    let (e50, e99, emax) = percentiles(to_error);
    let (a50, a99, amax) = percentiles(to_main.clone());
    println!(
        "record sent → monitor Error seen by a listener   p50 {e50:8.1} µs  p99 {e99:8.1} µs  max {emax:9.1} µs  ({n} faults)"
    );
    println!(
        "record sent → action program's main reached      p50 {a50:8.1} µs  p99 {a99:8.1} µs  max {amax:9.1} µs  ({} actions)",
        to_main.len()
    );
    println!(
        "floor: the same program spawned directly            p50 {f50:8.1} µs  p99 {f99:8.1} µs  max {fmax:9.1} µs  ({n} spawns, in turn)"
    );
    println!(
        "floor: a bare netlink receiver spawns it            p50 {r50:8.1} µs  p99 {r99:8.1} µs  max {rmax:9.1} µs  ({n} faults, in turn)"
    );
    println!(
        "action started / spawn floor                        p50 {:8.2}×   p99 {:8.2}×",
        a50 / f50,
        a99 / f99
    );
    println!(
        "action started / receive-and-spawn floor            p50 {:8.2}×   p99 {:8.2}×",
        a50 / r50,
        a99 / r99
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("monitors bench: cannot make a private network namespace ({e}); run as root");
        std::process::exit(1);
    }
    let quick = std::env::var_os("FB_BENCH_QUICK").is_some();
    if std::env::var_os("FB_BENCH_PIN").is_some() {
        // Every thread made from here on, and every program started,
        // inherits the one CPU: no wake-up crosses to an idle vCPU.
        let mut set = nix::sched::CpuSet::new();
        set.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
    }
    let one = matching_cost(1);
    let many = matching_cost(10_000);
    println!(
        "matching cost per record:   1 monitor {one:6.1} ns   10 000 monitors {many:6.1} ns   (ratio {:.2})",
        many / one
    );
    action_latency(if quick { 200 } else { 1000 });
}

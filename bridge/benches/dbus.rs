//! The D-Bus side, measured in one run against a private `dbus-daemon`:
//!
//! 1. latency of the same records, simulator → in-process subscriber and
//!    simulator → D-Bus subscriber (a zbus client in this process, through
//!    `dbus-daemon`), one record per datagram, paced below the signal pace;
//!    p50/p99/p99.9 from each record's CLOCK_MONOTONIC `timestamp_ns`;
//! 2. sustained `Fault` signals/s a D-Bus subscriber receives during a
//!    flood far above what D-Bus carries, at the default pace and with the
//!    pace lifted (the bus itself is then the limit);
//! 3. `faultbridge check` wall time p50/p99 (a new process each time, as a
//!    cluster runs it) while a flood keeps the daemon and the bus busy.
//!
//! Run as root (netlink multicast receive needs CAP_NET_ADMIN; the bench
//! moves itself into a network namespace of its own):
//! `cargo bench -p faultbridge --bench dbus` (`FB_BENCH_QUICK=1` for a
//! short run).
#![allow(clippy::unwrap_used)]

use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Bridge, Config, Event, SubscribeOptions};
use faultbridge_bus::dbus::client::{next_message, subscribe};
use faultbridge_bus::dbus::{BusAddress, BusSignal, ServiceOptions};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::sys::netlink::NETLINK_USERSOCK;
use faultbridge_ffi::wire::record::Category;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const GROUP: u32 = 7;

struct PrivateBus {
    child: Child,
    dir: PathBuf,
    address: String,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let dir =
            std::env::temp_dir().join(format!("faultbridge-bench-dbus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt-get install dbus-daemon)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        PrivateBus {
            child,
            dir,
            address: line.trim().to_string(),
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percentiles(mut v: Vec<u64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    (at(0.5), at(0.99), at(0.999))
}

/// What the D-Bus subscriber saw: per sequence, the latency in ns.
struct DbusSeen {
    lat: Vec<(u64, u64)>,
    faults: u64,
    lost: u64,
    first_ns: u64,
    last_ns: u64,
}

/// A D-Bus subscriber on a thread of its own, until a fault whose keyword
/// is "stop" (see [`end_subscriber`]).
fn dbus_subscriber(
    bus: BusAddress,
    ready: mpsc::Sender<()>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<DbusSeen> {
    std::thread::spawn(move || {
        zbus::block_on(async {
            let (_conn, mut stream) = subscribe(&bus, None, None, 1 << 16).await.unwrap();
            ready.send(()).unwrap();
            let mut seen = DbusSeen {
                lat: Vec::with_capacity(1 << 20),
                faults: 0,
                lost: 0,
                first_ns: 0,
                last_ns: 0,
            };
            while let Some(Ok(m)) = next_message(&mut stream).await {
                let now = monotonic_ns();
                match BusSignal::parse(&m) {
                    Some(BusSignal::Fault(f)) => {
                        if f.keyword == "stop" {
                            break;
                        }
                        seen.lat
                            .push((f.sequence, now.saturating_sub(f.timestamp_ns)));
                        seen.faults += 1;
                        if seen.first_ns == 0 {
                            seen.first_ns = now;
                        }
                        seen.last_ns = now;
                        count.fetch_add(1, Relaxed);
                    }
                    Some(BusSignal::Lost(_)) => seen.lost += 1,
                    None => {}
                }
            }
            seen
        })
    })
}

fn config() -> Config {
    Config::parse(
        &format!(
            "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_protocol = 2\nnetlink_group = {GROUP}\n\
             [[monitor]]\nname = \"bench-mon\"\ncategory = \"SPS\"\nkeyword = \"x\"\n"
        ),
        std::path::Path::new("<bench>"),
    )
    .unwrap()
}

/// Sends `count` single-record datagrams at `rate`/s.
fn paced(sim: &mut Simulator, count: u64, rate: u64) {
    let spec = FaultSpec::new(Category::Nic, "eth0");
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    for i in 0..count {
        let due = start + interval * i as u32;
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        sim.send(&spec).unwrap();
    }
}

/// Ends a subscriber: sends "stop" faults (one gets through once the pace
/// has refilled) until its thread is done.
fn end_subscriber(sim: &mut Simulator, sub: std::thread::JoinHandle<DbusSeen>) -> DbusSeen {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sub.is_finished() && Instant::now() < deadline {
        sim.send(&FaultSpec::new(Category::Sps, "stop")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    sub.join().unwrap()
}

/// One run of "sustained signals/s" with `opts`: a flood of `count` records
/// at `rate`/s; the subscriber's Fault signals over its receiving window.
fn sustained(bus: &PrivateBus, opts: &ServiceOptions, count: u64, rate: u64) -> (f64, u64, u64) {
    let bridge = Bridge::start(&config()).unwrap();
    let service = faultbridge::dbus::start(&bridge, opts, 8192).unwrap();
    let (rtx, rrx) = mpsc::channel();
    let sub = dbus_subscriber(
        BusAddress::Address(bus.address.clone()),
        rtx,
        Arc::new(AtomicU64::new(0)),
    );
    rrx.recv().unwrap();
    let mut sim = Simulator::new(NETLINK_USERSOCK, GROUP).unwrap();
    let templates = vec![FaultSpec::new(Category::Nic, "eth1")];
    sim.flood(&templates, count, rate, 32).unwrap();
    let seen = end_subscriber(&mut sim, sub);
    bridge.shutdown();
    let d = service.stop();
    let window = seen.last_ns.saturating_sub(seen.first_ns) as f64 / 1e9;
    let per_s = if window > 0.0 {
        seen.faults as f64 / window
    } else {
        0.0
    };
    (per_s, seen.faults, d.dropped())
}

fn main() {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("dbus bench: cannot enter a network namespace of its own ({e}); using this one");
    }
    let quick = std::env::var_os("FB_BENCH_QUICK").is_some();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_faultbridge"));
    let bus = PrivateBus::start();
    let address = BusAddress::Address(bus.address.clone());
    println!("D-Bus bench on a private dbus-daemon ({})", bus.address);

    // 1. latency, same records, both subscribers.
    let n_lat: u64 = if quick { 2_000 } else { 10_000 };
    let rate_lat: u64 = 2_000;
    let bridge = Bridge::start(&config()).unwrap();
    let inproc = bridge
        .subscribe(SubscribeOptions::new("bench-inproc").capacity(1 << 16))
        .unwrap();
    let service =
        faultbridge::dbus::start(&bridge, &ServiceOptions::new(address.clone()), 8192).unwrap();
    let (rtx, rrx) = mpsc::channel();
    let dbus_count = Arc::new(AtomicU64::new(0));
    let sub = dbus_subscriber(address.clone(), rtx, dbus_count.clone());
    rrx.recv().unwrap();
    let inproc_thread = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(n_lat as usize);
        while (lat.len() as u64) < n_lat {
            match inproc.recv_timeout(Duration::from_secs(10)) {
                Ok(Event::Fault(f)) => lat.push((
                    f.sequence(),
                    monotonic_ns().saturating_sub(f.timestamp_ns()),
                )),
                Ok(Event::Lost(_)) => {}
                Err(_) => break,
            }
        }
        lat
    });
    let mut sim = Simulator::new(NETLINK_USERSOCK, GROUP).unwrap();
    paced(&mut sim, n_lat, rate_lat);
    let inproc_lat = inproc_thread.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dbus_count.load(Relaxed) < n_lat && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = end_subscriber(&mut sim, sub);
    let same: std::collections::HashSet<u64> = seen.lat.iter().map(|(s, _)| *s).collect();
    let ip: Vec<u64> = inproc_lat
        .iter()
        .filter(|(s, _)| same.contains(s))
        .map(|(_, l)| *l)
        .collect();
    let db: Vec<u64> = seen.lat.iter().map(|(_, l)| *l).collect();
    let (ip50, ip99, ip999) = percentiles(ip.clone());
    let (db50, db99, db999) = percentiles(db.clone());
    println!();
    println!(
        "latency, {} records one per datagram at {rate_lat}/s (the same records on both paths):",
        db.len()
    );
    println!("| path | p50 µs | p99 µs | p99.9 µs |");
    println!("|---|---|---|---|");
    println!("| simulator → in-process subscriber | {ip50:.1} | {ip99:.1} | {ip999:.1} |");
    println!(
        "| simulator → D-Bus subscriber (via dbus-daemon) | {db50:.1} | {db99:.1} | {db999:.1} |"
    );

    // 3. check wall time while a flood runs (on this bridge and service).
    let n_check: usize = if quick { 40 } else { 200 };
    let flood_on = Arc::new(AtomicBool::new(true));
    let next_seq = sim.next_sequence();
    let flooder = {
        let on = flood_on.clone();
        std::thread::spawn(move || {
            let mut sim = Simulator::new(NETLINK_USERSOCK, GROUP).unwrap();
            // Carries on the latency run's sequence.
            sim.set_next_sequence(next_seq);
            let templates = vec![FaultSpec::new(Category::Nic, "eth2")];
            let mut sent = 0u64;
            while on.load(Relaxed) {
                sent += sim.flood(&templates, 20_000, 100_000, 32).unwrap().records;
            }
            (sent, sim)
        })
    };
    // A D-Bus subscriber receiving the flood's signals, as a monitoring agent would.
    let (wtx, wrx) = mpsc::channel();
    let watcher = dbus_subscriber(address.clone(), wtx, Arc::new(AtomicU64::new(0)));
    wrx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut walls = Vec::with_capacity(n_check);
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..n_check {
        let t = Instant::now();
        let st = Command::new(&bin)
            .args(["--bus", &bus.address, "check", "bench-mon"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        walls.push(t.elapsed().as_nanos() as u64);
        *codes.entry(st.code().unwrap_or(-1)).or_insert(0) += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    flood_on.store(false, Relaxed);
    let (flooded, mut sim) = flooder.join().unwrap();
    let w = end_subscriber(&mut sim, watcher);
    let stats = bridge.shutdown();
    let d = service.stop();
    let (c50, c99, c999) = percentiles(walls);
    println!();
    println!(
        "`faultbridge check` wall time, {n_check} runs while a flood of {flooded} records at 100000/s runs (a D-Bus subscriber took {} Fault signals meanwhile):",
        w.faults
    );
    println!("| p50 ms | p99 ms | p99.9 ms | exit codes |");
    println!("|---|---|---|---|");
    println!(
        "| {:.2} | {:.2} | {:.2} | {codes:?} |",
        c50 / 1000.0,
        c99 / 1000.0,
        c999 / 1000.0
    );
    println!(
        "    (daemon: {} received; D-Bus side: {} Fault signals, {} dropped to the pace or budget)",
        stats.source(faultbridge::Source::Expdrv).received,
        d.fault_signals,
        d.dropped()
    );

    // 2. sustained signals/s.
    let flood_rate: u64 = 500_000;
    let n_flood: u64 = if quick { 250_000 } else { 1_500_000 };
    println!();
    println!(
        "sustained Fault signals/s at a D-Bus subscriber, flood of {n_flood} records at {flood_rate}/s:"
    );
    println!("| pace | signals/s received | Fault signals | dropped by the D-Bus side |");
    println!("|---|---|---|---|");
    let def = ServiceOptions::new(address.clone());
    let (r, f, dr) = sustained(&bus, &def, n_flood, flood_rate);
    println!(
        "| default ({} /s, burst {}) | {r:.0} | {f} | {dr} |",
        def.max_signals_per_second, def.signal_burst
    );
    let mut unlimited = ServiceOptions::new(address.clone());
    unlimited.max_signals_per_second = 0;
    let (r, f, dr) = sustained(&bus, &unlimited, n_flood, flood_rate);
    println!("| none (the bus is the limit) | {r:.0} | {f} | {dr} |");

    // 4. record sent → monitor in Error, as a D-Bus client sees it.
    let n_pc: u64 = if quick { 200 } else { 1000 };
    let (e50, e99, e999) = percentiles(properties_changed_latency(&address, n_pc));
    println!();
    println!(
        "record sent → monitor Error seen as PropertiesChanged by a D-Bus client, {n_pc} faults:"
    );
    println!("| p50 µs | p99 µs | p99.9 µs |");
    println!("|---|---|---|");
    println!("| {e50:.1} | {e99:.1} | {e999:.1} |");
}

/// Sends a fault, waits for the monitor's `PropertiesChanged` with State =
/// Error at a zbus client, then a CLEAR (auto_clear) and its Normal; the
/// latency is from the send to the Error signal's arrival.
fn properties_changed_latency(bus: &BusAddress, n: u64) -> Vec<u64> {
    use std::collections::HashMap;
    use zbus::OwnedVariant;
    let cfg = Config::parse(
        &format!(
            "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_protocol = 2\nnetlink_group = {}\n\
             [[monitor]]\nname = \"pc-mon\"\ncategory = \"NIC\"\nkeyword = \"pc0\"\nauto_clear = true\n",
            GROUP + 1
        ),
        std::path::Path::new("<bench>"),
    )
    .unwrap();
    let bridge = Bridge::start(&cfg).unwrap();
    let service =
        faultbridge::dbus::start(&bridge, &ServiceOptions::new(bus.clone()), 8192).unwrap();
    let (tx, rx) = mpsc::channel::<(String, u64)>();
    let (rtx, rrx) = mpsc::channel();
    let b = bus.clone();
    std::thread::spawn(move || {
        zbus::block_on(async {
            let (conn, mut stream) = subscribe(&b, None, None, 1 << 12).await.unwrap();
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .interface("org.freedesktop.DBus.Properties")
                .member("PropertiesChanged")
                .build()
                .unwrap();
            faultbridge_bus::dbus::client::add_match(&conn, &rule)
                .await
                .unwrap();
            rtx.send(()).unwrap();
            while let Some(Ok(m)) = next_message(&mut stream).await {
                let now = monotonic_ns();
                let Ok((_i, changed, _inv)) =
                    m.body()
                        .deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
                else {
                    continue;
                };
                let Some(state) = changed
                    .get("State")
                    .and_then(|v| v.try_clone().ok())
                    .and_then(|v| String::try_from(v).ok())
                else {
                    continue;
                };
                if tx.send((state, now)).is_err() {
                    break;
                }
            }
        })
    });
    rrx.recv().unwrap();
    let mut sim = Simulator::new(NETLINK_USERSOCK, GROUP + 1).unwrap();
    let fault = FaultSpec::new(Category::Nic, "pc0");
    let clear = fault.clone().clear();
    let wait = |want: &str| loop {
        let (state, at) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("no PropertiesChanged");
        if state == want {
            return at;
        }
    };
    let mut lat = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t0 = monotonic_ns();
        sim.send(&fault).unwrap();
        lat.push(wait("Error").saturating_sub(t0));
        sim.send(&clear).unwrap();
        wait("Normal");
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(service);
    bridge.shutdown();
    lat
}

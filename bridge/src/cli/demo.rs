//! `faultbridge demo`: the daemon on an embedded default configuration, the
//! driver simulator, a live view of the faults flowing, a D-Bus client
//! seeing them as signals (on a private `dbus-daemon` when the machine has
//! no system bus), a monitor tripping and being reset, then a summary.

use super::format::{fault_line, lost_line};
use super::{CliResult, watch};
use crate::config::Config;
use crate::daemon::{Bridge, BridgeError};
use crate::dbus::private_bus::{PrivateBus, PrivatePolicy};
use crate::dbus::{self, SYSTEM_BUS_SOCKET};
use crate::sim::{FaultSpec, Simulator};
use faultbridge_bus::dbus::client;
use faultbridge_bus::dbus::{
    BUS_NAME, BusAddress, BusSignal, MONITOR_INTERFACE, MONITOR_PATH_PREFIX, PROPERTIES_INTERFACE,
    Service, ServiceOptions, monitor_path, unescape_label,
};
use faultbridge_bus::{Event, SubscribeOptions};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::wire::record::{Category, MalformedReason, Severity, event};
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use zbus::{MatchRule, OwnedVariant};

/// The embedded configuration of the demo. The D-Bus side is started by
/// the demo itself, on the system bus or on a private one.
pub const DEMO_CONFIG: &str = r#"
# faultbridge demo: the driver simulator on NETLINK_USERSOCK, group 1.
bus = "none"
[sources.expdrv]
accept = "root"
netlink_protocol = 2
netlink_group = 1

[[monitor]]
name = "nic-eth0"
category = "NIC"
keyword = "eth0"
recovery_action = "failover"
recovery_target = "web-group"
adapter = "exec"
# Fault fields reach a shell script as arguments ($1…) or as FAULTBRIDGE_*
# variables, never inside the script text.
command = "/bin/sh -c 'echo recovery: $1 of $2 for $3' sh {recovery_action} {recovery_target} {key}"
timeout = "5s"
"#;

/// The demo's monitor.
const DEMO_MONITOR: &str = "nic-eth0";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Records in the closing flood.
    #[arg(long, default_value_t = 200_000)]
    pub flood: u64,
    /// Rate of the closing flood, records/s.
    #[arg(long, default_value_t = 400_000)]
    pub rate: u64,
    /// Internal: already re-executed in a private user+network namespace.
    #[arg(long, hide = true)]
    pub in_namespace: bool,
}

fn needs_privilege(e: &BridgeError) -> bool {
    crate::error::errno(e) == Some(nix::libc::EPERM)
}

pub fn run(args: DemoArgs) -> CliResult {
    // The simulator is this process: as root (or root of the namespace the
    // demo re-runs itself in) `accept = "root"` hears it; another user's
    // records need "any", with its warning.
    let text = if nix::unistd::geteuid().is_root() {
        DEMO_CONFIG.to_string()
    } else {
        DEMO_CONFIG.replace("accept = \"root\"", "accept = \"any\"")
    };
    let config = Config::parse(&text, std::path::Path::new("<demo>"))?;
    let bridge = match Bridge::start(&config) {
        Ok(b) => b,
        Err(e) if needs_privilege(&e) && !args.in_namespace => {
            // Receiving netlink multicast needs CAP_NET_ADMIN: an unprivileged
            // user gets it inside a user and network namespace of its own.
            eprintln!(
                "faultbridge demo: not privileged for netlink multicast; re-running under `unshare -Urn`"
            );
            let exe = std::env::current_exe()?;
            let status = std::process::Command::new("unshare")
                .arg("-Urn")
                .arg(exe)
                .args(["demo", "--in-namespace", "--flood"])
                .arg(args.flood.to_string())
                .arg("--rate")
                .arg(args.rate.to_string())
                .status()
                .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
            return Ok(ExitCode::from(status.code().unwrap_or(1) as u8));
        }
        Err(e) => return Err(e.into()),
    };
    let live = bridge.subscribe(SubscribeOptions::new("live-view").capacity(1 << 18))?;

    println!("faultbridge demo — the expanded driver is played by the simulator");
    println!(
        "  driver ──netlink (NETLINK_USERSOCK, group 1)──▶ faultbridge ──lock-free channel──▶ this live view"
    );
    let dbus = match DemoBus::start(&bridge) {
        Ok(d) => {
            println!(
                "{:61}└──D-Bus signals──▶ a D-Bus client (lines marked D-Bus ▸)",
                ""
            );
            println!("  D-Bus: {}", d.describe);
            Some(d)
        }
        Err(e) => {
            println!("  (the D-Bus side is not shown: {e})");
            None
        }
    };
    println!();

    let flood = args.flood;
    let rate = args.rate;
    let reset_bus = dbus.as_ref().map(|d| d.bus.clone());
    let sender = std::thread::spawn(move || -> Result<Simulator, crate::sim::SimError> {
        let mut sim = Simulator::new(2, 1)?;
        let pause = || std::thread::sleep(Duration::from_millis(150));
        let mut eth0 = FaultSpec::new(Category::Nic, "eth0");
        eth0.device_index = 2;
        sim.send(&eth0)?;
        pause();
        let mut path = FaultSpec::new(Category::Fc, "host3");
        path.event_code = event::FC_PATH_LOST;
        path.device_index = 3;
        path.detail = b"target 0:0:1".to_vec();
        sim.send(&path)?;
        pause();
        let mut am = FaultSpec::new(Category::HaAm, "oracle-listener");
        am.severity = Severity::Fatal;
        sim.send(&am)?;
        pause();
        // A corrupted record: counted and dropped; its sequence shows as lost.
        println!(
            "  ▸ on purpose, the simulator now sends record #{} with a wrong magic number: faultbridge must count it as malformed, drop it, and report its sequence as lost",
            sim.next_sequence()
        );
        sim.send_malformed(MalformedReason::BadMagic, &eth0)?;
        pause();
        sim.send(&eth0.clone().clear())?;
        pause();
        if let Some(bus) = &reset_bus {
            // What an operator does once eth0 is fixed: `faultbridge reset nic-eth0`.
            match reset_over_dbus(bus, DEMO_MONITOR) {
                Ok(()) => println!("  D-Bus ▸ Reset() called on monitor {DEMO_MONITOR}"),
                Err(e) => println!("  D-Bus ▸ Reset of {DEMO_MONITOR} failed: {e}"),
            }
            pause();
        }
        // The flood: several records per datagram, at a steady rate.
        let templates: Vec<FaultSpec> = (0..4)
            .map(|i| FaultSpec::new(Category::Nic, &format!("eth{i}")))
            .collect();
        sim.flood(&templates, flood, rate, 32)?;
        Ok(sim)
    });

    let started = Instant::now();
    let mut shown = 0u64;
    let mut faults = 0u64;
    let mut lost = 0u64;
    let mut lat = Vec::with_capacity(flood as usize + 16);
    let mut last_tick = Instant::now();
    loop {
        match live.recv_timeout(Duration::from_millis(300)) {
            Ok(Event::Fault(f)) => {
                faults += 1;
                lat.push(monotonic_ns().saturating_sub(f.timestamp_ns()));
                if shown < 6 {
                    println!("  {}", fault_line(&f));
                    shown += 1;
                    if shown == 5 {
                        println!("  … now a flood of {flood} records at {rate}/s");
                    }
                }
            }
            Ok(Event::Lost(l)) => {
                lost += l.count;
                println!("  {}", lost_line(&l));
            }
            Err(_) if sender.is_finished() => break,
            Err(_) => {}
        }
        if last_tick.elapsed() > Duration::from_secs(1) {
            println!("  … {faults} faults received so far");
            last_tick = Instant::now();
        }
    }
    let sim_result = sender.join().map_err(|_| "simulator thread panicked")?;
    let sim = sim_result?;
    let stats = bridge.shutdown();
    let sent = sim.next_sequence() - 1;
    let dbus_summary = dbus.map(DemoBus::finish);
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!();
    println!("summary after {:.1} s:", started.elapsed().as_secs_f64());
    println!("  driver sent {sent} records; live view received {faults}, told of {lost} lost");
    println!(
        "  latency driver → live view: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    for line in stats.to_string().lines() {
        println!("  {line}");
    }
    let expdrv = stats.source(faultbridge_bus::Source::Expdrv);
    println!(
        "  how it adds up: {sent} sent = {} received + {} lost. The {} malformed record (the deliberate one) was counted as malformed and dropped; its sequence never arrived in a valid record, so it is counted as lost too.",
        expdrv.received, expdrv.lost, expdrv.malformed_total
    );
    if let Some(lines) = dbus_summary {
        for line in lines {
            println!("  {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Calls `Reset` on a monitor object, as `faultbridge reset` does.
fn reset_over_dbus(bus: &BusAddress, monitor: &str) -> zbus::Result<()> {
    zbus::block_on(async {
        let conn = client::connect(bus, Some(Duration::from_secs(2))).await?;
        conn.call_method(
            Some(BUS_NAME),
            monitor_path(monitor).as_str(),
            Some(MONITOR_INTERFACE),
            "Reset",
            &(),
        )
        .await
        .map(|_| ())
    })
}

/// What the demo's D-Bus client saw.
#[derive(Debug, Default)]
struct Seen {
    faults: AtomicU64,
    lost_signals: AtomicU64,
    lost_records: AtomicU64,
}

/// The D-Bus side of the demo: the service, the bus it is on, and a client.
struct DemoBus {
    service: Service,
    bus: BusAddress,
    describe: String,
    private: Option<PrivateBus>,
    seen: Arc<Seen>,
    client: Option<std::thread::JoinHandle<()>>,
}

impl DemoBus {
    /// The system bus when there is one and faultbridge may own its name
    /// there; otherwise a private `dbus-daemon`.
    fn start(bridge: &Bridge) -> Result<DemoBus, String> {
        let mut private = None;
        let mut attempt = if Path::new(SYSTEM_BUS_SOCKET).exists() {
            dbus::start(bridge, &ServiceOptions::new(BusAddress::System), 1 << 13)
                .map(|s| (s, BusAddress::System, "on the system bus".to_string()))
                .map_err(|e| super::error_chain(&e))
        } else {
            Err(format!(
                "this machine has no system bus ({SYSTEM_BUS_SOCKET})"
            ))
        };
        if let Err(why) = &attempt {
            let p = PrivateBus::start("demo", &PrivatePolicy::Open)
                .map_err(|e| super::error_chain(&e))?;
            let bus = BusAddress::Address(p.address().to_string());
            let describe = format!(
                "on a private dbus-daemon at {}, as {why}; it goes at the end",
                p.address()
            );
            attempt = dbus::start(bridge, &ServiceOptions::new(bus.clone()), 1 << 13)
                .map(|s| (s, bus, describe))
                .map_err(|e| super::error_chain(&e));
            private = Some(p);
        }
        let (service, bus, describe) = attempt?;
        let seen = Arc::new(Seen::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let client = {
            let bus = bus.clone();
            let seen = seen.clone();
            std::thread::Builder::new()
                .name("demo-dbus-client".into())
                .spawn(move || dbus_client(&bus, &seen, &ready_tx))
                .map_err(|e| e.to_string())?
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the D-Bus client cannot subscribe: {e}")),
            Err(_) => return Err("the D-Bus client did not subscribe in time".into()),
        }
        Ok(DemoBus {
            service,
            bus,
            describe,
            private,
            seen,
            client: Some(client),
        })
    }

    /// Stops the service (after the bridge), lets the client take in the
    /// last signals, ends the private bus; the summary lines.
    fn finish(mut self) -> Vec<String> {
        let d = self.service.stop();
        std::thread::sleep(Duration::from_millis(300));
        let seen = (
            self.seen.faults.load(Relaxed),
            self.seen.lost_signals.load(Relaxed),
            self.seen.lost_records.load(Relaxed),
        );
        if self.private.take().is_some() {
            // The private bus is gone, so the client's stream has ended.
            if let Some(c) = self.client.take() {
                let _ = c.join();
            }
        }
        vec![
            format!(
                "D-Bus side: {} Fault and {} Lost signals sent; {} faults not sent as signals under the flood (paced to {} signals/s: {} to the pace, {} to a full socket, {} to a full queue)",
                d.fault_signals,
                d.lost_signals,
                d.dropped(),
                ServiceOptions::DEFAULT_MAX_SIGNALS_PER_SECOND,
                d.rate_drops,
                d.backlog_drops,
                d.queue_drops
            ),
            format!(
                "D-Bus client: received {} Fault signals and {} Lost signals covering {} records",
                seen.0, seen.1, seen.2
            ),
        ]
    }
}

/// The demo's D-Bus client: prints the first signals and state changes it
/// receives, counts the rest.
fn dbus_client(bus: &BusAddress, seen: &Seen, ready: &std::sync::mpsc::Sender<Result<(), String>>) {
    zbus::block_on(async {
        let (conn, mut stream) = match client::subscribe(bus, None, None, 1 << 16).await {
            Ok(x) => x,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let changes = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(BUS_NAME)
            .interface(PROPERTIES_INTERFACE)
            .member("PropertiesChanged")
            .path_namespace(MONITOR_PATH_PREFIX)
            .build();
        match changes {
            Ok(rule) => {
                if let Err(e) = client::add_match(&conn, &rule).await {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
            }
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        }
        let _ = ready.send(Ok(()));
        let mut shown_lost = 0;
        while let Some(Ok(m)) = client::next_message(&mut stream).await {
            match BusSignal::parse(&m) {
                Some(BusSignal::Fault(f)) => {
                    let n = seen.faults.fetch_add(1, Relaxed);
                    if n < 5 {
                        println!("  D-Bus ▸ {}", watch::fault_line(&f));
                    }
                }
                Some(BusSignal::Lost(l)) => {
                    seen.lost_signals.fetch_add(1, Relaxed);
                    seen.lost_records.fetch_add(
                        (l.last_sequence + 1).saturating_sub(l.first_sequence),
                        Relaxed,
                    );
                    if shown_lost < 3 {
                        shown_lost += 1;
                        println!("  D-Bus ▸ {}", watch::lost_line(&l));
                    }
                }
                None => {
                    if let Some(line) = state_change(&m) {
                        println!("  D-Bus ▸ {line}");
                    }
                }
            }
        }
    });
}

/// A monitor's `PropertiesChanged` with a new `State`, readably.
fn state_change(m: &zbus::Message) -> Option<String> {
    let h = m.header();
    if h.member()?.as_str() != "PropertiesChanged" {
        return None;
    }
    let path = h.path()?.as_str().to_string();
    let (_iface, changed, _inv): (String, HashMap<String, OwnedVariant>, Vec<String>) =
        m.body().deserialize().ok()?;
    let state = String::try_from(changed.get("State")?.try_clone().ok()?).ok()?;
    let name = path
        .rsplit('/')
        .next()
        .and_then(unescape_label)
        .unwrap_or(path);
    Some(format!(
        "monitor {name}: State = {state} (PropertiesChanged)"
    ))
}

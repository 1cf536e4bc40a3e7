//! `faultbridge demo`: the daemon on an embedded default configuration, the
//! driver simulator, and a live view of the faults flowing, then a summary.

use super::CliResult;
use super::format::{fault_line, lost_line};
use crate::config::Config;
use crate::daemon::{Bridge, BridgeError};
use crate::sim::{FaultSpec, Simulator};
use faultbridge_bus::{Event, SubscribeOptions};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::wire::record::{Category, MalformedReason, Severity, event};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The embedded configuration of the demo.
pub const DEMO_CONFIG: &str = r#"
# faultbridge demo: the driver simulator on NETLINK_USERSOCK, group 1.
bus = "none"
[sources.expdrv]
netlink_protocol = 2
netlink_group = 1
"#;

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
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(nix::libc::EPERM);
        }
        cur = c.source();
    }
    false
}

pub fn run(args: DemoArgs) -> CliResult {
    let config = Config::parse(DEMO_CONFIG, std::path::Path::new("<demo>"))?;
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
    println!();

    let flood = args.flood;
    let rate = args.rate;
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
        sim.send_malformed(MalformedReason::BadMagic, &eth0)?;
        pause();
        sim.send(&eth0.clone().clear())?;
        pause();
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
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!();
    println!("summary after {:.1} s:", started.elapsed().as_secs_f64());
    println!(
        "  driver sent {} records; live view received {faults}, told of {lost} lost",
        sim.next_sequence() - 1
    );
    println!(
        "  latency driver → live view: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    for line in stats.to_string().lines() {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}

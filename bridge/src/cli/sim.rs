//! `faultbridge sim`: the driver simulator on the command line.

use super::CliResult;
use super::format::unhex;
use crate::sim::{FaultSpec, Simulator, parse_key};
use faultbridge_bus::FaultKind;
use faultbridge_ffi::sys::netlink::NETLINK_USERSOCK;
use faultbridge_ffi::wire::record::{F_SNAPSHOT, F_TEST, MalformedReason, Severity};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Send records (one datagram each unless --batch).
    Send(SendArgs),
    /// Send many records at a fixed rate, several per datagram.
    Flood(FloodArgs),
    /// Serve an emulated char device (a FUSE file with read, poll and the
    /// three ioctls) next to the netlink stream, driven by a control socket.
    Device(DeviceArgs),
}

#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// Directory to mount the device's file system on (it must exist).
    #[arg(long, value_name = "DIR")]
    pub mount: std::path::PathBuf,
    /// The device file's name inside DIR.
    #[arg(long, default_value = "expdrv0")]
    pub name: String,
    /// Netlink protocol the driver multicasts on (reported by GET_INFO).
    #[arg(long, default_value_t = NETLINK_USERSOCK)]
    pub protocol: i32,
    /// Netlink multicast group (1..=32, reported by GET_INFO).
    #[arg(long, default_value_t = 1)]
    pub group: u32,
    /// Live records each open file holds before dropping the oldest (0:
    /// live records on netlink only; the device serves snapshots).
    #[arg(long, default_value_t = 4096)]
    pub queue: usize,
    /// Control socket (default: DIR.control next to the mount point).
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,
    /// Sequence of the first record.
    #[arg(long, default_value_t = 1)]
    pub seq: u64,
    /// The driver instance id.
    #[arg(long, default_value_t = 1)]
    pub driver_id: u32,
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// Netlink protocol (2 = NETLINK_USERSOCK).
    #[arg(long, default_value_t = NETLINK_USERSOCK)]
    pub protocol: i32,
    /// Netlink multicast group (1..=32).
    #[arg(long, default_value_t = 1)]
    pub group: u32,
    /// Sequence of the first record (a driver starts at 1).
    #[arg(long, default_value_t = 1)]
    pub seq: u64,
    /// The driver instance id.
    #[arg(long, default_value_t = 1)]
    pub driver_id: u32,
}

#[derive(Debug, clap::Args)]
pub struct What {
    /// CATEGORY[.KEYWORD], e.g. NIC.eth0, FC.host3, HA/SS.
    #[arg(
        short = 'k',
        long = "key",
        value_name = "CATEGORY[.KEYWORD]",
        default_value = "NIC.eth0"
    )]
    pub key: Vec<String>,
    /// info | warning | error | fatal
    #[arg(long, default_value = "error")]
    pub severity: String,
    /// Event code (decimal or 0x hex); default: the category's usual fault code.
    #[arg(long)]
    pub event_code: Option<String>,
    /// Device index (ifindex, SCSI host number).
    #[arg(long, default_value_t = 0)]
    pub device_index: u32,
    /// Detail bytes as text.
    #[arg(long, conflicts_with = "detail_hex")]
    pub detail: Option<String>,
    /// Detail bytes as hex.
    #[arg(long)]
    pub detail_hex: Option<String>,
    /// Send CLEAR records (the fault condition ended).
    #[arg(long)]
    pub clear: bool,
    /// Flag the records SNAPSHOT.
    #[arg(long)]
    pub snapshot: bool,
    /// Flag the records TEST.
    #[arg(long)]
    pub test: bool,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub what: What,
    /// How many records.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Records per datagram.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Send one record broken on purpose: short, bad_magic, bad_version,
    /// bad_header_len, bad_total_len, keyword_out_of_bounds,
    /// detail_out_of_bounds, overlap, keyword_too_long, keyword_not_utf8,
    /// keyword_nul, unknown_category, unknown_severity, length_without_offset.
    #[arg(long, value_name = "REASON")]
    pub malformed: Option<String>,
    /// Send one message of this reserved netlink type (>= 0x12) instead.
    #[arg(long, value_name = "TYPE")]
    pub reserved_type: Option<u16>,
}

#[derive(Debug, clap::Args)]
pub struct FloodArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub what: What,
    /// Records per second (0: as fast as possible).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// How many records.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Records per datagram.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(&h.replace('_', ""), 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a number"))
}

fn specs(w: &What) -> Result<Vec<FaultSpec>, String> {
    let severity = Severity::from_name(&w.severity).ok_or_else(|| {
        format!(
            "unknown severity {:?}: expected info, warning, error or fatal",
            w.severity
        )
    })?;
    let detail = match (&w.detail, &w.detail_hex) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(h)) => unhex(h)?,
        (None, None) => Vec::new(),
    };
    let mut out = Vec::new();
    for k in &w.key {
        let (category, keyword) = parse_key(k)?;
        let mut f = FaultSpec::new(category, &keyword);
        if w.clear {
            f = f.clear();
        }
        f.severity = if w.clear && w.severity == "error" {
            Severity::Info
        } else {
            severity
        };
        if let Some(c) = &w.event_code {
            f.event_code = parse_u32(c)?;
        }
        f.device_index = w.device_index;
        f.detail = detail.clone();
        f.flags = if w.snapshot { F_SNAPSHOT } else { 0 } | if w.test { F_TEST } else { 0 };
        debug_assert!(matches!(f.kind, FaultKind::Fault | FaultKind::Clear));
        out.push(f);
    }
    Ok(out)
}

fn simulator(t: &Target) -> Result<Simulator, crate::sim::SimError> {
    let mut sim = Simulator::new(t.protocol, t.group)?;
    sim.set_next_sequence(t.seq);
    sim.set_driver_id(t.driver_id);
    Ok(sim)
}

pub fn run(cmd: SimCommand) -> CliResult {
    match cmd {
        SimCommand::Send(a) => {
            let templates = specs(&a.what)?;
            let mut sim = simulator(&a.target)?;
            if let Some(t) = a.reserved_type {
                sim.send_raw(t, &[0u8; 64])?;
                println!("sent a message of reserved type {t:#06x}");
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(m) = &a.malformed {
                let reason = MalformedReason::ALL
                    .into_iter()
                    .find(|r| r.name() == m)
                    .ok_or_else(|| format!("unknown malformed reason {m:?}"))?;
                let seq = sim.send_malformed(reason, &templates[0])?;
                println!("sent a {m} record as sequence {seq}");
                return Ok(ExitCode::SUCCESS);
            }
            let all: Vec<FaultSpec> = (0..a.count as usize)
                .map(|i| templates[i % templates.len()].clone())
                .collect();
            let batch = a.batch.max(1);
            let mut first = None;
            let mut last = 0;
            for chunk in all.chunks(batch) {
                let (f, l) = sim.send_batch(chunk)?;
                first.get_or_insert(f);
                last = l;
            }
            println!(
                "sent {} record(s), sequence {}..={}",
                a.count,
                first.unwrap_or(0),
                last
            );
            Ok(ExitCode::SUCCESS)
        }
        SimCommand::Device(a) => device(a),
        SimCommand::Flood(a) => {
            let templates = specs(&a.what)?;
            let mut sim = simulator(&a.target)?;
            let r = sim.flood(&templates, a.count, a.rate, a.batch)?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            println!(
                "sent {} record(s) in {} datagram(s), sequence {}..={}, {:.3} s, {:.0} records/s",
                r.records,
                r.datagrams,
                r.first_sequence,
                r.last_sequence,
                secs,
                r.records as f64 / secs
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `faultbridge sim device`: mounts the emulated device, prints one JSON
/// line `{"type":"ready","device":…,"control":…}`, serves the control
/// socket, and unmounts on `quit`, SIGINT or SIGTERM.
fn device(a: DeviceArgs) -> CliResult {
    use crate::sim::device::{DeviceOptions, EmulatedDevice};
    let control = a.control.clone().unwrap_or_else(|| {
        let mut p = a.mount.clone().into_os_string();
        p.push(".control");
        p.into()
    });
    let signals = crate::signals::block_stop_signals()?;
    let dev = std::sync::Arc::new(EmulatedDevice::mount(
        &a.mount,
        DeviceOptions {
            name: a.name.clone(),
            protocol: a.protocol,
            group: a.group,
            queue: a.queue,
            driver_id: a.driver_id,
            first_sequence: a.seq,
            ..DeviceOptions::default()
        },
    )?);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<String>(2);
    // Bound before readiness is announced.
    let _ = std::fs::remove_file(&control);
    let listener = std::os::unix::net::UnixListener::bind(&control)?;
    {
        let dev = dev.clone();
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name("sim-control".into())
            .spawn(move || {
                let r = dev.serve_control(listener);
                let _ = done.send(match r {
                    Ok(()) => "quit".into(),
                    Err(e) => format!("control socket failed: {e}"),
                });
            })?;
    }
    std::thread::Builder::new()
        .name("sim-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                let _ = done_tx.send(sig.to_string());
            }
        })?;
    println!(
        "{}",
        serde_json::json!({
            "type": "ready",
            "device": dev.path(),
            "control": control,
            "pid": std::process::id(),
        })
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let why = done_rx.recv().unwrap_or_default();
    eprintln!("faultbridge sim device: {why}: unmounting");
    let _ = std::fs::remove_file(&control);
    dev.unmount();
    Ok(ExitCode::SUCCESS)
}

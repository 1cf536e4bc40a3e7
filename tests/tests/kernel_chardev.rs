//! The driver's char device, for real, without a kernel module: `faultbridge
//! sim device` serves a FUSE file with `read`, `poll` and the three ioctls
//! of the spec, and multicasts the same records on netlink with one shared
//! sequence counter. The bridge learns the netlink protocol and group from
//! `EXPDRV_IOC_GET_INFO`, replays the active faults from
//! `EXPDRV_IOC_SNAPSHOT` at start-up, and after an overrun reports the loss
//! and resynchronises, so its monitors end where they would have ended
//! without the loss.
#![allow(clippy::unwrap_used)]

use faultbridge::monitor::MonitorState;
use faultbridge::{Bridge, Config, Event, LostReason, Source, SubscribeOptions};
use faultbridge_ffi::wire::record::F_SNAPSHOT;
use faultbridge_tests::simdev::SimDevice;
use faultbridge_tests::{Daemon, private_netns, source_stats};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

#[test]
fn start_up_learns_the_group_replays_active_faults_and_resyncs_after_a_gap() {
    private_netns();
    // Group 7, and live records on netlink only (`--queue 0`): a live
    // record can only arrive if the bridge joined the group GET_INFO named.
    let mut sim = SimDevice::start(&["--group", "7", "--queue", "0"]);
    assert_eq!(sim.send("fault NIC.eth0"), "1 1");
    assert_eq!(sim.send("fault FC.host1"), "2 2");
    assert_eq!(sim.send("fault NIC.eth1"), "3 3");
    assert_eq!(sim.send("clear NIC.eth1"), "4 4");

    // The configuration names the device only; netlink_group stays at 1.
    let mut d = Daemon::start(&format!(
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\ndevice = \"{}\"\nresync_interval = \"50ms\"\n",
        sim.device.display()
    ));
    let replay: Vec<Value> = (0..2).map(|_| d.next(T).unwrap()).collect();
    for (v, (seq, cat, kw)) in replay.iter().zip([(1, "NIC", "eth0"), (2, "FC", "host1")]) {
        assert_eq!(v["type"], "fault", "{v}");
        assert_eq!(v["source"], "expdrv-device");
        assert_eq!(v["flags"], F_SNAPSHOT, "{v}");
        assert_eq!(v["sequence"], seq);
        assert_eq!(
            (v["category"].as_str(), v["keyword"].as_str()),
            (Some(cat), Some(kw))
        );
        assert_eq!(v["cleared"], false);
    }

    assert_eq!(sim.send("fault NIC.eth5"), "5 5");
    let live = d.next(T).unwrap();
    assert_eq!(
        (live["keyword"].as_str(), live["sequence"].as_u64()),
        (Some("eth5"), Some(5))
    );
    assert_eq!(live["flags"], 0);
    assert!(
        d.stderr().contains("netlink protocol 2 group 7"),
        "{}",
        d.stderr()
    );
    // Handled records are acknowledged.
    let deadline = Instant::now() + T;
    while !sim.send("info").contains("acked=5") {
        assert!(
            Instant::now() < deadline,
            "no ACK of sequence 5: {}",
            sim.send("info")
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The driver loses a new fault (eth7) and the CLEAR of host1; the next
    // record shows the gap: Lost 6..=7, then a resync that re-delivers
    // eth7 and clears host1, both flagged SNAPSHOT.
    assert_eq!(sim.send("lose fault:NIC.eth7 clear:FC.host1"), "6 7");
    assert_eq!(sim.send("fault NIC.eth8"), "8 8");
    let got: Vec<Value> = (0..4).map(|_| d.next(T).unwrap()).collect();
    assert_eq!(got[0]["type"], "lost", "{got:?}");
    assert_eq!(got[0]["first_sequence"], 6);
    assert_eq!(got[0]["last_sequence"], 7);
    assert_eq!(got[0]["reason"], "sequence_gap");
    assert_eq!(got[1]["keyword"], "eth8");
    assert_eq!(got[1]["flags"], 0);
    let eth7 = &got[2];
    assert_eq!(eth7["keyword"], "eth7");
    assert_eq!(eth7["sequence"], 6);
    assert_eq!(eth7["flags"], F_SNAPSHOT);
    assert_eq!(eth7["cleared"], false);
    let host1 = &got[3];
    assert_eq!(host1["keyword"], "host1");
    assert_eq!(host1["flags"], F_SNAPSHOT);
    assert_eq!(host1["cleared"], true);
    assert_eq!(host1["event_code"], 0x0002_0002);
    assert!(sim.send("info").contains("snapshots=2"));

    let stats = d.stop();
    let s = source_stats(&stats, "expdrv-device");
    assert_eq!(s["delivered"], 6);
    assert_eq!(s["lost"], 2);
}

/// The scenario both runs play: a flood cycling over these records, then a
/// marker. At the end eth0, eth1 and eth3 are faulty, eth2 and host1 clear.
const FLOOD: &str = "flood 20000 fault:NIC.eth0 fault:NIC.eth1 clear:NIC.eth0 fault:FC.host1 \
                     fault:NIC.eth2 clear:NIC.eth1 clear:FC.host1 fault:NIC.eth3 clear:NIC.eth2";

const MONITORS: &str = r#"
[[monitor]]
name = "eth0"
category = "NIC"
keyword = "eth0"
auto_clear = true
[[monitor]]
name = "eth1"
category = "NIC"
keyword = "eth1"
auto_clear = true
[[monitor]]
name = "eth2"
category = "NIC"
keyword = "eth2"
auto_clear = true
[[monitor]]
name = "eth3"
category = "NIC"
keyword = "eth3"
auto_clear = true
[[monitor]]
name = "host1"
category = "FC"
keyword = "host1"
auto_clear = true
[[monitor]]
name = "eth3-latched"
category = "NIC"
keyword = "eth3"
[[monitor]]
name = "marker"
category = "HA/SS"
keyword = "marker"
auto_clear = true
"#;

#[derive(Debug, Default)]
struct Run {
    states: Vec<(String, MonitorState)>,
    lost: Vec<(u64, u64, LostReason)>,
    snapshots_after_loss: u64,
    /// `EXPDRV_IOC_SNAPSHOT` requests the simulated driver served.
    resyncs: u64,
    /// Records the simulated driver dropped from the reader's queue.
    device_dropped: u64,
    counters: faultbridge::SourceSnapshot,
}

/// Plays the scenario against a fresh simulator and bridge.
fn play(sim_queue: &str, recv_buffer: usize) -> Run {
    let mut sim = SimDevice::start(&["--queue", sim_queue]);
    let cfg = Config::parse(
        &format!(
            "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\ndevice = \"{}\"\nrecv_buffer = {recv_buffer}\nresync_interval = \"100ms\"\n{MONITORS}",
            sim.device.display()
        ),
        Path::new("kernel_chardev.toml"),
    )
    .unwrap();
    let mut bridge = Bridge::open(&cfg).unwrap();
    let sub = bridge
        .subscribe(SubscribeOptions::new("test").capacity(1 << 20))
        .unwrap();
    bridge.run().unwrap();
    let flood = sim.send(FLOOD);
    assert_eq!(flood, "1 20000");
    assert_eq!(sim.send("fault HA/SS.marker"), "20001 20001");
    let mut run = Run::default();
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_timeout(left) {
            Ok(Event::Fault(f)) => {
                if !run.lost.is_empty() && f.flags() & F_SNAPSHOT != 0 {
                    run.snapshots_after_loss += 1;
                }
                if f.keyword() == "marker" {
                    break;
                }
            }
            Ok(Event::Lost(l)) => {
                assert_eq!(l.source, Source::ExpdrvDevice);
                run.lost.push((l.first_sequence, l.last_sequence, l.reason));
            }
            Err(e) => panic!(
                "the marker never arrived: {e:?}; lost so far {:?}",
                run.lost
            ),
        }
    }
    // A resync still waiting for its turn (at most resync_interval).
    std::thread::sleep(Duration::from_millis(500));
    while let Some(ev) = sub.try_recv() {
        match ev {
            Event::Fault(f) if f.flags() & F_SNAPSHOT != 0 && !run.lost.is_empty() => {
                run.snapshots_after_loss += 1
            }
            Event::Lost(l) => run.lost.push((l.first_sequence, l.last_sequence, l.reason)),
            _ => {}
        }
    }
    let info = sim.send("info");
    let field = |name: &str| -> u64 {
        info.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .unwrap()
            .parse()
            .unwrap()
    };
    run.resyncs = field("snapshots");
    run.device_dropped = field("dropped");
    let monitors = bridge.monitors();
    run.states = monitors
        .monitors
        .iter()
        .map(|m| (m.config.name.clone(), m.state()))
        .collect();
    run.counters = bridge.shutdown().source(Source::ExpdrvDevice);
    run
}

#[test]
fn an_overrun_ends_in_lost_and_resync_and_the_monitors_end_as_without_loss() {
    private_netns();
    // Without loss: a deep device queue and a large socket buffer.
    let clean = play("1000000", 64 << 20);
    assert!(
        clean.lost.is_empty(),
        "the reference run lost records: {:?}",
        clean.lost
    );
    assert_eq!(clean.counters.lost, 0);
    // The start-up snapshot only.
    assert_eq!((clean.resyncs, clean.device_dropped), (1, 0));
    use MonitorState::{Error, Normal};
    let expected = [
        ("eth0", Error),
        ("eth1", Error),
        ("eth2", Normal),
        ("eth3", Error),
        ("host1", Normal),
        ("eth3-latched", Error),
        ("marker", Error),
    ];
    let states = |r: &Run| {
        r.states
            .iter()
            .map(|(n, s)| (n.clone(), *s))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        states(&clean),
        expected.map(|(n, s)| (n.to_string(), s)).to_vec()
    );

    // With loss: a 16-record device queue and the smallest socket buffer.
    // The simulated driver queues the flood 32 records at a time under its
    // lock, so every batch overruns the reader's queue however fast the
    // bridge reads (on a loaded machine as on an idle one).
    // When the bridge happens to keep up with a whole flood (the device's
    // copies fill what netlink dropped), the run is played again: the loss
    // is this test's precondition, not what it checks.
    let mut lossy = play("16", 4096);
    for _ in 0..4 {
        if !lossy.lost.is_empty() {
            break;
        }
        lossy = play("16", 4096);
    }
    assert!(
        !lossy.lost.is_empty(),
        "no loss was forced in five runs: {:?}",
        lossy.counters
    );
    assert!(lossy.counters.lost > 0);
    assert!(lossy.counters.overruns > 0, "{:?}", lossy.counters);
    assert!(
        lossy.lost.iter().any(|l| l.2 == LostReason::Overrun),
        "{:?}",
        lossy.lost
    );
    for &(first, last, _) in &lossy.lost {
        assert!(first <= last && last <= 20001, "{first}..={last}");
    }
    assert!(
        lossy.device_dropped > 0,
        "the device queue never overflowed"
    );
    // Resynchronised after the loss, and rate-limited: far fewer resyncs
    // than gaps.
    assert!(lossy.resyncs >= 2, "no resync after the loss");
    assert!(
        lossy.resyncs <= 1 + lossy.lost.len() as u64,
        "{} resyncs for {} gaps",
        lossy.resyncs,
        lossy.lost.len()
    );
    assert_eq!(states(&lossy), states(&clean));
    eprintln!(
        "lossy run: {} records lost in {} gaps ({} socket overruns, {} dropped by the device); \
         {} resyncs re-delivered {} records flagged SNAPSHOT; monitors as without loss",
        lossy.counters.lost,
        lossy.lost.len(),
        lossy.counters.overruns,
        lossy.device_dropped,
        lossy.resyncs,
        lossy.snapshots_after_loss
    );
}

#[test]
fn an_ha_am_clear_arrives_as_a_clear_while_both_transports_carry_it() {
    private_netns();
    // Live records on both the device and netlink; only netlink says which
    // are CLEARs (an HA/AM CLEAR keeps its fault's event code).
    let mut sim = SimDevice::start(&[]);
    let mut d = Daemon::start(&format!(
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\ndevice = \"{}\"\n",
        sim.device.display()
    ));
    // The start-up snapshot first (empty here), so that no replay mixes in.
    let deadline = Instant::now() + T;
    while !sim.send("info").contains("snapshots=1") {
        assert!(Instant::now() < deadline, "no start-up snapshot");
        std::thread::sleep(Duration::from_millis(10));
    }
    const PAIRS: u64 = 100;
    for i in 0..PAIRS {
        assert_eq!(
            sim.send("fault HA/AM.am0"),
            format!("{} {}", 2 * i + 1, 2 * i + 1)
        );
        assert_eq!(
            sim.send("clear HA/AM.am0"),
            format!("{} {}", 2 * i + 2, 2 * i + 2)
        );
    }
    for seq in 1..=2 * PAIRS {
        let v = d.next(T).unwrap();
        assert_eq!(v["type"], "fault", "{v}");
        assert_eq!(v["category"], "HA/AM", "{v}");
        assert_eq!(v["sequence"], seq, "{v}");
        assert_eq!(v["cleared"], seq % 2 == 0, "{v}");
    }
    let stats = d.stop();
    let s = source_stats(&stats, "expdrv-device");
    assert_eq!(s["delivered"], 2 * PAIRS);
    assert_eq!(s["lost"], 0);
    assert_eq!(s["untyped"], 0);
}

//! A live upgrade under steady traffic, through the real binaries (the
//! running build and a second one with another version string) on a
//! private bus: the driver simulator sends all along; a few hundred
//! monitors each trip exactly once at moments spread over the upgrade.
//! Afterwards every monitor's action ran exactly once, on the side that
//! was acting at its record's sequence; the history database holds every
//! record once; a D-Bus `watch` running across the hand-overs saw every
//! record or a `Lost` naming it; a Check script polling all along always
//! reached a daemon and saw the latch; the old side's in-process
//! subscriber saw exactly the records it acted on. Through Commit, and
//! with an abort from Split and from Merge (the old side acts again,
//! nothing lost or doubled).
#![allow(clippy::unwrap_used)]

use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge_ffi::sys::netlink::{NETLINK_USERSOCK, NetlinkSocket, group_mask};
use faultbridge_ffi::wire::fc::{fch, push_fc_event};
use faultbridge_ffi::wire::record::Category;
use faultbridge_tests::dbus::{BusPolicy, LineReader, client, daemon_config, private_bus};
use faultbridge_tests::simdev::SimDevice;
use faultbridge_tests::{Daemon, TempDir, alive, binary, private_netns, text};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MONITORS: usize = 200;
const T: Duration = Duration::from_secs(30);

fn next_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_faultbridge-next"))
}

fn upgrade(bus: &str, args: &[&str]) -> Value {
    let mut a = vec!["upgrade"];
    a.extend_from_slice(args);
    a.push("--json");
    let o = client(bus, &a);
    assert!(o.status.success(), "upgrade {args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

fn at(s: &Value) -> (&str, &str) {
    (
        s["state"].as_str().unwrap(),
        s["operational"].as_str().unwrap(),
    )
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ends a process this test did not start directly (the Upgrade side is
/// detached in a session of its own).
struct Reaper(Option<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let p = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid.into()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Commit,
    AbortFromSplit,
    AbortFromMerge,
}

/// The simulator, sending on its own thread: per round a filler record
/// (no monitor matches it), the trip of the next monitor (until every
/// monitor has tripped, and never beyond the trips the test allows so far,
/// so each stage of the upgrade gets its share however slow the machine),
/// and an FC transport event (its own source and socket, handed over as
/// well); `tripped` counts the trips.
struct Sender {
    tripped: Arc<AtomicUsize>,
    allowed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// The last sequences sent: the driver's, and the FC events'.
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Sender {
    fn start(mut sim: Simulator, pace: Duration) -> Sender {
        let tripped = Arc::new(AtomicUsize::new(0));
        let allowed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s, allow) = (tripped.clone(), stop.clone(), allowed.clone());
        let fc = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
        fc.bind(0, 0).unwrap();
        let thread = std::thread::spawn(move || {
            let mut last = 0;
            let mut fc_num = 0u32;
            let mut i = 0;
            while i < MONITORS || !s.load(Ordering::Acquire) {
                last = sim.send(&FaultSpec::new(Category::Nic, "filler")).unwrap();
                fc_num += 1;
                let mut ev = Vec::new();
                push_fc_event(&mut ev, 3, fc_num, fch::LINKDOWN, 1_700_000_000, 0, &[0; 4]);
                fc.send_to_groups(group_mask(4), &ev).unwrap();
                if i < MONITORS && i < allow.load(Ordering::Acquire) {
                    last = sim
                        .send(&FaultSpec::new(Category::Nic, &format!("dev{i}")))
                        .unwrap();
                    i += 1;
                    t.store(i, Ordering::Release);
                }
                std::thread::sleep(pace);
            }
            (last, u64::from(fc_num))
        });
        Sender {
            tripped,
            allowed,
            stop,
            thread: Some(thread),
        }
    }

    /// Lets the first `n` monitors trip and waits until they have.
    fn wait_tripped(&self, n: usize) {
        self.allowed.fetch_max(n, Ordering::AcqRel);
        wait_until(&format!("{n} trips sent"), || {
            self.tripped.load(Ordering::Acquire) >= n
        });
    }

    /// Waits for every trip, stops, and returns the last sequences sent.
    fn finish(mut self) -> (u64, u64) {
        self.allowed.store(MONITORS, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn config(bus: &faultbridge_tests::dbus::PrivateBus, acted: &Path, db: &Path) -> String {
    let mut extra = format!(
        "[sources.fc]\nnetlink_protocol = 2\nnetlink_group = 4\n[history]\npath = \"{}\"\n",
        db.display()
    );
    for i in 0..MONITORS {
        extra.push_str(&format!(
            r#"
[[monitor]]
name = "mrw{i}"
category = "NIC"
keyword = "dev{i}"
adapter = "exec"
command = '''/bin/sh -c 'echo "$FAULTBRIDGE_MONITOR $FAULTBRIDGE_SEQUENCE $PPID" >> {acted}' '''
"#,
            acted = acted.display()
        ));
    }
    daemon_config(bus, &extra)
}

/// Sequences of `source` recorded in the history database, with how often.
fn history(db: &Path, source: &str) -> BTreeMap<u64, usize> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn
        .prepare("SELECT sequence FROM events WHERE kind = 'fault' AND source = ?1")
        .unwrap();
    let mut m = BTreeMap::new();
    for s in st.query_map([source], |r| r.get::<_, i64>(0)).unwrap() {
        *m.entry(s.unwrap() as u64).or_insert(0) += 1;
    }
    m
}

fn zero_loss(end: End) {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("upgrade-merge");
    let acted = dir.path().join("acted");
    let db = dir.path().join("history.db");
    let mut daemon = Daemon::start(&config(&bus, &acted, &db));
    let old_pid = daemon.child.id();
    let mut watch = std::process::Command::new(binary());
    watch.args(["watch", "--json", "--bus", &a]);
    let watch = LineReader::spawn(watch);
    let mut dbus_seen: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut dbus_lost: Vec<(String, u64, u64)> = Vec::new();
    let take =
        |v: &Value, seen: &mut BTreeSet<(String, u64)>, lost: &mut Vec<(String, u64, u64)>| {
            let src = v["source"].as_str().unwrap_or("").to_string();
            match v["type"].as_str() {
                Some("fault") => {
                    let s = v["sequence"].as_u64().unwrap();
                    assert!(
                        seen.insert((src.clone(), s)),
                        "D-Bus: {src} record #{s} twice"
                    );
                }
                Some("lost") => lost.push((
                    src,
                    v["first_sequence"].as_u64().unwrap(),
                    v["last_sequence"].as_u64().unwrap(),
                )),
                _ => {}
            }
        };
    // The watcher's match rules are in place once it has seen a record:
    // D-Bus coverage is checked from that one on.
    let mut sim = Simulator::new(2, 1).unwrap();
    let deadline = Instant::now() + T;
    while dbus_seen.is_empty() {
        assert!(
            Instant::now() < deadline,
            "watch saw nothing: {}",
            watch.stderr()
        );
        sim.send(&FaultSpec::new(Category::Nic, "warm-up")).unwrap();
        for v in watch.until_json(Duration::from_millis(200), |v| v["type"] == "fault") {
            take(&v, &mut dbus_seen, &mut dbus_lost);
        }
    }
    let dbus_first = dbus_seen.iter().next().unwrap().1;
    let sender = Sender::start(sim, Duration::from_millis(4));
    let next = next_binary();
    let mut reaper = Reaper(None);
    sender.wait_tripped(MONITORS / 5);
    // A Check script polling mrw0 (tripped already) all through the
    // upgrade: it never finds the daemon unreachable (exit 1), and once it
    // has seen the Error it never sees Normal again (the latch moves too).
    wait_until("mrw0's Error", || {
        client(&a, &["check", "mrw0"]).status.code() == Some(2)
    });
    let checking = Arc::new(AtomicBool::new(true));
    let checker = {
        let (a, on) = (a.clone(), checking.clone());
        std::thread::spawn(move || {
            let mut codes = Vec::new();
            while on.load(Ordering::Acquire) {
                let o = client(&a, &["check", "mrw0"]);
                codes.push((
                    o.status.code(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                ));
            }
            codes
        })
    };
    let s = upgrade(&a, &["split", "--new-binary", next.to_str().unwrap()]);
    assert_eq!(at(&s), ("Split", "Ready"), "{s}");
    let new_pid = s["peer"]["pid"].as_u64().unwrap() as u32;
    reaper.0 = Some(new_pid);
    sender.wait_tripped(2 * MONITORS / 5);
    match end {
        End::AbortFromSplit => {
            let s = upgrade(&a, &["abort"]);
            assert_eq!(at(&s), ("Abort", "Ready"), "{s}");
            wait_until("the Upgrade side to exit", || !alive(new_pid.into()));
        }
        End::Commit | End::AbortFromMerge => {
            let s = upgrade(&a, &["merge"]);
            assert_eq!(at(&s), ("Merge", "Ready"), "{s}");
            // The name moved: the Upgrade side answers, the old one is its peer.
            assert_eq!(s["side"], "Upgrade", "{s}");
            assert_eq!(s["pid"].as_u64(), Some(u64::from(new_pid)), "{s}");
            assert!(s["version"].as_str().unwrap().ends_with("+next"), "{s}");
            assert_eq!(s["peer"]["pid"].as_u64(), Some(u64::from(old_pid)), "{s}");
            // How long acting paused, and every step's time so far.
            assert!(s["acting_gap_ns"].as_u64().unwrap() > 0, "{s}");
            for step in [
                "PrepareSplit",
                "ExecuteSplit",
                "PrepareMerge",
                "ExecuteMerge",
            ] {
                assert!(
                    s["step_times_ns"][step].as_u64().unwrap() > 0,
                    "{step}: {s}"
                );
            }
            sender.wait_tripped(3 * MONITORS / 5);
            if end == End::Commit {
                let s = upgrade(&a, &["commit"]);
                assert_eq!(at(&s), ("Commit", "Ready"), "{s}");
                wait_until("the old side to exit", || {
                    daemon.child.try_wait().unwrap().is_some()
                });
            } else {
                let s = upgrade(&a, &["abort"]);
                assert_eq!(at(&s), ("Abort", "Ready"), "{s}");
                assert_eq!(s["side"], "Production", "{s}");
                wait_until("the Upgrade side to exit", || !alive(new_pid.into()));
            }
        }
    }
    let (last, fc_last) = sender.finish();
    checking.store(false, Ordering::Release);
    let codes = checker.join().unwrap();
    assert!(codes.len() >= 5, "{codes:?}");
    for (code, err) in &codes {
        assert_eq!(*code, Some(2), "check mrw0 during the upgrade: {err}");
    }
    let s = upgrade(&a, &["finish"]);
    assert_eq!(at(&s), ("Idle", "Ready"), "{s}");
    let acting_pid = if end == End::Commit { new_pid } else { old_pid };
    assert_eq!(s["pid"].as_u64(), Some(u64::from(acting_pid)), "{s}");

    // Every action exactly once, and by whom.
    let mut by_monitor: BTreeMap<String, Vec<(u64, u32)>> = BTreeMap::new();
    wait_until("every action", || {
        std::fs::read_to_string(&acted)
            .unwrap_or_default()
            .lines()
            .count()
            >= MONITORS
    });
    std::thread::sleep(Duration::from_millis(300));
    for l in std::fs::read_to_string(&acted).unwrap().lines() {
        let f: Vec<&str> = l.split(' ').collect();
        by_monitor
            .entry(f[0].to_string())
            .or_default()
            .push((f[1].parse().unwrap(), f[2].parse().unwrap()));
    }
    assert_eq!(by_monitor.len(), MONITORS, "{by_monitor:?}");
    for (m, runs) in &by_monitor {
        assert_eq!(runs.len(), 1, "{m} acted {runs:?}");
    }

    // History: every record once (the warm-up's included), of both sources.
    for (source, last) in [("expdrv", last), ("fc-transport", fc_last)] {
        wait_until("the history to hold every record", || {
            history(&db, source).len() as u64 >= last
        });
        let h = history(&db, source);
        let want: Vec<u64> = (1..=last).collect();
        assert_eq!(
            h.keys().copied().collect::<Vec<_>>(),
            want,
            "{source} history"
        );
        assert!(
            h.values().all(|&n| n == 1),
            "a {source} record recorded twice"
        );
    }

    // D-Bus: every record, or a Lost naming it.
    let ranges = [("expdrv", dbus_first, last), ("fc-transport", 1, fc_last)];
    let missing = |seen: &BTreeSet<(String, u64)>, lost: &[(String, u64, u64)]| {
        let mut m = Vec::new();
        for (src, from, to) in ranges {
            for s in from..=to {
                let told = seen.contains(&(src.to_string(), s))
                    || lost.iter().any(|(l, a, b)| l == src && *a <= s && s <= *b);
                if !told {
                    m.push((src, s));
                }
            }
        }
        m
    };
    let deadline = Instant::now() + T;
    while !missing(&dbus_seen, &dbus_lost).is_empty() && Instant::now() < deadline {
        for v in watch.until_json(Duration::from_millis(200), |_| false) {
            take(&v, &mut dbus_seen, &mut dbus_lost);
        }
    }
    let m = missing(&dbus_seen, &dbus_lost);
    assert!(
        m.is_empty(),
        "D-Bus watch missed {m:?} without a Lost (lost: {dbus_lost:?})\nwatch stderr: {}",
        watch.stderr()
    );

    // The in-process subscriber (`run --print json`): the side that acts
    // prints, on the output the old side handed on, so the one stream holds
    // every record once whichever side published it, never a loss.
    let deadline = Instant::now() + T;
    let mut printed_seen: BTreeMap<u64, usize> = BTreeMap::new();
    while (printed_seen.len() as u64) < last && Instant::now() < deadline {
        for v in daemon.until(Duration::from_millis(200), |_| false) {
            assert_ne!(
                v["type"], "lost",
                "an in-process subscriber lost records: {v}"
            );
            if v["type"] == "fault" && v["source"] == "expdrv" {
                *printed_seen
                    .entry(v["sequence"].as_u64().unwrap())
                    .or_default() += 1;
            }
        }
    }
    let want: Vec<u64> = (1..=last).collect();
    let got: Vec<u64> = printed_seen.keys().copied().collect();
    assert_eq!(got, want, "records printed across the upgrade");
    assert!(
        printed_seen.values().all(|&n| n == 1),
        "a record printed twice across the upgrade"
    );
    for (m, runs) in &by_monitor {
        let (_, pid) = runs[0];
        assert!(pid == old_pid || pid == new_pid, "{m}: acted by pid {pid}");
    }
    let new_acts = by_monitor.values().filter(|r| r[0].1 == new_pid).count();
    match end {
        End::AbortFromSplit => assert_eq!(new_acts, 0, "the Upgrade side acted before Merge"),
        // Trips were sent before and after the hand-over: both sides acted.
        _ => assert!(
            new_acts > 0 && new_acts < MONITORS,
            "new side acted {new_acts} times"
        ),
    }
    if end == End::Commit {
        // The old side acted on a prefix, the new one on the rest.
        let old_max = by_monitor
            .values()
            .filter(|r| r[0].1 == old_pid)
            .map(|r| r[0].0)
            .max()
            .unwrap_or(0);
        for runs in by_monitor.values() {
            let (seq, pid) = runs[0];
            assert_eq!(
                pid == old_pid,
                seq <= old_max,
                "#{seq} acted by {pid}, boundary {old_max}"
            );
        }
    } else {
        drop(reaper);
        let _ = daemon.stop();
    }
}

#[test]
fn zero_loss_through_split_merge_and_commit() {
    zero_loss(End::Commit);
}

#[test]
fn zero_loss_with_abort_from_split() {
    zero_loss(End::AbortFromSplit);
}

#[test]
fn zero_loss_with_abort_from_merge() {
    zero_loss(End::AbortFromMerge);
}

/// The exit-program adapter's restart count goes with acting: a count of
/// 1 made on the old side is where the new side's next call starts.
#[test]
fn exit_program_restart_counts_move_with_acting() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("upgrade-restarts");
    let db = dir.path().join("history.db");
    let calls = dir.path().join("calls");
    // The first call fails asking for a restart (2), every later one succeeds.
    let program = dir.write(
        "exit-program",
        &format!(
            "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0)\necho $((n + 1)) > {c}\n[ \"$n\" = 0 ] && exit 2\nexit 0\n",
            c = calls.display()
        ),
    );
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let extra = format!(
        r#"
[history]
path = "{db}"

[[monitor]]
name = "ep"
category = "NIC"
keyword = "eth5"
adapter = "exit-program"
recovery_action = "restart"
restart_limit = 5
auto_clear = true
command = "{program}"
"#,
        db = db.display(),
        program = program.display()
    );
    let _daemon = Daemon::start(&daemon_config(&bus, &extra));
    let mut sim = Simulator::new(2, 1).unwrap();
    let calls_made = || {
        std::fs::read_to_string(&calls)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    sim.send(&FaultSpec::new(Category::Nic, "eth5")).unwrap();
    wait_until("the restart and its retry", || calls_made() == 2);
    let mut clear = FaultSpec::new(Category::Nic, "eth5");
    clear.kind = faultbridge_bus::FaultKind::Clear;
    sim.send(&clear).unwrap();
    let s = upgrade(
        &a,
        &["split", "--new-binary", next_binary().to_str().unwrap()],
    );
    let mut reaper = Reaper(None);
    reaper.0 = s["peer"]["pid"].as_u64().map(|p| p as u32);
    let s = upgrade(&a, &["merge"]);
    assert_eq!(
        (at(&s), s["side"].as_str()),
        (("Merge", "Ready"), Some("Upgrade")),
        "{s}"
    );
    sim.send(&FaultSpec::new(Category::Nic, "eth5")).unwrap();
    wait_until("the new side's call", || calls_made() == 3);
    // Each call's restart count, as the activity log recorded them.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut seen = Vec::new();
    wait_until("three calls in the history", || {
        let mut st = conn
            .prepare(
                "SELECT message FROM activity WHERE monitor = 'ep' AND message LIKE '%restarts done%' ORDER BY id",
            )
            .unwrap();
        seen = st
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        seen.len() >= 3
    });
    let counts: Vec<&str> = seen
        .iter()
        .map(|m| {
            m.split("restarts done ")
                .nth(1)
                .unwrap_or("")
                .split('/')
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(counts, ["0", "1", "1"], "{seen:#?}");
    let s = upgrade(&a, &["abort"]);
    assert_eq!(at(&s), ("Abort", "Ready"), "{s}");
    // The new side exits by itself.
    let pid = reaper.0.unwrap();
    wait_until("the Upgrade side to exit", || !alive(pid.into()));
}

fn ip(args: &str) {
    let st = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args} failed");
}

/// rtnetlink goes with acting too, with the interfaces as the old side
/// knew them: a veth peer is set down and up all through split, merge and
/// commit, and the history holds the source's records with no sequence
/// missing or doubled, and each interface's downs and ups alternating
/// (a carrier change lost or reported twice would break that).
#[test]
fn rtnetlink_carrier_changes_move_with_acting() {
    private_netns();
    ip("link add fbu0 type veth peer name fbu1");
    ip("link set fbu0 up");
    ip("link set fbu1 up");
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("upgrade-rtnl");
    let db = dir.path().join("history.db");
    let mut daemon = Daemon::start(&daemon_config(
        &bus,
        &format!(
            "[sources.rtnetlink]\nenabled = true\n[history]\npath = \"{}\"\n",
            db.display()
        ),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicUsize::new(0));
    let (s2, f2) = (stop.clone(), flips.clone());
    let toggler = std::thread::spawn(move || {
        let mut up = true;
        while !s2.load(Ordering::Acquire) {
            up = !up;
            ip(&format!("link set fbu1 {}", if up { "up" } else { "down" }));
            f2.fetch_add(1, Ordering::Release);
            std::thread::sleep(Duration::from_millis(15));
        }
        if !up {
            ip("link set fbu1 up");
        }
    });
    let flips_at = |n: usize| wait_until("carrier changes", || flips.load(Ordering::Acquire) >= n);
    flips_at(10);
    let s = upgrade(
        &a,
        &["split", "--new-binary", next_binary().to_str().unwrap()],
    );
    let mut reaper = Reaper(None);
    let new_pid = s["peer"]["pid"].as_u64().unwrap() as u32;
    reaper.0 = Some(new_pid);
    flips_at(20);
    let s = upgrade(&a, &["merge"]);
    assert_eq!(
        (at(&s), s["side"].as_str()),
        (("Merge", "Ready"), Some("Upgrade")),
        "{s}"
    );
    assert!(
        s["activity"].to_string().contains("rtnetlink"),
        "the boundary names rtnetlink: {s}"
    );
    flips_at(30);
    let s = upgrade(&a, &["commit"]);
    assert_eq!(at(&s), ("Commit", "Ready"), "{s}");
    wait_until("the old side to exit", || {
        daemon.child.try_wait().unwrap().is_some()
    });
    flips_at(40);
    stop.store(true, Ordering::Release);
    toggler.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, u64, String, bool)> = conn
        .prepare(
            "SELECT kind, sequence, keyword, kind = 'clear' FROM events WHERE source = 'rtnetlink' ORDER BY sequence",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.iter().all(|r| r.0 != "lost"), "{rows:#?}");
    let seqs: Vec<u64> = rows.iter().map(|r| r.1).collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want, "rtnetlink sequences: {rows:#?}");
    for ifname in ["fbu0", "fbu1"] {
        let states: Vec<bool> = rows.iter().filter(|r| r.2 == ifname).map(|r| r.3).collect();
        assert!(states.len() >= 20, "{ifname}: {states:?}");
        for w in states.windows(2) {
            assert_ne!(w[0], w[1], "{ifname}: a change lost or doubled: {rows:#?}");
        }
    }
    // The new side ends at the reaper.
    let _ = daemon.stderr();
}

/// The driver's char device goes with acting too: the old side hands over
/// its open device (the same open file, so the driver's queue for it goes
/// on), its netlink socket, the cursor and the faults held active. Records
/// flow through the device all along split, merge and commit; the history
/// holds every one of them once, none lost, and the new side reads the
/// device after the old one has gone.
#[test]
fn char_device_records_move_with_acting() {
    private_netns();
    let bus = private_bus(BusPolicy::Open);
    let a = bus.address().to_string();
    let dir = TempDir::new("upgrade-dev");
    let db = dir.path().join("history.db");
    let sim = SimDevice::start(&[]);
    let device = sim.device.clone();
    let mut daemon = Daemon::start(&format!(
        "bus = \"{a}\"\n[sources.expdrv]\naccept = \"root\"\ndevice = \"{}\"\n[history]\npath = \"{}\"\n",
        device.display(),
        db.display()
    ));
    let sim = Arc::new(std::sync::Mutex::new(sim));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (s2, n2, sim2) = (stop.clone(), sent.clone(), sim.clone());
    let sender = std::thread::spawn(move || {
        let mut i = 0u64;
        while !s2.load(Ordering::Acquire) {
            i += 1;
            let what = if i % 2 == 1 { "fault" } else { "clear" };
            sim2.lock()
                .unwrap()
                .send(&format!("{what} NIC.dev{}", (i / 2) % 7));
            n2.fetch_add(1, Ordering::Release);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let sent_at = |n: usize| wait_until("device records", || sent.load(Ordering::Acquire) >= n);
    sent_at(20);
    let s = upgrade(
        &a,
        &["split", "--new-binary", next_binary().to_str().unwrap()],
    );
    let mut reaper = Reaper(None);
    reaper.0 = Some(s["peer"]["pid"].as_u64().unwrap() as u32);
    sent_at(60);
    let s = upgrade(&a, &["merge"]);
    assert_eq!(
        (at(&s), s["side"].as_str()),
        (("Merge", "Ready"), Some("Upgrade")),
        "the device is handed over, not refused: {s}"
    );
    sent_at(100);
    let s = upgrade(&a, &["commit"]);
    assert_eq!(at(&s), ("Commit", "Ready"), "{s}");
    wait_until("the old side to exit", || {
        daemon.child.try_wait().unwrap().is_some()
    });
    sent_at(160);
    stop.store(true, Ordering::Release);
    sender.join().unwrap();
    let total = sent.load(Ordering::Acquire) as u64;
    // Every record sent reaches the history, once.
    let deadline = Instant::now() + T;
    let rows = loop {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows: Vec<(String, u64)> = conn
            .prepare(
                "SELECT kind, sequence FROM events WHERE source = 'expdrv-device' ORDER BY sequence, id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if rows.iter().filter(|r| r.0 != "lost").count() as u64 >= total
            || Instant::now() > deadline
        {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(rows.iter().all(|r| r.0 != "lost"), "{rows:?}");
    let seqs: Vec<u64> = rows.iter().map(|r| r.1).collect();
    let want: Vec<u64> = (1..=total).collect();
    assert_eq!(seqs, want, "device sequences (sent {total})");
    let _ = daemon.stderr();
}

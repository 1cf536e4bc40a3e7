//! The kernel NIC source, measured in one run:
//!
//! 1. Parse cost per `RTM_NEWLINK`: the captured veth messages of
//!    `faultbridge_ffi::wire::rtnl::fixtures` (1496 bytes, 50 attributes
//!    each, Linux 6.18), walked with `NlMsgIter` + `LinkMsg::parse` and the
//!    name, operstate, carrier and carrier-change count read, against the
//!    `netlink-packet-route` crate deserialising the same bytes into a
//!    `NetlinkMessage<RouteNetlinkMessage>` and reading the same four.
//! 2. Carrier-loss latency: a veth pair in a private network namespace;
//!    each toggle sets the peer down (then up) with one `RTM_NEWLINK`
//!    request, timestamped just before the request is sent, the same
//!    request `ip link set dev PEER down` makes. Two observers run from
//!    the start: the bridge's in-process subscriber (rtnetlink source
//!    watching the other end), and `ip -o monitor link`, whose output
//!    lines are timestamped as a reader thread receives them. Both are
//!    measured from the same t0; toggles are spaced more than a second
//!    apart (linkwatch's pace for devices without urgent events).
//!
//! Run as root: `cargo bench -p faultbridge --bench carrier`
//! (`FB_BENCH_TOGGLES=N` toggles, default 50; about 2.1 s each;
//! `FB_BENCH_PARSE_ONLY=1` for part 1 only).
#![allow(clippy::unwrap_used)]

use faultbridge::{Bridge, Config, Event, SubscribeOptions};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::sys::netlink::{NETLINK_ROUTE, NetlinkSocket};
use faultbridge_ffi::wire::nlmsg::NlMsgIter;
use faultbridge_ffi::wire::rtnl::fixtures::{NEWLINK_FB0A_CARRIER_DOWN, NEWLINK_FB0A_CARRIER_UP};
use faultbridge_ffi::wire::rtnl::{LinkMsg, RTM_NEWLINK, push_setlink_updown};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What both parsers must produce.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Seen {
    index: u32,
    name_len: usize,
    operstate: u8,
    carrier: u8,
    changes: u32,
}

#[inline(never)]
fn ours(datagram: &[u8]) -> Seen {
    let mut seen = Seen::default();
    for m in NlMsgIter::new(datagram) {
        if m.header.nlmsg_type != RTM_NEWLINK {
            continue;
        }
        if let Ok(l) = LinkMsg::parse(m.payload) {
            seen = Seen {
                index: l.index(),
                name_len: l.ifname.map_or(0, str::len),
                operstate: l.operstate.unwrap_or(0),
                carrier: u8::from(l.has_carrier()),
                changes: l.carrier_changes.unwrap_or(0),
            };
        }
    }
    seen
}

#[inline(never)]
fn theirs(datagram: &[u8]) -> Seen {
    let mut seen = Seen::default();
    let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(datagram) else {
        return seen;
    };
    if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = msg.payload {
        seen.index = l.header.index;
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => seen.name_len = n.len(),
                LinkAttribute::OperState(s) => seen.operstate = u8::from(*s),
                LinkAttribute::Carrier(c) => seen.carrier = *c,
                LinkAttribute::CarrierChanges(c) => seen.changes = *c,
                _ => {}
            }
        }
    }
    seen
}

/// ns per message over `iters` messages, best of 5 rounds.
fn time(f: fn(&[u8]) -> Seen, msgs: &[&[u8]], iters: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for i in 0..iters {
            black_box(f(black_box(msgs[i % msgs.len()])));
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iters as f64);
    }
    best
}

fn parse_cost() {
    let msgs: [&[u8]; 2] = [NEWLINK_FB0A_CARRIER_DOWN, NEWLINK_FB0A_CARRIER_UP];
    for m in msgs {
        assert_eq!(ours(m), theirs(m), "the parsers disagree");
        assert_ne!(ours(m).name_len, 0);
    }
    let ours_ns = time(ours, &msgs, 2_000_000);
    let theirs_ns = time(theirs, &msgs, 200_000);
    println!("## rtnetlink parse cost per RTM_NEWLINK (1496-byte captured veth messages)");
    println!();
    println!("| parser | ns/message |");
    println!("|---|---|");
    println!("| faultbridge `NlMsgIter` + `LinkMsg::parse` | {ours_ns:.1} |");
    println!("| `netlink-packet-route` 0.34 `NetlinkMessage::deserialize` | {theirs_ns:.1} |");
    println!();
    println!("ratio: {:.1}x faster (target >= 5x)", theirs_ns / ours_ns);
    println!();
}

fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args} failed");
}

fn ifindex(name: &str) -> i32 {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.split(':').next().unwrap().trim().parse().unwrap()
}

fn percentile(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// One observation: (when, link down?).
type Obs = (u64, bool);

fn wait_for(rx: &mpsc::Receiver<Obs>, down: bool, after: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((t, d)) if d == down && t >= after => return Some(t - after),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn carrier_latency(toggles: usize) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("the carrier benchmark needs root (a private network namespace)");
    ip("link add fbb0 type veth peer name fbb1");
    ip("link set fbb0 up");
    ip("link set fbb1 up");
    std::thread::sleep(Duration::from_millis(200));
    let peer = ifindex("fbb1");

    let cfg = Config::parse(
        "bus = \"none\"\n[sources.expdrv]\nenabled = false\n[sources.rtnetlink]\ninclude = [\"fbb0\"]\n",
        Path::new("carrier.toml"),
    )
    .unwrap();
    let bridge = Bridge::start(&cfg).unwrap();
    let sub = bridge.subscribe(SubscribeOptions::new("bench")).unwrap();
    let (fb_tx, fb_rx) = mpsc::channel::<Obs>();
    let fb = std::thread::spawn(move || {
        while let Ok(ev) = sub.recv() {
            let now = monotonic_ns();
            if let Event::Fault(f) = ev
                && fb_tx.send((now, !f.cleared())).is_err()
            {
                break;
            }
        }
    });

    let mut mon = Command::new("ip")
        .args(["-o", "monitor", "link"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run ip monitor");
    let (ip_tx, ip_rx) = mpsc::channel::<Obs>();
    let out = mon.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let now = monotonic_ns();
            if line.contains(": fbb0@") {
                let obs = if line.contains("NO-CARRIER") {
                    Some((now, true))
                } else if line.contains("LOWER_UP") {
                    Some((now, false))
                } else {
                    None
                };
                if obs.is_some_and(|o| ip_tx.send(o).is_err()) {
                    break;
                }
            }
            line.clear();
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    let sock = NetlinkSocket::open(NETLINK_ROUTE).unwrap();
    sock.bind(0, 0).unwrap();
    let mut req = Vec::with_capacity(64);
    let (mut fb_down, mut ip_down, mut fb_up, mut ip_up) = (vec![], vec![], vec![], vec![]);
    let spacing = Duration::from_millis(1050);
    for i in 0..toggles {
        for up in [false, true] {
            req.clear();
            push_setlink_updown(&mut req, i as u32 * 2 + u32::from(up) + 1, peer, up);
            let started = Instant::now();
            let t0 = monotonic_ns();
            sock.send_to(0, 0, &req).unwrap();
            let (f, m) = (wait_for(&fb_rx, !up, t0), wait_for(&ip_rx, !up, t0));
            match (f, m, up) {
                (Some(f), Some(m), false) => {
                    fb_down.push(f);
                    ip_down.push(m);
                }
                (Some(f), Some(m), true) => {
                    fb_up.push(f);
                    ip_up.push(m);
                }
                other => eprintln!("toggle {i}: an observer missed it: {other:?}"),
            }
            // Drain the kernel's ACK.
            let mut ack = [0u8; 512];
            let _ = sock.recv(&mut ack);
            std::thread::sleep(spacing.saturating_sub(started.elapsed()));
        }
    }
    let _ = mon.kill();
    let _ = mon.wait();
    drop(bridge);
    let _ = fb.join();

    println!(
        "## veth carrier loss -> subscriber, {} toggles spaced {} ms",
        fb_down.len(),
        spacing.as_millis()
    );
    println!();
    println!("| observer | carrier loss p50 (us) | p99 (us) | carrier back p50 (us) | p99 (us) |");
    println!("|---|---|---|---|---|");
    println!(
        "| faultbridge in-process subscriber | {:.1} | {:.1} | {:.1} | {:.1} |",
        percentile(&mut fb_down, 0.5),
        percentile(&mut fb_down, 0.99),
        percentile(&mut fb_up, 0.5),
        percentile(&mut fb_up, 0.99)
    );
    println!(
        "| `ip -o monitor link` (line read from its stdout) | {:.1} | {:.1} | {:.1} | {:.1} |",
        percentile(&mut ip_down, 0.5),
        percentile(&mut ip_down, 0.99),
        percentile(&mut ip_up, 0.5),
        percentile(&mut ip_up, 0.99)
    );
    println!();
    println!(
        "ratio p50 faultbridge / ip monitor: {:.2} (target <= 1.5)",
        percentile(&mut fb_down, 0.5) / percentile(&mut ip_down, 0.5)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not run us.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    parse_cost();
    if std::env::var_os("FB_BENCH_PARSE_ONLY").is_some() {
        return;
    }
    let toggles = std::env::var("FB_BENCH_TOGGLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    carrier_latency(toggles);
}

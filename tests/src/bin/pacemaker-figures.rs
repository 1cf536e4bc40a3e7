//! ocf:heartbeat:ethmonitor and faultbridge side by side on a real
//! single-node Pacemaker cluster, for docs/performance.md:
//!
//! ```sh
//! cargo build --workspace --bins
//! ./target/debug/pacemaker-figures [DROPS_WITH_DEFAULTS [DROPS_FAST]]   # as root; 3 and 5 by default
//! ```
//!
//! One veth pair: `fb0` in this program's network namespace, its peer in a
//! namespace of its own that sends a datagram to `fb0` every 100 ms (so
//! ethmonitor's default checks, which want received packets, see a live
//! link). Both watch `fb0` at once: the `ocf:faultbridge:monitor` clone
//! with a faultbridge NIC monitor and the `pacemaker` adapter (attribute
//! `faultbridge-mrw1`), and an `ocf:heartbeat:ethmonitor` clone (attribute
//! `ethmonitor-fb0`); each attribute has an `ocf:pacemaker:Dummy` resource
//! with the location rule. The peer's link is set down, and four times are
//! taken from that moment: each attribute changing to 0 (read with
//! `attrd_updater -Q` every 5 ms, so within one query's time, printed, and
//! those 5 ms) and
//! each resource stopped (its state file gone, looked at every
//! millisecond). Then the link comes back, the faultbridge monitor is Reset,
//! and the program waits until everything runs again before the next drop.
//!
//! Two rounds, each on a fresh cluster: ethmonitor with its defaults
//! (monitor every 10 s, `repeat_count=5`, `repeat_interval=10`), then with
//! its fastest sensible settings (monitor every 1 s, `repeat_count=1`,
//! `link_status_only=true`).
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{BusPolicy, daemon_config, private_bus};
use faultbridge_tests::pacemaker::Cluster;
use faultbridge_tests::{Daemon, TempDir, faultbridge, private_netns, text};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PEER_ADDR: &str = "10.251.0.2";
const OUR_ADDR: &str = "10.251.0.1";

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(o.status.success(), "ip {args:?}: {}", text(&o));
}

/// The peer's network namespace and its sender, removed on drop.
struct Peer {
    name: String,
    sender: Child,
}

impl Peer {
    fn new() -> Peer {
        let name = format!("fbpeer-{}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["link", "add", "fb0", "type", "veth", "peer", "name", "fb1"]);
        ip(&["link", "set", "fb1", "netns", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{PEER_ADDR}/24"),
            "dev",
            "fb1",
        ]);
        ip(&["-n", &name, "link", "set", "fb1", "up"]);
        ip(&["addr", "add", &format!("{OUR_ADDR}/24"), "dev", "fb0"]);
        ip(&["link", "set", "fb0", "up"]);
        let sender = Command::new("ip")
            .args(["netns", "exec", &name, "bash", "-c"])
            .arg(format!(
                "while :; do echo x 2>/dev/null > /dev/udp/{OUR_ADDR}/9; sleep 0.1; done"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Peer { name, sender }
    }

    fn link(&self, state: &str) {
        ip(&["-n", &self.name, "link", "set", "fb1", state]);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.sender.kill();
        let _ = self.sender.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The ethmonitor settings of a round.
struct EthSettings {
    label: &'static str,
    interval: &'static str,
    timeout: &'static str,
    params: &'static [(&'static str, &'static str)],
}

const DEFAULTS: EthSettings = EthSettings {
    label: "ethmonitor defaults (interval 10 s, repeat_count 5, repeat_interval 10)",
    interval: "10s",
    timeout: "60s",
    params: &[],
};

const FAST: EthSettings = EthSettings {
    label: "ethmonitor fastest (interval 1 s, repeat_count 1, link_status_only)",
    interval: "1s",
    timeout: "20s",
    params: &[("repeat_count", "1"), ("link_status_only", "true")],
};

/// One carrier drop: ms to each attribute at 0 and to each resource stopped.
#[derive(Debug, Default, Clone, Copy)]
struct Drop4 {
    fb_attr: f64,
    fb_stop: f64,
    eth_attr: f64,
    eth_stop: f64,
}

fn attr(cluster_path: &str, name: &str) -> Option<String> {
    let o = Command::new("attrd_updater")
        .args(["-Q", "-n", name])
        .env("PATH", cluster_path)
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&o.stdout);
    let v = out.split("value=\"").nth(1)?;
    Some(v[..v.find('"')?].to_string())
}

/// Ms from `t0` until `attrd_updater -Q -n name` says `0`.
fn watch_attr(
    path: String,
    name: &'static str,
    t0: Instant,
    give_up: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<f64>> {
    std::thread::spawn(move || {
        while !give_up.load(Ordering::Relaxed) {
            if attr(&path, name).as_deref() == Some("0") {
                return Some(t0.elapsed().as_secs_f64() * 1e3);
            }
            // Leave the two CPUs to the cluster and the daemon between queries.
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    })
}

/// Ms from `t0` until `state` is gone.
fn watch_stop(
    state: PathBuf,
    t0: Instant,
    give_up: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<f64>> {
    std::thread::spawn(move || {
        while !give_up.load(Ordering::Relaxed) {
            if !state.exists() {
                return Some(t0.elapsed().as_secs_f64() * 1e3);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    })
}

fn wait(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn round(eth: &EthSettings, drops: usize, dir: &Path) -> (Vec<Drop4>, f64) {
    let peer = Peer::new();
    let bus = private_bus(BusPolicy::Open);
    let cluster = Cluster::start();
    let d = Daemon::start_with(
        &daemon_config(
            &bus,
            "[sources.rtnetlink]\nenabled = true\n[[monitor]]\nname = \"mrw1\"\ncategory = \"NIC\"\nkeyword = \"fb0\"\nadapter = \"pacemaker\"\n",
        ),
        &[("PATH", &cluster.path)],
    );
    let fb_state = dir.join("web-fb.state");
    let eth_state = dir.join("web-eth.state");
    let eth_params: String = eth
        .params
        .iter()
        .map(|(k, v)| format!(r#"<nvpair id="eth-fb0-{k}" name="{k}" value="{v}"/>"#))
        .collect();
    cluster.add_agent_clone("mrw1", bus.address(), "10s");
    cluster.create(
        "resources",
        &format!(
            r#"<clone id="eth-fb0-clone">
  <primitive id="eth-fb0" class="ocf" provider="heartbeat" type="ethmonitor">
    <instance_attributes id="eth-fb0-ia">
      <nvpair id="eth-fb0-interface" name="interface" value="fb0"/>{eth_params}
    </instance_attributes>
    <operations>
      <op id="eth-fb0-mon" name="monitor" interval="{}" timeout="{}"/>
      <op id="eth-fb0-start" name="start" interval="0" timeout="{}"/>
    </operations>
  </primitive>
</clone>"#,
            eth.interval, eth.timeout, eth.timeout
        ),
    );
    for (id, state, attribute) in [
        ("web-fb", &fb_state, "faultbridge-mrw1"),
        ("web-eth", &eth_state, "ethmonitor-fb0"),
    ] {
        cluster.add_dummy_following(id, state, attribute);
    }
    // One attrd_updater query: the resolution of the attribute times.
    let q = Instant::now();
    for _ in 0..20 {
        attr(&cluster.path, "faultbridge-mrw1");
    }
    let query_ms = q.elapsed().as_secs_f64() * 1e3 / 20.0;
    let mut got = Vec::new();
    for n in 0..drops {
        wait("everything runs", Duration::from_secs(180), || {
            fb_state.exists()
                && eth_state.exists()
                && attr(&cluster.path, "faultbridge-mrw1").as_deref() == Some("1")
                && attr(&cluster.path, "ethmonitor-fb0").as_deref() == Some("1")
        });
        // A drop at some point of ethmonitor's monitor cycle.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        std::thread::sleep(Duration::from_millis(1000 + u64::from(nanos % 3000)));
        let give_up = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let watchers = [
            watch_attr(
                cluster.path.clone(),
                "faultbridge-mrw1",
                t0,
                give_up.clone(),
            ),
            watch_stop(fb_state.clone(), t0, give_up.clone()),
            watch_attr(cluster.path.clone(), "ethmonitor-fb0", t0, give_up.clone()),
            watch_stop(eth_state.clone(), t0, give_up.clone()),
        ];
        peer.link("down");
        let timer = {
            let g = give_up.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(150);
                while !g.load(Ordering::Relaxed) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(100));
                }
                g.store(true, Ordering::Relaxed);
            })
        };
        let r: Vec<f64> = watchers
            .into_iter()
            .map(|w| w.join().unwrap().unwrap_or(f64::NAN))
            .collect();
        give_up.store(true, Ordering::Relaxed);
        timer.join().unwrap();
        let one = Drop4 {
            fb_attr: r[0],
            fb_stop: r[1],
            eth_attr: r[2],
            eth_stop: r[3],
        };
        eprintln!("drop {}: {one:?}", n + 1);
        got.push(one);
        peer.link("up");
        faultbridge(&["reset", "--bus", bus.address(), "mrw1"]);
    }
    drop(d);
    cluster.stop();
    drop(peer);
    (got, query_ms)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn fmt_ms(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else if x >= 1000.0 {
        format!("{:.1} s", x / 1e3)
    } else {
        format!("{x:.0} ms")
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers of drops"))
        .collect();
    let (n_defaults, n_fast) = (
        args.first().copied().unwrap_or(3),
        args.get(1).copied().unwrap_or(5),
    );
    private_netns();
    ip(&["link", "set", "lo", "up"]);
    let dir = TempDir::new("pacemaker-figures");
    println!(
        "| ethmonitor settings | drops | faultbridge: attribute | faultbridge: resource stopped | ethmonitor: attribute | ethmonitor: resource stopped | attrd_updater -Q |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (eth, n) in [(&DEFAULTS, n_defaults), (&FAST, n_fast)] {
        if n == 0 {
            continue;
        }
        let (drops, query_ms) = round(eth, n, dir.path());
        let col = |f: fn(&Drop4) -> f64| {
            let v: Vec<f64> = drops.iter().map(f).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            format!(
                "{} ({}–{})",
                fmt_ms(median(v.clone())),
                fmt_ms(lo),
                fmt_ms(hi)
            )
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} ms |",
            eth.label,
            drops.len(),
            col(|d| d.fb_attr),
            col(|d| d.fb_stop),
            col(|d| d.eth_attr),
            col(|d| d.eth_stop),
            query_ms
        );
    }
    println!("(median (min–max) from the carrier drop)");
}

//! The history writer never slows ingest: the same flood, in the same run,
//! with history off and with history on (SQLite file, WAL). For each, the
//! highest rate at which every record reached a subscriber with no loss,
//! and, with history on, whether every record is in the database.
//!
//! Run as root: `cargo bench -p faultbridge --bench history`
//! (`FB_BENCH_QUICK=1` for a short run).
#![allow(clippy::unwrap_used)]

mod common;

use faultbridge::history::HistoryDb;
use faultbridge::sim::{FaultSpec, Simulator};
use faultbridge::{Bridge, Config, Source, SubscribeOptions};
use faultbridge_ffi::wire::record::Category;
use std::time::{Duration, Instant};

struct Run {
    achieved: f64,
    delivered: u64,
    lost: u64,
    in_db: Option<u64>,
    drain: Duration,
}

fn run(count: u64, rate: u64, history: bool, group: u32) -> Run {
    let dir = std::env::temp_dir().join(format!("fb-bench-history-{}-{group}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("history.db");
    let mut text = format!(
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_group = {group}\nrecv_buffer = 67108864\n"
    );
    if history {
        text.push_str(&format!("[history]\npath = \"{}\"\n", db.display()));
    }
    let cfg = Config::parse(&text, std::path::Path::new("bench.toml")).unwrap();
    let bridge = Bridge::start(&cfg).unwrap();
    let sub = bridge
        .subscribe(SubscribeOptions::new("count").capacity(1 << 20))
        .unwrap();
    let counter = common::count_events(sub, count);
    let mut sim = Simulator::new(2, group).unwrap();
    let specs: Vec<FaultSpec> = (0..8)
        .map(|i| FaultSpec::new(Category::Nic, &format!("eth{i}")))
        .collect();
    let r = sim.flood(&specs, count, rate, 32).unwrap();
    let (delivered, lost) = counter.join().unwrap();
    let t = Instant::now();
    let stats = bridge.shutdown(); // drains and commits the history queue
    let drain = t.elapsed();
    let socket_lost = stats.source(Source::Expdrv).lost;
    let in_db = history.then(|| HistoryDb::open_read_only(&db).unwrap().count().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        achieved: r.records as f64 / r.elapsed.as_secs_f64(),
        delivered,
        lost: lost.max(socket_lost),
        in_db,
        drain,
    }
}

fn main() {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("history bench: cannot make a private network namespace ({e}); run as root");
        std::process::exit(1);
    }
    let quick = std::env::var_os("FB_BENCH_QUICK").is_some();
    let count = if quick { 200_000 } else { 1_000_000 };
    println!("history writer vs ingest ({count} records per run, 32 per datagram)");
    let mut best = [0.0f64; 2];
    let mut group = 10;
    for rate in [
        100_000u64, 200_000, 300_000, 400_000, 500_000, 750_000, 1_000_000,
    ] {
        for (i, history) in [false, true].into_iter().enumerate() {
            group += 1;
            let r = run(count, rate, history, group);
            let complete =
                r.lost == 0 && r.delivered == count && r.in_db.is_none_or(|n| n == count);
            println!(
                "  target {rate:>9}/s history {:<3}: sent at {:>9.0}/s, delivered {:>8}, lost {:>6}, in database {:>8}, final drain {:>6.0} ms{}",
                if history { "on" } else { "off" },
                r.achieved,
                r.delivered,
                r.lost,
                r.in_db.map_or("-".to_string(), |n| n.to_string()),
                r.drain.as_secs_f64() * 1e3,
                if complete { "  complete" } else { "" }
            );
            if complete {
                best[i] = best[i].max(r.achieved);
            }
        }
    }
    println!(
        "  highest complete rate: history off {:.0}/s, history on {:.0}/s ({:.0} %)",
        best[0],
        best[1],
        100.0 * best[1] / best[0].max(1.0)
    );
}

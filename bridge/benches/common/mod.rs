//! What several benches share.

use faultbridge::{Event, Subscription};
use std::thread::JoinHandle;
use std::time::Duration;

/// Counts what `sub` receives until `count` records are accounted for
/// (delivered, or reported lost) or nothing comes for 5 s: (delivered,
/// lost).
pub fn count_events(sub: Subscription, count: u64) -> JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut got, mut lost) = (0u64, 0u64);
        while got + lost < count {
            match sub.recv_timeout(Duration::from_secs(5)) {
                Ok(Event::Fault(_)) => got += 1,
                Ok(Event::Lost(l)) => lost += l.count,
                Err(_) => break,
            }
        }
        (got, lost)
    })
}

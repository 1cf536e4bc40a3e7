//! The signal pump: drains the service's bus subscription on a thread of its
//! own and turns faults into `Fault` signals, paced by a token bucket, and
//! hands them to a sender thread through a bounded queue: the in-flight
//! budget. The pump never waits for the bus: while the socket to it is
//! full, the budget fills and further faults are dropped, not queued.
//!
//! What does not fit the pace or the budget (or the subscription's queue)
//! is dropped and remembered per source as one pending range, which goes
//! out as a `Lost` signal before the next `Fault` of that source. After a
//! drop, faults of that source resume only once a quarter of the burst has
//! refilled, so a storm yields long runs of faults and few `Lost` signals
//! rather than one `Lost` per fault.

use super::counters::Counters;
use super::link::{Link, Missed};
use super::names::{INTERFACE, OBJECT_PATH};
use crate::event::{Event, Fault, Lost, LostReason, Source};
use crate::fanout::{RecvError, Subscription};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use zbus::Message;

/// Signals handed to the socket in one write at most.
const MAX_BATCH: usize = 64;
/// Signals waiting for the socket at most (built, not yet written).
pub(crate) const MAX_IN_FLIGHT: usize = 1024;
/// How often an idle pump looks at its stop flag.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// How often a pump looks whether the bus is back.
const DOWN_WAKE: Duration = Duration::from_millis(100);

/// Signals per second with a burst allowance; `rate == 0`: no limit.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_sec: f64::from(rate),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn unlimited(&self) -> bool {
        self.per_sec == 0.0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when at least `n` tokens are there.
    pub(crate) fn has(&mut self, n: f64, now: Instant) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill(now);
        self.tokens >= n
    }

    /// The level at which a source resumes after a drop.
    pub(crate) fn resume_level(&self) -> f64 {
        (self.burst / 4.0).max(1.0)
    }

    /// How long until `n` tokens are there.
    pub(crate) fn until(&mut self, n: f64, now: Instant) -> Duration {
        if self.unlimited() {
            return Duration::ZERO;
        }
        self.refill(now);
        if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) / self.per_sec)
        }
    }
}

/// Faults of one source that D-Bus subscribers have not been told of yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PendingLoss {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) count: u64,
}

impl PendingLoss {
    pub(crate) fn add(&mut self, first: u64, last: u64, count: u64) {
        if self.count == 0 {
            self.first = first;
            self.last = last;
        } else {
            self.first = self.first.min(first);
            self.last = self.last.max(last);
        }
        self.count += count;
    }
}

/// A `Fault` signal carrying `f`.
pub(crate) fn fault_message(f: &Fault) -> zbus::Result<Message> {
    Message::signal(OBJECT_PATH, INTERFACE, "Fault").build(&(
        f.source().name(),
        f.category().name(),
        f.keyword(),
        f.severity().name(),
        f.cleared(),
        f.event_code(),
        f.sequence(),
        f.timestamp_ns(),
        f.detail(),
    ))
}

/// A `Lost` signal for `source`.
pub(crate) fn lost_message(source: Source, p: &PendingLoss) -> zbus::Result<Message> {
    Message::signal(OBJECT_PATH, INTERFACE, "Lost").build(&(source.name(), p.first, p.last))
}

/// What a queued signal counts for once written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    Fault,
    Lost,
}

/// A signal waiting for the socket, what it counts for, and the faults it
/// tells of (missed, to be told again as `Lost`, if it cannot be written).
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) msg: Message,
    pub(crate) out: Out,
    pub(crate) span: Missed,
}

/// The bounded queue between the pump and the sender.
pub(crate) fn in_flight() -> (Sender<Queued>, Receiver<Queued>) {
    crossbeam_channel::bounded(MAX_IN_FLIGHT)
}

pub(crate) struct Pump {
    sub: Subscription,
    out: Sender<Queued>,
    counters: Arc<Counters>,
    bucket: TokenBucket,
    stop: Arc<AtomicBool>,
    pending: [PendingLoss; Source::COUNT],
    warned: bool,
    link: Arc<Link>,
}

impl Pump {
    pub(crate) fn new(
        sub: Subscription,
        out: Sender<Queued>,
        counters: Arc<Counters>,
        bucket: TokenBucket,
        stop: Arc<AtomicBool>,
        link: Arc<Link>,
    ) -> Pump {
        Pump {
            sub,
            out,
            counters,
            bucket,
            stop,
            pending: [PendingLoss::default(); Source::COUNT],
            warned: false,
            link,
        }
    }

    /// Takes back what the sender could not write.
    fn take_missed(&mut self) {
        for m in self.link.take_missed() {
            self.pending[m.source.index()].add(m.first, m.last, m.count);
        }
    }

    fn any_pending(&self) -> bool {
        self.pending.iter().any(|p| p.count > 0)
    }

    /// Runs until the bridge stops (the subscription closes) or the stop
    /// flag is seen; the sender finishes what is queued once this returns.
    pub(crate) fn run(mut self) {
        loop {
            // Held until the name is taken (a live upgrade's side that
            // acts before it owns the name): what is published waits.
            self.wait_unheld();
            self.take_missed();
            let wait = if !self.link.is_up() {
                // Nothing goes out while the bus is down; look again soon.
                DOWN_WAKE
            } else if self.any_pending() {
                let level = self.bucket.resume_level();
                self.bucket
                    .until(level, Instant::now())
                    .max(Duration::from_millis(1))
            } else {
                IDLE_WAKE
            };
            match self.sub.recv_timeout(wait) {
                Ok(ev) => {
                    // Held while it waited: this event waits in hand.
                    self.wait_unheld();
                    self.on_event(ev)
                }
                Err(RecvError::Timeout) => {}
                Err(RecvError::Closed) => {
                    // The bridge stopped: tell what is still pending, whatever the pace.
                    self.flush_losses(true);
                    return;
                }
            }
            while let Some(ev) = self.sub.try_recv() {
                self.on_event(ev);
            }
            self.flush_losses(false);
            self.counters
                .pump_pending
                .store(self.any_pending(), Ordering::Release);
            if self.stop.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Waits while the signals are held (not once stopping).
    fn wait_unheld(&self) {
        while self.counters.pump_held.load(Ordering::Acquire) && !self.stop.load(Ordering::Acquire)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Fault(f) => self.on_fault(&f),
            Event::Lost(l) => self.on_lost(&l),
        }
        if self.any_pending() {
            self.counters.pump_pending.store(true, Ordering::Release);
        }
        Counters::add(&self.counters.events_done, 1);
    }

    fn on_fault(&mut self, f: &Fault) {
        Counters::add(&self.counters.faults_in, 1);
        let s = f.source();
        if !self.link.is_up() {
            Counters::add(&self.counters.bus_down_drops, 1);
            self.pending[s.index()].add(f.sequence(), f.sequence(), 1);
            return;
        }
        let now = Instant::now();
        if self.pending[s.index()].count > 0 {
            // Resume only with room for a run of faults after the notice.
            if self.out.len() + 2 > MAX_IN_FLIGHT {
                self.drop_fault(f, true);
                return;
            }
            if !(self.bucket.has(self.bucket.resume_level(), now) && self.bucket.try_take(now)) {
                self.drop_fault(f, false);
                return;
            }
            if !self.queue_lost(s) {
                self.drop_fault(f, true);
                return;
            }
        }
        if !self.bucket.try_take(now) {
            self.drop_fault(f, false);
            return;
        }
        match fault_message(f) {
            Ok(msg) => match self.out.try_send(Queued {
                msg,
                out: Out::Fault,
                span: Missed {
                    source: s,
                    first: f.sequence(),
                    last: f.sequence(),
                    count: 1,
                },
            }) {
                Ok(()) => Counters::add(&self.counters.signals_queued, 1),
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.drop_fault(f, true);
                }
            },
            Err(e) => {
                Counters::add(&self.counters.send_errors, 1);
                self.warn("cannot build a Fault signal", &e);
                self.pending[s.index()].add(f.sequence(), f.sequence(), 1);
            }
        }
    }

    /// Drops `f` for D-Bus subscribers: the pace (or, with `backlog`, the
    /// in-flight budget) has no room for it.
    fn drop_fault(&mut self, f: &Fault, backlog: bool) {
        let c = if backlog {
            &self.counters.backlog_drops
        } else {
            &self.counters.rate_drops
        };
        Counters::add(c, 1);
        self.pending[f.source().index()].add(f.sequence(), f.sequence(), 1);
    }

    fn on_lost(&mut self, l: &Lost) {
        match l.reason {
            LostReason::QueueFull => Counters::add(&self.counters.queue_drops, l.count),
            _ => Counters::add(&self.counters.source_losses, l.count),
        }
        self.pending[l.source.index()].add(l.first_sequence, l.last_sequence, l.count);
    }

    /// Queues the pending `Lost` of `s`; false (and still pending) when the
    /// budget is full.
    fn queue_lost(&mut self, s: Source) -> bool {
        let p = self.pending[s.index()];
        match lost_message(s, &p) {
            Ok(msg) => match self.out.try_send(Queued {
                msg,
                out: Out::Lost,
                span: span(s, &p),
            }) {
                Ok(()) => {
                    Counters::add(&self.counters.signals_queued, 1);
                    self.pending[s.index()] = PendingLoss::default();
                    true
                }
                Err(_) => false,
            },
            Err(e) => {
                Counters::add(&self.counters.send_errors, 1);
                self.warn("cannot build a Lost signal", &e);
                self.pending[s.index()] = PendingLoss::default();
                true
            }
        }
    }

    /// Queues the pending `Lost` signals once the pace has refilled to the
    /// resume level, so a storm that pauses for a moment does not turn into
    /// a `Lost` per pause. With `force` (the bridge stopped) all of them,
    /// waiting for room.
    fn flush_losses(&mut self, force: bool) {
        let now = Instant::now();
        let level = self.bucket.resume_level();
        for s in Source::ALL {
            let p = self.pending[s.index()];
            if p.count == 0 {
                continue;
            }
            if force {
                if let Ok(msg) = lost_message(s, &p) {
                    let _ = self.out.send(Queued {
                        msg,
                        out: Out::Lost,
                        span: span(s, &p),
                    });
                }
                self.pending[s.index()] = PendingLoss::default();
            } else if !self.link.is_up() {
                // Told once the bus is back.
            } else if self.bucket.has(level, now) && self.bucket.try_take(now) {
                self.queue_lost(s);
            }
        }
    }

    fn warn(&mut self, what: &str, e: &zbus::Error) {
        if !self.warned {
            self.warned = true;
            eprintln!("faultbridge: D-Bus: {what}: {e} (counted as send_errors from now on)");
        }
    }
}

/// The faults a pending loss tells of.
fn span(source: Source, p: &PendingLoss) -> Missed {
    Missed {
        source,
        first: p.first,
        last: p.last,
        count: p.count,
    }
}

/// Writes queued signals to the bus, several per write when they pile up,
/// until the pump is gone and the queue is empty. What cannot be written
/// (the bus is down, the write failed) goes back to the pump as missed,
/// to be told as `Lost`.
pub(crate) fn run_sender(link: &Link, rx: Receiver<Queued>, counters: Arc<Counters>) {
    let mut batch: Vec<Message> = Vec::with_capacity(MAX_BATCH);
    let mut spans: Vec<Missed> = Vec::with_capacity(MAX_BATCH);
    let mut lost = 0u64;
    let mut warned = false;
    while let Ok(q) = rx.recv() {
        let mut next = Some(q);
        while let Some(q) = next.take() {
            batch.push(q.msg);
            spans.push(q.span);
            lost += u64::from(q.out == Out::Lost);
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let r = match link.current() {
            Some(conn) => zbus::block_on(conn.send_all(&batch)),
            None => Err(zbus::Error::InputOutput(Arc::new(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the bus is down",
            )))),
        };
        match r {
            Ok(()) => {
                Counters::add(&counters.lost_signals, lost);
                Counters::add(&counters.fault_signals, batch.len() as u64 - lost);
            }
            Err(e) => {
                Counters::add(&counters.send_errors, batch.len() as u64);
                link.miss(spans.iter().copied());
                if !warned && link.is_up() {
                    warned = true;
                    eprintln!(
                        "faultbridge: D-Bus: cannot send signals: {e} (counted as send_errors from now on)"
                    );
                }
            }
        }
        Counters::add(&counters.signals_done, batch.len() as u64);
        batch.clear();
        spans.clear();
        lost = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_paces_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 10);
        b.last = t0;
        let took = (0..20).filter(|_| b.try_take(t0)).count();
        assert_eq!(took, 10);
        assert!(!b.try_take(t0));
        let wait = b.until(1.0, t0);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(1),
            "{wait:?}"
        );
        // 5 ms later, 5 tokens.
        let t1 = t0 + Duration::from_millis(5);
        let took = (0..20).filter(|_| b.try_take(t1)).count();
        assert_eq!(took, 5);
        // never more than the burst
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.has(10.0, t2));
        assert!(!b.has(10.5, t2));
        assert_eq!(b.resume_level(), 2.5);
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let mut b = TokenBucket::new(0, 1);
        let now = Instant::now();
        assert!((0..10_000).all(|_| b.try_take(now)));
        assert_eq!(b.until(5.0, now), Duration::ZERO);
    }

    #[test]
    fn pending_losses_merge_into_one_span() {
        let mut p = PendingLoss::default();
        p.add(10, 12, 3);
        p.add(5, 5, 1);
        p.add(20, 20, 1);
        assert_eq!(
            p,
            PendingLoss {
                first: 5,
                last: 20,
                count: 5
            }
        );
    }

    use crate::fanout::{Publisher, SubscribeOptions, bus};
    use faultbridge_ffi::wire::record::{Category, Record, RecordSpec};

    fn publish(p: &mut Publisher, seq: u64) {
        let mut v = Vec::new();
        RecordSpec {
            flags: 0,
            sequence: seq,
            timestamp_ns: seq,
            category: Category::Nic.code(),
            severity: 3,
            event_code: 0x0001_0001,
            device_index: 1,
            keyword: b"eth0",
            detail: b"",
            driver_id: 1,
        }
        .encode_into(&mut v);
        p.publish(
            Source::Expdrv,
            crate::FaultKind::Fault,
            &Record::parse(&v).unwrap(),
        );
    }

    /// What went out, decoded: `Ok(sequence)` for a Fault, `Err((first,
    /// last))` for a Lost.
    type Sent = Result<u64, (u64, u64)>;

    fn decode(m: &Message) -> Sent {
        match super::super::BusSignal::parse(m).unwrap() {
            super::super::BusSignal::Fault(f) => Ok(f.sequence),
            super::super::BusSignal::Lost(l) => Err((l.first_sequence, l.last_sequence)),
        }
    }

    /// Runs a pump over `n` faults published before it starts; with
    /// `stall`, the consumer starts draining only once the pump has taken
    /// in every fault (so the in-flight queue is full for the rest).
    fn pump_run(n: u64, rate: u32, burst: u32, stall: bool) -> (Vec<Sent>, crate::dbus::DbusStats) {
        let (mut p, h) = bus();
        let sub = h
            .subscribe(SubscribeOptions::new("dbus").capacity(n as usize + 1))
            .unwrap();
        p.adopt();
        for s in 1..=n {
            publish(&mut p, s);
        }
        drop(p);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = in_flight();
        let seen = counters.clone();
        let consumer = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while stall && seen.faults_in.load(Ordering::Acquire) < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            rx.iter().map(|q| decode(&q.msg)).collect::<Vec<_>>()
        });
        Pump::new(
            sub,
            tx,
            counters.clone(),
            TokenBucket::new(rate, burst),
            Arc::new(AtomicBool::new(false)),
            Arc::new(Link::new(None, counters.clone())),
        )
        .run();
        (consumer.join().unwrap(), counters.snapshot())
    }

    /// Every sequence 1..=n once, as a Fault or inside a Lost range, and
    /// each Lost before any later Fault.
    fn assert_covers(out: &[Sent], n: u64) {
        let mut next = 1;
        for o in out {
            match *o {
                Ok(s) => {
                    assert_eq!(s, next, "{out:?}");
                    next += 1;
                }
                Err((f, l)) => {
                    assert_eq!(f, next, "{out:?}");
                    next = l + 1;
                }
            }
        }
        assert_eq!(next, n + 1);
    }

    #[test]
    fn the_pace_drops_runs_and_tells_each_run_once_in_place() {
        let n = 10_000;
        let t0 = Instant::now();
        let (out, d) = pump_run(n, 1_000, 100, false);
        // What the bucket may have refilled meanwhile, however slow the machine.
        let refilled = (t0.elapsed().as_secs_f64() * 1_000.0) as u64 + 1;
        assert_covers(&out, n);
        let faults = out.iter().filter(|o| o.is_ok()).count() as u64;
        let losts = out.len() as u64 - faults;
        // The burst, then only what refilled; each resumption waits for a
        // quarter of the burst, so few Lost signals.
        assert!(
            (100..=100 + refilled).contains(&faults),
            "{faults} faults, {refilled} tokens refilled"
        );
        assert!(
            (1..=5 + refilled / 25).contains(&losts),
            "{losts} Lost signals: {out:?}"
        );
        assert_eq!(d.faults_in, n);
        assert_eq!(d.rate_drops + d.backlog_drops, n - faults);
        assert_eq!(d.queue_drops, 0);
    }

    #[test]
    fn a_full_budget_drops_instead_of_queueing_and_tells_when_room_returns() {
        let n = 5_000;
        let (out, d) = pump_run(n, 0, 1, true);
        assert_covers(&out, n);
        assert_eq!(d.rate_drops, 0);
        assert!(d.backlog_drops > 0, "{d:?}");
        assert!(out.len() <= MAX_IN_FLIGHT + 1, "{} queued", out.len());
    }

    #[test]
    fn signals_have_the_contract_signatures() {
        let mut v = Vec::new();
        RecordSpec {
            flags: 0,
            sequence: 7,
            timestamp_ns: 99,
            category: Category::Fc.code(),
            severity: 3,
            event_code: 0x0002_0003,
            device_index: 3,
            keyword: b"host3",
            detail: b"\x01\x02",
            driver_id: 1,
        }
        .encode_into(&mut v);
        let f = Fault::from_record(
            Source::Expdrv,
            crate::FaultKind::Fault,
            &Record::parse(&v).unwrap(),
        );
        let m = fault_message(&f).unwrap();
        // The body of a message is the signal's arguments in a row.
        assert_eq!(m.body().signature().to_string(), "(ssssbuttay)");
        let (src, cat, kw, sev, cleared, code, seq, ts, detail): (
            String,
            String,
            String,
            String,
            bool,
            u32,
            u64,
            u64,
            Vec<u8>,
        ) = m.body().deserialize().unwrap();
        assert_eq!(
            (src.as_str(), cat.as_str(), kw.as_str(), cleared),
            ("expdrv", "FC", "host3", false)
        );
        assert_eq!((code, seq, ts, detail), (0x0002_0003, 7, 99, vec![1, 2]));
        assert!(!sev.is_empty());
        let l = lost_message(
            Source::Notify,
            &PendingLoss {
                first: 3,
                last: 9,
                count: 7,
            },
        )
        .unwrap();
        assert_eq!(l.body().signature().to_string(), "(stt)");
    }
}

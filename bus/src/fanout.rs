//! The fan-out: one publisher, many subscribers, each with its own bounded
//! queue (crossbeam-channel, lock-free on the delivery path) and its own pool
//! of record buffers.
//!
//! Ordering of loss notices: a subscriber sees its [`Lost`] event exactly at
//! the place in its stream where records went missing. While a loss is
//! pending for a subscriber, nothing newer is queued before the notice.

use crate::event::{Event, Fault, FaultKind, FaultMeta, Filter, Lost, LostReason, Source};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded};
use crossbeam_utils::CachePadded;
use faultbridge_ffi::wire::record::Record;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buffers a subscriber's pool starts with room for (records are grown on
/// first use and keep their capacity).
const INITIAL_BUFFER_CAPACITY: usize = 256;

/// How to subscribe.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// A name for counters and status output.
    pub name: String,
    /// Queue depth: events the subscriber may have outstanding.
    pub capacity: usize,
    pub filter: Filter,
}

impl SubscribeOptions {
    pub fn new(name: impl Into<String>) -> Self {
        SubscribeOptions {
            name: name.into(),
            capacity: 4096,
            filter: Filter::all(),
        }
    }
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct PendingLoss {
    first: u64,
    last: u64,
    count: u64,
    reason: Option<LostReason>,
}

impl PendingLoss {
    fn add(&mut self, first: u64, last: u64, count: u64, reason: LostReason) {
        if self.count == 0 {
            self.first = first;
            self.last = last;
            self.reason = Some(reason);
        } else {
            self.first = self.first.min(first);
            self.last = self.last.max(last);
        }
        self.count += count;
    }
}

/// State shared by the publisher and one subscriber.
#[derive(Debug)]
struct Shared {
    name: String,
    /// Fast check before taking the lock.
    has_pending: AtomicBool,
    pending: Mutex<[PendingLoss; Source::COUNT]>,
    delivered: CachePadded<AtomicU64>,
    dropped: CachePadded<AtomicU64>,
}

impl Shared {
    /// The oldest pending loss notice. With `only_if_empty`, only while that
    /// queue is empty (checked under the lock): the subscriber takes a notice
    /// itself only once every older event has been received, so the notice
    /// is never ahead of faults queued before the loss.
    fn take_one(&self, only_if_empty: Option<&Receiver<Event>>) -> Option<Lost> {
        if !self.has_pending.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if only_if_empty.is_some_and(|rx| !rx.is_empty()) {
            return None;
        }
        let mut found = None;
        for (i, slot) in p.iter_mut().enumerate() {
            if slot.count > 0 {
                found = Some(Lost {
                    source: Source::ALL[i],
                    first_sequence: slot.first,
                    last_sequence: slot.last,
                    count: slot.count,
                    reason: slot.reason.unwrap_or(LostReason::QueueFull),
                });
                *slot = PendingLoss::default();
                break;
            }
        }
        let more = p.iter().any(|s| s.count > 0);
        self.has_pending
            .store(more, std::sync::atomic::Ordering::Release);
        found
    }

    fn add(&self, l: &Lost) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        p[l.source.index()].add(l.first_sequence, l.last_sequence, l.count, l.reason);
        self.has_pending
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The publisher's side of one subscriber.
#[derive(Debug)]
struct Slot {
    tx: Sender<Event>,
    free_rx: Receiver<Vec<u8>>,
    free_tx: Sender<Vec<u8>>,
    filter: Filter,
    shared: Arc<Shared>,
    closed: bool,
}

enum Offer {
    Sent,
    Dropped,
    Closed,
}

impl Slot {
    /// Moves pending loss notices into the queue. True when none is left
    /// pending (so newer events may follow).
    fn flush_pending(&self) -> Result<bool, ()> {
        while let Some(lost) = self.shared.take_one(None) {
            match self.tx.try_send(Event::Lost(lost)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.shared.add(&lost);
                    return Ok(false);
                }
                Err(TrySendError::Disconnected(_)) => return Err(()),
            }
        }
        Ok(true)
    }

    fn offer_fault(&self, meta: FaultMeta, bytes: &[u8]) -> Offer {
        match self.flush_pending() {
            Err(()) => return Offer::Closed,
            Ok(false) => return Offer::Dropped,
            Ok(true) => {}
        }
        // No free buffer means every buffer is queued or still held by the
        // subscriber: the queue is full.
        let Ok(mut buf) = self.free_rx.try_recv() else {
            return Offer::Dropped;
        };
        buf.clear();
        buf.extend_from_slice(bytes);
        let ev = Event::Fault(Fault {
            meta,
            buf,
            home: Some(self.free_tx.clone()),
        });
        match self.tx.try_send(ev) {
            Ok(()) => Offer::Sent,
            // The event's buffer returns to the pool as it is dropped here.
            Err(TrySendError::Full(_)) => Offer::Dropped,
            Err(TrySendError::Disconnected(_)) => Offer::Closed,
        }
    }

    fn offer_lost(&self, lost: Lost) -> Offer {
        match self.flush_pending() {
            Err(()) => return Offer::Closed,
            Ok(false) => {
                self.shared.add(&lost);
                return Offer::Dropped;
            }
            Ok(true) => {}
        }
        match self.tx.try_send(Event::Lost(lost)) {
            Ok(()) => Offer::Sent,
            Err(TrySendError::Full(_)) => {
                self.shared.add(&lost);
                Offer::Dropped
            }
            Err(TrySendError::Disconnected(_)) => Offer::Closed,
        }
    }
}

/// Counters of the publisher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Faults published.
    pub published: u64,
    /// Deliveries to subscriber queues (one per subscriber per fault).
    pub delivered: u64,
    /// Deliveries dropped because a subscriber's queue was full.
    pub dropped: u64,
    /// Live subscribers.
    pub subscribers: usize,
}

/// The ingest side: publishes to every subscriber without ever blocking.
#[derive(Debug)]
pub struct Publisher {
    slots: Vec<Slot>,
    joins: Receiver<Slot>,
    stats: PublisherStats,
}

/// A cloneable handle to subscribe from any thread.
#[derive(Clone, Debug)]
pub struct BusHandle {
    joins: Sender<Slot>,
}

/// Creates a bus: the publisher (for the ingest thread) and a handle to subscribe.
pub fn bus() -> (Publisher, BusHandle) {
    let (jtx, jrx) = crossbeam_channel::unbounded();
    (
        Publisher {
            slots: Vec::new(),
            joins: jrx,
            stats: PublisherStats::default(),
        },
        BusHandle { joins: jtx },
    )
}

impl BusHandle {
    /// Subscribes. The subscription sees every event published after the
    /// publisher next runs (it adopts new subscribers before each publish).
    /// Fails only when the publisher is gone.
    pub fn subscribe(&self, opts: SubscribeOptions) -> Option<Subscription> {
        let cap = opts.capacity.max(1);
        let (tx, rx) = bounded(cap);
        let (free_tx, free_rx) = bounded(cap);
        for _ in 0..cap {
            let _ = free_tx.try_send(Vec::with_capacity(INITIAL_BUFFER_CAPACITY));
        }
        let shared = Arc::new(Shared {
            name: opts.name,
            has_pending: AtomicBool::new(false),
            pending: Mutex::new([PendingLoss::default(); Source::COUNT]),
            delivered: CachePadded::new(AtomicU64::new(0)),
            dropped: CachePadded::new(AtomicU64::new(0)),
        });
        let slot = Slot {
            tx,
            free_rx,
            free_tx,
            filter: opts.filter,
            shared: shared.clone(),
            closed: false,
        };
        self.joins.send(slot).ok()?;
        Some(Subscription { rx, shared })
    }
}

impl Publisher {
    /// Adopts subscribers that joined since the last call. Cheap when none did.
    pub fn adopt(&mut self) {
        while let Ok(slot) = self.joins.try_recv() {
            self.slots.push(slot);
        }
    }

    /// Publishes a validated record to every subscriber whose filter matches.
    /// Never blocks and, once each subscriber's buffers have grown to the
    /// record size, never allocates.
    pub fn publish(&mut self, source: Source, kind: FaultKind, record: &Record<'_>) {
        self.adopt();
        self.stats.published += 1;
        let meta = FaultMeta::of(source, kind, record);
        let bytes = record.as_bytes();
        let mut any_closed = false;
        for slot in &mut self.slots {
            if !slot.filter.matches(record) {
                continue;
            }
            match slot.offer_fault(meta, bytes) {
                Offer::Sent => {
                    self.stats.delivered += 1;
                    slot.shared.delivered.fetch_add(1, Relaxed);
                }
                Offer::Dropped => {
                    self.stats.dropped += 1;
                    slot.shared.dropped.fetch_add(1, Relaxed);
                    slot.shared.add(&Lost {
                        source,
                        first_sequence: meta.sequence,
                        last_sequence: meta.sequence,
                        count: 1,
                        reason: LostReason::QueueFull,
                    });
                    // Room in the queue now (the subscriber drained it since,
                    // or holds every pooled buffer): the notice goes in at
                    // once, so a subscriber blocked in `recv` hears of the
                    // loss without waiting for another publish.
                    if !slot.tx.is_full() && slot.flush_pending().is_err() {
                        slot.closed = true;
                        any_closed = true;
                    }
                }
                Offer::Closed => {
                    slot.closed = true;
                    any_closed = true;
                }
            }
        }
        if any_closed {
            self.slots.retain(|s| !s.closed);
        }
    }

    /// Tells every subscriber that records of `source` were lost before they
    /// reached faultbridge (a sequence gap or a socket overrun).
    pub fn publish_lost(&mut self, lost: Lost) {
        self.adopt();
        let mut any_closed = false;
        for slot in &mut self.slots {
            if let Offer::Closed = slot.offer_lost(lost) {
                slot.closed = true;
                any_closed = true;
            }
        }
        if any_closed {
            self.slots.retain(|s| !s.closed);
        }
    }

    pub fn stats(&self) -> PublisherStats {
        PublisherStats {
            subscribers: self.slots.len(),
            ..self.stats
        }
    }

    /// Per-subscriber counters.
    pub fn subscriptions(&self) -> Vec<SubscriptionStats> {
        self.slots.iter().map(|s| stats_of(&s.shared)).collect()
    }
}

/// Counters of one subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionStats {
    pub name: String,
    pub delivered: u64,
    pub dropped: u64,
}

fn stats_of(s: &Shared) -> SubscriptionStats {
    SubscriptionStats {
        name: s.name.clone(),
        delivered: s.delivered.load(Relaxed),
        dropped: s.dropped.load(Relaxed),
    }
}

/// A subscriber's end. Events arrive in publish order; missed records are
/// announced by a [`Lost`] event where they went missing.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Event>,
    shared: Arc<Shared>,
}

/// Why a receive returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// The timeout elapsed.
    Timeout,
    /// The publisher is gone and everything was received.
    Closed,
}

impl Subscription {
    /// Waits for the next event.
    pub fn recv(&self) -> Result<Event, RecvError> {
        self.recv_deadline(None)
    }

    /// Waits at most `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvError> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    /// The next event if one is ready.
    pub fn try_recv(&self) -> Option<Event> {
        match self.rx.try_recv() {
            Ok(ev) => Some(ev),
            Err(_) => self.shared.take_one(Some(&self.rx)).map(Event::Lost),
        }
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<Event, RecvError> {
        match self.rx.try_recv() {
            Ok(ev) => return Ok(ev),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => {}
        }
        // The queue is empty: a loss recorded while it was full comes now.
        if let Some(lost) = self.shared.take_one(Some(&self.rx)) {
            return Ok(Event::Lost(lost));
        }
        // Nothing pending (or events arrived meanwhile): a loss recorded from
        // now on is put in the queue by the publisher as soon as there is
        // room, which wakes this receive.
        let got = match deadline {
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => self.rx.recv_deadline(d),
        };
        match got {
            Ok(ev) => Ok(ev),
            Err(RecvTimeoutError::Timeout) => Err(RecvError::Timeout),
            Err(RecvTimeoutError::Disconnected) => match self.shared.take_one(None) {
                Some(lost) => Ok(Event::Lost(lost)),
                None => Err(RecvError::Closed),
            },
        }
    }

    /// Events queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// This subscription's counters.
    pub fn stats(&self) -> SubscriptionStats {
        stats_of(&self.shared)
    }

    /// An iterator of events until the publisher is gone.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }
}

pub use RecvError as SubscriptionRecvError;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FaultKind;
    use faultbridge_ffi::wire::record::{Category, RecordSpec};

    fn rec(seq: u64, cat: Category, kw: &str) -> Vec<u8> {
        let mut v = Vec::new();
        RecordSpec {
            flags: 0,
            sequence: seq,
            timestamp_ns: seq * 10,
            category: cat.code(),
            severity: 2,
            event_code: 0x0001_0001,
            device_index: 1,
            keyword: kw.as_bytes(),
            detail: b"d",
            driver_id: 1,
        }
        .encode_into(&mut v);
        v
    }

    fn publish(p: &mut Publisher, seq: u64, cat: Category, kw: &str) {
        let b = rec(seq, cat, kw);
        p.publish(
            Source::Expdrv,
            FaultKind::Fault,
            &Record::parse(&b).unwrap(),
        );
    }

    #[test]
    fn every_subscriber_gets_every_fault_in_order() {
        let (mut p, h) = bus();
        let a = h.subscribe(SubscribeOptions::new("a")).unwrap();
        let b = h.subscribe(SubscribeOptions::new("b")).unwrap();
        for s in 1..=100 {
            publish(&mut p, s, Category::Nic, "eth0");
        }
        for sub in [&a, &b] {
            for s in 1..=100 {
                match sub.try_recv() {
                    Some(Event::Fault(f)) => {
                        assert_eq!(f.sequence(), s);
                        assert_eq!(f.keyword(), "eth0");
                        assert_eq!(f.detail(), b"d");
                    }
                    other => panic!("expected fault {s}, got {other:?}"),
                }
            }
            assert!(sub.try_recv().is_none());
        }
    }

    #[test]
    fn a_full_queue_drops_for_that_subscriber_only_and_reports_the_range_in_place() {
        let (mut p, h) = bus();
        let slow = h
            .subscribe(SubscribeOptions::new("slow").capacity(4))
            .unwrap();
        let fast = h
            .subscribe(SubscribeOptions::new("fast").capacity(64))
            .unwrap();
        for s in 1..=10 {
            publish(&mut p, s, Category::Nic, "eth0");
        }
        // fast got all ten
        for s in 1..=10 {
            assert!(matches!(fast.try_recv(), Some(Event::Fault(f)) if f.sequence() == s));
        }
        // slow: 1..=4 then the loss of 5..=10
        for s in 1..=4 {
            assert!(matches!(slow.try_recv(), Some(Event::Fault(f)) if f.sequence() == s));
        }
        match slow.try_recv() {
            Some(Event::Lost(l)) => {
                assert_eq!((l.first_sequence, l.last_sequence, l.count), (5, 10, 6));
                assert_eq!(l.reason, LostReason::QueueFull);
            }
            other => panic!("{other:?}"),
        }
        // after draining, delivery resumes after the notice
        publish(&mut p, 11, Category::Nic, "eth0");
        assert!(
            matches!(slow.recv_timeout(Duration::from_secs(1)), Ok(Event::Fault(f)) if f.sequence() == 11)
        );
        assert_eq!(slow.stats().dropped, 6);
        assert_eq!(slow.stats().delivered, 5);
    }

    #[test]
    fn the_notice_is_queued_before_newer_faults_when_room_returns() {
        let (mut p, h) = bus();
        let sub = h.subscribe(SubscribeOptions::new("s").capacity(2)).unwrap();
        for s in 1..=5 {
            publish(&mut p, s, Category::Fc, "host1");
        }
        // drain one, then publish: the notice goes in first, the new fault is
        // dropped (no room left), which extends the pending range
        assert!(matches!(sub.try_recv(), Some(Event::Fault(f)) if f.sequence() == 1));
        publish(&mut p, 6, Category::Fc, "host1");
        let mut seen = Vec::new();
        while let Some(ev) = sub.try_recv() {
            seen.push(ev);
        }
        let mut faults = 0;
        let mut lost = 0;
        for ev in &seen {
            match ev {
                Event::Fault(_) => faults += 1,
                Event::Lost(l) => lost += l.count,
            }
        }
        assert_eq!(faults + lost + 1, 6, "{seen:?}");
    }

    #[test]
    fn a_subscriber_blocked_while_holding_every_buffer_hears_of_the_loss_at_once() {
        let (mut p, h) = bus();
        let sub = h
            .subscribe(SubscribeOptions::new("holder").capacity(2))
            .unwrap();
        publish(&mut p, 1, Category::Nic, "eth0");
        publish(&mut p, 2, Category::Nic, "eth0");
        // keep both faults: every pooled buffer is held, the queue is empty
        let held = (sub.try_recv(), sub.try_recv());
        assert!(matches!(
            held,
            (Some(Event::Fault(_)), Some(Event::Fault(_)))
        ));
        let t = std::thread::spawn(move || {
            let got = sub.recv_timeout(Duration::from_secs(5));
            (got, sub)
        });
        std::thread::sleep(Duration::from_millis(50));
        let sent = Instant::now();
        publish(&mut p, 3, Category::Nic, "eth0");
        let (got, _sub) = t.join().unwrap();
        match got {
            Ok(Event::Lost(l)) => assert_eq!((l.first_sequence, l.count), (3, 1)),
            other => panic!("expected the loss of 3, got {other:?}"),
        }
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "the notice waited for another publish"
        );
        drop(held);
    }

    #[test]
    fn filters_select_category_and_keyword() {
        let (mut p, h) = bus();
        let nic = h
            .subscribe(SubscribeOptions::new("nic").filter(Filter {
                category: Some(Category::Nic),
                keyword: None,
            }))
            .unwrap();
        let eth1 = h
            .subscribe(SubscribeOptions::new("eth1").filter(Filter {
                category: Some(Category::Nic),
                keyword: Some("eth1".into()),
            }))
            .unwrap();
        publish(&mut p, 1, Category::Nic, "eth0");
        publish(&mut p, 2, Category::Fc, "eth1");
        publish(&mut p, 3, Category::Nic, "eth1");
        let seqs = |s: &Subscription| {
            std::iter::from_fn(|| s.try_recv())
                .map(|e| match e {
                    Event::Fault(f) => f.sequence(),
                    Event::Lost(_) => 0,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(&nic), vec![1, 3]);
        assert_eq!(seqs(&eth1), vec![3]);
    }

    #[test]
    fn source_losses_reach_every_subscriber() {
        let (mut p, h) = bus();
        let a = h.subscribe(SubscribeOptions::new("a")).unwrap();
        p.publish_lost(Lost {
            source: Source::Expdrv,
            first_sequence: 5,
            last_sequence: 9,
            count: 5,
            reason: LostReason::SequenceGap,
        });
        assert!(
            matches!(a.try_recv(), Some(Event::Lost(l)) if l.count == 5 && l.reason == LostReason::SequenceGap)
        );
    }

    #[test]
    fn a_dropped_subscription_is_forgotten() {
        let (mut p, h) = bus();
        let a = h.subscribe(SubscribeOptions::new("a")).unwrap();
        publish(&mut p, 1, Category::Nic, "x");
        assert_eq!(p.stats().subscribers, 1);
        drop(a);
        publish(&mut p, 2, Category::Nic, "x");
        assert_eq!(p.stats().subscribers, 0);
    }

    #[test]
    fn recv_wakes_when_the_publisher_sends_from_another_thread() {
        let (mut p, h) = bus();
        let a = h.subscribe(SubscribeOptions::new("a")).unwrap();
        p.adopt();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            publish(&mut p, 7, Category::Sps, "x");
            p
        });
        assert!(
            matches!(a.recv_timeout(Duration::from_secs(5)), Ok(Event::Fault(f)) if f.sequence() == 7)
        );
        drop(t.join());
    }
}

//! The fan-out: one publisher, many subscribers, each with its own bounded
//! queue (crossbeam-channel, lock-free on the delivery path) and its own pool
//! of record buffers.
//!
//! Ordering of loss notices: a subscriber sees its [`Lost`] event exactly at
//! the place in its stream where records went missing. While a loss is
//! pending for a subscriber, nothing newer is queued before the notice.
//!
//! Memory follows the load, within the subscription's bound. A queue is a
//! chain of segments of [`SEGMENT`] events: the publisher adds one when the
//! last is full (and the bound allows), the subscriber frees each as it has
//! read it through. Record buffers are made when the pool has none free (at
//! most `capacity` in all), and a buffer coming back to a pool that already
//! keeps [`POOL_KEEP`] idle ones, or grown past [`POOL_KEEP_BYTES`], is
//! freed. At rest a subscription holds one
//! segment and a few buffers however deep its bound; during a storm it grows
//! to what the subscriber lags behind, and gives that back as it catches up.
//! In a steady state (the subscriber keeping up, or lagging by a steady
//! amount) nothing is allocated per record.
//!
//! A blocked [`Subscription::recv`] spins for a while before it sleeps, so a
//! fault that arrives soon is taken without a second wake-up (the ingest
//! thread woke for the datagram; waking the subscriber's thread from sleep
//! costs as much again). How long it spins adapts as the CPU idle governor
//! `haltpoll` does: the window grows while faults arrive within
//! [`SubscribeOptions::spin_limit`] of each other and shrinks when they do
//! not, so a subscriber at rest sleeps and costs no CPU.

use crate::event::{Event, Fault, FaultKind, FaultMeta, Filter, Lost, LostReason, Source};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use crossbeam_utils::CachePadded;
use faultbridge_ffi::sys::doorbell::{Bell, Door, Waited, doorbell};
use faultbridge_ffi::wire::record::Record;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst, fence,
};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Capacity a new record buffer starts with (records are grown on first use
/// and keep their capacity).
const INITIAL_BUFFER_CAPACITY: usize = 256;

/// Events one queue segment holds.
pub const SEGMENT: usize = 512;

/// Idle record buffers a subscription's pool keeps for reuse.
pub const POOL_KEEP: usize = 512;

pub use crate::pool::POOL_KEEP_BYTES;
use crate::pool::Pool;

/// Default [`SubscribeOptions::spin_limit`].
pub const DEFAULT_SPIN_LIMIT: Duration = Duration::from_micros(500);

/// First spin window after a wait that a spin would have caught.
const SPIN_GROW_START: Duration = Duration::from_micros(20);

/// How to subscribe.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// A name for counters and status output.
    pub name: String,
    /// Queue depth: events the subscriber may have outstanding.
    pub capacity: usize,
    pub filter: Filter,
    /// The longest a blocked receive spins before it sleeps; zero: it sleeps
    /// at once. While faults come closer together than this, a blocked
    /// receiver keeps a core busy between them; at rest it sleeps.
    pub spin_limit: Duration,
}

impl SubscribeOptions {
    pub fn new(name: impl Into<String>) -> Self {
        SubscribeOptions {
            name: name.into(),
            capacity: 4096,
            filter: Filter::all(),
            spin_limit: DEFAULT_SPIN_LIMIT,
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
    /// See [`SubscribeOptions::spin_limit`]; `Duration::ZERO` never spins
    /// (for a subscriber that batches and does not need the lowest latency).
    pub fn spin_limit(mut self, limit: Duration) -> Self {
        self.spin_limit = limit;
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

/// The receiving side of the queue: the segment being read and the
/// segments the publisher has added after it.
#[derive(Debug)]
struct Queue {
    current: Receiver<Event>,
    next: Receiver<Receiver<Event>>,
}

enum Take {
    Event(Event),
    Empty,
    Closed,
}

impl Queue {
    fn take(&mut self, shared: &Shared) -> Take {
        loop {
            match self.current.try_recv() {
                Ok(ev) => return Take::Event(ev),
                Err(TryRecvError::Empty) => return Take::Empty,
                // The publisher moved on to a newer segment (announced
                // before it let go of this one), or is gone.
                Err(TryRecvError::Disconnected) => match self.next.try_recv() {
                    Ok(seg) => {
                        self.current = seg;
                        shared.segments_done.fetch_add(1, Relaxed);
                    }
                    Err(_) => return Take::Closed,
                },
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.current.is_empty() && self.next.is_empty()
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
    /// Loss notices the publisher queued.
    notices: AtomicU64,
    /// Events the subscriber took from its queue.
    received: CachePadded<AtomicU64>,
    /// Segments the publisher has made (the first included).
    segments_made: AtomicUsize,
    /// Segments the subscriber has read through and freed.
    segments_done: AtomicUsize,
    /// The subscriber sleeps (or is about to) on its door: the publisher
    /// rings after queuing an event.
    parked: AtomicBool,
}

impl Shared {
    /// Events queued and not yet received (faults and loss notices;
    /// approximate while either side is at work).
    fn queued(&self) -> u64 {
        (self.delivered.load(Relaxed) + self.notices.load(Relaxed))
            .saturating_sub(self.received.load(Relaxed))
    }

    /// The oldest pending loss notice. With `only_if_empty`, only while that
    /// queue is empty (checked under the lock): the subscriber takes a notice
    /// itself only once every older event has been received, so the notice
    /// is never ahead of faults queued before the loss.
    fn take_one(&self, only_if_empty: Option<&Queue>) -> Option<Lost> {
        if !self.has_pending.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if only_if_empty.is_some_and(|q| !q.is_empty()) {
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
    /// The newest segment of the queue.
    tx: Sender<Event>,
    /// Where a new segment is announced to the subscriber.
    segments: Sender<Receiver<Event>>,
    /// Segments that may be in use at once: the bound of the queue.
    max_segments: usize,
    segment_len: usize,
    capacity: usize,
    free_rx: Receiver<Vec<u8>>,
    pool: Arc<Pool>,
    filter: Filter,
    shared: Arc<Shared>,
    closed: bool,
    /// Rings the subscriber's door.
    bell: Bell,
}

enum Offer {
    Sent,
    Dropped,
    Closed,
}

impl Slot {
    /// Whether a new segment stays within the bound.
    fn may_grow(&self) -> bool {
        let live = self
            .shared
            .segments_made
            .load(Relaxed)
            .saturating_sub(self.shared.segments_done.load(Relaxed));
        live < self.max_segments
    }

    /// Fewer than `capacity` events queued (the subscriber drained some,
    /// or holds every record buffer): a loss notice may go in at once.
    fn has_room(&self) -> bool {
        self.shared.queued() < self.capacity as u64 && (!self.tx.is_full() || self.may_grow())
    }

    /// Queues `ev`, adding a segment when the newest is full and the bound
    /// allows. `Full` and `Disconnected` hand the event back.
    fn send(&mut self, ev: Event) -> Result<(), TrySendError<Event>> {
        let sent = match self.tx.try_send(ev) {
            Err(TrySendError::Full(ev)) if self.may_grow() => {
                let (tx, rx) = bounded(self.segment_len);
                self.shared.segments_made.fetch_add(1, Relaxed);
                // Announced before the old segment is let go, so the
                // subscriber, seeing that one closed, finds this one.
                if self.segments.send(rx).is_err() {
                    return Err(TrySendError::Disconnected(ev));
                }
                self.tx = tx;
                self.tx.try_send(ev)
            }
            other => other,
        };
        if sent.is_ok() {
            self.wake();
        }
        sent
    }

    /// Rings the subscriber's door if it sleeps there. The fence pairs with
    /// the subscriber's (see [`Subscription::park`]): either it sees the
    /// event just queued before it sleeps, or this sees it parked.
    fn wake(&self) {
        fence(SeqCst);
        if self.shared.parked.load(Relaxed) && self.shared.parked.swap(false, Relaxed) {
            self.bell.ring();
        }
    }

    /// Moves pending loss notices into the queue. True when none is left
    /// pending (so newer events may follow).
    fn flush_pending(&mut self) -> Result<bool, ()> {
        if !self.shared.has_pending.load(Relaxed) {
            return Ok(true);
        }
        while let Some(lost) = self.shared.take_one(None) {
            if !self.has_room() {
                self.shared.add(&lost);
                return Ok(false);
            }
            match self.send(Event::Lost(lost)) {
                Ok(()) => {
                    self.shared.notices.fetch_add(1, Relaxed);
                }
                Err(TrySendError::Full(_)) => {
                    self.shared.add(&lost);
                    return Ok(false);
                }
                Err(TrySendError::Disconnected(_)) => return Err(()),
            }
        }
        Ok(true)
    }

    /// A buffer from the pool, or a new one while fewer than `capacity`
    /// exist. None: every buffer is queued or held by the subscriber.
    fn buffer(&self) -> Option<Vec<u8>> {
        if let Ok(buf) = self.free_rx.try_recv() {
            return Some(buf);
        }
        // Only this thread adds, so the count cannot pass the bound.
        if self.pool.allocated.load(Relaxed) >= self.capacity {
            return None;
        }
        self.pool.allocated.fetch_add(1, Relaxed);
        Some(Vec::with_capacity(INITIAL_BUFFER_CAPACITY))
    }

    fn offer_fault(&mut self, meta: FaultMeta, bytes: &[u8]) -> Offer {
        match self.flush_pending() {
            Err(()) => return Offer::Closed,
            Ok(false) => return Offer::Dropped,
            Ok(true) => {}
        }
        // No buffer means every buffer is queued or still held by the
        // subscriber: the queue is full.
        let Some(mut buf) = self.buffer() else {
            return Offer::Dropped;
        };
        buf.clear();
        buf.extend_from_slice(bytes);
        let ev = Event::Fault(Fault {
            meta,
            buf,
            home: Some(self.pool.clone()),
        });
        match self.send(ev) {
            Ok(()) => Offer::Sent,
            // The event's buffer returns to the pool as it is dropped here.
            Err(TrySendError::Full(_)) => Offer::Dropped,
            Err(TrySendError::Disconnected(_)) => Offer::Closed,
        }
    }

    fn offer_lost(&mut self, lost: Lost) -> Offer {
        match self.flush_pending() {
            Err(()) => return Offer::Closed,
            Ok(false) => {
                self.shared.add(&lost);
                return Offer::Dropped;
            }
            Ok(true) => {}
        }
        if !self.has_room() {
            self.shared.add(&lost);
            return Offer::Dropped;
        }
        match self.send(Event::Lost(lost)) {
            Ok(()) => {
                self.shared.notices.fetch_add(1, Relaxed);
                Offer::Sent
            }
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
    /// Fails when the publisher is gone, or when no file descriptor is left
    /// for the subscription's doorbell (two per subscription).
    pub fn subscribe(&self, opts: SubscribeOptions) -> Option<Subscription> {
        let cap = opts.capacity.max(1);
        let segment_len = cap.min(SEGMENT);
        let (tx, rx) = bounded(segment_len);
        let (segments, next) = crossbeam_channel::unbounded();
        let (free_tx, free_rx) = bounded(cap.min(POOL_KEEP));
        let pool = Arc::new(Pool {
            free: free_tx,
            allocated: AtomicUsize::new(0),
        });
        let shared = Arc::new(Shared {
            name: opts.name,
            has_pending: AtomicBool::new(false),
            pending: Mutex::new([PendingLoss::default(); Source::COUNT]),
            delivered: CachePadded::new(AtomicU64::new(0)),
            dropped: CachePadded::new(AtomicU64::new(0)),
            notices: AtomicU64::new(0),
            received: CachePadded::new(AtomicU64::new(0)),
            segments_made: AtomicUsize::new(1),
            segments_done: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
        });
        let (bell, door) = doorbell().ok()?;
        let slot = Slot {
            tx,
            segments,
            max_segments: cap.div_ceil(segment_len),
            segment_len,
            capacity: cap,
            free_rx,
            pool: pool.clone(),
            filter: opts.filter,
            shared: shared.clone(),
            closed: false,
            bell,
        };
        self.joins.send(slot).ok()?;
        let limit = opts.spin_limit.as_nanos().min(u64::MAX as u128) as u64;
        Some(Subscription {
            queue: Mutex::new(Queue { current: rx, next }),
            shared,
            pool,
            door,
            spin: Spin {
                limit,
                window: AtomicU64::new(0),
            },
        })
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
                    if slot.has_room() && slot.flush_pending().is_err() {
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

    /// Events queued for all subscribers together, not yet received
    /// (approximate while they receive).
    pub fn queued(&self) -> u64 {
        self.slots.iter().map(|slot| slot.shared.queued()).sum()
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

/// A subscription's backlog seen from another thread (a daemon handing
/// over waits until its D-Bus side has taken everything published).
#[derive(Clone, Debug)]
pub struct BacklogProbe(Arc<Shared>);

impl BacklogProbe {
    /// Events queued and not yet taken, a pending loss notice counting one.
    pub fn backlog(&self) -> u64 {
        self.0.queued()
            + u64::from(
                self.0
                    .has_pending
                    .load(std::sync::atomic::Ordering::Acquire),
            )
    }

    /// Events the subscriber has taken so far.
    pub fn taken(&self) -> u64 {
        self.0.received.load(Relaxed)
    }
}

/// The adaptive spin of a blocked receive (see the module documentation).
#[derive(Debug)]
struct Spin {
    /// Nanoseconds; zero: never spin.
    limit: u64,
    /// The current window, in nanoseconds.
    window: AtomicU64,
}

impl Spin {
    /// Learns from a wait that ended in sleep after `waited` nanoseconds:
    /// a spin of that length would have caught the event (grow the window)
    /// or the event came later than any spin may last (shrink it).
    fn slept(&self, waited: u64) {
        let w = self.window.load(Relaxed);
        let next = if waited <= self.limit {
            (w.saturating_mul(2))
                .max(SPIN_GROW_START.as_nanos() as u64)
                .min(self.limit)
        } else {
            w / 2
        };
        self.window.store(next, Relaxed);
    }
}

/// How a [`Subscription::park`] ended.
enum Parked {
    /// An event turned up before sleeping.
    Event(Event),
    /// The publisher rang.
    Woken,
    Timeout,
    /// The publisher is gone or a loss is pending: look again.
    Look,
}

/// A subscriber's end. Events arrive in publish order; missed records are
/// announced by a [`Lost`] event where they went missing.
#[derive(Debug)]
pub struct Subscription {
    /// Locked by the receiving thread (one at a time; a second waits).
    queue: Mutex<Queue>,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    spin: Spin,
    /// Where a blocked receive sleeps (see [`faultbridge_ffi::sys::doorbell`]).
    door: Door,
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

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn taken(&self, ev: Event) -> Event {
        self.shared.received.fetch_add(1, Relaxed);
        ev
    }

    /// The next event if one is ready.
    pub fn try_recv(&self) -> Option<Event> {
        let mut q = self.queue();
        match q.take(&self.shared) {
            Take::Event(ev) => Some(self.taken(ev)),
            Take::Empty => self.shared.take_one(Some(&q)).map(Event::Lost),
            Take::Closed => self.shared.take_one(None).map(Event::Lost),
        }
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<Event, RecvError> {
        let mut q = self.queue();
        let mut waiting_since: Option<Instant> = None;
        let mut spun = false;
        loop {
            match q.take(&self.shared) {
                Take::Event(ev) => return Ok(self.taken(ev)),
                Take::Closed => {
                    return match self.shared.take_one(None) {
                        Some(lost) => Ok(Event::Lost(lost)),
                        None => Err(RecvError::Closed),
                    };
                }
                Take::Empty => {}
            }
            // The queue is empty: a loss recorded while it was full comes now.
            if let Some(lost) = self.shared.take_one(Some(&q)) {
                return Ok(Event::Lost(lost));
            }
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if !spun {
                spun = true;
                if let Some(ev) = self.spin(&mut q, since, deadline) {
                    return Ok(self.taken(ev));
                }
            }
            // Nothing pending (or events arrived meanwhile): a loss recorded
            // from now on is put in the queue by the publisher as soon as
            // there is room, which wakes this receive.
            match self.park(&mut q, deadline) {
                Parked::Event(ev) => return Ok(self.taken(ev)),
                Parked::Woken => self.spin.slept(since.elapsed().as_nanos() as u64),
                Parked::Timeout => {
                    self.spin.slept(u64::MAX);
                    return Err(RecvError::Timeout);
                }
                // Gone, or a loss to take: the top of the loop tells.
                Parked::Look => {}
            }
        }
    }

    /// Sleeps on the door until the publisher rings (it has queued an
    /// event), `deadline` passes, or the publisher is gone. The fence pairs
    /// with the publisher's in `Slot::wake`: either the publisher sees
    /// `parked` and rings, or this sees its event before sleeping.
    fn park(&self, q: &mut Queue, deadline: Option<Instant>) -> Parked {
        let parked = &self.shared.parked;
        parked.store(true, Relaxed);
        fence(SeqCst);
        match q.take(&self.shared) {
            Take::Event(ev) => {
                parked.store(false, Relaxed);
                return Parked::Event(ev);
            }
            Take::Closed => {
                parked.store(false, Relaxed);
                return Parked::Look;
            }
            Take::Empty => {}
        }
        if self.shared.has_pending.load(SeqCst) {
            parked.store(false, Relaxed);
            return Parked::Look;
        }
        let waited = self.door.wait(deadline);
        parked.store(false, Relaxed);
        match waited {
            Waited::Rang => Parked::Woken,
            Waited::Timeout => Parked::Timeout,
            Waited::Closed => Parked::Look,
        }
    }

    /// Polls the queue for up to the current spin window. An event that
    /// turns up is returned; a pending loss ends the spin and is left to
    /// the caller. (A segment is closed only once it is full, and the
    /// publisher's end only at shutdown: neither happens to an empty
    /// queue a spin watches, or costs more than the window.)
    fn spin(&self, q: &mut Queue, since: Instant, deadline: Option<Instant>) -> Option<Event> {
        let window = self.spin.window.load(Relaxed);
        if window == 0 {
            return None;
        }
        let until = since + Duration::from_nanos(window);
        let until = deadline.map_or(until, |d| d.min(until));
        loop {
            if !q.current.is_empty() {
                return q.current.try_recv().ok();
            }
            if self.shared.has_pending.load(Relaxed) || Instant::now() >= until {
                return None;
            }
            // Gives the CPU to any other thread that is ready to run on it
            // (the ingest thread, on a busy machine), and comes straight
            // back when there is none.
            std::thread::yield_now();
        }
    }

    /// Events queued now (approximate while the publisher is sending).
    pub fn len(&self) -> usize {
        self.shared.queued() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A view of this subscription's backlog for another thread.
    pub fn probe(&self) -> BacklogProbe {
        BacklogProbe(self.shared.clone())
    }

    /// This subscription's counters.
    pub fn stats(&self) -> SubscriptionStats {
        stats_of(&self.shared)
    }

    /// Record buffers this subscription has in existence now (idle in its
    /// pool, queued, or held by the subscriber): the memory it holds for
    /// records, which grows during a storm and shrinks after it.
    pub fn buffers(&self) -> usize {
        self.pool.allocated.load(Relaxed)
    }

    /// Queue segments in use now (each holds up to [`SEGMENT`] events).
    pub fn segments(&self) -> usize {
        let done = self.shared.segments_done.load(Relaxed);
        self.shared.segments_made.load(Relaxed).saturating_sub(done)
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

    #[test]
    fn a_queue_grows_by_segments_during_a_storm_and_shrinks_as_it_is_read() {
        let (mut p, h) = bus();
        let n = 5 * SEGMENT as u64 + 7;
        let sub = h
            .subscribe(SubscribeOptions::new("deep").capacity(1 << 16))
            .unwrap();
        p.adopt();
        // At rest: one segment, no record buffer yet.
        assert_eq!((sub.segments(), sub.buffers()), (1, 0));
        for s in 1..=n {
            publish(&mut p, s, Category::Nic, "eth0");
        }
        assert_eq!(sub.segments(), 6);
        assert_eq!(sub.buffers(), n as usize);
        assert_eq!(sub.len(), n as usize);
        // Read through the segments in order; every buffer returned beyond
        // what the pool keeps is freed.
        for s in 1..=n {
            match sub.try_recv() {
                Some(Event::Fault(f)) => assert_eq!(f.sequence(), s),
                other => panic!("expected fault {s}, got {other:?}"),
            }
        }
        assert!(sub.try_recv().is_none());
        assert!(sub.is_empty());
        assert_eq!(sub.segments(), 1);
        assert_eq!(sub.buffers(), POOL_KEEP);
        assert_eq!(sub.stats().dropped, 0);
        // It grows again for the next storm.
        for s in n + 1..=3 * n {
            publish(&mut p, s, Category::Nic, "eth0");
        }
        assert_eq!(sub.buffers(), 2 * n as usize);
        assert_eq!(sub.iter().take(2 * n as usize).count(), 2 * n as usize);
    }

    #[test]
    fn buffers_grown_by_large_records_are_freed_not_kept() {
        let (mut p, h) = bus();
        let sub = h.subscribe(SubscribeOptions::new("big")).unwrap();
        let detail = vec![b'd'; 65_000];
        let mut b = Vec::new();
        for s in 1..=40u64 {
            b.clear();
            RecordSpec {
                flags: 0,
                sequence: s,
                timestamp_ns: s,
                category: Category::Fc.code(),
                severity: 2,
                event_code: 0x0001_0001,
                device_index: 1,
                keyword: b"host1",
                detail: &detail,
                driver_id: 1,
            }
            .encode_into(&mut b);
            p.publish(
                Source::Expdrv,
                FaultKind::Fault,
                &Record::parse(&b).unwrap(),
            );
        }
        assert_eq!(sub.buffers(), 40);
        // Then small ones: their buffers are kept for the next storm.
        for s in 41..=50 {
            publish(&mut p, s, Category::Nic, "eth0");
        }
        assert_eq!(sub.iter().take(50).count(), 50);
        assert_eq!(sub.buffers(), 10, "only the small records' buffers stay");
    }

    #[test]
    fn the_bound_holds_across_segments() {
        let (mut p, h) = bus();
        let cap = 2 * SEGMENT + 3;
        let sub = h
            .subscribe(SubscribeOptions::new("bounded").capacity(cap))
            .unwrap();
        let n = cap as u64 + 10;
        for s in 1..=n {
            publish(&mut p, s, Category::Nic, "eth0");
        }
        assert_eq!(sub.buffers(), cap);
        assert_eq!(sub.stats().dropped, 10);
        for s in 1..=cap as u64 {
            assert!(matches!(sub.try_recv(), Some(Event::Fault(f)) if f.sequence() == s));
        }
        match sub.try_recv() {
            Some(Event::Lost(l)) => {
                assert_eq!(
                    (l.first_sequence, l.last_sequence, l.count),
                    (cap as u64 + 1, n, 10)
                )
            }
            other => panic!("expected the loss after the last fault, got {other:?}"),
        }
    }

    #[test]
    fn a_blocked_receive_follows_the_queue_into_a_new_segment() {
        let (mut p, h) = bus();
        let sub = h
            .subscribe(SubscribeOptions::new("s").capacity(4 * SEGMENT))
            .unwrap();
        let n = 3 * SEGMENT as u64;
        for s in 1..=n {
            publish(&mut p, s, Category::Nic, "eth0");
        }
        let t = std::thread::spawn(move || {
            let mut seqs = Vec::new();
            while let Ok(Event::Fault(f)) = sub.recv_timeout(Duration::from_secs(5)) {
                seqs.push(f.sequence());
                if seqs.len() as u64 == n + 1 {
                    break;
                }
            }
            seqs
        });
        std::thread::sleep(Duration::from_millis(20));
        publish(&mut p, n + 1, Category::Nic, "eth0");
        let seqs = t.join().unwrap();
        assert_eq!(seqs, (1..=n + 1).collect::<Vec<_>>());
    }

    #[test]
    fn the_spin_window_grows_with_close_waits_and_shrinks_with_far_ones() {
        let us = |n: u64| n * 1000;
        let spin = Spin {
            limit: us(500),
            window: AtomicU64::new(0),
        };
        spin.slept(us(200));
        assert_eq!(spin.window.load(Relaxed), SPIN_GROW_START.as_nanos() as u64);
        for _ in 0..10 {
            spin.slept(us(200));
        }
        assert_eq!(spin.window.load(Relaxed), us(500), "capped at the limit");
        spin.slept(u64::MAX);
        assert_eq!(spin.window.load(Relaxed), us(250));
        for _ in 0..40 {
            spin.slept(us(10_000));
        }
        assert_eq!(spin.window.load(Relaxed), 0, "at rest it sleeps at once");
        let never = Spin {
            limit: 0,
            window: AtomicU64::new(0),
        };
        never.slept(us(1));
        never.slept(0);
        assert_eq!(never.window.load(Relaxed), 0);
    }
}

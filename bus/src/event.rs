//! The events subscribers receive: [`Fault`] (a fault or its CLEAR) and
//! [`Lost`] (records that did not reach this subscriber, never silent).

use crate::pool::Pool;
use faultbridge_ffi::wire::record::{Category, Record, Severity};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Where a fault came from; the `source` argument of the D-Bus `Fault` signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Source {
    /// The expanded driver over netlink multicast.
    Expdrv = 0,
    /// The expanded driver's char device (`/dev/expdrv0`).
    ExpdrvDevice,
    /// NIC carrier faults reported by the kernel over rtnetlink.
    Rtnetlink,
    /// FC transport events reported by the kernel.
    FcTransport,
    /// Device removal reported by kernel uevents.
    Uevent,
    /// A user-space reporter (D-Bus `Notify`, `faultbridge notify`).
    Notify,
}

impl Source {
    /// Number of sources (for per-source arrays).
    pub const COUNT: usize = 6;
    /// Every source, in index order.
    pub const ALL: [Source; Self::COUNT] = [
        Source::Expdrv,
        Source::ExpdrvDevice,
        Source::Rtnetlink,
        Source::FcTransport,
        Source::Uevent,
        Source::Notify,
    ];

    /// Index into a per-source array.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stable name used on D-Bus, in configuration and in output.
    pub const fn name(self) -> &'static str {
        match self {
            Source::Expdrv => "expdrv",
            Source::ExpdrvDevice => "expdrv-device",
            Source::Rtnetlink => "rtnetlink",
            Source::FcTransport => "fc-transport",
            Source::Uevent => "uevent",
            Source::Notify => "notify",
        }
    }

    /// The source of a name.
    pub fn from_name(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault detection, or the end of one (`EXPDRV_MSG_CLEAR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Fault,
    Clear,
}

/// Why records are missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// A gap in the source's sequence numbers.
    SequenceGap,
    /// The source's socket overflowed (`ENOBUFS`).
    Overrun,
    /// This subscriber's queue was full; other subscribers were not affected.
    QueueFull,
}

impl LostReason {
    pub const fn name(self) -> &'static str {
        match self {
            LostReason::SequenceGap => "sequence_gap",
            LostReason::Overrun => "overrun",
            LostReason::QueueFull => "queue_full",
        }
    }
}

/// Records that did not reach the subscriber: `count` records whose
/// sequences lie in `first_sequence..=last_sequence` (for a filtered
/// subscriber or several sources the range is a span, the count is exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lost {
    pub source: Source,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub count: u64,
    pub reason: LostReason,
}

/// The decoded header of a fault, stored beside its record bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FaultMeta {
    pub(crate) source: Source,
    pub(crate) kind: FaultKind,
    pub(crate) category: Category,
    pub(crate) severity: Severity,
    pub(crate) sequence: u64,
    pub(crate) timestamp_ns: u64,
    pub(crate) event_code: u32,
    pub(crate) device_index: u32,
    pub(crate) flags: u32,
    pub(crate) driver_id: u32,
    pub(crate) keyword: (u16, u16),
    pub(crate) detail: (u16, u16),
}

fn range_in(base: &[u8], part: &[u8]) -> (u16, u16) {
    if part.is_empty() {
        return (0, 0);
    }
    let off = part.as_ptr() as usize - base.as_ptr() as usize;
    (off as u16, part.len() as u16)
}

impl FaultMeta {
    pub(crate) fn of(source: Source, kind: FaultKind, r: &Record<'_>) -> FaultMeta {
        let base = r.as_bytes();
        FaultMeta {
            source,
            kind,
            category: r.category(),
            severity: r.severity(),
            sequence: r.sequence(),
            timestamp_ns: r.timestamp_ns(),
            event_code: r.event_code(),
            device_index: r.device_index(),
            flags: r.flags(),
            driver_id: r.driver_id(),
            keyword: range_in(base, r.keyword().as_bytes()),
            detail: range_in(base, r.detail()),
        }
    }
}

fn span((off, len): (u16, u16)) -> Range<usize> {
    off as usize..off as usize + len as usize
}

/// One fault record, owned by the subscriber that received it. Its buffer
/// goes back to the subscriber's pool when it is dropped.
pub struct Fault {
    pub(crate) meta: FaultMeta,
    pub(crate) buf: Vec<u8>,
    pub(crate) home: Option<Arc<Pool>>,
}

impl Fault {
    /// Makes a standalone fault from a validated record (allocates; for
    /// tests and for consumers that keep faults).
    pub fn from_record(source: Source, kind: FaultKind, r: &Record<'_>) -> Fault {
        Fault {
            meta: FaultMeta::of(source, kind, r),
            buf: r.as_bytes().to_vec(),
            home: None,
        }
    }

    pub fn source(&self) -> Source {
        self.meta.source
    }
    pub fn kind(&self) -> FaultKind {
        self.meta.kind
    }
    /// True for a CLEAR: the fault condition ended.
    pub fn cleared(&self) -> bool {
        self.meta.kind == FaultKind::Clear
    }
    pub fn category(&self) -> Category {
        self.meta.category
    }
    pub fn severity(&self) -> Severity {
        self.meta.severity
    }
    pub fn sequence(&self) -> u64 {
        self.meta.sequence
    }
    /// `CLOCK_MONOTONIC` nanoseconds at detection.
    pub fn timestamp_ns(&self) -> u64 {
        self.meta.timestamp_ns
    }
    pub fn event_code(&self) -> u32 {
        self.meta.event_code
    }
    pub fn device_index(&self) -> u32 {
        self.meta.device_index
    }
    pub fn flags(&self) -> u32 {
        self.meta.flags
    }
    pub fn driver_id(&self) -> u32 {
        self.meta.driver_id
    }
    /// Replayed by a snapshot, not a new detection.
    pub fn is_snapshot(&self) -> bool {
        self.meta.flags & faultbridge_ffi::wire::record::F_SNAPSHOT != 0
    }
    /// The device the fault names; empty when none.
    pub fn keyword(&self) -> &str {
        // Validated as UTF-8 when the record was parsed.
        std::str::from_utf8(&self.buf[span(self.meta.keyword)]).unwrap_or_default()
    }
    /// Opaque detail bytes.
    pub fn detail(&self) -> &[u8] {
        &self.buf[span(self.meta.detail)]
    }
    /// The ABI record's bytes, `[0, total_len)`, as the driver sent them.
    pub fn record_bytes(&self) -> &[u8] {
        &self.buf
    }
}

impl Clone for Fault {
    /// A clone owns a fresh buffer; only the original returns to the pool.
    fn clone(&self) -> Fault {
        Fault {
            meta: self.meta,
            buf: self.buf.clone(),
            home: None,
        }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            // Kept for reuse, or freed when the pool has enough idle ones
            // (after a storm) or the subscription is gone.
            home.put(std::mem::take(&mut self.buf));
        }
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("source", &self.source())
            .field("kind", &self.kind())
            .field("category", &self.category())
            .field("keyword", &self.keyword())
            .field("severity", &self.severity())
            .field("event_code", &format_args!("{:#010x}", self.event_code()))
            .field("sequence", &self.sequence())
            .field("timestamp_ns", &self.timestamp_ns())
            .field("device_index", &self.device_index())
            .field("detail_len", &self.detail().len())
            .finish()
    }
}

impl PartialEq for Fault {
    fn eq(&self, other: &Fault) -> bool {
        self.meta == other.meta && self.buf == other.buf
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Fault(Fault),
    Lost(Lost),
}

/// Which faults a subscriber wants. Loss notices always pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this category.
    pub category: Option<Category>,
    /// Only this device keyword (exact match).
    pub keyword: Option<String>,
}

impl Filter {
    /// Everything.
    pub fn all() -> Filter {
        Filter::default()
    }

    pub(crate) fn matches(&self, r: &Record<'_>) -> bool {
        self.category.is_none_or(|c| c == r.category())
            && self.keyword.as_deref().is_none_or(|k| k == r.keyword())
    }
}

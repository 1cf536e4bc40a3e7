//! The expanded driver through its char device (`/dev/expdrv0`, spec
//! sections 1.2, 4 and 5), together with the netlink group the device names.
//!
//! At start-up `EXPDRV_IOC_GET_INFO` gives the driver's ABI version, its
//! newest sequence, and the netlink protocol and group it multicasts on: the
//! source joins that group itself (no configuration of `netlink_protocol` /
//! `netlink_group` is needed), then `EXPDRV_IOC_SNAPSHOT` replays the faults
//! still active, flagged SNAPSHOT.
//!
//! Live records arrive on both transports with the same sequence: `read()`
//! of whole records (4-byte padded) when `poll()` says so, and netlink
//! datagrams. Only a netlink message says whether a record is a FAULT or a
//! CLEAR (`EXPDRV_MSG_FAULT` / `EXPDRV_MSG_CLEAR`), so while the netlink
//! group is joined live records are taken from netlink only: the device's
//! live copies are read (so its queue does not fill) and dropped, and the
//! device serves the `SNAPSHOT` replays. A gap in the netlink sequence is
//! lost — reported as a [`Lost`](faultbridge_bus::Lost) with its range
//! (attributed to an overrun when the socket said `ENOBUFS`) — and triggers
//! a resync, which restores the exact active set from the driver. When the
//! group cannot be joined, live records are read from the device alone.
//!
//! A resync asks for the *whole* active set (`SNAPSHOT` after sequence 0):
//! faults the source did not know are published flagged SNAPSHOT, and faults
//! it holds active that the driver no longer has (their CLEAR was lost) get a
//! CLEAR flagged SNAPSHOT, so monitors end where they would have without the
//! loss. Resyncs are at most one per `resync_interval`: losses within it wait
//! on a timer and share the next one, so an overload cannot become a resync
//! storm. Handled records are acknowledged with `EXPDRV_IOC_ACK`.
//!
//! The char device has no message type: read from the device alone, a live
//! record is a CLEAR when its event code is one of the spec's clear codes
//! (NIC link up, FC port online), a fault otherwise. A CLEAR of the other
//! categories (HA/SS, HA/AM, HA/RS, SPS) carries its fault's event code and
//! cannot be told apart: such records are published as faults, counted as
//! `untyped`, and a warning says so once at start-up. The device may be any
//! file that answers the ioctls and `poll()` (the simulator serves a FUSE
//! file): it is not required to be a character device.

use super::expdrv::record_kind;
use super::seq::{Seen, SeqTracker};
use super::synth::report_seen;
use super::{Dispatch, Got, Listener, SourceTokens};
use crate::config::ExpdrvConfig;
use crate::error::thinned;
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, Source};
use faultbridge_ffi::sys::ioctl;
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::sys::netlink::Membership;
use faultbridge_ffi::wire::device::DeviceRecords;
use faultbridge_ffi::wire::info::ExpdrvInfoRaw;
use faultbridge_ffi::wire::nlmsg::NlMsgIter;
use faultbridge_ffi::wire::record::{
    ABI_VERSION, Category, F_SNAPSHOT, RECORD_MAX, Record, RecordSpec, Severity, event,
};
use mio::unix::SourceFd;
use mio::{Interest, Registry};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The source's descriptors in the ingest loop.
const DEVICE: usize = 0;
const NETLINK: usize = 1;
const TIMER: usize = 2;
/// Room for many records per `read()`, and always for the largest one.
const READ_BUF: usize = 2 * (RECORD_MAX + 1);
const NETLINK_BUF: usize = 256 * 1024;
/// The most (category, keyword) faults held active; beyond it a fault is
/// still published, but not reconciled by a resync (counted as untracked).
pub const MAX_ACTIVE: usize = 65_536;
/// The cursor's key: one device is one driver instance.
const DRIVER: u32 = 0;

/// Why the char device source could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: EXPDRV_IOC_GET_INFO failed")]
    GetInfo {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path}: the driver speaks ABI version {got}, this bridge version {ABI_VERSION}")]
    AbiVersion { path: PathBuf, got: u32 },
    #[error("{path}: cannot create the resync timer")]
    Timer {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// A fault the driver holds active, by (category code, keyword).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Active {
    sequence: u64,
    event_code: u32,
    device_index: u32,
    driver_id: u32,
}

/// The fault conditions held active, by keyword then category: looked up
/// and updated without allocating while a keyword is active. A keyword
/// none of whose categories is active any more is forgotten, and at most
/// [`MAX_ACTIVE`] keywords are held.
#[derive(Clone, Debug, Default)]
struct ActiveSet {
    by_keyword: HashMap<Box<str>, [Option<Active>; 6]>,
}

fn slot(c: Category) -> usize {
    usize::from(c.code()) - 1
}

impl ActiveSet {
    fn get(&self, c: Category, keyword: &str) -> Option<&Active> {
        self.by_keyword.get(keyword)?[slot(c)].as_ref()
    }

    /// Holds `a` active; false when the set is full (not held).
    fn set(&mut self, c: Category, keyword: &str, a: Active) -> bool {
        if let Some(slots) = self.by_keyword.get_mut(keyword) {
            slots[slot(c)] = Some(a);
            return true;
        }
        if self.by_keyword.len() >= MAX_ACTIVE {
            return false;
        }
        let mut slots = [None; 6];
        slots[slot(c)] = Some(a);
        self.by_keyword.insert(keyword.into(), slots);
        true
    }

    fn remove(&mut self, c: Category, keyword: &str) {
        if let Some(slots) = self.by_keyword.get_mut(keyword) {
            slots[slot(c)] = None;
            if slots.iter().all(Option::is_none) {
                self.by_keyword.remove(keyword);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_keyword.len()
    }

    fn iter(&self) -> impl Iterator<Item = (Category, &str, &Active)> {
        self.by_keyword.iter().flat_map(|(k, slots)| {
            Category::ALL
                .into_iter()
                .zip(slots.iter())
                .filter_map(move |(c, a)| a.as_ref().map(|a| (c, &**k, a)))
        })
    }
}

/// One record waiting in a transport's buffer.
#[derive(Clone, Copy, Debug)]
struct Item {
    off: usize,
    len: usize,
    seq: u64,
    kind: FaultKind,
    snapshot: bool,
}

/// A transport's buffer of records not yet handled.
#[derive(Debug)]
struct Batch {
    buf: Vec<u8>,
    items: Vec<Item>,
    next: usize,
    /// May have more to read (cleared on `EAGAIN`).
    live: bool,
}

impl Batch {
    fn new(size: usize) -> Batch {
        Batch {
            buf: vec![0; size],
            items: Vec::with_capacity(1024),
            next: 0,
            live: true,
        }
    }
    fn peek(&self) -> Option<Item> {
        self.items.get(self.next).copied()
    }
    fn is_empty(&self) -> bool {
        self.next >= self.items.len()
    }
    fn clear(&mut self) {
        self.items.clear();
        self.next = 0;
    }
}

/// What the char device's record is, lacking a message type: a CLEAR only
/// for the dedicated clear event codes. See [`kind_is_certain`].
pub fn device_record_kind(r: &Record<'_>) -> FaultKind {
    match r.event_code() {
        event::NIC_LINK_UP | event::FC_PORT_ONLINE => FaultKind::Clear,
        _ => FaultKind::Fault,
    }
}

/// Whether [`device_record_kind`] is certain for a record of `category`:
/// only NIC and FC have a CLEAR event code distinct from their faults'.
pub fn kind_is_certain(category: Category) -> bool {
    matches!(category, Category::Nic | Category::Fc)
}

/// The CLEAR event code of a fault of `category` with `event_code`.
fn clear_code(category: Category, event_code: u32) -> u32 {
    match category {
        Category::Nic => event::NIC_LINK_UP,
        Category::Fc => event::FC_PORT_ONLINE,
        _ => event_code,
    }
}

/// What a device source hands over beside its descriptors and cursors
/// (`HandedState::extra`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Handed {
    path: String,
    /// The device was being read (not failed).
    dev_ok: bool,
    /// A netlink descriptor follows the device's.
    netlink: bool,
    acked: u64,
    resync_pending: bool,
    active: Vec<HandedActive>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct HandedActive {
    category: u16,
    keyword: String,
    sequence: u64,
    event_code: u32,
    device_index: u32,
    driver_id: u32,
}

/// The expanded driver's char device source.
#[derive(Debug)]
pub struct ExpdrvDevice {
    path: PathBuf,
    dev: File,
    dev_ok: bool,
    info: ExpdrvInfoRaw,
    netlink: Option<Listener>,
    timer: TimerFd,
    timer_armed: bool,
    /// The ingest loop's registry, to stop polling a device that failed
    /// (and poll it again once reopened), and this source's tokens.
    registry: Option<Registry>,
    tokens: Option<SourceTokens>,
    /// Why the device is not read (it failed); `None` while it is.
    trouble: Option<String>,
    dev_batch: Batch,
    /// Records of the netlink datagram in hand (its bytes are the
    /// listener's: `Listener::last`).
    nl_batch: Batch,
    st: DeviceState,
}

/// What the source knows of the driver between reads.
#[derive(Debug)]
struct DeviceState {
    /// The cursor of live sequences (one driver: key [`DRIVER`]).
    seq: SeqTracker,
    acked: u64,
    active: ActiveSet,
    resync_interval: Duration,
    last_resync: Option<Instant>,
    resync_pending: bool,
    resyncs: u64,
    synth: Vec<u8>,
}

impl ExpdrvDevice {
    /// Opens the device, learns the driver's netlink protocol and group with
    /// `EXPDRV_IOC_GET_INFO` and joins it (senders accepted as
    /// `cfg.accept` says). A netlink socket that cannot be opened is
    /// reported and the device alone is read.
    pub fn open(path: &Path, cfg: &ExpdrvConfig) -> Result<Self, DeviceError> {
        let dev = File::options()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC).bits())
            .open(path)
            .map_err(|source| DeviceError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let info = ioctl::get_info(&dev).map_err(|source| DeviceError::GetInfo {
            path: path.to_path_buf(),
            source,
        })?;
        if info.abi_version != u32::from(ABI_VERSION) {
            return Err(DeviceError::AbiVersion {
                path: path.to_path_buf(),
                got: info.abi_version,
            });
        }
        let m = Membership {
            protocol: info.netlink_protocol as i32,
            group: info.netlink_group,
            recv_buffer: cfg.recv_buffer,
            pass_credentials: false,
        };
        let netlink = match Listener::open(m, cfg.accept, NETLINK_BUF) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!(
                    "faultbridge: expdrv-device: {}: cannot join the driver's netlink protocol {} group {} ({}); reading the device only",
                    path.display(),
                    info.netlink_protocol,
                    info.netlink_group,
                    crate::error::error_chain(&e)
                );
                eprintln!(
                    "faultbridge: expdrv-device: warning: the device gives no message type: a CLEAR of HA/SS, HA/AM, HA/RS or SPS cannot be told from a fault and is published as a fault (counted as untyped); only NIC link up and FC port online are recognised as CLEAR"
                );
                None
            }
        };
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|source| DeviceError::Timer {
            path: path.to_path_buf(),
            source,
        })?;
        eprintln!(
            "faultbridge: expdrv-device: {}: driver {:?}, ABI {}, last sequence {}, netlink protocol {} group {}",
            path.display(),
            info.driver_name(),
            info.abi_version,
            info.last_sequence,
            info.netlink_protocol,
            info.netlink_group
        );
        let mut seq = SeqTracker::default();
        seq.set(DRIVER, info.last_sequence);
        Ok(ExpdrvDevice {
            path: path.to_path_buf(),
            dev,
            dev_ok: true,
            info,
            netlink,
            timer,
            timer_armed: false,
            registry: None,
            tokens: None,
            trouble: None,
            dev_batch: Batch::new(READ_BUF),
            nl_batch: Batch::new(0),
            st: DeviceState {
                seq,
                acked: 0,
                active: ActiveSet::default(),
                resync_interval: cfg.resync_interval,
                last_resync: None,
                // The start-up snapshot.
                resync_pending: true,
                resyncs: 0,
                synth: Vec::with_capacity(256),
            },
        })
    }

    /// Takes over the device source another process handed over at a live
    /// upgrade: its open device (the same open file, so the driver's queue
    /// for it goes on where the other process stopped reading), its netlink
    /// socket, the sequence cursor, the acknowledged position and the
    /// faults held active. A resync timer of its own is made here.
    pub fn from_handed(
        fds: Vec<std::os::fd::OwnedFd>,
        cfg: &ExpdrvConfig,
        h: &super::HandedState,
    ) -> Result<Self, String> {
        let handed: Handed = serde_json::from_value(h.extra.clone()).map_err(|e| {
            format!("source expdrv-device: the handed state is not understood: {e}")
        })?;
        let mut fds = fds.into_iter();
        let dev = File::from(
            fds.next()
                .ok_or("source expdrv-device: no device descriptor handed over")?,
        );
        let netlink = if handed.netlink {
            let fd = fds
                .next()
                .ok_or("source expdrv-device: no netlink descriptor handed over")?;
            Some(Listener::from_socket(
                faultbridge_ffi::sys::netlink::NetlinkSocket::from_fd(fd, h.protocol),
                cfg.accept,
                NETLINK_BUF,
            ))
        } else {
            None
        };
        let path = PathBuf::from(&handed.path);
        let (info, dev_ok) = match (handed.dev_ok, ioctl::get_info(&dev)) {
            (true, Ok(info)) => (info, true),
            _ => (ExpdrvInfoRaw::default(), false),
        };
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|e| format!("source expdrv-device: cannot create the resync timer: {e}"))?;
        let mut seq = SeqTracker::default();
        seq.adopt(h);
        let mut active = ActiveSet::default();
        for a in &handed.active {
            if let Some(c) = Category::from_code(a.category) {
                active.set(
                    c,
                    &a.keyword,
                    Active {
                        sequence: a.sequence,
                        event_code: a.event_code,
                        device_index: a.device_index,
                        driver_id: a.driver_id,
                    },
                );
            }
        }
        Ok(ExpdrvDevice {
            trouble: (!dev_ok).then(|| {
                format!(
                    "{}: not readable since before the hand-over; the driver's netlink group is read",
                    path.display()
                )
            }),
            path,
            dev,
            dev_ok,
            info,
            netlink,
            timer,
            timer_armed: false,
            registry: None,
            tokens: None,
            dev_batch: Batch::new(READ_BUF),
            nl_batch: Batch::new(0),
            st: DeviceState {
                seq,
                acked: handed.acked,
                active,
                resync_interval: cfg.resync_interval,
                last_resync: None,
                resync_pending: handed.resync_pending,
                resyncs: 0,
                synth: Vec::with_capacity(256),
            },
        })
    }

    /// What `EXPDRV_IOC_GET_INFO` said at start-up.
    pub fn info(&self) -> &ExpdrvInfoRaw {
        &self.info
    }

    /// Resyncs done (the start-up snapshot included).
    pub fn resyncs(&self) -> u64 {
        self.st.resyncs
    }

    /// Reads the next accepted netlink datagram's records into `nl_batch`.
    fn refill_netlink(&mut self, c: &SourceCounters) -> io::Result<()> {
        let b = &mut self.nl_batch;
        b.clear();
        let Some(listener) = &mut self.netlink else {
            b.live = false;
            return Ok(());
        };
        loop {
            match listener.recv_one(Source::ExpdrvDevice, c)? {
                Got::Datagram => {
                    let dg = listener.last();
                    let base = dg.as_ptr() as usize;
                    let mut msgs = NlMsgIter::new(dg);
                    for m in &mut msgs {
                        let Some(kind) = record_kind(m.header.nlmsg_type, c) else {
                            continue;
                        };
                        match Record::parse(m.payload) {
                            Ok(r) => b.items.push(Item {
                                off: m.payload.as_ptr() as usize - base,
                                len: r.as_bytes().len(),
                                seq: r.sequence(),
                                kind,
                                snapshot: r.is_snapshot(),
                            }),
                            Err(e) => super::malformed(Source::ExpdrvDevice, &e, c),
                        }
                    }
                    if msgs.trailing_bytes() > 0 {
                        c.truncated.fetch_add(1, Relaxed);
                    }
                    return Ok(());
                }
                Got::Overrun => {
                    self.st.seq.overrun();
                    self.st.resync_pending = true;
                }
                Got::Nothing => {
                    b.live = false;
                    return Ok(());
                }
            }
        }
    }

    fn refill_device(&mut self, c: &SourceCounters) -> io::Result<()> {
        let b = &mut self.dev_batch;
        b.clear();
        if !self.dev_ok {
            b.live = false;
            return Ok(());
        }
        let n = loop {
            match self.dev.read(&mut b.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    b.live = false;
                    return Ok(());
                }
                Err(e) => {
                    // The device went away (driver unloaded, simulator gone):
                    // stop reading it; the netlink group goes on.
                    self.dev_ok = false;
                    b.live = false;
                    c.errors.fetch_add(1, Relaxed);
                    eprintln!(
                        "faultbridge: expdrv-device: {}: read failed, no longer reading it: {e}",
                        self.path.display()
                    );
                    self.trouble = Some(format!(
                        "{}: read failed ({e}); the driver's netlink group is still read",
                        self.path.display()
                    ));
                    if let Some(r) = &self.registry {
                        let _ = r.deregister(&mut SourceFd(&self.dev.as_raw_fd()));
                    }
                    return Ok(());
                }
            }
        };
        if n == 0 {
            b.live = false;
            return Ok(());
        }
        c.datagrams.fetch_add(1, Relaxed);
        let mut records = DeviceRecords::new(&b.buf[..n]);
        for f in &mut records {
            match f.record {
                Ok(r) => b.items.push(Item {
                    off: f.offset,
                    len: r.as_bytes().len(),
                    seq: r.sequence(),
                    kind: device_record_kind(&r),
                    snapshot: r.is_snapshot(),
                }),
                Err(e) => super::malformed(Source::ExpdrvDevice, &e, c),
            }
        }
        if records.trailing_bytes() > 0 {
            c.truncated.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Handles buffered and readable records of both transports in sequence
    /// order until neither has more.
    fn pump(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) -> io::Result<()> {
        loop {
            if self.nl_batch.is_empty() && self.nl_batch.live {
                self.refill_netlink(c)?;
            }
            if self.dev_batch.is_empty() && self.dev_batch.live {
                self.refill_device(c)?;
            }
            if self.netlink.is_some() {
                // Live records come from netlink, which types them; the
                // device's copies are dropped.
                let b = &mut self.dev_batch;
                while b.peek().is_some_and(|d| !d.snapshot) {
                    b.next += 1;
                }
            }
            let from_device = match (self.nl_batch.peek(), self.dev_batch.peek()) {
                (None, None) => {
                    if self.nl_batch.live || self.dev_batch.live {
                        continue;
                    }
                    return Ok(());
                }
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(n), Some(d)) => d.snapshot || (!n.snapshot && d.seq < n.seq),
            };
            let batch = if from_device {
                &mut self.dev_batch
            } else {
                &mut self.nl_batch
            };
            let item = batch.items[batch.next];
            batch.next += 1;
            let bytes = if from_device {
                &self.dev_batch.buf[..]
            } else {
                self.netlink.as_ref().map_or(&[][..], Listener::last)
            };
            let Some(Ok(r)) = bytes.get(item.off..item.off + item.len).map(Record::parse) else {
                continue;
            };
            if item.snapshot {
                // Outside a resync: still the driver's word on an active fault.
                self.st.publish_snapshot(&r, out, c, None);
            } else {
                if from_device && !kind_is_certain(r.category()) {
                    c.untyped.fetch_add(1, Relaxed);
                }
                self.st.live(&r, item.kind, out, c);
            }
        }
    }

    /// `EXPDRV_IOC_SNAPSHOT(0)`: the driver's whole active set, reconciled
    /// with what the source holds. Called with both batches empty.
    fn resync(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.st.resync_pending = false;
        self.st.last_resync = Some(Instant::now());
        if !self.dev_ok {
            return;
        }
        if let Err(e) = ioctl::snapshot(&self.dev, 0) {
            c.errors.fetch_add(1, Relaxed);
            eprintln!(
                "faultbridge: expdrv-device: {}: EXPDRV_IOC_SNAPSHOT failed: {e}",
                self.path.display()
            );
            return;
        }
        self.st.resyncs += 1;
        let mut fresh = ActiveSet::default();
        self.dev_batch.live = true;
        'read: loop {
            if let Err(e) = self.refill_device(c) {
                c.errors.fetch_add(1, Relaxed);
                eprintln!("faultbridge: expdrv-device: reading the snapshot failed: {e}");
                break;
            }
            if self.dev_batch.is_empty() {
                break;
            }
            while let Some(item) = self.dev_batch.peek() {
                if !item.snapshot {
                    // Normal records resume: the snapshot is complete; they
                    // stay in the batch for `pump`.
                    break 'read;
                }
                self.dev_batch.next += 1;
                let bytes = &self.dev_batch.buf[item.off..item.off + item.len];
                if let Ok(r) = Record::parse(bytes) {
                    self.st.publish_snapshot(&r, out, c, Some(&mut fresh));
                }
            }
        }
        self.st.reconcile(fresh, out, c);
    }

    /// Resyncs now if one is due and allowed, else arms the timer for when
    /// it is allowed. Returns true if it resynced.
    fn maybe_resync(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) -> bool {
        if !self.st.resync_pending {
            return false;
        }
        let wait = self.st.last_resync.map_or(Duration::ZERO, |t| {
            self.st.resync_interval.saturating_sub(t.elapsed())
        });
        if wait.is_zero() {
            self.resync(out, c);
            return true;
        }
        if !self.timer_armed {
            let when = Expiration::OneShot(TimeSpec::from_duration(wait));
            if self.timer.set(when, TimerSetTimeFlags::empty()).is_ok() {
                self.timer_armed = true;
            }
        }
        false
    }
}

impl DeviceState {
    fn live(
        &mut self,
        r: &Record<'_>,
        kind: FaultKind,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
    ) {
        let seq = r.sequence();
        let seen = self.seq.observe(DRIVER, seq);
        if matches!(
            seen,
            Seen::Gap { .. } | Seen::Restart { .. } | Seen::Jumped { .. }
        ) {
            // What was lost may have changed the active set.
            self.resync_pending = true;
        }
        report_seen(seen, Source::ExpdrvDevice, out, c);
        c.received.fetch_add(1, Relaxed);
        let (cat, kw) = (r.category(), r.keyword());
        match kind {
            FaultKind::Fault => {
                if self.active.get(cat, kw).is_some_and(|a| a.sequence == seq) {
                    // Already replayed by the snapshot.
                    return;
                }
                let a = Active {
                    sequence: seq,
                    event_code: r.event_code(),
                    device_index: r.device_index(),
                    driver_id: r.driver_id(),
                };
                if !self.active.set(cat, kw, a) {
                    full(c);
                }
            }
            FaultKind::Clear => {
                self.active.remove(cat, kw);
            }
        }
        out.fault(Source::ExpdrvDevice, kind, r);
        c.delivered.fetch_add(1, Relaxed);
    }

    /// A record replayed by `EXPDRV_IOC_SNAPSHOT`: published unless the
    /// source already holds exactly it; noted in `fresh` during a resync.
    fn publish_snapshot(
        &mut self,
        r: &Record<'_>,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
        fresh: Option<&mut ActiveSet>,
    ) {
        let (cat, kw) = (r.category(), r.keyword());
        let a = Active {
            sequence: r.sequence(),
            event_code: r.event_code(),
            device_index: r.device_index(),
            driver_id: r.driver_id(),
        };
        c.received.fetch_add(1, Relaxed);
        let known = self.active.get(cat, kw) == Some(&a);
        if let Some(fresh) = fresh {
            fresh.set(cat, kw, a);
        }
        if !known {
            if !self.active.set(cat, kw, a) {
                full(c);
            }
            out.fault(Source::ExpdrvDevice, FaultKind::Fault, r);
            c.delivered.fetch_add(1, Relaxed);
        }
    }

    /// After a snapshot: faults held active that the driver no longer has
    /// (their CLEAR was lost) get a CLEAR flagged SNAPSHOT; `fresh` becomes
    /// the active set.
    fn reconcile(&mut self, fresh: ActiveSet, out: &mut Dispatch<'_>, c: &SourceCounters) {
        let mut gone: Vec<(Category, Box<str>, Active)> = self
            .active
            .iter()
            .filter(|(c, k, _)| fresh.get(*c, k).is_none())
            .map(|(c, k, a)| (c, k.into(), *a))
            .collect();
        gone.sort_by_key(|(_, _, a)| a.sequence);
        let cursor = self.seq.last(DRIVER).unwrap_or(0);
        for (category, keyword, a) in gone {
            self.synth.clear();
            RecordSpec {
                flags: F_SNAPSHOT,
                sequence: cursor.max(a.sequence),
                timestamp_ns: monotonic_ns(),
                category: category.code(),
                severity: Severity::Info.code(),
                event_code: clear_code(category, a.event_code),
                device_index: a.device_index,
                keyword: keyword.as_bytes(),
                detail: b"cleared while records were lost",
                driver_id: a.driver_id,
            }
            .encode_into(&mut self.synth);
            if let Ok(r) = Record::parse(&self.synth) {
                out.fault(Source::ExpdrvDevice, FaultKind::Clear, &r);
                c.delivered.fetch_add(1, Relaxed);
            }
        }
        self.active = fresh;
    }
}

/// A fault not held because the active set is full: counted, thinly logged.
fn full(c: &SourceCounters) {
    let n = c.untracked.fetch_add(1, Relaxed) + 1;
    if thinned(n) {
        eprintln!(
            "faultbridge: expdrv-device: {MAX_ACTIVE} faults are held active: a further one is published but not reconciled by resyncs ({n} so far)"
        );
    }
}

impl super::IngestSource for ExpdrvDevice {
    fn source(&self) -> Source {
        Source::ExpdrvDevice
    }

    /// The device (a file without poll support is refused here), the
    /// netlink socket, and the resync timer.
    fn register(&mut self, registry: &Registry, tokens: SourceTokens) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.dev.as_raw_fd()),
            tokens.token(DEVICE),
            Interest::READABLE,
        )?;
        if let Some(n) = &self.netlink {
            n.register(registry, tokens.token(NETLINK))?;
        }
        registry.register(
            &mut SourceFd(&self.timer.as_fd().as_raw_fd()),
            tokens.token(TIMER),
            Interest::READABLE,
        )?;
        self.registry = Some(registry.try_clone()?);
        self.tokens = Some(tokens);
        Ok(())
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.clone()
    }

    fn can_hand_over(&self) -> bool {
        true
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        if self.dev_ok {
            registry.deregister(&mut SourceFd(&self.dev.as_raw_fd()))?;
        }
        if let Some(n) = &self.netlink {
            n.deregister(registry)?;
        }
        registry.deregister(&mut SourceFd(&self.timer.as_fd().as_raw_fd()))
    }

    /// The open device and the netlink socket (duplicates of the same open
    /// files), the cursor, the acknowledged position and the faults held
    /// active: the taking process reads on where this one stopped, with the
    /// same view of the driver's active set.
    fn hand_over(&self) -> Option<super::HandedSource> {
        let mut fds = vec![std::os::fd::OwnedFd::from(self.dev.try_clone().ok()?)];
        if let Some(n) = &self.netlink {
            fds.push(n.socket().try_clone().ok()?.into_fd());
        }
        let handed = Handed {
            path: self.path.display().to_string(),
            dev_ok: self.dev_ok,
            netlink: self.netlink.is_some(),
            acked: self.st.acked,
            resync_pending: self.st.resync_pending,
            active: self
                .st
                .active
                .iter()
                .map(|(c, keyword, a)| HandedActive {
                    category: c.code(),
                    keyword: keyword.to_string(),
                    sequence: a.sequence,
                    event_code: a.event_code,
                    device_index: a.device_index,
                    driver_id: a.driver_id,
                })
                .collect(),
        };
        let mut state = super::HandedState::new(
            Source::ExpdrvDevice,
            self.netlink.as_ref().map_or(0, |n| n.socket().protocol()),
        );
        state.extra = serde_json::to_value(handed).ok()?;
        self.st.seq.hand_over(&mut state);
        Some(super::HandedSource { fds, state })
    }

    /// Opens the device again (the driver is back): its records are read
    /// again, after a resync that reconciles what changed meanwhile.
    fn recover(&mut self) -> Result<(), String> {
        if self.dev_ok {
            return Ok(());
        }
        let (Some(registry), Some(tokens)) = (&self.registry, self.tokens) else {
            return Err("not polled by the ingest loop".into());
        };
        let dev = File::options()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC).bits())
            .open(&self.path)
            .map_err(|e| format!("{}: cannot open it: {e}", self.path.display()))?;
        let info = ioctl::get_info(&dev)
            .map_err(|e| format!("{}: EXPDRV_IOC_GET_INFO failed: {e}", self.path.display()))?;
        if info.abi_version != u32::from(ABI_VERSION) {
            return Err(format!(
                "{}: the driver speaks ABI {}, not {ABI_VERSION}",
                self.path.display(),
                info.abi_version
            ));
        }
        registry
            .register(
                &mut SourceFd(&dev.as_raw_fd()),
                tokens.token(DEVICE),
                Interest::READABLE,
            )
            .map_err(|e| format!("{}: cannot poll it: {e}", self.path.display()))?;
        eprintln!(
            "faultbridge: expdrv-device: {}: reading it again (driver {:?}, last sequence {})",
            self.path.display(),
            info.driver_name(),
            info.last_sequence
        );
        self.dev = dev;
        self.info = info;
        self.dev_ok = true;
        self.trouble = None;
        self.st.acked = 0;
        self.st.resync_pending = true;
        self.dev_batch.live = true;
        Ok(())
    }

    fn on_event(
        &mut self,
        slot: usize,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
    ) -> io::Result<u64> {
        let before = c.delivered.load(Relaxed);
        if (self.timer_armed || slot == TIMER) && self.timer.wait().is_ok() {
            self.timer_armed = false;
        }
        self.maybe_resync(out, c);
        self.dev_batch.live = true;
        self.nl_batch.live = true;
        self.pump(out, c)?;
        if self.maybe_resync(out, c) {
            self.dev_batch.live = true;
            self.nl_batch.live = true;
            self.pump(out, c)?;
        }
        let cursor = self.st.seq.last(DRIVER).unwrap_or(0);
        if self.dev_ok && cursor > self.st.acked {
            match ioctl::ack(&self.dev, cursor) {
                Ok(()) => self.st.acked = cursor,
                Err(e) => {
                    let n = c.errors.fetch_add(1, Relaxed) + 1;
                    // Acknowledge again with the next batch.
                    if thinned(n) {
                        eprintln!("faultbridge: expdrv-device: EXPDRV_IOC_ACK failed: {e}");
                    }
                }
            }
        }
        Ok(c.delivered.load(Relaxed) - before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Monitors;
    use crate::sources::auth::Accept;
    use faultbridge_bus::{Event, SubscribeOptions, bus};
    use faultbridge_ffi::sys::netlink::{NETLINK_USERSOCK, NetlinkSocket};
    use faultbridge_ffi::wire::device::push_record;
    use faultbridge_ffi::wire::nlmsg::push_nlmsg;
    use faultbridge_ffi::wire::record::{EXPDRV_MSG_CLEAR, EXPDRV_MSG_FAULT};

    /// A source whose device batch is fed by the test (nothing is read from
    /// the null device) and whose netlink socket (bound to a port, taking
    /// datagrams from anyone) is fed through a second socket, returned too.
    fn source(netlink: bool, cursor: u64) -> (ExpdrvDevice, Option<NetlinkSocket>) {
        let (listener, tx) = if netlink {
            let rx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
            rx.bind(0, 0).unwrap();
            let tx = NetlinkSocket::open(NETLINK_USERSOCK).unwrap();
            tx.bind(0, 0).unwrap();
            (
                Some(Listener::from_socket(rx, Accept::Any, NETLINK_BUF)),
                Some(tx),
            )
        } else {
            (None, None)
        };
        let mut dev_batch = Batch::new(0);
        dev_batch.live = false;
        let mut nl_batch = Batch::new(0);
        nl_batch.live = false;
        let mut seq = SeqTracker::default();
        seq.set(DRIVER, cursor);
        let src = ExpdrvDevice {
            path: PathBuf::from("/dev/null"),
            dev: File::open("/dev/null").unwrap(),
            dev_ok: false,
            info: ExpdrvInfoRaw::default(),
            netlink: listener,
            timer: TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK).unwrap(),
            timer_armed: false,
            registry: None,
            tokens: None,
            trouble: None,
            dev_batch,
            nl_batch,
            st: DeviceState {
                seq,
                acked: 0,
                active: ActiveSet::default(),
                resync_interval: Duration::from_secs(1),
                last_resync: None,
                resync_pending: false,
                resyncs: 0,
                synth: Vec::new(),
            },
        };
        (src, tx)
    }

    fn encode(seq: u64, category: Category, event_code: u32) -> Vec<u8> {
        let mut v = Vec::new();
        RecordSpec {
            flags: 0,
            sequence: seq,
            timestamp_ns: 1,
            category: category.code(),
            severity: Severity::Error.code(),
            event_code,
            device_index: 0,
            keyword: b"am0",
            detail: b"",
            driver_id: 1,
        }
        .encode_into(&mut v);
        v
    }

    /// Queues live device records (sequence, category, event code) as a
    /// `read()` would return them, typed by `device_record_kind`.
    fn load_device(b: &mut Batch, records: &[(u64, Category, u32)]) {
        b.buf.clear();
        b.clear();
        for &(seq, category, event_code) in records {
            let off = b.buf.len();
            push_record(&mut b.buf, &encode(seq, category, event_code));
            let r = Record::parse(&b.buf[off..]).unwrap();
            b.items.push(Item {
                off,
                len: r.as_bytes().len(),
                seq,
                kind: device_record_kind(&r),
                snapshot: false,
            });
        }
    }

    /// Sends live records (sequence, category, event code, kind) to the
    /// source's netlink socket in one datagram, as the driver would.
    fn send_netlink(
        src: &mut ExpdrvDevice,
        tx: &NetlinkSocket,
        records: &[(u64, Category, u32, FaultKind)],
    ) {
        let mut dg = Vec::new();
        for &(seq, category, event_code, kind) in records {
            let ty = match kind {
                FaultKind::Fault => EXPDRV_MSG_FAULT,
                FaultKind::Clear => EXPDRV_MSG_CLEAR,
            };
            push_nlmsg(
                &mut dg,
                ty,
                0,
                seq as u32,
                0,
                &encode(seq, category, event_code),
            );
        }
        let port = src.netlink.as_ref().unwrap().socket().port_id().unwrap();
        tx.send_to(port, 0, &dg).unwrap();
        src.nl_batch.live = true;
    }

    const AM_CODE: u32 = 0x0004_0010;

    #[test]
    fn with_netlink_joined_an_ha_am_clear_read_first_from_the_device_arrives_as_clear() {
        let (mut src, tx) = source(true, 0);
        let tx = tx.unwrap();
        let (mut publisher, handle) = bus();
        let sub = handle.subscribe(SubscribeOptions::new("t")).unwrap();
        let mut monitors = Monitors::new(&[]);
        let c = SourceCounters::default();
        let mut out = Dispatch {
            publisher: &mut publisher,
            monitors: &mut monitors,
        };
        use FaultKind::{Clear, Fault};
        // The device is ahead: it already has the CLEAR (2) netlink has
        // not delivered yet.
        load_device(
            &mut src.dev_batch,
            &[(1, Category::HaAm, AM_CODE), (2, Category::HaAm, AM_CODE)],
        );
        send_netlink(&mut src, &tx, &[(1, Category::HaAm, AM_CODE, Fault)]);
        src.pump(&mut out, &c).unwrap();
        // Then netlink delivers the CLEAR.
        send_netlink(&mut src, &tx, &[(2, Category::HaAm, AM_CODE, Clear)]);
        src.pump(&mut out, &c).unwrap();
        let mut got = Vec::new();
        while let Some(Event::Fault(f)) = sub.try_recv() {
            got.push((f.sequence(), f.cleared()));
        }
        assert_eq!(got, [(1, false), (2, true)]);
        assert_eq!(src.st.active.get(Category::HaAm, "am0"), None);
        assert_eq!(src.st.active.len(), 0);
        assert_eq!(c.untyped.load(Relaxed), 0);
        assert_eq!(c.delivered.load(Relaxed), 2);
    }

    #[test]
    fn device_only_records_of_categories_without_a_clear_code_are_counted_untyped() {
        let (mut src, _) = source(false, 0);
        let (mut publisher, handle) = bus();
        let sub = handle.subscribe(SubscribeOptions::new("t")).unwrap();
        let mut monitors = Monitors::new(&[]);
        let c = SourceCounters::default();
        let mut out = Dispatch {
            publisher: &mut publisher,
            monitors: &mut monitors,
        };
        load_device(
            &mut src.dev_batch,
            &[
                (1, Category::HaAm, AM_CODE),
                (2, Category::HaAm, AM_CODE),
                (3, Category::Nic, event::NIC_LINK_DOWN),
                (4, Category::Nic, event::NIC_LINK_UP),
            ],
        );
        src.pump(&mut out, &c).unwrap();
        let mut got = Vec::new();
        while let Some(Event::Fault(f)) = sub.try_recv() {
            got.push((f.sequence(), f.cleared()));
        }
        // The HA/AM CLEAR cannot be told from a fault here; the NIC one can.
        assert_eq!(got, [(1, false), (2, false), (3, false), (4, true)]);
        assert_eq!(c.untyped.load(Relaxed), 2);
    }

    /// Every event published so far: (sequence, cleared) of faults, and
    /// the ranges of losses as (first, last).
    type Seqs = Vec<(u64, bool)>;
    type Ranges = Vec<(u64, u64)>;

    fn events(sub: &faultbridge_bus::Subscription) -> (Seqs, Ranges) {
        let (mut faults, mut lost) = (Vec::new(), Vec::new());
        while let Some(ev) = sub.try_recv() {
            match ev {
                Event::Fault(f) => faults.push((f.sequence(), f.cleared())),
                Event::Lost(l) => lost.push((l.first_sequence, l.last_sequence)),
            }
        }
        (faults, lost)
    }

    #[test]
    fn a_reload_whose_record_1_is_missed_reports_it_lost_and_drops_nothing() {
        for netlink in [true, false] {
            // The driver had sent 100 records; it is reloaded and its first
            // record of the new load never arrives.
            let (mut src, tx) = source(netlink, 100);
            let (mut publisher, handle) = bus();
            let sub = handle.subscribe(SubscribeOptions::new("t")).unwrap();
            let mut monitors = Monitors::new(&[]);
            let c = SourceCounters::default();
            let mut out = Dispatch {
                publisher: &mut publisher,
                monitors: &mut monitors,
            };
            let nic = |s| (s, Category::Nic, event::NIC_LINK_DOWN, FaultKind::Fault);
            match &tx {
                Some(tx) => send_netlink(&mut src, tx, &[nic(2), nic(3), nic(4)]),
                None => load_device(
                    &mut src.dev_batch,
                    &[2, 3, 4].map(|s| (s, Category::Nic, event::NIC_LINK_DOWN)),
                ),
            }
            src.pump(&mut out, &c).unwrap();
            let (faults, lost) = events(&sub);
            assert_eq!(faults, [(2, false), (3, false), (4, false)], "{netlink}");
            assert_eq!(lost, [(1, 1)], "netlink {netlink}");
            assert_eq!(c.restarts.load(Relaxed), 1);
            assert_eq!(c.delivered.load(Relaxed), 3);
            assert_eq!(src.st.seq.last(DRIVER), Some(4));
            assert!(src.st.resync_pending);
        }
    }

    #[test]
    fn a_forged_sequence_far_ahead_does_not_silence_the_driver() {
        let (mut src, _) = source(false, 10);
        let (mut publisher, handle) = bus();
        let sub = handle.subscribe(SubscribeOptions::new("t")).unwrap();
        let mut monitors = Monitors::new(&[]);
        let c = SourceCounters::default();
        let mut out = Dispatch {
            publisher: &mut publisher,
            monitors: &mut monitors,
        };
        load_device(
            &mut src.dev_batch,
            &[u64::MAX, 11, 12, 5].map(|s| (s, Category::Nic, event::NIC_LINK_DOWN)),
        );
        src.pump(&mut out, &c).unwrap();
        let (faults, lost) = events(&sub);
        // Every record is delivered and accounted for; nothing is lost.
        let seqs: Vec<u64> = faults.iter().map(|f| f.0).collect();
        assert_eq!(seqs, [u64::MAX, 11, 12, 5]);
        assert_eq!(lost, []);
        assert_eq!(c.implausible.load(Relaxed), 1);
        assert_eq!(c.behind.load(Relaxed), 1);
        assert_eq!(c.restarts.load(Relaxed), 0);
        assert_eq!(src.st.seq.last(DRIVER), Some(12));
    }

    #[test]
    fn cleared_keywords_leave_the_active_set() {
        let (mut src, _) = source(false, 0);
        let (mut publisher, _handle) = bus();
        let mut monitors = Monitors::new(&[]);
        let c = SourceCounters::default();
        let mut out = Dispatch {
            publisher: &mut publisher,
            monitors: &mut monitors,
        };
        let mut records = Vec::new();
        for i in 0..100u64 {
            records.push((2 * i + 1, Category::Nic, event::NIC_LINK_DOWN));
            records.push((2 * i + 2, Category::Nic, event::NIC_LINK_UP));
        }
        load_device(&mut src.dev_batch, &records);
        src.pump(&mut out, &c).unwrap();
        assert_eq!(c.delivered.load(Relaxed), 200);
        assert_eq!(src.st.active.len(), 0);
    }
}

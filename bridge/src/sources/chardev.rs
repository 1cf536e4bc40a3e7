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

use super::Dispatch;
use super::synth::{StartupGate, report_lost};
use crate::config::ExpdrvConfig;
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, LostReason, Source};
use faultbridge_ffi::sys::ioctl;
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::sys::netlink::{NetlinkError, NetlinkSocket, Recv, group_mask};
use faultbridge_ffi::wire::info::ExpdrvInfoRaw;
use faultbridge_ffi::wire::nlmsg::NlMsgIter;
use faultbridge_ffi::wire::record::{
    ABI_VERSION, Category, EXPDRV_MSG_CLEAR, EXPDRV_MSG_FAULT, F_SNAPSHOT, RECORD_HDR_LEN,
    RECORD_MAX, Record, RecordSpec, Severity, event,
};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use thiserror::Error;

const DEVICE: Token = Token(0);
const NETLINK: Token = Token(1);
const TIMER: Token = Token(2);
const GATE: Token = Token(3);
/// Room for many records per `read()`, and always for the largest one.
const READ_BUF: usize = 2 * (RECORD_MAX + 1);
const NETLINK_BUF: usize = 256 * 1024;

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
    #[error("{path}: cannot poll it")]
    Poll {
        path: PathBuf,
        #[source]
        source: io::Error,
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
/// and updated without allocating once a keyword has been seen.
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

    fn set(&mut self, c: Category, keyword: &str, a: Active) {
        match self.by_keyword.get_mut(keyword) {
            Some(slots) => slots[slot(c)] = Some(a),
            None => {
                let mut slots = [None; 6];
                slots[slot(c)] = Some(a);
                self.by_keyword.insert(keyword.into(), slots);
            }
        }
    }

    fn remove(&mut self, c: Category, keyword: &str) {
        if let Some(slots) = self.by_keyword.get_mut(keyword) {
            slots[slot(c)] = None;
        }
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

/// The expanded driver's char device source.
#[derive(Debug)]
pub struct ExpdrvDevice {
    path: PathBuf,
    dev: File,
    dev_ok: bool,
    info: ExpdrvInfoRaw,
    netlink: Option<NetlinkSocket>,
    poll: Poll,
    events: Events,
    timer: TimerFd,
    timer_armed: bool,
    gate: StartupGate,
    dev_batch: Batch,
    nl_batch: Batch,
    /// The newest live sequence handled.
    cursor: u64,
    acked: u64,
    active: ActiveSet,
    resync_interval: Duration,
    last_resync: Option<Instant>,
    resync_pending: bool,
    overrun_pending: bool,
    resyncs: u64,
    synth: Vec<u8>,
}

impl ExpdrvDevice {
    /// Opens the device, learns the driver's netlink protocol and group with
    /// `EXPDRV_IOC_GET_INFO` and joins it. A netlink socket that cannot be
    /// opened is reported and the device alone is read.
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
        let netlink = match open_netlink(&info, cfg) {
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
        let poll_err = |source: io::Error| DeviceError::Poll {
            path: path.to_path_buf(),
            source,
        };
        let poll = Poll::new().map_err(poll_err)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|e| poll_err(e.into()))?;
        let gate = StartupGate::new().map_err(poll_err)?;
        poll.registry()
            .register(&mut SourceFd(&gate.raw_fd()), GATE, Interest::READABLE)
            .map_err(poll_err)?;
        // A file without poll support (a plain file) is refused here.
        poll.registry()
            .register(&mut SourceFd(&dev.as_raw_fd()), DEVICE, Interest::READABLE)
            .map_err(poll_err)?;
        if let Some(s) = &netlink {
            poll.registry()
                .register(&mut SourceFd(&s.as_raw_fd()), NETLINK, Interest::READABLE)
                .map_err(poll_err)?;
        }
        poll.registry()
            .register(
                &mut SourceFd(&timer.as_fd().as_raw_fd()),
                TIMER,
                Interest::READABLE,
            )
            .map_err(poll_err)?;
        eprintln!(
            "faultbridge: expdrv-device: {}: driver {:?}, ABI {}, last sequence {}, netlink protocol {} group {}",
            path.display(),
            info.driver_name(),
            info.abi_version,
            info.last_sequence,
            info.netlink_protocol,
            info.netlink_group
        );
        Ok(ExpdrvDevice {
            path: path.to_path_buf(),
            dev,
            dev_ok: true,
            info,
            netlink,
            poll,
            events: Events::with_capacity(8),
            timer,
            timer_armed: false,
            gate,
            dev_batch: Batch::new(READ_BUF),
            nl_batch: Batch::new(NETLINK_BUF),
            cursor: info.last_sequence,
            acked: 0,
            active: ActiveSet::default(),
            resync_interval: cfg.resync_interval,
            last_resync: None,
            // The start-up snapshot.
            resync_pending: true,
            overrun_pending: false,
            resyncs: 0,
            synth: Vec::with_capacity(256),
        })
    }

    /// What `EXPDRV_IOC_GET_INFO` said at start-up.
    pub fn info(&self) -> &ExpdrvInfoRaw {
        &self.info
    }

    /// Resyncs done (the start-up snapshot included).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    fn refill_netlink(&mut self, c: &SourceCounters) -> io::Result<()> {
        let Some(sock) = &self.netlink else {
            self.nl_batch.live = false;
            return Ok(());
        };
        let b = &mut self.nl_batch;
        b.clear();
        loop {
            match sock.recv(&mut b.buf)? {
                Recv::Datagram { len, stored } => {
                    c.datagrams.fetch_add(1, Relaxed);
                    if len > stored {
                        c.truncated.fetch_add(1, Relaxed);
                    }
                    let base = b.buf.as_ptr() as usize;
                    let mut msgs = NlMsgIter::new(&b.buf[..stored]);
                    for m in &mut msgs {
                        let kind = match m.header.nlmsg_type {
                            EXPDRV_MSG_FAULT => FaultKind::Fault,
                            EXPDRV_MSG_CLEAR => FaultKind::Clear,
                            t if t > EXPDRV_MSG_CLEAR => {
                                c.reserved_types.fetch_add(1, Relaxed);
                                continue;
                            }
                            _ => continue,
                        };
                        match Record::parse(m.payload) {
                            Ok(r) => b.items.push(Item {
                                off: m.payload.as_ptr() as usize - base,
                                len: r.as_bytes().len(),
                                seq: r.sequence(),
                                kind,
                                snapshot: r.is_snapshot(),
                            }),
                            Err(e) => malformed(c, &e),
                        }
                    }
                    if msgs.trailing_bytes() > 0 {
                        c.truncated.fetch_add(1, Relaxed);
                    }
                    return Ok(());
                }
                Recv::Overrun => {
                    c.overruns.fetch_add(1, Relaxed);
                    self.overrun_pending = true;
                    self.resync_pending = true;
                }
                Recv::WouldBlock => {
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
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&self.dev.as_raw_fd()));
                    return Ok(());
                }
            }
        };
        if n == 0 {
            b.live = false;
            return Ok(());
        }
        c.datagrams.fetch_add(1, Relaxed);
        let mut off = 0;
        while off + RECORD_HDR_LEN <= n {
            match Record::parse(&b.buf[off..n]) {
                Ok(r) => {
                    let len = r.as_bytes().len();
                    b.items.push(Item {
                        off,
                        len,
                        seq: r.sequence(),
                        kind: device_record_kind(&r),
                        snapshot: r.is_snapshot(),
                    });
                    off += (len + 3) & !3;
                }
                Err(e) => {
                    malformed(c, &e);
                    // Skip it by its total_len when that is usable.
                    let total = b.buf[off + 8..off + 12]
                        .first_chunk::<4>()
                        .map_or(0, |t| u32::from_ne_bytes(*t) as usize);
                    if total < RECORD_HDR_LEN || off + total > n {
                        off = n;
                        break;
                    }
                    off += (total + 3) & !3;
                }
            }
        }
        if off < n {
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
            let (batch, item) = if from_device {
                let b = &mut self.dev_batch;
                b.next += 1;
                (Which::Device, b.items[b.next - 1])
            } else {
                let b = &mut self.nl_batch;
                b.next += 1;
                (Which::Netlink, b.items[b.next - 1])
            };
            self.handle(batch, item, out, c);
        }
    }

    fn handle(&mut self, which: Which, item: Item, out: &mut Dispatch<'_>, c: &SourceCounters) {
        let buf = match which {
            Which::Device => std::mem::take(&mut self.dev_batch.buf),
            Which::Netlink => std::mem::take(&mut self.nl_batch.buf),
        };
        if let Ok(r) = Record::parse(&buf[item.off..item.off + item.len]) {
            if item.snapshot {
                // Outside a resync: still the driver's word on an active fault.
                self.publish_snapshot(&r, out, c, None);
            } else {
                if which == Which::Device && !kind_is_certain(r.category()) {
                    c.untyped.fetch_add(1, Relaxed);
                }
                self.live(&r, item.kind, out, c);
            }
        }
        match which {
            Which::Device => self.dev_batch.buf = buf,
            Which::Netlink => self.nl_batch.buf = buf,
        }
    }

    fn live(
        &mut self,
        r: &Record<'_>,
        kind: FaultKind,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
    ) {
        let seq = r.sequence();
        let cursor = self.cursor;
        if seq == cursor.wrapping_add(1) {
            // In order.
        } else if seq > cursor {
            let reason = if std::mem::take(&mut self.overrun_pending) {
                LostReason::Overrun
            } else {
                LostReason::SequenceGap
            };
            report_lost(Source::ExpdrvDevice, cursor + 1, seq - 1, reason, out, c);
            self.resync_pending = true;
        } else if seq == 1 && cursor > 1 {
            c.restarts.fetch_add(1, Relaxed);
            eprintln!("faultbridge: expdrv-device: sequence restarted at 1 (driver reloaded)");
            self.resync_pending = true;
        } else {
            // Already handled: delivered by the other transport.
            return;
        }
        self.cursor = seq;
        c.received.fetch_add(1, Relaxed);
        let (cat, kw) = (r.category(), r.keyword());
        match kind {
            FaultKind::Fault => {
                if self.active.get(cat, kw).is_some_and(|a| a.sequence == seq) {
                    // Already replayed by the snapshot.
                    return;
                }
                self.active.set(
                    cat,
                    kw,
                    Active {
                        sequence: seq,
                        event_code: r.event_code(),
                        device_index: r.device_index(),
                        driver_id: r.driver_id(),
                    },
                );
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
            self.active.set(cat, kw, a);
            out.fault(Source::ExpdrvDevice, FaultKind::Fault, r);
            c.delivered.fetch_add(1, Relaxed);
        }
    }

    /// `EXPDRV_IOC_SNAPSHOT(0)`: the driver's whole active set, reconciled
    /// with what the source holds. Called with both batches empty.
    fn resync(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.resync_pending = false;
        self.last_resync = Some(Instant::now());
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
        self.resyncs += 1;
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
                let buf = std::mem::take(&mut self.dev_batch.buf);
                if let Ok(r) = Record::parse(&buf[item.off..item.off + item.len]) {
                    self.publish_snapshot(&r, out, c, Some(&mut fresh));
                }
                self.dev_batch.buf = buf;
            }
        }
        // Held active, but not by the driver: their CLEAR was lost.
        let mut gone: Vec<(Category, Box<str>, Active)> = self
            .active
            .iter()
            .filter(|(c, k, _)| fresh.get(*c, k).is_none())
            .map(|(c, k, a)| (c, k.into(), *a))
            .collect();
        gone.sort_by_key(|(_, _, a)| a.sequence);
        for (category, keyword, a) in gone {
            self.synth.clear();
            RecordSpec {
                flags: F_SNAPSHOT,
                sequence: self.cursor.max(a.sequence),
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

    /// Resyncs now if one is due and allowed, else arms the timer for when
    /// it is allowed. Returns true if it resynced.
    fn maybe_resync(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) -> bool {
        if !self.resync_pending {
            return false;
        }
        // The start-up snapshot waits for the first subscribers.
        if self.last_resync.is_none() && !self.gate.is_open(out) {
            return false;
        }
        let wait = self.last_resync.map_or(Duration::ZERO, |t| {
            self.resync_interval.saturating_sub(t.elapsed())
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

fn open_netlink(info: &ExpdrvInfoRaw, cfg: &ExpdrvConfig) -> Result<NetlinkSocket, NetlinkError> {
    let sock = NetlinkSocket::open(info.netlink_protocol as i32)?;
    sock.set_recv_buffer(cfg.recv_buffer)?;
    let mask = group_mask(info.netlink_group);
    sock.bind(0, mask)?;
    if mask == 0 {
        sock.join_group(info.netlink_group)?;
    }
    Ok(sock)
}

fn malformed(c: &SourceCounters, e: &faultbridge_ffi::ParseError) {
    let n = c.malformed[e.reason().index()].fetch_add(1, Relaxed) + 1;
    if n <= 5 || n % 10_000 == 0 {
        eprintln!(
            "faultbridge: expdrv-device: malformed record dropped ({n} so far for this reason): {e}"
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Device,
    Netlink,
}

impl super::IngestSource for ExpdrvDevice {
    fn source(&self) -> Source {
        Source::ExpdrvDevice
    }

    fn raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    fn on_readable(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) -> io::Result<u64> {
        let before = c.delivered.load(Relaxed);
        // Empty the inner ready list; every transport is drained below.
        let _ = self.poll.poll(&mut self.events, Some(Duration::ZERO));
        if (self.timer_armed || self.events.iter().any(|e| e.token() == TIMER))
            && self.timer.wait().is_ok()
        {
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
        if self.dev_ok && self.cursor > self.acked {
            match ioctl::ack(&self.dev, self.cursor) {
                Ok(()) => self.acked = self.cursor,
                Err(e) => {
                    c.errors.fetch_add(1, Relaxed);
                    // Acknowledge again with the next batch.
                    if c.errors.load(Relaxed) <= 5 {
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
    use faultbridge_bus::{Event, SubscribeOptions, bus};
    use faultbridge_ffi::sys::netlink::NETLINK_USERSOCK;

    /// A source whose transports are fed by the test: nothing is read from
    /// the (null) device or the socket.
    fn source(netlink: bool) -> ExpdrvDevice {
        let netlink = netlink.then(|| NetlinkSocket::open(NETLINK_USERSOCK).unwrap());
        let mut dev_batch = Batch::new(0);
        dev_batch.live = false;
        let mut nl_batch = Batch::new(0);
        nl_batch.live = false;
        ExpdrvDevice {
            path: PathBuf::from("/dev/null"),
            dev: File::open("/dev/null").unwrap(),
            dev_ok: false,
            info: ExpdrvInfoRaw::default(),
            netlink,
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(1),
            timer: TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK).unwrap(),
            timer_armed: false,
            gate: StartupGate::new().unwrap(),
            dev_batch,
            nl_batch,
            cursor: 0,
            acked: 0,
            active: ActiveSet::default(),
            resync_interval: Duration::from_secs(1),
            last_resync: None,
            resync_pending: false,
            overrun_pending: false,
            resyncs: 0,
            synth: Vec::new(),
        }
    }

    /// Queues live records (sequence, category, event code, kind) on a
    /// batch as its transport would: a netlink record with its message
    /// type, a device record typed by `device_record_kind`.
    fn load(b: &mut Batch, device: bool, records: &[(u64, Category, u32, FaultKind)]) {
        b.buf.clear();
        b.clear();
        for &(seq, category, event_code, kind) in records {
            let off = b.buf.len();
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
            .encode_into(&mut b.buf);
            let r = Record::parse(&b.buf[off..]).unwrap();
            let len = r.as_bytes().len();
            let kind = if device { device_record_kind(&r) } else { kind };
            b.items.push(Item {
                off,
                len,
                seq,
                kind,
                snapshot: false,
            });
            b.buf.resize((b.buf.len() + 3) & !3, 0);
        }
    }

    const AM_CODE: u32 = 0x0004_0010;

    #[test]
    fn with_netlink_joined_an_ha_am_clear_read_first_from_the_device_arrives_as_clear() {
        let mut src = source(true);
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
        load(
            &mut src.dev_batch,
            true,
            &[
                (1, Category::HaAm, AM_CODE, Fault),
                (2, Category::HaAm, AM_CODE, Clear),
            ],
        );
        load(
            &mut src.nl_batch,
            false,
            &[(1, Category::HaAm, AM_CODE, Fault)],
        );
        src.pump(&mut out, &c).unwrap();
        // Then netlink delivers the CLEAR.
        load(
            &mut src.nl_batch,
            false,
            &[(2, Category::HaAm, AM_CODE, Clear)],
        );
        src.pump(&mut out, &c).unwrap();
        let mut got = Vec::new();
        while let Some(Event::Fault(f)) = sub.try_recv() {
            got.push((f.sequence(), f.cleared()));
        }
        assert_eq!(got, [(1, false), (2, true)]);
        assert_eq!(src.active.get(Category::HaAm, "am0"), None);
        assert_eq!(c.untyped.load(Relaxed), 0);
        assert_eq!(c.delivered.load(Relaxed), 2);
    }

    #[test]
    fn device_only_records_of_categories_without_a_clear_code_are_counted_untyped() {
        let mut src = source(false);
        let (mut publisher, handle) = bus();
        let sub = handle.subscribe(SubscribeOptions::new("t")).unwrap();
        let mut monitors = Monitors::new(&[]);
        let c = SourceCounters::default();
        let mut out = Dispatch {
            publisher: &mut publisher,
            monitors: &mut monitors,
        };
        use FaultKind::{Clear, Fault};
        load(
            &mut src.dev_batch,
            true,
            &[
                (1, Category::HaAm, AM_CODE, Fault),
                (2, Category::HaAm, AM_CODE, Clear),
                (3, Category::Nic, event::NIC_LINK_DOWN, Fault),
                (4, Category::Nic, event::NIC_LINK_UP, Clear),
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
}

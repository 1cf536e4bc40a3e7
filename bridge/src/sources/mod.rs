//! Fault sources. Each has its own name (`Fault(source, …)`), its own
//! counters and its own configuration section; the ingest loop polls them.

pub mod chardev;
pub mod expdrv;
pub mod fc;
pub mod rtnetlink;
pub mod seq;
pub mod synth;
pub mod uevent;

use crate::monitor::Monitors;
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, Lost, Publisher, Source};
use faultbridge_ffi::sys::netlink::{NetlinkSocket, Recv};
use faultbridge_ffi::wire::record::Record;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering::Relaxed;

/// A source read from a netlink socket, datagram by datagram: [`drain`]
/// reads and counts, the source says what a datagram or an overrun means.
pub(crate) trait DatagramSource {
    /// The source's name, for the log.
    fn name(&self) -> Source;
    /// The socket, and the buffer datagrams are received into.
    fn socket_and_buffer(&mut self) -> (&NetlinkSocket, &mut [u8]);
    /// The first `len` bytes of the buffer hold a datagram.
    fn datagram(&mut self, len: usize, out: &mut Dispatch<'_>, c: &SourceCounters);
    /// The socket overflowed (`ENOBUFS`, already counted): messages were lost.
    fn overrun(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters);
}

/// Truncated datagrams logged before logging thins out.
const TRUNCATION_LOG_FIRST: u64 = 5;

/// Reads `src`'s socket until it would block: counts datagrams, truncated
/// datagrams (`MSG_TRUNC`), overruns and errors, and hands each datagram and
/// each overrun to the source. Returns the records published meanwhile.
pub(crate) fn drain(
    src: &mut impl DatagramSource,
    out: &mut Dispatch<'_>,
    c: &SourceCounters,
) -> io::Result<u64> {
    let before = c.delivered.load(Relaxed);
    loop {
        let (sock, buf) = src.socket_and_buffer();
        match sock.recv(buf) {
            Ok(Recv::Datagram { len, stored }) => {
                c.datagrams.fetch_add(1, Relaxed);
                if len > stored {
                    let n = c.truncated.fetch_add(1, Relaxed) + 1;
                    if n <= TRUNCATION_LOG_FIRST || n % 10_000 == 0 {
                        eprintln!(
                            "faultbridge: {}: datagram of {len} bytes truncated to {stored} ({n} so far)",
                            src.name()
                        );
                    }
                }
                src.datagram(stored, out, c);
            }
            Ok(Recv::Overrun) => {
                c.overruns.fetch_add(1, Relaxed);
                src.overrun(out, c);
            }
            Ok(Recv::WouldBlock) => return Ok(c.delivered.load(Relaxed) - before),
            Err(e) => {
                c.errors.fetch_add(1, Relaxed);
                return Err(e);
            }
        }
    }
}

/// Where a source hands its records: the bus (every subscriber) and the
/// monitors (on this thread, no queue hop).
#[derive(Debug)]
pub struct Dispatch<'a> {
    pub publisher: &'a mut Publisher,
    pub monitors: &'a mut Monitors,
}

impl Dispatch<'_> {
    /// A validated fault or CLEAR.
    #[inline]
    pub fn fault(&mut self, source: Source, kind: FaultKind, record: &Record<'_>) {
        self.monitors.on_record(source, kind, record);
        self.publisher.publish(source, kind, record);
    }

    /// Records known to be missing.
    pub fn lost(&mut self, lost: Lost) {
        self.publisher.publish_lost(lost);
    }
}

/// A source the ingest loop polls: a descriptor that becomes readable, and
/// a handler that drains it, parses and publishes.
pub trait IngestSource: Send + std::fmt::Debug {
    /// The name of the source (`Fault(source, …)`, counters).
    fn source(&self) -> Source;
    /// The descriptor to poll for readability (edge-triggered: drain fully).
    fn raw_fd(&self) -> RawFd;
    /// Reads until the descriptor would block; returns the records published.
    fn on_readable(&mut self, out: &mut Dispatch<'_>, counters: &SourceCounters)
    -> io::Result<u64>;
    /// Restores the last sequence seen from `driver_id` (recorded before a
    /// restart), so a gap across the restart is reported as lost.
    fn restore_cursor(&mut self, driver_id: u32, last: u64) {
        let _ = (driver_id, last);
    }
}

/// Opens the sources of `config` other than the expanded driver's netlink
/// group: the driver's char device (`[sources.expdrv] device`, which brings
/// the driver's own netlink group), rtnetlink, FC transport and uevents. A
/// source that cannot start is reported on stderr and left out.
pub fn open_configured(config: &crate::Config, sources: &mut Vec<Box<dyn IngestSource>>) {
    fn report(name: Source, e: &(dyn std::error::Error + 'static)) {
        eprintln!(
            "faultbridge: source {name}: cannot start: {}",
            crate::error::error_chain(e)
        );
    }
    if let (true, Some(path)) = (config.expdrv.enabled, &config.expdrv.device) {
        match chardev::ExpdrvDevice::open(path, &config.expdrv) {
            Ok(s) => sources.push(Box::new(s)),
            Err(e) => {
                report(Source::ExpdrvDevice, &e);
                eprintln!(
                    "faultbridge: source expdrv: using the configured netlink protocol {} group {}",
                    config.expdrv.netlink_protocol, config.expdrv.netlink_group
                );
            }
        }
    }
    if config.rtnetlink.enabled {
        match rtnetlink::RtnetlinkSource::open(&config.rtnetlink) {
            Ok(s) => sources.push(Box::new(s)),
            Err(e) => report(Source::Rtnetlink, &e),
        }
    }
    if config.fc.enabled {
        match fc::FcSource::open(&config.fc) {
            Ok(s) => sources.push(Box::new(s)),
            Err(e) => report(Source::FcTransport, &e),
        }
    }
    if config.uevent.enabled {
        match uevent::UeventSource::open(&config.uevent) {
            Ok(s) => sources.push(Box::new(s)),
            Err(e) => report(Source::Uevent, &e),
        }
    }
}

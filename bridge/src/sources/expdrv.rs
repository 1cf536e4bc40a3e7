//! The expanded driver over netlink multicast (spec section 1.1): one socket
//! of the driver's protocol joined to its group; each datagram walked message
//! by message, each record parsed in place and published.

use super::Dispatch;
use super::seq::SeqTracker;
use super::synth::{report_lost, report_seen};
use crate::config::ExpdrvConfig;
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, LostReason, Source};
use faultbridge_ffi::sys::netlink::{NetlinkError, NetlinkSocket, group_mask};
use faultbridge_ffi::wire::nlmsg::{NLMSG_DONE, NLMSG_NOOP, NlMsgIter};
use faultbridge_ffi::wire::record::{EXPDRV_MSG_CLEAR, EXPDRV_MSG_FAULT, Record};
use std::io;
use std::sync::atomic::Ordering::Relaxed;

/// Room for the largest datagram we expect; larger ones are counted as truncated.
const RECV_BUF: usize = 256 * 1024;
/// Malformed records are logged at most this often per reason… in count:
/// the first few, then every 10 000th, so a storm cannot flood the log.
const LOG_FIRST: u64 = 5;

/// The netlink source of the expanded driver.
#[derive(Debug)]
pub struct ExpdrvNetlink {
    sock: NetlinkSocket,
    buf: Vec<u8>,
    seq: SeqTracker,
    source: Source,
}

impl ExpdrvNetlink {
    /// Opens the socket, sets the receive buffer and joins the group.
    pub fn open(cfg: &ExpdrvConfig) -> Result<Self, NetlinkError> {
        let sock = NetlinkSocket::open(cfg.netlink_protocol)?;
        sock.set_recv_buffer(cfg.recv_buffer)?;
        sock.bind(0, group_mask(cfg.netlink_group))?;
        if group_mask(cfg.netlink_group) == 0 {
            sock.join_group(cfg.netlink_group)?;
        }
        Ok(Self::from_socket(sock))
    }

    /// Builds the source around an already-bound socket (handed over).
    pub fn from_socket(sock: NetlinkSocket) -> Self {
        ExpdrvNetlink {
            sock,
            buf: vec![0; RECV_BUF],
            seq: SeqTracker::default(),
            source: Source::Expdrv,
        }
    }

    pub fn socket(&self) -> &NetlinkSocket {
        &self.sock
    }

    pub fn seq(&self) -> &SeqTracker {
        &self.seq
    }
}

impl super::IngestSource for ExpdrvNetlink {
    fn source(&self) -> Source {
        self.source
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    fn restore_cursor(&mut self, driver_id: u32, last: u64) {
        self.seq.set(driver_id, last);
    }

    /// Reads until the socket is empty. Returns the records published.
    fn on_readable(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) -> io::Result<u64> {
        super::drain(self, out, c)
    }
}

impl super::DatagramSource for ExpdrvNetlink {
    fn name(&self) -> Source {
        self.source
    }

    fn socket_and_buffer(&mut self) -> (&NetlinkSocket, &mut [u8]) {
        (&self.sock, &mut self.buf)
    }

    fn datagram(&mut self, len: usize, out: &mut Dispatch<'_>, c: &SourceCounters) {
        let Self {
            buf, seq, source, ..
        } = self;
        process_datagram(&buf[..len], *source, seq, out, c);
    }

    fn overrun(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.seq.overrun();
        // Said at once, never only when the next record comes: an empty
        // range (count 0) from where the loss starts; the next record sizes
        // it as a gap.
        let next = self.seq.next_expected();
        report_lost(self.source, next, next - 1, LostReason::Overrun, out, c);
    }
}

/// Walks one datagram: every FAULT/CLEAR record is validated and published,
/// malformed ones are counted by reason without disturbing the others, and
/// sequence gaps are published as [`Lost`]. Returns the records published.
pub fn process_datagram(
    dg: &[u8],
    source: Source,
    seq: &mut SeqTracker,
    out: &mut Dispatch<'_>,
    c: &SourceCounters,
) -> u64 {
    let mut published = 0;
    let mut msgs = NlMsgIter::new(dg);
    for msg in &mut msgs {
        let kind = match msg.header.nlmsg_type {
            EXPDRV_MSG_FAULT => FaultKind::Fault,
            EXPDRV_MSG_CLEAR => FaultKind::Clear,
            NLMSG_NOOP | NLMSG_DONE => continue,
            t if t >= EXPDRV_MSG_FAULT => {
                c.reserved_types.fetch_add(1, Relaxed);
                continue;
            }
            _ => continue,
        };
        match Record::parse(msg.payload) {
            Ok(r) => {
                c.received.fetch_add(1, Relaxed);
                if !r.is_snapshot() {
                    report_seen(seq.observe(r.driver_id(), r.sequence()), source, out, c);
                }
                out.fault(source, kind, &r);
                published += 1;
            }
            Err(e) => {
                let n = c.malformed[e.reason().index()].fetch_add(1, Relaxed) + 1;
                if n <= LOG_FIRST || n % 10_000 == 0 {
                    eprintln!(
                        "faultbridge: {source}: malformed record dropped ({n} so far for this reason): {e}"
                    );
                }
            }
        }
    }
    if msgs.trailing_bytes() > 0 {
        c.truncated.fetch_add(1, Relaxed);
    }
    c.delivered.fetch_add(published, Relaxed);
    published
}

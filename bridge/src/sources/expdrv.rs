//! The expanded driver over netlink multicast (spec section 1.1): one socket
//! of the driver's protocol joined to its group; each datagram walked message
//! by message, each record parsed in place and published.

use super::seq::SeqTracker;
use super::synth::{report_lost, report_seen};
use super::{Dispatch, Listener, Netlinked};
use crate::config::ExpdrvConfig;
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, LostReason, Source};
use faultbridge_ffi::sys::netlink::{Membership, NetlinkError, NetlinkSocket};
use faultbridge_ffi::wire::nlmsg::{NLMSG_DONE, NLMSG_NOOP, NlMsgIter};
use faultbridge_ffi::wire::record::{EXPDRV_MSG_CLEAR, EXPDRV_MSG_FAULT, Record};
use std::sync::atomic::Ordering::Relaxed;

/// Room for the largest datagram we expect; larger ones are counted as truncated.
const RECV_BUF: usize = 256 * 1024;

/// The netlink source of the expanded driver.
pub(crate) type ExpdrvNetlink = Netlinked<ExpdrvState>;

/// What the source knows between datagrams.
#[derive(Debug)]
pub(crate) struct ExpdrvState {
    seq: SeqTracker,
    source: Source,
}

impl ExpdrvState {
    fn new() -> Self {
        ExpdrvState {
            seq: SeqTracker::default(),
            source: Source::Expdrv,
        }
    }
}

impl ExpdrvNetlink {
    /// Opens the socket, sets the receive buffer and joins the group; the
    /// senders accepted are `cfg.accept`'s.
    pub fn open(cfg: &ExpdrvConfig) -> Result<Self, NetlinkError> {
        let m = Membership {
            protocol: cfg.netlink_protocol,
            group: cfg.netlink_group,
            recv_buffer: cfg.recv_buffer,
            pass_credentials: false,
        };
        Ok(Netlinked::new(
            Listener::open(m, cfg.accept, RECV_BUF)?,
            ExpdrvState::new(),
        ))
    }

    /// Builds the source around a socket handed over by the other side of
    /// a live upgrade, with its cursors.
    pub fn from_handed(
        sock: NetlinkSocket,
        accept: super::auth::Accept,
        h: &super::HandedState,
    ) -> Self {
        Netlinked::handed(
            Listener::from_socket(sock, accept, RECV_BUF),
            ExpdrvState::new(),
            h,
        )
    }
}

impl super::DatagramSource for ExpdrvState {
    fn name(&self) -> Source {
        self.source
    }

    fn datagram(&mut self, dg: &[u8], out: &mut Dispatch<'_>, c: &SourceCounters) {
        process_datagram(dg, self.source, &mut self.seq, out, c);
    }

    fn overrun(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.seq.overrun();
        // Said at once, never only when the next record comes: an empty
        // range (count 0) from where the loss starts; the next record sizes
        // it as a gap.
        let next = self.seq.next_expected();
        report_lost(self.source, next, next - 1, LostReason::Overrun, out, c);
    }

    fn hand_over_state(&self, h: &mut super::HandedState) -> Option<()> {
        self.seq.hand_over(h);
        Some(())
    }

    fn adopt(&mut self, h: &super::HandedState) {
        self.seq.adopt(h);
    }

    fn restore_cursor(&mut self, driver_id: u32, last: u64) {
        self.seq.set(driver_id, last);
    }
}

/// The kind of record a message of the driver's protocol carries: `None`
/// for control messages (`NLMSG_NOOP`, `NLMSG_DONE`, types below 0x0010)
/// and for the reserved types (0x0012 and above), which are counted.
pub(crate) fn record_kind(nlmsg_type: u16, c: &SourceCounters) -> Option<FaultKind> {
    match nlmsg_type {
        EXPDRV_MSG_FAULT => Some(FaultKind::Fault),
        EXPDRV_MSG_CLEAR => Some(FaultKind::Clear),
        NLMSG_NOOP | NLMSG_DONE => None,
        t if t > EXPDRV_MSG_CLEAR => {
            c.reserved_types.fetch_add(1, Relaxed);
            None
        }
        _ => None,
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
        let Some(kind) = record_kind(msg.header.nlmsg_type, c) else {
            continue;
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
            Err(e) => super::malformed(source, &e, c),
        }
    }
    if msgs.trailing_bytes() > 0 {
        c.truncated.fetch_add(1, Relaxed);
    }
    c.delivered.fetch_add(published, Relaxed);
    published
}

//! FC transport events reported by the kernel (`NETLINK_SCSITRANSPORT`,
//! group 4): each `struct fc_nl_event` is read in place and becomes an FC
//! record with keyword `hostN` and `device_index` N.
//!
//! | FC host event | record |
//! |---|---|
//! | `LINKDOWN`, `PORT_OFFLINE` | fault `0x0002_0001`, severity error |
//! | `LINKUP`, `PORT_ONLINE` | CLEAR `0x0002_0002` |
//! | `PORT_UNKNOWN`, `LINK_UNKNOWN` | fault `0x0002_8000 \| code`, warning |
//! | any other (`LIP`, `RSCN`, vendor, …) | fault `0x0002_8000 \| code`, info |
//!
//! The record's sequence is the kernel's `event_num`, so a gap in it is a
//! gap in the source's sequence and is reported as a loss like any other;
//! the detail is the event as received: the 36-byte fixed part of
//! `fc_nl_event` and the `event_datalen` data bytes that follow it, never
//! the padding (or an older kernel's uninitialised tail) after them.
//! The protocol number is configurable so tests can feed the source over
//! `NETLINK_USERSOCK`. On `NETLINK_SCSITRANSPORT` only the kernel (sender
//! port id 0) is heard; on any other protocol, where the kernel sends no FC
//! event, the kernel and root-owned senders (a test feed).

use super::auth::Accept;
use super::seq::SeqTracker;
use super::synth::{Synth, Synthesized, report_lost, report_seen};
use super::{Dispatch, Listener, Netlinked};
use crate::config::FcConfig;
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, LostReason, Source};
use faultbridge_ffi::MalformedReason;
use faultbridge_ffi::sys::netlink::{
    Membership, NETLINK_SCSITRANSPORT, NetlinkError, NetlinkSocket,
};
use faultbridge_ffi::wire::fc::{FcError, FcEvent, SCSI_TRANSPORT_MSG, fch};
use faultbridge_ffi::wire::nlmsg::{NLMSG_DONE, NLMSG_NOOP, NlMsgIter};
use faultbridge_ffi::wire::record::{Category, Severity, event};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

const RECV_BUF: usize = 64 * 1024;
/// Event codes of FC host events other than link and port up/down.
pub const FC_HOST_EVENT_BASE: u32 = 0x0002_8000;

/// The record an FC host event becomes: (kind, severity, event code).
pub fn map_event(code: u32) -> (FaultKind, Severity, u32) {
    match code {
        fch::LINKDOWN | fch::PORT_OFFLINE => {
            (FaultKind::Fault, Severity::Error, event::FC_PORT_OFFLINE)
        }
        fch::LINKUP | fch::PORT_ONLINE => (FaultKind::Clear, Severity::Info, event::FC_PORT_ONLINE),
        fch::PORT_UNKNOWN | fch::LINK_UNKNOWN => (
            FaultKind::Fault,
            Severity::Warning,
            FC_HOST_EVENT_BASE | (code & 0x7fff),
        ),
        _ => (
            FaultKind::Fault,
            Severity::Info,
            FC_HOST_EVENT_BASE | (code & 0x7fff),
        ),
    }
}

/// The FC transport source.
pub(crate) type FcSource = Netlinked<FcState>;

#[derive(Debug)]
pub(crate) struct FcState {
    seq: SeqTracker,
    synth: Synth,
    keyword: String,
}

impl FcSource {
    /// Opens the socket of `cfg.netlink_protocol` and joins `cfg.netlink_group`
    /// (4 for the kernel: bind-mask bit 3).
    pub fn open(cfg: &FcConfig) -> Result<Self, NetlinkError> {
        let m = Membership {
            protocol: cfg.netlink_protocol,
            group: cfg.netlink_group,
            recv_buffer: cfg.recv_buffer,
            pass_credentials: false,
        };
        Ok(Netlinked::new(
            Listener::open(m, accept(cfg), RECV_BUF)?,
            FcState::new(),
        ))
    }

    /// Builds the source around a socket handed over by the other side of
    /// a live upgrade, with its cursors and numbering.
    pub fn from_handed(sock: NetlinkSocket, cfg: &FcConfig, h: &super::HandedState) -> Self {
        Netlinked::handed(
            Listener::from_socket(sock, accept(cfg), RECV_BUF),
            FcState::new(),
            h,
        )
    }
}

/// The kernel only on the kernel's protocol; root for a simulator's.
fn accept(cfg: &FcConfig) -> Accept {
    if cfg.netlink_protocol == NETLINK_SCSITRANSPORT {
        Accept::Kernel
    } else {
        Accept::Root
    }
}

impl FcState {
    fn new() -> Self {
        FcState {
            seq: SeqTracker::default(),
            synth: Synth::new(Source::FcTransport),
            keyword: String::with_capacity(16),
        }
    }

    fn process(&mut self, dg: &[u8], out: &mut Dispatch<'_>, c: &SourceCounters) {
        let mut msgs = NlMsgIter::new(dg);
        for m in &mut msgs {
            match m.header.nlmsg_type {
                SCSI_TRANSPORT_MSG => {}
                NLMSG_NOOP | NLMSG_DONE => continue,
                _ => {
                    c.reserved_types.fetch_add(1, Relaxed);
                    continue;
                }
            }
            let e = match FcEvent::parse(m.payload) {
                Ok(e) => e,
                Err(FcError::NotFcEvent { .. }) => {
                    // Another transport's or a vendor message: not ours.
                    c.reserved_types.fetch_add(1, Relaxed);
                    continue;
                }
                Err(e) => {
                    let reason = match e {
                        FcError::BadMagic { .. } => MalformedReason::BadMagic,
                        FcError::BadVersion { .. } => MalformedReason::BadVersion,
                        FcError::DataTruncated { .. } => MalformedReason::BadTotalLen,
                        _ => MalformedReason::Short,
                    };
                    let n = c.malformed[reason.index()].fetch_add(1, Relaxed) + 1;
                    if crate::error::thinned(n) {
                        eprintln!("faultbridge: fc-transport: event dropped ({n} so far): {e}");
                    }
                    continue;
                }
            };
            let seq = u64::from(e.event_num());
            report_seen(self.seq.observe(0, seq), Source::FcTransport, out, c);
            let (kind, severity, event_code) = map_event(e.event_code());
            self.keyword.clear();
            let _ = write!(self.keyword, "host{}", e.host_no());
            self.synth.emit_as(
                out,
                c,
                &Synthesized {
                    kind,
                    category: Category::Fc,
                    severity,
                    event_code,
                    device_index: u32::from(e.host_no()),
                    keyword: &self.keyword,
                    detail: &m.payload[..e.bytes_used()],
                    flags: 0,
                },
                seq,
            );
        }
        if msgs.trailing_bytes() > 0 {
            c.truncated.fetch_add(1, Relaxed);
        }
    }
}

impl super::DatagramSource for FcState {
    fn name(&self) -> Source {
        Source::FcTransport
    }

    fn datagram(&mut self, dg: &[u8], out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.process(dg, out, c);
    }

    fn overrun(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        // Told at once with an empty range; the next event's event_num sizes it.
        self.seq.overrun();
        let next = self.seq.next_expected();
        report_lost(
            Source::FcTransport,
            next,
            next - 1,
            LostReason::Overrun,
            out,
            c,
        );
    }

    fn hand_over_state(&self, h: &mut super::HandedState) -> Option<()> {
        self.seq.hand_over(h);
        h.next_sequence = self.synth.next_sequence();
        Some(())
    }

    fn adopt(&mut self, h: &super::HandedState) {
        self.seq.adopt(h);
        self.synth.continue_from(h.next_sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_and_port_events_map_to_fault_and_clear() {
        assert_eq!(
            map_event(fch::LINKDOWN),
            (FaultKind::Fault, Severity::Error, 0x0002_0001)
        );
        assert_eq!(map_event(fch::PORT_OFFLINE).2, 0x0002_0001);
        assert_eq!(
            map_event(fch::PORT_ONLINE),
            (FaultKind::Clear, Severity::Info, 0x0002_0002)
        );
        assert_eq!(map_event(fch::LINKUP).0, FaultKind::Clear);
        assert_eq!(
            map_event(fch::RSCN),
            (FaultKind::Fault, Severity::Info, 0x0002_8005)
        );
        assert_eq!(map_event(fch::VENDOR_UNIQUE).2, 0x0002_ffff);
        assert_eq!(map_event(fch::LINK_UNKNOWN).1, Severity::Warning);
    }
}

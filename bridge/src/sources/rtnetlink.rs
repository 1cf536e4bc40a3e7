//! NIC link faults reported by the kernel over rtnetlink, like `ip monitor
//! link`: a `NETLINK_ROUTE` socket joined to `RTNLGRP_LINK`, each
//! `RTM_NEWLINK` / `RTM_DELLINK` read in place and compared with the
//! interface's previous state.
//!
//! - The kernel does not say what changed (`ifi_change` is unreliable), so
//!   the source keeps the last state per ifindex and reports transitions:
//!   link down (administratively up without carrier, or set down) is a NIC
//!   fault `0x0001_0001` with the interface name as keyword and the ifindex
//!   as `device_index`; link up is its CLEAR `0x0001_0002`; the removal of a
//!   watched interface is a fault `0x0001_00FF`.
//! - The kernel folds carrier events of one device (linkwatch runs about
//!   once a second for most drivers), so a down-up flap can arrive as one
//!   message showing no change. `IFLA_CARRIER_CHANGES` still counts every
//!   transition: a jump of two or more beyond what the state change explains
//!   is reported as the folded fault and CLEAR, so a latched monitor sees it
//!   and the final state is the kernel's.
//! - At start-up an `RTM_GETLINK` dump gives every interface's state,
//!   checked with `SIOCGIFFLAGS` and `ETHTOOL_GLINK`; interfaces that are up
//!   without carrier are reported then, flagged SNAPSHOT.
//! - `ENOBUFS` means lost notifications: a [`Lost`](faultbridge_bus::Lost)
//!   with an empty range (the kernel's messages carry no sequence), then a
//!   fresh dump whose differences are reported flagged SNAPSHOT. Only one
//!   dump runs at a time: the kernel answers a second `RTM_GETLINK` dump
//!   request on a socket whose dump is still running with an
//!   `NLMSG_ERROR(-EBUSY)` carrying the new request's sequence (`sendto`
//!   itself succeeds), so an overrun during a dump only marks that another
//!   dump is due, and it is requested after the running one's
//!   `NLMSG_DONE`. Only that `NLMSG_DONE` ends a dump; interfaces it did not
//!   list are reported removed only when it completed without error.

use super::auth::Accept;
use super::synth::{Synth, Synthesized, report_lost};
use super::{Dispatch, Listener, Netlinked};
use crate::config::{NamePatterns, RtnetlinkConfig};
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, LostReason, Source};
use faultbridge_ffi::sys::ifreq::IfQuery;
use faultbridge_ffi::sys::netlink::{Membership, NETLINK_ROUTE, NetlinkError, NetlinkSocket, Recv};
use faultbridge_ffi::wire::nlmsg::{NLMSG_DONE, NLMSG_ERROR, NlMsgIter};
use faultbridge_ffi::wire::record::{Category, F_SNAPSHOT, Severity, event};
use faultbridge_ffi::wire::rtnl::{
    IFF_LOOPBACK, IFF_RUNNING, IFF_UP, LinkMsg, RTM_DELLINK, RTM_NEWLINK, RTNLGRP_LINK, oper,
    push_getlink_dump,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Room for a dump datagram (the kernel fills up to 32 KiB per datagram).
const RECV_BUF: usize = 64 * 1024;
/// How long the start-up dump may take.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the rtnetlink source could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RtnetlinkError {
    #[error("cannot open the rtnetlink socket")]
    Socket(#[source] NetlinkError),
    #[error("cannot request the link dump")]
    DumpSend(#[source] io::Error),
    #[error("cannot read the link dump")]
    DumpRecv(#[source] io::Error),
    #[error("the kernel refused the link dump (error {0})")]
    DumpRefused(i32),
    #[error("the link dump did not finish within {0:?}")]
    DumpTimeout(Duration),
    #[error("cannot duplicate the socket for requests")]
    Dup(#[source] io::Error),
}

/// What the source knows of one interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Link {
    name: String,
    st: LinkState,
}

/// An interface's state, apart from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LinkState {
    admin_up: bool,
    carrier: bool,
    operstate: u8,
    carrier_changes: Option<u32>,
    loopback: bool,
    watched: bool,
    /// The dump generation that last saw it.
    generation: u32,
}

impl LinkState {
    fn up(&self) -> bool {
        self.admin_up && self.carrier
    }
}

fn is_watched(patterns: &NamePatterns, name: &str, loopback: bool) -> bool {
    !loopback && !name.is_empty() && patterns.matches(name)
}

/// The rtnetlink NIC source.
pub(crate) type RtnetlinkSource = Netlinked<RtnlState>;

/// What the source knows between datagrams.
#[derive(Debug)]
pub(crate) struct RtnlState {
    /// The socket again (a duplicate descriptor), to request dumps on.
    sock: NetlinkSocket,
    port: u32,
    links: HashMap<u32, Link>,
    patterns: NamePatterns,
    synth: Synth,
    detail: String,
    /// Report the start-up state when ingest starts.
    initial_pending: bool,
    /// A resync dump is running with this `nlmsg_seq`.
    dump: Option<u32>,
    /// Notifications were lost while the running dump was under way: dump
    /// again once it is done.
    resync_again: bool,
    generation: u32,
    next_dump_seq: u32,
}

impl RtnetlinkSource {
    /// Opens the socket, joins `RTNLGRP_LINK`, and reads every interface's
    /// state with an `RTM_GETLINK` dump checked by the ioctls. Only the
    /// kernel (port id 0) is heard.
    pub fn open(cfg: &RtnetlinkConfig) -> Result<Self, RtnetlinkError> {
        let sock = NetlinkSocket::open_joined(&Membership {
            protocol: NETLINK_ROUTE,
            group: RTNLGRP_LINK,
            recv_buffer: cfg.recv_buffer,
            pass_credentials: false,
        })
        .map_err(RtnetlinkError::Socket)?;
        let port = sock.port_id().map_err(RtnetlinkError::Socket)?;
        let mut state = RtnlState {
            sock: sock.try_clone().map_err(RtnetlinkError::Dup)?,
            port,
            links: HashMap::new(),
            patterns: cfg.interfaces.clone(),
            synth: Synth::new(Source::Rtnetlink),
            detail: String::with_capacity(128),
            initial_pending: true,
            dump: None,
            resync_again: false,
            generation: 0,
            next_dump_seq: 1,
        };
        state.initial_dump()?;
        state.check_with_ioctls();
        Ok(Netlinked::new(
            Listener::from_socket(sock, Accept::Kernel, RECV_BUF),
            state,
        ))
    }
}

/// What goes with the socket at a live upgrade: the interfaces as last
/// reported, and the dump under way.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Handed {
    links: Vec<(u32, Link)>,
    dump: Option<u32>,
    resync_again: bool,
    generation: u32,
    next_dump_seq: u32,
}

impl RtnetlinkSource {
    /// Builds the source around a socket handed over by the other side of
    /// a live upgrade, with the interfaces as that side last reported them.
    pub fn from_handed(
        sock: NetlinkSocket,
        cfg: &RtnetlinkConfig,
        h: &super::HandedState,
    ) -> Result<Self, String> {
        let handed: Handed = serde_json::from_value(h.extra.clone())
            .map_err(|e| format!("source rtnetlink: unreadable state ({e})"))?;
        let port = sock
            .port_id()
            .map_err(|e| format!("source rtnetlink: {e}"))?;
        let mut synth = Synth::new(Source::Rtnetlink);
        synth.continue_from(h.next_sequence);
        let state = RtnlState {
            sock: sock
                .try_clone()
                .map_err(|e| format!("source rtnetlink: {e}"))?,
            port,
            links: handed.links.into_iter().collect(),
            patterns: cfg.interfaces.clone(),
            synth,
            detail: String::with_capacity(128),
            initial_pending: false,
            dump: handed.dump,
            resync_again: handed.resync_again,
            generation: handed.generation,
            next_dump_seq: handed.next_dump_seq,
        };
        Ok(Netlinked::new(
            Listener::from_socket(sock, Accept::Kernel, RECV_BUF),
            state,
        ))
    }
}

impl RtnlState {
    fn send_dump(&mut self) -> io::Result<u32> {
        let seq = self.next_dump_seq;
        self.next_dump_seq = self.next_dump_seq.wrapping_add(1).max(1);
        let mut req = Vec::with_capacity(64);
        push_getlink_dump(&mut req, seq);
        self.sock.send_to(0, 0, &req)?;
        self.generation = self.generation.wrapping_add(1);
        Ok(seq)
    }

    /// The start-up dump, read before the source joins the ingest loop:
    /// answers from the kernel only are taken.
    fn initial_dump(&mut self) -> Result<(), RtnetlinkError> {
        let seq = self.send_dump().map_err(RtnetlinkError::DumpSend)?;
        let deadline = Instant::now() + DUMP_TIMEOUT;
        let mut buf = vec![0; RECV_BUF];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(RtnetlinkError::DumpTimeout(DUMP_TIMEOUT));
            }
            match self.sock.recv_from(&mut buf) {
                Ok((_, from)) if !from.is_kernel() => {}
                Ok((Recv::Datagram { stored, .. }, _)) => {
                    match self.apply_dump_datagram(&buf[..stored], seq) {
                        Some(Ok(())) => break Ok(()),
                        Some(Err(e)) => break Err(RtnetlinkError::DumpRefused(e)),
                        None => {}
                    }
                }
                // Notifications lost while dumping: the dump itself is
                // still answered; the state it gives is what counts.
                Ok((Recv::Overrun, _)) => {}
                Ok((Recv::WouldBlock, _)) => {
                    let ms = left.as_millis().min(u128::from(u16::MAX)) as u16;
                    let mut fds = [nix::poll::PollFd::new(
                        self.sock.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => break Err(RtnetlinkError::DumpRecv(e.into())),
                    }
                }
                Err(e) => break Err(RtnetlinkError::DumpRecv(e)),
            }
        }
    }

    /// Applies a start-up datagram silently. `Some` once the dump `seq` is
    /// done (or refused with an errno).
    fn apply_dump_datagram(&mut self, dg: &[u8], seq: u32) -> Option<Result<(), i32>> {
        for m in NlMsgIter::new(dg) {
            let ours = m.header.nlmsg_seq == seq && m.header.nlmsg_pid == self.port;
            match m.header.nlmsg_type {
                RTM_NEWLINK => {
                    if let Ok(l) = LinkMsg::parse(m.payload) {
                        self.store(&l);
                    }
                }
                RTM_DELLINK => {
                    if let Ok(l) = LinkMsg::parse(m.payload) {
                        self.links.remove(&l.index());
                    }
                }
                NLMSG_DONE if ours => return Some(Ok(())),
                NLMSG_ERROR if ours => {
                    let errno = m
                        .payload
                        .first_chunk::<4>()
                        .map_or(-1, |b| i32::from_ne_bytes(*b));
                    if errno != 0 {
                        return Some(Err(-errno));
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Records a link's state without reporting anything; returns the
    /// previous state. Allocates only for a new or renamed interface.
    fn store(&mut self, l: &LinkMsg<'_>) -> Option<LinkState> {
        let loopback = l.flags() & IFF_LOOPBACK != 0;
        let mut st = LinkState {
            admin_up: l.admin_up(),
            carrier: l.has_carrier(),
            operstate: l.operstate.unwrap_or(oper::UNKNOWN),
            carrier_changes: l.carrier_changes,
            loopback,
            watched: false,
            generation: self.generation,
        };
        match self.links.get_mut(&l.index()) {
            Some(link) => {
                let prev = link.st;
                let renamed = l.ifname.is_some_and(|n| n != link.name);
                if let (true, Some(n)) = (renamed, l.ifname) {
                    link.name.clear();
                    link.name.push_str(n);
                }
                st.watched = if renamed || prev.loopback != loopback {
                    is_watched(&self.patterns, &link.name, loopback)
                } else {
                    prev.watched
                };
                link.st = st;
                Some(prev)
            }
            None => {
                let name = l.ifname.unwrap_or_default().to_string();
                st.watched = is_watched(&self.patterns, &name, loopback);
                self.links.insert(l.index(), Link { name, st });
                None
            }
        }
    }

    /// Takes `SIOCGIFFLAGS` and `ETHTOOL_GLINK` as the newest word on each
    /// watched interface (a link may have changed since the dump).
    fn check_with_ioctls(&mut self) {
        let q = match IfQuery::open() {
            Ok(q) => q,
            Err(e) => {
                eprintln!("faultbridge: rtnetlink: cannot check link states with ioctls: {e}");
                return;
            }
        };
        for link in self.links.values_mut().filter(|l| l.st.watched) {
            let Ok(flags) = q.flags(&link.name) else {
                continue;
            };
            let admin_up = flags & IFF_UP != 0;
            let carrier = match q.ethtool_link(&link.name) {
                Ok(c) => c,
                // No ethtool link test: IFF_RUNNING is RFC 2863 "up".
                Err(_) => flags & IFF_RUNNING != 0 || (link.st.carrier && !admin_up),
            };
            if (admin_up, carrier) != (link.st.admin_up, link.st.carrier) {
                link.st.admin_up = admin_up;
                link.st.carrier = carrier;
            }
        }
    }

    fn write_detail(&mut self, link: &LinkState, folded: u32, removed: bool) {
        self.detail.clear();
        let _ = write!(
            self.detail,
            "admin={} carrier={} operstate={}",
            if link.admin_up { "up" } else { "down" },
            u8::from(link.carrier),
            oper::name(link.operstate)
        );
        if let Some(n) = link.carrier_changes {
            let _ = write!(self.detail, " carrier_changes={n}");
        }
        if folded > 0 {
            let _ = write!(self.detail, " folded_flaps={folded}");
        }
        if removed {
            self.detail.push_str(" removed");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
        index: u32,
        name: &str,
        st: &LinkState,
        what: Transition,
        folded: u32,
        flags: u32,
    ) {
        self.write_detail(st, folded, what == Transition::Removed);
        let (kind, severity, event_code) = match what {
            Transition::Down => (FaultKind::Fault, Severity::Error, event::NIC_LINK_DOWN),
            Transition::Up => (FaultKind::Clear, Severity::Info, event::NIC_LINK_UP),
            Transition::Removed => (
                FaultKind::Fault,
                Severity::Error,
                event::generic_fatal(Category::Nic.code()),
            ),
        };
        self.synth.emit(
            out,
            c,
            &Synthesized {
                kind,
                category: Category::Nic,
                severity,
                event_code,
                device_index: index,
                keyword: name,
                detail: self.detail.as_bytes(),
                flags,
            },
        );
    }

    /// Applies one link message and reports what changed.
    fn on_link(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters, l: &LinkMsg<'_>, flags: u32) {
        let index = l.index();
        let prev = self.store(l);
        let Some(link) = self.links.get_mut(&index) else {
            return;
        };
        let now = link.st;
        if !now.watched {
            return;
        }
        // Lent to the reports, then put back: no copy of the name.
        let name = std::mem::take(&mut link.name);
        self.transitions(out, c, index, &name, prev, now, flags);
        if let Some(link) = self.links.get_mut(&index) {
            link.name = name;
        }
    }

    /// Reports the change from `prev` to `now` of a watched interface.
    #[allow(clippy::too_many_arguments)]
    fn transitions(
        &mut self,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
        index: u32,
        name: &str,
        prev: Option<LinkState>,
        now: LinkState,
        flags: u32,
    ) {
        let Some(prev) = prev.filter(|p| p.watched) else {
            // A new (or newly watched) interface: only a link that is
            // configured up without carrier is a fault.
            if now.admin_up && !now.carrier {
                self.report(out, c, index, name, &now, Transition::Down, 0, flags);
            }
            return;
        };
        // Transitions the kernel folded into this one message.
        let folded = match (prev.carrier_changes, now.carrier_changes) {
            (Some(a), Some(b)) => {
                let explained = u32::from(prev.carrier != now.carrier);
                b.wrapping_sub(a).saturating_sub(explained) / 2
            }
            _ => 0,
        };
        let (was, is) = (prev.up(), now.up());
        if folded > 0 && prev.admin_up && now.admin_up {
            // Each folded flap left the link where it was: report it as the
            // fault and CLEAR (or CLEAR and fault) it was.
            let (first, second) = if was {
                (Transition::Down, Transition::Up)
            } else {
                (Transition::Up, Transition::Down)
            };
            self.report(out, c, index, name, &now, first, folded, flags);
            self.report(out, c, index, name, &now, second, folded, flags);
        }
        match (was, is) {
            (true, false) => self.report(out, c, index, name, &now, Transition::Down, 0, flags),
            (false, true) => self.report(out, c, index, name, &now, Transition::Up, 0, flags),
            _ => {}
        }
    }

    fn on_dellink(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters, index: u32, flags: u32) {
        if let Some(link) = self.links.remove(&index).filter(|l| l.st.watched) {
            self.report(
                out,
                c,
                index,
                &link.name,
                &link.st,
                Transition::Removed,
                0,
                flags,
            );
        }
    }

    fn process(&mut self, dg: &[u8], out: &mut Dispatch<'_>, c: &SourceCounters) {
        let mut msgs = NlMsgIter::new(dg);
        for m in &mut msgs {
            let from_dump = self
                .dump
                .is_some_and(|s| m.header.nlmsg_seq == s && m.header.nlmsg_pid == self.port);
            let flags = if from_dump { F_SNAPSHOT } else { 0 };
            match m.header.nlmsg_type {
                RTM_NEWLINK | RTM_DELLINK => match LinkMsg::parse(m.payload) {
                    Ok(l) if m.header.nlmsg_type == RTM_NEWLINK => self.on_link(out, c, &l, flags),
                    Ok(l) => self.on_dellink(out, c, l.index(), flags),
                    Err(e) => {
                        let n = c.malformed[faultbridge_ffi::MalformedReason::Short.index()]
                            .fetch_add(1, Relaxed)
                            + 1;
                        if crate::error::thinned(n) {
                            eprintln!(
                                "faultbridge: rtnetlink: link message dropped ({n} so far): {e}"
                            );
                        }
                    }
                },
                NLMSG_DONE if from_dump => match nl_errno(m.payload) {
                    0 => self.finish_resync(out, c),
                    err => self.abort_resync(c, err),
                },
                // An acknowledgement, or the refusal of a request other than
                // the running dump (`EBUSY`: a dump was already running):
                // the running dump goes on and its NLMSG_DONE ends it.
                NLMSG_ERROR if from_dump => match nl_errno(m.payload) {
                    0 => {}
                    err if err == -(nix::errno::Errno::EBUSY as i32) => {}
                    err => self.abort_resync(c, err),
                },
                _ => {}
            }
        }
        if msgs.trailing_bytes() > 0 {
            c.truncated.fetch_add(1, Relaxed);
        }
    }

    /// Requests a resync dump, or, while one is running, marks that another
    /// is due after it.
    fn request_resync(&mut self, c: &SourceCounters) {
        if self.dump.is_some() {
            self.resync_again = true;
            return;
        }
        match self.send_dump() {
            Ok(seq) => self.dump = Some(seq),
            Err(e) => {
                c.errors.fetch_add(1, Relaxed);
                eprintln!("faultbridge: rtnetlink: cannot request a resync dump: {e}");
            }
        }
    }

    /// Notifications were lost (`ENOBUFS`): reports the loss and resyncs.
    /// An overrun of the socket (counted by [`super::drain`]).
    fn on_overrun(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        let next = self.synth.next_sequence();
        report_lost(
            Source::Rtnetlink,
            next,
            next - 1,
            LostReason::Overrun,
            out,
            c,
        );
        self.request_resync(c);
    }

    /// After a complete resync dump: interfaces it did not list are gone.
    fn finish_resync(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.dump = None;
        let gone: Vec<u32> = self
            .links
            .iter()
            .filter(|(_, l)| l.st.generation != self.generation)
            .map(|(&i, _)| i)
            .collect();
        for index in gone {
            self.on_dellink(out, c, index, F_SNAPSHOT);
        }
        if std::mem::take(&mut self.resync_again) {
            self.request_resync(c);
        }
    }

    /// The running dump failed with `err` (negative errno): its listing is
    /// incomplete, so nothing is concluded from what it did not list.
    fn abort_resync(&mut self, c: &SourceCounters, err: i32) {
        self.dump = None;
        c.errors.fetch_add(1, Relaxed);
        eprintln!(
            "faultbridge: rtnetlink: the resync dump failed: {}",
            io::Error::from_raw_os_error(err.saturating_neg())
        );
        if std::mem::take(&mut self.resync_again) {
            self.request_resync(c);
        }
    }

    fn report_initial(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.initial_pending = false;
        let mut down: Vec<(u32, String, LinkState)> = self
            .links
            .iter()
            .filter(|(_, l)| l.st.watched && l.st.admin_up && !l.st.carrier)
            .map(|(&i, l)| (i, l.name.clone(), l.st))
            .collect();
        down.sort_by_key(|(i, _, _)| *i);
        for (index, name, st) in down {
            self.report(out, c, index, &name, &st, Transition::Down, 0, F_SNAPSHOT);
        }
    }
}

/// The error of an `NLMSG_ERROR` or `NLMSG_DONE` payload: its leading
/// `int` (0 when absent, as in a `NLMSG_DONE` without one).
fn nl_errno(payload: &[u8]) -> i32 {
    payload
        .first_chunk::<4>()
        .map_or(0, |b| i32::from_ne_bytes(*b))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transition {
    Down,
    Up,
    Removed,
}

impl super::DatagramSource for RtnlState {
    fn name(&self) -> Source {
        Source::Rtnetlink
    }

    /// The start-up state comes before any live news.
    fn before_reading(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        if self.initial_pending {
            self.report_initial(out, c);
        }
    }

    fn datagram(&mut self, dg: &[u8], out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.process(dg, out, c);
    }

    fn overrun(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.on_overrun(out, c);
    }

    /// Once the start-up state is reported (ingest has started).
    fn can_hand_over(&self) -> bool {
        !self.initial_pending
    }

    /// The interfaces as last reported and the dump under way, in `extra`.
    fn hand_over_state(&self, h: &mut super::HandedState) -> Option<()> {
        h.next_sequence = self.synth.next_sequence();
        h.extra = serde_json::to_value(Handed {
            links: self.links.iter().map(|(&i, l)| (i, l.clone())).collect(),
            dump: self.dump,
            resync_again: self.resync_again,
            generation: self.generation,
            next_dump_seq: self.next_dump_seq,
        })
        .ok()?;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Monitors;
    use faultbridge_bus::{Event, SubscribeOptions, bus};
    use faultbridge_ffi::wire::nlmsg::{NLM_F_MULTI, push_nlmsg};

    fn msg(index: i32, name: &str, up: bool, carrier: bool, changes: u32) -> Vec<u8> {
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut v = vec![0u8; 4];
        v.extend_from_slice(&index.to_ne_bytes());
        v.extend_from_slice(&(if up { IFF_UP } else { 0 }).to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        let mut attr = |ty: u16, val: &[u8]| {
            v.extend_from_slice(&((4 + val.len()) as u16).to_ne_bytes());
            v.extend_from_slice(&ty.to_ne_bytes());
            v.extend_from_slice(val);
            v.resize((v.len() + 3) & !3, 0);
        };
        attr(3, format!("{name}\0").as_bytes());
        attr(33, &[u8::from(carrier)]);
        attr(35, &changes.to_ne_bytes());
        v
    }

    fn source(port: u32) -> RtnlState {
        let sock = NetlinkSocket::open(NETLINK_ROUTE).unwrap();
        RtnlState {
            sock,
            port,
            links: HashMap::new(),
            patterns: NamePatterns {
                include: vec!["eth*".into()],
                exclude: vec![],
            },
            synth: Synth::new(Source::Rtnetlink),
            detail: String::new(),
            initial_pending: false,
            dump: None,
            resync_again: false,
            generation: 0,
            next_dump_seq: 1,
        }
    }

    /// Feeds link messages through `on_link` and returns (kind, keyword, code).
    fn run(msgs: &[Vec<u8>]) -> Vec<(bool, String, u32, u32)> {
        let mut src = source(0);
        let (mut publisher, handle) = bus();
        let sub = handle.subscribe(SubscribeOptions::new("t")).unwrap();
        let mut monitors = Monitors::new(&[]);
        let c = SourceCounters::default();
        let mut out = Dispatch {
            publisher: &mut publisher,
            monitors: &mut monitors,
        };
        for m in msgs {
            let l = LinkMsg::parse(m).unwrap();
            src.on_link(&mut out, &c, &l, 0);
        }
        let mut got = Vec::new();
        while let Some(Event::Fault(f)) = sub.try_recv() {
            got.push((
                f.cleared(),
                f.keyword().to_string(),
                f.event_code(),
                f.device_index(),
            ));
        }
        got
    }

    #[test]
    fn carrier_loss_and_return_are_a_fault_and_its_clear() {
        let got = run(&[
            msg(4, "eth0", true, true, 2),
            msg(4, "eth0", true, false, 3),
            msg(4, "eth0", true, false, 3), // no change: nothing
            msg(4, "eth0", true, true, 4),
            msg(5, "wlan0", true, false, 1), // not watched
        ]);
        assert_eq!(
            got,
            [
                (false, "eth0".into(), event::NIC_LINK_DOWN, 4),
                (true, "eth0".into(), event::NIC_LINK_UP, 4),
            ]
        );
    }

    #[test]
    fn a_folded_flap_is_reported_and_the_final_state_kept() {
        // Up, then a message still up but two carrier transitions later.
        let got = run(&[msg(4, "eth0", true, true, 2), msg(4, "eth0", true, true, 4)]);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            [false, true],
            "{got:?}"
        );
        // Down, then down again after an unseen up-down: CLEAR then fault.
        // (The first message alone is the fault: a new link up without carrier.)
        let got = run(&[
            msg(4, "eth0", true, false, 3),
            msg(4, "eth0", true, false, 5),
        ]);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            [false, true, false]
        );
        // Up → down with an unseen flap before it: fault, CLEAR, fault.
        let got = run(&[
            msg(4, "eth0", true, true, 2),
            msg(4, "eth0", true, false, 5),
        ]);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            [false, true, false]
        );
    }

    #[test]
    fn admin_down_is_link_down_and_a_new_unconfigured_link_is_not() {
        let got = run(&[
            msg(4, "eth0", false, false, 1), // created down: nothing
            msg(4, "eth0", true, true, 2),   // up with carrier
            msg(4, "eth0", false, false, 3), // set down
        ]);
        assert_eq!(
            got.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(),
            [(true, event::NIC_LINK_UP), (false, event::NIC_LINK_DOWN)]
        );
    }

    /// One netlink message as the kernel would send it to port `pid`.
    fn nl(ty: u16, seq: u32, pid: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        push_nlmsg(&mut v, ty, NLM_F_MULTI, seq, pid, payload);
        v
    }

    fn feed(src: &mut RtnlState, out: &mut Dispatch<'_>, c: &SourceCounters, dg: Vec<u8>) {
        src.process(&dg, out, c);
    }

    /// Every event published so far: ("lost", 0) or (kind, event code).
    fn drain(sub: &faultbridge_bus::Subscription) -> Vec<(String, u32, u32)> {
        let mut got = Vec::new();
        while let Some(ev) = sub.try_recv() {
            match ev {
                Event::Fault(f) => got.push((
                    format!(
                        "{}:{}",
                        if f.cleared() { "clear" } else { "fault" },
                        f.keyword()
                    ),
                    f.event_code(),
                    f.flags(),
                )),
                Event::Lost(_) => got.push(("lost".into(), 0, 0)),
            }
        }
        got
    }

    #[test]
    fn a_second_overrun_during_a_dump_waits_for_its_end_and_reports_no_removal() {
        const PORT: u32 = 4242;
        let mut src = source(PORT);
        let (mut publisher, handle) = bus();
        let sub = handle.subscribe(SubscribeOptions::new("t")).unwrap();
        let mut monitors = Monitors::new(&[]);
        let c = SourceCounters::default();
        let mut out = Dispatch {
            publisher: &mut publisher,
            monitors: &mut monitors,
        };
        let eth0 = msg(4, "eth0", true, true, 2);
        let eth1 = msg(5, "eth1", true, true, 2);
        let done = 0i32.to_ne_bytes();
        // The EBUSY answer: the error, then the refused request's header.
        let mut ebusy = (-(nix::errno::Errno::EBUSY as i32)).to_ne_bytes().to_vec();
        ebusy.extend_from_slice(&[0; 16]);

        // Two watched links, up, known from live notifications.
        let mut dg = nl(RTM_NEWLINK, 0, 0, &eth0);
        dg.extend_from_slice(&nl(RTM_NEWLINK, 0, 0, &eth1));
        feed(&mut src, &mut out, &c, dg);
        assert_eq!(drain(&sub), []);

        // An overrun: a resync dump (sequence 1) is requested.
        src.on_overrun(&mut out, &c);
        assert_eq!(src.dump, Some(1));
        feed(&mut src, &mut out, &c, nl(RTM_NEWLINK, 1, PORT, &eth0));

        // A second overrun while it runs: no second request, one is due.
        src.on_overrun(&mut out, &c);
        assert_eq!(
            (src.dump, src.resync_again, src.next_dump_seq),
            (Some(1), true, 2)
        );
        // What the kernel answers a dump request while one runs, for the
        // running dump's sequence or another's: neither ends the dump.
        feed(&mut src, &mut out, &c, nl(NLMSG_ERROR, 2, PORT, &ebusy));
        feed(&mut src, &mut out, &c, nl(NLMSG_ERROR, 1, PORT, &ebusy));
        assert_eq!(src.dump, Some(1));
        assert_eq!(drain(&sub), [("lost".into(), 0, 0), ("lost".into(), 0, 0)]);

        // The rest of the running dump and its end: every link was listed,
        // nothing is removed, and the due dump (sequence 2) is requested.
        let mut dg = nl(RTM_NEWLINK, 1, PORT, &eth1);
        dg.extend_from_slice(&nl(NLMSG_DONE, 1, PORT, &done));
        feed(&mut src, &mut out, &c, dg);
        assert_eq!(drain(&sub), []);
        assert_eq!((src.dump, src.resync_again), (Some(2), false));

        // A dump that really misses a link still reports it removed.
        let mut dg = nl(RTM_NEWLINK, 2, PORT, &eth0);
        dg.extend_from_slice(&nl(NLMSG_DONE, 2, PORT, &done));
        feed(&mut src, &mut out, &c, dg);
        assert_eq!(
            drain(&sub),
            [(
                "fault:eth1".into(),
                event::generic_fatal(Category::Nic.code()),
                F_SNAPSHOT
            )]
        );
        assert_eq!(src.dump, None);
        assert_eq!(c.errors.load(Relaxed), 0);
    }

    #[test]
    fn a_failed_resync_dump_reports_no_removal() {
        const PORT: u32 = 4242;
        let mut src = source(PORT);
        let (mut publisher, handle) = bus();
        let sub = handle.subscribe(SubscribeOptions::new("t")).unwrap();
        let mut monitors = Monitors::new(&[]);
        let c = SourceCounters::default();
        let mut out = Dispatch {
            publisher: &mut publisher,
            monitors: &mut monitors,
        };
        feed(
            &mut src,
            &mut out,
            &c,
            nl(RTM_NEWLINK, 0, 0, &msg(4, "eth0", true, true, 2)),
        );
        src.on_overrun(&mut out, &c);
        assert_eq!(src.dump, Some(1));
        // The dump ends with an error in its NLMSG_DONE: incomplete.
        let err = (-(nix::errno::Errno::EMSGSIZE as i32)).to_ne_bytes();
        feed(&mut src, &mut out, &c, nl(NLMSG_DONE, 1, PORT, &err));
        assert_eq!(drain(&sub), [("lost".into(), 0, 0)]);
        assert_eq!(src.dump, None);
        assert_eq!(c.errors.load(Relaxed), 1);
    }
}

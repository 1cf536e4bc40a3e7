//! Fault sources. Each has its own name (`Fault(source, …)`), its own
//! counters and its own configuration section; the ingest loop polls them.

pub mod auth;
pub mod chardev;
pub mod expdrv;
pub mod fc;
pub mod rtnetlink;
pub mod seq;
pub mod synth;
pub mod uevent;

use crate::error::thinned;
use crate::monitor::Monitors;
use crate::stats::SourceCounters;
use auth::Accept;
use faultbridge_bus::{FaultKind, Lost, Publisher, Source};
use faultbridge_ffi::sys::netlink::{
    Membership, NetlinkError, NetlinkReceiver, NetlinkSocket, Received,
};
use faultbridge_ffi::wire::record::Record;
use mio::{Registry, Token};
use std::io;
use std::sync::atomic::Ordering::Relaxed;

/// What a source does with the datagrams its [`Listener`] accepted.
pub(crate) trait DatagramSource {
    /// The source's name, for the log.
    fn name(&self) -> Source;
    /// One datagram from an accepted sender (as much as fit the buffer).
    fn datagram(&mut self, dg: &[u8], out: &mut Dispatch<'_>, c: &SourceCounters);
    /// The socket overflowed (`ENOBUFS`, already counted): messages were lost.
    fn overrun(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters);
    /// Called each time the socket is to be read, before the first
    /// datagram (rtnetlink reports the start-up state here).
    fn before_reading(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        let _ = (out, c);
    }
    /// Whether the socket can be handed over now.
    fn can_hand_over(&self) -> bool {
        true
    }
    /// Writes into `h` what goes with the socket when it is handed over
    /// (sequence cursors, the next sequence of the source's own numbering,
    /// anything else in `extra`); `None` when it cannot be written.
    fn hand_over_state(&self, h: &mut HandedState) -> Option<()> {
        let _ = h;
        Some(())
    }
    /// Takes what the other side's [`DatagramSource::hand_over_state`] wrote.
    fn adopt(&mut self, h: &HandedState) {
        let _ = h;
    }
    /// Restores the last sequence seen from `driver_id` (recorded before a
    /// restart).
    fn restore_cursor(&mut self, driver_id: u32, last: u64) {
        let _ = (driver_id, last);
    }
}

/// A source that is one netlink socket and what it does with each
/// datagram: the expanded driver's group, FC transport events, uevents,
/// rtnetlink.
#[derive(Debug)]
pub(crate) struct Netlinked<S> {
    listener: Listener,
    state: S,
}

impl<S: DatagramSource> Netlinked<S> {
    pub(crate) fn new(listener: Listener, state: S) -> Self {
        Netlinked { listener, state }
    }

    /// Around a socket handed over by the other side of a live upgrade,
    /// with the state that came with it.
    pub(crate) fn handed(listener: Listener, mut state: S, h: &HandedState) -> Self {
        state.adopt(h);
        Netlinked { listener, state }
    }
}

impl<S: DatagramSource + Send + std::fmt::Debug> IngestSource for Netlinked<S> {
    fn source(&self) -> Source {
        self.state.name()
    }

    fn register(&mut self, registry: &Registry, tokens: SourceTokens) -> io::Result<()> {
        self.listener.register(registry, tokens.token(0))
    }

    /// Reads until the socket is empty. Returns the records published.
    fn on_event(
        &mut self,
        _slot: usize,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
    ) -> io::Result<u64> {
        drain(&mut self.listener, &mut self.state, out, c)
    }

    fn restore_cursor(&mut self, driver_id: u32, last: u64) {
        self.state.restore_cursor(driver_id, last);
    }

    fn can_hand_over(&self) -> bool {
        self.state.can_hand_over()
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.listener.deregister(registry)
    }

    fn hand_over(&self) -> Option<HandedSource> {
        let mut state = HandedState::new(self.state.name(), self.listener.socket().protocol());
        self.state.hand_over_state(&mut state)?;
        Some(HandedSource {
            fds: vec![self.listener.dup_fd()?],
            state,
        })
    }
}

/// A netlink socket joined to a source's group, its receive buffer, and
/// who the source takes datagrams from.
#[derive(Debug)]
pub struct Listener {
    rx: NetlinkReceiver,
    accept: Accept,
}

impl Listener {
    /// Opens, binds and joins `m` (with `SO_PASSCRED` when `accept` needs
    /// credentials), with a receive buffer of `buf_size` bytes.
    pub fn open(mut m: Membership, accept: Accept, buf_size: usize) -> Result<Self, NetlinkError> {
        m.pass_credentials = accept.needs_credentials();
        Ok(Listener::from_socket(
            NetlinkSocket::open_joined(&m)?,
            accept,
            buf_size,
        ))
    }

    /// Around an already-bound socket (handed over).
    pub fn from_socket(sock: NetlinkSocket, accept: Accept, buf_size: usize) -> Self {
        Listener {
            rx: NetlinkReceiver::new(sock, buf_size, accept.needs_sender()),
            accept,
        }
    }

    pub fn socket(&self) -> &NetlinkSocket {
        self.rx.socket()
    }

    /// Who the source takes datagrams from.
    pub fn accept(&self) -> Accept {
        self.accept
    }

    /// Leaves the ingest loop's poll.
    pub fn deregister(&self, registry: &Registry) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        registry.deregister(&mut mio::unix::SourceFd(&self.socket().as_raw_fd()))
    }

    /// A duplicate of the socket's descriptor (for a hand-over).
    pub fn dup_fd(&self) -> Option<std::os::fd::OwnedFd> {
        self.socket().try_clone().ok().map(NetlinkSocket::into_fd)
    }

    /// Registers the socket with the ingest loop under `token`.
    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        registry.register(
            &mut mio::unix::SourceFd(&self.socket().as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )
    }

    /// Receives one datagram: counted, its sender checked, a cut one
    /// counted as truncated; its bytes are then [`Listener::last`]. A
    /// refused datagram is counted and skipped: never handed out.
    pub(crate) fn recv_one(&mut self, name: Source, c: &SourceCounters) -> io::Result<Got> {
        loop {
            let r = self.rx.recv().inspect_err(|_| {
                c.errors.fetch_add(1, Relaxed);
            })?;
            return Ok(match r {
                Received::WouldBlock => Got::Nothing,
                Received::Overrun => {
                    c.overruns.fetch_add(1, Relaxed);
                    Got::Overrun
                }
                Received::Datagram { bytes, len, from } => {
                    c.datagrams.fetch_add(1, Relaxed);
                    if let Err(why) = self.accept.check(&from) {
                        refused(name, why, &from, c);
                        continue;
                    }
                    if len > bytes.len() {
                        truncated(name, len, bytes.len(), c);
                    }
                    Got::Datagram
                }
            });
        }
    }

    /// The datagram [`Listener::recv_one`] received last.
    pub fn last(&self) -> &[u8] {
        self.rx.last()
    }
}

/// What [`Listener::recv_one`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Got {
    /// An accepted datagram, in [`Listener::last`].
    Datagram,
    /// An overrun (counted).
    Overrun,
    /// Nothing more to read.
    Nothing,
}

/// Reads the listener's socket until it would block: counts datagrams,
/// refused ones (by reason, never parsed), truncated ones (`MSG_TRUNC`),
/// overruns and errors, and hands each accepted datagram and each overrun
/// to the source. Returns the records published meanwhile.
pub(crate) fn drain(
    listener: &mut Listener,
    src: &mut impl DatagramSource,
    out: &mut Dispatch<'_>,
    c: &SourceCounters,
) -> io::Result<u64> {
    let before = c.delivered.load(Relaxed);
    let name = src.name();
    src.before_reading(out, c);
    loop {
        match listener.recv_one(name, c)? {
            Got::Nothing => return Ok(c.delivered.load(Relaxed) - before),
            Got::Overrun => src.overrun(out, c),
            Got::Datagram => src.datagram(listener.last(), out, c),
        }
    }
}

/// Counts and (thinly) logs a datagram refused by sender authentication.
pub(crate) fn refused(
    name: Source,
    why: auth::Refusal,
    from: &faultbridge_ffi::sys::netlink::Sender,
    c: &SourceCounters,
) {
    let n = c.refused[why.index()].fetch_add(1, Relaxed) + 1;
    if thinned(n) {
        let creds = from
            .credentials
            .map(|k| format!(", pid {} uid {}", k.pid, k.uid))
            .unwrap_or_default();
        eprintln!(
            "faultbridge: {name}: datagram from port id {}{creds} refused ({}; {n} so far for this reason)",
            from.port,
            why.name()
        );
    }
}

/// Counts and (thinly) logs a datagram cut to the receive buffer.
pub(crate) fn truncated(name: Source, len: usize, stored: usize, c: &SourceCounters) {
    let n = c.truncated.fetch_add(1, Relaxed) + 1;
    if thinned(n) {
        eprintln!(
            "faultbridge: {name}: datagram of {len} bytes truncated to {stored} ({n} so far)"
        );
    }
}

/// Counts and (thinly) logs a malformed record.
pub(crate) fn malformed(name: Source, e: &faultbridge_ffi::ParseError, c: &SourceCounters) {
    let n = c.malformed[e.reason().index()].fetch_add(1, Relaxed) + 1;
    if thinned(n) {
        eprintln!(
            "faultbridge: {name}: malformed record dropped ({n} so far for this reason): {e}"
        );
    }
}

/// The tokens of one source in the ingest loop's poll: one per descriptor
/// it registers, `slot` 0..[`SourceTokens::SLOTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceTokens {
    base: usize,
}

impl SourceTokens {
    /// Descriptors a source may register.
    pub const SLOTS: usize = 4;

    pub const fn new(base: usize) -> Self {
        SourceTokens { base }
    }

    /// The token of the source's descriptor `slot`.
    pub const fn token(self, slot: usize) -> Token {
        Token(self.base + slot)
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
        if self.monitors.is_acting() {
            self.publisher.publish(source, kind, record);
        } else {
            self.monitors.seen_passive(source, record.sequence());
        }
    }

    /// Records known to be missing.
    pub fn lost(&mut self, lost: Lost) {
        if self.monitors.is_acting() {
            self.publisher.publish_lost(lost);
        }
    }
}

/// A source of the ingest loop: it registers its descriptors with the
/// loop's one poll, and reacts when one is ready. No source runs a loop of
/// its own.
pub trait IngestSource: Send + std::fmt::Debug {
    /// The name of the source (`Fault(source, …)`, counters).
    fn source(&self) -> Source;
    /// Registers its descriptors (readable, edge-triggered) under
    /// `tokens.token(slot)`, slots 0..[`SourceTokens::SLOTS`].
    fn register(&mut self, registry: &Registry, tokens: SourceTokens) -> io::Result<()>;
    /// The descriptor of `slot` is ready: reads until it would block (and
    /// whatever else is due). Returns the records published.
    fn on_event(
        &mut self,
        slot: usize,
        out: &mut Dispatch<'_>,
        counters: &SourceCounters,
    ) -> io::Result<u64>;
    /// Ingest starts, with the first subscribers in place: publishes what
    /// the source found when it opened, then reads what arrived since.
    fn start(&mut self, out: &mut Dispatch<'_>, counters: &SourceCounters) -> io::Result<u64> {
        self.on_event(0, out, counters)
    }
    /// Restores the last sequence seen from `driver_id` (recorded before a
    /// restart), so a gap across the restart is reported as lost.
    fn restore_cursor(&mut self, driver_id: u32, last: u64) {
        let _ = (driver_id, last);
    }
    /// Why part of this source has stopped working while the rest goes on
    /// (the driver's char device gone, its netlink group still read);
    /// `None` while all of it works.
    fn trouble(&self) -> Option<String> {
        None
    }
    /// Tries to bring back what [`IngestSource::trouble`] reports (called
    /// by the ingest loop with a growing delay until it succeeds).
    fn recover(&mut self) -> Result<(), String> {
        Err("this source cannot be restarted".into())
    }
    /// Whether [`IngestSource::hand_over`] can give this source to another
    /// process (a live upgrade's other side).
    fn can_hand_over(&self) -> bool {
        false
    }
    /// Leaves the ingest loop's poll (before [`IngestSource::hand_over`]);
    /// [`IngestSource::register`] puts it back.
    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        let _ = registry;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Duplicates of its descriptors and the state that goes with them
    /// (sequence cursors), for another process: whatever is unread in them
    /// is read by whoever takes them once this source is dropped. `None`
    /// when it cannot be handed over.
    fn hand_over(&self) -> Option<HandedSource> {
        None
    }
}

/// A source handed over to another process: its open descriptors and its
/// state. The descriptors cross with `SCM_RIGHTS`, the state as JSON.
#[derive(Debug)]
pub struct HandedSource {
    pub fds: Vec<std::os::fd::OwnedFd>,
    pub state: HandedState,
}

/// The state of a handed-over source (layout versioned with the rest of
/// the hand-over, `upgrade::info::HANDOVER_VERSION`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandedState {
    /// The source's name (`expdrv`).
    pub source: String,
    /// The netlink protocol of its socket.
    pub protocol: i32,
    /// Per driver id, the last sequence read from the socket handed over.
    pub cursors: Vec<(u32, u64)>,
    /// An overrun seen and not yet sized by a later record.
    pub overrun_pending: bool,
    /// The sequence the source gives its next record, for sources that
    /// number their own (uevent; FC for records it synthesizes).
    #[serde(default)]
    pub next_sequence: u64,
    /// What else a source needs (rtnetlink: the interfaces it knows).
    #[serde(default)]
    pub extra: serde_json::Value,
}

impl HandedState {
    /// The state of `source`'s socket of `protocol`, with nothing else
    /// written yet.
    pub fn new(source: Source, protocol: i32) -> Self {
        HandedState {
            source: source.name().to_string(),
            protocol,
            cursors: Vec::new(),
            overrun_pending: false,
            next_sequence: 0,
            extra: serde_json::Value::Null,
        }
    }
}

fn one_fd(fds: Vec<std::os::fd::OwnedFd>, name: &str) -> Result<std::os::fd::OwnedFd, String> {
    let [fd] = <[std::os::fd::OwnedFd; 1]>::try_from(fds).map_err(|v| {
        format!(
            "source {name}: {} descriptors handed over, expected 1",
            v.len()
        )
    })?;
    Ok(fd)
}

/// Rebuilds a source handed over by the other side (accepting senders as
/// `config` says: both sides run the same configuration).
pub fn take_handed(
    h: HandedSource,
    config: &crate::Config,
) -> Result<Box<dyn IngestSource>, String> {
    match h.state.source.as_str() {
        "expdrv" => {
            let fd = one_fd(h.fds, "expdrv")?;
            Ok(Box::new(expdrv::ExpdrvNetlink::from_handed(
                NetlinkSocket::from_fd(fd, h.state.protocol),
                config.expdrv.accept,
                &h.state,
            )))
        }
        "fc-transport" => {
            let fd = one_fd(h.fds, "fc-transport")?;
            Ok(Box::new(fc::FcSource::from_handed(
                NetlinkSocket::from_fd(fd, h.state.protocol),
                &config.fc,
                &h.state,
            )))
        }
        "uevent" => {
            let fd = one_fd(h.fds, "uevent")?;
            Ok(Box::new(uevent::UeventSource::from_handed(
                NetlinkSocket::from_fd(fd, h.state.protocol),
                &config.uevent,
                &h.state,
            )))
        }
        "rtnetlink" => {
            let fd = one_fd(h.fds, "rtnetlink")?;
            Ok(Box::new(rtnetlink::RtnetlinkSource::from_handed(
                NetlinkSocket::from_fd(fd, h.state.protocol),
                &config.rtnetlink,
                &h.state,
            )?))
        }
        "expdrv-device" => Ok(Box::new(chardev::ExpdrvDevice::from_handed(
            h.fds,
            &config.expdrv,
            &h.state,
        )?)),
        other => Err(format!("source {other} cannot be taken over by this build")),
    }
}

/// A configured source that could not start, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotStarted {
    pub source: Source,
    /// `optional = true` in its table: the daemon may run without it.
    pub optional: bool,
    pub reason: String,
    /// The error number of the cause, when there is one.
    pub errno: Option<i32>,
}

impl NotStarted {
    fn new(source: Source, optional: bool, e: &(dyn std::error::Error + 'static)) -> Self {
        NotStarted {
            source,
            optional,
            reason: reason(e),
            errno: crate::error::errno(e),
        }
    }
}

/// The configuration table of `source` (`sources.expdrv`, …).
pub fn table(source: Source) -> &'static str {
    match source {
        Source::Expdrv | Source::ExpdrvDevice => "sources.expdrv",
        Source::Rtnetlink => "sources.rtnetlink",
        Source::FcTransport => "sources.fc",
        Source::Uevent => "sources.uevent",
        _ => "sources",
    }
}

/// Why a source could not start, in one line: the error chain, and what to
/// do when the cause is a missing privilege.
pub fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = crate::error::error_chain(e);
    if crate::error::errno(e) == Some(nix::errno::Errno::EPERM as i32) {
        text.push_str(
            " (joining a netlink multicast group needs CAP_NET_ADMIN: run as root, or as the packaged service, which has AmbientCapabilities=CAP_NET_ADMIN)",
        );
    }
    text
}

/// Opens every source of `config`: the driver's char device (when
/// configured; it brings the driver's own netlink group), the expanded
/// driver's netlink group when the device is not open, rtnetlink, FC
/// transport and uevents. Returns the sources that run, and those that
/// could not start (the caller says so: nothing is printed here).
pub fn open_all(config: &crate::Config) -> (Vec<Box<dyn IngestSource>>, Vec<NotStarted>) {
    let mut v: Vec<Box<dyn IngestSource>> = Vec::new();
    let mut failed = Vec::new();
    let e = &config.expdrv;
    let mut device_open = false;
    if let (true, Some(path)) = (e.enabled, &e.device) {
        match chardev::ExpdrvDevice::open(path, e) {
            Ok(s) => {
                device_open = true;
                v.push(Box::new(s));
            }
            Err(err) => {
                let mut f = NotStarted::new(Source::ExpdrvDevice, e.optional, &err);
                f.reason.push_str(&format!(
                    "; reading the configured netlink protocol {} group {} instead",
                    e.netlink_protocol, e.netlink_group
                ));
                failed.push(f);
            }
        }
    }
    if e.enabled && !device_open {
        match reopen(config, Source::Expdrv) {
            Ok(s) => v.push(s),
            Err(f) => failed.push(f),
        }
    }
    for (enabled, source) in [
        (config.rtnetlink.enabled, Source::Rtnetlink),
        (config.fc.enabled, Source::FcTransport),
        (config.uevent.enabled, Source::Uevent),
    ] {
        if enabled {
            match reopen(config, source) {
                Ok(s) => v.push(s),
                Err(f) => failed.push(f),
            }
        }
    }
    (v, failed)
}

/// Whether `config` lets the daemon run without `source`.
pub fn optional(config: &crate::Config, source: Source) -> bool {
    match source {
        Source::Expdrv | Source::ExpdrvDevice => config.expdrv.optional,
        Source::Rtnetlink => config.rtnetlink.optional,
        Source::FcTransport => config.fc.optional,
        Source::Uevent => config.uevent.optional,
        _ => true,
    }
}

/// Opens one netlink source of `config` (at start-up, and again after it
/// failed): the expanded driver's group, rtnetlink, FC transport or
/// uevents. The char device is reopened by its own source.
pub fn reopen(config: &crate::Config, source: Source) -> Result<Box<dyn IngestSource>, NotStarted> {
    let optional = optional(config, source);
    fn boxed<S: IngestSource + 'static, E: std::error::Error + 'static>(
        r: Result<S, E>,
        source: Source,
        optional: bool,
    ) -> Result<Box<dyn IngestSource>, NotStarted> {
        r.map(|s| Box::new(s) as Box<dyn IngestSource>)
            .map_err(|e| NotStarted::new(source, optional, &e))
    }
    match source {
        Source::Expdrv => boxed(
            expdrv::ExpdrvNetlink::open(&config.expdrv),
            source,
            optional,
        ),
        Source::Rtnetlink => boxed(
            rtnetlink::RtnetlinkSource::open(&config.rtnetlink),
            source,
            optional,
        ),
        Source::FcTransport => boxed(fc::FcSource::open(&config.fc), source, optional),
        Source::Uevent => boxed(uevent::UeventSource::open(&config.uevent), source, optional),
        _ => Err(NotStarted {
            source,
            optional,
            reason: "not a source that is opened again on its own".into(),
            errno: None,
        }),
    }
}

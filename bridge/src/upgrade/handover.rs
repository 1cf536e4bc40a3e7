//! The two processes and what passes between them.
//!
//! The Production side starts the new binary as the Upgrade side
//! (`faultbridge upgrade-side`), detached in a session of its own so it
//! outlives the old one, and talks to it over a Unix socket pair that is
//! the new process's standard input and output: one JSON object per line
//! each way, `{"v":HANDOVER_VERSION,"m":{…}}`, descriptors riding with the
//! message that carries them (`SCM_RIGHTS`).
//!
//! Before Merge the Production side asks and the Upgrade side answers
//! (`status`, `exit`). At Merge the Production side's ingest loop stops
//! after the record in hand and its sockets, sequence cursors and monitor
//! states go over in one `hand_over` message; the Upgrade side reads on
//! from the next record in those very sockets and answers `took`. From
//! then on the Upgrade side owns `org.faultbridge.Bridge1` and drives the
//! upgrade: it asks and the old side answers (`status`, `commit`, and
//! `hand_over` the other way for an abort). End of file before Merge means
//! the other side is gone: the Upgrade side then exits (it acted on
//! nothing).

use super::coordinator::{Coordinator, PeerStatus, Sides};
use super::info::{HANDOVER_VERSION, version};
use super::state::{Side, Step};
use crate::action::RunnerMsg;
use crate::activity::ActivitySeverity;
use crate::config::Config;
use crate::daemon::{ControlHandle, Released, Taken};
use crate::monitor::HandedMonitor;
use crate::sources::{HandedSource, HandedState, IngestSource};
use faultbridge_bus::dbus::Settler;
use faultbridge_ffi::sys::process::fdpass::{recv_with_fds, send_with_fds};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A message between the sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// The Upgrade side receives (its first message).
    Ready {
        version: String,
        pid: u32,
    },
    /// Asks the other side about itself.
    Status,
    StatusIs {
        status: PeerStatus,
    },
    /// Acting moves to the receiver: the sources' descriptors ride with it.
    HandOver {
        state: HandOverState,
    },
    /// The receiver acts now, from the record after the sender's last.
    Took {
        status: PeerStatus,
    },
    /// A request the receiver could not serve; nothing changed.
    Refused {
        message: String,
    },
    /// The running side's monitor states, for the new side to start from
    /// at Split (it acts on none of them).
    Monitors {
        monitors: Vec<HandedMonitor>,
    },
    /// How many it took.
    Adopted {
        count: usize,
    },
    /// The old side's Merge step ended (its stop, start and backup
    /// actions), with the time each step of the upgrade took there.
    MergeDone {
        ok: bool,
        message: String,
        step_times_ns: Vec<(String, u64)>,
    },
    /// The upgrade is committed: the old side exits.
    Commit,
    /// Exit (the Upgrade side, before Merge).
    Exit,
    Bye,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u32,
    m: Msg,
}

/// What moves with acting: the sources (descriptors alongside, in order),
/// every monitor's state, and the `Notify` sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOverState {
    pub sources: Vec<HandedState>,
    /// How many descriptors each source brings, in order.
    pub fds: Vec<u32>,
    pub monitors: Vec<HandedMonitor>,
    pub notify_next: u64,
    /// When the sender stopped acting (CLOCK_MONOTONIC, the same clock in
    /// both processes): the receiver tells how long acting paused.
    pub released_at_ns: u64,
    /// Per monitor name, its exit-program restart count.
    pub restart_counts: Vec<(String, u32)>,
}

impl HandOverState {
    fn of(r: &Released) -> HandOverState {
        HandOverState {
            sources: r.sources.iter().map(|h| h.state.clone()).collect(),
            fds: r.sources.iter().map(|h| h.fds.len() as u32).collect(),
            monitors: r.monitors.clone(),
            notify_next: r.notify_next,
            released_at_ns: r.released_at_ns,
            restart_counts: r.restart_counts.clone(),
        }
    }

    /// Where the sender stopped: per source, per driver id for the records
    /// that carry the sender's sequence, else the source's own sequence.
    pub fn boundary(&self) -> String {
        let mut v: Vec<String> = Vec::new();
        for s in &self.sources {
            if s.cursors.is_empty() {
                v.push(match s.next_sequence {
                    0 | 1 => format!("{} before its first record", s.source),
                    n => format!("{} after #{}", s.source, n - 1),
                });
            }
            for (d, n) in &s.cursors {
                v.push(format!("{} driver {d} after #{n}", s.source));
            }
        }
        if v.is_empty() {
            v.push("no source".into());
        }
        v.join(", ")
    }
}

/// The descriptors of `r`, borrowed for sending.
fn fds_of(r: &Released) -> Vec<BorrowedFd<'_>> {
    r.sources
        .iter()
        .flat_map(|h| h.fds.iter().map(|f| f.as_fd()))
        .collect()
}

/// The sources of a hand-over rebuilt from its state and descriptors.
pub fn taken(
    state: HandOverState,
    mut fds: Vec<OwnedFd>,
    config: &Config,
) -> Result<Taken, String> {
    let want: usize = state.fds.iter().map(|&n| n as usize).sum();
    if fds.len() != want || state.fds.len() != state.sources.len() {
        return Err(format!(
            "{} descriptors came with the hand-over, {want} expected",
            fds.len()
        ));
    }
    let mut sources: Vec<Box<dyn IngestSource>> = Vec::new();
    for (s, n) in state.sources.into_iter().zip(state.fds) {
        let rest = fds.split_off(n as usize);
        let mine = std::mem::replace(&mut fds, rest);
        sources.push(crate::sources::take_handed(
            HandedSource {
                fds: mine,
                state: s,
            },
            config,
        )?);
    }
    Ok(Taken {
        sources,
        monitors: state.monitors,
        notify_next: state.notify_next,
        released_at_ns: state.released_at_ns,
        restart_counts: state.restart_counts,
    })
}

/// How long acting paused, from the other side's release until now.
pub fn gap_since(released_at_ns: u64) -> std::time::Duration {
    std::time::Duration::from_nanos(
        faultbridge_ffi::sys::monotonic_ns().saturating_sub(released_at_ns),
    )
}

/// Own released sources taken back (the other side did not take them).
fn taken_back(r: Released, config: &Config) -> Result<Taken, String> {
    let state = HandOverState::of(&r);
    let fds = r.sources.into_iter().flat_map(|h| h.fds).collect();
    taken(state, fds, config)
}

/// One end of the socket pair: lines of JSON, descriptors alongside.
#[derive(Debug)]
pub struct Channel {
    sock: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    /// The other process, for messages.
    pub peer_pid: u32,
}

impl Channel {
    pub fn new(sock: UnixStream, peer_pid: u32) -> Channel {
        Channel {
            sock,
            buf: Vec::new(),
            fds: VecDeque::new(),
            peer_pid,
        }
    }

    fn who(&self) -> String {
        format!("the other side (pid {})", self.peer_pid)
    }

    /// Sends `m`, with `fds` attached.
    pub fn send(&self, m: &Msg, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
        let mut line = serde_json::to_string(&Envelope {
            v: HANDOVER_VERSION,
            m: m.clone(),
        })
        .map_err(|e| e.to_string())?;
        line.push('\n');
        send_with_fds(self.sock.as_fd(), line.as_bytes(), fds)
            .map_err(|e| format!("{} is gone: {e}", self.who()))
    }

    /// The next message (`None`: wait as long as it takes), and the
    /// descriptors that came with it.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<(Msg, Vec<OwnedFd>), String> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line);
                let env: Envelope = serde_json::from_str(text.trim()).map_err(|e| {
                    format!("{} sent something unreadable ({e}): {text:?}", self.who())
                })?;
                if env.v != HANDOVER_VERSION {
                    return Err(format!(
                        "{} speaks hand-over version {}, this side {HANDOVER_VERSION}",
                        self.who(),
                        env.v
                    ));
                }
                let fds = match &env.m {
                    Msg::HandOver { state } => {
                        let n: usize = state.fds.iter().map(|&n| n as usize).sum();
                        if self.fds.len() < n {
                            return Err(format!(
                                "{} handed over {} descriptors, {n} announced",
                                self.who(),
                                self.fds.len()
                            ));
                        }
                        self.fds.drain(..n).collect()
                    }
                    _ => Vec::new(),
                };
                return Ok((env.m, fds));
            }
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(format!(
                            "{} did not answer within {:?}",
                            self.who(),
                            timeout.unwrap_or_default()
                        ));
                    }
                    Some(left)
                }
            };
            self.sock
                .set_read_timeout(left)
                .map_err(|e| e.to_string())?;
            let mut chunk = vec![0u8; 64 * 1024];
            match recv_with_fds(self.sock.as_fd(), &mut chunk) {
                Ok((0, _)) => return Err(format!("{} closed its end: it has exited", self.who())),
                Ok((n, fds)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.fds.extend(fds);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("{}: {e}", self.who())),
            }
        }
    }

    /// Sends `m` and waits for the answer.
    pub fn ask(&mut self, m: &Msg, timeout: Duration) -> Result<(Msg, Vec<OwnedFd>), String> {
        self.send(m, &[])?;
        self.recv(Some(timeout))
    }

    /// Waits for the other end to close, at most `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.recv(Some(deadline.saturating_duration_since(Instant::now()))) {
                Ok(_) => {}
                Err(e) => return e.contains("closed its end"),
            }
        }
        false
    }
}

/// How long the Upgrade side may take to start receiving.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to answer a message.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the side that stops acting waits for its last D-Bus signals
/// to leave before the other side takes the name.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a side needs of its own daemon to hand acting over or take it.
#[derive(Clone, Debug)]
pub struct Local {
    pub control: ControlHandle,
    /// The D-Bus service's signals (absent without D-Bus).
    pub settler: Option<Settler>,
    pub config: Arc<Config>,
}

impl Local {
    /// Stops acting after the record in hand; the last D-Bus signals of
    /// this side go out.
    fn release(&self) -> Result<Released, String> {
        let mut r = self.control.release()?;
        r.restart_counts = restart_counts(&self.control, &self.config);
        if let Some(s) = &self.settler
            && !s.settle(SETTLE_TIMEOUT)
        {
            eprintln!(
                "faultbridge: upgrade: D-Bus signals still queued after {SETTLE_TIMEOUT:?}; handing over anyway (subscribers are told what they miss as Lost)"
            );
        }
        Ok(r)
    }

    /// Acts again over its own released sources.
    fn take_back(&self, r: Released) -> Result<(), String> {
        let t = taken_back(r, &self.config)?;
        self.take(t)
    }

    /// Acts over `t`, with its restart counts.
    pub fn take(&self, t: Taken) -> Result<(), String> {
        let counts = t.restart_counts.clone();
        self.control.take_over(t).map_err(|e| e.to_string())?;
        set_restart_counts(&self.control, &self.config, &counts);
        Ok(())
    }
}

/// Every monitor's exit-program restart count, by name (empty if the
/// runner does not answer within a second).
fn restart_counts(control: &ControlHandle, config: &Config) -> Vec<(String, u32)> {
    if config.monitors.is_empty() {
        return Vec::new();
    }
    let (reply, rx) = crossbeam_channel::bounded(1);
    if control
        .send(crate::daemon::Control::Runner(RunnerMsg::Counts { reply }))
        .is_err()
    {
        return Vec::new();
    }
    match rx.recv_timeout(Duration::from_secs(1)) {
        Ok(counts) => config
            .monitors
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(m, n)| (m.name.clone(), n))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Restart counts taken over, applied by monitor name.
fn set_restart_counts(control: &ControlHandle, config: &Config, counts: &[(String, u32)]) {
    let counts: Vec<(usize, u32)> = counts
        .iter()
        .filter_map(|(name, n)| {
            config
                .monitors
                .iter()
                .position(|m| &m.name == name)
                .map(|i| (i, *n))
        })
        .collect();
    if !counts.is_empty() {
        let _ = control.send(crate::daemon::Control::Runner(RunnerMsg::SetCounts {
            counts,
        }));
    }
}

#[derive(Debug)]
struct Peer {
    child: Child,
    chan: Channel,
    status: Option<PeerStatus>,
}

impl Peer {
    fn ask_status(&mut self) -> Result<PeerStatus, String> {
        match self.chan.ask(&Msg::Status, ANSWER_TIMEOUT)?.0 {
            Msg::StatusIs { status } => {
                self.status = Some(status.clone());
                Ok(status)
            }
            other => Err(format!("the Upgrade side answered {other:?} to status")),
        }
    }

    /// Asks it to exit and waits for it; kills it if it does not.
    fn end(mut self) -> Result<(), String> {
        let asked = self.chan.ask(&Msg::Exit, ANSWER_TIMEOUT);
        reap(&mut self.child, ANSWER_TIMEOUT, asked.map(|_| ()))
    }
}

/// Waits for `child` to exit, at most `timeout`; kills it if it has not.
fn reap(child: &mut Child, timeout: Duration, asked: Result<(), String>) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return match asked {
                    Ok(()) => Ok(()),
                    Err(e) => Err(format!("{e}; it was killed")),
                };
            }
        }
    }
}

/// The Production side's view of the other process.
#[derive(Debug)]
pub struct ProcessSides {
    /// The configuration file the new side is started with.
    config: Option<PathBuf>,
    local: Option<Local>,
    peer: Option<Peer>,
    coordinator: Option<Weak<Coordinator>>,
    /// After Merge: where to tell the new side how the Merge step ended.
    merged: Option<UnixStream>,
}

impl ProcessSides {
    /// `local` is the running daemon (None: sides that can split and be
    /// inspected but not merge).
    pub fn new(config: Option<PathBuf>, local: Option<Local>) -> ProcessSides {
        ProcessSides {
            config,
            local,
            peer: None,
            coordinator: None,
            merged: None,
        }
    }
}

impl Sides for ProcessSides {
    fn split(&mut self, binary: &Path) -> Result<(), String> {
        if self.peer.is_some() {
            // A retried split whose process is still there: check it.
            return self.check_peer();
        }
        // A new upgrade (an earlier one was aborted after its Merge).
        self.merged = None;
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
        let theirs_out = theirs
            .try_clone()
            .map_err(|e| format!("socket pair: {e}"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("upgrade-side");
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        // A daemon that prints its faults hands its output on: the new side
        // prints there from the moment it acts.
        if let Some((mode, out)) = super::printer() {
            let out = out.map_err(|e| format!("cannot pass on the fault output: {e}"))?;
            cmd.args(["--print", mode, "--print-fd", "3"]);
            faultbridge_ffi::sys::process::pass_fd(&mut cmd, out, 3);
        }
        // Its own watchdog keep-alives count under systemd once it is the
        // main process (WATCHDOG_PID names this one).
        cmd.current_dir("/")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_out)))
            .stderr(Stdio::inherit());
        faultbridge_ffi::sys::process::new_session(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id();
        let mut peer = Peer {
            child,
            chan: Channel::new(ours, pid),
            status: None,
        };
        match peer.chan.recv(Some(START_TIMEOUT)) {
            Ok((Msg::Ready { .. }, _)) => {}
            Ok((other, _)) => {
                let _ = peer.end();
                return Err(format!(
                    "the Upgrade side started with {other:?} instead of ready"
                ));
            }
            Err(e) => {
                let _ = peer.child.kill();
                let _ = peer.child.wait();
                return Err(e);
            }
        }
        peer.ask_status()?;
        // It starts from this side's monitor states, then follows what it
        // receives.
        if let Some(l) = &self.local {
            let monitors = l.control.monitor_snapshot().map_err(|e| e.to_string())?;
            match peer.chan.ask(&Msg::Monitors { monitors }, ANSWER_TIMEOUT) {
                Ok((Msg::Adopted { .. }, _)) => {}
                Ok((other, _)) => {
                    let _ = peer.end();
                    return Err(format!(
                        "the Upgrade side answered {other:?} to the monitor states"
                    ));
                }
                Err(e) => {
                    let _ = peer.end();
                    return Err(e);
                }
            }
        }
        self.peer = Some(peer);
        Ok(())
    }

    fn check_peer(&mut self) -> Result<(), String> {
        let peer = self
            .peer
            .as_mut()
            .ok_or_else(|| "no Upgrade side is running".to_string())?;
        peer.ask_status()?;
        if let Some(l) = &self.local {
            let cannot = l.control.hand_over_check().map_err(|e| e.to_string())?;
            if !cannot.is_empty() {
                let names: Vec<String> = cannot.iter().map(|s| s.to_string()).collect();
                return Err(format!(
                    "source {} cannot be handed over by this build; abort, or run without it",
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn merge(&mut self) -> Result<(), String> {
        if self.merged.is_some() {
            // A retried merge step: acting has moved already.
            return Ok(());
        }
        self.check_peer()?;
        let local = self
            .local
            .clone()
            .ok_or_else(|| "this daemon cannot hand acting over".to_string())?;
        let mut peer = self
            .peer
            .take()
            .ok_or_else(|| "no Upgrade side is running".to_string())?;
        let released = local.release()?;
        let state = HandOverState::of(&released);
        let boundary = state.boundary();
        let answer = peer
            .chan
            .send(&Msg::HandOver { state }, &fds_of(&released))
            .and_then(|()| peer.chan.recv(Some(START_TIMEOUT)));
        match answer {
            Ok((Msg::Took { .. }, _)) => {
                // The new side reads the sockets now; ours close.
                drop(released);
                if let Some(c) = self.coordinator.as_ref().and_then(Weak::upgrade) {
                    c.note(
                        ActivitySeverity::Information,
                        format!(
                            "acting moved to the Upgrade side (pid {}): this side stopped after {boundary}",
                            peer.child.id()
                        ),
                    );
                }
                self.merged = Some(
                    peer.chan
                        .sock
                        .try_clone()
                        .map_err(|e| format!("socket pair: {e}"))?,
                );
                let server = OldSide {
                    peer,
                    local,
                    coordinator: self.coordinator.clone(),
                };
                std::thread::Builder::new()
                    .name("fb-upgrade-old".into())
                    .spawn(move || server.run())
                    .map_err(|e| format!("cannot start a thread: {e}"))?;
                Ok(())
            }
            other => {
                // Not taken: this side acts again from where it stopped.
                let why = match other {
                    Ok((Msg::Refused { message }, _)) => message,
                    Ok((m, _)) => format!("it answered {m:?}"),
                    Err(e) => e,
                };
                local.take_back(released)?;
                self.peer = Some(peer);
                Err(format!(
                    "the Upgrade side did not take over ({why}); this side acts on"
                ))
            }
        }
    }

    fn commit(&mut self) -> Result<(), String> {
        Err("the commit is driven by the Upgrade side, which owns the bus name since Merge".into())
    }

    fn abort(&mut self) -> Result<(), String> {
        match self.peer.take() {
            Some(p) => p.end(),
            None => Ok(()),
        }
    }

    fn peer(&mut self) -> Option<PeerStatus> {
        let p = self.peer.as_mut()?;
        match p.ask_status() {
            Ok(s) => Some(s),
            Err(_) => p.status.clone(),
        }
    }

    fn attach(&mut self, coordinator: Weak<Coordinator>) {
        self.coordinator = Some(coordinator);
    }

    fn step_done(&mut self, step: Step, result: &Result<(), String>) {
        if step != Step::ExecuteMerge {
            return;
        }
        if let Some(w) = &self.merged {
            let chan = Channel::new(
                match w.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                },
                0,
            );
            let step_times_ns = self
                .coordinator
                .as_ref()
                .and_then(Weak::upgrade)
                .map(|c| c.status().step_times_ns)
                .unwrap_or_default();
            let _ = chan.send(
                &Msg::MergeDone {
                    ok: result.is_ok(),
                    message: result.clone().err().unwrap_or_default(),
                    step_times_ns,
                },
                &[],
            );
        }
    }
}

impl Drop for ProcessSides {
    /// The Upgrade side goes with a Production side that stops before Merge.
    fn drop(&mut self) {
        if let Some(p) = self.peer.take() {
            let _ = p.end();
        }
    }
}

/// The old side after Merge: passive, answering the new side.
struct OldSide {
    peer: Peer,
    local: Local,
    coordinator: Option<Weak<Coordinator>>,
}

impl OldSide {
    fn coordinator(&self) -> Option<Arc<Coordinator>> {
        self.coordinator.as_ref().and_then(Weak::upgrade)
    }

    fn status(&self, acting: bool) -> PeerStatus {
        PeerStatus {
            side: Side::Production.name().into(),
            version: version().into(),
            pid: std::process::id(),
            acting,
            sequences: Default::default(),
        }
    }

    fn run(mut self) {
        let mut acting = false;
        loop {
            let (m, fds) = match self.peer.chan.recv(None) {
                Ok(x) => x,
                Err(e) => {
                    if !acting {
                        self.lost_peer(&e);
                    }
                    let _ = reap(&mut self.peer.child, ANSWER_TIMEOUT, Ok(()));
                    return;
                }
            };
            let reply = match m {
                Msg::Status => Msg::StatusIs {
                    status: self.status(acting),
                },
                Msg::HandOver { state } if !acting => {
                    let boundary = state.boundary();
                    let released_at_ns = state.released_at_ns;
                    // Signals wait until the name is back here (the other
                    // side gives it up once this side has taken acting).
                    self.hold(true);
                    match taken(state, fds, &self.local.config).and_then(|t| self.local.take(t)) {
                        Ok(()) => {
                            acting = true;
                            if let Some(c) = self.coordinator() {
                                c.acting_gap(gap_since(released_at_ns));
                                c.note(
                                    ActivitySeverity::Information,
                                    format!("acting is back on this side: the Upgrade side stopped after {boundary}"),
                                );
                                c.taken_back();
                            }
                            Msg::Took {
                                status: self.status(true),
                            }
                        }
                        Err(message) => {
                            self.hold(false);
                            Msg::Refused { message }
                        }
                    }
                }
                Msg::Commit if !acting => {
                    let _ = self.peer.chan.send(&Msg::Bye, &[]);
                    if let Some(c) = self.coordinator() {
                        c.note(
                            ActivitySeverity::Success,
                            format!(
                                "Commit: the Upgrade side (pid {}) is the daemon now; this side exits",
                                self.peer.chan.peer_pid
                            ),
                        );
                    }
                    super::exit_handed_over();
                    return;
                }
                other => Msg::Refused {
                    message: format!("{other:?} is not served by the old side now"),
                },
            };
            let took = matches!(reply, Msg::Took { .. });
            // Gone if this fails: the next receive tells.
            let _ = self.peer.chan.send(&reply, &[]);
            if took {
                self.wait_name();
            }
        }
    }

    fn hold(&self, held: bool) {
        if let Some(s) = &self.local.settler {
            s.hold(held);
        }
    }

    /// Waits until the name is back on this side (the other side gives it
    /// up, or ends), then lets the held signals go.
    fn wait_name(&self) {
        if let Some(s) = &self.local.settler {
            if !s.wait_owner(ANSWER_TIMEOUT) {
                eprintln!(
                    "faultbridge: upgrade: {} not back on this side within {ANSWER_TIMEOUT:?}; signals go out anyway",
                    faultbridge_bus::dbus::BUS_NAME
                );
            }
            s.hold(false);
        }
    }

    /// The new side ended while it was acting, without handing back: its
    /// sockets died with it. This side opens its sources again and acts;
    /// what arrived in between is lost, and said so.
    fn lost_peer(&self, why: &str) {
        let msg = format!(
            "the Upgrade side ended while acting without handing back ({why}): this side opens its sources again and acts; records sent meanwhile may be lost"
        );
        eprintln!("faultbridge: upgrade: {msg}");
        let (sources, not_started) = crate::sources::open_all(&self.local.config);
        for f in &not_started {
            eprintln!(
                "faultbridge: upgrade: source {}: cannot start: {}",
                f.source, f.reason
            );
        }
        let t = Taken {
            sources,
            monitors: Vec::new(),
            notify_next: 0,
            released_at_ns: 0,
            restart_counts: Vec::new(),
        };
        let _ = self.local.take(t);
        if let Some(c) = self.coordinator() {
            c.note(ActivitySeverity::Error, msg);
            c.taken_back();
        }
    }
}

/// The Upgrade side's view of the old one once acting has moved to it:
/// it drives the rest of the upgrade (commit, or abort handing acting
/// back), and after Commit the next upgrade as a Production side.
pub struct NewSides {
    chan: Option<Channel>,
    local: Local,
    /// Gives up `org.faultbridge.Bridge1` (the old side, queued for it,
    /// owns it again at once).
    release_name: Box<dyn Fn() -> Result<(), String> + Send>,
    next: ProcessSides,
}

impl std::fmt::Debug for NewSides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSides")
            .field("chan", &self.chan)
            .finish_non_exhaustive()
    }
}

impl NewSides {
    pub fn new(
        chan: Channel,
        local: Local,
        config_path: Option<PathBuf>,
        release_name: Box<dyn Fn() -> Result<(), String> + Send>,
    ) -> NewSides {
        NewSides {
            chan: Some(chan),
            next: ProcessSides::new(config_path, Some(local.clone())),
            local,
            release_name,
        }
    }

    fn chan(&mut self) -> Result<&mut Channel, String> {
        self.chan
            .as_mut()
            .ok_or_else(|| "the old side is gone (committed)".to_string())
    }
}

impl Sides for NewSides {
    fn split(&mut self, binary: &Path) -> Result<(), String> {
        if self.chan.is_some() {
            return Err("the previous upgrade is not committed".into());
        }
        self.next.split(binary)
    }

    fn check_peer(&mut self) -> Result<(), String> {
        if self.chan.is_some() {
            return Err("the previous upgrade is not committed".into());
        }
        self.next.check_peer()
    }

    fn merge(&mut self) -> Result<(), String> {
        if self.chan.is_some() {
            // The Merge step retried here: acting moved already.
            return Ok(());
        }
        self.next.merge()
    }

    fn commit(&mut self) -> Result<(), String> {
        let pid = self.chan()?.peer_pid;
        // The unit's main process is this one before the old one exits.
        crate::systemd::main_pid(std::process::id());
        let chan = self.chan()?;
        match chan.ask(&Msg::Commit, ANSWER_TIMEOUT) {
            Ok((Msg::Bye, _)) => {}
            Ok((other, _)) => return Err(format!("the old side answered {other:?} to commit")),
            // Stopped already (a signal): nothing left to end.
            Err(e) if e.contains("closed its end") || e.contains("is gone") => {
                eprintln!(
                    "faultbridge: upgrade: commit: the old side (pid {pid}) had exited already"
                );
                self.chan = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if !chan.wait_closed(ANSWER_TIMEOUT) {
            eprintln!(
                "faultbridge: upgrade: the old side (pid {pid}) said bye but has not exited within {ANSWER_TIMEOUT:?}"
            );
        }
        self.chan = None;
        Ok(())
    }

    fn abort(&mut self) -> Result<(), String> {
        if self.chan.is_none() {
            return self.next.abort();
        }
        let released = self.local.release()?;
        let state = HandOverState::of(&released);
        let chan = self.chan()?;
        let answer = chan
            .send(&Msg::HandOver { state }, &fds_of(&released))
            .and_then(|()| chan.recv(Some(START_TIMEOUT)));
        match answer {
            Ok((Msg::Took { .. }, _)) => {
                drop(released);
                self.chan = None;
                // The old side acts, its signals held until it owns the
                // name again: give it up (it is queued for it).
                if let Err(e) = (self.release_name)() {
                    eprintln!(
                        "faultbridge: upgrade: cannot give up the bus name: {e}; it goes with this process"
                    );
                }
                // Nothing left to do here: this process ends.
                super::exit_handed_over();
                Ok(())
            }
            other => {
                let why = match other {
                    Ok((Msg::Refused { message }, _)) => message,
                    Ok((m, _)) => format!("it answered {m:?}"),
                    Err(e) => e,
                };
                self.local.take_back(released)?;
                Err(format!(
                    "the old side did not take acting back ({why}); this side acts on"
                ))
            }
        }
    }

    fn peer(&mut self) -> Option<PeerStatus> {
        match self.chan.as_mut() {
            Some(c) => match c.ask(&Msg::Status, ANSWER_TIMEOUT) {
                Ok((Msg::StatusIs { status }, _)) => Some(status),
                _ => None,
            },
            None => self.next.peer(),
        }
    }

    fn attach(&mut self, coordinator: Weak<Coordinator>) {
        self.next.attach(coordinator);
    }

    fn step_done(&mut self, step: Step, result: &Result<(), String>) {
        self.next.step_done(step, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(fds: Vec<u32>) -> HandOverState {
        HandOverState {
            sources: fds
                .iter()
                .map(|_| HandedState {
                    source: "expdrv".into(),
                    protocol: 2,
                    cursors: vec![(1, 41)],
                    overrun_pending: false,
                    next_sequence: 0,
                    extra: serde_json::Value::Null,
                })
                .collect(),
            fds,
            monitors: Vec::new(),
            notify_next: 7,
            released_at_ns: 1,
            restart_counts: vec![("ep".into(), 2)],
        }
    }

    #[test]
    fn a_hand_over_crosses_with_its_descriptors_and_names_its_boundary() {
        let (a, b) = UnixStream::pair().unwrap();
        let (keep, _other) = UnixStream::pair().unwrap();
        let sender = Channel::new(a, 0);
        let mut receiver = Channel::new(b, 0);
        // A message without descriptors first, then the hand-over.
        sender.send(&Msg::Status, &[]).unwrap();
        sender
            .send(
                &Msg::HandOver {
                    state: state(vec![1]),
                },
                &[keep.as_fd()],
            )
            .unwrap();
        let (m, fds) = receiver.recv(Some(Duration::from_secs(5))).unwrap();
        assert_eq!((m, fds.len()), (Msg::Status, 0));
        let (m, fds) = receiver.recv(Some(Duration::from_secs(5))).unwrap();
        let Msg::HandOver { state } = m else {
            panic!("{m:?}")
        };
        assert_eq!(fds.len(), 1);
        assert_eq!(state.boundary(), "expdrv driver 1 after #41");
        assert_eq!(state.restart_counts, [("ep".to_string(), 2)]);
        drop(sender);
        let e = receiver.recv(Some(Duration::from_secs(5))).unwrap_err();
        assert!(e.contains("closed its end"), "{e}");
    }

    #[test]
    fn descriptors_that_do_not_match_the_state_are_refused() {
        let config = Config::simulator(1);
        let e = taken(state(vec![1]), Vec::new(), &config).unwrap_err();
        assert!(
            e.contains("0 descriptors came with the hand-over, 1 expected"),
            "{e}"
        );
    }

    #[test]
    fn another_hand_over_version_is_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        use std::io::Write;
        a.write_all(b"{\"v\":1,\"m\":{\"type\":\"status\"}}\n")
            .unwrap();
        let mut receiver = Channel::new(b, 9);
        let e = receiver.recv(Some(Duration::from_secs(5))).unwrap_err();
        assert!(e.contains("hand-over version 1"), "{e}");
    }
}

//! Fleet forwarding: every row the history database records goes, in
//! order, to a NATS JetStream stream (`[forward.nats]`), where the faults
//! of every host meet.
//!
//! The forwarder is a thread of its own, off the ingest path, fed from
//! the history database rather than from the bus: what is recorded is
//! forwarded, including what was recorded while the servers were
//! unreachable or the daemon was stopped. Its cursor (the last row the
//! stream acknowledged) lives in the database (`forward_cursor`).
//!
//! The client (`async-nats`) runs on a small single-threaded tokio runtime
//! of the forwarder's own. Each connection is one *session*: a window of
//! messages is in flight, each with its `Nats-Msg-Id`, and the
//! acknowledgements are awaited in order. A session never reconnects by
//! itself: on a disconnection, a refused or timed-out acknowledgement, it
//! ends, its runtime is dropped with whatever the client still held, and
//! the next session starts again from the cursor. So nothing sent before
//! the failure can reach a server after what is re-sent, and the stream's
//! de-duplication (by message id) drops what arrives twice.
//!
//! - [`message`]: subject, body and message id of a row;
//! - [`session`]: one connection's life;
//! - this module: the thread, its state for `Status`, start and stop.

pub mod message;
mod session;

use crate::config::NatsForwardConfig;
use crate::history::{HistoryDb, HistoryError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Messages in flight (published, acknowledgement not yet received).
pub const WINDOW: usize = 1024;
/// How long an acknowledgement may take before the session ends.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between two connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the cursor is written while messages are acknowledged.
const SAVE_EVERY: Duration = Duration::from_millis(100);
/// How long a stopping forwarder keeps sending what is recorded.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("cannot connect to {servers}")]
    Connect {
        servers: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot read {what} {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stream {stream}: cannot create it")]
    CreateStream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("stream {stream}: cannot read it")]
    GetStream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::GetStreamError,
    },
    #[error("stream {stream} does not take subject {subject}")]
    SubjectNotInStream { stream: String, subject: String },
    #[error("publishing {msg_id}")]
    Publish {
        msg_id: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("publishing {msg_id}: the client took no more messages for {ACK_TIMEOUT:?}")]
    PublishStalled { msg_id: String },
    #[error("disconnected from {server}")]
    Disconnected { server: String },
    #[error("history database")]
    History(#[from] HistoryError),
    #[error("cannot start the client's runtime")]
    Runtime(#[source] std::io::Error),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The forwarder's state, for `Status` and `faultbridge status`.
#[derive(Debug, Default)]
pub struct ForwardState {
    /// The stream and this host's name in it (from the configuration).
    pub stream: String,
    pub host: String,
    /// The server of the current session (`host:port`), empty when none.
    pub server: Mutex<String>,
    pub connected: AtomicBool,
    /// The last row id the stream acknowledged.
    pub cursor: AtomicU64,
    /// Rows recorded after the cursor.
    pub backlog: AtomicU64,
    /// Messages the stream stored.
    pub forwarded: AtomicU64,
    /// Messages the stream had already (sent again after a failure).
    pub duplicates: AtomicU64,
    /// The stream sequence of the last acknowledgement, and when it came.
    pub last_ack_sequence: AtomicU64,
    pub last_ack_ms: AtomicU64,
    /// Sessions that ended in an error, and the last error.
    pub errors: AtomicU64,
    pub last_error: Mutex<String>,
    pub last_error_ms: AtomicU64,
    /// History rows removed by retention before they were forwarded.
    pub removed_unforwarded: AtomicU64,
}

impl ForwardState {
    fn set_server(&self, server: Option<&str>) {
        if let Ok(mut s) = self.server.lock() {
            s.clear();
            s.push_str(server.unwrap_or(""));
        }
        self.connected.store(server.is_some(), Relaxed);
    }

    fn error(&self, text: &str) {
        self.errors.fetch_add(1, Relaxed);
        self.last_error_ms.store(now_ms(), Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            e.clear();
            e.push_str(text);
        }
    }

    /// The state as `(key, value)` pairs: text values and counters.
    pub fn snapshot(&self) -> ForwardSnapshot {
        ForwardSnapshot {
            stream: self.stream.clone(),
            host: self.host.clone(),
            server: self.server.lock().map(|s| s.clone()).unwrap_or_default(),
            connected: self.connected.load(Relaxed),
            cursor: self.cursor.load(Relaxed),
            backlog: self.backlog.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            last_ack_sequence: self.last_ack_sequence.load(Relaxed),
            last_ack_ms: self.last_ack_ms.load(Relaxed),
            errors: self.errors.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
            last_error_ms: self.last_error_ms.load(Relaxed),
            removed_unforwarded: self.removed_unforwarded.load(Relaxed),
        }
    }
}

/// A copy of [`ForwardState`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForwardSnapshot {
    pub stream: String,
    pub host: String,
    pub server: String,
    pub connected: bool,
    pub cursor: u64,
    pub backlog: u64,
    pub forwarded: u64,
    pub duplicates: u64,
    pub last_ack_sequence: u64,
    pub last_ack_ms: u64,
    pub errors: u64,
    pub last_error: String,
    pub last_error_ms: u64,
    pub removed_unforwarded: u64,
}

/// A running forwarder.
#[derive(Debug)]
pub struct Forwarder {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    state: Arc<ForwardState>,
    pub config: NatsForwardConfig,
}

/// What the forwarder thread shares with its sessions.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: NatsForwardConfig,
    pub stop: Arc<AtomicBool>,
    pub wake: Arc<tokio::sync::Notify>,
    pub state: Arc<ForwardState>,
    /// `nats:<stream>`: the cursor's name in the database.
    pub cursor_name: String,
}

impl Forwarder {
    /// Starts forwarding the history database at `db_path`; `wake` is
    /// told by the history writer after each commit.
    pub fn start(
        config: &NatsForwardConfig,
        db_path: &Path,
        wake: Arc<tokio::sync::Notify>,
    ) -> Result<Forwarder, std::io::Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(ForwardState {
            stream: config.stream.clone(),
            host: config.host.clone(),
            ..ForwardState::default()
        });
        let shared = Shared {
            config: config.clone(),
            stop: stop.clone(),
            wake: wake.clone(),
            state: state.clone(),
            cursor_name: format!("nats:{}", config.stream),
        };
        let path = db_path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("fb-forward".into())
            .spawn(move || run(&shared, &path))?;
        Ok(Forwarder {
            thread: Some(thread),
            stop,
            wake,
            state,
            config: config.clone(),
        })
    }

    pub fn state(&self) -> Arc<ForwardState> {
        self.state.clone()
    }

    /// Stops the forwarder: what is recorded by now is still sent for a
    /// moment when the stream is reachable; the cursor is saved.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Relaxed);
        self.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Logs an error when it differs from the last one logged, or a minute
/// after it was logged: a server down for an hour is not a log flood.
#[derive(Debug, Default)]
struct ErrorLog {
    last: String,
    at: Option<Instant>,
}

impl ErrorLog {
    fn log(&mut self, text: &str) {
        let again = self
            .at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if text != self.last || again {
            eprintln!("faultbridge: forward: {text}");
            self.last = text.to_string();
            self.at = Some(Instant::now());
        }
    }

    fn clear(&mut self) {
        self.last.clear();
        self.at = None;
    }
}

/// The forwarder thread: sessions one after the other until stopped.
/// The forwarder thread's nice value, the lowest: it is off the hot path,
/// so a waking ingest thread takes the CPU from it at once. It still gets
/// its share on a busy machine (what it has not sent waits in the
/// database; nothing is lost), and all the CPU that is free.
const NICE: i32 = 19;

fn run(shared: &Shared, path: &Path) {
    if let Err(e) = faultbridge_ffi::sys::process::set_thread_nice(NICE) {
        eprintln!("faultbridge: forward: cannot lower the forwarder thread's priority: {e}");
    }
    let db = match HistoryDb::open(path) {
        Ok(db) => db,
        Err(e) => {
            let text = crate::error::error_chain(&e);
            shared.state.error(&text);
            eprintln!("faultbridge: forward: cannot start: {text}");
            return;
        }
    };
    // The first time: from the first row there is (rows older than the
    // forwarding were never promised to the stream); the cursor is saved at
    // once, so that rows retention removes before they are sent from now on
    // are told as lost.
    let first_start = |db: &HistoryDb| -> Result<i64, HistoryError> {
        let start = (db.first_id()? - 1).max(0);
        db.save_forward_cursor(&shared.cursor_name, start)?;
        Ok(start)
    };
    let cursor = match db.forward_cursor(&shared.cursor_name) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => first_start(&db),
        Err(e) => Err(e),
    };
    let mut cursor = match cursor {
        Ok(c) => c,
        Err(e) => {
            let text = crate::error::error_chain(&e);
            shared.state.error(&text);
            eprintln!("faultbridge: forward: cannot start: {text}");
            return;
        }
    };
    shared.state.cursor.store(cursor.max(0) as u64, Relaxed);
    let mut log = ErrorLog::default();
    let mut backoff = Duration::from_millis(50);
    while !shared.stop.load(Relaxed) {
        let before = cursor;
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ForwardError::Runtime)
            .and_then(|rt| {
                let r = rt.block_on(session::run(shared, &db, &mut cursor, &mut log));
                // Dropped here: the connection and anything it still held
                // are gone before the next session sends a byte.
                drop(rt);
                r
            });
        shared.state.set_server(None);
        if let Err(e) = db.save_forward_cursor(&shared.cursor_name, cursor) {
            log.log(&format!(
                "cannot save the cursor: {}",
                crate::error::error_chain(&e)
            ));
        }
        match result {
            Ok(()) => break,
            Err(e) => {
                let text = crate::error::error_chain(&e);
                shared.state.error(&text);
                log.log(&text);
            }
        }
        if cursor != before {
            backoff = Duration::from_millis(50);
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !shared.stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

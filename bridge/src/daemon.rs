//! The daemon: one ingest thread owns a mio loop, the sources' sockets,
//! parsing and publishing. Nothing on it waits for a consumer.

use crate::config::Config;
use crate::sources::expdrv::ExpdrvNetlink;
use crate::stats::{Stats, StatsSnapshot};
use faultbridge_bus::{BusHandle, Publisher, Source, SubscribeOptions, Subscription, bus};
use faultbridge_ffi::sys::netlink::NetlinkError;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use thiserror::Error;

/// Why the bridge could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BridgeError {
    #[error("source {source_name}: cannot start")]
    SourceOpen {
        source_name: Source,
        #[source]
        source: NetlinkError,
    },
    #[error("cannot set up the event loop")]
    Poll(#[source] io::Error),
    #[error("cannot start the ingest thread")]
    Thread(#[source] io::Error),
    #[error("the bridge has stopped")]
    Stopped,
}

/// The mio tokens of the ingest loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Wake = 0,
    Expdrv = 1,
}

impl Tok {
    fn of(t: Token) -> Option<Tok> {
        match t.0 {
            0 => Some(Tok::Wake),
            1 => Some(Tok::Expdrv),
            _ => None,
        }
    }
}

/// A running bridge: subscribe to it, read its counters, stop it.
///
/// ```no_run
/// use faultbridge::{Bridge, Config, Event, SubscribeOptions};
/// let bridge = Bridge::start(&Config::simulator(1))?;
/// let faults = bridge.subscribe(SubscribeOptions::new("my-agent"))?;
/// for event in faults.iter() {
///     if let Event::Fault(f) = event {
///         println!("{} {} {}", f.category(), f.keyword(), f.severity());
///     }
/// }
/// # Ok::<(), faultbridge::BridgeError>(())
/// ```
#[derive(Debug)]
pub struct Bridge {
    handle: BusHandle,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

struct Ingest {
    poll: Poll,
    expdrv: Option<ExpdrvNetlink>,
    publisher: Publisher,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Bridge {
    /// Opens the configured sources (so a source that cannot start is
    /// reported here) and starts the ingest thread.
    pub fn start(config: &Config) -> Result<Bridge, BridgeError> {
        let poll = Poll::new().map_err(BridgeError::Poll)?;
        let waker = Arc::new(
            Waker::new(poll.registry(), Token(Tok::Wake as usize)).map_err(BridgeError::Poll)?,
        );
        let expdrv = if config.expdrv.enabled {
            let src =
                ExpdrvNetlink::open(&config.expdrv).map_err(|source| BridgeError::SourceOpen {
                    source_name: Source::Expdrv,
                    source,
                })?;
            poll.registry()
                .register(
                    &mut SourceFd(&src.socket().as_raw_fd()),
                    Token(Tok::Expdrv as usize),
                    Interest::READABLE,
                )
                .map_err(BridgeError::Poll)?;
            Some(src)
        } else {
            None
        };
        let (publisher, handle) = bus();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut ingest = Ingest {
            poll,
            expdrv,
            publisher,
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("fb-ingest".into())
            .spawn(move || ingest.run())
            .map_err(BridgeError::Thread)?;
        Ok(Bridge {
            handle,
            stats,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// Subscribes to every fault and loss notice published from now on.
    pub fn subscribe(&self, opts: SubscribeOptions) -> Result<Subscription, BridgeError> {
        self.handle.subscribe(opts).ok_or(BridgeError::Stopped)
    }

    /// A handle to subscribe from elsewhere.
    pub fn bus(&self) -> BusHandle {
        self.handle.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops the ingest thread (after it finishes the datagram in hand) and
    /// returns the final counters. Subscriptions then drain and close.
    pub fn shutdown(mut self) -> StatsSnapshot {
        self.stop_and_join();
        self.stats.snapshot()
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl Ingest {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        // Drain anything that arrived between bind and the first poll.
        self.on_expdrv();
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("faultbridge: event loop failed: {e}");
                break;
            }
            for ev in events.iter() {
                match Tok::of(ev.token()) {
                    Some(Tok::Expdrv) => self.on_expdrv(),
                    Some(Tok::Wake) | None => {}
                }
            }
        }
    }

    fn on_expdrv(&mut self) {
        let Some(src) = self.expdrv.as_mut() else {
            return;
        };
        if let Err(e) = src.on_readable(&mut self.publisher, self.stats.source(Source::Expdrv)) {
            eprintln!("faultbridge: {}: receive failed: {e}", Source::Expdrv);
        }
        self.stats
            .subscriber_drops
            .store(self.publisher.stats().dropped, Ordering::Relaxed);
    }
}

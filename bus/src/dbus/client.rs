//! The client side: connecting to a bus, the match rules for the signals,
//! and decoding them. Used by `faultbridge watch`, `notify`, `status`,
//! `check` and `reset`, and by anyone embedding a D-Bus subscriber.

use super::BusAddress;
use super::names::{BUS_NAME, INTERFACE, OBJECT_PATH};
use std::time::Duration;
use zbus::connection::Builder;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, Message, MessageStream};

/// A connection builder for `bus`.
pub fn builder(bus: &BusAddress) -> Builder<'_> {
    match bus {
        BusAddress::System => Builder::system(),
        BusAddress::Session => Builder::session(),
        BusAddress::Address(a) => Builder::address(a.as_str()),
    }
}

/// Connects to `bus`; method calls fail with a timeout after `timeout`.
pub async fn connect(bus: &BusAddress, timeout: Option<Duration>) -> zbus::Result<Connection> {
    let mut b = builder(bus);
    if let Some(t) = timeout {
        b = b.method_timeout(t);
    }
    b.build().await
}

/// The `Fault` signals of the daemon, filtered by the bus on category
/// (`arg1`) and keyword (`arg2`) when given.
pub fn fault_rule(
    category: Option<&str>,
    keyword: Option<&str>,
) -> zbus::Result<MatchRule<'static>> {
    let mut b = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .path(OBJECT_PATH)
        .interface(INTERFACE)
        .member("Fault");
    if let Some(c) = category {
        b = b.arg(1, c.to_string());
    }
    if let Some(k) = keyword {
        b = b.arg(2, k.to_string());
    }
    Ok(b.build()?.into_owned())
}

/// The `Lost` signals of the daemon.
pub fn lost_rule() -> zbus::Result<MatchRule<'static>> {
    Ok(MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .path(OBJECT_PATH)
        .interface(INTERFACE)
        .member("Lost")
        .build()?
        .into_owned())
}

/// A `Fault` signal's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSignal {
    pub source: String,
    pub category: String,
    pub keyword: String,
    pub severity: String,
    pub cleared: bool,
    pub event_code: u32,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub detail: Vec<u8>,
}

/// A `Lost` signal's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostSignal {
    pub source: String,
    pub first_sequence: u64,
    pub last_sequence: u64,
}

/// A signal of `org.faultbridge.Bridge1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusSignal {
    Fault(FaultSignal),
    Lost(LostSignal),
}

type FaultArgs = (String, String, String, String, bool, u32, u64, u64, Vec<u8>);

impl BusSignal {
    /// Decodes a `Fault` or `Lost` signal of the bridge interface; `None`
    /// for any other message (or one whose body does not match).
    pub fn parse(msg: &Message) -> Option<BusSignal> {
        if msg.message_type() != MessageType::Signal {
            return None;
        }
        let h = msg.header();
        if h.interface().map(|i| i.as_str()) != Some(INTERFACE) {
            return None;
        }
        match h.member().map(|m| m.as_str()) {
            Some("Fault") => {
                let (
                    source,
                    category,
                    keyword,
                    severity,
                    cleared,
                    event_code,
                    sequence,
                    timestamp_ns,
                    detail,
                ): FaultArgs = msg.body().deserialize().ok()?;
                Some(BusSignal::Fault(FaultSignal {
                    source,
                    category,
                    keyword,
                    severity,
                    cleared,
                    event_code,
                    sequence,
                    timestamp_ns,
                    detail,
                }))
            }
            Some("Lost") => {
                let (source, first_sequence, last_sequence): (String, u64, u64) =
                    msg.body().deserialize().ok()?;
                Some(BusSignal::Lost(LostSignal {
                    source,
                    first_sequence,
                    last_sequence,
                }))
            }
            _ => None,
        }
    }
}

/// The D-Bus error name of a failed call, if the peer replied with one.
pub fn error_name(e: &zbus::Error) -> Option<String> {
    use zbus::DBusError as _;
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(f) => Some(f.name().to_string()),
        zbus::Error::DBus(d) => Some(d.name().to_string()),
        _ => None,
    }
}

/// The description a peer's error reply carries, if any.
pub fn error_message(e: &zbus::Error) -> Option<String> {
    use zbus::DBusError as _;
    match e {
        zbus::Error::MethodError(_, desc, _) => desc.clone(),
        zbus::Error::FDO(f) => f.description().map(str::to_string),
        zbus::Error::DBus(d) => d.description().map(str::to_string),
        _ => None,
    }
}

/// The next message of `stream`; `None` once the connection is closed.
pub async fn next_message(stream: &mut MessageStream) -> Option<zbus::Result<Message>> {
    use futures_core::Stream as _;
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

/// Asks the bus to route messages matching `rule` to `conn` (`AddMatch`).
pub async fn add_match(conn: &Connection, rule: &MatchRule<'_>) -> zbus::Result<()> {
    conn.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "AddMatch",
        &(rule.to_string(),),
    )
    .await
    .map(|_| ())
}

/// A connection to `bus` that receives the daemon's `Fault` signals
/// (filtered by the bus on `category` and `keyword` when given) and its
/// `Lost` signals; read them with [`next_message`] and [`BusSignal::parse`].
/// The match rules are in place when this returns.
pub async fn subscribe(
    bus: &BusAddress,
    category: Option<&str>,
    keyword: Option<&str>,
    max_queued: usize,
) -> zbus::Result<(Connection, MessageStream)> {
    let mut b = builder(bus);
    if let Some(q) = std::num::NonZeroUsize::new(max_queued) {
        b = b.max_queued(q);
    }
    let conn = b.build().await?;
    // The stream first, so nothing routed after AddMatch can slip by it.
    let stream = MessageStream::from(conn.clone());
    add_match(&conn, &fault_rule(category, keyword)?).await?;
    add_match(&conn, &lost_rule()?).await?;
    Ok((conn, stream))
}

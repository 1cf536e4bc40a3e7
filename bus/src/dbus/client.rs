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

/// How long a bus may take to authenticate a new connection and answer its
/// `Hello`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the connection `b` describes, failing after `limit` when the bus
/// has not finished the handshake. zbus puts no time limit on the
/// authentication and `Hello`, so a bus that accepts the socket and never
/// answers (a busy or broken dbus-daemon, a policy that drops the `Hello`
/// reply) would otherwise hang the caller for good: the daemon at start-up
/// or reconnection, a client command for ever. The connection being built
/// is dropped (its socket closed) on timeout. Runs on zbus's runtime (in
/// [`zbus::block_on`] or a task of it).
pub async fn build_within(b: Builder<'_>, limit: Duration) -> zbus::Result<Connection> {
    let rt = zruntime::SharedRuntime::current().map_err(|e| zbus::Error::InputOutput(e.into()))?;
    match rt.timeout(limit, b.build()).await {
        Ok(built) => built,
        Err(_) => Err(zbus::Error::Handshake(format!(
            "the bus did not answer the connection's authentication and Hello within {} s",
            limit.as_secs_f32()
        ))),
    }
}

/// Connects to `bus`; method calls fail with a timeout after `timeout`,
/// the handshake after [`HANDSHAKE_TIMEOUT`].
pub async fn connect(bus: &BusAddress, timeout: Option<Duration>) -> zbus::Result<Connection> {
    let mut b = builder(bus);
    if let Some(t) = timeout {
        b = b.method_timeout(t);
    }
    build_within(b, HANDSHAKE_TIMEOUT).await
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
    let conn = build_within(b, HANDSHAKE_TIMEOUT).await?;
    // The stream first, so nothing routed after AddMatch can slip by it.
    let stream = MessageStream::from(conn.clone());
    add_match(&conn, &fault_rule(category, keyword)?).await?;
    add_match(&conn, &lost_rule()?).await?;
    add_match(&conn, &owner_rule()?).await?;
    Ok((conn, stream))
}

const DBUS_NAME: &str = "org.freedesktop.DBus";

/// The bus's `NameOwnerChanged` signals for `org.faultbridge.Bridge1`.
pub fn owner_rule() -> zbus::Result<MatchRule<'static>> {
    Ok(MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(DBUS_NAME)
        .interface(DBUS_NAME)
        .member("NameOwnerChanged")
        .arg(0, BUS_NAME)
        .build()?
        .into_owned())
}

/// The unique name owning `org.faultbridge.Bridge1` now, `None` when no
/// daemon owns it.
pub async fn name_owner(conn: &Connection) -> zbus::Result<Option<String>> {
    let r = conn
        .call_method(
            Some(DBUS_NAME),
            "/org/freedesktop/DBus",
            Some(DBUS_NAME),
            "GetNameOwner",
            &(BUS_NAME,),
        )
        .await;
    match r {
        Ok(reply) => Ok(Some(reply.body().deserialize::<String>()?)),
        Err(e)
            if error_name(&e).as_deref() == Some("org.freedesktop.DBus.Error.NameHasNoOwner") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Who owns `org.faultbridge.Bridge1`, kept up to date from the bus's
/// `NameOwnerChanged` signals (see [`subscribe`]), so that a subscriber
/// takes `Fault` and `Lost` signals from the daemon only: any client may
/// send a signal with the daemon's interface and path to a subscriber
/// directly, and only the sender field, which the bus sets, tells them
/// apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    unique: Option<String>,
}

/// What an owner change was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerChange {
    /// A daemon took the name (its unique name).
    Appeared(String),
    /// No daemon owns the name any more.
    Vanished,
}

impl Owner {
    /// The owner now (`GetNameOwner`).
    pub async fn query(conn: &Connection) -> zbus::Result<Owner> {
        Ok(Owner {
            unique: name_owner(conn).await?,
        })
    }

    /// The unique name of the daemon, if one owns the name.
    pub fn unique_name(&self) -> Option<&str> {
        self.unique.as_deref()
    }

    /// Takes in `msg` when it is the bus's `NameOwnerChanged` for
    /// `org.faultbridge.Bridge1`; what changed, `None` for any other message.
    pub fn update(&mut self, msg: &Message) -> Option<OwnerChange> {
        let h = msg.header();
        if msg.message_type() != MessageType::Signal
            || h.sender().map(|s| s.as_str()) != Some(DBUS_NAME)
            || h.interface().map(|i| i.as_str()) != Some(DBUS_NAME)
            || h.member().map(|m| m.as_str()) != Some("NameOwnerChanged")
        {
            return None;
        }
        let (name, _old, new): (String, String, String) = msg.body().deserialize().ok()?;
        if name != BUS_NAME {
            return None;
        }
        if new.is_empty() {
            self.unique = None;
            Some(OwnerChange::Vanished)
        } else {
            self.unique = Some(new.clone());
            Some(OwnerChange::Appeared(new))
        }
    }

    /// True when `msg` was sent by the daemon owning the name.
    pub fn sent(&self, msg: &Message) -> bool {
        match (&self.unique, msg.header().sender()) {
            (Some(owner), Some(sender)) => sender.as_str() == owner,
            _ => false,
        }
    }
}

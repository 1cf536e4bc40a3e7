//! One connection's life: connect, make sure the stream is there, then
//! send the rows after the cursor with a window of acknowledgements in
//! flight, awaited in order, until stopped or until anything fails.

use super::message::{body_bytes, msg_id, retention_gap, subject};
use super::{ACK_TIMEOUT, ErrorLog, ForwardError, SAVE_EVERY, STOP_GRACE, Shared, WINDOW, now_ms};
use crate::history::HistoryDb;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::{ConnectOptions, Event, HeaderMap};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stream request (look up, create) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the backlog is counted while idle or sending.
const BACKLOG_EVERY: Duration = Duration::from_millis(500);
/// While records keep coming one by one, the database is read at most this
/// often, so that a steady trickle is sent in batches (one read, one
/// socket write, one burst of acknowledgements) instead of waking the
/// forwarder, SQLite and the server once per record. A record after a
/// quiet spell is read at once; a backlog is read as fast as the window
/// drains.
pub(crate) const COALESCE: Duration = Duration::from_millis(2);

/// The stream's replicas when this forwarder creates it: 3 when three or
/// more servers (of a cluster) are listed, 1 otherwise.
pub fn replicas(servers: usize) -> usize {
    if servers >= 3 { 3 } else { 1 }
}

/// The connection's options: credentials, TLS, and no reconnection of its
/// own once connected (the session ends instead; see the module above).
async fn options(
    shared: &Shared,
    down: Arc<tokio::sync::Notify>,
    is_down: Arc<AtomicBool>,
) -> Result<ConnectOptions, ForwardError> {
    let c = &shared.config;
    let connected = Arc::new(AtomicBool::new(false));
    let seen = connected.clone();
    let state = shared.state.clone();
    let mut o = ConnectOptions::new()
        .name(format!("faultbridge forwarder {}", c.host))
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(Duration::from_secs(5))
        .reconnect_delay_callback(move |_| {
            if seen.load(Relaxed) {
                // Never: the session ends and a new one starts.
                Duration::from_secs(86_400)
            } else {
                Duration::ZERO
            }
        })
        .event_callback(move |event| {
            let down = down.clone();
            let is_down = is_down.clone();
            let connected = connected.clone();
            let state = state.clone();
            async move {
                match event {
                    Event::Connected => connected.store(true, Relaxed),
                    Event::Disconnected | Event::LameDuckMode | Event::Closed => {
                        connected.store(true, Relaxed);
                        is_down.store(true, Relaxed);
                        down.notify_one();
                    }
                    Event::ServerError(e) => {
                        let text = format!("server error: {e}");
                        eprintln!("faultbridge: forward: {text}");
                        state.error(&text);
                    }
                    _ => {}
                }
            }
        });
    if let Some(p) = &c.credentials {
        o = o
            .credentials_file(p)
            .await
            .map_err(|source| ForwardError::ReadFile {
                what: "credentials file",
                path: p.clone(),
                source,
            })?;
    }
    if let Some(ca) = &c.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(o)
}

/// Makes sure the stream exists and takes this forwarder's subjects.
async fn ensure_stream(js: &jetstream::Context, shared: &Shared) -> Result<(), ForwardError> {
    let c = &shared.config;
    let wanted = format!("{}.>", c.subject_prefix);
    match js.get_stream(&c.stream).await {
        Ok(s) => {
            let info = s.cached_info();
            let probe = format!("{}.fault.h.c.k", c.subject_prefix);
            if !info
                .config
                .subjects
                .iter()
                .any(|s| subject_matches(s, &probe))
            {
                return Err(ForwardError::SubjectNotInStream {
                    stream: c.stream.clone(),
                    subject: wanted,
                });
            }
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            js.create_stream(stream::Config {
                name: c.stream.clone(),
                subjects: vec![wanted],
                storage: stream::StorageType::File,
                num_replicas: replicas(c.servers.len()),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|source| ForwardError::CreateStream {
                stream: c.stream.clone(),
                source,
            })?;
            eprintln!(
                "faultbridge: forward: created stream {} (subjects {}.>, {} replica(s))",
                c.stream,
                c.subject_prefix,
                replicas(c.servers.len())
            );
            Ok(())
        }
        Err(source) => Err(ForwardError::GetStream {
            stream: c.stream.clone(),
            source,
        }),
    }
}

/// Whether NATS subject filter `filter` (with `*` and `>`) matches `subject`.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One publication in flight.
struct InFlight {
    id: i64,
    msg_id: String,
    ack: PublishAckFuture,
}

async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    body: Vec<u8>,
) -> Result<PublishAckFuture, ForwardError> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    // Bounded: a connection that went away must not hold the session.
    tokio::time::timeout(
        ACK_TIMEOUT,
        js.publish_with_headers(subject, headers, body.into()),
    )
    .await
    .map_err(|_| ForwardError::PublishStalled {
        msg_id: msg_id.to_string(),
    })?
    .map_err(|source| ForwardError::Publish {
        msg_id: msg_id.to_string(),
        source,
    })
}

/// One session: returns `Ok` when stopped, an error when it must end.
pub(super) async fn run(
    shared: &Shared,
    db: &HistoryDb,
    cursor: &mut i64,
    log: &mut ErrorLog,
) -> Result<(), ForwardError> {
    let c = &shared.config;
    let down = Arc::new(tokio::sync::Notify::new());
    let is_down = Arc::new(AtomicBool::new(false));
    let opts = options(shared, down.clone(), is_down.clone()).await?;
    let client =
        opts.connect(c.servers.as_slice())
            .await
            .map_err(|source| ForwardError::Connect {
                servers: c.servers.join(", "),
                source,
            })?;
    let info = client.server_info();
    let server = format!("{}:{}", info.host, info.port);
    let js = jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .max_ack_inflight(WINDOW * 2)
        .build(client.clone());
    // Stream requests time out sooner than acknowledgements: while a
    // cluster elects a leader, the next session tries again soon.
    let admin = jetstream::ContextBuilder::new()
        .timeout(ADMIN_TIMEOUT)
        .build(client.clone());
    ensure_stream(&admin, shared).await?;
    shared.state.set_server(Some(&server));
    log.clear();
    eprintln!(
        "faultbridge: forward: connected to {server} ({}), stream {}, from history row {}",
        info.server_name, c.stream, cursor
    );
    let state = &shared.state;
    let host = c.host.as_str();
    let mut acked = *cursor;
    let mut sent = acked;
    let mut saved = acked;
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(WINDOW);
    let mut last_save = Instant::now();
    let mut last_backlog: Option<Instant> = None;
    let mut stop_by: Option<Instant> = None;
    // When the last read found rows, and whether it filled all the room
    // (more rows were waiting).
    let mut last_rows: Option<Instant> = None;
    let mut more = false;
    loop {
        if is_down.load(Relaxed) {
            return Err(ForwardError::Disconnected { server });
        }
        if shared.stop.load(Relaxed) && stop_by.is_none() {
            stop_by = Some(Instant::now() + STOP_GRACE);
        }
        if stop_by.is_some_and(|t| Instant::now() >= t) {
            // What is still in flight is sent again by the next start (the
            // cursor is at the last acknowledged row); the stream keeps it
            // once.
            *cursor = acked;
            return Ok(());
        }
        // Fill the window.
        // Read rows a batch at a time: when the window is half empty, or
        // empty (caught up: what was just committed).
        let due = more || stop_by.is_some() || last_rows.is_none_or(|t| t.elapsed() >= COALESCE);
        if inflight.len() <= WINDOW / 2 && due {
            let room = WINDOW - inflight.len();
            let rows = db.forward_rows(sent, room)?;
            more = rows.len() == room;
            if !rows.is_empty() {
                last_rows = Some(Instant::now());
            }
            if let Some(first) = rows.first() {
                if first.id > sent + 1 {
                    // Retention removed rows before they were forwarded:
                    // said on the stream, never silent.
                    let (gap, b) = retention_gap(host, sent + 1, first.id - 1);
                    state
                        .removed_unforwarded
                        .fetch_add((first.id - 1 - sent) as u64, Relaxed);
                    let id = msg_id(host, &gap);
                    let ack = publish(
                        &js,
                        subject(&c.subject_prefix, host, &gap),
                        &id,
                        b.to_string().into_bytes(),
                    )
                    .await?;
                    inflight.push_back(InFlight {
                        id: first.id - 1,
                        msg_id: id,
                        ack,
                    });
                }
            } else if inflight.is_empty() && sent > 0 && db.last_id()? < sent {
                // Every row was removed and the ids started again from 1.
                eprintln!(
                    "faultbridge: forward: the history database starts again below row {sent}: forwarding from its first row"
                );
                sent = 0;
                acked = 0;
                continue;
            }
            for row in &rows {
                let id = msg_id(host, row);
                let ack = publish(
                    &js,
                    subject(&c.subject_prefix, host, row),
                    &id,
                    body_bytes(host, row),
                )
                .await?;
                inflight.push_back(InFlight {
                    id: row.id,
                    msg_id: id,
                    ack,
                });
                sent = row.id;
            }
        }
        if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
            state.backlog.store(db.count_after(acked)?, Relaxed);
            last_backlog = Some(Instant::now());
        }
        let Some(front) = inflight.pop_front() else {
            if saved != acked {
                db.save_forward_cursor(&shared.cursor_name, acked)?;
                saved = acked;
            }
            *cursor = acked;
            state.backlog.store(0, Relaxed);
            if stop_by.is_some() {
                return Ok(());
            }
            if let Some(at) = last_rows.filter(|_| !due).map(|t| t + COALESCE) {
                // Rows came a moment ago: read again when the moment is over.
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = down.notified() => {}
                }
                continue;
            }
            // Caught up: wait for the writer's next commit.
            tokio::select! {
                () = shared.wake.notified() => {}
                () = down.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        };
        let stop_at = stop_by.map(tokio::time::Instant::from_std);
        let ack = tokio::select! {
            r = std::future::IntoFuture::into_future(front.ack) => r,
            () = down.notified() => return Err(ForwardError::Disconnected { server }),
            () = async {
                match stop_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                *cursor = acked;
                return Ok(());
            }
        };
        match ack {
            Ok(a) => {
                if a.duplicate {
                    state.duplicates.fetch_add(1, Relaxed);
                } else {
                    state.forwarded.fetch_add(1, Relaxed);
                }
                state.last_ack_sequence.store(a.sequence, Relaxed);
                state.last_ack_ms.store(now_ms(), Relaxed);
                acked = front.id;
                *cursor = acked;
                state.cursor.store(acked.max(0) as u64, Relaxed);
            }
            Err(source) => {
                return Err(ForwardError::Publish {
                    msg_id: front.msg_id,
                    source,
                });
            }
        }
        if last_save.elapsed() >= SAVE_EVERY {
            db.save_forward_cursor(&shared.cursor_name, acked)?;
            saved = acked;
            last_save = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_filters_match_like_the_server() {
        assert!(subject_matches(
            "faultbridge.>",
            "faultbridge.fault.h.NIC.eth0"
        ));
        assert!(subject_matches(
            "faultbridge.*.h.>",
            "faultbridge.fault.h.NIC.eth0"
        ));
        assert!(!subject_matches("faultbridge.>", "faultbridge"));
        assert!(!subject_matches("other.>", "faultbridge.fault.h.c.k"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert_eq!(
            (replicas(1), replicas(2), replicas(3), replicas(5)),
            (1, 1, 3, 3)
        );
    }
}

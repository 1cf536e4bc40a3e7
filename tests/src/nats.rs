//! Helpers for the fleet-forwarding tests: real `nats-server` processes
//! with JetStream on free 127.0.0.1 ports (one, or a cluster of three),
//! killed when the test ends however it ends, and a reader of a whole
//! stream (subject, `Nats-Msg-Id` and body of every message).
#![allow(clippy::unwrap_used)]

use futures_util::StreamExt;
use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary; a test that cannot run says what is missing.
pub fn nats_server() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("nats-server");
        if p.exists() {
            return p;
        }
    }
    panic!("nats-server is missing: install the Debian package nats-server (scripts/test.sh does)");
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` process, killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    pub name: String,
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl NatsServer {
    /// One server with JetStream, its store under `dir`, listening on
    /// `listen` (an address) and a free port.
    pub fn start(dir: &Path, listen: &str) -> NatsServer {
        NatsServer::start_with(dir, listen, "fb-single", &[])
    }

    /// As [`NatsServer::start`], named `name`, with more arguments.
    pub fn start_with(dir: &Path, listen: &str, name: &str, extra: &[String]) -> NatsServer {
        let port = free_port();
        let store = dir.join(name);
        let mut args: Vec<String> = [
            "-js",
            "-a",
            listen,
            "-p",
            &port.to_string(),
            "-n",
            name,
            "-sd",
            store.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut s = NatsServer {
            child: None,
            name: name.to_string(),
            port,
            args,
            log: dir.join(format!("{name}.log")),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(nats_server())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not listen on port {}: {}",
                self.name,
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again: same port, same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three servers of one JetStream cluster on 127.0.0.1.
pub fn cluster(dir: &Path) -> Vec<NatsServer> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let all = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    (0..3)
        .map(|i| {
            NatsServer::start_with(
                dir,
                "127.0.0.1",
                &format!("fb-c{i}"),
                &[
                    "--cluster_name".into(),
                    "fbc".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".into(),
                    all.clone(),
                ],
            )
        })
        .collect()
}

/// One message of a stream.
#[derive(Clone, Debug)]
pub struct StreamMsg {
    pub seq: u64,
    pub subject: String,
    pub msg_id: String,
    pub body: Value,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(urls: &[String]) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(urls)
        .await
        .map_err(|e| e.to_string())
}

/// The stream's message count and last sequence; `None` while it cannot
/// be read (no stream yet, no server, no JetStream leader).
pub fn stream_state(urls: &[String], stream: &str) -> Option<(u64, u64)> {
    runtime().block_on(async {
        let c = connect(urls).await.ok()?;
        let js = async_nats::jetstream::new(c);
        let mut s = js.get_stream(stream).await.ok()?;
        let i = s.info().await.ok()?;
        Some((i.state.messages, i.state.last_sequence))
    })
}

/// The name of the server leading `stream` (clusters).
pub fn stream_leader(urls: &[String], stream: &str) -> Option<String> {
    runtime().block_on(async {
        let c = connect(urls).await.ok()?;
        let js = async_nats::jetstream::new(c);
        let mut s = js.get_stream(stream).await.ok()?;
        let i = s.info().await.ok()?;
        i.cluster.as_ref().and_then(|c| c.leader.clone())
    })
}

/// Waits until the stream holds at least `n` messages; returns the count.
pub fn wait_messages(urls: &[String], stream: &str, n: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = 0;
    while Instant::now() < deadline {
        if let Some((m, _)) = stream_state(urls, stream) {
            last = m;
            if m >= n {
                return m;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

/// Every message of the stream, in stream order (tried again a few times
/// while a cluster elects a leader).
pub fn read_stream(urls: &[String], stream: &str) -> Vec<StreamMsg> {
    let mut last_err = String::new();
    for _ in 0..10 {
        match runtime().block_on(try_read_stream(urls, stream)) {
            Ok(v) => return v,
            Err(e) => last_err = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("cannot read stream {stream}: {last_err}");
}

async fn try_read_stream(urls: &[String], stream: &str) -> Result<Vec<StreamMsg>, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let c = connect(urls).await?;
    let js = async_nats::jetstream::new(c.clone());
    let mut s = js.get_stream(stream).await.map_err(|x| e(&x))?;
    let last = s.info().await.map_err(|x| e(&x))?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
            deliver_subject: c.new_inbox(),
            ..Default::default()
        })
        .await
        .map_err(|x| e(&x))?;
    let mut msgs = consumer.messages().await.map_err(|x| e(&x))?;
    loop {
        let m = match tokio::time::timeout(Duration::from_secs(20), msgs.next()).await {
            Err(_) => return Err("the stream stopped delivering".into()),
            Ok(None) => break,
            Ok(Some(m)) => m.map_err(|x| e(&x))?,
        };
        let seq = m.info().map_err(|x| e(&x))?.stream_sequence;
        let msg_id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        out.push(StreamMsg {
            seq,
            subject: m.subject.to_string(),
            msg_id,
            body: serde_json::from_slice(&m.payload).map_err(|x| e(&x))?,
        });
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// The sequences of `host` in stream order.
pub fn sequences_of(msgs: &[StreamMsg], host: &str) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.body["host"] == host)
        .map(|m| m.body["sequence"].as_u64().unwrap())
        .collect()
}

/// A named network namespace (`ip netns add`), deleted on drop, joined to
/// the caller's namespace by a veth pair: `10.231.N.1/30` on this side,
/// `10.231.N.2/30` inside.
#[derive(Debug)]
pub struct LinkedNetns {
    pub name: String,
    pub n: u8,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(o.status.success(), "ip {args:?}: {}", crate::text(&o));
}

impl LinkedNetns {
    pub fn new(n: u8) -> LinkedNetns {
        let name = format!("fb{}n{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = LinkedNetns { name, n };
        let outer = format!("fbo{n}");
        let inner = format!("fbi{n}");
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns.name,
        ]);
        ip(&["addr", "add", &format!("10.231.{n}.1/30"), "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        let inner_addr = format!("10.231.{n}.2/30");
        ip(&[
            "netns",
            "exec",
            &ns.name,
            "ip",
            "addr",
            "add",
            &inner_addr,
            "dev",
            &inner,
        ]);
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", &inner, "up"]);
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The address of the caller's side, as seen from inside.
    pub fn outer_address(&self) -> String {
        format!("10.231.{}.1", self.n)
    }

    /// `ip netns exec NAME`: a wrapper for [`crate::Daemon::start_under`].
    pub fn exec(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }
}

impl Drop for LinkedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

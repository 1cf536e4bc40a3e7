//! Fleet forwarding against real `nats-server` processes with JetStream:
//! three daemons in three network namespaces forwarding to one server; a
//! server killed in the middle of a flood (and a daemon restarted while it
//! is down); a three-server cluster losing the stream's leader; a server
//! that refuses us. Each checks the stream message by message: every
//! record once, in per-host order, subjects, ids and bodies as designed.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{BusPolicy, daemon_config, private_bus, status};
use faultbridge_tests::nats::{
    LinkedNetns, NatsServer, StreamMsg, cluster, read_stream, sequences_of, stream_leader,
    stream_state, wait_messages,
};
use faultbridge_tests::{Daemon, TempDir, binary, faultbridge, private_netns, text};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const STREAM: &str = "FAULTBRIDGE";

fn lo_up() {
    let o = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// A daemon configuration: the simulator's group 1, history at `db`,
/// forwarding to `servers` as `host`.
fn config(db: &std::path::Path, servers: &[String], host: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_protocol = 2\nnetlink_group = 1\n\
         [history]\npath = \"{}\"\n[forward.nats]\nservers = [{}]\nhost = \"{host}\"\n",
        db.display(),
        list.join(", ")
    )
}

/// `faultbridge sim …` run through `wrapper` (a namespace's `ip netns exec`).
fn sim(wrapper: &[String], args: &[&str]) {
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(binary());
            c
        }
        None => Command::new(binary()),
    };
    let o = cmd.arg("sim").args(args).output().unwrap();
    assert!(o.status.success(), "sim {args:?}: {}", text(&o));
}

/// Rows of the history database at `db` (read while the daemon writes).
fn recorded(db: &std::path::Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0)))
        .map_or(0, |n| n as u64)
}

/// `fleet status --json` of the server at `url` (with `opts`), asked
/// until it counts `n` messages in the stream or 20 s have passed: the
/// last answer.
fn fleet_status_until(url: &str, opts: &[&str], n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut st = Value::Null;
    while st["messages"] != n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let o = Command::new(binary())
            .args(["fleet", "status", "--nats", url])
            .args(opts)
            .arg("--json")
            .output()
            .unwrap();
        st = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    }
    st
}

fn wait_recorded(db: &std::path::Path, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorded(db) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} recorded",
            recorded(db)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every record of `host` is in the stream exactly once and in order:
/// its sequences in stream order are exactly `1..=n`.
fn assert_once_in_order(msgs: &[StreamMsg], host: &str, n: u64) {
    let got = sequences_of(msgs, host);
    let want: Vec<u64> = (1..=n).collect();
    if got != want {
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        panic!(
            "{host}: {} messages, {} distinct sequences of {n}; in order: {}",
            got.len(),
            sorted.len(),
            got.windows(2).all(|w| w[0] < w[1])
        );
    }
}

#[test]
fn three_hosts_in_three_namespaces_forward_every_record_once_as_designed() {
    private_netns();
    lo_up();
    let dir = TempDir::new("fleet3");
    let server = NatsServer::start(dir.path(), "0.0.0.0");
    let nets: Vec<LinkedNetns> = (1..=3).map(LinkedNetns::new).collect();
    let mut daemons = Vec::new();
    for ns in &nets {
        let url = format!("nats://{}:{}", ns.outer_address(), server.port);
        let db = dir.path().join(format!("h{}.db", ns.n));
        let wrapper = ns.exec();
        let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        daemons.push(Daemon::start_under(
            &w,
            &config(&db, &[url], &format!("node{}", ns.n)),
            &[],
        ));
    }
    // Each host's simulator: 300 NIC faults, 200 FC faults, one CLEAR of a
    // keyword that needs encoding in a subject.
    for ns in &nets {
        let w = ns.exec();
        sim(
            &w,
            &["send", "-k", "NIC.eth0", "--count", "300", "--batch", "30"],
        );
        sim(
            &w,
            &[
                "send",
                "-k",
                "FC.host3",
                "--seq",
                "301",
                "--count",
                "200",
                "--batch",
                "20",
                "--severity",
                "fatal",
            ],
        );
        sim(
            &w,
            &[
                "send",
                "-k",
                "HA/SS.db.1 *",
                "--seq",
                "501",
                "--clear",
                "--detail-hex",
                "ab01",
            ],
        );
    }
    let urls = [server.url()];
    let n = wait_messages(&urls, STREAM, 3 * 501, Duration::from_secs(60));
    assert_eq!(
        n,
        3 * 501,
        "messages in the stream\n{}",
        daemons[0].stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    let msgs = read_stream(&urls, STREAM);
    assert_eq!(msgs.len(), 3 * 501, "nothing more arrived");
    for ns in &nets {
        let host = format!("node{}", ns.n);
        assert_once_in_order(&msgs, &host, 501);
        for m in msgs.iter().filter(|m| m.body["host"] == host.as_str()) {
            let seq = m.body["sequence"].as_u64().unwrap();
            let (cat, kw_token, kw) = match seq {
                1..=300 => ("NIC", "eth0", "eth0"),
                301..=500 => ("FC", "host3", "host3"),
                _ => ("HA/SS", "db%2E1%20%2A", "db.1 *"),
            };
            assert_eq!(
                m.subject,
                format!("faultbridge.fault.{host}.{cat}.{kw_token}")
            );
            assert_eq!(m.msg_id, format!("{host}:expdrv:1:{seq}"));
            let b = &m.body;
            assert_eq!(b["type"], "fault");
            assert_eq!(b["source"], "expdrv");
            assert_eq!(
                (b["category"].as_str(), b["keyword"].as_str()),
                (Some(cat), Some(kw))
            );
            assert_eq!(b["cleared"], seq == 501, "{b}");
            let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                [
                    "category",
                    "cleared",
                    "detail",
                    "event_code",
                    "host",
                    "keyword",
                    "sequence",
                    "severity",
                    "source",
                    "timestamp_ns",
                    "type"
                ],
                "the watch --json object with host added"
            );
            if seq == 501 {
                assert_eq!(b["detail"], "ab01");
            }
            if (301..=500).contains(&seq) {
                assert_eq!(b["severity"], "fatal");
            }
        }
    }

    // The commands read the same stream.
    let st: Value = serde_json::from_str(&faultbridge(&[
        "fleet",
        "status",
        "--nats",
        &server.url(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(st["messages"], 3 * 501);
    for h in ["node1", "node2", "node3"] {
        let f = &st["hosts"][h];
        assert_eq!(
            (f["faults"].as_u64(), f["clears"].as_u64()),
            (Some(500), Some(1)),
            "{st}"
        );
        assert_eq!(
            f["by_category"],
            serde_json::json!({"NIC": 300, "FC": 200, "HA/SS": 1})
        );
        assert_eq!(f["last_fault"]["sequence"], 500);
    }
    let text_status = faultbridge(&["fleet", "status", "--nats", &server.url()]);
    assert!(
        text_status.contains("node2") && text_status.contains("FC 200"),
        "{text_status}"
    );
    let watch = faultbridge_tests::dbus::LineReader::spawn({
        let mut c = Command::new(binary());
        c.args([
            "fleet",
            "watch",
            "--nats",
            &server.url(),
            "--since",
            "1h",
            "--json",
            "--host",
            "node2",
            "--category",
            "FC",
        ]);
        c
    });
    let lines = watch.until(Duration::from_secs(20), |l| l.contains("\"sequence\":500"));
    assert_eq!(lines.len(), 200, "{}", watch.stderr());
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(
            (v["host"].as_str(), v["category"].as_str()),
            (Some("node2"), Some("FC"))
        );
    }
    for d in daemons {
        d.stop();
    }
}

#[test]
fn a_server_killed_mid_flood_and_a_daemon_restarted_meanwhile_leave_every_record_once_in_order() {
    private_netns();
    lo_up();
    let dir = TempDir::new("fleet-kill");
    let mut server = NatsServer::start(dir.path(), "127.0.0.1");
    let urls = [server.url()];
    let db = dir.path().join("h.db");
    let cfg = config(&db, &urls, "node1");
    let d = Daemon::start(&cfg);
    let flood = std::thread::spawn(|| {
        sim(&[], &["flood", "--rate", "20000", "--count", "20000"]);
    });
    // Killed while messages are in flight: some in the stream, more coming.
    let before = wait_messages(&urls, STREAM, 2000, Duration::from_secs(30));
    server.kill();
    assert!(before >= 2000, "{}", d.stderr());
    flood.join().unwrap();
    wait_recorded(&db, 20_000);
    // The daemon restarts while the server is down, and records more.
    let first = d.stop();
    assert_eq!(first["type"], "stats");
    let d = Daemon::start(&cfg);
    sim(
        &[],
        &[
            "flood", "--rate", "20000", "--count", "5000", "--seq", "20001",
        ],
    );
    wait_recorded(&db, 25_000);
    let err = d.stderr();
    assert!(
        err.contains("faultbridge: forward: cannot connect"),
        "the outage is said: {err}"
    );
    server.restart();
    let n = wait_messages(&urls, STREAM, 25_000, Duration::from_secs(60));
    assert_eq!(n, 25_000, "{}", d.stderr());
    std::thread::sleep(Duration::from_millis(500));
    let msgs = read_stream(&urls, STREAM);
    assert_eq!(msgs.len(), 25_000);
    assert_once_in_order(&msgs, "node1", 25_000);
    d.stop();
}

#[test]
fn an_r3_cluster_losing_the_stream_leader_mid_flood_loses_and_repeats_nothing() {
    private_netns();
    lo_up();
    let dir = TempDir::new("fleet-r3");
    let mut servers = cluster(dir.path());
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    let db = dir.path().join("h.db");
    let d = Daemon::start(&config(&db, &urls, "node1"));
    // The forwarder creates the stream (R3) once the cluster has elected
    // its JetStream leader.
    sim(&[], &["send", "--count", "1"]);
    assert_eq!(
        wait_messages(&urls, STREAM, 1, Duration::from_secs(60)),
        1,
        "{}",
        d.stderr()
    );
    let flood = std::thread::spawn(|| {
        sim(
            &[],
            &["flood", "--rate", "20000", "--count", "20000", "--seq", "2"],
        );
    });
    wait_messages(&urls, STREAM, 3000, Duration::from_secs(30));
    let leader = stream_leader(&urls, STREAM).expect("an R3 stream has a leader");
    let killed = servers.iter_mut().find(|s| s.name == leader).unwrap();
    killed.kill();
    let killed_port = killed.port;
    flood.join().unwrap();
    let alive: Vec<String> = servers
        .iter()
        .filter(|s| s.port != killed_port)
        .map(NatsServer::url)
        .collect();
    let n = wait_messages(&alive, STREAM, 20_001, Duration::from_secs(60));
    assert_eq!(n, 20_001, "{}", d.stderr());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stream_state(&alive, STREAM).map(|s| s.0), Some(20_001));
    let msgs = read_stream(&alive, STREAM);
    let mut seqs = sequences_of(&msgs, "node1");
    let in_order = seqs.windows(2).all(|w| w[0] < w[1]);
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=20_001).collect::<Vec<u64>>(),
        "every record once"
    );
    eprintln!("leader {leader} killed; per-host order kept: {in_order}");
    d.stop();
}

#[test]
fn a_server_that_refuses_us_is_an_error_in_status_and_the_log() {
    private_netns();
    lo_up();
    let dir = TempDir::new("fleet-refused");
    let server = NatsServer::start_with(
        dir.path(),
        "127.0.0.1",
        "fb-auth",
        &[
            "--user".into(),
            "fleet".into(),
            "--pass".into(),
            "secret".into(),
        ],
    );
    let bus = private_bus(BusPolicy::Open);
    let db = dir.path().join("h.db");
    let d = Daemon::start(&daemon_config(
        &bus,
        &format!(
            "[history]\npath = \"{}\"\n[forward.nats]\nservers = [\"{}\"]\nhost = \"node1\"\n",
            db.display(),
            server.url()
        ),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let f = loop {
        let s = status(bus.address());
        let f = s["forward"].clone();
        if f["errors"].as_u64().unwrap_or(0) > 0 || Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(f["connected"], false, "{f}");
    assert_eq!(
        (f["stream"].as_str(), f["host"].as_str()),
        (Some("FAULTBRIDGE"), Some("node1")),
        "{f}"
    );
    let e = f["last_error"].as_str().unwrap_or("");
    assert!(e.contains("authorization violation"), "{f}");
    let text_status = faultbridge_tests::dbus::client(bus.address(), &["status"]);
    let out = String::from_utf8_lossy(&text_status.stdout);
    assert!(
        out.contains("forward to stream FAULTBRIDGE as node1: not connected")
            && out.contains("authorization violation"),
        "{out}"
    );
    assert!(
        d.stderr().contains("authorization violation"),
        "{}",
        d.stderr()
    );
    d.stop();
}

#[test]
fn the_fleet_demo_runs_in_one_command_and_ends_with_every_record_once() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fleet-demo.sh");
    let out = Command::new(&script)
        .env("FAULTBRIDGE_BIN", binary())
        .env("COUNT", "2000")
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for host in ["node1", "node2", "node3"] {
        assert!(
            all.contains(&format!("{host}        FAULT #1")),
            "fleet watch showed {host}: {all}"
        );
    }
    assert!(all.contains("nats-server killed"), "{all}");
    assert!(
        all.contains("every record of every host is in the stream once: 6005 of 6005"),
        "{all}"
    );
}

/// A CA and a server certificate for 127.0.0.1 (openssl), in `dir`.
fn certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("openssl is needed for the TLS test ({e}); Debian package openssl")
            });
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=faultbridge test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

#[test]
fn tls_with_the_ca_forwards_and_without_it_the_error_names_the_certificate() {
    private_netns();
    lo_up();
    let dir = TempDir::new("fleet-tls");
    certificates(dir.path());
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let server = NatsServer::start_with(
        dir.path(),
        "127.0.0.1",
        "fb-tls",
        &[
            "--tls".into(),
            "--tlscert".into(),
            p("server.pem"),
            "--tlskey".into(),
            p("server.key"),
        ],
    );
    let with_ca = format!(
        "{}tls_ca = \"{}\"\n",
        config(&dir.path().join("a.db"), &[server.url()], "node1"),
        p("ca.pem")
    );
    let d = Daemon::start(&with_ca);
    sim(&[], &["send", "--count", "3"]);
    // Until the forwarder has made the stream and sent the three, `fleet
    // status` may find no stream yet: asked again until it says three.
    let st = fleet_status_until(&server.url(), &["--tls-ca", &p("ca.pem")], 3);
    assert_eq!(st["messages"], 3, "{st}\n{}", d.stderr());
    d.stop();
    // Without the CA the server's certificate is unknown: said, not a stall.
    let without = config(&dir.path().join("b.db"), &[server.url()], "node2");
    let d = Daemon::start(&without);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.stderr().contains("UnknownIssuer") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.stderr().contains("cannot connect"), "{}", d.stderr());
    assert!(
        d.stderr()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        d.stderr()
    );
    d.stop();
}

#[test]
fn rows_retention_removes_before_they_are_forwarded_are_a_loss_notice_on_the_stream() {
    private_netns();
    lo_up();
    let dir = TempDir::new("fleet-retention");
    let mut server = NatsServer::start(dir.path(), "127.0.0.1");
    let urls = [server.url()];
    let db = dir.path().join("h.db");
    let cfg =
        config(&db, &urls, "node1").replace("[forward.nats]", "max_rows = 100\n[forward.nats]");
    let d = Daemon::start(&cfg);
    // The forwarder is connected (the stream exists), then the server goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream_state(&urls, STREAM).is_none() {
        assert!(Instant::now() < deadline, "{}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    sim(&[], &["send", "--count", "500", "--batch", "50"]);
    // Retention keeps the newest 100 rows: 401..=500.
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorded(&db) != 100 || first_recorded(&db) != 401 {
        assert!(Instant::now() < deadline, "rows {}", recorded(&db));
        std::thread::sleep(Duration::from_millis(50));
    }
    server.restart();
    assert_eq!(
        wait_messages(&urls, STREAM, 101, Duration::from_secs(30)),
        101,
        "{}",
        d.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    let msgs = read_stream(&urls, STREAM);
    assert_eq!(msgs.len(), 101);
    assert_eq!(msgs[0].subject, "faultbridge.lost.node1");
    let b = &msgs[0].body;
    assert_eq!(
        (b["type"].as_str(), b["source"].as_str()),
        (Some("lost"), Some("history")),
        "{b}"
    );
    assert_eq!(
        (b["first_sequence"].as_u64(), b["last_sequence"].as_u64()),
        (Some(1), Some(400)),
        "{b}"
    );
    assert_eq!(msgs[0].msg_id, "node1:history:lost:1:400");
    let seqs: Vec<u64> = msgs[1..]
        .iter()
        .map(|m| m.body["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (401..=500).collect::<Vec<u64>>());
    d.stop();
}

/// The lowest `sequence` recorded in the history database at `db`.
fn first_recorded(db: &std::path::Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row("SELECT coalesce(min(sequence), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map_or(0, |n| n as u64)
}

/// A signed NATS JWT: `claims` (with `iss`, `sub`) issued by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, sub: &str, name: &str, nats: Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()),
        "iat": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": sub,
        "nats": nats,
    });
    let payload = b64.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let sig = b64.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{sig}")
}

#[test]
fn a_credentials_file_authenticates_the_forwarder() {
    private_netns();
    lo_up();
    let dir = TempDir::new("fleet-creds");
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let op_jwt = jwt(
        &operator,
        &operator.public_key(),
        "fb-op",
        serde_json::json!({"type": "operator", "version": 2,
            "system_account": system.public_key()}),
    );
    let sys_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2, "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1
        }}),
    );
    let acc_jwt = jwt(
        &operator,
        &account.public_key(),
        "fb-acc",
        serde_json::json!({"type": "account", "version": 2, "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        }}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "fb-user",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1}),
    );
    let creds = dir.write(
        "fb.creds",
        &format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    );
    let op_file = dir.write("op.jwt", &op_jwt);
    let conf = dir.write(
        "server.conf",
        &format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{acc_jwt}\"\n  {}: \"{sys_jwt}\"\n}}\n",
            op_file.display(),
            system.public_key(),
            account.public_key(),
            system.public_key()
        ),
    );
    let server = NatsServer::start_with(
        dir.path(),
        "127.0.0.1",
        "fb-creds",
        &["-c".into(), conf.to_str().unwrap().into()],
    );
    let cfg = format!(
        "{}credentials = \"{}\"\n",
        config(&dir.path().join("h.db"), &[server.url()], "node1"),
        creds.display()
    );
    let d = Daemon::start(&cfg);
    sim(&[], &["send", "--count", "3"]);
    let creds_arg = creds.to_str().unwrap();
    let st = fleet_status_until(&server.url(), &["--credentials", creds_arg], 3);
    assert_eq!(st["messages"], 3, "{st}\n{}\n{}", d.stderr(), server.log());
    d.stop();
    // Without the file the server refuses us, and says why.
    let d = Daemon::start(&config(&dir.path().join("h2.db"), &[server.url()], "node2"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.stderr().contains("cannot connect") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        d.stderr().contains("authorization violation"),
        "{}",
        d.stderr()
    );
    d.stop();
}

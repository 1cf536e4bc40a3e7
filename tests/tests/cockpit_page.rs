//! The Cockpit page (`dist/cockpit/faultbridge/`) in a real browser, on
//! real parts: a private dbus-daemon with the system bus's policy and the
//! shipped policy file, the daemon on it, `cockpit-ws` in local-session mode
//! whose `cockpit-bridge` reaches that bus (`DBUS_SYSTEM_BUS_ADDRESS`) and
//! reads the page from `$XDG_DATA_HOME/cockpit/faultbridge/`, and headless
//! Chromium driven through `tests/browser/cockpit_driver.py`
//! (python3-selenium and chromedriver).
//!
//! `FAULTBRIDGE_COCKPIT_SCREENSHOT=1` also writes `docs/cockpit.png`, the
//! screenshot of `docs/cockpit.md` (only then: a normal run leaves the tree
//! clean).
#![allow(clippy::unwrap_used)]

use faultbridge_tests::dbus::{
    BusPolicy, PrivateBus, client, daemon_config, private_bus, require_real_root, status,
};
use faultbridge_tests::{Daemon, TempDir, faultbridge, private_netns, repo, text};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const MONITORS: &str = r#"
[[monitor]]
name = "mrw1"
category = "NIC"
keyword = "eth0"

[[monitor]]
name = "mrw2"
category = "FC"
keyword = "host3"
"#;

const PAGE: &str = "/cockpit/@localhost/faultbridge/index.html";

/// A netlink protocol no kernel implements: the FC transport source on it
/// cannot start, and being optional it leaves the daemon degraded.
const NO_SUCH_PROTOCOL: &str = "31";

/// The first of `candidates` that exists, or a failure naming the package
/// that provides it.
fn program(candidates: &[&str], package: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "none of {candidates:?} exists: the Cockpit page's test needs the Debian package {package} (scripts/test.sh installs it)"
            )
        })
}

/// Copies the page into `share/cockpit/faultbridge/`, as the packages
/// install it into `/usr/share/cockpit/faultbridge/`.
fn install_page(share: &Path) {
    let src = repo().join("dist/cockpit/faultbridge");
    let dst = share.join("cockpit/faultbridge");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// `cockpit-ws` serving the local session on 127.0.0.1:`port`, its bridge
/// on `bus`; killed on drop.
struct Cockpit {
    child: Child,
    port: u16,
}

impl Cockpit {
    /// Starts it (as `nobody` when `nobody`), and waits until it accepts
    /// connections.
    fn start(bus: &PrivateBus, share: &Path, home: &Path, port: u16, nobody: bool) -> Cockpit {
        let ws = program(
            &["/usr/lib/cockpit/cockpit-ws", "/usr/libexec/cockpit-ws"],
            "cockpit-ws",
        );
        let bridge = program(&["/usr/bin/cockpit-bridge"], "cockpit-bridge");
        program(
            &[
                "/usr/share/cockpit/base1/cockpit.js.gz",
                "/usr/share/cockpit/base1/cockpit.js",
            ],
            "cockpit-bridge",
        );
        let mut cmd = if nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(&ws);
            c
        } else {
            Command::new(&ws)
        };
        let child = cmd
            .args(["--no-tls", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg(format!("--local-session={}", bridge.display()))
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .env("XDG_DATA_HOME", share)
            .env("HOME", home)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", ws.display()));
        let mut c = Cockpit { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = c.child.try_wait() {
                panic!("cockpit-ws exited at start: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "cockpit-ws does not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c.port = port;
        c
    }

    /// The page alone.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{PAGE}", self.port)
    }

    /// The page in Cockpit's shell, as an administrator opens it from the
    /// menu.
    fn shell_url(&self) -> String {
        format!("http://127.0.0.1:{}/faultbridge", self.port)
    }
}

impl Drop for Cockpit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium behind `tests/browser/cockpit_driver.py`.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
}

impl Browser {
    fn start() -> Browser {
        let python = program(&["/usr/bin/python3"], "python3-selenium");
        let chromium = program(&["/usr/bin/chromium"], "chromium");
        let driver = program(&["/usr/bin/chromedriver"], "chromium-driver");
        let mut child = Command::new(python)
            .arg(repo().join("tests/browser/cockpit_driver.py"))
            .arg(chromium)
            .arg(driver)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let b = Browser {
            child,
            stdin,
            replies: rx,
        };
        let ready = b.reply(Duration::from_secs(60));
        assert_eq!(
            ready["ready"], true,
            "the browser did not start: {ready} (scripts/test.sh installs chromium, chromium-driver and python3-selenium)"
        );
        b
    }

    fn reply(&self, timeout: Duration) -> Value {
        let line = self
            .replies
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no reply from the browser driver within {timeout:?}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"))
    }

    /// Sends `cmd` and returns the reply, failing the test (with the page's
    /// text) when it is not ok.
    fn cmd(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let wait = cmd["timeout"].as_f64().unwrap_or(10.0) + 60.0;
        let r = self.reply(Duration::from_secs_f64(wait));
        assert_eq!(
            r["ok"],
            true,
            "{cmd}: {}\n--- the page said:\n{}",
            r["error"],
            r["page"].as_str().unwrap_or("")
        );
        r
    }

    fn open(&mut self, url: &str) {
        self.cmd(json!({"cmd": "open", "url": url}));
    }

    /// Waits until `css` matches (an element containing `text`, when
    /// given); returns the time the driver waited.
    fn wait(&mut self, css: &str, text: Option<&str>, timeout_s: f64) -> Duration {
        let r = self.cmd(json!({"cmd": "wait", "css": css, "text": text, "timeout": timeout_s}));
        Duration::from_secs_f64(r["ms"].as_f64().unwrap() / 1000.0)
    }

    /// Opens the page in Cockpit's shell: the menu has its entry, and the
    /// rest of the test works inside the page's frame.
    fn open_in_shell(&mut self, cockpit: &Cockpit) {
        self.open(&cockpit.shell_url());
        self.wait("nav a[href=\"/faultbridge\"]", Some("Faults"), 30.0);
        self.cmd(
            json!({"cmd": "frame", "name": "cockpit1:localhost/faultbridge", "timeout": 30.0}),
        );
    }

    fn click(&mut self, css: &str) {
        self.cmd(json!({"cmd": "click", "css": css}));
    }

    fn texts(&mut self, css: &str) -> Vec<String> {
        let r = self.cmd(json!({"cmd": "texts", "css": css}));
        r["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    fn js(&mut self, script: &str) -> Value {
        self.cmd(json!({"cmd": "js", "script": script}))["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The driver simulator's records, with sequences that follow on, so a gap
/// is never what makes a loss here.
struct Sim {
    next: u64,
}

impl Sim {
    fn send(&mut self, key: &str, severity: &str) {
        let seq = self.next.to_string();
        faultbridge(&[
            "sim",
            "send",
            "-k",
            key,
            "--severity",
            severity,
            "--seq",
            &seq,
        ]);
        self.next += 1;
    }

    fn flood(&mut self, key: &str, count: u64) {
        let seq = self.next.to_string();
        let n = count.to_string();
        faultbridge(&[
            "sim", "flood", "-k", key, "--rate", "0", "--count", &n, "--seq", &seq,
        ]);
        self.next += count;
    }
}

fn monitor(name: &str, state: &str) -> String {
    format!("#monitors tr[data-monitor=\"{name}\"][data-state=\"{state}\"]")
}

fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args} failed");
}

#[test]
fn the_page_shows_monitors_faults_losses_resets_and_a_stopped_daemon() {
    private_netns();
    require_real_root("running a second Cockpit bridge as nobody");
    ip("link set lo up");
    let dir = TempDir::new("cockpit");
    let share = dir.path().join("share");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    install_page(&share);

    let mut bus = private_bus(BusPolicy::SystemLike);
    let cfg = format!(
        "recv_buffer = 4096\n[sources.fc]\noptional = true\nnetlink_protocol = {NO_SUCH_PROTOCOL}\n\
         [history]\npath = \"{}/history.db\"\n{MONITORS}",
        dir.path().display()
    );
    let daemon = Daemon::start(&daemon_config(&bus, &cfg));
    let addr = bus.address().to_string();
    let mut sim = Sim { next: 1 };

    // root's session: Cockpit with administrative access.
    let admin = Cockpit::start(&bus, &share, &home, 9090, false);
    let mut b = Browser::start();
    b.open_in_shell(&admin);

    // The configured monitors, in configuration order.
    b.wait("#connection[data-state=\"running\"]", None, 20.0);
    b.wait(&monitor("mrw1", "Normal"), None, 10.0);
    b.wait(&monitor("mrw2", "Normal"), None, 10.0);
    assert_eq!(
        b.texts("#monitors tbody td.fb-name"),
        ["mrw1", "mrw2"],
        "the page lists the configured monitors"
    );

    // The sources' health: the FC transport source is down, so mrw2's
    // Normal is unconfirmed; mrw1's sources run.
    b.wait(
        "#sources tr[data-source=\"fc-transport\"][data-health=\"error\"]",
        Some("Down"),
        10.0,
    );
    b.wait("#sources-down li", Some("protocol 31"), 1.0);
    b.wait(
        "#sources-health.fb-summary-error",
        Some("fc-transport is down"),
        10.0,
    );
    b.wait(
        "#monitors tr[data-monitor=\"mrw2\"][data-degraded=\"true\"]",
        Some("Normal, unconfirmed"),
        10.0,
    );
    b.wait(
        "#monitors tr[data-monitor=\"mrw1\"][data-degraded=\"false\"]",
        Some("Normal"),
        1.0,
    );

    // A record from the simulator: mrw1 turns to Error within a second.
    let t0 = Instant::now();
    sim.send("NIC.eth0", "fatal");
    let waited = b.wait(&monitor("mrw1", "Error"), Some("Error"), 10.0);
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "mrw1 turned to Error on the page {elapsed:?} after the record was sent (the browser waited {waited:?})"
    );
    eprintln!("record sent → Error on the page: {elapsed:?}");
    b.wait(
        "#live li[data-kind=\"fault\"][data-category=\"NIC\"][data-keyword=\"eth0\"]",
        Some("FATAL"),
        5.0,
    );
    b.wait(&monitor("mrw2", "Normal"), None, 1.0);

    // Fault fields are attacker text: markup in a keyword stays text.
    let hostile = "<img src=x onerror=window.fbPwned=1>";
    sim.send(&format!("HA/AM.{hostile}"), "error");
    b.wait("#live li[data-kind=\"fault\"]", Some(hostile), 5.0);
    let dom =
        b.js("return [document.querySelectorAll('img').length, window.fbPwned === undefined]");
    assert_eq!(dom, json!([0, true]), "a keyword became markup");

    // A user whose Reset the policy refuses sees why, and the state stays.
    let user = Cockpit::start(&bus, &share, &home, 9091, true);
    b.open(&user.url());
    b.wait(&monitor("mrw1", "Error"), None, 20.0);
    b.click("#monitors tr[data-monitor=\"mrw1\"] button.fb-reset");
    let refused = b.cmd(json!({"cmd": "wait", "css": "#monitors tr[data-monitor=\"mrw1\"] .fb-message-refused", "text": "Not permitted", "timeout": 10.0}));
    assert!(
        refused["text"]
            .as_str()
            .unwrap()
            .contains("group faultbridge"),
        "{refused}"
    );
    assert_eq!(status(&addr)["monitors"]["mrw1"]["State"], "Error");
    drop(user);

    // Reset with administrative access: back to Normal.
    b.open_in_shell(&admin);
    b.wait(&monitor("mrw1", "Error"), None, 20.0);
    b.click("#monitors tr[data-monitor=\"mrw1\"] button.fb-reset");
    b.wait(&monitor("mrw1", "Normal"), None, 5.0);
    assert_eq!(status(&addr)["monitors"]["mrw1"]["State"], "Normal");
    assert_eq!(
        b.texts("#monitors tr[data-monitor=\"mrw1\"] button.fb-reset")
            .concat(),
        "",
        "no Reset button on a Normal monitor"
    );

    // An overrun: a flood against a 4 KiB socket buffer. The page shows the
    // loss as a Lost entry of the driver's source.
    let mut overruns = 0;
    for _ in 0..10 {
        sim.flood("SPS.flood", 20_000);
        overruns = status(&addr)["sources"]["expdrv"]["overruns"]
            .as_u64()
            .unwrap();
        if overruns > 0 {
            break;
        }
    }
    assert!(overruns > 0, "no overrun after the floods");
    // The range of an overrun is known from the driver's next record.
    std::thread::sleep(Duration::from_millis(100));
    sim.send("NIC.eth1", "warning");
    b.wait(
        "#live li[data-kind=\"lost\"][data-source=\"expdrv\"]",
        Some("LOST"),
        10.0,
    );
    b.wait("#live-summary.fb-summary-error", Some("records lost"), 5.0);

    b.wait(
        "#sources tr[data-source=\"expdrv\"][data-health=\"error\"]",
        Some("Records lost"),
        10.0,
    );

    // mrw2 trips.
    sim.send("FC.host3", "error");
    b.wait(&monitor("mrw2", "Error"), None, 5.0);
    b.wait(&monitor("mrw1", "Normal"), None, 1.0);

    // History: the first page, the next one, and a filter. The history
    // writer may run behind the signals on a loaded machine: wait until it
    // has recorded the last fault.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = client(
            &addr,
            &[
                "history",
                "--category",
                "FC",
                "--keyword",
                "host3",
                "--json",
            ],
        );
        if out.status.success() && !out.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the history has no FC host3 after 60 s: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ids = |b: &mut Browser| -> Vec<u64> {
        b.texts("#history tbody td[data-label=\"Record\"]")
            .iter()
            .map(|t| t.parse().unwrap())
            .collect()
    };
    b.click("#history-apply");
    b.wait("#history-status", Some("50 faults, records 1–"), 10.0);
    let first = ids(&mut b);
    assert_eq!((first.len(), first[0]), (50, 1), "{first:?}");
    b.click("#history-next");
    b.cmd(json!({"cmd": "gone", "css": "#history tbody tr[data-record=\"1\"]", "timeout": 10.0}));
    b.wait("#history-status", Some("50 faults, records "), 10.0);
    let second = ids(&mut b);
    assert!(
        second[0] > first[49],
        "page 2 {second:?} after page 1 {first:?}"
    );
    b.click("#history-first");
    b.wait("#history tbody tr[data-record=\"1\"]", None, 10.0);
    b.cmd(json!({"cmd": "js", "script": "document.getElementById('history-category').value = 'FC'; return true"}));
    b.cmd(json!({"cmd": "type", "css": "#history-keyword", "text": "host"}));
    b.click("#history-apply");
    // One click reads at most 20 000 rows: past a long flood, Next page
    // reads on until the match.
    for _ in 0..10 {
        b.wait("#history-status", Some("record"), 10.0);
        let said = b.texts("#history-status").concat();
        if said.starts_with("1 fault,") {
            break;
        }
        assert!(said.starts_with("No match up to record"), "{said}");
        b.click("#history-next");
        b.cmd(json!({"cmd": "gone", "css": "#history-status", "text": said, "timeout": 10.0}));
    }
    b.wait("#history-status", Some("1 fault,"), 1.0);
    assert_eq!(
        b.texts("#history tbody td[data-label=\"Keyword\"]"),
        ["host3"]
    );

    // Readable on a narrow screen: nothing wider than the window.
    b.cmd(json!({"cmd": "size", "width": 400, "height": 900}));
    let wide = b.js("return [document.documentElement.scrollWidth, window.innerWidth]");
    let (page, window) = (wide[0].as_u64().unwrap(), wide[1].as_u64().unwrap());
    assert!(
        page <= window && window <= 400,
        "the page is {page} px wide in a {window} px frame of a 400 px window"
    );
    b.cmd(json!({"cmd": "size", "width": 1280, "height": 1000}));

    if std::env::var_os("FAULTBRIDGE_COCKPIT_SCREENSHOT").is_some() {
        let png = repo().join("docs/cockpit.png");
        b.cmd(json!({"cmd": "screenshot", "path": png}));
        eprintln!("wrote {}", png.display());
    }

    // The daemon stops: the page says so.
    daemon.stop();
    b.wait(
        "#connection[data-state=\"not-running\"]",
        Some("not running"),
        5.0,
    );
    b.wait(&monitor("mrw1", "Unknown"), None, 1.0);

    // It starts again: the page follows it (mrw2's latched Error comes
    // back from the history).
    let daemon = Daemon::start(&daemon_config(&bus, &cfg));
    b.wait("#connection[data-state=\"running\"]", None, 10.0);
    b.wait(&monitor("mrw1", "Normal"), None, 5.0);
    b.wait(&monitor("mrw2", "Error"), None, 5.0);
    drop(daemon);

    // The bus goes away: the page says so.
    bus.kill();
    b.wait(
        "#connection[data-state=\"unreachable\"]",
        Some("unreachable"),
        10.0,
    );
}

/// Both packages install the page where Cockpit looks for it, and the page
/// keeps to Cockpit's content policy and to text-only fault fields: no
/// inline script, style or event handler, no markup built from strings.
#[test]
fn both_packages_install_the_page_and_it_has_no_inline_code() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("bridge/Cargo.toml")).unwrap())
            .unwrap();
    let meta = &manifest["package"]["metadata"];
    let src = "../dist/cockpit/faultbridge/*";
    assert!(
        meta["deb"]["assets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a[0].as_str() == Some(src)
                && a[1].as_str() == Some("usr/share/cockpit/faultbridge/")),
        "the deb does not install {src}"
    );
    let spec = faultbridge_tests::rpmspec::read(&repo());
    assert!(
        spec.installs
            .iter()
            .any(|i| i.source == "dist/cockpit/faultbridge/*"
                && i.dest == "/usr/share/cockpit/faultbridge/"),
        "the rpm does not install dist/cockpit/faultbridge/*: {:#?}",
        spec.installs
    );
    let files = spec.files_of("faultbridge");
    assert!(
        files
            .iter()
            .any(|e| e.path == "/usr/share/cockpit/faultbridge/*" && !e.has("%dir")),
        "the rpm's %files lacks the page's files: {files:#?}"
    );
    assert!(
        files
            .iter()
            .any(|e| e.path == "/usr/share/cockpit/faultbridge" && e.has("%dir")),
        "the rpm does not own /usr/share/cockpit/faultbridge (%dir): {files:#?}"
    );

    let dir = repo().join("dist/cockpit/faultbridge");
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["menu"]["index"]["label"], "Faults", "{m}");
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let scripts: Vec<&str> = html
        .match_indices("<script")
        .map(|(i, _)| &html[i..])
        .collect();
    assert_eq!(scripts.len(), 2, "cockpit.js and faultbridge.js only");
    for s in scripts {
        let tag = &s[..s.find('>').unwrap()];
        assert!(tag.contains(" src=\""), "an inline script: {tag}");
        assert!(
            s[tag.len() + 1..].starts_with("</script>"),
            "an inline script after {tag}"
        );
    }
    for bad in [
        " style=\"",
        " onclick=",
        " onload=",
        " onsubmit=",
        "javascript:",
    ] {
        assert!(!html.contains(bad), "index.html has {bad}");
    }
    let js = std::fs::read_to_string(dir.join("faultbridge.js")).unwrap();
    for bad in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(bad), "faultbridge.js uses {bad}");
    }
}

//! Actions with least privilege, through the real binary and the simulator:
//! fault fields stay data (never shell code, never expanded again, never an
//! option), hostile keywords cannot forge log lines, an exit program gets
//! its own arguments first, and the action program of a daemon running as
//! an unprivileged user with ambient CAP_NET_ADMIN holds no capability, no
//! daemon environment and no stray descriptor.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{Daemon, TempDir, binary, faultbridge, private_netns};
use serde_json::Value;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

fn need_python() {
    assert!(
        Path::new(PYTHON).exists(),
        "these tests run exit and probe programs with {PYTHON}: install python3"
    );
}

/// A program that writes its arguments (after the first, the output file)
/// as a JSON list to that file.
const RECORDER: &str = r#"
import json, os, sys
out = sys.argv[1]
with open(out + ".tmp", "w") as f:
    json.dump(sys.argv[2:], f)
os.rename(out + ".tmp", out)
"#;

fn wait_json(p: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            return serde_json::from_str(&s).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{} was never written",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_stderr(d: &Daemon, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = d.stderr();
        if s.contains(what) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never logged {what:?}:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn send(key: &str, seq: u64) {
    faultbridge(&["sim", "send", "-k", key, "--seq", &seq.to_string()]);
}

const HEAD: &str = "bus = \"none\"\n[sources.expdrv]\nnetlink_protocol = 2\nnetlink_group = 1\naccept = \"root\"\n";

#[test]
fn a_placeholder_inside_a_shell_script_is_refused_by_config_check() {
    let dir = TempDir::new("trust-check");
    let cfg = dir.write(
        "bad.toml",
        &format!(
            "{HEAD}[[monitor]]\nname = \"m\"\ncategory = \"NIC\"\nadapter = \"exec\"\ncommand = \"/bin/sh -c 'logger fault on {{keyword}}'\"\n"
        ),
    );
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`/bin/sh -c`") && err.contains("$FAULTBRIDGE_KEYWORD"),
        "{err}"
    );
    // The daemon does not start on it either.
    let out = Command::new(binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The same script reading the field as an argument is accepted.
    let good = dir.write(
        "good.toml",
        &format!(
            "{HEAD}[[monitor]]\nname = \"m\"\ncategory = \"NIC\"\nadapter = \"exec\"\ncommand = \"/bin/sh -c 'logger fault on \\\"$1\\\"' sh {{keyword}}\"\n"
        ),
    );
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fault_fields_stay_data() {
    need_python();
    private_netns();
    let dir = TempDir::new("trust-data");
    let rec = dir.write("rec.py", RECORDER);
    let out = |n: &str| dir.path().join(n);
    let pwned = dir.path().join("pwned");
    let cfg = format!(
        r#"{HEAD}
[[monitor]]
name = "nic-args"
category = "NIC"
adapter = "exec"
recovery_target = "grp1"
command = "{PYTHON} {rec} {nic} {{keyword}} {{recovery_target}}"
[[monitor]]
name = "nic-shell"
category = "NIC"
adapter = "exec"
command = "/bin/sh -c 'printf %s \"$1\" > {shell}' sh {{keyword}}"
[[monitor]]
name = "fc"
category = "FC"
adapter = "exec"
recovery_target = "grp2"
command = "{PYTHON} {rec} {fc} {{keyword}} {{recovery_target}}"
[[monitor]]
name = "sps"
category = "SPS"
adapter = "exec"
command = "{PYTHON} {rec} {sps} {{keyword}}"
[[monitor]]
name = "hass"
category = "HA/SS"
adapter = "exec"
command = "{PYTHON} {rec} {hass} {{keyword}}"
"#,
        rec = rec.display(),
        nic = out("nic").display(),
        shell = out("shell").display(),
        fc = out("fc").display(),
        sps = out("sps").display(),
        hass = out("hass").display(),
    );
    let d = Daemon::start(&cfg);

    // Shell syntax in a keyword: one argument, never run.
    let evil = format!("host1; id > {}; echo $(id) `id`", pwned.display());
    send(&format!("NIC.{evil}"), 1);
    assert_eq!(wait_json(&out("nic")), serde_json::json!([evil, "grp1"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out("shell").exists() {
        assert!(Instant::now() < deadline, "the shell monitor never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(out("shell")).unwrap(), evil);
    assert!(!pwned.exists(), "the keyword was run as shell code");

    // A placeholder in a keyword is not expanded again.
    send("FC.{recovery_target}", 2);
    assert_eq!(
        wait_json(&out("fc")),
        serde_json::json!(["{recovery_target}", "grp2"])
    );

    // A keyword that would be an option: refused, counted, logged.
    send("SPS.--output=/etc/passwd", 3);
    let log = wait_stderr(&d, "action-refused");
    assert!(log.contains("begins with '-'"), "{log}");
    assert!(
        !out("sps").exists(),
        "the program ran with an option from a fault"
    );

    // A newline in a keyword reaches the program as data and cannot forge
    // a log line.
    let forged = "x\nfaultbridge: [Success] hass action-exit: forged";
    send(&format!("HA/SS.{forged}"), 4);
    assert_eq!(wait_json(&out("hass")), serde_json::json!([forged]));
    let log = wait_stderr(&d, "hass action-exit");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("faultbridge: [Success] hass action-exit: forged")),
        "a keyword forged a log line:\n{log}"
    );
    assert!(log.contains("x\\nfaultbridge"), "{log}");
    d.stop();
}

#[test]
fn an_exit_program_gets_its_own_arguments_first() {
    need_python();
    private_netns();
    let dir = TempDir::new("trust-exit");
    let prog = dir.write(
        "prog.py",
        r#"
import json, os, struct, sys
block = sys.stdin.buffer.read()
out = sys.argv[1]
length, code = struct.unpack_from("=II", block, 0)
with open(out + ".tmp", "w") as f:
    json.dump({"argv": sys.argv[1:], "length": length, "code": code,
               "exit_data": os.environ.get("FAULTBRIDGE_EXIT_DATA")}, f)
os.rename(out + ".tmp", out)
"#,
    );
    let out = dir.path().join("out");
    let cfg = format!(
        "{HEAD}[[monitor]]\nname = \"xp\"\ncategory = \"NIC\"\nkeyword = \"eth0\"\nrecovery_action = \"restart\"\nadapter = \"exit-program\"\nexit_data = \"site=tokyo\"\ncommand = \"{PYTHON} {} {} --site 'tokyo east'\"\n",
        prog.display(),
        out.display()
    );
    let d = Daemon::start(&cfg);
    send("NIC.eth0", 1);
    let got = wait_json(&out);
    assert_eq!(
        got["argv"],
        serde_json::json!([
            out.display().to_string(),
            "--site",
            "tokyo east",
            "3",
            "FBEX0100"
        ])
    );
    assert_eq!(got["code"], 3);
    assert_eq!(got["length"], 224 + 4);
    assert_eq!(got["exit_data"], "site=tokyo");
    d.stop();
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no {key} in status"))
        .to_string()
}

#[test]
fn the_action_of_an_unprivileged_daemon_holds_no_capability_environment_or_descriptor() {
    need_python();
    private_netns();
    let dir = TempDir::new("trust-privs");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let probe = dir.write(
        "probe.py",
        r#"
import json, os, sys
out = sys.argv[1]
with open("/proc/self/status") as f:
    caps = {l.split(":")[0]: l.split()[1] for l in f if l.startswith("Cap")}
fds = []
for fd in range(3, 4096):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
with open(out + ".tmp", "w") as f:
    json.dump({"caps": caps, "env": dict(os.environ), "fds": fds, "uid": os.getuid()}, f)
os.rename(out + ".tmp", out)
"#,
    );
    let out = dir.path().join("probe.out");
    // systemd's notification socket, as under `Type=notify`.
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A descriptor the daemon inherits without close-on-exec.
    let leaked = std::fs::File::open("/proc/self/status").unwrap();
    nix::fcntl::fcntl(
        &leaked,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let leaked_fd = leaked.as_raw_fd();
    let cfg = format!(
        "{HEAD}[[monitor]]\nname = \"probe\"\ncategory = \"NIC\"\nadapter = \"exec\"\ncommand = \"{PYTHON} {} {}\"\n",
        probe.display(),
        out.display()
    );
    let d = Daemon::start_under(
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=+net_admin",
            "--ambient-caps=+net_admin",
        ],
        &cfg,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "10000000"),
        ],
    );
    let pid = d.child.id();
    let daemon = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(&daemon, "Uid"),
        "65534",
        "the daemon is not nobody"
    );
    let eff = u64::from_str_radix(&status_field(&daemon, "CapEff"), 16).unwrap();
    assert_eq!(
        eff,
        1 << 12,
        "the daemon keeps CAP_NET_ADMIN and nothing else"
    );
    assert!(
        Path::new(&format!("/proc/{pid}/fd/{leaked_fd}")).exists(),
        "the daemon did not inherit the test's descriptor: the test proves nothing"
    );
    send("NIC.eth0", 1);
    let got = wait_json(&out);
    assert_eq!(got["uid"], 65534);
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            got["caps"][set], "0000000000000000",
            "{set} of the action program: {}",
            got["caps"]
        );
    }
    assert_eq!(
        got["fds"],
        serde_json::json!([]),
        "descriptors beyond stdio"
    );
    let env = got["env"].as_object().unwrap();
    for (k, v) in env {
        assert!(
            k == "PATH" || k == "LANG" || k.starts_with("FAULTBRIDGE_"),
            "{k}={v} reached the action program"
        );
    }
    assert_eq!(
        env["PATH"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert_eq!(env["LANG"], "C.UTF-8");
    assert_eq!(env["FAULTBRIDGE_KEYWORD"], "eth0");
    drop(sock);
    drop(leaked);
    d.stop();
}

#[test]
fn sigterm_during_a_long_action_kills_it_and_the_daemon_exits() {
    private_netns();
    let dir = TempDir::new("trust-stop");
    let pidfile = dir.path().join("pid");
    let cfg = format!(
        "{HEAD}[[monitor]]\nname = \"slow\"\ncategory = \"NIC\"\nadapter = \"exec\"\ntimeout = \"24h\"\ncommand = \"/bin/sh -c 'echo $$ > {}.tmp && mv {}.tmp {}; exec sleep 86400'\"\n",
        pidfile.display(),
        pidfile.display(),
        pidfile.display()
    );
    let d = Daemon::start(&cfg);
    send("NIC.eth0", 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            break s.trim().parse::<i32>().unwrap();
        }
        assert!(Instant::now() < deadline, "the action never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // Stops (the helper waits at most 20 s, not the action's 24 h) …
    let stats = d.stop();
    assert_eq!(stats["type"], "stats");
    // … and the action's process was killed and reaped, not left a zombie.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the action program outlived the daemon: {:?}",
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s
                .lines()
                .find(|l| l.starts_with("State:"))
                .map(String::from))
    );
}

//! The operations kit: systemd notify protocol (READY, STATUS, WATCHDOG),
//! the unit file, the udev rules, the example configuration, the man page
//! and the package file lists.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{TempDir, binary, private_netns, repo, rpmspec};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn run_speaks_the_systemd_notify_protocol() {
    private_netns();
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = dir.write(
        "f.toml",
        "bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\nnetlink_group = 1\n",
    );
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut msgs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let ready = msgs.iter().any(|m| m.lines().any(|l| l == "READY=1"));
        let status = msgs
            .iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("monitors in Error"));
        let dogs = msgs
            .iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count();
        if ready && status && dogs >= 3 {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let ready_at = msgs.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    assert!(ready_at.is_some(), "no READY=1 in {msgs:?}");
    assert!(
        msgs.iter().any(|m| m.starts_with("STATUS=")),
        "no STATUS= in {msgs:?}"
    );
    let dogs = msgs
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert!(dogs >= 3, "watchdog keep-alives: {dogs} in {msgs:?}");
    // after SIGTERM: STOPPING=1
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        stopping |= String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo().join("dist/systemd/faultbridge.service")).unwrap();
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=faultbridge",
        "StateDirectoryMode=0700",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(needed)),
            "unit lacks {needed}"
        );
    }
    // The hardening directives, each explained by the comment line above it.
    let lines: Vec<&str> = unit.lines().collect();
    for needed in [
        "ProtectKernelTunables=yes",
        "ProtectProc=invisible",
        "RestrictNamespaces=yes",
        "SystemCallFilter=@system-service",
        "UMask=0077",
    ] {
        let at = lines
            .iter()
            .position(|l| *l == needed)
            .unwrap_or_else(|| panic!("unit lacks {needed}"));
        assert!(
            at > 0 && lines[at - 1].starts_with('#'),
            "{needed} has no comment above it"
        );
    }
    let dir = TempDir::new("unit");
    let local = unit.replace("/usr/bin/faultbridge", binary().to_str().unwrap());
    let path = dir.write("faultbridge.service", &local);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze is needed (Debian package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("faultbridge.service"))
        // a build container has no dbus.service or faultbridge user; those
        // are the target host's, not the unit's, business
        .filter(|l| {
            !l.contains("dbus.service")
                && !l.contains("systemd-udev-settle")
                && !l.contains("network-pre")
        })
        .collect();
    assert!(relevant.is_empty(), "systemd-analyze verify:\n{err}");
}

/// A udev rule line as `udev` reads it: comma-separated `KEY{attr} OP "value"`.
fn parse_udev_rule(line: &str) -> Result<Vec<(String, String, String)>, String> {
    const KEYS: &[&str] = &[
        "ACTION",
        "DEVPATH",
        "KERNEL",
        "NAME",
        "SYMLINK",
        "SUBSYSTEM",
        "DRIVER",
        "ATTR",
        "ATTRS",
        "ENV",
        "TAG",
        "TEST",
        "PROGRAM",
        "RESULT",
        "OWNER",
        "GROUP",
        "MODE",
        "RUN",
        "LABEL",
        "GOTO",
        "OPTIONS",
        "KERNELS",
        "SUBSYSTEMS",
        "DRIVERS",
        "TAGS",
        "IMPORT",
    ];
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .ok_or("no operator")?;
        let mut key = rest[..key_end].to_string();
        rest = &rest[key_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let close = r.find('}').ok_or("unclosed {")?;
            key = format!("{key}{{{}}}", &r[..close]);
            rest = &r[close + 1..];
        }
        let base = key.split('{').next().unwrap_or_default();
        if !KEYS.contains(&base) {
            return Err(format!("unknown key {key}"));
        }
        let op = ["==", "!=", "+=", "-=", ":=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or(format!("no operator after {key}"))?;
        rest = rest[op.len()..].trim_start();
        let r = rest
            .strip_prefix('"')
            .ok_or(format!("value of {key} not quoted"))?;
        let close = r.find('"').ok_or(format!("unterminated value of {key}"))?;
        out.push((key, op.to_string(), r[..close].to_string()));
        rest = r[close + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected a comma at {rest:?}"));
        }
    }
    Ok(out)
}

#[test]
fn the_udev_rules_parse_and_give_the_device_to_the_service_user_only() {
    let path = repo().join("udev-rules/60-faultbridge.rules");
    let text = std::fs::read_to_string(&path).unwrap();
    let rules: Vec<Vec<(String, String, String)>> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| parse_udev_rule(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect();
    assert_eq!(rules.len(), 1);
    let has =
        |k: &str, op: &str, v: &str| rules[0].iter().any(|(a, b, c)| a == k && b == op && c == v);
    assert!(has("KERNEL", "==", "expdrv[0-9]*"));
    // The daemon's user reads and writes the device; group faultbridge (the
    // operators who may call Notify and Reset) and everyone else get nothing.
    assert!(has("OWNER", "=", "faultbridge"));
    assert!(has("GROUP", "=", "root"));
    assert!(has("MODE", "=", "0600"));
    assert!(!has("GROUP", "=", "faultbridge"));
    assert!(has("SYMLINK", "+=", "faultbridge/%k"));
    assert!(has("TAG", "+=", "systemd"));
    assert!(has("ENV{SYSTEMD_WANTS}", "+=", "faultbridge.service"));
    assert!(parse_udev_rule("KERNEL==\"x\", GROUP=\"y").is_err());
    assert!(parse_udev_rule("KERNAL==\"x\"").is_err());
    // where the installed udev has `udevadm verify` (systemd ≥ 254), it must agree
    let verify = Command::new("udevadm").args(["verify", "--help"]).output();
    if let Ok(v) = verify {
        if v.status.success() {
            let out = Command::new("udevadm")
                .arg("verify")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "udevadm verify: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            eprintln!(
                "udevadm here has no `verify` (systemd < 254): the rules were checked by the parser above"
            );
        }
    }
}

#[test]
fn config_check_accepts_the_example_and_points_at_mistakes() {
    let example = repo().join("dist/config/faultbridge.toml");
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    let dir = TempDir::new("cfgcheck");
    let bad = dir.write(
        "bad.toml",
        "[[monitor]]\nname = \"m\"\ncategory = \"NIC\"\nadapter = \"exce\"\n",
    );
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4:11: unknown adapter \"exce\""),
        "{err}"
    );
}

/// The subcommands `faultbridge --help` lists (the hidden `man` is not).
fn subcommands(args: &[&str]) -> Vec<String> {
    let out = Command::new(binary())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some(at) = help.find("Commands:\n") else {
        return Vec::new();
    };
    help[at + 10..]
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn a_man_page_per_subcommand_and_one_for_the_configuration_are_generated() {
    let out = Command::new(binary()).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH faultbridge 1"),
        "{}",
        &page[..page.len().min(300)]
    );

    let dir = TempDir::new("man");
    let out = Command::new(binary())
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = vec![
        "faultbridge.1".to_string(),
        "faultbridge.toml.5".to_string(),
    ];
    let top = subcommands(&[]);
    for sub in [
        "run", "demo", "sim", "watch", "notify", "status", "check", "reset", "history", "config",
        "fleet",
    ] {
        assert!(top.iter().any(|t| t == sub), "--help lacks {sub}: {top:?}");
    }
    for sub in &top {
        want.push(format!("faultbridge-{sub}.1"));
        for nested in subcommands(&[sub.as_str()]) {
            want.push(format!("faultbridge-{sub}-{nested}.1"));
        }
    }
    want.sort();
    let mut got: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert!(want.contains(&"faultbridge-sim-send.1".to_string()));

    // Each page is well-formed roff: groff reads it without a warning.
    for name in &got {
        let path = dir.path().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(".TH") || text.contains("\n.TH"), "{name}");
        let check = Command::new("groff")
            .args(["-k", "-man", "-ww", "-z", "-Tutf8"])
            .arg(&path)
            .output()
            .expect("groff is needed (Debian package groff-base)");
        assert!(
            check.status.success() && check.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let config = std::fs::read_to_string(dir.path().join("faultbridge.toml.5")).unwrap();
    assert!(config.starts_with(".TH FAULTBRIDGE.TOML 5"));
    // Every table of the configuration has its section.
    for table in [
        "[sources.expdrv]",
        "[sources.rtnetlink]",
        "[sources.fc]",
        "[sources.uevent]",
        "[history]",
        "[forward.nats]",
        "[actions]",
        "[ingest]",
        "[[monitor]]",
    ] {
        assert!(
            config.contains(&format!(".SH {table}")),
            "faultbridge.toml(5) lacks {table}"
        );
    }
}

#[test]
fn both_packages_install_the_unit_policy_rules_config_and_man_page() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("bridge/Cargo.toml")).unwrap())
            .unwrap();
    let meta = &manifest["package"]["metadata"];
    let deb: Vec<(String, String)> = meta["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The RPM's: dist/rpm/faultbridge.spec, its install section (sources
    // relative to the repository) and its %files.
    let spec = rpmspec::read(&repo());
    let rpm: Vec<(String, String)> = spec
        .installs
        .iter()
        .map(|i| (i.source.clone(), i.dest.clone()))
        .collect();
    let files = spec.files_of("faultbridge");
    for (dest, what) in [
        ("usr/bin", "faultbridge"),
        ("usr/lib/systemd/system", "faultbridge.service"),
        ("usr/share/dbus-1/system.d", "org.faultbridge.Bridge1.conf"),
        (
            "usr/share/dbus-1/system-services",
            "org.faultbridge.Bridge1.service",
        ),
        ("usr/lib/udev/rules.d", "60-faultbridge.rules"),
        ("usr/lib/sysusers.d", "faultbridge.conf"),
        ("usr/lib/ocf/resource.d/faultbridge", "monitor"),
        ("etc/faultbridge", "faultbridge.toml"),
        ("usr/share/man/man5", "faultbridge.toml.5.gz"),
        ("usr/share/doc/faultbridge", "SECURITY.md"),
    ] {
        assert!(
            deb.iter()
                .any(|(s, d)| s.ends_with(what) && d.trim_start_matches('/').starts_with(dest)),
            "deb lacks {dest}/{what}"
        );
        assert!(
            rpm.iter()
                .any(|(s, d)| s.ends_with(what)
                    && d.trim_start_matches('/') == format!("{dest}/{what}")),
            "rpm's install section lacks {dest}/{what}"
        );
        assert!(
            files
                .iter()
                .any(|e| !e.has("%dir") && rpmspec::matches(&e.path, &format!("/{dest}/{what}"))),
            "rpm's %files lacks /{dest}/{what}"
        );
    }
    // Every man page `faultbridge man --dir` writes into target/release/man
    // (what scripts/package.sh runs, then gzip) is installed by both
    // packages (tests/tests/packages.rs checks the built packages).
    let script = std::fs::read_to_string(repo().join("scripts/package.sh")).unwrap();
    assert!(script.contains(r#"faultbridge" man --dir "$release/man""#));
    assert!(script.contains(r#"--define "fb_built $release""#));
    for (dest, pattern) in [
        ("usr/share/man/man1/", "target/release/man/*.1.gz"),
        (
            "usr/share/man/man5/",
            "target/release/man/faultbridge.toml.5.gz",
        ),
        ("usr/share/doc/faultbridge/", "../docs/*.md"),
    ] {
        assert!(
            deb.iter()
                .any(|(s, d)| s == pattern && d.trim_start_matches('/') == dest),
            "deb lacks {pattern} → {dest}"
        );
        let pattern = pattern.trim_start_matches("../");
        assert!(
            rpm.iter().any(|(s, d)| s == pattern
                && (d.trim_start_matches('/') == dest
                    || (!pattern.contains('*') && d.trim_start_matches('/').starts_with(dest)))),
            "rpm lacks {pattern} → {dest}"
        );
    }
    // The configuration survives upgrades when edited: noreplace for the
    // RPM, a conffile for the deb.
    let rpm_config = files
        .iter()
        .find(|e| e.path == "/etc/faultbridge/faultbridge.toml")
        .expect("rpm's %files lacks /etc/faultbridge/faultbridge.toml");
    assert!(
        rpm_config.has("%config(noreplace)"),
        "not %config(noreplace): {rpm_config:?}"
    );
    assert!(
        meta["deb"]["conf-files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str() == Some("/etc/faultbridge/faultbridge.toml"))
    );
    // The RPM owns every directory it makes: each directory above one of
    // its files is a %dir of the package, or one of the filesystem's,
    // systemd's, udev's or D-Bus's where it only adds files; the state
    // directory is 0700 for faultbridge.
    let owned: Vec<&str> = spec
        .files
        .values()
        .flatten()
        .filter(|e| e.has("%dir"))
        .map(|e| e.path.as_str())
        .collect();
    for dest in rpm
        .iter()
        .map(|(_, d)| d.as_str())
        .chain(spec.dirs.iter().map(|(d, _)| d.as_str()))
    {
        let mut dir = Path::new(dest.trim_end_matches('/'));
        if dest.ends_with('/') || spec.dirs.iter().any(|(d, _)| d == dest) {
            // (a directory itself: install -t's or install -d's)
            assert!(
                owned.contains(&dir.to_str().unwrap())
                    || rpmspec::SHARED_DIRS.contains(&dir.to_str().unwrap()),
                "rpm: {} is no %dir of the package",
                dir.display()
            );
        }
        while let Some(parent) = dir.parent() {
            let p = parent.to_str().unwrap();
            assert!(
                owned.contains(&p) || rpmspec::SHARED_DIRS.contains(&p),
                "rpm: {p} (above {dest}) is no %dir of the package"
            );
            dir = parent;
        }
    }
    for dir in [
        "/etc/faultbridge",
        "/var/lib/faultbridge",
        "/usr/share/doc/faultbridge",
        "/usr/share/cockpit/faultbridge",
        "/usr/lib/ocf/resource.d/faultbridge",
    ] {
        assert!(owned.contains(&dir), "rpm: {dir} is no %dir: {owned:?}");
    }
    assert!(
        files.iter().any(|e| e.path == "/var/lib/faultbridge"
            && e.has("%dir")
            && e.has("%attr(0700,faultbridge,faultbridge)")),
        "rpm: /var/lib/faultbridge is not %attr(0700,faultbridge,faultbridge) %dir"
    );
    // Every file the install section copies is in a %files list (rpmbuild
    // also stops on one that is not), and every %files entry that is no
    // directory is copied by it.
    let listed = |path: &str| {
        spec.files
            .values()
            .flatten()
            .any(|e| !e.has("%dir") && rpmspec::matches(&e.path, path))
    };
    for (src, dest) in &rpm {
        if !dest.ends_with('/') {
            assert!(listed(dest), "rpm: {src} → {dest} is in no %files");
        } else if src.starts_with("target/") {
            // (a pattern over build products: some %files entry in dest)
            assert!(
                files
                    .iter()
                    .any(|e| !e.has("%dir") && e.path.starts_with(dest.as_str())),
                "rpm: {src} → {dest} is in no %files"
            );
        } else {
            for f in glob(src) {
                let d = format!("{dest}{}", f.file_name().unwrap().to_string_lossy());
                assert!(listed(&d), "rpm: {src} → {d} is in no %files");
            }
        }
    }
    for e in spec.files.values().flatten().filter(|e| !e.has("%dir")) {
        let (dir, _) = e.path.rsplit_once('/').unwrap();
        assert!(
            rpm.iter()
                .any(|(_, d)| rpmspec::matches(&e.path, d) || d == &format!("{dir}/")),
            "rpm: %files has {} but the install section makes no such file",
            e.path
        );
    }
    // Every source that is not a build product exists in the repository
    // (a pattern matches at least one file).
    for (src, _) in &deb {
        if src.starts_with("target/") || src.starts_with("../target/") {
            continue;
        }
        let path = repo().join("bridge").join(src);
        let exists = match src.rsplit_once("/*") {
            Some((dir, suffix)) => std::fs::read_dir(repo().join("bridge").join(dir))
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(suffix)),
            None => path.exists(),
        };
        assert!(exists, "deb package source {src} is missing");
    }
    for (src, _) in &rpm {
        if !src.starts_with("target/") {
            assert!(!glob(src).is_empty(), "rpm package source {src} is missing");
        }
    }
}

/// The files of the repository a source of the spec names (`dir/*.md`,
/// `dir/*`, or one file).
fn glob(src: &str) -> Vec<PathBuf> {
    match src.rsplit_once('/') {
        Some((dir, name)) if name.contains('*') => {
            let mut found: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.is_file() && rpmspec::matches(name, &p.file_name().unwrap().to_string_lossy())
                })
                .collect();
            found.sort();
            found
        }
        _ => {
            let path = repo().join(src);
            if path.is_file() { vec![path] } else { vec![] }
        }
    }
}

#[test]
fn the_readme_configuration_example_is_valid() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Configuration")
        .expect("a Configuration section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let dir = TempDir::new("readme-config");
    let path = dir.write("readme.toml", block);
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The project explains itself: no file points at documents outside the
/// repository (the driver ABI, the exit-program protocol and the design
/// live in `docs/`, the man pages and the README).
#[test]
fn no_file_points_outside_the_project() {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name == ".git" || name == "corpus" || name == "artifacts" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                walk(&path, found);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                for (n, line) in text.lines().enumerate() {
                    if line.contains(concat!("shared", "/")) {
                        found.push(format!("{}:{}: {line}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo(), &mut found);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_readme_run_commands_have_exactly_one_binary_to_run() {
    // `cargo run --release -- demo` (and `-- run`) must not have to choose
    // between the daemon and the tests' second build of it.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("cargo run --release -- demo"),
        "the README no longer gives the demo command this test checks"
    );
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("cannot run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let defaults: Vec<&str> = meta["workspace_default_members"]
        .as_array()
        .expect("workspace_default_members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let bins: Vec<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| defaults.contains(&p["id"].as_str().unwrap_or("")))
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        bins,
        ["faultbridge"],
        "binaries `cargo run` would choose from"
    );
}

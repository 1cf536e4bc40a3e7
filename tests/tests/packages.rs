//! The packages as a distribution would take them. `scripts/package.sh`
//! builds the .deb and the .rpm (and their debug-symbol packages) from the
//! release build, into the target directory CARGO_TARGET_DIR names; lintian finds no error in the .deb and rpmlint none in the
//! .rpm; both carry a stripped binary whose debug symbols are in the debug
//! package, the man page of every command a page names, the tmpfiles.d line
//! of the 0700 state directory, and the maintainer scripts. Then the .deb
//! lives through install, upgrade, remove and purge on a throw-away root
//! without systemd (`tests/fixtures/package-lifecycle.sh`): the init script
//! starts the daemon as the unit would, the upgrade restarts it on the new
//! binary, remove stops it, and purge leaves only what Debian policy allows.
//! The .rpm (rpmbuild, from dist/rpm/faultbridge.spec) owns every directory
//! it makes, the 0700 state directory with faultbridge's owner and group;
//! its scriptlets and %config(noreplace) go through install, upgrade and
//! erase the same way (`tests/fixtures/rpm-lifecycle.sh`), and erase takes
//! everything the package owned but the edited configuration. The machine
//! itself is unchanged afterwards.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{TempDir, repo, rpmspec, text};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

fn require_tools() {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for (tool, from) in [
        ("dpkg-deb", "dpkg"),
        ("lintian", "the Debian package lintian"),
        ("rpmlint", "the Debian package rpmlint"),
        ("rpm", "the Debian package rpm"),
        ("rpmbuild", "the Debian package rpm"),
        ("rpm2cpio", "the Debian package rpm"),
        ("cpio", "the Debian package cpio"),
        ("readelf", "the Debian package binutils"),
        ("objcopy", "the Debian package binutils"),
        ("unshare", "util-linux"),
        ("utmpdump", "util-linux"),
        ("runlevel", "the Debian package systemd-sysv"),
        ("invoke-rc.d", "the Debian package init-system-helpers"),
        ("dbus-send", "the Debian package dbus-bin"),
        ("/etc/init.d/dbus", "the Debian package dbus"),
    ] {
        assert!(
            have(tool),
            "the package test needs {tool} ({from}); ./scripts/test.sh installs it"
        );
    }
    let ok = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the package test needs cargo-deb; ./scripts/test.sh installs it"
    );
}

/// The ELF sections of a file, by name.
fn sections(file: &Path) -> String {
    stdout(Command::new("readelf").args(["-S", "-W"]).arg(file))
}

/// The GNU build id of an ELF file, in hex.
fn build_id(file: &Path) -> String {
    let notes = stdout(Command::new("readelf").args(["-n"]).arg(file));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{} has no build id:\n{notes}", file.display()))
        .to_string()
}

/// Every `faultbridge…(N)` page a man page names (`faultbridge\-run(1)`,
/// `.BR faultbridge\-check (1)`), as (name, section).
fn named_pages(page: &str) -> BTreeSet<(String, String)> {
    let page = page.replace("\\-", "-");
    let mut named = BTreeSet::new();
    for (at, _) in page.match_indices("faultbridge") {
        let rest = &page[at..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .collect();
        let after = rest[name.len()..].trim_start_matches(' ');
        let mut chars = after.chars();
        if let (Some('('), Some(n), Some(')')) = (chars.next(), chars.next(), chars.next())
            && n.is_ascii_digit()
        {
            named.insert((name.trim_end_matches('.').to_string(), n.to_string()));
        }
    }
    named
}

/// Checks the man pages installed under `root/usr/share/man`: every page
/// that one of them names is there, and faultbridge(1) names the
/// subcommands' pages.
fn check_man_pages(root: &Path, what: &str) {
    let mut installed = BTreeSet::new();
    let mut named = BTreeSet::new();
    for section in ["1", "5"] {
        let dir = root.join(format!("usr/share/man/man{section}"));
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{what}: no {}: {e}", dir.display()))
        {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let name = file
                .strip_suffix(&format!(".{section}.gz"))
                .unwrap_or_else(|| {
                    panic!("{what}: {file} is not a compressed page of section {section}")
                });
            installed.insert((name.to_string(), section.to_string()));
            let page = stdout(Command::new("gzip").arg("-dc").arg(&path));
            named.extend(named_pages(&page));
        }
    }
    let top = stdout(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/faultbridge.1.gz")),
    );
    let top_named = named_pages(&top);
    for cmd in ["faultbridge-run", "faultbridge-status", "faultbridge-check"] {
        assert!(
            top_named.contains(&(cmd.to_string(), "1".to_string())),
            "{what}: faultbridge(1) does not name {cmd}(1): {top_named:?}"
        );
    }
    let missing: Vec<_> = named.difference(&installed).collect();
    assert!(
        missing.is_empty(),
        "{what}: pages named but not installed: {missing:?} (installed: {installed:?})"
    );
}

/// What lintian says of the .deb: no error (the warnings are printed).
fn lintian(deb: &Path) {
    let out = Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(deb)
        .output()
        .expect("cannot run lintian");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(
        out.status.success() && errors.is_empty(),
        "lintian found errors in {}:\n{}",
        deb.display(),
        text(&out)
    );
    eprintln!("lintian {}:\n{said}", deb.display());
}

/// What rpmlint says of the .rpms (all at once: a filter that matches none
/// of them is an error), with the project's filters (dist/rpm/rpmlintrc,
/// each with its reason): no error (the warnings are printed).
fn rpmlint(rpms: &[PathBuf]) {
    let out = Command::new("rpmlint")
        .arg("-r")
        .arg(repo().join("dist/rpm/rpmlintrc"))
        .args(rpms)
        .output()
        .expect("cannot run rpmlint");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !said.contains(": E: ") && said.contains(" 0 errors"),
        "rpmlint found errors in {rpms:?}:\n{}",
        text(&out)
    );
    eprintln!("rpmlint {rpms:?}:\n{said}");
}

/// The debuginfo .rpm beside an .rpm.
fn debuginfo(rpm: &Path) -> PathBuf {
    let name = rpm.file_name().unwrap().to_string_lossy();
    rpm.with_file_name(name.replacen("faultbridge-", "faultbridge-debuginfo-", 1))
}

/// The .deb's contents: metadata, stripped binary and its -dbgsym, copyright,
/// man pages, state directory, maintainer scripts.
fn check_deb(deb: &Path, dir: &Path) {
    let field = |name: &str| stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name));
    let maintainer = field("Maintainer");
    assert!(
        maintainer.contains('<') && maintainer.contains('@') && maintainer.contains('>'),
        "the maintainer has no address: {maintainer}"
    );
    let description = field("Description");
    assert!(
        description.lines().count() >= 4 && description.trim_end().ends_with('.'),
        "no long description, or one cut short:\n{description}"
    );
    let root = dir.join("deb");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    let control = dir.join("deb-control");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    for script in ["postinst", "prerm", "postrm"] {
        assert!(control.join(script).exists(), "the .deb has no {script}");
    }
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    for f in [
        "/etc/faultbridge/faultbridge.toml",
        "/etc/init.d/faultbridge",
    ] {
        assert!(
            conffiles.lines().any(|l| l == f),
            "{f} is no conffile: {conffiles}"
        );
    }

    // Stripped; the symbols are in the -dbgsym package, under the build id.
    let bin = root.join("usr/bin/faultbridge");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        !sections(&bin).contains(".debug_info"),
        "the .deb's binary is not stripped"
    );
    assert!(size < 25 << 20, "the .deb's binary is {size} bytes");
    let id = build_id(&bin);
    let ddeb = deb
        .with_file_name(deb.file_name().unwrap().to_string_lossy().replacen(
            "faultbridge_",
            "faultbridge-dbgsym_",
            1,
        ))
        .with_extension("ddeb");
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&ddeb));
    let debug_file = format!("./usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
    assert!(
        listing.contains(&debug_file),
        "{} lacks {debug_file}:\n{listing}",
        ddeb.display()
    );

    let copyright =
        std::fs::read_to_string(root.join("usr/share/doc/faultbridge/copyright")).unwrap();
    assert!(
        copyright.starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        ) && copyright.contains("\nCopyright: ")
            && copyright.contains("\nLicense: "),
        "the copyright file is not machine-readable:\n{copyright}"
    );
    let tmpfiles =
        std::fs::read_to_string(root.join("usr/lib/tmpfiles.d/faultbridge.conf")).unwrap();
    assert!(
        tmpfiles
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "d",
                    "/var/lib/faultbridge",
                    "0700",
                    "faultbridge",
                    "faultbridge",
                    "-"
                ]),
        "no 0700 state directory in tmpfiles.d:\n{tmpfiles}"
    );
    check_man_pages(&root, "the .deb");
}

/// The .rpm's contents: scriptlets, %config(noreplace), stripped binary with
/// its symbols in the debuginfo package, man pages.
fn check_rpm(rpm: &Path, dir: &Path) {
    let scripts = stdout(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm));
    for (what, needle) in [
        (
            "%pre creates the user from sysusers.d",
            "systemd-sysusers --replace=/usr/lib/sysusers.d/faultbridge.conf",
        ),
        (
            "%post presets the unit",
            "systemctl --no-reload preset faultbridge.service",
        ),
        (
            "%post creates the state directory",
            "systemd-tmpfiles --create /usr/lib/tmpfiles.d/faultbridge.conf",
        ),
        (
            "%preun stops the daemon on erase",
            "systemctl --no-reload disable --now faultbridge.service",
        ),
        (
            "%postun restarts it on upgrade",
            "systemctl try-restart faultbridge.service",
        ),
    ] {
        assert!(
            scripts.contains(needle),
            "{what}: no `{needle}` in\n{scripts}"
        );
    }
    for scriptlet in ["preinstall", "postinstall", "preuninstall", "postuninstall"] {
        assert!(
            scripts.contains(&format!("{scriptlet} scriptlet")),
            "no %{scriptlet}:\n{scripts}"
        );
    }
    let flags = stdout(
        Command::new("rpm")
            .args(["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\\n]"])
            .arg(rpm),
    );
    assert!(
        flags
            .lines()
            .any(|l| l == "/etc/faultbridge/faultbridge.toml cn"),
        "the configuration is not %config(noreplace):\n{flags}"
    );

    let root = dir.join("rpm");
    std::fs::create_dir_all(&root).unwrap();
    run(Command::new("sh")
        .current_dir(&root)
        .args(["-c", "rpm2cpio \"$1\" | cpio -idm --quiet", "sh"])
        .arg(rpm));
    let bin = root.join("usr/bin/faultbridge");
    let secs = sections(&bin);
    assert!(
        !secs.contains(".debug_info"),
        "the .rpm's binary is not stripped"
    );
    assert!(
        secs.contains(".gnu_debuglink"),
        "the .rpm's binary does not name its debug file"
    );
    let debuginfo = debuginfo(rpm);
    let listing = stdout(Command::new("rpm").args(["-qlp"]).arg(&debuginfo));
    assert!(
        listing
            .lines()
            .any(|l| l == "/usr/lib/debug/usr/bin/faultbridge.debug"),
        "{} lacks the debug file:\n{listing}",
        debuginfo.display()
    );
    check_man_pages(&root, "the .rpm");
    check_rpm_dirs(rpm);
}

/// The .rpm owns the directories it makes (`rpm -qlvp` lists them as `d`
/// entries): each directory above one of its files, or one of its debuginfo
/// package's, is its own or one of those it only adds files to (the
/// filesystem's, systemd's, udev's, D-Bus's); the state directory is
/// drwx------ faultbridge faultbridge.
/// (`rpm -qlv` cuts owners to 8 characters: the query names them whole.)
fn check_rpm_dirs(rpm: &Path) {
    let listing = stdout(
        Command::new("rpm")
            .args([
                "-qp",
                "--qf",
                "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\\n]",
            ])
            .arg(rpm),
    );
    let mut dirs = BTreeMap::new();
    let mut files = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        let [perms, user, group, path] = fields[..] else {
            panic!("an rpm -qp line the test cannot read: {line}\n{listing}")
        };
        if perms.starts_with('d') {
            dirs.insert(path.to_string(), format!("{perms} {user} {group}"));
        } else {
            files.push(path.to_string());
        }
    }
    eprintln!("the .rpm's directories: {dirs:#?}");
    for (dir, owner) in [
        ("/etc/faultbridge", "drwxr-xr-x root root"),
        ("/var/lib/faultbridge", "drwx------ faultbridge faultbridge"),
        ("/usr/share/doc/faultbridge", "drwxr-xr-x root root"),
        ("/usr/share/licenses/faultbridge", "drwxr-xr-x root root"),
        ("/usr/share/cockpit/faultbridge", "drwxr-xr-x root root"),
        (
            "/usr/lib/ocf/resource.d/faultbridge",
            "drwxr-xr-x root root",
        ),
    ] {
        assert_eq!(
            dirs.get(dir).map(String::as_str),
            Some(owner),
            "the .rpm does not own {dir} as {owner}:\n{listing}"
        );
    }
    let debug_files = stdout(Command::new("rpm").args(["-qlp"]).arg(debuginfo(rpm)));
    for file in files.iter().map(String::as_str).chain(debug_files.lines()) {
        let mut dir = Path::new(file);
        while let Some(parent) = dir.parent() {
            let p = parent.to_str().unwrap();
            assert!(
                dirs.contains_key(p) || rpmspec::SHARED_DIRS.contains(&p),
                "the .rpms have {file} but do not own {p}:\n{listing}"
            );
            dir = parent;
        }
    }
}

/// `scripts/package.sh ARGS` with the target directory `target`
/// (CARGO_TARGET_DIR), quiet: it prints the packages' paths.
fn package(target: &Path, args: &[&str]) -> Command {
    let mut package = Command::new(repo().join("scripts/package.sh"));
    package
        .args(args)
        .env("FAULTBRIDGE_PACKAGE_QUIET", "1")
        .env("CARGO_TARGET_DIR", target);
    // The environment cargo, rustup and nextest give a test is not the one
    // scripts/test.sh made the release build in: without what they add,
    // package.sh finds that build fresh instead of building it again.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let added = (key.starts_with("CARGO")
            && !["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&key.as_ref())
            && !key.starts_with("CARGO_BUILD_")
            && !key.starts_with("CARGO_PROFILE_")
            && !key.starts_with("CARGO_REGISTR"))
            || key.starts_with("RUSTUP_TOOLCHAIN")
            || key.starts_with("NEXTEST")
            || key.starts_with("__NEXTEST")
            || ["RUST_RECURSION_COUNT", "LD_LIBRARY_PATH", "OUT_DIR"].contains(&key.as_ref());
        if added {
            package.env_remove(key.as_ref());
        }
    }
    package
}

/// Runs the lifecycle script in its own mount, network and pid namespaces
/// and returns its facts, name → values.
/// The single value of fact `name` of a lifecycle run.
fn one_fact<'a>(facts: &'a BTreeMap<String, Vec<String>>, name: &str) -> &'a str {
    match facts.get(name).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("fact {name}: {other:?}\nall: {facts:#?}"),
    }
}

fn lifecycle(script: &str, work: &Path, old: &Path, new: &Path) -> BTreeMap<String, Vec<String>> {
    let script = repo().join("tests/fixtures").join(script);
    // setpriv --pdeathsig: unshare dies with this test, and --kill-child
    // takes the namespace's first process, and so every process in it, along.
    let out = Command::new("timeout")
        .args(["240", "setpriv", "--pdeathsig", "KILL", "--"])
        .args([
            "unshare",
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
        ])
        .args(["--mount-proc", "--propagation", "private", "bash"])
        .arg(&script)
        .arg(work)
        .arg(old)
        .arg(new)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("fact done 1"),
        "{} failed: {}",
        script.display(),
        text(&out)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let mut facts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in said.lines() {
        if let Some(rest) = line.strip_prefix("fact ") {
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            facts
                .entry(name.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    facts
}

/// What the host's own package database and user list say of faultbridge.
fn host_state() -> (String, String) {
    let dpkg = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status} ${Version}", "faultbridge"])
        .output()
        .unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    (String::from_utf8_lossy(&dpkg.stdout).into_owned(), passwd)
}

#[test]
fn packages_pass_lint_and_the_deb_installs_upgrades_removes_and_purges_cleanly() {
    require_tools();
    assert!(
        nix::unistd::geteuid().is_root() && std::env::var_os("FAULTBRIDGE_IN_USERNS").is_none(),
        "the package test mounts overlays over /etc, /usr and /var in a namespace of its own: it needs real root"
    );
    let dir = TempDir::new("packages");

    let started = Instant::now();
    // package.sh honours CARGO_TARGET_DIR: it gets the target directory of
    // this build under another name, and the packages must land there.
    let target = std::env::current_exe().unwrap(); // target/debug/deps/packages-…
    let target = target.ancestors().nth(3).unwrap();
    let alias = dir.path().join("target-dir");
    std::os::unix::fs::symlink(target, &alias).unwrap();
    let built = stdout(&mut package(&alias, &[]));
    eprintln!(
        "scripts/package.sh: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let lines: Vec<&str> = built.lines().collect();
    let [.., deb, rpm] = lines[..] else {
        panic!("package.sh printed no package paths:\n{built}")
    };
    let (deb, rpm) = (PathBuf::from(deb), PathBuf::from(rpm));
    assert!(deb.extension().is_some_and(|e| e == "deb"), "{built}");
    assert!(rpm.extension().is_some_and(|e| e == "rpm"), "{built}");
    assert!(
        deb.starts_with(alias.join("debian")) && rpm.starts_with(alias.join("rpm")),
        "the packages are not under CARGO_TARGET_DIR={}:\n{built}",
        alias.display()
    );

    lintian(&deb);
    rpmlint(&[rpm.clone(), debuginfo(&rpm)]);
    check_deb(&deb, dir.path());
    check_rpm(&rpm, dir.path());

    // The upgrade: the same files under the next version, packed again.
    let old = dir.path().join("faultbridge-old.deb");
    std::fs::copy(&deb, &old).unwrap();
    let tree = dir.path().join("rebuilt");
    run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let fields = std::fs::read_to_string(&control).unwrap();
    let version = fields
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_string();
    let next = format!("{version}+rebuilt1");
    std::fs::write(
        &control,
        fields.replace(
            &format!("Version: {version}\n"),
            &format!("Version: {next}\n"),
        ),
    )
    .unwrap();
    let new = dir.path().join("faultbridge-new.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-z1", "-b"])
        .arg(&tree)
        .arg(&new));

    let host_before = host_state();
    let work = dir.path().join("root");
    std::fs::create_dir_all(&work).unwrap();
    let started = Instant::now();
    let facts = lifecycle("package-lifecycle.sh", &work, &old, &new);
    eprintln!(
        "install, upgrade, remove, purge: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let one = |name: &str| one_fact(&facts, name);

    // Installed: the user, the 0700 state directory, the init script's
    // links, and the daemon as the unit runs it, owning its bus name.
    assert_eq!(
        one("install.user"),
        "faultbridge:/var/lib/faultbridge:/usr/sbin/nologin"
    );
    assert_eq!(one("install.statedir"), "700 faultbridge faultbridge");
    assert_eq!(
        one("install.rc2_link"),
        "1",
        "update-rc.d made no runlevel 2 link"
    );
    let pid = one("install.pid");
    assert!(
        pid.parse::<u32>().is_ok(),
        "no daemon after install: {facts:#?}"
    );
    for step in ["install", "upgrade"] {
        let ids = |f: &str| -> Vec<String> {
            one(&format!("{step}.{f}"))
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let (uids, gids) = (ids("uid"), ids("gid"));
        assert!(
            uids.len() == 4 && uids.iter().all(|u| u == &uids[0] && u != "0"),
            "{step}: uids {uids:?}"
        );
        assert!(
            gids.len() == 4 && gids.iter().all(|g| g == &gids[0] && g != "0"),
            "{step}: gids {gids:?}"
        );
        for cap in ["cap_eff", "cap_amb", "cap_bnd"] {
            assert_eq!(
                one(&format!("{step}.{cap}")),
                "0000000000001000",
                "{step}: {cap} is not CAP_NET_ADMIN alone"
            );
        }
        assert_eq!(one(&format!("{step}.no_new_privs")), "1", "{step}");
        assert_eq!(one(&format!("{step}.umask")), "0077", "{step}");
        assert_eq!(
            one(&format!("{step}.exe")),
            "/usr/bin/faultbridge",
            "{step}"
        );
        assert_eq!(
            one(&format!("{step}.bus_owner_pid")),
            one(&format!("{step}.pid")),
            "{step}: org.faultbridge.Bridge1 is not the daemon's"
        );
    }
    assert_eq!(
        one("install.status_as_nobody"),
        "0",
        "`faultbridge status` failed for nobody"
    );
    assert_eq!(
        one("install.init_status"),
        "0",
        "/etc/init.d/faultbridge status"
    );

    // Upgraded: restarted on the new binary (a new pid whose executable is
    // the installed file, not "(deleted)"), one daemon only.
    assert_eq!(one("upgrade.version"), next);
    assert_ne!(
        one("upgrade.pid"),
        pid,
        "the upgrade did not restart the daemon"
    );
    assert_eq!(one("upgrade.daemons"), "1");

    // Removed: stopped, its name gone from the bus, the configuration kept.
    assert_eq!(one("remove.daemons"), "0", "the daemon outlived dpkg -r");
    assert_eq!(one("remove.bus_owner_pid"), "");
    assert_eq!(one("remove.conffile"), "kept");

    // Purged: nothing named after faultbridge is left. What still mentions
    // it: the system user and group, which Debian leaves on purge (files
    // may still belong to their ids, and a later package given the same
    // ids would own them); dpkg's log and its backup of the previous
    // status; man-db's index, whose freed records may keep the bytes once
    // its daily job has purged the removed pages (the script runs it:
    // `apropos` finds nothing then).
    assert_eq!(one("purge.user"), "faultbridge");
    assert!(
        !facts.contains_key("purge.path"),
        "purge left {:#?}",
        facts.get("purge.path")
    );
    assert_eq!(
        one("purge.apropos"),
        "0",
        "man-db still lists faultbridge pages"
    );
    let allowed = [
        "/etc/passwd",
        "/etc/passwd-",
        "/etc/group",
        "/etc/group-",
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/gshadow-",
        "/var/log/dpkg.log",
        "/var/lib/dpkg/status-old",
        "/var/cache/man/index.db",
    ];
    let mentions = facts.get("purge.mentions").cloned().unwrap_or_default();
    let unexpected: Vec<_> = mentions
        .iter()
        .filter(|m| !allowed.contains(&m.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "purge left files that mention faultbridge: {unexpected:?}"
    );
    assert!(
        mentions.iter().any(|m| m == "/etc/passwd"),
        "the check of what is left found nothing at all: {mentions:?}"
    );

    // The .rpm on a throw-away root too (rpm, no systemd): %pre makes the
    // user from sysusers.d, %post the 0700 state directory; the edited
    // configuration survives the upgrade (%config(noreplace)) and is kept
    // as .rpmsave on erase.
    let old_rpm = dir.path().join("faultbridge-old.rpm");
    std::fs::copy(&rpm, &old_rpm).unwrap();
    // The next release of the same files: package.sh --rpm-release 2 rpm.
    // Its packages leave the target directory (where they would be taken
    // for the newest build).
    let rebuilt = stdout(&mut package(&alias, &["--rpm-release", "2", "rpm"]));
    let rebuilt = PathBuf::from(rebuilt.lines().last().unwrap_or_default());
    assert!(
        rebuilt.starts_with(alias.join("rpm"))
            && rebuilt
                .file_name()
                .unwrap()
                .to_string_lossy()
                .contains("-2."),
        "package.sh --rpm-release 2 rpm printed {}",
        rebuilt.display()
    );
    let new_rpm = dir.path().join("faultbridge-new.rpm");
    std::fs::copy(&rebuilt, &new_rpm).unwrap();
    std::fs::remove_file(debuginfo(&rebuilt)).unwrap();
    std::fs::remove_file(&rebuilt).unwrap();
    let work = dir.path().join("rpm-root");
    std::fs::create_dir_all(&work).unwrap();
    let facts = lifecycle("rpm-lifecycle.sh", &work, &old_rpm, &new_rpm);
    let one = |name: &str| one_fact(&facts, name);
    assert_eq!(
        one("install.user"),
        "faultbridge:/var/lib/faultbridge:/usr/sbin/nologin"
    );
    assert_eq!(one("install.statedir"), "700 faultbridge faultbridge");
    assert_eq!(one("install.binary"), "yes");
    assert!(one("upgrade.version").ends_with("-2"), "{facts:#?}");
    assert_eq!(one("upgrade.config"), "# edited by the administrator");
    assert_eq!(one("erase.binary"), "gone");
    assert_eq!(one("erase.unit"), "gone");
    assert_eq!(one("erase.config"), "faultbridge.toml.rpmsave ");
    // The database named faultbridge the owner of its directories; after
    // erase, of what it owned (and was not there before) only the
    // directory of the kept configuration is left.
    for owned in [
        "/etc/faultbridge",
        "/var/lib/faultbridge",
        "/usr/share/doc/faultbridge",
        "/usr/share/cockpit/faultbridge",
        "/usr/lib/ocf/resource.d/faultbridge",
    ] {
        assert!(
            facts["install.owner"].contains(&format!("{owned} faultbridge")),
            "rpm -qf {owned} does not name faultbridge: {facts:#?}"
        );
    }
    assert!(
        facts["erase.owned"]
            .first()
            .is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n > 50)),
        "the erase check saw no list of owned paths: {facts:#?}"
    );
    assert_eq!(
        facts.get("erase.left").cloned().unwrap_or_default(),
        ["/etc/faultbridge"],
        "erase left paths the package owned"
    );

    // The machine itself: its package database and users as before.
    assert!(
        host_state() == host_before,
        "the host's dpkg status or /etc/passwd changed"
    );
}

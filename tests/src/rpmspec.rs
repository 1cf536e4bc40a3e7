//! The RPM's file list as `dist/rpm/faultbridge.spec` gives it, read the
//! way rpmbuild reads it: `rpmspec -P` expands the macros (with the
//! repository as `@SOURCE@` and the build root as `@ROOT@`), then this
//! module reads the `install` lines of the install section and the entries
//! of each `%files` section. A line it cannot read fails the test: the
//! spec's install section is `install` commands only.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One `install` of a file: `source` relative to the repository (the
/// release build is `target/release/…`; a shell pattern stays a pattern),
/// `dest` the installed path, or the directory ending in `/` that
/// `install -t` copies the source's files into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub source: String,
    pub dest: String,
    pub mode: String,
}

/// One `%files` line: its path (a pattern where the spec has one) and its
/// directives (`%dir`, `%config(noreplace)`, `%attr(0700,u,g)`, `%doc`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub directives: Vec<String>,
}

impl Entry {
    pub fn has(&self, directive: &str) -> bool {
        self.directives.iter().any(|d| d == directive)
    }
}

#[derive(Debug, Default)]
pub struct Spec {
    /// The files the install section copies.
    pub installs: Vec<Install>,
    /// The directories it makes with `install -d`, and their modes.
    pub dirs: Vec<(String, String)>,
    /// The `%files` entries of each package, by package name.
    pub files: BTreeMap<String, Vec<Entry>>,
}

impl Spec {
    /// The `%files` entries of one package (it must have some).
    pub fn files_of(&self, package: &str) -> &[Entry] {
        self.files
            .get(package)
            .unwrap_or_else(|| panic!("the spec has no %files for {package}: {self:#?}"))
    }
}

/// Directories on the paths of the RPM's files that are not the package's
/// own: the filesystem's, and those of systemd, udev and D-Bus (which the
/// package requires or runs under), where it only adds files. Every other
/// directory a file of the package is in must be the package's (`%dir`).
pub const SHARED_DIRS: &[&str] = &[
    "/",
    "/etc",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib/debug",
    "/usr/lib/debug/usr",
    "/usr/lib/debug/usr/bin",
    "/usr/lib/systemd",
    "/usr/lib/systemd/system",
    "/usr/lib/sysusers.d",
    "/usr/lib/tmpfiles.d",
    "/usr/lib/udev",
    "/usr/lib/udev/rules.d",
    "/usr/share",
    "/usr/share/dbus-1",
    "/usr/share/dbus-1/system-services",
    "/usr/share/dbus-1/system.d",
    "/usr/share/doc",
    "/usr/share/licenses",
    "/usr/share/man",
    "/usr/share/man/man1",
    "/usr/share/man/man5",
    "/var",
    "/var/lib",
];

const SECTIONS: &[&str] = &[
    "%package",
    "%description",
    "%prep",
    "%build",
    "%install",
    "%check",
    "%clean",
    "%pre",
    "%post",
    "%preun",
    "%postun",
    "%pretrans",
    "%posttrans",
    "%files",
    "%changelog",
];

/// Reads `dist/rpm/faultbridge.spec` of the repository at `repo` through
/// `rpmspec -P` (the Debian package rpm).
pub fn read(repo: &Path) -> Spec {
    let out = Command::new("rpmspec")
        .args(["-P", "--define", "fb_version 0.0.0"])
        .args(["--define", "fb_source @SOURCE@"])
        .args(["--define", "fb_built @SOURCE@/target/release"])
        .args(["--define", "buildroot @ROOT@"])
        .arg(repo.join("dist/rpm/faultbridge.spec"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run rpmspec (the Debian package rpm; ./scripts/test.sh installs it): {e}"
            )
        });
    assert!(
        out.status.success(),
        "rpmspec -P dist/rpm/faultbridge.spec failed: {}",
        crate::text(&out)
    );
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the output of `rpmspec -P` (see [`read`]).
pub fn parse(expanded: &str) -> Spec {
    let mut spec = Spec::default();
    let mut section = "";
    let mut package = String::new();
    for line in expanded.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(&first) = words.first()
            && SECTIONS.contains(&first)
        {
            section = first;
            if first == "%files" {
                package = match words[1..] {
                    [] => "faultbridge".to_string(),
                    ["-n", name] => name.to_string(),
                    [sub] => format!("faultbridge-{sub}"),
                    _ => panic!("a %files line the test cannot read: {line}"),
                };
                spec.files.entry(package.clone()).or_default();
            }
            continue;
        }
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        match section {
            // The paths are quoted for the shell; none of them holds a quote.
            "%install" => {
                let unquoted = line.replace('"', "");
                let words: Vec<&str> = unquoted.split_whitespace().collect();
                install_line(&mut spec, &words, line)
            }
            "%files" => {
                let (directives, path): (Vec<&str>, Vec<&str>) =
                    words.iter().partition(|w| w.starts_with('%'));
                let [path] = path[..] else {
                    panic!("a %files line without one path: {line}")
                };
                spec.files.get_mut(&package).unwrap().push(Entry {
                    path: path.to_string(),
                    directives: directives.iter().map(|d| d.to_string()).collect(),
                });
            }
            _ => {}
        }
    }
    spec
}

fn install_line(spec: &mut Spec, words: &[&str], line: &str) {
    let unreadable = || -> ! { panic!("an install section line the test cannot read: {line}") };
    if words[0] != "install" {
        unreadable();
    }
    let (mut mode, mut target, mut dir) = (None, None, false);
    let mut args = Vec::new();
    let mut rest = words[1..].iter();
    while let Some(&w) = rest.next() {
        match w {
            "-D" | "-p" => {}
            "-d" => dir = true,
            "-m" => mode = rest.next().copied(),
            "-t" => target = rest.next().copied(),
            _ if w.starts_with('-') => unreadable(),
            _ => args.push(w),
        }
    }
    let Some(mode) = mode else { unreadable() };
    let root = |p: &str| -> String {
        p.strip_prefix("@ROOT@")
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| unreadable())
            .to_string()
    };
    let source = |p: &str| -> String {
        p.strip_prefix("@SOURCE@/")
            .unwrap_or_else(|| unreadable())
            .to_string()
    };
    if dir {
        for d in args {
            spec.dirs.push((root(d), mode.to_string()));
        }
        return;
    }
    let pairs: Vec<(String, String)> = match (target, &args[..]) {
        (Some(t), sources) if !sources.is_empty() => {
            let t = root(t);
            let t = if t.ends_with('/') { t } else { format!("{t}/") };
            sources.iter().map(|s| (source(s), t.clone())).collect()
        }
        (None, [s, d]) => vec![(source(s), root(d))],
        _ => unreadable(),
    };
    for (source, dest) in pairs {
        spec.installs.push(Install {
            source,
            dest,
            mode: mode.to_string(),
        });
    }
}

/// Whether `path` matches the `%files` pattern `pattern` (`*` within one
/// path component, as the shell's globbing).
pub fn matches(pattern: &str, path: &str) -> bool {
    let (p, n): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| component(p, n))
}

fn component(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| component(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_within_one_component() {
        assert!(matches(
            "/usr/share/man/man1/faultbridge*.1.gz",
            "/usr/share/man/man1/faultbridge-run.1.gz"
        ));
        assert!(matches(
            "/usr/share/man/man1/faultbridge*.1.gz",
            "/usr/share/man/man1/faultbridge.1.gz"
        ));
        assert!(!matches(
            "/usr/share/man/man1/faultbridge*.1.gz",
            "/usr/share/man/man5/faultbridge.toml.5.gz"
        ));
        assert!(!matches("/usr/share/cockpit/*", "/usr/share/cockpit/a/b"));
        assert!(matches("/etc/faultbridge", "/etc/faultbridge"));
    }

    #[test]
    fn reads_install_lines_and_files_sections() {
        let spec = parse(
            "Name: faultbridge\n%install\n\
             install -D -p -m 0755 @SOURCE@/target/release/rpm/faultbridge @ROOT@/usr/bin/faultbridge\n\
             install -D -p -m 0644 -t @ROOT@/usr/share/doc/faultbridge/ @SOURCE@/docs/*.md\n\
             install -d -m 0700 @ROOT@/var/lib/faultbridge\n\
             # a comment\n\n%pre\nexit 0\n%files\n/usr/bin/faultbridge\n\
             %attr(0700,faultbridge,faultbridge) %dir /var/lib/faultbridge\n\
             %files debuginfo\n/usr/lib/debug/usr/bin/faultbridge.debug\n%changelog\n",
        );
        assert_eq!(
            spec.installs,
            [
                Install {
                    source: "target/release/rpm/faultbridge".into(),
                    dest: "/usr/bin/faultbridge".into(),
                    mode: "0755".into()
                },
                Install {
                    source: "docs/*.md".into(),
                    dest: "/usr/share/doc/faultbridge/".into(),
                    mode: "0644".into()
                },
            ]
        );
        assert_eq!(
            spec.dirs,
            [("/var/lib/faultbridge".to_string(), "0700".to_string())]
        );
        let state = &spec.files_of("faultbridge")[1];
        assert_eq!(state.path, "/var/lib/faultbridge");
        assert!(state.has("%dir") && state.has("%attr(0700,faultbridge,faultbridge)"));
        assert_eq!(spec.files_of("faultbridge-debuginfo").len(), 1);
    }

    #[test]
    #[should_panic(expected = "cannot read")]
    fn refuses_other_commands_in_the_install_section() {
        parse("%install\ncp a @ROOT@/b\n");
    }
}

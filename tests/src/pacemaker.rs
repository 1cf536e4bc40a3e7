//! A real single-node Pacemaker cluster for the tests: `corosync -f` on
//! Debian's default `/etc/corosync/corosync.conf` (one node, `node1`, on
//! 127.0.0.1) and `pacemakerd -f`, both in the calling thread's network
//! namespace (so the cluster's IPC sockets, abstract on Linux, are the
//! test's own), with a CIB made for the test: `stonith-enabled=false` and a
//! `dc-deadtime` of 1 s, so the node is DC within seconds instead of the
//! 20–45 s of an empty CIB. The CIB and scheduler directories of the
//! machine are moved aside while the cluster runs and put back when it
//! stops; `ocf:faultbridge:monitor` is installed from `dist/ocf/monitor`
//! for the same time.
//!
//! Needs root and the Debian packages `pacemaker`, `pacemaker-cli-utils`,
//! `corosync` and `resource-agents` (`scripts/test.sh` installs them).
#![allow(clippy::unwrap_used)]

use crate::{TempDir, binary, text};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The node name of Debian's default `corosync.conf`.
pub const NODE: &str = "node1";
/// Where Pacemaker looks for `ocf:faultbridge:monitor`.
pub const AGENT: &str = "/usr/lib/ocf/resource.d/faultbridge/monitor";
/// The programs of a running cluster (none may be left after [`Cluster::stop`]).
pub const DAEMONS: &[&str] = &[
    "corosync",
    "pacemakerd",
    "pacemaker-based",
    "pacemaker-fenced",
    "pacemaker-execd",
    "pacemaker-attrd",
    "pacemaker-schedulerd",
    "pacemaker-controld",
];

/// The directories of Pacemaker's state that the cluster writes.
const STATE_DIRS: &[&str] = &["/var/lib/pacemaker/cib", "/var/lib/pacemaker/pengine"];

/// The CIB the cluster starts from.
const CIB: &str = r#"<cib validate-with="pacemaker-3.0" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
        <nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="1s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
"#;

/// The programs the cluster needs, each with the Debian package that has it.
const PROGRAMS: &[(&str, &str)] = &[
    ("corosync", "corosync"),
    ("pacemakerd", "pacemaker"),
    ("crm_mon", "pacemaker-cli-utils"),
    ("crm_resource", "pacemaker-cli-utils"),
    ("cibadmin", "pacemaker-cli-utils"),
    ("attrd_updater", "pacemaker-cli-utils"),
    ("ocf-tester", "resource-agents"),
];

fn have(prog: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(prog).exists())
}

/// The processes running one of [`DAEMONS`], as "pid name".
pub fn cluster_processes() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        // comm is cut at 15 bytes: "pacemaker-sched" for the scheduler.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if DAEMONS
            .iter()
            .any(|d| d.starts_with(comm) && comm.len() >= 8)
            && !stat.contains(") Z ")
        {
            found.push(format!("{pid} {comm}"));
        }
    }
    found
}

/// A running single-node cluster; stopped (and the machine's state put
/// back) by [`Cluster::stop`] or on drop.
#[derive(Debug)]
pub struct Cluster {
    corosync: Option<Child>,
    pacemakerd: Option<Child>,
    /// Per state directory, where the machine's own was moved (None: there
    /// was none).
    saved: Vec<(PathBuf, Option<PathBuf>)>,
    /// The agent file that was there before, or None.
    agent_before: Option<Option<Vec<u8>>>,
    agent_dir_made: bool,
    logs: TempDir,
    /// The daemons' `PATH`: the directory of the `faultbridge` binary first.
    pub path: String,
}

impl Cluster {
    /// Starts corosync and Pacemaker in the calling thread's network
    /// namespace and waits until the node is DC; panics saying what is
    /// missing or what failed.
    pub fn start() -> Cluster {
        let missing: Vec<String> = PROGRAMS
            .iter()
            .filter(|(p, _)| !have(p))
            .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
            .collect();
        assert!(
            missing.is_empty(),
            "the Pacemaker tests need a real cluster, and these are missing: {}; scripts/test.sh installs them",
            missing.join(", ")
        );
        assert!(
            nix::unistd::geteuid().is_root(),
            "the Pacemaker tests start corosync and pacemakerd, which needs root"
        );
        let running = cluster_processes();
        assert!(
            running.is_empty(),
            "a cluster is already running on this machine ({}); the Pacemaker tests start their own and will not touch it",
            running.join(", ")
        );
        let lo = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .unwrap();
        assert!(lo.status.success(), "ip link set lo up: {}", text(&lo));
        let bin_dir = binary().parent().unwrap().to_path_buf();
        let mut c = Cluster {
            corosync: None,
            pacemakerd: None,
            saved: Vec::new(),
            agent_before: None,
            agent_dir_made: false,
            logs: TempDir::new("cluster"),
            path: format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display()),
        };
        c.fresh_state();
        c.install_agent();
        c.corosync = Some(c.daemon("corosync"));
        // corosync is quorate at once on one node; pacemakerd needs its
        // IPC to be up.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Command::new("corosync-quorumtool")
            .arg("-s")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Quorate:          Yes"))
        {
            c.assert_alive("corosync");
            assert!(
                Instant::now() < deadline,
                "corosync did not become quorate within 20 s:\n{}",
                c.log("corosync")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c.pacemakerd = Some(c.daemon("pacemakerd"));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let o = Command::new("crm_mon").arg("-1").output().unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            if out.contains(&format!("Current DC: {NODE}")) && out.contains("partition with quorum")
            {
                break;
            }
            c.assert_alive("pacemakerd");
            assert!(
                Instant::now() < deadline,
                "Pacemaker elected no DC within 90 s: {}\n{}",
                text(&o),
                c.log("pacemakerd")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    /// Moves the machine's Pacemaker state aside and lays the test's CIB.
    fn fresh_state(&mut self) {
        let user = nix::unistd::User::from_name("hacluster").ok().flatten();
        let group = nix::unistd::Group::from_name("haclient").ok().flatten();
        let (uid, gid) = match (user, group) {
            (Some(u), Some(g)) => (u.uid.as_raw(), g.gid.as_raw()),
            _ => panic!("no hacluster user or haclient group: is the pacemaker package installed?"),
        };
        for dir in STATE_DIRS {
            let dir = PathBuf::from(dir);
            put_back_after_a_killed_run(&dir);
            let aside = dir.with_file_name(format!(
                "{}.faultbridge-tests-{}",
                dir.file_name().unwrap().to_string_lossy(),
                std::process::id()
            ));
            let moved = if dir.exists() {
                std::fs::rename(&dir, &aside).unwrap();
                Some(aside)
            } else {
                None
            };
            self.saved.push((dir.clone(), moved));
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        }
        let cib = Path::new(STATE_DIRS[0]).join("cib.xml");
        std::fs::write(&cib, CIB).unwrap();
        std::os::unix::fs::chown(&cib, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&cib, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Installs `dist/ocf/monitor` as `ocf:faultbridge:monitor`.
    fn install_agent(&mut self) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/ocf/monitor");
        let dst = Path::new(AGENT);
        let dir = dst.parent().unwrap();
        if !dir.exists() {
            std::fs::create_dir_all(dir).unwrap();
            self.agent_dir_made = true;
        }
        self.agent_before = Some(std::fs::read(dst).ok());
        std::fs::copy(&src, dst).unwrap();
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn daemon(&self, prog: &str) -> Child {
        let out = std::fs::File::create(self.logs.path().join(prog)).unwrap();
        Command::new(prog)
            .arg("-f")
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {prog}: {e}"))
    }

    /// What `prog` (corosync, pacemakerd) wrote on stdout and stderr.
    pub fn log(&self, prog: &str) -> String {
        let s = std::fs::read_to_string(self.logs.path().join(prog)).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn assert_alive(&mut self, prog: &str) {
        let child = match prog {
            "corosync" => self.corosync.as_mut(),
            _ => self.pacemakerd.as_mut(),
        };
        if let Some(c) = child
            && let Ok(Some(st)) = c.try_wait()
        {
            panic!("{prog} exited ({st}):\n{}", self.log(prog));
        }
    }

    /// Runs a cluster tool with the cluster's `PATH`.
    pub fn tool(&self, prog: &str, args: &[&str]) -> Output {
        Command::new(prog)
            .args(args)
            .env("PATH", &self.path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
    }

    /// As [`Cluster::tool`]; panics unless it exits 0.
    pub fn ok(&self, prog: &str, args: &[&str]) -> String {
        let o = self.tool(prog, args);
        assert!(o.status.success(), "{prog} {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Adds `xml` to the CIB section `section` (resources, constraints).
    pub fn create(&self, section: &str, xml: &str) {
        self.ok("cibadmin", &["--create", "-o", section, "--xml-text", xml]);
    }

    /// Adds `fb-MONITOR-clone`: the faultbridge agent for `monitor`,
    /// reaching the daemon on the bus `bus`, monitored every `interval`
    /// (a Pacemaker duration: `10s`, `500ms`).
    pub fn add_agent_clone(&self, monitor: &str, bus: &str, interval: &str) {
        self.create(
            "resources",
            &format!(
                r#"<clone id="fb-{monitor}-clone">
  <primitive id="fb-{monitor}" class="ocf" provider="faultbridge" type="monitor">
    <instance_attributes id="fb-{monitor}-ia">
      <nvpair id="fb-{monitor}-monitor" name="monitor" value="{monitor}"/>
      <nvpair id="fb-{monitor}-bus" name="bus" value="{bus}"/>
    </instance_attributes>
    <operations>
      <op id="fb-{monitor}-mon" name="monitor" interval="{interval}" timeout="20s"/>
    </operations>
  </primitive>
</clone>"#
            ),
        );
    }

    /// Adds `id`, an `ocf:pacemaker:Dummy` keeping its state file at
    /// `state`, with the location rule that keeps it off a node where the
    /// node attribute `attribute` is not defined or not 1.
    pub fn add_dummy_following(&self, id: &str, state: &Path, attribute: &str) {
        self.create(
            "resources",
            &format!(
                r#"<primitive id="{id}" class="ocf" provider="pacemaker" type="Dummy">
  <instance_attributes id="{id}-ia">
    <nvpair id="{id}-state" name="state" value="{}"/>
  </instance_attributes>
  <operations><op id="{id}-mon" name="monitor" interval="10s"/></operations>
</primitive>"#,
                state.display()
            ),
        );
        self.create(
            "constraints",
            &format!(
                r#"<rsc_location id="{id}-loc" rsc="{id}">
  <rule id="{id}-rule" score="-INFINITY" boolean-op="or">
    <expression id="{id}-undefined" attribute="{attribute}" operation="not_defined"/>
    <expression id="{id}-ne" attribute="{attribute}" operation="ne" value="1"/>
  </rule>
</rsc_location>"#
            ),
        );
    }

    /// The node attribute `name` of this node, as attrd has it.
    pub fn attribute(&self, name: &str) -> Option<String> {
        let o = self.tool("attrd_updater", &["-Q", "-n", name, "-N", NODE]);
        let out = String::from_utf8_lossy(&o.stdout);
        let v = out.split("value=\"").nth(1)?;
        Some(v[..v.find('"')?].to_string()).filter(|v| !v.is_empty())
    }

    /// Whether resource `rsc` runs on this node.
    pub fn running(&self, rsc: &str) -> bool {
        let o = self.tool("crm_resource", &["--locate", "--resource", rsc]);
        String::from_utf8_lossy(&o.stdout).contains(&format!("is running on: {NODE}"))
    }

    /// The fail-count of resource `rsc` on this node (all operations).
    pub fn fail_count(&self, rsc: &str) -> u64 {
        let out = self.ok("crm_failcount", &["--query", "-r", rsc, "-N", NODE]);
        out.split("value=")
            .nth(1)
            .map(|v| v.trim())
            .and_then(|v| {
                if v == "INFINITY" {
                    Some(u64::MAX)
                } else {
                    v.parse().ok()
                }
            })
            .unwrap_or_else(|| panic!("crm_failcount printed no value: {out}"))
    }

    /// Waits until `pred` holds, at most `timeout`; how long it took.
    pub fn wait(&self, what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if pred() {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                let status = self.tool("crm_mon", &["-1", "-A", "--failcounts"]);
                panic!(
                    "{what}: not within {timeout:?}\ncrm_mon:\n{}",
                    String::from_utf8_lossy(&status.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops Pacemaker, then corosync (SIGTERM, then SIGKILL to their
    /// process groups after 60 s), and puts the machine's state back.
    pub fn stop(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        for child in [self.pacemakerd.take(), self.corosync.take()]
            .into_iter()
            .flatten()
        {
            stop_child(child);
        }
        for (dir, saved) in self.saved.drain(..) {
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(s) = saved {
                let _ = std::fs::rename(&s, &dir);
            }
        }
        if let Some(before) = self.agent_before.take() {
            match before {
                Some(bytes) => {
                    let _ = std::fs::write(AGENT, bytes);
                }
                None => {
                    let _ = std::fs::remove_file(AGENT);
                    if self.agent_dir_made {
                        let _ = std::fs::remove_dir(Path::new(AGENT).parent().unwrap());
                    }
                }
            }
        }
    }
}

/// A run killed before its teardown left the machine's state aside as
/// `<dir>.faultbridge-tests-<pid>`: put it back (the cluster is not
/// running, [`Cluster::start`] checked).
fn put_back_after_a_killed_run(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let prefix = format!("{}.faultbridge-tests-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.parse::<u64>().ok()) else {
            continue;
        };
        if !crate::alive(pid) {
            let _ = std::fs::remove_dir_all(dir);
            let _ = std::fs::rename(e.path(), dir);
        }
    }
}

fn stop_child(mut child: Child) {
    // pacemakerd stops its daemons in order on SIGTERM; what is left of the
    // process group at the end is killed.
    let pg = Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pg, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // Its children (Pacemaker's daemons) are gone with it, or go
            // now.
            let _ = killpg(pg, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(pg, Signal::SIGKILL);
    let _ = child.wait();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

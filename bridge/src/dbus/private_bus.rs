//! A private `dbus-daemon` on a `unix:path=` socket in a directory of its
//! own (never an abstract socket, never the system bus): what the demo uses
//! on a machine without a system bus, and what the benches and the
//! end-to-end tests run against.
//!
//! ```no_run
//! use faultbridge::dbus::private_bus::{PrivateBus, PrivatePolicy};
//! let bus = PrivateBus::start("example", &PrivatePolicy::Open)?;
//! println!("{}", bus.address()); // unix:path=/tmp/faultbridge-example-…/bus
//! # Ok::<(), faultbridge::dbus::private_bus::PrivateBusError>(())
//! ```

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use thiserror::Error;

/// Which policy the private bus enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrivatePolicy {
    /// Everything allowed to every user, eavesdropping included (a
    /// session-bus-like bus open to all).
    Open,
    /// The system bus's default policy of Debian's `system.conf` (deny
    /// owning and method calls unless a service's file allows them), with
    /// the given policy files included (faultbridge's
    /// `org.faultbridge.Bridge1.conf`).
    SystemLike { include: Vec<PathBuf> },
    /// A bus that accepts and authenticates connections but lets no
    /// message be received, not even the reply to `Hello`: a bus that never
    /// answers (for the tests of what a client and the daemon do then).
    Silent,
}

/// Why a private bus could not start.
#[derive(Debug, Error)]
pub enum PrivateBusError {
    #[error("cannot create {}", .0.display())]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("cannot write {}", .0.display())]
    Config(PathBuf, #[source] std::io::Error),
    #[error("cannot run dbus-daemon (Debian package dbus-daemon)")]
    Spawn(#[source] std::io::Error),
    #[error("dbus-daemon did not start: {0}")]
    NoAddress(String),
    #[error("cannot open the socket {} to every user", .0.display())]
    SocketMode(PathBuf, #[source] std::io::Error),
}

/// A running private `dbus-daemon`; killed, and its directory removed, on
/// drop.
#[derive(Debug)]
pub struct PrivateBus {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    conf: PathBuf,
    address: String,
}

const HEADER: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">"#;

const OPEN_POLICY: &str = r#"
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
"#;

/// Sending and owning allowed, receiving not (the default denies it).
const SILENT_POLICY: &str = r#"
  <policy context="default">
    <allow send_destination="*"/>
    <allow own="*"/>
  </policy>
"#;

/// The default context of Debian's `/usr/share/dbus-1/system.conf`.
const SYSTEM_DEFAULT_POLICY: &str = r#"
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
"#;

/// The configuration file of a bus listening on `socket` with `policy`.
pub fn bus_config(socket: &Path, policy: &PrivatePolicy) -> String {
    let (kind, body) = match policy {
        PrivatePolicy::Open => ("session", OPEN_POLICY.to_string()),
        PrivatePolicy::Silent => ("session", SILENT_POLICY.to_string()),
        PrivatePolicy::SystemLike { include } => {
            let mut body = SYSTEM_DEFAULT_POLICY.to_string();
            for f in include {
                body.push_str(&format!("  <include>{}</include>\n", f.display()));
            }
            ("system", body)
        }
    };
    format!(
        "{HEADER}\n<busconfig>\n  <type>{kind}</type>\n  <listen>unix:path={}</listen>\n  <auth>EXTERNAL</auth>\n{body}</busconfig>\n",
        socket.display()
    )
}

impl PrivateBus {
    /// Starts a bus with `policy` in a new directory named after `tag`
    /// under the temporary directory, and waits until it accepts
    /// connections. The directory and the socket are open to every user,
    /// so unprivileged clients can connect (the policy decides the rest).
    pub fn start(tag: &str, policy: &PrivatePolicy) -> Result<PrivateBus, PrivateBusError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("faultbridge-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| PrivateBusError::Dir(dir.clone(), e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| PrivateBusError::Dir(dir.clone(), e))?;
        let socket = dir.join("bus");
        let conf = dir.join("bus.conf");
        if let Err(e) = std::fs::write(&conf, bus_config(&socket, policy)) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(PrivateBusError::Config(conf, e));
        }
        let mut bus = PrivateBus {
            child: None,
            address: format!("unix:path={}", socket.display()),
            dir,
            socket,
            conf,
        };
        bus.spawn()?;
        Ok(bus)
    }

    /// Runs `dbus-daemon` on the configuration and waits for its address.
    fn spawn(&mut self) -> Result<(), PrivateBusError> {
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", self.conf.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(PrivateBusError::Spawn)?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let mut stderr = child.stderr.take();
        if line.trim().is_empty() {
            let mut err = String::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_string(&mut err);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(PrivateBusError::NoAddress(err.trim().to_string()));
        }
        // Its complaints (such as not raising the fd limit) are nobody's business.
        if let Some(mut s) = stderr {
            std::thread::spawn(move || std::io::copy(&mut s, &mut std::io::sink()));
        }
        self.child = Some(child);
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| PrivateBusError::SocketMode(self.socket.clone(), e))
    }

    /// `unix:path=…`
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The bus's directory (its configuration and socket live there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `dbus-daemon`'s process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the bus now (every connection to it is lost).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts the bus again at the same address (after [`kill`](Self::kill),
    /// or kills it first).
    pub fn restart(&mut self) -> Result<(), PrivateBusError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policies_hold_what_they_say() {
        let s = Path::new("/tmp/x/bus");
        let open = bus_config(s, &PrivatePolicy::Open);
        assert!(open.contains("<listen>unix:path=/tmp/x/bus</listen>"));
        assert!(open.contains("<allow own=\"*\"/>"));
        assert!(open.contains("<type>session</type>"));
        let sys = bus_config(
            s,
            &PrivatePolicy::SystemLike {
                include: vec![PathBuf::from("/p/org.faultbridge.Bridge1.conf")],
            },
        );
        assert!(sys.contains("<deny own=\"*\"/>"));
        assert!(sys.contains("<include>/p/org.faultbridge.Bridge1.conf</include>"));
        assert!(sys.contains("<type>system</type>"));
    }
}

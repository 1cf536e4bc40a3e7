//! The two processes: the Production side starts the new binary as the
//! Upgrade side (`faultbridge upgrade-side`), detached in a session of its
//! own so it outlives the old one, and talks to it over a socket pair that
//! is the new process's standard input and output: one JSON object per
//! line each way, every message carrying [`HANDOVER_VERSION`].
//!
//! Messages to the Upgrade side: `{"op":"status"}` (answered by a
//! [`PeerStatus`]), `{"op":"exit"}` (answered by `{"type":"bye"}`, then
//! it exits). From it, first `{"type":"ready",…}` once it receives.
//! End of file on either end means the other side is gone: the Upgrade
//! side then exits too (before Merge it acts on nothing).

use super::coordinator::{PeerStatus, Sides};
use super::info::HANDOVER_VERSION;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A message from the Production side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ToUpgrade {
    Status { handover_version: u32 },
    Exit { handover_version: u32 },
}

/// A message from the Upgrade side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FromUpgrade {
    Ready {
        handover_version: u32,
        version: String,
        pid: u32,
    },
    Status {
        handover_version: u32,
        status: PeerStatus,
    },
    Bye {
        handover_version: u32,
    },
    /// A request it could not serve.
    Refused {
        handover_version: u32,
        message: String,
    },
}

impl FromUpgrade {
    fn version(&self) -> u32 {
        match self {
            FromUpgrade::Ready {
                handover_version, ..
            }
            | FromUpgrade::Status {
                handover_version, ..
            }
            | FromUpgrade::Bye { handover_version }
            | FromUpgrade::Refused {
                handover_version, ..
            } => *handover_version,
        }
    }
}

/// How long the Upgrade side may take to start receiving.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to answer a message.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Peer {
    child: Child,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    status: Option<PeerStatus>,
}

impl Peer {
    fn send(&mut self, m: &ToUpgrade) -> Result<(), String> {
        let mut line = serde_json::to_string(m).map_err(|e| e.to_string())?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("the Upgrade side (pid {}) is gone: {e}", self.child.id()))
    }

    fn receive(&mut self, timeout: Duration) -> Result<FromUpgrade, String> {
        let pid = self.child.id();
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(format!(
                "the Upgrade side (pid {pid}) closed its end: it has exited"
            )),
            Ok(_) => {
                let m: FromUpgrade = serde_json::from_str(line.trim()).map_err(|e| {
                    format!(
                        "the Upgrade side (pid {pid}) sent something unreadable ({e}): {line:?}"
                    )
                })?;
                if m.version() != HANDOVER_VERSION {
                    return Err(format!(
                        "the Upgrade side (pid {pid}) speaks hand-over version {}, this side {HANDOVER_VERSION}",
                        m.version()
                    ));
                }
                Ok(m)
            }
            Err(e) => Err(format!(
                "the Upgrade side (pid {pid}) did not answer within {timeout:?}: {e}"
            )),
        }
    }

    fn ask_status(&mut self) -> Result<PeerStatus, String> {
        self.send(&ToUpgrade::Status {
            handover_version: HANDOVER_VERSION,
        })?;
        match self.receive(ANSWER_TIMEOUT)? {
            FromUpgrade::Status { status, .. } => {
                self.status = Some(status.clone());
                Ok(status)
            }
            other => Err(format!("the Upgrade side answered {other:?} to status")),
        }
    }

    /// Asks it to exit and waits for it; kills it if it does not.
    fn end(mut self) -> Result<(), String> {
        let asked = self
            .send(&ToUpgrade::Exit {
                handover_version: HANDOVER_VERSION,
            })
            .and_then(|()| self.receive(ANSWER_TIMEOUT));
        let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return match asked {
                        Ok(_) => Ok(()),
                        Err(e) => Err(format!("{e}; it was killed")),
                    };
                }
            }
        }
    }
}

/// The real sides: a second process.
#[derive(Debug)]
pub struct ProcessSides {
    /// The configuration file the new side is started with.
    config: Option<PathBuf>,
    peer: Option<Peer>,
}

impl ProcessSides {
    pub fn new(config: Option<PathBuf>) -> ProcessSides {
        ProcessSides { config, peer: None }
    }
}

impl Sides for ProcessSides {
    fn split(&mut self, binary: &Path) -> Result<(), String> {
        if self.peer.is_some() {
            // A retried split whose process is still there: check it.
            return self.check_peer();
        }
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
        let theirs_out = theirs
            .try_clone()
            .map_err(|e| format!("socket pair: {e}"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("upgrade-side");
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.current_dir("/")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
            .stderr(Stdio::inherit());
        faultbridge_ffi::sys::process::new_session(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let reader = BufReader::new(ours.try_clone().map_err(|e| format!("socket pair: {e}"))?);
        let mut peer = Peer {
            child,
            writer: ours,
            reader,
            status: None,
        };
        match peer.receive(START_TIMEOUT) {
            Ok(FromUpgrade::Ready { .. }) => {}
            Ok(other) => {
                let _ = peer.end();
                return Err(format!(
                    "the Upgrade side started with {other:?} instead of ready"
                ));
            }
            Err(e) => {
                let _ = peer.child.kill();
                let _ = peer.child.wait();
                return Err(e);
            }
        }
        peer.ask_status()?;
        self.peer = Some(peer);
        Ok(())
    }

    fn check_peer(&mut self) -> Result<(), String> {
        let peer = self
            .peer
            .as_mut()
            .ok_or_else(|| "no Upgrade side is running".to_string())?;
        peer.ask_status().map(|_| ())
    }

    fn merge(&mut self) -> Result<(), String> {
        self.check_peer()?;
        Err("handing acting over to the Upgrade side is not supported by this build; abort to return to Idle".into())
    }

    fn commit(&mut self) -> Result<(), String> {
        Err("nothing is merged to commit".into())
    }

    fn abort(&mut self) -> Result<(), String> {
        match self.peer.take() {
            Some(p) => p.end(),
            None => Ok(()),
        }
    }

    fn peer(&mut self) -> Option<PeerStatus> {
        let p = self.peer.as_mut()?;
        match p.ask_status() {
            Ok(s) => Some(s),
            Err(_) => p.status.clone(),
        }
    }
}

impl Drop for ProcessSides {
    /// The Upgrade side goes with a Production side that stops before Merge.
    fn drop(&mut self) {
        if let Some(p) = self.peer.take() {
            let _ = p.end();
        }
    }
}

//! `org.faultbridge.Upgrade1` on `/org/faultbridge/Bridge1`: the live
//! self-upgrade of the daemon (see the daemon's `docs/upgrade.md`).
//!
//! | member | signature | what |
//! |---|---|---|
//! | method `Check` | `s new_binary` | run the readiness check of the new binary (empty: the path the daemon was started from) |
//! | method `Split` | `s new_binary` | PrepareSplit (the final readiness check), then Split: the new binary starts beside the daemon as the Upgrade side |
//! | method `Merge` | | PrepareMerge, then Merge: the Upgrade side acts from an exact sequence boundary per source |
//! | method `Commit` | | the old side ends |
//! | method `Abort` | | from PrepareSplit, Split, PrepareMerge or Merge: the new side ends, the old one acts |
//! | method `Finish` | | after Commit or Abort: back to Idle |
//! | method `Retry` | | runs the failed step again, then the rest of its request |
//! | method `Status` | → `a{sv}` | `state`, `operational`, `side`, `version`, `pid`, … |
//! | signal `StateChanged` | `s state, s operational, s side` | on every change |
//!
//! The requesting methods return as soon as the request is accepted; its
//! steps run in the daemon, and `StateChanged` and `Status` tell how they
//! went. A request that is not legal in the current state is refused with
//! `org.faultbridge.Upgrade1.Error.Refused` and a message naming the
//! state; a caller that is not root (nor the daemon's own user) with
//! `org.faultbridge.Upgrade1.Error.AccessDenied`. `Status` is for anyone.

use super::names::OBJECT_PATH;
use crossbeam_channel::Receiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedVariant};

/// The interface name.
pub const UPGRADE_INTERFACE: &str = "org.faultbridge.Upgrade1";
/// The name the Upgrade side owns while it runs beside the daemon.
pub const UPGRADE_SIDE_NAME: &str = "org.faultbridge.Bridge1.Upgrade";

/// The errors `org.faultbridge.Upgrade1` replies with.
#[derive(Debug, Clone, PartialEq, Eq, zbus::DBusError)]
#[zbus(prefix = "org.faultbridge.Upgrade1.Error")]
#[non_exhaustive]
pub enum UpgradeError {
    /// Not legal in the current state (the message names it); nothing changed.
    Refused(String),
    /// Only root (or the daemon's own user) may drive an upgrade.
    AccessDenied(String),
    /// The caller could not be identified.
    Failed(String),
}

/// A state change, as `StateChanged` carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeChange {
    pub state: String,
    pub operational: String,
    pub side: String,
}

/// What the daemon gives the interface.
pub trait UpgradeBackend: Send + Sync + 'static {
    /// Accepts or refuses `command` (`Check`, `Split`, `Merge`, `Commit`,
    /// `Abort`, `Finish`, `Retry`) from a caller of user id `caller_uid`;
    /// `new_binary` for `Check` and `Split`.
    fn request(&self, command: &str, new_binary: &str, caller_uid: u32)
    -> Result<(), UpgradeError>;
    /// `Status`.
    fn status(&self) -> HashMap<String, OwnedVariant>;
}

struct UpgradeObject {
    backend: Arc<dyn UpgradeBackend>,
}

impl UpgradeObject {
    async fn call(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        command: &'static str,
        new_binary: String,
    ) -> Result<(), UpgradeError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| UpgradeError::Failed("the call has no sender".into()))?;
        let dbus = zbus::fdo::DBusProxy::new(conn)
            .await
            .map_err(|e| UpgradeError::Failed(format!("cannot ask the bus who called: {e}")))?;
        let uid = dbus
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| UpgradeError::Failed(format!("cannot ask the bus who called: {e}")))?;
        let backend = self.backend.clone();
        zruntime::unblock(move || backend.request(command, &new_binary, uid)).await
    }
}

/// Live self-upgrade: split, merge, commit or abort, as the Active Upgrade
/// state model; root only, except Status.
#[zbus::interface(name = "org.faultbridge.Upgrade1")]
impl UpgradeObject {
    /// Readiness check of new_binary (empty: the daemon's own path).
    async fn check(
        &self,
        new_binary: String,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), UpgradeError> {
        self.call(conn, &hdr, "Check", new_binary).await
    }

    /// PrepareSplit then Split: new_binary starts as the Upgrade side.
    async fn split(
        &self,
        new_binary: String,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), UpgradeError> {
        self.call(conn, &hdr, "Split", new_binary).await
    }

    /// PrepareMerge then Merge: the Upgrade side acts from the boundary.
    async fn merge(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), UpgradeError> {
        self.call(conn, &hdr, "Merge", String::new()).await
    }

    /// The old side ends; no abort after this.
    async fn commit(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), UpgradeError> {
        self.call(conn, &hdr, "Commit", String::new()).await
    }

    /// The new side ends; the old side acts.
    async fn abort(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), UpgradeError> {
        self.call(conn, &hdr, "Abort", String::new()).await
    }

    /// After Commit or Abort: back to Idle.
    async fn finish(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), UpgradeError> {
        self.call(conn, &hdr, "Finish", String::new()).await
    }

    /// Runs the failed step again.
    async fn retry(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), UpgradeError> {
        self.call(conn, &hdr, "Retry", String::new()).await
    }

    /// state, operational, side, version, pid, and what else is known.
    #[zbus(out_args("status"))]
    async fn status(&self) -> HashMap<String, OwnedVariant> {
        let backend = self.backend.clone();
        zruntime::unblock(move || backend.status()).await
    }

    /// The upgrade state, the operational state (Ready, Busy, Broken) and
    /// the side this daemon is (Production, Upgrade).
    #[zbus(signal)]
    async fn state_changed(
        emitter: &SignalEmitter<'_>,
        state: &str,
        operational: &str,
        side: &str,
    ) -> zbus::Result<()>;
}

/// The exported interface; dropping it stops the signal thread (once the
/// change channel closes) but leaves the object until the connection goes.
#[derive(Debug)]
pub struct UpgradeExport {
    thread: Option<JoinHandle<()>>,
}

impl UpgradeExport {
    /// Adds `org.faultbridge.Upgrade1` at `/org/faultbridge/Bridge1` on
    /// `conn`, and emits `StateChanged` for each change from `changes`
    /// until that channel closes.
    pub fn start(
        conn: &Connection,
        backend: Arc<dyn UpgradeBackend>,
        changes: Receiver<UpgradeChange>,
    ) -> zbus::Result<UpgradeExport> {
        let conn = conn.clone();
        UpgradeExport::start_following(&conn.clone(), backend, changes, move || Some(conn.clone()))
    }

    /// Like [`UpgradeExport::start`], each `StateChanged` sent on the
    /// connection `current` gives at that moment (the service's after a
    /// reconnection, where [`UpgradeExport::serve`] exports the object again).
    pub fn start_following(
        conn: &Connection,
        backend: Arc<dyn UpgradeBackend>,
        changes: Receiver<UpgradeChange>,
        current: impl Fn() -> Option<Connection> + Send + 'static,
    ) -> zbus::Result<UpgradeExport> {
        UpgradeExport::serve(conn, backend)?;
        UpgradeExport::signals_following(changes, current)
    }

    /// Only the `StateChanged` signals, on the connection `current` gives
    /// (the object is exported by [`UpgradeExport::serve`], say from a
    /// service's connect hook).
    pub fn signals_following(
        changes: Receiver<UpgradeChange>,
        current: impl Fn() -> Option<Connection> + Send + 'static,
    ) -> zbus::Result<UpgradeExport> {
        let thread = std::thread::Builder::new()
            .name("fb-dbus-upgrade".into())
            .spawn(move || {
                for c in changes {
                    let Some(conn) = current() else { continue };
                    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
                        continue;
                    };
                    let _ = zbus::block_on(UpgradeObject::state_changed(
                        &emitter,
                        &c.state,
                        &c.operational,
                        &c.side,
                    ));
                }
            })
            .map_err(|e| {
                zbus::Error::Failure(format!("cannot start the upgrade signal thread: {e}"))
            })?;
        Ok(UpgradeExport {
            thread: Some(thread),
        })
    }

    /// Adds the `org.faultbridge.Upgrade1` object on `conn` (no signals).
    pub fn serve(conn: &Connection, backend: Arc<dyn UpgradeBackend>) -> zbus::Result<()> {
        zbus::block_on(
            conn.object_server()
                .at(OBJECT_PATH, UpgradeObject { backend }),
        )?;
        Ok(())
    }

    /// Waits for the signal thread (after the change channel closed).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The client side: calls the interface on `conn` at `destination`.
pub mod client {
    use super::{OBJECT_PATH, UPGRADE_INTERFACE};
    use std::collections::HashMap;
    use zbus::{Connection, OwnedVariant};

    /// Calls `method` (`Check`, `Split`, … with `new_binary` for the two
    /// that take it).
    pub async fn request(
        conn: &Connection,
        destination: &str,
        method: &str,
        new_binary: Option<&str>,
    ) -> zbus::Result<()> {
        let reply = match new_binary {
            Some(b) => {
                conn.call_method(
                    Some(destination),
                    OBJECT_PATH,
                    Some(UPGRADE_INTERFACE),
                    method,
                    &(b,),
                )
                .await?
            }
            None => {
                conn.call_method(
                    Some(destination),
                    OBJECT_PATH,
                    Some(UPGRADE_INTERFACE),
                    method,
                    &(),
                )
                .await?
            }
        };
        let _ = reply;
        Ok(())
    }

    /// `Status` of the daemon at `destination`.
    pub async fn status(
        conn: &Connection,
        destination: &str,
    ) -> zbus::Result<HashMap<String, OwnedVariant>> {
        let reply = conn
            .call_method(
                Some(destination),
                OBJECT_PATH,
                Some(UPGRADE_INTERFACE),
                "Status",
                &(),
            )
            .await?;
        reply.body().deserialize()
    }
}

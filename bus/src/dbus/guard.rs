//! What the method handlers check themselves, whatever the bus policy
//! says: who may act (`Notify`, `Reset`), and how many calls may be in
//! progress at once.
//!
//! The shipped policy already keeps `Notify` and `Reset` to root and group
//! `faultbridge`, but a bus with another policy (a session bus, a
//! permissive test bus, a policy file that was not installed) would let
//! anyone through; so each of these calls asks the bus who sent it
//! (`GetConnectionUnixUser`) and is refused with
//! `org.faultbridge.Bridge1.Error.AccessDenied` unless the caller is root,
//! the daemon's own user, or a member of group `faultbridge`.
//!
//! Method calls are served concurrently, the blocking ones on a pool of up
//! to 500 threads; a local user calling in a loop must not turn that into
//! 500 threads and their replies. At most [`MAX_CALLS`] calls that work
//! (`Notify`, `Reset`, `History`) run at once, `History` at most
//! [`MAX_HISTORY_CALLS`]; one more is refused with
//! `org.faultbridge.Bridge1.Error.Busy`, at once.

use super::Error;
use super::counters::Counters;
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use zbus::Connection;
use zbus::message::Header;

/// The group whose members may call `Notify` and `Reset`.
pub const ACTOR_GROUP: &str = "faultbridge";

/// Calls that do work (`Notify`, `Reset`, `History`) in progress at most.
pub const MAX_CALLS: usize = 16;
/// `History` calls in progress at most.
pub const MAX_HISTORY_CALLS: usize = 2;

/// A bound on calls in progress.
#[derive(Debug)]
pub(crate) struct Gate {
    busy: AtomicUsize,
    max: usize,
}

/// The service's gates.
#[derive(Debug)]
pub(crate) struct Gates {
    pub(crate) calls: Gate,
    pub(crate) history: Gate,
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            calls: Gate::new(MAX_CALLS),
            history: Gate::new(MAX_HISTORY_CALLS),
        }
    }
}

/// A place taken in a [`Gate`], given back on drop.
#[derive(Debug)]
pub(crate) struct Pass<'a>(&'a Gate);

impl Gate {
    pub(crate) const fn new(max: usize) -> Gate {
        Gate {
            busy: AtomicUsize::new(0),
            max,
        }
    }

    /// A place, or `Error::Busy` when all are taken.
    pub(crate) fn enter(&self, counters: &Counters) -> Result<Pass<'_>, Error> {
        let r = self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match r {
            Ok(_) => Ok(Pass(self)),
            Err(_) => {
                Counters::add(&counters.busy_refusals, 1);
                Err(Error::Busy(format!(
                    "{} calls are in progress already; try again",
                    self.max
                )))
            }
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The uid of the connection that sent the call `hdr` belongs to, as the
/// bus knows it.
async fn caller_uid(conn: &Connection, hdr: &Header<'_>) -> Result<u32, String> {
    let sender = hdr
        .sender()
        .ok_or_else(|| "the call carries no sender".to_string())?;
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetConnectionUnixUser",
            &(sender.as_str(),),
        )
        .await
        .map_err(|e| format!("the bus does not say who {sender} is: {e}"))?;
    reply
        .body()
        .deserialize::<u32>()
        .map_err(|e| format!("the bus does not say who {sender} is: {e}"))
}

/// True when `uid` is root, the daemon's own user, or a member of
/// [`ACTOR_GROUP`] (primary or supplementary group, from the user database).
pub fn may_act(uid: u32) -> bool {
    use nix::unistd::{Group, Uid, User, getgrouplist};
    if uid == 0 || Uid::from_raw(uid) == Uid::effective() {
        return true;
    }
    let Ok(Some(group)) = Group::from_name(ACTOR_GROUP) else {
        return false;
    };
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid == group.gid {
        return true;
    }
    let Ok(name) = CString::new(user.name.as_bytes()) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|gs| gs.contains(&group.gid))
}

/// `Ok` when the caller of `hdr` may call `Notify` or `Reset`; otherwise
/// the `AccessDenied` error to reply with (counted).
pub(crate) async fn check_actor(
    conn: &Connection,
    hdr: &Header<'_>,
    what: &str,
    counters: &Counters,
) -> Result<(), Error> {
    let uid = caller_uid(conn, hdr).await;
    let allowed = match uid {
        Ok(uid) => zruntime::unblock(move || may_act(uid)).await,
        Err(_) => false,
    };
    if allowed {
        return Ok(());
    }
    Counters::add(&counters.denied_requests, 1);
    Counters::add(&counters.rejected_requests, 1);
    Err(Error::AccessDenied(match uid {
        Ok(uid) => format!("{what} is for root and group {ACTOR_GROUP}; uid {uid} is neither"),
        Err(e) => format!("{what} refused: {e}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemons_own_user_may_act_and_an_unknown_uid_may_not() {
        assert!(may_act(0));
        assert!(may_act(nix::unistd::Uid::effective().as_raw()));
        // No user database entry: no group either.
        assert!(!may_act(3_999_999_999));
    }

    #[test]
    fn the_gate_lets_max_in_and_refuses_one_more() {
        let c = Counters::default();
        let g = Gate::new(2);
        let a = g.enter(&c).unwrap();
        let _b = g.enter(&c).unwrap();
        assert!(matches!(g.enter(&c), Err(Error::Busy(_))));
        drop(a);
        assert!(g.enter(&c).is_ok());
        assert_eq!(c.snapshot().busy_refusals, 1);
    }
}

//! Two kinds of error, kept apart: [`Error`] is what the service replies
//! on the bus (names under `org.faultbridge.Bridge1.Error`), and
//! [`ServiceError`] is why the service itself could not start.

use std::io;
use thiserror::Error as ThisError;

/// The errors `org.faultbridge.Bridge1` and `org.faultbridge.Monitor1`
/// reply with. Each carries a readable message; the error name says which
/// rule a request broke. Displayed as `name: message`.
#[derive(Debug, Clone, PartialEq, Eq, zbus::DBusError)]
#[zbus(prefix = "org.faultbridge.Bridge1.Error")]
#[non_exhaustive]
pub enum Error {
    /// `Notify`: the category is none of NIC, FC, HA/SS, HA/AM, HA/RS, SPS.
    UnknownCategory(String),
    /// `Notify`: the category is longer than 32 bytes.
    CategoryTooLong(String),
    /// `Notify`: the keyword is longer than 1023 bytes.
    KeywordTooLong(String),
    /// `Notify`: the keyword holds a NUL byte.
    KeywordHasNul(String),
    /// `Notify`: the severity is none of info, warning, error, fatal.
    UnknownSeverity(String),
    /// `Notify`: the detail does not fit in a record beside the keyword.
    DetailTooLong(String),
    /// `Reset`: no monitor of that name.
    UnknownMonitor(String),
    /// The daemon is stopping and takes no more requests.
    Stopped(String),
    /// `Notify`, `Reset`: the caller is neither root, nor the daemon's
    /// user, nor a member of group `faultbridge` (checked by the daemon
    /// itself, whatever the bus policy let through).
    AccessDenied(String),
    /// Too many calls are in progress; nothing was done, try again.
    Busy(String),
}

impl Error {
    /// True for a request refused because of what it asked (counted as a
    /// rejected request), false for a daemon that could not serve it.
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Error::Stopped(_) | Error::Busy(_))
    }

    /// The readable message.
    pub fn message(&self) -> &str {
        match self {
            Error::UnknownCategory(m)
            | Error::CategoryTooLong(m)
            | Error::KeywordTooLong(m)
            | Error::KeywordHasNul(m)
            | Error::UnknownSeverity(m)
            | Error::DetailTooLong(m)
            | Error::UnknownMonitor(m)
            | Error::Stopped(m)
            | Error::AccessDenied(m)
            | Error::Busy(m) => m,
        }
    }
}

/// Why the D-Bus service could not start.
#[derive(Debug, ThisError)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("cannot connect to the {bus} bus")]
    Connect {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    #[error("cannot export the D-Bus objects")]
    Export(#[source] zbus::Error),
    #[error(
        "the name org.faultbridge.Bridge1 is owned by another connection (is another faultbridge running?)"
    )]
    NameTaken,
    #[error(
        "not allowed to own org.faultbridge.Bridge1 (the bus policy lets root own it: is org.faultbridge.Bridge1.conf installed in /usr/share/dbus-1/system.d/?)"
    )]
    NameDenied(#[source] zbus::Error),
    #[error("cannot request the name org.faultbridge.Bridge1")]
    NameRequest(#[source] zbus::Error),
    #[error("cannot start a D-Bus thread")]
    Thread(#[source] io::Error),
}

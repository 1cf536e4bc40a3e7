//! Faults reported from user space (D-Bus `Notify`, `faultbridge notify`),
//! in the style of `clprexec --notice`: validated like a driver record, given
//! a sequence of the `notify` source, and published like any other fault.

use crate::sources::Dispatch;
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, Source};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::wire::record::{
    CATEGORY_NAME_MAX, Category, KEYWORD_MAX, RECORD_HDR_LEN, RECORD_MAX, Record, RecordSpec,
    Severity, event,
};
use std::sync::atomic::Ordering::Relaxed;
use thiserror::Error;

/// A fault reported from user space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyRequest {
    pub category: String,
    /// Empty: no particular device.
    pub keyword: String,
    /// `info`, `warning`, `error` or `fatal`.
    pub severity: String,
    pub detail: Vec<u8>,
    /// A CLEAR (the condition ended) rather than a fault.
    pub clear: bool,
}

/// Why a reported fault was refused. Nothing is published then.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NotifyError {
    #[error("category is {len} bytes, more than {CATEGORY_NAME_MAX}")]
    CategoryTooLong { len: usize },
    #[error("unknown category {0:?}: expected one of NIC, FC, HA/SS, HA/AM, HA/RS, SPS")]
    UnknownCategory(String),
    #[error("keyword is {len} bytes, more than {KEYWORD_MAX}")]
    KeywordTooLong { len: usize },
    #[error("keyword holds a NUL at byte {at}")]
    KeywordNul { at: usize },
    #[error("unknown severity {0:?}: expected info, warning, error or fatal")]
    UnknownSeverity(String),
    #[error("detail is {len} bytes, more than {max}")]
    DetailTooLong { len: usize, max: usize },
    #[error("the bridge has stopped")]
    Stopped,
    #[error("this daemon is handing over to another (a live upgrade); try again")]
    NotActing,
}

impl NotifyRequest {
    /// Checks the request against the ABI's limits.
    pub fn validate(&self) -> Result<(Category, Severity), NotifyError> {
        if self.category.len() > CATEGORY_NAME_MAX {
            return Err(NotifyError::CategoryTooLong {
                len: self.category.len(),
            });
        }
        let category = Category::from_name(&self.category)
            .ok_or_else(|| NotifyError::UnknownCategory(self.category.clone()))?;
        if self.keyword.len() > KEYWORD_MAX {
            return Err(NotifyError::KeywordTooLong {
                len: self.keyword.len(),
            });
        }
        if let Some(at) = self.keyword.bytes().position(|b| b == 0) {
            return Err(NotifyError::KeywordNul { at });
        }
        let severity = Severity::from_name(&self.severity)
            .ok_or_else(|| NotifyError::UnknownSeverity(self.severity.clone()))?;
        let max = RECORD_MAX - RECORD_HDR_LEN - self.keyword.len();
        if self.detail.len() > max {
            return Err(NotifyError::DetailTooLong {
                len: self.detail.len(),
                max,
            });
        }
        Ok((category, severity))
    }
}

/// The `notify` source: its own sequence, starting at 1.
#[derive(Debug)]
pub struct NotifySource {
    next_seq: u64,
    buf: Vec<u8>,
}

impl Default for NotifySource {
    fn default() -> Self {
        NotifySource {
            next_seq: 1,
            buf: Vec::with_capacity(1024),
        }
    }
}

impl NotifySource {
    /// The sequence the next fault gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// Continues from `next` (taken over from the other side of a live
    /// upgrade); never goes back.
    pub fn set_next_sequence(&mut self, next: u64) {
        self.next_seq = self.next_seq.max(next);
    }

    /// Validates and publishes; returns the sequence given to the fault.
    pub fn publish(
        &mut self,
        req: &NotifyRequest,
        out: &mut Dispatch<'_>,
        c: &SourceCounters,
    ) -> Result<u64, NotifyError> {
        let (category, severity) = req.validate()?;
        let seq = self.next_seq;
        let event_code = match (category, req.clear) {
            (Category::Nic, false) => event::NIC_LINK_DOWN,
            (Category::Nic, true) => event::NIC_LINK_UP,
            (Category::Fc, false) => event::FC_PORT_OFFLINE,
            (Category::Fc, true) => event::FC_PORT_ONLINE,
            (c, _) => event::generic_fatal(c.code()),
        };
        self.buf.clear();
        RecordSpec {
            flags: 0,
            sequence: seq,
            timestamp_ns: monotonic_ns(),
            category: category.code(),
            severity: severity.code(),
            event_code,
            device_index: 0,
            keyword: req.keyword.as_bytes(),
            detail: &req.detail,
            driver_id: 0,
        }
        .encode_into(&mut self.buf);
        // Built by us from validated parts: parse cannot fail, but the
        // published record goes through the same checked view as any other.
        let record = Record::parse(&self.buf).map_err(|_| NotifyError::Stopped)?;
        self.next_seq += 1;
        c.received.fetch_add(1, Relaxed);
        let kind = if req.clear {
            FaultKind::Clear
        } else {
            FaultKind::Fault
        };
        out.fault(Source::Notify, kind, &record);
        c.delivered.fetch_add(1, Relaxed);
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(category: &str, keyword: &str, severity: &str) -> NotifyRequest {
        NotifyRequest {
            category: category.into(),
            keyword: keyword.into(),
            severity: severity.into(),
            detail: Vec::new(),
            clear: false,
        }
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        assert!(matches!(
            req("NIC", "eth0", "error").validate(),
            Ok((Category::Nic, Severity::Error))
        ));
        assert_eq!(
            req("NICE", "", "error").validate(),
            Err(NotifyError::UnknownCategory("NICE".into()))
        );
        assert_eq!(
            req(&"C".repeat(33), "", "error").validate(),
            Err(NotifyError::CategoryTooLong { len: 33 })
        );
        assert_eq!(
            req("NIC", &"k".repeat(1024), "error").validate(),
            Err(NotifyError::KeywordTooLong { len: 1024 })
        );
        assert_eq!(
            req("NIC", "et\0h", "error").validate(),
            Err(NotifyError::KeywordNul { at: 2 })
        );
        assert_eq!(
            req("NIC", "eth0", "bad").validate(),
            Err(NotifyError::UnknownSeverity("bad".into()))
        );
    }
}

//! The driver simulator: emits ABI v1 records on netlink exactly as the
//! expanded driver would (incrementing sequence from 1, `nlmsg_seq` = low 32
//! bits of it, several messages per datagram when flooding), and can emit
//! each malformed case of spec section 2 on purpose.

pub mod device;

use faultbridge_bus::FaultKind;
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::sys::netlink::{NetlinkError, NetlinkSocket, group_mask};
use faultbridge_ffi::wire::nlmsg::push_nlmsg;
use faultbridge_ffi::wire::record::{
    Category, EXPDRV_MSG_CLEAR, EXPDRV_MSG_FAULT, MalformedReason, RECORD_MAGIC, RecordSpec,
    Severity, event,
};
use std::io;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The largest datagram the simulator sends.
pub const MAX_DATAGRAM: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum SimError {
    #[error("cannot open the simulator's socket")]
    Open(#[source] NetlinkError),
    #[error("netlink group {0} cannot be sent to (1..=32)")]
    Group(u32),
    #[error("send failed")]
    Send(#[source] io::Error),
}

/// Parses `CATEGORY[.KEYWORD]` (category names hold no `.`; keywords may).
pub fn parse_key(key: &str) -> Result<(Category, String), String> {
    let (cat, kw) = key.split_once('.').unwrap_or((key, ""));
    let category = Category::from_name(cat).ok_or_else(|| {
        format!("unknown category {cat:?}: expected one of NIC, FC, HA/SS, HA/AM, HA/RS, SPS")
    })?;
    Ok((category, kw.to_string()))
}

/// One fault to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub kind: FaultKind,
    pub category: Category,
    pub severity: Severity,
    pub event_code: u32,
    pub device_index: u32,
    pub keyword: String,
    pub detail: Vec<u8>,
    pub flags: u32,
}

impl FaultSpec {
    /// A fault of `category` on `keyword` with the category's usual code
    /// (link down / port offline / generic fatal), severity error.
    pub fn new(category: Category, keyword: &str) -> FaultSpec {
        let event_code = match category {
            Category::Nic => event::NIC_LINK_DOWN,
            Category::Fc => event::FC_PORT_OFFLINE,
            c => event::generic_fatal(c.code()),
        };
        FaultSpec {
            kind: FaultKind::Fault,
            category,
            severity: Severity::Error,
            event_code,
            device_index: 0,
            keyword: keyword.to_string(),
            detail: Vec::new(),
            flags: 0,
        }
    }

    /// The CLEAR of this fault (link up / port online).
    pub fn clear(mut self) -> FaultSpec {
        self.kind = FaultKind::Clear;
        self.severity = Severity::Info;
        self.event_code = match self.category {
            Category::Nic => event::NIC_LINK_UP,
            Category::Fc => event::FC_PORT_ONLINE,
            _ => self.event_code,
        };
        self
    }
}

/// A simulated driver instance sending on one netlink protocol and group.
#[derive(Debug)]
pub struct Simulator {
    sock: NetlinkSocket,
    groups: u32,
    pid: u32,
    next_seq: u64,
    driver_id: u32,
    dgram: Vec<u8>,
    rec: Vec<u8>,
}

/// What a flood did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodReport {
    pub records: u64,
    pub datagrams: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub elapsed: Duration,
}

impl Simulator {
    /// A simulator sending to multicast `group` of `protocol`.
    pub fn new(protocol: i32, group: u32) -> Result<Simulator, SimError> {
        let groups = group_mask(group);
        if groups == 0 {
            return Err(SimError::Group(group));
        }
        let sock = NetlinkSocket::open(protocol).map_err(SimError::Open)?;
        sock.bind(0, 0).map_err(SimError::Open)?;
        // Blocking sends: a flood waits for socket memory rather than failing.
        sock.set_nonblocking(false)
            .map_err(|e| SimError::Open(NetlinkError::SocketBind(e)))?;
        let pid = sock.port_id().map_err(SimError::Open)?;
        Ok(Simulator {
            sock,
            groups,
            pid,
            next_seq: 1,
            driver_id: 1,
            dgram: Vec::with_capacity(MAX_DATAGRAM),
            rec: Vec::with_capacity(1024),
        })
    }

    /// The sequence the next record gets (starts at 1, as after a driver load).
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// Continues from `seq` (e.g. to play a driver that has been running).
    pub fn set_next_sequence(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    pub fn set_driver_id(&mut self, id: u32) {
        self.driver_id = id;
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        s
    }

    fn encode(&mut self, f: &FaultSpec, seq: u64, ts: u64) {
        self.rec.clear();
        RecordSpec {
            flags: f.flags,
            sequence: seq,
            timestamp_ns: ts,
            category: f.category.code(),
            severity: f.severity.code(),
            event_code: f.event_code,
            device_index: f.device_index,
            keyword: f.keyword.as_bytes(),
            detail: &f.detail,
            driver_id: self.driver_id,
        }
        .encode_into(&mut self.rec);
    }

    fn msg_type(kind: FaultKind) -> u16 {
        match kind {
            FaultKind::Fault => EXPDRV_MSG_FAULT,
            FaultKind::Clear => EXPDRV_MSG_CLEAR,
        }
    }

    fn flush(&mut self) -> Result<(), SimError> {
        if self.dgram.is_empty() {
            return Ok(());
        }
        let r = self.sock.send_to_groups(self.groups, &self.dgram);
        self.dgram.clear();
        r.map(drop).map_err(SimError::Send)
    }

    /// Sends one record in a datagram of its own; returns its sequence.
    pub fn send(&mut self, f: &FaultSpec) -> Result<u64, SimError> {
        self.send_batch(std::slice::from_ref(f))
            .map(|(first, _)| first)
    }

    /// Sends the records in as few datagrams as fit; returns the first and
    /// last sequence used. `timestamp_ns` is the send time.
    pub fn send_batch(&mut self, faults: &[FaultSpec]) -> Result<(u64, u64), SimError> {
        let first = self.next_seq;
        for f in faults {
            let seq = self.take_seq();
            self.encode(f, seq, monotonic_ns());
            if self.dgram.len() + 16 + self.rec.len() + 3 > MAX_DATAGRAM {
                self.flush()?;
            }
            push_nlmsg(
                &mut self.dgram,
                Self::msg_type(f.kind),
                0,
                seq as u32,
                self.pid,
                &self.rec,
            );
        }
        self.flush()?;
        Ok((first, self.next_seq.wrapping_sub(1)))
    }

    /// Sends a message of a raw netlink type with an arbitrary payload (for
    /// the reserved-type and NOOP rules). Consumes no sequence number.
    pub fn send_raw(&mut self, nlmsg_type: u16, payload: &[u8]) -> Result<(), SimError> {
        push_nlmsg(&mut self.dgram, nlmsg_type, 0, 0, self.pid, payload);
        self.flush()
    }

    /// Sends a record broken the way `reason` names. It consumes a sequence
    /// number, as a corrupted driver record would, so a reader also sees a
    /// one-record gap. Returns that sequence.
    pub fn send_malformed(
        &mut self,
        reason: MalformedReason,
        template: &FaultSpec,
    ) -> Result<u64, SimError> {
        let seq = self.take_seq();
        let mut f = template.clone();
        if f.keyword.is_empty() {
            f.keyword = "eth0".into();
        }
        if f.detail.is_empty() {
            f.detail = b"\x01\x02\x03\x04".to_vec();
        }
        match reason {
            MalformedReason::KeywordTooLong => f.keyword = "k".repeat(1024),
            MalformedReason::KeywordNotUtf8 | MalformedReason::KeywordNul => {}
            _ => {}
        }
        self.encode(&f, seq, monotonic_ns());
        let mut r = std::mem::take(&mut self.rec);
        let kw_len = f.keyword.len();
        let set16 =
            |r: &mut Vec<u8>, at: usize, v: u16| r[at..at + 2].copy_from_slice(&v.to_ne_bytes());
        let set32 =
            |r: &mut Vec<u8>, at: usize, v: u32| r[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        match reason {
            MalformedReason::Short => r.truncate(40),
            MalformedReason::BadMagic => set32(&mut r, 0, RECORD_MAGIC.swap_bytes()),
            MalformedReason::BadVersion => set16(&mut r, 4, 2),
            MalformedReason::BadHeaderLen => set16(&mut r, 6, 48),
            MalformedReason::BadTotalLen => {
                let t = r.len() as u32 + 100;
                set32(&mut r, 8, t)
            }
            MalformedReason::KeywordOutOfBounds => set16(&mut r, 44, 8),
            MalformedReason::DetailOutOfBounds => set16(&mut r, 50, 200),
            MalformedReason::Overlap => set16(&mut r, 48, 64),
            MalformedReason::KeywordTooLong => {}
            MalformedReason::KeywordNotUtf8 => r[64] = 0xff,
            MalformedReason::KeywordNul => r[64 + kw_len - 1] = 0,
            MalformedReason::UnknownCategory => set16(&mut r, 32, 99),
            MalformedReason::UnknownSeverity => set16(&mut r, 34, 9),
            MalformedReason::LengthWithoutOffset => set16(&mut r, 48, 0),
            _ => {}
        }
        push_nlmsg(
            &mut self.dgram,
            Self::msg_type(f.kind),
            0,
            seq as u32,
            self.pid,
            &r,
        );
        self.rec = r;
        self.flush()?;
        Ok(seq)
    }

    /// Sends `count` records at `rate` records/s (0: as fast as the socket
    /// takes them), `batch` records per datagram, cycling over `templates`.
    /// Each record's `timestamp_ns` is the moment its datagram was built.
    pub fn flood(
        &mut self,
        templates: &[FaultSpec],
        count: u64,
        rate: u64,
        batch: usize,
    ) -> Result<FloodReport, SimError> {
        let batch = batch.max(1) as u64;
        let start = Instant::now();
        let first_sequence = self.next_seq;
        let mut sent = 0u64;
        let mut datagrams = 0u64;
        let mut t = 0usize;
        while sent < count {
            if let Some(ns) = sent.saturating_mul(1_000_000_000).checked_div(rate) {
                // Pace by schedule, not by sleeps between sends, so the mean
                // rate is exact whatever the per-send cost.
                let due = start + Duration::from_nanos(ns);
                let now = Instant::now();
                if due > now {
                    let wait = due - now;
                    if wait > Duration::from_micros(200) {
                        std::thread::sleep(wait - Duration::from_micros(100));
                    }
                    while Instant::now() < due {
                        std::hint::spin_loop();
                    }
                }
            }
            let n = batch.min(count - sent);
            let ts = monotonic_ns();
            for _ in 0..n {
                let f = &templates[t % templates.len()];
                t += 1;
                let seq = self.take_seq();
                self.encode(f, seq, ts);
                if self.dgram.len() + 16 + self.rec.len() + 3 > MAX_DATAGRAM {
                    self.flush()?;
                    datagrams += 1;
                }
                push_nlmsg(
                    &mut self.dgram,
                    Self::msg_type(f.kind),
                    0,
                    seq as u32,
                    self.pid,
                    &self.rec,
                );
            }
            self.flush()?;
            datagrams += 1;
            sent += n;
        }
        Ok(FloodReport {
            records: sent,
            datagrams,
            first_sequence,
            last_sequence: self.next_seq - 1,
            elapsed: start.elapsed(),
        })
    }
}

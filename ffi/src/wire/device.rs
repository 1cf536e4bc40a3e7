//! The records of one char-device `read()` (spec section 1.2): whole
//! records back to back, each padded to 4 bytes. [`DeviceRecords`] walks
//! them; a malformed record is skipped by its `total_len` when that is
//! usable (at least the header, within what was read), and ends the walk
//! otherwise, since nothing after it can be framed.

use super::record::{ParseError, RECORD_HDR_LEN, Record};

/// Rounds a record length up to the 4-byte alignment of the device stream.
pub const fn record_align(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends `record` and its padding to a device read buffer.
pub fn push_record(out: &mut Vec<u8>, record: &[u8]) {
    out.extend_from_slice(record);
    out.resize(record_align(out.len()), 0);
}

/// One record of a device read: where it starts, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    /// Its offset in the buffer.
    pub offset: usize,
    /// The checked record, or why it is malformed.
    pub record: Result<Record<'a>, ParseError>,
}

/// Iterates the records of one device read.
#[derive(Clone, Debug)]
pub struct DeviceRecords<'a> {
    buf: &'a [u8],
    off: usize,
    broken: bool,
}

impl<'a> DeviceRecords<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        DeviceRecords {
            buf,
            off: 0,
            broken: false,
        }
    }

    /// Bytes at the end too short for a record header. Meaningful once the
    /// iterator returned `None`; 0 when a malformed record ended the walk
    /// (that record is counted as malformed already).
    pub fn trailing_bytes(&self) -> usize {
        if self.broken {
            0
        } else {
            self.buf.len().saturating_sub(self.off)
        }
    }
}

impl<'a> Iterator for DeviceRecords<'a> {
    type Item = Framed<'a>;

    fn next(&mut self) -> Option<Framed<'a>> {
        if self.broken || self.off + RECORD_HDR_LEN > self.buf.len() {
            return None;
        }
        let offset = self.off;
        let rest = &self.buf[offset..];
        let record = Record::parse(rest);
        match &record {
            Ok(r) => self.off += record_align(r.as_bytes().len()),
            Err(_) => {
                let total = rest
                    .get(8..12)
                    .and_then(|t| t.first_chunk::<4>())
                    .map_or(0, |t| u32::from_ne_bytes(*t) as usize);
                if total < RECORD_HDR_LEN || total > rest.len() {
                    self.broken = true;
                    self.off = self.buf.len();
                } else {
                    self.off += record_align(total);
                }
            }
        }
        Some(Framed { offset, record })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::RecordSpec;

    fn record(seq: u64, keyword: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        RecordSpec {
            flags: 0,
            sequence: seq,
            timestamp_ns: 1,
            category: 1,
            severity: 3,
            event_code: 0x0001_0001,
            device_index: 0,
            keyword,
            detail: b"",
            driver_id: 1,
        }
        .encode_into(&mut v);
        v
    }

    #[test]
    fn walks_padded_records_and_skips_a_malformed_one_by_its_total_len() {
        let mut buf = Vec::new();
        push_record(&mut buf, &record(1, b"eth0x"));
        let mut bad = record(2, b"eth1");
        bad[0] ^= 0xff; // magic
        push_record(&mut buf, &bad);
        push_record(&mut buf, &record(3, b"eth2"));
        buf.extend_from_slice(&[0; 10]);
        let mut it = DeviceRecords::new(&buf);
        let seqs: Vec<_> = (&mut it)
            .map(|f| f.record.map(|r| r.sequence()).map_err(|e| e.reason()))
            .collect();
        assert_eq!(seqs.len(), 3);
        assert_eq!(seqs[0], Ok(1));
        assert!(seqs[1].is_err());
        assert_eq!(seqs[2], Ok(3));
        assert_eq!(it.trailing_bytes(), 10);
    }

    #[test]
    fn an_unusable_total_len_ends_the_walk() {
        let mut buf = record(1, b"eth0");
        buf[8..12].copy_from_slice(&4u32.to_ne_bytes());
        push_record(&mut buf, &record(2, b"eth1"));
        let mut it = DeviceRecords::new(&buf);
        assert!(it.next().is_some_and(|f| f.record.is_err()));
        assert!(it.next().is_none());
        assert_eq!(it.trailing_bytes(), 0);
    }
}

//! A walker over the netlink messages of one datagram (`NLMSG_OK` /
//! `NLMSG_NEXT`), with no `unsafe` and no copy: each message is a borrowed
//! slice. A message whose `nlmsg_len` is below 16 or runs past the datagram
//! ends the walk, as it does in the kernel's own macros; the walker reports
//! the bytes it could not account for.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};

/// `struct nlmsghdr` (16 bytes, host byte order).
///
/// | Dec | Type | Field |
/// |---|---|---|
/// | 0 | u32 | `nlmsg_len` (header included) |
/// | 4 | u16 | `nlmsg_type` |
/// | 6 | u16 | `nlmsg_flags` |
/// | 8 | u32 | `nlmsg_seq` |
/// | 12 | u32 | `nlmsg_pid` |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NlMsgHdrRaw {
    pub nlmsg_len: u32,
    pub nlmsg_type: u16,
    pub nlmsg_flags: u16,
    pub nlmsg_seq: u32,
    pub nlmsg_pid: u32,
}

/// `NLMSG_HDRLEN`.
pub const NLMSG_HDRLEN: usize = 16;
const _: () = assert!(size_of::<NlMsgHdrRaw>() == NLMSG_HDRLEN);
const _: () = assert!(offset_of!(NlMsgHdrRaw, nlmsg_type) == 4);
const _: () = assert!(offset_of!(NlMsgHdrRaw, nlmsg_flags) == 6);
const _: () = assert!(offset_of!(NlMsgHdrRaw, nlmsg_seq) == 8);
const _: () = assert!(offset_of!(NlMsgHdrRaw, nlmsg_pid) == 12);

/// `NLMSG_NOOP`.
pub const NLMSG_NOOP: u16 = 0x1;
/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 0x2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 0x3;
/// `NLMSG_OVERRUN`.
pub const NLMSG_OVERRUN: u16 = 0x4;
/// `NLM_F_MULTI`.
pub const NLM_F_MULTI: u16 = 0x2;

/// `NLMSG_ALIGN`: rounds up to 4 bytes.
pub const fn nlmsg_align(len: usize) -> usize {
    (len + 3) & !3
}

/// One netlink message: its header and its payload (`nlmsg_len - 16` bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub header: NlMsgHdrRaw,
    pub payload: &'a [u8],
}

/// Iterates the messages of one datagram.
#[derive(Clone, Debug)]
pub struct NlMsgIter<'a> {
    rest: &'a [u8],
    trailing: usize,
}

impl<'a> NlMsgIter<'a> {
    pub fn new(datagram: &'a [u8]) -> Self {
        NlMsgIter {
            rest: datagram,
            trailing: 0,
        }
    }

    /// Bytes left over that did not form a whole message (a truncated or
    /// malformed tail). Meaningful once the iterator returned `None`.
    pub fn trailing_bytes(&self) -> usize {
        self.trailing + self.rest.len()
    }
}

impl<'a> Iterator for NlMsgIter<'a> {
    type Item = NlMsg<'a>;

    #[inline]
    fn next(&mut self) -> Option<NlMsg<'a>> {
        let head = self.rest.get(..NLMSG_HDRLEN)?;
        let header: NlMsgHdrRaw = bytemuck::pod_read_unaligned(head);
        let len = header.nlmsg_len as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            // NLMSG_OK fails: the rest of the datagram is unusable.
            self.trailing += self.rest.len();
            self.rest = &[];
            return None;
        }
        let payload = &self.rest[NLMSG_HDRLEN..len];
        let next = nlmsg_align(len).min(self.rest.len());
        self.rest = &self.rest[next..];
        Some(NlMsg { header, payload })
    }
}

/// Appends one message (header + payload + alignment padding) to `out`.
pub fn push_nlmsg(
    out: &mut Vec<u8>,
    nlmsg_type: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    payload: &[u8],
) {
    let hdr = NlMsgHdrRaw {
        nlmsg_len: (NLMSG_HDRLEN + payload.len()) as u32,
        nlmsg_type,
        nlmsg_flags: flags,
        nlmsg_seq: seq,
        nlmsg_pid: pid,
    };
    out.extend_from_slice(bytemuck::bytes_of(&hdr));
    out.extend_from_slice(payload);
    out.resize(nlmsg_align(out.len()), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_aligned_messages_and_reports_a_truncated_tail() {
        let mut dg = Vec::new();
        push_nlmsg(&mut dg, 0x10, 0, 1, 7, b"abc");
        push_nlmsg(&mut dg, 0x11, NLM_F_MULTI, 2, 7, b"defgh");
        dg.extend_from_slice(&[0xff; 10]);
        let mut it = NlMsgIter::new(&dg);
        let a = it.next().unwrap();
        assert_eq!((a.header.nlmsg_type, a.payload), (0x10, &b"abc"[..]));
        let b = it.next().unwrap();
        assert_eq!((b.header.nlmsg_seq, b.payload), (2, &b"defgh"[..]));
        assert!(it.next().is_none());
        assert_eq!(it.trailing_bytes(), 10);
    }

    #[test]
    fn a_length_below_the_header_ends_the_walk() {
        let mut dg = Vec::new();
        push_nlmsg(&mut dg, 0x10, 0, 1, 7, b"abcd");
        dg[0] = 8;
        let mut it = NlMsgIter::new(&dg);
        assert!(it.next().is_none());
        assert_eq!(it.trailing_bytes(), dg.len());
    }
}

//! The exit-program information block, format FBEX0100
//! (`docs/exit-program.md`): a fixed 224-byte header in host byte
//! order followed by the keyword bytes, written to the exit program's stdin.
//! [`ExitBlock::encode`] writes it; [`ExitBlock::parse`] reads it back as an
//! exit program written from the spec would, checking every length, offset
//! and reserved field.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};
use std::ops::Range;
use thiserror::Error;

/// The format name passed as argv[2].
pub const FBEX0100: &str = "FBEX0100";
/// Bytes of the fixed part; the keyword follows at this offset.
pub const FBEX_FIXED_LEN: usize = 224;
/// The longest keyword a block carries (the record ABI's `EXPDRV_KEYWORD_MAX`).
pub const FBEX_KEYWORD_MAX: usize = 1023;

/// Action codes used.
pub mod action {
    /// Second call on the new primary after a successful Failover.
    pub const START: u32 = 2;
    /// `recovery_action = "restart"`.
    pub const RESTART: u32 = 3;
    /// `recovery_action = "failover"`.
    pub const FAILOVER: u32 = 9;
    /// After an unsuccessful call with any code other than 15 and 16.
    pub const UNDO: u32 = 15;
    /// `recovery_action = "final"`.
    pub const END_NODE: u32 = 16;
}

/// Flag bit 0: fail over outside the server group.
pub const FBEX_F_OUTSIDE_SERVER_GROUP: u32 = 1;

/// The fixed part of FBEX0100.
///
/// | Dec | Hex | Type | Field |
/// |---|---|---|---|
/// | 0 | 0x00 | u32 | length of the block in bytes |
/// | 4 | 0x04 | u32 | action code |
/// | 8 | 0x08 | u32 | prior action code (Undo only; else 0) |
/// | 12 | 0x0C | u32 | restarts done so far |
/// | 16 | 0x10 | u32 | restart limit |
/// | 20 | 0x14 | u32 | flags: bit 0 failover outside the server group |
/// | 24 | 0x18 | u64 | sequence of the fault record that tripped the monitor |
/// | 32 | 0x20 | u64 | its timestamp_ns (CLOCK_MONOTONIC) |
/// | 40 | 0x28 | u16 | category code |
/// | 42 | 0x2A | u16 | severity |
/// | 44 | 0x2C | u32 | event code |
/// | 48 | 0x30 | u32 | device index |
/// | 52 | 0x34 | u32 | reserved, 0 |
/// | 56 | 0x38 | char[64] | monitor name, NUL-padded |
/// | 120 | 0x78 | char[64] | recovery target, NUL-padded |
/// | 184 | 0xB8 | char[32] | category name, NUL-padded |
/// | 216 | 0xD8 | u16 | keyword offset from the start of the block (0 if none) |
/// | 218 | 0xDA | u16 | keyword length (≤ 1023) |
/// | 220 | 0xDC | u32 | reserved, 0 |
/// | 224 | 0xE0 | u8[] | keyword bytes; the block ends after them |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ExitBlockRaw {
    pub length: u32,
    pub action_code: u32,
    pub prior_action_code: u32,
    pub restarts_done: u32,
    pub restart_limit: u32,
    pub flags: u32,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub category: u16,
    pub severity: u16,
    pub event_code: u32,
    pub device_index: u32,
    pub reserved1: u32,
    pub monitor_name: [u8; 64],
    pub recovery_target: [u8; 64],
    pub category_name: [u8; 32],
    pub keyword_offset: u16,
    pub keyword_len: u16,
    pub reserved2: u32,
}

const _: () = assert!(size_of::<ExitBlockRaw>() == FBEX_FIXED_LEN);
const _: () = assert!(offset_of!(ExitBlockRaw, action_code) == 0x04);
const _: () = assert!(offset_of!(ExitBlockRaw, prior_action_code) == 0x08);
const _: () = assert!(offset_of!(ExitBlockRaw, restarts_done) == 0x0C);
const _: () = assert!(offset_of!(ExitBlockRaw, restart_limit) == 0x10);
const _: () = assert!(offset_of!(ExitBlockRaw, flags) == 0x14);
const _: () = assert!(offset_of!(ExitBlockRaw, sequence) == 0x18);
const _: () = assert!(offset_of!(ExitBlockRaw, timestamp_ns) == 0x20);
const _: () = assert!(offset_of!(ExitBlockRaw, category) == 0x28);
const _: () = assert!(offset_of!(ExitBlockRaw, severity) == 0x2A);
const _: () = assert!(offset_of!(ExitBlockRaw, event_code) == 0x2C);
const _: () = assert!(offset_of!(ExitBlockRaw, device_index) == 0x30);
const _: () = assert!(offset_of!(ExitBlockRaw, reserved1) == 0x34);
const _: () = assert!(offset_of!(ExitBlockRaw, monitor_name) == 0x38);
const _: () = assert!(offset_of!(ExitBlockRaw, recovery_target) == 0x78);
const _: () = assert!(offset_of!(ExitBlockRaw, category_name) == 0xB8);
const _: () = assert!(offset_of!(ExitBlockRaw, keyword_offset) == 0xD8);
const _: () = assert!(offset_of!(ExitBlockRaw, keyword_len) == 0xDA);
const _: () = assert!(offset_of!(ExitBlockRaw, reserved2) == 0xDC);

/// The longest prefix of `s` of at most `max` bytes that ends between two
/// characters, so a cut never leaves half a UTF-8 sequence.
fn cut_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Copies `s` into a NUL-padded field: what comes before a NUL in `s` (a C
/// reader stops there, and the padding after it stays all NULs), cut between
/// two characters to leave at least one NUL.
pub fn nul_padded<const N: usize>(s: &str) -> [u8; N] {
    let s = s.split('\0').next().unwrap_or_default();
    let s = cut_at_char(s, N - 1);
    let mut out = [0u8; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    out
}

/// The fields of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitBlock<'a> {
    pub action_code: u32,
    pub prior_action_code: u32,
    pub restarts_done: u32,
    pub restart_limit: u32,
    pub flags: u32,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub category: u16,
    pub severity: u16,
    pub event_code: u32,
    pub device_index: u32,
    pub monitor_name: &'a str,
    pub recovery_target: &'a str,
    pub category_name: &'a str,
    pub keyword: &'a str,
}

impl ExitBlock<'_> {
    /// The block as the exit program reads it from stdin. A name longer
    /// than its field (63 bytes, 31 for the category) or a keyword longer
    /// than [`FBEX_KEYWORD_MAX`] is cut between two characters; a name
    /// ends at its first NUL.
    pub fn encode(&self) -> Vec<u8> {
        let kw = cut_at_char(self.keyword, FBEX_KEYWORD_MAX).as_bytes();
        let raw = ExitBlockRaw {
            length: (FBEX_FIXED_LEN + kw.len()) as u32,
            action_code: self.action_code,
            prior_action_code: self.prior_action_code,
            restarts_done: self.restarts_done,
            restart_limit: self.restart_limit,
            flags: self.flags,
            sequence: self.sequence,
            timestamp_ns: self.timestamp_ns,
            category: self.category,
            severity: self.severity,
            event_code: self.event_code,
            device_index: self.device_index,
            reserved1: 0,
            monitor_name: nul_padded(self.monitor_name),
            recovery_target: nul_padded(self.recovery_target),
            category_name: nul_padded(self.category_name),
            keyword_offset: if kw.is_empty() {
                0
            } else {
                FBEX_FIXED_LEN as u16
            },
            keyword_len: kw.len() as u16,
            reserved2: 0,
        };
        let mut v = Vec::with_capacity(FBEX_FIXED_LEN + kw.len());
        v.extend_from_slice(bytemuck::bytes_of(&raw));
        v.extend_from_slice(kw);
        v
    }
}

/// Why bytes are not a well-formed FBEX0100 block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FbexError {
    #[error("block is {got} bytes, fewer than the {FBEX_FIXED_LEN}-byte fixed part")]
    Short { got: usize },
    #[error("keyword length is {len}, more than {FBEX_KEYWORD_MAX}")]
    KeywordTooLong { len: u16 },
    #[error(
        "length {length}, keyword offset {offset} and keyword length {len} disagree: \
         the keyword starts at {FBEX_FIXED_LEN} (offset 0 if none) and ends the block"
    )]
    BadLayout { length: u32, offset: u16, len: u16 },
    #[error("length is {length}, but only {available} bytes arrived")]
    Truncated { length: u32, available: usize },
    #[error("reserved field at offset {at:#x} is {got:#x}, not 0")]
    ReservedNotZero { at: usize, got: u32 },
    #[error("{field} is not UTF-8 followed by NUL padding")]
    BadName { field: &'static str },
    #[error("keyword is not UTF-8")]
    KeywordNotUtf8,
}

/// The text of a NUL-padded field: UTF-8 up to the first NUL and only NULs
/// after it, with at least one (a name fills at most all but the last byte).
fn padded_str<'a>(
    fixed: &'a [u8; FBEX_FIXED_LEN],
    at: Range<usize>,
    field: &'static str,
) -> Result<&'a str, FbexError> {
    let bytes = &fixed[at];
    let bad = FbexError::BadName { field };
    let end = bytes.iter().position(|&b| b == 0).ok_or(bad)?;
    if bytes[end..].iter().any(|&b| b != 0) {
        return Err(bad);
    }
    std::str::from_utf8(&bytes[..end]).map_err(|_| bad)
}

/// The byte range of an array field of [`ExitBlockRaw`].
const fn span(offset: usize, len: usize) -> Range<usize> {
    offset..offset + len
}

impl<'a> ExitBlock<'a> {
    /// Reads a block from the start of `buf` (an exit program's stdin), its
    /// strings borrowed from `buf`. The block is `length` bytes; anything
    /// after it is not looked at.
    pub fn parse(buf: &'a [u8]) -> Result<ExitBlock<'a>, FbexError> {
        let Some(fixed) = buf.first_chunk::<FBEX_FIXED_LEN>() else {
            return Err(FbexError::Short { got: buf.len() });
        };
        let raw: ExitBlockRaw = bytemuck::pod_read_unaligned(fixed);
        let (offset, len) = (raw.keyword_offset, raw.keyword_len);
        if usize::from(len) > FBEX_KEYWORD_MAX {
            return Err(FbexError::KeywordTooLong { len });
        }
        let placed = match len {
            0 => offset == 0,
            _ => usize::from(offset) == FBEX_FIXED_LEN,
        };
        if !placed || raw.length as usize != FBEX_FIXED_LEN + usize::from(len) {
            return Err(FbexError::BadLayout {
                length: raw.length,
                offset,
                len,
            });
        }
        let Some(keyword) = buf.get(FBEX_FIXED_LEN..raw.length as usize) else {
            return Err(FbexError::Truncated {
                length: raw.length,
                available: buf.len(),
            });
        };
        for (at, got) in [
            (offset_of!(ExitBlockRaw, reserved1), raw.reserved1),
            (offset_of!(ExitBlockRaw, reserved2), raw.reserved2),
        ] {
            if got != 0 {
                return Err(FbexError::ReservedNotZero { at, got });
            }
        }
        let monitor_name = span(offset_of!(ExitBlockRaw, monitor_name), 64);
        let recovery_target = span(offset_of!(ExitBlockRaw, recovery_target), 64);
        let category_name = span(offset_of!(ExitBlockRaw, category_name), 32);
        Ok(ExitBlock {
            action_code: raw.action_code,
            prior_action_code: raw.prior_action_code,
            restarts_done: raw.restarts_done,
            restart_limit: raw.restart_limit,
            flags: raw.flags,
            sequence: raw.sequence,
            timestamp_ns: raw.timestamp_ns,
            category: raw.category,
            severity: raw.severity,
            event_code: raw.event_code,
            device_index: raw.device_index,
            monitor_name: padded_str(fixed, monitor_name, "monitor name")?,
            recovery_target: padded_str(fixed, recovery_target, "recovery target")?,
            category_name: padded_str(fixed, category_name, "category name")?,
            keyword: std::str::from_utf8(keyword).map_err(|_| FbexError::KeywordNotUtf8)?,
        })
    }
}

#[cfg(test)]
mod tests;

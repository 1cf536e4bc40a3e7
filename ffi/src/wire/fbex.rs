//! The exit-program information block, format FBEX0100
//! (`shared/spec/exit-program-v1.md`): a fixed 224-byte header in host byte
//! order followed by the keyword bytes, written to the exit program's stdin.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};

/// The format name passed as argv[2].
pub const FBEX0100: &str = "FBEX0100";
/// Bytes of the fixed part; the keyword follows at this offset.
pub const FBEX_FIXED_LEN: usize = 224;

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

/// Copies `s` into a NUL-padded field, cut to leave at least one NUL.
pub fn nul_padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
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
    /// The block as the exit program reads it from stdin.
    pub fn encode(&self) -> Vec<u8> {
        let kw = &self.keyword.as_bytes()[..self.keyword.len().min(1023)];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_has_the_fixed_offsets_of_the_spec() {
        let b = ExitBlock {
            action_code: action::FAILOVER,
            prior_action_code: 0,
            restarts_done: 1,
            restart_limit: 2,
            flags: FBEX_F_OUTSIDE_SERVER_GROUP,
            sequence: 0x1122_3344_5566_7788,
            timestamp_ns: 99,
            category: 1,
            severity: 3,
            event_code: 0x0001_0001,
            device_index: 4,
            monitor_name: "mrw1",
            recovery_target: "failover1",
            category_name: "NIC",
            keyword: "eth0",
        }
        .encode();
        assert_eq!(b.len(), 228);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 228);
        assert_eq!(u32::from_ne_bytes(b[4..8].try_into().unwrap()), 9);
        assert_eq!(
            u64::from_ne_bytes(b[24..32].try_into().unwrap()),
            0x1122_3344_5566_7788
        );
        assert_eq!(&b[56..61], b"mrw1\0");
        assert_eq!(&b[120..130], b"failover1\0");
        assert_eq!(&b[184..188], b"NIC\0");
        assert_eq!(u16::from_ne_bytes(b[216..218].try_into().unwrap()), 224);
        assert_eq!(u16::from_ne_bytes(b[218..220].try_into().unwrap()), 4);
        assert_eq!(&b[224..], b"eth0");
    }
}

//! `struct expdrv_info`, filled by `EXPDRV_IOC_GET_INFO` (spec section 4).

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};

/// `struct expdrv_info` (56 bytes).
///
/// | Dec | Type | Field |
/// |---|---|---|
/// | 0 | u32 | `abi_version` |
/// | 4 | u32 | `record_max` |
/// | 8 | u64 | `last_sequence` |
/// | 16 | u32 | `netlink_protocol` |
/// | 20 | u32 | `netlink_group` |
/// | 24 | u8[32] | `driver_name`, NUL-padded |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExpdrvInfoRaw {
    pub abi_version: u32,
    pub record_max: u32,
    pub last_sequence: u64,
    pub netlink_protocol: u32,
    pub netlink_group: u32,
    pub driver_name: [u8; 32],
}

const _: () = assert!(size_of::<ExpdrvInfoRaw>() == 56);
const _: () = assert!(offset_of!(ExpdrvInfoRaw, abi_version) == 0);
const _: () = assert!(offset_of!(ExpdrvInfoRaw, record_max) == 4);
const _: () = assert!(offset_of!(ExpdrvInfoRaw, last_sequence) == 8);
const _: () = assert!(offset_of!(ExpdrvInfoRaw, netlink_protocol) == 16);
const _: () = assert!(offset_of!(ExpdrvInfoRaw, netlink_group) == 20);
const _: () = assert!(offset_of!(ExpdrvInfoRaw, driver_name) == 24);

impl ExpdrvInfoRaw {
    /// The driver name up to its first NUL (lossy UTF-8).
    pub fn driver_name(&self) -> String {
        let end = self.driver_name.iter().position(|&b| b == 0).unwrap_or(32);
        String::from_utf8_lossy(&self.driver_name[..end]).into_owned()
    }
}

#[cfg(test)]
mod tests;

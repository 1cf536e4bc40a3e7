//! Device removal reported by kernel uevents (`NETLINK_KOBJECT_UEVENT`,
//! group 1), like `udevadm monitor --kernel`: the removal of a watched
//! device becomes a fault of the device's category with the device as
//! keyword, event code `0x000N_00FF` (generic fatal of category N),
//! severity error, and `ACTION@DEVPATH` as detail.
//!
//! | subsystem | category | keyword | `device_index` |
//! |---|---|---|---|
//! | `net` | NIC | interface name | `IFINDEX` |
//! | `block` | SPS | `/dev/DEVNAME` | 0 |
//! | `scsi`, `DEVTYPE=scsi_host` | FC | `hostN` | N |
//! | `scsi`, other devices | SPS | sysfs name (`H:C:T:L`) | 0 |
//!
//! The kernel sends a net device's uevents only to the network namespace
//! the device lives in; devices without a namespace (block, scsi) reach
//! every namespace owned by the initial user namespace. Messages that do
//! not come from the kernel (libudev's) are counted and skipped.

use super::auth::Accept;
use super::synth::{Synth, Synthesized, report_lost};
use super::{Dispatch, Listener, Netlinked};
use crate::config::{NamePatterns, UeventConfig};
use crate::stats::SourceCounters;
use faultbridge_bus::{FaultKind, LostReason, Source};
use faultbridge_ffi::sys::netlink::{
    Membership, NETLINK_KOBJECT_UEVENT, NetlinkError, NetlinkSocket,
};
use faultbridge_ffi::wire::record::{Category, Severity, event};
use faultbridge_ffi::wire::uevent::{UEVENT_BUFFER_SIZE, UEVENT_KERNEL_GROUP, Uevent};
use std::sync::atomic::Ordering::Relaxed;

/// What a removal of `u` is reported as: (category, keyword, device index),
/// or `None` when the device is not of a watched kind.
pub fn classify(u: &Uevent<'_>) -> Option<(Category, String, u32)> {
    let name = u.device_name();
    match u.subsystem()? {
        "net" => {
            let index = u.get("IFINDEX").and_then(|s| s.parse().ok()).unwrap_or(0);
            Some((Category::Nic, name.to_string(), index))
        }
        "block" => {
            let dev = name.strip_prefix("/dev/").unwrap_or(name);
            Some((Category::Sps, format!("/dev/{dev}"), 0))
        }
        "scsi" if u.get("DEVTYPE") == Some("scsi_host") => {
            let host = name.strip_prefix("host").and_then(|n| n.parse().ok());
            Some((Category::Fc, name.to_string(), host.unwrap_or(0)))
        }
        "scsi" => Some((Category::Sps, name.to_string(), 0)),
        _ => None,
    }
}

/// The uevent source.
pub(crate) type UeventSource = Netlinked<UeventState>;

#[derive(Debug)]
pub(crate) struct UeventState {
    subsystems: Vec<String>,
    devices: NamePatterns,
    synth: Synth,
    detail: String,
}

/// Kernel uevents are at most UEVENT_BUFFER_SIZE; room for more so an
/// oversize message is seen as truncated, not cut silently.
const RECV_BUF: usize = 4 * UEVENT_BUFFER_SIZE;

impl UeventSource {
    /// Joins the kernel's uevent group; only the kernel is heard (udev's
    /// own re-broadcasts come from user space).
    pub fn open(cfg: &UeventConfig) -> Result<Self, NetlinkError> {
        let m = Membership {
            protocol: NETLINK_KOBJECT_UEVENT,
            group: UEVENT_KERNEL_GROUP,
            recv_buffer: cfg.recv_buffer,
            pass_credentials: false,
        };
        Ok(Netlinked::new(
            Listener::open(m, Accept::Kernel, RECV_BUF)?,
            UeventState::new(cfg),
        ))
    }

    /// Builds the source around a socket handed over by the other side of
    /// a live upgrade, continuing its numbering.
    pub fn from_handed(sock: NetlinkSocket, cfg: &UeventConfig, h: &super::HandedState) -> Self {
        Netlinked::handed(
            Listener::from_socket(sock, Accept::Kernel, RECV_BUF),
            UeventState::new(cfg),
            h,
        )
    }
}

impl UeventState {
    fn new(cfg: &UeventConfig) -> Self {
        UeventState {
            subsystems: cfg.subsystems.clone(),
            devices: cfg.devices.clone(),
            synth: Synth::new(Source::Uevent),
            detail: String::with_capacity(256),
        }
    }

    fn process(&mut self, dg: &[u8], out: &mut Dispatch<'_>, c: &SourceCounters) {
        let u = match Uevent::parse(dg) {
            Ok(u) => u,
            Err(_) => {
                c.reserved_types.fetch_add(1, Relaxed);
                return;
            }
        };
        if u.action != "remove" {
            return;
        }
        let Some(subsystem) = u.subsystem() else {
            return;
        };
        if !self.subsystems.iter().any(|s| s == subsystem) {
            return;
        }
        let Some((category, keyword, index)) = classify(&u) else {
            return;
        };
        let short = keyword.strip_prefix("/dev/").unwrap_or(&keyword);
        if !self.devices.matches(short) {
            return;
        }
        self.detail.clear();
        self.detail.push_str(u.action);
        self.detail.push('@');
        self.detail.push_str(u.devpath);
        self.synth.emit(
            out,
            c,
            &Synthesized {
                kind: FaultKind::Fault,
                category,
                severity: Severity::Error,
                event_code: event::generic_fatal(category.code()),
                device_index: index,
                keyword: &keyword,
                detail: self.detail.as_bytes(),
                flags: 0,
            },
        );
    }
}

impl super::DatagramSource for UeventState {
    fn name(&self) -> Source {
        Source::Uevent
    }

    fn datagram(&mut self, dg: &[u8], out: &mut Dispatch<'_>, c: &SourceCounters) {
        self.process(dg, out, c);
    }

    fn overrun(&mut self, out: &mut Dispatch<'_>, c: &SourceCounters) {
        let next = self.synth.next_sequence();
        report_lost(Source::Uevent, next, next - 1, LostReason::Overrun, out, c);
    }

    fn hand_over_state(&self, h: &mut super::HandedState) -> Option<()> {
        h.next_sequence = self.synth.next_sequence();
        Some(())
    }

    fn adopt(&mut self, h: &super::HandedState) {
        self.synth.continue_from(h.next_sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(msg: &[u8]) -> Option<(Category, String, u32)> {
        classify(&Uevent::parse(msg).unwrap())
    }

    #[test]
    fn removals_map_to_the_category_of_their_subsystem() {
        assert_eq!(
            class(b"remove@/devices/virtual/net/fb0a\0ACTION=remove\0SUBSYSTEM=net\0INTERFACE=fb0a\0IFINDEX=3\0"),
            Some((Category::Nic, "fb0a".into(), 3))
        );
        assert_eq!(
            class(b"remove@/devices/x/block/sdb\0SUBSYSTEM=block\0DEVNAME=sdb\0DEVTYPE=disk\0"),
            Some((Category::Sps, "/dev/sdb".into(), 0))
        );
        assert_eq!(
            class(b"remove@/devices/pci0000:00/host3\0SUBSYSTEM=scsi\0DEVTYPE=scsi_host\0"),
            Some((Category::Fc, "host3".into(), 3))
        );
        assert_eq!(
            class(b"remove@/devices/x/host3/target3:0:0/3:0:0:1\0SUBSYSTEM=scsi\0DEVTYPE=scsi_device\0"),
            Some((Category::Sps, "3:0:0:1".into(), 0))
        );
        assert_eq!(
            class(b"remove@/devices/virtual/net/fb0a/queues/tx-0\0SUBSYSTEM=queues\0"),
            None
        );
    }
}

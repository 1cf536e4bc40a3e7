//! The expanded driver's char-device ioctls (spec section 4), defined with
//! nix's ioctl macros so the numbers are `_IOR`/`_IOW` exactly as in `expdrv.h`.

use crate::wire::info::ExpdrvInfoRaw;
use std::os::fd::{AsFd, AsRawFd};

/// The ioctl type, `'X'`.
pub const EXPDRV_IOC_MAGIC: u8 = b'X';
/// `EXPDRV_IOC_GET_INFO` = `_IOR('X', 0x01, struct expdrv_info)`.
pub const EXPDRV_IOC_GET_INFO: u64 =
    nix::request_code_read!(EXPDRV_IOC_MAGIC, 0x01, std::mem::size_of::<ExpdrvInfoRaw>()) as u64;
/// `EXPDRV_IOC_SNAPSHOT` = `_IOW('X', 0x02, __u64)`.
pub const EXPDRV_IOC_SNAPSHOT: u64 =
    nix::request_code_write!(EXPDRV_IOC_MAGIC, 0x02, std::mem::size_of::<u64>()) as u64;
/// `EXPDRV_IOC_ACK` = `_IOW('X', 0x03, __u64)`.
pub const EXPDRV_IOC_ACK: u64 =
    nix::request_code_write!(EXPDRV_IOC_MAGIC, 0x03, std::mem::size_of::<u64>()) as u64;

mod raw {
    use crate::wire::info::ExpdrvInfoRaw;
    nix::ioctl_read!(get_info, super::EXPDRV_IOC_MAGIC, 0x01, ExpdrvInfoRaw);
    nix::ioctl_write_ptr!(snapshot, super::EXPDRV_IOC_MAGIC, 0x02, u64);
    nix::ioctl_write_ptr!(ack, super::EXPDRV_IOC_MAGIC, 0x03, u64);
}

/// `EXPDRV_IOC_GET_INFO`: the driver's ABI version, record maximum, newest
/// sequence and netlink protocol/group.
pub fn get_info(fd: impl AsFd) -> nix::Result<ExpdrvInfoRaw> {
    let mut info = ExpdrvInfoRaw::default();
    // SAFETY: `fd` is a valid open descriptor for the call's duration (borrowed
    // via `AsFd`), and `info` is a live, writable `expdrv_info` of exactly the
    // size encoded in the request number, so the driver writes within it.
    unsafe { raw::get_info(fd.as_fd().as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// `EXPDRV_IOC_SNAPSHOT`: the next `read()`s replay, flagged SNAPSHOT, every
/// still-active fault whose sequence is greater than `after`.
pub fn snapshot(fd: impl AsFd, after: u64) -> nix::Result<()> {
    // SAFETY: valid descriptor as above; `&after` points to a live u64, the
    // argument size encoded in the request number, which the driver only reads.
    unsafe { raw::snapshot(fd.as_fd().as_raw_fd(), &after) }.map(drop)
}

/// `EXPDRV_IOC_ACK`: every record up to `sequence` is safely handled.
pub fn ack(fd: impl AsFd, sequence: u64) -> nix::Result<()> {
    // SAFETY: valid descriptor as above; `&sequence` points to a live u64 that
    // the driver only reads.
    unsafe { raw::ack(fd.as_fd().as_raw_fd(), &sequence) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_linux_ior_iow_encodings() {
        // _IOC(dir, type, nr, size) = dir<<30 | size<<16 | type<<8 | nr
        assert_eq!(
            EXPDRV_IOC_GET_INFO,
            (2 << 30) | (56 << 16) | (0x58 << 8) | 0x01
        );
        assert_eq!(
            EXPDRV_IOC_SNAPSHOT,
            (1 << 30) | (8 << 16) | (0x58 << 8) | 0x02
        );
        assert_eq!(EXPDRV_IOC_ACK, (1 << 30) | (8 << 16) | (0x58 << 8) | 0x03);
    }
}

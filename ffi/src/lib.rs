//! The expanded device driver's fault message ABI, version 1
//! (`docs/abi.md`, "the spec" in these sources), and the syscalls that carry it.
//!
//! - [`wire`]: byte layouts and checked, borrowing views — no `unsafe`. The
//!   record view is what `expdrv.h` describes; the datagram walker is the
//!   `NLMSG_OK`/`NLMSG_NEXT` loop of every netlink reader.
//! - [`sys`]: the netlink socket (like `ip monitor`'s), the char-device ioctls,
//!   and, with the `testing` feature, the counting allocator that tests use to
//!   prove the hot path allocation-free. All of the project's `unsafe` lives there.
//!
//! The C header the driver is built against is `ffi/include/expdrv.h`
//! ([`EXPDRV_H`]).

pub mod sys;
pub mod wire;

/// The C header of the ABI, as shipped in `ffi/include/expdrv.h`.
pub const EXPDRV_H: &str = include_str!("../include/expdrv.h");

pub use wire::record::{
    Category, MalformedReason, ParseError, RECORD_HDR_LEN, Record, RecordHeaderRaw, RecordSpec,
    Severity,
};

//! Syscalls: the netlink socket, the char-device ioctls, the C heap, and (with the
//! `testing` feature) the counting allocator of the allocation tests. Every `unsafe` block of the project is in this module, each
//! with a `// SAFETY:` comment naming the precondition it relies on.

#[cfg(feature = "testing")]
pub mod alloc;
pub mod caps;
pub mod doorbell;
pub mod heap;
pub mod ifreq;
pub mod ioctl;
pub mod netlink;
pub mod process;

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds: the clock of the
/// records' `timestamp_ns`.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        // CLOCK_MONOTONIC cannot fail on Linux; 0 marks "unknown" if it did.
        Err(_) => 0,
    }
}

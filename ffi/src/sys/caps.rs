//! Capabilities and descriptors a child must not inherit, like
//! `setpriv --inh-caps=-all --ambient-caps=-all` and systemd's
//! close-on-exec audit of the descriptors it passes on.
//!
//! Linux keeps capability sets per thread: [`drop_inheritable`] changes the
//! calling thread (and the threads it creates from then on) only, which is
//! what a thread that starts child programs wants: its children start with
//! no capability while the rest of the daemon keeps what it holds.

use std::io;
use std::os::fd::RawFd;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets as two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct` of `<linux/capability.h>`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` of `<linux/capability.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const _: () = assert!(std::mem::size_of::<CapHeader>() == 8);
const _: () = assert!(std::mem::size_of::<CapData>() == 12);

/// The calling thread's capability sets (bit N = capability N).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// `capget(2)` of the calling thread.
pub fn current() -> io::Result<CapSets> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` is a valid, writable `__user_cap_header_struct`;
    // with version 3 the kernel writes exactly two `__user_cap_data_struct`
    // into `data`, which holds two.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    Ok(CapSets {
        effective: join(|d| d.effective),
        permitted: join(|d| d.permitted),
        inheritable: join(|d| d.inheritable),
    })
}

/// Empties the calling thread's ambient and inheritable capability sets,
/// keeping its effective and permitted sets: a program it starts (without
/// file capabilities, as a non-root user) then holds no capability at all.
/// Lowering these sets needs no privilege.
pub fn drop_inheritable() -> io::Result<()> {
    // SAFETY: prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) takes
    // no pointers; the return value is checked.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    // EINVAL: a kernel before 4.3 has no ambient set, so nothing to clear.
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    let now = current()?;
    if now.inheritable == 0 {
        return Ok(());
    }
    set(CapSets {
        inheritable: 0,
        ..now
    })
}

/// `capset(2)` of the calling thread.
fn set(sets: CapSets) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: sets.effective as u32,
            permitted: sets.permitted as u32,
            inheritable: sets.inheritable as u32,
        },
        CapData {
            effective: (sets.effective >> 32) as u32,
            permitted: (sets.permitted >> 32) as u32,
            inheritable: (sets.inheritable >> 32) as u32,
        },
    ];
    // SAFETY: `header` is a valid `__user_cap_header_struct` (pid 0: the
    // calling thread); with version 3 the kernel reads exactly the two
    // `__user_cap_data_struct` of `data`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec (`close_range(3, ~0,
/// CLOSE_RANGE_CLOEXEC)`, or one `fcntl` per entry of `/proc/self/fd` on a
/// kernel before 5.11), so descriptors the process inherited without the
/// flag never reach a program it starts. The process keeps them open.
pub fn cloexec_above_stderr() -> io::Result<()> {
    // SAFETY: close_range(2) takes no pointers; with CLOSE_RANGE_CLOEXEC it
    // closes nothing, it only sets the flag; the return value is checked.
    let r = unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if r == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if fd <= 2 {
            continue;
        }
        // SAFETY: fcntl(F_GETFD/F_SETFD) takes no pointers; a descriptor that
        // closed meanwhile (the directory's own) gives EBADF, ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_inheritable_keeps_effective_and_permitted() {
        // On a thread of its own: the sets are per thread.
        std::thread::spawn(|| {
            const CAP_NET_ADMIN: u64 = 1 << 12;
            let start = current().unwrap();
            assert_ne!(
                start.permitted & CAP_NET_ADMIN,
                0,
                "this test needs CAP_NET_ADMIN (run it as root)"
            );
            // As under `AmbientCapabilities=CAP_NET_ADMIN`: inheritable and ambient.
            set(CapSets {
                inheritable: start.inheritable | CAP_NET_ADMIN,
                ..start
            })
            .unwrap();
            // SAFETY: prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 12, 0, 0)
            // takes no pointers.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    12 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            assert_eq!(r, 0, "{}", io::Error::last_os_error());
            let ambient = |status: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with("CapAmb:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .map(str::to_string)
            };
            let raised = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert_eq!(ambient(&raised).as_deref(), Some("0000000000001000"));
            let before = current().unwrap();
            assert_ne!(before.inheritable, 0);
            drop_inheritable().unwrap();
            let after = current().unwrap();
            assert_eq!(after.inheritable, 0);
            assert_eq!(after.effective, before.effective);
            assert_eq!(after.permitted, before.permitted);
            let after = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert_eq!(ambient(&after).as_deref(), Some("0000000000000000"));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: `fd` is open (owned by `f`); F_SETFD takes no pointers.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        cloexec_above_stderr().unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}

//! The driver's char device, emulated: a FUSE file (`DIR/expdrv0`) that
//! behaves as spec sections 1.2 and 4 describe, served by the same
//! simulated driver instance that multicasts on netlink, so both
//! transports carry every record with one shared sequence counter.
//!
//! - `read()` returns whole records, each padded to 4 bytes, never a partial
//!   one (`EMSGSIZE` when the buffer is smaller than the next record);
//!   `EAGAIN` when there is none and the file is non-blocking, else the read
//!   waits for the next record.
//! - `poll()` reports `POLLIN` and notifies waiters when records arrive.
//! - `EXPDRV_IOC_GET_INFO`, `EXPDRV_IOC_SNAPSHOT` and `EXPDRV_IOC_ACK` with
//!   the spec's exact numbers (the kernel hands FUSE the `_IOR`/`_IOW` sizes
//!   encoded in them).
//! - Each open file has a bounded queue of live records (`queue`): when a
//!   reader falls behind, the oldest are dropped and the reader sees a gap
//!   in the sequence, as with a real driver's ring.
//! - A fault condition is identified by (category, keyword): a FAULT record
//!   makes it active, a CLEAR ends it; SNAPSHOT replays the active ones.
//!
//! A FUSE file is a regular file, not a character device: a reader must not
//! insist on `S_ISCHR`.
//!
//! The simulator is driven through a control socket (a Unix stream socket,
//! one command per line, one reply line each):
//!
//! ```text
//! fault CATEGORY.KEYWORD [COUNT]     → ok FIRST LAST
//! clear CATEGORY.KEYWORD [COUNT]     → ok FIRST LAST
//! flood COUNT fault:KEY|clear:KEY …  → ok FIRST LAST   (cycling over the list)
//! lose fault:KEY|clear:KEY …         → ok FIRST LAST   (recorded, never delivered)
//! info                               → ok next_sequence=N active=N acked=N dropped=N snapshots=N
//! quit                               → ok
//! ```

use super::parse_key;
use super::{FaultSpec, MAX_DATAGRAM, SimError, Simulator};
use faultbridge_bus::FaultKind;
use faultbridge_ffi::sys::ioctl::{EXPDRV_IOC_ACK, EXPDRV_IOC_GET_INFO, EXPDRV_IOC_SNAPSHOT};
use faultbridge_ffi::sys::monotonic_ns;
use faultbridge_ffi::wire::device::record_align;
use faultbridge_ffi::wire::info::ExpdrvInfoRaw;
use faultbridge_ffi::wire::nlmsg::push_nlmsg;
use faultbridge_ffi::wire::record::{ABI_VERSION, F_SNAPSHOT, RECORD_MAX};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    OpenFlags, PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyPoll, Request,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The inode of the device file.
const DEVICE_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);

/// How the emulated device is set up.
#[derive(Clone, Debug)]
pub struct DeviceOptions {
    /// The file's name inside the mount directory.
    pub name: String,
    /// Netlink protocol and group the driver multicasts on (reported by
    /// `EXPDRV_IOC_GET_INFO`).
    pub protocol: i32,
    pub group: u32,
    /// Live records each open file holds before dropping the oldest; 0:
    /// live records go to netlink only (the device serves snapshots).
    pub queue: usize,
    pub driver_name: String,
    pub driver_id: u32,
    pub first_sequence: u64,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            name: "expdrv0".into(),
            protocol: faultbridge_ffi::sys::netlink::NETLINK_USERSOCK,
            group: 1,
            queue: 4096,
            driver_name: "expdrv-sim".into(),
            driver_id: 1,
            first_sequence: 1,
        }
    }
}

/// One open file of the device.
#[derive(Debug, Default)]
struct Handle {
    snapshot: VecDeque<Vec<u8>>,
    queue: VecDeque<Vec<u8>>,
    dropped: u64,
    pollers: Vec<PollNotifier>,
    waiting: Vec<(ReplyData, u32)>,
}

impl Handle {
    fn has_data(&self) -> bool {
        !self.snapshot.is_empty() || !self.queue.is_empty()
    }

    /// Whole padded records that fit in `size`; `Err` when the next one
    /// does not fit at all.
    fn take(&mut self, size: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        loop {
            let next = match self.snapshot.front() {
                Some(r) => Some((true, r.len())),
                None => self.queue.front().map(|r| (false, r.len())),
            };
            let Some((snap, len)) = next else { break };
            let padded = record_align(len);
            if out.len() + padded > size {
                if out.is_empty() {
                    return Err(Errno::EMSGSIZE);
                }
                break;
            }
            let rec = if snap {
                self.snapshot.pop_front()
            } else {
                self.queue.pop_front()
            };
            if let Some(rec) = rec {
                out.extend_from_slice(&rec);
                out.resize(out.len() + padded - len, 0);
            }
        }
        Ok(out)
    }

    /// Completes parked reads and wakes pollers.
    fn wake(&mut self) {
        while self.has_data() {
            let Some((reply, size)) = self.waiting.pop() else {
                break;
            };
            match self.take(size as usize) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
        }
        for p in self.pollers.drain(..) {
            let _ = p.notify();
        }
    }
}

/// The driver's state, shared by the FUSE thread and the control thread.
#[derive(Debug)]
struct Driver {
    sim: Simulator,
    opts: DeviceOptions,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Active fault conditions: (category, keyword) → their FAULT record.
    active: BTreeMap<(u16, String), Vec<u8>>,
    acked: u64,
    /// `EXPDRV_IOC_SNAPSHOT` requests served.
    snapshots: u64,
}

impl Driver {
    /// Sends `faults` on netlink (as few datagrams as fit) and queues each
    /// record on every open file; returns the first and last sequence.
    fn emit(&mut self, faults: &[FaultSpec]) -> Result<(u64, u64), SimError> {
        let first = self.sim.next_seq;
        for f in faults {
            let seq = self.sim.take_seq();
            self.sim.encode(f, seq, monotonic_ns());
            let rec = self.sim.rec.clone();
            let key = (f.category.code(), f.keyword.clone());
            match f.kind {
                FaultKind::Fault => {
                    self.active.insert(key, rec.clone());
                }
                FaultKind::Clear => {
                    self.active.remove(&key);
                }
            }
            if self.opts.queue > 0 {
                for h in self.handles.values_mut() {
                    if h.queue.len() >= self.opts.queue {
                        h.queue.pop_front();
                        h.dropped += 1;
                    }
                    h.queue.push_back(rec.clone());
                }
            }
            if self.sim.dgram.len() + 16 + rec.len() + 3 > MAX_DATAGRAM {
                self.sim.flush()?;
            }
            let pid = self.sim.pid;
            push_nlmsg(
                &mut self.sim.dgram,
                Simulator::msg_type(f.kind),
                0,
                seq as u32,
                pid,
                &rec,
            );
        }
        self.sim.flush()?;
        for h in self.handles.values_mut() {
            h.wake();
        }
        Ok((first, self.sim.next_seq - 1))
    }

    /// Records `faults` (sequence, active set) but delivers them on neither
    /// transport: what a driver whose ring overflowed does.
    fn lose(&mut self, faults: &[FaultSpec]) -> (u64, u64) {
        let first = self.sim.next_seq;
        for f in faults {
            let seq = self.sim.take_seq();
            self.sim.encode(f, seq, monotonic_ns());
            let key = (f.category.code(), f.keyword.clone());
            match f.kind {
                FaultKind::Fault => {
                    self.active.insert(key, self.sim.rec.clone());
                }
                FaultKind::Clear => {
                    self.active.remove(&key);
                }
            }
        }
        (first, self.sim.next_seq - 1)
    }

    fn info(&self) -> ExpdrvInfoRaw {
        let mut name = [0u8; 32];
        for (d, s) in name.iter_mut().zip(self.opts.driver_name.bytes().take(31)) {
            *d = s;
        }
        ExpdrvInfoRaw {
            abi_version: u32::from(ABI_VERSION),
            record_max: RECORD_MAX as u32,
            last_sequence: self.sim.next_seq - 1,
            netlink_protocol: self.opts.protocol as u32,
            netlink_group: self.opts.group,
            driver_name: name,
        }
    }

    /// `EXPDRV_IOC_SNAPSHOT(after)` for open file `fh`.
    fn snapshot(&mut self, fh: u64, after: u64) {
        self.snapshots += 1;
        let mut recs: Vec<Vec<u8>> = self
            .active
            .values()
            .filter(|r| record_sequence(r) > after)
            .cloned()
            .collect();
        recs.sort_by_key(|r| record_sequence(r));
        for r in &mut recs {
            let flags = u32::from_ne_bytes([r[12], r[13], r[14], r[15]]) | F_SNAPSHOT;
            r[12..16].copy_from_slice(&flags.to_ne_bytes());
        }
        if let Some(h) = self.handles.get_mut(&fh) {
            h.snapshot = recs.into();
            h.wake();
        }
    }
}

fn record_sequence(r: &[u8]) -> u64 {
    r.get(16..24)
        .and_then(|b| b.first_chunk::<8>())
        .map_or(0, |b| u64::from_ne_bytes(*b))
}

/// The FUSE file system: a root directory holding the device file.
#[derive(Debug)]
struct DeviceFs {
    driver: Arc<Mutex<Driver>>,
    name: String,
}

impl DeviceFs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Driver> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn attr(ino: INodeNo, kind: FileType, perm: u16) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for DeviceFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == OsStr::new(&self.name) {
            reply.entry(
                &TTL,
                &attr(DEVICE_INO, FileType::RegularFile, 0o600),
                Generation(0),
            );
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            INodeNo::ROOT => reply.attr(&TTL, &attr(ino, FileType::Directory, 0o755)),
            DEVICE_INO => reply.attr(&TTL, &attr(ino, FileType::RegularFile, 0o600)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DEVICE_INO, FileType::RegularFile, self.name.as_str()),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != DEVICE_INO {
            reply.error(Errno::EISDIR);
            return;
        }
        let mut d = self.lock();
        let fh = d.next_fh;
        d.next_fh += 1;
        d.handles.insert(fh, Handle::default());
        // Direct I/O: each read(2) reaches `read` below with its own size,
        // and its result is what read(2) returns.
        reply.opened(
            FileHandle(fh),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE,
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let mut d = self.lock();
        let Some(h) = d.handles.get_mut(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        if !h.has_data() {
            if flags.0 & libc_nonblock() != 0 {
                reply.error(Errno::EAGAIN);
            } else {
                h.waiting.push((reply, size));
            }
            return;
        }
        match h.take(size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(h) = self.lock().handles.remove(&fh.0) {
            for (r, _) in h.waiting {
                r.error(Errno::EBADF);
            }
        }
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        let arg = || in_data.first_chunk::<8>().map(|b| u64::from_ne_bytes(*b));
        let mut d = self.lock();
        match u64::from(cmd) {
            EXPDRV_IOC_GET_INFO => {
                let info = d.info();
                reply.ioctl(0, bytemuck::bytes_of(&info));
            }
            EXPDRV_IOC_SNAPSHOT => match arg() {
                Some(after) => {
                    d.snapshot(fh.0, after);
                    reply.ioctl(0, &[]);
                }
                None => reply.error(Errno::EINVAL),
            },
            EXPDRV_IOC_ACK => match arg() {
                Some(seq) => {
                    d.acked = d.acked.max(seq);
                    reply.ioctl(0, &[]);
                }
                None => reply.error(Errno::EINVAL),
            },
            _ => reply.error(Errno::ENOTTY),
        }
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        _events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let mut d = self.lock();
        let Some(h) = d.handles.get_mut(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        if h.has_data() {
            reply.poll(PollEvents::POLLIN | PollEvents::POLLRDNORM);
            return;
        }
        if flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY) {
            h.pollers.push(ph);
        }
        reply.poll(PollEvents::empty());
    }
}

fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

/// A running emulated device: the FUSE mount and its driver.
#[derive(Debug)]
pub struct EmulatedDevice {
    driver: Arc<Mutex<Driver>>,
    session: Mutex<Option<fuser::BackgroundSession>>,
    path: PathBuf,
}

impl EmulatedDevice {
    /// Mounts the device file at `mount/NAME` and starts serving it.
    pub fn mount(mount: &Path, opts: DeviceOptions) -> std::io::Result<EmulatedDevice> {
        let mut sim = Simulator::new(opts.protocol, opts.group)
            .map_err(|e| std::io::Error::other(crate::error::error_chain(&e)))?;
        sim.set_next_sequence(opts.first_sequence);
        sim.set_driver_id(opts.driver_id);
        let name = opts.name.clone();
        let driver = Arc::new(Mutex::new(Driver {
            sim,
            opts,
            handles: HashMap::new(),
            next_fh: 1,
            active: BTreeMap::new(),
            acked: 0,
            snapshots: 0,
        }));
        let fs = DeviceFs {
            driver: driver.clone(),
            name: name.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("expdrv-sim".into()),
            fuser::MountOption::NoExec,
            fuser::MountOption::NoSuid,
        ];
        let session = fuser::Session::new(fs, mount, &config)?.spawn()?;
        Ok(EmulatedDevice {
            driver,
            session: Mutex::new(Some(session)),
            path: mount.join(name),
        })
    }

    /// The device file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Driver> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Emits records on both transports; returns their first and last sequence.
    pub fn emit(&self, faults: &[FaultSpec]) -> Result<(u64, u64), SimError> {
        self.lock().emit(faults)
    }

    /// Runs one control command and returns its reply line.
    pub fn command(&self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let count = |w: Option<&str>| -> Result<u64, String> {
            w.map_or(Ok(1), |n| {
                n.parse().map_err(|_| format!("{n:?} is not a count"))
            })
        };
        let spec = |what: &str, key: &str| -> Result<FaultSpec, String> {
            let (category, keyword) = parse_key(key)?;
            let f = FaultSpec::new(category, &keyword);
            match what {
                "fault" => Ok(f),
                "clear" => Ok(f.clear()),
                other => Err(format!("{other:?}: expected fault or clear")),
            }
        };
        let reply = |r: Result<(u64, u64), SimError>| {
            r.map(|(a, b)| format!("ok {a} {b}"))
                .map_err(|e| crate::error::error_chain(&e))
        };
        match cmd {
            "fault" | "clear" => {
                let key = words.next().ok_or("missing CATEGORY.KEYWORD")?;
                let f = spec(cmd, key)?;
                let n = count(words.next())?;
                reply(self.emit(&vec![f; n as usize]))
            }
            "lose" => {
                let specs = words
                    .map(|w| {
                        let (what, key) = w
                            .split_once(':')
                            .ok_or(format!("{w:?}: expected fault:KEY or clear:KEY"))?;
                        spec(what, key)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let (a, b) = self.lock().lose(&specs);
                Ok(format!("ok {a} {b}"))
            }
            "flood" => {
                let n = count(words.next())?;
                let templates = words
                    .map(|w| {
                        let (what, key) = w
                            .split_once(':')
                            .ok_or(format!("{w:?}: expected fault:KEY or clear:KEY"))?;
                        spec(what, key)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if templates.is_empty() {
                    return Err("flood needs at least one fault:KEY or clear:KEY".into());
                }
                let mut first = None;
                let mut last = 0;
                let mut chunk = Vec::with_capacity(32);
                for i in 0..n as usize {
                    chunk.push(templates[i % templates.len()].clone());
                    if chunk.len() == 32 || i + 1 == n as usize {
                        let (a, b) = self
                            .emit(&chunk)
                            .map_err(|e| crate::error::error_chain(&e))?;
                        first.get_or_insert(a);
                        last = b;
                        chunk.clear();
                    }
                }
                Ok(format!("ok {} {last}", first.unwrap_or(0)))
            }
            "info" => {
                let d = self.lock();
                Ok(format!(
                    "ok next_sequence={} active={} acked={} dropped={} snapshots={}",
                    d.sim.next_seq,
                    d.active.len(),
                    d.acked,
                    d.handles.values().map(|h| h.dropped).sum::<u64>(),
                    d.snapshots
                ))
            }
            "quit" => Ok("ok".into()),
            "" => Err("empty command".into()),
            other => Err(format!("unknown command {other:?}")),
        }
    }

    /// Serves a bound control socket until `quit` (returns then).
    pub fn serve_control(&self, listener: UnixListener) -> std::io::Result<()> {
        for conn in listener.incoming() {
            if self.serve_connection(conn?) {
                break;
            }
        }
        Ok(())
    }

    /// One client, line by line; true after `quit`.
    fn serve_connection(&self, conn: UnixStream) -> bool {
        let Ok(mut out) = conn.try_clone() else {
            return false;
        };
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            let reply = match self.command(&line) {
                Ok(s) => s,
                Err(e) => format!("err {e}"),
            };
            if writeln!(out, "{reply}").is_err() {
                break;
            }
            if line.trim() == "quit" {
                return true;
            }
        }
        false
    }

    /// Unmounts the device (once; later calls do nothing).
    pub fn unmount(&self) {
        let s = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(s) = s else { return };
        if s.umount_and_join().is_err() {
            // Busy: a reader still has the file open. Detach it now; the
            // kernel finishes the unmount when the last reader closes.
            let detached = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.path.parent().unwrap_or(&self.path))
                .status();
            if !detached.is_ok_and(|s| s.success()) {
                eprintln!(
                    "faultbridge sim device: cannot unmount {}",
                    self.path.display()
                );
            }
        }
    }
}

impl Drop for EmulatedDevice {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// A client of a running device simulator's control socket.
#[derive(Debug)]
pub struct DeviceControl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl DeviceControl {
    pub fn connect(path: &Path) -> std::io::Result<DeviceControl> {
        let writer = UnixStream::connect(path)?;
        let reader = BufReader::new(writer.try_clone()?);
        Ok(DeviceControl { reader, writer })
    }

    /// Sends one command; returns the reply after `ok`, or the error text.
    pub fn send(&mut self, command: &str) -> Result<String, String> {
        writeln!(self.writer, "{command}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let line = line.trim_end();
        match line.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => Err(line.strip_prefix("err ").unwrap_or(line).to_string()),
        }
    }
}

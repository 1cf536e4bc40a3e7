//! `[sources.*]`: the expanded driver and the kernel's own fault reports.

use super::duration::RESYNC_INTERVAL_BOUND;
use super::error::{ConfigError, Ctx};
use super::names::named_enum;
use super::raw::{RawExpdrv, RawFc, RawRtnetlink, RawUevent};
use faultbridge_ffi::wire::record::KEYWORD_MAX;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The bounds of every `recv_buffer` key, in bytes.
const RECV_BUFFER_MIN: i64 = 4096;
const RECV_BUFFER_MAX: i64 = 1 << 30;

named_enum! {
    /// `[sources.expdrv] accept`: who may send records to the expanded
    /// driver's netlink source.
    #[derive(Default)]
    pub enum Accept {
        /// The kernel only (sender port id 0): the default.
        #[default]
        Kernel = "kernel",
        /// The kernel and user-space senders whose credentials say uid 0
        /// (the simulator, tests).
        Root = "root",
        /// Anyone (a warning at start-up; for demos).
        Any = "any",
    }
}

/// `[sources.expdrv]`: the expanded driver (ABI v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpdrvConfig {
    pub enabled: bool,
    /// The daemon may run without it (`optional = true`): when it cannot
    /// start, the daemon runs degraded and says so; otherwise it does not start.
    pub optional: bool,
    pub netlink_protocol: i32,
    pub netlink_group: u32,
    pub device: Option<PathBuf>,
    /// Socket receive buffer in bytes (`SO_RCVBUFFORCE` when permitted).
    pub recv_buffer: usize,
    /// The shortest time between two `EXPDRV_IOC_SNAPSHOT` resyncs of the
    /// char device (`resync_interval`): losses within it share one resync.
    pub resync_interval: Duration,
    /// Who may send records over netlink.
    pub accept: Accept,
}

impl Default for ExpdrvConfig {
    fn default() -> Self {
        ExpdrvConfig {
            enabled: true,
            optional: false,
            netlink_protocol: faultbridge_ffi::sys::netlink::NETLINK_USERSOCK,
            netlink_group: 1,
            device: None,
            recv_buffer: 8 << 20,
            resync_interval: Duration::from_secs(1),
            accept: Accept::Kernel,
        }
    }
}

/// Interface or device name patterns (`*` any run, `?` one character): a
/// name is watched when it matches an `include` pattern (or there are
/// none) and no `exclude` pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamePatterns {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl NamePatterns {
    /// Whether `name` is watched.
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, name)))
            && !self.exclude.iter().any(|p| glob_match(p, name))
    }
}

/// Shell-style matching of `name` against `pattern` (`*`, `?`, no classes).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `[sources.rtnetlink]`: NIC carrier faults reported by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtnetlinkConfig {
    pub enabled: bool,
    /// The daemon may run without it (`optional = true`): when it cannot
    /// start, the daemon runs degraded and says so; otherwise it does not start.
    pub optional: bool,
    /// Which interfaces are watched (loopback never is).
    pub interfaces: NamePatterns,
    /// Socket receive buffer in bytes.
    pub recv_buffer: usize,
}

impl Default for RtnetlinkConfig {
    fn default() -> Self {
        RtnetlinkConfig {
            enabled: false,
            optional: false,
            interfaces: NamePatterns::default(),
            recv_buffer: 1 << 20,
        }
    }
}

/// `[sources.fc]`: FC transport events reported by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FcConfig {
    pub enabled: bool,
    /// The daemon may run without it (`optional = true`): when it cannot
    /// start, the daemon runs degraded and says so; otherwise it does not start.
    pub optional: bool,
    /// `NETLINK_SCSITRANSPORT` (18); another protocol only for tests.
    pub netlink_protocol: i32,
    /// 4: the group the kernel sends FC events to.
    pub netlink_group: u32,
    pub recv_buffer: usize,
}

impl Default for FcConfig {
    fn default() -> Self {
        FcConfig {
            enabled: false,
            optional: false,
            netlink_protocol: faultbridge_ffi::sys::netlink::NETLINK_SCSITRANSPORT,
            netlink_group: faultbridge_ffi::wire::fc::FC_EVENTS_GROUP,
            recv_buffer: 1 << 20,
        }
    }
}

/// The device subsystems whose removal the uevent source reports.
pub const UEVENT_SUBSYSTEMS: [&str; 3] = ["net", "block", "scsi"];

/// `[sources.uevent]`: device removal reported by kernel uevents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UeventConfig {
    pub enabled: bool,
    /// The daemon may run without it (`optional = true`): when it cannot
    /// start, the daemon runs degraded and says so; otherwise it does not start.
    pub optional: bool,
    /// Subsystems watched, a subset of [`UEVENT_SUBSYSTEMS`].
    pub subsystems: Vec<String>,
    /// Which devices (by name: interface, `DEVNAME`, or sysfs name) are watched.
    pub devices: NamePatterns,
    pub recv_buffer: usize,
}

impl Default for UeventConfig {
    fn default() -> Self {
        UeventConfig {
            enabled: false,
            optional: false,
            subsystems: UEVENT_SUBSYSTEMS.iter().map(|s| s.to_string()).collect(),
            devices: NamePatterns::default(),
            recv_buffer: 1 << 20,
        }
    }
}

impl Ctx<'_> {
    fn recv_buffer(&self, v: &Spanned<i64>) -> Result<usize, ConfigError> {
        Ok(self.int_in(v, "recv_buffer", RECV_BUFFER_MIN, RECV_BUFFER_MAX)? as usize)
    }

    fn netlink_protocol(&self, v: &Spanned<i64>) -> Result<i32, ConfigError> {
        Ok(self.int_in(v, "netlink_protocol", 0, 31)? as i32)
    }

    fn netlink_group(&self, v: &Spanned<i64>) -> Result<u32, ConfigError> {
        Ok(self.int_in(v, "netlink_group", 1, 32)? as u32)
    }

    fn patterns(
        &self,
        include: &Option<Vec<Spanned<String>>>,
        exclude: &Option<Vec<Spanned<String>>>,
    ) -> Result<NamePatterns, ConfigError> {
        let check = |list: &Option<Vec<Spanned<String>>>, key: &str| {
            let mut out = Vec::new();
            for p in list.iter().flatten() {
                let s = p.get_ref();
                if s.is_empty() || s.len() > KEYWORD_MAX || s.contains('\0') {
                    return Err(self.spanned(
                        p,
                        format!("{key} pattern {s:?} must be 1..={KEYWORD_MAX} bytes without NUL"),
                    ));
                }
                out.push(s.clone());
            }
            Ok(out)
        };
        Ok(NamePatterns {
            include: check(include, "include")?,
            exclude: check(exclude, "exclude")?,
        })
    }
}

pub(super) fn expdrv(cx: &Ctx<'_>, raw: Option<&RawExpdrv>) -> Result<ExpdrvConfig, ConfigError> {
    let mut c = ExpdrvConfig::default();
    let Some(e) = raw else { return Ok(c) };
    c.enabled = e.enabled.unwrap_or(true);
    c.optional = e.optional.unwrap_or(false);
    if let Some(p) = &e.netlink_protocol {
        c.netlink_protocol = cx.netlink_protocol(p)?;
    }
    if let Some(g) = &e.netlink_group {
        c.netlink_group = cx.netlink_group(g)?;
    }
    c.device = e.device.clone();
    if let Some(r) = &e.recv_buffer {
        c.recv_buffer = cx.recv_buffer(r)?;
    }
    if let Some(t) = &e.resync_interval {
        c.resync_interval = cx.duration(t, "resync_interval", RESYNC_INTERVAL_BOUND)?;
    }
    if let Some(a) = &e.accept {
        c.accept = cx.named(a, "accept")?;
    }
    Ok(c)
}

pub(super) fn rtnetlink(
    cx: &Ctx<'_>,
    raw: Option<&RawRtnetlink>,
) -> Result<RtnetlinkConfig, ConfigError> {
    let mut c = RtnetlinkConfig::default();
    let Some(r) = raw else { return Ok(c) };
    c.enabled = r.enabled.unwrap_or(true);
    c.optional = r.optional.unwrap_or(false);
    c.interfaces = cx.patterns(&r.include, &r.exclude)?;
    if let Some(b) = &r.recv_buffer {
        c.recv_buffer = cx.recv_buffer(b)?;
    }
    Ok(c)
}

pub(super) fn fc(cx: &Ctx<'_>, raw: Option<&RawFc>) -> Result<FcConfig, ConfigError> {
    let mut c = FcConfig::default();
    let Some(f) = raw else { return Ok(c) };
    c.enabled = f.enabled.unwrap_or(true);
    c.optional = f.optional.unwrap_or(false);
    if let Some(p) = &f.netlink_protocol {
        c.netlink_protocol = cx.netlink_protocol(p)?;
    }
    if let Some(g) = &f.netlink_group {
        c.netlink_group = cx.netlink_group(g)?;
    }
    if let Some(b) = &f.recv_buffer {
        c.recv_buffer = cx.recv_buffer(b)?;
    }
    Ok(c)
}

pub(super) fn uevent(cx: &Ctx<'_>, raw: Option<&RawUevent>) -> Result<UeventConfig, ConfigError> {
    let mut c = UeventConfig::default();
    let Some(u) = raw else { return Ok(c) };
    c.enabled = u.enabled.unwrap_or(true);
    c.optional = u.optional.unwrap_or(false);
    if let Some(list) = &u.subsystems {
        c.subsystems.clear();
        for s in list {
            if !UEVENT_SUBSYSTEMS.contains(&s.get_ref().as_str()) {
                return Err(cx.spanned(
                    s,
                    format!(
                        "unknown subsystem {:?}: expected some of net, block, scsi",
                        s.get_ref()
                    ),
                ));
            }
            c.subsystems.push(s.get_ref().clone());
        }
    }
    c.devices = cx.patterns(&u.include, &u.exclude)?;
    if let Some(b) = &u.recv_buffer {
        c.recv_buffer = cx.recv_buffer(b)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob_match("eth*", "eth0"));
        assert!(glob_match("*", ""));
        assert!(glob_match("e?h*1", "eth0.1"));
        assert!(glob_match("*a*b", "xxaxxb"));
        assert!(!glob_match("eth*", "veth0"));
        assert!(!glob_match("e?h", "eh"));
    }
}

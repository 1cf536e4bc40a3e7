//! The D-Bus names of faultbridge (fixed: clients rely on them) and the
//! escaping of monitor names into object paths.

/// The well-known bus name the daemon owns.
pub const BUS_NAME: &str = "org.faultbridge.Bridge1";
/// The bridge object.
pub const OBJECT_PATH: &str = "/org/faultbridge/Bridge1";
/// The bridge object's interface: `Fault` and `Lost` signals, `Notify`,
/// `ListMonitors`, `Status`, `History`.
pub const INTERFACE: &str = "org.faultbridge.Bridge1";
/// The interface of each monitor object.
pub const MONITOR_INTERFACE: &str = "org.faultbridge.Monitor1";
/// Monitor objects live under this path, one per configured monitor.
pub const MONITOR_PATH_PREFIX: &str = "/org/faultbridge/Bridge1/monitor";
/// The prefix of the errors the service replies with.
pub const ERROR_PREFIX: &str = "org.faultbridge.Bridge1.Error";
/// The standard properties interface (`Get`, `GetAll`, `PropertiesChanged`).
pub const PROPERTIES_INTERFACE: &str = "org.freedesktop.DBus.Properties";

/// Escapes `name` into one object-path element the way systemd's bus-label
/// escaping does: ASCII letters and digits are kept, every other byte
/// becomes `_` and two lowercase hex digits; the empty name becomes `_`.
///
/// ```
/// use faultbridge_bus::dbus::escape_label;
/// assert_eq!(escape_label("mrw1"), "mrw1");
/// assert_eq!(escape_label("nic-eth0"), "nic_2deth0");
/// assert_eq!(escape_label("HA/SS"), "HA_2fSS");
/// assert_eq!(escape_label(""), "_");
/// ```
pub fn escape_label(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(name.len() * 3);
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() {
            s.push(b as char);
        } else {
            s.push('_');
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 0xf) as usize] as char);
        }
    }
    s
}

/// The inverse of [`escape_label`]; `None` when `label` is not a valid
/// escape or does not decode to UTF-8.
pub fn unescape_label(label: &str) -> Option<String> {
    if label == "_" {
        return Some(String::new());
    }
    let b = label.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c if c.is_ascii_alphanumeric() => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The object path of the monitor named `name`.
///
/// ```
/// use faultbridge_bus::dbus::monitor_path;
/// assert_eq!(monitor_path("mrw1"), "/org/faultbridge/Bridge1/monitor/mrw1");
/// ```
pub fn monitor_path(name: &str) -> String {
    format!("{MONITOR_PATH_PREFIX}/{}", escape_label(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_makes_valid_path_elements() {
        for name in [
            "mrw1",
            "nic-eth0",
            "a b",
            "_",
            "__x",
            "ü",
            "0lead",
            "HA/SS.db01",
            "",
            "x\u{7f}y",
        ] {
            let e = escape_label(name);
            assert!(
                !e.is_empty() && e.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
                "{name:?} → {e:?}"
            );
            assert_eq!(unescape_label(&e).as_deref(), Some(name), "{e:?}");
            zbus::ObjectPath::try_from(monitor_path(name)).unwrap();
        }
        assert_eq!(escape_label("_"), "_5f");
        assert_eq!(escape_label("ü"), "_c3_bc");
    }

    #[test]
    fn bad_escapes_are_refused() {
        for bad in ["_", "_z1", "_4", "a-b", "_C3_BC", "_ff"] {
            if bad == "_" {
                continue;
            }
            assert_eq!(unescape_label(bad), None, "{bad:?}");
        }
    }
}

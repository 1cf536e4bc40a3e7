//! `[forward.nats]`: fleet forwarding to a NATS JetStream stream.

use super::ConfigError;
use super::error::Ctx;
use super::raw::RawNats;
use std::path::PathBuf;
use toml::Spanned;

/// The stream, subject prefix and server when the file does not say.
pub const DEFAULT_STREAM: &str = "FAULTBRIDGE";
pub const DEFAULT_SUBJECT_PREFIX: &str = "faultbridge";
pub const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// `[forward.nats]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsForwardConfig {
    /// One server or several of a cluster (`nats://host:port`, `tls://…`).
    pub servers: Vec<String>,
    /// The JetStream stream; created with subjects `<prefix>.>` when missing.
    pub stream: String,
    pub subject_prefix: String,
    /// This host's name in subjects, bodies and message ids.
    pub host: String,
    /// A NATS credentials file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// CA certificates that sign the servers' certificates (TLS required then).
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and its key, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The longest stream name, subject prefix and host accepted.
pub const NAME_MAX: usize = 255;

/// The machine's host name (of its UTS namespace), `localhost` when it
/// has none.
pub fn default_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A stream name: letters, digits, `-` and `_` (JetStream refuses `.`,
/// `*`, `>`, white space and path separators in names).
fn stream_name(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<String, ConfigError> {
    let s = v.get_ref();
    if s.is_empty()
        || s.len() > NAME_MAX
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(cx.spanned(
            v,
            format!("stream = {s:?}: must be 1..={NAME_MAX} letters, digits, '-' or '_'"),
        ));
    }
    Ok(s.clone())
}

/// A subject prefix: one or more dot-separated tokens without wildcards
/// or white space.
fn subject_prefix(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<String, ConfigError> {
    let s = v.get_ref();
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
    };
    if s.len() > NAME_MAX || !s.split('.').all(token_ok) {
        return Err(cx.spanned(
            v,
            format!(
                "subject_prefix = {s:?}: must be dot-separated tokens without '*', '>' or white space, at most {NAME_MAX} bytes"
            ),
        ));
    }
    Ok(s.clone())
}

fn server(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<String, ConfigError> {
    let s = v.get_ref();
    if s.parse::<async_nats::ServerAddr>().is_err() {
        return Err(cx.spanned(
            v,
            format!("servers: {s:?} is not a server address such as \"nats://127.0.0.1:4222\""),
        ));
    }
    Ok(s.clone())
}

pub(super) fn nats(
    cx: &Ctx<'_>,
    raw: &Spanned<RawNats>,
    has_history: bool,
) -> Result<NatsForwardConfig, ConfigError> {
    if !has_history {
        return Err(cx.spanned(
            raw,
            "[forward.nats] forwards what the history database records: configure [history] too",
        ));
    }
    let r = raw.get_ref();
    let servers = match &r.servers {
        None => vec![DEFAULT_SERVER.to_string()],
        Some(list) if list.get_ref().is_empty() => {
            return Err(cx.spanned(list, "servers = []: name at least one server"));
        }
        Some(list) => list
            .get_ref()
            .iter()
            .map(|s| server(cx, s))
            .collect::<Result<_, _>>()?,
    };
    let host = match &r.host {
        None => default_host(),
        Some(h) => {
            let s = h.get_ref();
            if s.is_empty() || s.len() > NAME_MAX || s.chars().any(char::is_control) {
                return Err(cx.spanned(
                    h,
                    format!(
                        "host = {s:?}: must be 1..={NAME_MAX} bytes without control characters"
                    ),
                ));
            }
            s.clone()
        }
    };
    if r.tls_cert.is_some() != r.tls_key.is_some() {
        return Err(cx.spanned(raw, "tls_cert and tls_key go together: set both or neither"));
    }
    Ok(NatsForwardConfig {
        servers,
        stream: r
            .stream
            .as_ref()
            .map(|s| stream_name(cx, s))
            .transpose()?
            .unwrap_or_else(|| DEFAULT_STREAM.to_string()),
        subject_prefix: r
            .subject_prefix
            .as_ref()
            .map(|s| subject_prefix(cx, s))
            .transpose()?
            .unwrap_or_else(|| DEFAULT_SUBJECT_PREFIX.to_string()),
        host,
        credentials: r.credentials.clone(),
        tls_ca: r.tls_ca.clone(),
        tls_cert: r.tls_cert.clone(),
        tls_key: r.tls_key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_design_example_parses_and_defaults_fill_the_rest() {
        let c = parse(
            "[history]\npath = \"/tmp/h.db\"\n[forward.nats]\nservers = [\"nats://127.0.0.1:4222\"]\nstream = \"FAULTBRIDGE\"\nsubject_prefix = \"faultbridge\"\nhost = \"node1\"\ncredentials = \"/etc/faultbridge/nats.creds\"\n",
        )
        .unwrap();
        let n = c.forward.unwrap();
        assert_eq!(n.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            (
                n.stream.as_str(),
                n.subject_prefix.as_str(),
                n.host.as_str()
            ),
            ("FAULTBRIDGE", "faultbridge", "node1")
        );
        assert_eq!(
            n.credentials.as_deref(),
            Some(Path::new("/etc/faultbridge/nats.creds"))
        );
        let d = parse("[history]\n[forward.nats]\n")
            .unwrap()
            .forward
            .unwrap();
        assert_eq!(d.servers, [super::DEFAULT_SERVER]);
        assert_eq!(d.host, super::default_host());
        assert!(parse("").unwrap().forward.is_none());
    }

    #[test]
    fn mistakes_name_their_line() {
        let e = parse("[forward.nats]\nhost = \"a\"\n").unwrap_err();
        assert!(e.contains("configure [history] too"), "{e}");
        let e = parse("[history]\n[forward.nats]\nstream = \"A.B\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:3:10: stream = \"A.B\""), "{e}");
        let e = parse("[history]\n[forward.nats]\nsubject_prefix = \"fb.>\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:3:18: subject_prefix"), "{e}");
        let e = parse("[history]\n[forward.nats]\nservers = []\n").unwrap_err();
        assert!(e.starts_with("t.toml:3:11: servers = []"), "{e}");
        let e = parse("[history]\n[forward.nats]\nservers = [\"nats://[::1\"]\n").unwrap_err();
        assert!(e.contains("not a server address"), "{e}");
        let e = parse("[history]\n[forward.nats]\ntls_cert = \"/c.pem\"\n").unwrap_err();
        assert!(e.contains("tls_cert and tls_key go together"), "{e}");
        let e = parse("[history]\n[forward.nats]\nport = 1\n").unwrap_err();
        assert!(e.contains("unknown field `port`"), "{e}");
    }
}

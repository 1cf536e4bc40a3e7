//! Helpers for reporting errors, shared by the library and the command line.

/// "what failed: because: because" — each source error once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_once() {
        let inner = std::io::Error::other("disk on fire");
        let e = crate::daemon::BridgeError::Poll(inner);
        assert_eq!(
            error_chain(&e),
            "cannot set up the event loop: disk on fire"
        );
    }
}

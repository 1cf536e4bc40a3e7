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

/// Whether the `n`th occurrence (counting from 1) of something logged is
/// written: the first five, then every 10 000th, so that a storm of bad
/// input cannot flood the log or stall the thread writing it (the counters
/// carry every one).
#[inline]
pub fn thinned(n: u64) -> bool {
    n <= 5 || n.is_multiple_of(10_000)
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

    #[test]
    fn logging_thins_out_after_five() {
        let logged: Vec<u64> = (1..=30_000).filter(|&n| thinned(n)).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 10_000, 20_000, 30_000]);
    }
}

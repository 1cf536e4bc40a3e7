//! Helpers for reporting errors, shared by the library and the command line.

/// "what failed: because: because" — each source error once. A source
/// whose text its error already ends with (libraries that print their
/// source in their own message) is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    for c in chain(e).skip(1) {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
    }
    s
}

/// `e` and each of its sources in turn, outermost first.
pub fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |c| c.source())
}

/// The first OS error number in `e`'s chain (an `io::Error` made from an
/// errno), if any.
pub fn errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    chain(e).find_map(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
    })
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
    fn a_source_its_error_already_prints_is_not_repeated() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "request error: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = crate::daemon::BridgeError::Thread(std::io::Error::other(Outer(
            std::io::Error::other("timed out"),
        )));
        assert_eq!(error_chain(&e), format!("{e}: request error: timed out"));
    }

    #[test]
    fn logging_thins_out_after_five() {
        let logged: Vec<u64> = (1..=30_000).filter(|&n| thinned(n)).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 10_000, 20_000, 30_000]);
    }
}

//! Durations as written in the configuration (`"10s"`, `"250ms"`, `"7d"`) and
//! the bounds each duration key must stay within.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Parses a duration such as `10s`, `250ms`, `2m`, `1h`, `7d`, `1500us`.
/// A number too large for its unit is refused, never wrapped.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
        if num.is_empty() {
            format!("{s:?} is not a duration (expected e.g. \"10s\", \"250ms\")")
        } else {
            format!("{s:?} is not a duration ({e})")
        }
    })?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long a duration"))
    };
    Ok(match unit.trim() {
        "ns" => Duration::from_nanos(n),
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" | "min" => secs(MINUTE)?,
        "h" => secs(HOUR)?,
        "d" => secs(DAY)?,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ns, us, ms, s, m, h, d)"
            ));
        }
    })
}

/// Writes `d` in the largest unit that divides it (`"24h"`, `"7d"`, `"250ms"`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 {
        // Days only from two on: "24h" reads better than "1d".
        for (per, unit) in [(DAY, "d"), (HOUR, "h"), (MINUTE, "m")] {
            if secs != 0 && secs.is_multiple_of(per) && (per != DAY || secs >= 2 * DAY) {
                return format!("{}{unit}", secs / per);
            }
        }
        return format!("{secs}s");
    }
    let nanos = d.as_nanos();
    if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// The range a duration key accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationBound {
    pub min: Duration,
    pub max: Duration,
}

impl DurationBound {
    const fn new(min: Duration, max: Duration) -> DurationBound {
        DurationBound { min, max }
    }

    /// `d` if it is within the bound, else why not.
    pub fn check(self, d: Duration) -> Result<Duration, String> {
        if d < self.min || d > self.max {
            return Err(format!(
                "must be in {}..={}",
                format_duration(self.min),
                format_duration(self.max)
            ));
        }
        Ok(d)
    }
}

/// `[[monitor]] timeout`: 1 ms to 24 h.
pub const TIMEOUT_BOUND: DurationBound =
    DurationBound::new(Duration::from_millis(1), Duration::from_secs(DAY));
/// `[[monitor]] grace_period`: up to 7 days.
pub const GRACE_PERIOD_BOUND: DurationBound =
    DurationBound::new(Duration::ZERO, Duration::from_secs(7 * DAY));
/// `[[monitor]] threshold.window`: up to 7 days.
pub const WINDOW_BOUND: DurationBound =
    DurationBound::new(Duration::ZERO, Duration::from_secs(7 * DAY));
/// `[sources.expdrv] resync_interval`: up to 1 hour.
pub const RESYNC_INTERVAL_BOUND: DurationBound =
    DurationBound::new(Duration::ZERO, Duration::from_secs(HOUR));
/// `[history] max_age`: 1 minute to 10 years (3650 days).
pub const MAX_AGE_BOUND: DurationBound =
    DurationBound::new(Duration::from_secs(MINUTE), Duration::from_secs(3650 * DAY));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * DAY));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn numbers_too_large_are_refused_not_wrapped() {
        let e = parse_duration("18446744073709551616s").unwrap_err();
        assert!(e.contains("is not a duration"), "{e}");
        let e = parse_duration("18446744073709551615h").unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn bounds_name_their_range() {
        assert_eq!(format_duration(Duration::from_secs(DAY)), "24h");
        assert_eq!(format_duration(Duration::from_secs(7 * DAY)), "7d");
        assert_eq!(format_duration(Duration::from_secs(2 * HOUR)), "2h");
        assert_eq!(format_duration(Duration::from_millis(1)), "1ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(
            TIMEOUT_BOUND.check(Duration::from_secs(DAY + 1)),
            Err("must be in 1ms..=24h".to_string())
        );
        assert!(TIMEOUT_BOUND.check(Duration::from_secs(10)).is_ok());
    }
}

//! Whether every configured source is running. A fault monitor that has
//! gone deaf must never look healthy: a source that is down shows in
//! `Status` (`health`, `sources_down`), in `faultbridge status`, in the
//! systemd `STATUS=` line, and in the `Degraded` property of every monitor
//! whose category it reports, so `faultbridge check` answers "unknown"
//! instead of "Normal" for them.

use faultbridge_bus::Source;
use faultbridge_ffi::wire::record::Category;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// One configured source's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceHealth {
    pub source: Source,
    /// The configuration lets the daemon run without it (`optional = true`).
    pub optional: bool,
    /// `None` while it runs.
    pub down: Option<Down>,
}

/// Why a source is down, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    pub reason: String,
    /// Wall-clock time it went down (ms since the Unix epoch).
    pub since_ms: u64,
    /// Attempts to start it again so far.
    pub retries: u32,
}

/// Every configured source's health, readable from any thread.
#[derive(Debug, Default)]
pub struct Health {
    sources: Mutex<Vec<SourceHealth>>,
    /// Bumped on every change (for readers that cache).
    generation: AtomicU64,
}

impl Health {
    /// `source` is configured (running until told otherwise).
    pub fn configure(&self, source: Source, optional: bool) {
        let mut v = self.lock();
        if !v.iter().any(|h| h.source == source) {
            v.push(SourceHealth {
                source,
                optional,
                down: None,
            });
        }
    }

    /// `source` runs (again); true when it was down.
    pub fn up(&self, source: Source) -> bool {
        let was_down = self
            .lock()
            .iter_mut()
            .find(|h| h.source == source)
            .and_then(|h| h.down.take())
            .is_some();
        if was_down {
            self.generation.fetch_add(1, Ordering::Release);
        }
        was_down
    }

    /// `source` is down for `reason`; true when it was running. A source
    /// already down keeps its first time and counts a retry.
    pub fn down(&self, source: Source, reason: &str) -> bool {
        let mut v = self.lock();
        let h = match v.iter_mut().position(|h| h.source == source) {
            Some(i) => &mut v[i],
            None => {
                v.push(SourceHealth {
                    source,
                    optional: false,
                    down: None,
                });
                let last = v.len() - 1;
                &mut v[last]
            }
        };
        let was_up = h.down.is_none();
        match &mut h.down {
            Some(d) => {
                d.retries = d.retries.saturating_add(1);
                d.reason = reason.to_string();
            }
            None => {
                h.down = Some(Down {
                    reason: reason.to_string(),
                    since_ms: now_ms(),
                    retries: 0,
                });
            }
        }
        drop(v);
        self.generation.fetch_add(1, Ordering::Release);
        was_up
    }

    /// Every configured source, in the order configured.
    pub fn snapshot(&self) -> Vec<SourceHealth> {
        self.lock().clone()
    }

    /// The sources that are down, with why.
    pub fn down_sources(&self) -> Vec<(Source, String)> {
        self.lock()
            .iter()
            .filter_map(|h| h.down.as_ref().map(|d| (h.source, d.reason.clone())))
            .collect()
    }

    /// Why a monitor of `category` cannot be trusted to be Normal: the
    /// first down source that reports that category. `None`: it can be.
    pub fn degrades(&self, category: Category) -> Option<String> {
        self.lock()
            .iter()
            .filter(|h| reports(h.source, category))
            .find_map(|h| {
                h.down
                    .as_ref()
                    .map(|d| format!("source {} is down: {}", h.source, d.reason))
            })
    }

    /// `None` when every source runs, otherwise one line saying which are
    /// down (for `STATUS=` and logs).
    pub fn summary(&self) -> Option<String> {
        let down = self.down_sources();
        if down.is_empty() {
            return None;
        }
        let list: Vec<String> = down
            .iter()
            .map(|(s, why)| format!("source {s} down ({why})"))
            .collect();
        Some(format!("DEGRADED: {}", list.join(", ")))
    }

    /// Changes so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SourceHealth>> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `source` can report a fault of `category`: the expanded
/// driver reports every category, the kernel's sources their own.
pub fn reports(source: Source, category: Category) -> bool {
    match source {
        Source::Rtnetlink => category == Category::Nic,
        Source::FcTransport => category == Category::Fc,
        Source::Uevent => matches!(category, Category::Nic | Category::Fc | Category::Sps),
        // The expanded driver (and a user-space reporter) report every category.
        _ => true,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_source_degrades_the_categories_it_reports_and_only_those() {
        let h = Health::default();
        h.configure(Source::Expdrv, false);
        h.configure(Source::Rtnetlink, true);
        assert_eq!(h.summary(), None);
        assert!(h.down(Source::Rtnetlink, "Operation not permitted"));
        assert!(
            h.degrades(Category::Nic)
                .is_some_and(|r| r.contains("rtnetlink"))
        );
        assert_eq!(h.degrades(Category::Fc), None);
        assert!(!h.down(Source::Rtnetlink, "again"), "already down");
        assert_eq!(h.snapshot()[1].down.as_ref().map(|d| d.retries), Some(1));
        assert!(
            h.summary()
                .is_some_and(|s| s.contains("rtnetlink down (again)"))
        );
        h.down(Source::Expdrv, "gone");
        assert!(
            h.degrades(Category::Fc)
                .is_some_and(|r| r.contains("expdrv"))
        );
        assert!(h.up(Source::Rtnetlink));
        assert!(!h.up(Source::Rtnetlink));
        assert!(h.up(Source::Expdrv));
        assert_eq!(h.summary(), None);
        assert_eq!(h.degrades(Category::Nic), None);
    }
}

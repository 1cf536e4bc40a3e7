//! Sequence tracking (spec section 5): a gap in `sequence` means lost
//! records; an `ENOBUFS` overrun is confirmed and sized by the next record.

use faultbridge_bus::LostReason;

/// What one record's sequence says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The first record, or the next one in order.
    InOrder,
    /// Records `first..=last` never arrived.
    Gap {
        first: u64,
        last: u64,
        reason: LostReason,
    },
    /// The same sequence again (a duplicate).
    Backwards,
    /// The sequence went back: the driver was reloaded and counts from 1
    /// again. `missed` is the range of the new load that never arrived
    /// (`None` when the first record seen is 1).
    Restart { missed: Option<(u64, u64)> },
}

/// Per-driver-instance cursors (keyed by `driver_id`; usually one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqTracker {
    cursors: Vec<(u32, u64)>,
    overrun_pending: bool,
}

impl SeqTracker {
    /// The socket reported an overrun: the next gap is attributed to it.
    pub fn overrun(&mut self) {
        self.overrun_pending = true;
    }

    /// True while an overrun has not yet been sized by a later record.
    pub fn overrun_pending(&self) -> bool {
        self.overrun_pending
    }

    /// The newest sequence seen from `driver_id`.
    pub fn last(&self, driver_id: u32) -> Option<u64> {
        self.cursors.iter().find(|c| c.0 == driver_id).map(|c| c.1)
    }

    /// Every cursor, for state hand-over and restart continuity.
    pub fn cursors(&self) -> &[(u32, u64)] {
        &self.cursors
    }

    /// Restores a cursor (from history or a previous daemon).
    pub fn set(&mut self, driver_id: u32, last: u64) {
        match self.cursors.iter_mut().find(|c| c.0 == driver_id) {
            Some(c) => c.1 = last,
            None => self.cursors.push((driver_id, last)),
        }
    }

    /// Accounts for a live (non-snapshot) record.
    #[inline]
    pub fn observe(&mut self, driver_id: u32, seq: u64) -> Seen {
        let Some(cursor) = self.cursors.iter_mut().find(|c| c.0 == driver_id) else {
            self.cursors.push((driver_id, seq));
            return self.after_first(seq);
        };
        let last = cursor.1;
        if seq == last.wrapping_add(1) {
            cursor.1 = seq;
            return Seen::InOrder;
        }
        if seq > last {
            cursor.1 = seq;
            let reason = if std::mem::take(&mut self.overrun_pending) {
                LostReason::Overrun
            } else {
                LostReason::SequenceGap
            };
            return Seen::Gap {
                first: last + 1,
                last: seq - 1,
                reason,
            };
        }
        if seq == last {
            return Seen::Backwards;
        }
        // Lower than the cursor: a netlink multicast stream is in order, so
        // this is a new driver load (or a restored cursor from before a
        // reboot); records 1..seq of the new load were missed.
        cursor.1 = seq;
        self.overrun_pending = false;
        Seen::Restart {
            missed: (seq > 1).then(|| (1, seq - 1)),
        }
    }

    /// The first sequence expected next from the first driver instance (1
    /// before any record): where an overrun's loss starts.
    pub fn next_expected(&self) -> u64 {
        self.cursors.first().map_or(1, |c| c.1.saturating_add(1))
    }

    fn after_first(&mut self, seq: u64) -> Seen {
        // Nothing is known before the first record of a driver instance, and
        // a pending overrun cannot be sized against it.
        let _ = seq;
        Seen::InOrder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gap_overrun_backwards_restart() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(1, 5), Seen::InOrder);
        assert_eq!(t.observe(1, 6), Seen::InOrder);
        assert_eq!(
            t.observe(1, 9),
            Seen::Gap {
                first: 7,
                last: 8,
                reason: LostReason::SequenceGap
            }
        );
        t.overrun();
        assert_eq!(
            t.observe(1, 20),
            Seen::Gap {
                first: 10,
                last: 19,
                reason: LostReason::Overrun
            }
        );
        assert_eq!(t.observe(1, 20), Seen::Backwards);
        assert_eq!(
            t.observe(1, 15),
            Seen::Restart {
                missed: Some((1, 14))
            }
        );
        assert_eq!(t.observe(1, 1), Seen::Restart { missed: None });
        assert_eq!(t.observe(1, 2), Seen::InOrder);
        // another driver instance has its own cursor
        assert_eq!(t.observe(2, 100), Seen::InOrder);
        assert_eq!(t.observe(1, 3), Seen::InOrder);
    }
}

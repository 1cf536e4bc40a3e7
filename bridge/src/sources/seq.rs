//! Sequence tracking (spec section 5), one implementation for every
//! transport (netlink datagrams and char-device reads): a gap in
//! `sequence` means lost records; an `ENOBUFS` overrun is confirmed and
//! sized by the next record.
//!
//! Whatever reaches it is accounted for, and no single record can move a
//! cursor somewhere the records after it contradict:
//!
//! - the next sequence is in order; a jump ahead of at most [`MAX_JUMP`]
//!   is a gap (those records are lost);
//! - the same sequence again is a duplicate, a lower one is *behind* the
//!   cursor (a replay, or the first record of a driver reload): both are
//!   counted and the cursor stays;
//! - a jump ahead of more than [`MAX_JUMP`] is *implausible* (no driver
//!   loses that many records between two it delivers): counted and
//!   reported, and the cursor stays;
//! - a record that does not fit becomes a candidate position: when the
//!   record after it continues from it, the driver really moved there: a
//!   lower candidate is a reload (the records of the new load before the
//!   candidate are reported lost, 1..first-1), a higher one a confirmed jump.
//!
//! Cursors are kept per `driver_id` in a hash map of at most
//! [`MAX_DRIVERS`] entries: records of further driver ids are delivered
//! untracked, and counted.

use faultbridge_bus::LostReason;
use std::collections::HashMap;

/// The largest forward jump taken as a gap (records lost): 2^24 records,
/// more than a day of a driver sending 100 records a second. A larger
/// jump is reported as implausible until the record after it confirms it.
pub const MAX_JUMP: u64 = 1 << 24;

/// The most driver instances whose sequences are tracked at once.
pub const MAX_DRIVERS: usize = 1024;

/// What one record's sequence says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The first record, or the next one in order.
    InOrder,
    /// Records `first..=last` never arrived; the cursor moved past them.
    Gap {
        first: u64,
        last: u64,
        reason: LostReason,
    },
    /// The same sequence as the cursor again.
    Duplicate,
    /// Lower than the cursor `cursor`: a replay, or the first record of a
    /// reload (confirmed by the next record). The cursor stays.
    Behind { cursor: u64 },
    /// More than [`MAX_JUMP`] ahead of the cursor `cursor`. The cursor stays.
    Implausible { cursor: u64 },
    /// A reload confirmed: the driver counts from 1 again and the cursor
    /// moved down to this record. `missed` is the range of the new load
    /// that never arrived (`None` when the new load was seen from 1).
    Restart { missed: Option<(u64, u64)> },
    /// A jump of more than [`MAX_JUMP`] confirmed by the record after it:
    /// the cursor moved from `from` to this record.
    Jumped { from: u64 },
    /// The driver id is not tracked: [`MAX_DRIVERS`] others are.
    Untracked,
}

/// A record that did not fit the cursor, and the records that continued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    first: u64,
    last: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    last: u64,
    candidate: Option<Candidate>,
}

/// Per-driver-instance cursors (keyed by `driver_id`; usually one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqTracker {
    cursors: HashMap<u32, Cursor>,
    limit: usize,
    overrun_pending: bool,
    /// The driver of the newest record: where an overrun's loss starts.
    recent: Option<u32>,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker::with_limit(MAX_DRIVERS)
    }
}

impl SeqTracker {
    /// A tracker of at most `limit` driver instances.
    pub fn with_limit(limit: usize) -> Self {
        SeqTracker {
            cursors: HashMap::new(),
            limit,
            overrun_pending: false,
            recent: None,
        }
    }

    /// The socket reported an overrun: the next gap is attributed to it.
    pub fn overrun(&mut self) {
        self.overrun_pending = true;
    }

    /// True while an overrun has not yet been sized by a later record.
    pub fn overrun_pending(&self) -> bool {
        self.overrun_pending
    }

    /// The newest sequence accepted from `driver_id`.
    pub fn last(&self, driver_id: u32) -> Option<u64> {
        self.cursors.get(&driver_id).map(|c| c.last)
    }

    /// How many driver instances are tracked.
    pub fn len(&self) -> usize {
        self.cursors.len()
    }

    /// True before any record.
    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }

    /// Every cursor (driver id, last sequence), for state hand-over and
    /// restart continuity; in no particular order.
    pub fn cursors(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.cursors.iter().map(|(&d, c)| (d, c.last))
    }

    /// Writes the cursors and the pending overrun into a hand-over's state.
    pub fn hand_over(&self, h: &mut super::HandedState) {
        h.cursors = self.cursors().collect();
        h.overrun_pending = self.overrun_pending;
    }

    /// Takes the cursors and the pending overrun of a hand-over's state.
    pub fn adopt(&mut self, h: &super::HandedState) {
        for &(driver_id, last) in &h.cursors {
            self.set(driver_id, last);
        }
        if h.overrun_pending {
            self.overrun();
        }
    }

    /// Restores a cursor (from history or a previous daemon). Returns
    /// false when the table is full and `driver_id` is not in it.
    pub fn set(&mut self, driver_id: u32, last: u64) -> bool {
        if let Some(c) = self.cursors.get_mut(&driver_id) {
            c.last = last;
            c.candidate = None;
            return true;
        }
        if self.cursors.len() >= self.limit {
            return false;
        }
        self.cursors.insert(
            driver_id,
            Cursor {
                last,
                candidate: None,
            },
        );
        self.recent.get_or_insert(driver_id);
        true
    }

    /// Accounts for a live (non-snapshot) record.
    #[inline]
    pub fn observe(&mut self, driver_id: u32, seq: u64) -> Seen {
        let Some(cur) = self.cursors.get_mut(&driver_id) else {
            if self.cursors.len() >= self.limit {
                return Seen::Untracked;
            }
            // Nothing is known before the first record of a driver
            // instance, and a pending overrun cannot be sized against it.
            self.cursors.insert(
                driver_id,
                Cursor {
                    last: seq,
                    candidate: None,
                },
            );
            self.recent = Some(driver_id);
            return Seen::InOrder;
        };
        self.recent = Some(driver_id);
        let last = cur.last;
        if seq == last.wrapping_add(1) {
            cur.last = seq;
            cur.candidate = None;
            return Seen::InOrder;
        }
        if seq > last && seq - last <= MAX_JUMP {
            cur.last = seq;
            cur.candidate = None;
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
            return Seen::Duplicate;
        }
        // Does not fit: unless it continues the previous misfit, it is the
        // new candidate.
        if let Some(c) = cur.candidate
            && seq == c.last.wrapping_add(1)
        {
            cur.last = seq;
            cur.candidate = None;
            if seq < last {
                self.overrun_pending = false;
                return Seen::Restart {
                    missed: (c.first > 1).then(|| (1, c.first - 1)),
                };
            }
            return Seen::Jumped { from: last };
        }
        cur.candidate = Some(Candidate {
            first: seq,
            last: seq,
        });
        if seq < last {
            Seen::Behind { cursor: last }
        } else {
            Seen::Implausible { cursor: last }
        }
    }

    /// The first sequence expected next from the driver instance seen last
    /// (1 before any record): where an overrun's loss starts.
    pub fn next_expected(&self) -> u64 {
        self.recent
            .and_then(|d| self.last(d))
            .map_or(1, |l| l.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(first: u64, last: u64) -> Seen {
        Seen::Gap {
            first,
            last,
            reason: LostReason::SequenceGap,
        }
    }

    #[test]
    fn in_order_gap_overrun_duplicate() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(1, 5), Seen::InOrder);
        assert_eq!(t.observe(1, 6), Seen::InOrder);
        assert_eq!(t.observe(1, 9), gap(7, 8));
        t.overrun();
        assert_eq!(
            t.observe(1, 20),
            Seen::Gap {
                first: 10,
                last: 19,
                reason: LostReason::Overrun
            }
        );
        assert_eq!(t.observe(1, 20), Seen::Duplicate);
        // another driver instance has its own cursor
        assert_eq!(t.observe(2, 100), Seen::InOrder);
        assert_eq!(t.observe(1, 21), Seen::InOrder);
        assert_eq!(t.next_expected(), 22);
    }

    #[test]
    fn a_reload_is_confirmed_by_its_second_record() {
        let mut t = SeqTracker::default();
        t.set(1, 20);
        assert_eq!(t.observe(1, 1), Seen::Behind { cursor: 20 });
        assert_eq!(t.observe(1, 2), Seen::Restart { missed: None });
        assert_eq!(t.observe(1, 3), Seen::InOrder);
    }

    #[test]
    fn a_reload_whose_first_records_are_missed_reports_them_lost() {
        let mut t = SeqTracker::default();
        t.set(1, 100);
        // Records 1..=3 of the new load never arrive.
        assert_eq!(t.observe(1, 4), Seen::Behind { cursor: 100 });
        assert_eq!(
            t.observe(1, 5),
            Seen::Restart {
                missed: Some((1, 3))
            }
        );
        assert_eq!(t.observe(1, 7), gap(6, 6));
    }

    #[test]
    fn a_replay_behind_the_cursor_is_counted_and_moves_nothing() {
        let mut t = SeqTracker::default();
        for s in 1..=10 {
            t.observe(1, s);
        }
        assert_eq!(t.observe(1, 4), Seen::Behind { cursor: 10 });
        assert_eq!(t.observe(1, 11), Seen::InOrder);
        // The candidate was dropped by the record in order: a later replay
        // of 5 does not pass for a reload.
        assert_eq!(t.observe(1, 5), Seen::Behind { cursor: 11 });
        assert_eq!(t.observe(1, 12), Seen::InOrder);
    }

    #[test]
    fn a_forged_huge_sequence_invents_no_loss_and_silences_nothing() {
        let mut t = SeqTracker::default();
        for s in 1..=10 {
            t.observe(1, s);
        }
        assert_eq!(t.observe(1, u64::MAX), Seen::Implausible { cursor: 10 });
        assert_eq!(t.observe(1, 11), Seen::InOrder);
        assert_eq!(t.observe(1, 12), Seen::InOrder);
        // Twice in a row is no worse: the second does not continue the first.
        assert_eq!(t.observe(1, u64::MAX), Seen::Implausible { cursor: 12 });
        assert_eq!(t.observe(1, u64::MAX), Seen::Implausible { cursor: 12 });
        assert_eq!(t.observe(1, 13), Seen::InOrder);
    }

    #[test]
    fn a_jump_beyond_the_bound_is_taken_once_the_next_record_confirms_it() {
        let mut t = SeqTracker::default();
        t.observe(1, 1);
        let far = 2 + MAX_JUMP + 5;
        assert_eq!(t.observe(1, far), Seen::Implausible { cursor: 1 });
        assert_eq!(t.observe(1, far + 1), Seen::Jumped { from: 1 });
        assert_eq!(t.observe(1, far + 2), Seen::InOrder);
        // Within the bound it is a gap.
        assert_eq!(
            t.observe(1, far + 2 + MAX_JUMP),
            gap(far + 3, far + 1 + MAX_JUMP)
        );
    }

    #[test]
    fn driver_ids_beyond_the_bound_are_untracked() {
        let mut t = SeqTracker::with_limit(3);
        for d in 0..3 {
            assert_eq!(t.observe(d, 1), Seen::InOrder);
        }
        assert_eq!(t.observe(99, 1), Seen::Untracked);
        assert_eq!(t.observe(99, 7), Seen::Untracked);
        assert_eq!(t.observe(2, 2), Seen::InOrder);
        assert_eq!(t.len(), 3);
        assert!(!t.set(98, 4));
        assert!(t.set(1, 4));
    }
}

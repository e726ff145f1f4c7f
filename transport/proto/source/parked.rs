//! Degraded mode's parked clock: when the oldest host write still in the
//! deferred list was parked.
//!
//! The list is first in, first out, and the glue holds the bios: the
//! machine sees only writes park at the tail and leave from the head.
//! One start time for the whole list (when it last became non-empty)
//! goes stale under writes that outrun the link: new ones park before
//! the old ones leave, the list never empties, and the clock keeps the
//! first write's time long after that write went on. Every later wait,
//! even one right after a reconnection, then looked older than
//! `degrade_after`, and the source went degraded again at once, with
//! its resync never given a chance.
//!
//! So the writes are counted in buckets by when they parked, oldest
//! first. A bucket holds the writes parked in one stretch of about
//! `span` (an eighth of `degrade_after`); the clock is the oldest
//! bucket's start. It is never later than the oldest parked write's
//! park time (no write waits longer than `degrade_after` plus the
//! worker's reaction) and at most `span` earlier while buckets are
//! left, so the source goes degraded at most an eighth early.
//!
//! ```text
//!   park (tail)                  leave (head)
//!     │                             ▲
//!     ▼                             │
//!   [t5: 3] [t4: 7] ... [t1: 2] ────┘   clock = t1
//! ```

use crate::transport::proto::wake::Instant;

/// Buckets kept; when all are taken, the newest one grows (its start,
/// and so the clock once it is the oldest, is then earlier than its
/// writes by more than `span`).
pub(super) const PARK_BUCKETS: usize = 8;

/// How many buckets `degrade_after` is cut into.
pub(super) const PARK_SPANS: u64 = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bucket {
    /// When its first write parked.
    start: Instant,
    writes: usize,
}

/// The parked writes by when they parked (see the module comment).
///
/// # Invariants
///
/// - the `len` buckets from `head` (circularly) each hold at least one
///   write, oldest first, and their `writes` sum to the writes parked;
/// - their starts do not decrease, and each is no later than the park
///   time of every write it holds.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ParkedClock {
    buckets: [Bucket; PARK_BUCKETS],
    head: usize,
    len: usize,
}

impl ParkedClock {
    /// When the oldest parked write parked, or not much earlier (`None`:
    /// none parked).
    pub(super) fn since(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        self.buckets.get(self.head).map(|b| b.start)
    }

    /// Writes counted.
    #[cfg(test)]
    fn writes(&self) -> usize {
        (0..self.len)
            .filter_map(|i| self.buckets.get((self.head + i) % PARK_BUCKETS))
            .map(|b| b.writes)
            .sum()
    }

    /// A write parks at the tail at `now`. `span`: how long one bucket
    /// takes writes.
    pub(super) fn park(&mut self, now: Instant, span: Instant) {
        if self.len > 0 {
            let tail = (self.head + self.len - 1) % PARK_BUCKETS;
            let full = self.len == PARK_BUCKETS;
            if let Some(b) = self.buckets.get_mut(tail) {
                if full || now < b.start.saturating_add(span) {
                    b.writes += 1;
                    return;
                }
            }
        }
        let i = (self.head + self.len) % PARK_BUCKETS;
        if let Some(b) = self.buckets.get_mut(i) {
            *b = Bucket { start: now, writes: 1 };
            self.len += 1;
        }
    }

    /// The head write left the list (went on, failed or was given back).
    pub(super) fn leave(&mut self) {
        if self.len == 0 {
            return;
        }
        let Some(b) = self.buckets.get_mut(self.head) else { return };
        b.writes = b.writes.saturating_sub(1);
        if b.writes == 0 {
            self.head = (self.head + 1) % PARK_BUCKETS;
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn empty_list_has_no_clock() {
        let mut c = ParkedClock::default();
        assert_eq!(c.since(), None);
        c.park(5, 10);
        assert_eq!(c.since(), Some(5));
        c.leave();
        assert_eq!(c.since(), None);
        assert_eq!(c.writes(), 0);
        // Leaving an empty list changes nothing.
        c.leave();
        assert_eq!(c.writes(), 0);
    }

    /// The stale-clock bug: writes keep parking while older ones leave,
    /// so the list never empties; the clock must follow the oldest write
    /// still parked, not the first one ever parked.
    #[test]
    fn clock_follows_the_oldest_write_still_parked() {
        let mut c = ParkedClock::default();
        let span = 10;
        // One write parks every 4 units; each leaves 30 units later.
        let mut parked = std::collections::VecDeque::new();
        for t in 0..1000u64 {
            if t % 4 == 0 {
                c.park(t, span);
                parked.push_back(t);
            }
            while parked.front().is_some_and(|&p| p + 30 <= t) {
                parked.pop_front();
                c.leave();
            }
            assert_eq!(c.writes(), parked.len());
            if let Some(&oldest) = parked.front() {
                let since = c.since().unwrap_or(u64::MAX);
                assert!(since <= oldest, "t={t}: clock {since} after the oldest write {oldest}");
                assert!(oldest - since <= span, "t={t}: clock {since} too old for {oldest}");
            }
        }
    }

    #[test]
    fn full_buckets_grow_the_newest() {
        let mut c = ParkedClock::default();
        for i in 0..(PARK_BUCKETS as u64 + 4) {
            c.park(i * 100, 10);
        }
        assert_eq!(c.writes(), PARK_BUCKETS + 4);
        for _ in 0..PARK_BUCKETS - 1 {
            c.leave();
        }
        // The newest bucket took the last five writes from its start on.
        assert_eq!(c.since(), Some((PARK_BUCKETS as u64 - 1) * 100));
        assert_eq!(c.writes(), 5);
        for _ in 0..5 {
            c.leave();
        }
        assert_eq!(c.since(), None);
    }
}

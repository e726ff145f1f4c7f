//! Hot-region LRU of the source.
//!
//! The stream keeps up to `capacity` regions locked on the target. A write to
//! a region that is not hot evicts the least recently used hot region (the
//! caller appends UNLOCK for it) and makes its own region hot (the caller
//! appends LOCK). Storage is caller-provided; lookups are linear scans, which
//! is cheap for the few dozen to few thousand hot regions a device keeps.

use core::ops::DerefMut;

/// One slot of the hot-region table (caller storage element).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotSlot {
    region: u64,
    stamp: u64,
    used: bool,
}

/// Outcome of [`HotRegions::touch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// The region was hot already (now most recently used).
    Hit,
    /// The region became hot in a free slot: append LOCK.
    Inserted,
    /// The region became hot and evicted the given region: append UNLOCK
    /// for the evicted region, then LOCK for the new one.
    Evicted(u64),
    /// The table has no slot at all (capacity zero).
    NoCapacity,
}

/// LRU set of hot regions over caller storage.
#[derive(Debug)]
pub struct HotRegions<S: DerefMut<Target = [HotSlot]>> {
    slots: S,
    clock: u64,
}

impl<S: DerefMut<Target = [HotSlot]>> HotRegions<S> {
    /// Creates an empty table over `slots` (every slot is cleared).
    pub fn new(mut slots: S) -> Self {
        for s in slots.iter_mut() {
            *s = HotSlot::default();
        }
        Self { slots, clock: 0 }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of hot regions.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    /// True when no region is hot.
    pub fn is_empty(&self) -> bool {
        !self.slots.iter().any(|s| s.used)
    }

    /// Whether `region` is hot.
    pub fn contains(&self, region: u64) -> bool {
        self.slots.iter().any(|s| s.used && s.region == region)
    }

    /// Number of regions in `first..=last` that are not hot (each needs a
    /// LOCK, and possibly an UNLOCK of an evicted region).
    pub fn misses(&self, first: u64, last: u64) -> u64 {
        let mut n = 0u64;
        let mut r = first;
        loop {
            if !self.contains(r) {
                n = n.saturating_add(1);
            }
            if r >= last {
                break;
            }
            r = r.saturating_add(1);
        }
        n
    }

    /// Number of free slots.
    pub fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| !s.used).count()
    }

    /// Makes `region` the most recently used hot region, evicting the least
    /// recently used one when the table is full.
    pub fn touch(&mut self, region: u64) -> Touch {
        self.clock = self.clock.wrapping_add(1);
        let clock = self.clock;
        if let Some(s) = self.slots.iter_mut().find(|s| s.used && s.region == region) {
            s.stamp = clock;
            return Touch::Hit;
        }
        if let Some(s) = self.slots.iter_mut().find(|s| !s.used) {
            *s = HotSlot {
                region,
                stamp: clock,
                used: true,
            };
            return Touch::Inserted;
        }
        let mut victim: Option<&mut HotSlot> = None;
        for s in self.slots.iter_mut() {
            let older = match &victim {
                None => true,
                Some(v) => s.stamp < v.stamp,
            };
            if older {
                victim = Some(s);
            }
        }
        match victim {
            Some(v) => {
                let old = v.region;
                *v = HotSlot {
                    region,
                    stamp: clock,
                    used: true,
                };
                Touch::Evicted(old)
            }
            None => Touch::NoCapacity,
        }
    }

    /// Forgets every hot region (the target dropped the stream's locks).
    pub fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            *s = HotSlot::default();
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn lru_evicts_oldest() {
        let mut h = HotRegions::new(vec![HotSlot::default(); 2]);
        assert_eq!(h.touch(1), Touch::Inserted);
        assert_eq!(h.touch(2), Touch::Inserted);
        assert_eq!(h.touch(1), Touch::Hit);
        assert_eq!(h.touch(3), Touch::Evicted(2));
        assert!(h.contains(1) && h.contains(3) && !h.contains(2));
        assert_eq!(h.misses(1, 4), 2);
        let mut z = HotRegions::new(vec![]);
        assert_eq!(z.touch(1), Touch::NoCapacity);
    }
}

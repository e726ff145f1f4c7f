//! Hot-region LRU of the source.
//!
//! The stream keeps up to `capacity` regions locked on the target. A write to
//! a region that is not hot evicts the least recently used hot region (the
//! caller appends UNLOCK for it) and makes its own region hot (the caller
//! appends LOCK). Storage is caller-provided; each slot also serves as one
//! bucket of a chained hash table over the slots and as a node of the LRU
//! list, so a lookup, a touch and an eviction cost O(1) on average whatever
//! the number of hot regions.

use core::ops::DerefMut;

/// No slot (end of a list or chain).
const NIL: u32 = u32::MAX;

/// One slot of the hot-region table (caller storage element).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotSlot {
    region: u64,
    /// LRU list: the next older hot slot (free slots: the next free one).
    older: u32,
    /// LRU list: the next more recently used hot slot.
    newer: u32,
    /// Next hot slot in the same hash bucket.
    chain: u32,
    /// First hot slot of hash bucket number (this slot's index).
    head: u32,
    /// A value the owner keeps with the region (the activity log's last
    /// write, or the next block to save; unused by the hot regions).
    seq: u64,
    /// A second such value (the activity log's insertion stamp).
    stamp: u64,
}

impl Default for HotSlot {
    fn default() -> Self {
        Self {
            region: 0,
            older: NIL,
            newer: NIL,
            chain: NIL,
            head: NIL,
            seq: 0,
            stamp: 0,
        }
    }
}

/// A region of the table with the owner's two values (see [`HotSlot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The region.
    pub region: u64,
    /// The owner's first value.
    pub seq: u64,
    /// The owner's second value.
    pub stamp: u64,
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
    /// Usable slots (indices must fit below [`NIL`]).
    cap: usize,
    len: usize,
    /// Least recently used hot slot.
    oldest: u32,
    /// Most recently used hot slot.
    newest: u32,
    /// First free slot (free slots are linked through `older`).
    free: u32,
}

impl<S: DerefMut<Target = [HotSlot]>> HotRegions<S> {
    /// Creates an empty table over `slots` (every slot is cleared).
    pub fn new(slots: S) -> Self {
        let cap = slots.len().min(NIL as usize);
        let mut h = Self {
            slots,
            cap,
            len: 0,
            oldest: NIL,
            newest: NIL,
            free: NIL,
        };
        h.clear();
        h
    }

    fn slot(&self, i: u32) -> Option<&HotSlot> {
        self.slots.get(i as usize)
    }

    fn slot_mut(&mut self, i: u32) -> Option<&mut HotSlot> {
        self.slots.get_mut(i as usize)
    }

    /// Hash bucket (a slot index) of `region`.
    fn bucket(&self, region: u64) -> u32 {
        let h = region.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        // h < 2^32 and cap < 2^32: the product fits, the result is < cap.
        ((h * self.cap as u64) >> 32) as u32
    }

    /// The slot holding hot `region`.
    fn lookup(&self, region: u64) -> Option<u32> {
        let mut i = self.slot(self.bucket(region))?.head;
        while let Some(s) = self.slot(i) {
            if s.region == region {
                return Some(i);
            }
            i = s.chain;
        }
        None
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Number of hot regions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no region is hot.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `region` is hot.
    pub fn contains(&self, region: u64) -> bool {
        self.lookup(region).is_some()
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
        self.cap - self.len
    }

    /// Takes slot `i` out of the LRU list.
    fn lru_unlink(&mut self, i: u32) {
        let Some(&s) = self.slot(i) else { return };
        match self.slot_mut(s.older) {
            Some(o) => o.newer = s.newer,
            None => self.oldest = s.newer,
        }
        match self.slot_mut(s.newer) {
            Some(n) => n.older = s.older,
            None => self.newest = s.older,
        }
    }

    /// Appends slot `i` to the LRU list as the most recently used.
    fn lru_push(&mut self, i: u32) {
        let newest = self.newest;
        if let Some(s) = self.slot_mut(i) {
            s.older = newest;
            s.newer = NIL;
        }
        match self.slot_mut(newest) {
            Some(n) => n.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
    }

    /// Makes `region` the most recently used hot region, evicting the least
    /// recently used one when the table is full.
    pub fn touch(&mut self, region: u64) -> Touch {
        if let Some(i) = self.lookup(region) {
            if i != self.newest {
                self.lru_unlink(i);
                self.lru_push(i);
            }
            return Touch::Hit;
        }
        let (i, evicted) = if let Some(f) = self.slot(self.free) {
            let i = self.free;
            self.free = f.older;
            self.len += 1;
            (i, None)
        } else if let Some(&v) = self.slot(self.oldest) {
            let i = self.oldest;
            self.unchain(i, v.region);
            self.lru_unlink(i);
            (i, Some(v.region))
        } else {
            return Touch::NoCapacity;
        };
        let b = self.bucket(region);
        let head = self.slot(b).map_or(NIL, |s| s.head);
        if let Some(s) = self.slot_mut(i) {
            s.region = region;
            s.chain = head;
        }
        if let Some(s) = self.slot_mut(b) {
            s.head = i;
        }
        self.lru_push(i);
        match evicted {
            Some(old) => Touch::Evicted(old),
            None => Touch::Inserted,
        }
    }

    /// Takes slot `i` (holding `region`) out of its hash chain.
    fn unchain(&mut self, i: u32, region: u64) {
        let b = self.bucket(region);
        let next = self.slot(i).map_or(NIL, |s| s.chain);
        if self.slot(b).map(|s| s.head) == Some(i) {
            if let Some(s) = self.slot_mut(b) {
                s.head = next;
            }
            return;
        }
        let mut p = self.slot(b).map_or(NIL, |s| s.head);
        while let Some(&s) = self.slot(p) {
            if s.chain == i {
                if let Some(ps) = self.slot_mut(p) {
                    ps.chain = next;
                }
                return;
            }
            p = s.chain;
        }
    }

    /// The entry of `region`, if it is in the table.
    pub fn entry(&self, region: u64) -> Option<Entry> {
        let s = self.slot(self.lookup(region)?)?;
        Some(Entry { region, seq: s.seq, stamp: s.stamp })
    }

    /// Sets the owner's values of `region` (false if it is not in the
    /// table).
    pub fn set_entry(&mut self, region: u64, seq: u64, stamp: u64) -> bool {
        let Some(i) = self.lookup(region) else { return false };
        match self.slot_mut(i) {
            Some(s) => {
                s.seq = seq;
                s.stamp = stamp;
                true
            }
            None => false,
        }
    }

    /// Whether every slot holds a region.
    pub fn is_full(&self) -> bool {
        self.len >= self.cap
    }

    /// Adds `region` as the most recently used, with the owner's values,
    /// if it is not in the table and a slot is free (no eviction).
    pub fn insert(&mut self, region: u64, seq: u64, stamp: u64) -> bool {
        if self.is_full() || self.contains(region) {
            return false;
        }
        if self.touch(region) != Touch::Inserted {
            return false;
        }
        self.set_entry(region, seq, stamp)
    }

    /// Takes `region` out of the table (false if it was not in it).
    pub fn remove(&mut self, region: u64) -> bool {
        let Some(i) = self.lookup(region) else { return false };
        self.unchain(i, region);
        self.lru_unlink(i);
        let free = self.free;
        if let Some(s) = self.slot_mut(i) {
            // `head` belongs to bucket `i`, not to the region: it stays.
            *s = HotSlot { older: free, head: s.head, ..HotSlot::default() };
        }
        self.free = i;
        self.len -= 1;
        true
    }

    /// The entries from the least recently used on.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let mut i = self.oldest;
        core::iter::from_fn(move || {
            let s = self.slot(i)?;
            i = s.newer;
            Some(Entry { region: s.region, seq: s.seq, stamp: s.stamp })
        })
    }

    /// Calls `f` with every entry and lets it change the owner's values.
    pub fn update_all(&mut self, mut f: impl FnMut(Entry) -> (u64, u64)) {
        let mut i = self.oldest;
        while let Some(s) = self.slot_mut(i) {
            let (seq, stamp) = f(Entry { region: s.region, seq: s.seq, stamp: s.stamp });
            s.seq = seq;
            s.stamp = stamp;
            i = s.newer;
        }
    }

    /// Forgets every hot region (the target dropped the stream's locks).
    pub fn clear(&mut self) {
        let cap = self.cap;
        for (i, s) in self.slots.iter_mut().enumerate() {
            *s = HotSlot::default();
            // Free list in slot order; slots past `cap` stay unused.
            if i + 1 < cap {
                s.older = (i + 1) as u32;
            }
        }
        self.len = 0;
        self.oldest = NIL;
        self.newest = NIL;
        self.free = if cap > 0 { 0 } else { NIL };
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
        // The index lives in the slots beside the owner's two values.
        assert_eq!(core::mem::size_of::<HotSlot>(), 40);
        let mut z = HotRegions::new(vec![]);
        assert_eq!(z.touch(1), Touch::NoCapacity);
    }
}

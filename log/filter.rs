//! Counting filter of the regions touched by unfinished data records.
//!
//! The target must answer "does an unapplied stream write touch regions
//! `first..=last`?" for every local lock, that is for every read through
//! its device, under an irq-disabled lock. Walking the commit log costs
//! O(records held); this filter answers in O(regions asked about), at most
//! one step per bucket, whatever the log's length.
//!
//! The counters are caller storage (`F: DerefMut<Target = [u32]>`, a
//! power-of-two number of buckets, [`FILTER_BUCKETS`] by default), so the
//! filter itself stays small and never has to pass through a stack.
//!
//! Each counted record (the commit log counts its data records from push
//! until they are done, dropped or reset) adds one to the bucket of every
//! region it touches; the bucket is a hash of the region number. A region
//! whose bucket is zero has no counted record. A record touching more than
//! [`NARROW_REGIONS`] regions is kept instead as an extent in a small table
//! ([`WIDE_SLOTS`] entries, one per distinct extent, each with a count);
//! a wide record that finds no entry adds to an overflow count that makes
//! every check answer "pending" while it is non-zero.
//!
//! Answers may be false positives (a hash collision, an overflow): a
//! reader then waits a little longer. They are never false negatives as
//! long as every [`RegionFilter::add`] is matched by one
//! [`RegionFilter::remove`] of the same extent. Counters saturate and a
//! saturated counter is never decremented again, so even an impossible
//! overflow errs on the safe side. No allocation.

use core::ops::DerefMut;

/// Default number of buckets (a power of two; 4 KiB of counters): what
/// the kernel module and the simulator give the filter.
pub const FILTER_BUCKETS: usize = 1024;
/// A record touching more regions than this is kept as an extent (a
/// 1 MiB WRITE at the smallest region size, 4 KiB, touches 256).
pub const NARROW_REGIONS: u64 = 256;
/// Extents of wide records kept exactly; beyond them, every check
/// answers "pending" until one of the overflowing records leaves.
pub const WIDE_SLOTS: usize = 8;
/// Region shift (log2 of sectors per region) until one is set: 1 MiB
/// regions, the table's default.
pub const DEFAULT_REGION_SHIFT: u32 = 11;

/// One distinct extent of wide records and how many records have it.
#[derive(Clone, Copy)]
struct Wide {
    first: u64,
    last: u64,
    n: u32,
}

impl Wide {
    const EMPTY: Wide = Wide {
        first: 0,
        last: 0,
        n: 0,
    };

    fn is(&self, first: u64, last: u64) -> bool {
        self.n > 0 && self.first == first && self.last == last
    }
}

fn inc(c: &mut u32) {
    *c = c.saturating_add(1);
}

/// A saturated counter stays saturated: its true value is unknown.
fn dec(c: &mut u32) {
    if *c != u32::MAX {
        *c = c.saturating_sub(1);
    }
}

/// Fibonacci hashing into `1 << bits` buckets (`bits` < 64): neighbouring
/// regions, and regions a power of two apart, land in unrelated buckets.
/// A single bucket (`bits == 0`) takes every region.
fn bucket_of(region: u64, bits: u32) -> usize {
    region
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .checked_shr(64u32.saturating_sub(bits))
        .unwrap_or(0) as usize
}

/// Counting filter over region numbers, its counters in caller storage
/// `F`; see the module docs.
pub struct RegionFilter<F: DerefMut<Target = [u32]>> {
    shift: u32,
    buckets: F,
    /// Log2 of `buckets.len()`.
    bits: u32,
    /// Records counted in the buckets.
    narrow: u64,
    wide: [Wide; WIDE_SLOTS],
    /// Wide records without a table entry.
    overflow: u32,
}

impl<F: DerefMut<Target = [u32]>> RegionFilter<F> {
    /// An empty filter over the counters `buckets` (every one is cleared)
    /// for regions of `1 << region_shift` sectors (the shift is capped at
    /// 63). `None` unless `buckets.len()` is a power of two (1 or more).
    pub fn new(mut buckets: F, region_shift: u32) -> Option<Self> {
        if !buckets.len().is_power_of_two() {
            return None;
        }
        let bits = buckets.len().trailing_zeros();
        buckets.fill(0);
        Some(RegionFilter {
            shift: region_shift.min(63),
            buckets,
            bits,
            narrow: 0,
            wide: [Wide::EMPTY; WIDE_SLOTS],
            overflow: 0,
        })
    }

    /// Number of buckets (the length of the caller's counters).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Log2 of the sectors per region.
    pub fn region_shift(&self) -> u32 {
        self.shift
    }

    /// Forgets every record and counts from now on in regions of
    /// `1 << region_shift` sectors (capped at 63).
    pub fn reset_to(&mut self, region_shift: u32) {
        self.clear();
        self.shift = region_shift.min(63);
    }

    /// Forgets every record; the region size stays.
    pub fn clear(&mut self) {
        self.buckets.fill(0);
        self.narrow = 0;
        self.wide.fill(Wide::EMPTY);
        self.overflow = 0;
    }

    /// Makes every check answer "pending" until [`RegionFilter::clear`]
    /// (for a caller that lost track of what it counted).
    pub fn poison(&mut self) {
        self.overflow = u32::MAX;
    }

    /// True when nothing is counted (every counter is zero).
    pub fn is_clear(&self) -> bool {
        self.narrow == 0
            && self.overflow == 0
            && self.wide.iter().all(|w| w.n == 0)
            && self.buckets.iter().all(|&c| c == 0)
    }

    /// Regions touched by `[sector, sector + count)` (an empty extent
    /// counts as its first sector's region).
    fn regions(&self, sector: u64, count: u32) -> (u64, u64) {
        let end = sector.saturating_add(u64::from(count.max(1)));
        let first = sector >> self.shift;
        let last = (end.saturating_sub(1) >> self.shift).max(first);
        (first, last)
    }

    /// Counts a record writing `[sector, sector + count)`.
    pub fn add(&mut self, sector: u64, count: u32) {
        let (first, last) = self.regions(sector, count);
        if last - first >= NARROW_REGIONS {
            let slot = self
                .wide
                .iter()
                .position(|w| w.is(first, last))
                .or_else(|| self.wide.iter().position(|w| w.n == 0));
            match slot.and_then(|i| self.wide.get_mut(i)) {
                Some(w) => {
                    w.first = first;
                    w.last = last;
                    inc(&mut w.n);
                }
                None => inc(&mut self.overflow),
            }
            return;
        }
        self.narrow = self.narrow.saturating_add(1);
        self.each_bucket(first, last, inc);
    }

    /// Uncounts a record counted with [`RegionFilter::add`] (same extent).
    pub fn remove(&mut self, sector: u64, count: u32) {
        let (first, last) = self.regions(sector, count);
        if last - first >= NARROW_REGIONS {
            // An extent with an entry came through it or the overflow; if
            // through the overflow, the overflow stays non-zero until it
            // leaves, so either way no pending record goes unseen.
            match self.wide.iter_mut().find(|w| w.is(first, last)) {
                Some(w) => dec(&mut w.n),
                None => dec(&mut self.overflow),
            }
            return;
        }
        self.narrow = self.narrow.saturating_sub(1);
        self.each_bucket(first, last, dec);
    }

    /// Applies `op` to the bucket of every region in `first..=last` (the
    /// same buckets, in the same way, for a record's add and remove).
    fn each_bucket(&mut self, first: u64, last: u64, op: fn(&mut u32)) {
        let bits = self.bits;
        for r in first..=last {
            if let Some(b) = self.buckets.get_mut(bucket_of(r, bits)) {
                op(b);
            }
        }
    }

    /// False if no counted record touches a region in `first..=last`; true
    /// if one may. O(min(last - first, buckets) + [`WIDE_SLOTS`]).
    pub fn may_pend(&self, first: u64, last: u64) -> bool {
        if first > last {
            return false;
        }
        if self.overflow > 0
            || self
                .wide
                .iter()
                .any(|w| w.n > 0 && w.first <= last && first <= w.last)
        {
            return true;
        }
        if self.narrow == 0 {
            return false;
        }
        if last - first >= self.buckets.len() as u64 {
            // Wider than the filter: some narrow record is counted.
            return true;
        }
        (first..=last).any(|r| {
            self.buckets
                .get(bucket_of(r, self.bits))
                .is_some_and(|&c| c > 0)
        })
    }
}

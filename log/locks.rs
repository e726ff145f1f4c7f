//! Target-side region lock table.
//!
//! Two kinds of holders compete for a region of the target device: the
//! replication stream (LOCK .. UNLOCK records, exclusive) and local users
//! of the target's dm device (`dmsetup message <dev> 0 lock ...`, counted).
//! The stream never waits: a LOCK that meets a local holder is recorded as
//! *rejected*, and from then on new local lockers of that region get
//! `WouldBlock`, so the region drains and the stream wins soon. When the
//! last local holder leaves, the rejected lock becomes grantable
//! ([`LockTable::take_grantable`]).
//!
//! Storage is a caller slice of [`LockSlot`]s (hot_regions plus room for
//! local locks); lookups are linear scans, which is cheap at the sizes used
//! (tens to a few hundred slots) and needs no allocation or hashing.

use core::ops::DerefMut;

/// One region's lock state. A slot is free when it holds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSlot {
    region: u64,
    stream: bool,
    rejected: bool,
    local: u32,
}

impl LockSlot {
    /// A free slot, for initialising caller storage.
    pub const EMPTY: LockSlot = LockSlot {
        region: 0,
        stream: false,
        rejected: false,
        local: 0,
    };

    fn is_free(&self) -> bool {
        !self.stream && !self.rejected && self.local == 0
    }
}

impl Default for LockSlot {
    fn default() -> Self {
        LockSlot::EMPTY
    }
}

/// Outcome of a stream LOCK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockResult {
    /// The stream now holds the region (or already did).
    Granted,
    /// A local user holds it; the rejection is recorded.
    Rejected,
    /// No free slot: the table is too small for the stream's hot set.
    Full,
}

/// Why a local lock was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalLockError {
    /// The stream holds or wants a region in the range; retry later.
    WouldBlock,
    /// Not enough free slots for the range.
    Full,
}

/// Region lock table over caller storage; see the module docs.
pub struct LockTable<S: DerefMut<Target = [LockSlot]>> {
    slots: S,
}

impl<S: DerefMut<Target = [LockSlot]>> LockTable<S> {
    /// A table with every slot of `slots` cleared.
    pub fn new(mut slots: S) -> Self {
        for s in slots.iter_mut() {
            *s = LockSlot::EMPTY;
        }
        LockTable { slots }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.slots.iter().filter(|s| !s.is_free()).count()
    }

    fn find(&self, region: u64) -> Option<&LockSlot> {
        self.slots
            .iter()
            .find(|s| !s.is_free() && s.region == region)
    }

    fn find_mut(&mut self, region: u64) -> Option<&mut LockSlot> {
        self.slots
            .iter_mut()
            .find(|s| !s.is_free() && s.region == region)
    }

    fn find_or_alloc(&mut self, region: u64) -> Option<&mut LockSlot> {
        let idx = self
            .slots
            .iter()
            .position(|s| !s.is_free() && s.region == region)
            .or_else(|| self.slots.iter().position(LockSlot::is_free))?;
        let s = self.slots.get_mut(idx)?;
        s.region = region;
        Some(s)
    }

    /// A stream LOCK of `region`: granted unless a local user holds it, in
    /// which case the rejection is recorded (see module docs).
    pub fn stream_lock(&mut self, region: u64) -> LockResult {
        let Some(s) = self.find_or_alloc(region) else {
            return LockResult::Full;
        };
        if s.stream {
            return LockResult::Granted;
        }
        if s.local > 0 {
            s.rejected = true;
            return LockResult::Rejected;
        }
        s.rejected = false;
        s.stream = true;
        LockResult::Granted
    }

    /// A stream UNLOCK of `region`: drops the stream lock and any recorded
    /// rejection (the source gave the region up). Returns whether the
    /// stream held or wanted it.
    pub fn stream_unlock(&mut self, region: u64) -> bool {
        match self.find_mut(region) {
            Some(s) if s.stream || s.rejected => {
                s.stream = false;
                s.rejected = false;
                true
            }
            _ => false,
        }
    }

    /// Drops every stream lock and rejection (stream restart from scratch).
    pub fn stream_reset(&mut self) {
        for s in self.slots.iter_mut() {
            s.stream = false;
            s.rejected = false;
        }
    }

    /// True if the stream holds `region`.
    pub fn is_stream_locked(&self, region: u64) -> bool {
        self.find(region).is_some_and(|s| s.stream)
    }

    /// True if a stream lock of `region` was rejected and not yet granted.
    pub fn is_rejected(&self, region: u64) -> bool {
        self.find(region).is_some_and(|s| s.rejected)
    }

    /// True if a local user holds any region in `first..=last`. One pass
    /// over the slots, whatever the width of the range.
    pub fn any_local(&self, first: u64, last: u64) -> bool {
        self.slots
            .iter()
            .any(|s| s.local > 0 && first <= s.region && s.region <= last)
    }

    /// Local holders of `region`.
    pub fn local_count(&self, region: u64) -> u32 {
        self.find(region).map_or(0, |s| s.local)
    }

    /// Whether [`LockTable::local_lock`] of `first..=last` would succeed
    /// now (it changes nothing).
    pub fn can_local_lock(&self, first: u64, last: u64) -> Result<(), LocalLockError> {
        if first > last {
            return Ok(());
        }
        // Each region needs a slot: a range wider than the table can never
        // be taken, and checking that first bounds the loops below.
        let width = last - first;
        if width >= self.slots.len() as u64 {
            return Err(LocalLockError::Full);
        }
        let mut missing = 0usize;
        for r in first..=last {
            match self.find(r) {
                Some(s) if s.stream || s.rejected => return Err(LocalLockError::WouldBlock),
                Some(s) if s.local == u32::MAX => return Err(LocalLockError::Full),
                Some(_) => {}
                None => missing += 1,
            }
        }
        let free = self.slots.iter().filter(|s| s.is_free()).count();
        if missing > free {
            return Err(LocalLockError::Full);
        }
        Ok(())
    }

    /// Takes a local lock on every region in `first..=last`, all or none.
    /// `WouldBlock` if the stream holds or wants any of them.
    pub fn local_lock(&mut self, first: u64, last: u64) -> Result<(), LocalLockError> {
        self.can_local_lock(first, last)?;
        if first > last {
            return Ok(());
        }
        for r in first..=last {
            if let Some(s) = self.find_or_alloc(r) {
                s.local += 1;
            }
        }
        Ok(())
    }

    /// Drops one local lock on every region in `first..=last` (regions not
    /// locally held are skipped). Returns true if a rejected stream lock
    /// has become grantable; collect them with [`LockTable::take_grantable`].
    pub fn local_unlock(&mut self, first: u64, last: u64) -> bool {
        let mut grantable = false;
        for s in self.slots.iter_mut() {
            if s.local > 0 && s.region >= first && s.region <= last {
                s.local -= 1;
                if s.local == 0 && s.rejected {
                    grantable = true;
                }
            }
        }
        grantable
    }

    /// Grants one rejected stream lock whose region has no local holder
    /// left and returns its region; call until `None` after an unlock.
    pub fn take_grantable(&mut self) -> Option<u64> {
        let s = self.slots.iter_mut().find(|s| s.rejected && s.local == 0)?;
        s.rejected = false;
        s.stream = true;
        Some(s.region)
    }
}

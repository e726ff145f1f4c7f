//! In-flight host writes of the source.
//!
//! Every accepted host write (WRITE, DISCARD, WRITE_ZEROES, FLUSH) holds one
//! slot from submission until the host bio may complete. While its local I/O
//! is outstanding it blocks overlapping writes (so both sides apply
//! overlapping writes in the same order); in `sync` completion mode it then
//! waits for the target's acknowledgement.
//!
//! A write whose local I/O failed completes at once (with its error), but
//! its slot stays as a repair until [`Inflight::repaired`]: the source
//! re-reads the range from its own device and replicates what is really
//! there, and overlapping writes wait meanwhile so that the re-read sees no
//! newer data than the repair record claims.

use core::ops::DerefMut;

/// One slot of the in-flight table (caller storage element).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InflightSlot {
    seq: u64,
    sector: u64,
    count: u64,
    state: SlotState,
    ok: bool,
    /// When the host submitted it ([`Inflight::stamp`]; 0 until then).
    since: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum SlotState {
    #[default]
    Free,
    /// Local I/O outstanding.
    Local,
    /// Local I/O done, host completion pending (sync mode: waiting for ack).
    Done,
    /// Local I/O failed and the host write completed: the range still
    /// blocks overlapping writes until the repair record is appended.
    Repair,
}

/// A range whose local write failed: what the device holds there now must
/// be re-read and replicated (see [`Inflight::next_repair`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairJob {
    /// Seq of the failed write's record (the repair's token).
    pub seq: u64,
    /// First sector.
    pub sector: u64,
    /// Sectors.
    pub count: u64,
}

/// A host write that may now complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completed {
    /// Sequence number of the write's data record (FLUSH record for a flush).
    pub seq: u64,
    /// False when the local I/O failed.
    pub ok: bool,
}

/// Table of in-flight host writes over caller storage.
///
/// The slots in use are `slots[..used]`, kept sorted by seq (the source
/// assigns increasing seqs, so an insert appends), so every operation
/// costs at most the number of writes in flight, never the table size:
/// `local_done` and `repaired` find their seq by binary search,
/// `overlaps_local` and `take_completed` scan only the slots in use (and
/// return at once when no slot can match, by the counts below), removing
/// a slot shifts the younger ones down by one.
#[derive(Debug)]
pub struct Inflight<S: DerefMut<Target = [InflightSlot]>> {
    slots: S,
    used: usize,
    /// Slots in state `Done`.
    done: usize,
    /// `Done` slots whose local I/O failed (they complete without an ack).
    failed: usize,
    /// Slots in state `Repair`.
    repairs: usize,
}

/// Whether the ranges `a..a+an` and `b..b+bn` share a sector (never when
/// either is empty).
pub(crate) fn overlaps(a: u64, an: u64, b: u64, bn: u64) -> bool {
    an != 0 && bn != 0 && a < b.saturating_add(bn) && b < a.saturating_add(an)
}

impl<S: DerefMut<Target = [InflightSlot]>> Inflight<S> {
    /// Creates an empty table over `slots`.
    pub fn new(mut slots: S) -> Self {
        for s in slots.iter_mut() {
            *s = InflightSlot::default();
        }
        Self {
            slots,
            used: 0,
            done: 0,
            failed: 0,
            repairs: 0,
        }
    }

    /// The slots in use, oldest seq first.
    fn active(&self) -> &[InflightSlot] {
        self.slots.get(..self.used).unwrap_or(&[])
    }

    /// Index of the slot in use holding `seq`.
    fn find(&self, seq: u64) -> Option<usize> {
        self.active().binary_search_by_key(&seq, |s| s.seq).ok()
    }

    /// Frees the slot in use at `i`, keeping the others in seq order.
    fn remove(&mut self, i: usize) {
        let used = self.used;
        if let Some(a) = self.slots.get_mut(..used) {
            if i < used {
                a.copy_within(i + 1.., i);
                if let Some(last) = a.last_mut() {
                    *last = InflightSlot::default();
                }
                self.used = used - 1;
            }
        }
    }

    /// Number of slots in use.
    pub fn len(&self) -> usize {
        self.used
    }

    /// True when no host write is in flight.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// True when every slot is in use.
    pub fn is_full(&self) -> bool {
        self.used >= self.slots.len()
    }

    /// Whether `sector..sector+count` overlaps a write whose local I/O is
    /// still outstanding or whose failed range awaits its repair, other
    /// than the repair of `except`.
    pub fn overlaps_local(&self, sector: u64, count: u64, except: Option<u64>) -> bool {
        // Slots in use that are not Done are Local or Repair.
        if self.used == self.done {
            return false;
        }
        self.active().iter().any(|s| {
            (s.state == SlotState::Local || (s.state == SlotState::Repair && Some(s.seq) != except))
                && overlaps(s.sector, s.count, sector, count)
        })
    }

    /// The oldest range awaiting its repair.
    pub fn next_repair(&self) -> Option<RepairJob> {
        if self.repairs == 0 {
            return None;
        }
        self.active()
            .iter()
            .find(|s| s.state == SlotState::Repair)
            .map(|s| RepairJob {
                seq: s.seq,
                sector: s.sector,
                count: s.count,
            })
    }

    /// The ranges `(sector, count)` of every failed write still awaiting
    /// its repair.
    pub fn repair_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.active()
            .iter()
            .filter(|s| s.state == SlotState::Repair)
            .map(|s| (s.sector, s.count))
    }

    /// The range of failed write `seq`, if it awaits its repair.
    pub fn repair_job(&self, seq: u64) -> Option<RepairJob> {
        let s = self.find(seq).and_then(|i| self.active().get(i))?;
        (s.state == SlotState::Repair).then_some(RepairJob {
            seq: s.seq,
            sector: s.sector,
            count: s.count,
        })
    }

    /// The repair of `seq` is appended (or given up): frees its slot.
    /// False when `seq` awaits no repair.
    pub fn repaired(&mut self, seq: u64) -> bool {
        match self.find(seq) {
            Some(i) if self.active().get(i).map(|s| s.state) == Some(SlotState::Repair) => {
                self.remove(i);
                self.repairs = self.repairs.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// Registers a write; false when the table is full or `seq` is in
    /// flight already (seqs are unique; an increasing seq appends).
    pub fn insert(&mut self, seq: u64, sector: u64, count: u64) -> bool {
        let used = self.used;
        let at = match self.active().last() {
            None => 0,
            Some(l) if l.seq < seq => used,
            Some(_) => match self.active().binary_search_by_key(&seq, |s| s.seq) {
                Ok(_) => return false,
                Err(i) => i,
            },
        };
        let Some(a) = self.slots.get_mut(..used + 1) else {
            return false;
        };
        a.copy_within(at..used, at + 1);
        if let Some(s) = a.get_mut(at) {
            *s = InflightSlot {
                seq,
                sector,
                count,
                state: SlotState::Local,
                ok: true,
                since: 0,
            };
        }
        self.used = used + 1;
        true
    }

    /// Marks the local I/O of `seq` done; false when `seq` is unknown or
    /// was already marked.
    pub fn local_done(&mut self, seq: u64, ok: bool) -> bool {
        let Some(s) = self.find(seq).and_then(|i| self.slots.get_mut(i)) else {
            return false;
        };
        if s.state != SlotState::Local {
            return false;
        }
        s.state = SlotState::Done;
        s.ok = ok;
        self.done += 1;
        if !ok {
            self.failed += 1;
        }
        true
    }

    /// Removes and returns the oldest write whose local I/O is done and,
    /// when `acked` is given, whose seq is at most `acked` (failed local
    /// writes complete at once; those with a range stay as a repair).
    pub fn take_completed(&mut self, acked: Option<u64>) -> Option<Completed> {
        if self.done == 0 {
            return None;
        }
        let failed = self.failed;
        let a = self.active();
        let i = match acked {
            Some(ack) if failed == 0 => a
                .iter()
                .take_while(|s| s.seq <= ack)
                .position(|s| s.state == SlotState::Done)?,
            _ => a.iter().position(|s| {
                s.state == SlotState::Done
                    && (!s.ok
                        || match acked {
                            None => true,
                            Some(ack) => s.seq <= ack,
                        })
            })?,
        };
        let s = self.slots.get_mut(i)?;
        let c = Completed {
            seq: s.seq,
            ok: s.ok,
        };
        self.done = self.done.saturating_sub(1);
        if !s.ok {
            self.failed = self.failed.saturating_sub(1);
        }
        if !s.ok && s.count > 0 {
            s.state = SlotState::Repair;
            self.repairs += 1;
        } else {
            self.remove(i);
        }
        Some(c)
    }

    /// Whether [`Inflight::take_completed`] with `acked` would return a
    /// write.
    pub fn has_completed(&self, acked: Option<u64>) -> bool {
        if self.done == 0 {
            return false;
        }
        if self.failed > 0 || acked.is_none() {
            return true;
        }
        let ack = acked.unwrap_or(0);
        self.active()
            .iter()
            .take_while(|s| s.seq <= ack)
            .any(|s| s.state == SlotState::Done)
    }

    /// Records when the host submitted write `seq` (for
    /// [`Inflight::oldest_waiting_since`]).
    pub fn stamp(&mut self, seq: u64, since: u64) {
        if let Some(s) = self.find(seq).and_then(|i| self.slots.get_mut(i)) {
            s.since = since;
        }
    }

    /// When the oldest write whose local I/O succeeded and which still
    /// waits to complete (sync completion: for its acknowledgement) was
    /// submitted, if one waits.
    pub fn oldest_waiting_since(&self) -> Option<u64> {
        if self.done == self.failed {
            return None;
        }
        self.active()
            .iter()
            .find(|s| s.state == SlotState::Done && s.ok)
            .map(|s| s.since)
    }

    /// Whether a write whose local I/O succeeded waits to complete.
    pub fn has_waiting(&self) -> bool {
        self.done > self.failed
    }

    /// Oldest seq whose local I/O is still outstanding, if any.
    pub fn oldest_local(&self) -> Option<u64> {
        if self.used == self.done + self.repairs {
            return None;
        }
        self.active()
            .iter()
            .find(|s| s.state == SlotState::Local)
            .map(|s| s.seq)
    }

    /// Oldest seq still in flight, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.active().first().map(|s| s.seq)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn overlap_and_completion() {
        let mut t = Inflight::new(vec![InflightSlot::default(); 2]);
        assert!(t.insert(1, 0, 8));
        assert!(t.overlaps_local(7, 1, None));
        assert!(!t.overlaps_local(8, 8, None));
        assert!(t.insert(2, 100, 0));
        assert!(t.is_full());
        assert!(t.local_done(1, true));
        assert!(!t.overlaps_local(0, 8, None));
        assert_eq!(t.take_completed(Some(0)), None);
        assert_eq!(
            t.take_completed(Some(1)),
            Some(Completed { seq: 1, ok: true })
        );
        assert_eq!(t.take_completed(None), None);
    }

    #[test]
    fn failed_write_completes_then_blocks_until_repaired() {
        let mut t = Inflight::new(vec![InflightSlot::default(); 4]);
        assert!(t.insert(5, 16, 8));
        assert!(t.insert(6, 0, 0)); // a flush
        assert!(t.local_done(5, false));
        assert!(t.local_done(6, false));
        // Both complete at once (sync mode too), with their error.
        assert_eq!(
            t.take_completed(Some(0)),
            Some(Completed { seq: 5, ok: false })
        );
        assert_eq!(
            t.take_completed(Some(0)),
            Some(Completed { seq: 6, ok: false })
        );
        // The write's range stays: it blocks overlaps, and counts.
        assert_eq!(t.len(), 1);
        assert!(t.overlaps_local(20, 1, None));
        assert!(!t.overlaps_local(20, 1, Some(5)));
        assert_eq!(
            t.next_repair(),
            Some(RepairJob {
                seq: 5,
                sector: 16,
                count: 8
            })
        );
        assert!(!t.repaired(6));
        assert!(t.repaired(5));
        assert!(t.is_empty());
        assert_eq!(t.next_repair(), None);
        assert!(!t.overlaps_local(20, 1, None));
    }

    #[test]
    fn seq_order_duplicates_and_counts() {
        let mut t = Inflight::new(vec![InflightSlot::default(); 4]);
        assert!(t.insert(10, 0, 8));
        assert!(t.insert(30, 8, 8));
        assert!(t.insert(20, 16, 8)); // older seq: placed in order
        assert!(!t.insert(20, 24, 8)); // in flight already
        assert_eq!(t.oldest(), Some(10));
        assert!(t.local_done(30, true));
        assert!(t.local_done(20, true));
        assert!(!t.local_done(20, true));
        // Sync: only acknowledged seqs, oldest first.
        assert_eq!(
            t.take_completed(Some(25)),
            Some(Completed { seq: 20, ok: true })
        );
        assert_eq!(t.take_completed(Some(25)), None);
        assert!(t.local_done(10, false));
        // A failure completes unacknowledged and becomes a repair.
        assert_eq!(
            t.take_completed(Some(0)),
            Some(Completed { seq: 10, ok: false })
        );
        assert_eq!(
            t.take_completed(None),
            Some(Completed { seq: 30, ok: true })
        );
        assert_eq!(t.take_completed(None), None);
        assert_eq!((t.len(), t.oldest()), (1, Some(10)));
        assert!(t.repaired(10));
        assert!(t.is_empty() && t.oldest().is_none());
    }
}

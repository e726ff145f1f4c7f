//! The activity log: which regions host writes may be changing, kept on
//! the metadata device, so that a crash of the source is followed by a
//! resync of those regions only (DRBD's activity log, md's write-intent
//! bitmap).
//!
//! The dirty bitmap says what the target lacks; it is saved lazily and a
//! crash loses what memory held. A host write in flight, or one the
//! target has not made durable, or one still in the source device's
//! volatile cache, is in none of the saved bits. So the bitmap on the
//! metadata device is the dirty bits OR'd with every chunk of every
//! region in the activity log ([`Source::bitmap_copy`]): the format does
//! not change, and a source loaded after a crash reads the log's regions
//! back as dirty and resyncs them, in whichever direction the crashed
//! source's writes went (the target may hold writes the source lost).
//!
//! ```text
//!   host write to region R
//!     R in the log, saved ──────────────────────────▶ write goes on
//!     R not in the log ──▶ insert R (pending) ──▶ wait (WaitReason::ActivityLog)
//!                            │  a save of R's blocks that began after
//!                            ▼  the insertion ends ok
//!                          R saved ──▶ the waiting write goes on
//!   log full ──▶ evict the least recently used region, if its last
//!                write is durable on the target (or dropped by degraded
//!                mode, its chunks dirty) and covered by a completed flush
//!                of the source's data device; else wait (a flush is
//!                asked for when only the flush is missing)
//! ```
//!
//! An evicted region's bits are cleared lazily, like acknowledged chunks.
//! At a clean stop the data device is flushed and the log emptied: the
//! records the target has not made durable are dirty by then
//! (`mark_unacked`), so a reload resyncs only the bitmap.
//!
//! The log uses a [`HotRegions`] table over its own slots: a slot's `seq`
//! is the region's last host write (while pending: the next bitmap block
//! of the region to save) and its `stamp` is 0 once saved, or the
//! insertion's stamp while pending.

use core::ops::DerefMut;

use super::{Source, WORKER};
use crate::log::meta::bitmap::CHUNKS_PER_BLOCK;
use crate::log::pages::Pages;
use crate::transport::proto::hot::{HotRegions, HotSlot};
use crate::transport::proto::inflight::InflightSlot;
use crate::transport::proto::wake::{due, Instant, SEC};

/// Pause before a failed flush of the data device is tried again.
pub const DATA_FLUSH_RETRY: Instant = SEC;

/// Counters of the activity log (status).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivityStats {
    /// Regions in the log.
    pub used: usize,
    /// Slots of the log.
    pub size: usize,
    /// Regions inserted (each waited for a bitmap save).
    pub inserts: u64,
    /// Regions evicted to make room.
    pub evictions: u64,
    /// Host writes that waited for the log (a save, or room).
    pub waits: u64,
    /// Flushes of the data device the log asked for.
    pub flushes: u64,
    /// Of those, the ones that failed.
    pub flush_errors: u64,
}

/// The activity log (see the module comment).
///
/// # Invariants
///
/// - every region a host write may have changed since the last completed
///   flush of the data device, or whose writes the target has not made
///   durable, is in `table`, or its chunks are dirty;
/// - a region whose `stamp` is 0 has its chunks set in the bitmap on the
///   metadata device; `pending` counts the others;
/// - every host write up to `flushed` is on the data device's stable
///   storage.
pub(super) struct ActivityLog<H: DerefMut<Target = [HotSlot]>> {
    table: HotRegions<H>,
    /// The next insertion's stamp, and the start stamp of the next save
    /// (an insertion after a save began is not in its copy).
    clock: u64,
    pending: usize,
    /// The save in flight: its block and its start stamp.
    saving: Option<(u64, u64)>,
    /// Every host write up to here reached stable storage.
    flushed: u64,
    /// A flush of the data device is wanted (the log is full and only
    /// that keeps a region in it, or the device stops).
    flush_wanted: bool,
    /// A flush in flight covers every host write up to this seq.
    flushing: Option<u64>,
    flush_retry_at: Option<Instant>,
    stats: ActivityStats,
}

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// Gives the source an activity log of `slots.len()` regions (needs
    /// the dirty bitmap: [`Source::attach_bitmap`] first). Without one,
    /// host writes never wait for the metadata device, and a crash of
    /// the source may leave the devices different where it wrote.
    pub fn attach_activity_log(&mut self, slots: H) -> Result<(), super::ResyncError> {
        if self.resync.is_none() {
            return Err(super::ResyncError::NoBitmap);
        }
        let table = HotRegions::new(slots);
        if table.capacity() == 0 {
            return Err(super::ResyncError::NoBitmap);
        }
        let size = table.capacity();
        self.al = Some(ActivityLog {
            table,
            clock: 1,
            pending: 0,
            saving: None,
            flushed: 0,
            flush_wanted: false,
            flushing: None,
            flush_retry_at: None,
            stats: ActivityStats { size, ..ActivityStats::default() },
        });
        Ok(())
    }

    /// The log's counters, if it is attached.
    pub fn activity_stats(&self) -> Option<ActivityStats> {
        self.al.as_ref().map(|a| ActivityStats { used: a.table.len(), ..a.stats })
    }

    /// Whether `chunk` belongs to a region in the log (its bit is set on
    /// the metadata device, whatever the dirty bitmap says).
    pub fn activity_log_has_chunk(&self, chunk: u64) -> bool {
        let Some(a) = self.al.as_ref() else { return false };
        a.table
            .entries()
            .any(|e| self.al_chunks(e.region).is_some_and(|(c0, c1)| c0 <= chunk && chunk <= c1))
    }

    /// Regions the log can hold (no bound without a log).
    pub(super) fn al_capacity(&self) -> u64 {
        self.al.as_ref().map_or(u64::MAX, |a| a.table.capacity() as u64)
    }

    /// Bitmap blocks `(first, last)` holding the chunks of `region`.
    fn al_blocks(&self, region: u64) -> Option<(u64, u64)> {
        let (first, last) = self.al_chunks(region)?;
        Some((first / CHUNKS_PER_BLOCK, last / CHUNKS_PER_BLOCK))
    }

    /// Chunks `(first, last)` of `region`, clamped to the device.
    fn al_chunks(&self, region: u64) -> Option<(u64, u64)> {
        let cs = self.resync.as_ref()?.chunk_shift();
        region_chunks(region, self.shift, cs, self.cfg.dev_sectors)
    }

    /// Every host write up to this seq has left the in-flight slots: its
    /// local write ended (a flush issued now covers it).
    fn local_settled(&self) -> u64 {
        match self.inflight.oldest() {
            Some(s) => s.saturating_sub(1),
            None => self.ring.next_seq().saturating_sub(1),
        }
    }

    /// Whether `seq`, a host write, may leave the log: the target made it
    /// durable (or degraded mode dropped it and marked its chunks dirty)
    /// and a completed flush covered its local write.
    fn al_settled(&self, seq: u64, flushed: u64) -> bool {
        #[cfg(feature = "mutants")]
        {
            use crate::transport::proto::mutant::Mutant;
            if self.mutant == Mutant::AlEvictUnflushed {
                return seq <= self.durable.max(self.degrade.dropped);
            }
            if self.mutant == Mutant::AlEvictUndurable {
                return seq <= flushed;
            }
        }
        seq <= self.durable.max(self.degrade.dropped) && seq <= flushed
    }

    /// Admits a host write to regions `first..=last`: true when each is
    /// in the log and saved. Otherwise inserts those missing (evicting
    /// settled regions to make room) and returns false: the write waits
    /// for the save ([`Self::al_saved`]) or for room.
    pub(super) fn al_admit(&mut self, first: u64, last: u64, now: Instant) -> bool {
        if self.al.is_none() {
            return true;
        }
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::AlNoWait {
            return true;
        }
        let mut ready = true;
        let mut r = first;
        loop {
            if !self.al_admit_one(r, first, last, now) {
                ready = false;
            }
            if r >= last {
                break;
            }
            r += 1;
        }
        if !ready {
            if let Some(a) = self.al.as_mut() {
                a.stats.waits = a.stats.waits.saturating_add(1);
            }
        }
        ready
    }

    fn al_admit_one(&mut self, region: u64, first: u64, last: u64, now: Instant) -> bool {
        let Some(a) = self.al.as_ref() else { return true };
        if let Some(e) = a.table.entry(region) {
            // Most recently used from now on.
            if let Some(a) = self.al.as_mut() {
                a.table.touch(region);
            }
            return e.stamp == 0;
        }
        if a.table.is_full() {
            // The least recently used region not written by this write.
            let Some(old) = a.table.entries().find(|e| e.region < first || e.region > last) else {
                return false;
            };
            let flushed = a.flushed;
            if old.stamp != 0 || !self.al_settled(old.seq, flushed) {
                if old.stamp == 0 && self.al_settled(old.seq, u64::MAX) && old.seq <= self.local_settled() {
                    // Only a flush of the data device keeps it (its local
                    // writes ended: a flush now covers them).
                    if let Some(a) = self.al.as_mut() {
                        a.flush_wanted = true;
                    }
                    self.rearm(WORKER);
                }
                return false;
            }
            self.al_evict(old.region, Some(now));
        }
        let Some((block, _)) = self.al_blocks(region) else { return false };
        let Some(a) = self.al.as_mut() else { return true };
        let stamp = a.clock;
        if !a.table.insert(region, block, stamp) {
            return false;
        }
        a.pending += 1;
        a.stats.inserts = a.stats.inserts.saturating_add(1);
        false
    }

    /// Takes `region` out of the log; its bits are cleared on the
    /// metadata device with the next lazy save.
    fn al_evict(&mut self, region: u64, now: Option<Instant>) {
        let blocks = self.al_blocks(region);
        let Some(a) = self.al.as_mut() else { return };
        if let Some(e) = a.table.entry(region) {
            if e.stamp != 0 {
                a.pending -= 1;
            }
        }
        if a.table.remove(region) {
            a.stats.evictions = a.stats.evictions.saturating_add(1);
        }
        if let (Some((lo, hi)), Some(r)) = (blocks, self.resync.as_mut()) {
            r.unsaved.changed(lo, hi, false, now);
        }
    }

    /// Host write `seq` to regions `first..=last` was appended (or the
    /// repair `seq` of a failed write there): they stay until it settles.
    pub(super) fn al_wrote(&mut self, first: u64, last: u64, seq: u64) {
        let Some(a) = self.al.as_mut() else { return };
        let mut r = first;
        loop {
            if let Some(e) = a.table.entry(r) {
                if e.stamp == 0 {
                    a.table.set_entry(r, e.seq.max(seq), 0);
                }
            }
            if r >= last {
                break;
            }
            r += 1;
        }
    }

    /// ORs the log's chunks into bytes `off..off + out.len()` of bitmap
    /// block `block`'s bits (a copy for a save).
    pub(super) fn al_copy_or(&self, block: u64, off: usize, out: &mut [u8]) {
        let Some(a) = self.al.as_ref() else { return };
        let base = block.saturating_mul(CHUNKS_PER_BLOCK);
        let lo = base.saturating_add(off as u64 * 8);
        let hi = lo.saturating_add(out.len() as u64 * 8);
        for e in a.table.entries() {
            let Some((c0, c1)) = self.al_chunks(e.region) else { continue };
            let (c0, c1) = (c0.max(lo), c1.saturating_add(1).min(hi));
            let mut c = c0;
            while c < c1 {
                let i = (c - lo) as usize;
                if let Some(b) = out.get_mut(i / 8) {
                    if i & 7 == 0 && c + 8 <= c1 {
                        *b = 0xFF;
                        c += 8;
                        continue;
                    }
                    *b |= 1 << (i % 8);
                }
                c += 1;
            }
        }
    }

    /// A save of `block` starts (any save: its copy holds the log as it
    /// is from now on).
    pub(super) fn al_save_started(&mut self, block: u64) {
        if let Some(a) = self.al.as_mut() {
            a.saving = Some((block, a.clock));
            a.clock = a.clock.saturating_add(1);
        }
    }

    /// The block a pending region needs saved next, if any.
    pub(super) fn al_save_due(&self) -> Option<u64> {
        let a = self.al.as_ref()?;
        if a.pending == 0 {
            return None;
        }
        a.table.entries().filter(|e| e.stamp != 0).map(|e| e.seq).min()
    }

    /// The save of `block` ended (`ok`): pending regions inserted before
    /// it began have that block on the metadata device; those with every
    /// block there are saved, and their writes may go on.
    pub(super) fn al_saved(&mut self, block: u64, ok: bool) {
        let Some(cs) = self.resync.as_ref().map(|r| r.chunk_shift()) else { return };
        let (rs, dev) = (self.shift, self.cfg.dev_sectors);
        let Some(a) = self.al.as_mut() else { return };
        let Some((b, at)) = a.saving.take() else { return };
        if b != block || !ok || a.pending == 0 {
            return;
        }
        let mut done = 0usize;
        a.table.update_all(|e| {
            if e.stamp == 0 || e.stamp > at || e.seq != block {
                return (e.seq, e.stamp);
            }
            let last = region_chunks(e.region, rs, cs, dev).map_or(block, |(_, c)| c / CHUNKS_PER_BLOCK);
            if block >= last {
                done += 1;
                (0, 0)
            } else {
                // Its next block, after another save.
                (block + 1, e.stamp)
            }
        });
        a.pending -= done;
        if done > 0 {
            self.unblock();
        }
    }

    /// Whether a flush of the data device is due now (timers aside when
    /// `now` is `None`).
    fn al_flush_due(&self, now: Option<Instant>) -> bool {
        let Some(a) = self.al.as_ref() else { return false };
        let waiting = match (a.flush_retry_at, now) {
            (None, _) => false,
            (Some(t), Some(n)) => !due(Some(t), n),
            (Some(_), None) => true,
        };
        a.flush_wanted && a.flushing.is_none() && !waiting
    }

    /// Whether the worker has a flush of the data device to issue.
    pub(super) fn al_has_work(&self) -> bool {
        self.al_flush_due(None)
    }

    /// The worker's flush step, if one is due: it covers every host write
    /// before the oldest still in flight.
    pub(super) fn al_flush_step(&mut self, now: Instant) -> Option<super::WorkerStep> {
        if !self.al_flush_due(Some(now)) {
            return None;
        }
        let upto = self.local_settled();
        let a = self.al.as_mut()?;
        a.flush_wanted = false;
        a.flush_retry_at = None;
        a.flushing = Some(upto);
        a.stats.flushes = a.stats.flushes.saturating_add(1);
        Some(super::WorkerStep::FlushData)
    }

    /// The flush of the data device ended (`ok`). A failed one is tried
    /// again after [`DATA_FLUSH_RETRY`] (not while the device stops: the
    /// log then stays on the metadata device, and the next load resyncs
    /// its regions).
    pub fn data_flushed(&mut self, ok: bool, now: Instant) {
        let stopping = self.stopping;
        let Some(a) = self.al.as_mut() else { return };
        let Some(upto) = a.flushing.take() else { return };
        if !ok {
            a.stats.flush_errors = a.stats.flush_errors.saturating_add(1);
            if !stopping {
                a.flush_wanted = true;
                a.flush_retry_at = Some(now.saturating_add(DATA_FLUSH_RETRY));
            }
            return;
        }
        a.flushed = a.flushed.max(upto);
        if stopping {
            self.al_empty_at_stop();
        }
        self.unblock();
    }

    /// When the retry of a failed flush is due, if one waits.
    pub(super) fn al_deadline(&self) -> Option<Instant> {
        self.al.as_ref().and_then(|a| if a.flush_wanted { a.flush_retry_at } else { None })
    }

    /// The device stops (after `mark_unacked`): the data device is
    /// flushed, then the log emptied, so that a clean reload does not
    /// resync the log's regions.
    pub(super) fn al_on_stop(&mut self) {
        if let Some(a) = self.al.as_mut() {
            if a.table.is_empty() {
                return;
            }
            a.flush_wanted = true;
            a.flush_retry_at = None;
        }
    }

    /// Empties the log after the stop's flush: every host write is on the
    /// data device, and those the target has not made durable have their
    /// chunks dirty (`mark_unacked`).
    fn al_empty_at_stop(&mut self) {
        let regions: usize = self.al.as_ref().map_or(0, |a| a.table.len());
        for _ in 0..regions {
            let Some(r) = self.al.as_ref().and_then(|a| a.table.entries().next()).map(|e| e.region) else {
                break;
            };
            self.al_evict(r, None);
        }
    }
}

/// Chunks `(first, last)` of `region` (regions of `1 << region_shift`
/// sectors, chunks of `1 << chunk_shift`), clamped to a device of
/// `dev_sectors`; `None` past its end.
fn region_chunks(region: u64, region_shift: u32, chunk_shift: u32, dev_sectors: u64) -> Option<(u64, u64)> {
    let first_sector = region.checked_shl(region_shift).filter(|s| s >> region_shift == region)?;
    if first_sector >= dev_sectors {
        return None;
    }
    let end = first_sector.saturating_add(1u64 << region_shift).min(dev_sectors);
    Some((first_sector >> chunk_shift, (end - 1) >> chunk_shift))
}

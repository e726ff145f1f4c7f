//! When the source's dirty bitmap goes to the metadata device.
//!
//! Bits that are set (chunks the target lacks) are saved at once, and no
//! piece of a chunk is read for the resync before its bit is on the
//! metadata device: a sync that a crash interrupts is never forgotten.
//! Bits that are cleared (chunks the target acknowledged) are saved
//! lazily, at most every [`BITMAP_SAVE_INTERVAL`], and when the sync ends
//! or the device stops: a crash before then only resends chunks the
//! target has (invariant I8: extra resync, never a missed one).
//!
//! The worker saves one block per [`WorkerStep::SaveBitmap`]: it copies
//! the block's bits ([`Source::bitmap_copy`], in pieces, each under the
//! lock), seals the copy (`log::meta::bitmap::seal_block`), writes it to
//! the metadata device and reports [`Source::bitmap_saved`]. A bit that
//! changes during the copy marks its block for another save.

use core::ops::DerefMut;

use super::{Source, WorkerStep};
use crate::log::pages::Pages;
use crate::transport::proto::hot::HotSlot;
use crate::transport::proto::inflight::InflightSlot;
use crate::transport::proto::wake::{due, Instant, SEC};

/// Longest a cleared bit waits before its block is saved.
pub const BITMAP_SAVE_INTERVAL: Instant = SEC;

/// Saves that fail while the device stops and are tried again at once
/// (a set bit lost there is a resync the next start never does); past
/// them the worker exits without the block, so that a dead metadata
/// device cannot keep a suspend or a remove from ending.
pub(super) const STOP_SAVE_TRIES: u8 = 3;

/// Blocks of the bitmap that differ from the metadata device.
///
/// # Invariants
///
/// - `range` covers every block changed since it was last copied for a
///   save (and a block whose save failed);
/// - `sets` is true while a set bit may not be on the metadata device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Unsaved {
    range: Option<(u64, u64)>,
    sets: bool,
    /// The lazy save of cleared bits is due then.
    at: Option<Instant>,
    /// A save failed: none before then.
    retry_at: Option<Instant>,
    /// A block is being written.
    saving: Option<u64>,
    /// Saves that failed.
    errors: u64,
    /// Failed saves still tried again at once while the device stops.
    stop_tries: u8,
}

impl Unsaved {
    /// Blocks `lo..=hi` changed; `set`: a bit was set in them.
    pub(super) fn changed(&mut self, lo: u64, hi: u64, set: bool, now: Option<Instant>) {
        self.range = Some(self.range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        if set {
            self.sets = true;
        } else if self.at.is_none() {
            self.at = now.map(|t| t.saturating_add(BITMAP_SAVE_INTERVAL));
        }
    }

    /// Whether a bit that was set is not on the metadata device yet.
    pub(super) fn has_unsaved_sets(&self) -> bool {
        self.sets
    }

    /// Whether a save is due: sets at once, clears when `flush` (the sync
    /// ended, the device stops) or their timer says, none while a failed
    /// save waits. Without `now`, timers aside (a sleeper's step names
    /// its own deadline).
    fn due(&self, now: Option<Instant>, flush: bool) -> bool {
        self.idle(now) && self.range.is_some() && (self.sets || flush || now.is_some_and(|n| due(self.at, n)))
    }

    /// Whether a save may start: none in flight, no failed one waiting.
    fn idle(&self, now: Option<Instant>) -> bool {
        let waiting = match (self.retry_at, now) {
            (None, _) => false,
            (Some(t), Some(n)) => n < t,
            (Some(_), None) => true,
        };
        self.saving.is_none() && !waiting
    }

    /// The earliest timer.
    fn deadline(&self) -> Option<Instant> {
        match (self.retry_at, self.at) {
            (Some(r), _) => Some(r),
            (None, a) if self.range.is_some() => a,
            _ => None,
        }
    }
}

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// Whether every change must be saved now: the sync ended or the
    /// device stops.
    fn save_flush(&self) -> bool {
        self.stopping || !self.is_syncing()
    }

    /// Whether the worker has a block to save (timers aside).
    pub(super) fn save_has_work(&self) -> bool {
        self.resync.as_ref().is_some_and(|r| {
            r.unsaved.due(None, self.save_flush()) || (r.unsaved.idle(None) && self.al_save_due().is_some())
        })
    }

    /// The worker's save step, if one is due.
    pub(super) fn save_step(&mut self, now: Instant) -> Option<WorkerStep> {
        let flush = self.save_flush();
        // A region entering the activity log first: a host write waits.
        let al_block = self.al_save_due();
        let r = self.resync.as_mut()?;
        let u = &mut r.unsaved;
        let block = match al_block {
            Some(block) if u.idle(Some(now)) => block,
            _ => {
                if !u.due(Some(now), flush) {
                    return None;
                }
                let (lo, hi) = u.range?;
                u.range = (lo < hi).then_some((lo + 1, hi));
                if u.range.is_none() {
                    u.at = None;
                }
                lo
            }
        };
        u.retry_at = None;
        u.saving = Some(block);
        self.al_save_started(block);
        Some(WorkerStep::SaveBitmap { block })
    }

    /// The device stops: a save waiting after a failure is tried now,
    /// and one that fails from here on is tried again at once, up to
    /// [`STOP_SAVE_TRIES`] times.
    pub(super) fn save_on_stop(&mut self) {
        if let Some(r) = self.resync.as_mut() {
            r.unsaved.retry_at = None;
            r.unsaved.stop_tries = STOP_SAVE_TRIES;
        }
    }

    /// When the next lazy save is due, if any.
    pub(super) fn save_deadline(&self) -> Option<Instant> {
        self.resync.as_ref().and_then(|r| r.unsaved.deadline())
    }

    /// Copies bytes `off..off + out.len()` of bitmap block `block`'s bits
    /// for its save (see the module comment); false past the end.
    pub fn bitmap_copy(&self, block: u64, off: usize, out: &mut [u8]) -> bool {
        let ok = self
            .resync
            .as_ref()
            .is_some_and(|r| r.bits.copy_bits(block, off, out));
        if ok {
            // The activity log's regions are dirty on the metadata device.
            self.al_copy_or(block, off, out);
        }
        ok
    }

    /// The save of `block` ended (`ok`: it is on the metadata device as
    /// copied). A failed save is tried again after
    /// [`BITMAP_SAVE_INTERVAL`], or at once while the device stops (see
    /// [`STOP_SAVE_TRIES`]).
    pub fn bitmap_saved(&mut self, block: u64, ok: bool, now: Instant) {
        if self.resync.as_ref().is_some_and(|r| r.unsaved.saving == Some(block)) {
            self.al_saved(block, ok);
        }
        let stopping = self.stopping;
        let Some(r) = self.resync.as_mut() else {
            return;
        };
        let u = &mut r.unsaved;
        if u.saving != Some(block) {
            return;
        }
        u.saving = None;
        if !ok {
            // Tried again (with whatever changed meanwhile) later; a set
            // bit it held still keeps resync reads back. A device that
            // stops tries at once, a few times, then exits without it
            // (the log and `bitmap_errors` say so).
            u.errors = u.errors.saturating_add(1);
            if stopping && u.stop_tries > 0 {
                u.stop_tries -= 1;
                u.changed(block, block, false, None);
                u.retry_at = None;
                return;
            }
            let t = now.saturating_add(BITMAP_SAVE_INTERVAL);
            u.changed(block, block, false, None);
            u.retry_at = Some(t);
            u.at = Some(u.at.map_or(t, |a| a.max(t)));
            return;
        }
        if u.range.is_none() {
            u.sets = false;
        }
        self.unblock();
    }

    /// True when the metadata device holds the bitmap as memory does.
    pub fn bitmap_is_saved(&self) -> bool {
        match self.resync.as_ref() {
            Some(r) => r.unsaved.range.is_none() && r.unsaved.saving.is_none(),
            None => true,
        }
    }

    /// Failed saves of bitmap blocks.
    pub fn bitmap_save_errors(&self) -> u64 {
        self.resync.as_ref().map_or(0, |r| r.unsaved.errors)
    }
}

//! The target's durable point: the highest seq such that every record up
//! to it is applied *and* covered by a completed flush of the data device.
//!
//! A record is applied once its bio completed, which may leave it in the
//! device's volatile write cache; a power loss then loses it. The source
//! keeps every record in its ring until the target reports it durable
//! (the ACK's second seq, protocol 4), so a target that comes back from a
//! power loss gets those records again.
//!
//! The applier flushes in groups: whenever records are applied past the
//! durable point and no flush is in flight, it issues one
//! ([`ApplierStep::Flush`]) covering everything applied at that moment;
//! records applied meanwhile wait for the next. A FLUSH record of the
//! stream does the same job (it waits for every earlier write and flushes
//! the device), so its completion moves the durable point too. A device
//! without a volatile cache completes these flushes at once (the block
//! layer drops them).
//!
//! [`ApplierStep::Flush`]: super::ApplierStep::Flush

use core::ops::DerefMut;

use super::{Target, APPLIER};
use crate::log::commit::WindowSlot;
use crate::log::locks::LockSlot;
use crate::log::pages::Pages;
use crate::transport::proto::wake::{due, Instant};

/// Durable-point bookkeeping.
///
/// # Invariants
///
/// - `upto <= ` the commit log's applied point whenever a flush completed
///   (a flush covers only records applied before it was issued);
/// - `flushing` is `Some(s)` while one flush covering records up to `s`
///   is in flight, and there is never more than one; `stale` only while
///   one is (it was issued for a stream that ended);
/// - `sent <= upto` except after a new stream reset both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Durable {
    /// Every record up to this seq is on stable storage.
    pub(super) upto: u64,
    /// The durable point the last ACK carried.
    pub(super) sent: u64,
    /// The flush in flight covers records up to this seq.
    flushing: Option<u64>,
    /// The flush in flight belongs to a stream that ended: its seqs are
    /// not the new stream's (a new source table starts again at 1).
    stale: bool,
    /// A flush failed: none before then.
    retry_at: Option<Instant>,
    /// Flushes issued, and failed.
    pub(super) flushes: u64,
    pub(super) errors: u64,
}

impl Durable {
    /// A new stream starts after `base`: what lies before it is not this
    /// stream's to make durable.
    pub(super) fn reset(&mut self, base: u64) {
        self.upto = base;
        self.sent = base;
        // Still in flight (the applier waits for it before it exits),
        // but it covers nothing of the new stream.
        self.stale = self.flushing.is_some();
    }
}

impl<P, W, F, L> Target<P, W, F, L>
where
    P: Pages,
    W: DerefMut<Target = [WindowSlot]>,
    F: DerefMut<Target = [u32]>,
    L: DerefMut<Target = [LockSlot]>,
{
    /// The flush the applier should issue now, if any: records applied
    /// past the durable point, none in flight, no failure waiting (a
    /// passed retry deadline is cleared first by `flush_retry_due`).
    pub(super) fn flush_due(&self) -> Option<u64> {
        let d = &self.durable;
        let applied = self.log.applied_upto();
        (applied > d.upto && d.flushing.is_none() && d.retry_at.is_none()).then_some(applied)
    }

    /// The applier's clock: a failed flush's pause is over. (Cleared here,
    /// not kept: with nothing left to flush, a past deadline would wake
    /// the applier again and again.)
    pub(super) fn flush_retry_due(&mut self, now: Instant) {
        if due(self.durable.retry_at, now) {
            self.durable.retry_at = None;
        }
    }

    /// The applier issues the flush [`Target::flush_due`] named.
    pub(super) fn flush_issued(&mut self, upto: u64) {
        self.durable.flushing = Some(upto);
        self.durable.retry_at = None;
        self.durable.flushes = self.durable.flushes.saturating_add(1);
    }

    /// Reports the end of the flush of [`super::ApplierStep::Flush`]
    /// (any context). A failed flush is tried again after
    /// [`super::RETRY`]: the records stay in the source's ring meanwhile.
    pub fn flush_done(&mut self, upto: u64, ok: bool, now: Instant) {
        if self.durable.flushing != Some(upto) {
            return;
        }
        self.durable.flushing = None;
        if core::mem::take(&mut self.durable.stale) {
            // Of an old stream: what the new one applied meanwhile waits
            // for the next flush (`applier_has_work`).
            return;
        }
        if ok {
            // A flush for what was applied meanwhile is work the applier
            // is woken for (`applier_has_work`).
            self.durable_to(upto);
        } else {
            self.durable.errors = self.durable.errors.saturating_add(1);
            self.durable.retry_at = Some(now.saturating_add(super::RETRY));
            // A new deadline to sleep until.
            self.rearm(APPLIER);
        }
    }

    /// Every record up to `upto` is durable (a flush, or a FLUSH record,
    /// completed), as far as they are applied: a record that failed
    /// before it is not on the device at all.
    pub(super) fn durable_to(&mut self, upto: u64) {
        let upto = upto.min(self.log.applied_upto());
        if upto > self.durable.upto {
            self.durable.upto = upto;
        }
    }

    /// When a failed flush is tried again, if one waits.
    pub(super) fn flush_deadline(&self) -> Option<Instant> {
        self.durable.retry_at
    }

    /// Whether a flush is in flight (a stopping applier waits for it).
    pub(super) fn flush_in_flight(&self) -> bool {
        self.durable.flushing.is_some()
    }

    /// Highest seq reported durable or to be reported: every record up to
    /// it is applied and flushed.
    pub fn durable_seq(&self) -> u64 {
        self.durable.upto
    }

    /// Flushes issued for the durable point, and how many failed.
    pub fn flush_stats(&self) -> (u64, u64) {
        (self.durable.flushes, self.durable.errors)
    }
}

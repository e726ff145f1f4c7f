//! The target's applier thread (records to the device, reads that may go,
//! failed-write retries, the suspend's grace) and the `lock` messages'
//! waits.

use core::ops::DerefMut;

use super::{LocalLock, Target, APPLIER, LOCKER, MAX_MSG_LOCKS};
use crate::log::commit::{IssueView, WindowSlot};
use crate::log::locks::LockSlot;
use crate::log::pages::Pages;
use crate::log::record::Kind;
use crate::transport::proto::wake::{due, Instant, SEC};

/// Failed device writes are retried this often.
pub const RETRY: Instant = SEC;
/// How long a suspend waits for reads held behind stream writes while no
/// record gets applied; then they fail, so suspend and remove end.
pub const SUSPEND_GRACE: Instant = 10 * SEC;
/// How long `dmsetup message .. lock` waits for its grant.
pub const LOCK_WAIT: Instant = 5 * SEC;
/// Records handed to the device per [`ApplierStep::Issue`].
pub const APPLY_BATCH: usize = 32;

/// How a device I/O ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoStatus {
    /// Done.
    Ok,
    /// Failed (kept and retried every [`RETRY`]).
    Failed,
    /// The device does not support the operation (EOPNOTSUPP): a DISCARD
    /// counts as done, a WRITE_ZEROES is retried as writes of zeroes.
    Unsupported,
}

/// What the applier thread does next, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplierStep {
    /// The device stops and no I/O of ours is in flight: return.
    Exit,
    /// Nothing to do: sleep until woken or until this instant.
    Sleep {
        /// Timer (retry of failed writes, suspend grace), if any.
        until: Option<Instant>,
    },
    /// The suspend's grace ran out: fail every waiting read, calling
    /// [`Target::read_failed`] for each.
    FailReads,
    /// Submit, in order, the waiting reads for which
    /// [`Target::read_may_go`] says yes; stop at the first that must wait.
    Reads,
    /// Hand records to the device: up to [`APPLY_BATCH`] from
    /// [`Target::poll_issue`], each reported with [`Target::io_done`].
    Issue,
    /// Flush the data device's volatile cache (an empty write with
    /// PREFLUSH), without waiting for it; report its end with
    /// [`Target::flush_done`] and this `upto` (see `durable.rs`).
    Flush {
        /// Every record up to this seq is applied; the flush makes them
        /// durable.
        upto: u64,
    },
}

/// Answer to a `lock` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockReply {
    /// Held; released by `unlock` with the same range.
    Granted,
    /// Not yet: sleep until woken or `until`, then [`Target::lock_poll`].
    Wait {
        /// The wait's deadline.
        until: Instant,
    },
    /// The range is empty or past the end of the device (EINVAL).
    Invalid,
    /// Too many locks held, another lock waits, or the wait timed out
    /// (EBUSY).
    Busy,
}

/// The applier's and the lockers' state.
pub(super) struct Steps {
    pub(super) retry_at: Option<Instant>,
    /// The data device refused WRITE_ZEROES: zero it with writes instead.
    pub(super) no_write_zeroes: bool,
    /// Bumped whenever a data record is applied (or the log is reset): a
    /// waiting read may go then.
    progress_gen: u64,
    read_gen: u64,
    reads_waiting: usize,
    pub(super) suspend_until: Option<Instant>,
    /// The `lock` message waiting for its grant: range and deadline.
    waiter: Option<(u64, u64, Instant)>,
    msg_locks: [Option<(u64, u64)>; MAX_MSG_LOCKS],
}

impl Steps {
    pub(super) fn new() -> Steps {
        Steps {
            retry_at: None,
            no_write_zeroes: false,
            progress_gen: 0,
            read_gen: 0,
            reads_waiting: 0,
            suspend_until: None,
            waiter: None,
            msg_locks: [None; MAX_MSG_LOCKS],
        }
    }

    pub(super) fn progress(&mut self) {
        self.progress_gen = self.progress_gen.wrapping_add(1);
    }
}

impl<P, W, F, L> Target<P, W, F, L>
where
    P: Pages,
    W: DerefMut<Target = [WindowSlot]>,
    F: DerefMut<Target = [u32]>,
    L: DerefMut<Target = [LockSlot]>,
{
    /// Whether the records' ordering rules and the local locks let
    /// [`Target::poll_issue`] start the record with header `h`.
    fn may_issue(&self, h: &crate::log::record::Header) -> bool {
        match h.kind {
            Kind::Lock => !self.locks.is_rejected(h.sector),
            // Its answer needs a slot (`digest.rs`); the sender frees one.
            Kind::DigestReq if !self.digests.room() => false,
            k if k.has_range() => super::regions_free_of_local(&self.locks, self.shift, h),
            _ => true,
        }
    }

    fn reads_may_move(&self) -> bool {
        self.steps.reads_waiting > 0 && self.steps.read_gen != self.steps.progress_gen
    }

    pub(super) fn applier_has_work(&self) -> bool {
        self.reads_may_move()
            || self.flush_due().is_some()
            || self.log.can_issue_if(|h| self.may_issue(h))
    }

    /// The applier thread's next step (see [`ApplierStep`]).
    pub fn poll_applier(&mut self, now: Instant) -> ApplierStep {
        self.sleepers.running(APPLIER);
        if self.stopping {
            if self.log.in_flight() == 0 && !self.flush_in_flight() {
                return ApplierStep::Exit;
            }
            // The device finishes what was started first.
            self.sleepers.sleep(APPLIER);
            return ApplierStep::Sleep { until: None };
        }
        if due(self.steps.suspend_until, now) && self.steps.reads_waiting > 0 {
            return ApplierStep::FailReads;
        }
        if due(self.steps.retry_at, now) {
            let _ = self.retry_failed();
        }
        if self.reads_may_move() {
            self.steps.read_gen = self.steps.progress_gen;
            return ApplierStep::Reads;
        }
        // Before more writes: one flush at a time covers every record
        // applied so far, so the durable point keeps up with a busy
        // stream.
        self.flush_retry_due(now);
        if let Some(upto) = self.flush_due() {
            self.flush_issued(upto);
            return ApplierStep::Flush { upto };
        }
        if self.log.can_issue_if(|h| self.may_issue(h)) {
            return ApplierStep::Issue;
        }
        self.sleepers.sleep(APPLIER);
        let retry = crate::transport::proto::wake::earliest(self.steps.retry_at, self.flush_deadline());
        let until = match self.steps.reads_waiting {
            0 => retry,
            _ => crate::transport::proto::wake::earliest(retry, self.steps.suspend_until),
        };
        ApplierStep::Sleep { until }
    }

    /// The next device operation to start: a data record (WRITE with its
    /// payload from [`IssueView::chunks`] over [`Target::pages`],
    /// DISCARD, WRITE_ZEROES (as writes of zeroes when
    /// [`Target::zeroes_by_writes`]); honour FLAG_FUA, and FLAG_PREFLUSH
    /// by flushing first) or a FLUSH. Report its end with
    /// [`Target::io_done`].
    ///
    /// Records that cannot start now are skipped and stay pending (they
    /// keep blocking what they block): a data record whose region a local
    /// user holds and a LOCK whose region is rejected (it counts as
    /// applied only once granted, so an ACK covering it tells the source
    /// the grant happened). LOCK and UNLOCK records are acted on at
    /// arrival and pass here in order, with no device I/O.
    pub fn poll_issue(&mut self) -> Option<IssueView> {
        loop {
            let mut waits = 0u64;
            let (locks, shift) = (&self.locks, self.shift);
            let digest_room = self.digests.room();
            let v = self.log.next_to_issue_if(|h| match h.kind {
                Kind::Lock => !locks.is_rejected(h.sector),
                // Its answer needs a slot (`digest.rs`).
                Kind::DigestReq if !digest_room => false,
                k if k.has_range() => {
                    let free = super::regions_free_of_local(locks, shift, h);
                    if !free {
                        waits += 1;
                    }
                    free
                }
                _ => true,
            });
            self.stats.local_waits = self.stats.local_waits.saturating_add(waits);
            let v = v?;
            match v.header.kind {
                Kind::Lock | Kind::Unlock => {
                    self.log.complete(v.seq, true);
                }
                Kind::DigestReq => {
                    self.digest_issued();
                    return Some(v);
                }
                _ => return Some(v),
            }
        }
    }

    /// Whether WRITE_ZEROES records go to the device as writes of zeroes
    /// (it refused WRITE_ZEROES once).
    pub fn zeroes_by_writes(&self) -> bool {
        self.steps.no_write_zeroes
    }

    fn read_range(&self, sector: u64, sectors: u64) -> (u64, u64) {
        let last = sector.saturating_add(sectors.max(1) - 1);
        (sector >> self.shift, last >> self.shift)
    }

    /// Whether unapplied stream writes may touch the range (a counting
    /// filter: never a false "no").
    fn read_blocked(&self, sector: u64, sectors: u64) -> bool {
        let (first, last) = self.read_range(sector, sectors);
        self.log.may_be_pending(first, last)
    }

    /// A read through the target's own device arrives (dm `map`, any
    /// context): true if it may go now; false: park it at the tail of the
    /// waiting reads (they keep their order).
    pub fn read_arrives(&mut self, sector: u64, sectors: u64) -> bool {
        if self.steps.reads_waiting > 0 || self.read_blocked(sector, sectors) {
            if self.steps.reads_waiting == 0 && self.steps.suspend_until.is_some() {
                // The applier went to sleep without the suspend's grace
                // as its deadline (no read waited then): it must watch
                // it now, or this read waits as long as the stream stalls.
                self.sleepers.rearm(APPLIER);
            }
            self.steps.reads_waiting += 1;
            return false;
        }
        true
    }

    /// Whether the oldest waiting read (of this range) may go now; if so
    /// it leaves the waiting reads.
    pub fn read_may_go(&mut self, sector: u64, sectors: u64) -> bool {
        if self.read_blocked(sector, sectors) {
            return false;
        }
        self.steps.reads_waiting = self.steps.reads_waiting.saturating_sub(1);
        true
    }

    /// A waiting read was failed ([`ApplierStep::FailReads`]).
    pub fn read_failed(&mut self) {
        self.steps.reads_waiting = self.steps.reads_waiting.saturating_sub(1);
        self.stats.reads_failed = self.stats.reads_failed.saturating_add(1);
    }

    /// Reads waiting for stream writes.
    pub fn reads_waiting(&self) -> usize {
        self.steps.reads_waiting
    }

    /// A write through the target's own device: refused (the replica is
    /// read-only); returns how many so far (log the 1st, 2nd, 4th...).
    pub fn write_refused(&mut self) -> u64 {
        self.stats.writes_refused = self.stats.writes_refused.saturating_add(1);
        self.stats.writes_refused
    }

    fn msg_slot_free(&self) -> bool {
        self.steps.msg_locks.iter().any(|l| l.is_none())
    }

    fn try_msg_lock(&mut self, sector: u64, count: u64) -> Option<LockReply> {
        match self.local_lock(sector, count) {
            LocalLock::Granted => {
                if let Some(slot) = self.steps.msg_locks.iter_mut().find(|l| l.is_none()) {
                    *slot = Some((sector, count));
                }
                Some(LockReply::Granted)
            }
            LocalLock::Invalid => Some(LockReply::Invalid),
            LocalLock::WouldBlock | LocalLock::Full => None,
        }
    }

    /// `dmsetup message .. lock <sector> <count>`: takes an explicit
    /// local lock, or says how long to wait for it (one waiter at a time).
    pub fn lock_request(&mut self, sector: u64, count: u64, now: Instant) -> LockReply {
        if !self.msg_slot_free() || self.steps.waiter.is_some() {
            return LockReply::Busy;
        }
        if let Some(r) = self.try_msg_lock(sector, count) {
            return r;
        }
        let until = now.saturating_add(LOCK_WAIT);
        self.steps.waiter = Some((sector, count, until));
        self.sleepers.sleep(LOCKER);
        LockReply::Wait { until }
    }

    pub(super) fn locker_has_work(&self) -> bool {
        let Some((sector, count, _)) = self.steps.waiter else {
            return false;
        };
        let Some((first, last)) = self.range(sector, count) else {
            return true;
        };
        !self.log.may_be_pending(first, last) && self.locks.can_local_lock(first, last).is_ok()
    }

    /// The waiting `lock` message asks again (woken, or its deadline).
    pub fn lock_poll(&mut self, now: Instant) -> LockReply {
        self.sleepers.running(LOCKER);
        let Some((sector, count, until)) = self.steps.waiter else {
            return LockReply::Busy;
        };
        if self.stopping {
            self.steps.waiter = None;
            return LockReply::Busy;
        }
        if let Some(r) = self.try_msg_lock(sector, count) {
            self.steps.waiter = None;
            return r;
        }
        if now >= until {
            self.steps.waiter = None;
            return LockReply::Busy;
        }
        self.sleepers.sleep(LOCKER);
        LockReply::Wait { until }
    }

    /// `dmsetup message .. unlock <sector> <count>`: false if no such
    /// explicit lock is held.
    pub fn lock_release(&mut self, sector: u64, count: u64) -> bool {
        let Some(slot) = self
            .steps
            .msg_locks
            .iter_mut()
            .find(|l| **l == Some((sector, count)))
        else {
            return false;
        };
        *slot = None;
        self.local_unlock(sector, count);
        true
    }

    /// Explicit local locks held.
    pub fn msg_locks_len(&self) -> usize {
        self.steps.msg_locks.iter().filter(|l| l.is_some()).count()
    }
}

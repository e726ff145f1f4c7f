//! Online verify and the checksum sync: compare the source's data with
//! the target's by SHA-256 digests, a piece at a time, in stream order,
//! and mark the chunks that differ dirty (the resync then sends them).
//!
//! A piece (at most a chunk, as for the resync) is read from the source's
//! device under the resync's ordering rules: only once no host write to
//! it has local I/O outstanding, and host writes to it wait until its
//! DIGEST_REQ record is appended. The glue hashes what it read and the
//! record goes into the stream: the target reads the same range after
//! every earlier overlapping record and before every later one, so both
//! digests describe the device at the same point of the stream. The
//! target's DIGEST answer is compared with the source's; a mismatch (or a
//! target that could not read) marks the chunk dirty and counts it in
//! `oos`. The chunks of requests still unanswered when a connection is
//! lost are marked dirty too (resending a chunk is harmless) and counted
//! in `unanswered`.
//!
//! ```text
//!   Idle --due--> Reading --read ends--> Read --append DIGEST_REQ--> Idle
//!                                         (compared when DIGEST arrives)
//! ```
//!
//! `verify` (a message) compares a range and counts what differs; the
//! checksum sync (`initial_sync checksum`, for a new target or one of an
//! older generation) compares the whole device inside a sync, so the
//! target stays inconsistent until every piece is compared and every
//! differing chunk sent.

use core::ops::DerefMut;

use super::{Origin, Source, Submit};
use crate::log::pages::Pages;
use crate::log::record::{Crc32c, DIGEST_LEN};
use crate::transport::proto::hot::HotSlot;
use crate::transport::proto::inflight::InflightSlot;

/// DIGEST_REQ records appended and not yet answered, at most.
pub const VERIFY_PENDING: usize = 16;

/// One piece to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyJob {
    /// The chunk it lies in.
    pub chunk: u64,
    /// First sector.
    pub sector: u64,
    /// Sectors.
    pub count: u32,
}

/// Progress and counters (status).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyStats {
    /// A pass is under way (or its answers are awaited).
    pub running: bool,
    /// The pass belongs to a checksum sync (not an operator's verify).
    pub checksum: bool,
    /// Sectors of the pass compared or in flight, and its total.
    pub done: u64,
    /// Sectors the pass covers.
    pub total: u64,
    /// Chunks found differing by the current (or last) pass.
    pub oos: u64,
    /// Pieces the source could not read (not compared; counted, not
    /// marked).
    pub read_errors: u64,
    /// Pieces compared since the table was loaded.
    pub compared: u64,
    /// Pieces whose answer a lost connection took: their chunks are
    /// marked dirty (resent), not counted in `oos`.
    pub unanswered: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pending {
    seq: u64,
    chunk: u64,
    /// The piece is the whole chunk (an equal digest may clear its bit).
    whole: bool,
    digest: [u8; DIGEST_LEN],
}

/// The engine's state inside the source machine.
///
/// # Invariants
///
/// - `pending[..npending]` holds appended requests in seq order, each not
///   answered yet;
/// - `next <= end`; every sector of the pass before `next` was read (or
///   given up) and its request appended.
pub(super) struct Verify {
    next: u64,
    end: u64,
    phase: super::piece::Piece<VerifyJob>,
    pending: [Pending; VERIFY_PENDING],
    npending: usize,
    /// The last chunk counted in `oos` (pieces of one chunk count once).
    last_oos: Option<u64>,
    stats: VerifyStats,
}

impl Verify {
    fn busy(&self) -> Option<VerifyJob> {
        self.phase.busy()
    }

    fn finished(&self) -> bool {
        self.next >= self.end && self.phase.is_idle() && self.npending == 0
    }

    /// Moves the cursor past `job` if it is where the pass stands (a pass
    /// started over while `job` was read has moved elsewhere).
    fn advance(&mut self, job: &VerifyJob) {
        if self.next == job.sector {
            self.next = job.sector + u64::from(job.count);
            self.stats.done = self.stats.done.saturating_add(u64::from(job.count));
        }
    }
}

/// Why a verify cannot start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No dirty bitmap (no metadata device): nothing to mark.
    NoBitmap,
    /// An empty range, or one past the device's end.
    Range,
}

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// `dmsetup message <source> 0 verify [<sector> <sectors>]`: compares
    /// `sectors` sectors at `sector` (the whole device without a range)
    /// with the target, marking what differs dirty. A pass under way
    /// starts over on the new range.
    pub fn verify(&mut self, sector: u64, sectors: u64) -> Result<(), VerifyError> {
        self.start_verify(sector, sectors, false)
    }

    /// Starts a pass over `sector..+sectors` (`checksum`: for a sync).
    pub(super) fn start_verify(
        &mut self,
        sector: u64,
        sectors: u64,
        checksum: bool,
    ) -> Result<(), VerifyError> {
        if self.resync.is_none() {
            return Err(VerifyError::NoBitmap);
        }
        let end = sector.checked_add(sectors).ok_or(VerifyError::Range)?;
        if sectors == 0 || end > self.cfg.dev_sectors {
            return Err(VerifyError::Range);
        }
        let (pending, npending, phase, old) = match self.verify.as_ref() {
            // Requests in flight are still compared when answered.
            Some(v) => (v.pending, v.npending, v.phase, v.stats),
            None => (
                [Pending::default(); VERIFY_PENDING],
                0,
                super::piece::Piece::IDLE,
                VerifyStats::default(),
            ),
        };
        self.verify = Some(Verify {
            next: sector,
            end,
            phase,
            pending,
            npending,
            last_oos: None,
            stats: VerifyStats {
                running: true,
                checksum,
                done: 0,
                total: sectors,
                oos: 0,
                read_errors: old.read_errors,
                compared: old.compared,
                unanswered: old.unanswered,
            },
        });
        if let Some(r) = self.resync.as_mut() {
            r.event = true;
        }
        self.verify_hold();
        Ok(())
    }

    /// Progress and counters (`None`: no verify since the table loaded).
    pub fn verify_stats(&self) -> Option<VerifyStats> {
        self.verify.as_ref().map(|v| v.stats)
    }

    /// Whether a checksum sync's comparison is still under way (its sync
    /// must not end before).
    pub(super) fn checksum_running(&self) -> bool {
        self.verify
            .as_ref()
            .is_some_and(|v| v.stats.running && v.stats.checksum)
    }

    /// Whether host write range `sector..+count` must wait for the piece
    /// being read for a digest.
    pub(super) fn verify_blocks(&self, sector: u64, count: u64) -> bool {
        let Some(j) = self.verify.as_ref().and_then(|v| v.busy()) else {
            return false;
        };
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::VerifyNoBlock {
            return false;
        }
        crate::transport::proto::inflight::overlaps(j.sector, u64::from(j.count), sector, count)
    }

    /// The piece the worker would read now, if any.
    fn verify_next_read(&self) -> Option<VerifyJob> {
        let v = self.verify.as_ref()?;
        let (shift, piece) = self.resync.as_ref()?.geometry();
        let may = v.stats.running
            && v.phase.is_idle()
            && v.next < v.end
            && v.npending < VERIFY_PENDING
            && self.deferred == 0
            && !self.abandoning
            && self.link_state() == super::LinkState::Connected
            && self.ring.free_bytes() >= self.ring.capacity_bytes() / 2;
        if !may {
            return None;
        }
        let chunk = v.next >> shift;
        let chunk_end = (chunk + 1) << shift;
        let count = chunk_end
            .min(v.end)
            .saturating_sub(v.next)
            .min(u64::from(piece));
        let job = VerifyJob {
            chunk,
            sector: v.next,
            // count <= piece, a u32.
            count: count as u32,
        };
        // A host write to the piece on its way to the disk: its local_done
        // unblocks, and the worker looks again.
        if self.inflight.overlaps_local(job.sector, count, None) {
            return None;
        }
        Some(job)
    }

    /// Whether the worker has a verify step to take now.
    pub(super) fn verify_has_work(&self) -> bool {
        let Some(v) = self.verify.as_ref() else {
            return false;
        };
        if v.phase.is_idle() {
            self.verify_next_read().is_some()
        } else {
            v.phase.append_due(self.unblock_gen).is_some()
        }
    }

    /// The worker's verify step, if any.
    pub(super) fn verify_step(&mut self) -> Option<super::WorkerStep> {
        let unblock_gen = self.unblock_gen;
        let v = self.verify.as_ref()?;
        if let Some((job, ok)) = v.phase.append_due(unblock_gen) {
            return Some(super::WorkerStep::VerifyAppend { job, ok });
        }
        if !v.phase.is_idle() {
            return None;
        }
        let job = self.verify_next_read()?;
        let v = self.verify.as_mut()?;
        v.phase.start(job);
        self.verify_hold();
        Some(super::WorkerStep::VerifyRead(job))
    }

    /// The verify read in flight ended (any context).
    pub fn verify_read_ended(&mut self, ok: bool) {
        if let Some(v) = self.verify.as_mut() {
            v.phase.ended(ok);
        }
    }

    /// Whether a verify read is in flight (the worker may not exit yet).
    pub(super) fn verify_reading(&self) -> bool {
        self.verify.as_ref().is_some_and(|v| v.phase.is_reading())
    }

    /// The threads stopped: a piece read but not appended is read again.
    pub(super) fn verify_stopped(&mut self) {
        if let Some(v) = self.verify.as_mut() {
            v.phase.stopped();
        }
    }

    /// Appends the DIGEST_REQ of the piece that was read, with the
    /// source's `digest` of it (`None`: the read failed; the piece is
    /// skipped and counted in `read_errors`).
    pub fn verify_append<C: Crc32c>(&mut self, c: &C, digest: Option<[u8; DIGEST_LEN]>) -> Submit {
        let Some((job, _)) = self.verify.as_ref().and_then(|v| v.phase.read()) else {
            return Submit::Invalid(super::Invalid::Internal);
        };
        let Some(digest) = digest else {
            if let Some(v) = self.verify.as_mut() {
                v.stats.read_errors = v.stats.read_errors.saturating_add(1);
                v.phase.done();
                v.advance(&job);
            }
            self.verify_settle();
            self.unblock();
            return Submit::Invalid(super::Invalid::Internal);
        };
        let w = super::HostWrite {
            op: super::HostOp::Write,
            sector: job.sector,
            count: job.count,
            flags: 0,
        };
        let res = self.append_write(c, &w, Some(|_: &mut crate::log::ring::RingWriter<'_, P>| Ok(())), Origin::Verify);
        let unblock_gen = self.unblock_gen;
        let Some(v) = self.verify.as_mut() else {
            return res;
        };
        match res {
            Submit::Accepted(seq) => {
                let whole = self.resync.as_ref().is_some_and(|r| {
                    let (shift, _) = r.geometry();
                    job.sector == job.chunk << shift
                        && (job.sector + u64::from(job.count) == (job.chunk + 1) << shift
                            || job.sector + u64::from(job.count) == self.cfg.dev_sectors)
                });
                let Some(v) = self.verify.as_mut() else {
                    return res;
                };
                if let Some(p) = v.pending.get_mut(v.npending) {
                    *p = Pending {
                        seq,
                        chunk: job.chunk,
                        whole,
                        digest,
                    };
                    v.npending += 1;
                }
                v.advance(&job);
                v.phase.done();
                self.verify_hold();
                self.unblock();
            }
            Submit::Wait(_) => v.phase.wait(unblock_gen),
            Submit::Invalid(_) => {
                v.phase.done();
                v.advance(&job);
                v.stats.read_errors = v.stats.read_errors.saturating_add(1);
                self.verify_settle();
                self.unblock();
            }
        }
        res
    }

    /// Counts chunk `chunk` as differing and marks it dirty.
    fn verify_mismatch(&mut self, chunk: u64) {
        if let Some(v) = self.verify.as_mut() {
            if v.last_oos != Some(chunk) {
                v.last_oos = Some(chunk);
                v.stats.oos = v.stats.oos.saturating_add(1);
            }
        }
        self.mark_dirty(chunk, chunk);
    }

    /// A DIGEST for request `seq` arrived: `digest` is the target's, or
    /// `None` if it could not read the range.
    pub(super) fn on_digest(
        &mut self,
        seq: u64,
        digest: Option<&[u8]>,
        now: crate::transport::proto::wake::Instant,
    ) {
        let Some(v) = self.verify.as_mut() else {
            return;
        };
        let Some(i) = v.pending[..v.npending].iter().position(|p| p.seq == seq) else {
            return;
        };
        let p = v.pending[i];
        v.pending.copy_within(i + 1..v.npending, i);
        v.npending -= 1;
        v.stats.compared = v.stats.compared.saturating_add(1);
        let checksum = v.stats.checksum;
        #[cfg(feature = "mutants")]
        let digest = if self.mutant == crate::transport::proto::mutant::Mutant::VerifyBlind {
            Some(&p.digest[..])
        } else {
            digest
        };
        if digest != Some(&p.digest[..]) {
            self.verify_mismatch(p.chunk);
        } else if checksum && p.whole {
            // A checksum sync marked every chunk dirty first (so a crash
            // in the middle resends what was not compared): an equal one
            // needs nothing.
            self.resync_clear(p.chunk, now);
        }
        self.verify_hold();
        self.verify_settle();
        self.unblock();
    }

    /// During a checksum sync the resync sends only chunks compared
    /// already (and found differing): it holds back from the first chunk
    /// whose comparison is not done.
    fn verify_hold(&mut self) {
        let hold = self.verify.as_ref().and_then(|v| {
            if !(v.stats.running && v.stats.checksum) {
                return None;
            }
            let shift = self.resync.as_ref().map_or(0, |r| r.geometry().0);
            let first_pending = v.pending[..v.npending].iter().map(|p| p.chunk).min();
            let busy = v.busy().map(|j| j.chunk);
            let cursor = (v.next < v.end).then_some(v.next >> shift);
            [first_pending, busy, cursor].into_iter().flatten().min()
        });
        if let Some(r) = self.resync.as_mut() {
            r.hold_from = hold;
        }
    }

    /// A new connection: the answers of the requests still pending went
    /// with the old one, or never come (a request the target read while
    /// an earlier record was still unfinished is past its applied point,
    /// so it is resent, but the target takes the resend as a duplicate).
    /// Their chunks are marked dirty and resent whole, which is always
    /// safe; they count in `unanswered`, not in `oos`.
    pub(super) fn verify_reconnected(&mut self) {
        let Some(v) = self.verify.as_mut() else {
            return;
        };
        let (pending, n) = (v.pending, v.npending);
        v.npending = 0;
        v.stats.unanswered = v.stats.unanswered.saturating_add(n as u64);
        for p in &pending[..n] {
            self.mark_dirty(p.chunk, p.chunk);
        }
        self.verify_hold();
        self.verify_settle();
    }

    /// Ends the pass once every piece is compared.
    fn verify_settle(&mut self) {
        if let Some(v) = self.verify.as_mut() {
            if v.stats.running && v.finished() {
                v.stats.running = false;
                if let Some(r) = self.resync.as_mut() {
                    r.event = true;
                    r.hold_from = None;
                }
            }
        }
    }
}

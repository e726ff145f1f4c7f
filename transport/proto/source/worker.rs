//! The source's worker thread: the link's deadlines (it shuts a dead
//! connection's socket down, which ends a send blocked on it), deferred
//! host writes, completions no other context took, repairs of failed
//! local writes, the resync of dirty chunks, and the suspend's grace.

use core::ops::DerefMut;

use super::{Repair, ResyncJob, Source, WORKER};
use crate::log::pages::Pages;
use crate::transport::proto::hot::HotSlot;
use crate::transport::proto::inflight::{InflightSlot, RepairJob};
use crate::transport::proto::wake::{due, earliest, Instant};

/// What the worker thread does next, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerStep {
    /// The device stops: return.
    Exit,
    /// Nothing to do: sleep until woken or until this instant.
    Sleep {
        /// Timer (link deadline, repair retry, suspend grace), if any.
        until: Option<Instant>,
    },
    /// Shut connection `conn`'s socket down (it is dead or broke the
    /// protocol; the sender may be blocked sending on it), then report
    /// [`Source::on_shutdown`].
    Shutdown {
        /// Connection.
        conn: u64,
    },
    /// The suspend's grace ran out: take every deferred bio off the list
    /// and fail it (or give it back to dm for a noflush suspend), calling
    /// [`Source::deferred_dropped`] for each; then end the completions.
    Abandon,
    /// End the host writes [`Source::poll_completed`] gives.
    Complete,
    /// Read the failed write's range back into the repair buffer, then
    /// report [`Source::repair_read_done`] (or [`Source::repair_wait`]
    /// when the buffer cannot be had now).
    RepairRead(RepairJob),
    /// The read-back of `job` ended: with `ok`, append the repair
    /// ([`Source::repair`]) from the buffer; otherwise
    /// [`Source::repair_failed`].
    RepairAppend {
        /// The failed write's range.
        job: RepairJob,
        /// Whether the read-back succeeded.
        ok: bool,
    },
    /// Read the piece of a dirty chunk into the resync buffer, then
    /// report [`Source::resync_read_ended`] (or [`Source::resync_wait`]
    /// when the buffer cannot be had now).
    ResyncRead(ResyncJob),
    /// The read of `job` ended: with `ok`, append it ([`Source::resync`])
    /// from the buffer; otherwise [`Source::resync_failed`].
    ResyncAppend {
        /// The piece.
        job: ResyncJob,
        /// Whether the read succeeded.
        ok: bool,
    },
    /// Copy bitmap block `block` ([`Source::bitmap_copy`]), seal it, write
    /// it to its place on the metadata device, then report
    /// [`Source::bitmap_saved`] (see `bitmap_save.rs`).
    SaveBitmap {
        /// Index of the block within the bitmap.
        block: u64,
    },
    /// Flush the data device (an empty PREFLUSH bio), then report
    /// [`Source::data_flushed`]: the activity log lets regions go only
    /// once their writes are on stable storage (`activity.rs`).
    FlushData,
    /// Write the superblock with the generations [`Source::gens_copy`]
    /// gives (the next of its two copies), then report
    /// [`Source::gens_saved`] (see `gens.rs`).
    SaveGens,
    /// Append the SYNC record that is due: [`Source::append_sync`].
    AppendSync,
    /// Read the piece `job` into the verify buffer, then report
    /// [`Source::verify_read_ended`].
    VerifyRead(super::VerifyJob),
    /// The read of `job` ended: with `ok`, hash the buffer (SHA-256) and
    /// report [`Source::verify_append`] with the digest; otherwise with
    /// `None`.
    VerifyAppend {
        /// The piece.
        job: super::VerifyJob,
        /// Whether the read succeeded.
        ok: bool,
    },
    /// A sync started or ended: raise a dm event (`dmsetup wait`).
    SyncEvent,
    /// Offer the deferred bios again, in order, through
    /// [`Source::retry_deferred`], until one must wait again (at most
    /// [`DEFERRED_BATCH`] per step).
    Deferred,
}

/// Deferred bios offered per [`WorkerStep::Deferred`] (bounds the time
/// the state lock is held in one go).
pub const DEFERRED_BATCH: usize = 64;

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    fn repair_due(&self) -> bool {
        self.repair == Repair::Idle
            && self.repair_retry_at.is_none()
            && self.inflight.next_repair().is_some()
    }

    pub(super) fn worker_has_work(&self) -> bool {
        #[cfg(feature = "mutants")]
        let completions = self.has_completions()
            && self.mutant != crate::transport::proto::mutant::Mutant::NoCompletionAfterHandshake;
        #[cfg(not(feature = "mutants"))]
        let completions = self.has_completions();
        self.link.shutdown_due().is_some()
            || (self.abandoning && self.deferred > 0)
            || completions
            || matches!(self.repair, Repair::Read(..))
            || self.repair_due()
            || (self.deferred > 0 && self.deferred_gen != self.unblock_gen)
            || self.sync_event_due()
            || self.save_has_work()
            || self.al_has_work()
            || self.gens_has_work()
            || self.resync_has_work()
            || self.verify_has_work()
    }

    /// The worker thread's next step (see [`WorkerStep`]).
    pub fn poll_worker(&mut self, now: Instant) -> WorkerStep {
        self.sleepers.running(WORKER);
        if self.stopping {
            if matches!(self.repair, Repair::Reading(_)) || self.resync_reading() || self.verify_reading() {
                // Its read must end first: it reads into the worker's
                // buffer and reports to this device.
                self.sleepers.sleep(WORKER);
                return WorkerStep::Sleep { until: None };
            }
            // The data device is flushed so that the activity log can be
            // emptied; then the bitmap as it is goes to the metadata
            // device.
            if let Some(step) = self.al_flush_step(now) {
                return step;
            }
            if let Some(step) = self.save_step(now) {
                return step;
            }
            if let Some(step) = self.gens_stop_step() {
                return step;
            }
            return WorkerStep::Exit;
        }
        let step = self.worker_step(now);
        if let WorkerStep::Sleep { .. } = step {
            self.sleepers.sleep(WORKER);
        }
        step
    }

    fn worker_step(&mut self, now: Instant) -> WorkerStep {
        self.expire_link(now);
        self.degrade_check(now);
        if let Some(conn) = self.link.shutdown_due() {
            return WorkerStep::Shutdown { conn };
        }
        if due(self.suspend_until, now) {
            self.suspend_until = None;
            self.abandoning = true;
        }
        if self.abandoning && self.deferred > 0 {
            return WorkerStep::Abandon;
        }
        if self.has_completions() {
            return WorkerStep::Complete;
        }
        if let Repair::Read(job, ok) = self.repair {
            return WorkerStep::RepairAppend { job, ok };
        }
        if due(self.repair_retry_at, now) {
            self.repair_retry_at = None;
        }
        if self.repair_due() {
            if let Some(job) = self.inflight.next_repair() {
                self.repair = Repair::Reading(job);
                return WorkerStep::RepairRead(job);
            }
        }
        if self.deferred > 0 && self.deferred_gen != self.unblock_gen {
            // Marked seen: a bio that must wait again records the new
            // generation itself, one that goes through needs no mark.
            self.deferred_gen = self.unblock_gen;
            return WorkerStep::Deferred;
        }
        if let Some(step) = self.save_step(now) {
            return step;
        }
        if let Some(step) = self.al_flush_step(now) {
            return step;
        }
        if let Some(step) = self.gens_step(now) {
            return step;
        }
        if self.take_sync_event() {
            return WorkerStep::SyncEvent;
        }
        if let Some(step) = self.resync_step(now) {
            return step;
        }
        if let Some(step) = self.verify_step() {
            return step;
        }
        let until = earliest(
            earliest(self.link_deadline(), self.repair_retry_at),
            earliest(
                earliest(self.suspend_until, self.resync_deadline()),
                earliest(
                    earliest(self.save_deadline(), self.gens_deadline()),
                    earliest(self.degrade_deadline(), self.al_deadline()),
                ),
            ),
        );
        WorkerStep::Sleep { until }
    }

    /// The read-back of failed write `seq` ended (any context).
    pub fn repair_read_done(&mut self, seq: u64, ok: bool) {
        if let Repair::Reading(job) = self.repair {
            if job.seq == seq {
                self.repair = Repair::Read(job, ok);
            }
        }
    }

    /// The read-back in flight ended (any context; the glue's completion
    /// knows no seq: there is one read at a time).
    pub fn repair_read_ended(&mut self, ok: bool) {
        if let Repair::Reading(job) = self.repair {
            self.repair = Repair::Read(job, ok);
        }
    }

    /// The repair buffer could not be had now: try again after
    /// [`super::REPAIR_RETRY`].
    pub fn repair_wait(&mut self, now: Instant) {
        self.repair = Repair::Idle;
        self.repair_retry_at = Some(now.saturating_add(super::REPAIR_RETRY));
    }

    /// Whether a suspend gave up waiting (status, and the glue's choice
    /// between failing and requeueing deferred bios).
    pub fn is_abandoning(&self) -> bool {
        self.abandoning
    }
}

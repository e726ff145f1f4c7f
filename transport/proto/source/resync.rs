//! The source's resync engine: the chunks its target may lack (the dirty
//! bitmap) are read from the source's own device and sent as WRITE
//! records through the same ordered stream as host writes.
//!
//! One piece (at most a chunk, at most one record) is read at a time, and
//! the order of the stream is kept the way overlapping host writes keep
//! it (see `inflight.rs`):
//!
//! - a piece is read only once no host write to its range has local I/O
//!   outstanding, so the read sees every write whose record came before;
//! - from the read's start until its record is appended, host writes to
//!   the range wait (`WaitReason::Overlap`), so none gets a record before
//!   the piece's record with bytes the read missed.
//!
//! The target therefore applies every piece after the host writes the
//! read saw and before those it did not. A chunk's bit is cleared when
//! the record of its last piece is acknowledged (the ring resends it
//! until then, across reconnections).
//!
//! ```text
//!   Idle --due--> Reading --read ends--> Read --append--> Idle
//!                               \                  (bit cleared on ACK)
//!                                +-- failed: chunk stays dirty, retried
//!                                    on the next pass after RESYNC_RETRY
//! ```
//!
//! A resync starts a read only while connected, while no host write is
//! parked and while at least half the ring is free, so host writes keep
//! the larger share of the ring and the link; `sync_rate` caps it further
//! (each read starts no sooner than its bytes at that rate allow).

use core::ops::DerefMut;

use super::{Origin, Source, Submit};
use crate::log::meta::bitmap::Bitmap;
use crate::log::pages::Pages;
use crate::log::record::{Crc32c, MAX_WRITE_SECTORS, SECTOR_SIZE};
use crate::log::ring::{RingError, RingWriter};
use crate::transport::proto::hot::HotSlot;
use crate::transport::proto::inflight::InflightSlot;
use crate::transport::proto::wake::{due, Instant, SEC};

/// Resync records appended and not yet acknowledged, at most (the last
/// piece of each chunk is remembered until its ACK clears the bit).
pub const RESYNC_PENDING: usize = 16;

/// Pause before another pass over chunks whose read failed.
pub const RESYNC_RETRY: Instant = SEC;

/// One piece of a dirty chunk to read and send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResyncJob {
    /// The chunk.
    pub chunk: u64,
    /// First sector of the piece.
    pub sector: u64,
    /// Sectors of the piece.
    pub count: u32,
    /// Whether this is the chunk's last piece.
    pub last: bool,
}

/// Why a bitmap cannot be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncError {
    /// The chunk size is not a power of two from 8 sectors to the region
    /// size.
    ChunkSize,
    /// The bitmap does not cover the device in chunks of that size.
    Chunks,
    /// An activity log needs the dirty bitmap first, and a slot.
    NoBitmap,
}

/// Progress and counters of the resync (status).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResyncStats {
    /// Chunks still dirty.
    pub dirty: u64,
    /// Chunks of the device.
    pub chunks: u64,
    /// Chunks cleared since the bitmap was attached.
    pub cleared: u64,
    /// Chunks cleared since the current sync started (dirty went from
    /// none to some): progress is `done / (done + dirty)`.
    pub done: u64,
    /// Resync records appended.
    pub records: u64,
    /// Payload bytes of the resync records appended (a record resent
    /// after a cut counts once; the stream's `resends` counts the rest).
    pub bytes: u64,
    /// Reads of the source device that failed (their chunks stay dirty).
    pub read_errors: u64,
}

/// The engine's state inside the source machine.
///
/// # Invariants
///
/// - `pending[..npending]` holds `(seq, chunk)` of appended last pieces,
///   seqs increasing, none acknowledged;
/// - `cursor_off` is 0 or the offset (sectors) of the next piece of chunk
///   `cursor`, whose earlier pieces are appended.
pub(super) struct Resync<P: Pages> {
    pub(super) bits: Bitmap<P>,
    shift: u32,
    piece: u32,
    dev_sectors: u64,
    cursor: u64,
    cursor_off: u64,
    phase: super::piece::Piece<ResyncJob>,
    pending: [(u64, u64); RESYNC_PENDING],
    npending: usize,
    /// A read failed during this pass over the bitmap.
    pass_errors: bool,
    retry_at: Option<Instant>,
    /// `sync_rate`: the pieces read so far are paid for until then.
    pace_end: Instant,
    /// `sync_rate`: no read before then.
    pace_at: Option<Instant>,
    /// The chunk of the piece being read was marked dirty again: the
    /// piece is sent, but the chunk starts over.
    stale: bool,
    /// What the metadata device lacks (see `bitmap_save.rs`).
    pub(super) unsaved: super::bitmap_save::Unsaved,
    /// A sync started or ended: the worker raises a dm event.
    pub(super) event: bool,
    /// A checksum sync's comparison has not reached chunks from this one
    /// on: they are not read (`verify.rs`).
    pub(super) hold_from: Option<u64>,
    stats: ResyncStats,
}

impl<P: Pages> Resync<P> {
    /// Sectors per chunk, as a shift.
    pub(super) fn chunk_shift(&self) -> u32 {
        self.shift
    }

    /// See [`Source::mark_dirty`].
    fn mark(&mut self, first: u64, last: u64) -> Option<(u64, u64)> {
        let within = |c: u64| c >= first && c <= last;
        let mut kept = 0;
        for i in 0..self.npending {
            let p = self.pending[i];
            if !within(p.1) {
                self.pending[kept] = p;
                kept += 1;
            }
        }
        self.npending = kept;
        if within(self.cursor) {
            self.cursor_off = 0;
        }
        if self.busy().is_some_and(|j| within(j.chunk)) {
            self.stale = true;
        }
        let was = self.bits.count();
        let changed = self.bits.set_range(first, last);
        if let Some((lo, hi)) = changed {
            self.unsaved.changed(lo, hi, true, None);
        }
        self.stats.dirty = self.bits.count();
        if was == 0 && self.stats.dirty > 0 {
            self.stats.done = 0;
            self.event = true;
        }
        changed
    }

    /// `(shift, piece)`: chunk size as a shift, and the largest piece.
    pub(super) fn geometry(&self) -> (u32, u32) {
        (self.shift, self.piece)
    }

    fn busy(&self) -> Option<ResyncJob> {
        self.phase.busy()
    }

    fn is_pending(&self, chunk: u64) -> bool {
        self.pending[..self.npending]
            .iter()
            .any(|&(_, c)| c == chunk)
    }

    /// The next piece to read and whether finding it ended a pass over
    /// the bitmap; `None` when every dirty chunk is pending (or nothing is
    /// dirty). The cursor moves only when the read starts.
    fn peek_job(&self) -> Option<(ResyncJob, bool)> {
        let mut wrapped = false;
        let mut chunk = self.cursor;
        if self.cursor_off == 0 {
            let mut from = self.cursor;
            loop {
                match self.bits.next_dirty(from) {
                    Some(c) if self.hold_from.is_some_and(|h| c >= h) => {
                        if wrapped || from == 0 {
                            return None;
                        }
                        wrapped = true;
                        from = 0;
                    }
                    Some(c) if self.is_pending(c) => from = c + 1,
                    Some(c) => {
                        chunk = c;
                        break;
                    }
                    None if !wrapped && from > 0 => {
                        wrapped = true;
                        from = 0;
                    }
                    None => return None,
                }
            }
        }
        let first = chunk << self.shift;
        let end = first
            .saturating_add(1u64 << self.shift)
            .min(self.dev_sectors);
        let sector = first + self.cursor_off;
        let count = end.saturating_sub(sector).min(u64::from(self.piece));
        let job = ResyncJob {
            chunk,
            sector,
            // count <= piece, a u32.
            count: count as u32,
            last: sector + count >= end,
        };
        Some((job, wrapped))
    }

    /// Moves the cursor past `job` (appended or given up).
    fn advance(&mut self, job: &ResyncJob, give_up: bool) {
        if job.last || give_up {
            self.cursor = job.chunk + 1;
            self.cursor_off = 0;
        } else {
            self.cursor_off = job.sector + u64::from(job.count) - (job.chunk << self.shift);
        }
    }
}

/// How long reading `count` sectors takes at `rate` bytes/s (`None`: no
/// cap).
fn pace(rate: u64, count: u32) -> Option<Instant> {
    (rate > 0).then(|| (u64::from(count) * SECTOR_SIZE as u64 * SEC).div_ceil(rate))
}

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// Gives the source its dirty bitmap: `bits` covers the device in
    /// chunks of `chunk_sectors`. Set bits are resynced once connected.
    pub fn attach_bitmap(
        &mut self,
        bits: Bitmap<P>,
        chunk_sectors: u32,
    ) -> Result<(), ResyncError> {
        if chunk_sectors < 8
            || !chunk_sectors.is_power_of_two()
            || chunk_sectors > self.cfg.region_sectors
        {
            return Err(ResyncError::ChunkSize);
        }
        if bits.chunks() != self.cfg.dev_sectors.div_ceil(u64::from(chunk_sectors)) {
            return Err(ResyncError::Chunks);
        }
        // A piece leaves three quarters of the ring to host writes.
        let ring_sectors = (self.ring.capacity_bytes() / 4 / SECTOR_SIZE) as u32;
        let mut piece = chunk_sectors.min(MAX_WRITE_SECTORS);
        while piece > 8 && piece > ring_sectors {
            piece /= 2;
        }
        let dirty = bits.count();
        self.resync = Some(Resync {
            stats: ResyncStats {
                dirty,
                chunks: bits.chunks(),
                ..ResyncStats::default()
            },
            bits,
            shift: chunk_sectors.trailing_zeros(),
            piece,
            dev_sectors: self.cfg.dev_sectors,
            cursor: 0,
            cursor_off: 0,
            phase: super::piece::Piece::IDLE,
            pending: [(0, 0); RESYNC_PENDING],
            npending: 0,
            pass_errors: false,
            retry_at: None,
            pace_end: 0,
            pace_at: None,
            stale: false,
            unsaved: super::bitmap_save::Unsaved::default(),
            event: dirty > 0,
            hold_from: None,
        });
        Ok(())
    }

    /// Marks chunks `[first, last]` dirty (clamped to the device): they
    /// are sent again, whole, even those sent already and not yet
    /// acknowledged (that ACK no longer clears them). Returns the bitmap
    /// blocks whose bits changed.
    pub fn mark_dirty(&mut self, first: u64, last: u64) -> Option<(u64, u64)> {
        self.resync.as_mut()?.mark(first, last)
    }

    /// Whether the chunk holding `sector` is dirty (the resync will send
    /// it); false without a bitmap.
    pub fn sector_is_dirty(&self, sector: u64) -> bool {
        self.resync.as_ref().is_some_and(|r| r.bits.test(sector >> r.shift))
    }

    /// Marks dirty the chunks that `count` sectors at `sector` touch (an
    /// operator's `resync <sector> <sectors>`); `None` for an empty range,
    /// one past the device's end, or no bitmap. Returns the chunks.
    pub fn mark_dirty_sectors(&mut self, sector: u64, count: u64) -> Option<(u64, u64)> {
        let end = sector.checked_add(count)?;
        if count == 0 || end > self.cfg.dev_sectors {
            return None;
        }
        let shift = self.resync.as_ref()?.shift;
        let (first, last) = (sector >> shift, (end - 1) >> shift);
        self.mark_dirty(first, last);
        Some((first, last))
    }

    /// Marks dirty the chunks of every data record the target has not
    /// reported durable: at stop, so that a reload (which starts a new ring)
    /// resyncs what the old ring still held. After a resume instead, those
    /// records are sent again and the chunks resynced as well (harmless).
    pub(super) fn mark_unacked(&mut self) {
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::NoMarkAtStop {
            return;
        }
        // Applied but not durable: a power loss of the target may lose it.
        let durable = self.durable;
        let ring = &self.ring;
        let Some(r) = self.resync.as_mut() else {
            return;
        };
        for v in ring.views_at(ring.oldest_cursor(), usize::MAX) {
            let h = v.header;
            if v.seq <= durable || !h.kind.is_data() || h.count == 0 {
                continue;
            }
            let last = h.sector.saturating_add(u64::from(h.count) - 1);
            r.mark(h.sector >> r.shift, last >> r.shift);
        }
        // Failed local writes whose repair was not appended: their record
        // (maybe acknowledged already) carries bytes the source's device
        // may not hold, and only the repair would have sent what it does
        // hold. The resync reads it instead (gen 12 seed 2003275).
        for (sector, count) in self.inflight.repair_ranges() {
            if count > 0 {
                let last = sector.saturating_add(count - 1);
                r.mark(sector >> r.shift, last >> r.shift);
            }
        }
    }

    /// Blocks `[first, last]` of the bitmap on the metadata device did
    /// not decode when it was loaded (their chunks were marked dirty): they
    /// are rewritten soon.
    pub fn bitmap_rewrite(&mut self, first: u64, last: u64) {
        if let Some(r) = self.resync.as_mut() {
            r.unsaved.changed(first, last, true, None);
        }
    }

    /// The dirty bitmap, if attached.
    pub fn bitmap(&self) -> Option<&Bitmap<P>> {
        self.resync.as_ref().map(|r| &r.bits)
    }

    /// Progress and counters of the resync, if a bitmap is attached.
    pub fn resync_stats(&self) -> Option<ResyncStats> {
        self.resync.as_ref().map(|r| r.stats)
    }

    /// True while chunks are dirty (the target lacks some of the data).
    pub fn is_syncing(&self) -> bool {
        self.resync.as_ref().is_some_and(|r| r.bits.count() > 0)
    }

    /// Whether host write range `sector..+count` must wait for the piece
    /// being read (see the module comment).
    pub(super) fn resync_blocks(&self, sector: u64, count: u64) -> bool {
        let Some(j) = self.resync.as_ref().and_then(|r| r.busy()) else {
            return false;
        };
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::ResyncNoBlock {
            return false;
        }
        crate::transport::proto::inflight::overlaps(j.sector, u64::from(j.count), sector, count)
    }

    /// Acknowledged up to `acked`: clears the chunks whose last piece is
    /// covered.
    pub(super) fn resync_acked(&mut self, acked: u64, now: Instant) {
        let Some(r) = self.resync.as_mut() else {
            return;
        };
        let n = r.pending[..r.npending]
            .iter()
            .take_while(|&&(s, _)| s <= acked)
            .count();
        if n == 0 {
            return;
        }
        for i in 0..n {
            let chunk = r.pending[i].1;
            if let Some(block) = r.bits.clear(chunk) {
                r.stats.cleared = r.stats.cleared.saturating_add(1);
                r.stats.done = r.stats.done.saturating_add(1);
                r.unsaved.changed(block, block, false, Some(now));
            }
        }
        r.pending.copy_within(n..r.npending, 0);
        r.npending -= n;
        r.stats.dirty = r.bits.count();
        if r.stats.dirty == 0 {
            r.event = true;
        }
        // The lazy save of the cleared bits has a deadline now, which the
        // sleeping worker must watch (nothing else may wake it: a
        // checksum sync holds the next reads back; gen 12 seed 2004816).
        self.rearm(super::WORKER);
    }

    /// Clears chunk `chunk`'s bit without sending it (a checksum sync found
    /// the target holds it already).
    pub(super) fn resync_clear(&mut self, chunk: u64, now: Instant) {
        let Some(r) = self.resync.as_mut() else {
            return;
        };
        if r.is_pending(chunk) || r.busy().is_some_and(|j| j.chunk == chunk) {
            return;
        }
        if let Some(block) = r.bits.clear(chunk) {
            r.stats.cleared = r.stats.cleared.saturating_add(1);
            r.stats.done = r.stats.done.saturating_add(1);
            r.unsaved.changed(block, block, false, Some(now));
        }
        r.stats.dirty = r.bits.count();
        if r.stats.dirty == 0 {
            r.event = true;
        }
        // As in `resync_acked`: the lazy save's deadline.
        self.rearm(super::WORKER);
    }

    /// Whether the worker has a resync step to take now (timers aside).
    pub(super) fn resync_has_work(&self) -> bool {
        let Some(r) = self.resync.as_ref() else {
            return false;
        };
        if r.phase.is_idle() {
            self.resync_next_read().is_some()
        } else {
            r.phase.append_due(self.unblock_gen).is_some()
        }
    }

    /// The piece the worker would start reading now, and whether that
    /// ends a pass with failed reads (then the pass waits for
    /// [`RESYNC_RETRY`] instead).
    fn resync_next_read(&self) -> Option<(ResyncJob, bool)> {
        let r = self.resync.as_ref()?;
        #[cfg(feature = "mutants")]
        let unsaved_sets = r.unsaved.has_unsaved_sets()
            && self.mutant != crate::transport::proto::mutant::Mutant::ReadBeforeSave;
        #[cfg(not(feature = "mutants"))]
        let unsaved_sets = r.unsaved.has_unsaved_sets();
        let may = r.retry_at.is_none()
            && r.pace_at.is_none()
            && !unsaved_sets
            && r.npending < RESYNC_PENDING
            && r.bits.count() > r.npending as u64
            && self.deferred == 0
            && !self.abandoning
            && self.sync_announced()
            && self.link_state() == super::LinkState::Connected
            && self.ring.free_bytes() >= self.ring.capacity_bytes() / 2;
        if !may {
            return None;
        }
        let (job, wrapped) = r.peek_job()?;
        let retry = wrapped && r.pass_errors;
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::ResyncNoLocalWait {
            return Some((job, retry));
        }
        // A host write to the piece on its way to the disk: its
        // local_done unblocks, and the worker looks again.
        if !retry
            && self
                .inflight
                .overlaps_local(job.sector, u64::from(job.count), None)
        {
            return None;
        }
        Some((job, retry))
    }

    /// The worker's resync step, if any: append a piece that was read,
    /// or start reading the next one.
    pub(super) fn resync_step(&mut self, now: Instant) -> Option<super::WorkerStep> {
        let unblock_gen = self.unblock_gen;
        let announced = self.sync_announced();
        let r = self.resync.as_mut()?;
        if due(r.retry_at, now) {
            r.retry_at = None;
        }
        if due(r.pace_at, now) {
            r.pace_at = None;
        }
        if let Some((job, ok)) = r.phase.append_due(unblock_gen) {
            if ok && !announced {
                // The stream it was read for ended (degraded mode) and the
                // next one has not announced its sync yet: appended now,
                // during the handshake, it would reach a target that
                // still says consistent ahead of the SYNC that says
                // otherwise. Its chunk stays dirty; read again later.
                r.phase.done();
                return None;
            }
            return Some(super::WorkerStep::ResyncAppend { job, ok });
        }
        if !r.phase.is_idle() {
            return None;
        }
        let (job, retry) = self.resync_next_read()?;
        let r = self.resync.as_mut()?;
        if retry {
            r.pass_errors = false;
            r.retry_at = Some(now.saturating_add(RESYNC_RETRY));
            return None;
        }
        r.cursor = job.chunk;
        r.phase.start(job);
        if let Some(dt) = pace(self.sync_rate, job.count) {
            r.pace_end = r.pace_end.max(now).saturating_add(dt);
            r.pace_at = Some(r.pace_end);
        }
        Some(super::WorkerStep::ResyncRead(job))
    }

    /// Whether a sync started or ended since the worker last said so.
    pub(super) fn sync_event_due(&self) -> bool {
        self.resync.as_ref().is_some_and(|r| r.event)
    }

    /// The worker raises the event now.
    pub(super) fn take_sync_event(&mut self) -> bool {
        self.resync
            .as_mut()
            .is_some_and(|r| core::mem::replace(&mut r.event, false))
    }

    /// The deadline of the resync's retry, if any.
    pub(super) fn resync_deadline(&self) -> Option<Instant> {
        self.resync
            .as_ref()
            .and_then(|r| crate::transport::proto::wake::earliest(r.retry_at, r.pace_at))
    }

    /// Caps the resync at `kib_per_s` KiB/s (`sync_rate`; 0: no cap, the
    /// resync still yields to host writes and keeps half the ring free).
    pub fn set_sync_rate(&mut self, kib_per_s: u32) {
        self.sync_rate = u64::from(kib_per_s) * 1024;
    }

    /// Whether a resync read is in flight (the worker may not exit yet).
    pub(super) fn resync_reading(&self) -> bool {
        self.resync
            .as_ref()
            .is_some_and(|r| r.phase.is_reading())
    }

    /// Every record appended so far left the stream (degraded mode): no
    /// piece appended will be acknowledged, so none may clear its chunk,
    /// and a chunk sent in part starts over.
    pub(super) fn resync_dropped(&mut self) {
        if let Some(r) = self.resync.as_mut() {
            r.npending = 0;
            r.cursor_off = 0;
            if r.phase.busy().is_some() {
                r.stale = true;
            }
        }
    }

    /// A read that ended but was not appended is read again after the
    /// next start (the threads stopped).
    pub(super) fn resync_stopped(&mut self) {
        if let Some(r) = self.resync.as_mut() {
            if r.phase.stopped() {
                r.stale = false;
            }
        }
    }

    /// The resync read in flight ended (any context).
    pub fn resync_read_ended(&mut self, ok: bool) {
        if let Some(r) = self.resync.as_mut() {
            r.phase.ended(ok);
        }
    }

    /// The resync buffer could not be had: try again after
    /// [`RESYNC_RETRY`].
    pub fn resync_wait(&mut self, now: Instant) {
        if let Some(r) = self.resync.as_mut() {
            // The same piece is read again (the cursor did not move).
            r.phase.done();
            r.stale = false;
            r.retry_at = Some(now.saturating_add(RESYNC_RETRY));
        }
        self.unblock();
    }

    /// The read of `job` failed: its chunk stays dirty and is tried again
    /// on the next pass.
    pub fn resync_failed(&mut self) {
        if let Some(r) = self.resync.as_mut() {
            if let Some(job) = r.phase.busy() {
                r.stale = false;
                r.advance(&job, true);
                r.pass_errors = true;
                r.stats.read_errors = r.stats.read_errors.saturating_add(1);
            }
            r.phase.done();
        }
        self.unblock();
    }

    /// Appends the piece that was read: a WRITE record whose payload
    /// (`fill`, exactly `count * 512` bytes) is what the source's device
    /// held. `Wait`: no ring room; the worker tries again once something
    /// is freed. `Invalid`: given up like a failed read.
    pub fn resync<C, F>(&mut self, c: &C, fill: F) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        self.resync_with(c, Some(fill))
    }

    /// [`Source::resync`] with the record reserved, as in
    /// [`Source::submit_reserved`].
    pub fn resync_reserved<C: Crc32c>(&mut self, c: &C) -> Submit {
        self.resync_with(c, None::<fn(&mut RingWriter<'_, P>) -> Result<(), RingError>>)
    }

    fn resync_with<C, F>(&mut self, c: &C, fill: Option<F>) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        let Some((job, true)) = self.resync.as_ref().and_then(|r| r.phase.read()) else {
            return Submit::Invalid(super::Invalid::Internal);
        };
        let w = super::HostWrite {
            op: super::HostOp::Write,
            sector: job.sector,
            count: job.count,
            flags: 0,
        };
        let res = self.append_write(c, &w, fill, Origin::Resync);
        let unblock_gen = self.unblock_gen;
        // Appended while degraded: dropped at once (its chunk is dirty).
        let dropped = self.degrade.on;
        let Some(r) = self.resync.as_mut() else {
            return res;
        };
        match res {
            Submit::Accepted(seq) => {
                r.stats.records = r.stats.records.saturating_add(1);
                r.stats.bytes = r.stats.bytes.saturating_add(u64::from(job.count) * 512);
                if r.stale || dropped {
                    r.stale = false;
                    r.cursor = job.chunk;
                    r.cursor_off = 0;
                } else {
                    if job.last {
                        if let Some(slot) = r.pending.get_mut(r.npending) {
                            *slot = (seq, job.chunk);
                            r.npending += 1;
                        }
                    }
                    r.advance(&job, false);
                }
                r.phase.done();
                self.unblock();
            }
            Submit::Wait(_) => r.phase.wait(unblock_gen),
            Submit::Invalid(_) => self.resync_failed(),
        }
        res
    }
}

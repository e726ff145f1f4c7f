//! Source-side protocol state machine (sans-IO).
//!
//! The machine holds everything the source decides; the kernel glue (and
//! the simulator, which runs this very code) only moves bytes and bios.
//!
//! Events in:
//! - host writes from dm `map` ([`Source::submit`]) and their local I/O
//!   completions ([`Source::local_done`]);
//! - frames and errors from the connection's receiver
//!   ([`Source::on_frame`], [`Source::on_recv_error`]);
//! - the results of the steps below ([`Source::on_connect`],
//!   [`Source::on_sent`], [`Source::on_closed`], [`Source::on_shutdown`],
//!   [`Source::repair_read_done`]);
//! - operator requests (`connect`, `disconnect`, suspend and resume).
//!
//! Steps out, one per thread: [`Source::poll_sender`] (connect, shake
//! hands, stream the ring, keepalives, close) and [`Source::poll_worker`]
//! (link deadlines, deferred writes, completions, repairs, the suspend
//! grace). A step that says "sleep" marks its thread asleep;
//! [`Source::take_wakes`] then names the sleepers that have work again
//! (see [`super::wake`]). Every timer lives here: back-off, the handshake
//! deadline, keepalives, the peer timeout, repair retries, the suspend
//! grace.
//!
//! Nothing blocks and nothing allocates: whatever must wait is a
//! [`Submit::Wait`], and the caller parks the bio until the worker's
//! [`WorkerStep::Deferred`].

mod activity;
mod bitmap_save;
mod degrade;
mod gens;
mod parked;
mod piece;
mod link;
mod resync;
mod verify;
mod worker;

use core::ops::DerefMut;

pub use link::{Batch, ControlFrame, RecvError, RxVerdict, SenderStep, SEND_BATCH_BYTES, SEND_BATCH_PIECES};
pub use activity::{ActivityStats, DATA_FLUSH_RETRY};
pub use bitmap_save::BITMAP_SAVE_INTERVAL;
pub use gens::{GenStatus, SyncPhase, GENS_SAVE_RETRY};
pub use resync::{ResyncError, ResyncJob, ResyncStats, RESYNC_PENDING, RESYNC_RETRY};
pub use verify::{VerifyError, VerifyJob, VerifyStats, VERIFY_PENDING};
pub use worker::{WorkerStep, DEFERRED_BATCH};

use super::hot::{HotRegions, HotSlot, Touch};
use super::inflight::{Completed, Inflight, InflightSlot, RepairJob};
use super::wake::{Instant, Sleepers, Wakes};
use super::{Completion, Mode, Refusal};
use crate::log::pages::Pages;
use crate::log::record::{Crc32c, Header, Kind, FLAGS_KNOWN, MAX_WRITE_SECTORS, SECTOR_SIZE};
use crate::log::ring::{Reserved, RingError, RingWriter, RollbackRing};
use crate::transport::table::Secret;

/// Sleeper number of the sender thread (see [`super::wake`]).
pub const SENDER: u8 = 0;
/// Sleeper number of the worker thread.
pub const WORKER: u8 = 1;
/// Number of sleepers of a source.
pub const SLEEPERS: u8 = 2;

/// Source configuration (from the table line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// Sectors per region; a power of two.
    pub region_sectors: u32,
    /// Speculative (default) or lock-sync (prior art, for comparison).
    pub mode: Mode,
    /// When a host write completes.
    pub completion: Completion,
    /// Size of the data device in sectors.
    pub dev_sectors: u64,
    /// Replication generation announced in HELLO (non-zero; a new value
    /// tells the target that a new stream starts at this ring's first seq).
    pub generation: u64,
    /// Shared secret for the handshake's HMAC, if any.
    pub secret: Option<Secret>,
}

/// Why a configuration is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `region_sectors` is zero or not a power of two.
    RegionSize,
    /// No hot-region slot was provided.
    NoHotRegions,
    /// No in-flight slot was provided.
    NoInflight,
    /// The generation is zero.
    Generation,
    /// `first_seq` is zero.
    FirstSeq,
}

/// What the host wants written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostOp {
    /// Data write; the payload comes from the fill closure.
    Write,
    /// Discard a range.
    Discard,
    /// Zero a range.
    WriteZeroes,
    /// Empty flush (REQ_PREFLUSH without data).
    Flush,
}

/// A host write request as the glue sees it in `map`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostWrite {
    /// Operation.
    pub op: HostOp,
    /// First sector (ignored for `Flush`).
    pub sector: u64,
    /// Sectors (ignored for `Flush`).
    pub count: u32,
    /// `FLAG_FUA` / `FLAG_PREFLUSH` bits (ignored for `Flush`).
    pub flags: u16,
}

/// Why a host write must wait (park the bio; the worker offers it again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// Overlaps a write whose local I/O is outstanding.
    Overlap,
    /// The rollback ring has no room (back-pressure until acks arrive).
    RingFull,
    /// Every in-flight slot is taken.
    InflightFull,
    /// Earlier writes wait already: this one queues behind them.
    Queued,
    /// A region it writes is not in the activity log on the metadata
    /// device yet, or the log has no room (`activity.rs`).
    ActivityLog,
    /// As many records as the ring allows are reserved and still being
    /// filled (`log::ring`): one is published soon.
    Publishing,
}

/// Kinds of wait counted in [`SourceStats::waits_by`]: the six
/// [`WaitReason`]s, then [`WAIT_NO_BIO`].
pub const WAIT_KINDS: usize = 7;

/// [`SourceStats::waits_by`]'s slot for writes parked by `map` because no
/// local bio could be had without sleeping ([`Source::defer_unprepared`]).
pub const WAIT_NO_BIO: usize = 6;

impl WaitReason {
    /// Its slot in [`SourceStats::waits_by`] (status order: overlap,
    /// ring, inflight, queued, al, publishing, then no bio).
    pub fn index(self) -> usize {
        match self {
            WaitReason::Overlap => 0,
            WaitReason::RingFull => 1,
            WaitReason::InflightFull => 2,
            WaitReason::Queued => 3,
            WaitReason::ActivityLog => 4,
            WaitReason::Publishing => 5,
        }
    }
}

/// Whether a payload of `bytes` is copied into the ring in the critical
/// section that appends the record ([`Source::submit`]) rather than
/// reserved and copied outside the lock ([`Source::submit_reserved`]);
/// see [`super::INLINE_COPY_BYTES`]. The kernel and the simulator both
/// ask this.
pub fn copies_inline(bytes: usize) -> bool {
    bytes <= super::INLINE_COPY_BYTES
}

/// The closure type of a record filled later (a reservation): never
/// called, it only names the type for `None`.
type Later<P> = fn(&mut RingWriter<'_, P>) -> Result<(), RingError>;

/// Why a host write can never be accepted (fail the bio with an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Zero length, too long for one record, or beyond the device end.
    Range,
    /// Unknown flag bits.
    Flags,
    /// Touches more regions than there are hot slots.
    TooManyRegions,
    /// The record cannot fit even an empty ring.
    TooLarge,
    /// The fill closure failed or wrote the wrong number of bytes.
    Fill,
    /// The sequence space is exhausted or the ring storage is broken.
    Internal,
}

/// Result of [`Source::submit`] and [`Source::retry_deferred`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submit {
    /// Appended; the value is the data record's seq (the token for
    /// [`Source::local_done`] and [`Completed`]). Write the payload to the
    /// local device from the ring ([`Source::payload_chunks`]) or, for
    /// the other ops, remap the bio.
    Accepted(u64),
    /// Not appended: park the bio in the deferred list (FIFO).
    Wait(WaitReason),
    /// Not appended; fail the bio.
    Invalid(Invalid),
}

/// Connection state of the source, as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not started (suspended) or stopping.
    Stopped,
    /// `dmsetup message .. disconnect`: waits for `connect`.
    AdminDown,
    /// No connection: trying to connect, or waiting for the next attempt.
    Connecting,
    /// Connected, handshake in progress.
    Handshake,
    /// Streaming.
    Connected,
    /// The last handshake was refused (or failed authentication); retrying
    /// slowly until one works.
    Refused(Refusal),
}

/// Counters and cursors for `dmsetup status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records sent (including resends).
    pub sent: u64,
    /// Records sent again after a NAK, rejection or reconnect.
    pub resends: u64,
    /// NAKs received.
    pub naks: u64,
    /// LOCK_REJECTED received.
    pub lock_rejections: u64,
    /// LOCK_GRANTED received.
    pub lock_grants: u64,
    /// LOCK records appended.
    pub locks: u64,
    /// UNLOCK records appended (evictions).
    pub unlocks: u64,
    /// Corrupt frames from the target.
    pub crc_errors: u64,
    /// Handshakes completed after the first.
    pub reconnects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Host writes that had to wait (any reason; a write offered again
    /// that must wait again counts again).
    pub waits: u64,
    /// The same by reason, indexed by [`WaitReason::index`] (status
    /// `waits_by=`).
    pub waits_by: [u64; WAIT_KINDS],
    /// Local I/O failures reported.
    pub local_errors: u64,
    /// Failed local writes whose range was re-read and replicated.
    pub repairs: u64,
    /// Failed local writes whose range could not be re-read: the two
    /// devices may differ there.
    pub unrepaired: u64,
    /// Connection attempts that failed (no connection, or closed by the
    /// peer during the handshake).
    pub connect_failures: u64,
    /// Handshakes whose HELLO_REPLY failed authentication.
    pub auth_failures: u64,
    /// Connections closed because the target broke the protocol (a
    /// corrupt frame after the handshake counts in `crc_errors` only).
    pub protocol_errors: u64,
    /// Connections closed because the target stayed silent past the peer
    /// timeout.
    pub peer_timeouts: u64,
    /// Host writes given up when a suspend could not drain them in time:
    /// deferred ones failed (or requeued), sync ones completed before
    /// their acknowledgement.
    pub abandoned: u64,
}

/// Stream holds: a region whose records may not be sent yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Hold {
    used: bool,
    region: u64,
    /// Lock-sync: seq of the LOCK record sent and not yet granted.
    /// Rejected holds: the seq the target asked to resend from.
    seq: u64,
    rejected: bool,
}

const MAX_HOLDS: usize = 32;

/// Who appends a data record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A host write (takes an in-flight slot).
    Host,
    /// The repair of failed host write `seq` (uses that write's slot).
    Repair(u64),
    /// A piece of a dirty chunk (the resync engine blocks the range).
    Resync,
    /// A DIGEST_REQ of a piece being verified (the verify engine blocks
    /// the range); no payload.
    Verify,
}

/// The repair of a failed local write, as far as it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repair {
    /// No repair read in flight.
    Idle,
    /// The worker is reading the range of this failed write back.
    Reading(RepairJob),
    /// The read ended (`ok`); the worker appends the repair.
    Read(RepairJob, bool),
}

/// The source state machine. `P` is the rollback ring's page storage, `H`
/// the hot-region slots (their number is `hot_regions`), `I` the
/// in-flight slots (bounds the host writes in flight at once).
///
/// # Invariants
///
/// - Every record up to `acked` was applied by the target; the ring frees
///   a record only once it is acknowledged, its local write (which reads
///   the ring) is done and no send in progress reads it ([`Self::lease`]).
/// - `deferred` is the length of the glue's list of parked bios.
pub struct Source<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>> {
    cfg: SourceConfig,
    shift: u32,
    ring: RollbackRing<P>,
    hot: HotRegions<H>,
    inflight: Inflight<I>,
    holds: [Hold; MAX_HOLDS],
    /// Highest cumulative ACK (or HELLO_REPLY last_applied) seen: the
    /// target applied every record up to it (its bio completed).
    acked: u64,
    /// Highest durable point an ACK carried (protocol 4): every record up
    /// to it is on the target's stable storage. Ring records and resync
    /// bits are let go only up to here, so a target that loses its
    /// volatile cache gets them again.
    durable: u64,
    /// One past the highest seq ever sent.
    sent_hwm: u64,
    handshakes: u64,
    /// Logical block size of the data device (bytes; 0: not stated).
    block_size: u32,
    stats: SourceStats,
    link: link::Link,
    sleepers: Sleepers,
    /// Host bios parked by the glue (see the invariants).
    deferred: usize,
    /// `unblock_gen` when the head of the deferred list last had to wait.
    deferred_gen: u64,
    /// Bumped by every event that may let a waiting write in: a local
    /// write done, an in-flight slot freed, ring space freed.
    unblock_gen: u64,
    repair: Repair,
    repair_retry_at: Option<Instant>,
    /// The resync engine, once a dirty bitmap is attached.
    resync: Option<resync::Resync<P>>,
    /// The activity log, once attached (`activity.rs`).
    al: Option<activity::ActivityLog<H>>,
    /// The clock of the host write being offered (the activity log's
    /// lazy saves count from it).
    host_now: Instant,
    /// The data generations, once the superblock's are attached.
    gens: Option<gens::GenState>,
    /// Online verify or a checksum sync's comparison.
    verify: Option<verify::Verify>,
    /// Degraded mode (`degrade.rs`).
    degrade: degrade::Degrade,
    /// `sync_rate` in bytes/s; 0: no cap.
    sync_rate: u64,
    /// A suspend is under way: waiting writes are given up at this instant.
    suspend_until: Option<Instant>,
    /// The suspend's grace ran out: sync writes complete without their
    /// acknowledgement until the next resume.
    abandoning: bool,
    stopping: bool,
    /// The planted bug, if any (simulator self-check only).
    #[cfg(feature = "mutants")]
    pub mutant: super::mutant::Mutant,
}

/// How long a suspend waits for deferred and unacknowledged sync writes
/// while nothing moves (no acknowledgement arrives): then they are given
/// up ([`SourceStats::abandoned`]), so suspend and remove end whatever
/// the link does.
pub const SUSPEND_GRACE: Instant = 10 * super::wake::SEC;

/// Pause before retrying a repair that found no memory or ring room.
pub const REPAIR_RETRY: Instant = 100 * super::wake::MS;

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// Builds a source over caller storage; the first record gets
    /// `first_seq` (>= 1). The machine starts stopped ([`Source::start`]).
    pub fn new(
        cfg: SourceConfig,
        pages: P,
        first_seq: u64,
        hot: H,
        inflight: I,
    ) -> Result<Self, ConfigError> {
        if cfg.region_sectors == 0 || !cfg.region_sectors.is_power_of_two() {
            return Err(ConfigError::RegionSize);
        }
        if hot.is_empty() {
            return Err(ConfigError::NoHotRegions);
        }
        if inflight.is_empty() {
            return Err(ConfigError::NoInflight);
        }
        if cfg.generation == 0 {
            return Err(ConfigError::Generation);
        }
        if first_seq == 0 {
            return Err(ConfigError::FirstSeq);
        }
        Ok(Self {
            shift: cfg.region_sectors.trailing_zeros(),
            cfg,
            ring: RollbackRing::new(pages, first_seq),
            hot: HotRegions::new(hot),
            inflight: Inflight::new(inflight),
            holds: [Hold::default(); MAX_HOLDS],
            acked: first_seq - 1,
            durable: first_seq - 1,
            sent_hwm: first_seq,
            handshakes: 0,
            block_size: 0,
            stats: SourceStats::default(),
            link: link::Link::new(),
            sleepers: Sleepers::default(),
            deferred: 0,
            deferred_gen: 0,
            unblock_gen: 0,
            repair: Repair::Idle,
            repair_retry_at: None,
            resync: None,
            al: None,
            host_now: 0,
            gens: None,
            verify: None,
            degrade: degrade::Degrade::new(cfg.generation),
            sync_rate: 0,
            suspend_until: None,
            abandoning: false,
            stopping: true,
            #[cfg(feature = "mutants")]
            mutant: super::mutant::Mutant::None,
        })
    }

    /// States the data device's logical block size (bytes) in every HELLO:
    /// a target with larger blocks refuses the stream (`BlockSize`) rather
    /// than fail the writes it cannot apply.
    pub fn set_block_size(&mut self, bytes: u32) {
        self.block_size = bytes;
    }

    /// Aligns every payload in the ring to `align` bytes (a power of two
    /// from 8 to the page size; at least the data device's logical block
    /// size for the local write to go from the ring). Only while empty.
    pub fn set_payload_align(&mut self, align: usize) -> Result<(), RingError> {
        self.ring.set_payload_align(align)
    }

    /// The configuration.
    pub fn config(&self) -> &SourceConfig {
        &self.cfg
    }

    /// Region index of `sector`.
    pub fn region_of(&self, sector: u64) -> u64 {
        sector >> self.shift
    }

    fn regions(&self, h: &Header) -> Option<(u64, u64)> {
        if !h.kind.has_range() || h.count == 0 {
            return None;
        }
        let last = h.sector.saturating_add(u64::from(h.count) - 1);
        Some((h.sector >> self.shift, last >> self.shift))
    }

    fn count_wait(&mut self, why: usize) {
        self.stats.waits = self.stats.waits.saturating_add(1);
        if let Some(n) = self.stats.waits_by.get_mut(why) {
            *n = n.saturating_add(1);
        }
    }

    fn unblock(&mut self) {
        self.unblock_gen = self.unblock_gen.wrapping_add(1);
    }

    /// Offers a host write from dm `map`. For `HostOp::Write`, `fill` is
    /// called once with a writer that must receive exactly `count * 512`
    /// payload bytes; it is not called for other ops and never when the
    /// result is not `Accepted`. While earlier writes are parked, the
    /// answer is `Wait(Queued)`, so writes keep their order. Every `Wait`
    /// means: park the bio at the tail of the deferred list.
    /// `now` starts the clocks of degraded mode (`degrade.rs`).
    pub fn submit<C, F>(&mut self, c: &C, w: &HostWrite, now: Instant, fill: F) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        self.submit_with(c, w, now, Some(fill))
    }

    /// [`Source::submit`], but a write's record is only reserved: the
    /// caller copies the payload outside its lock into
    /// [`Source::reserved`]'s pieces and then calls [`Source::publish`].
    /// Its local write may begin only after that (it writes from these
    /// bytes). Other ops are complete when accepted.
    pub fn submit_reserved<C: Crc32c>(&mut self, c: &C, w: &HostWrite, now: Instant) -> Submit {
        self.submit_with(c, w, now, None::<Later<P>>)
    }

    fn submit_with<C, F>(&mut self, c: &C, w: &HostWrite, now: Instant, fill: Option<F>) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        if self.deferred > 0 {
            self.count_wait(WaitReason::Queued.index());
            self.deferred += 1;
            self.degrade_parked(now, None);
            return Submit::Wait(WaitReason::Queued);
        }
        self.host_now = now;
        let r = self.append_write(c, w, fill, Origin::Host);
        match r {
            Submit::Wait(why) => {
                self.deferred += 1;
                self.deferred_gen = self.unblock_gen;
                self.degrade_parked(now, Some(why));
            }
            Submit::Accepted(seq) => self.inflight.stamp(seq, now),
            Submit::Invalid(_) => {}
        }
        r
    }

    /// Offers the head of the deferred list again (the worker's
    /// [`WorkerStep::Deferred`]). `Wait`: push it back at the head and stop
    /// for now; otherwise it left the list.
    pub fn retry_deferred<C, F>(&mut self, c: &C, w: &HostWrite, now: Instant, fill: F) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        self.retry_deferred_with(c, w, now, Some(fill))
    }

    /// [`Source::retry_deferred`] with the record reserved, as in
    /// [`Source::submit_reserved`].
    pub fn retry_deferred_reserved<C: Crc32c>(&mut self, c: &C, w: &HostWrite, now: Instant) -> Submit {
        self.retry_deferred_with(c, w, now, None::<Later<P>>)
    }

    fn retry_deferred_with<C, F>(&mut self, c: &C, w: &HostWrite, now: Instant, fill: Option<F>) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        self.host_now = now;
        let r = self.append_write(c, w, fill, Origin::Host);
        match r {
            Submit::Wait(why) => {
                self.deferred_gen = self.unblock_gen;
                self.degrade_head_waits(now, why);
            }
            _ => {
                self.deferred = self.deferred.saturating_sub(1);
                if let Submit::Accepted(seq) = r {
                    // Its wait began no later than the parked clock's
                    // start: a sync write's wait for its acknowledgement
                    // counts from there (`degrade.rs`).
                    let since = self.degrade.parked.since().unwrap_or(now);
                    self.inflight.stamp(seq, since);
                }
                self.degrade_unparked();
            }
        }
        r
    }

    /// `map` could not get a bio for a write's local I/O without sleeping
    /// at `now`: the glue parks it in the deferred list, and the worker
    /// (which may sleep for one) offers it soon. Its wait counts from
    /// `now` (degraded mode's parked clock).
    pub fn defer_unprepared(&mut self, now: Instant) {
        self.count_wait(WAIT_NO_BIO);
        self.deferred += 1;
        self.degrade_parked(now, None);
        self.deferred_gen = self.unblock_gen.wrapping_sub(1);
    }

    /// A parked bio left the deferred list without being offered again
    /// (the glue failed it, or gave it back to dm: [`WorkerStep::Abandon`]).
    pub fn deferred_dropped(&mut self) {
        self.deferred = self.deferred.saturating_sub(1);
        self.degrade_unparked();
        if self.abandoning {
            self.stats.abandoned = self.stats.abandoned.saturating_add(1);
        }
    }

    /// Bios the glue holds in its deferred list.
    pub fn deferred_len(&self) -> usize {
        self.deferred
    }

    /// Plants [`Source::mutant`]'s bug in the ring too (the simulator
    /// calls this after setting it).
    #[cfg(feature = "mutants")]
    pub fn plant_in_ring(&mut self) {
        self.ring.mutant_send_pending = self.mutant == super::mutant::Mutant::SendPending;
    }

    /// Caps the records reserved and not yet published at once (see
    /// [`RollbackRing::set_max_pending`]).
    pub fn set_max_pending(&mut self, n: usize) {
        self.ring.set_max_pending(n);
    }

    /// Where the payload of reserved record `seq` goes (`None` if it is
    /// not reserved, or already published): see [`Source::submit_reserved`].
    pub fn reserved(&self, seq: u64) -> Option<Reserved> {
        self.ring.reserved(seq)
    }

    /// Reserved record `seq` is filled: `crc` is its
    /// [`Reserved::seed_crc`] extended with the payload bytes as they are
    /// in the ring. It may be sent from now on. `false` if `seq` was not
    /// reserved (a bug of the caller; nothing changes).
    pub fn publish(&mut self, seq: u64, crc: u32) -> bool {
        if self.ring.publish(seq, crc).is_err() {
            return false;
        }
        // A write parked for a pending slot may go on; the sender may
        // have stopped in front of this record.
        self.unblock();
        self.free_ring();
        true
    }

    /// Fills reserved record `seq` through `fill` (exactly its length)
    /// and publishes it: the simulator's and the tests' way, holding the
    /// machine; the kernel copies outside its lock instead.
    pub fn fill_reserved<C, F>(&mut self, c: &C, seq: u64, fill: F) -> Result<(), RingError>
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        let r = self.ring.reserved(seq).ok_or(RingError::NotPending)?;
        let crc = self.ring.fill_reserved(c, &r, fill)?;
        if self.publish(seq, crc) {
            Ok(())
        } else {
            Err(RingError::NotPending)
        }
    }

    /// The payload pieces of data record `seq` in the ring, each starting
    /// on the ring's payload alignment: the local write goes from these
    /// very bytes, so both sides write the same data even if the host
    /// changes its buffer meanwhile. `None` if `seq` has no payload held.
    pub fn payload_chunks(&self, seq: u64) -> Option<crate::log::pages::Spans> {
        let v = self.ring.view(seq)?;
        (v.header.kind == Kind::Write).then(|| v.payload_chunks())
    }

    /// The oldest failed local write awaiting its repair: the glue reads
    /// `count` sectors at `sector` from its own device and passes them to
    /// [`Source::repair`] (or calls [`Source::repair_failed`]). Until then
    /// overlapping host writes wait, so the read sees no newer data.
    pub fn next_repair(&self) -> Option<RepairJob> {
        self.inflight.next_repair()
    }

    /// Appends the repair of failed write `seq`: a WRITE record of its
    /// range whose payload (`fill`, exactly `count * 512` bytes) is what
    /// the source's device holds there now, so the target ends up equal to
    /// the source whatever part of the failed write reached the disk.
    /// `Wait` (ring full): the worker tries again after [`REPAIR_RETRY`].
    /// `Invalid`: the repair cannot be recorded and is given up.
    pub fn repair<C, F>(&mut self, c: &C, seq: u64, now: Instant, fill: F) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        self.repair_with(c, seq, now, Some(fill))
    }

    /// [`Source::repair`] with the record reserved, as in
    /// [`Source::submit_reserved`].
    pub fn repair_reserved<C: Crc32c>(&mut self, c: &C, seq: u64, now: Instant) -> Submit {
        self.repair_with(c, seq, now, None::<Later<P>>)
    }

    fn repair_with<C, F>(&mut self, c: &C, seq: u64, now: Instant, fill: Option<F>) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        self.repair = Repair::Idle;
        let Some(job) = self.inflight.repair_job(seq) else {
            return Submit::Invalid(Invalid::Internal);
        };
        let Ok(count) = u32::try_from(job.count) else {
            self.repair_failed(seq);
            return Submit::Invalid(Invalid::Range);
        };
        let w = HostWrite {
            op: HostOp::Write,
            sector: job.sector,
            count,
            flags: 0,
        };
        let r = self.append_write(c, &w, fill, Origin::Repair(seq));
        match r {
            Submit::Accepted(_) => {
                if self.inflight.repaired(seq) {
                    self.unblock();
                }
                self.stats.repairs = self.stats.repairs.saturating_add(1);
            }
            Submit::Wait(_) => self.repair_retry_at = Some(now.saturating_add(REPAIR_RETRY)),
            Submit::Invalid(_) => self.repair_failed(seq),
        }
        r
    }

    /// The range of failed write `seq` could not be re-read: gives up its
    /// repair (counted in [`SourceStats::unrepaired`]).
    pub fn repair_failed(&mut self, seq: u64) {
        self.repair = Repair::Idle;
        if self.inflight.repaired(seq) {
            self.unblock();
            self.stats.unrepaired = self.stats.unrepaired.saturating_add(1);
        }
    }
    /// [`Source::submit`], or a repair or resync record (which take no
    /// in-flight slot).
    /// `fill`: `None` reserves a WRITE's record instead of filling it
    /// (see [`Source::submit_reserved`]).
    fn append_write<C, F>(&mut self, c: &C, w: &HostWrite, fill: Option<F>, origin: Origin) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        let (kind, sector, count, flags) = match w.op {
            HostOp::Write => (Kind::Write, w.sector, w.count, w.flags),
            HostOp::Discard => (Kind::Discard, w.sector, w.count, w.flags),
            HostOp::WriteZeroes => (Kind::WriteZeroes, w.sector, w.count, w.flags),
            HostOp::Flush => (Kind::Flush, 0, 0, 0),
        };
        // The verify engine's request reads the range on the target.
        let kind = if origin == Origin::Verify && kind == Kind::Write {
            Kind::DigestReq
        } else {
            kind
        };
        if flags & !FLAGS_KNOWN != 0 {
            return Submit::Invalid(Invalid::Flags);
        }
        let payload_len = if kind == Kind::Write {
            if count > MAX_WRITE_SECTORS {
                return Submit::Invalid(Invalid::Range);
            }
            // count <= 2048, so this is at most 1 MiB.
            count as usize * SECTOR_SIZE
        } else {
            0
        };
        let mut range = None;
        if kind != Kind::Flush {
            let end = match sector.checked_add(u64::from(count)) {
                Some(e) if count > 0 && e <= self.cfg.dev_sectors => e,
                _ => return Submit::Invalid(Invalid::Range),
            };
            let first = sector >> self.shift;
            let last = (end - 1) >> self.shift;
            let n = last - first + 1;
            if n > self.hot.capacity() as u64 || n > self.al_capacity() {
                return Submit::Invalid(Invalid::TooManyRegions);
            }
            range = Some((first, last));
        }
        let repair = match origin {
            Origin::Repair(seq) => Some(seq),
            _ => None,
        };
        if kind != Kind::Flush
            && (self
                .inflight
                .overlaps_local(sector, u64::from(count), repair)
                || (origin == Origin::Host
                    && (self.resync_blocks(sector, u64::from(count))
                        || self.verify_blocks(sector, u64::from(count)))))
        {
            self.count_wait(WaitReason::Overlap.index());
            return Submit::Wait(WaitReason::Overlap);
        }
        if origin == Origin::Host && self.inflight.is_full() {
            self.count_wait(WaitReason::InflightFull.index());
            return Submit::Wait(WaitReason::InflightFull);
        }
        if let (Origin::Host, Some((first, last))) = (origin, range) {
            // The local write may not begin before its regions are in the
            // activity log on the metadata device.
            if !self.al_admit(first, last, self.host_now) {
                self.count_wait(WaitReason::ActivityLog.index());
                return Submit::Wait(WaitReason::ActivityLog);
            }
        }
        // Space for the data record plus every LOCK and UNLOCK it needs,
        // wherever the padding before its payload falls.
        let mut need = self.ring.max_stored_len(payload_len);
        if let Some((first, last)) = range {
            let misses = self.hot.misses(first, last);
            let free = self.hot.free_slots() as u64;
            let evictions = misses.saturating_sub(free);
            let ctl = misses.saturating_add(evictions);
            let ctl_bytes = usize::try_from(ctl)
                .unwrap_or(usize::MAX)
                .saturating_mul(self.ring.max_stored_len(0));
            need = need.saturating_add(ctl_bytes);
        }
        if need > self.ring.capacity_bytes() {
            // Could not fit even once every other record is gone.
            return Submit::Invalid(Invalid::TooLarge);
        }
        if need > self.ring.free_bytes() && self.degrade.rejoin && origin == Origin::Host {
            // Degraded, and the handshake under way would have the host
            // wait for the ring: that handshake ends and what it kept is
            // dropped (freed unless a local write still reads it).
            self.close();
            self.degrade_rejoin_failed();
        }
        if need > self.ring.free_bytes() {
            self.count_wait(WaitReason::RingFull.index());
            return Submit::Wait(WaitReason::RingFull);
        }
        if kind == Kind::Write && fill.is_none() && !self.ring.can_reserve() {
            self.count_wait(WaitReason::Publishing.index());
            return Submit::Wait(WaitReason::Publishing);
        }
        if let Some((first, last)) = range {
            let mut r = first;
            loop {
                match self.hot.touch(r) {
                    Touch::Hit => {}
                    Touch::Inserted => {
                        if let Err(e) = self.append_ctl(c, Kind::Lock, r) {
                            return e;
                        }
                    }
                    Touch::Evicted(old) => {
                        if let Err(e) = self.append_ctl(c, Kind::Unlock, old) {
                            return e;
                        }
                        if let Err(e) = self.append_ctl(c, Kind::Lock, r) {
                            return e;
                        }
                    }
                    Touch::NoCapacity => return Submit::Invalid(Invalid::Internal),
                }
                if r >= last {
                    break;
                }
                r += 1;
            }
        }
        let mut h = Header::new(kind);
        h.flags = flags;
        h.sector = sector;
        h.count = count;
        let seq = if kind == Kind::Write {
            match fill {
                Some(f) => self.ring.append(c, h, payload_len, f),
                None => self.ring.reserve(c, h, payload_len).map(|r| r.seq),
            }
        } else {
            self.ring.append(c, h, 0, |_| Ok(()))
        };
        let seq = match seq {
            Ok(s) => s,
            Err(RingError::Full) => return Submit::Wait(WaitReason::RingFull),
            Err(RingError::Busy) => return Submit::Wait(WaitReason::Publishing),
            Err(RingError::LengthMismatch) => return Submit::Invalid(Invalid::Fill),
            Err(RingError::TooLarge) => return Submit::Invalid(Invalid::TooLarge),
            Err(RingError::BadHeader(_)) => return Submit::Invalid(Invalid::Range),
            Err(_) => return Submit::Invalid(Invalid::Internal),
        };
        if let (Origin::Host | Origin::Repair(_), Some((first, last))) = (origin, range) {
            self.al_wrote(first, last, seq);
        }
        if origin == Origin::Host && !self.inflight.insert(seq, sector, u64::from(count)) {
            // Checked above; the record is in the ring and will replicate.
            return Submit::Invalid(Invalid::Internal);
        }
        if self.degrade.on {
            // Staged for the local write only (the in-flight slot keeps
            // it in the ring until then): the target gets the chunk from
            // the resync (`degrade.rs`).
            self.degraded_append(sector, u64::from(count));
        }
        Submit::Accepted(seq)
    }

    fn append_ctl<C: Crc32c>(&mut self, c: &C, kind: Kind, region: u64) -> Result<u64, Submit> {
        let mut h = Header::new(kind);
        h.sector = region;
        match self.ring.append(c, h, 0, |_| Ok(())) {
            Ok(s) => {
                if kind == Kind::Lock {
                    self.stats.locks = self.stats.locks.saturating_add(1);
                } else {
                    self.stats.unlocks = self.stats.unlocks.saturating_add(1);
                }
                Ok(s)
            }
            Err(RingError::Full) => Err(Submit::Wait(WaitReason::RingFull)),
            Err(_) => Err(Submit::Invalid(Invalid::Internal)),
        }
    }


    /// The local I/O of host write `seq` finished. Returns false for an
    /// unknown seq. Completions may follow ([`Source::poll_completed`]).
    pub fn local_done(&mut self, seq: u64, ok: bool) -> bool {
        if !ok {
            self.stats.local_errors = self.stats.local_errors.saturating_add(1);
        }
        let before = self.inflight.oldest_waiting_since();
        let known = self.inflight.local_done(seq, ok);
        let after = self.inflight.oldest_waiting_since();
        let earlier = match (after, before) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if known && self.completion_ack().is_some() && earlier {
            // A sync write waits for its acknowledgement: degraded mode's
            // clock (`degrade.rs`) starts, or starts earlier (a write
            // whose local I/O ended after a later one's may have waited
            // longer: gen 14 seed 381).
            self.degrade_clock_started();
        }
        if known {
            self.unblock();
            // The ring may hold acknowledged records this write pinned.
            self.free_ring();
        }
        known
    }

    /// The acknowledgement a completion waits for: none with async
    /// completion (or once a suspend gave up waiting), the target's
    /// applied seq with sync completion.
    fn completion_ack(&self) -> Option<u64> {
        let degraded = self.degrade.on && !self.degrade.rejoin;
        match (self.cfg.completion, self.abandoning || degraded) {
            (Completion::Sync, false) => Some(self.acked),
            _ => None,
        }
    }

    /// One host write that may complete now: async completion once its
    /// local I/O is done, sync completion once the target also applied it
    /// (a failed local I/O completes at once, with an error).
    pub fn poll_completed(&mut self) -> Option<Completed> {
        let c = self.inflight.take_completed(self.completion_ack())?;
        if self.abandoning && self.cfg.completion == Completion::Sync && c.seq > self.acked {
            self.stats.abandoned = self.stats.abandoned.saturating_add(1);
        }
        self.unblock();
        Some(c)
    }

    /// Whether [`Source::poll_completed`] has something to give.
    pub fn has_completions(&self) -> bool {
        self.inflight.has_completed(self.completion_ack())
    }

    /// Frees the ring up to the acknowledged seq, except what a local
    /// write or a send in progress still reads (the invariants).
    fn free_ring(&mut self) {
        // Only durable records leave (`durable`); dropped ones (degraded
        // mode) go too: their chunks are dirty.
        #[cfg(feature = "mutants")]
        let durable = if self.mutant == crate::transport::proto::mutant::Mutant::FreeOnApplied {
            self.acked
        } else {
            self.durable
        };
        #[cfg(not(feature = "mutants"))]
        let durable = self.durable;
        let mut upto = durable.max(self.degrade.dropped);
        if let Some(first) = self.link.lease_first() {
            upto = upto.min(first.saturating_sub(1));
        }
        if let Some(oldest) = self.inflight.oldest_local() {
            upto = upto.min(oldest.saturating_sub(1));
        }
        if self.ring.ack(upto) > 0 {
            self.unblock();
        }
    }

    /// A new cumulative acknowledgement: applied up to `seq`, durable up
    /// to `durable` (an ACK; the handshake's last applied seq says
    /// nothing new about durability).
    fn acknowledge(&mut self, seq: u64, durable: u64, now: Instant) {
        if durable > self.durable {
            self.durable = durable;
        }
        if seq > self.acked {
            self.acked = seq;
            if self.suspend_until.is_some() {
                // Moving along: the suspend's grace starts again.
                self.suspend_until = Some(now.saturating_add(SUSPEND_GRACE));
            }
        }
        self.free_ring();
        self.clear_acked_holds();
        // A resync piece lost from the target's cache must still be dirty.
        self.resync_acked(self.durable, now);
        self.gens_acked(self.acked);
    }

    /// Handles an ACK, NAK, LOCK_GRANTED or LOCK_REJECTED on a streaming
    /// connection; `Err` for a frame the target must not send.
    fn on_stream_frame(&mut self, h: &Header, now: Instant) -> Result<(), link::RecvError> {
        match h.kind {
            Kind::Ack => {
                if h.seq >= self.sent_hwm || h.sector > h.seq {
                    return Err(link::RecvError::Protocol);
                }
                self.acknowledge(h.seq, h.sector, now);
            }
            Kind::Nak => {
                self.stats.naks = self.stats.naks.saturating_add(1);
                self.rewind_to(h.seq);
            }
            Kind::LockGranted => {
                self.stats.lock_grants = self.stats.lock_grants.saturating_add(1);
                for ho in self.holds.iter_mut() {
                    if ho.used && ho.region == h.sector && (ho.rejected || ho.seq <= h.seq) {
                        *ho = Hold::default();
                    }
                }
            }
            Kind::LockRejected => {
                self.stats.lock_rejections = self.stats.lock_rejections.saturating_add(1);
                self.rewind_to(h.seq);
                let mut placed = false;
                for ho in self.holds.iter_mut() {
                    if ho.used && ho.rejected && ho.region == h.sector {
                        ho.seq = ho.seq.min(h.seq);
                        placed = true;
                        break;
                    }
                }
                if !placed {
                    if let Some(ho) = self.holds.iter_mut().find(|x| !x.used) {
                        *ho = Hold {
                            used: true,
                            region: h.sector,
                            seq: h.seq,
                            rejected: true,
                        };
                    } else if let Some(ho) = self.holds.iter_mut().find(|x| !x.rejected) {
                        // Table full of lock-sync waits: those are re-created
                        // when the LOCKs are resent, the rejection is not.
                        *ho = Hold {
                            used: true,
                            region: h.sector,
                            seq: h.seq,
                            rejected: true,
                        };
                        let s = self.ring.send_seq();
                        self.rewind_to(s.min(self.acked + 1));
                    }
                }
            }
            _ => return Err(link::RecvError::Protocol),
        }
        Ok(())
    }

    /// Releases holds an ACK makes moot. The target counts a LOCK as
    /// applied only once granted, so an ACK covering a LOCK is as good as
    /// its LOCK_GRANTED (which may have been lost with a connection, or
    /// never sent for a resend). An ACK covering the resend point of a
    /// LOCK_REJECTED proves the target took that record after all (a NAK
    /// made us resend it before the rejection arrived, and the log had
    /// drained): waiting for a grant could then wait forever, as the
    /// region may have been unlocked since.
    fn clear_acked_holds(&mut self) {
        let acked = self.acked;
        for ho in self.holds.iter_mut() {
            if ho.used && ho.seq <= acked {
                *ho = Hold::default();
            }
        }
    }

    /// Moves the send cursor back to `seq` (clamped to what the target
    /// has not applied and the ring still holds).
    fn rewind_to(&mut self, seq: u64) {
        let floor = self
            .acked
            .saturating_add(1)
            .max(self.ring.oldest_seq().unwrap_or(self.ring.next_seq()));
        let s = seq.max(floor);
        if s < self.ring.send_seq() && self.ring.rewind(s).is_ok() {
            // LOCKs from s on are sent again; their grants are awaited anew.
            for ho in self.holds.iter_mut() {
                if ho.used && !ho.rejected && ho.seq >= s {
                    *ho = Hold::default();
                }
            }
        }
    }

    /// Whether the record at the send cursor may go now (not held back by
    /// a rejection or a lock-sync wait); `None` when everything is sent.
    fn sendable(&self) -> Option<crate::log::ring::RecordView> {
        let v = self.ring.peek_send()?;
        if self.holds.iter().any(|h| h.used && h.rejected) {
            // Held after LOCK_REJECTED: the target's commit log is full and
            // drops everything from the rejected seq on, so the whole stream
            // waits for the grant.
            return None;
        }
        if let Some((first, last)) = self.regions(&v.header) {
            if self
                .holds
                .iter()
                .any(|h| h.used && !h.rejected && h.region >= first && h.region <= last)
            {
                return None;
            }
        }
        if self.cfg.mode == Mode::LockSync
            && v.header.kind == Kind::Lock
            && !self.holds.iter().any(|h| !h.used)
        {
            return None;
        }
        Some(v)
    }

    /// Moves the send cursor past `v` (the record [`Self::sendable`] gave).
    fn advance_send(&mut self, v: &crate::log::ring::RecordView) {
        if self.cfg.mode == Mode::LockSync && v.header.kind == Kind::Lock {
            if let Some(ho) = self.holds.iter_mut().find(|x| !x.used) {
                *ho = Hold {
                    used: true,
                    region: v.header.sector,
                    seq: v.seq,
                    rejected: false,
                };
            }
        }
        self.ring.advance_send();
        self.stats.sent = self.stats.sent.saturating_add(1);
        if v.seq < self.sent_hwm {
            self.stats.resends = self.stats.resends.saturating_add(1);
        } else {
            self.sent_hwm = v.seq.saturating_add(1);
        }
    }

    /// Forgets what the old connection had: its grants and rejections are
    /// moot, everything unacknowledged is resent after the next handshake.
    fn reset_holds(&mut self) {
        self.holds = [Hold::default(); MAX_HOLDS];
    }

    /// The sleepers that are asleep and have work now; marks them awake.
    /// Call at the end of every critical section and wake exactly these.
    pub fn take_wakes(&mut self) -> Wakes {
        let mut s = self.sleepers;
        let w = s.take(SLEEPERS, |i| self.has_work(i));
        self.sleepers = s;
        w
    }

    /// Whether sleeper `i` would do something now if it asked (timers
    /// aside: a sleeper's step names its own deadline).
    pub fn has_work(&self, i: u8) -> bool {
        if self.stopping {
            return i != WORKER
                || !(matches!(self.repair, Repair::Reading(_)) || self.resync_reading() || self.verify_reading());
        }
        match i {
            SENDER => self.sender_has_work(),
            WORKER => self.worker_has_work(),
            _ => false,
        }
    }

    /// A deadline sleeper `i` watches changed: wake it to sleep again
    /// until the new one (see [`super::wake`]).
    fn rearm(&mut self, i: u8) {
        #[cfg(feature = "mutants")]
        if self.mutant == super::mutant::Mutant::NoRearm {
            return;
        }
        self.sleepers.rearm(i);
    }

    /// Whether sleeper `i` is asleep (for the simulator's checks).
    pub fn is_asleep(&self, i: u8) -> bool {
        self.sleepers.is_asleep(i)
    }

    /// Starts (dm resume): the threads run, the link connects at once.
    pub fn start(&mut self, now: Instant) {
        self.stopping = false;
        self.suspend_until = None;
        self.abandoning = false;
        self.link.start(now);
        // Not streaming until a handshake: degraded mode's clock runs.
        self.degrade.down_since = None;
        self.degrade_link_down(now);
    }

    /// Asks every thread to exit (dm postsuspend, remove). The glue shuts
    /// the sockets down, joins the threads, then calls [`Source::stopped`].
    pub fn stop(&mut self) {
        self.stopping = true;
        self.mark_unacked();
        self.al_on_stop();
        self.save_on_stop();
        self.gens_on_stop();
    }

    /// The threads are gone: whatever connection there was is closed.
    pub fn stopped(&mut self) {
        if self.link.stopped() {
            self.stats.disconnects = self.stats.disconnects.saturating_add(1);
        }
        self.reset_holds();
        if let Repair::Read(..) = self.repair {
            // Read but not appended: the next start reads it again.
            self.repair = Repair::Idle;
        }
        self.resync_stopped();
        self.verify_stopped();
        self.free_ring();
    }

    /// True while the threads are asked to exit.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// A suspend starts (dm presuspend): deferred and unacknowledged sync
    /// writes get [`SUSPEND_GRACE`] (renewed by every acknowledgement) to
    /// drain, then the worker gives them up ([`WorkerStep::Abandon`]).
    pub fn begin_suspend(&mut self, now: Instant) {
        self.suspend_until = Some(now.saturating_add(SUSPEND_GRACE));
        self.rearm(WORKER);
    }

    /// The suspend was cancelled (dm presuspend_undo).
    pub fn cancel_suspend(&mut self) {
        self.suspend_until = None;
        self.abandoning = false;
    }

    /// Highest seq the target acknowledged as applied.
    pub fn acked_seq(&self) -> u64 {
        self.acked
    }

    /// Highest seq the target reported durable (on stable storage).
    pub fn durable_seq(&self) -> u64 {
        self.durable
    }

    /// The rollback ring (read-only: cursors, usage, pages).
    pub fn ring(&self) -> &RollbackRing<P> {
        &self.ring
    }

    /// True when nothing is in flight and the ring is empty.
    pub fn is_idle(&self) -> bool {
        self.ring.is_empty() && self.inflight.is_empty()
    }

    /// Number of host writes in flight (submitted, not yet completed).
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Number of hot regions.
    pub fn hot_len(&self) -> usize {
        self.hot.len()
    }

    /// Whether the stream is held by a rejection or a lock-sync wait.
    pub fn is_held(&self) -> bool {
        self.holds.iter().any(|h| h.used)
    }

    /// The current holds as `(region, seq, rejected)`: lock-sync waits for
    /// the grant of the LOCK sent at `seq`, or (rejected) a LOCK_REJECTED
    /// that asked to resend from `seq`.
    pub fn holds(&self) -> impl Iterator<Item = (u64, u64, bool)> + '_ {
        self.holds
            .iter()
            .filter(|h| h.used)
            .map(|h| (h.region, h.seq, h.rejected))
    }

    /// Counters.
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }
}

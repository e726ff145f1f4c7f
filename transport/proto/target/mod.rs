//! Target-side protocol state machine (sans-IO).
//!
//! Everything the target decides lives here; the kernel glue (and the
//! simulator, which runs this very code) moves bytes and bios.
//!
//! Events in: accepted connections ([`Target::on_accept`]), frames and
//! read errors from the connection's receiver ([`Target::on_frame`],
//! [`Target::on_recv_end`]), device completions ([`Target::io_done`]),
//! reads through the target's own device ([`Target::read_arrives`]),
//! local lock requests ([`Target::lock_request`],
//! [`Target::local_unlock`]), the results of the steps below.
//!
//! Steps out, one per thread: [`Target::poll_listener`] (accept, back off
//! after errors), [`Target::poll_receiver`] (after back-pressure),
//! [`Target::poll_applier`] (records to the device, reads that may go,
//! failed-write retries), [`Target::poll_sender`] (CHALLENGE,
//! HELLO_REPLY, NAK, lock replies, ACKs, keepalives, the handshake
//! deadline and peer timeout) and [`Target::lock_poll`] (a waiting
//! `lock` message). A step that says "sleep" marks its thread asleep;
//! [`Target::take_wakes`] names the sleepers that have work again (see
//! [`super::wake`]).
//!
//! Stream locks are taken and released when LOCK / UNLOCK records arrive
//! (in stream order). A data record is applied only while no local user
//! holds a region it touches; local users in turn wait while the stream
//! holds or wants the region or while unapplied stream writes touch it.

mod conn;
mod digest;
mod durable;
mod gens;
mod steps;

use core::ops::DerefMut;

pub use conn::{Accept, ListenerStep, RxStep, RxVerdict, SenderStep, SEND_FRAMES};
pub use digest::DIGEST_QUEUE;
pub use steps::{ApplierStep, IoStatus, LockReply, APPLY_BATCH, LOCK_WAIT, RETRY, SUSPEND_GRACE};

use super::wake::{Instant, Sleepers, Wakes};
use super::{Refusal, HELLO_FLAG_CONSISTENT, HELLO_FLAG_LOCK_SYNC, HELLO_FLAG_SYNC_COMPLETION};
use crate::transport::table::Secret;
use crate::log::commit::{CommitError, CommitLog, StorageError, WindowSlot};
use crate::log::locks::{LocalLockError, LockResult, LockSlot, LockTable};
use crate::log::pages::{Pages, Spans};
use crate::log::record::{
    decode_frame, decode_frame_checked, encode_frame, Crc32c, DecodeError, EncodeError, Header, Hello, Kind, FLAG_FUA,
    NAK_CORRUPT, NAK_GAP, VERSION,
};

/// Target configuration (from the table line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    /// Sectors per region; a power of two, must match the source's.
    pub region_sectors: u32,
    /// Size of the data device in sectors, must match the source's.
    pub dev_sectors: u64,
    /// Acknowledge at least every this many applied records (>= 1); ACKs
    /// also go out at once for FLUSH and FUA, in sync completion mode, and
    /// whenever the target runs idle.
    pub ack_every: u32,
    /// Shared secret for the handshake's HMAC, if any.
    pub secret: Option<Secret>,
}

/// Sleeper number of the receiver thread (asleep under back-pressure).
pub const RECEIVER: u8 = 0;
/// Sleeper number of the applier thread.
pub const APPLIER: u8 = 1;
/// Sleeper number of the sender thread.
pub const SENDER: u8 = 2;
/// Sleeper number of the listener thread (asleep after accept errors).
pub const LISTENER: u8 = 3;
/// Sleeper number of a `lock` message waiting for its grant.
pub const LOCKER: u8 = 4;
/// Number of sleepers of a target.
pub const SLEEPERS: u8 = 5;

/// Explicit local locks (`dmsetup message .. lock`) held at once.
pub const MAX_MSG_LOCKS: usize = 16;

/// Why a configuration is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetConfigError {
    /// `region_sectors` is zero or not a power of two.
    RegionSize,
    /// The lock table has no slot.
    NoLockSlots,
    /// The commit log's issue window has no slot.
    NoWindowSlots,
    /// The region filter's bucket count is not a power of two (or zero).
    FilterBuckets,
}

impl From<StorageError> for TargetConfigError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NoWindowSlots => TargetConfigError::NoWindowSlots,
            StorageError::FilterBuckets => TargetConfigError::FilterBuckets,
        }
    }
}

/// What a frame on a streaming connection did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetRecv {
    /// Consumed.
    Ok,
    /// Not consumed: the commit log (or the control queue) is full; it is
    /// offered again once there is room (back-pressure).
    Busy,
    /// A HELLO (only the handshake takes one).
    Hello(Hello),
    /// The byte stream cannot be trusted or the peer broke the protocol.
    Disconnect(DecodeError),
    /// Consumed, but its payload is still to be copied into the commit
    /// log: [`Target::filling`], then [`Target::on_filled`].
    Fill(u64),
}

/// Whether a frame with header `h` is checked and copied into the commit
/// log outside the lock ([`Target::on_frame_checked`]; the receiver asks
/// before it takes it): a WRITE over [`super::INLINE_COPY_BYTES`].
pub fn copies_outside(h: &Header) -> bool {
    h.kind == Kind::Write && h.len as usize > super::INLINE_COPY_BYTES
}

/// One control frame the target has to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctl {
    Granted { region: u64, seq: u64 },
    Rejected { region: u64, seq: u64 },
}

const CTL_QUEUE: usize = 32;
const MAX_REJECTED: usize = 16;

/// Counters and cursors for `dmsetup status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetStats {
    /// Records accepted into the commit log.
    pub received: u64,
    /// Resent records ignored because they were already received.
    pub duplicates: u64,
    /// Frames with a bad checksum (each answered with NAK).
    pub crc_errors: u64,
    /// Records dropped because an earlier one was missing (gap) or while
    /// waiting for a resend after a NAK or LOCK_REJECTED.
    pub dropped: u64,
    /// NAKs sent.
    pub naks: u64,
    /// Stream LOCKs that met a local holder.
    pub lock_conflicts: u64,
    /// LOCK_REJECTED sent.
    pub lock_rejections: u64,
    /// LOCK_GRANTED sent.
    pub lock_grants: u64,
    /// Stream LOCKs the lock table had no slot for (applied anyway; data
    /// records still wait for local holders).
    pub lock_table_full: u64,
    /// ACKs sent.
    pub acks: u64,
    /// Frames refused for lack of space (back-pressure).
    pub busy: u64,
    /// Device I/O failures reported (retried later).
    pub io_errors: u64,
    /// Times a data record that could otherwise start was held back by
    /// [`Target::poll_issue`] because a local user held its region.
    pub local_waits: u64,
    /// Handshakes after the first.
    pub reconnects: u64,
    /// Handshakes refused.
    pub refusals: u64,
    /// Records larger than the whole commit log (connection dropped; the
    /// commit log must hold at least one maximal frame, 1 MiB + 40 bytes).
    pub oversized: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed at once because one was already served.
    pub refused_connections: u64,
    /// HELLOs that failed authentication.
    pub auth_failures: u64,
    /// Connections closed because the peer broke the protocol.
    pub protocol_errors: u64,
    /// Connections closed because the source stayed silent past the peer
    /// timeout.
    pub peer_timeouts: u64,
    /// Failed `accept()` calls (the listener backs off after each).
    pub accept_errors: u64,
    /// Writes through the target's own device, refused.
    pub writes_refused: u64,
    /// Reads failed because a suspend could not wait for them any longer.
    pub reads_failed: u64,
    /// Reads failed because the image is in the middle of a sync.
    pub reads_refused: u64,
    /// DIGEST_REQ records answered (verify, checksum syncs).
    pub digests: u64,
}

/// Result of [`Target::local_lock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalLock {
    /// Held; release with [`Target::local_unlock`].
    Granted,
    /// The stream holds or wants a region, or stream writes to it are
    /// pending; retry later.
    WouldBlock,
    /// The lock table has no room for the range.
    Full,
    /// The range is empty or past the end of the device.
    Invalid,
}

/// The target state machine, over caller storage (so the machine itself
/// is small, under 3 KiB, and never has to pass through a kernel stack):
/// - `P`: the commit log's pages;
/// - `W`: the commit log's issue window (at least 1 slot;
///   [`crate::log::commit::SCAN_LIMIT`] is the usual);
/// - `F`: the commit log's region filter counters (a power of two;
///   [`crate::log::filter::FILTER_BUCKETS`] is the usual);
/// - `L`: the region lock table's slots (at least `hot_regions` of the
///   source plus room for local locks).
pub struct Target<P, W, F, L>
where
    P: Pages,
    W: DerefMut<Target = [WindowSlot]>,
    F: DerefMut<Target = [u32]>,
    L: DerefMut<Target = [LockSlot]>,
{
    cfg: TargetConfig,
    shift: u32,
    log: CommitLog<P, W, F>,
    locks: LockTable<L>,
    /// Replication generation adopted from the source (0: none yet).
    generation: u64,
    /// The data generations of the image (`gens.rs`).
    gens: crate::log::meta::generation::Generations,
    /// The image is a flush-boundary image of `gens.current`.
    consistent: bool,
    /// The rule the last handshake applied.
    rule: Option<crate::log::meta::generation::Rule>,
    /// DIGEST answers waiting to be sent (`digest.rs`).
    digests: digest::Digests,
    hello_flags: u32,
    connected: bool,
    handshakes: u64,
    reply: Option<Hello>,
    /// Seq to NAK (with reason), if one is due.
    nak: Option<(u64, u32)>,
    /// NAK sent for this seq; later seqs are dropped until it arrives.
    awaiting: Option<u64>,
    /// LOCK_REJECTED sent; records are dropped until this seq arrives.
    dropping: Option<u64>,
    /// The record reserved in the commit log whose payload the receiver
    /// is copying, and where it goes (`TargetRecv::Fill`).
    filling: Option<(u64, Spans)>,
    /// FIFO of lock replies: a grant must never overtake the rejection
    /// it answers.
    ctl: [Ctl; CTL_QUEUE],
    ctl_head: usize,
    ctl_len: usize,
    rejected: [Option<u64>; MAX_REJECTED],
    acked_sent: u64,
    /// The durable point (`durable.rs`).
    durable: durable::Durable,
    /// A FLUSH or FUA record completed since the last ACK.
    urgent: bool,
    failed: u64,
    /// Logical block size of the data device (bytes; 0: not stated).
    block_size: u32,
    stats: TargetStats,
    link: conn::Conn,
    sleepers: Sleepers,
    steps: steps::Steps,
    stopping: bool,
    /// The planted bug, if any (simulator self-check only).
    #[cfg(feature = "mutants")]
    pub mutant: super::mutant::Mutant,
    /// Mutants' memory of what a device completion last made due.
    #[cfg(feature = "mutants")]
    kicks: (bool, bool),
}

/// True if no local user holds a region `h` (a data record) touches.
fn regions_free_of_local<L: DerefMut<Target = [LockSlot]>>(
    locks: &LockTable<L>,
    shift: u32,
    h: &Header,
) -> bool {
    if !h.kind.has_range() || h.count == 0 {
        return true;
    }
    let first = h.sector >> shift;
    let last = h.sector.saturating_add(u64::from(h.count) - 1) >> shift;
    !locks.any_local(first, last)
}

impl<P, W, F, L> Target<P, W, F, L>
where
    P: Pages,
    W: DerefMut<Target = [WindowSlot]>,
    F: DerefMut<Target = [u32]>,
    L: DerefMut<Target = [LockSlot]>,
{
    /// Builds a target over caller storage: the commit log's `pages`,
    /// issue `window` and region `filter` counters, and the lock table's
    /// `lock_slots` (see [`Target`]; every slot and counter is cleared).
    pub fn new(
        cfg: TargetConfig,
        pages: P,
        window: W,
        filter: F,
        lock_slots: L,
    ) -> Result<Self, TargetConfigError> {
        if cfg.region_sectors == 0 || !cfg.region_sectors.is_power_of_two() {
            return Err(TargetConfigError::RegionSize);
        }
        if lock_slots.is_empty() {
            return Err(TargetConfigError::NoLockSlots);
        }
        let shift = cfg.region_sectors.trailing_zeros();
        let mut log = CommitLog::new(pages, window, filter, 1)?;
        log.set_region_shift(shift);
        Ok(Self {
            shift,
            cfg,
            log,
            locks: LockTable::new(lock_slots),
            generation: 0,
            gens: Default::default(),
            consistent: false,
            rule: None,
            digests: Default::default(),
            hello_flags: 0,
            connected: false,
            handshakes: 0,
            reply: None,
            nak: None,
            awaiting: None,
            filling: None,
            dropping: None,
            ctl: [Ctl::Granted { region: 0, seq: 0 }; CTL_QUEUE],
            ctl_head: 0,
            ctl_len: 0,
            rejected: [None; MAX_REJECTED],
            acked_sent: 0,
            durable: Default::default(),
            urgent: false,
            failed: 0,
            block_size: 0,
            stats: TargetStats::default(),
            link: conn::Conn::new(),
            sleepers: Sleepers::default(),
            steps: steps::Steps::new(),
            stopping: true,
            #[cfg(feature = "mutants")]
            mutant: super::mutant::Mutant::None,
            #[cfg(feature = "mutants")]
            kicks: (false, false),
        })
    }

    /// Aligns every payload in the commit log to `align` bytes (a power of
    /// two from 8 to the page size; at least the data device's logical
    /// block size, for bios built from the log's pages). Only while empty.
    pub fn set_payload_align(&mut self, align: usize) -> Result<(), CommitError> {
        self.log.set_payload_align(align)
    }

    /// The configuration.
    pub fn config(&self) -> &TargetConfig {
        &self.cfg
    }

    fn ctl_free(&self) -> usize {
        CTL_QUEUE.saturating_sub(self.ctl_len)
    }

    /// Queues a lock reply; callers check [`Self::ctl_free`] first.
    fn push_ctl(&mut self, c: Ctl) {
        if self.ctl_len >= CTL_QUEUE {
            return;
        }
        let i = (self.ctl_head + self.ctl_len) % CTL_QUEUE;
        if let Some(s) = self.ctl.get_mut(i) {
            *s = c;
            self.ctl_len += 1;
        }
    }

    fn front_ctl(&self) -> Option<Ctl> {
        if self.ctl_len == 0 {
            return None;
        }
        self.ctl.get(self.ctl_head).copied()
    }

    fn pop_ctl(&mut self) {
        if self.ctl_len > 0 {
            self.ctl_head = (self.ctl_head + 1) % CTL_QUEUE;
            self.ctl_len -= 1;
        }
    }

    fn note_rejected(&mut self, region: u64) {
        if self.rejected.contains(&Some(region)) {
            return;
        }
        if let Some(s) = self.rejected.iter_mut().find(|r| r.is_none()) {
            *s = Some(region);
        }
    }

    fn forget_rejected(&mut self, region: u64) {
        for r in self.rejected.iter_mut() {
            if *r == Some(region) {
                *r = None;
            }
        }
    }

    fn any_rejected(&self) -> Option<u64> {
        self.rejected
            .iter()
            .flatten()
            .copied()
            .find(|&r| self.locks.is_rejected(r))
    }

    /// Handles one complete frame from the source (the receiver found its
    /// length with `decode_header`; a header that does not decode means
    /// the stream is out of sync and the connection must be dropped).
    fn stream_frame<C: Crc32c>(&mut self, c: &C, frame: &[u8], crc_ok: Option<bool>) -> TargetRecv {
        let decoded = match crc_ok {
            Some(ok) => decode_frame_checked(frame, ok),
            None => decode_frame(c, frame),
        };
        let (h, payload) = match decoded {
            Ok(x) => x,
            Err(DecodeError::BadCrc) => {
                self.stats.crc_errors = self.stats.crc_errors.saturating_add(1);
                if !self.connected {
                    return TargetRecv::Disconnect(DecodeError::BadCrc);
                }
                // Whatever it was, everything from the expected seq on must
                // come again; later frames are dropped until it does.
                let exp = self.log.next_seq();
                self.nak = Some((exp, NAK_CORRUPT));
                self.awaiting = Some(exp);
                return TargetRecv::Ok;
            }
            Err(e) => return TargetRecv::Disconnect(e),
        };
        if h.kind == Kind::Hello {
            return match Hello::decode(payload) {
                Ok(hello) => TargetRecv::Hello(hello),
                Err(e) => TargetRecv::Disconnect(e),
            };
        }
        if !self.connected || !h.kind.is_from_source() {
            return TargetRecv::Disconnect(DecodeError::BadKind);
        }
        if h.kind == Kind::Ping {
            return TargetRecv::Ok;
        }
        if h.kind.has_range() && h.sector.saturating_add(u64::from(h.count)) > self.cfg.dev_sectors {
            // Never write past the end of the device, whatever the peer says.
            return TargetRecv::Disconnect(DecodeError::BadLength);
        }
        // Room for a grant and a rejection this frame may cause.
        if self.ctl_free() < 2 {
            self.stats.busy = self.stats.busy.saturating_add(1);
            return TargetRecv::Busy;
        }
        let expected = self.log.next_seq();
        if h.seq < expected {
            self.stats.duplicates = self.stats.duplicates.saturating_add(1);
            if h.kind == Kind::Lock
                && self.hello_flags & HELLO_FLAG_LOCK_SYNC != 0
                && !self.locks.is_rejected(h.sector)
            {
                // A resent LOCK whose grant may have been lost with the old
                // connection: grant again (data still waits for local
                // holders, so an early grant is harmless).
                self.push_ctl(Ctl::Granted {
                    region: h.sector,
                    seq: expected - 1,
                });
            }
            return TargetRecv::Ok;
        }
        if h.seq > expected {
            self.stats.dropped = self.stats.dropped.saturating_add(1);
            if self.awaiting.is_none() && self.dropping.is_none() {
                self.nak = Some((expected, NAK_GAP));
                self.awaiting = Some(expected);
            }
            return TargetRecv::Ok;
        }
        // Checked outside the lock: copied outside it too (`Fill`).
        let defer = crc_ok.is_some() && copies_outside(&h);
        let stored = if defer {
            self.log.reserve(&h).map(|spans| self.filling = Some((h.seq, spans)))
        } else {
            self.log.push(&h, payload)
        };
        match stored {
            Ok(()) => {}
            Err(CommitError::Full) => {
                if let Some(region) = self.any_rejected() {
                    // The log cannot drain while the rejected region's
                    // records wait: drop from here, the source resends
                    // after LOCK_GRANTED.
                    // Every arrival of the expected seq that does not fit is
                    // answered (the source resends it only after a grant,
                    // so this is once per grant, not once per frame).
                    self.push_ctl(Ctl::Rejected { region, seq: h.seq });
                    self.stats.lock_rejections = self.stats.lock_rejections.saturating_add(1);
                    self.dropping = Some(h.seq);
                    self.stats.dropped = self.stats.dropped.saturating_add(1);
                    return TargetRecv::Ok;
                }
                self.stats.busy = self.stats.busy.saturating_add(1);
                return TargetRecv::Busy;
            }
            Err(CommitError::TooLarge) => {
                // The commit log is smaller than this frame: a configuration
                // error (ring_mb too small) that status must show.
                self.stats.oversized = self.stats.oversized.saturating_add(1);
                return TargetRecv::Disconnect(DecodeError::TooLong);
            }
            Err(_) => return TargetRecv::Disconnect(DecodeError::BadLength),
        }
        self.stats.received = self.stats.received.saturating_add(1);
        self.awaiting = None;
        self.dropping = None;
        if defer {
            return TargetRecv::Fill(h.seq);
        }
        match h.kind {
            Kind::Lock => match self.locks.stream_lock(h.sector) {
                LockResult::Granted => {
                    if self.hello_flags & HELLO_FLAG_LOCK_SYNC != 0 {
                        self.push_ctl(Ctl::Granted {
                            region: h.sector,
                            seq: h.seq,
                        });
                    }
                }
                LockResult::Rejected => {
                    self.stats.lock_conflicts = self.stats.lock_conflicts.saturating_add(1);
                    self.note_rejected(h.sector);
                }
                LockResult::Full => {
                    self.stats.lock_table_full = self.stats.lock_table_full.saturating_add(1);
                    if self.hello_flags & HELLO_FLAG_LOCK_SYNC != 0 {
                        self.push_ctl(Ctl::Granted {
                            region: h.sector,
                            seq: h.seq,
                        });
                    }
                }
            },
            Kind::Unlock => {
                // The source may give up a region it never got: a LOCK
                // held back for it may pass now (next poll_issue).
                self.locks.stream_unlock(h.sector);
                self.forget_rejected(h.sector);
            }
            _ => {}
        }
        TargetRecv::Ok
    }

    /// Plants [`Target::mutant`]'s bug in the commit log too (the
    /// simulator calls this after setting it).
    #[cfg(feature = "mutants")]
    pub fn plant_in_log(&mut self) {
        self.log.mutant_issue_unfilled = self.mutant == super::mutant::Mutant::IssueUnfilled;
    }

    /// Where the payload of the record the receiver is to copy goes:
    /// `(seq, pieces of the commit log's pages)`, after
    /// [`RxVerdict::Fill`](conn::RxVerdict::Fill).
    pub fn filling(&self) -> Option<(u64, Spans)> {
        self.filling
    }

    /// The receiver copied record `seq`'s payload into
    /// [`Target::filling`]'s pieces: it may be applied. Whatever became of
    /// the connection meanwhile (the record was checked and is held).
    pub fn on_filled(&mut self, seq: u64) {
        if self.filling.is_some_and(|(s, _)| s == seq) {
            self.filling = None;
        }
        if self.log.publish(seq) {
            self.steps.progress();
        }
    }

    /// Copies `payload` into [`Target::filling`]'s record `seq` and
    /// publishes it ([`Target::on_filled`]): the simulator's and the
    /// tests' way, holding the machine. False if `seq` is not being filled.
    pub fn fill_payload(&mut self, seq: u64, payload: &[u8]) -> bool {
        if !self.log.fill_reserved(seq, payload) {
            return false;
        }
        self.on_filled(seq);
        true
    }

    /// States the data device's logical block size (bytes) in every
    /// HELLO_REPLY; a source with smaller blocks is refused (`BlockSize`):
    /// this target could not apply its smallest writes.
    pub fn set_block_size(&mut self, bytes: u32) {
        self.block_size = bytes;
    }

    /// Answers a HELLO (whose MAC was checked). Queues the HELLO_REPLY
    /// (accepting or refusing) for [`Target::poll_send`].
    fn on_hello(&mut self, h: &Hello) -> Result<(), Refusal> {
        let r = if h.proto_version != u32::from(VERSION) {
            Err(Refusal::Version)
        } else if h.dev_sectors != self.cfg.dev_sectors {
            Err(Refusal::DeviceSize)
        } else if h.region_sectors != self.cfg.region_sectors {
            Err(Refusal::RegionSize)
        } else if super::block_size_too_large(self.block_size, h.block_size) {
            Err(Refusal::BlockSize)
        } else if h.generation == 0 {
            Err(Refusal::Generation)
        } else if let Some(r) = self.gens_refusal(h) {
            Err(r)
        } else if h.generation != self.generation {
            if !self.log.is_empty() {
                Err(Refusal::Busy)
            } else {
                // A new stream: it starts after the source's base seq.
                match h.last_applied.checked_add(1) {
                    Some(next) => {
                        self.log.reset(next);
                        self.locks.stream_reset();
                        self.rejected = [None; MAX_REJECTED];
                        self.generation = h.generation;
                        self.acked_sent = h.last_applied;
                        self.durable.reset(h.last_applied);
                        Ok(())
                    }
                    None => Err(Refusal::Diverged),
                }
                .inspect(|()| self.steps.progress())
            }
        } else if h.last_applied > self.log.applied_upto() {
            Err(Refusal::Diverged)
        } else {
            Ok(())
        };
        self.reset_connection();
        let mut reply = Hello {
            proto_version: u32::from(VERSION),
            dev_sectors: self.cfg.dev_sectors,
            region_sectors: self.cfg.region_sectors,
            generation: self.generation,
            last_applied: self.log.applied_upto(),
            nonce: [0; 16],
            mac: [0; 32],
            flags: if self.consistent { HELLO_FLAG_CONSISTENT } else { 0 },
            block_size: self.block_size,
            gens: self.gens,
        };
        match r {
            Ok(()) => {
                self.connected = true;
                self.hello_flags = h.flags;
                self.acked_sent = self.log.applied_upto();
                if self.handshakes > 0 {
                    self.stats.reconnects = self.stats.reconnects.saturating_add(1);
                }
                self.handshakes = self.handshakes.saturating_add(1);
            }
            Err(e) => {
                self.stats.refusals = self.stats.refusals.saturating_add(1);
                reply.flags = e.to_flags();
            }
        }
        self.reply = Some(reply);
        r
    }

    fn reset_connection(&mut self) {
        self.connected = false;
        self.reply = None;
        self.nak = None;
        self.awaiting = None;
        self.dropping = None;
        self.ctl_head = 0;
        self.ctl_len = 0;
        self.urgent = false;
        self.digests.reset();
    }

    /// True once a handshake was accepted on the current connection.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Reports the end of a record handed out by [`Target::poll_issue`]
    /// (any context). A failed record stays in the log and is retried
    /// every [`steps::RETRY`]. Returns false for an unknown seq.
    pub fn io_done(&mut self, seq: u64, status: IoStatus, now: Instant) -> bool {
        let Some(header) = self.log.issued_header(seq) else {
            return false;
        };
        let ok = match status {
            IoStatus::Ok => true,
            // A device without discard: discards are advisory.
            IoStatus::Unsupported if header.kind == Kind::Discard => true,
            IoStatus::Unsupported => {
                if header.kind == Kind::WriteZeroes {
                    // Retried as writes of zeroes.
                    self.steps.no_write_zeroes = true;
                }
                false
            }
            IoStatus::Failed => false,
        };
        if !self.log.complete(seq, ok) {
            return false;
        }
        #[cfg(feature = "mutants")]
        {
            self.kicks = (self.kicks.0 || self.send_due(), true);
        }
        if ok {
            if header.kind == Kind::Sync {
                self.sync_applied(&header);
            }
            if header.kind == Kind::Flush {
                // Issued once every earlier record completed, and it
                // flushed the device: all of them are durable.
                self.durable_to(seq);
            }
            self.steps.progress();
            if self.steps.suspend_until.is_some() {
                // Moving along: the suspend's grace starts again.
                self.steps.suspend_until = Some(now.saturating_add(steps::SUSPEND_GRACE));
            }
            if matches!(header.kind, Kind::Flush | Kind::Sync) || header.flags & FLAG_FUA != 0 {
                self.urgent = true;
            }
        } else {
            self.stats.io_errors = self.stats.io_errors.saturating_add(1);
            self.failed = self.failed.saturating_add(1);
            if self.steps.retry_at.is_none() {
                self.steps.retry_at = Some(now.saturating_add(steps::RETRY));
                self.rearm(APPLIER);
            }
        }
        true
    }

    /// Makes failed device writes pending again; returns how many.
    fn retry_failed(&mut self) -> usize {
        self.failed = 0;
        self.steps.retry_at = None;
        self.log.reissue_failed()
    }

    /// Device errors since the last retry (non-zero: status shows the
    /// device as failing).
    pub fn failing(&self) -> u64 {
        self.failed
    }

    /// Whether [`Target::poll_send`] has a frame to give.
    fn send_due(&self) -> bool {
        self.connected && (self.nak.is_some() || self.ctl_len > 0 || self.digests.pending() || self.ack_due())
    }

    /// Whether an ACK is due now (see [`TargetConfig::ack_every`]).
    fn ack_due(&self) -> bool {
        if !self.connected {
            return false;
        }
        // A durable point the source has not heard of goes at once: it
        // frees the source's ring (one per flush, flushes go one at a
        // time).
        if self.durable.upto > self.durable.sent {
            return true;
        }
        let applied = self.log.applied_upto();
        if applied <= self.acked_sent {
            return false;
        }
        self.urgent
            || self.hello_flags & HELLO_FLAG_SYNC_COMPLETION != 0
            || applied - self.acked_sent >= u64::from(self.cfg.ack_every.max(1))
            || self.log.is_empty()
            || self.log.in_flight() == 0
    }

    /// Encodes the next control frame to send into `out` (at least
    /// [`super::MAX_CONTROL_FRAME`] bytes) and returns its length; `None`
    /// when nothing is due. Order: HELLO_REPLY, NAK, lock replies, ACK.
    fn poll_send<C: Crc32c>(
        &mut self,
        c: &C,
        out: &mut [u8],
    ) -> Option<Result<usize, EncodeError>> {
        if let Some(r) = self.reply {
            let res = super::encode_hello(c, &r, true, out);
            if res.is_ok() {
                self.reply = None;
            }
            return Some(res);
        }
        if !self.connected {
            return None;
        }
        if let Some((seq, reason)) = self.nak {
            let mut h = Header::new(Kind::Nak);
            h.seq = seq;
            h.count = reason;
            let res = encode_frame(c, &h, &[], out);
            if res.is_ok() {
                self.nak = None;
                self.stats.naks = self.stats.naks.saturating_add(1);
            }
            return Some(res);
        }
        if let Some(ctl) = self.front_ctl() {
            let (kind, region, seq) = match ctl {
                Ctl::Granted { region, seq } => (Kind::LockGranted, region, seq),
                Ctl::Rejected { region, seq } => (Kind::LockRejected, region, seq),
            };
            let mut h = Header::new(kind);
            h.sector = region;
            h.seq = seq;
            let res = encode_frame(c, &h, &[], out);
            if res.is_ok() {
                self.pop_ctl();
                if kind == Kind::LockGranted {
                    self.stats.lock_grants = self.stats.lock_grants.saturating_add(1);
                }
                self.grant_free_regions();
            }
            return Some(res);
        }
        // Before the ACK that covers their requests.
        if let Some(res) = self.encode_digest(c, out) {
            return Some(res);
        }
        if self.ack_due() {
            return Some(self.encode_ack(c, out));
        }
        None
    }

    /// Encodes an ACK of everything applied (also as a keepalive).
    fn encode_ack<C: Crc32c>(&mut self, c: &C, out: &mut [u8]) -> Result<usize, EncodeError> {
        let applied = self.log.applied_upto();
        let durable = self.durable.upto.min(applied);
        let mut h = Header::new(Kind::Ack);
        h.seq = applied;
        h.sector = durable;
        let res = encode_frame(c, &h, &[], out);
        #[cfg(feature = "mutants")]
        {
            self.kicks.0 = false;
        }
        if res.is_ok() {
            self.acked_sent = applied;
            self.durable.sent = durable;
            self.urgent = false;
            self.stats.acks = self.stats.acks.saturating_add(1);
        }
        res
    }

    /// Takes a local lock on `sector..sector+count` (the dm message
    /// `lock`, or a read through the target device). Never waits.
    ///
    /// Pending stream writes are found through the commit log's region
    /// filter ([`CommitLog::may_be_pending`]): O(regions in the range),
    /// whatever the log's length. It may see a write that is not there (a
    /// region sharing a filter bucket with a pending one, or a pending
    /// record spanning very many regions): `WouldBlock` then, a little
    /// longer wait; it never misses one.
    pub fn local_lock(&mut self, sector: u64, count: u64) -> LocalLock {
        let Some((first, last)) = self.range(sector, count) else {
            return LocalLock::Invalid;
        };
        if self.log.may_be_pending(first, last) {
            return LocalLock::WouldBlock;
        }
        match self.locks.local_lock(first, last) {
            Ok(()) => LocalLock::Granted,
            Err(LocalLockError::WouldBlock) => LocalLock::WouldBlock,
            Err(LocalLockError::Full) => LocalLock::Full,
        }
    }

    /// Drops a local lock taken with [`Target::local_lock`]. Grants the
    /// stream locks that were waiting for it (LOCK_GRANTED is queued); the
    /// records held back for it start at the next [`Target::poll_issue`].
    pub fn local_unlock(&mut self, sector: u64, count: u64) {
        let Some((first, last)) = self.range(sector, count) else {
            return;
        };
        self.locks.local_unlock(first, last);
        self.grant_free_regions();
    }

    /// Grants the rejected stream locks whose regions no local user holds
    /// any more, as far as the control queue has room (the rest follow
    /// once the sender made room: see [`Target::poll_send`]).
    fn grant_free_regions(&mut self) {
        let last_recv = self.log.next_seq().saturating_sub(1);
        while self.ctl_free() > 0 {
            let Some(region) = self.locks.take_grantable() else {
                break;
            };
            self.forget_rejected(region);
            if self.connected {
                self.push_ctl(Ctl::Granted {
                    region,
                    seq: last_recv,
                });
            }
        }
    }

    fn range(&self, sector: u64, count: u64) -> Option<(u64, u64)> {
        let end = sector.checked_add(count)?;
        if count == 0 || end > self.cfg.dev_sectors {
            return None;
        }
        Some((sector >> self.shift, (end - 1) >> self.shift))
    }

    /// Copies the payload of record `seq` into `out` (userspace users; the
    /// kernel writes from [`IssueView::chunks`] instead).
    pub fn read_payload(&self, seq: u64, out: &mut [u8]) -> Option<usize> {
        self.log.read_payload(seq, out)
    }

    /// Highest seq with every record up to it applied.
    pub fn applied_seq(&self) -> u64 {
        self.log.applied_upto()
    }

    /// Highest seq acknowledged to the source.
    pub fn acked_seq(&self) -> u64 {
        self.acked_sent
    }

    /// Highest seq received (everything up to it is in the log or applied).
    pub fn received_seq(&self) -> u64 {
        self.log.next_seq().saturating_sub(1)
    }

    /// The commit log's page storage: [`IssueView::chunks`] yields
    /// `(page index, offset, len)` pieces of these pages, so the kernel
    /// builds a WRITE bio from them without copying.
    pub fn pages(&self) -> &P {
        self.log.pages()
    }

    /// The commit log (read-only: usage, in-flight count, pages).
    pub fn commit_log(&self) -> &CommitLog<P, W, F> {
        &self.log
    }

    /// The region lock table (read-only).
    pub fn locks(&self) -> &LockTable<L> {
        &self.locks
    }

    /// Replication generation adopted from the source (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters.
    pub fn stats(&self) -> &TargetStats {
        &self.stats
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
            return i != APPLIER || (self.log.in_flight() == 0 && !self.flush_in_flight());
        }
        match i {
            RECEIVER => self.receiver_has_work(),
            APPLIER => self.applier_has_work(),
            SENDER => self.sender_has_work(),
            LISTENER => false,
            LOCKER => self.locker_has_work(),
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

    /// Starts (dm resume): the threads run and the listener accepts.
    pub fn start(&mut self) {
        self.stopping = false;
        self.steps.suspend_until = None;
        self.link.start();
    }

    /// Asks every thread to exit (dm postsuspend, remove); the applier
    /// waits for the device I/O it started. The glue shuts the sockets
    /// down, joins the threads, then calls [`Target::stopped`].
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// True while the threads are asked to exit.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// The threads are gone, and with them the connection.
    pub fn stopped(&mut self) {
        self.link.stopped();
        self.reset_connection();
    }

    /// A suspend starts (dm presuspend): reads waiting for stream writes
    /// get [`steps::SUSPEND_GRACE`] (renewed while records get applied),
    /// then fail, so that suspend and remove end whatever the stream does.
    pub fn begin_suspend(&mut self, now: Instant) {
        self.steps.suspend_until = Some(now.saturating_add(steps::SUSPEND_GRACE));
        self.rearm(APPLIER);
    }

    /// The suspend was cancelled (dm presuspend_undo).
    pub fn cancel_suspend(&mut self) {
        self.steps.suspend_until = None;
    }
}

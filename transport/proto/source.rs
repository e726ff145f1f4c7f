//! Source-side protocol state machine (sans-IO).
//!
//! Events in: host writes ([`Source::submit`]), local I/O completions
//! ([`Source::local_done`]), frames from the target ([`Source::on_frame`]),
//! connection changes ([`Source::start_handshake`],
//! [`Source::on_hello_reply`], [`Source::on_disconnect`]). Actions out, by
//! polling: the next frame to transmit ([`Source::peek_send`] then
//! [`Source::advance_send`]) and host writes that may complete
//! ([`Source::poll_completed`]). Nothing blocks: whatever must wait is a
//! [`Submit::Wait`] and the caller parks the bio and retries it after the
//! next event.

use core::ops::DerefMut;

use super::hot::{HotRegions, HotSlot, Touch};
use super::inflight::{Completed, Inflight, InflightSlot, RepairJob};
use super::{Completion, Mode, Refusal, HELLO_FLAG_LOCK_SYNC, HELLO_FLAG_SYNC_COMPLETION};
use crate::log::pages::Pages;
use crate::log::record::{
    decode_frame, Crc32c, Header, Hello, Kind, FLAGS_KNOWN, MAX_WRITE_SECTORS, SECTOR_SIZE, VERSION,
};
use crate::log::ring::{RecordView, RingError, RingWriter, RollbackRing};

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

/// Why a host write must wait (park the bio, retry after the next event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// Overlaps a write whose local I/O is outstanding.
    Overlap,
    /// The rollback ring has no room (back-pressure until acks arrive).
    RingFull,
    /// Every in-flight slot is taken.
    InflightFull,
}

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

/// Result of [`Source::submit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submit {
    /// Appended; the value is the data record's seq (the token for
    /// [`Source::local_done`] and [`Completed`]). Remap the bio now.
    Accepted(u64),
    /// Not appended; retry later.
    Wait(WaitReason),
    /// Not appended; fail the bio.
    Invalid(Invalid),
}

/// Connection state of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection (initial state, or after [`Source::on_disconnect`]).
    Disconnected,
    /// HELLO sent, waiting for HELLO_REPLY.
    HelloSent,
    /// Streaming.
    Connected,
    /// The target refused the handshake; a new handshake may be tried
    /// after the operator fixed the configuration.
    Refused(Refusal),
}

/// What the glue must do after [`Source::on_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceRecv {
    /// Handled; poll for sends and completions.
    Ok,
    /// A HELLO_REPLY: check its MAC ([`super::auth::verify`] with
    /// `MacLabel::Reply` and the HELLO's own nonce), then pass it to
    /// [`Source::on_hello_reply`].
    HelloReply(Hello),
    /// The frame is corrupt or breaks the protocol: drop the connection,
    /// call [`Source::on_disconnect`] and reconnect.
    Reconnect(ProtocolError),
}

/// Protocol violations seen by the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// Frame failed to decode or its CRC did not match.
    Corrupt,
    /// A kind the target never sends, or a frame before the handshake.
    Unexpected,
    /// An ACK for a seq never sent.
    BadAck,
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
    /// Host writes that had to wait (any reason).
    pub waits: u64,
    /// Local I/O failures reported.
    pub local_errors: u64,
    /// Failed local writes whose range was re-read and replicated.
    pub repairs: u64,
    /// Failed local writes whose range could not be re-read: the two
    /// devices may differ there.
    pub unrepaired: u64,
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

/// The source state machine. `P` is the rollback ring's page storage, `H`
/// the hot-region slots (their number is `hot_regions`), `I` the
/// in-flight slots (bounds the host writes in flight at once).
pub struct Source<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>> {
    cfg: SourceConfig,
    shift: u32,
    ring: RollbackRing<P>,
    hot: HotRegions<H>,
    inflight: Inflight<I>,
    holds: [Hold; MAX_HOLDS],
    state: LinkState,
    /// Highest cumulative ACK (or HELLO_REPLY last_applied) seen.
    acked: u64,
    /// One past the highest seq ever sent.
    sent_hwm: u64,
    handshakes: u64,
    /// Logical block size of the data device (bytes; 0: not stated).
    block_size: u32,
    stats: SourceStats,
}

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// Builds a source over caller storage; the first record gets
    /// `first_seq` (>= 1).
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
            state: LinkState::Disconnected,
            acked: first_seq - 1,
            sent_hwm: first_seq,
            handshakes: 0,
            block_size: 0,
            stats: SourceStats::default(),
        })
    }

    /// States the data device's logical block size (bytes) in every HELLO:
    /// a target with larger blocks refuses the stream (`BlockSize`) rather
    /// than fail the writes it cannot apply.
    pub fn set_block_size(&mut self, bytes: u32) {
        self.block_size = bytes;
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
        if !h.kind.is_data() || h.count == 0 {
            return None;
        }
        let last = h.sector.saturating_add(u64::from(h.count) - 1);
        Some((h.sector >> self.shift, last >> self.shift))
    }

    /// Offers a host write. For `HostOp::Write`, `fill` is called once with
    /// a writer that must receive exactly `count * 512` payload bytes; it
    /// is not called for other ops and never when the result is not
    /// `Accepted`.
    pub fn submit<C, F>(&mut self, c: &C, w: &HostWrite, fill: F) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        self.append_write(c, w, fill, None)
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
    /// `Wait` (ring full): call again later. `Invalid`: the repair cannot
    /// be recorded; call [`Source::repair_failed`].
    pub fn repair<C, F>(&mut self, c: &C, seq: u64, fill: F) -> Submit
    where
        C: Crc32c,
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        let Some(job) = self.inflight.next_repair().filter(|j| j.seq == seq) else {
            return Submit::Invalid(Invalid::Internal);
        };
        let Ok(count) = u32::try_from(job.count) else {
            return Submit::Invalid(Invalid::Range);
        };
        let w = HostWrite {
            op: HostOp::Write,
            sector: job.sector,
            count,
            flags: 0,
        };
        let r = self.append_write(c, &w, fill, Some(seq));
        if let Submit::Accepted(_) = r {
            self.inflight.repaired(seq);
            self.stats.repairs = self.stats.repairs.saturating_add(1);
        }
        r
    }

    /// The range of failed write `seq` could not be re-read: gives up its
    /// repair (counted in [`SourceStats::unrepaired`]).
    pub fn repair_failed(&mut self, seq: u64) {
        if self.inflight.repaired(seq) {
            self.stats.unrepaired = self.stats.unrepaired.saturating_add(1);
        }
    }

    /// [`Source::submit`], or with `repair` the repair record of that
    /// failed write (which takes no new in-flight slot).
    fn append_write<C, F>(&mut self, c: &C, w: &HostWrite, fill: F, repair: Option<u64>) -> Submit
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
            if n > self.hot.capacity() as u64 {
                return Submit::Invalid(Invalid::TooManyRegions);
            }
            range = Some((first, last));
        }
        let frame = RollbackRing::<P>::frame_len(payload_len);
        if frame > self.ring.capacity_bytes() {
            return Submit::Invalid(Invalid::TooLarge);
        }
        if kind != Kind::Flush
            && self
                .inflight
                .overlaps_local(sector, u64::from(count), repair)
        {
            self.stats.waits = self.stats.waits.saturating_add(1);
            return Submit::Wait(WaitReason::Overlap);
        }
        if repair.is_none() && self.inflight.is_full() {
            self.stats.waits = self.stats.waits.saturating_add(1);
            return Submit::Wait(WaitReason::InflightFull);
        }
        // Space for the data record plus every LOCK and UNLOCK it needs.
        let mut need = frame;
        if let Some((first, last)) = range {
            let misses = self.hot.misses(first, last);
            let free = self.hot.free_slots() as u64;
            let evictions = misses.saturating_sub(free);
            let ctl = misses.saturating_add(evictions);
            let ctl_bytes = usize::try_from(ctl)
                .unwrap_or(usize::MAX)
                .saturating_mul(RollbackRing::<P>::frame_len(0));
            need = need.saturating_add(ctl_bytes);
        }
        if need > self.ring.free_bytes() {
            self.stats.waits = self.stats.waits.saturating_add(1);
            return Submit::Wait(WaitReason::RingFull);
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
            self.ring.append(c, h, payload_len, fill)
        } else {
            self.ring.append(c, h, 0, |_| Ok(()))
        };
        let seq = match seq {
            Ok(s) => s,
            Err(RingError::Full) => return Submit::Wait(WaitReason::RingFull),
            Err(RingError::LengthMismatch) => return Submit::Invalid(Invalid::Fill),
            Err(RingError::TooLarge) => return Submit::Invalid(Invalid::TooLarge),
            Err(RingError::BadHeader(_)) => return Submit::Invalid(Invalid::Range),
            Err(_) => return Submit::Invalid(Invalid::Internal),
        };
        if repair.is_some() {
            return Submit::Accepted(seq);
        }
        if !self.inflight.insert(seq, sector, u64::from(count)) {
            // Checked above; the record is in the ring and will replicate.
            return Submit::Invalid(Invalid::Internal);
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
    /// unknown seq. Poll [`Source::poll_completed`] afterwards.
    pub fn local_done(&mut self, seq: u64, ok: bool) -> bool {
        if !ok {
            self.stats.local_errors = self.stats.local_errors.saturating_add(1);
        }
        self.inflight.local_done(seq, ok)
    }

    /// One host write that may complete now: async completion once its
    /// local I/O is done, sync completion once the target also applied it
    /// (a failed local I/O completes at once, with an error).
    pub fn poll_completed(&mut self) -> Option<Completed> {
        match self.cfg.completion {
            Completion::Async => self.inflight.take_completed(None),
            Completion::Sync => self.inflight.take_completed(Some(self.acked)),
        }
    }

    /// Starts a handshake on a fresh connection: returns the HELLO to send
    /// (the glue sets `nonce` to a fresh random one and `mac` with
    /// [`super::auth::sign`] against the CHALLENGE's nonce, then encodes it
    /// with [`super::encode_hello`]).
    pub fn start_handshake(&mut self) -> Hello {
        self.reset_link();
        self.state = LinkState::HelloSent;
        let mut flags = 0;
        if self.cfg.mode == Mode::LockSync {
            flags |= HELLO_FLAG_LOCK_SYNC;
        }
        if self.cfg.completion == Completion::Sync {
            flags |= HELLO_FLAG_SYNC_COMPLETION;
        }
        Hello {
            proto_version: u32::from(VERSION),
            dev_sectors: self.cfg.dev_sectors,
            region_sectors: self.cfg.region_sectors,
            generation: self.cfg.generation,
            // The source's base: every record after it is still held.
            last_applied: self.base(),
            nonce: [0; 16],
            mac: [0; 32],
            flags,
            block_size: self.block_size,
        }
    }

    /// Seq before the oldest record still held.
    fn base(&self) -> u64 {
        let oldest = self.ring.oldest_seq().unwrap_or(self.ring.next_seq());
        oldest.saturating_sub(1).max(self.acked)
    }

    /// Applies a HELLO_REPLY (after the glue verified its MAC). On success
    /// the stream resumes from the target's last applied seq + 1.
    pub fn on_hello_reply(&mut self, h: &Hello) -> Result<(), Refusal> {
        if self.state != LinkState::HelloSent {
            return Err(Refusal::Protocol);
        }
        let r = if h.flags & super::HELLO_FLAG_REFUSED_MASK != 0 {
            Err(Refusal::from_flags(h.flags))
        } else if h.proto_version != u32::from(VERSION) {
            Err(Refusal::Version)
        } else if h.dev_sectors != self.cfg.dev_sectors {
            Err(Refusal::DeviceSize)
        } else if h.region_sectors != self.cfg.region_sectors {
            Err(Refusal::RegionSize)
        } else if super::block_size_too_large(h.block_size, self.block_size) {
            // The target should have refused; an older one does not check.
            Err(Refusal::BlockSize)
        } else if h.generation != self.cfg.generation {
            Err(Refusal::Generation)
        } else if h.last_applied < self.base() || h.last_applied >= self.ring.next_seq() {
            // The target lost records we already freed, or claims records
            // we never wrote: the two sides diverged.
            Err(Refusal::Diverged)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            self.state = LinkState::Refused(e);
            return Err(e);
        }
        self.acked = self.acked.max(h.last_applied);
        self.ring.ack(self.acked);
        self.clear_acked_holds();
        let resume = self.acked + 1;
        // acked < next_seq, so resume <= next_seq lies in the ring.
        let _ = self
            .ring
            .rewind(resume.max(self.ring.oldest_seq().unwrap_or(resume)));
        self.state = LinkState::Connected;
        if self.handshakes > 0 {
            self.stats.reconnects = self.stats.reconnects.saturating_add(1);
        }
        self.handshakes = self.handshakes.saturating_add(1);
        Ok(())
    }

    /// The connection is gone (socket error, timeout, or a
    /// [`SourceRecv::Reconnect`]). Reconnect with back-off and call
    /// [`Source::start_handshake`].
    pub fn on_disconnect(&mut self) {
        if self.state == LinkState::Connected || self.state == LinkState::HelloSent {
            self.stats.disconnects = self.stats.disconnects.saturating_add(1);
        }
        self.reset_link();
        if !matches!(self.state, LinkState::Refused(_)) {
            self.state = LinkState::Disconnected;
        }
    }

    fn reset_link(&mut self) {
        // Everything sent on the old connection is resent from the target's
        // last applied seq, and its grants and rejections are moot.
        self.holds = [Hold::default(); MAX_HOLDS];
    }

    /// Connection state.
    pub fn link_state(&self) -> LinkState {
        self.state
    }

    /// Handles one complete frame from the target.
    pub fn on_frame<C: Crc32c>(&mut self, c: &C, frame: &[u8]) -> SourceRecv {
        let (h, payload) = match decode_frame(c, frame) {
            Ok(x) => x,
            Err(_) => {
                self.stats.crc_errors = self.stats.crc_errors.saturating_add(1);
                return SourceRecv::Reconnect(ProtocolError::Corrupt);
            }
        };
        if h.kind == Kind::HelloReply {
            if self.state != LinkState::HelloSent {
                return SourceRecv::Reconnect(ProtocolError::Unexpected);
            }
            return match Hello::decode(payload) {
                Ok(hello) => SourceRecv::HelloReply(hello),
                Err(_) => SourceRecv::Reconnect(ProtocolError::Corrupt),
            };
        }
        if self.state != LinkState::Connected {
            return SourceRecv::Reconnect(ProtocolError::Unexpected);
        }
        match h.kind {
            Kind::Ack => {
                if h.seq >= self.sent_hwm {
                    return SourceRecv::Reconnect(ProtocolError::BadAck);
                }
                if h.seq > self.acked {
                    self.acked = h.seq;
                }
                self.ring.ack(self.acked);
                self.clear_acked_holds();
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
            _ => return SourceRecv::Reconnect(ProtocolError::Unexpected),
        }
        SourceRecv::Ok
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

    /// The record to transmit next, or `None` when nothing may be sent now
    /// (not connected, everything sent, or the stream is held). Send its
    /// `chunks()` (or [`Source::read_frame`]) and call
    /// [`Source::advance_send`].
    pub fn peek_send(&self) -> Option<RecordView> {
        if self.state != LinkState::Connected {
            return None;
        }
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

    /// Marks the record returned by [`Source::peek_send`] as sent.
    pub fn advance_send(&mut self) {
        let Some(v) = self.peek_send() else {
            return;
        };
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

    /// Copies the sealed frame `seq` out of the ring (for glue that does
    /// not send page spans directly).
    pub fn read_frame(&self, seq: u64, out: &mut [u8]) -> Result<usize, RingError> {
        self.ring.read_frame(seq, out)
    }

    /// Highest seq the target acknowledged as applied.
    pub fn acked_seq(&self) -> u64 {
        self.acked
    }

    /// The rollback ring (read-only: cursors, usage).
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

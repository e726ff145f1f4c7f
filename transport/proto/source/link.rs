//! The source's connection: connect with back-off, the handshake
//! (CHALLENGE, HELLO with its MAC, HELLO_REPLY checked), streaming the
//! ring in batches, keepalives, the peer timeout, closing.
//!
//! ```text
//!   Idle --(retry time, not admin down)--> Connecting --ok--> Challenge
//!     ^                                        |fail             | CHALLENGE: HELLO queued
//!     |                                        v                 v
//!     +------ on_closed <------ Closing <---- any error ---- HelloSent
//!                                  ^                             | HELLO_REPLY accepted
//!                                  +------ error, timeout ---- Connected
//! ```
//!
//! The sender thread runs [`Source::poll_sender`]: it connects, sends the
//! control frames and record batches, and closes. The connection's
//! receiver thread feeds [`Source::on_frame`] / [`Source::on_recv_error`].
//! The deadlines (handshake, peer timeout) are the worker's to watch, as
//! the sender may be blocked in a send on a dead link: the worker shuts
//! the socket down ([`super::WorkerStep::Shutdown`]), which ends that send.

use core::ops::DerefMut;

use super::{Source, SENDER};
use crate::log::pages::Pages;
use crate::log::record::{
    decode_frame, encode_frame, Crc32c, Header, Hello, Kind, HEADER_LEN, OFF_CRC, VERSION,
};
use crate::log::ring::{Cursor, RecordView};
use crate::transport::proto::auth::{self, MacLabel, NONCE_LEN};
use crate::transport::proto::backoff::Backoff;
use crate::transport::proto::hot::HotSlot;
use crate::transport::proto::inflight::InflightSlot;
use crate::transport::proto::wake::{due, earliest, Instant};
use crate::transport::proto::{
    encode_hello, Completion, Mode, Refusal, CONN_RANDOM, HANDSHAKE_TIMEOUT, HEALTHY,
    HELLO_FLAG_CONSISTENT, HELLO_FLAG_LOCK_SYNC, HELLO_FLAG_REFUSED_MASK, HELLO_FLAG_SYNC_COMPLETION, KEEPALIVE,
    MAX_CONTROL_FRAME, PEER_TIMEOUT,
};

/// Most bytes of records gathered into one send.
pub const SEND_BATCH_BYTES: usize = 512 * 1024;
/// Most page pieces gathered into one send (the glue's iovec).
pub const SEND_BATCH_PIECES: usize = 512;

/// One encoded control frame (HELLO or PING).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFrame {
    bytes: [u8; MAX_CONTROL_FRAME],
    len: usize,
}

impl ControlFrame {
    /// The frame's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

/// A batch of records to send in one go: `count` records from `first`.
/// Their bytes stay in the ring until [`Source::on_sent`] (a lease), so
/// an acknowledgement arriving meanwhile cannot free them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Seq of the first record.
    pub first: u64,
    /// Records in the batch.
    pub count: u32,
    /// Bytes on the wire.
    pub bytes: usize,
    /// Fault injection: this record (the last of the batch) goes out with
    /// a corrupt CRC: send [`Source::corrupt_header`] instead of its
    /// header.
    pub corrupt: Option<u64>,
    at: Cursor,
}

/// What the sender thread does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderStep {
    /// The device stops: return.
    Exit,
    /// Nothing to do: sleep until woken or until this instant.
    Sleep {
        /// Timer (back-off, keepalive), if any.
        until: Option<Instant>,
    },
    /// Open connection `conn` to the peer (at most
    /// [`crate::transport::proto::CONNECT_TIMEOUT_MS`]), start its
    /// receiver, then report [`Source::on_connect`].
    Connect {
        /// The new connection's number.
        conn: u64,
    },
    /// Send this frame on `conn`, then report [`Source::on_sent`].
    Control {
        /// Connection.
        conn: u64,
        /// The frame.
        frame: ControlFrame,
    },
    /// Send the records of `batch` ([`Source::batch_views`]) on `conn`,
    /// then report [`Source::on_sent`].
    Records {
        /// Connection.
        conn: u64,
        /// The batch.
        batch: Batch,
    },
    /// Shut `conn` down, wait for its receiver thread to end, then report
    /// [`Source::on_closed`].
    Close {
        /// Connection.
        conn: u64,
    },
}

/// What the receiver thread does after a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxVerdict {
    /// Read the next frame.
    Continue,
    /// The connection is closing: return (the sender closes the socket).
    Stop,
}

/// Why the receiver could not read a frame (or why a frame broke the
/// protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// The connection failed or was shut down.
    Io,
    /// Bytes that are no frame: a header that does not decode, a frame
    /// longer than any the target sends, a bad CRC.
    Corrupt,
    /// A frame the target must not send now.
    Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Not started, or the threads stopped.
    Stopped,
    /// No connection; the next attempt at `retry_at` (`None`: at once).
    Idle { retry_at: Option<Instant> },
    /// The sender is connecting.
    Connecting,
    /// Connected, waiting for the CHALLENGE.
    Challenge { deadline: Instant },
    /// HELLO queued or sent, waiting for the HELLO_REPLY.
    HelloSent { deadline: Instant },
    /// Streaming.
    Connected,
    /// To be closed by the sender (and shut down by whoever gets to it).
    Closing,
}

/// Connection state (see the module docs).
pub(super) struct Link {
    pub(super) state: State,
    conn: u64,
    refused: Option<Refusal>,
    admin_down: bool,
    backoff: Backoff,
    /// The current connection ended because the peer broke the protocol.
    peer_fault: bool,
    /// The connection reached the handshake (its loss is a disconnect).
    was_up: bool,
    /// Our HELLO nonce on this connection.
    nonce: [u8; NONCE_LEN],
    ctl: Option<ControlFrame>,
    connected_at: Option<Instant>,
    last_rx: Instant,
    last_tx: Instant,
    /// The socket of the closing connection is still to be shut down.
    shutdown_pending: bool,
    lease: Option<Batch>,
    corrupt_next: u32,
    corrupt_every: u32,
    corrupt_tick: u32,
}

impl Link {
    pub(super) fn new() -> Link {
        Link {
            state: State::Stopped,
            conn: 0,
            refused: None,
            admin_down: false,
            backoff: Backoff::new(),
            peer_fault: false,
            was_up: false,
            nonce: [0; NONCE_LEN],
            ctl: None,
            connected_at: None,
            last_rx: 0,
            last_tx: 0,
            shutdown_pending: false,
            lease: None,
            corrupt_next: 0,
            corrupt_every: 0,
            corrupt_tick: 0,
        }
    }

    pub(super) fn start(&mut self, _now: Instant) {
        if self.state == State::Stopped {
            self.state = State::Idle { retry_at: None };
        }
    }

    /// The threads are gone; true if a connection was up.
    pub(super) fn stopped(&mut self) -> bool {
        let was = self.was_up;
        self.state = State::Stopped;
        self.was_up = false;
        self.lease = None;
        self.ctl = None;
        self.shutdown_pending = false;
        was
    }

    pub(super) fn lease_first(&self) -> Option<u64> {
        self.lease.map(|b| b.first)
    }

    /// The instant a link deadline (handshake, peer timeout) passes.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Challenge { deadline } | State::HelloSent { deadline } => Some(deadline),
            State::Connected => Some(self.last_rx.saturating_add(PEER_TIMEOUT)),
            _ => None,
        }
    }

    pub(super) fn shutdown_due(&self) -> Option<u64> {
        (self.shutdown_pending && self.state == State::Closing).then_some(self.conn)
    }
}

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// Connection state, as status shows it.
    pub fn link_state(&self) -> super::LinkState {
        use super::LinkState as L;
        let l = &self.link;
        if self.stopping || l.state == State::Stopped {
            return L::Stopped;
        }
        let waiting = |s| l.refused.map_or(s, L::Refused);
        match l.state {
            State::Connected => L::Connected,
            _ if l.admin_down => L::AdminDown,
            State::Challenge { .. } | State::HelloSent { .. } => waiting(L::Handshake),
            _ => waiting(L::Connecting),
        }
    }

    /// The current connection's number (0 before the first).
    pub fn conn(&self) -> u64 {
        self.link.conn
    }

    /// Closes the current connection (if any): the sender shuts it down
    /// and reconnects after the back-off.
    pub(super) fn close(&mut self) {
        match self.link.state {
            State::Challenge { .. } | State::HelloSent { .. } | State::Connected => {
                self.link.state = State::Closing;
                self.link.shutdown_pending = true;
            }
            _ => {}
        }
    }

    /// The peer broke the protocol: close, and let the back-off grow.
    fn close_fault(&mut self) {
        self.link.peer_fault = true;
        self.close();
    }

    /// A handshake failed for `r` (refused by the peer, or by us).
    fn refuse(&mut self, r: Refusal) {
        self.link.refused = Some(r);
        self.close();
    }

    pub(super) fn sender_has_work(&self) -> bool {
        let l = &self.link;
        match l.state {
            State::Closing => true,
            State::Idle { retry_at: None } => !l.admin_down,
            State::Challenge { .. } | State::HelloSent { .. } => l.ctl.is_some(),
            State::Connected => l.lease.is_none() && self.sendable().is_some(),
            _ => false,
        }
    }

    /// The sender thread's next step (see [`SenderStep`]).
    pub fn poll_sender<C: Crc32c>(&mut self, c: &C, now: Instant) -> SenderStep {
        self.sleepers.running(SENDER);
        if self.stopping {
            return SenderStep::Exit;
        }
        let step = self.sender_step(c, now);
        if let SenderStep::Sleep { .. } = step {
            self.sleepers.sleep(SENDER);
        }
        step
    }

    fn sender_step<C: Crc32c>(&mut self, c: &C, now: Instant) -> SenderStep {
        let conn = self.link.conn;
        match self.link.state {
            State::Stopped | State::Connecting => SenderStep::Sleep { until: None },
            State::Closing => SenderStep::Close { conn },
            State::Idle { retry_at } => {
                if self.link.admin_down {
                    return SenderStep::Sleep { until: None };
                }
                if retry_at.is_some_and(|t| now < t) {
                    return SenderStep::Sleep { until: retry_at };
                }
                self.link.conn = conn.wrapping_add(1);
                self.link.state = State::Connecting;
                SenderStep::Connect {
                    conn: self.link.conn,
                }
            }
            State::Challenge { .. } | State::HelloSent { .. } => match self.link.ctl.take() {
                Some(frame) => SenderStep::Control { conn, frame },
                None => SenderStep::Sleep { until: None },
            },
            State::Connected => {
                if let Some(batch) = self.take_batch() {
                    return SenderStep::Records { conn, batch };
                }
                let ping_at = self.link.last_tx.saturating_add(KEEPALIVE);
                if now >= ping_at {
                    let mut h = Header::new(Kind::Ping);
                    h.seq = 0;
                    let mut frame = ControlFrame {
                        bytes: [0; MAX_CONTROL_FRAME],
                        len: 0,
                    };
                    if let Ok(n) = encode_frame(c, &h, &[], &mut frame.bytes) {
                        frame.len = n;
                        return SenderStep::Control { conn, frame };
                    }
                }
                SenderStep::Sleep {
                    until: Some(ping_at),
                }
            }
        }
    }

    /// Gathers the records at the send cursor into a batch (within
    /// [`SEND_BATCH_BYTES`] and [`SEND_BATCH_PIECES`]) and leases them.
    fn take_batch(&mut self) -> Option<Batch> {
        let mut batch = Batch {
            first: self.ring.send_seq(),
            count: 0,
            bytes: 0,
            corrupt: None,
            at: self.ring.send_cursor(),
        };
        let mut pieces = 0usize;
        while batch.bytes < SEND_BATCH_BYTES {
            let Some(v) = self.sendable() else { break };
            let n = v.chunks().count();
            if batch.count > 0 && pieces + n + 2 > SEND_BATCH_PIECES {
                break;
            }
            let corrupt = self.fault_tick();
            self.advance_send(&v);
            batch.count += 1;
            batch.bytes += v.frame_len;
            pieces += n;
            if corrupt {
                // One corrupted record per batch, the last one.
                batch.corrupt = Some(v.seq);
                break;
            }
        }
        if batch.count == 0 {
            return None;
        }
        self.link.lease = Some(batch);
        Some(batch)
    }

    /// Fault injection: whether the next record sent goes out corrupted.
    fn fault_tick(&mut self) -> bool {
        let l = &mut self.link;
        let mut corrupt = false;
        if l.corrupt_next > 0 {
            l.corrupt_next -= 1;
            corrupt = true;
        }
        if l.corrupt_every > 0 {
            l.corrupt_tick += 1;
            if l.corrupt_tick >= l.corrupt_every {
                l.corrupt_tick = 0;
                corrupt = true;
            }
        }
        corrupt
    }

    /// The records of the batch being sent, in order: send each one's
    /// [`RecordView::chunks`] straight from the ring's pages.
    pub fn batch_views(&self, batch: &Batch) -> impl Iterator<Item = RecordView> + '_ {
        let leased = self.link.lease == Some(*batch);
        self.ring
            .views_at(batch.at, if leased { batch.count as usize } else { 0 })
    }

    /// The header of record `seq` with one CRC bit flipped (fault
    /// injection: the target must see a corrupt frame and NAK it).
    pub fn corrupt_header(&self, seq: u64) -> [u8; HEADER_LEN] {
        let mut hb = self.ring.header_bytes(seq).unwrap_or([0; HEADER_LEN]);
        if let Some(b) = hb.get_mut(OFF_CRC) {
            *b ^= 0x01;
        }
        hb
    }

    /// The sender opened connection `conn` (`Some` with the glue's fresh
    /// random bytes) or failed to (`None`). False: the connection is not
    /// wanted any more (stopping, disconnected): close it.
    pub fn on_connect(&mut self, conn: u64, random: Option<[u8; CONN_RANDOM]>, now: Instant) -> bool {
        if conn != self.link.conn || self.link.state != State::Connecting {
            return false;
        }
        let Some(random) = random else {
            self.stats.connect_failures = self.stats.connect_failures.saturating_add(1);
            self.retry_later(now);
            return false;
        };
        if self.stopping || self.link.admin_down {
            self.link.state = State::Idle { retry_at: None };
            return false;
        }
        let l = &mut self.link;
        l.nonce.copy_from_slice(random.get(..NONCE_LEN).unwrap_or(&[0; NONCE_LEN]));
        l.state = State::Challenge {
            deadline: now.saturating_add(HANDSHAKE_TIMEOUT),
        };
        l.last_rx = now;
        l.last_tx = now;
        l.peer_fault = false;
        l.was_up = true;
        l.connected_at = None;
        l.ctl = None;
        // The handshake's deadline is the worker's to watch.
        self.rearm(super::WORKER);
        true
    }

    fn retry_later(&mut self, now: Instant) {
        let d = self.link.backoff.next_delay();
        self.link.state = State::Idle {
            retry_at: Some(now.saturating_add(d)),
        };
    }

    /// A send on `conn` ended (`ok`: every byte went out). Ends the lease
    /// of a record batch.
    pub fn on_sent(&mut self, conn: u64, ok: bool, now: Instant) {
        if self.link.lease.take().is_some() {
            self.free_ring();
        }
        if conn != self.link.conn {
            return;
        }
        if ok {
            self.link.last_tx = now;
        } else {
            self.close();
        }
    }

    /// Whoever shut connection `conn`'s socket down (the worker's
    /// [`super::WorkerStep::Shutdown`]) did so.
    pub fn on_shutdown(&mut self, conn: u64) {
        if conn == self.link.conn {
            self.link.shutdown_pending = false;
        }
    }

    /// The sender closed connection `conn` and its receiver has ended:
    /// reconnect after the back-off, which starts over after a healthy
    /// connection (up at least [`HEALTHY`], and the peer kept the
    /// protocol).
    pub fn on_closed(&mut self, conn: u64, now: Instant) {
        if conn != self.link.conn || self.link.state != State::Closing {
            return;
        }
        let healthy = !self.link.peer_fault
            && self
                .link
                .connected_at
                .is_some_and(|t| now.saturating_sub(t) >= HEALTHY);
        if healthy {
            self.link.backoff.reset();
        }
        if self.link.was_up {
            self.stats.disconnects = self.stats.disconnects.saturating_add(1);
        }
        let l = &mut self.link;
        l.was_up = false;
        l.shutdown_pending = false;
        l.ctl = None;
        l.connected_at = None;
        self.reset_holds();
        self.degrade_link_down(now);
        if self.link.lease.take().is_some() {
            self.free_ring();
        }
        self.retry_later(now);
    }

    /// The receiver of `conn` read `frame`.
    pub fn on_frame<C: Crc32c>(&mut self, c: &C, conn: u64, frame: &[u8], now: Instant) -> RxVerdict {
        if conn != self.link.conn {
            return RxVerdict::Stop;
        }
        let handshake = matches!(
            self.link.state,
            State::Challenge { .. } | State::HelloSent { .. }
        );
        if !handshake && self.link.state != State::Connected {
            return RxVerdict::Stop;
        }
        self.link.last_rx = now;
        let (h, payload) = match decode_frame(c, frame) {
            Ok(x) => x,
            Err(_) => {
                self.recv_fault(RecvError::Corrupt);
                return RxVerdict::Stop;
            }
        };
        let r = match (self.link.state, h.kind) {
            (State::Challenge { deadline }, Kind::Challenge) => {
                self.on_challenge(c, payload, deadline)
            }
            (State::HelloSent { .. }, Kind::HelloReply) => self.on_hello_reply_frame(payload, now),
            (State::Connected, Kind::Digest) => {
                self.on_digest(h.seq, (h.count == 0).then_some(payload), now);
                Ok(())
            }
            (State::Connected, _) => self.on_stream_frame(&h, now),
            _ => Err(RecvError::Protocol),
        };
        match r {
            Ok(()) if self.link.state != State::Closing => RxVerdict::Continue,
            Ok(()) => RxVerdict::Stop,
            Err(e) => {
                self.recv_fault(e);
                RxVerdict::Stop
            }
        }
    }

    /// The receiver of `conn` could not read a frame.
    pub fn on_recv_error(&mut self, conn: u64, e: RecvError) {
        if conn != self.link.conn {
            return;
        }
        self.recv_fault(e);
    }

    fn recv_fault(&mut self, e: RecvError) {
        let handshake = matches!(
            self.link.state,
            State::Challenge { .. } | State::HelloSent { .. }
        );
        match (e, handshake) {
            (_, _) if self.link.state == State::Closing => {}
            (RecvError::Io, true) => {
                // Closed by the peer before it answered: a failed attempt.
                if !self.stopping && !self.link.admin_down {
                    self.stats.connect_failures = self.stats.connect_failures.saturating_add(1);
                }
                self.close();
            }
            (RecvError::Io, false) => self.close(),
            (_, true) => {
                // Bytes that are no handshake frame: a peer that does not
                // speak the protocol.
                self.stats.protocol_errors = self.stats.protocol_errors.saturating_add(1);
                self.refuse(Refusal::Protocol);
            }
            (RecvError::Corrupt, false) => {
                self.stats.crc_errors = self.stats.crc_errors.saturating_add(1);
                self.close_fault();
            }
            (RecvError::Protocol, false) => {
                self.stats.protocol_errors = self.stats.protocol_errors.saturating_add(1);
                self.close_fault();
            }
        }
    }

    /// The HELLO this source sends on a new connection (nonce and MAC
    /// still to set).
    fn hello(&self) -> Hello {
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
            generation: self.degrade.stream,
            // The source's base: every record after it is still held.
            last_applied: self.base(),
            nonce: [0; NONCE_LEN],
            mac: [0; 32],
            flags,
            block_size: self.block_size,
            gens: self.gens_copy().unwrap_or_default(),
        }
    }

    /// Seq before the oldest record still held.
    fn base(&self) -> u64 {
        let oldest = self.ring.oldest_seq().unwrap_or(self.ring.next_seq());
        // Dropped records (degraded mode) are no longer the target's to
        // apply, even while a local write still reads them.
        // Not `acked`: records applied but not durable are the target's
        // to apply again if it lost them (a restarted target takes this
        // base as its stream's start).
        oldest.saturating_sub(1).max(self.durable).max(self.degrade.dropped)
    }

    fn secret(&self) -> Option<&[u8]> {
        self.cfg.secret.as_ref().map(|s| s.as_bytes())
    }

    /// CHALLENGE: queue the HELLO, signed over the target's nonce.
    fn on_challenge<C: Crc32c>(&mut self, c: &C, payload: &[u8], deadline: Instant) -> Result<(), RecvError> {
        let peer: [u8; NONCE_LEN] = payload.try_into().map_err(|_| RecvError::Protocol)?;
        // Degraded: the records from the base this HELLO names on are
        // kept for the stream it starts.
        self.degrade_hello();
        let mut hello = self.hello();
        hello.nonce = self.link.nonce;
        auth::sign(self.secret(), MacLabel::Hello, &peer, &mut hello);
        let mut frame = ControlFrame {
            bytes: [0; MAX_CONTROL_FRAME],
            len: 0,
        };
        frame.len = encode_hello(c, &hello, false, &mut frame.bytes).map_err(|_| RecvError::Protocol)?;
        self.reset_holds();
        self.link.ctl = Some(frame);
        self.link.state = State::HelloSent { deadline };
        Ok(())
    }

    /// HELLO_REPLY: check its MAC and what it says; on success the stream
    /// resumes from the target's last applied seq + 1.
    fn on_hello_reply_frame(&mut self, payload: &[u8], now: Instant) -> Result<(), RecvError> {
        let h = Hello::decode(payload).map_err(|_| RecvError::Protocol)?;
        if !auth::verify(self.secret(), MacLabel::Reply, &self.link.nonce, &h) {
            self.stats.auth_failures = self.stats.auth_failures.saturating_add(1);
            self.refuse(Refusal::Auth);
            return Ok(());
        }
        let r = if h.flags & HELLO_FLAG_REFUSED_MASK != 0 {
            Err(Refusal::from_flags(h.flags))
        } else if h.proto_version != u32::from(VERSION) {
            Err(Refusal::Version)
        } else if h.dev_sectors != self.cfg.dev_sectors {
            Err(Refusal::DeviceSize)
        } else if h.region_sectors != self.cfg.region_sectors {
            Err(Refusal::RegionSize)
        } else if crate::transport::proto::block_size_too_large(h.block_size, self.block_size) {
            // The target should have refused; an older one does not check.
            Err(Refusal::BlockSize)
        } else if h.generation != self.degrade.stream {
            Err(Refusal::Generation)
        } else if h.last_applied < self.base() || h.last_applied >= self.ring.next_seq() {
            // The target lost records we already freed, or claims records
            // we never wrote: the two sides diverged.
            Err(Refusal::Diverged)
        } else {
            // The generations' rule (`gens.rs`): refuse, or set up the
            // sync the target's image needs.
            self.gens_handshake(&h.gens, h.flags & HELLO_FLAG_CONSISTENT != 0)
        };
        if let Err(e) = r {
            self.refuse(e);
            return Ok(());
        }
        if h.last_applied < self.acked {
            // A target that restarted (a crash or a power loss, or a new
            // table) took our base as its start: what it applied before
            // and did not report durable is gone with its cache, and is
            // sent again from the ring.
            self.acked = h.last_applied;
        }
        self.acknowledge(h.last_applied, 0, now);
        // Digest requests of the connection that is gone lost their
        // answers.
        self.verify_reconnected();
        let resume = self.acked + 1;
        // acked < next_seq, so resume <= next_seq lies in the ring.
        let _ = self
            .ring
            .rewind(resume.max(self.ring.oldest_seq().unwrap_or(resume)));
        self.link.state = State::Connected;
        self.link.refused = None;
        self.link.connected_at = Some(now);
        self.degrade_connected();
        // New deadlines: the sender's keepalive, the worker's peer timeout.
        self.rearm(SENDER);
        #[cfg(feature = "mutants")]
        let rearm = self.mutant != crate::transport::proto::mutant::Mutant::NoCompletionAfterHandshake;
        #[cfg(not(feature = "mutants"))]
        let rearm = true;
        if rearm {
            self.rearm(super::WORKER);
        }
        if self.handshakes > 0 {
            self.stats.reconnects = self.stats.reconnects.saturating_add(1);
        }
        self.handshakes = self.handshakes.saturating_add(1);
        Ok(())
    }

    /// The worker's watch over the link's deadlines: a handshake that
    /// took too long, or a peer silent past [`PEER_TIMEOUT`].
    pub(super) fn expire_link(&mut self, now: Instant) {
        if !due(self.link.deadline(), now) {
            return;
        }
        if self.link.state == State::Connected {
            self.stats.peer_timeouts = self.stats.peer_timeouts.saturating_add(1);
            self.close_fault();
        } else {
            self.stats.protocol_errors = self.stats.protocol_errors.saturating_add(1);
            self.refuse(Refusal::Protocol);
        }
    }

    /// The next link deadline the worker must wake for.
    pub(super) fn link_deadline(&self) -> Option<Instant> {
        earliest(self.link.deadline(), None)
    }

    /// `dmsetup message .. disconnect`: close and stay down.
    pub fn admin_disconnect(&mut self) {
        self.link.admin_down = true;
        self.close();
    }

    /// `dmsetup message .. connect`: connect again at once.
    pub fn admin_connect(&mut self) {
        self.link.admin_down = false;
        if let State::Idle { .. } = self.link.state {
            self.link.state = State::Idle { retry_at: None };
        }
    }

    /// Fault injection: the next `n` records sent go out corrupted.
    pub fn fault_corrupt(&mut self, n: u32) {
        self.link.corrupt_next = n;
    }

    /// Fault injection: one record in every `n` sent goes out corrupted
    /// (0: off).
    pub fn fault_corrupt_every(&mut self, n: u32) {
        self.link.corrupt_every = n;
        self.link.corrupt_tick = 0;
    }

    /// Fault injection: drop the connection as a cut link would.
    pub fn fault_drop(&mut self) {
        self.close();
    }
}

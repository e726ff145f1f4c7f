//! The target's connection: one source at a time, the handshake
//! (CHALLENGE, the HELLO's MAC checked, HELLO_REPLY signed), the
//! receiver's back-pressure, the sender's frames and keepalives, the
//! handshake deadline and the peer timeout.
//!
//! ```text
//!   Listening --accept--> Handshake --HELLO accepted--> Streaming
//!       ^                     |  \--refused--> Refusing (reply, then close)
//!       |                     v                    |
//!       +--- receiver ended <-- Closing <-- errors, timeouts
//! ```
//!
//! The listener thread accepts ([`Target::on_accept`]) and starts a
//! receiver per connection; the receiver feeds [`Target::on_frame`] and
//! ends with [`Target::on_recv_end`]; the sender runs
//! [`Target::poll_sender`], which also watches the deadlines and shuts a
//! dead connection down ([`SenderStep::Close`]).

use core::ops::DerefMut;

use super::{Target, TargetRecv, LISTENER, RECEIVER, SENDER};
use crate::log::commit::WindowSlot;
use crate::log::locks::LockSlot;
use crate::log::pages::Pages;
use crate::log::record::{decode_frame, Crc32c, Hello, Kind, VERSION};
use crate::transport::proto::auth::{self, encode_challenge, MacLabel, NONCE_LEN};
use crate::transport::proto::wake::{earliest, Instant, MS, SEC};
use crate::transport::proto::{
    encode_hello, Refusal, CONN_RANDOM, HANDSHAKE_TIMEOUT, KEEPALIVE, MAX_CONTROL_FRAME,
    PEER_TIMEOUT,
};

/// Control frames gathered into one send; the sender's buffer holds
/// `SEND_FRAMES * MAX_CONTROL_FRAME` bytes.
pub const SEND_FRAMES: usize = 16;

/// First pause after a failed `accept()`; it doubles up to one second.
const ACCEPT_RETRY_MIN: Instant = 10 * MS;
const ACCEPT_RETRY_MAX: Instant = SEC;

/// Answer to an accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Serve it as connection `conn`: start its receiver.
    Serve {
        /// The connection's number.
        conn: u64,
    },
    /// One is served already (or the device stops): close it at once.
    Refuse,
}

/// What the receiver does after a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxVerdict {
    /// Consumed: read on.
    Continue,
    /// Not consumed (no room): keep the frame and wait
    /// ([`Target::poll_receiver`]) before offering it again.
    Busy,
    /// The connection is closing: return (after [`Target::on_recv_end`]).
    Stop,
    /// Consumed, once its payload is copied (outside the lock) into the
    /// commit log at [`Target::filling`]; then [`Target::on_filled`].
    Fill {
        /// The record's seq.
        seq: u64,
    },
}

/// What a receiver waiting under back-pressure does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxStep {
    /// Offer the kept frame again.
    Retry,
    /// No room yet: sleep until woken.
    Sleep,
    /// The connection is closing or the device stops: return.
    Stop,
}

/// What the sender thread does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderStep {
    /// The device stops: return.
    Exit,
    /// Nothing to do: sleep until woken or until this instant.
    Sleep {
        /// Timer (handshake deadline, keepalive, peer timeout), if any.
        until: Option<Instant>,
    },
    /// Send the first `len` bytes of the buffer on `conn`, then report
    /// [`Target::on_sent`].
    Send {
        /// Connection.
        conn: u64,
        /// Bytes encoded into the caller's buffer.
        len: usize,
    },
    /// Shut `conn`'s socket down (its receiver then ends), then report
    /// [`Target::on_shutdown`].
    Close {
        /// Connection.
        conn: u64,
    },
}

/// What the listener thread does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerStep {
    /// The device stops: return.
    Exit,
    /// Wait for a connection (`accept()`), then report
    /// [`Target::on_accept`] or [`Target::on_accept_error`].
    Accept,
    /// Back off after a failed `accept()`.
    Sleep {
        /// When to accept again.
        until: Option<Instant>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Stopped,
    Listening,
    Handshake { deadline: Instant },
    /// The HELLO was refused: send the refusing HELLO_REPLY, then close.
    Refusing,
    Streaming,
    /// To be shut down by the sender; listening again once the receiver
    /// ended.
    Closing,
}

/// Connection state (see the module docs).
pub(super) struct Conn {
    pub(super) state: State,
    id: u64,
    /// Our CHALLENGE nonce, then the HELLO_REPLY's.
    nonce: [u8; NONCE_LEN],
    reply_nonce: [u8; NONCE_LEN],
    challenge_due: bool,
    last_rx: Instant,
    last_tx: Instant,
    /// The closing connection's socket was shut down.
    shut: bool,
    /// The receiver holds a frame with this payload length it could not
    /// hand over (back-pressure).
    pub(super) rx_busy: Option<usize>,
    accept_retry_at: Option<Instant>,
    accept_backoff: Instant,
    pub(super) last_refusal: Option<Refusal>,
    refusal_to_log: Option<Refusal>,
}

impl Conn {
    pub(super) fn new() -> Conn {
        Conn {
            state: State::Stopped,
            id: 0,
            nonce: [0; NONCE_LEN],
            reply_nonce: [0; NONCE_LEN],
            challenge_due: false,
            last_rx: 0,
            last_tx: 0,
            shut: false,
            rx_busy: None,
            accept_retry_at: None,
            accept_backoff: ACCEPT_RETRY_MIN,
            last_refusal: None,
            refusal_to_log: None,
        }
    }

    pub(super) fn start(&mut self) {
        if self.state == State::Stopped {
            self.state = State::Listening;
        }
    }

    pub(super) fn stopped(&mut self) {
        self.state = State::Stopped;
        self.rx_busy = None;
        self.challenge_due = false;
    }
}

impl<P, W, F, L> Target<P, W, F, L>
where
    P: Pages,
    W: DerefMut<Target = [WindowSlot]>,
    F: DerefMut<Target = [u32]>,
    L: DerefMut<Target = [LockSlot]>,
{
    /// Connection state for status: `stopped`, `listening` (or the last
    /// refusal, while no source is connected), `handshake`, `connected`.
    pub fn conn_state(&self) -> &'static str {
        match self.link.state {
            State::Stopped => "stopped",
            State::Handshake { .. } | State::Refusing => "handshake",
            State::Streaming => "connected",
            State::Listening | State::Closing => match self.link.last_refusal {
                Some(r) if self.stats.connections > 0 => r.as_str(),
                _ => "listening",
            },
        }
    }

    /// The current connection's number.
    pub fn conn(&self) -> u64 {
        self.link.id
    }

    /// A refusal to log (once per reason in a row, not once per retry).
    pub fn take_refusal_log(&mut self) -> Option<Refusal> {
        self.link.refusal_to_log.take()
    }

    fn close(&mut self) {
        match self.link.state {
            State::Handshake { .. } | State::Refusing | State::Streaming => {
                self.link.state = State::Closing;
                self.link.shut = false;
            }
            _ => {}
        }
    }

    fn protocol_error(&mut self) {
        self.stats.protocol_errors = self.stats.protocol_errors.saturating_add(1);
        self.close();
    }

    /// The listener thread's next step.
    pub fn poll_listener(&mut self, now: Instant) -> ListenerStep {
        self.sleepers.running(LISTENER);
        if self.stopping {
            return ListenerStep::Exit;
        }
        match self.link.accept_retry_at {
            Some(t) if now < t => {
                self.sleepers.sleep(LISTENER);
                ListenerStep::Sleep { until: Some(t) }
            }
            _ => {
                self.link.accept_retry_at = None;
                ListenerStep::Accept
            }
        }
    }

    /// `accept()` failed: back off before the next one (a persistent error
    /// must not spin the listener).
    pub fn on_accept_error(&mut self, now: Instant) {
        self.stats.accept_errors = self.stats.accept_errors.saturating_add(1);
        let d = self.link.accept_backoff;
        self.link.accept_backoff = d.saturating_mul(2).min(ACCEPT_RETRY_MAX);
        self.link.accept_retry_at = Some(now.saturating_add(d));
    }

    /// A connection was accepted; `random` are fresh random bytes for its
    /// nonces.
    pub fn on_accept(&mut self, now: Instant, random: [u8; CONN_RANDOM]) -> Accept {
        self.link.accept_backoff = ACCEPT_RETRY_MIN;
        if self.stopping || self.link.state != State::Listening {
            if !self.stopping {
                self.stats.refused_connections = self.stats.refused_connections.saturating_add(1);
            }
            return Accept::Refuse;
        }
        let l = &mut self.link;
        l.id = l.id.wrapping_add(1);
        l.nonce.copy_from_slice(random.get(..NONCE_LEN).unwrap_or(&[0; NONCE_LEN]));
        l.reply_nonce
            .copy_from_slice(random.get(NONCE_LEN..2 * NONCE_LEN).unwrap_or(&[0; NONCE_LEN]));
        l.state = State::Handshake {
            deadline: now.saturating_add(HANDSHAKE_TIMEOUT),
        };
        l.challenge_due = true;
        l.last_rx = now;
        l.last_tx = now;
        l.rx_busy = None;
        self.stats.connections = self.stats.connections.saturating_add(1);
        Accept::Serve { conn: self.link.id }
    }

    /// The receiver of `conn` read `frame`.
    pub fn on_frame<C: Crc32c>(&mut self, c: &C, conn: u64, frame: &[u8], now: Instant) -> RxVerdict {
        self.on_frame_with(c, conn, frame, None, now)
    }

    /// [`Target::on_frame`] for a frame whose CRC the receiver checked
    /// itself, outside the lock (`crc_ok`): one for which
    /// [`copies_outside`](super::copies_outside) holds. Such a WRITE comes
    /// back as [`RxVerdict::Fill`].
    pub fn on_frame_checked<C: Crc32c>(&mut self, c: &C, conn: u64, frame: &[u8], crc_ok: bool, now: Instant) -> RxVerdict {
        self.on_frame_with(c, conn, frame, Some(crc_ok), now)
    }

    fn on_frame_with<C: Crc32c>(&mut self, c: &C, conn: u64, frame: &[u8], crc_ok: Option<bool>, now: Instant) -> RxVerdict {
        if conn != self.link.id {
            return RxVerdict::Stop;
        }
        self.link.last_rx = now;
        match self.link.state {
            State::Handshake { .. } => {
                self.on_handshake_frame(c, frame);
                match self.link.state {
                    State::Closing => RxVerdict::Stop,
                    _ => RxVerdict::Continue,
                }
            }
            State::Streaming => match self.stream_frame(c, frame, crc_ok) {
                TargetRecv::Ok => {
                    self.link.rx_busy = None;
                    RxVerdict::Continue
                }
                TargetRecv::Fill(seq) => {
                    self.link.rx_busy = None;
                    RxVerdict::Fill { seq }
                }
                TargetRecv::Busy => {
                    let len = crate::log::record::decode_header(frame)
                        .map_or(0, |(h, _)| h.len as usize);
                    self.link.rx_busy = Some(len);
                    RxVerdict::Busy
                }
                TargetRecv::Hello(_) | TargetRecv::Disconnect(_) => {
                    self.protocol_error();
                    RxVerdict::Stop
                }
            },
            // Anything after a refused HELLO is ignored until the close.
            State::Refusing => RxVerdict::Continue,
            _ => RxVerdict::Stop,
        }
    }

    /// The HELLO: check its MAC, decide, queue the signed HELLO_REPLY.
    fn on_handshake_frame<C: Crc32c>(&mut self, c: &C, frame: &[u8]) {
        let hello = match decode_frame(c, frame) {
            Ok((h, payload)) if h.kind == Kind::Hello => Hello::decode(payload),
            _ => {
                // No HELLO: garbage, a corrupt frame, the wrong kind. A
                // peer that does not speak the protocol.
                self.protocol_error();
                return;
            }
        };
        let Ok(hello) = hello else {
            self.protocol_error();
            return;
        };
        let secret = self.cfg.secret;
        let secret = secret.as_ref().map(|s| s.as_bytes());
        let r = if !auth::verify(secret, MacLabel::Hello, &self.link.nonce, &hello) {
            self.stats.auth_failures = self.stats.auth_failures.saturating_add(1);
            self.reset_connection();
            self.reply = Some(Hello {
                proto_version: u32::from(VERSION),
                dev_sectors: self.cfg.dev_sectors,
                region_sectors: self.cfg.region_sectors,
                generation: 0,
                last_applied: 0,
                nonce: [0; NONCE_LEN],
                mac: [0; 32],
                flags: Refusal::Auth.to_flags(),
                block_size: 0,
                gens: Default::default(),
            });
            Err(Refusal::Auth)
        } else {
            self.on_hello(&hello)
        };
        if let Some(reply) = self.reply.as_mut() {
            reply.nonce = self.link.reply_nonce;
            auth::sign(secret, MacLabel::Reply, &hello.nonce, reply);
        }
        if r.is_err() && self.link.last_refusal != r.err() {
            self.link.refusal_to_log = r.err();
        }
        self.link.last_refusal = r.err();
        self.link.state = if r.is_ok() {
            State::Streaming
        } else {
            State::Refusing
        };
    }

    pub(super) fn receiver_has_work(&self) -> bool {
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::ReceiverNotWoken
            && !self.kicks.1
        {
            return false;
        }
        match self.link.rx_busy {
            None => false,
            Some(_) if self.link.state != State::Streaming => true,
            Some(len) => self.room_for(len),
        }
    }

    /// Whether a frame with `len` payload bytes, refused for lack of room,
    /// would now be taken (or dropped by a lock rejection).
    fn room_for(&self, len: usize) -> bool {
        self.ctl_free() >= 2 && (self.log.can_push(len) || self.any_rejected().is_some())
    }

    /// The receiver's next step after [`RxVerdict::Busy`].
    pub fn poll_receiver(&mut self) -> RxStep {
        self.sleepers.running(RECEIVER);
        #[cfg(feature = "mutants")]
        {
            self.kicks.1 = false;
        }
        if self.stopping || self.link.state != State::Streaming {
            return RxStep::Stop;
        }
        match self.link.rx_busy {
            Some(len) if !self.room_for(len) => {
                self.sleepers.sleep(RECEIVER);
                RxStep::Sleep
            }
            _ => RxStep::Retry,
        }
    }

    /// The receiver of `conn` ended (read error, shut down, or it
    /// stopped on [`RxVerdict::Stop`]; `corrupt`: bytes that are no
    /// frame). Records already received stay in the commit log and keep
    /// being applied; the source resumes after a handshake.
    pub fn on_recv_end(&mut self, conn: u64, corrupt: bool) {
        if conn != self.link.id {
            return;
        }
        if corrupt && self.link.state != State::Closing {
            self.stats.protocol_errors = self.stats.protocol_errors.saturating_add(1);
        }
        if matches!(
            self.link.state,
            State::Handshake { .. } | State::Refusing | State::Streaming | State::Closing
        ) {
            self.link.state = State::Listening;
        }
        self.link.rx_busy = None;
        self.link.challenge_due = false;
        self.reset_connection();
    }

    pub(super) fn sender_has_work(&self) -> bool {
        match self.link.state {
            State::Closing => !self.link.shut,
            State::Handshake { .. } => self.link.challenge_due,
            State::Refusing => true,
            State::Streaming => {
                #[cfg(feature = "mutants")]
                {
                    use crate::transport::proto::mutant::Mutant;
                    match self.mutant {
                        Mutant::LostFinalAck => {
                            return self.reply.is_some()
                                || self.nak.is_some()
                                || self.ctl_len > 0
                                || (self.ack_due() && self.kicks.0);
                        }
                        Mutant::ConditionalWakes => return self.kicks.0,
                        _ => {}
                    }
                }
                self.reply.is_some() || self.send_due()
            }
            _ => false,
        }
    }

    /// The sender thread's next step; frames are encoded into `out`
    /// (at least `SEND_FRAMES * MAX_CONTROL_FRAME` bytes).
    pub fn poll_sender<C: Crc32c>(&mut self, c: &C, now: Instant, out: &mut [u8]) -> SenderStep {
        self.sleepers.running(SENDER);
        if self.stopping {
            return SenderStep::Exit;
        }
        let step = self.sender_step(c, now, out);
        if let SenderStep::Sleep { .. } = step {
            self.sleepers.sleep(SENDER);
        }
        step
    }

    fn sender_step<C: Crc32c>(&mut self, c: &C, now: Instant, out: &mut [u8]) -> SenderStep {
        let conn = self.link.id;
        match self.link.state {
            State::Stopped | State::Listening => SenderStep::Sleep { until: None },
            State::Closing if self.link.shut => SenderStep::Sleep { until: None },
            State::Closing => SenderStep::Close { conn },
            State::Handshake { deadline } => {
                if now >= deadline {
                    // No HELLO in time: silence or a trickle.
                    self.protocol_error();
                    return SenderStep::Close { conn };
                }
                if self.link.challenge_due {
                    if let Ok(n) = encode_challenge(c, &self.link.nonce, out) {
                        self.link.challenge_due = false;
                        return SenderStep::Send { conn, len: n };
                    }
                }
                SenderStep::Sleep {
                    until: Some(deadline),
                }
            }
            State::Refusing => match self.reply.take() {
                Some(r) => match encode_hello(c, &r, true, out) {
                    Ok(n) => SenderStep::Send { conn, len: n },
                    Err(_) => {
                        self.close();
                        SenderStep::Close { conn }
                    }
                },
                None => {
                    self.close();
                    SenderStep::Close { conn }
                }
            },
            State::Streaming => {
                let dead_at = self.link.last_rx.saturating_add(PEER_TIMEOUT);
                if self.link.rx_busy.is_none() && now >= dead_at {
                    // Silent past ten keepalives: gone.
                    self.stats.peer_timeouts = self.stats.peer_timeouts.saturating_add(1);
                    self.close();
                    return SenderStep::Close { conn };
                }
                let mut len = 0usize;
                while let Some(buf) = out.get_mut(len..len + MAX_CONTROL_FRAME) {
                    match self.poll_send(c, buf) {
                        Some(Ok(n)) => len += n,
                        _ => break,
                    }
                }
                let ping_at = self.link.last_tx.saturating_add(KEEPALIVE);
                if len == 0 && now >= ping_at {
                    if let Some(buf) = out.get_mut(..MAX_CONTROL_FRAME) {
                        len = self.encode_ack(c, buf).unwrap_or(0);
                    }
                }
                if len > 0 {
                    return SenderStep::Send { conn, len };
                }
                let until = if self.link.rx_busy.is_none() {
                    earliest(Some(ping_at), Some(dead_at))
                } else {
                    Some(ping_at)
                };
                SenderStep::Sleep { until }
            }
        }
    }

    /// A send on `conn` ended (`ok`: every byte went out).
    pub fn on_sent(&mut self, conn: u64, ok: bool, now: Instant) {
        if conn != self.link.id {
            return;
        }
        if ok {
            self.link.last_tx = now;
        } else {
            self.close();
        }
    }

    /// The sender shut `conn`'s socket down.
    pub fn on_shutdown(&mut self, conn: u64) {
        if conn == self.link.id {
            self.link.shut = true;
        }
    }

    /// `fault drop`: close the connection as a cut link would.
    pub fn fault_drop(&mut self) {
        self.close();
    }
}

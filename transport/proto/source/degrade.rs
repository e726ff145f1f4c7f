//! Degraded mode: the source stops replicating rather than block the host.
//!
//! The rollback ring holds what the target lacks while the link is down or
//! slower than the writes. Once that lasts longer than `degrade_after`
//! (a table option), the source goes degraded instead of making the host
//! wait any longer (DRBD's pull-ahead, and its disconnected primary):
//!
//! - every record not acknowledged is dropped from the stream and its
//!   chunks are marked dirty in the bitmap; so is every record appended
//!   while degraded (the ring only stages the local write's bytes, and
//!   frees them once the local write ended);
//! - host writes complete once their local write ended, also with
//!   `completion sync`;
//! - the stream the dropped records belonged to ends: the next handshake
//!   starts a new one (a new stream generation, as a table reload does),
//!   the generations' rule finds the target at the bitmap's base, and the
//!   dirty chunks resync while new writes stream again.
//!
//! Four clocks start it, each against `degrade_after`:
//!
//! ```text
//!   link down        since the last connection closed (or the start)
//!   writes parked    since the oldest write in the deferred list
//!                    parked, or up to an eighth of `degrade_after`
//!                    before (ring full, or sync writes holding every
//!                    slot; `parked.rs`)
//!   ack awaited      the oldest sync write whose local write ended and
//!                    that waits for its acknowledgement
//!   writes outrun    since host writes have been parked without a break
//!   the link         on this connection, from the first that waited for
//!                    ring room or in-flight slots: since the deferred
//!                    list last became non-empty, or since the handshake
//!                    was accepted if it was not empty then (pull-ahead)
//! ```
//!
//! Each parked or waiting write arrived after its clock started, so none
//! waits longer than `degrade_after` plus the worker's reaction. The
//! last clock is DRBD's pull-ahead: when the writes keep outrunning the
//! link (the ring stays full) for `degrade_after`, the host gets its
//! local device's speed back and the link carries the resync instead,
//! even though each write only waits its turn. It starts again at each
//! accepted handshake: a clock kept from before the degraded spell would
//! degrade the source again at once, and its resync would never run.
//! With
//! `on_disconnect block` (no `degrade_after`) none runs: writes wait for
//! the link as before, and only a suspend's grace ends the wait.
//!
//! ```text
//!   Normal ──clock past degrade_after──▶ Degraded ──handshake (new stream)──▶ Normal
//!                                        (drops, marks dirty)    (resync of the dirty chunks)
//! ```
//!
//! The new stream id is drawn when the HELLO is built, if records were
//! dropped since the current stream began (`gap`): a target still on the
//! old stream would find the records it lacks gone and refuse
//! (`Diverged`). From that HELLO on, records are kept for the stream it
//! starts (`rejoin`): dropping them would leave a gap after the base it
//! named. The handshake failing, the ring filling or a clock running out
//! during it drops them after all (and the next HELLO draws another id).

use core::ops::DerefMut;

use super::parked::{ParkedClock, PARK_SPANS};
use super::{Source, WaitReason, WORKER};
use crate::log::pages::Pages;
use crate::transport::proto::hot::HotSlot;
use crate::transport::proto::inflight::InflightSlot;
use crate::transport::proto::wake::{due, earliest, Instant};

/// Degraded-mode state inside the source machine.
///
/// # Invariants
///
/// - `dropped` is 0 or the seq of a record appended before; every record
///   up to it left the stream without its acknowledgement, and the
///   chunks of those with a range are dirty in the bitmap (or were
///   resynced since);
/// - `stream` is non-zero; `gap` is true when records were dropped since
///   the HELLO that announced `stream` (the next HELLO draws a new one);
/// - `rejoin` implies `on`: a HELLO went out while degraded, and the
///   records after `dropped` belong to the stream it starts.
pub(super) struct Degrade {
    /// `degrade_after`; `None`: `on_disconnect block`.
    after: Option<Instant>,
    /// Degraded now.
    pub(super) on: bool,
    /// A HELLO went out while degraded: records appended since stay in
    /// the stream, which the new connection continues (dropping them
    /// would leave a gap after the base the HELLO named).
    pub(super) rejoin: bool,
    /// Records up to this seq were dropped.
    pub(super) dropped: u64,
    /// The stream generation the HELLO announces.
    pub(super) stream: u64,
    /// Streams begun after the table's own.
    streams: u64,
    /// The stream changed since the last handshake: the target's locks
    /// are gone, so are ours.
    fresh: bool,
    /// Records were dropped since the stream began.
    gap: bool,
    /// When the link went down (the last connection closed, or the
    /// start); `None` while streaming.
    pub(super) down_since: Option<Instant>,
    /// When the parked writes parked (the deferred list's clock).
    pub(super) parked: ParkedClock,
    /// Since when host writes have been parked without a break on this
    /// connection, from the first that waited for the link (the
    /// pull-ahead clock); `None`: none such.
    busy_since: Option<Instant>,
    /// Times the source went degraded.
    pub(super) entered: u64,
}

impl Degrade {
    pub(super) fn new(stream: u64) -> Degrade {
        Degrade {
            after: None,
            on: false,
            rejoin: false,
            dropped: 0,
            stream,
            streams: 0,
            fresh: false,
            gap: false,
            down_since: None,
            parked: ParkedClock::default(),
            busy_since: None,
            entered: 0,
        }
    }
}

/// The `n`th new stream id from the table's (`gens.rs`'s bijective mix).
fn stream_id(table: u64, n: u64) -> u64 {
    super::gens::mix(table ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// Sets `degrade_after` (`None`: `on_disconnect block`, never
    /// degraded). Takes effect only with a dirty bitmap attached: without
    /// one nothing could record what the target lacks.
    pub fn set_degrade_after(&mut self, after: Option<Instant>) {
        self.degrade.after = after;
        self.rearm(WORKER);
    }

    /// Whether the source is degraded (status `degraded`).
    pub fn is_degraded(&self) -> bool {
        self.degrade.on
    }

    /// Whether host writes complete on their local write alone now:
    /// degraded, and no handshake under way (whose writes wait for the
    /// link again).
    pub fn completes_locally(&self) -> bool {
        self.degrade.on && !self.degrade.rejoin
    }

    /// Times the source went degraded.
    pub fn degrade_count(&self) -> u64 {
        self.degrade.entered
    }

    /// The records up to this seq were dropped from the stream (0: none).
    pub fn dropped_upto(&self) -> u64 {
        self.degrade.dropped
    }

    /// The stream generation the next HELLO announces.
    pub fn stream_generation(&self) -> u64 {
        self.degrade.stream
    }

    /// `degrade_after` while a clock may run: not degraded, or degraded
    /// with a handshake under way (whose writes wait for the link again).
    fn degrade_after(&self) -> Option<Instant> {
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::DegradeNever {
            return None;
        }
        if self.resync.is_none() || (self.degrade.on && !self.degrade.rejoin) {
            return None;
        }
        self.degrade.after
    }

    /// When a clock (see the module comment) reaches `degrade_after`.
    /// During a handshake begun while degraded the link-down clock does
    /// not count (it ran out already).
    pub(super) fn degrade_deadline(&self) -> Option<Instant> {
        let after = self.degrade_after()?;
        let ack = match self.completion_ack() {
            Some(_) => self.inflight.oldest_waiting_since(),
            None => None,
        };
        let down = if self.degrade.on { None } else { self.degrade.down_since };
        let parked = earliest(self.degrade.parked.since(), self.degrade.busy_since);
        let since = earliest(earliest(down, parked), ack)?;
        Some(since.saturating_add(after))
    }

    /// The worker's check: degraded once a clock passed `degrade_after`;
    /// a handshake begun while degraded that kept writes waiting that
    /// long is given up.
    pub(super) fn degrade_check(&mut self, now: Instant) {
        if !due(self.degrade_deadline(), now) {
            return;
        }
        if self.degrade.on {
            self.close();
            self.degrade_rejoin_failed();
            self.unblock();
        } else {
            self.enter_degraded();
        }
    }

    /// A clock may have started: the sleeping worker watches it.
    pub(super) fn degrade_clock_started(&mut self) {
        if self.degrade_after().is_some() {
            self.rearm(WORKER);
        }
    }

    /// Goes degraded: drops the unacknowledged records (their chunks
    /// dirty), ends the stream, lets every waiting write go.
    pub(super) fn enter_degraded(&mut self) {
        self.degrade.on = true;
        // The parked writes complete locally now: writes that park while
        // degraded wait for the local side only.
        self.degrade.busy_since = None;
        self.degrade.entered = self.degrade.entered.saturating_add(1);
        #[cfg(feature = "mutants")]
        let mark = self.mutant != crate::transport::proto::mutant::Mutant::DegradeNoMark;
        #[cfg(not(feature = "mutants"))]
        let mark = true;
        if mark {
            self.mark_unacked();
        }
        self.drop_records();
        // The connection carries the old stream: it ends, the next one
        // starts a new stream.
        self.close();
        self.resync_dropped();
        self.gens_dropped();
        if let Some(r) = self.resync.as_mut() {
            r.event = true;
        }
        self.unblock();
        self.rearm(WORKER);
        self.rearm(super::SENDER);
    }

    /// Drops every record appended so far from the stream (their chunks
    /// were marked dirty): the send cursor skips them and the ring frees
    /// them once no local write reads them.
    pub(super) fn drop_records(&mut self) {
        let next = self.ring.next_seq();
        let upto = next.saturating_sub(1);
        if upto <= self.degrade.dropped {
            return;
        }
        self.degrade.dropped = upto;
        // The stream has a gap now: the next HELLO starts a new one.
        self.degrade.gap = true;
        let _ = self.ring.skip_to(next);
        self.sent_hwm = self.sent_hwm.max(next);
        self.free_ring();
    }

    /// A record `seq` over `sector..+count` was appended while degraded:
    /// its chunks are dirty and it leaves the stream at once (unless a
    /// HELLO is out: then it waits for the new stream).
    pub(super) fn degraded_append(&mut self, sector: u64, count: u64) {
        if self.degrade.rejoin {
            return;
        }
        if count > 0 {
            let _ = self.mark_dirty_sectors(sector, count);
        }
        self.drop_records();
    }

    /// A HELLO naming the current base goes out: after records were
    /// dropped, it starts a new stream (a target on the old one would
    /// find the records it lacks gone and refuse: `Diverged`).
    pub(super) fn degrade_hello(&mut self) {
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::DegradeSameStream {
            self.degrade.gap = false;
        }
        if core::mem::take(&mut self.degrade.gap) {
            self.degrade.streams = self.degrade.streams.wrapping_add(1);
            let mut id = stream_id(self.cfg.generation, self.degrade.streams);
            if id == 0 || id == self.degrade.stream {
                id = self.degrade.stream.wrapping_add(1).max(1);
            }
            self.degrade.stream = id;
            self.degrade.fresh = true;
        }
        // The pull-ahead clock counts from the next write parked: writes
        // parked while degraded waited for the local side, and the
        // handshake's own wait is the parked clock's.
        self.degrade.busy_since = None;
        if self.degrade.on {
            self.degrade.rejoin = true;
            // Its clocks run again (a write parked already counts).
            self.degrade_clock_started();
        }
    }

    /// The handshake begun by that HELLO failed (or the ring filled up
    /// while it ran): what was appended since is dropped after all.
    pub(super) fn degrade_rejoin_failed(&mut self) {
        if core::mem::take(&mut self.degrade.rejoin) {
            self.mark_unacked();
            self.drop_records();
        }
    }

    /// A handshake was accepted: back to normal, and the pull-ahead clock
    /// starts again (from the next write that waits for the link).
    pub(super) fn degrade_connected(&mut self) {
        self.degrade.rejoin = false;
        #[cfg(feature = "mutants")]
        let restart = self.mutant != crate::transport::proto::mutant::Mutant::DegradeStaleClock;
        #[cfg(not(feature = "mutants"))]
        let restart = true;
        if restart {
            self.degrade.busy_since = None;
        }
        if self.degrade.on {
            self.degrade.on = false;
            if let Some(r) = self.resync.as_mut() {
                r.event = true;
            }
        }
        if core::mem::take(&mut self.degrade.fresh) {
            // The target took a new stream and released its stream locks;
            // the regions are locked again by the next writes.
            self.hot.clear();
        }
        self.degrade.down_since = None;
    }

    /// The link went down (or the source started without one).
    pub(super) fn degrade_link_down(&mut self, now: Instant) {
        self.degrade_rejoin_failed();
        if self.degrade.down_since.is_none() {
            self.degrade.down_since = Some(now);
            self.degrade_clock_started();
        }
    }

    /// A host write parks at the tail of the deferred list at `now`,
    /// waiting for `why` (`None`: queued behind the others, or for a
    /// local bio).
    pub(super) fn degrade_parked(&mut self, now: Instant, why: Option<WaitReason>) {
        let before = self.degrade.parked.since();
        // With `on_disconnect block` no clock runs: one bucket does.
        let span = self.degrade.after.map_or(Instant::MAX, |a| a / PARK_SPANS);
        self.degrade.parked.park(now, span);
        if let Some(w) = why {
            self.degrade_busy(now, w);
        }
        if before.is_none() {
            self.degrade_clock_started();
        }
    }

    /// A parked write waits for `why` at `now`: waiting for the link
    /// (ring room, or in-flight slots that writes waiting for their
    /// acknowledgement hold) starts the pull-ahead clock. A wait for the
    /// local side (the activity log, an overlapping local write, copies
    /// in progress) does not: degraded mode would not shorten it.
    fn degrade_busy(&mut self, now: Instant, why: WaitReason) {
        if self.degrade.busy_since.is_none() && matches!(why, WaitReason::RingFull | WaitReason::InflightFull) {
            self.degrade.busy_since = Some(now);
        }
    }

    /// The write at the head of the deferred list left it.
    pub(super) fn degrade_unparked(&mut self) {
        self.degrade.parked.leave();
        if self.deferred == 0 {
            self.degrade.busy_since = None;
        }
    }

    /// The write at the head of the deferred list must wait again, for
    /// `why`.
    pub(super) fn degrade_head_waits(&mut self, now: Instant, why: WaitReason) {
        self.degrade_busy(now, why);
    }
}

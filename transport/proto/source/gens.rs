//! The source's data generations, the handshake's rule and the sync's
//! start and end marks in the stream.
//!
//! The rule (`log::meta::generation::decide`) compares this source's
//! generations with the ones the target's HELLO_REPLY names; both sides
//! run it, and the target refuses what the source would refuse. Then:
//!
//! ```text
//!   Idle ──bits dirty──▶ NeedStart ──superblock saved, SYNC_START──▶ Started
//!     ▲   (begin_tracking)   ▲                                         │
//!     │                      └── handshake: resync / full / initial    │ bitmap clean
//!     │                                                                 ▼
//!     └──── DONE acked: bitmap gen 0 ◀── DoneSent ◀── SYNC_DONE ── (NeedDone)
//! ```
//!
//! - A generation change (`begin_tracking`, `begin_full`) is on the
//!   metadata device before the SYNC_START that announces it is appended:
//!   a target never records a base the source could forget in a crash.
//! - No resync piece is read before SYNC_START is in the ring, so the
//!   target marks itself inconsistent (a barrier, saved on its metadata
//!   device) before the first write that is not in host order.
//! - SYNC_DONE is appended once the bitmap is clean, i.e. every resync
//!   piece was acknowledged; after it the target is consistent at the
//!   source's current generation. Only its acknowledgement ends the
//!   tracking (bitmap generation 0, saved), so a crash in between finds a
//!   target at the current generation with tracking on: a (trivial)
//!   resync, never a resume over a half-synced image.
//!
//! New generation ids come from the table load's random stream id through
//! a bijective mix, so the simulator replays them and no two ids of one
//! load collide.

use core::ops::DerefMut;

use super::{Source, WorkerStep};
use crate::log::meta::generation::{decide, plan, Generations, InitialSync, Rule, SyncPlan};
use crate::log::pages::Pages;
use crate::log::record::{Crc32c, Header, Kind, SYNC_DONE, SYNC_START};
use crate::log::ring::RingError;
use crate::transport::proto::hot::HotSlot;
use crate::transport::proto::inflight::InflightSlot;
use crate::transport::proto::wake::{due, Instant, SEC};
use crate::transport::proto::Refusal;

/// Pause before a failed superblock save is tried again.
pub const GENS_SAVE_RETRY: Instant = SEC;

/// Where the source is in telling the target about a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPhase {
    /// No sync to announce (the bitmap may be clean, or dirty with
    /// tracking about to begin at the worker's next step).
    Idle,
    /// A sync must be announced: SYNC_START goes into the stream once the
    /// superblock is saved and the link is up.
    NeedStart,
    /// SYNC_START is in the stream; resync pieces follow it.
    Started,
    /// The target is to be told it is consistent (`initial_sync none`).
    NeedDone,
    /// SYNC_DONE has this seq; its acknowledgement ends the tracking.
    DoneSent(u64),
}

/// The generation state inside the source machine.
///
/// # Invariants
///
/// - `saving` is true while the worker writes the superblock; `unsaved`
///   is true while memory holds generations the metadata device lacks;
/// - `phase` is `Started` or `DoneSent` only after a SYNC_START or
///   SYNC_DONE was appended with every generation change before it saved.
pub(super) struct GenState {
    gens: Generations,
    initial: InitialSync,
    phase: SyncPhase,
    unsaved: bool,
    saving: bool,
    retry_at: Option<Instant>,
    errors: u64,
    /// `unblock_gen` when a SYNC record last found no ring room.
    wait_gen: Option<u64>,
    /// The rule the last handshake applied.
    rule: Option<Rule>,
    /// New ids drawn so far.
    ids: u64,
    /// Set when this load's handshake began a full sync (new base and
    /// current ids): the seqs of the first SYNC_START and SYNC_DONE
    /// appended since. While neither left the ring, no target can hold
    /// the ids, and a handshake that wants another full sync reuses them
    /// rather than filling the history with ids nobody ever saw.
    minted: Option<Minted>,
}

/// The first SYNC records that announce a full sync's new ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Minted {
    start_seq: Option<u64>,
    done_seq: Option<u64>,
}

impl Minted {
    /// Whether the record at `seq` may have left the ring (`hwm`: one past
    /// the highest seq sent or dropped).
    fn out(seq: Option<u64>, hwm: u64) -> bool {
        seq.is_some_and(|s| s < hwm)
    }
}

/// What status shows about the generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenStatus {
    /// The generations as memory holds them.
    pub gens: Generations,
    /// The rule the last handshake applied, if any.
    pub rule: Option<Rule>,
    /// The sync's announcement phase.
    pub phase: SyncPhase,
    /// Failed superblock writes.
    pub save_errors: u64,
    /// Whether the metadata device holds these generations.
    pub saved: bool,
}

/// splitmix64's finalizer: a bijection, so distinct inputs give distinct
/// ids.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<P: Pages, H: DerefMut<Target = [HotSlot]>, I: DerefMut<Target = [InflightSlot]>>
    Source<P, H, I>
{
    /// Gives the source the generations its superblock holds and the
    /// table's `initial_sync` mode. Without this call the source keeps no
    /// generations and the handshake applies no rule (a source without a
    /// metadata device: the core's own tests).
    pub fn attach_generations(&mut self, gens: Generations, initial: InitialSync) {
        self.gens = Some(GenState {
            gens,
            initial,
            phase: SyncPhase::Idle,
            unsaved: false,
            saving: false,
            retry_at: None,
            errors: 0,
            wait_gen: None,
            rule: None,
            ids: 0,
            minted: None,
        });
    }

    /// What status shows (`None` without generations).
    pub fn gen_status(&self) -> Option<GenStatus> {
        self.gens.as_ref().map(|g| GenStatus {
            gens: g.gens,
            rule: g.rule,
            phase: g.phase,
            save_errors: g.errors,
            saved: !g.unsaved && !g.saving,
        })
    }

    /// The generations for the superblock the worker writes now
    /// ([`WorkerStep::SaveGens`]).
    pub fn gens_copy(&self) -> Option<Generations> {
        self.gens.as_ref().map(|g| g.gens)
    }

    /// The superblock write of [`WorkerStep::SaveGens`] ended; a failed
    /// one is tried again after [`GENS_SAVE_RETRY`] (and when the device
    /// stops).
    pub fn gens_saved(&mut self, ok: bool, now: Instant) {
        let Some(g) = self.gens.as_mut() else {
            return;
        };
        if !g.saving {
            return;
        }
        g.saving = false;
        if !ok {
            g.errors = g.errors.saturating_add(1);
            g.unsaved = true;
            g.retry_at = Some(now.saturating_add(GENS_SAVE_RETRY));
        }
    }

    /// A fresh non-zero generation id.
    fn fresh_id(&mut self) -> u64 {
        let seed = self.cfg.generation;
        let Some(g) = self.gens.as_mut() else {
            return 0;
        };
        g.ids = g.ids.wrapping_add(1);
        let id = mix(seed ^ g.ids.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if id == 0 {
            1
        } else {
            id
        }
    }

    fn dirty_chunks(&self) -> u64 {
        self.resync.as_ref().map_or(0, |r| r.bits.count())
    }

    /// The handshake's rule for a target naming `tgt` (consistent or
    /// not): `Err` refuses the connection; otherwise what the source does
    /// next is set up (a full sync marks every chunk).
    pub(super) fn gens_handshake(
        &mut self,
        tgt: &Generations,
        consistent: bool,
    ) -> Result<(), Refusal> {
        let dirty = self.dirty_chunks();
        let Some(g) = self.gens.as_mut() else {
            return Ok(());
        };
        let rule = decide(&g.gens, tgt, consistent);
        g.rule = Some(rule);
        match plan(rule, g.initial) {
            SyncPlan::Refuse(r) => return Err(r.into()),
            SyncPlan::Stream => {}
            SyncPlan::Dirty => {
                // The target may have seen SYNC_START already; another
                // one is harmless (it keeps the base it holds).
                g.phase = SyncPhase::NeedStart;
                g.wait_gen = None;
            }
            plan @ (SyncPlan::All | SyncPlan::Checksum) => {
                let hwm = self.ring.sent_hwm();
                let (base_out, current_out) = match g.minted {
                    Some(m) => (Minted::out(m.start_seq, hwm), Minted::out(m.done_seq, hwm)),
                    None => (true, true),
                };
                if base_out {
                    let base = self.fresh_id();
                    let new = self.fresh_id();
                    if let Some(g) = self.gens.as_mut() {
                        if current_out {
                            g.gens.begin_full(base, new);
                        } else {
                            g.gens.restart_full(base, new);
                        }
                        g.unsaved = true;
                        g.minted = Some(Minted::default());
                    }
                }
                // (Otherwise the last full sync's ids never left this
                // ring: they are as new as fresh ones, and kept.)
                if let Some(g) = self.gens.as_mut() {
                    g.phase = SyncPhase::NeedStart;
                    g.wait_gen = None;
                }
                // Every chunk dirty (saved before anything is read), so a
                // crash or a reload in the middle resends what was not
                // sent or compared; a checksum sync clears the chunks the
                // target holds already (`verify.rs`).
                self.mark_dirty(0, u64::MAX);
                if plan == SyncPlan::Checksum {
                    let _ = self.start_verify(0, self.cfg.dev_sectors, true);
                }
            }
            SyncPlan::AssumeEqual => {
                // Equal but for the chunks the bitmap marks: with none,
                // the target is told it is consistent; with some, it is
                // told a sync starts from the bitmap's base (tracking
                // begins first if it has not).
                if dirty == 0 {
                    g.phase = SyncPhase::NeedDone;
                } else if g.phase != SyncPhase::Idle {
                    g.phase = SyncPhase::NeedStart;
                }
                g.wait_gen = None;
            }
        }
        Ok(())
    }

    /// Acknowledged up to `acked`: a SYNC_DONE covered ends the tracking.
    pub(super) fn gens_acked(&mut self, acked: u64) {
        let Some(g) = self.gens.as_mut() else {
            return;
        };
        if let SyncPhase::DoneSent(seq) = g.phase {
            if acked >= seq {
                g.phase = SyncPhase::Idle;
                g.minted = None;
                if g.gens.bitmap != 0 {
                    g.gens.bitmap = 0;
                    g.unsaved = true;
                }
            }
        }
    }

    /// Every record appended so far left the stream (degraded mode): a
    /// SYNC record among them is announced again on the next stream.
    pub(super) fn gens_dropped(&mut self) {
        if let Some(g) = self.gens.as_mut() {
            if matches!(g.phase, SyncPhase::Started | SyncPhase::DoneSent(_)) {
                g.phase = SyncPhase::NeedStart;
                g.wait_gen = None;
            }
        }
    }

    /// Whether resync pieces may be read: the target was told the sync
    /// started (always, without generations).
    pub(super) fn sync_announced(&self) -> bool {
        #[cfg(feature = "mutants")]
        if self.mutant == crate::transport::proto::mutant::Mutant::NoSyncStart {
            return true;
        }
        match &self.gens {
            Some(g) => g.phase == SyncPhase::Started,
            None => true,
        }
    }

    fn gens_connected(&self) -> bool {
        self.link_state() == super::LinkState::Connected && !self.abandoning
    }

    /// The SYNC record the worker would append now, if any.
    fn sync_record_due(&self) -> Option<(u32, u64)> {
        let g = self.gens.as_ref()?;
        if g.unsaved || g.saving || !self.gens_connected() || g.wait_gen == Some(self.unblock_gen) {
            return None;
        }
        #[cfg(feature = "mutants")]
        let clean = (self.dirty_chunks() == 0 && !self.checksum_running())
            || self.mutant == crate::transport::proto::mutant::Mutant::SyncDoneEarly;
        #[cfg(not(feature = "mutants"))]
        let clean = self.dirty_chunks() == 0 && !self.checksum_running();
        match g.phase {
            SyncPhase::NeedStart => Some((SYNC_START, g.gens.bitmap)),
            SyncPhase::Started if clean => Some((SYNC_DONE, g.gens.current)),
            SyncPhase::NeedDone => Some((SYNC_DONE, g.gens.current)),
            _ => None,
        }
    }

    /// Whether the worker has a generation step to take (timers aside).
    pub(super) fn gens_has_work(&self) -> bool {
        let Some(g) = self.gens.as_ref() else {
            return false;
        };
        (g.phase == SyncPhase::Idle && self.dirty_chunks() > 0)
            || (g.unsaved && !g.saving && g.retry_at.is_none())
            || self.sync_record_due().is_some()
    }

    /// The worker's generation step, if any: begin tracking, then save
    /// the superblock or append a SYNC record.
    pub(super) fn gens_step(&mut self, now: Instant) -> Option<WorkerStep> {
        let begin = self.gens.as_ref()?.phase == SyncPhase::Idle && self.dirty_chunks() > 0;
        let new = if begin { self.fresh_id() } else { 0 };
        let g = self.gens.as_mut()?;
        if due(g.retry_at, now) {
            g.retry_at = None;
        }
        if begin {
            // Chunks the target lacks: the target's generation is the
            // bitmap's base from now on, ours moves on.
            g.gens.begin_tracking(new);
            g.unsaved = true;
            g.phase = SyncPhase::NeedStart;
            g.wait_gen = None;
        }
        if g.unsaved && !g.saving && g.retry_at.is_none() {
            g.unsaved = false;
            g.saving = true;
            return Some(WorkerStep::SaveGens);
        }
        self.sync_record_due().map(|_| WorkerStep::AppendSync)
    }

    /// Appends the SYNC record of [`WorkerStep::AppendSync`] (with no ring
    /// room, the worker tries again once some is freed).
    pub fn append_sync<C: Crc32c>(&mut self, c: &C) {
        let Some((what, gen)) = self.sync_record_due() else {
            return;
        };
        let mut h = Header::new(Kind::Sync);
        h.sector = gen;
        h.count = what;
        let res = self.ring.append(c, h, 0, |_| Ok(()));
        let unblock_gen = self.unblock_gen;
        let Some(g) = self.gens.as_mut() else {
            return;
        };
        match res {
            Ok(seq) => {
                if let Some(m) = g.minted.as_mut() {
                    let first = if what == SYNC_START { &mut m.start_seq } else { &mut m.done_seq };
                    first.get_or_insert(seq);
                }
                g.phase = if what == SYNC_START {
                    SyncPhase::Started
                } else {
                    SyncPhase::DoneSent(seq)
                };
                g.wait_gen = None;
                self.unblock();
            }
            // Full, or (never for a zero-length record in a ring that
            // holds any) too large: wait for room.
            Err(RingError::Full) | Err(_) => g.wait_gen = Some(unblock_gen),
        }
    }

    /// The device stops: an unsaved superblock is written before the
    /// worker exits (a failed one is tried once more).
    pub(super) fn gens_stop_step(&mut self) -> Option<WorkerStep> {
        let g = self.gens.as_mut()?;
        if g.saving || !g.unsaved || g.retry_at.is_some() {
            return None;
        }
        g.unsaved = false;
        g.saving = true;
        Some(WorkerStep::SaveGens)
    }

    /// The device stops: a save waiting after a failure is tried once
    /// more now.
    pub(super) fn gens_on_stop(&mut self) {
        if let Some(g) = self.gens.as_mut() {
            g.retry_at = None;
        }
    }

    /// When a failed superblock save is tried again, if one waits.
    pub(super) fn gens_deadline(&self) -> Option<Instant> {
        self.gens.as_ref().and_then(|g| g.retry_at)
    }
}

//! Data generations (DRBD's UUIDs) and the rule the handshake applies.
//!
//! A generation is a random non-zero 64-bit id naming one history of a
//! data device's contents; 0 means "none". The source holds its `current`
//! generation, the `bitmap` generation (what the target held when the
//! dirty bitmap began tracking, 0 while nothing is tracked) and a short
//! `history` of earlier current ids. The target holds the generation its
//! image belongs to (`current`), its own history, and whether the image is
//! consistent (a target in the middle of a sync is not).
//!
//! Lifecycle, as the roles drive it (the ids come from the caller's random
//! source, so the simulator can replay them):
//!
//! ```text
//!   format source            current = new id, bitmap = 0
//!   tracking begins          source: bitmap = current, current = new id
//!   (writes without target)    (unless bitmap is set already)
//!   full sync starts         source: bitmap = fresh id, current = new id
//!                            target: image = source's bitmap, inconsistent
//!   sync ends                target: image = source's current, consistent
//!                            source: bitmap = 0 (after the bits are clear)
//! ```
//!
//! Every step writes one superblock, and the order above makes every crash
//! between two steps land on a rule below that resends at least what may
//! differ (invariant I8). [`decide`] never answers `Resume` unless the
//! target's image is exactly where the source's stream continues.

/// Earlier generations each side remembers. A target older than that is
/// refused as unrelated (the operator discards it, and it is fully synced).
pub const HISTORY: usize = 8;

/// One side's generation set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generations {
    /// Source: the generation of its data now. Target: the generation its
    /// image belongs to; 0 for a target that never held any.
    pub current: u64,
    /// Source: the generation the target held when the bitmap began
    /// tracking the chunks it lacks; 0 when nothing is tracked. Target: 0.
    pub bitmap: u64,
    /// Earlier `current` values, newest first, 0 for unused slots.
    pub history: [u64; HISTORY],
}

impl Generations {
    /// Whether `g` (non-zero) is one of the earlier generations.
    pub fn in_history(&self, g: u64) -> bool {
        g != 0 && self.history.contains(&g)
    }

    /// Remembers `g` (non-zero, not remembered yet) as the newest earlier
    /// generation.
    fn remember(&mut self, g: u64) {
        if g != 0 && !self.in_history(g) {
            self.history.copy_within(0..HISTORY - 1, 1);
            self.history[0] = g;
        }
    }

    /// Moves to generation `new`, remembering the old one.
    pub fn rotate(&mut self, new: u64) {
        self.remember(self.current);
        self.current = new;
    }

    /// Source, when it begins tracking chunks its target lacks (writes
    /// without the target, from issue 19 on; the start of a resync, where
    /// tracking is under way already): the bitmap's base generation, the
    /// one a syncing target records while it is inconsistent. Moves to
    /// `new` unless tracking is under way.
    pub fn begin_tracking(&mut self, new: u64) -> u64 {
        if self.bitmap == 0 {
            self.bitmap = self.current;
            self.rotate(new);
        }
        self.bitmap
    }

    /// Source, at the start of a full (or initial, or checksum) sync: a
    /// base generation `base` that no other target can hold, and a move to
    /// `new`. Reusing the tracking base here would let a target that was
    /// swapped out mid-sync, or a consistent one at the old current
    /// generation, come back and resume over the chunks that the other
    /// target's sync cleared (`tests/generations_model.rs`, seed 8). The
    /// old base goes to the history, so a target abandoned half-synced is
    /// later seen as stale (full sync), not unrelated.
    pub fn begin_full(&mut self, base: u64, new: u64) -> u64 {
        self.remember(self.bitmap);
        self.rotate(new);
        self.bitmap = base;
        base
    }

    /// Source, at the start of a full sync that replaces one whose
    /// SYNC_DONE never left it: as [`Generations::begin_full`], but the
    /// current generation, which no target can hold (a target takes a
    /// source's current generation only from a SYNC_DONE), is dropped
    /// instead of remembered. Each sync restarted by a flaky link would
    /// otherwise push two ids into the short history, and after a few
    /// the target's own generation falls out of it (`refused:unrelated`).
    pub fn restart_full(&mut self, base: u64, new: u64) -> u64 {
        self.remember(self.bitmap);
        self.current = new;
        self.bitmap = base;
        base
    }

    /// Target, when the source's sync starts: the image now belongs to
    /// nothing complete; it is `base` plus some of the sync's writes.
    pub fn target_sync_started(&mut self, base: u64) {
        if self.current != base {
            self.rotate(base);
        }
    }
}

/// Why the handshake refused to connect. The target's status names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No generation of one side is known to the other: these are not two
    /// halves of one mirror (or one side's metadata was replaced). An
    /// operator must say which side to discard.
    Unrelated,
    /// The target's history holds the source's current generation: the
    /// target moved on from where the source is (it was written as a
    /// source since, or the source's metadata is older than the target's).
    /// Syncing either way would lose writes.
    TargetAhead,
}

impl Refusal {
    /// The word status shows after `refused:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unrelated => "unrelated",
            Refusal::TargetAhead => "target-ahead",
        }
    }
}

/// What the handshake does with a source and a target, and the name of
/// the rule that fired (status shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Same generation, consistent target, nothing tracked: the stream
    /// resumes where the target's applied point says.
    Resume,
    /// The target holds the bitmap's base generation (or the current one
    /// with bits still tracked): send the chunks the bitmap marks.
    Resync,
    /// The target is new (holds no generation): the initial sync, as the
    /// source's `initial_sync` mode says.
    Initial,
    /// The target holds an ancestor whose changes since the bitmap does
    /// not cover, or an inconsistent image: every chunk (compared by
    /// digest under `initial_sync checksum`), never skipped.
    Full,
    /// Refused; nothing is written to either side.
    Refuse(Refusal),
}

impl Rule {
    /// The word status shows for this rule.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Resume => "resume",
            Rule::Resync => "resync",
            Rule::Initial => "initial",
            Rule::Full => "full",
            Rule::Refuse(r) => r.as_str(),
        }
    }
}

/// The handshake's rule for source generations `src` and a target holding
/// `tgt`, consistent or not. Checked in this order:
///
/// 1. target new (`current == 0`): initial;
/// 2. target at the source's bitmap base: resync (an interrupted sync
///    resumes here too, since the target recorded that base at its start);
/// 3. target at the source's current generation: resume if consistent and
///    nothing is tracked, resync if bits are tracked, full otherwise (an
///    inconsistent image at the current generation cannot be trusted);
/// 4. target at an older generation of the source: full;
/// 5. source's current generation in the target's history: refuse
///    (target ahead);
/// 6. anything else: refuse (unrelated).
pub fn decide(src: &Generations, tgt: &Generations, tgt_consistent: bool) -> Rule {
    let t = tgt.current;
    if src.current == 0 {
        return Rule::Refuse(Refusal::Unrelated);
    }
    if t == 0 {
        return Rule::Initial;
    }
    if src.bitmap != 0 && t == src.bitmap {
        return Rule::Resync;
    }
    if t == src.current {
        return match (tgt_consistent, src.bitmap) {
            (true, 0) => Rule::Resume,
            (true, _) => Rule::Resync,
            (false, _) => Rule::Full,
        };
    }
    if src.in_history(t) {
        return Rule::Full;
    }
    if tgt.in_history(src.current) {
        return Rule::Refuse(Refusal::TargetAhead);
    }
    Rule::Refuse(Refusal::Unrelated)
}

/// How the source brings a new target in line (`initial_sync`, a source
/// table option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialSync {
    /// Send every chunk (the default).
    #[default]
    Full,
    /// The target sends digests of its chunks; only chunks that differ
    /// cross the link.
    Checksum,
    /// The operator asserts both data devices are equal (two new zeroed
    /// devices): nothing is sent. dm-mirror's `nosync`.
    None,
}

/// What the source does after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPlan {
    /// Stream from the target's applied point; no sync.
    Stream,
    /// Send the chunks the bitmap marks, then stream.
    Dirty,
    /// Mark every chunk, then as `Dirty`.
    All,
    /// Compare digests of every chunk, send those that differ.
    Checksum,
    /// Take the target as equal without sending anything (operator's word).
    AssumeEqual,
    /// Do not connect.
    Refuse(Refusal),
}

/// The plan for `rule` under the source's initial sync mode. The mode only
/// changes how the sync of a new target runs (and `checksum` how a full
/// one runs); the operator's `none` never skips a stale target, and
/// nothing turns a resync or a refusal into something weaker.
pub fn plan(rule: Rule, mode: InitialSync) -> SyncPlan {
    match (rule, mode) {
        (Rule::Resume, _) => SyncPlan::Stream,
        (Rule::Resync, _) => SyncPlan::Dirty,
        (Rule::Initial, InitialSync::Full) => SyncPlan::All,
        (Rule::Initial, InitialSync::Checksum) => SyncPlan::Checksum,
        (Rule::Initial, InitialSync::None) => SyncPlan::AssumeEqual,
        (Rule::Full, InitialSync::Checksum) => SyncPlan::Checksum,
        (Rule::Full, _) => SyncPlan::All,
        (Rule::Refuse(r), _) => SyncPlan::Refuse(r),
    }
}

//! Planted bugs for the simulator's self-check (built only with the
//! userspace crate's `mutants` feature; the kernel module never has it).
//!
//! Each one puts back a wake-up bug the glue once had, or breaks an
//! ordering rule of the resync engine, so that the simulator can show it
//! finds it (`specmirror-sim mutants`).

/// Which bug is planted (`None`: the shipped code).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutant {
    /// The shipped code.
    #[default]
    None,
    /// The target's sender is woken for an ACK only when a device write
    /// completes, not when the applier passes LOCK / UNLOCK records: the
    /// final ACK may never go out (finding 1).
    LostFinalAck,
    /// Completions that a handshake makes possible are never taken: the
    /// worker ignores completions and the receiver takes them only after
    /// ACK frames (finding 2).
    NoCompletionAfterHandshake,
    /// The target's receiver, waiting for room in the commit log, is woken
    /// only by device completions (finding 3).
    ReceiverNotWoken,
    /// A device completion wakes the applier after dropping the state lock
    /// (finding 4: the device may be freed in between).
    NotifyAfterUnlock,
    /// 58a4cce: the target's sender is woken only from device completions,
    /// for whatever it has to send.
    ConditionalWakes,
    /// A deadline set by another context (a failed write's retry, a
    /// suspend's grace, a new connection's keepalive) does not wake the
    /// thread that watches it (found by this simulator, seeds 23, 168).
    NoRearm,
    /// Host writes to a piece that the resync engine is reading do not
    /// wait: one can get its record before the piece's, with bytes the
    /// read missed or half saw.
    ResyncNoBlock,
    /// The resync engine reads a piece while a host write to it has local
    /// I/O outstanding: the read may miss bytes of a write whose record
    /// comes before the piece's.
    ResyncNoLocalWait,
    /// The resync engine reads a chunk before its dirty bit is on the
    /// metadata device: a crash then forgets a sync under way.
    ReadBeforeSave,
    /// A stopping source does not mark the chunks of its unacknowledged
    /// records dirty: a reload (a new ring) loses them for the target.
    NoMarkAtStop,
    /// The source sends SYNC_DONE while chunks are still dirty: the
    /// target says consistent over an image the sync has not finished.
    SyncDoneEarly,
    /// The resync engine reads before SYNC_START is in the stream: the
    /// target applies resync pieces while it says consistent.
    NoSyncStart,
    /// Verify ignores a digest that differs: corruption on the target is
    /// never marked, and a checksum sync takes every chunk as equal.
    VerifyBlind,
    /// Host writes to a piece that verify is reading do not wait: the
    /// digest can describe bytes the stream order does not.
    VerifyNoBlock,
    /// Going degraded drops the unacknowledged records without marking
    /// their chunks dirty: the target never gets them.
    DegradeNoMark,
    /// The clocks of degraded mode are never checked: host writes wait
    /// for the link however long it is down.
    DegradeNever,
    /// After records were dropped the next HELLO keeps the old stream:
    /// the target, missing them, refuses it (`Diverged`) for good.
    DegradeSameStream,
    /// The pull-ahead clock does not start again at an accepted
    /// handshake: writes that waited for the link during the handshake
    /// degrade the source again soon after it reconnected (before 0.8.2
    /// the clock also ran on through degraded spells and every
    /// reconnection was followed at once by another one).
    DegradeStaleClock,
    /// The source frees ring records once the target applied them, not
    /// once it reported them durable: a power loss of the target loses
    /// what its volatile cache held, and nobody sends it again.
    FreeOnApplied,
    /// Host writes never wait for the activity log: a local write can
    /// begin before its region is on the metadata device, and a crash of
    /// the source forgets it.
    AlNoWait,
    /// The activity log lets a region go once the target made its writes
    /// durable, without a flush of the source's own data device: a power
    /// loss of the source loses writes the target keeps.
    AlEvictUnflushed,
    /// The activity log lets a region go once its writes are flushed
    /// locally, before the target made them durable: a crash of the
    /// source leaves the target without them.
    AlEvictUndurable,
    /// The sender does not stop at a reserved record whose payload is
    /// still being copied: it sends bytes that are not the record's yet.
    SendPending,
    /// The target's commit log lets a record whose payload the receiver
    /// is still copying be applied: the device gets the bytes the log
    /// held before.
    IssueUnfilled,
}

impl Mutant {
    /// Every planted bug.
    pub const ALL: [Mutant; 24] = [
        Mutant::LostFinalAck,
        Mutant::NoCompletionAfterHandshake,
        Mutant::ReceiverNotWoken,
        Mutant::NotifyAfterUnlock,
        Mutant::ConditionalWakes,
        Mutant::NoRearm,
        Mutant::ResyncNoBlock,
        Mutant::ResyncNoLocalWait,
        Mutant::ReadBeforeSave,
        Mutant::NoMarkAtStop,
        Mutant::SyncDoneEarly,
        Mutant::NoSyncStart,
        Mutant::VerifyBlind,
        Mutant::VerifyNoBlock,
        Mutant::DegradeNoMark,
        Mutant::DegradeNever,
        Mutant::DegradeSameStream,
        Mutant::DegradeStaleClock,
        Mutant::FreeOnApplied,
        Mutant::AlNoWait,
        Mutant::AlEvictUnflushed,
        Mutant::AlEvictUndurable,
        Mutant::SendPending,
        Mutant::IssueUnfilled,
    ];
}

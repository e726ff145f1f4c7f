//! The discrete-event simulation of two hosts, thread by thread.
//!
//! Each kernel thread of a role (the source's sender, worker and
//! per-connection receiver; the target's listener, receiver, applier,
//! sender and a waiting `lock` message) is an *actor* that runs the very
//! step functions the kernel glue runs, one step per event, and each
//! completion context (a local write ending, a device write ending, a
//! repair read ending) is an event of its own, so a completion can run
//! between any two steps of a thread. A sleeping actor runs again only
//! when the machine's `take_wakes` names it at the end of a critical
//! section, when its own timer fires, or on a random spurious wake-up (as
//! the kernel allows): a wake-up the machine forgets leaves it asleep.
//!
//! Checks, as it runs: I1 at quiesce, I2 and I4 at every applied record,
//! I3 after every event, that no sleeping thread has work it was not
//! woken for (a spurious wake-up that finds work is a lost wake-up), that
//! the bytes a send or a local write reads from the ring stay put until
//! it ends, that nothing touches a device after it was freed, and
//! liveness: once faults stop, everything completes in bounded time.

use std::collections::{BTreeMap, VecDeque};

use specmirror_core::log::commit::{IssueView, WindowSlot};
use specmirror_core::log::meta::bitmap::{self, Bitmap};
use specmirror_core::log::meta::generation::{Generations, InitialSync};
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::pages::{Pages, PAGE_SIZE};
use specmirror_core::log::record::{
    decode_frame, decode_header, Crc32c, DecodeError, Kind, FLAG_FUA, FLAG_PREFLUSH, HEADER_LEN, SECTOR_SIZE,
};
use specmirror_core::pair::gather;
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::inflight::{Completed, InflightSlot};
use specmirror_core::transport::proto::mutant::Mutant;
use specmirror_core::transport::proto::source::{
    self as src_m, HostOp, HostWrite, LinkState, RecvError, RxVerdict, SenderStep, Source,
    SourceConfig, Submit, SyncPhase, WorkerStep, DEFERRED_BATCH,
};
use specmirror_core::transport::proto::target::{
    self as tgt_m, Accept, ApplierStep, IoStatus, ListenerStep, LocalLock, LockReply, RxStep,
    copies_outside, RxVerdict as TRx, SenderStep as TStep, Target, TargetConfig, APPLY_BATCH, SEND_FRAMES,
};
use specmirror_core::transport::proto::wake::Wakes;
use specmirror_core::transport::proto::{
    Completion, Mode, CONNECT_TIMEOUT_MS, CONN_RANDOM, MAX_CONTROL_FRAME,
};
use specmirror_core::transport::table::Secret;

use crate::digest::digest;
use crate::queue::Queue;
use crate::check::{sector_pattern, Books, Failure, Hist, Violation, R};
use crate::net::{Net, TO_SOURCE, TO_TARGET};
use crate::params::{Params, GEN_VERSION};
use crate::rng::{mix, Rng};

pub use specmirror_core::vec_pages::VecPages;

/// CRC-32C through the `crc32c` crate (standard value, chained).
#[derive(Clone, Copy, Debug, Default)]
pub struct Crc;

impl Crc32c for Crc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }
}

type Src = Source<VecPages, Vec<HotSlot>, Vec<InflightSlot>>;
type Tgt = Target<VecPages, Vec<WindowSlot>, Vec<u32>, Vec<LockSlot>>;

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
const SEC: u64 = 1_000_000_000;
const SECT: usize = SECTOR_SIZE;

/// Liveness bound: once faults stop, something must complete at least
/// this often until quiesce.
const PROGRESS_BOUND: u64 = 40 * SEC;
/// Thread steps at one instant beyond which a thread is taken to spin.
const SPIN_BOUND: u64 = 100_000;
/// How much longer than `degrade_after` a host write may wait: the
/// worker's reaction, the local write, a metadata save (virtual time).
const DEGRADE_MARGIN: u64 = 20 * MS;

/// Summary of a passed run.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Host operations completed.
    pub ops: u64,
    /// Records appended.
    pub records: u64,
    /// Virtual time at quiesce (ns).
    pub end: u64,
    /// Resends.
    pub resends: u64,
    /// NAKs received by the source.
    pub naks: u64,
    /// LOCK_REJECTED received.
    pub rejections: u64,
    /// Reconnects.
    pub reconnects: u64,
    /// CRC errors seen by the target.
    pub crc_errors: u64,
    /// Target device errors.
    pub io_errors: u64,
    /// Events processed.
    pub events: u64,
    /// Stream LOCKs that met a local holder on the target.
    pub lock_conflicts: u64,
    /// Data records held back on the target for a local holder.
    pub local_waits: u64,
    /// Frames the target refused for lack of space (back-pressure).
    pub busy: u64,
    /// Host writes that had to wait on the source.
    pub waits: u64,
    /// Thread steps run.
    pub steps: u64,
    /// Wake-ups the machines asked for.
    pub wakes: u64,
    /// Repairs of failed local writes.
    pub repairs: u64,
    /// Peer timeouts (either side).
    pub peer_timeouts: u64,
    /// Host writes given up by suspends.
    pub abandoned: u64,
    /// Chunks the resync sent and the target acknowledged.
    pub resynced: u64,
    /// dm events raised for syncs that started or ended.
    pub sync_events: u64,
}

impl Outcome {
    /// Adds `o`'s counters to `self`.
    pub fn add(&mut self, o: &Outcome) {
        self.ops += o.ops;
        self.records += o.records;
        self.end += o.end;
        self.resends += o.resends;
        self.naks += o.naks;
        self.rejections += o.rejections;
        self.reconnects += o.reconnects;
        self.crc_errors += o.crc_errors;
        self.io_errors += o.io_errors;
        self.events += o.events;
        self.lock_conflicts += o.lock_conflicts;
        self.local_waits += o.local_waits;
        self.busy += o.busy;
        self.waits += o.waits;
        self.steps += o.steps;
        self.wakes += o.wakes;
        self.repairs += o.repairs;
        self.peer_timeouts += o.peer_timeouts;
        self.abandoned += o.abandoned;
        self.resynced += o.resynced;
        self.sync_events += o.sync_events;
    }
}

/// The actors (kernel threads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Actor {
    SrcSender,
    SrcWorker,
    SrcReceiver,
    TgtListener,
    TgtReceiver,
    TgtApplier,
    TgtSender,
    TgtLocker,
}

const ACTORS: usize = 8;

impl Actor {
    fn index(self) -> usize {
        self as usize
    }
}

/// An actor's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActState {
    /// Not running (its role is stopped, or it returned).
    Gone,
    /// A step is scheduled.
    Ready,
    /// Asleep on its wait queue, with a timer.
    Sleeping(Option<u64>),
    /// Blocked in I/O (connect, send, recv, accept, join).
    Blocked,
}

#[derive(Clone, Copy, Debug)]
struct ActorSlot {
    state: ActState,
    /// Bumped whenever its state changes: stale events are ignored.
    gen: u64,
    /// The connection it serves (receivers, a blocked sender).
    conn: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Step { a: Actor, gen: u64 },
    Spurious { a: Actor, gen: u64 },
    HostNext,
    LocalDone { seq: u64, epoch: u64 },
    /// The copy of reserved record `seq` into the ring ended (outside the
    /// lock, in the kernel): it is filled and published. `machine`: which
    /// source machine reserved it (a reload replaces the machine).
    Publish { seq: u64, machine: u64 },
    RepairReadDone { seq: u64, sector: u64, count: u64, epoch: u64 },
    /// The resync read of `sector..+count` ends.
    ResyncReadDone { sector: u64, count: u64 },
    /// The verify read of `count` sectors at `sector` ends.
    VerifyReadDone { sector: u64, count: u64 },
    /// An operator's verify of a random range.
    Verify,
    /// Chunks are marked dirty again.
    MarkDirty,
    /// The source table is reloaded.
    ReloadSource,
    /// The worker's write of bitmap block `block` ends.
    BitmapWritten { block: u64, ok: bool },
    /// The source's superblock write ended.
    GensWritten { ok: bool },
    /// The worker's flush of the source's data device ended (`mark`: the
    /// source cache's clock when it was issued).
    DataFlushed { ok: bool, mark: u64 },
    /// The source host loses power.
    SourceCrash,
    DevDone { seq: u64, ok: bool, epoch: u64 },
    /// The applier's flush for the durable point ended (`mark`: the
    /// volatile cache's clock when it was issued).
    FlushDone { upto: u64, mark: u64, ok: bool, epoch: u64 },
    /// A device completion's wake-ups, delivered after its lock was
    /// dropped (the `NotifyAfterUnlock` mutant only).
    LateNotify { wakes: u8, epoch: u64 },
    Arrive { conn: u64, dir: usize },
    ConnectDone { conn: u64, ok: bool },
    LinkDown,
    LinkUp,
    Drop,
    TargetRestart,
    TargetReload,
    SuspendSource,
    ResumeSource,
    LockerTry { id: usize },
    LockerRelease { id: usize },
    TargetRead,
    FaultsOff,
}

#[derive(Clone, Copy, Debug)]
struct HostReq {
    /// When the host submitted it.
    at: u64,
    /// `Sim::local_only` then.
    local_only: u64,
    wid: u64,
    op: HostOp,
    sector: u64,
    count: u32,
    flags: u16,
}

/// A record batch (or control frame) being sent by the source's sender:
/// the page pieces it reads and the bytes they held when it started.
struct Sending {
    conn: u64,
    netconn: u64,
    pieces: Vec<(usize, usize, usize)>,
    bytes: Vec<u8>,
    frames: Vec<Vec<u8>>,
}

/// The simulation state.
pub struct Sim {
    seed: u64,
    mode: Mode,
    p: Params,
    mutant: Mutant,
    verbose: bool,
    now: u64,
    order: u64,
    events: u64,
    q: Queue<Ev>,
    /// The target sender's frame buffer, kept between steps (its contents
    /// never matter: `poll_sender` writes what it returns).
    tgt_frames: Vec<u8>,
    rng: Rng,
    c: Crc,
    src: Src,
    tgt: Tgt,
    tcfg: TargetConfig,
    books: Books,
    actors: [ActorSlot; ACTORS],
    net: Net,
    // ---- source glue
    /// Host writes parked by the source (the deferred bio list).
    deferred: VecDeque<HostReq>,
    /// Accepted host writes, by seq: the request and whether the local
    /// write ended.
    accepted: BTreeMap<u64, HostReq>,
    /// When each host write in flight was submitted, and `local_only`
    /// then (degraded mode's bound on the wait).
    submitted: BTreeMap<u64, (u64, u64)>,
    /// The source stream the books last saw (`sync_drops`).
    books_stream: u64,
    /// The books' history id of the current source's seq 0: a source
    /// that starts again at seq 1 (generator 16) continues the history.
    src_base: u64,
    /// The history id of seq 0 of each stream a source announced (its
    /// table's and those degraded mode began): what the target applies
    /// belongs to the stream it accepted.
    stream_base: BTreeMap<u64, u64>,
    /// Virtual time spent with the source degraded and completing writes
    /// locally: a write's wait then is the local device's, not the
    /// link's, and I7 does not count it.
    local_only: u64,
    /// Times the source went degraded, as last seen (`check_degrade_cause`).
    degrades_seen: u64,
    /// Submission times of the oldest parked host write and of the oldest
    /// accepted one, before the event being handled.
    oldest_waits: (Option<u64>, Option<u64>),
    /// Since when the source has had no accepted connection (`None`:
    /// streaming), as last seen.
    down_since: Option<u64>,
    /// When the source's last accepted handshake was (or its start).
    accepted_at: u64,
    /// Since when the deferred list has been non-empty with a write in it
    /// that waited for the link (ring room, in-flight slots).
    link_parked_since: Option<u64>,
    /// The source's current connection: (machine conn, network conn).
    s_conn: Option<(u64, u64)>,
    /// Connect in progress: (machine conn, network conn).
    s_connecting: Option<(u64, u64)>,
    /// What the sender is sending.
    sending: Option<Sending>,
    /// Repair read buffer: (seq, bytes).
    repair_buf: Option<(u64, Vec<u8>)>,
    /// Reserved records being copied: what each one's payload is.
    unpublished: BTreeMap<u64, Unpub>,
    /// Source machines built so far (a reload or crash builds a new one).
    src_machine: u64,
    /// Resync read buffer: (sector, bytes as the read started).
    resync_buf: Option<(u64, Vec<u8>)>,
    /// The piece the verify engine reads (first sector, bytes).
    verify_buf: Option<(u64, Vec<u8>)>,
    /// A verify of the whole device is due once the source runs.
    verify_at_start: bool,
    /// Applier `Issue` steps in a row that issued nothing.
    empty_issues: u64,
    /// The piece verify holds: from its read's start until its request
    /// is appended, no host write to it may be accepted.
    verify_piece: Option<(u64, u64)>,
    /// The source's metadata device: its bitmap blocks.
    meta_bitmap: Vec<[u8; PAGE_SIZE]>,
    /// The block the worker is writing.
    meta_write: Option<[u8; PAGE_SIZE]>,
    /// The block `meta_write` goes to.
    meta_write_block: u64,
    /// Host flushes and PREFLUSH writes accepted: the source cache's clock
    /// then (what their flush covers).
    src_flush_marks: BTreeMap<u64, u64>,
    /// The source's superblock as its metadata device holds it.
    src_sb: Generations,
    /// The superblock the source's worker is writing.
    gens_write: Option<Generations>,
    /// The target's superblock as its metadata device holds it
    /// (generations, consistent).
    tgt_sb: (Generations, bool),
    /// `sync_rate`: time of the first resync read and bytes read since.
    rate_books: Option<(u64, u64)>,
    /// The suspend under way ends in a new table (a source reload).
    reloading: bool,
    /// Source configuration (a reload changes its generation).
    scfg: SourceConfig,
    /// Source incarnation (local writes of a stopped source still end).
    src_epoch: u64,
    src_running: bool,
    suspending: Option<u64>,
    host_paused: bool,
    // ---- target glue
    /// The target's connection: (machine conn, network conn).
    t_conn: Option<(u64, u64)>,
    /// Connections waiting in the listen backlog.
    backlog: VecDeque<u64>,
    /// Frame the target's receiver holds under back-pressure.
    t_kept: Option<Vec<u8>>,
    /// The record whose payload the target's receiver copies into the
    /// commit log outside the lock (generator 17), and that payload.
    t_filling: Option<(u64, Vec<u8>)>,
    dev_ops: BTreeMap<u64, IssueView>,
    reads: VecDeque<(u64, u64)>,
    tgt_epoch: u64,
    /// Flushing device operations in flight (FLUSH records, PREFLUSH
    /// writes, SYNC_DONE): the volatile cache's clock at their issue.
    flush_marks: BTreeMap<u64, u64>,
    /// Target sleepers whose wake-up is on its way (`NotifyAfterUnlock`).
    notify_pending: u8,
    /// Target incarnations freed by a reload (their memory gone).
    freed: std::collections::BTreeSet<u64>,
    tgt_running: bool,
    tgt_reloading: bool,
    lockers: Vec<Option<(u64, u64)>>,
    locker_waiting: Option<(usize, u64, u64)>,
    // ---- host and faults
    next_wid: u64,
    issued: u64,
    completed: u64,
    /// Host bios inside the source (accepted or parked, not completed).
    dm_inflight: u64,
    seq_cursor: u64,
    link_up: bool,
    faults_on: bool,
    last_progress: u64,
    /// Thread steps at the current instant: (instant, steps).
    spin: (u64, u64),
    outcome: Outcome,
}

impl Sim {
    /// Builds the simulation for `seed` in `mode` (parameter generator
    /// version `gen`) with the planted bug `mutant`.
    pub fn new(seed: u64, mode: Mode, gen: u32, mutant: Mutant, verbose: bool) -> Sim {
        let p = Params::from_seed(seed, gen);
        let secret = p.secret.then(|| Secret::new(b"sim-secret").expect("valid secret"));
        let scfg = SourceConfig {
            region_sectors: p.region_sectors,
            mode,
            completion: p.completion,
            dev_sectors: p.dev_sectors,
            generation: mix(seed, 7) | 1,
            secret,
        };
        let tcfg = TargetConfig {
            region_sectors: p.region_sectors,
            dev_sectors: p.dev_sectors,
            ack_every: p.ack_every,
            secret,
        };
        let mut src = new_source(scfg, &p, mutant, 1);
        let mut tgt = new_target(tcfg, &p, mutant);
        let mut books = Books::new(seed, p.dev_sectors);
        books.volatile = p.volatile_cache;
        books.src_volatile = p.src_volatile;
        presync(seed, &p, &mut src, &mut books);
        // Formatted superblocks: the source at a random generation, the
        // target new or consistent at the source's.
        let src_sb = Generations { current: mix(seed, 0x6E6E) | 1, ..Default::default() };
        let tgt_sb = if p.target_new { (Generations::default(), false) } else { (src_sb, true) };
        if p.gens {
            src.attach_generations(src_sb, initial_mode(&p));
            tgt.attach_generations(tgt_sb.0, tgt_sb.1);
        }
        let meta_blocks = src.bitmap().map_or(0, |b| bitmap::blocks_for(b.chunks()) as usize);
        // The metadata device holds the starting bits (from generator 15;
        // before, a crash never came before the first save).
        let mut meta_bitmap = vec![[0u8; PAGE_SIZE]; meta_blocks];
        if p.al_regions > 0 {
            for (i, page) in meta_bitmap.iter_mut().enumerate() {
                for off in (0..bitmap::BITS_BYTES).step_by(510) {
                    let n = 510.min(bitmap::BITS_BYTES - off);
                    src.bitmap_copy(i as u64, off, &mut page[bitmap::HEADER_LEN + off..][..n]);
                }
                bitmap::seal_block(i as u64, page, &Crc);
            }
        }
        let lockers = vec![None; p.lockers];
        Sim {
            seed,
            mode,
            mutant,
            verbose,
            now: 0,
            order: 0,
            events: 0,
            q: Queue::default(),
            tgt_frames: vec![0u8; SEND_FRAMES * MAX_CONTROL_FRAME],
            rng: Rng::new(mix(seed, 0xA11CE)),
            c: Crc,
            src,
            tgt,
            tcfg,
            books,
            actors: [ActorSlot {
                state: ActState::Gone,
                gen: 0,
                conn: 0,
            }; ACTORS],
            net: Net::default(),
            deferred: VecDeque::new(),
            accepted: BTreeMap::new(),
            submitted: BTreeMap::new(),
            books_stream: 0,
            src_base: 0,
            stream_base: BTreeMap::new(),
            local_only: 0,
            degrades_seen: 0,
            oldest_waits: (None, None),
            down_since: Some(0),
            accepted_at: 0,
            link_parked_since: None,
            s_conn: None,
            s_connecting: None,
            sending: None,
            repair_buf: None,
            unpublished: BTreeMap::new(),
            src_machine: 0,
            resync_buf: None,
            verify_buf: None,
            verify_at_start: false,
            empty_issues: 0,
            verify_piece: None,
            meta_bitmap,
            meta_write: None,
            meta_write_block: 0,
            src_flush_marks: BTreeMap::new(),
            src_sb,
            gens_write: None,
            tgt_sb,
            rate_books: None,
            reloading: false,
            scfg,
            src_epoch: 0,
            src_running: false,
            suspending: None,
            host_paused: false,
            t_conn: None,
            backlog: VecDeque::new(),
            t_kept: None,
            t_filling: None,
            dev_ops: BTreeMap::new(),
            reads: VecDeque::new(),
            tgt_epoch: 0,
            flush_marks: BTreeMap::new(),
            freed: std::collections::BTreeSet::new(),
            notify_pending: 0,
            tgt_running: false,
            tgt_reloading: false,
            lockers,
            locker_waiting: None,
            next_wid: 1,
            issued: 0,
            completed: 0,
            dm_inflight: 0,
            seq_cursor: 0,
            link_up: true,
            faults_on: true,
            last_progress: 0,
            spin: (0, 0),
            outcome: Outcome::default(),
            p,
        }
    }

    fn at(&mut self, t: u64, e: Ev) {
        self.order += 1;
        self.q.push(t, self.order, e);
    }

    fn log(&self, msg: impl FnOnce() -> String) {
        if self.verbose {
            println!("[{:>12.6} ms] {}", self.now as f64 / MS as f64, msg());
        }
    }

    /// A little CPU time: how long a thread step or a context takes.
    fn cpu(&mut self) -> u64 {
        self.rng.range(US, 20 * US)
    }

    // ------------------------------------------------------------ actors

    fn schedule(&mut self, a: Actor, delay: u64) {
        let s = &mut self.actors[a.index()];
        s.state = ActState::Ready;
        s.gen += 1;
        let gen = s.gen;
        self.at(self.now + delay, Ev::Step { a, gen });
    }

    fn sleep(&mut self, a: Actor, until: Option<u64>) {
        let s = &mut self.actors[a.index()];
        s.state = ActState::Sleeping(until);
        s.gen += 1;
        let gen = s.gen;
        if let Some(t) = until {
            self.at(t.max(self.now), Ev::Step { a, gen });
        }
        if let Some(mean) = SEC.checked_div(self.p.spurious_hz) {
            let t = self.now + self.rng.range(1, 2 * mean);
            self.at(t, Ev::Spurious { a, gen });
        }
    }

    fn block(&mut self, a: Actor) {
        let s = &mut self.actors[a.index()];
        s.state = ActState::Blocked;
        s.gen += 1;
    }

    fn gone(&mut self, a: Actor) {
        let s = &mut self.actors[a.index()];
        s.state = ActState::Gone;
        s.gen += 1;
    }

    fn unblock(&mut self, a: Actor) {
        if self.actors[a.index()].state == ActState::Blocked {
            let d = self.cpu();
            self.schedule(a, d);
        }
    }

    /// Delivers wake-ups: an actor asleep starts again after a moment.
    fn deliver(&mut self, w: Wakes, target: bool) {
        for i in w.iter() {
            let a = match (target, i) {
                (false, src_m::SENDER) => Actor::SrcSender,
                (false, src_m::WORKER) => Actor::SrcWorker,
                (true, tgt_m::RECEIVER) => Actor::TgtReceiver,
                (true, tgt_m::APPLIER) => Actor::TgtApplier,
                (true, tgt_m::SENDER) => Actor::TgtSender,
                (true, tgt_m::LISTENER) => Actor::TgtListener,
                (true, tgt_m::LOCKER) => Actor::TgtLocker,
                _ => continue,
            };
            self.outcome.wakes += 1;
            self.log(|| format!("wake {a:?} ({:?})", self.actors[a.index()].state));
            if let ActState::Sleeping(_) = self.actors[a.index()].state {
                let d = self.rng.range(US, 50 * US);
                self.schedule(a, d);
            }
        }
    }

    /// End of a source critical section.
    fn src_wakes(&mut self) {
        let w = self.src.take_wakes();
        self.deliver(w, false);
    }

    /// End of a target critical section.
    fn tgt_wakes(&mut self) {
        let w = self.tgt.take_wakes();
        self.deliver(w, true);
    }

    /// The lost-wake-up check: every actor asleep without a due timer is
    /// woken spuriously (legal in the kernel) and must find nothing to do.
    fn check_sleepers(&mut self) -> R<()> {
        for a in [
            Actor::SrcSender,
            Actor::SrcWorker,
            Actor::TgtReceiver,
            Actor::TgtApplier,
            Actor::TgtSender,
            Actor::TgtLocker,
        ] {
            let ActState::Sleeping(until) = self.actors[a.index()].state else {
                continue;
            };
            if until.is_some_and(|t| t <= self.now) {
                continue;
            }
            let sleeper = match a {
                Actor::TgtReceiver => Some(tgt_m::RECEIVER),
                Actor::TgtApplier => Some(tgt_m::APPLIER),
                Actor::TgtSender => Some(tgt_m::SENDER),
                Actor::TgtLocker => Some(tgt_m::LOCKER),
                _ => None,
            };
            if sleeper.is_some_and(|i| self.notify_pending & (1 << i) != 0) {
                // Its wake-up is on the way.
                continue;
            }
            let now = self.now;
            let work: Option<String> = match a {
                Actor::SrcSender => match self.src.poll_sender(&self.c, now) {
                    SenderStep::Sleep { .. } => None,
                    s => Some(format!("{s:?}")),
                },
                Actor::SrcWorker => match self.src.poll_worker(now) {
                    WorkerStep::Sleep { .. } => None,
                    s => Some(format!("{s:?}")),
                },
                Actor::TgtReceiver => match self.tgt.poll_receiver() {
                    RxStep::Sleep => None,
                    s => Some(format!("{s:?}")),
                },
                Actor::TgtApplier => match self.tgt.poll_applier(now) {
                    ApplierStep::Sleep { .. } => None,
                    s => Some(format!("{s:?}")),
                },
                Actor::TgtSender => match self.tgt.poll_sender(&self.c, now, &mut self.tgt_frames) {
                    TStep::Sleep { .. } => None,
                    s => Some(format!("{s:?}")),
                },
                Actor::TgtLocker => match self.tgt.lock_poll(now) {
                    LockReply::Wait { .. } => None,
                    s => Some(format!("{s:?}")),
                },
                _ => None,
            };
            if let Some(w) = work {
                return Err(Violation::Liveness(format!(
                    "lost wake-up: {a:?} asleep (timer {until:?}) while it had work: {w}"
                )));
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- run

    /// Runs to quiesce or failure.
    pub fn run(mut self) -> Result<Outcome, Failure> {
        match self.run_inner() {
            Ok(()) => {
                let s = *self.src.stats();
                let t = *self.tgt.stats();
                let o = &mut self.outcome;
                o.ops = self.completed;
                o.records = self.src.ring().next_seq() - 1;
                o.end = self.now;
                o.resends = s.resends;
                o.naks = s.naks;
                o.rejections = s.lock_rejections;
                o.reconnects = s.reconnects;
                o.crc_errors = t.crc_errors;
                o.io_errors = t.io_errors;
                o.events = self.events;
                o.lock_conflicts = t.lock_conflicts;
                o.local_waits = t.local_waits;
                o.busy = t.busy;
                o.waits = s.waits;
                o.repairs = s.repairs;
                o.peer_timeouts = s.peer_timeouts + t.peer_timeouts;
                o.abandoned = s.abandoned;
                o.resynced = self.src.resync_stats().map_or(0, |r| r.cleared);
                Ok(self.outcome)
            }
            Err(v) => Err(Failure {
                seed: self.seed,
                mode: self.mode,
                violation: v,
                at: self.now,
            }),
        }
    }

    /// Starts the whole-device verify that corruption asked for, once the
    /// source runs.
    fn start_verify_if_running(&mut self) {
        if self.verify_at_start && self.src_running && self.suspending.is_none() {
            self.verify_at_start = false;
            let _ = self.src.verify(0, self.p.dev_sectors);
            self.src_wakes();
        }
    }

    fn start_source(&mut self) {
        self.src.start(self.now);
        self.src_running = true;
        self.start_verify_if_running();
        for a in [Actor::SrcSender, Actor::SrcWorker] {
            let d = self.cpu();
            self.schedule(a, d);
        }
    }

    fn start_target(&mut self) {
        self.tgt.start();
        self.tgt_running = true;
        for a in [Actor::TgtListener, Actor::TgtApplier, Actor::TgtSender] {
            let d = self.cpu();
            self.schedule(a, d);
        }
    }

    fn run_inner(&mut self) -> R<()> {
        self.start_target();
        self.start_source();
        for i in 0..self.p.qd {
            self.at(i as u64 * US, Ev::HostNext);
        }
        for (s, e) in self.p.downs.clone() {
            self.at(s, Ev::LinkDown);
            self.at(e, Ev::LinkUp);
        }
        for t in self.p.drops.clone() {
            self.at(t, Ev::Drop);
        }
        for t in self.p.restarts.clone() {
            self.at(t, Ev::TargetRestart);
        }
        for t in self.p.reloads.clone() {
            self.at(t, Ev::TargetReload);
        }
        for t in self.p.suspends.clone() {
            self.at(t, Ev::SuspendSource);
        }
        for t in self.p.verifies.clone() {
            self.at(t, Ev::Verify);
        }
        for t in self.p.marks.clone() {
            self.at(t, Ev::MarkDirty);
        }
        for t in self.p.src_reloads.clone() {
            self.at(t, Ev::ReloadSource);
        }
        for t in self.p.src_crashes.clone() {
            self.at(t, Ev::SourceCrash);
        }
        for id in 0..self.p.lockers {
            let t = self.rng.range(0, self.p.faults_end);
            self.at(t, Ev::LockerTry { id });
        }
        if self.p.p_tgt_read > 0 {
            let t = self.rng.range(0, 10 * MS);
            self.at(t, Ev::TargetRead);
        }
        let end = self.p.faults_end.max(self.p.stalls.iter().map(|s| s.1).max().unwrap_or(0));
        self.at(end, Ev::FaultsOff);
        loop {
            self.sync_drops();
            self.check_i3()?;
            if self.quiesced() {
                self.check_meta_clean()?;
                self.check_gens_quiesced()?;
                return self.books.check_i1();
            }
            let Some((t, ev)) = self.q.pop() else {
                return Err(Violation::Liveness(format!("deadlock: nothing left to happen; {}", self.state())));
            };
            if t > self.now {
                self.check_sleepers()?;
                if self.src.completes_locally() {
                    self.local_only += t - self.now;
                }
                self.now = t;
            }
            self.events += 1;
            if !self.faults_on && self.now > self.last_progress + PROGRESS_BOUND {
                return Err(Violation::Liveness(format!(
                    "no progress for {} s after faults stopped: {}",
                    PROGRESS_BOUND / SEC,
                    self.state()
                )));
            }
            if let Some(since) = self.suspending {
                if self.now > since + 3 * src_m::SUSPEND_GRACE + 5 * SEC {
                    return Err(Violation::Liveness(format!("source suspend never ended: {}", self.state())));
                }
            }
            if ev_debug() {
                let (a, d, hc) = (self.src.acked_seq(), self.src.durable_seq(), self.src.has_completions());
                self.log(|| format!("ev {ev:?} acked {a} durable {d} completions {hc}"));
            }
            // The oldest waiting host writes before the event: one that
            // degrades completes them (host writes are accepted, hence
            // numbered, in the order they came).
            self.oldest_waits = (
                self.deferred.front().map(|r| r.at),
                self.submitted.first_key_value().map(|(_, &(at, _))| at),
            );
            self.handle(ev)?;
            self.check_degrade_cause()?;
        }
    }

    /// Degraded mode has a cause: the source goes degraded only when, for
    /// about `degrade_after`, the link has been down, a host write has
    /// waited (the parked clock may start up to an eighth of it before
    /// the oldest parked write: `parked.rs`), or host writes have been
    /// parked without a break since the last accepted handshake and
    /// since one of them waited for the link (pull-ahead). A clock left
    /// running from before a reconnection would degrade the source again
    /// at once, and its resync would never run. The values are those from before the event (one that
    /// degrades completes the waiting writes).
    fn check_degrade_cause(&mut self) -> R<()> {
        let n = self.src.degrade_count();
        if n > self.degrades_seen {
            self.degrades_seen = n;
            if let Some(after) = self.p.degrade_after {
                let need = after - after / 8;
                let down = self.down_since.map_or(0, |t| self.now - t);
                let parked = self.oldest_waits.0.map_or(0, |at| self.now - at);
                let waiting = self.oldest_waits.1.map_or(0, |at| self.now - at);
                let busy = self.link_parked_since.map_or(0, |t| self.now - t.max(self.accepted_at));
                if down < need && parked < need && waiting < need && busy < after {
                    return Err(Violation::Protocol(format!(
                        "degraded without cause: degrade_after {} ms, link down {} ms, oldest parked write {} ms, oldest write in flight {} ms, writes parked {} ms since the handshake; {}",
                        after / MS,
                        down / MS,
                        parked / MS,
                        waiting / MS,
                        busy / MS,
                        self.state()
                    )));
                }
            }
        }
        if self.src.link_state() == LinkState::Connected {
            if self.down_since.is_some() {
                self.accepted_at = self.now;
            }
            self.down_since = None;
        } else if self.down_since.is_none() {
            self.down_since = Some(self.now);
        }
        if self.deferred.is_empty() {
            self.link_parked_since = None;
        }
        Ok(())
    }

    /// A host write was parked, or parked again, waiting for `why`.
    fn link_wait(&mut self, why: src_m::WaitReason) {
        use src_m::WaitReason as W;
        if self.link_parked_since.is_none() && matches!(why, W::RingFull | W::InflightFull) {
            self.link_parked_since = Some(self.now);
        }
    }

    fn state(&self) -> String {
        format!(
            "{} of {} ops done ({} in the source, {} deferred, machine says {}, inflight {} repair {:?} completions {}), ring {} records (send {} acked {}), log {} records (applied {}), link {:?}, held {}, actors {:?}, resync {:?}, gens {:?}, verify {:?}, target gens {:?}",
            self.completed,
            self.p.ops,
            self.dm_inflight,
            self.deferred.len(),
            self.src.deferred_len(),
            self.src.inflight_len(),
            self.src.next_repair(),
            self.src.has_completions(),
            self.src.ring().len_records(),
            self.src.ring().send_seq(),
            self.src.acked_seq(),
            self.tgt.commit_log().len_records(),
            self.tgt.applied_seq(),
            self.src.link_state(),
            self.src.is_held(),
            self.actors.iter().map(|a| a.state).collect::<Vec<_>>(),
            self.src.resync_stats(),
            self.src.gen_status(),
            self.src.verify_stats(),
            self.tgt.generations(),
        )
    }

    fn quiesced(&self) -> bool {
        !self.faults_on
            && self.completed == self.p.ops
            && self.dm_inflight == 0
            && self.src.is_idle()
            && !self.src.is_syncing()
            && self.src.bitmap_is_saved()
            && self.gens_settled()
            && !self.src.verify_stats().is_some_and(|v| v.running)
            && !self.verify_at_start
            && self.tgt.commit_log().is_empty()
            && self.dev_ops.is_empty()
            && self.lockers.iter().all(|l| l.is_none())
            && self.locker_waiting.is_none()
            && self.suspending.is_none()
            && self.src_running
            && self.tgt_running
            && !self.tgt_reloading
    }

    /// With generations: the sync was announced as ended, acknowledged,
    /// and the source's tracking ended (the superblock saved).
    fn gens_settled(&self) -> bool {
        // With generations the link must be up too (I1's "link up"): a
        // target that came back with blank metadata is only found, and
        // synced, by the next handshake (gen 12 seed 2003828).
        !self.p.gens
            || (self.src.link_state() == src_m::LinkState::Connected
                && self.src.gen_status().is_some_and(|g| g.phase == SyncPhase::Idle && g.saved && g.gens.bitmap == 0))
    }

    /// At quiesce both superblocks say the pair is in sync: the target
    /// consistent at the source's current generation (I8, I9).
    fn check_gens_quiesced(&self) -> R<()> {
        if !self.p.gens {
            return Ok(());
        }
        let src = self.src.gen_status().map(|g| g.gens).unwrap_or_default();
        if self.src_sb != src {
            return Err(Violation::Protocol(format!(
                "the source's superblock holds {:?}, memory {src:?}",
                self.src_sb
            )));
        }
        if self.tgt_sb != (src, true) && !(self.tgt_sb.1 && self.tgt_sb.0.current == src.current) {
            return Err(Violation::Protocol(format!(
                "at quiesce the target's superblock says {:?}, the source is at {src:?}",
                self.tgt_sb
            )));
        }
        if self.tgt.generations() != self.tgt_sb {
            return Err(Violation::Protocol(format!(
                "the target's memory says {:?}, its superblock {:?}",
                self.tgt.generations(),
                self.tgt_sb
            )));
        }
        Ok(())
    }

    /// At quiesce the metadata device's bitmap is whole and clean: the
    /// sync's end was saved.
    fn check_meta_clean(&self) -> R<()> {
        for (i, b) in self.meta_bitmap.iter().enumerate() {
            let mut bits = vec![0u8; bitmap::BITS_BYTES];
            match bitmap::decode_block(i as u64, b, &mut bits, &self.c) {
                bitmap::BlockState::Damaged => {
                    return Err(Violation::Protocol(format!("bitmap block {i} on the metadata device is damaged")));
                }
                _ => {
                    // Set bits belong to the activity log's regions only.
                    let cpb = bitmap::CHUNKS_PER_BLOCK;
                    for (j, &x) in bits.iter().enumerate() {
                        for k in 0..8 {
                            let c = i as u64 * cpb + j as u64 * 8 + k;
                            if x & (1 << k) != 0 && !self.src.activity_log_has_chunk(c) {
                                return Err(Violation::Protocol(format!(
                                    "the metadata device still marks chunk {c} (block {i}) dirty after the sync"
                                )));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn in_windows(&self, w: &[(u64, u64)]) -> bool {
        self.faults_on && w.iter().any(|&(s, e)| self.now >= s && self.now < e)
    }

    /// The history id of the current source's `seq`.
    fn sg(&self, seq: u64) -> u64 {
        self.src_base + seq
    }

    /// The history id of `seq` of the stream the target is on.
    fn tg(&self, seq: u64) -> u64 {
        self.stream_base.get(&self.tgt.generation()).copied().unwrap_or(0) + seq
    }

    /// Remembers the stream the source announces now.
    fn note_stream(&mut self) {
        self.stream_base.entry(self.src.stream_generation()).or_insert(self.src_base);
    }

    fn check_i3(&self) -> R<()> {
        let r = self.src.ring();
        let freed = r.oldest_seq().unwrap_or(r.next_seq()) - 1;
        // (A new target knows nothing until the next handshake.)
        // (Nor does a target still on a reloaded source's old stream.)
        let applied = (self.tgt.generation() == self.src.stream_generation()).then(|| self.tg(self.tgt.applied_seq()));
        // Records dropped in degraded mode leave unapplied (their chunks
        // are dirty; `sync_drops` took them out of the books).
        let applied = applied.filter(|_| freed > self.src.dropped_upto());
        self.books.check_i3(self.sg(freed), applied)
    }

    /// Degraded mode dropped records from the stream: the books treat
    /// them as a reload treats the old ring's (never to arrive, their
    /// sectors stale until written again).
    fn sync_drops(&mut self) {
        let d = self.src.dropped_upto();
        if d > 0 && self.sg(d) >= self.books.floor {
            let applied = if self.tgt.generation() == self.books_stream { self.tg(self.tgt.applied_seq()) } else { 0 };
            self.log(|| format!("degraded: records up to {d} dropped"));
            self.books.source_reloaded(self.sg(d) + 1, applied);
        }
        self.books_stream = self.src.stream_generation();
    }

    fn handle(&mut self, ev: Ev) -> R<()> {
        match ev {
            Ev::Step { a, gen } => {
                let s = self.actors[a.index()];
                if s.gen != gen || matches!(s.state, ActState::Gone | ActState::Blocked) {
                    return Ok(());
                }
                self.outcome.steps += 1;
                // A thread that steps again and again without time
                // moving spins (a timer in the past that its step never
                // acts on, say).
                if self.now == self.spin.0 {
                    self.spin.1 += 1;
                    if self.spin.1 > SPIN_BOUND {
                        return Err(Violation::Liveness(format!(
                            "{a:?} spins: {SPIN_BOUND} steps without time moving; {}",
                            self.state()
                        )));
                    }
                } else {
                    self.spin = (self.now, 0);
                }
                self.log(|| format!("step {a:?}"));
                self.step(a)
            }
            Ev::Spurious { a, gen } => {
                let s = self.actors[a.index()];
                if s.gen == gen && matches!(s.state, ActState::Sleeping(_)) {
                    let d = self.cpu();
                    self.schedule(a, d);
                }
                Ok(())
            }
            Ev::HostNext => self.host_next(),
            Ev::LocalDone { seq, epoch } => self.local_done(seq, epoch),
            Ev::Publish { seq, machine } => self.publish(seq, machine),
            Ev::RepairReadDone { seq, sector, count, epoch: _ } => {
                // (A read ends even when its source stopped meanwhile: the
                // worker waits for it before it returns.)
                let bytes = self.books.src_bytes(sector, count);
                self.repair_buf = Some((seq, bytes));
                self.src.repair_read_done(seq, true);
                self.src_wakes();
                Ok(())
            }
            Ev::ResyncReadDone { sector, count } => {
                // (Ends even when its source stopped meanwhile: the worker
                // waits for it before it returns.)
                let now = self.books.src_bytes(sector, count);
                if self.resync_buf.as_ref().is_some_and(|b| b.0 == sector && b.1 != now) {
                    return Err(Violation::Protocol(format!(
                        "a host write reached {sector}+{count} while the resync read it"
                    )));
                }
                let ok = !self.in_windows(&self.p.src_fails);
                self.src.resync_read_ended(ok);
                self.src_wakes();
                Ok(())
            }
            Ev::VerifyReadDone { sector, count } => {
                let now = self.books.src_bytes(sector, count);
                if self.verify_buf.as_ref().is_some_and(|b| b.0 == sector && b.1 != now) {
                    return Err(Violation::Protocol(format!(
                        "a host write reached {sector}+{count} while verify read it"
                    )));
                }
                let ok = !self.in_windows(&self.p.src_fails);
                self.src.verify_read_ended(ok);
                self.src_wakes();
                Ok(())
            }
            Ev::Verify => {
                let n = self.rng.range(1, self.p.dev_sectors);
                let first = self.rng.below(self.p.dev_sectors - n + 1);
                self.log(|| format!("verify {first}+{n}"));
                if self.src_running {
                    let _ = self.src.verify(first, n);
                    self.src_wakes();
                }
                Ok(())
            }
            Ev::MarkDirty => {
                let chunks = self.p.dev_sectors.div_ceil(u64::from(self.p.chunk_sectors));
                let first = self.rng.below(chunks);
                let last = first + self.rng.below(8);
                self.log(|| format!("chunks {first}..={last} marked dirty"));
                self.src.mark_dirty(first, last);
                self.src_wakes();
                Ok(())
            }
            Ev::GensWritten { ok } => {
                if let (true, Some(g)) = (ok, self.gens_write.take()) {
                    self.src_sb = g;
                }
                self.gens_write = None;
                self.src.gens_saved(ok, self.now);
                self.src_wakes();
                let d = self.cpu();
                self.schedule(Actor::SrcWorker, d);
                Ok(())
            }
            Ev::DataFlushed { ok, mark } => {
                if ok {
                    self.books.src_cache_flushed(mark);
                }
                self.src.data_flushed(ok, self.now);
                self.src_wakes();
                let d = self.cpu();
                self.schedule(Actor::SrcWorker, d);
                Ok(())
            }
            Ev::SourceCrash => self.source_crash(),
            Ev::BitmapWritten { block, ok } => {
                // The worker slept in the write; the block lands only if
                // it succeeded.
                if let (true, Some(data)) = (ok, self.meta_write.take()) {
                    self.meta_bitmap[block as usize] = data;
                }
                self.meta_write = None;
                self.src.bitmap_saved(block, ok, self.now);
                self.src_wakes();
                let d = self.cpu();
                self.schedule(Actor::SrcWorker, d);
                Ok(())
            }
            Ev::DevDone { seq, ok, epoch } => self.dev_done(seq, ok, epoch),
            Ev::FlushDone { upto, mark, ok, epoch } => {
                if epoch != self.tgt_epoch {
                    return Ok(());
                }
                if ok {
                    self.books.cache_flushed(mark);
                }
                self.log(|| format!("target flush up to {upto} done ({ok})"));
                self.tgt.flush_done(upto, ok, self.now);
                let w = self.tgt.take_wakes();
                self.notify(w);
                self.maybe_tgt_stopped();
                Ok(())
            }
            Ev::LateNotify { wakes, epoch } => {
                if self.freed.contains(&epoch) {
                    return Err(Violation::Protocol(format!(
                        "use after free: a device completion of target incarnation {epoch} woke its threads after the target was freed"
                    )));
                }
                if epoch == self.tgt_epoch {
                    self.notify_pending &= !wakes;
                    let w = wakes_from_bits(wakes);
                    self.deliver(w, true);
                }
                Ok(())
            }
            Ev::Arrive { conn, dir } => self.arrive(conn, dir),
            Ev::ConnectDone { conn, ok } => self.connect_done(conn, ok),
            Ev::LinkDown => {
                self.link_up = false;
                self.log(|| "link down: connections reset".into());
                let ids: Vec<u64> = self.net.conns.keys().copied().collect();
                for id in ids {
                    self.break_conn(id);
                }
                Ok(())
            }
            Ev::Drop => {
                if let Some((_, nc)) = self.s_conn {
                    self.log(|| "connection reset".into());
                    self.break_conn(nc);
                }
                Ok(())
            }
            Ev::LinkUp => {
                self.link_up = !self.in_windows(&self.p.downs.clone());
                Ok(())
            }
            Ev::TargetRestart => self.target_restart(),
            Ev::TargetReload => self.target_reload(),
            Ev::SuspendSource => self.suspend_source(),
            Ev::ReloadSource => {
                if self.faults_on && self.src_running && self.suspending.is_none() {
                    self.reloading = true;
                }
                self.suspend_source()
            }
            Ev::ResumeSource => {
                self.log(|| "source resumes".into());
                self.start_source();
                self.host_paused = false;
                for _ in 0..self.p.qd {
                    self.at(self.now, Ev::HostNext);
                }
                Ok(())
            }
            Ev::LockerTry { id } => self.locker_try(id),
            Ev::LockerRelease { id } => {
                if let Some((s, c)) = self.lockers[id].take() {
                    if id == 0 {
                        if !self.tgt.lock_release(s, c) && self.tgt_running {
                            return Err(Violation::Protocol("lock_release of a held lock failed".into()));
                        }
                    } else {
                        self.tgt.local_unlock(s, c);
                    }
                    self.tgt_wakes();
                }
                if self.faults_on {
                    let t = self.now + self.rng.range(MS, 50 * MS);
                    self.at(t, Ev::LockerTry { id });
                }
                Ok(())
            }
            Ev::TargetRead => self.target_read(),
            Ev::FaultsOff => {
                self.faults_on = false;
                self.last_progress = self.now;
                self.link_up = true;
                self.log(|| "faults off".into());
                if self.p.corrupt > 0 {
                    // Silent corruption of the target's device, then an
                    // operator's verify of it all (once the source runs).
                    for _ in 0..self.p.corrupt {
                        let s = self.rng.below(self.p.dev_sectors);
                        self.books.corrupt_tgt(s);
                    }
                    self.log(|| format!("{} target sectors corrupted; verify", self.p.corrupt));
                    self.verify_at_start = true;
                    self.start_verify_if_running();
                }
                Ok(())
            }
        }
    }

    fn step(&mut self, a: Actor) -> R<()> {
        match a {
            Actor::SrcSender => self.src_sender(),
            Actor::SrcWorker => self.src_worker(),
            Actor::SrcReceiver => self.src_receiver(),
            Actor::TgtListener => self.tgt_listener(),
            Actor::TgtReceiver => self.tgt_receiver(),
            Actor::TgtApplier => self.tgt_applier(),
            Actor::TgtSender => self.tgt_sender(),
            Actor::TgtLocker => self.tgt_locker(),
        }
    }

    // ----------------------------------------------------------- network

    fn break_conn(&mut self, id: u64) {
        self.net.break_conn(id);
        // Readers and blocked writers of it see the error.
        for a in [Actor::SrcReceiver, Actor::TgtReceiver] {
            if self.actors[a.index()].conn == id {
                self.unblock(a);
            }
        }
        if self.sending.as_ref().is_some_and(|s| s.netconn == id) {
            self.unblock(Actor::SrcSender);
        }
        if self.t_conn.is_some_and(|c| c.1 == id) {
            self.unblock(Actor::TgtSender);
        }
    }

    fn stalled(&self) -> Option<u64> {
        if !self.faults_on {
            return None;
        }
        self.p
            .stalls
            .iter()
            .find(|&&(s, e)| self.now >= s && self.now < e)
            .map(|s| s.1)
    }

    /// Puts `frames` on the wire of `conn` in direction `dir`; false if the
    /// connection is broken.
    fn transmit(&mut self, conn: u64, dir: usize, frames: Vec<Vec<u8>>) -> bool {
        if self.net.is_broken(conn) {
            return false;
        }
        let lat = self.p.latency;
        let bw = self.p.link_bw;
        let corrupt_ppm = if self.faults_on { self.p.corrupt_ppm } else { 0 };
        for mut f in frames {
            let len = f.len() as u64;
            if corrupt_ppm > 0 && self.rng.below(1_000_000) < corrupt_ppm {
                for _ in 0..self.rng.range(1, 3) {
                    let i = self.rng.below(len) as usize;
                    let bit = self.rng.below(8);
                    f[i] ^= 1 << bit;
                }
            }
            let now = self.now;
            let Some(p) = self.net.pipe(conn, dir) else { return false };
            let start = p.wire_free.max(now);
            let done = start + (len * SEC).div_ceil(bw);
            p.wire_free = done;
            p.unread += len;
            p.flight.push_back((done + lat, f));
            self.at(done + lat, Ev::Arrive { conn, dir });
        }
        true
    }

    /// Whether the sender of `conn` in `dir` may hand `len` more bytes to
    /// the socket now (within the window).
    fn window_open(&mut self, conn: u64, dir: usize, len: u64) -> bool {
        let w = self.p.window;
        match self.net.pipe(conn, dir) {
            Some(p) => p.unread == 0 || p.unread + len <= w,
            None => true,
        }
    }

    fn arrive(&mut self, conn: u64, dir: usize) -> R<()> {
        if let Some(end) = self.stalled() {
            // Held while the link is down; TCP delivers it afterwards.
            self.at(end, Ev::Arrive { conn, dir });
            return Ok(());
        }
        let Some(p) = self.net.pipe(conn, dir) else { return Ok(()) };
        let Some((_, f)) = p.flight.pop_front() else { return Ok(()) };
        p.ready.push_back(f);
        let reader = if dir == TO_TARGET { Actor::TgtReceiver } else { Actor::SrcReceiver };
        if self.actors[reader.index()].conn == conn {
            self.unblock(reader);
        }
        Ok(())
    }

    /// The reader of `conn` takes one frame (`None`: nothing yet;
    /// `Some(None)`: the connection failed).
    fn read(&mut self, conn: u64, dir: usize) -> Option<Option<Vec<u8>>> {
        if self.net.is_broken(conn) {
            return Some(None);
        }
        let p = self.net.pipe(conn, dir)?;
        let f = p.ready.pop_front()?;
        p.unread = p.unread.saturating_sub(f.len() as u64);
        // A writer blocked on the window may go on.
        let writer = if dir == TO_TARGET { Actor::SrcSender } else { Actor::TgtSender };
        self.unblock(writer);
        Some(Some(f))
    }

    fn connect_done(&mut self, netconn: u64, ok: bool) -> R<()> {
        let Some((conn, nc)) = self.s_connecting else { return Ok(()) };
        if nc != netconn {
            return Ok(());
        }
        self.s_connecting = None;
        let ok = ok && !self.net.is_broken(netconn);
        if !self.src_running {
            // Stopped meanwhile: the sender returns.
            self.break_conn(netconn);
            self.unblock(Actor::SrcSender);
            return Ok(());
        }
        let random = ok.then(|| [self.rng.below(256) as u8; CONN_RANDOM]);
        let wanted = self.src.on_connect(conn, random, self.now);
        self.src_wakes();
        if ok && wanted {
            self.s_conn = Some((conn, netconn));
            let r = &mut self.actors[Actor::SrcReceiver.index()];
            r.conn = netconn;
            self.block(Actor::SrcReceiver);
            self.unblock(Actor::SrcReceiver);
            self.log(|| format!("source connected #{conn}"));
        } else {
            self.break_conn(netconn);
        }
        self.unblock(Actor::SrcSender);
        Ok(())
    }

    // ------------------------------------------------------ source side

    fn src_sender(&mut self) -> R<()> {
        // A blocked send resumes here: finish it first.
        if let Some(sn) = self.sending.take() {
            return self.finish_send(sn);
        }
        let step = self.src.poll_sender(&self.c, self.now);
        self.note_stream();
        self.src_wakes();
        match step {
            SenderStep::Exit => {
                self.gone(Actor::SrcSender);
                self.maybe_src_stopped();
            }
            SenderStep::Sleep { until } => self.sleep(Actor::SrcSender, until),
            SenderStep::Connect { conn } => {
                let nc = self.net.open();
                self.s_connecting = Some((conn, nc));
                self.block(Actor::SrcSender);
                let rtt = 2 * self.p.latency + 10 * US;
                if self.link_up && self.tgt_running && self.stalled().is_none() {
                    self.backlog.push_back(nc);
                    self.unblock(Actor::TgtListener);
                    self.at(self.now + rtt, Ev::ConnectDone { conn: nc, ok: true });
                } else {
                    let t = self.rng.range(rtt, u64::from(CONNECT_TIMEOUT_MS) * MS);
                    self.at(self.now + t, Ev::ConnectDone { conn: nc, ok: false });
                }
            }
            SenderStep::Control { conn, frame } => {
                let netconn = self.s_conn.filter(|c| c.0 == conn).map_or(0, |c| c.1);
                let sn = Sending {
                    conn,
                    netconn,
                    pieces: Vec::new(),
                    bytes: Vec::new(),
                    frames: vec![frame.as_bytes().to_vec()],
                };
                self.start_send(sn);
            }
            SenderStep::Records { conn, batch } => {
                let netconn = self.s_conn.filter(|c| c.0 == conn).map_or(0, |c| c.1);
                let views: Vec<_> = self.src.batch_views(&batch).collect();
                if views.len() != batch.count as usize {
                    return Err(Violation::Protocol(format!(
                        "batch of {} records from {} shows {}",
                        batch.count,
                        batch.first,
                        views.len()
                    )));
                }
                let mut pieces = Vec::new();
                let mut frames = Vec::new();
                for v in &views {
                    let mut f = Vec::with_capacity(v.frame_len);
                    gather(self.src.ring().pages(), v.chunks(), &mut f);
                    pieces.extend(v.chunks());
                    if batch.corrupt == Some(v.seq) {
                        f[..HEADER_LEN].copy_from_slice(&self.src.corrupt_header(v.seq));
                    }
                    frames.push(f);
                }
                let mut bytes = Vec::new();
                gather(self.src.ring().pages(), pieces.iter().copied(), &mut bytes);
                let sn = Sending {
                    conn,
                    netconn,
                    pieces,
                    bytes,
                    frames,
                };
                self.start_send(sn);
            }
            SenderStep::Close { conn } => {
                let nc = self.s_conn.filter(|c| c.0 == conn).map(|c| c.1);
                if let Some(nc) = nc {
                    self.break_conn(nc);
                }
                self.src.on_shutdown(conn);
                self.src_wakes();
                // Join the receiver first.
                if self.actors[Actor::SrcReceiver.index()].state != ActState::Gone {
                    self.block(Actor::SrcSender);
                    self.actors[Actor::SrcSender.index()].conn = u64::MAX;
                    return Ok(());
                }
                self.s_conn = None;
                self.src.on_closed(conn, self.now);
                self.src_wakes();
                let d = self.cpu();
                self.schedule(Actor::SrcSender, d);
            }
        }
        Ok(())
    }

    fn start_send(&mut self, sn: Sending) {
        // The kernel copies into the socket as the window opens; the send
        // ends once every byte is in: block until then.
        self.sending = Some(sn);
        self.block(Actor::SrcSender);
        let d = self.cpu();
        // Re-run at once: finish_send checks the window.
        self.actors[Actor::SrcSender.index()].state = ActState::Blocked;
        let gen = self.actors[Actor::SrcSender.index()].gen + 1;
        self.actors[Actor::SrcSender.index()].gen = gen;
        self.actors[Actor::SrcSender.index()].state = ActState::Ready;
        self.at(self.now + d, Ev::Step { a: Actor::SrcSender, gen });
    }

    fn finish_send(&mut self, sn: Sending) -> R<()> {
        let len: u64 = sn.frames.iter().map(|f| f.len() as u64).sum();
        let broken = sn.netconn == 0 || self.net.is_broken(sn.netconn);
        if !broken && !self.window_open(sn.netconn, TO_TARGET, len) {
            self.sending = Some(sn);
            self.block(Actor::SrcSender);
            return Ok(());
        }
        // The ring bytes it read must be the same now as when it started
        // (the send lease): a freed and reused ring would send garbage.
        if !sn.pieces.is_empty() {
            let mut now_bytes = Vec::new();
            gather(self.src.ring().pages(), sn.pieces.iter().copied(), &mut now_bytes);
            if now_bytes != sn.bytes {
                return Err(Violation::Protocol(
                    "ring bytes under a send in progress changed (freed before the send ended)".into(),
                ));
            }
        }
        let ok = !broken && self.transmit(sn.netconn, TO_TARGET, sn.frames);
        self.src.on_sent(sn.conn, ok, self.now);
        self.src_wakes();
        let d = self.cpu();
        self.schedule(Actor::SrcSender, d);
        Ok(())
    }

    fn src_receiver(&mut self) -> R<()> {
        let Some((conn, nc)) = self.s_conn.filter(|c| c.1 == self.actors[Actor::SrcReceiver.index()].conn) else {
            self.gone(Actor::SrcReceiver);
            self.joined_src_receiver();
            return Ok(());
        };
        let f = match self.read(nc, TO_SOURCE) {
            None => {
                self.block(Actor::SrcReceiver);
                return Ok(());
            }
            Some(None) => {
                self.log(|| "source <- error".into());
                self.src.on_recv_error(conn, RecvError::Io);
                return self.end_src_receiver();
            }
            Some(Some(f)) => f,
        };
        // The glue's framing: a header that does not decode, or a frame
        // longer than any the target sends, ends the connection.
        let kind = match decode_header(&f) {
            Ok((h, _)) if h.frame_len() == f.len() && f.len() <= MAX_CONTROL_FRAME => h.kind,
            r => {
                self.log(|| format!("source <- bad frame of {} bytes: {:?}", f.len(), r.map(|(h, _)| h)));
                self.src.on_recv_error(conn, RecvError::Corrupt);
                return self.end_src_receiver();
            }
        };
        self.log(|| format!("source <- {kind:?}"));
        let v = self.src.on_frame(&self.c, conn, &f, self.now);
        self.log(|| format!("source -> {v:?}, link {:?}", self.src.link_state()));
        let skip = self.mutant == Mutant::NoCompletionAfterHandshake && kind != Kind::Ack;
        if !skip {
            self.drain_completions()?;
        }
        self.src_wakes();
        match v {
            RxVerdict::Continue => {
                let d = self.cpu();
                self.schedule(Actor::SrcReceiver, d);
                Ok(())
            }
            RxVerdict::Stop => self.end_src_receiver(),
        }
    }

    fn end_src_receiver(&mut self) -> R<()> {
        self.src_wakes();
        self.gone(Actor::SrcReceiver);
        self.joined_src_receiver();
        Ok(())
    }

    /// The receiver returned: a sender waiting to join it goes on.
    fn joined_src_receiver(&mut self) {
        let s = self.actors[Actor::SrcSender.index()];
        if s.state == ActState::Blocked && s.conn == u64::MAX {
            self.actors[Actor::SrcSender.index()].conn = 0;
            if let Some((conn, _)) = self.s_conn.take() {
                self.src.on_closed(conn, self.now);
                self.src_wakes();
            }
            self.unblock(Actor::SrcSender);
        }
        self.maybe_src_stopped();
    }

    fn drain_completions(&mut self) -> R<()> {
        while let Some(c) = self.src.poll_completed() {
            self.host_complete(c)?;
        }
        Ok(())
    }

    fn src_worker(&mut self) -> R<()> {
        let step = self.src.poll_worker(self.now);
        self.log(|| format!("worker: {step:?}"));
        self.src_wakes();
        match step {
            WorkerStep::Exit => {
                self.gone(Actor::SrcWorker);
                self.maybe_src_stopped();
                return Ok(());
            }
            WorkerStep::Sleep { until } => {
                self.sleep(Actor::SrcWorker, until);
                return Ok(());
            }
            WorkerStep::Shutdown { conn } => {
                if let Some((c, nc)) = self.s_conn {
                    if c == conn {
                        self.break_conn(nc);
                    }
                }
                self.src.on_shutdown(conn);
            }
            WorkerStep::Abandon => {
                while let Some(req) = self.deferred.pop_front() {
                    self.src.deferred_dropped();
                    // Failed (a flush suspend): written nowhere.
                    self.log(|| format!("suspend gives up deferred write {}", req.wid));
                    self.host_done(false);
                }
                self.drain_completions()?;
            }
            WorkerStep::Complete => self.drain_completions()?,
            WorkerStep::RepairRead(job) => {
                self.log(|| format!("repair read of {job:?}"));
                let t = self.now + self.p.src_lat + (job.count * SECT as u64 * SEC).div_ceil(self.p.src_bw);
                self.at(
                    t,
                    Ev::RepairReadDone { seq: job.seq, sector: job.sector, count: job.count, epoch: self.src_epoch },
                );
            }
            WorkerStep::RepairAppend { job, ok } => {
                let seq = job.seq;
                self.log(|| format!("repair append of {seq} ({ok})"));
                if !ok {
                    self.src.repair_failed(seq);
                } else {
                    let Some((s, data)) = self.repair_buf.take().filter(|b| b.0 == seq) else {
                        return Err(Violation::Protocol(format!("repair of {seq} without its read")));
                    };
                    let r = if self.p.reserve && !src_m::copies_inline(data.len()) {
                        self.src.repair_reserved(&self.c, s, self.now)
                    } else {
                        self.src.repair(&self.c, s, self.now, |w| w.write(&data))
                    };
                    match r {
                        Submit::Accepted(rseq) => {
                            if !src_m::copies_inline(data.len()) {
                                self.copy_later(rseq, Unpub::Data(data.clone()));
                            }
                            self.books.record(
                                self.sg(rseq),
                                Hist {
                                    wid: 0,
                                    kind: Kind::Write,
                                    sector: job.sector,
                                    count: job.count as u32,
                                    barrier: false,
                                    data: Some(data),
                                    resync: false,
                                },
                            );
                            self.log(|| format!("repair {rseq} of failed write {seq}"));
                        }
                        Submit::Wait(_) => self.repair_buf = Some((s, data)),
                        Submit::Invalid(i) => {
                            return Err(Violation::Protocol(format!("repair of {seq} invalid: {i:?}")));
                        }
                    }
                }
            }
            WorkerStep::SyncEvent => self.outcome.sync_events += 1,
            WorkerStep::AppendSync => self.src.append_sync(&self.c),
            WorkerStep::VerifyRead(job) => {
                let count = u64::from(job.count);
                self.log(|| format!("verify read of {job:?}"));
                self.verify_buf = Some((job.sector, self.books.src_bytes(job.sector, count)));
                self.verify_piece = Some((job.sector, count));
                let t = self.now + self.p.src_lat + (count * SECT as u64 * SEC).div_ceil(self.p.src_bw);
                self.at(t, Ev::VerifyReadDone { sector: job.sector, count });
            }
            WorkerStep::VerifyAppend { job, ok } => {
                // (Kept: with no ring room the worker appends it again.)
                let d = match self.verify_buf.as_ref() {
                    Some((s, data)) if ok && *s == job.sector => Some(digest(data)),
                    _ => None,
                };
                if !matches!(self.src.verify_append(&self.c, d), Submit::Wait(_)) {
                    self.verify_piece = None;
                }
            }
            WorkerStep::SaveGens => {
                self.gens_write = self.src.gens_copy();
                let ok = !self.src_running && self.reloading
                    || !self.in_windows(&self.p.src_fails) && !self.in_windows(&self.p.meta_fails);
                self.log(|| format!("superblock {:?} saved ({ok})", self.gens_write));
                let t = self.now + self.p.src_lat;
                self.at(t, Ev::GensWritten { ok });
                self.block(Actor::SrcWorker);
                return Ok(());
            }
            WorkerStep::FlushData => {
                let mark = self.books.src_cache_mark();
                let ok = !self.in_windows(&self.p.src_fails);
                self.log(|| format!("data device flushed ({ok})"));
                let t = self.now + self.p.src_lat;
                self.at(t, Ev::DataFlushed { ok, mark });
                self.block(Actor::SrcWorker);
                return Ok(());
            }
            WorkerStep::SaveBitmap { block } => {
                // Copied in pieces, each under the lock, as the glue does.
                let mut page = [0u8; PAGE_SIZE];
                for off in (0..bitmap::BITS_BYTES).step_by(510) {
                    if !self.src.bitmap_copy(block, off, &mut page[bitmap::HEADER_LEN + off..][..510]) {
                        return Err(Violation::Protocol(format!("bitmap block {block} cannot be copied")));
                    }
                }
                bitmap::seal_block(block, &mut page, &self.c);
                self.meta_write = Some(page);
                self.meta_write_block = block;
                // (A metadata device failing while a reloaded source saves
                // its last bits loses them: logged, not modelled.)
                let ok = !self.src_running && self.reloading
                    || !self.in_windows(&self.p.src_fails) && !self.in_windows(&self.p.meta_fails);
                self.log(|| format!("bitmap block {block} saved ({ok})"));
                let t = self.now + self.p.src_lat;
                self.at(t, Ev::BitmapWritten { block, ok });
                self.block(Actor::SrcWorker);
                return Ok(());
            }
            WorkerStep::ResyncRead(job) => {
                self.log(|| format!("resync read of {job:?}"));
                // `sync_rate`: never more bytes read than the rate allows
                // since the first read, give or take this piece.
                let piece = u64::from(job.count) * SECT as u64;
                let rate = u64::from(self.p.sync_rate_kib) * 1024;
                let (t0, before) = *self.rate_books.get_or_insert((self.now, 0));
                if rate > 0 && u128::from(before) * u128::from(SEC) > u128::from(rate) * u128::from(self.now - t0) {
                    return Err(Violation::Protocol(format!(
                        "resync read {before} bytes in {} ns, over sync_rate {rate} bytes/s",
                        self.now - t0
                    )));
                }
                self.rate_books = Some((t0, before + piece));
                // Its bit is on the metadata device: a crash now would not
                // forget the chunk.
                let cpb = bitmap::CHUNKS_PER_BLOCK;
                let (b, i) = ((job.chunk / cpb) as usize, job.chunk % cpb);
                let byte = self.meta_bitmap.get(b).map_or(0, |p| p[bitmap::HEADER_LEN + (i / 8) as usize]);
                if byte & (1 << (i % 8)) == 0 {
                    return Err(Violation::Protocol(format!(
                        "resync read of chunk {} whose dirty bit is not on the metadata device",
                        job.chunk
                    )));
                }
                let count = u64::from(job.count);
                // The bytes as the read starts: nothing may change them
                // before it ends (checked then).
                self.resync_buf = Some((job.sector, self.books.src_bytes(job.sector, count)));
                let t = self.now + self.p.src_lat + (count * SECT as u64 * SEC).div_ceil(self.p.src_bw);
                self.at(t, Ev::ResyncReadDone { sector: job.sector, count });
            }
            WorkerStep::ResyncAppend { job, ok } => {
                self.log(|| format!("resync append of {job:?} ({ok})"));
                if !ok {
                    self.resync_buf = None;
                    self.src.resync_failed();
                } else {
                    let Some((_, data)) = self.resync_buf.take().filter(|b| b.0 == job.sector) else {
                        return Err(Violation::Protocol(format!("resync of {job:?} without its read")));
                    };
                    let r = if self.p.reserve && !src_m::copies_inline(data.len()) {
                        self.src.resync_reserved(&self.c)
                    } else {
                        self.src.resync(&self.c, |w| w.write(&data))
                    };
                    match r {
                        Submit::Accepted(seq) => {
                            if !src_m::copies_inline(data.len()) {
                                self.copy_later(seq, Unpub::Data(data.clone()));
                            }
                            // Sync bytes are bounded by the dirty chunks: a
                            // piece is only ever sent for a chunk whose bit
                            // is set (cleared only once its last piece is
                            // acknowledged).
                            if self.src.bitmap().is_none_or(|b| b.next_dirty(job.chunk) != Some(job.chunk)) {
                                return Err(Violation::Protocol(format!(
                                    "resync record {seq} sent chunk {} whose bit is clear",
                                    job.chunk
                                )));
                            }
                            self.books.record(
                                self.sg(seq),
                                Hist {
                                    wid: 0,
                                    kind: Kind::Write,
                                    sector: job.sector,
                                    count: job.count,
                                    barrier: false,
                                    data: Some(data),
                                    resync: true,
                                },
                            );
                        }
                        Submit::Wait(_) => self.resync_buf = Some((job.sector, data)),
                        Submit::Invalid(i) => {
                            return Err(Violation::Protocol(format!("resync of {job:?} invalid: {i:?}")));
                        }
                    }
                }
            }
            WorkerStep::Deferred => {
                for _ in 0..DEFERRED_BATCH {
                    let Some(req) = self.deferred.pop_front() else { break };
                    let w = host_write(&req);
                    let seed = self.seed;
                    let r = if self.p.reserve && !inline(&req) {
                        self.src.retry_deferred_reserved(&self.c, &w, self.now)
                    } else {
                        self.src.retry_deferred(&self.c, &w, self.now, |wr| fill(seed, &req, wr))
                    };
                    match r {
                        Submit::Accepted(seq) => self.accepted_write(seq, req)?,
                        Submit::Wait(why) => {
                            self.deferred.push_front(req);
                            self.link_wait(why);
                            break;
                        }
                        Submit::Invalid(i) => {
                            return Err(Violation::Protocol(format!("deferred write {req:?} invalid: {i:?}")));
                        }
                    }
                }
            }
        }
        self.src_wakes();
        let d = self.cpu();
        self.schedule(Actor::SrcWorker, d);
        Ok(())
    }

    fn maybe_src_stopped(&mut self) {
        if self.src_running || !self.src.is_stopping() {
            return;
        }
        let all_gone = [Actor::SrcSender, Actor::SrcWorker, Actor::SrcReceiver]
            .iter()
            .all(|a| self.actors[a.index()].state == ActState::Gone);
        if all_gone && self.suspending.is_some() {
            self.src.stopped();
            // A piece read but not appended is read again after the start.
            self.verify_piece = None;
            self.src_wakes();
            self.s_conn = None;
            self.sending = None;
            self.s_connecting = None;
            self.suspending = None;
            self.log(|| "source stopped (suspended)".into());
            if std::mem::take(&mut self.reloading) {
                self.reload_source();
            }
            let t = self.now + self.rng.range(MS, 200 * MS);
            self.at(t, Ev::ResumeSource);
        }
    }

    // --------------------------------------------------------- host side

    fn gen_req(&mut self) -> HostReq {
        let p = &self.p;
        let r = &mut self.rng;
        let wid = self.next_wid;
        self.next_wid += 1;
        let roll = r.below(1000);
        let op = if roll < p.p_flush {
            HostOp::Flush
        } else if roll < p.p_flush + p.p_discard {
            HostOp::Discard
        } else if roll < p.p_flush + p.p_discard + p.p_zeroes {
            HostOp::WriteZeroes
        } else {
            HostOp::Write
        };
        if op == HostOp::Flush {
            return HostReq { at: self.now, local_only: self.local_only, wid, op, sector: 0, count: 0, flags: 0 };
        }
        let max = if op == HostOp::Write {
            u64::from(p.max_write)
        } else {
            u64::from(p.region_sectors) * 2
        };
        let count = r.range(1, max).min(p.dev_sectors);
        let span = p.dev_sectors - count;
        let sector = match p.workload {
            0 => r.range(0, span),
            1 => (self.seq_cursor % (span + 1)) & !7,
            2 => r.range(0, span.min(256)),
            _ => {
                if r.chance(1, 2) {
                    r.range(0, span.min(64))
                } else {
                    r.range(0, span)
                }
            }
        };
        if p.workload == 1 {
            self.seq_cursor += count;
        }
        // Never cross more regions than there are hot slots.
        let rs = u64::from(p.region_sectors);
        let first = sector / rs;
        let max_last = first + p.hot_regions as u64 - 1;
        let end = (sector + count).min((max_last + 1) * rs).min(p.dev_sectors);
        let count = (end - sector).max(1) as u32;
        let mut flags = 0;
        if op == HostOp::Write {
            if r.below(1000) < p.p_fua {
                flags |= FLAG_FUA;
            }
            if r.below(1000) < p.p_preflush {
                flags |= FLAG_PREFLUSH;
            }
        }
        HostReq { at: self.now, local_only: self.local_only, wid, op, sector, count, flags }
    }

    fn host_next(&mut self) -> R<()> {
        if self.issued >= self.p.ops || self.host_paused || !self.src_running {
            return Ok(());
        }
        self.issued += 1;
        self.dm_inflight += 1;
        let req = self.gen_req();
        // dm `map`, one critical section. Its local bio comes first,
        // without sleeping; without one the write is parked for the worker.
        let w = host_write(&req);
        let seed = self.seed;
        let r = if self.faults_on && self.p.p_nomem > 0 && self.rng.below(1000) < self.p.p_nomem {
            self.src.defer_unprepared(self.now);
            Submit::Wait(src_m::WaitReason::Queued)
        } else if self.p.reserve && !inline(&req) {
            self.src.submit_reserved(&self.c, &w, self.now)
        } else {
            self.src.submit(&self.c, &w, self.now, |wr| fill(seed, &req, wr))
        };
        match r {
            Submit::Accepted(seq) => self.accepted_write(seq, req)?,
            Submit::Wait(why) => {
                self.deferred.push_back(req);
                self.link_wait(why);
            }
            Submit::Invalid(i) => {
                return Err(Violation::Protocol(format!("source rejected {req:?}: {i:?}")));
            }
        }
        self.src_wakes();
        Ok(())
    }

    fn accepted_write(&mut self, seq: u64, req: HostReq) -> R<()> {
        if let Some((a, n)) = self.verify_piece {
            if req.op != HostOp::Flush && req.sector < a + n && a < req.sector + u64::from(req.count) {
                return Err(Violation::Protocol(format!(
                    "host write {}+{} accepted while verify held {a}+{n} (between its read and its request)",
                    req.sector, req.count
                )));
            }
        }
        let (kind, wid) = match req.op {
            HostOp::Write => (Kind::Write, req.wid),
            HostOp::Discard => (Kind::Discard, 0),
            HostOp::WriteZeroes => (Kind::WriteZeroes, 0),
            HostOp::Flush => (Kind::Flush, 0),
        };
        let barrier = kind == Kind::Flush || req.flags & FLAG_PREFLUSH != 0;
        self.books.record(
            self.sg(seq),
            Hist { wid, kind, sector: req.sector, count: req.count, barrier, data: None, resync: false },
        );
        self.log(|| format!("host write {seq} accepted: {:?} {}+{}", req.op, req.sector, req.count));
        if barrier {
            self.src_flush_marks.insert(seq, self.books.src_cache_mark());
        }
        if self.p.al_regions > 0 && kind != Kind::Flush {
            // The activity log: no local write before its chunks are set
            // on the metadata device (a crash would forget it).
            let cs = u64::from(self.p.chunk_sectors);
            let cpb = bitmap::CHUNKS_PER_BLOCK;
            for c in req.sector / cs..=(req.sector + u64::from(req.count) - 1) / cs {
                let (b, i) = ((c / cpb) as usize, c % cpb);
                let byte = self.meta_bitmap.get(b).map_or(0, |p| p[bitmap::HEADER_LEN + (i / 8) as usize]);
                if byte & (1 << (i % 8)) == 0 {
                    return Err(Violation::Protocol(format!(
                        "local write {seq} ({}+{}) of chunk {c} whose bit is not on the metadata device",
                        req.sector, req.count
                    )));
                }
            }
        }
        self.accepted.insert(seq, req);
        self.submitted.insert(seq, (req.at, req.local_only));
        if req.op == HostOp::Write && !inline(&req) && self.copy_later(seq, Unpub::Host(req)) {
            // Its local write goes from the ring once the copy is in.
            return Ok(());
        }
        self.start_local(seq, req);
        Ok(())
    }

    /// A reserved record's copy begins (`p.reserve`): it ends, and the
    /// record is published, after up to `p.copy_max`. False without
    /// reservations (the record was filled when accepted).
    fn copy_later(&mut self, seq: u64, what: Unpub) -> bool {
        if !self.p.reserve {
            return false;
        }
        self.unpublished.insert(seq, what);
        let t = self.now + self.rng.range(0, self.p.copy_max);
        self.at(t, Ev::Publish { seq, machine: self.src_machine });
        true
    }

    /// The copy of reserved record `seq` ended: fill and publish it, and
    /// start a host write's local write (from the ring's bytes).
    fn publish(&mut self, seq: u64, machine: u64) -> R<()> {
        if machine != self.src_machine {
            // Reserved by a machine a reload or crash replaced.
            return Ok(());
        }
        let Some(what) = self.unpublished.remove(&seq) else {
            return Err(Violation::Protocol(format!("publish of {seq}, which was not reserved")));
        };
        let seed = self.seed;
        let r = match &what {
            Unpub::Host(req) => self.src.fill_reserved(&self.c, seq, |wr| fill(seed, req, wr)),
            Unpub::Data(data) => self.src.fill_reserved(&self.c, seq, |wr| wr.write(data)),
        };
        if let Err(e) = r {
            return Err(Violation::Protocol(format!("publish of reserved record {seq}: {e:?}")));
        }
        self.log(|| format!("record {seq} published"));
        if let Unpub::Host(req) = what {
            self.start_local(seq, req);
        }
        self.src_wakes();
        Ok(())
    }

    /// A host write's local write begins (from the ring's pages).
    fn start_local(&mut self, seq: u64, req: HostReq) {
        let bytes = u64::from(req.count) * SECT as u64;
        let mut t = self.now + self.p.src_lat + (bytes * SEC).div_ceil(self.p.src_bw);
        if self.p.jitter {
            t += self.rng.below(self.p.src_lat + 1);
        }
        self.at(t, Ev::LocalDone { seq, epoch: self.src_epoch });
    }

    /// A local write ended (dm end_io / the ring-page bio's completion).
    fn local_done(&mut self, seq: u64, _epoch: u64) -> R<()> {
        let Some(req) = self.accepted.get(&seq).copied() else {
            return Err(Violation::Protocol(format!("local done for unknown seq {seq}")));
        };
        let ok = !self.in_windows(&self.p.src_fails.clone());
        if req.op == HostOp::Write {
            // The write went to the device from the ring's pages: they must
            // still hold this record's payload.
            let Some(spans) = self.src.payload_chunks(seq) else {
                return Err(Violation::Protocol(format!(
                    "local write {seq} ended but its payload left the ring first"
                )));
            };
            let mut got = Vec::new();
            gather(self.src.ring().pages(), spans, &mut got);
            if got != self.books.payload(self.sg(seq)) {
                return Err(Violation::Protocol(format!(
                    "ring bytes under local write {seq} changed before it ended"
                )));
            }
            if !self.src.ring().pages().page(0).is_some_and(|_| true) {
                return Err(Violation::Protocol("ring storage gone".into()));
            }
        }
        if let Some(mark) = self.src_flush_marks.remove(&seq) {
            // A host flush, or the PREFLUSH before a write.
            if ok {
                self.books.src_cache_flushed(mark);
            }
        }
        let gseq = self.sg(seq);
        if ok {
            self.books.apply_src(gseq, |_| true);
            if req.flags & FLAG_FUA != 0 && req.op != HostOp::Flush {
                self.books.src_cache_fua(req.sector, req.count);
            }
        } else {
            // A failed write may have reached any part of its range.
            self.books.note_failed(gseq);
            let mut r = self.rng.fork();
            self.books.apply_src(gseq, |_| r.chance(1, 2));
            self.log(|| format!("local write {seq} failed"));
        }
        self.accepted.remove(&seq);
        if !self.src.local_done(seq, ok) {
            return Err(Violation::Protocol(format!("source refused local_done({seq})")));
        }
        self.drain_completions()?;
        self.src_wakes();
        Ok(())
    }

    fn host_complete(&mut self, c: Completed) -> R<()> {
        self.sync_drops();
        let at = self.submitted.remove(&c.seq);
        if let (Some(after), Some((at, local_at))) = (self.p.degrade_after, at) {
            // Degraded mode bounds every wait for the link while the
            // local device works (a repair of a failed local write may
            // wait longer); time spent degraded, when only the local
            // device can hold a write back, does not count.
            let waited = (self.now - at).saturating_sub(self.local_only - local_at);
            if waited > after + DEGRADE_MARGIN && self.p.src_fails.is_empty() {
                return Err(Violation::Protocol(format!(
                    "host write {} waited {} ms, degrade_after is {} ms; {}",
                    c.seq,
                    waited / MS,
                    after / MS,
                    self.state()
                )));
            }
        }
        if !c.ok && self.p.src_fails.is_empty() {
            return Err(Violation::Protocol(format!("host write {} failed", c.seq)));
        }
        if self.p.completion == Completion::Sync
            && c.ok
            && self.books.pending_tgt.contains(&self.sg(c.seq))
            && !self.src.is_abandoning()
        {
            return Err(Violation::Protocol(format!(
                "sync completion of host write {} before the target applied it",
                c.seq
            )));
        }
        self.host_done(c.ok);
        Ok(())
    }

    fn host_done(&mut self, _ok: bool) {
        self.completed += 1;
        self.dm_inflight -= 1;
        self.last_progress = self.now;
        let t = self.now + self.rng.range(0, self.p.think);
        self.at(t, Ev::HostNext);
        self.check_suspend_drained();
    }

    fn suspend_source(&mut self) -> R<()> {
        if !self.faults_on || !self.src_running || self.suspending.is_some() {
            return Ok(());
        }
        self.log(|| "source suspends".into());
        // presuspend; dm then waits for its bios, then postsuspend.
        self.host_paused = true;
        self.suspending = Some(self.now);
        self.src.begin_suspend(self.now);
        self.src_wakes();
        self.check_suspend_drained();
        Ok(())
    }

    /// A new table replaces the stopped source: a new machine (a new ring
    /// whose seqs go on from the old one's, and a new stream generation)
    /// with the bitmap read back from the metadata device. The old ring's
    /// unacknowledged records are gone.
    fn reload_source(&mut self) {
        let floor = self.sg(self.src.ring().next_seq());
        // What the target applied on this source's stream (nothing, if it
        // is not on it yet).
        let applied = if self.tgt.generation() == self.src.stream_generation() { self.tg(self.tgt.applied_seq()) } else { 0 };
        self.books.source_reloaded(floor, applied);
        self.scfg.generation = mix(self.seed, 7 + self.src_epoch) | 1;
        // The kernel's new ring starts at 1 (generator 16); the books'
        // history goes on at `floor`.
        let first = if self.p.seq_restart { 1 } else { floor };
        self.src_base = floor - first;
        self.log(|| format!("source reloaded: the new ring starts at {first} (history id {floor})"));
        let mut src = new_source(self.scfg, &self.p, self.mutant, first);
        let chunks = self.p.dev_sectors.div_ceil(u64::from(self.p.chunk_sectors));
        let mut bits = Bitmap::new(VecPages::new(self.meta_bitmap.len()), chunks).expect("bitmap pages");
        for (i, b) in self.meta_bitmap.iter().enumerate() {
            bits.load_block(i as u64, b, &self.c);
        }
        src.attach_bitmap(bits, self.p.chunk_sectors).expect("bitmap fits");
        attach_al(&self.p, &mut src);
        src.set_sync_rate(self.p.sync_rate_kib);
        if self.p.gens {
            src.attach_generations(self.src_sb, initial_mode(&self.p));
        }
        self.src = src;
        self.note_stream();
        self.resync_buf = None;
        self.repair_buf = None;
        // Copies into the old ring end with it.
        self.unpublished.clear();
        self.src_machine += 1;
        self.rate_books = None;
        self.degrades_seen = 0;
        self.down_since = None;
        self.accepted_at = self.now;
    }

    /// The source host loses power: its threads, memory, ring and host
    /// requests are gone; a local write in flight reached any part of its
    /// range, the data device keeps (with a volatile cache) any version of
    /// each sector since its last flush, and a metadata write in flight
    /// landed or not. A new source is loaded from the metadata device, as
    /// after a reboot, and the target must end equal to its device.
    fn source_crash(&mut self) -> R<()> {
        if !self.faults_on || !self.src_running || self.suspending.is_some() || self.reloading {
            return Ok(());
        }
        self.log(|| format!("source crash (ring {:?}..{})", self.src.ring().oldest_seq(), self.src.ring().next_seq()));
        for (seq, _) in std::mem::take(&mut self.accepted) {
            let gseq = self.sg(seq);
            self.books.note_failed(gseq);
            if self.unpublished.contains_key(&seq) {
                // Still being copied: its local write never began.
                continue;
            }
            let mut r = self.rng.fork();
            self.books.apply_src(gseq, |_| r.chance(1, 2));
        }
        if self.p.src_volatile {
            let rng = &mut self.rng;
            let lost = self.books.src_power_loss(|n| rng.below(n + 1));
            self.log(|| format!("source power loss: {lost} sectors went back to an older version"));
        }
        if let Some(page) = self.meta_write.take() {
            if self.rng.chance(1, 2) {
                self.meta_bitmap[self.meta_write_block as usize] = page;
            }
        }
        if let Some(g) = self.gens_write.take() {
            if self.rng.chance(1, 2) {
                self.src_sb = g;
            }
        }
        // Every event of the old machine's I/O is void.
        self.q.retain(|e| {
            !matches!(
                e,
                Ev::LocalDone { .. }
                    | Ev::RepairReadDone { .. }
                    | Ev::ResyncReadDone { .. }
                    | Ev::VerifyReadDone { .. }
                    | Ev::BitmapWritten { .. }
                    | Ev::GensWritten { .. }
                    | Ev::DataFlushed { .. }
            )
        });
        // The host's requests in flight die with it; they are issued again.
        self.issued -= self.dm_inflight;
        self.dm_inflight = 0;
        self.deferred.clear();
        self.submitted.clear();
        self.src_flush_marks.clear();
        if let Some((_, nc)) = self.s_conn {
            self.break_conn(nc);
        }
        if let Some((_, nc)) = self.s_connecting {
            self.break_conn(nc);
        }
        for a in [Actor::SrcSender, Actor::SrcWorker, Actor::SrcReceiver] {
            self.gone(a);
        }
        self.s_conn = None;
        self.s_connecting = None;
        self.sending = None;
        self.verify_piece = None;
        self.verify_buf = None;
        self.src_running = false;
        self.src_epoch += 1;
        self.host_paused = true;
        self.reload_source();
        let t = self.now + self.rng.range(MS, 200 * MS);
        self.at(t, Ev::ResumeSource);
        Ok(())
    }

    /// dm's wait for in-flight bios ended: postsuspend stops the threads.
    fn check_suspend_drained(&mut self) {
        if self.suspending.is_none() || !self.src_running || self.dm_inflight > 0 {
            return;
        }
        self.src_running = false;
        self.src_epoch += 1;
        self.src.stop();
        self.src_wakes();
        if let Some((_, nc)) = self.s_conn {
            self.break_conn(nc);
        }
        if let Some((_, nc)) = self.s_connecting {
            self.break_conn(nc);
        }
        // Blocked threads return once their I/O fails.
        self.unblock(Actor::SrcSender);
        self.maybe_src_stopped();
    }

    // ------------------------------------------------------ target side

    fn tgt_listener(&mut self) -> R<()> {
        let step = self.tgt.poll_listener(self.now);
        self.tgt_wakes();
        match step {
            ListenerStep::Exit => {
                self.gone(Actor::TgtListener);
                self.maybe_tgt_stopped();
            }
            ListenerStep::Sleep { until } => self.sleep(Actor::TgtListener, until),
            ListenerStep::Accept => {
                let Some(nc) = self.backlog.pop_front() else {
                    self.block(Actor::TgtListener);
                    return Ok(());
                };
                if self.net.is_broken(nc) {
                    let d = self.cpu();
                    self.schedule(Actor::TgtListener, d);
                    return Ok(());
                }
                let random = [self.rng.below(256) as u8; CONN_RANDOM];
                match self.tgt.on_accept(self.now, random) {
                    Accept::Serve { conn } => {
                        self.t_conn = Some((conn, nc));
                        self.t_kept = None;
                        let r = &mut self.actors[Actor::TgtReceiver.index()];
                        r.conn = nc;
                        self.block(Actor::TgtReceiver);
                        self.unblock(Actor::TgtReceiver);
                        self.log(|| format!("target serves connection #{conn}"));
                    }
                    Accept::Refuse => self.break_conn(nc),
                }
                self.tgt_wakes();
                let d = self.cpu();
                self.schedule(Actor::TgtListener, d);
            }
        }
        Ok(())
    }

    fn tgt_receiver(&mut self) -> R<()> {
        if let Some((seq, payload)) = self.t_filling.take() {
            // The copy outside the lock ended: whatever the connection
            // did meanwhile, the record is published.
            if !self.tgt.fill_payload(seq, &payload) {
                return Err(Violation::Protocol(format!("target could not fill reserved record {seq}")));
            }
            self.log(|| format!("target record {seq} filled"));
            self.tgt_wakes();
            let d = self.cpu();
            self.schedule(Actor::TgtReceiver, d);
            return Ok(());
        }
        let Some((conn, nc)) = self.t_conn.filter(|c| c.1 == self.actors[Actor::TgtReceiver.index()].conn) else {
            self.gone(Actor::TgtReceiver);
            self.maybe_tgt_stopped();
            return Ok(());
        };
        let f = if let Some(f) = self.t_kept.take() {
            match self.tgt.poll_receiver() {
                RxStep::Sleep => {
                    self.t_kept = Some(f);
                    self.tgt_wakes();
                    self.sleep(Actor::TgtReceiver, None);
                    return Ok(());
                }
                RxStep::Stop => {
                    self.tgt.on_recv_end(conn, false);
                    return self.end_tgt_receiver();
                }
                RxStep::Retry => f,
            }
        } else {
            match self.read(nc, TO_TARGET) {
                None => {
                    self.block(Actor::TgtReceiver);
                    return Ok(());
                }
                Some(None) => {
                    self.tgt.on_recv_end(conn, false);
                    return self.end_tgt_receiver();
                }
                Some(Some(f)) => f,
            }
        };
        // The glue's framing (FrameReader): a header that does not decode,
        // or a frame whose length disagrees, is a stream out of sync.
        match decode_header(&f) {
            Ok((h, _)) if h.frame_len() == f.len() => {}
            _ => {
                self.tgt.on_recv_end(conn, true);
                self.break_conn(nc);
                return self.end_tgt_receiver();
            }
        }
        let outside = self.p.reserve && decode_header(&f).is_ok_and(|(h, _)| copies_outside(&h));
        let v = if outside {
            // Checked outside the lock, as the kernel's receiver does.
            let ok = !matches!(decode_frame(&self.c, &f), Err(DecodeError::BadCrc));
            self.tgt.on_frame_checked(&self.c, conn, &f, ok, self.now)
        } else {
            self.tgt.on_frame(&self.c, conn, &f, self.now)
        };
        self.log(|| format!("target <- {:?} seq {}: {v:?} ({}) {:?}", decode_header(&f).map(|h| h.0), decode_header(&f).map_or(0, |h| h.0.seq), self.tgt.conn_state(), self.tgt.stats()));
        self.tgt_wakes();
        match v {
            TRx::Continue => {
                let d = self.cpu();
                self.schedule(Actor::TgtReceiver, d);
                Ok(())
            }
            TRx::Busy => {
                self.t_kept = Some(f);
                // Asks at once whether to wait (it may not have to).
                let d = self.cpu();
                self.schedule(Actor::TgtReceiver, d);
                Ok(())
            }
            TRx::Stop => {
                self.tgt.on_recv_end(conn, false);
                self.break_conn(nc);
                self.end_tgt_receiver()
            }
            TRx::Fill { seq } => {
                match self.tgt.filling() {
                    Some((s, spans)) if s == seq && spans.remaining() + HEADER_LEN == f.len() => {}
                    other => {
                        return Err(Violation::Protocol(format!("fill of {seq}, but the target fills {other:?}")));
                    }
                }
                self.t_filling = Some((seq, f[HEADER_LEN..].to_vec()));
                let d = self.cpu() + self.rng.range(0, self.p.copy_max);
                self.schedule(Actor::TgtReceiver, d);
                Ok(())
            }
        }
    }

    fn end_tgt_receiver(&mut self) -> R<()> {
        self.tgt_wakes();
        self.t_kept = None;
        self.gone(Actor::TgtReceiver);
        self.actors[Actor::TgtReceiver.index()].conn = 0;
        self.maybe_tgt_stopped();
        Ok(())
    }

    fn tgt_applier(&mut self) -> R<()> {
        let step = self.tgt.poll_applier(self.now);
        self.tgt_wakes();
        match step {
            ApplierStep::Exit => {
                self.gone(Actor::TgtApplier);
                self.maybe_tgt_stopped();
                return Ok(());
            }
            ApplierStep::Sleep { until } => {
                self.sleep(Actor::TgtApplier, until);
                return Ok(());
            }
            ApplierStep::FailReads => {
                while self.reads.pop_front().is_some() {
                    self.tgt.read_failed();
                }
            }
            ApplierStep::Reads => {
                while let Some(&(s, c)) = self.reads.front() {
                    if !self.tgt.read_may_go(s, c) {
                        break;
                    }
                    self.reads.pop_front();
                    self.check_read(s, c)?;
                }
            }
            ApplierStep::Flush { upto } => {
                // An empty write with PREFLUSH: it covers the writes
                // completed before it.
                let mark = self.books.cache_mark();
                let fail = self.in_windows(&self.p.fails.clone());
                let slow = if self.in_windows(&self.p.slows.clone()) { 10 } else { 1 };
                let t = self.now + slow * self.p.tgt_lat;
                self.log(|| format!("target flushes up to {upto}"));
                self.at(t, Ev::FlushDone { upto, mark, ok: !fail, epoch: self.tgt_epoch });
            }
            ApplierStep::Issue => {
                let mut issued = 0;
                for _ in 0..APPLY_BATCH {
                    let Some(v) = self.tgt.poll_issue() else { break };
                    self.issue(v)?;
                    issued += 1;
                }
                // The applier was told it has records to issue and has
                // none: on a kernel without preemption (UML) it would spin
                // and starve the thread that could unblock it.
                self.empty_issues = if issued == 0 { self.empty_issues + 1 } else { 0 };
                if self.empty_issues > EMPTY_ISSUE_BOUND {
                    return Err(Violation::Liveness(format!(
                        "the target's applier was given Issue {EMPTY_ISSUE_BOUND} times in a row with nothing to issue (it spins): {}",
                        self.state()
                    )));
                }
            }
        }
        self.tgt_wakes();
        let d = self.cpu();
        self.schedule(Actor::TgtApplier, d);
        Ok(())
    }

    /// A SYNC record: a barrier, executed as a flush of the data device
    /// (SYNC_DONE) and a superblock write.
    fn issue_sync(&mut self, v: IssueView) -> R<()> {
        if let Some(first) = self.books.pending_tgt.range(..self.tg(v.seq)).next() {
            return Err(Violation::I2(format!("SYNC {} started before record {first} was applied", v.seq)));
        }
        let Some((_, _, flush)) = self.tgt.sync_meta(&v.header) else {
            return Err(Violation::Protocol(format!("no superblock for SYNC record {}", v.seq)));
        };
        let fail = self.in_windows(&self.p.fails.clone());
        let lat = self.p.tgt_lat * if flush { 2 } else { 1 };
        if flush {
            self.flush_marks.insert(v.seq, self.books.cache_mark());
        }
        self.dev_ops.insert(v.seq, v);
        self.at(self.now + lat, Ev::DevDone { seq: v.seq, ok: !fail, epoch: self.tgt_epoch });
        Ok(())
    }

    fn issue(&mut self, v: IssueView) -> R<()> {
        if v.header.kind == Kind::Sync {
            return self.issue_sync(v);
        }
        if v.header.kind == Kind::DigestReq {
            // A read of the range, hashed when it ends.
            let fail = self.in_windows(&self.p.fails.clone());
            let t = self.now + self.p.tgt_lat + (u64::from(v.header.count) * SECT as u64 * SEC).div_ceil(self.p.tgt_bw);
            self.dev_ops.insert(v.seq, v);
            self.at(t, Ev::DevDone { seq: v.seq, ok: !fail, epoch: self.tgt_epoch });
            return Ok(());
        }
        self.books.check_issue(self.tg(v.seq))?;
        if v.header.kind.is_data() {
            let (a, b) = (v.header.sector, v.header.sector + u64::from(v.header.count));
            if let Some(l) = self.lockers.iter().flatten().find(|&&(s, c)| s < b && a < s + c) {
                return Err(Violation::Protocol(format!(
                    "stream record {} written inside local lock {l:?}",
                    v.seq
                )));
            }
            // Bios are built from the log's pages: every piece must start
            // on the payload alignment and be whole sectors.
            let align = self.p.payload_align.clamp(8, PAGE_SIZE);
            for (_, off, len) in v.chunks() {
                if align >= SECT && (off % align != 0 || len % SECT != 0) {
                    return Err(Violation::Protocol(format!(
                        "record {} payload piece at {off}+{len} is not aligned to {align}",
                        v.seq
                    )));
                }
            }
        }
        let fail = self.in_windows(&self.p.fails.clone());
        let slow = if self.in_windows(&self.p.slows.clone()) { 10 } else { 1 };
        let bytes = if v.header.kind == Kind::Write { u64::from(v.header.len) } else { 4096 };
        let mut lat = slow * self.p.tgt_lat;
        if v.header.flags & FLAG_PREFLUSH != 0 || v.header.kind == Kind::Flush {
            lat += slow * self.p.tgt_lat;
            self.flush_marks.insert(v.seq, self.books.cache_mark());
        }
        let mut t = self.now + slow * (bytes * SEC).div_ceil(self.p.tgt_bw) + lat;
        if self.p.jitter {
            t += self.rng.below(lat + 1);
        }
        self.dev_ops.insert(v.seq, v);
        self.at(t, Ev::DevDone { seq: v.seq, ok: !fail, epoch: self.tgt_epoch });
        Ok(())
    }

    fn dev_done(&mut self, seq: u64, ok: bool, epoch: u64) -> R<()> {
        if epoch != self.tgt_epoch {
            // Issued before a target crash: lost with it.
            return Ok(());
        }
        let v = self
            .dev_ops
            .remove(&seq)
            .ok_or_else(|| Violation::Protocol(format!("device done for unknown seq {seq}")))?;
        if let Some(mark) = self.flush_marks.remove(&seq) {
            if ok {
                self.books.cache_flushed(mark);
            }
        }
        if v.header.kind == Kind::DigestReq {
            let (a, n) = (v.header.sector as usize * SECT, v.header.count as usize * SECT);
            let d = ok.then(|| digest(&self.books.tgt_disk[a..a + n]));
            if !self.tgt.digest_done(seq, d, self.now) {
                return Err(Violation::Protocol(format!("target refused digest_done({seq})")));
            }
            let w = self.tgt.take_wakes();
            self.deliver(w, true);
            self.maybe_tgt_stopped();
            return Ok(());
        }
        if ok && v.header.kind == Kind::Sync {
            if let Some((g, consistent, _)) = self.tgt.sync_meta(&v.header) {
                self.log(|| format!("target superblock {g:?} consistent={consistent} (SYNC {seq})"));
                self.tgt_sb = (g, consistent);
                if consistent && self.tg(seq) > self.books.replay_until {
                    self.books.check_consistent(self.tg(seq))?;
                }
            }
        } else if ok {
            let h = v.header;
            if self.p.gens && self.tgt.generations().1 && self.books.hist.get(&self.tg(seq)).is_some_and(|x| x.resync) {
                return Err(Violation::I2(format!(
                    "resync record {seq} applied while the target says it is consistent"
                )));
            }
            let mut payload = Vec::new();
            if h.kind == Kind::Write {
                gather(self.tgt.pages(), v.chunks(), &mut payload);
            }
            let zero_writes = h.kind == Kind::WriteZeroes && self.tgt.zeroes_by_writes();
            let _ = zero_writes;
            self.books.apply_tgt(self.tg(seq), h.kind, h.sector, h.count, &payload)?;
            if h.flags & FLAG_FUA != 0 && h.kind.is_data() {
                self.books.cache_fua(h.sector, h.count);
            }
            self.last_progress = self.now;
        }
        let status = if ok { IoStatus::Ok } else { IoStatus::Failed };
        if !self.tgt.io_done(seq, status, self.now) {
            return Err(Violation::Protocol(format!("target refused io_done({seq})")));
        }
        let w = self.tgt.take_wakes();
        self.notify(w);
        self.maybe_tgt_stopped();
        Ok(())
    }

    /// A device completion (a record's, or a flush's) wakes the target's
    /// threads: under its lock, as the glue does (the mutant wakes them
    /// after dropping it).
    fn notify(&mut self, w: Wakes) {
        if self.mutant == Mutant::NotifyAfterUnlock {
            // The lock is dropped here; the wake-up comes after.
            let d = self.rng.range(US, 30 * US);
            self.notify_pending |= bits_of(w);
            self.at(self.now + d, Ev::LateNotify { wakes: bits_of(w), epoch: self.tgt_epoch });
        } else {
            self.deliver(w, true);
        }
    }

    fn tgt_sender(&mut self) -> R<()> {
        let mut buf = std::mem::take(&mut self.tgt_frames);
        let step = self.tgt.poll_sender(&self.c, self.now, &mut buf);
        let r = self.tgt_sender_step(step, &buf);
        self.tgt_frames = buf;
        r
    }

    fn tgt_sender_step(&mut self, step: TStep, buf: &[u8]) -> R<()> {
        self.tgt_wakes();
        match step {
            TStep::Exit => {
                self.gone(Actor::TgtSender);
                self.maybe_tgt_stopped();
                return Ok(());
            }
            TStep::Sleep { until } => {
                self.sleep(Actor::TgtSender, until);
                return Ok(());
            }
            TStep::Send { conn, len } => {
                let nc = self.t_conn.filter(|c| c.0 == conn).map_or(0, |c| c.1);
                if nc != 0 && !self.net.is_broken(nc) && !self.window_open(nc, TO_SOURCE, len as u64) {
                    // Blocked on the window: the frames are encoded, so
                    // hold them (the kernel would sit in sendmsg).
                    return Err(Violation::Protocol("target control frames overran the window".into()));
                }
                let mut frames = Vec::new();
                let mut at = 0usize;
                while at < len {
                    let n = decode_header(&buf[at..len]).map(|(h, _)| h.frame_len()).unwrap_or(len - at);
                    frames.push(buf[at..at + n].to_vec());
                    at += n;
                }
                let ok = nc != 0 && self.transmit(nc, TO_SOURCE, frames);
                self.tgt.on_sent(conn, ok, self.now);
            }
            TStep::Close { conn } => {
                if let Some((c, nc)) = self.t_conn {
                    if c == conn {
                        self.break_conn(nc);
                    }
                }
                self.tgt.on_shutdown(conn);
            }
        }
        self.tgt_wakes();
        let d = self.cpu();
        self.schedule(Actor::TgtSender, d);
        Ok(())
    }

    fn tgt_locker(&mut self) -> R<()> {
        let Some((id, s, c)) = self.locker_waiting else {
            self.gone(Actor::TgtLocker);
            return Ok(());
        };
        let r = self.tgt.lock_poll(self.now);
        self.tgt_wakes();
        self.lock_reply(id, s, c, r)
    }

    fn lock_reply(&mut self, id: usize, s: u64, c: u64, r: LockReply) -> R<()> {
        match r {
            LockReply::Granted => {
                self.locker_waiting = None;
                self.gone(Actor::TgtLocker);
                self.lockers[id] = Some((s, c));
                self.log(|| format!("locker {id} holds {s}+{c}"));
                let t = self.now + self.rng.range(MS / 10, self.p.lock_hold);
                self.at(t, Ev::LockerRelease { id });
            }
            LockReply::Wait { until } => {
                self.locker_waiting = Some((id, s, c));
                self.sleep(Actor::TgtLocker, Some(until));
            }
            LockReply::Busy => {
                self.locker_waiting = None;
                self.gone(Actor::TgtLocker);
                if self.faults_on {
                    let t = self.now + self.rng.range(MS / 10, 5 * MS);
                    self.at(t, Ev::LockerTry { id });
                }
            }
            LockReply::Invalid => return Err(Violation::Protocol("local lock range invalid".into())),
        }
        Ok(())
    }

    fn locker_try(&mut self, id: usize) -> R<()> {
        if !self.faults_on || !self.tgt_running || self.lockers[id].is_some() {
            return Ok(());
        }
        let regions = self.p.dev_sectors / u64::from(self.p.region_sectors);
        let first = self.rng.below(regions);
        let n = self.rng.range(1, 2).min(regions - first);
        let sector = first * u64::from(self.p.region_sectors);
        let count = n * u64::from(self.p.region_sectors);
        if id == 0 {
            // Through `dmsetup message .. lock`: one waiter at a time.
            if self.locker_waiting.is_some() {
                let t = self.now + self.rng.range(MS, 5 * MS);
                self.at(t, Ev::LockerTry { id });
                return Ok(());
            }
            let r = self.tgt.lock_request(sector, count, self.now);
            self.tgt_wakes();
            return self.lock_reply(id, sector, count, r);
        }
        match self.tgt.local_lock(sector, count) {
            LocalLock::Granted => {
                self.lockers[id] = Some((sector, count));
                let t = self.now + self.rng.range(MS / 10, self.p.lock_hold);
                self.at(t, Ev::LockerRelease { id });
            }
            LocalLock::WouldBlock | LocalLock::Full => {
                let t = self.now + self.rng.range(MS / 10, 5 * MS);
                self.at(t, Ev::LockerTry { id });
            }
            LocalLock::Invalid => return Err(Violation::Protocol("local lock range invalid".into())),
        }
        self.tgt_wakes();
        Ok(())
    }

    fn target_read(&mut self) -> R<()> {
        if self.faults_on || self.issued < self.p.ops {
            let t = self.now + self.rng.range(100 * US, 5 * MS);
            self.at(t, Ev::TargetRead);
        }
        if !self.tgt_running || self.rng.below(1000) >= self.p.p_tgt_read {
            return Ok(());
        }
        let count = self.rng.range(1, 64).min(self.p.dev_sectors);
        let sector = self.rng.below(self.p.dev_sectors - count + 1);
        if self.tgt.read_refused() {
            // In the middle of a sync: the read fails (EIO).
            return Ok(());
        }
        if self.tgt.read_arrives(sector, count) {
            self.check_read(sector, count)?;
        } else {
            self.reads.push_back((sector, count));
        }
        self.tgt_wakes();
        Ok(())
    }

    /// A read through the target went to the device: no unapplied stream
    /// write may touch its range.
    fn check_read(&self, sector: u64, count: u64) -> R<()> {
        if self.tgt.commit_log().pending_in_range(sector, count) {
            return Err(Violation::Protocol(format!(
                "read of {sector}+{count} went while a stream write to it was pending"
            )));
        }
        Ok(())
    }

    fn maybe_tgt_stopped(&mut self) {
        if self.tgt_running || !self.tgt.is_stopping() {
            return;
        }
        let all_gone = [
            Actor::TgtListener,
            Actor::TgtReceiver,
            Actor::TgtApplier,
            Actor::TgtSender,
        ]
        .iter()
        .all(|a| self.actors[a.index()].state == ActState::Gone);
        if !all_gone || !self.tgt_reloading {
            return;
        }
        // Every thread returned: the table is freed and a new one loaded.
        self.tgt.stopped();
        self.freed.insert(self.tgt_epoch);
        self.tgt_epoch += 1;
        self.notify_pending = 0;
        self.log(|| "target reloaded".into());
        self.replace_target();
        self.tgt_reloading = false;
    }

    fn replace_target(&mut self) {
        self.dev_ops.clear();
        self.t_conn = None;
        self.t_kept = None;
        self.t_filling = None;
        self.backlog.clear();
        for l in self.lockers.iter_mut() {
            *l = None;
        }
        if self.locker_waiting.take().is_some() {
            self.gone(Actor::TgtLocker);
        }
        // Reads in flight through the old table were failed or done.
        self.reads.clear();
        self.tgt = new_target(self.tcfg, &self.p, self.mutant);
        if self.p.gens {
            if self.p.tgt_meta_lost {
                self.log(|| "the target comes back with a blank metadata device".into());
                self.tgt_sb = (Generations::default(), false);
            }
            self.tgt.attach_generations(self.tgt_sb.0, self.tgt_sb.1);
        }
        // The new target adopts the source's base and records after it
        // are applied again: until the replay passes what was applied
        // before, older data may overwrite newer.
        self.books.replay_until = self.books.replay_until.max(self.books.max_applied);
        self.start_target();
    }

    fn target_restart(&mut self) -> R<()> {
        if !self.faults_on || !self.tgt_running {
            return Ok(());
        }
        self.log(|| format!("target crash (applied up to {})", self.books.max_applied));
        // A superblock write in flight may have reached the device.
        let landed: Vec<_> = self.dev_ops.values().filter_map(|v| self.tgt.sync_meta(&v.header)).collect();
        for (g, c, _) in landed {
            if self.rng.chance(1, 2) {
                self.tgt_sb = (g, c);
            }
        }
        // The host crashes and comes back: commit log, lock table,
        // connection and in-flight device writes are gone; the device
        // keeps what was written, or (a volatile cache) what a flush
        // covered and any part of the rest.
        if self.p.volatile_cache {
            // Records below the ring's oldest are gone from the source
            // (an old table's, or dropped by degraded mode): durable ones
            // never reach the cache's undo log.
            let oldest = self.sg(self.src.ring().oldest_seq().unwrap_or(self.src.ring().next_seq()));
            let rng = &mut self.rng;
            let src = &self.src;
            let lost = self.books.power_loss(|n| rng.below(n + 1), |seq, sector| seq < oldest && src.sector_is_dirty(sector))?;
            self.log(|| format!("power loss: {lost} sectors went back to an older version"));
        }
        self.flush_marks.clear();
        if let Some((_, nc)) = self.t_conn {
            self.break_conn(nc);
        }
        for a in [Actor::TgtListener, Actor::TgtReceiver, Actor::TgtApplier, Actor::TgtSender, Actor::TgtLocker] {
            self.gone(a);
        }
        self.tgt_epoch += 1;
        self.notify_pending = 0;
        self.replace_target();
        Ok(())
    }

    fn target_reload(&mut self) -> R<()> {
        if !self.faults_on || !self.tgt_running || self.tgt_reloading {
            return Ok(());
        }
        self.log(|| "target reload: suspend and remove".into());
        self.tgt_reloading = true;
        self.tgt_running = false;
        // presuspend, then postsuspend stops the threads; the glue shuts
        // the sockets down.
        self.tgt.begin_suspend(self.now);
        self.tgt.stop();
        self.tgt_wakes();
        if let Some((_, nc)) = self.t_conn {
            self.break_conn(nc);
        }
        // Failed waiting reads end (a stopped applier cannot release them).
        while self.reads.pop_front().is_some() {
            self.tgt.read_failed();
        }
        if self.locker_waiting.take().is_some() {
            self.gone(Actor::TgtLocker);
        }
        self.unblock(Actor::TgtListener);
        self.unblock(Actor::TgtReceiver);
        self.maybe_tgt_stopped();
        Ok(())
    }
}

fn bits_of(w: Wakes) -> u8 {
    w.iter().fold(0u8, |b, i| b | (1 << i))
}

fn wakes_from_bits(b: u8) -> Wakes {
    (0..8u8).filter(|i| b & (1 << i) != 0).fold(Wakes::NONE, |w, i| w.with(Wakes::one(i)))
}

/// What a reserved record's payload is, for its publication.
enum Unpub {
    /// A host write's bytes (the sector pattern of its request).
    Host(HostReq),
    /// A repair's or resync piece's bytes, as read from the device.
    Data(Vec<u8>),
}

/// Whether a host write's payload is copied in the critical section that
/// accepts it (short writes), as the kernel does; longer ones are reserved.
fn inline(req: &HostReq) -> bool {
    req.op != HostOp::Write || src_m::copies_inline(req.count as usize * SECT)
}

fn host_write(req: &HostReq) -> HostWrite {
    HostWrite { op: req.op, sector: req.sector, count: req.count, flags: req.flags }
}

fn fill(
    seed: u64,
    req: &HostReq,
    wr: &mut specmirror_core::log::ring::RingWriter<'_, VecPages>,
) -> Result<(), specmirror_core::log::ring::RingError> {
    let mut buf = [0u8; SECT];
    for s in req.sector..req.sector + u64::from(req.count) {
        crate::check::sector_pattern(seed, req.wid, s, &mut buf);
        wr.write(&buf)?;
    }
    Ok(())
}

fn new_source(cfg: SourceConfig, p: &Params, mutant: Mutant, first_seq: u64) -> Src {
    let mut s = Source::new(
        cfg,
        VecPages::new(p.ring_pages),
        first_seq,
        vec![HotSlot::default(); p.hot_regions],
        vec![InflightSlot::default(); p.inflight_slots],
    )
    .expect("source config");
    s.set_payload_align(p.payload_align).expect("payload alignment");
    s.set_degrade_after(p.degrade_after);
    s.set_max_pending(p.max_pending);
    s.mutant = mutant;
    s.plant_in_ring();
    s
}

/// The activity log of `p.al_regions` regions, if any (generator 15).
fn attach_al(p: &Params, src: &mut Src) {
    if p.al_regions > 0 {
        src.attach_activity_log(vec![HotSlot::default(); p.al_regions]).expect("activity log");
    }
}

/// The bytes only the source holds at the start (`p.presync`), and the
/// dirty bitmap that says so (every chunk with `p.presync_all`).
fn presync(seed: u64, p: &Params, src: &mut Src, books: &mut Books) {
    if p.chunk_sectors == 0 {
        return;
    }
    let chunks = p.dev_sectors.div_ceil(u64::from(p.chunk_sectors));
    let pages = bitmap::blocks_for(chunks) as usize;
    let bits = Bitmap::new(VecPages::new(pages), chunks).expect("bitmap pages");
    src.attach_bitmap(bits, p.chunk_sectors).expect("bitmap fits");
    attach_al(p, src);
    src.set_sync_rate(p.sync_rate_kib);
    let mut r = Rng::new(mix(seed, 0x5C5C));
    let cs = u64::from(p.chunk_sectors);
    for c in 0..chunks {
        if r.below(1000) < p.presync {
            let first = c * cs;
            let n = cs.min(p.dev_sectors - first);
            let mut buf = [0u8; SECT];
            for s in first..first + n {
                // A write the target never saw: wid past any host write's.
                sector_pattern(seed, PRESYNC_WID + c, s, &mut buf);
                let off = s as usize * SECT;
                books.src_disk[off..off + SECT].copy_from_slice(&buf);
            }
            src.mark_dirty(c, c);
        }
    }
    if p.presync_all {
        src.mark_dirty(0, chunks);
    }
}

/// Applier `Issue` steps in a row that issue nothing before the run is
/// failed as a spin (a predicate that says "work" where there is none).
const EMPTY_ISSUE_BOUND: u64 = 1000;

/// The source's `initial_sync` mode for `p`.
fn initial_mode(p: &Params) -> InitialSync {
    if p.initial_none {
        InitialSync::None
    } else if p.initial_checksum {
        InitialSync::Checksum
    } else {
        InitialSync::Full
    }
}

/// Pattern ids of the data only the source holds at the start.
const PRESYNC_WID: u64 = 1 << 62;

/// A fresh target machine over heap storage of `p`'s sizes.
fn new_target(cfg: TargetConfig, p: &Params, mutant: Mutant) -> Tgt {
    let mut t = Target::new(
        cfg,
        VecPages::new(p.log_pages),
        vec![WindowSlot::EMPTY; p.window_slots],
        vec![0; p.filter_buckets],
        vec![LockSlot::EMPTY; p.lock_slots],
    )
    .expect("target config");
    t.set_payload_align(p.payload_align).expect("payload alignment");
    t.mutant = mutant;
    t.plant_in_log();
    t
}

/// Runs one seed in one mode with the current generator.
pub fn run_seed(seed: u64, mode: Mode, verbose: bool) -> Result<Outcome, Failure> {
    Sim::new(seed, mode, GEN_VERSION, Mutant::None, verbose).run()
}

/// Runs one seed in one mode with generator version `gen`.
pub fn run_seed_gen(seed: u64, mode: Mode, gen: u32, verbose: bool) -> Result<Outcome, Failure> {
    Sim::new(seed, mode, gen, Mutant::None, verbose).run()
}

/// Runs one seed with a planted bug.
pub fn run_mutant(seed: u64, mode: Mode, mutant: Mutant, verbose: bool) -> Result<Outcome, Failure> {
    Sim::new(seed, mode, GEN_VERSION, mutant, verbose).run()
}

/// Runs one seed with a planted bug, with generator version `gen`.
pub fn run_mutant_gen(seed: u64, mode: Mode, gen: u32, mutant: Mutant, verbose: bool) -> Result<Outcome, Failure> {
    Sim::new(seed, mode, gen, mutant, verbose).run()
}


/// `DMSM_EVDEBUG` set: every event is logged with the source's points
/// (read once; the environment is not looked up per event).
fn ev_debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("DMSM_EVDEBUG").is_some())
}

//! The discrete-event simulation: a source host and disk, a lossy link, a
//! target with a slow or failing disk and local lockers, all in virtual
//! time, driven by one seed. Checks I1-I4 and liveness as it goes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;

use specmirror_core::log::commit::{IssueView, WindowSlot, SCAN_LIMIT};
use specmirror_core::log::filter::FILTER_BUCKETS;
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::pages::PAGE_SIZE;
use specmirror_core::log::record::{
    decode_header, Crc32c, Kind, FLAG_FUA, FLAG_PREFLUSH, HEADER_LEN, SECTOR_SIZE,
};
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::inflight::InflightSlot;
use specmirror_core::transport::proto::source::{
    HostOp, HostWrite, LinkState, Source, SourceConfig, SourceRecv, Submit,
};
use specmirror_core::transport::proto::target::{LocalLock, Target, TargetConfig, TargetRecv};
use specmirror_core::transport::proto::{encode_hello, Completion, Mode};

use crate::rng::{mix, Rng};

/// CRC-32C through the `crc32c` crate (standard value, chained).
#[derive(Clone, Copy, Debug, Default)]
pub struct Crc;

impl Crc32c for Crc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }
}

pub use specmirror_core::vec_pages::VecPages;

type Src = Source<VecPages, Vec<HotSlot>, Vec<InflightSlot>>;
type Tgt = Target<VecPages, Vec<WindowSlot>, Vec<u32>, Vec<LockSlot>>;

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
const SEC: u64 = 1_000_000_000;
const SECT: usize = SECTOR_SIZE;

/// Which invariant broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Devices differ after quiesce.
    I1(String),
    /// Target image is not a flush boundary plus part of the next epoch.
    I2(String),
    /// A record left the ring before the target applied it.
    I3(String),
    /// A record applied out of order / twice with a changed result.
    I4(String),
    /// No progress after faults stopped.
    Liveness(String),
    /// A state machine misbehaved in a way the glue cannot accept.
    Protocol(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::I1(s) => write!(f, "I1 violated: {s}"),
            Violation::I2(s) => write!(f, "I2 violated: {s}"),
            Violation::I3(s) => write!(f, "I3 violated: {s}"),
            Violation::I4(s) => write!(f, "I4 violated: {s}"),
            Violation::Liveness(s) => write!(f, "liveness violated: {s}"),
            Violation::Protocol(s) => write!(f, "protocol error: {s}"),
        }
    }
}

/// A failed run.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Seed.
    pub seed: u64,
    /// Mode.
    pub mode: Mode,
    /// What broke.
    pub violation: Violation,
    /// Virtual time of the failure (ns).
    pub at: u64,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} mode {}: {} (at t={:.3} ms)",
            self.seed,
            mode_name(self.mode),
            self.violation,
            self.at as f64 / MS as f64
        )
    }
}

/// Name of a mode as on the command line.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Speculative => "speculative",
        Mode::LockSync => "lock-sync",
    }
}

/// Summary of a passed run.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Host operations completed.
    pub ops: u64,
    /// Records appended.
    pub records: u64,
    /// Virtual time at quiesce (ns).
    pub end: u64,
    /// Resends, NAKs, rejections, reconnects, crc errors (source view).
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
    }
}

/// Per-seed randomized parameters.
#[derive(Clone, Debug)]
pub struct Params {
    /// Device size in sectors.
    pub dev_sectors: u64,
    /// Region size in sectors.
    pub region_sectors: u32,
    /// Hot regions.
    pub hot_regions: usize,
    /// In-flight slots.
    pub inflight_slots: usize,
    /// Rollback ring pages.
    pub ring_pages: usize,
    /// Commit log pages.
    pub log_pages: usize,
    /// Lock table slots.
    pub lock_slots: usize,
    /// Commit log issue window slots (at least 1).
    pub window_slots: usize,
    /// Region filter buckets (a power of two).
    pub filter_buckets: usize,
    /// Target ack batching.
    pub ack_every: u32,
    /// Completion mode.
    pub completion: Completion,
    /// Host operations to run.
    pub ops: u64,
    /// Host queue depth.
    pub qd: usize,
    /// Largest write in sectors.
    pub max_write: u32,
    /// Workload kind: 0 random, 1 sequential, 2 overlapping hot spot, 3 mixed.
    pub workload: u8,
    /// Per mille of flushes / discards / write-zeroes / FUA / PREFLUSH.
    pub p_flush: u64,
    /// Per mille discards.
    pub p_discard: u64,
    /// Per mille write-zeroes.
    pub p_zeroes: u64,
    /// Per mille FUA.
    pub p_fua: u64,
    /// Per mille PREFLUSH.
    pub p_preflush: u64,
    /// One-way link latency (ns).
    pub latency: u64,
    /// Link bandwidth (bytes/s).
    pub link_bw: u64,
    /// TCP window (bytes in flight source to target).
    pub window: u64,
    /// Corruption probability per frame, per million.
    pub corrupt_ppm: u64,
    /// Link down windows (start, end) ns.
    pub downs: Vec<(u64, u64)>,
    /// Source disk latency / bandwidth.
    pub src_lat: u64,
    /// Source disk bandwidth bytes/s.
    pub src_bw: u64,
    /// Target disk latency.
    pub tgt_lat: u64,
    /// Target disk bandwidth bytes/s.
    pub tgt_bw: u64,
    /// Target failing windows.
    pub fails: Vec<(u64, u64)>,
    /// Target slow windows (x10 slower).
    pub slows: Vec<(u64, u64)>,
    /// Local lockers on the target.
    pub lockers: usize,
    /// Longest local lock hold (ns).
    pub lock_hold: u64,
    /// Time after which no fault starts and every fault is over.
    pub faults_end: u64,
    /// Host think time between ops (ns, max).
    pub think: u64,
    /// Device completions jitter (concurrent I/Os complete out of order).
    pub jitter: bool,
    /// Target restarts (crash and reload) at these times.
    pub restarts: Vec<u64>,
}

impl Params {
    /// Derives parameters from the seed with generator version `gen`
    /// (1..=[`GEN_VERSION`]; older versions stay so kept seeds replay
    /// exactly).
    pub fn from_seed(seed: u64, gen: u32) -> Params {
        let mut r = Rng::new(mix(seed, 0x5EED));
        let dev_mib = r.range(1, 8);
        let dev_sectors = dev_mib * 2048;
        let region_sectors = 1u32 << r.range(3, 10);
        let hot_regions = r.range(1, 16) as usize;
        let max_write = [8u32, 16, 64, 128][r.below(4) as usize];
        // Rings must hold the largest frame plus its LOCK/UNLOCK records.
        let min_pages = (max_write as usize * SECT + 4 * HEADER_LEN).div_ceil(PAGE_SIZE) + 1;
        let ring_pages = r.range(min_pages as u64, 300) as usize;
        let log_pages = r.range(min_pages as u64, 300) as usize;
        let faults_end = r.range(5 * MS, 1500 * MS);
        let windows = |r: &mut Rng, n: u64, maxlen: u64| {
            let mut v = Vec::new();
            for _ in 0..r.below(n + 1) {
                let s = r.below(faults_end);
                let e = (s + r.range(MS / 10, maxlen)).min(faults_end);
                v.push((s, e));
            }
            v.sort();
            v
        };
        let downs = windows(&mut r, 3, 200 * MS);
        let fails = windows(&mut r, 2, 100 * MS);
        let slows = windows(&mut r, 2, 300 * MS);
        let link_bw = [10u64, 50, 125, 1000][r.below(4) as usize] * 1_000_000;
        let mut p = Params {
            dev_sectors,
            region_sectors,
            hot_regions,
            inflight_slots: r.range(2, 48) as usize,
            ring_pages,
            log_pages,
            lock_slots: hot_regions + r.range(4, 16) as usize,
            window_slots: SCAN_LIMIT,
            filter_buckets: FILTER_BUCKETS,
            ack_every: r.range(1, 64) as u32,
            completion: if r.chance(1, 3) {
                Completion::Sync
            } else {
                Completion::Async
            },
            ops: r.range(50, 500),
            qd: r.range(1, 16) as usize,
            max_write,
            workload: r.below(4) as u8,
            p_flush: r.range(0, 100),
            p_discard: r.range(0, 50),
            p_zeroes: r.range(0, 50),
            p_fua: r.range(0, 100),
            p_preflush: r.range(0, 60),
            latency: r.range(10 * US, 5 * MS),
            link_bw,
            window: r.range(16 * 1024, 4 << 20),
            corrupt_ppm: [0u64, 1000, 10_000, 50_000][r.below(4) as usize],
            downs,
            src_lat: r.range(10 * US, 2 * MS),
            src_bw: r.range(50, 2000) * 1_000_000,
            tgt_lat: r.range(10 * US, 3 * MS),
            tgt_bw: r.range(20, 2000) * 1_000_000,
            fails,
            slows,
            lockers: r.below(4) as usize,
            lock_hold: r.range(MS, 100 * MS),
            faults_end,
            think: r.range(0, 2 * MS),
            jitter: false,
            restarts: Vec::new(),
        };
        if gen >= 2 {
            // Version 2: a quarter of the seeds are lock-heavy: local
            // lockers holding regions for long on a small commit log, so
            // LOCK_REJECTED and its hold/resume path get exercised.
            let mut r2 = Rng::new(mix(seed, 0x10C4));
            if r2.chance(1, 4) {
                p.lockers = r2.range(2, 5) as usize;
                p.lock_hold = r2.range(20 * MS, 300 * MS);
                p.log_pages = r2.range(min_pages as u64, 2 * min_pages as u64) as usize;
                p.workload = if r2.chance(1, 2) { 2 } else { 3 };
                p.tgt_bw = r2.range(20, 200) * 1_000_000;
            }
        }
        // Version 3: device completions jitter.
        p.jitter = gen >= 3;
        if gen >= 4 {
            // Version 4: a third of the seeds restart the target once or
            // twice while faults are on.
            let mut r4 = Rng::new(mix(seed, 0x4E57));
            if r4.chance(1, 3) {
                for _ in 0..r4.range(1, 2) {
                    p.restarts.push(r4.below(p.faults_end));
                }
            }
        }
        if gen >= 5 {
            // Version 5: a third of the seeds give the target a short
            // issue window (1-16 slots: a lower in-flight cap, the window
            // wrapping often) and a small region filter (1-64 buckets:
            // many collisions, one bucket for every region at worst).
            let mut r5 = Rng::new(mix(seed, 0x5707));
            if r5.chance(1, 3) {
                p.window_slots = r5.range(1, 16) as usize;
                p.filter_buckets = 1 << r5.range(0, 6);
            }
        }
        p
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    HostNext,
    LocalDone { seq: u64 },
    Arrive { to_target: bool, conn: u64 },
    DevDone { seq: u64, ok: bool, epoch: u64 },
    TargetRestart,
    LinkDown,
    LinkUp,
    Reconnect,
    LockerTry { id: usize },
    LockerRelease { id: usize },
    RetryTimer,
    FaultsOff,
}

#[derive(Clone, Copy, Debug)]
struct HostReq {
    wid: u64,
    op: HostOp,
    sector: u64,
    count: u32,
    flags: u16,
}

/// One recorded data/flush record of the write history, by seq.
#[derive(Clone, Copy, Debug)]
struct Hist {
    wid: u64,
    kind: Kind,
    sector: u64,
    count: u32,
    barrier: bool,
}

#[derive(Default)]
struct Dir {
    /// (arrival time, bytes) in order.
    flight: VecDeque<(u64, Vec<u8>, bool)>,
    rx: VecDeque<(Vec<u8>, bool)>,
    wire_free: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Disk {
    free_at: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Locker {
    held: Option<(u64, u64)>,
}

trait HeldIter<'a> {
    fn flatten_held(self) -> Box<dyn Iterator<Item = (u64, u64)> + 'a>;
}

impl<'a> HeldIter<'a> for std::slice::Iter<'a, Locker> {
    fn flatten_held(self) -> Box<dyn Iterator<Item = (u64, u64)> + 'a> {
        Box::new(self.filter_map(|l| l.held))
    }
}

/// A fresh target machine over heap storage of `p`'s sizes.
fn new_target(tcfg: TargetConfig, p: &Params) -> Tgt {
    Target::new(
        tcfg,
        VecPages::new(p.log_pages),
        vec![WindowSlot::EMPTY; p.window_slots],
        vec![0; p.filter_buckets],
        vec![LockSlot::EMPTY; p.lock_slots],
    )
    .expect("target config")
}

/// Fill byte pattern of sector `s` written by write `wid` (0: zeros).
pub fn sector_pattern(seed: u64, wid: u64, s: u64, out: &mut [u8]) {
    if wid == 0 {
        out.fill(0);
        return;
    }
    let h = mix(mix(seed, wid), s);
    for (i, b) in out.iter_mut().enumerate() {
        *b = (h >> ((i % 8) * 8)) as u8 ^ (i / 8) as u8;
    }
}

/// The simulation state.
pub struct Sim {
    seed: u64,
    mode: Mode,
    p: Params,
    verbose: bool,
    now: u64,
    order: u64,
    events: u64,
    q: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    rng: Rng,
    c: Crc,
    src: Src,
    tgt: Tgt,
    src_disk: Vec<u8>,
    tgt_disk: Vec<u8>,
    /// Target: seq of the record that last wrote each sector.
    tgt_seq: Vec<u64>,
    /// History: seqs of writes per sector, in order.
    sec_hist: Vec<Vec<u64>>,
    hist: BTreeMap<u64, Hist>,
    barriers: BTreeSet<u64>,
    /// Data/flush records not yet applied on the target.
    pending_tgt: BTreeSet<u64>,
    // host
    next_wid: u64,
    issued: u64,
    completed: u64,
    outstanding: usize,
    parked: VecDeque<HostReq>,
    accepted: BTreeMap<u64, HostReq>,
    seq_cursor: u64,
    // link
    link_up: bool,
    conn: u64,
    active: bool,
    reconnect_pending: bool,
    backoff: u64,
    to_tgt: Dir,
    to_src: Dir,
    unconsumed: u64,
    // disks
    sdisk: Disk,
    tdisk: Disk,
    dev_ops: BTreeMap<u64, IssueView>,
    retry_armed: bool,
    lockers: Vec<Locker>,
    faults_on: bool,
    last_progress: u64,
    frame_buf: Vec<u8>,
    /// Something changed that may unblock parked host writes.
    host_kick: bool,
    tcfg: TargetConfig,
    /// Incremented at each target restart.
    tgt_epoch: u64,
    /// Highest data/flush seq applied on the target device so far.
    max_applied: u64,
    /// After a target restart: replays up to here may re-apply records.
    replay_until: u64,
    outcome: Outcome,
}

type R<T> = Result<T, Violation>;

impl Sim {
    /// Builds the simulation for `seed` in `mode` (parameter generator
    /// version `gen`).
    pub fn new(seed: u64, mode: Mode, gen: u32, verbose: bool) -> Sim {
        let p = Params::from_seed(seed, gen);
        let c = Crc;
        let scfg = SourceConfig {
            region_sectors: p.region_sectors,
            mode,
            completion: p.completion,
            dev_sectors: p.dev_sectors,
            generation: mix(seed, 7) | 1,
        };
        let src = Source::new(
            scfg,
            VecPages::new(p.ring_pages),
            1,
            vec![HotSlot::default(); p.hot_regions],
            vec![InflightSlot::default(); p.inflight_slots],
        )
        .expect("source config");
        let tcfg = TargetConfig {
            region_sectors: p.region_sectors,
            dev_sectors: p.dev_sectors,
            ack_every: p.ack_every,
        };
        let tgt = new_target(tcfg, &p);
        let bytes = p.dev_sectors as usize * SECT;
        let nsec = p.dev_sectors as usize;
        let lockers = vec![Locker::default(); p.lockers];
        Sim {
            seed,
            mode,
            verbose,
            now: 0,
            order: 0,
            events: 0,
            q: BinaryHeap::new(),
            rng: Rng::new(mix(seed, 0xA11CE)),
            c,
            src,
            tgt,
            src_disk: vec![0; bytes],
            tgt_disk: vec![0; bytes],
            tgt_seq: vec![0; nsec],
            sec_hist: vec![Vec::new(); nsec],
            hist: BTreeMap::new(),
            barriers: BTreeSet::new(),
            pending_tgt: BTreeSet::new(),
            next_wid: 1,
            issued: 0,
            completed: 0,
            outstanding: 0,
            parked: VecDeque::new(),
            accepted: BTreeMap::new(),
            seq_cursor: 0,
            link_up: true,
            conn: 0,
            active: false,
            reconnect_pending: false,
            backoff: MS,
            to_tgt: Dir::default(),
            to_src: Dir::default(),
            unconsumed: 0,
            sdisk: Disk::default(),
            tdisk: Disk::default(),
            dev_ops: BTreeMap::new(),
            retry_armed: false,
            lockers,
            faults_on: true,
            last_progress: 0,
            frame_buf: vec![0; HEADER_LEN + (1 << 20)],
            host_kick: false,
            tcfg,
            tgt_epoch: 0,
            max_applied: 0,
            replay_until: 0,
            outcome: Outcome::default(),
            p,
        }
    }

    fn at(&mut self, t: u64, e: Ev) {
        self.order += 1;
        self.q.push(Reverse((t, self.order, e)));
    }

    fn log(&self, msg: impl FnOnce() -> String) {
        if self.verbose {
            println!("[{:>12.6} ms] {}", self.now as f64 / MS as f64, msg());
        }
    }

    /// Runs to quiesce or failure.
    pub fn run(mut self) -> Result<Outcome, Failure> {
        match self.run_inner() {
            Ok(()) => {
                let s = self.src.stats();
                self.outcome.ops = self.completed;
                self.outcome.records = self.src.ring().next_seq() - 1;
                self.outcome.end = self.now;
                self.outcome.resends = s.resends;
                self.outcome.naks = s.naks;
                self.outcome.rejections = s.lock_rejections;
                self.outcome.reconnects = s.reconnects;
                self.outcome.crc_errors = self.tgt.stats().crc_errors;
                self.outcome.io_errors = self.tgt.stats().io_errors;
                self.outcome.events = self.events;
                let t = self.tgt.stats();
                self.outcome.lock_conflicts = t.lock_conflicts;
                self.outcome.local_waits = t.local_waits;
                self.outcome.busy = t.busy;
                self.outcome.waits = s.waits;
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

    fn run_inner(&mut self) -> R<()> {
        for i in 0..self.p.qd {
            self.at(i as u64 * US, Ev::HostNext);
        }
        for &(s, e) in &self.p.downs.clone() {
            self.at(s, Ev::LinkDown);
            self.at(e, Ev::LinkUp);
        }
        for &t in &self.p.restarts.clone() {
            self.at(t, Ev::TargetRestart);
        }
        for id in 0..self.p.lockers {
            let t = self.rng.range(0, self.p.faults_end);
            self.at(t, Ev::LockerTry { id });
        }
        self.at(self.p.faults_end, Ev::FaultsOff);
        self.at(0, Ev::Reconnect);
        self.reconnect_pending = true;
        loop {
            self.pump()?;
            self.check_i3()?;
            self.check_filter()?;
            if self.quiesced() {
                return self.check_i1();
            }
            let Some(Reverse((t, _, ev))) = self.q.pop() else {
                let holds: Vec<_> = self.src.holds().collect();
                let next = self.src.ring().peek_send().map(|v| v.header);
                return Err(Violation::Liveness(format!(
                    "deadlock: no event pending, {} host ops outstanding, ring {} records (send {} acked {}), log {} records (applied {}), link {:?}, holds {holds:?}, next {next:?}",
                    self.outstanding,
                    self.src.ring().len_records(),
                    self.src.ring().send_seq(),
                    self.src.acked_seq(),
                    self.tgt.commit_log().len_records(),
                    self.tgt.applied_seq(),
                    self.src.link_state()
                )));
            };
            self.now = t;
            self.events += 1;
            if !self.faults_on {
                let bound = 30 * SEC;
                if self.now > self.last_progress.max(self.p.faults_end) + bound {
                    return Err(Violation::Liveness(format!(
                        "no progress for {} s after faults stopped: {} of {} ops done, ring {} records (send {} acked {}), log {} records (applied {}), link {:?}, held {}",
                        bound / SEC,
                        self.completed,
                        self.p.ops,
                        self.src.ring().len_records(),
                        self.src.ring().send_seq(),
                        self.src.acked_seq(),
                        self.tgt.commit_log().len_records(),
                        self.tgt.applied_seq(),
                        self.src.link_state(),
                        self.src.is_held()
                    )));
                }
            }
            self.handle(ev)?;
        }
    }

    fn quiesced(&self) -> bool {
        !self.faults_on
            && self.completed == self.p.ops
            && self.outstanding == 0
            && self.src.is_idle()
            && self.tgt.commit_log().is_empty()
            && self.dev_ops.is_empty()
            && self.lockers.iter().all(|l| l.held.is_none())
    }

    fn in_windows(&self, w: &[(u64, u64)]) -> bool {
        self.faults_on && w.iter().any(|&(s, e)| self.now >= s && self.now < e)
    }

    fn handle(&mut self, ev: Ev) -> R<()> {
        match ev {
            Ev::HostNext => self.host_next(),
            Ev::LocalDone { seq } => {
                let req = self.accepted.remove(&seq).ok_or_else(|| {
                    Violation::Protocol(format!("local done for unknown seq {seq}"))
                })?;
                self.apply_src(&req);
                self.host_kick = true;
                if !self.src.local_done(seq, true) {
                    return Err(Violation::Protocol(format!(
                        "source refused local_done({seq})"
                    )));
                }
                Ok(())
            }
            Ev::Arrive { to_target, conn } => {
                if conn != self.conn || !self.active {
                    return Ok(());
                }
                let d = if to_target {
                    &mut self.to_tgt
                } else {
                    &mut self.to_src
                };
                if let Some((_, f, corrupt)) = d.flight.pop_front() {
                    d.rx.push_back((f, corrupt));
                }
                Ok(())
            }
            Ev::DevDone { seq, ok, epoch } => {
                if epoch != self.tgt_epoch {
                    // Issued before a target restart: lost with the crash.
                    return Ok(());
                }
                self.dev_done(seq, ok)
            }
            Ev::TargetRestart => {
                if !self.faults_on {
                    return Ok(());
                }
                self.log(|| format!("target restart (applied up to {})", self.max_applied));
                // The target host crashes and comes back: commit log, lock
                // table and in-flight device writes are gone, the device
                // keeps what was written. Local users are gone too.
                self.tgt_epoch += 1;
                self.dev_ops.clear();
                for l in self.lockers.iter_mut() {
                    l.held = None;
                }
                self.tgt = new_target(self.tcfg, &self.p);
                // The new target adopts the source's base and records after
                // it are applied again: until the replay passes what was
                // applied before the crash, older data may overwrite newer.
                self.replay_until = self.replay_until.max(self.max_applied);
                if self.active {
                    self.disconnect("target restart");
                }
                Ok(())
            }
            Ev::LinkDown => {
                self.link_up = false;
                self.log(|| "link down".into());
                if self.active {
                    self.disconnect("link down");
                }
                Ok(())
            }
            Ev::LinkUp => {
                self.link_up = !self.in_windows(&self.p.downs.clone());
                Ok(())
            }
            Ev::Reconnect => {
                self.reconnect_pending = false;
                if !self.link_up || self.active {
                    if !self.active {
                        self.schedule_reconnect();
                    }
                    return Ok(());
                }
                self.active = true;
                let hello = self.src.start_handshake();
                let mut buf = [0u8; 256];
                let n = encode_hello(&self.c, &hello, false, &mut buf)
                    .map_err(|e| Violation::Protocol(format!("encode hello: {e:?}")))?;
                self.log(|| format!("connect #{}: HELLO base {}", self.conn, hello.last_applied));
                self.send(true, buf[..n].to_vec());
                Ok(())
            }
            Ev::LockerTry { id } => {
                if !self.faults_on {
                    return Ok(());
                }
                let regions = self.p.dev_sectors / u64::from(self.p.region_sectors);
                let first = self.rng.below(regions);
                let n = self.rng.range(1, 2).min(regions - first);
                let sector = first * u64::from(self.p.region_sectors);
                let count = n * u64::from(self.p.region_sectors);
                self.check_filter_range(first, first + n - 1)?;
                match self.tgt.local_lock(sector, count) {
                    LocalLock::Granted => {
                        self.log(|| format!("locker {id} holds regions {first}+{n}"));
                        self.lockers[id].held = Some((sector, count));
                        let t = self.now + self.rng.range(MS / 10, self.p.lock_hold);
                        self.at(t, Ev::LockerRelease { id });
                    }
                    LocalLock::WouldBlock | LocalLock::Full => {
                        let t = self.now + self.rng.range(MS / 10, 5 * MS);
                        self.at(t, Ev::LockerTry { id });
                    }
                    LocalLock::Invalid => {
                        return Err(Violation::Protocol("local lock range invalid".into()))
                    }
                }
                Ok(())
            }
            Ev::LockerRelease { id } => {
                if let Some((s, c)) = self.lockers[id].held.take() {
                    self.log(|| format!("locker {id} releases"));
                    self.tgt.local_unlock(s, c);
                }
                if self.faults_on {
                    let t = self.now + self.rng.range(MS, 50 * MS);
                    self.at(t, Ev::LockerTry { id });
                }
                Ok(())
            }
            Ev::RetryTimer => {
                self.retry_armed = false;
                let n = self.tgt.retry_failed();
                self.log(|| format!("retry {n} failed records"));
                Ok(())
            }
            Ev::FaultsOff => {
                self.faults_on = false;
                self.last_progress = self.now;
                self.link_up = true;
                self.log(|| "faults off".into());
                if !self.active && !self.reconnect_pending {
                    self.schedule_reconnect();
                }
                Ok(())
            }
        }
    }

    fn schedule_reconnect(&mut self) {
        if self.reconnect_pending {
            return;
        }
        self.reconnect_pending = true;
        let t = self.now + self.backoff;
        self.backoff = (self.backoff * 2).min(50 * MS);
        self.at(t, Ev::Reconnect);
    }

    fn disconnect(&mut self, why: &str) {
        self.log(|| format!("disconnect: {why}"));
        self.conn += 1;
        self.active = false;
        self.to_tgt = Dir::default();
        self.to_src = Dir::default();
        self.unconsumed = 0;
        self.src.on_disconnect();
        self.tgt.on_disconnect();
        self.schedule_reconnect();
    }

    fn send(&mut self, to_target: bool, mut frame: Vec<u8>) {
        let len = frame.len() as u64;
        let mut corrupt = false;
        if self.faults_on && self.rng.below(1_000_000) < self.p.corrupt_ppm {
            corrupt = true;
            let flips = self.rng.range(1, 3);
            for _ in 0..flips {
                let i = self.rng.below(len) as usize;
                let bit = self.rng.below(8);
                frame[i] ^= 1 << bit;
            }
        }
        let bw = self.p.link_bw;
        let d = if to_target {
            &mut self.to_tgt
        } else {
            &mut self.to_src
        };
        let start = d.wire_free.max(self.now);
        let done = start + (len * SEC).div_ceil(bw);
        d.wire_free = done;
        let arrive = done + self.p.latency;
        d.flight.push_back((arrive, frame, corrupt));
        if to_target {
            self.unconsumed += len;
        }
        let conn = self.conn;
        self.at(arrive, Ev::Arrive { to_target, conn });
    }

    // ---------------------------------------------------------------- host

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
            return HostReq {
                wid,
                op,
                sector: 0,
                count: 0,
                flags: 0,
            };
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
        HostReq {
            wid,
            op,
            sector,
            count,
            flags,
        }
    }

    fn host_next(&mut self) -> R<()> {
        if self.issued >= self.p.ops {
            return Ok(());
        }
        self.issued += 1;
        self.outstanding += 1;
        let req = self.gen_req();
        if !self.try_submit(req)? {
            self.parked.push_back(req);
        }
        Ok(())
    }

    /// Offers `req` to the source; false when it must wait.
    fn try_submit(&mut self, req: HostReq) -> R<bool> {
        let before = self.src.ring().next_seq();
        let w = HostWrite {
            op: req.op,
            sector: req.sector,
            count: req.count,
            flags: req.flags,
        };
        let seed = self.seed;
        let res = self.src.submit(&self.c, &w, |wr| {
            let mut buf = [0u8; SECT];
            for s in req.sector..req.sector + u64::from(req.count) {
                sector_pattern(seed, req.wid, s, &mut buf);
                wr.write(&buf)?;
            }
            Ok(())
        });
        match res {
            Submit::Accepted(seq) => {
                if seq + 1 != self.src.ring().next_seq() || seq < before {
                    return Err(Violation::Protocol(format!(
                        "unexpected seq {seq} (ring at {before})"
                    )));
                }
                self.record_hist(seq, &req);
                self.accepted.insert(seq, req);
                let bytes = u64::from(req.count) * SECT as u64;
                let start = self.sdisk.free_at.max(self.now);
                let done = start + (bytes * SEC).div_ceil(self.p.src_bw);
                self.sdisk.free_at = done;
                // Jitter: concurrent I/Os may complete in any order, as on
                // a real device (so missing overlap serialization shows).
                let t = done
                    + self.p.src_lat
                    + if self.p.jitter {
                        self.rng.below(self.p.src_lat + 1)
                    } else {
                        0
                    };
                self.at(t, Ev::LocalDone { seq });
                Ok(true)
            }
            Submit::Wait(_) => Ok(false),
            Submit::Invalid(i) => Err(Violation::Protocol(format!(
                "source rejected {req:?}: {i:?}"
            ))),
        }
    }

    fn record_hist(&mut self, seq: u64, req: &HostReq) {
        let (kind, wid) = match req.op {
            HostOp::Write => (Kind::Write, req.wid),
            HostOp::Discard => (Kind::Discard, 0),
            HostOp::WriteZeroes => (Kind::WriteZeroes, 0),
            HostOp::Flush => (Kind::Flush, 0),
        };
        let barrier = kind == Kind::Flush || req.flags & FLAG_PREFLUSH != 0;
        self.hist.insert(
            seq,
            Hist {
                wid,
                kind,
                sector: req.sector,
                count: req.count,
                barrier,
            },
        );
        if barrier {
            self.barriers.insert(seq);
        }
        self.pending_tgt.insert(seq);
        if kind != Kind::Flush {
            for s in req.sector..req.sector + u64::from(req.count) {
                self.sec_hist[s as usize].push(seq);
            }
        }
    }

    fn apply_src(&mut self, req: &HostReq) {
        let wid = if req.op == HostOp::Write { req.wid } else { 0 };
        for s in req.sector..req.sector + u64::from(req.count) {
            let off = s as usize * SECT;
            sector_pattern(self.seed, wid, s, &mut self.src_disk[off..off + SECT]);
        }
    }

    // -------------------------------------------------------------- target

    fn dev_done(&mut self, seq: u64, ok: bool) -> R<()> {
        let v = self
            .dev_ops
            .remove(&seq)
            .ok_or_else(|| Violation::Protocol(format!("device done for unknown seq {seq}")))?;
        if ok {
            self.apply_tgt(&v)?;
        }
        if !self.tgt.io_done(seq, &v.header, ok) {
            return Err(Violation::Protocol(format!(
                "target refused io_done({seq})"
            )));
        }
        if !ok && !self.retry_armed {
            self.retry_armed = true;
            let t = self.now + self.rng.range(MS, 10 * MS);
            self.at(t, Ev::RetryTimer);
        }
        Ok(())
    }

    fn apply_tgt(&mut self, v: &IssueView) -> R<()> {
        let seq = v.seq;
        let h = self.hist.get(&seq).copied().ok_or_else(|| {
            Violation::I4(format!(
                "target applied seq {seq} which is no data/flush record"
            ))
        })?;
        if h.kind != v.header.kind
            || (h.kind != Kind::Flush && (h.sector != v.header.sector || h.count != v.header.count))
        {
            return Err(Violation::I4(format!(
                "target applied seq {seq} as {:?} but source wrote {h:?}",
                v.header
            )));
        }
        self.last_progress = self.now;
        if h.kind == Kind::Flush {
            self.pending_tgt.remove(&seq);
            self.max_applied = self.max_applied.max(seq);
            return self.check_boundary(seq);
        }
        let mut payload = Vec::new();
        if h.kind == Kind::Write {
            payload.resize(h.count as usize * SECT, 0);
            let n = self.tgt.read_payload(seq, &mut payload);
            if n != Some(payload.len()) {
                return Err(Violation::Protocol(format!("payload of {seq} unreadable")));
            }
        }
        let mut expect = [0u8; SECT];
        for (i, s) in (h.sector..h.sector + u64::from(h.count)).enumerate() {
            let su = s as usize;
            if self.tgt_seq[su] > seq && seq > self.replay_until {
                return Err(Violation::I4(format!(
                    "sector {s}: record {seq} applied after record {} (source order reversed)",
                    self.tgt_seq[su]
                )));
            }
            self.tgt_seq[su] = seq;
            let off = su * SECT;
            let dst = &mut self.tgt_disk[off..off + SECT];
            if h.kind == Kind::Write {
                dst.copy_from_slice(&payload[i * SECT..(i + 1) * SECT]);
            } else {
                dst.fill(0);
            }
            sector_pattern(self.seed, h.wid, s, &mut expect);
            if *dst != expect {
                return Err(Violation::I2(format!(
                    "sector {s}: target wrote bytes that differ from source write {seq} (corrupted data applied)"
                )));
            }
        }
        self.pending_tgt.remove(&seq);
        self.max_applied = self.max_applied.max(seq);
        if h.barrier {
            self.check_boundary(seq)?;
        }
        Ok(())
    }

    /// Checks at issue time that `seq` may start: its epoch's boundary is
    /// complete (continuous I2).
    fn check_issue(&self, seq: u64) -> R<()> {
        let Some(h) = self.hist.get(&seq) else {
            return Err(Violation::I4(format!("target issued unknown record {seq}")));
        };
        let bound = if h.barrier {
            seq - 1
        } else {
            self.barriers.range(..seq).next_back().copied().unwrap_or(0)
        };
        if let Some(&first) = self.pending_tgt.iter().next() {
            if first <= bound {
                return Err(Violation::I2(format!(
                    "record {seq} ({:?}) started while record {first} before its flush boundary {bound} is not applied",
                    h.kind
                )));
            }
        }
        Ok(())
    }

    /// At a completed barrier `f`, the target image must equal the source
    /// history as of `f`, sector by sector.
    fn check_boundary(&self, f: u64) -> R<()> {
        if f <= self.replay_until {
            // Catch-up after a target restart: newer data may still sit on
            // sectors until the replay passes the pre-crash point.
            return Ok(());
        }
        if let Some(&first) = self.pending_tgt.iter().next() {
            if first < f {
                return Err(Violation::I2(format!(
                    "barrier {f} completed before record {first}"
                )));
            }
        }
        for (s, hs) in self.sec_hist.iter().enumerate() {
            let idx = hs.partition_point(|&x| x <= f);
            let want = if idx == 0 { 0 } else { hs[idx - 1] };
            if self.tgt_seq[s] != want {
                return Err(Violation::I2(format!(
                    "at flush boundary {f}: sector {s} holds record {} but the source had record {want}",
                    self.tgt_seq[s]
                )));
            }
        }
        Ok(())
    }

    fn check_i3(&self) -> R<()> {
        let r = self.src.ring();
        let freed = r.oldest_seq().unwrap_or(r.next_seq()) - 1;
        if let Some(&first) = self.pending_tgt.iter().next() {
            if first <= freed {
                return Err(Violation::I3(format!(
                    "record {first} left the rollback ring (freed up to {freed}) before the target applied it"
                )));
            }
        }
        // (A restarted target knows nothing until the next handshake.)
        if self.tgt.generation() != 0 && self.tgt.applied_seq() < freed {
            return Err(Violation::I3(format!(
                "ring freed up to {freed} but target applied only up to {}",
                self.tgt.applied_seq()
            )));
        }
        Ok(())
    }

    /// The target's region filter never misses a pending stream write: at
    /// every step one region (cycling over the device) is checked against
    /// the commit log's exact walk; and it is clear whenever the log is
    /// empty.
    fn check_filter(&self) -> R<()> {
        let log = self.tgt.commit_log();
        if log.is_empty() && !log.region_filter().is_clear() {
            return Err(Violation::Protocol(
                "region filter not clear with an empty commit log".into(),
            ));
        }
        let rs = u64::from(self.p.region_sectors);
        let region = self.events % (self.p.dev_sectors / rs).max(1);
        self.check_filter_range(region, region)
    }

    /// `pending_in_range` over regions `first..=last` implies the filter's
    /// `may_be_pending` (no false negative).
    fn check_filter_range(&self, first: u64, last: u64) -> R<()> {
        let log = self.tgt.commit_log();
        let rs = u64::from(self.p.region_sectors);
        let (start, len) = (first * rs, (last - first + 1) * rs);
        if log.pending_in_range(start, len) && !log.may_be_pending(first, last) {
            return Err(Violation::Protocol(format!(
                "region filter misses a pending write in regions {first}..={last} ({} records held)",
                log.len_records()
            )));
        }
        Ok(())
    }

    fn check_i1(&self) -> R<()> {
        if self.src_disk != self.tgt_disk {
            let first = self
                .src_disk
                .chunks(SECT)
                .zip(self.tgt_disk.chunks(SECT))
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(Violation::I1(format!(
                "devices differ after quiesce, first at sector {first} (target has record {})",
                self.tgt_seq[first]
            )));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- pump

    fn pump(&mut self) -> R<()> {
        loop {
            let mut progress = false;
            progress |= self.pump_target_rx()?;
            progress |= self.pump_target_issue()?;
            progress |= self.pump_target_tx()?;
            progress |= self.pump_source_rx()?;
            progress |= self.pump_host()?;
            progress |= self.pump_source_tx()?;
            if !progress {
                return Ok(());
            }
        }
    }

    fn pump_target_rx(&mut self) -> R<bool> {
        let mut progress = false;
        while let Some((frame, _corrupt)) = self.to_tgt.rx.front() {
            // Glue framing: the header must decode to the same length, or
            // the byte stream is out of sync and the connection drops.
            match decode_header(frame) {
                Ok((h, _)) if h.frame_len() == frame.len() => {
                    self.log(|| {
                        format!(
                            "target <- {:?} seq {} sector {} count {}",
                            h.kind, h.seq, h.sector, h.count
                        )
                    });
                }
                _ => {
                    self.disconnect("target: stream out of sync");
                    return Ok(true);
                }
            }
            let len = frame.len() as u64;
            let r = self.tgt.on_frame(&self.c, frame);
            match r {
                TargetRecv::Busy => return Ok(progress),
                TargetRecv::Ok => {}
                TargetRecv::Hello(h) => {
                    if let Err(e) = self.tgt.on_hello(&h) {
                        return Err(Violation::Protocol(format!(
                            "target refused handshake: {e:?}"
                        )));
                    }
                }
                TargetRecv::Disconnect(e) => {
                    self.disconnect(&format!("target: {e:?}"));
                    return Ok(true);
                }
            }
            self.to_tgt.rx.pop_front();
            self.unconsumed = self.unconsumed.saturating_sub(len);
            progress = true;
        }
        Ok(progress)
    }

    fn pump_target_issue(&mut self) -> R<bool> {
        let mut progress = false;
        while let Some(v) = self.tgt.poll_issue() {
            progress = true;
            self.check_issue(v.seq)?;
            if v.header.kind.is_data() {
                let (a, b) = (v.header.sector, v.header.sector + u64::from(v.header.count));
                if let Some(l) = self
                    .lockers
                    .iter()
                    .flatten_held()
                    .find(|&(s, c)| s < b && a < s + c)
                {
                    return Err(Violation::Protocol(format!(
                        "stream record {} written inside local lock {l:?}",
                        v.seq
                    )));
                }
            }
            let fail = self.in_windows(&self.p.fails.clone());
            let slow = if self.in_windows(&self.p.slows.clone()) {
                10
            } else {
                1
            };
            let bytes = if v.header.kind == Kind::Write {
                u64::from(v.header.len)
            } else {
                4096
            };
            let start = self.tdisk.free_at.max(self.now);
            let done = start + slow * (bytes * SEC).div_ceil(self.p.tgt_bw);
            self.tdisk.free_at = done;
            let mut lat = slow * self.p.tgt_lat;
            if v.header.flags & FLAG_PREFLUSH != 0 || v.header.kind == Kind::Flush {
                lat += slow * self.p.tgt_lat;
            }
            self.dev_ops.insert(v.seq, v);
            let t = done
                + lat
                + if self.p.jitter {
                    self.rng.below(lat + 1)
                } else {
                    0
                };
            self.at(
                t,
                Ev::DevDone {
                    epoch: self.tgt_epoch,
                    seq: v.seq,
                    ok: !fail,
                },
            );
        }
        Ok(progress)
    }

    fn pump_target_tx(&mut self) -> R<bool> {
        let mut progress = false;
        let mut buf = [0u8; 256];
        while self.active {
            match self.tgt.poll_send(&self.c, &mut buf) {
                None => break,
                Some(Ok(n)) => {
                    progress = true;
                    self.send(false, buf[..n].to_vec());
                }
                Some(Err(e)) => return Err(Violation::Protocol(format!("target encode: {e:?}"))),
            }
        }
        Ok(progress)
    }

    fn pump_source_rx(&mut self) -> R<bool> {
        let mut progress = false;
        while let Some((frame, _)) = self.to_src.rx.pop_front() {
            progress = true;
            self.host_kick = true;
            match decode_header(&frame) {
                Ok((h, _)) if h.frame_len() == frame.len() => {
                    self.log(|| {
                        format!("source <- {:?} seq {} region {}", h.kind, h.seq, h.sector)
                    });
                }
                _ => {
                    self.disconnect("source: stream out of sync");
                    return Ok(true);
                }
            }
            match self.src.on_frame(&self.c, &frame) {
                SourceRecv::Ok => {}
                SourceRecv::HelloReply(h) => {
                    if let Err(e) = self.src.on_hello_reply(&h) {
                        return Err(Violation::Protocol(format!("source refused reply: {e:?}")));
                    }
                    self.backoff = MS;
                    self.log(|| format!("connected, resume after {}", h.last_applied));
                }
                SourceRecv::Reconnect(e) => {
                    self.disconnect(&format!("source: {e:?}"));
                    return Ok(true);
                }
            }
        }
        Ok(progress)
    }

    fn pump_host(&mut self) -> R<bool> {
        let mut progress = false;
        while let Some(c) = self.src.poll_completed() {
            progress = true;
            if !c.ok {
                return Err(Violation::Protocol(format!("host write {} failed", c.seq)));
            }
            if self.p.completion == Completion::Sync && self.pending_tgt.contains(&c.seq) {
                return Err(Violation::Protocol(format!(
                    "sync completion of host write {} before the target applied it",
                    c.seq
                )));
            }
            self.completed += 1;
            self.outstanding -= 1;
            self.host_kick = true;
            self.last_progress = self.now;
            let t = self.now + self.rng.range(0, self.p.think);
            self.at(t, Ev::HostNext);
        }
        // Retry parked writes in order, only when something changed that
        // may unblock them (a pass over an unchanged state is a no-op).
        if !self.host_kick {
            return Ok(progress);
        }
        self.host_kick = false;
        let n = self.parked.len();
        for _ in 0..n {
            let Some(req) = self.parked.pop_front() else {
                break;
            };
            if self.try_submit(req)? {
                progress = true;
            } else {
                self.parked.push_back(req);
            }
        }
        Ok(progress)
    }

    fn pump_source_tx(&mut self) -> R<bool> {
        let mut progress = false;
        while self.active
            && self.src.link_state() == LinkState::Connected
            && self.unconsumed < self.p.window
        {
            let Some(v) = self.src.peek_send() else { break };
            let n = self
                .src
                .read_frame(v.seq, &mut self.frame_buf)
                .map_err(|e| Violation::Protocol(format!("read_frame({}): {e:?}", v.seq)))?;
            let f = self.frame_buf[..n].to_vec();
            self.src.advance_send();
            self.send(true, f);
            progress = true;
        }
        Ok(progress)
    }
}

/// Current parameter generator version.
pub const GEN_VERSION: u32 = 5;

/// Runs one seed in one mode with the current generator.
pub fn run_seed(seed: u64, mode: Mode, verbose: bool) -> Result<Outcome, Failure> {
    Sim::new(seed, mode, GEN_VERSION, verbose).run()
}

/// Runs one seed in one mode with generator version `gen`.
pub fn run_seed_gen(seed: u64, mode: Mode, gen: u32, verbose: bool) -> Result<Outcome, Failure> {
    Sim::new(seed, mode, gen, verbose).run()
}

//! Per-seed parameters: every option of every component (disks, link,
//! host, target users, faults), derived from the seed alone, with the
//! generator version so an old seed keeps its exact scenario.

use specmirror_core::log::commit::SCAN_LIMIT;
use specmirror_core::log::filter::FILTER_BUCKETS;
use specmirror_core::log::pages::PAGE_SIZE;
use specmirror_core::log::record::{HEADER_LEN, SECTOR_SIZE};
use specmirror_core::transport::proto::Completion;

use crate::rng::{mix, Rng};

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
const SEC: u64 = 1_000_000_000;
const SECT: usize = SECTOR_SIZE;

/// Current parameter generator version.
pub const GEN_VERSION: u32 = 17;

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
    /// Payload alignment of the rings (8: none).
    pub payload_align: usize,
    /// Shared secret for the handshake, if any.
    pub secret: bool,
    /// Link outages that stall the connection (packets dropped, nothing
    /// reset) instead of breaking it: long ones end by the peer timeout.
    pub stalls: Vec<(u64, u64)>,
    /// Windows in which the source's local writes fail.
    pub src_fails: Vec<(u64, u64)>,
    /// Graceful target reloads (stop, free, new table) at these times.
    pub reloads: Vec<u64>,
    /// Source suspend / resume cycles starting at these times.
    pub suspends: Vec<u64>,
    /// Per mille of host operations that read through the target device.
    pub p_tgt_read: u64,
    /// Per mille of host writes for which `map` finds no bio without
    /// sleeping (they are parked for the worker).
    pub p_nomem: u64,
    /// Connection resets (`ss -K`, a `fault drop`) at these times; the
    /// link stays up.
    pub drops: Vec<u64>,
    /// Spurious wake-ups per second per sleeping thread (legal in the
    /// kernel; they also widen the interleavings).
    pub spurious_hz: u64,
    /// Chunk size of the source's dirty bitmap in sectors; 0: no bitmap
    /// (no resync engine).
    pub chunk_sectors: u32,
    /// Per mille of chunks whose bytes only the source has at the start
    /// (a target that missed them): their bits are set.
    pub presync: u64,
    /// Every chunk starts dirty (a full sync), not only those that differ.
    pub presync_all: bool,
    /// Chunks marked dirty again at these times (an operator's `resync`,
    /// what verify finds): they are sent again while the sync runs.
    pub marks: Vec<u64>,
    /// Windows in which writes to the source's metadata device fail.
    pub meta_fails: Vec<(u64, u64)>,
    /// The resync's `sync_rate` cap in KiB/s; 0: none.
    pub sync_rate_kib: u32,
    /// Source table reloads (suspend, a new table and machine over the
    /// same data and metadata devices, resume) at these times.
    pub src_reloads: Vec<u64>,
    /// Both sides keep data generations in a modelled superblock, and the
    /// handshake applies their rule (every seed with a bitmap from
    /// version 11 on).
    pub gens: bool,
    /// The target starts with no generation (a new target: the initial
    /// sync); otherwise it starts consistent at the source's generation.
    pub target_new: bool,
    /// `initial_sync none`: a new target is taken as equal (the bits
    /// still mark what only the source holds).
    pub initial_none: bool,
    /// Every target restart comes back with a new (blank) metadata
    /// device: a new target over old data, synced in full.
    pub tgt_meta_lost: bool,
    /// `initial_sync checksum`: a new target is compared by digests.
    pub initial_checksum: bool,
    /// Operator verifies (a random range) at these times.
    pub verifies: Vec<u64>,
    /// When faults stop, this many sectors of the target's device are
    /// corrupted behind its back, and a verify of the whole device runs.
    pub corrupt: u64,
    /// `degrade_after` (ns); `None`: `on_disconnect block`.
    pub degrade_after: Option<u64>,
    /// The target's device has a volatile write cache: every target
    /// restart is a power loss that keeps, of each sector written since
    /// the last flush that covered it, any one version.
    pub volatile_cache: bool,
    /// Regions of the source's activity log (0: none; generator 15).
    pub al_regions: usize,
    /// The source's data device has a volatile write cache.
    pub src_volatile: bool,
    /// Source crashes (power loss of the source host) at these times.
    pub src_crashes: Vec<u64>,
    /// A new source (reload, crash) starts its ring at seq 1, as the
    /// kernel does (generator 16; before, it went on from the old ring's
    /// seqs).
    pub seq_restart: bool,
    /// Host writes, repairs and resync pieces reserve their record and
    /// fill it later, as the kernel does outside its lock (generator 17;
    /// before, the payload was copied in the same step).
    pub reserve: bool,
    /// Longest time (ns) between a reservation and its publication: the
    /// copy and checksum outside the lock, preemption included.
    pub copy_max: u64,
    /// Records the ring lets be reserved at once (1..=MAX_PENDING).
    pub max_pending: usize,
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
            payload_align: 8,
            secret: false,
            stalls: Vec::new(),
            src_fails: Vec::new(),
            reloads: Vec::new(),
            suspends: Vec::new(),
            p_tgt_read: 0,
            spurious_hz: 0,
            drops: Vec::new(),
            p_nomem: 0,
            chunk_sectors: 0,
            presync: 0,
            presync_all: false,
            marks: Vec::new(),
            meta_fails: Vec::new(),
            sync_rate_kib: 0,
            src_reloads: Vec::new(),
            gens: false,
            target_new: false,
            initial_none: false,
            tgt_meta_lost: false,
            initial_checksum: false,
            verifies: Vec::new(),
            corrupt: 0,
            degrade_after: None,
            volatile_cache: false,
            al_regions: 0,
            src_volatile: false,
            src_crashes: Vec::new(),
            seq_restart: false,
            reserve: false,
            copy_max: 0,
            max_pending: specmirror_core::log::ring::MAX_PENDING,
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
        if gen >= 6 {
            // Version 6 (the thread-level simulator): aligned payloads,
            // secrets, stalled links (some long enough for the peer
            // timeout), failing source writes, target reloads, source
            // suspends, reads through the target, spurious wake-ups.
            let mut r6 = Rng::new(mix(seed, 0x6006));
            p.payload_align = [8usize, 512, 512, 4096][r6.below(4) as usize];
            p.secret = r6.chance(1, 2);
            let end = p.faults_end;
            let w = |r: &mut Rng, n: u64, maxlen: u64| {
                let mut v = Vec::new();
                for _ in 0..r.below(n + 1) {
                    let s = r.below(end);
                    v.push((s, s + r.range(MS / 10, maxlen)));
                }
                v.sort();
                v
            };
            p.stalls = w(&mut r6, 2, 300 * MS);
            if r6.chance(1, 8) {
                // Past the peer timeout: the link looks alive but is not.
                let s = r6.below(end);
                p.stalls.push((s, s + r6.range(11 * SEC, 14 * SEC)));
                p.stalls.sort();
            }
            if r6.chance(1, 4) {
                p.src_fails = w(&mut r6, 2, 50 * MS);
                // A failed DISCARD or WRITE_ZEROES is repaired as a WRITE
                // of its whole range (up to two regions): both rings must
                // hold one.
                let most = (p.max_write as usize).max(2 * p.region_sectors as usize) * SECT;
                let pages = (most + 4 * HEADER_LEN + p.hot_regions * 2 * HEADER_LEN).div_ceil(PAGE_SIZE) + 2;
                p.ring_pages = p.ring_pages.max(pages);
                p.log_pages = p.log_pages.max(pages);
            }
            if r6.chance(1, 4) {
                for _ in 0..r6.range(1, 2) {
                    p.reloads.push(r6.below(end));
                }
                p.reloads.sort();
            }
            if r6.chance(1, 4) {
                for _ in 0..r6.range(1, 2) {
                    p.suspends.push(r6.below(end));
                }
                p.suspends.sort();
            }
            p.p_tgt_read = if r6.chance(1, 3) { r6.range(10, 200) } else { 0 };
            if p.payload_align > 512 {
                // Room for the padding before a maximal payload.
                p.ring_pages = p.ring_pages.max(min_pages + 2);
                p.log_pages = p.log_pages.max(min_pages + 2);
            }
            p.spurious_hz = [0u64, 10, 1000][r6.below(3) as usize];
            if r6.chance(1, 3) {
                for _ in 0..r6.range(1, 20) {
                    p.drops.push(r6.below(end));
                }
                p.drops.sort();
            }
        }
        if gen >= 7 {
            // Version 7: `map` sometimes finds no bio without sleeping.
            let mut r7 = Rng::new(mix(seed, 0x7007));
            p.p_nomem = if r7.chance(1, 6) { r7.range(1, 100) } else { 0 };
        }
        if gen >= 8 {
            // Version 8: half the seeds start with a dirty bitmap, the
            // source holding data the target lacks, and resync it while
            // the host writes. Chunks are at most a region and at most
            // the largest write (both rings hold one).
            let mut r8 = Rng::new(mix(seed, 0x8008));
            if r8.chance(1, 2) {
                let most = p.region_sectors.min(p.max_write).trailing_zeros();
                p.chunk_sectors = 1 << r8.range(3, u64::from(most));
                p.presync = [0u64, 10, 300, 1000][r8.below(4) as usize];
                p.presync_all = r8.chance(1, 3);
                for _ in 0..r8.below(4) {
                    p.marks.push(r8.below(p.faults_end));
                }
                p.marks.sort();
                if r8.chance(1, 3) {
                    for _ in 0..r8.range(1, 3) {
                        let s = r8.below(p.faults_end);
                        p.meta_fails.push((s, s + r8.range(MS, 300 * MS)));
                    }
                    p.meta_fails.sort();
                }
            }
        }
        if gen >= 9 && p.chunk_sectors > 0 {
            // Version 9: a third of the resyncs are capped by `sync_rate`,
            // from 1 to 64 MiB/s.
            let mut r9 = Rng::new(mix(seed, 0x9009));
            if r9.chance(1, 3) {
                p.sync_rate_kib = (1 << r9.range(10, 16)) as u32;
            }
        }
        if gen >= 10 && p.chunk_sectors > 0 {
            // Version 10: a third of the seeds with a bitmap reload the
            // source table once or twice, with records not acknowledged
            // yet: the new ring does not hold them, the bitmap must.
            let mut r10 = Rng::new(mix(seed, 0x1010));
            if r10.chance(1, 3) {
                for _ in 0..r10.range(1, 2) {
                    p.src_reloads.push(r10.below(p.faults_end));
                }
                p.src_reloads.sort();
            }
        }
        if gen >= 11 && p.chunk_sectors > 0 {
            // Version 11: generations on both sides. A third of the
            // targets start new (initial sync, `none` in a quarter of
            // those); a quarter of the others lose their metadata at
            // every restart.
            let mut r11 = Rng::new(mix(seed, 0x1111));
            p.gens = true;
            p.target_new = r11.chance(1, 3);
            p.initial_none = p.target_new && r11.chance(1, 4);
            p.tgt_meta_lost = !p.initial_none && r11.chance(1, 4);
        }
        if gen >= 12 && p.chunk_sectors > 0 {
            // Version 12: digests. Half the syncs of a new target compare
            // digests (`checksum`); a third of the seeds verify ranges
            // while the host writes; a quarter corrupt the target's device
            // when faults stop, and verify it all then.
            let mut r12 = Rng::new(mix(seed, 0x1212));
            p.initial_checksum = !p.initial_none && r12.chance(1, 2);
            if r12.chance(1, 3) {
                for _ in 0..r12.range(1, 3) {
                    p.verifies.push(r12.below(p.faults_end));
                }
                p.verifies.sort();
            }
            if r12.chance(1, 4) {
                p.corrupt = r12.range(1, 16);
            }
        }
        if gen >= 13 && p.chunk_sectors > 0 {
            // Version 13: degraded mode. Two thirds of the seeds with a
            // bitmap degrade after 5-300 ms; half of those see an outage
            // longer than that, a third a link slower than the writes
            // (the ring stays full).
            let mut r13 = Rng::new(mix(seed, 0x1313));
            if r13.chance(2, 3) {
                let after = r13.range(5 * MS, 300 * MS);
                p.degrade_after = Some(after);
                if r13.chance(1, 2) {
                    let s = r13.below(p.faults_end);
                    let e = s + r13.range(after, 3 * after + MS);
                    p.downs.push((s, e));
                    p.downs.sort();
                    p.faults_end = p.faults_end.max(e);
                }
                if r13.chance(1, 3) {
                    p.link_bw = r13.range(1, 4) * 1_000_000;
                }
            }
        }
        if gen >= 14 {
            // Version 14: durable acknowledgements. Half of the seeds give
            // the target a volatile cache; half of those that had no
            // target restart get one to three power losses.
            let mut r14 = Rng::new(mix(seed, 0x1414));
            if r14.chance(1, 2) {
                p.volatile_cache = true;
                if p.restarts.is_empty() && r14.chance(1, 2) {
                    for _ in 0..r14.range(1, 4) {
                        p.restarts.push(r14.below(p.faults_end));
                    }
                    p.restarts.sort();
                }
            }
        }
        // Version 16: a new source's ring starts at seq 1, as in the
        // kernel; the books keep one history across sources (a source's
        // seq plus the seqs of the sources before it).
        p.seq_restart = gen >= 16;
        if gen >= 17 {
            // Version 17: payloads are copied outside the lock. Every write
            // reserves its record and publishes it after a copy of up to
            // 50 us, or for a quarter of the seeds up to 20 ms (a copier
            // preempted); a third allow only 1 to 3 pending records, so
            // writes wait for a publication.
            let mut r17 = Rng::new(mix(seed, 0x1717));
            p.reserve = true;
            p.copy_max = if r17.chance(1, 4) { r17.range(MS, 20 * MS) } else { r17.range(0, 50 * US) };
            if r17.chance(1, 3) {
                p.max_pending = r17.range(1, 3) as usize;
            }
        }
        if gen >= 15 && p.chunk_sectors > 0 {
            // Version 15: the activity log and source crashes. Every seed
            // with a bitmap has a log: a third a small one (room for the
            // widest write and up to 3 more regions, so that it evicts),
            // the others up to 8 times the hot regions. Half give the
            // source's data device a volatile cache; a third crash the
            // source host one to three times.
            let mut r15 = Rng::new(mix(seed, 0x1515));
            let widest = (p.max_write.div_ceil(p.region_sectors) + 1) as usize;
            let least = widest.max(p.hot_regions);
            p.al_regions = if r15.chance(1, 3) {
                least + r15.below(4) as usize
            } else {
                least + r15.below(7 * p.hot_regions as u64 + 1) as usize
            };
            p.src_volatile = r15.chance(1, 2);
            if r15.chance(1, 3) {
                for _ in 0..r15.range(1, 4) {
                    p.src_crashes.push(r15.below(p.faults_end));
                }
                p.src_crashes.sort();
            }
        }
        p
    }
}


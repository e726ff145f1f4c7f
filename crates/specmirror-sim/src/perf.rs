//! Throughput model for `specmirror-sim report`: the real source and target
//! state machines, driven through their thread steps, over a modelled
//! 1 Gbit/s link and two modelled disks, a closed-loop host doing random
//! 64 KiB writes over mostly cold regions. No fault injection, no data and
//! no interleaving checks here (the simulator does those): this measures
//! the protocol.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use specmirror_core::log::commit::{IssueView, WindowSlot, SCAN_LIMIT};
use specmirror_core::log::filter::FILTER_BUCKETS;
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::record::{decode_header, Kind, SECTOR_SIZE};
use specmirror_core::pair::gather;
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::inflight::InflightSlot;
use specmirror_core::transport::proto::source::{
    HostOp, HostWrite, LinkState, SenderStep, Source, SourceConfig, Submit, WorkerStep,
};
use specmirror_core::transport::proto::target::{
    Accept, ApplierStep, IoStatus, RxVerdict, SenderStep as TStep, Target, TargetConfig,
    SEND_FRAMES,
};
use specmirror_core::transport::proto::{Completion, Mode, MAX_CONTROL_FRAME};

use crate::check::mode_name;
use crate::rng::Rng;
use crate::sim::{Crc, VecPages};

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
const SEC: u64 = 1_000_000_000;

/// Fixed model parameters of the report.
#[derive(Clone, Debug)]
pub struct PerfCfg {
    /// Link bandwidth, bytes/s.
    pub link_bw: u64,
    /// Source and target disk bandwidth, bytes/s.
    pub disk_bw: u64,
    /// Disk per-I/O latency (ns).
    pub disk_lat: u64,
    /// TCP window (bytes in flight, source to target).
    pub window: u64,
    /// Rollback ring and commit log size (bytes).
    pub ring_bytes: usize,
    /// Region size in sectors.
    pub region_sectors: u32,
    /// Hot regions.
    pub hot_regions: usize,
    /// Device size in sectors (nothing is stored).
    pub dev_sectors: u64,
    /// Write size in sectors.
    pub write_sectors: u32,
    /// Host queue depth.
    pub qd: usize,
    /// Percent of writes that go to a recently used region.
    pub hot_pct: u64,
    /// Warm-up before measuring (ns).
    pub warmup: u64,
    /// Measured interval (ns).
    pub measure: u64,
    /// Target ack batching.
    pub ack_every: u32,
    /// Open-loop host: offered write rate in bytes/s (`None`: closed loop,
    /// `qd` writes always outstanding, i.e. saturating).
    pub offered: Option<u64>,
}

impl Default for PerfCfg {
    fn default() -> Self {
        PerfCfg {
            link_bw: 125_000_000,
            disk_bw: 400_000_000,
            disk_lat: 50 * US,
            window: 32 << 20,
            ring_bytes: 64 << 20,
            region_sectors: 2048,
            hot_regions: 64,
            dev_sectors: 1 << 31,
            write_sectors: 128,
            qd: 32,
            hot_pct: 10,
            warmup: 1000 * MS,
            measure: 3000 * MS,
            ack_every: 64,
            offered: None,
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug)]
pub struct PerfRow {
    /// Mode.
    pub mode: Mode,
    /// Round-trip time (ns).
    pub rtt: u64,
    /// Sustained host write throughput over the measured interval (MB/s).
    pub throughput: f64,
    /// min(disk, link) for the same run (MB/s).
    pub limit: f64,
    /// Mean age of the oldest record not yet applied on the target (ms).
    pub lag_mean: f64,
    /// Largest such age seen (ms).
    pub lag_max: f64,
    /// Mean bytes appended but not yet applied (MiB).
    pub backlog: f64,
    /// Payload bytes on the wire per payload byte written.
    pub wire_overhead: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    LocalDone { seq: u64 },
    Arrive { to_target: bool },
    DevDone { seq: u64 },
    Sample,
    Tick,
}

#[derive(Default)]
struct Dir {
    flight: VecDeque<Vec<u8>>,
    rx: VecDeque<Vec<u8>>,
    wire_free: u64,
}

/// Runs the model for one mode and RTT.
pub fn run_perf(mode: Mode, rtt: u64, cfg: &PerfCfg) -> PerfRow {
    let c = Crc;
    let latency = rtt / 2;
    let pages = cfg.ring_bytes / 4096;
    let mut src = Source::new(
        SourceConfig {
            region_sectors: cfg.region_sectors,
            mode,
            completion: Completion::Async,
            dev_sectors: cfg.dev_sectors,
            generation: 1,
            secret: None,
        },
        VecPages::new(pages),
        1,
        vec![HotSlot::default(); cfg.hot_regions],
        vec![InflightSlot::default(); cfg.qd],
    )
    .expect("source");
    let mut tgt = Target::new(
        TargetConfig {
            region_sectors: cfg.region_sectors,
            dev_sectors: cfg.dev_sectors,
            ack_every: cfg.ack_every,
            secret: None,
        },
        VecPages::new(pages),
        vec![WindowSlot::EMPTY; SCAN_LIMIT],
        vec![0; FILTER_BUCKETS],
        vec![LockSlot::EMPTY; cfg.hot_regions * 2 + 8],
    )
    .expect("target");
    let mut rng = Rng::new(0x0BE7_F00D);
    let mut q: BinaryHeap<Reverse<(u64, u64, Ev)>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut push = |q: &mut BinaryHeap<Reverse<(u64, u64, Ev)>>, t: u64, e: Ev| {
        order += 1;
        q.push(Reverse((t, order, e)));
    };
    let mut now = 0u64;
    let (mut to_tgt, mut to_src) = (Dir::default(), Dir::default());
    let mut unconsumed = 0u64;
    let mut src_disk_free = 0u64;
    let mut tgt_disk_free = 0u64;
    let mut dev_ops: BTreeMap<u64, IssueView> = BTreeMap::new();
    let mut appended: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    // Issue times of host writes not yet accepted by the source.
    let mut parked: VecDeque<u64> = VecDeque::new();
    let mut recent: VecDeque<u64> = VecDeque::new();
    let wbytes = u64::from(cfg.write_sectors) * SECTOR_SIZE as u64;
    let zero = vec![0u8; wbytes as usize];
    let mut tbuf = vec![0u8; SEND_FRAMES * MAX_CONTROL_FRAME];
    let end = cfg.warmup + cfg.measure;
    let mut done_bytes = 0u64;
    let mut wire_bytes = 0u64;
    let mut samples = 0u64;
    let (mut lag_sum, mut lag_max, mut backlog_sum) = (0u128, 0u64, 0u128);
    let mut backlog_now = 0u64;

    // Handshake (instantaneous: the connection is up before the run).
    src.start(0);
    tgt.start();
    let SenderStep::Connect { conn: sconn } = src.poll_sender(&c, 0) else {
        panic!("perf: source does not connect")
    };
    let Accept::Serve { conn: tconn } = tgt.on_accept(0, [1; 32]) else {
        panic!("perf: target refuses")
    };
    src.on_connect(sconn, Some([2; 32]), 0);
    for _ in 0..4 {
        if let TStep::Send { len, .. } = tgt.poll_sender(&c, 0, &mut tbuf) {
            let f = tbuf[..len].to_vec();
            src.on_frame(&c, sconn, &f, 0);
            tgt.on_sent(tconn, true, 0);
        }
        if let SenderStep::Control { frame, .. } = src.poll_sender(&c, 0) {
            tgt.on_frame(&c, tconn, frame.as_bytes(), 0);
            src.on_sent(sconn, true, 0);
        }
    }
    assert_eq!(src.link_state(), LinkState::Connected, "perf: no handshake");
    match cfg.offered {
        None => parked.extend(std::iter::repeat_n(0, cfg.qd)),
        Some(_) => push(&mut q, 0, Ev::Tick),
    }
    push(&mut q, cfg.warmup, Ev::Sample);

    let regions = cfg.dev_sectors / u64::from(cfg.region_sectors);
    let per_region = u64::from(cfg.region_sectors / cfg.write_sectors);
    loop {
        // Pump until nothing moves.
        loop {
            let mut progress = false;
            // Host: offer parked writes.
            while let Some(&issued) = parked.front() {
                let region = if !recent.is_empty() && rng.below(100) < cfg.hot_pct {
                    recent[rng.below(recent.len() as u64) as usize]
                } else {
                    rng.below(regions)
                };
                let sector = region * u64::from(cfg.region_sectors)
                    + rng.below(per_region) * u64::from(cfg.write_sectors);
                let w = HostWrite {
                    op: HostOp::Write,
                    sector,
                    count: cfg.write_sectors,
                    flags: 0,
                };
                let r = if src.deferred_len() > 0 {
                    src.retry_deferred(&c, &w, 0, |wr| wr.write(&zero))
                } else {
                    src.submit(&c, &w, 0, |wr| wr.write(&zero))
                };
                match r {
                    Submit::Accepted(seq) => {
                        parked.pop_front();
                        progress = true;
                        recent.push_back(region);
                        if recent.len() > 32 {
                            recent.pop_front();
                        }
                        appended.insert(seq, (issued, wbytes));
                        backlog_now += wbytes;
                        let start = src_disk_free.max(now);
                        src_disk_free = start + wbytes * SEC / cfg.disk_bw;
                        push(&mut q, src_disk_free + cfg.disk_lat, Ev::LocalDone { seq });
                    }
                    Submit::Wait(_) => break,
                    Submit::Invalid(i) => panic!("perf write rejected: {i:?}"),
                }
            }
            while let Some(done) = src.poll_completed() {
                let _ = done;
                if now >= cfg.warmup && now < end {
                    done_bytes += wbytes;
                }
                if cfg.offered.is_none() {
                    parked.push_back(now);
                }
                progress = true;
            }
            // Source -> link (the sender's batches, within the window).
            if unconsumed < cfg.window {
                if let SenderStep::Records { conn, batch } = src.poll_sender(&c, now) {
                    for v in src.batch_views(&batch).collect::<Vec<_>>() {
                        let mut f = Vec::with_capacity(v.frame_len);
                        gather(src.ring().pages(), v.chunks(), &mut f);
                        let len = f.len() as u64;
                        if now >= cfg.warmup && now < end {
                            wire_bytes += len;
                        }
                        let start = to_tgt.wire_free.max(now);
                        to_tgt.wire_free = start + len * SEC / cfg.link_bw;
                        to_tgt.flight.push_back(f);
                        unconsumed += len;
                        push(&mut q, to_tgt.wire_free + latency, Ev::Arrive { to_target: true });
                    }
                    // The send ends once its bytes are in the socket.
                    src.on_sent(conn, true, now);
                    progress = true;
                }
            }
            // Target receive.
            while let Some(f) = to_tgt.rx.front() {
                match tgt.on_frame(&c, tconn, f, now) {
                    // `on_frame` copies under the lock: it never asks for a fill.
                    RxVerdict::Continue | RxVerdict::Fill { .. } => {}
                    RxVerdict::Busy => break,
                    RxVerdict::Stop => panic!("perf target closed the connection"),
                }
                unconsumed -= f.len() as u64;
                to_tgt.rx.pop_front();
                progress = true;
            }
            // Target device.
            let mut step = tgt.poll_applier(now);
            while let ApplierStep::Flush { upto } = step {
                // The model's disks have no volatile cache.
                tgt.flush_done(upto, true, now);
                step = tgt.poll_applier(now);
            }
            if let ApplierStep::Issue = step {
                while let Some(v) = tgt.poll_issue() {
                    let bytes = if v.header.kind == Kind::Write {
                        u64::from(v.header.len)
                    } else {
                        0
                    };
                    let start = tgt_disk_free.max(now);
                    tgt_disk_free = start + bytes * SEC / cfg.disk_bw;
                    dev_ops.insert(v.seq, v);
                    push(&mut q, tgt_disk_free + cfg.disk_lat, Ev::DevDone { seq: v.seq });
                    progress = true;
                }
            }
            // Target -> link.
            if let TStep::Send { conn, len } = tgt.poll_sender(&c, now, &mut tbuf) {
                let mut at = 0;
                while at < len {
                    let n = decode_header(&tbuf[at..len]).map_or(len - at, |(h, _)| h.frame_len());
                    let l = n as u64;
                    let start = to_src.wire_free.max(now);
                    to_src.wire_free = start + l * SEC / cfg.link_bw;
                    to_src.flight.push_back(tbuf[at..at + n].to_vec());
                    push(&mut q, to_src.wire_free + latency, Ev::Arrive { to_target: false });
                    at += n;
                }
                tgt.on_sent(conn, true, now);
                progress = true;
            }
            // Source receive.
            while let Some(f) = to_src.rx.pop_front() {
                src.on_frame(&c, sconn, &f, now);
                progress = true;
            }
            if let WorkerStep::Deferred = src.poll_worker(now) {
                progress = true;
            }
            if !progress {
                break;
            }
        }
        let Some(Reverse((t, _, ev))) = q.pop() else {
            break;
        };
        now = t;
        if now >= end {
            break;
        }
        match ev {
            Ev::LocalDone { seq } => {
                src.local_done(seq, true);
            }
            Ev::Arrive { to_target } => {
                let d = if to_target { &mut to_tgt } else { &mut to_src };
                if let Some(f) = d.flight.pop_front() {
                    d.rx.push_back(f);
                }
            }
            Ev::DevDone { seq } => {
                if let Some(v) = dev_ops.remove(&seq) {
                    let _ = v;
                    tgt.io_done(seq, IoStatus::Ok, now);
                    if let Some((_, b)) = appended.remove(&seq) {
                        backlog_now -= b;
                    }
                }
            }
            Ev::Sample => {
                samples += 1;
                let oldest = appended
                    .values()
                    .next()
                    .map(|&(t0, _)| t0)
                    .into_iter()
                    .chain(parked.front().copied().filter(|_| cfg.offered.is_some()))
                    .min();
                let lag = oldest.map_or(0, |t0| now - t0);
                lag_sum += u128::from(lag);
                lag_max = lag_max.max(lag);
                backlog_sum += u128::from(backlog_now);
                push(&mut q, now + 10 * MS, Ev::Sample);
            }
            Ev::Tick => {
                parked.push_back(now);
                let rate = cfg.offered.unwrap_or(1).max(1);
                push(&mut q, now + wbytes * SEC / rate, Ev::Tick);
            }
        }
    }
    let secs = cfg.measure as f64 / SEC as f64;
    let samples = samples.max(1) as f64;
    PerfRow {
        mode,
        rtt,
        throughput: done_bytes as f64 / secs / 1e6,
        limit: cfg.disk_bw.min(cfg.link_bw) as f64 / 1e6,
        lag_mean: lag_sum as f64 / samples / MS as f64,
        lag_max: lag_max as f64 / MS as f64,
        backlog: backlog_sum as f64 / samples / (1u64 << 20) as f64,
        wire_overhead: if done_bytes == 0 {
            0.0
        } else {
            wire_bytes as f64 / done_bytes as f64
        },
    }
}

/// Prints the report table (every mode and RTT in {0.1, 1, 10, 50} ms).
/// Returns whether speculative stayed within 10% of the limit at every RTT
/// and lock-sync fell with RTT.
pub fn print_report(cfg: &PerfCfg) -> bool {
    let cfg = cfg.clone();
    let limit = cfg.disk_bw.min(cfg.link_bw);
    let offered = limit * 8 / 10;
    println!(
        "sim-report: link {} MB/s, disks {} MB/s + {} us per I/O, TCP window {} MiB, ring/commit log {} MiB,",
        cfg.link_bw / 1_000_000,
        cfg.disk_bw / 1_000_000,
        cfg.disk_lat / US,
        cfg.window >> 20,
        cfg.ring_bytes >> 20
    );
    println!(
        "  random {} KiB writes, QD {}, {} regions of {} MiB, {} hot regions, {}% of writes to a recently used region; async completion.",
        cfg.write_sectors / 2,
        cfg.qd,
        cfg.dev_sectors / u64::from(cfg.region_sectors),
        cfg.region_sectors / 2048,
        cfg.hot_regions,
        cfg.hot_pct
    );
    println!(
        "  Virtual time: {} s warm-up, {} s measured. 'write MB/s': saturating host (QD {} always outstanding), sustained.",
        cfg.warmup / SEC,
        cfg.measure / SEC,
        cfg.qd
    );
    println!(
        "  'lag': age of the oldest host write not yet applied on the target, with the host offering {} MB/s (80% of the limit).",
        offered / 1_000_000
    );
    println!();
    println!(
        "{:<12} {:>7} {:>11} {:>11} {:>8} {:>12} {:>11} {:>12}",
        "mode",
        "RTT ms",
        "write MB/s",
        "limit MB/s",
        "% limit",
        "lag mean ms",
        "lag max ms",
        "sat. lag ms"
    );
    let mut rows = Vec::new();
    for mode in [Mode::Speculative, Mode::LockSync] {
        for rtt_us in [100u64, 1000, 10_000, 50_000] {
            let r = run_perf(mode, rtt_us * US, &cfg);
            let open = PerfCfg {
                offered: Some(offered),
                ..cfg.clone()
            };
            let l = run_perf(mode, rtt_us * US, &open);
            println!(
                "{:<12} {:>7} {:>11.1} {:>11.1} {:>7.1}% {:>12.1} {:>11.1} {:>12.1}",
                mode_name(mode),
                rtt_us as f64 / 1000.0,
                r.throughput,
                r.limit,
                100.0 * r.throughput / r.limit,
                l.lag_mean,
                l.lag_max,
                r.lag_mean
            );
            rows.push(r);
        }
    }
    let spec_ok = rows
        .iter()
        .filter(|r| r.mode == Mode::Speculative)
        .all(|r| r.throughput >= 0.9 * r.limit);
    let ls: Vec<f64> = rows
        .iter()
        .filter(|r| r.mode == Mode::LockSync)
        .map(|r| r.throughput)
        .collect();
    let ls_falls = ls.windows(2).all(|w| w[1] < w[0]);
    println!();
    println!(
        "'sat. lag': the same age under the saturating host; when the host outruns replication the {} MiB ring fills and it is ring size / throughput.",
        cfg.ring_bytes >> 20
    );
    println!("Where a mode cannot carry the offered 80% its lag has no steady state: it grows for the whole run (so it is bounded by the run length here).");
    println!(
        "speculative within 10% of the limit at every RTT: {}; lock-sync falls with RTT: {}",
        if spec_ok { "yes" } else { "NO" },
        if ls_falls { "yes" } else { "NO" }
    );
    spec_ok && ls_falls
}

//! Micro benchmark of the commit log's per-record cost (kernel hot path:
//! `next_to_issue` + `complete` run under the target's spinlock), and of
//! `Target::local_lock` (every read through the target device) with a
//! full log.
//!
//! Ignored by default; run with
//! `cargo test --release -p specmirror-core --test commit_bench -- --ignored --nocapture`.
//! A 64 MiB log full of 4 KiB writes (~16k records), 64 in flight.

mod common;

use common::drive::{accept, send_hello, sign_hello};
use common::{Log, Tgt};
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::record::{Header, Hello, Kind, VERSION};
use specmirror_core::transport::proto::target::{LocalLock, RxVerdict, Target, TargetConfig};
use std::time::Instant;

const LOG_PAGES: usize = 16384; // 64 MiB

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn write(seq: u64, sector: u64) -> Header {
    let mut h = Header::new(Kind::Write);
    h.seq = seq;
    h.sector = sector;
    h.count = 8;
    h.len = 4096;
    h
}

/// Runs `ops` completions; `sector(i)` picks each write's sector and
/// `pick(n)` which of the `n` in-flight records completes next. Returns
/// ns per (complete + issue round).
fn run(
    name: &str,
    ops: usize,
    mut sector: impl FnMut(&mut Lcg) -> u64,
    pick: impl Fn(&mut Lcg, usize) -> usize,
) -> f64 {
    let mut log = common::commit_log(LOG_PAGES, 1);
    let data = vec![0x5Au8; 4096];
    let mut rng = Lcg(42);
    let mut next = 1u64;
    while log.can_push(4096) {
        log.push(&write(next, sector(&mut rng)), &data).unwrap();
        next += 1;
    }
    let held = log.len_records();
    let mut inflight: Vec<u64> = Vec::new();
    let mut done = 0usize;
    // Only the commit log's issue / complete calls are timed (not the
    // pushes refilling the log).
    let mut spent = std::time::Duration::ZERO;
    while done < ops {
        let t = Instant::now();
        while let Some(v) = log.next_to_issue() {
            inflight.push(v.seq);
        }
        spent += t.elapsed();
        if inflight.is_empty() {
            break;
        }
        let i = pick(&mut rng, inflight.len());
        let seq = inflight.swap_remove(i);
        let t = Instant::now();
        let ok = log.complete(seq, true);
        spent += t.elapsed();
        assert!(ok);
        done += 1;
        while log.can_push(4096) {
            log.push(&write(next, sector(&mut rng)), &data).unwrap();
            next += 1;
        }
    }
    let ns = spent.as_nanos() as f64 / done.max(1) as f64;
    println!("{name:<28} {held:>6} records held, {done:>7} completions, {ns:>10.0} ns/completion");
    ns
}

#[test]
#[ignore]
fn bench_commit_log() {
    println!(
        "size_of CommitLog<VecPages, Vec<WindowSlot>, Vec<u32>>: {} bytes, Target<..>: {} bytes",
        std::mem::size_of::<Log>(),
        std::mem::size_of::<Tgt>()
    );
    // Random non-overlapping-ish 4 KiB writes over 4 GiB, random completion.
    run(
        "random 4k, random order",
        200_000,
        |r| (r.next() % (1 << 20)) * 8,
        |r, n| (r.next() as usize) % n,
    );
    // Same, completions newest first: the head stays stuck, the scan
    // window fills with issued records.
    run(
        "random 4k, newest first",
        200_000,
        |r| (r.next() % (1 << 20)) * 8,
        |_, n| n - 1,
    );
    // Hot spot: every write overlaps its neighbours, one in flight, the
    // whole scan window is blocked candidates (old worst case).
    run(
        "hot spot 4k (overlapping)",
        5_000,
        |r| r.next() % 4,
        |_, _| 0,
    );
    // Chain: each write overlaps only its predecessor, so every candidate
    // in the window is blocked by the one just before it.
    let mut c = 0u64;
    run(
        "chained overlap 4k",
        5_000,
        move |_| {
            c += 4;
            c
        },
        |_, _| 0,
    );
    // Sequential writes, in-order completion (the common case).
    let mut s = 0u64;
    run(
        "sequential 4k, in order",
        200_000,
        move |_| {
            s += 8;
            s
        },
        |_, _| 0,
    );
}

#[test]
#[ignore]
fn bench_reissue_failed() {
    let mut log = common::commit_log(LOG_PAGES, 1);
    let data = vec![0u8; 4096];
    let mut n = 1u64;
    while log.can_push(4096) {
        log.push(&write(n, n * 8), &data).unwrap();
        n += 1;
    }
    // A full issue window with every in-flight record failed.
    while let Some(v) = log.next_to_issue() {
        log.complete(v.seq, false);
    }
    let rounds = 2_000;
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(log.reissue_failed());
    }
    let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
    println!(
        "reissue_failed, {} records held: {ns:.0} ns/call",
        log.len_records()
    );
    let t = Instant::now();
    for i in 0..rounds as u64 {
        // Past every record: the whole log is checked.
        std::hint::black_box(log.pending_in_range(1 << 40, 8 + (i & 1)));
    }
    let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
    println!(
        "pending_in_range (miss), {} records held: {ns:.0} ns/call",
        log.len_records()
    );
}

/// A connected target (4 GiB device, 1 MiB regions) whose 64 MiB commit
/// log is filled with 4 KiB writes at `sector(i)`, none applied.
fn full_target(mut sector: impl FnMut(u64) -> u64) -> Tgt {
    let cfg = TargetConfig {
        region_sectors: REGION,
        dev_sectors: DEV,
        ack_every: 64,
        secret: None,
    };
    let mut t = Target::new(
        cfg,
        common::vec_pages(LOG_PAGES),
        common::window(),
        common::filter(),
        vec![LockSlot::EMPTY; 80],
    )
    .unwrap();
    // The handshake of a scripted source.
    t.start();
    let (conn, nonce) = accept(&mut t, 0);
    let mut hello = Hello {
        proto_version: u32::from(VERSION),
        dev_sectors: DEV,
        region_sectors: REGION,
        generation: 1,
        last_applied: 0,
        nonce: [0; 16],
        mac: [0; 32],
        flags: 0,
        block_size: 0,
        gens: Default::default(),
    };
    sign_hello(None, &nonce, &mut hello);
    let (_, reply) = send_hello(&mut t, conn, &hello, 0);
    assert_eq!(reply.map(|r| r.flags), Some(0), "refused");
    assert!(t.is_connected());
    let data = vec![0x5Au8; 4096];
    for seq in 1.. {
        let f = common::frame(&write(seq, sector(seq)), &data);
        match t.on_frame(&common::Crc, conn, &f, 0) {
            RxVerdict::Continue => {}
            RxVerdict::Busy => break,
            RxVerdict::Stop => panic!("stopped at {seq}"),
            RxVerdict::Fill { .. } => unreachable!("on_frame copies under the lock"),
        }
    }
    t
}

const DEV: u64 = 8 << 20; // 4 GiB
const REGION: u32 = 2048; // 1 MiB

/// Times `local_lock` (and `local_unlock` after a grant) of one region
/// picked by `region`, then the pending-write check alone: the exact walk
/// of the log (`pending_in_range`, what `local_lock` used to call) on a
/// sample, and the region filter alone. Reports ns per call and how often it said WouldBlock against
/// how often a pending write really was there.
fn bench_lock(name: &str, t: &mut Tgt, mut region: impl FnMut(&mut Lcg) -> u64) {
    let rounds = 20_000usize;
    let mut rng = Lcg(7);
    let probes: Vec<u64> = (0..rounds).map(|_| region(&mut rng)).collect();
    let r = u64::from(REGION);
    let mut blocked = 0usize;
    let start = Instant::now();
    for &g in &probes {
        match t.local_lock(g * r, r) {
            LocalLock::Granted => t.local_unlock(g * r, r),
            LocalLock::WouldBlock => blocked += 1,
            other => panic!("{other:?}"),
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
    let start = Instant::now();
    for &g in &probes {
        std::hint::black_box(t.commit_log().may_be_pending(g, g));
    }
    let filter_ns = start.elapsed().as_nanos() as f64 / rounds as f64;
    let sample = &probes[..1000];
    let start = Instant::now();
    let truly = sample
        .iter()
        .filter(|&&g| t.commit_log().pending_in_range(g * r, r))
        .count();
    let exact_ns = start.elapsed().as_nanos() as f64 / sample.len() as f64;
    println!(
        "{name:<34} {:>6} records: local_lock+unlock {ns:>5.0} ns (filter {filter_ns:>3.0} ns), WouldBlock {:>5.1}% | pending_in_range {exact_ns:>8.0} ns, pending {:>5.1}%",
        t.commit_log().len_records(),
        100.0 * blocked as f64 / rounds as f64,
        100.0 * truly as f64 / sample.len() as f64,
    );
}

#[test]
#[ignore]
fn bench_local_lock() {
    let regions = DEV / u64::from(REGION);
    // Sequential stream (64 regions pending), reads all over the device:
    // almost every read meets no pending write.
    let mut t = full_target(|seq| seq * 8);
    bench_lock("sequential writes, random reads", &mut t, |g| {
        g.next() % regions
    });
    // Reads right behind the stream: every one waits.
    bench_lock("sequential writes, reads on them", &mut t, |g| {
        g.next() % 64
    });
    // Random 4 KiB writes over the whole device: nearly every region has
    // one pending, reads wait almost everywhere.
    let mut rng = Lcg(42);
    let mut t = full_target(move |_| (rng.next() % (DEV / 8)) * 8);
    bench_lock("random writes, random reads", &mut t, |g| {
        g.next() % regions
    });
}

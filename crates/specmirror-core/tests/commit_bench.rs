//! Micro benchmark of the commit log's per-record cost (kernel hot path:
//! `next_to_issue` + `complete` run under the target's spinlock).
//!
//! Ignored by default; run with
//! `cargo test --release -p specmirror-core --test commit_bench -- --ignored --nocapture`.
//! A 64 MiB log full of 4 KiB writes (~16k records), 64 in flight.

mod common;

use common::VecPages;
use specmirror_core::log::commit::CommitLog;
use specmirror_core::log::record::{Header, Kind};
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
    let mut log = CommitLog::new(common::vec_pages(LOG_PAGES), 1);
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
        "size_of CommitLog<VecPages>: {} bytes",
        std::mem::size_of::<CommitLog<VecPages>>()
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
    let mut log = CommitLog::new(common::vec_pages(LOG_PAGES), 1);
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

//! Micro benchmark of the source's per-write cost on the kernel hot path:
//! `submit` (dm `map`) and `local_done` + `poll_completed` (dm `end_io`),
//! both under the source's spinlock, with a 256-slot in-flight table (the
//! glue's `INFLIGHT_SLOTS`) and `depth` writes in flight, completing in
//! random order. Writes are 4 KiB WRITE_ZEROES records (no payload, so the
//! figure is the tables' cost, not the copy and checksum) at random
//! 4 KiB-aligned sectors of a 512 GiB device, so nearly every write touches
//! a cold region (LOCK, and UNLOCK of the evicted one).
//!
//! `inflight_table_cost` times the in-flight table alone the same way.
//!
//! Ignored by default; run with
//! `cargo test --release -p specmirror-core --test source_bench -- --ignored --nocapture`.

mod common;

use common::drive::{src_challenge, src_connect, src_reply, T_NONCE};
use common::{Crc, VecPages};
use specmirror_core::log::record::{Header, Hello, Kind, VERSION};
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::inflight::InflightSlot;
use specmirror_core::transport::proto::source::{
    HostOp, HostWrite, LinkState, RxVerdict, SenderStep, Source, SourceConfig, Submit, WaitReason,
};
use specmirror_core::transport::proto::{Completion, Mode};
use std::time::Instant;

type Src = Source<VecPages, Vec<HotSlot>, Vec<InflightSlot>>;

const INFLIGHT_SLOTS: usize = 256;
const DEV_SECTORS: u64 = 1 << 30;
const REGION: u32 = 2048;

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

fn connected(completion: Completion, hot: usize) -> Src {
    let mut s = Source::new(
        SourceConfig {
            region_sectors: REGION,
            mode: Mode::Speculative,
            completion,
            dev_sectors: DEV_SECTORS,
            generation: 9,
            secret: None,
        },
        VecPages::new(4096),
        1,
        vec![HotSlot::default(); hot],
        vec![InflightSlot::default(); INFLIGHT_SLOTS],
    )
    .unwrap();
    // The handshake with a scripted target (time stands still at 0: no
    // keepalive, no deadline interferes).
    s.start(0);
    let conn = src_connect(&mut s, 0);
    src_challenge(&mut s, conn, &T_NONCE, 0);
    let reply = Hello {
        proto_version: u32::from(VERSION),
        dev_sectors: DEV_SECTORS,
        region_sectors: REGION,
        generation: 9,
        last_applied: 0,
        nonce: [0; 16],
        mac: [0; 32],
        flags: 0,
        block_size: 0,
        gens: Default::default(),
    };
    assert_eq!(src_reply(&mut s, conn, None, reply, 0), RxVerdict::Continue);
    assert_eq!(s.link_state(), LinkState::Connected);
    s
}

/// Sends everything (the sender's steps, the bytes going nowhere) and
/// acknowledges it (frees the ring).
fn ack_all(s: &mut Src) {
    let mut last = None;
    while let SenderStep::Records { conn, batch } = s.poll_sender(&Crc, 0) {
        last = Some(batch.first + u64::from(batch.count) - 1);
        s.on_sent(conn, true, 0);
    }
    if let Some(seq) = last {
        let mut h = Header::new(Kind::Ack);
        h.seq = seq;
        let conn = s.conn();
        assert_eq!(
            s.on_frame(&Crc, conn, &common::frame(&h, &[]), 0),
            RxVerdict::Continue
        );
    }
}

fn submit(s: &mut Src, rng: &mut Lcg) -> u64 {
    let mut w = HostWrite {
        op: HostOp::WriteZeroes,
        sector: (rng.next() % (DEV_SECTORS / 8)) * 8,
        count: 8,
        flags: 0,
    };
    let mut r = s.submit(&Crc, &w, 0, |_| Ok(()));
    loop {
        match r {
            Submit::Accepted(seq) => return seq,
            Submit::Wait(WaitReason::Overlap) => {
                // Would wait for a write this loop completes later: give
                // it up and write elsewhere.
                s.deferred_dropped();
                w.sector = (rng.next() % (DEV_SECTORS / 8)) * 8;
                r = s.submit(&Crc, &w, 0, |_| Ok(()));
            }
            Submit::Wait(_) => {
                // Ring or table full of acknowledged-pending writes (sync):
                // the bio is parked; the worker offers it again once
                // acknowledgements made room.
                ack_all(s);
                while s.poll_completed().is_some() {}
                r = s.retry_deferred(&Crc, &w, 0, |_| Ok(()));
            }
            Submit::Invalid(why) => panic!("{why:?}"),
        }
    }
}

/// ns per host write (submit + local_done + completions) with `depth`
/// writes in flight.
fn run(completion: Completion, hot: usize, depth: usize, ops: usize) -> f64 {
    let mut s = connected(completion, hot);
    let mut rng = Lcg(42);
    let mut inflight: Vec<u64> = (0..depth).map(|_| submit(&mut s, &mut rng)).collect();
    let mut done = 0usize;
    let t = Instant::now();
    for i in 0..ops {
        let k = (rng.next() as usize) % inflight.len();
        let seq = inflight.swap_remove(k);
        assert!(s.local_done(seq, true));
        while let Some(c) = s.poll_completed() {
            assert!(c.ok);
            done += 1;
        }
        if i % 64 == 63 {
            // The receiver thread's work: ACKs arrive (sync mode completes
            // its parked writes here).
            ack_all(&mut s);
            while s.poll_completed().is_some() {
                done += 1;
            }
        }
        inflight.push(submit(&mut s, &mut rng));
    }
    let ns = t.elapsed().as_nanos() as f64 / ops as f64;
    assert!(done > 0);
    ns
}

#[test]
#[ignore]
fn per_write_cost() {
    const OPS: usize = 50_000;
    for (completion, name) in [(Completion::Async, "async"), (Completion::Sync, "sync")] {
        let hots: &[usize] = match completion {
            Completion::Async => &[64, 4096],
            Completion::Sync => &[64],
        };
        for &hot in hots {
            for depth in [32usize, 256] {
                // Best of three against scheduler noise.
                let ns = (0..3)
                    .map(|_| run(completion, hot, depth, OPS))
                    .fold(f64::INFINITY, f64::min);
                println!(
                    "completion {name:5} hot_regions {hot:5} in flight {depth:3}: {ns:7.0} ns/write"
                );
            }
        }
    }
}

/// The in-flight table alone, as `submit` and `end_io` drive it per write:
/// `overlaps_local`, `is_full`, `insert`, then `local_done` and
/// `take_completed` until `None`, with `depth` writes in flight in a
/// 256-slot table. ns per write.
fn run_inflight(sync: bool, depth: usize, ops: usize) -> f64 {
    use specmirror_core::transport::proto::inflight::Inflight;
    let mut t = Inflight::new(vec![InflightSlot::default(); INFLIGHT_SLOTS]);
    let mut rng = Lcg(7);
    let mut seq = 0u64;
    let mut local: Vec<u64> = Vec::new();
    let mut acked = 0u64;
    let t0 = Instant::now();
    for i in 0..ops + depth {
        // map: a new write at a random sector.
        let sector = (rng.next() % (DEV_SECTORS / 8)) * 8;
        if !t.overlaps_local(sector, 8, None) && !t.is_full() {
            seq += 1;
            assert!(t.insert(seq, sector, 8));
            local.push(seq);
        }
        if local.len() >= depth || t.is_full() {
            // end_io of a random one of the writes in flight.
            let k = (rng.next() as usize) % local.len();
            let s = local.swap_remove(k);
            assert!(t.local_done(s, true));
            let ack = if sync { Some(acked) } else { None };
            while t.take_completed(ack).is_some() {}
        }
        if sync && i % 64 == 63 {
            // The receiver: an ACK covering what was sent.
            acked = seq.saturating_sub(16);
            while t.take_completed(Some(acked)).is_some() {}
        }
    }
    t0.elapsed().as_nanos() as f64 / (ops + depth) as f64
}

#[test]
#[ignore]
fn inflight_table_cost() {
    const OPS: usize = 1_000_000;
    for (sync, name) in [(false, "async"), (true, "sync")] {
        for depth in [32usize, 256] {
            let ns = (0..3)
                .map(|_| run_inflight(sync, depth, OPS))
                .fold(f64::INFINITY, f64::min);
            println!("in-flight table only, {name:5}, in flight {depth:3}: {ns:6.0} ns/write");
        }
    }
}

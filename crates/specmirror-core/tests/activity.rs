//! The source's activity log (`transport/proto/source/activity.rs`): a
//! host write reaches the local device only once its region is set on the
//! metadata device; a region leaves only once the target made its writes
//! durable and a flush of the source's data device covered them; a clean
//! stop flushes and empties the log.

mod common;

use common::drive::{retry, source_with, src_cfg, target_with, tgt_cfg, write};
use common::{Crc, VecPages};
use specmirror_core::log::meta::bitmap::{self, Bitmap};
use specmirror_core::pair::{Pair, Src};
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::source::{Submit, WaitReason, WorkerStep};
use specmirror_core::transport::proto::wake::MS;
use specmirror_core::transport::proto::{Completion, Mode};

/// 1 MiB in regions of 64 sectors and chunks of 8: 8 chunks a region.
const DEV: u64 = 2048;
const CHUNK: u32 = 8;

/// A source with a clean bitmap and an activity log of `al` regions.
fn src(al: usize) -> Src {
    let mut cfg = src_cfg(Mode::Speculative, Completion::Async);
    cfg.dev_sectors = DEV;
    let mut s = source_with(cfg, 64, 8, 512);
    let chunks = DEV.div_ceil(u64::from(CHUNK));
    let bits = Bitmap::new(VecPages::new(bitmap::blocks_for(chunks) as usize), chunks).expect("pages");
    s.attach_bitmap(bits, CHUNK).expect("chunk size");
    s.attach_activity_log(vec![HotSlot::default(); al]).expect("log");
    s
}

/// Bit `chunk` of the copy block 0 would be saved with.
fn saved_bit(s: &Src, chunk: u64) -> bool {
    let mut buf = vec![0u8; bitmap::BITS_BYTES];
    assert!(s.bitmap_copy(0, 0, &mut buf));
    buf[(chunk / 8) as usize] & (1 << (chunk % 8)) != 0
}

/// Runs the worker's save steps (all succeed) until it has none.
fn save_all(s: &mut Src) -> usize {
    let mut n = 0;
    loop {
        match s.poll_worker(0) {
            WorkerStep::SaveBitmap { block } => {
                s.bitmap_saved(block, true, 0);
                n += 1;
            }
            WorkerStep::Sleep { .. } => return n,
            WorkerStep::Deferred | WorkerStep::SyncEvent => {}
            other => panic!("unexpected step {other:?}"),
        }
    }
}

#[test]
fn a_write_waits_until_its_region_is_on_the_metadata_device() {
    let mut s = src(4);
    s.start(0);
    assert_eq!(write(&mut s, 64, 8, 1), Submit::Wait(WaitReason::ActivityLog));
    // The region's chunks are in the next save's copy, dirty or not.
    assert!(saved_bit(&s, 8) && saved_bit(&s, 15) && !saved_bit(&s, 7) && !saved_bit(&s, 16));
    assert_eq!(s.resync_stats().expect("bitmap").dirty, 0);
    // A save that fails lets nothing through.
    let WorkerStep::SaveBitmap { block } = s.poll_worker(0) else { panic!("no save") };
    s.bitmap_saved(block, false, 0);
    assert_eq!(retry(&mut s, 64, 8, 1), Submit::Wait(WaitReason::ActivityLog));
    // Retried after its interval; then the write goes on.
    let WorkerStep::SaveBitmap { block } = s.poll_worker(2_000 * MS) else { panic!("no retry") };
    s.bitmap_saved(block, true, 2_000 * MS);
    assert!(matches!(retry(&mut s, 64, 8, 1), Submit::Accepted(_)));
    // The same region again: no wait, no save.
    assert!(s.local_done(1, true) || s.local_done(2, true) || s.local_done(3, true));
    let r = write(&mut s, 70, 2, 2);
    assert!(matches!(r, Submit::Accepted(_)), "{r:?}");
    assert_eq!(s.activity_stats().map(|a| (a.used, a.size, a.inserts)), Some((1, 4, 1)));
}

/// A save that began before the region was inserted does not count.
#[test]
fn a_save_begun_before_the_insertion_does_not_admit_it() {
    let mut s = src(4);
    s.start(0);
    assert_eq!(write(&mut s, 0, 8, 1), Submit::Wait(WaitReason::ActivityLog));
    let WorkerStep::SaveBitmap { block } = s.poll_worker(0) else { panic!("no save") };
    // Admitted by the save, then a second region while another save runs.
    s.bitmap_saved(block, true, 0);
    assert!(matches!(retry(&mut s, 0, 8, 1), Submit::Accepted(_)));
    s.mark_dirty(100, 100);
    let WorkerStep::SaveBitmap { block } = s.poll_worker(0) else { panic!("no save") };
    assert_eq!(write(&mut s, 128, 8, 2), Submit::Wait(WaitReason::ActivityLog));
    s.bitmap_saved(block, true, 0);
    assert_eq!(retry(&mut s, 128, 8, 2), Submit::Wait(WaitReason::ActivityLog), "copied before the insertion");
    assert_eq!(save_all(&mut s), 1);
    assert!(matches!(retry(&mut s, 128, 8, 2), Submit::Accepted(_)));
}

fn pair(al: usize) -> Pair<Crc> {
    let mut cfg = tgt_cfg();
    cfg.dev_sectors = DEV;
    Pair::new(src(al), target_with(cfg, 64, 512), Crc)
}

/// Offers a write until it is accepted (running the pair between), then
/// ends its local write; false if it never goes in.
fn put(p: &mut Pair<Crc>, sector: u64, byte: u8) -> bool {
    let mut r = write(&mut p.s, sector, 8, byte);
    for _ in 0..200 {
        if let Submit::Accepted(seq) = r {
            assert!(p.s.local_done(seq, true));
            return true;
        }
        p.run_until(MS, 1, |_| false);
        r = retry(&mut p.s, sector, 8, byte);
    }
    false
}

#[test]
fn a_region_leaves_only_once_durable_on_the_target_and_flushed_here() {
    let mut p = pair(2);
    assert!(p.connect());
    assert!(put(&mut p, 0, 1));
    assert!(put(&mut p, 64, 2));
    // A third region evicts the least recently used one, region 0: only
    // once the target made its write durable and the source's data
    // device was flushed (the pair's flushes succeed at once).
    assert!(put(&mut p, 128, 3));
    let a = p.s.activity_stats().expect("log");
    assert_eq!((a.used, a.evictions), (2, 1));
    assert!(a.flushes >= 1, "no flush of the data device before the eviction");
    assert!(p.s.durable_seq() >= 1);
    // Region 0's bits leave the next save's copy; region 2's are in it.
    assert!(!saved_bit(&p.s, 0) && saved_bit(&p.s, 16));
}

#[test]
fn without_the_target_a_full_log_makes_writes_wait() {
    let mut p = pair(2);
    assert!(p.connect());
    p.reachable = false;
    p.cut();
    assert!(put(&mut p, 0, 1));
    assert!(put(&mut p, 64, 2));
    // Nothing is durable on the target: region 0 cannot go.
    let r = write(&mut p.s, 128, 8, 3);
    assert_eq!(r, Submit::Wait(WaitReason::ActivityLog));
    p.run_until(MS, 50, |_| false);
    assert_eq!(retry(&mut p.s, 128, 8, 3), Submit::Wait(WaitReason::ActivityLog));
    assert_eq!(p.s.activity_stats().map(|a| a.evictions), Some(0));
    // The target is back and acknowledges: the write goes in.
    p.reachable = true;
    let mut ok = false;
    for _ in 0..500 {
        p.run_until(MS, 1, |_| false);
        if let Submit::Accepted(seq) = retry(&mut p.s, 128, 8, 3) {
            assert!(p.s.local_done(seq, true));
            ok = true;
            break;
        }
    }
    assert!(ok, "the write never got into the log");
}

#[test]
fn a_clean_stop_flushes_and_empties_the_log() {
    let mut p = pair(4);
    assert!(p.connect());
    assert!(put(&mut p, 0, 1));
    assert!(put(&mut p, 64, 2));
    assert!(p.run_until(MS, 200, |p| p.s.durable_seq() >= 4));
    p.s.stop();
    let mut flushed = false;
    loop {
        match p.s.poll_worker(p.now) {
            WorkerStep::FlushData => {
                flushed = true;
                p.s.data_flushed(true, p.now);
            }
            WorkerStep::SaveBitmap { block } => p.s.bitmap_saved(block, true, p.now),
            WorkerStep::SaveGens => p.s.gens_saved(true, p.now),
            WorkerStep::Exit => break,
            _ => {}
        }
    }
    assert!(flushed, "no flush before the log was emptied");
    assert_eq!(p.s.activity_stats().map(|a| a.used), Some(0));
    assert!(!saved_bit(&p.s, 0) && !saved_bit(&p.s, 8), "a clean reload would resync the log");
}

/// A region whose chunks straddle two bitmap blocks (blocks hold 32640
/// chunks, not a power of two): its write waits until both are saved,
/// each by a save that began after the insertion.
#[test]
fn a_region_across_two_bitmap_blocks_waits_for_both() {
    const BIG: u64 = 1 << 19; // 256 MiB: 65536 chunks of 8 sectors, 3 blocks
    let mut cfg = src_cfg(Mode::Speculative, Completion::Async);
    cfg.dev_sectors = BIG;
    cfg.region_sectors = 2048; // 256 chunks a region
    let mut s = source_with(cfg, 64, 8, 512);
    let chunks = BIG / u64::from(CHUNK);
    let bits = Bitmap::new(VecPages::new(bitmap::blocks_for(chunks) as usize), chunks).expect("pages");
    s.attach_bitmap(bits, CHUNK).expect("chunk size");
    s.attach_activity_log(vec![HotSlot::default(); 4]).expect("log");
    s.start(0);
    // Region 127: chunks 32512..=32767, blocks 0 and 1.
    let sector = 127 * 2048;
    assert_eq!(write(&mut s, sector, 8, 1), Submit::Wait(WaitReason::ActivityLog));
    let WorkerStep::SaveBitmap { block } = s.poll_worker(0) else { panic!("no save") };
    assert_eq!(block, 0);
    let mut b0 = vec![0u8; bitmap::BITS_BYTES];
    assert!(s.bitmap_copy(0, 0, &mut b0));
    assert!(b0[32512 / 8..].iter().all(|&x| x == 0xFF), "block 0 holds the region's first 128 chunks");
    s.bitmap_saved(block, true, 0);
    assert_eq!(retry(&mut s, sector, 8, 1), Submit::Wait(WaitReason::ActivityLog), "block 1 not saved yet");
    let WorkerStep::SaveBitmap { block } = s.poll_worker(0) else { panic!("no second save") };
    assert_eq!(block, 1);
    let mut b1 = vec![0u8; bitmap::BITS_BYTES];
    assert!(s.bitmap_copy(1, 0, &mut b1));
    assert!(b1[..128 / 8].iter().all(|&x| x == 0xFF) && b1[128 / 8] == 0, "block 1 holds the other 128");
    s.bitmap_saved(block, true, 0);
    assert!(matches!(retry(&mut s, sector, 8, 1), Submit::Accepted(_)));
}

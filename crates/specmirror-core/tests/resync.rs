//! The source's resync engine, step by step: a piece is read only when no
//! host write to it is on its way to the disk, host writes to it wait
//! while it is read, a chunk is clean only once the target acknowledged
//! its last piece, and a chunk marked dirty again is sent again.

mod common;

use common::drive::{connected, retry, source, target, write};
use common::{Crc, VecPages};
use specmirror_core::log::meta::bitmap::{self, Bitmap};
use specmirror_core::pair::{Pair, Src};
use specmirror_core::transport::proto::source::{
    ResyncJob, Submit, WaitReason, WorkerStep, BITMAP_SAVE_INTERVAL, RESYNC_RETRY,
};
use specmirror_core::transport::proto::{Completion, Mode};

const CHUNK: u32 = 8;

/// `s` with a clean bitmap of [`CHUNK`]-sector chunks.
fn with_bitmap(mut s: Src) -> Src {
    let chunks = s.config().dev_sectors.div_ceil(u64::from(CHUNK));
    let pages = VecPages::new(bitmap::blocks_for(chunks) as usize);
    let bits = Bitmap::new(pages, chunks).expect("enough pages");
    s.attach_bitmap(bits, CHUNK).expect("valid chunk size");
    s
}

/// A connected pair whose source has a bitmap and a data device image
/// (every byte `0x5C`), and whose target keeps its device image.
fn pair(ring_pages: usize) -> Pair<Crc> {
    let s = with_bitmap(source(Mode::Speculative, Completion::Async, ring_pages, 8));
    let mut p = connected(s, target(64)).with_disk();
    let bytes = p.s.config().dev_sectors as usize * 512;
    p.src_disk = Some(vec![0x5C; bytes]);
    p
}

/// Worker steps until it starts a resync read (completions are taken,
/// bitmap blocks saved).
fn next_read(p: &mut Pair<Crc>) -> Option<ResyncJob> {
    let mut events = 0;
    for _ in 0..16 {
        match p.s.poll_worker(p.now) {
            WorkerStep::ResyncRead(job) => return Some(job),
            WorkerStep::Complete => while p.s.poll_completed().is_some() {},
            WorkerStep::SaveBitmap { block } => p.s.bitmap_saved(block, true, p.now),
            WorkerStep::SyncEvent => events += 1,
            WorkerStep::Sleep { .. } => return None,
            other => panic!("unexpected worker step {other:?}"),
        }
        assert!(events <= 1, "one event per change of sync state");
    }
    None
}

/// The worker's next step other than a dm event.
fn worker(s: &mut Src, now: u64) -> WorkerStep {
    loop {
        match s.poll_worker(now) {
            WorkerStep::SyncEvent => {}
            step => return step,
        }
    }
}

/// Ends the read [`next_read`] started (8 sectors of `0x5C`, the source
/// image's bytes) and appends it.
fn append_read(p: &mut Pair<Crc>) {
    p.s.resync_read_ended(true);
    assert!(matches!(
        p.s.poll_worker(p.now),
        WorkerStep::ResyncAppend { ok: true, .. }
    ));
    assert!(matches!(
        p.s.resync(&Crc, |w| w.write(&[0x5C; 8 * 512])),
        Submit::Accepted(_)
    ));
}

/// The target device's bytes of `sector..+count`.
fn tgt_bytes(p: &Pair<Crc>, sector: u64, count: u64) -> Vec<u8> {
    let d = p.disk.as_ref().expect("target image");
    d[sector as usize * 512..(sector + count) as usize * 512].to_vec()
}

#[test]
fn host_write_and_resync_read_of_a_chunk_never_race() {
    let mut p = pair(64);
    assert_eq!(p.s.mark_dirty(2, 2), Some((0, 0)));
    assert!(p.s.is_syncing());
    // A host write to the chunk has local I/O outstanding: no read yet.
    let Submit::Accepted(w) = write(&mut p.s, 16, 8, 0xAA) else {
        panic!("host write not accepted")
    };
    assert_eq!(
        next_read(&mut p),
        None,
        "read while a write to the chunk is on its way"
    );
    p.s.local_done(w, true);
    // Its bytes are on the source's disk now.
    p.src_disk.as_mut().unwrap()[16 * 512..24 * 512].fill(0xAA);
    let job = next_read(&mut p).expect("read once the write landed");
    assert_eq!(
        (job.chunk, job.sector, job.count, job.last),
        (2, 16, 8, true)
    );
    // While it is read, host writes to the chunk wait; others do not.
    assert_eq!(
        write(&mut p.s, 20, 1, 0xBB),
        Submit::Wait(WaitReason::Overlap)
    );
    p.s.resync_read_ended(true);
    let WorkerStep::ResyncAppend { job: j, ok: true } = p.s.poll_worker(p.now) else {
        panic!("no append after the read")
    };
    assert_eq!(j, job);
    let Submit::Accepted(r) = p.s.resync(&Crc, |wr| wr.write(&[0xAA; 8 * 512])) else {
        panic!("resync record not appended")
    };
    assert!(r > w, "the piece follows the write it read");
    // The parked write goes now, after the piece.
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Deferred);
    let Submit::Accepted(b) = retry(&mut p.s, 20, 1, 0xBB) else {
        panic!("parked write not accepted")
    };
    assert!(b > r);
    p.s.local_done(b, true);
    assert!(
        p.s.bitmap().unwrap().test(2),
        "clean before the target acknowledged"
    );
    p.run(10_000);
    assert!(!p.s.is_syncing(), "{:?}", p.s.resync_stats());
    assert_eq!(p.s.resync_stats().unwrap().cleared, 1);
    let mut want = vec![0xAA; 8 * 512];
    want[4 * 512..5 * 512].fill(0xBB);
    assert_eq!(
        tgt_bytes(&p, 16, 8),
        want,
        "target applied write, piece, write in order"
    );
}

#[test]
fn pieces_of_a_chunk_clear_it_only_when_the_last_is_acknowledged() {
    // 8 ring pages: a quarter is 16 sectors, so a 64-sector chunk (the
    // helpers' region) goes in four pieces.
    let s = source(Mode::Speculative, Completion::Async, 8, 8);
    let chunks = s.config().dev_sectors / 64;
    let mut s = s;
    let bits = Bitmap::new(VecPages::new(bitmap::blocks_for(chunks) as usize), chunks).unwrap();
    s.attach_bitmap(bits, 64).unwrap();
    let mut p = connected(s, target(64)).with_disk();
    p.src_disk = Some(
        (0..p.s.config().dev_sectors as usize * 512)
            .map(|i| (i / 512) as u8)
            .collect(),
    );
    p.s.mark_dirty(3, 3);
    let mut pieces = Vec::new();
    while let Some(job) = next_read(&mut p) {
        pieces.push((job.sector, job.count, job.last));
        // The pair reads and appends; hold the ACK back until the last.
        p.s.resync_read_ended(true);
        let WorkerStep::ResyncAppend { ok: true, .. } = p.s.poll_worker(p.now) else {
            panic!("no append")
        };
        let data = p.src_disk.as_ref().unwrap()[job.sector as usize * 512..]
            [..job.count as usize * 512]
            .to_vec();
        assert!(matches!(
            p.s.resync(&Crc, |w| w.write(&data)),
            Submit::Accepted(_)
        ));
        assert!(p.s.bitmap().unwrap().test(3));
        if job.last {
            break;
        }
    }
    // Two pieces fill half the ring: the next read waits for their ACK
    // (host writes keep the other half).
    assert_eq!(pieces, vec![(192, 16, false), (208, 16, false)]);
    p.run(10_000);
    assert!(!p.s.is_syncing());
    let st = p.s.resync_stats().unwrap();
    assert_eq!((st.records, st.cleared), (4, 1), "four pieces, one chunk");
    assert_eq!(
        tgt_bytes(&p, 192, 64),
        p.src_disk.as_ref().unwrap()[192 * 512..256 * 512].to_vec()
    );
}

#[test]
fn chunk_marked_dirty_again_is_not_cleared_by_the_old_ack() {
    let mut p = pair(64);
    p.s.mark_dirty(5, 5);
    let job = next_read(&mut p).expect("read");
    append_read(&mut p);
    // Changed again (say, written while the target was away) before the
    // ACK of the piece came: the ACK must not clear it.
    p.src_disk.as_mut().unwrap()[40 * 512..48 * 512].fill(0x77);
    assert_eq!(p.s.mark_dirty(5, 5), None, "still set");
    p.run(10_000);
    assert!(!p.s.is_syncing(), "sent again and cleared");
    assert_eq!(p.s.resync_stats().unwrap().records, 2);
    assert_eq!(job.chunk, 5);
    assert_eq!(tgt_bytes(&p, 40, 8), vec![0x77; 8 * 512]);
}

#[test]
fn failed_read_leaves_the_chunk_dirty_and_is_retried_after_the_pass() {
    let mut p = pair(64);
    p.s.mark_dirty(2, 2);
    p.s.mark_dirty(6, 6);
    let job = next_read(&mut p).expect("read");
    assert_eq!(job.chunk, 2);
    p.s.resync_read_ended(false);
    assert_eq!(
        p.s.poll_worker(p.now),
        WorkerStep::ResyncAppend { job, ok: false }
    );
    p.s.resync_failed();
    let job = next_read(&mut p).expect("next chunk");
    assert_eq!(job.chunk, 6, "the pass goes on");
    append_read(&mut p);
    // The pass ends with a failure in it: wait before the next one.
    match p.s.poll_worker(p.now) {
        WorkerStep::Sleep { until: Some(t) } => assert_eq!(t, p.now + RESYNC_RETRY),
        other => panic!("expected a retry timer, got {other:?}"),
    }
    p.run(10_000);
    assert!(p.s.bitmap().unwrap().test(2), "retried before its time");
    p.advance(RESYNC_RETRY);
    p.run(10_000);
    assert!(!p.s.is_syncing());
    let st = p.s.resync_stats().unwrap();
    assert_eq!((st.read_errors, st.cleared), (1, 2));
}

#[test]
fn resync_waits_for_the_link_and_bad_bitmaps_are_refused() {
    let s = source(Mode::Speculative, Completion::Async, 64, 8);
    let chunks = s.config().dev_sectors / 8;
    let mut s = s;
    let wrong = Bitmap::new(
        VecPages::new(bitmap::blocks_for(chunks + 1) as usize),
        chunks + 1,
    )
    .unwrap();
    assert!(
        s.attach_bitmap(wrong, 8).is_err(),
        "does not cover the device"
    );
    let bits = Bitmap::new(
        VecPages::new(bitmap::blocks_for(chunks / 8) as usize),
        chunks / 8,
    )
    .unwrap();
    assert!(
        s.attach_bitmap(bits, 128).is_err(),
        "chunk larger than a region"
    );
    let mut s = with_bitmap(s);
    s.mark_dirty(0, 0);
    s.start(0);
    assert_eq!(s.poll_worker(0), WorkerStep::SaveBitmap { block: 0 });
    s.bitmap_saved(0, true, 0);
    // The sync started (a dm event), but not connected: nothing is read.
    assert_eq!(s.poll_worker(0), WorkerStep::SyncEvent);
    assert!(matches!(s.poll_worker(0), WorkerStep::Sleep { .. }));
}

#[test]
fn bitmap_sets_are_saved_before_any_read_and_clears_when_the_sync_ends() {
    let mut p = pair(64);
    // A chunk in the second bitmap block (32640 chunks each).
    let far = bitmap::CHUNKS_PER_BLOCK + 3;
    assert_eq!(p.s.mark_dirty(far, far), Some((1, 1)));
    assert!(!p.s.bitmap_is_saved());
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::SaveBitmap { block: 1 });
    // The save is under way: no read before its bit is on the device.
    assert!(matches!(worker(&mut p.s, p.now), WorkerStep::Sleep { .. }));
    // It fails: tried again after the interval, still no read.
    p.s.bitmap_saved(1, false, p.now);
    assert_eq!(p.s.bitmap_save_errors(), 1);
    match p.s.poll_worker(p.now) {
        WorkerStep::Sleep { until: Some(t) } => assert_eq!(t, p.now + BITMAP_SAVE_INTERVAL),
        other => panic!("expected the save's retry timer, got {other:?}"),
    }
    p.advance(BITMAP_SAVE_INTERVAL);
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::SaveBitmap { block: 1 });
    // The copy the glue writes holds the bit.
    let mut bits = vec![0u8; 4080];
    assert!(p.s.bitmap_copy(1, 0, &mut bits));
    assert_eq!(bits[0], 1 << 3);
    assert!(!p.s.bitmap_copy(99, 0, &mut bits), "past the end");
    p.s.bitmap_saved(1, true, p.now);
    assert!(p.s.bitmap_is_saved());
    let job = next_read(&mut p).expect("read once saved");
    assert_eq!(job.chunk, far);
    append_read(&mut p);
    // The ACK clears the bit; the sync has ended, so the block is saved
    // at once (the pair's worker saves it).
    p.run(10_000);
    assert!(!p.s.is_syncing());
    assert!(
        p.s.bitmap_is_saved(),
        "cleared bits saved when the sync ended"
    );
}

#[test]
fn a_sector_range_marks_the_chunks_it_touches() {
    let mut p = pair(64);
    let dev = p.s.config().dev_sectors;
    assert_eq!(p.s.mark_dirty_sectors(15, 2), Some((1, 2)));
    assert_eq!(
        p.s.mark_dirty_sectors(dev - 1, 1),
        Some((dev / 8 - 1, dev / 8 - 1))
    );
    assert_eq!(p.s.mark_dirty_sectors(0, 0), None, "empty");
    assert_eq!(p.s.mark_dirty_sectors(dev, 1), None, "past the end");
    assert_eq!(p.s.mark_dirty_sectors(u64::MAX, 2), None, "overflow");
    assert_eq!(p.s.resync_stats().unwrap().dirty, 3);
}

#[test]
fn stopping_saves_the_bitmap_before_the_worker_exits() {
    let mut p = pair(64);
    p.s.mark_dirty(1, 1);
    let _ = next_read(&mut p).expect("read");
    append_read(&mut p);
    p.s.mark_dirty(5, 6);
    p.s.stop();
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::SaveBitmap { block: 0 });
    p.s.bitmap_saved(0, true, p.now);
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Exit);
}

#[test]
fn a_save_that_fails_while_stopping_is_tried_again_before_the_exit() {
    // (Simulator seed 51982: the save under way when the stop came failed,
    // waited for its retry timer and the worker exited without it.)
    let mut p = pair(64);
    p.s.mark_dirty(5, 6);
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::SaveBitmap { block: 0 });
    p.s.stop();
    p.s.bitmap_saved(0, false, p.now);
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::SaveBitmap { block: 0 });
    p.s.bitmap_saved(0, true, p.now);
    assert!(p.s.bitmap_is_saved());
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Exit);
}

#[test]
fn a_stop_gives_up_a_save_that_keeps_failing() {
    let mut p = pair(64);
    p.s.mark_dirty(5, 6);
    p.s.stop();
    let mut saves = 0;
    loop {
        match p.s.poll_worker(p.now) {
            WorkerStep::SaveBitmap { block } => {
                saves += 1;
                p.s.bitmap_saved(block, false, p.now);
            }
            WorkerStep::Exit => break,
            other => panic!("unexpected {other:?}"),
        }
        assert!(saves < 10, "a dead metadata device must not keep the stop from ending");
    }
    assert!(saves >= 2, "tried more than once: {saves}");
    assert!(!p.s.bitmap_is_saved());
    assert_eq!(p.s.bitmap_save_errors(), saves);
}

//! The handshake's generations rule, run by both machines end to end: a
//! new target is synced in full (or taken as equal under
//! `initial_sync none`, or compared by digests under `checksum`), an
//! interrupted sync resumes as a resync, a target that says consistent
//! holds the source's image, unrelated or ahead targets are refused by
//! both sides, and online verify finds what changed under the target.

mod common;

use common::drive::{source_with, src_cfg, target_with, tgt_cfg};
use common::{Crc, VecPages};
use specmirror_core::log::meta::bitmap::{self, Bitmap};
use specmirror_core::log::meta::generation::{Generations, InitialSync, Rule};
use specmirror_core::pair::{Pair, Src, Tgt};
use specmirror_core::transport::proto::source::{LinkState, SyncPhase};
use specmirror_core::transport::proto::wake::MS;
use specmirror_core::transport::proto::{Completion, Mode, Refusal};

/// 1 MiB of data in 8-sector chunks: 256 chunks.
const DEV: u64 = 2048;
const CHUNK: u32 = 8;
const SRC_GEN: u64 = 0xA1;

fn gens(current: u64, bitmap: u64, history: &[u64]) -> Generations {
    let mut g = Generations {
        current,
        bitmap,
        ..Default::default()
    };
    g.history[..history.len()].copy_from_slice(history);
    g
}

/// A source with a clean bitmap and generations `g`.
fn src(g: Generations, initial: InitialSync) -> Src {
    let mut cfg = src_cfg(Mode::Speculative, Completion::Async);
    cfg.dev_sectors = DEV;
    let mut s = source_with(cfg, 64, 8, 512);
    let chunks = DEV.div_ceil(u64::from(CHUNK));
    let bits =
        Bitmap::new(VecPages::new(bitmap::blocks_for(chunks) as usize), chunks).expect("pages");
    s.attach_bitmap(bits, CHUNK).expect("chunk size");
    s.attach_generations(g, initial);
    s
}

fn tgt(g: Generations, consistent: bool) -> Tgt {
    let mut cfg = tgt_cfg();
    cfg.dev_sectors = DEV;
    let mut t = target_with(cfg, 64, 512);
    t.attach_generations(g, consistent);
    t
}

/// A pair whose source device holds `0x5C` everywhere and whose target
/// device is zeroed.
fn pair(s: Src, t: Tgt) -> Pair<Crc> {
    let mut p = Pair::new(s, t, Crc).with_disk();
    p.src_disk = Some(vec![0x5C; DEV as usize * 512]);
    p
}

fn settle(p: &mut Pair<Crc>) -> bool {
    p.run_until(10 * MS, 2000, |p| {
        p.s.link_state() == LinkState::Connected
            && p.s
                .gen_status()
                .is_some_and(|g| g.phase == SyncPhase::Idle && g.saved)
            && p.s.resync_stats().is_some_and(|r| r.dirty == 0)
            && !p.s.verify_stats().is_some_and(|v| v.running)
            && p.t.generations().1
    })
}

#[test]
fn a_new_target_is_synced_in_full_and_ends_consistent_at_the_source_generation() {
    let mut p = pair(
        src(gens(SRC_GEN, 0, &[]), InitialSync::Full),
        tgt(Generations::default(), false),
    );
    assert!(
        settle(&mut p),
        "sync did not end: {:?} {:?}",
        p.s.gen_status(),
        p.t.generations()
    );
    let g = p.s.gen_status().expect("generations");
    assert_eq!(g.rule, Some(Rule::Initial));
    assert_eq!(p.t.last_rule(), Some(Rule::Initial));
    // The source moved on; the old generation is history, nothing tracked.
    assert_ne!(g.gens.current, SRC_GEN);
    assert!(g.gens.in_history(SRC_GEN));
    assert_eq!(g.gens.bitmap, 0);
    let (tg, consistent) = p.t.generations();
    assert!(consistent);
    assert_eq!(tg.current, g.gens.current);
    // Every chunk crossed, and the images are equal.
    assert_eq!(
        p.s.resync_stats().expect("bitmap").cleared,
        DEV / u64::from(CHUNK)
    );
    assert_eq!(p.disk, p.src_disk);
}

#[test]
fn initial_sync_none_sends_nothing_and_the_target_takes_the_source_generation() {
    let mut p = pair(
        src(gens(SRC_GEN, 0, &[]), InitialSync::None),
        tgt(Generations::default(), false),
    );
    assert!(settle(&mut p));
    assert_eq!(p.s.resync_stats().expect("bitmap").records, 0);
    let (tg, consistent) = p.t.generations();
    assert!(consistent);
    assert_eq!(tg.current, SRC_GEN);
    assert_eq!(p.s.gen_status().expect("gens").gens, gens(SRC_GEN, 0, &[]));
}

#[test]
fn a_consistent_target_at_the_source_generation_resumes_without_a_sync() {
    let mut p = pair(
        src(gens(SRC_GEN, 0, &[]), InitialSync::Full),
        tgt(gens(SRC_GEN, 0, &[]), true),
    );
    assert!(settle(&mut p));
    assert_eq!(p.s.gen_status().expect("gens").rule, Some(Rule::Resume));
    assert_eq!(p.s.resync_stats().expect("bitmap").records, 0);
    assert_eq!(p.t.generations(), (gens(SRC_GEN, 0, &[]), true));
}

#[test]
fn an_interrupted_full_sync_resumes_as_a_resync_and_is_inconsistent_meanwhile() {
    let mut p = pair(
        src(gens(SRC_GEN, 0, &[]), InitialSync::Full),
        tgt(Generations::default(), false),
    );
    // Run until part of the device is synced, then cut the link.
    for _ in 0..100_000 {
        if p.s.resync_stats().is_some_and(|r| r.cleared >= 64) {
            break;
        }
        if !p.step() {
            p.advance(MS);
        }
    }
    let r = p.s.resync_stats().expect("bitmap");
    assert!(r.cleared >= 64 && r.dirty > 0, "{r:?}");
    let base = p.s.gen_status().expect("gens").gens.bitmap;
    assert_ne!(base, 0);
    let (tg, consistent) = p.t.generations();
    assert!(
        !consistent,
        "a target in the middle of a sync says inconsistent"
    );
    assert_eq!(tg.current, base);
    p.cut();
    assert!(settle(&mut p));
    assert_eq!(p.s.gen_status().expect("gens").rule, Some(Rule::Resync));
    // Nothing was sent twice but what was in flight at the cut.
    let r = p.s.resync_stats().expect("bitmap");
    assert_eq!(r.cleared, DEV / u64::from(CHUNK));
    assert_eq!(p.disk, p.src_disk);
}

#[test]
fn unrelated_and_ahead_targets_are_refused_and_nothing_is_written() {
    for (t, why) in [
        (tgt(gens(0xBEEF, 0, &[0xF00D]), true), Refusal::Unrelated),
        (tgt(gens(0xBEEF, 0, &[SRC_GEN]), true), Refusal::TargetAhead),
    ] {
        let mut p = pair(src(gens(SRC_GEN, 0, &[]), InitialSync::Full), t);
        p.run_until(10 * MS, 300, |p| {
            p.s.link_state() == LinkState::Refused(why)
        });
        assert_eq!(p.s.link_state(), LinkState::Refused(why));
        assert_eq!(
            p.s.resync_stats().expect("bitmap").dirty,
            0,
            "a refused source marks nothing"
        );
        assert_eq!(p.s.gen_status().expect("gens").gens, gens(SRC_GEN, 0, &[]));
        assert!(p.disk.as_ref().is_some_and(|d| d.iter().all(|&b| b == 0)));
        assert!(p.t.generations().0.current == 0xBEEF);
    }
}

#[test]
fn writes_tracked_while_connected_rotate_the_generation_and_end_in_a_sync() {
    // A consistent pair; the operator marks a range (as a reload's
    // unacknowledged records would be): tracking begins, the target is
    // told the sync started, and it ends consistent at the new generation.
    let mut p = pair(
        src(gens(SRC_GEN, 0, &[]), InitialSync::Full),
        tgt(gens(SRC_GEN, 0, &[]), true),
    );
    assert!(settle(&mut p));
    p.s.mark_dirty(3, 5);
    p.run(10_000);
    assert!(settle(&mut p));
    let g = p.s.gen_status().expect("gens").gens;
    assert_ne!(g.current, SRC_GEN);
    assert_eq!(g.bitmap, 0);
    assert_eq!(p.t.generations(), (gens(g.current, 0, &[SRC_GEN]), true));
    assert_eq!(p.s.resync_stats().expect("bitmap").cleared, 3);
}

#[test]
fn a_checksum_sync_sends_only_the_chunks_that_differ() {
    // The target holds a copy of the source's data with 3 chunks changed,
    // but no generation (a re-seeded replica): only those cross.
    let mut p = pair(
        src(gens(SRC_GEN, 0, &[]), InitialSync::Checksum),
        tgt(Generations::default(), false),
    );
    let mut copy = p.src_disk.clone().expect("source image");
    for c in [5usize, 77, 200] {
        copy[c * CHUNK as usize * 512 + 100] ^= 0xFF;
    }
    p.disk = Some(copy);
    assert!(
        settle(&mut p),
        "sync did not end: {:?} {:?}",
        p.s.gen_status(),
        p.s.verify_stats()
    );
    let v = p.s.verify_stats().expect("a comparison ran");
    assert!(!v.running && v.checksum);
    assert_eq!(v.oos, 3);
    assert_eq!(v.compared, DEV / u64::from(CHUNK));
    let r = p.s.resync_stats().expect("bitmap");
    assert_eq!(r.records, 3, "only the differing chunks crossed");
    assert!(p.t.generations().1);
    assert_eq!(p.disk, p.src_disk);
}

#[test]
fn verify_finds_chunks_corrupted_on_the_target_and_the_resync_repairs_them() {
    let mut p = pair(
        src(gens(SRC_GEN, 0, &[]), InitialSync::Full),
        tgt(Generations::default(), false),
    );
    assert!(settle(&mut p));
    assert_eq!(p.disk, p.src_disk);
    // Corrupt 10 chunks behind the target's back.
    let disk = p.disk.as_mut().expect("target image");
    for c in [0usize, 3, 9, 31, 64, 100, 128, 150, 254, 255] {
        disk[c * CHUNK as usize * 512 + 7] ^= 0x5A;
    }
    assert_eq!(
        p.s.verify(DEV, 8),
        Err(specmirror_core::transport::proto::source::VerifyError::Range)
    );
    assert_eq!(
        p.s.verify(0, 0),
        Err(specmirror_core::transport::proto::source::VerifyError::Range)
    );
    p.s.verify(0, DEV).expect("verify starts");
    assert!(settle(&mut p));
    let v = p.s.verify_stats().expect("verify ran");
    assert!(!v.running && !v.checksum);
    assert_eq!(v.oos, 10);
    assert_eq!(p.disk, p.src_disk, "the resync repaired what verify marked");
    // A second pass finds nothing.
    p.s.verify(0, DEV).expect("verify starts");
    assert!(settle(&mut p));
    assert_eq!(p.s.verify_stats().expect("verify ran").oos, 0);
}

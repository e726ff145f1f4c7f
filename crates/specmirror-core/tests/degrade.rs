//! Degraded mode, run by both machines end to end: an outage longer than
//! `degrade_after` lets parked and unacknowledged host writes go (also
//! with sync completion), their chunks dirty; the next handshake starts a
//! new stream and the dirty chunks resync until both devices are equal.
//! With `on_disconnect block` writes wait for the link as before.

mod common;

use common::drive::{retry, source_with, src_cfg, target_with, tgt_cfg, write};
use common::{Crc, VecPages};
use specmirror_core::log::meta::bitmap::{self, Bitmap};
use specmirror_core::log::meta::generation::{Generations, InitialSync, Rule};
use specmirror_core::pair::{Pair, Src, Tgt};
use specmirror_core::transport::proto::source::{LinkState, Submit, SyncPhase, WaitReason};
use specmirror_core::transport::proto::target::IoStatus;
use specmirror_core::transport::proto::wake::{MS, SEC};
use specmirror_core::transport::proto::{Completion, Mode};

/// 1 MiB of data in 8-sector chunks: 256 chunks.
const DEV: u64 = 2048;
const CHUNK: u32 = 8;
const SRC_GEN: u64 = 0xA1;
const AFTER: u64 = SEC;

/// A source (ring of 16 pages: it fills quickly) with a clean bitmap,
/// generations at `SRC_GEN` and `degrade_after`.
fn src(completion: Completion, after: Option<u64>) -> Src {
    let mut cfg = src_cfg(Mode::Speculative, completion);
    cfg.dev_sectors = DEV;
    let mut s = source_with(cfg, 16, 8, 512);
    let chunks = DEV.div_ceil(u64::from(CHUNK));
    let bits =
        Bitmap::new(VecPages::new(bitmap::blocks_for(chunks) as usize), chunks).expect("pages");
    s.attach_bitmap(bits, CHUNK).expect("chunk size");
    s.attach_generations(
        Generations {
            current: SRC_GEN,
            ..Default::default()
        },
        InitialSync::Full,
    );
    s.set_degrade_after(after);
    s
}

/// A target consistent at `SRC_GEN` (both devices start zeroed).
fn tgt() -> Tgt {
    let mut cfg = tgt_cfg();
    cfg.dev_sectors = DEV;
    let mut t = target_with(cfg, 64, 512);
    t.attach_generations(
        Generations {
            current: SRC_GEN,
            ..Default::default()
        },
        true,
    );
    t
}

fn pair(s: Src) -> Pair<Crc> {
    let mut p = Pair::new(s, tgt(), Crc).with_disk();
    p.src_disk = Some(vec![0; DEV as usize * 512]);
    p
}

/// Writes 8 sectors of `byte` at `sector` to the source's image once the
/// source accepted the write, and ends its local write.
fn local(p: &mut Pair<Crc>, r: Submit, sector: u64, byte: u8) -> bool {
    let Submit::Accepted(seq) = r else {
        return false;
    };
    if let Some(d) = p.src_disk.as_mut() {
        d[sector as usize * 512..(sector as usize + 8) * 512].fill(byte);
    }
    assert!(p.s.local_done(seq, true));
    true
}

fn settled(p: &Pair<Crc>) -> bool {
    p.s.link_state() == LinkState::Connected
        && !p.s.is_degraded()
        && p.s.resync_stats().is_some_and(|r| r.dirty == 0)
        && p.s.gen_status().is_some_and(|g| g.phase == SyncPhase::Idle && g.saved)
        && p.t.generations().1
        && p.s.ring().is_empty()
}

#[test]
fn an_outage_past_degrade_after_lets_writes_go_and_resyncs_the_dirty_chunks() {
    let mut p = pair(src(Completion::Sync, Some(AFTER)));
    assert!(p.connect());
    // Streaming: a write completes once the target applied it.
    let r = write(&mut p.s, 0, 8, 0x11);
    assert!(local(&mut p, r, 0, 0x11));
    assert!(p.run_until(MS, 100, |p| p.completed.len() == 1));

    // The link goes: sync writes wait for acknowledgements, then the ring
    // or the in-flight slots fill and writes are parked.
    p.reachable = false;
    p.cut();
    let cut_at = p.now;
    let mut sector = 64;
    let mut parked = None;
    for i in 0..64u8 {
        let r = write(&mut p.s, sector, 8, 0x20 + i);
        if let Submit::Wait(w) = r {
            // The ring, or the in-flight slots that sync writes hold.
            assert!(matches!(w, WaitReason::RingFull | WaitReason::InflightFull), "{w:?}");
            parked = Some((sector, 0x20 + i));
            break;
        }
        assert!(local(&mut p, r, sector, 0x20 + i));
        sector += 64;
    }
    let (psector, pbyte) = parked.expect("the ring filled");
    let accepted = (psector - 64) / 64;
    assert!(accepted > 0);
    assert_eq!(p.completed.len(), 1, "no ack: sync writes wait");
    assert!(!p.s.is_degraded());

    // degrade_after later (not before) the source is degraded: the
    // waiting writes complete and the parked one goes in.
    assert!(p.run_until(10 * MS, 300, |p| p.s.is_degraded()));
    assert!(p.now - cut_at >= AFTER, "degraded too early");
    assert!(p.now - cut_at <= AFTER + 20 * MS, "degraded late: {} ms", (p.now - cut_at) / MS);
    assert_eq!(p.s.degrade_count(), 1);
    p.run(100);
    assert_eq!(p.completed.len() as u64, 1 + accepted);
    let r = retry(&mut p.s, psector, 8, pbyte);
    assert!(local(&mut p, r, psector, pbyte));
    // Degraded: a new write completes after its local write alone.
    let r = write(&mut p.s, 1000, 8, 0x77);
    assert!(local(&mut p, r, 1000, 0x77));
    p.run(100);
    assert_eq!(p.completed.len() as u64, 3 + accepted);
    let dirty = p.s.resync_stats().expect("bitmap").dirty;
    assert_eq!(dirty, accepted + 2, "every write's chunk is dirty");
    assert!(p.s.ring().is_empty(), "dropped records are freed");

    // The target is back: a new stream, the rule says resync, the dirty
    // chunks cross, and the devices are equal.
    let old_stream = p.s.stream_generation();
    p.reachable = true;
    assert!(p.run_until(10 * MS, 2000, settled), "{:?} {:?}", p.s.gen_status(), p.s.resync_stats());
    assert_ne!(p.s.stream_generation(), old_stream);
    assert_eq!(p.s.gen_status().and_then(|g| g.rule), Some(Rule::Resync));
    assert!(p.disk == p.src_disk, "devices differ after the resync");
}

#[test]
fn a_ring_full_past_degrade_after_degrades_while_connected() {
    // The target's device never completes a write (the link is up but
    // nothing is acknowledged): the ring stays full.
    let mut p = pair(src(Completion::Async, Some(AFTER)));
    assert!(p.connect());
    p.hold_io = true;
    let mut sector = 0;
    let parked = loop {
        let r = write(&mut p.s, sector, 8, 0x33);
        if let Submit::Wait(_) = r {
            break sector;
        }
        assert!(local(&mut p, r, sector, 0x33));
        p.run(10);
        sector += 8;
    };
    let start = p.now;
    assert!(p.run_until(10 * MS, 300, |p| p.s.is_degraded()));
    assert!(p.now - start <= AFTER + 20 * MS);
    let r = retry(&mut p.s, parked, 8, 0x33);
    assert!(local(&mut p, r, parked, 0x33));
    // The target's writes finish; the pair reconnects on a new stream
    // and resyncs.
    p.hold_io = false;
    for seq in p.issued.clone() {
        assert!(p.complete_io(seq, IoStatus::Ok));
    }
    assert!(p.run_until(10 * MS, 3000, settled), "{:?} {:?}", p.s.link_state(), p.s.resync_stats());
    assert!(p.disk == p.src_disk, "devices differ");
}

#[test]
fn with_on_disconnect_block_writes_wait_for_the_link() {
    let mut p = pair(src(Completion::Sync, None));
    assert!(p.connect());
    p.reachable = false;
    p.cut();
    let r = write(&mut p.s, 0, 8, 0x44);
    assert!(local(&mut p, r, 0, 0x44));
    assert!(!p.run_until(100 * MS, 100, |p| !p.completed.is_empty() || p.s.is_degraded()));
    // Back: the stream resumes (no new stream, nothing dirty).
    let stream = p.s.stream_generation();
    p.reachable = true;
    assert!(p.run_until(10 * MS, 3000, |p| p.completed.len() == 1 && settled(p)));
    assert_eq!(p.s.stream_generation(), stream);
    assert_eq!(p.s.gen_status().and_then(|g| g.rule), Some(Rule::Resume));
    assert_eq!(p.s.resync_stats().expect("bitmap").cleared, 0);
    assert!(p.disk == p.src_disk, "devices differ");
}

//! The source and target machines end to end over the in-memory pair
//! driver: handshake, streaming, acknowledgement, completion.

mod common;

use common::Crc;
use specmirror_core::log::commit::{WindowSlot, SCAN_LIMIT};
use specmirror_core::log::filter::FILTER_BUCKETS;
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::record::SECTOR_SIZE;
use specmirror_core::pair::{Pair, Src, Tgt};
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::inflight::InflightSlot;
use specmirror_core::transport::proto::source::{
    HostOp, HostWrite, LinkState, Source, SourceConfig, Submit,
};
use specmirror_core::transport::proto::target::{Target, TargetConfig};
use specmirror_core::transport::proto::{Completion, Mode};
use specmirror_core::vec_pages::VecPages;

const DEV: u64 = 4096;
const REGION: u32 = 64;

fn source(completion: Completion) -> Src {
    let mut s = Source::new(
        SourceConfig {
            region_sectors: REGION,
            mode: Mode::Speculative,
            completion,
            dev_sectors: DEV,
            generation: 9,
            secret: None,
        },
        VecPages::new(64),
        1,
        vec![HotSlot::default(); 4],
        vec![InflightSlot::default(); 8],
    )
    .unwrap();
    s.set_payload_align(512).unwrap();
    s
}

fn target() -> Tgt {
    let mut t = Target::new(
        TargetConfig {
            region_sectors: REGION,
            dev_sectors: DEV,
            ack_every: 4,
            secret: None,
        },
        VecPages::new(64),
        vec![WindowSlot::EMPTY; SCAN_LIMIT],
        vec![0; FILTER_BUCKETS],
        vec![LockSlot::EMPTY; 16],
    )
    .unwrap();
    t.set_payload_align(512).unwrap();
    t
}

#[test]
fn writes_replicate_and_complete() {
    for completion in [Completion::Async, Completion::Sync] {
        let mut p = Pair::new(source(completion), target(), Crc).with_disk();
        assert!(p.connect(), "no handshake");
        let mut local = vec![0u8; DEV as usize * SECTOR_SIZE];
        let mut seqs = Vec::new();
        for i in 0..40u64 {
            let sector = (i * 37) % (DEV - 16);
            let data: Vec<u8> = (0..16 * SECTOR_SIZE)
                .map(|b| (b as u64 + i) as u8)
                .collect();
            let w = HostWrite {
                op: HostOp::Write,
                sector,
                count: 16,
                flags: 0,
            };
            let seq = match p.s.submit(&Crc, &w, 0, |wr| wr.write(&data)) {
                Submit::Accepted(seq) => seq,
                Submit::Wait(_) => {
                    // Parked (ring full): drain, then offer it again as
                    // the worker's Deferred step would.
                    assert!(p.run_until(1_000_000, 100, |p| p.s.ring().is_empty()));
                    match p.s.retry_deferred(&Crc, &w, 0, |wr| wr.write(&data)) {
                        Submit::Accepted(seq) => seq,
                        other => panic!("{other:?}"),
                    }
                }
                Submit::Invalid(e) => panic!("{e:?}"),
            };
            local[sector as usize * SECTOR_SIZE..][..data.len()].copy_from_slice(&data);
            assert!(p.s.local_done(seq, true));
            seqs.push(seq);
            p.run(1000);
        }
        assert!(
            p.run_until(1_000_000, 100, |p| p.s.is_idle()),
            "not idle: {completion:?}"
        );
        assert_eq!(p.s.link_state(), LinkState::Connected);
        assert_eq!(p.completed.len(), seqs.len());
        assert_eq!(seqs.len(), 40);
        assert_eq!(p.disk.as_deref(), Some(&local[..]), "devices differ");
    }
}

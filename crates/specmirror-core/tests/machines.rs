//! Unit tests of the source and target state machines: the handshake
//! (now inside the machines: CHALLENGE, HELLO and HELLO_REPLY with their
//! MACs), streaming, acknowledgement, holds, back-pressure, NAKs, lock
//! rejection, reconnects, generations, local holders and repairs.
//!
//! The pair driver ([`Pair`]) shakes hands; the helpers of
//! `common::drive` then move one kind of traffic at a time (the source's
//! sends, the target's device I/O, the target's replies), so that a test
//! can look between the steps. Frame-level tests craft frames and feed
//! them to the machines' receivers with the connection's number.

mod common;

use common::drive::*;
use common::Crc;
use specmirror_core::log::record::{Kind, FLAG_FUA, HEADER_LEN, NAK_CORRUPT, NAK_GAP};
use specmirror_core::pair::Pair;
use specmirror_core::transport::proto::auth::{self, MacLabel};
use specmirror_core::transport::proto::source::{
    HostOp, LinkState, RxVerdict as SRx, SenderStep as SStep, SourceConfig, Submit, WaitReason,
    WorkerStep, REPAIR_RETRY,
};
use specmirror_core::transport::proto::target::{
    ApplierStep, IoStatus, LocalLock, RxVerdict as TRx, SenderStep as TStep,
};
use specmirror_core::transport::proto::wake::{MS, SEC};
use specmirror_core::transport::proto::{Completion, Mode, Refusal};

/// Changes one field of a HELLO or HELLO_REPLY.
type Mutate = fn(&mut specmirror_core::log::record::Hello);

const SPEC: Mode = Mode::Speculative;
const ASYNC: Completion = Completion::Async;

/// Everything sent and done: the source's ring may free what is acked.
fn local_done_all(p: &mut Pair<Crc>, seqs: &[u64]) {
    for &s in seqs {
        assert!(p.s.local_done(s, true), "seq {s}");
    }
}

#[test]
fn handshake_refuses_mismatch() {
    // Device sizes differ.
    let mut cfg = tgt_cfg();
    cfg.dev_sectors = DEV + 8;
    let mut p = Pair::new(source(SPEC, ASYNC, 64, 4), target_with(cfg, 64, 512), Crc);
    assert!(matches!(write(&mut p.s, 0, 8, 1), Submit::Accepted(_)));
    assert!(!p.connect());
    assert_eq!(p.s.link_state(), LinkState::Refused(Refusal::DeviceSize));
    assert_eq!(p.t.conn_state(), "refused:device-size");
    assert!(p.t.stats().refusals >= 1);
    assert_eq!(p.t.take_refusal_log(), Some(Refusal::DeviceSize));
    assert_eq!(
        p.t.take_refusal_log(),
        None,
        "logged once per reason in a row"
    );
    // Nothing was streamed.
    assert_eq!(p.s.stats().sent, 0);
    assert_eq!(p.t.received_seq(), 0);
    assert!(!p.t.is_connected());

    // Region sizes differ.
    let mut cfg = tgt_cfg();
    cfg.region_sectors = REGION * 2;
    let mut p = Pair::new(source(SPEC, ASYNC, 64, 4), target_with(cfg, 64, 512), Crc);
    assert!(!p.connect());
    assert_eq!(p.s.link_state(), LinkState::Refused(Refusal::RegionSize));
    assert_eq!(p.t.conn_state(), "refused:region-size");

    // The target's checks of a HELLO, one field at a time (a scripted
    // source: the real one always sends its own fields).
    let cases: [(Mutate, Refusal); 5] = [
        (|h| h.proto_version = 99, Refusal::Version),
        (|h| h.dev_sectors = DEV - 8, Refusal::DeviceSize),
        (|h| h.region_sectors = REGION / 2, Refusal::RegionSize),
        (|h| h.generation = 0, Refusal::Generation),
        (|h| h.block_size = 512, Refusal::BlockSize),
    ];
    for (mutate, refusal) in cases {
        let mut t = target(64);
        t.set_block_size(4096);
        t.start();
        let (conn, nonce) = accept(&mut t, 0);
        let mut h = hello_of(&src_cfg(SPEC, ASYNC), 0);
        mutate(&mut h);
        sign_hello(None, &nonce, &mut h);
        let (v, reply) = send_hello(&mut t, conn, &h, 0);
        assert_eq!(v, TRx::Continue, "{refusal:?}");
        let reply = reply.expect("a refusing HELLO_REPLY");
        assert_eq!(Refusal::from_flags(reply.flags), refusal);
        assert!(!t.is_connected());
        // Then the target closes the connection.
        let mut buf = vec![0u8; 4096];
        assert_eq!(t.poll_sender(&Crc, 0, &mut buf), TStep::Close { conn });
        t.on_shutdown(conn);
        t.on_recv_end(conn, false);
        assert_eq!(t.conn_state(), refusal.as_str());
    }

    // The source's checks of a HELLO_REPLY (a scripted target).
    let cases: [(Mutate, Refusal); 7] = [
        (|h| h.proto_version = 99, Refusal::Version),
        (|h| h.dev_sectors = DEV * 2, Refusal::DeviceSize),
        (|h| h.region_sectors = REGION * 4, Refusal::RegionSize),
        (|h| h.generation = GEN - 1, Refusal::Generation),
        // Claims records this source never wrote.
        (|h| h.last_applied = 5, Refusal::Diverged),
        (|h| h.flags = Refusal::Busy.to_flags(), Refusal::Busy),
        (|h| h.flags = 0xee << 8, Refusal::Protocol),
    ];
    for (mutate, refusal) in cases {
        let mut s = source(SPEC, ASYNC, 64, 4);
        s.start(0);
        let conn = src_connect(&mut s, 0);
        src_challenge(&mut s, conn, &T_NONCE, 0);
        let mut r = reply_of(0);
        mutate(&mut r);
        assert_eq!(
            src_reply(&mut s, conn, None, r, 0),
            SRx::Stop,
            "{refusal:?}"
        );
        assert_eq!(s.link_state(), LinkState::Refused(refusal));
        // The source closes and tries again later, slowly.
        assert_eq!(s.poll_sender(&Crc, 0), SStep::Close { conn });
        s.on_shutdown(conn);
        s.on_closed(conn, 0);
        assert!(matches!(s.poll_sender(&Crc, 0), SStep::Sleep { until: Some(t) } if t > 0));
        assert_eq!(s.link_state(), LinkState::Refused(refusal));
        assert_eq!(s.stats().sent, 0);
    }
}

/// A target whose device has larger logical blocks than the source's
/// cannot apply the source's smallest writes: it refuses the stream, and a
/// source told so by an older target's reply refuses it too. Equal sizes,
/// a smaller target block, or a side that does not state its size pass.
#[test]
fn handshake_compares_logical_block_sizes() {
    for (src_bs, tgt_bs, refused) in [
        (512, 4096, true),
        (4096, 4096, false),
        (4096, 512, false),
        (0, 4096, false),
        (512, 0, false),
    ] {
        let mut s = source(SPEC, ASYNC, 64, 4);
        s.set_block_size(src_bs);
        let mut t = target(64);
        t.set_block_size(tgt_bs);
        let mut p = Pair::new(s, t, Crc);
        assert_eq!(p.connect(), !refused, "{src_bs} -> {tgt_bs}");
        if refused {
            assert_eq!(p.s.link_state(), LinkState::Refused(Refusal::BlockSize));
            assert_eq!(p.t.conn_state(), "refused:block-size");
        }
        // What each side states.
        let mut s = source(SPEC, ASYNC, 64, 4);
        s.set_block_size(src_bs);
        s.start(0);
        let conn = src_connect(&mut s, 0);
        let hello = src_challenge(&mut s, conn, &T_NONCE, 0);
        assert_eq!(hello.block_size, src_bs);
        let mut t = target(64);
        t.set_block_size(tgt_bs);
        t.start();
        let (tc, _) = accept(&mut t, 0);
        let (_, reply) = send_hello(&mut t, tc, &hello, 0);
        assert_eq!(reply.unwrap().block_size, tgt_bs);
    }
    // A target that did not check (an older one) answers with its size:
    // the source refuses on its own.
    let mut s = source(SPEC, ASYNC, 64, 4);
    s.set_block_size(512);
    s.start(0);
    let conn = src_connect(&mut s, 0);
    src_challenge(&mut s, conn, &T_NONCE, 0);
    let mut r = reply_of(0);
    r.block_size = 4096;
    assert_eq!(src_reply(&mut s, conn, None, r, 0), SRx::Stop);
    assert_eq!(s.link_state(), LinkState::Refused(Refusal::BlockSize));
}

/// Diverged seqs on either side: a target that applied less than the
/// source already freed, a target claiming more than the source wrote.
#[test]
fn handshake_refuses_diverged_streams() {
    // The target adopts generation 9 from a source starting at seq 1...
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    assert_eq!(p.t.generation(), GEN);
    p.cut();
    let Pair { t, .. } = p;
    // ...then a source of the same generation whose ring starts after
    // seq 10: records 1-10 are gone on both sides.
    let s = specmirror_core::transport::proto::source::Source::new(
        src_cfg(SPEC, ASYNC),
        common::vec_pages(64),
        11,
        vec![Default::default(); 4],
        vec![Default::default(); 8],
    )
    .unwrap();
    let mut p = Pair::new(s, t, Crc);
    assert!(!p.connect());
    assert_eq!(p.s.link_state(), LinkState::Refused(Refusal::Diverged));
    assert_eq!(p.t.conn_state(), "refused:diverged");

    // A target that applied 4 records of generation 9 meets a new source
    // of generation 9 with nothing written: it claims records the source
    // never wrote, and the source refuses.
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    for i in 0..3 {
        let Submit::Accepted(seq) = write(&mut p.s, i * 8, 8, 1) else {
            panic!()
        };
        assert!(p.s.local_done(seq, true));
    }
    p.run(1000);
    assert_eq!(p.t.applied_seq(), 4);
    p.cut();
    let Pair { t, .. } = p;
    let mut p = Pair::new(source(SPEC, ASYNC, 64, 4), t, Crc);
    assert!(!p.connect());
    assert_eq!(p.s.link_state(), LinkState::Refused(Refusal::Diverged));
}

#[test]
fn speculative_sends_without_waiting_and_evicts_lru() {
    let mut p = connected(source(SPEC, ASYNC, 64, 2), target(64));
    assert_eq!(write(&mut p.s, 0, 8, 1), Submit::Accepted(2));
    assert_eq!(write(&mut p.s, 64, 8, 2), Submit::Accepted(4));
    // A third region with two hot slots: the LRU one (0) is unlocked.
    assert_eq!(write(&mut p.s, 128, 8, 4), Submit::Accepted(7));
    // Overlaps write 2, whose local I/O is outstanding: parked.
    assert_eq!(write(&mut p.s, 1, 8, 3), Submit::Wait(WaitReason::Overlap));
    assert_eq!(p.s.deferred_len(), 1);
    let kinds: Vec<(Kind, u64)> = send_all(&mut p)
        .iter()
        .map(|h| (h.kind, h.sector))
        .collect();
    assert_eq!(
        kinds,
        [
            (Kind::Lock, 0),
            (Kind::Write, 0),
            (Kind::Lock, 1),
            (Kind::Write, 64),
            (Kind::Unlock, 0),
            (Kind::Lock, 2),
            (Kind::Write, 128)
        ]
    );
    assert_eq!(apply_all(&mut p), [2, 4, 7]);
    // Speculative: no grants, just the cumulative ACK.
    let ctl = deliver_tgt(&mut p);
    assert_eq!(ctl.len(), 1);
    assert_eq!((ctl[0].kind, ctl[0].seq), (Kind::Ack, 7));
    assert_eq!(p.s.acked_seq(), 7);
    assert_eq!(p.s.stats().lock_grants, 0);
    // Acknowledged, but the ring keeps what local writes still read.
    assert_eq!(p.s.ring().oldest_seq(), Some(2));
    // Async completion: only after local I/O.
    assert!(p.s.poll_completed().is_none());
    assert!(p.s.local_done(2, true));
    assert_eq!(p.s.poll_completed().map(|c| c.seq), Some(2));
    assert_eq!(p.s.ring().oldest_seq(), Some(4));
    // The parked write may go now: the worker offers it again.
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Deferred);
    assert_eq!(retry(&mut p.s, 1, 8, 3), Submit::Accepted(10));
    assert_eq!(p.s.deferred_len(), 0);
    local_done_all(&mut p, &[4, 7, 10]);
    let kinds: Vec<(Kind, u64)> = send_all(&mut p)
        .iter()
        .map(|h| (h.kind, h.sector))
        .collect();
    // Region 1 is now the least recently used.
    assert_eq!(
        kinds,
        [(Kind::Unlock, 1), (Kind::Lock, 0), (Kind::Write, 1)]
    );
    apply_all(&mut p);
    deliver_tgt(&mut p);
    assert!(p.s.ring().is_empty());
    assert_eq!(p.s.stats().resends, 0);
}

#[test]
fn lock_sync_holds_writes_until_granted() {
    let mut p = connected(source(Mode::LockSync, ASYNC, 64, 4), target(64));
    assert_eq!(write(&mut p.s, 0, 8, 1), Submit::Accepted(2));
    let sent = send_all(&mut p);
    assert_eq!(sent.len(), 1, "only the LOCK goes out");
    assert_eq!(sent[0].kind, Kind::Lock);
    assert!(p.s.is_held());
    assert_eq!(p.s.holds().collect::<Vec<_>>(), [(0, 1, false)]);
    // Nothing more until the grant.
    assert!(send_all(&mut p).is_empty());
    let ctl = deliver_tgt(&mut p);
    assert!(ctl
        .iter()
        .any(|h| h.kind == Kind::LockGranted && h.sector == 0));
    assert!(!p.s.is_held());
    let sent = send_all(&mut p);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, Kind::Write);
}

#[test]
fn sync_completion_waits_for_ack() {
    let mut p = connected(source(SPEC, Completion::Sync, 64, 4), target(64));
    let d = vec![7u8; 4096];
    let w = hw(HostOp::Write, 8, 8, FLAG_FUA);
    let Submit::Accepted(seq) = p.s.submit(&Crc, &w, 0, |wr| wr.write(&d)) else {
        panic!()
    };
    assert!(p.s.local_done(seq, true));
    assert!(p.s.poll_completed().is_none());
    assert!(!p.s.has_completions());
    send_all(&mut p);
    assert!(p.s.poll_completed().is_none(), "sent is not applied");
    apply_all(&mut p);
    assert!(
        p.s.poll_completed().is_none(),
        "applied is not acknowledged"
    );
    let ctl = deliver_tgt(&mut p);
    assert_eq!(ctl.last().map(|h| (h.kind, h.seq)), Some((Kind::Ack, seq)));
    assert_eq!(
        p.s.poll_completed().map(|c| (c.seq, c.ok)),
        Some((seq, true))
    );
}

#[test]
fn ring_full_is_back_pressure() {
    let mut p = connected(source(SPEC, ASYNC, 3, 4), target(64));
    let mut n = 0;
    loop {
        match write(&mut p.s, n * 16, 8, 1) {
            Submit::Accepted(seq) => {
                assert!(p.s.local_done(seq, true));
                assert!(p.s.poll_completed().is_some());
                n += 1;
            }
            Submit::Wait(WaitReason::RingFull) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(n > 0);
    let r = p.s.ring();
    assert!(r.free_bytes() < r.max_stored_len(4096) + 2 * r.max_stored_len(0));
    // The glue parked the bio: the machine counts it.
    assert_eq!(p.s.deferred_len(), 1);
    // Later writes queue behind it, even ones that would fit.
    let flush = hw(HostOp::Flush, 0, 0, 0);
    assert_eq!(
        p.s.submit(&Crc, &flush, 0, |_| Ok(())),
        Submit::Wait(WaitReason::Queued)
    );
    assert_eq!(p.s.deferred_len(), 2);
    assert_eq!(p.s.stats().waits, 2);
    // Nothing freed yet: the worker has nothing to offer again.
    assert!(matches!(p.s.poll_worker(p.now), WorkerStep::Sleep { .. }));
    // Acknowledgements free the ring; the worker then offers the head.
    round(&mut p);
    assert!(p.s.ring().is_empty());
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Deferred);
    assert!(matches!(retry(&mut p.s, n * 16, 8, 1), Submit::Accepted(_)));
    assert_eq!(p.s.deferred_len(), 1);
    assert!(matches!(
        p.s.retry_deferred(&Crc, &flush, 0, |_| Ok(())),
        Submit::Accepted(_)
    ));
    assert_eq!(p.s.deferred_len(), 0);
    assert!(matches!(write(&mut p.s, 8, 8, 2), Submit::Accepted(_)));
}

/// The head of the deferred list that must wait again stays parked (the
/// count does not grow), and the worker offers it again only once
/// something changed.
#[test]
fn deferred_head_waits_again_until_something_changes() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    // Eight in-flight slots.
    let seqs: Vec<u64> = (0..8)
        .map(|i| match write(&mut p.s, i * 8, 8, 1) {
            Submit::Accepted(s) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        write(&mut p.s, 100, 8, 1),
        Submit::Wait(WaitReason::InflightFull)
    );
    assert_eq!(p.s.deferred_len(), 1);
    assert!(matches!(p.s.poll_worker(p.now), WorkerStep::Sleep { .. }));
    // Local I/O done, but the slot is freed only once the write completes.
    assert!(p.s.local_done(seqs[0], true));
    assert_eq!(
        retry(&mut p.s, 100, 8, 1),
        Submit::Wait(WaitReason::InflightFull)
    );
    assert_eq!(p.s.deferred_len(), 1, "the head goes back, not to the tail");
    // The worker ends the completion first, then offers the head.
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Complete);
    assert_eq!(p.s.poll_completed().map(|c| c.seq), Some(seqs[0]));
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Deferred);
    assert!(matches!(retry(&mut p.s, 100, 8, 1), Submit::Accepted(_)));
    assert_eq!(p.s.deferred_len(), 0);
    assert!(matches!(p.s.poll_worker(p.now), WorkerStep::Sleep { .. }));
}

#[test]
fn target_naks_corruption_and_gaps_and_ignores_duplicates() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    write(&mut p.s, 0, 8, 1);
    write(&mut p.s, 8, 8, 2);
    let frames = source_send(&mut p).unwrap();
    assert_eq!(frames.len(), 3); // LOCK, WRITE, WRITE
                                 // Corrupt the first WRITE's payload: NAK(2), then drop 3 silently.
    assert_eq!(to_target(&mut p, &frames[0]), TRx::Continue);
    let mut bad = frames[1].clone();
    bad[HEADER_LEN + 5] ^= 0x10;
    assert_eq!(to_target(&mut p, &bad), TRx::Continue);
    assert_eq!(to_target(&mut p, &frames[2]), TRx::Continue);
    assert_eq!(p.t.stats().crc_errors, 1);
    assert_eq!(p.t.stats().dropped, 1);
    assert_eq!(p.t.received_seq(), 1);
    let ctl = target_send(&mut p).unwrap();
    assert_eq!(ctl.len(), 1);
    let h = header(&ctl[0]);
    assert_eq!((h.kind, h.seq, h.count), (Kind::Nak, 2, NAK_CORRUPT));
    assert_eq!(to_source(&mut p, &ctl[0]), SRx::Continue);
    assert_eq!(p.s.ring().send_seq(), 2);
    assert_eq!(p.s.stats().naks, 1);
    // The resend is byte for byte what was sent first.
    let again = source_send(&mut p).unwrap();
    assert_eq!(again, frames[1..]);
    assert_eq!(p.s.stats().resends, 2);
    // Duplicates of 1 are ignored, 2 and 3 accepted.
    assert_eq!(to_target(&mut p, &frames[0]), TRx::Continue);
    for f in &again {
        assert_eq!(to_target(&mut p, f), TRx::Continue);
    }
    assert_eq!(p.t.received_seq(), 3);
    assert_eq!(p.t.stats().duplicates, 1);
    // A gap (seq 5 while 4 is expected) is NAKed once.
    let f5 = record(Kind::Flush, 5, 0, 0, &[]);
    assert_eq!(to_target(&mut p, &f5), TRx::Continue);
    assert_eq!(to_target(&mut p, &f5), TRx::Continue);
    let naks: Vec<_> = target_send(&mut p)
        .unwrap()
        .iter()
        .map(|f| header(f))
        .filter(|h| h.kind == Kind::Nak)
        .map(|h| (h.seq, h.count))
        .collect();
    assert_eq!(naks, [(4, NAK_GAP)]);
    assert_eq!(p.t.stats().naks, 2);
    assert_eq!(p.t.stats().dropped, 3);
}

/// Corruption injected by the source's own fault hook travels the same
/// way: NAK, resend, and the devices end up equal.
#[test]
fn corrupted_sends_are_naked_and_resent_end_to_end() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64)).with_disk();
    p.s.fault_corrupt_every(3);
    let mut expect = vec![0u8; DEV as usize * 512];
    for i in 0..20u64 {
        let sector = i * 24 % 4000;
        let Submit::Accepted(seq) = write(&mut p.s, sector, 8, i as u8 + 1) else {
            panic!()
        };
        expect[sector as usize * 512..][..4096].fill(i as u8 + 1);
        assert!(p.s.local_done(seq, true));
        p.run(1000);
    }
    p.s.fault_corrupt_every(0);
    assert!(p.run_until(MS, 100, |p| p.s.is_idle()));
    assert!(p.t.stats().crc_errors > 0);
    assert!(p.s.stats().naks > 0 && p.s.stats().resends > 0);
    assert_eq!(p.s.link_state(), LinkState::Connected);
    assert_eq!(p.disk.as_deref(), Some(&expect[..]));
}

#[test]
fn rejected_lock_with_full_log_rejects_then_grants() {
    // Log: 18 pages = 72 KiB, i.e. two 32 KiB writes.
    let mut p = connected(source(SPEC, ASYNC, 256, 4), target(18));
    assert_eq!(p.t.local_lock(0, 64), LocalLock::Granted);
    for i in 0..4u64 {
        let Submit::Accepted(seq) = write(&mut p.s, i * 64, 64, i as u8) else {
            panic!()
        };
        assert!(p.s.local_done(seq, true));
    }
    let mut rejected = false;
    while let Some(frames) = source_send(&mut p) {
        for f in frames {
            assert_eq!(to_target(&mut p, &f), TRx::Continue);
            apply_all(&mut p);
            for h in deliver_tgt(&mut p) {
                if h.kind == Kind::LockRejected {
                    assert_eq!(h.sector, 0);
                    rejected = true;
                }
            }
        }
    }
    assert!(
        rejected,
        "full log with a rejected region must send LOCK_REJECTED"
    );
    assert!(p.s.is_held());
    assert!(p
        .s
        .holds()
        .any(|(region, _, rejected)| region == 0 && rejected));
    assert!(matches!(p.s.poll_sender(&Crc, p.now), SStep::Sleep { .. }));
    // A new local locker of the rejected region must wait.
    assert_eq!(p.t.local_lock(0, 8), LocalLock::WouldBlock);
    p.t.local_unlock(0, 64);
    let ctl = deliver_tgt(&mut p);
    assert!(ctl
        .iter()
        .any(|h| h.kind == Kind::LockGranted && h.sector == 0));
    assert!(!p.s.is_held());
    // Everything now flows and drains.
    for _ in 0..10 {
        round(&mut p);
    }
    assert!(
        p.s.ring().is_empty(),
        "acked {} oldest {:?} send {} next {} holds {:?} applied {} received {} {:?} {:?}",
        p.s.acked_seq(),
        p.s.ring().oldest_seq(),
        p.s.ring().send_seq(),
        p.s.ring().next_seq(),
        p.s.holds().collect::<Vec<_>>(),
        p.t.applied_seq(),
        p.t.received_seq(),
        p.t.stats(),
        p.s.stats()
    );
    assert!(p.t.commit_log().is_empty());
    assert_eq!(p.t.applied_seq(), 8);
}

#[test]
fn target_refuses_writes_past_device_end() {
    for (kind, payload) in [(Kind::Discard, vec![]), (Kind::Write, vec![1u8; 4096])] {
        let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
        let f = record(kind, 1, DEV - 4, 8, &payload);
        assert_eq!(to_target(&mut p, &f), TRx::Stop);
        assert_eq!(p.t.stats().protocol_errors, 1);
        assert_eq!(p.t.received_seq(), 0);
        assert!(p.t.poll_issue().is_none());
        // The sender shuts the connection down.
        let conn = p.t.conn();
        assert_eq!(target_send(&mut p), Err(TStep::Close { conn }));
    }
}

#[test]
fn reconnect_resumes_from_last_applied() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    let mut seqs = Vec::new();
    for i in 0..3 {
        let Submit::Accepted(s) = write(&mut p.s, i * 8, 8, 1) else {
            panic!()
        };
        seqs.push(s);
    }
    send_all(&mut p);
    assert_eq!(apply_all(&mut p), [2, 3, 4]);
    // Connection lost before the ACK went out.
    p.cut();
    assert_ne!(p.s.link_state(), LinkState::Connected);
    let Submit::Accepted(s) = write(&mut p.s, 100, 8, 2) else {
        panic!()
    };
    seqs.push(s);
    // Shake hands again, and go no further.
    for _ in 0..1000 {
        if p.s.link_state() == LinkState::Connected {
            break;
        }
        if !p.step() {
            p.advance(10 * MS);
        }
    }
    assert_eq!(p.s.link_state(), LinkState::Connected);
    assert_eq!(p.s.acked_seq(), 4);
    assert_eq!(p.s.stats().reconnects, 1);
    assert_eq!(p.s.stats().disconnects, 1);
    assert_eq!(p.t.stats().reconnects, 1);
    assert_eq!(p.s.ring().send_seq(), 5);
    let sent = send_all(&mut p);
    assert_eq!(sent.iter().map(|h| h.seq).collect::<Vec<_>>(), [5, 6]);
    apply_all(&mut p);
    deliver_tgt(&mut p);
    local_done_all(&mut p, &seqs);
    assert!(p.s.ring().is_empty());
    assert_eq!(p.t.stats().duplicates, 0);
    assert_eq!(p.s.stats().resends, 0);
}

#[test]
fn new_generation_is_adopted_only_when_the_log_is_empty() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    write(&mut p.s, 0, 8, 1);
    assert_eq!(send_all(&mut p).len(), 2);
    p.cut();
    // A new source (restarted: new generation, ring from seq 1) while the
    // target still holds unapplied records: refused as busy.
    let Pair { t, .. } = p;
    let cfg = SourceConfig {
        generation: GEN + 1,
        ..src_cfg(SPEC, ASYNC)
    };
    let mut p = Pair::new(source_with(cfg, 64, 4, 512), t, Crc);
    p.hold_io = true;
    assert!(!p.connect());
    assert_eq!(p.s.link_state(), LinkState::Refused(Refusal::Busy));
    assert_eq!(p.t.generation(), GEN);
    assert_eq!(p.t.conn_state(), "refused:busy");
    // Drained: the new generation starts after the new source's base.
    p.hold_io = false;
    for seq in p.issued.clone() {
        assert!(p.complete_io(seq, IoStatus::Ok));
    }
    assert!(p.t.commit_log().is_empty());
    assert!(p.connect());
    assert_eq!(p.t.generation(), GEN + 1);
    assert_eq!(p.t.applied_seq(), 0);
    write(&mut p.s, 0, 8, 2);
    assert_eq!(send_all(&mut p).len(), 2);
    assert_eq!(apply_all(&mut p), [2]);
}

#[test]
fn local_holder_skips_records_without_failing_them() {
    let mut p = connected(source(SPEC, ASYNC, 256, 4), target(256));
    // Region 1 (sectors 64..128) is held locally; region 0 is free.
    assert_eq!(p.t.local_lock(64, 8), LocalLock::Granted);
    assert!(matches!(write(&mut p.s, 64, 8, 1), Submit::Accepted(_)));
    assert!(matches!(write(&mut p.s, 0, 8, 2), Submit::Accepted(_)));
    send_all(&mut p);
    // The write to region 0 passes the held one; a device error on it
    // leaves it failed.
    let mut issued = Vec::new();
    while let Some(v) = p.t.poll_issue() {
        issued.push(v);
    }
    assert_eq!(issued.len(), 1, "only the write outside the local lock");
    assert_eq!(issued[0].header.sector, 0);
    assert!(p.t.stats().local_waits > 0);
    assert!(p.t.io_done(issued[0].seq, IoStatus::Failed, p.now));
    assert_eq!(p.t.failing(), 1);
    assert_eq!(p.t.stats().io_errors, 1);
    // Polling again neither issues the held write nor the failed one.
    assert!(p.t.poll_issue().is_none());
    // The local unlock lets the held write start, but does not retry the
    // failed device write early: that is the retry timer's job.
    p.t.local_unlock(64, 8);
    let v =
        p.t.poll_issue()
            .expect("held write starts after the unlock");
    assert_eq!(v.header.sector, 64);
    assert!(p.t.io_done(v.seq, IoStatus::Ok, p.now));
    assert!(
        p.t.poll_issue().is_none(),
        "failed write waits for the retry"
    );
    // (What was applied before the failed write is flushed meanwhile.)
    let mut step = p.t.poll_applier(p.now);
    while let ApplierStep::Flush { upto } = step {
        p.t.flush_done(upto, true, p.now);
        step = p.t.poll_applier(p.now);
    }
    let ApplierStep::Sleep { until: Some(at) } = step else {
        panic!("the applier sleeps until the retry")
    };
    assert_eq!(at, p.now + SEC);
    assert!(matches!(
        p.t.poll_applier(at - 1),
        ApplierStep::Sleep { .. }
    ));
    assert_eq!(p.t.poll_applier(at), ApplierStep::Issue);
    assert_eq!(p.t.failing(), 0);
    let v = p.t.poll_issue().expect("retried");
    assert_eq!(v.header.sector, 0);
    assert!(p.t.io_done(v.seq, IoStatus::Ok, at));
    assert!(p.t.commit_log().is_empty());
    // Zero-copy access: the pages the chunks refer to.
    assert_eq!(p.t.pages().0.len(), 256);
}

/// The handshake's MACs are the machines' to make and check: the same
/// secret (or none) on both sides connects; any other combination is
/// refused for authentication, by whichever side finds out.
#[test]
fn secrets_authenticate_the_handshake() {
    for (ss, ts, ok) in [
        (Some("Sw0rdf1sh"), Some("Sw0rdf1sh"), true),
        (None, None, true),
        (Some("Sw0rdf1sh"), None, false),
        (None, Some("Sw0rdf1sh"), false),
        (Some("Sw0rdf1sh"), Some("Swordfish"), false),
    ] {
        let cfg = SourceConfig {
            secret: ss.and_then(secret),
            ..src_cfg(SPEC, ASYNC)
        };
        let mut tcfg = tgt_cfg();
        tcfg.secret = ts.and_then(secret);
        let mut p = Pair::new(
            source_with(cfg, 64, 4, 512),
            target_with(tcfg, 64, 512),
            Crc,
        );
        assert_eq!(p.connect(), ok, "{ss:?} / {ts:?}");
        if ok {
            continue;
        }
        assert_eq!(
            p.s.link_state(),
            LinkState::Refused(Refusal::Auth),
            "{ss:?} / {ts:?}"
        );
        // The target checks the HELLO when it has a secret; the source
        // checks the reply when it has one.
        assert_eq!(
            p.t.stats().auth_failures > 0,
            ts.is_some(),
            "{ss:?} / {ts:?}"
        );
        assert_eq!(
            p.s.stats().auth_failures > 0,
            ss.is_some(),
            "{ss:?} / {ts:?}"
        );
        assert_eq!(p.s.stats().sent, 0);
    }
}

/// The target checks the HELLO's MAC over its own CHALLENGE nonce, and
/// signs its reply over the HELLO's nonce with the reply label.
#[test]
fn target_checks_the_hello_mac() {
    let key = "Sw0rdf1sh";
    let mut tcfg = tgt_cfg();
    tcfg.secret = secret(key);
    for (label, nonce_ok, accepted) in [
        (MacLabel::Hello, true, true),
        // A HELLO answering another challenge (a replay).
        (MacLabel::Hello, false, false),
        // A MAC made for a reply.
        (MacLabel::Reply, true, false),
    ] {
        let mut t = target_with(tcfg, 64, 512);
        t.start();
        let (conn, nonce) = accept(&mut t, 0);
        assert_eq!(nonce, T_NONCE);
        let mut h = hello_of(&src_cfg(SPEC, ASYNC), 0);
        let signed_over = if nonce_ok { nonce } else { [0x77; 16] };
        auth::sign(Some(key.as_bytes()), label, &signed_over, &mut h);
        let (v, reply) = send_hello(&mut t, conn, &h, 0);
        assert_eq!(v, TRx::Continue);
        let reply = reply.unwrap();
        assert_eq!(t.is_connected(), accepted);
        if accepted {
            assert_eq!(reply.flags, 0);
            assert_eq!(t.conn_state(), "connected");
        } else {
            assert_eq!(Refusal::from_flags(reply.flags), Refusal::Auth);
            assert_eq!(t.stats().auth_failures, 1);
        }
        // The reply is signed, over the source's nonce, as a reply.
        let k = Some(key.as_bytes());
        assert!(auth::verify(k, MacLabel::Reply, &S_NONCE, &reply));
        assert!(!auth::verify(k, MacLabel::Hello, &S_NONCE, &reply));
        assert!(!auth::verify(k, MacLabel::Reply, &T_NONCE, &reply));
    }
}

/// The source signs its HELLO over the target's CHALLENGE nonce and
/// checks the reply's MAC over its own nonce.
#[test]
fn source_checks_the_reply_mac() {
    let key = "Sw0rdf1sh";
    let k = Some(key.as_bytes());
    for (label, secret_ok, accepted) in [
        (MacLabel::Reply, true, true),
        (MacLabel::Hello, true, false),
        (MacLabel::Reply, false, false),
    ] {
        let cfg = SourceConfig {
            secret: secret(key),
            ..src_cfg(SPEC, ASYNC)
        };
        let mut s = source_with(cfg, 64, 4, 512);
        s.start(0);
        let conn = src_connect(&mut s, 0);
        let hello = src_challenge(&mut s, conn, &T_NONCE, 0);
        assert!(auth::verify(k, MacLabel::Hello, &T_NONCE, &hello));
        assert!(!auth::verify(k, MacLabel::Hello, &[0x12; 16], &hello));
        assert!(!auth::verify(k, MacLabel::Reply, &T_NONCE, &hello));
        let mut r = reply_of(0);
        let key2 = if secret_ok { key } else { "Swordfish" };
        auth::sign(Some(key2.as_bytes()), label, &S_NONCE, &mut r);
        let mut b = [0u8; 256];
        let n = specmirror_core::transport::proto::encode_hello(&Crc, &r, true, &mut b).unwrap();
        let v = s.on_frame(&Crc, conn, &b[..n], 0);
        if accepted {
            assert_eq!(v, SRx::Continue);
            assert_eq!(s.link_state(), LinkState::Connected);
        } else {
            assert_eq!(v, SRx::Stop);
            assert_eq!(s.link_state(), LinkState::Refused(Refusal::Auth));
            assert_eq!(s.stats().auth_failures, 1);
        }
    }
}

/// A CHALLENGE is a handshake frame: on a streaming connection it breaks
/// the protocol on both sides; so does anything but a HELLO after the
/// target's CHALLENGE, or anything but a CHALLENGE before the HELLO.
#[test]
fn handshake_frames_out_of_place_break_the_protocol() {
    let mut ch = [0u8; 64];
    let n =
        specmirror_core::transport::proto::auth::encode_challenge(&Crc, &T_NONCE, &mut ch).unwrap();
    let ch = &ch[..n];
    // Streaming: a CHALLENGE to either side.
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    assert_eq!(to_source(&mut p, ch), SRx::Stop);
    assert_eq!(p.s.stats().protocol_errors, 1);
    assert!(matches!(p.s.poll_sender(&Crc, p.now), SStep::Close { .. }));
    assert_eq!(to_target(&mut p, ch), TRx::Stop);
    assert_eq!(p.t.stats().protocol_errors, 1);
    // Handshake: the target wants a HELLO.
    let mut t = target(64);
    t.start();
    let (conn, _) = accept(&mut t, 0);
    assert_eq!(t.on_frame(&Crc, conn, &ctl(Kind::Ack, 0, 0), 0), TRx::Stop);
    assert_eq!(t.stats().protocol_errors, 1);
    // Handshake: the source wants a CHALLENGE, then a HELLO_REPLY.
    let mut s = source(SPEC, ASYNC, 64, 4);
    s.start(0);
    let conn = src_connect(&mut s, 0);
    assert_eq!(s.on_frame(&Crc, conn, &ctl(Kind::Ack, 0, 0), 0), SRx::Stop);
    assert_eq!(s.link_state(), LinkState::Refused(Refusal::Protocol));
    let mut s = source(SPEC, ASYNC, 64, 4);
    s.start(0);
    let conn = src_connect(&mut s, 0);
    src_challenge(&mut s, conn, &T_NONCE, 0);
    assert_eq!(s.on_frame(&Crc, conn, ch, 0), SRx::Stop);
    assert_eq!(s.link_state(), LinkState::Refused(Refusal::Protocol));
    // Bytes that are no frame at all.
    let mut s = source(SPEC, ASYNC, 64, 4);
    s.start(0);
    let conn = src_connect(&mut s, 0);
    assert_eq!(s.on_frame(&Crc, conn, &[0x55; 40], 0), SRx::Stop);
    assert_eq!(s.link_state(), LinkState::Refused(Refusal::Protocol));
    // A frame of an old connection is not this one's.
    assert_eq!(s.on_frame(&Crc, conn + 7, ch, 0), SRx::Stop);
}

/// Issue 5 scenario 8: a write that fails on the source's own device
/// completes with its error at once, blocks overlapping writes until its
/// range is re-read, and the repair record (what the source's device
/// really holds) reaches the target after the failed record, so the
/// target ends up with the source's content. The worker runs the repair
/// (read back, then append).
#[test]
fn failed_local_write_is_repaired_from_the_device() {
    for completion in [Completion::Async, Completion::Sync] {
        let mut p = connected(source(SPEC, completion, 64, 4), target(64));
        let Submit::Accepted(bad) = write(&mut p.s, 8, 8, 0xAA) else {
            panic!("not accepted")
        };
        assert!(p.s.local_done(bad, false));
        // Completes at once with the error, acked or not.
        assert_eq!(p.s.poll_worker(p.now), WorkerStep::Complete);
        let c = p.s.poll_completed().unwrap();
        assert_eq!((c.seq, c.ok), (bad, false));
        assert_eq!(p.s.stats().local_errors, 1);
        // Its range is still in flight: other writes go, overlapping ones
        // wait.
        assert_eq!(p.s.inflight_len(), 1);
        assert!(matches!(write(&mut p.s, 100, 8, 0xCC), Submit::Accepted(_)));
        assert_eq!(
            write(&mut p.s, 12, 8, 0xBB),
            Submit::Wait(WaitReason::Overlap)
        );
        // The worker reads the failed range back...
        let WorkerStep::RepairRead(job) = p.s.poll_worker(p.now) else {
            panic!("no repair read")
        };
        assert_eq!((job.seq, job.sector, job.count), (bad, 8, 8));
        assert_eq!(p.s.next_repair(), Some(job));
        // ...or, without a buffer now, tries again after REPAIR_RETRY.
        p.s.repair_wait(p.now);
        assert_eq!(
            p.s.poll_worker(p.now),
            WorkerStep::Sleep {
                until: Some(p.now + REPAIR_RETRY)
            }
        );
        p.advance(REPAIR_RETRY);
        assert_eq!(p.s.poll_worker(p.now), WorkerStep::RepairRead(job));
        // The read ends (any context), the worker appends the repair.
        p.s.repair_read_done(bad, true);
        assert_eq!(
            p.s.poll_worker(p.now),
            WorkerStep::RepairAppend { job, ok: true }
        );
        // The device still holds the old bytes (0x11): that is replicated.
        let old = vec![0x11u8; 8 * 512];
        let Submit::Accepted(rep) = p.s.repair(&Crc, bad, p.now, |w| w.write(&old)) else {
            panic!("repair not appended")
        };
        assert!(rep > bad);
        assert_eq!(p.s.next_repair(), None);
        assert_eq!(p.s.stats().repairs, 1);
        // The overlapping write may go now.
        assert_eq!(p.s.poll_worker(p.now), WorkerStep::Deferred);
        assert!(matches!(retry(&mut p.s, 12, 8, 0xBB), Submit::Accepted(_)));
        let sent = send_all(&mut p);
        let writes: Vec<(u64, u64)> = sent
            .iter()
            .filter(|h| h.kind == Kind::Write)
            .map(|h| (h.sector, u64::from(h.count)))
            .collect();
        assert_eq!(writes, [(8, 8), (100, 8), (8, 8), (12, 8)]);
        // The repair's payload is what the target will write for it.
        let mut data = vec![0u8; 8 * 512];
        assert_eq!(p.t.read_payload(rep, &mut data), Some(8 * 512));
        assert_eq!(data, old);
        apply_all(&mut p);
        // A repair that cannot be re-read is given up and counted.
        let Submit::Accepted(bad2) = write(&mut p.s, 300, 8, 0xDD) else {
            panic!("not accepted")
        };
        assert!(p.s.local_done(bad2, false));
        assert_eq!(p.s.poll_worker(p.now), WorkerStep::Complete);
        assert_eq!(p.s.poll_completed().map(|c| c.ok), Some(false));
        let WorkerStep::RepairRead(job) = p.s.poll_worker(p.now) else {
            panic!("no repair read")
        };
        assert_eq!(job.seq, bad2);
        p.s.repair_read_done(bad2, false);
        assert_eq!(
            p.s.poll_worker(p.now),
            WorkerStep::RepairAppend { job, ok: false }
        );
        p.s.repair_failed(bad2);
        assert_eq!(p.s.stats().unrepaired, 1);
        assert!(matches!(write(&mut p.s, 300, 8, 0xEE), Submit::Accepted(_)));
    }
}

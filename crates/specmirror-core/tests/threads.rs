//! The thread decisions the machines now own: the send lease, the ring
//! pinned by local writes, keepalives, the peer timeout, the handshake
//! deadline on both sides, the target listener's back-off, the suspend
//! grace, and which sleeper `take_wakes` wakes.

mod common;

use common::drive::*;
use common::Crc;
use specmirror_core::log::record::{Kind, HEADER_LEN};
use specmirror_core::pair::Pair;
use specmirror_core::transport::proto::source::{
    LinkState, SenderStep as SStep, Submit, WaitReason, WorkerStep, SENDER, SUSPEND_GRACE, WORKER,
};
use specmirror_core::transport::proto::target::{
    self, ApplierStep, IoStatus, ListenerStep, LockReply, RxStep, RxVerdict as TRx,
    SenderStep as TStep, APPLIER, LISTENER, LOCKER, RECEIVER,
};
use specmirror_core::transport::proto::wake::{Wakes, MS, SEC};
use specmirror_core::transport::proto::{
    sleep_ms, Completion, Mode, Refusal, HANDSHAKE_TIMEOUT, KEEPALIVE, PEER_TIMEOUT,
};

const SPEC: Mode = Mode::Speculative;
const ASYNC: Completion = Completion::Async;

fn accepted(s: Submit) -> u64 {
    match s {
        Submit::Accepted(seq) => seq,
        other => panic!("{other:?}"),
    }
}

/// Bytes of the records of a batch, as the sender would read them.
fn batch_bytes(
    p: &Pair<Crc>,
    batch: &specmirror_core::transport::proto::source::Batch,
) -> Vec<Vec<u8>> {
    p.s.batch_views(batch)
        .map(|v| {
            let mut f = Vec::new();
            specmirror_core::pair::gather(p.s.ring().pages(), v.chunks(), &mut f);
            f
        })
        .collect()
}

/// An ACK that arrives while a batch is being sent (between the sender's
/// `Records` step and its `on_sent`) frees nothing the batch reads: the
/// bytes stay, and new appends cannot take their room.
#[test]
fn an_ack_during_a_send_leaves_the_leased_records() {
    // 4 pages at sector alignment: three 4 KiB writes fill most of it.
    let mut p = connected(source(SPEC, ASYNC, 4, 4), target(64));
    let seqs: Vec<u64> = (0..3)
        .map(|i| accepted(write(&mut p.s, i * 8, 8, 1 + i as u8)))
        .collect();
    for &s in &seqs {
        assert!(p.s.local_done(s, true));
    }
    let SStep::Records { conn, batch } = p.s.poll_sender(&Crc, p.now) else {
        panic!("no batch")
    };
    assert_eq!((batch.first, batch.count), (1, 4));
    assert_eq!(
        batch.bytes,
        4 * HEADER_LEN + 3 * 4096,
        "no padding on the wire"
    );
    let frames = batch_bytes(&p, &batch);
    assert_eq!(frames.len(), 4);
    let used = p.s.ring().used_bytes();
    // The records reach the target and are applied; its ACK overtakes the
    // end of the send.
    for f in &frames {
        assert_eq!(to_target(&mut p, f), TRx::Continue);
    }
    assert_eq!(apply_all(&mut p), [2, 3, 4]);
    let ctl = deliver_tgt(&mut p);
    assert_eq!(ctl.last().map(|h| (h.kind, h.seq)), Some((Kind::Ack, 4)));
    assert_eq!(p.s.acked_seq(), 4);
    // Acknowledged and done locally, but leased: still held, same bytes.
    assert_eq!(p.s.ring().used_bytes(), used);
    assert_eq!(p.s.ring().oldest_seq(), Some(1));
    assert_eq!(batch_bytes(&p, &batch), frames);
    // A write that needs their room waits instead of overwriting them.
    assert_eq!(
        write(&mut p.s, 100, 8, 9),
        Submit::Wait(WaitReason::RingFull)
    );
    assert_eq!(batch_bytes(&p, &batch), frames);
    // The send ends: the lease with it.
    p.s.on_sent(conn, true, p.now);
    assert!(p.s.ring().is_empty());
    assert_eq!(p.s.ring().used_bytes(), 0);
    assert_eq!(
        p.s.batch_views(&batch).count(),
        0,
        "an ended lease reads nothing"
    );
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Complete);
    while p.s.poll_completed().is_some() {}
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Deferred);
    assert!(matches!(retry(&mut p.s, 100, 8, 9), Submit::Accepted(_)));
}

/// A send that fails ends its lease too (and the connection), and so
/// does a connection closed under it.
#[test]
fn a_failed_or_closed_send_ends_the_lease() {
    for fail in [true, false] {
        let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
        let seq = accepted(write(&mut p.s, 0, 8, 1));
        assert!(p.s.local_done(seq, true));
        let SStep::Records { conn, batch } = p.s.poll_sender(&Crc, p.now) else {
            panic!("no batch")
        };
        let frames = batch_bytes(&p, &batch);
        for f in &frames {
            to_target(&mut p, f);
        }
        apply_all(&mut p);
        deliver_tgt(&mut p);
        assert_eq!(p.s.acked_seq(), 2);
        assert_eq!(p.s.ring().oldest_seq(), Some(1), "leased");
        if fail {
            p.s.on_sent(conn, false, p.now);
            assert_ne!(p.s.link_state(), LinkState::Connected);
        } else {
            p.s.fault_drop();
            assert_eq!(p.s.poll_sender(&Crc, p.now), SStep::Close { conn });
            p.s.on_shutdown(conn);
            p.s.on_closed(conn, p.now);
        }
        assert!(p.s.ring().is_empty());
        // A late report of the old send changes nothing.
        p.s.on_sent(conn, true, p.now);
        assert!(p.s.ring().is_empty());
    }
}

/// Records whose local write has not ended stay in the ring after an ACK
/// covering them: the local write reads its payload from there.
#[test]
fn local_writes_pin_the_ring() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    let a = accepted(write(&mut p.s, 0, 8, 0xA1));
    let b = accepted(write(&mut p.s, 8, 8, 0xB2));
    assert_eq!((a, b), (2, 3));
    round(&mut p);
    assert_eq!(p.s.acked_seq(), 3);
    // The LOCK (1) is freed; both writes are held.
    assert_eq!(p.s.ring().oldest_seq(), Some(2));
    assert_eq!(p.s.ring().len_records(), 2);
    let mut data = Vec::new();
    specmirror_core::pair::gather(
        p.s.ring().pages(),
        p.s.payload_chunks(a).unwrap(),
        &mut data,
    );
    assert_eq!(data, vec![0xA1; 4096]);
    // The younger one ends first: the older still pins both.
    assert!(p.s.local_done(b, true));
    assert_eq!(p.s.ring().oldest_seq(), Some(2));
    assert_eq!(p.s.ring().len_records(), 2);
    assert!(p.s.local_done(a, true));
    assert!(p.s.ring().is_empty());
    // A failed local write unpins too: its repair re-reads the device.
    let c = accepted(write(&mut p.s, 16, 8, 0xC3));
    round(&mut p);
    assert_eq!(p.s.ring().oldest_seq(), Some(c));
    assert!(p.s.local_done(c, false));
    assert!(p.s.ring().is_empty());
}

/// The source sends a PING after KEEPALIVE without sending anything; the
/// target takes it without a word. Records count as traffic.
#[test]
fn source_pings_when_idle() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    let SStep::Sleep { until: Some(at) } = p.s.poll_sender(&Crc, p.now) else {
        panic!("the sender sleeps until its keepalive")
    };
    assert!(at > p.now && at <= p.now + KEEPALIVE);
    assert_eq!(
        p.s.poll_sender(&Crc, at - 1),
        SStep::Sleep { until: Some(at) }
    );
    p.now = at;
    let frames = source_send(&mut p).expect("a PING");
    assert_eq!(frames.len(), 1);
    let h = header(&frames[0]);
    assert_eq!((h.kind, h.seq, h.len), (Kind::Ping, 0, 0));
    assert_eq!(frames[0].len(), HEADER_LEN);
    assert_eq!(
        p.s.poll_sender(&Crc, p.now),
        SStep::Sleep {
            until: Some(at + KEEPALIVE)
        }
    );
    // The target takes it and answers nothing (its own keepalive, due
    // about now too, goes out first); no record was received.
    for f in target_send(&mut p).unwrap_or_default() {
        assert_eq!(header(&f).kind, Kind::Ack);
    }
    let received = p.t.received_seq();
    assert_eq!(to_target(&mut p, &frames[0]), TRx::Continue);
    assert_eq!(p.t.received_seq(), received);
    assert_eq!(p.t.stats().received, 0);
    assert!(matches!(target_send(&mut p), Err(TStep::Sleep { .. })));
    // A batch of records is traffic: the next PING is due KEEPALIVE later.
    p.advance(KEEPALIVE / 2);
    let seq = accepted(write(&mut p.s, 0, 8, 1));
    assert!(p.s.local_done(seq, true));
    let sent_at = p.now;
    let records = source_send(&mut p).expect("the records");
    assert_eq!(header(&records[0]).kind, Kind::Lock);
    for f in &records {
        assert_eq!(to_target(&mut p, f), TRx::Continue);
    }
    p.advance(KEEPALIVE / 2);
    assert_eq!(
        p.s.poll_sender(&Crc, p.now),
        SStep::Sleep {
            until: Some(sent_at + KEEPALIVE)
        }
    );
    // Over the pair, an idle hour is all PINGs and keepalive ACKs.
    let (sent, acks) = (p.s.stats().sent, p.t.stats().acks);
    p.run(100);
    assert!(p.s.is_idle());
    for _ in 0..3600 {
        p.advance(SEC);
        p.run(100);
    }
    assert_eq!(p.s.link_state(), LinkState::Connected);
    assert_eq!(p.s.stats().sent, sent, "no record sent again");
    assert_eq!(p.t.stats().received, 2);
    assert_eq!(p.s.stats().peer_timeouts + p.t.stats().peer_timeouts, 0);
    assert!(p.t.stats().acks >= acks + 3000, "the target's keepalives");
}

/// The target sends an ACK of what it applied after KEEPALIVE without
/// sending anything.
#[test]
fn target_acks_as_keepalive() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    let acks = p.t.stats().acks;
    let mut buf = vec![0u8; 4096];
    let TStep::Sleep { until: Some(at) } = p.t.poll_sender(&Crc, p.now, &mut buf) else {
        panic!("the sender sleeps until its keepalive")
    };
    assert!(at > p.now && at <= p.now + KEEPALIVE);
    p.now = at - 1;
    assert!(matches!(target_send(&mut p), Err(TStep::Sleep { .. })));
    p.now = at;
    let frames = target_send(&mut p).expect("a keepalive");
    assert_eq!(frames.len(), 1);
    let h = header(&frames[0]);
    assert_eq!((h.kind, h.seq), (Kind::Ack, p.t.applied_seq()));
    assert_eq!(p.t.stats().acks, acks + 1);
    // The source takes it (nothing new is acknowledged).
    assert_eq!(
        to_source(&mut p, &frames[0]),
        specmirror_core::transport::proto::source::RxVerdict::Continue
    );
    let TStep::Sleep { until: Some(next) } = p.t.poll_sender(&Crc, p.now, &mut buf) else {
        panic!()
    };
    assert_eq!(next, at + KEEPALIVE);
}

/// Nothing from the target for PEER_TIMEOUT: the worker shuts the
/// connection down (the sender may be stuck sending on it), the sender
/// closes it, and the source connects again.
#[test]
fn source_peer_timeout_shuts_down_and_reconnects() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    let conn = p.s.conn();
    let WorkerStep::Sleep { until: Some(dead) } = p.s.poll_worker(p.now) else {
        panic!("the worker watches the peer")
    };
    assert!(dead > p.now && dead <= p.now + PEER_TIMEOUT);
    // A frame pushes the deadline back.
    p.advance(5 * SEC);
    let ka = target_send(&mut p).expect("the target's keepalive");
    for f in &ka {
        to_source(&mut p, f);
    }
    assert_eq!(
        p.s.poll_worker(p.now),
        WorkerStep::Sleep {
            until: Some(p.now + PEER_TIMEOUT)
        }
    );
    // Then silence.
    let dead = p.now + PEER_TIMEOUT;
    assert!(matches!(
        p.s.poll_worker(dead - 1),
        WorkerStep::Sleep { .. }
    ));
    p.now = dead;
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Shutdown { conn });
    assert_eq!(p.s.stats().peer_timeouts, 1);
    assert_ne!(p.s.link_state(), LinkState::Connected);
    p.s.on_shutdown(conn);
    assert!(
        matches!(p.s.poll_worker(p.now), WorkerStep::Sleep { .. }),
        "shut down once"
    );
    assert_eq!(p.s.poll_sender(&Crc, p.now), SStep::Close { conn });
    // Let the pair (which still has the old connection) finish the close.
    p.s.on_closed(conn, p.now);
    p.cut();
    assert!(p.connect());
    assert_eq!(p.s.stats().reconnects, 1);
    assert!(p.s.conn() > conn);
}

/// Nothing from the source for PEER_TIMEOUT: the target's sender closes
/// the connection; not while its receiver waits for room (it is not
/// reading, so silence proves nothing).
#[test]
fn target_peer_timeout_closes() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    let conn = p.t.conn();
    let mut buf = vec![0u8; 4096];
    // Keepalives go out meanwhile; nothing comes back.
    let start = p.now;
    let mut now = start;
    loop {
        match p.t.poll_sender(&Crc, now, &mut buf) {
            TStep::Send { conn: c, .. } => p.t.on_sent(c, true, now),
            TStep::Sleep { until: Some(t) } => now = t,
            TStep::Close { conn: c } => {
                assert_eq!(c, conn);
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(now <= start + PEER_TIMEOUT, "no timeout");
    }
    assert_eq!(now, start + PEER_TIMEOUT);
    assert_eq!(p.t.stats().peer_timeouts, 1);
    p.t.on_shutdown(conn);
    p.t.on_recv_end(conn, false);
    assert_eq!(p.t.conn_state(), "listening");

    // Under back-pressure: a full log whose I/O never ends.
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(3));
    p.hold_io = true;
    for i in 0..4 {
        let s = accepted(write(&mut p.s, i * 8, 8, 1));
        p.s.local_done(s, true);
    }
    p.run(100);
    assert!(p.t_busy, "the receiver waits for room");
    assert_eq!(p.t.poll_receiver(), RxStep::Sleep);
    let conn = p.t.conn();
    let far = p.now + 3 * PEER_TIMEOUT;
    let mut now = p.now;
    while now < far {
        match p.t.poll_sender(&Crc, now, &mut buf) {
            TStep::Send { conn: c, .. } => p.t.on_sent(c, true, now),
            TStep::Sleep { until: Some(t) } => now = t,
            other => panic!("{other:?} at {now}"),
        }
    }
    assert_eq!(p.t.conn(), conn);
    assert_eq!(p.t.stats().peer_timeouts, 0);
    // Room again: the receiver goes on.
    for seq in p.issued.clone() {
        assert!(p.complete_io(seq, IoStatus::Ok));
    }
    assert_eq!(p.t.poll_receiver(), RxStep::Retry);
}

/// A handshake must end within HANDSHAKE_TIMEOUT of the connection,
/// however its frames come: on the source, the worker shuts it down.
#[test]
fn source_handshake_deadline() {
    // No CHALLENGE at all.
    let mut s = source(SPEC, ASYNC, 64, 4);
    s.start(0);
    let conn = src_connect(&mut s, 0);
    assert_eq!(s.link_state(), LinkState::Handshake);
    assert_eq!(
        s.poll_worker(0),
        WorkerStep::Sleep {
            until: Some(HANDSHAKE_TIMEOUT)
        }
    );
    assert_eq!(
        s.poll_worker(HANDSHAKE_TIMEOUT),
        WorkerStep::Shutdown { conn }
    );
    assert_eq!(s.link_state(), LinkState::Refused(Refusal::Protocol));
    assert_eq!(s.stats().protocol_errors, 1);
    // A CHALLENGE late in the handshake does not push the deadline back.
    let mut s = source(SPEC, ASYNC, 64, 4);
    s.start(0);
    let conn = src_connect(&mut s, 0);
    src_challenge(&mut s, conn, &T_NONCE, HANDSHAKE_TIMEOUT - SEC);
    assert_eq!(
        s.poll_worker(HANDSHAKE_TIMEOUT - SEC),
        WorkerStep::Sleep {
            until: Some(HANDSHAKE_TIMEOUT)
        }
    );
    assert_eq!(
        s.poll_worker(HANDSHAKE_TIMEOUT),
        WorkerStep::Shutdown { conn }
    );
    assert_eq!(s.link_state(), LinkState::Refused(Refusal::Protocol));
    // In time: connected, and the deadline becomes the peer timeout.
    let mut s = source(SPEC, ASYNC, 64, 4);
    s.start(0);
    let conn = src_connect(&mut s, 0);
    src_challenge(&mut s, conn, &T_NONCE, SEC);
    src_reply(&mut s, conn, None, reply_of(0), 2 * SEC);
    assert_eq!(s.link_state(), LinkState::Connected);
    assert_eq!(
        s.poll_worker(HANDSHAKE_TIMEOUT),
        WorkerStep::Sleep {
            until: Some(2 * SEC + PEER_TIMEOUT)
        }
    );
}

/// On the target, the sender closes a connection whose HELLO did not
/// come in time.
#[test]
fn target_handshake_deadline() {
    let mut t = target(64);
    t.start();
    let (conn, _) = accept(&mut t, 0);
    assert_eq!(t.conn_state(), "handshake");
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        t.poll_sender(&Crc, SEC, &mut buf),
        TStep::Sleep {
            until: Some(HANDSHAKE_TIMEOUT)
        }
    );
    assert_eq!(
        t.poll_sender(&Crc, HANDSHAKE_TIMEOUT, &mut buf),
        TStep::Close { conn }
    );
    assert_eq!(t.stats().protocol_errors, 1);
    t.on_shutdown(conn);
    t.on_recv_end(conn, false);
    assert_eq!(t.conn_state(), "listening");
    // The next connection gets its own deadline.
    let (conn2, _) = accept(&mut t, 20 * SEC);
    assert!(conn2 > conn);
    assert_eq!(
        t.poll_sender(&Crc, 20 * SEC, &mut buf),
        TStep::Sleep {
            until: Some(20 * SEC + HANDSHAKE_TIMEOUT)
        }
    );
    // A second connection while one is served is closed at once.
    assert_eq!(t.on_accept(20 * SEC, T_RANDOM), target::Accept::Refuse);
    assert_eq!(t.stats().refused_connections, 1);
}

/// A failed accept() makes the listener sleep (10 ms, doubling to a
/// second); it never spins, and nothing wakes it early.
#[test]
fn listener_backs_off_after_accept_errors() {
    let mut t = target(64);
    t.start();
    let mut now = 0;
    assert_eq!(t.poll_listener(now), ListenerStep::Accept);
    let mut expect = Vec::new();
    let mut got = Vec::new();
    for k in 0..10u32 {
        t.on_accept_error(now);
        expect.push(((10 * MS) << k).min(SEC));
        let ListenerStep::Sleep { until: Some(at) } = t.poll_listener(now) else {
            panic!("accept again at once after an error")
        };
        got.push(at - now);
        assert!(t.is_asleep(LISTENER));
        assert!(!t.take_wakes().contains(LISTENER));
        // Asking again before the time is still "sleep": no spin.
        for _ in 0..100 {
            assert_eq!(
                t.poll_listener(at - 1),
                ListenerStep::Sleep { until: Some(at) }
            );
        }
        now = at;
        assert_eq!(t.poll_listener(now), ListenerStep::Accept);
    }
    assert_eq!(got, expect);
    assert_eq!(t.stats().accept_errors, 10);
    // A connection accepted: the pause starts over.
    assert!(matches!(
        t.on_accept(now, T_RANDOM),
        target::Accept::Serve { .. }
    ));
    t.on_accept_error(now);
    assert_eq!(
        t.poll_listener(now),
        ListenerStep::Sleep {
            until: Some(now + 10 * MS)
        }
    );
    // Stopping ends the listener whatever its pause.
    t.stop();
    assert_eq!(t.poll_listener(now), ListenerStep::Exit);
}

/// A suspend gives deferred and unacknowledged sync writes
/// SUSPEND_GRACE (renewed by acknowledgements) while the link is down;
/// then the worker abandons them: parked bios are dropped, sync writes
/// complete without their acknowledgement, each counted.
#[test]
fn suspend_grace_abandons_waiting_writes() {
    let mut p = connected(source(SPEC, Completion::Sync, 64, 4), target(64));
    p.reachable = false;
    let a = accepted(write(&mut p.s, 0, 8, 1));
    assert!(p.s.local_done(a, true));
    let b = accepted(write(&mut p.s, 100, 8, 2));
    p.run(100);
    assert_eq!(p.t.applied_seq(), 4, "applied, acknowledged...");
    assert_eq!(p.s.acked_seq(), 4);
    assert_eq!(p.completed.len(), 1, "...and a completed");
    // b was applied but its local write is not done. The link goes down;
    // a new sync write is never acknowledged, and a write overlapping b
    // is parked.
    p.cut();
    let c = accepted(write(&mut p.s, 200, 8, 4));
    assert!(p.s.local_done(c, true));
    assert_eq!(
        write(&mut p.s, 101, 8, 3),
        Submit::Wait(WaitReason::Overlap)
    );
    p.run(100);
    assert_ne!(p.s.link_state(), LinkState::Connected);
    assert!(!p.s.has_completions());
    let t0 = p.now;
    // The worker is asleep; the suspend rearms it.
    assert!(matches!(p.s.poll_worker(t0), WorkerStep::Sleep { .. }));
    p.s.begin_suspend(t0);
    assert!(p.s.take_wakes().contains(WORKER));
    assert_eq!(
        p.s.poll_worker(t0),
        WorkerStep::Sleep {
            until: Some(t0 + SUSPEND_GRACE)
        }
    );
    assert!(matches!(
        p.s.poll_worker(t0 + SUSPEND_GRACE - 1),
        WorkerStep::Sleep { .. }
    ));
    assert!(!p.s.is_abandoning());
    assert_eq!(p.s.poll_worker(t0 + SUSPEND_GRACE), WorkerStep::Abandon);
    assert!(p.s.is_abandoning());
    // The glue drops the parked bio.
    assert_eq!(p.s.deferred_len(), 1);
    p.s.deferred_dropped();
    assert_eq!(p.s.deferred_len(), 0);
    assert_eq!(p.s.stats().abandoned, 1);
    // Then the unacknowledged sync write completes.
    assert_eq!(p.s.poll_worker(t0 + SUSPEND_GRACE), WorkerStep::Complete);
    assert_eq!(p.s.poll_completed().map(|x| (x.seq, x.ok)), Some((c, true)));
    assert!(p.s.poll_completed().is_none());
    assert_eq!(p.s.stats().abandoned, 2);
    // b was acknowledged: its completion is no abandonment.
    assert!(p.s.local_done(b, true));
    assert_eq!(p.s.poll_completed().map(|x| x.seq), Some(b));
    assert_eq!(p.s.stats().abandoned, 2);
    // A resume waits for acknowledgements again.
    p.s.stop();
    p.s.stopped();
    p.s.start(p.now);
    assert!(!p.s.is_abandoning());
    let d = accepted(write(&mut p.s, 300, 8, 5));
    assert!(p.s.local_done(d, true));
    assert!(!p.s.has_completions());
}

/// Acknowledgements during a suspend renew its grace; a cancelled
/// suspend abandons nothing.
#[test]
fn suspend_grace_is_renewed_by_progress_and_can_be_cancelled() {
    let mut p = connected(source(SPEC, Completion::Sync, 64, 4), target(64));
    let a = accepted(write(&mut p.s, 0, 8, 1));
    assert!(p.s.local_done(a, true));
    let b = accepted(write(&mut p.s, 8, 8, 1));
    assert!(p.s.local_done(b, true));
    let t0 = p.now;
    p.s.begin_suspend(t0);
    // Sent and applied; the ACK arrives 5 s later.
    send_all(&mut p);
    apply_all(&mut p);
    let ack = target_send(&mut p).unwrap();
    // Meanwhile a write the target never gets.
    let c = accepted(write(&mut p.s, 16, 8, 1));
    assert!(p.s.local_done(c, true));
    p.advance(5 * SEC);
    for f in &ack {
        to_source(&mut p, f);
    }
    assert_eq!(p.s.acked_seq(), b);
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Complete);
    while p.s.poll_completed().is_some() {}
    // c is unacknowledged; the grace now ends SUSPEND_GRACE after the
    // ACK, not after t0 (the peer's silence ends then too).
    let renewed = p.now + SUSPEND_GRACE;
    assert_eq!(
        p.s.poll_worker(t0 + SUSPEND_GRACE),
        WorkerStep::Sleep {
            until: Some(renewed)
        }
    );
    assert!(!p.s.is_abandoning());
    let conn = p.s.conn();
    assert_eq!(p.s.poll_worker(renewed), WorkerStep::Shutdown { conn });
    p.s.on_shutdown(conn);
    assert_eq!(p.s.poll_worker(renewed), WorkerStep::Complete);
    assert!(p.s.is_abandoning());
    assert_eq!(p.s.poll_completed().map(|x| x.seq), Some(c));
    assert_eq!(p.s.stats().abandoned, 1);

    // Cancelled: nothing is given up.
    let mut p = connected(source(SPEC, Completion::Sync, 64, 4), target(64));
    p.reachable = false;
    p.cut();
    let c = accepted(write(&mut p.s, 0, 8, 1));
    assert!(p.s.local_done(c, true));
    p.run(100);
    let t0 = p.now;
    p.s.begin_suspend(t0);
    p.s.cancel_suspend();
    assert!(matches!(
        p.s.poll_worker(t0 + 2 * SUSPEND_GRACE),
        WorkerStep::Sleep { .. }
    ));
    assert!(!p.s.is_abandoning());
    assert!(!p.s.has_completions());
    assert_eq!(p.s.stats().abandoned, 0);
}

/// On the target, reads held behind stream writes fail once a suspend's
/// grace runs out (so that suspend and remove end).
#[test]
fn target_suspend_grace_fails_waiting_reads() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    accepted(write(&mut p.s, 0, 8, 1));
    send_all(&mut p);
    // Issued, never completed.
    let v = p.t.poll_issue().expect("issued");
    assert!(!p.t.read_arrives(0, 8), "the read waits for the write");
    assert_eq!(p.t.reads_waiting(), 1);
    // Another read queues behind it, even elsewhere.
    assert!(!p.t.read_arrives(5000, 8));
    let t0 = p.now;
    p.t.begin_suspend(t0);
    // The applier tries the reads once (the oldest must wait), then
    // sleeps until the grace ends.
    if p.t.poll_applier(t0) == ApplierStep::Reads {
        assert!(!p.t.read_may_go(0, 8));
    }
    assert_eq!(
        applier_past_flushes(&mut p, t0),
        ApplierStep::Sleep {
            until: Some(t0 + target_grace())
        }
    );
    assert_eq!(
        p.t.poll_applier(t0 + target_grace()),
        ApplierStep::FailReads
    );
    p.t.read_failed();
    p.t.read_failed();
    assert_eq!(p.t.reads_waiting(), 0);
    assert_eq!(p.t.stats().reads_failed, 2);
    assert!(matches!(
        p.t.poll_applier(t0 + target_grace()),
        ApplierStep::Sleep { .. }
    ));
    assert!(p.t.io_done(v.seq, IoStatus::Ok, t0 + target_grace()));
    // Without a suspend, reads wait as long as it takes, and go once the
    // write is applied.
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    accepted(write(&mut p.s, 0, 8, 1));
    send_all(&mut p);
    let v = p.t.poll_issue().expect("issued");
    assert!(!p.t.read_arrives(0, 8));
    if p.t.poll_applier(p.now) == ApplierStep::Reads {
        assert!(!p.t.read_may_go(0, 8));
    }
    let later = p.now + 100 * SEC;
    assert_eq!(
        applier_past_flushes(&mut p, later),
        ApplierStep::Sleep { until: None }
    );
    // (The sender may have an ACK of the durable point to send.)
    assert!(!p.t.take_wakes().contains(APPLIER));
    assert!(p.t.io_done(v.seq, IoStatus::Ok, p.now));
    assert!(p.t.take_wakes().contains(APPLIER));
    assert_eq!(p.t.poll_applier(p.now), ApplierStep::Reads);
    assert!(p.t.read_may_go(0, 8));
    assert_eq!(p.t.reads_waiting(), 0);
}

/// The applier's next step once the flushes for the durable point (the
/// LOCK records count as applied) ended.
fn applier_past_flushes(p: &mut Pair<Crc>, now: u64) -> ApplierStep {
    loop {
        match p.t.poll_applier(now) {
            ApplierStep::Flush { upto } => p.t.flush_done(upto, true, now),
            step => return step,
        }
    }
}

/// A read parked during a suspend, while the applier sleeps without a
/// deadline (no read waited when it went to sleep), must still fail at
/// the end of the grace: the applier is woken to watch it. (Found by the
/// target_engine fuzzer: the read waited for as long as the stream
/// stalled, and so would the suspend.)
#[test]
fn target_read_parked_during_a_suspend_is_failed_at_the_grace() {
    for late in [false, true] {
        let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
        accepted(write(&mut p.s, 0, 8, 1));
        send_all(&mut p);
        // The write is issued and never completes (a stalled device).
        let _v = p.t.poll_issue().expect("issued");
        // A first read waits for it; the applier has looked at it.
        assert!(!p.t.read_arrives(0, 8));
        if p.t.poll_applier(p.now) == ApplierStep::Reads {
            assert!(!p.t.read_may_go(0, 8));
        }
        // A suspend fails it at the end of its grace.
        let t0 = p.now;
        p.t.begin_suspend(t0);
        assert_eq!(
            p.t.poll_applier(t0 + target_grace()),
            ApplierStep::FailReads
        );
        p.t.read_failed();
        let mut t1 = t0 + target_grace();
        if !late {
            // Cancelled, and a new suspend starts.
            p.t.cancel_suspend();
            t1 += SEC;
            p.t.begin_suspend(t1);
        }
        // No read waits: the applier sleeps without a deadline.
        assert_eq!(applier_past_flushes(&mut p, t1), ApplierStep::Sleep { until: None });
        assert!(p.t.is_asleep(APPLIER));
        // Another read of the pending write arrives.
        let at = if late { t1 + 5 * SEC } else { t1 + SEC };
        assert!(!p.t.read_arrives(0, 8));
        assert!(
            p.t.take_wakes().contains(APPLIER),
            "the applier must learn the read's deadline (late {late})"
        );
        let mut step = p.t.poll_applier(at);
        if step == ApplierStep::Reads {
            assert!(!p.t.read_may_go(0, 8));
            step = p.t.poll_applier(at);
        }
        if !late {
            assert_eq!(
                step,
                ApplierStep::Sleep {
                    until: Some(t1 + target_grace())
                }
            );
            step = p.t.poll_applier(t1 + target_grace());
        }
        assert_eq!(step, ApplierStep::FailReads);
        p.t.read_failed();
        assert_eq!(p.t.stats().reads_failed, 2);
    }
}

/// The target's suspend grace (not exported: 10 s, like the source's).
fn target_grace() -> u64 {
    10 * SEC
}

/// `take_wakes` returns a sleeper that is asleep and has work, once: it
/// is marked awake until its step function puts it to sleep again.
#[test]
fn take_wakes_names_each_sleeper_once() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    // Quiet: both source threads asleep, nobody to wake.
    assert!(matches!(p.s.poll_sender(&Crc, p.now), SStep::Sleep { .. }));
    assert!(matches!(p.s.poll_worker(p.now), WorkerStep::Sleep { .. }));
    assert!(p.s.is_asleep(SENDER) && p.s.is_asleep(WORKER));
    assert_eq!(p.s.take_wakes(), Wakes::NONE);
    // A write: the sender has work.
    let seq = accepted(write(&mut p.s, 0, 8, 1));
    let w = p.s.take_wakes();
    assert!(w.contains(SENDER) && !w.contains(WORKER), "{w:?}");
    assert_eq!(w.iter().collect::<Vec<_>>(), [SENDER]);
    assert!(!p.s.is_asleep(SENDER));
    // Once: it still has work, but it is awake now.
    assert!(p.s.has_work(SENDER));
    assert_eq!(p.s.take_wakes(), Wakes::NONE);
    // A local write done (async): a completion for the worker.
    assert!(p.s.local_done(seq, true));
    assert_eq!(p.s.take_wakes(), Wakes::one(WORKER));
    assert_eq!(p.s.take_wakes(), Wakes::NONE);
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Complete);
    assert!(p.s.poll_completed().is_some());
    // The sender sends and sleeps again; nothing new: nobody to wake.
    assert!(source_send(&mut p).is_some());
    assert!(matches!(p.s.poll_sender(&Crc, p.now), SStep::Sleep { .. }));
    assert!(matches!(p.s.poll_worker(p.now), WorkerStep::Sleep { .. }));
    assert_eq!(p.s.take_wakes(), Wakes::NONE);
    // Stopping wakes every sleeper.
    p.s.stop();
    assert_eq!(
        p.s.take_wakes(),
        Wakes::one(SENDER).with(Wakes::one(WORKER))
    );
    assert_eq!(p.s.poll_sender(&Crc, p.now), SStep::Exit);
    assert_eq!(p.s.poll_worker(p.now), WorkerStep::Exit);
}

#[test]
fn target_take_wakes() {
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(64));
    let mut buf = vec![0u8; 4096];
    assert!(matches!(p.t.poll_applier(p.now), ApplierStep::Sleep { .. }));
    assert!(matches!(
        p.t.poll_sender(&Crc, p.now, &mut buf),
        TStep::Sleep { .. }
    ));
    assert!(p.t.is_asleep(APPLIER) && p.t.is_asleep(target::SENDER));
    assert_eq!(p.t.take_wakes(), Wakes::NONE);
    // A record arrives: the applier has work (the sender not yet).
    accepted(write(&mut p.s, 0, 8, 1));
    send_all(&mut p);
    assert_eq!(p.t.take_wakes(), Wakes::one(APPLIER));
    assert_eq!(p.t.take_wakes(), Wakes::NONE);
    // Applied: an ACK is due, the sender is woken.
    assert_eq!(p.t.poll_applier(p.now), ApplierStep::Issue);
    apply_all(&mut p);
    assert!(matches!(p.t.poll_applier(p.now), ApplierStep::Sleep { .. }));
    assert_eq!(p.t.take_wakes(), Wakes::one(target::SENDER));
    deliver_tgt(&mut p);
    // A receiver waiting for room is woken when a completion makes room.
    let mut p = connected(source(SPEC, ASYNC, 64, 4), target(3));
    p.hold_io = true;
    for i in 0..4 {
        let s = accepted(write(&mut p.s, i * 8, 8, 1));
        p.s.local_done(s, true);
    }
    p.run(100);
    assert!(p.t_busy);
    assert_eq!(p.t.poll_receiver(), RxStep::Sleep);
    assert!(p.t.is_asleep(RECEIVER));
    assert!(!p.t.take_wakes().contains(RECEIVER));
    let first = p.issued[0];
    assert!(p.complete_io(first, IoStatus::Ok));
    assert!(p.t.take_wakes().contains(RECEIVER));
    // A `lock` message waiting for stream writes is woken once they are
    // applied. (One hot region: the second write unlocks region 0, so
    // only the pending write holds the lock back.)
    let mut p = connected(source(SPEC, ASYNC, 64, 1), target(64));
    accepted(write(&mut p.s, 0, 8, 1));
    accepted(write(&mut p.s, 64, 8, 1));
    send_all(&mut p);
    let v = p.t.poll_issue().unwrap();
    assert_eq!(v.header.sector, 0);
    let LockReply::Wait { until } = p.t.lock_request(0, 8, p.now) else {
        panic!("the lock waits for the write")
    };
    assert!(p.t.is_asleep(LOCKER));
    assert!(!p.t.take_wakes().contains(LOCKER));
    assert!(p.t.io_done(v.seq, IoStatus::Ok, p.now));
    assert!(p.t.take_wakes().contains(LOCKER));
    assert_eq!(p.t.lock_poll(p.now), LockReply::Granted);
    assert!(until > p.now);
    assert_eq!(p.t.msg_locks_len(), 1);
    assert!(p.t.lock_release(0, 8));
}

#[test]
fn sleep_ms_rounds_up() {
    assert_eq!(sleep_ms(0, 0), 1);
    assert_eq!(sleep_ms(5, 3), 1);
    assert_eq!(sleep_ms(0, 1), 1);
    assert_eq!(sleep_ms(0, MS), 1);
    assert_eq!(sleep_ms(0, MS + 1), 2);
    assert_eq!(sleep_ms(SEC, 3 * SEC), 2000);
    assert_eq!(sleep_ms(0, u64::MAX), u32::MAX);
}

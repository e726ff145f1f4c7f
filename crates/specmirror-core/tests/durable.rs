//! The target's durable point (`transport/proto/target/durable.rs`): what
//! a flush covers, and what an ACK may claim.

mod common;

use common::drive::*;
use common::{Crc, Tgt};
use specmirror_core::log::record::{Header, Kind};
use specmirror_core::transport::proto::target::{ApplierStep, IoStatus, RxVerdict, SenderStep};
use specmirror_core::transport::proto::{Completion, Mode, MAX_CONTROL_FRAME};

/// A scripted source's stream `generation` on a new connection, starting
/// after `base`; returns the connection.
fn stream(t: &mut Tgt, generation: u64, base: u64) -> u64 {
    let (conn, nonce) = accept(t, 0);
    let mut cfg = src_cfg(Mode::Speculative, Completion::Async);
    cfg.generation = generation;
    let mut hello = hello_of(&cfg, base);
    sign_hello(None, &nonce, &mut hello);
    let (_, reply) = send_hello(t, conn, &hello, 0);
    assert_eq!(reply.map(|r| r.flags), Some(0), "refused");
    conn
}

/// Sends WRITEs `seqs` and applies them (no flush).
fn apply(t: &mut Tgt, conn: u64, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        let f = record(Kind::Write, seq, seq * 8, 1, &[seq as u8; 512]);
        assert_eq!(t.on_frame(&Crc, conn, &f, 0), RxVerdict::Continue);
    }
    while let Some(v) = t.poll_issue() {
        assert!(t.io_done(v.seq, IoStatus::Ok, 0));
    }
}

/// The last ACK the target sends now: (applied, durable).
fn last_ack(t: &mut Tgt) -> Option<(u64, u64)> {
    let mut buf = vec![0u8; 16 * MAX_CONTROL_FRAME];
    let mut ack = None;
    while let SenderStep::Send { conn, len } = t.poll_sender(&Crc, 0, &mut buf) {
        t.on_sent(conn, true, 0);
        for f in split_frames(&buf[..len]) {
            let h: Header = header(&f);
            if h.kind == Kind::Ack {
                ack = Some((h.seq, h.sector));
            }
        }
    }
    ack
}

#[test]
fn a_flush_covers_what_was_applied_when_it_was_issued() {
    let mut t = target(64);
    t.start();
    let conn = stream(&mut t, 7, 0);
    apply(&mut t, conn, 1..=3);
    let ApplierStep::Flush { upto } = t.poll_applier(0) else {
        panic!("no flush for the applied records")
    };
    assert_eq!(upto, 3);
    // Applied meanwhile: not covered by this flush.
    apply(&mut t, conn, 4..=5);
    assert_eq!(last_ack(&mut t), Some((5, 0)), "nothing durable yet");
    t.flush_done(3, true, 0);
    assert_eq!(t.durable_seq(), 3);
    assert_eq!(last_ack(&mut t), Some((5, 3)));
    // The next flush covers the rest; a failed one moves nothing.
    assert_eq!(t.poll_applier(0), ApplierStep::Flush { upto: 5 });
    t.flush_done(5, false, 0);
    assert_eq!(t.durable_seq(), 3);
    assert_eq!(t.flush_stats(), (2, 1));
}

/// A source reloaded in the kernel starts a new stream at seq 1: a flush
/// still in flight from the old stream, covering seqs far above the new
/// ones, must not make the new stream's records durable, nor keep the
/// applier from flushing them.
#[test]
fn a_flush_of_an_old_stream_does_not_count_for_a_new_one() {
    let mut t = target(64);
    t.start();
    let conn = stream(&mut t, 7, 1000);
    apply(&mut t, conn, 1001..=1003);
    assert_eq!(t.poll_applier(0), ApplierStep::Flush { upto: 1003 });
    // The source goes; a new table's stream starts after 0.
    t.on_recv_end(conn, false);
    let _ = last_ack(&mut t);
    let conn = stream(&mut t, 9, 0);
    apply(&mut t, conn, 1..=2);
    // The old flush ends now.
    t.flush_done(1003, true, 0);
    assert_eq!(t.durable_seq(), 0, "the old stream's flush covers none of these");
    assert_eq!(last_ack(&mut t), Some((2, 0)));
    assert_eq!(t.poll_applier(0), ApplierStep::Flush { upto: 2 });
    t.flush_done(2, true, 0);
    assert_eq!(last_ack(&mut t), Some((2, 2)));
}

/// A FLUSH record waits for every earlier write, a failed one too (kept
/// and retried): its completion never makes durable what is not on the
/// device. (`durable_to` also clamps to the applied point.)
#[test]
fn a_flush_record_does_not_cover_a_failed_write() {
    let mut t = target(64);
    t.start();
    let conn = stream(&mut t, 7, 0);
    let f = record(Kind::Write, 1, 8, 1, &[1; 512]);
    assert_eq!(t.on_frame(&Crc, conn, &f, 0), RxVerdict::Continue);
    let f = record(Kind::Flush, 2, 0, 0, &[]);
    assert_eq!(t.on_frame(&Crc, conn, &f, 0), RxVerdict::Continue);
    let mut issued = Vec::new();
    while let Some(v) = t.poll_issue() {
        issued.push(v.seq);
        let st = if v.seq == 1 { IoStatus::Failed } else { IoStatus::Ok };
        assert!(t.io_done(v.seq, st, 0));
    }
    assert_eq!(issued, [1], "the FLUSH waits for the failed write");
    assert_eq!(t.applied_seq(), 0);
    assert!(
        t.durable_seq() <= t.applied_seq(),
        "durable {} past applied {} (issued {issued:?})",
        t.durable_seq(),
        t.applied_seq()
    );
}

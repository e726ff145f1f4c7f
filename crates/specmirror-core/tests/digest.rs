//! The target's side of verify: DIGEST_REQ records are read in stream
//! order and answered, and answers that cannot be sent yet hold further
//! requests back without making the applier spin.

mod common;

use common::drive::{connected, frame, source, split_frames, target};
use common::Crc;
use specmirror_core::log::record::{decode_frame, Header, Kind};
use specmirror_core::transport::proto::target::{ApplierStep, SenderStep, DIGEST_QUEUE};
use specmirror_core::transport::proto::{Completion, Mode, MAX_CONTROL_FRAME};

#[test]
fn a_full_answer_queue_puts_the_applier_to_sleep_and_the_sender_wakes_it() {
    let mut p = connected(
        source(Mode::Speculative, Completion::Async, 64, 8),
        target(64),
    );
    let first = p.t.received_seq() + 1;
    let conn = p.t.conn();
    let extra = 3u64;
    for i in 0..DIGEST_QUEUE as u64 + extra {
        let mut h = Header::new(Kind::DigestReq);
        h.seq = first + i;
        h.sector = i * 8;
        h.count = 8;
        p.t.on_frame(&Crc, conn, &frame(&h, &[]), p.now);
    }
    // The applier issues as many requests as there are answer slots; the
    // answers wait for the sender, which does not run here.
    let mut issued = 0;
    loop {
        match p.t.poll_applier(p.now) {
            ApplierStep::Issue => {}
            ApplierStep::Sleep { .. } => break,
            // Requests count as applied: the durable point follows.
            ApplierStep::Flush { upto } => {
                p.t.flush_done(upto, true, p.now);
                continue;
            }
            other => panic!("unexpected applier step {other:?}"),
        }
        let mut any = false;
        while let Some(v) = p.t.poll_issue() {
            assert_eq!(v.header.kind, Kind::DigestReq);
            assert!(p.t.digest_done(v.seq, Some([v.seq as u8; 32]), p.now));
            issued += 1;
            any = true;
        }
        assert!(
            any,
            "the applier was given Issue with nothing to issue: it would spin"
        );
    }
    assert_eq!(issued, DIGEST_QUEUE);
    // The sender sends the answers (before its ACK), in order; the
    // applier has work again.
    let mut buf = vec![0u8; 16 * MAX_CONTROL_FRAME];
    let SenderStep::Send { conn: c, len } = p.t.poll_sender(&Crc, p.now, &mut buf) else {
        panic!("no answers sent")
    };
    p.t.on_sent(c, true, p.now);
    let mut answers = Vec::new();
    for f in split_frames(&buf[..len]) {
        let (h, payload) = decode_frame(&Crc, &f).expect("a frame");
        if h.kind == Kind::Digest {
            assert_eq!(payload.to_vec(), vec![h.seq as u8; 32]);
            answers.push(h.seq);
        }
    }
    assert_eq!(
        answers,
        (first..first + DIGEST_QUEUE as u64).collect::<Vec<_>>()
    );
    let mut step = p.t.poll_applier(p.now);
    while let ApplierStep::Flush { upto } = step {
        p.t.flush_done(upto, true, p.now);
        step = p.t.poll_applier(p.now);
    }
    assert_eq!(step, ApplierStep::Issue);
}

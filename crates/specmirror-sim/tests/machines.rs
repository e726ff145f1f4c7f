//! Unit tests of the source and target state machines, driven by hand.

use specmirror_core::log::commit::{WindowSlot, SCAN_LIMIT};
use specmirror_core::log::filter::FILTER_BUCKETS;
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::record::{
    decode_frame, encode_frame, DecodeError, Header, Hello, Kind, FLAG_FUA, HEADER_LEN,
    NAK_CORRUPT, NAK_GAP,
};
use specmirror_core::transport::proto::auth::{
    self, decode_challenge, encode_challenge, MacLabel, CHALLENGE_FRAME_LEN,
};
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::inflight::InflightSlot;
use specmirror_core::transport::proto::source::{
    HostOp, HostWrite, LinkState, ProtocolError, Source, SourceConfig, SourceRecv, Submit,
    WaitReason,
};
use specmirror_core::transport::proto::target::{LocalLock, Target, TargetConfig, TargetRecv};
use specmirror_core::transport::proto::{encode_hello, Completion, Mode, Refusal};
use specmirror_sim::sim::{Crc, VecPages};

type Src = Source<VecPages, Vec<HotSlot>, Vec<InflightSlot>>;
type Tgt = Target<VecPages, Vec<WindowSlot>, Vec<u32>, Vec<LockSlot>>;

const C: Crc = Crc;
const DEV: u64 = 1 << 20;
const REGION: u32 = 64;

fn source(mode: Mode, completion: Completion, ring_pages: usize, hot: usize) -> Src {
    Source::new(
        SourceConfig {
            region_sectors: REGION,
            mode,
            completion,
            dev_sectors: DEV,
            generation: 9,
        },
        VecPages::new(ring_pages),
        1,
        vec![HotSlot::default(); hot],
        vec![InflightSlot::default(); 8],
    )
    .unwrap()
}

/// A default issue window.
fn window() -> Vec<WindowSlot> {
    vec![WindowSlot::EMPTY; SCAN_LIMIT]
}

/// Default region filter counters.
fn filter() -> Vec<u32> {
    vec![0; FILTER_BUCKETS]
}

fn target(log_pages: usize) -> Tgt {
    Target::new(
        TargetConfig {
            region_sectors: REGION,
            dev_sectors: DEV,
            ack_every: 4,
        },
        VecPages::new(log_pages),
        window(),
        filter(),
        vec![LockSlot::EMPTY; 16],
    )
    .unwrap()
}

fn handshake(s: &mut Src, t: &mut Tgt) {
    let h = s.start_handshake();
    let mut b = [0u8; 256];
    let n = encode_hello(&C, &h, false, &mut b).unwrap();
    let TargetRecv::Hello(h) = t.on_frame(&C, &b[..n]) else {
        panic!("no hello")
    };
    t.on_hello(&h).unwrap();
    let n = t.poll_send(&C, &mut b).unwrap().unwrap();
    let SourceRecv::HelloReply(r) = s.on_frame(&C, &b[..n]) else {
        panic!("no reply")
    };
    s.on_hello_reply(&r).unwrap();
    assert_eq!(s.link_state(), LinkState::Connected);
}

fn write(s: &mut Src, sector: u64, count: u32, byte: u8) -> Submit {
    let w = HostWrite {
        op: HostOp::Write,
        sector,
        count,
        flags: 0,
    };
    let data = vec![byte; count as usize * 512];
    s.submit(&C, &w, |wr| wr.write(&data))
}

/// Sends everything the source may send now; returns the headers.
fn drain_src(s: &mut Src, t: &mut Tgt) -> Vec<Header> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; HEADER_LEN + (1 << 20)];
    while let Some(v) = s.peek_send() {
        let n = s.read_frame(v.seq, &mut buf).unwrap();
        match t.on_frame(&C, &buf[..n]) {
            TargetRecv::Ok => {}
            TargetRecv::Busy => break,
            other => panic!("{other:?}"),
        }
        s.advance_send();
        out.push(v.header);
    }
    out
}

/// Applies everything the target may apply now (all succeed).
fn apply_all(t: &mut Tgt) -> Vec<u64> {
    let mut done = Vec::new();
    while let Some(v) = t.poll_issue() {
        assert!(t.io_done(v.seq, &v.header, true));
        done.push(v.seq);
    }
    done
}

/// Delivers every control frame of the target to the source.
fn drain_tgt(t: &mut Tgt, s: &mut Src) -> Vec<Header> {
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    while let Some(r) = t.poll_send(&C, &mut b) {
        let n = r.unwrap();
        let (h, _) = decode_frame(&C, &b[..n]).unwrap();
        assert_eq!(s.on_frame(&C, &b[..n]), SourceRecv::Ok);
        out.push(h);
    }
    out
}

#[test]
fn handshake_refuses_mismatch() {
    let mut s = source(Mode::Speculative, Completion::Async, 64, 4);
    let mut t = Target::new(
        TargetConfig {
            region_sectors: REGION,
            dev_sectors: DEV + 8,
            ack_every: 4,
        },
        VecPages::new(64),
        window(),
        filter(),
        vec![LockSlot::EMPTY; 4],
    )
    .unwrap();
    let h = s.start_handshake();
    assert_eq!(t.on_hello(&h), Err(Refusal::DeviceSize));
    let mut b = [0u8; 256];
    let n = t.poll_send(&C, &mut b).unwrap().unwrap();
    let SourceRecv::HelloReply(r) = s.on_frame(&C, &b[..n]) else {
        panic!()
    };
    assert_eq!(s.on_hello_reply(&r), Err(Refusal::DeviceSize));
    assert_eq!(s.link_state(), LinkState::Refused(Refusal::DeviceSize));
    assert!(s.peek_send().is_none());

    let mut t2 = Target::new(
        TargetConfig {
            region_sectors: REGION * 2,
            dev_sectors: DEV,
            ack_every: 4,
        },
        VecPages::new(64),
        window(),
        filter(),
        vec![LockSlot::EMPTY; 4],
    )
    .unwrap();
    let h = s.start_handshake();
    assert_eq!(t2.on_hello(&h), Err(Refusal::RegionSize));
    let bad = Hello {
        proto_version: 99,
        ..h
    };
    assert_eq!(t2.on_hello(&bad), Err(Refusal::Version));
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
        let mut s = source(Mode::Speculative, Completion::Async, 64, 4);
        s.set_block_size(src_bs);
        let mut t = target(64);
        t.set_block_size(tgt_bs);
        let h = s.start_handshake();
        assert_eq!(h.block_size, src_bs);
        let r = t.on_hello(&h);
        let mut b = [0u8; 256];
        let n = t.poll_send(&C, &mut b).unwrap().unwrap();
        let SourceRecv::HelloReply(reply) = s.on_frame(&C, &b[..n]) else {
            panic!("no HELLO_REPLY")
        };
        assert_eq!(reply.block_size, tgt_bs);
        if refused {
            assert_eq!(r, Err(Refusal::BlockSize), "{src_bs} -> {tgt_bs}");
            assert_eq!(s.on_hello_reply(&reply), Err(Refusal::BlockSize));
            assert_eq!(s.link_state(), LinkState::Refused(Refusal::BlockSize));
        } else {
            assert_eq!(r, Ok(()), "{src_bs} -> {tgt_bs}");
            assert_eq!(s.on_hello_reply(&reply), Ok(()));
        }
    }
    // A target that did not check (an older one) answers with its size:
    // the source refuses on its own.
    let mut s = source(Mode::Speculative, Completion::Async, 64, 4);
    s.set_block_size(512);
    let mut t = target(64);
    let h = s.start_handshake();
    assert_eq!(t.on_hello(&h), Ok(()));
    let mut b = [0u8; 256];
    let n = t.poll_send(&C, &mut b).unwrap().unwrap();
    let SourceRecv::HelloReply(mut reply) = s.on_frame(&C, &b[..n]) else {
        panic!("no HELLO_REPLY")
    };
    reply.block_size = 4096;
    assert_eq!(s.on_hello_reply(&reply), Err(Refusal::BlockSize));
}

#[test]
fn speculative_sends_without_waiting_and_evicts_lru() {
    let mut s = source(Mode::Speculative, Completion::Async, 64, 2);
    let mut t = target(64);
    handshake(&mut s, &mut t);
    assert!(matches!(write(&mut s, 0, 8, 1), Submit::Accepted(2)));
    assert!(matches!(write(&mut s, 64, 8, 2), Submit::Accepted(4)));
    assert!(matches!(
        write(&mut s, 1, 8, 3),
        Submit::Wait(WaitReason::Overlap)
    ));
    assert!(matches!(write(&mut s, 128, 8, 4), Submit::Accepted(7)));
    let kinds: Vec<(Kind, u64)> = drain_src(&mut s, &mut t)
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
    assert_eq!(apply_all(&mut t), [2, 4, 7]);
    // Speculative: no grants, just the cumulative ACK.
    let ctl = drain_tgt(&mut t, &mut s);
    assert_eq!(ctl.len(), 1);
    assert_eq!((ctl[0].kind, ctl[0].seq), (Kind::Ack, 7));
    assert!(s.ring().is_empty());
    // Async completion: only after local I/O.
    assert!(s.poll_completed().is_none());
    assert!(s.local_done(2, true));
    assert_eq!(s.poll_completed().map(|c| c.seq), Some(2));
    assert!(matches!(write(&mut s, 1, 8, 3), Submit::Accepted(_)));
}

#[test]
fn lock_sync_holds_writes_until_granted() {
    let mut s = source(Mode::LockSync, Completion::Async, 64, 4);
    let mut t = target(64);
    handshake(&mut s, &mut t);
    assert!(matches!(write(&mut s, 0, 8, 1), Submit::Accepted(2)));
    let sent = drain_src(&mut s, &mut t);
    assert_eq!(sent.len(), 1, "only the LOCK goes out");
    assert_eq!(sent[0].kind, Kind::Lock);
    assert!(s.is_held());
    let ctl = drain_tgt(&mut t, &mut s);
    assert!(ctl
        .iter()
        .any(|h| h.kind == Kind::LockGranted && h.sector == 0));
    let sent = drain_src(&mut s, &mut t);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, Kind::Write);
}

#[test]
fn sync_completion_waits_for_ack() {
    let mut s = source(Mode::Speculative, Completion::Sync, 64, 4);
    let mut t = target(64);
    handshake(&mut s, &mut t);
    let w = HostWrite {
        op: HostOp::Write,
        sector: 8,
        count: 8,
        flags: FLAG_FUA,
    };
    let d = vec![7u8; 4096];
    let Submit::Accepted(seq) = s.submit(&C, &w, |wr| wr.write(&d)) else {
        panic!()
    };
    assert!(s.local_done(seq, true));
    assert!(s.poll_completed().is_none());
    drain_src(&mut s, &mut t);
    apply_all(&mut t);
    drain_tgt(&mut t, &mut s);
    assert_eq!(s.poll_completed().map(|c| c.seq), Some(seq));
}

#[test]
fn ring_full_is_back_pressure() {
    let mut s = source(Mode::Speculative, Completion::Async, 3, 4);
    let mut n = 0;
    loop {
        match write(&mut s, n * 16, 8, 1) {
            Submit::Accepted(seq) => {
                s.local_done(seq, true);
                s.poll_completed();
                n += 1;
            }
            Submit::Wait(WaitReason::RingFull) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(n > 0);
    assert!(s.ring().free_bytes() < 4096 + 3 * HEADER_LEN);
}

#[test]
fn target_naks_corruption_and_gaps_and_ignores_duplicates() {
    let mut s = source(Mode::Speculative, Completion::Async, 64, 4);
    let mut t = target(64);
    handshake(&mut s, &mut t);
    write(&mut s, 0, 8, 1);
    write(&mut s, 8, 8, 2);
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Some(v) = s.peek_send() {
        let n = s.read_frame(v.seq, &mut buf).unwrap();
        frames.push(buf[..n].to_vec());
        s.advance_send();
    }
    assert_eq!(frames.len(), 3); // LOCK, WRITE, WRITE
                                 // Corrupt the first WRITE's payload: NAK(2), then drop 3 silently.
    assert_eq!(t.on_frame(&C, &frames[0]), TargetRecv::Ok);
    let mut bad = frames[1].clone();
    bad[HEADER_LEN + 5] ^= 0x10;
    assert_eq!(t.on_frame(&C, &bad), TargetRecv::Ok);
    assert_eq!(t.on_frame(&C, &frames[2]), TargetRecv::Ok);
    let mut b = [0u8; 256];
    let n = t.poll_send(&C, &mut b).unwrap().unwrap();
    let (h, _) = decode_frame(&C, &b[..n]).unwrap();
    assert_eq!((h.kind, h.seq, h.count), (Kind::Nak, 2, NAK_CORRUPT));
    assert_eq!(s.on_frame(&C, &b[..n]), SourceRecv::Ok);
    assert_eq!(s.ring().send_seq(), 2);
    // Resend: duplicates of 1 are ignored, 2 and 3 accepted.
    assert_eq!(t.on_frame(&C, &frames[0]), TargetRecv::Ok);
    assert_eq!(t.on_frame(&C, &frames[1]), TargetRecv::Ok);
    assert_eq!(t.on_frame(&C, &frames[2]), TargetRecv::Ok);
    assert_eq!(t.received_seq(), 3);
    assert_eq!(t.stats().duplicates, 1);
    // A gap (seq 5 while 4 is expected) is NAKed once.
    let mut h5 = Header::new(Kind::Flush);
    h5.seq = 5;
    let mut f = [0u8; 64];
    let n5 = encode_frame(&C, &h5, &[], &mut f).unwrap();
    assert_eq!(t.on_frame(&C, &f[..n5]), TargetRecv::Ok);
    assert_eq!(t.on_frame(&C, &f[..n5]), TargetRecv::Ok);
    let n = t.poll_send(&C, &mut b).unwrap().unwrap();
    let (h, _) = decode_frame(&C, &b[..n]).unwrap();
    assert_eq!((h.kind, h.seq, h.count), (Kind::Nak, 4, NAK_GAP));
    assert_eq!(t.stats().naks, 2);
}

#[test]
fn rejected_lock_with_full_log_rejects_then_grants() {
    let mut s = source(Mode::Speculative, Completion::Async, 256, 4);
    // Log: 18 pages = 73 KiB, i.e. two 32 KiB writes.
    let mut t = target(18);
    handshake(&mut s, &mut t);
    assert_eq!(t.local_lock(0, 64), LocalLock::Granted);
    for i in 0..4u64 {
        assert!(matches!(
            write(&mut s, i * 64, 64, i as u8),
            Submit::Accepted(_)
        ));
    }
    let mut buf = vec![0u8; 65536];
    let mut rejected = false;
    while let Some(v) = s.peek_send() {
        let n = s.read_frame(v.seq, &mut buf).unwrap();
        s.advance_send();
        assert_eq!(t.on_frame(&C, &buf[..n]), TargetRecv::Ok);
        apply_all(&mut t);
        for h in drain_tgt(&mut t, &mut s) {
            if h.kind == Kind::LockRejected {
                assert_eq!(h.sector, 0);
                rejected = true;
            }
        }
    }
    assert!(
        rejected,
        "full log with a rejected region must send LOCK_REJECTED"
    );
    assert!(s.is_held());
    assert!(s.peek_send().is_none());
    // A new local locker of the rejected region must wait.
    assert_eq!(t.local_lock(0, 8), LocalLock::WouldBlock);
    t.local_unlock(0, 64);
    let ctl = drain_tgt(&mut t, &mut s);
    assert!(ctl
        .iter()
        .any(|h| h.kind == Kind::LockGranted && h.sector == 0));
    assert!(!s.is_held());
    // Everything now flows and drains.
    for _ in 0..10 {
        drain_src(&mut s, &mut t);
        apply_all(&mut t);
        drain_tgt(&mut t, &mut s);
    }
    assert!(s.ring().is_empty());
    assert!(t.commit_log().is_empty());
}

#[test]
fn target_refuses_writes_past_device_end() {
    let mut s = source(Mode::Speculative, Completion::Async, 64, 4);
    let mut t = target(64);
    handshake(&mut s, &mut t);
    let mut h = Header::new(Kind::Discard);
    h.seq = 1;
    h.sector = DEV - 4;
    h.count = 8;
    let mut f = [0u8; 64];
    let n = encode_frame(&C, &h, &[], &mut f).unwrap();
    assert!(matches!(t.on_frame(&C, &f[..n]), TargetRecv::Disconnect(_)));
}

#[test]
fn reconnect_resumes_from_last_applied() {
    let mut s = source(Mode::Speculative, Completion::Async, 64, 4);
    let mut t = target(64);
    handshake(&mut s, &mut t);
    for i in 0..3 {
        write(&mut s, i * 8, 8, 1);
    }
    drain_src(&mut s, &mut t);
    apply_all(&mut t);
    // Connection lost before the ACK went out.
    s.on_disconnect();
    t.on_disconnect();
    write(&mut s, 100, 8, 2);
    handshake(&mut s, &mut t);
    assert_eq!(s.acked_seq(), 4);
    assert!(s.stats().reconnects == 1);
    let sent = drain_src(&mut s, &mut t);
    assert_eq!(sent.iter().map(|h| h.seq).collect::<Vec<_>>(), [5, 6]);
    apply_all(&mut t);
    drain_tgt(&mut t, &mut s);
    assert!(s.ring().is_empty());
}

#[test]
fn new_generation_is_adopted_only_when_the_log_is_empty() {
    let mut s = source(Mode::Speculative, Completion::Async, 64, 4);
    let mut t = target(64);
    handshake(&mut s, &mut t);
    write(&mut s, 0, 8, 1);
    drain_src(&mut s, &mut t);
    // A new source (restarted: new generation, ring from seq 1) while the
    // target still holds unapplied records: refused as busy.
    let mut s2 = Source::new(
        SourceConfig {
            region_sectors: REGION,
            mode: Mode::Speculative,
            completion: Completion::Async,
            dev_sectors: DEV,
            generation: 10,
        },
        VecPages::new(64),
        1,
        vec![HotSlot::default(); 4],
        vec![InflightSlot::default(); 8],
    )
    .unwrap();
    let h = s2.start_handshake();
    assert_eq!(t.on_hello(&h), Err(Refusal::Busy));
    apply_all(&mut t);
    // Drained: the new generation starts after the new source's base.
    let h = s2.start_handshake();
    assert_eq!(t.on_hello(&h), Ok(()));
    assert_eq!(t.generation(), 10);
    assert_eq!(t.applied_seq(), 0);
    let mut b = [0u8; 256];
    let n = t.poll_send(&C, &mut b).unwrap().unwrap();
    let SourceRecv::HelloReply(r) = s2.on_frame(&C, &b[..n]) else {
        panic!()
    };
    s2.on_hello_reply(&r).unwrap();
    write(&mut s2, 0, 8, 2);
    assert_eq!(drain_src(&mut s2, &mut t).len(), 2);
    assert_eq!(apply_all(&mut t), [2]);
}

#[test]
fn local_holder_skips_records_without_failing_them() {
    let mut s = source(Mode::Speculative, Completion::Async, 256, 4);
    let mut t = target(256);
    handshake(&mut s, &mut t);
    // Region 1 (sectors 64..128) is held locally; region 0 is free.
    assert_eq!(t.local_lock(64, 8), LocalLock::Granted);
    assert!(matches!(write(&mut s, 64, 8, 1), Submit::Accepted(_)));
    assert!(matches!(write(&mut s, 0, 8, 2), Submit::Accepted(_)));
    drain_src(&mut s, &mut t);
    // The write to region 0 passes the held one; a device error on it
    // leaves it failed.
    let mut issued = Vec::new();
    while let Some(v) = t.poll_issue() {
        issued.push(v);
    }
    assert_eq!(issued.len(), 1, "only the write outside the local lock");
    assert_eq!(issued[0].header.sector, 0);
    assert!(t.io_done(issued[0].seq, &issued[0].header, false));
    assert_eq!(t.failing(), 1);
    // Polling again neither issues the held write nor the failed one.
    assert!(t.poll_issue().is_none());
    // The local unlock lets the held write start, but does not retry the
    // failed device write early: that is the retry timer's job.
    t.local_unlock(64, 8);
    let v = t.poll_issue().expect("held write starts after the unlock");
    assert_eq!(v.header.sector, 64);
    assert!(t.io_done(v.seq, &v.header, true));
    assert!(t.poll_issue().is_none(), "failed write waits for the retry");
    assert_eq!(t.retry_failed(), 1);
    let v = t.poll_issue().expect("retried");
    assert_eq!(v.header.sector, 0);
    assert!(t.io_done(v.seq, &v.header, true));
    assert!(t.commit_log().is_empty());
    // Zero-copy access: the pages the chunks refer to.
    assert_eq!(t.pages().0.len(), 256);
}

#[test]
fn challenge_is_glue_only_and_authenticates_the_handshake() {
    let secret: Option<&[u8]> = Some(b"Sw0rdf1sh");
    let mut s = source(Mode::Speculative, Completion::Async, 64, 4);
    let mut t = target(64);
    let mut ch = [0u8; CHALLENGE_FRAME_LEN];
    let nonce_t = [0x11; 16];
    let n = encode_challenge(&C, &nonce_t, &mut ch).unwrap();
    // Neither machine takes a CHALLENGE: the glue consumes it.
    assert_eq!(
        t.on_frame(&C, &ch[..n]),
        TargetRecv::Disconnect(DecodeError::BadKind)
    );
    let mut h = s.start_handshake();
    assert_eq!(
        s.on_frame(&C, &ch[..n]),
        SourceRecv::Reconnect(ProtocolError::Unexpected)
    );

    // What the glue does: source answers the challenge...
    let got = decode_challenge(&C, &ch[..n]).unwrap();
    let nonce_s = [0x22; 16];
    h.nonce = nonce_s;
    auth::sign(secret, MacLabel::Hello, &got, &mut h);
    let mut b = [0u8; 256];
    let n = encode_hello(&C, &h, false, &mut b).unwrap();
    // ...the target checks the HELLO, then signs its reply...
    let TargetRecv::Hello(rh) = t.on_frame(&C, &b[..n]) else {
        panic!("no hello")
    };
    assert!(auth::verify(secret, MacLabel::Hello, &nonce_t, &rh));
    assert!(!auth::verify(secret, MacLabel::Hello, &[0x12; 16], &rh));
    t.on_hello(&rh).unwrap();
    let reply = t.pending_reply_mut().unwrap();
    reply.nonce = nonce_t;
    auth::sign(secret, MacLabel::Reply, &rh.nonce, reply);
    let n = t.poll_send(&C, &mut b).unwrap().unwrap();
    // ...and the source checks the reply.
    let SourceRecv::HelloReply(r) = s.on_frame(&C, &b[..n]) else {
        panic!("no reply")
    };
    assert!(auth::verify(secret, MacLabel::Reply, &nonce_s, &r));
    assert!(!auth::verify(secret, MacLabel::Hello, &nonce_s, &r));
    s.on_hello_reply(&r).unwrap();
    assert_eq!(s.link_state(), LinkState::Connected);

    // Connected: still unexpected on both sides.
    let n = encode_challenge(&C, &nonce_t, &mut ch).unwrap();
    assert_eq!(
        s.on_frame(&C, &ch[..n]),
        SourceRecv::Reconnect(ProtocolError::Unexpected)
    );
    assert_eq!(
        t.on_frame(&C, &ch[..n]),
        TargetRecv::Disconnect(DecodeError::BadKind)
    );
}

/// Issue 5 scenario 8: a write that fails on the source's own device
/// completes with its error at once, blocks overlapping writes until its
/// range is re-read, and the repair record (what the source's device
/// really holds) reaches the target after the failed record, so the
/// target ends up with the source's content.
#[test]
fn failed_local_write_is_repaired_from_the_device() {
    for completion in [Completion::Async, Completion::Sync] {
        let mut s = source(Mode::Speculative, completion, 64, 4);
        let mut t = target(64);
        handshake(&mut s, &mut t);
        let Submit::Accepted(bad) = write(&mut s, 8, 8, 0xAA) else {
            panic!("not accepted")
        };
        assert!(s.local_done(bad, false));
        // Completes at once with the error, acked or not.
        let c = s.poll_completed().unwrap();
        assert_eq!((c.seq, c.ok), (bad, false));
        assert_eq!(s.stats().local_errors, 1);
        // Its range is still in flight: overlapping writes wait, others go.
        assert_eq!(s.inflight_len(), 1);
        assert!(matches!(
            write(&mut s, 12, 8, 0xBB),
            Submit::Wait(WaitReason::Overlap)
        ));
        assert!(matches!(write(&mut s, 100, 8, 0xCC), Submit::Accepted(_)));
        let job = s.next_repair().unwrap();
        assert_eq!((job.seq, job.sector, job.count), (bad, 8, 8));
        // The device still holds the old bytes (0x11): that is replicated.
        let old = vec![0x11u8; 8 * 512];
        let Submit::Accepted(rep) = s.repair(&C, bad, |w| w.write(&old)) else {
            panic!("repair not appended")
        };
        assert!(rep > bad);
        assert_eq!(s.next_repair(), None);
        assert_eq!(s.stats().repairs, 1);
        assert!(matches!(write(&mut s, 12, 8, 0xBB), Submit::Accepted(_)));
        let sent = drain_src(&mut s, &mut t);
        let writes: Vec<(u64, u64)> = sent
            .iter()
            .filter(|h| h.kind == Kind::Write)
            .map(|h| (h.sector, u64::from(h.count)))
            .collect();
        assert_eq!(writes, [(8, 8), (100, 8), (8, 8), (12, 8)]);
        // The repair's payload is what the target will write for it.
        let mut p = vec![0u8; 8 * 512];
        assert_eq!(t.read_payload(rep, &mut p), Some(8 * 512));
        assert_eq!(p, old);
        apply_all(&mut t);
        // A repair that cannot be re-read is given up and counted.
        let Submit::Accepted(bad2) = write(&mut s, 300, 8, 0xDD) else {
            panic!("not accepted")
        };
        assert!(s.local_done(bad2, false));
        assert_eq!(s.poll_completed().map(|c| c.ok), Some(false));
        s.repair_failed(bad2);
        assert_eq!(s.stats().unrepaired, 1);
        assert!(matches!(write(&mut s, 300, 8, 0xEE), Submit::Accepted(_)));
    }
}

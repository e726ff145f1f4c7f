//! Aligned payloads: whatever the sequence of appends, sends, acks and
//! rewinds in a rollback ring, or of pushes, issues and completions in a
//! commit log, every stored payload piece starts on a multiple of the
//! payload alignment (and is whole sectors when the alignment is a
//! sector or more), while the frame on the wire stays header + payload,
//! byte for byte, without the padding.

mod common;

use std::collections::{HashMap, VecDeque};

use common::drive::{connected, hw, src_cfg, target_with, tgt_cfg, DEV};
use common::{frame, payload, Crc, Log, VecPages};
use proptest::prelude::*;
use specmirror_core::log::commit::{CommitError, CommitLog, WindowSlot};
use specmirror_core::log::pages::{max_stored_len, valid_payload_align, Spans, SECTOR_ALIGN};
use specmirror_core::log::record::{Header, Kind, FLAG_FUA, HEADER_LEN, SECTOR_SIZE};
use specmirror_core::log::ring::{RingError, RollbackRing, PAGE_SIZE};
use specmirror_core::pair::gather;
use specmirror_core::transport::proto::source::{HostOp, Submit};
use specmirror_core::transport::proto::{Completion, Mode};

const ALIGNS: [usize; 3] = [8, 512, 4096];

fn hdr(kind: Kind, sector: u64, sectors: u32) -> Header {
    let mut h = Header::new(kind);
    h.sector = sector;
    h.count = sectors;
    if kind == Kind::Write {
        h.len = sectors * SECTOR_SIZE as u32;
    }
    h
}

/// Checks the pieces of one payload: inside a page each, starting on the
/// alignment, whole sectors from a sector alignment up, `len` in all.
fn check_pieces(pieces: Spans, align: usize, len: usize) {
    let mut total = 0;
    for (page, off, n) in pieces {
        assert!(off + n <= PAGE_SIZE, "piece crosses a page");
        assert!(n > 0);
        assert_eq!(
            (page * PAGE_SIZE + off) % align,
            0,
            "piece at {page}:{off}, align {align}"
        );
        if align >= SECTOR_ALIGN {
            assert_eq!(n % SECTOR_SIZE, 0, "piece of {n} bytes, align {align}");
        }
        total += n;
    }
    assert_eq!(total, len);
}

fn read<P: specmirror_core::log::pages::Pages>(
    pages: &P,
    pieces: impl Iterator<Item = (usize, usize, usize)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    gather(pages, pieces, &mut out);
    out
}

#[test]
fn alignment_is_validated_and_set_only_while_empty() {
    for a in [0usize, 1, 4, 7, 12, 8192, 3 * 512] {
        assert!(!valid_payload_align(a), "{a}");
        let mut r = RollbackRing::new(VecPages::new(2), 1);
        assert_eq!(r.set_payload_align(a), Err(RingError::Align));
        let mut l = common::commit_log(2, 1);
        assert_eq!(l.set_payload_align(a), Err(CommitError::Align));
    }
    for a in [8usize, 16, 512, 1024, 4096] {
        assert!(valid_payload_align(a));
        let mut r = RollbackRing::new(VecPages::new(2), 1);
        assert_eq!(r.set_payload_align(a), Ok(()));
        assert_eq!(r.payload_align(), a);
        r.append(&Crc, hdr(Kind::Flush, 0, 0), 0, |_| Ok(()))
            .unwrap();
        assert_eq!(r.set_payload_align(8), Err(RingError::Align), "not empty");
        let mut l = common::commit_log(2, 1);
        assert_eq!(l.set_payload_align(a), Ok(()));
        let mut h = hdr(Kind::Flush, 0, 0);
        h.seq = 1;
        l.push(&h, &[]).unwrap();
        assert_eq!(l.set_payload_align(8), Err(CommitError::Align), "not empty");
    }
    // The worst case padding: align - 8 bytes, none without a payload.
    assert_eq!(max_stored_len(0, 4096), HEADER_LEN);
    assert_eq!(max_stored_len(512, 8), HEADER_LEN + 512);
    assert_eq!(max_stored_len(512, 512), HEADER_LEN + 504 + 512);
    // An empty ring takes its largest record wherever it lands; a ring
    // that could not is refused up front.
    let mut r = RollbackRing::new(VecPages::new(2), 1);
    r.set_payload_align(4096).unwrap();
    let d = payload(1, 4096);
    assert_eq!(r.max_stored_len(4096), 40 + 4088 + 4096);
    assert_eq!(
        r.append(&Crc, hdr(Kind::Write, 0, 8), 4096, |w| w.write(&d)),
        Err(RingError::TooLarge)
    );
    let mut r = RollbackRing::new(VecPages::new(3), 1);
    r.set_payload_align(4096).unwrap();
    assert_eq!(
        r.append(&Crc, hdr(Kind::Write, 0, 8), 4096, |w| w.write(&d)),
        Ok(1)
    );
    let v = r.view(1).unwrap();
    assert_eq!(v.stored_len, PAGE_SIZE + 4096);
    assert_eq!(v.frame_len, HEADER_LEN + 4096);
    assert_eq!(v.payload_chunks().collect::<Vec<_>>(), [(1, 0, 4096)]);
    let l: Log = {
        let mut l = common::commit_log(2, 1);
        l.set_payload_align(4096).unwrap();
        l
    };
    assert!(!l.fits_ever(4096));
    assert!(l.fits_ever(0));
}

#[derive(Debug, Clone)]
enum ROp {
    /// Sectors (0: a record without payload), feed pieces.
    Append(u32, usize),
    Send(usize),
    Ack(u64),
    Rewind(u64),
}

fn arb_rop() -> impl Strategy<Value = ROp> {
    prop_oneof![
        5 => (0u32..=17, 1usize..5).prop_map(|(s, p)| ROp::Append(s, p)),
        3 => (1usize..5).prop_map(ROp::Send),
        2 => (0u64..6).prop_map(ROp::Ack),
        1 => (0u64..8).prop_map(ROp::Rewind),
    ]
}

/// Every record the ring holds, checked against what was appended.
fn check_ring(r: &RollbackRing<VecPages>, model: &VecDeque<(Header, Vec<u8>)>, align: usize) {
    let first = r.oldest_seq().unwrap_or(r.next_seq());
    assert_eq!(r.len_records(), model.len());
    let mut used = 0;
    for (i, (h, data)) in model.iter().enumerate() {
        let seq = first + i as u64;
        let v = r.view(seq).expect("held");
        let mut want = *h;
        want.seq = seq;
        assert_eq!(v.header, want);
        // On the wire: the header, then the payload, nothing between.
        let wire = frame(&want, data);
        assert_eq!(v.frame_len, wire.len());
        assert_eq!(read(r.pages(), v.chunks()), wire, "seq {seq}");
        let mut buf = vec![0u8; wire.len()];
        assert_eq!(r.read_frame(seq, &mut buf), Ok(wire.len()));
        assert_eq!(buf, wire);
        assert_eq!(r.header_bytes(seq).unwrap()[..], wire[..HEADER_LEN]);
        // In storage: the payload aligned.
        check_pieces(v.payload_chunks(), align, data.len());
        assert_eq!(read(r.pages(), v.payload_chunks()), *data);
        assert!(v.stored_len >= v.frame_len && v.stored_len <= r.max_stored_len(data.len()));
        if data.is_empty() {
            assert_eq!(v.stored_len, HEADER_LEN);
        }
        used += v.stored_len;
    }
    assert_eq!(r.used_bytes(), used);
    // Walking from the send cursor sees the same records.
    let c = r.send_cursor();
    assert_eq!(c.seq(), r.send_seq());
    let from = (c.seq() - first) as usize;
    let walked: Vec<_> = r.views_at(c, usize::MAX).collect();
    assert_eq!(walked.len(), model.len() - from);
    for (k, v) in walked.iter().enumerate() {
        assert_eq!(Some(*v), r.view(c.seq() + k as u64));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn ring_payloads_stay_aligned(
        align_i in 0usize..3, pages in 2usize..7, first in 1u64..100,
        ops in prop::collection::vec(arb_rop(), 1..120),
    ) {
        let align = ALIGNS[align_i];
        let mut r = RollbackRing::new(common::vec_pages(pages), first);
        r.set_payload_align(align).unwrap();
        let mut model: VecDeque<(Header, Vec<u8>)> = VecDeque::new();
        for op in ops {
            match op {
                ROp::Append(sectors, pieces) => {
                    let (h, data) = if sectors == 0 {
                        (hdr(Kind::Lock, r.next_seq() % 7, 0), Vec::new())
                    } else {
                        let mut h = hdr(Kind::Write, u64::from(sectors) * 8, sectors);
                        if sectors % 3 == 0 {
                            h.flags = FLAG_FUA;
                        }
                        (h, payload(r.next_seq(), sectors as usize * SECTOR_SIZE))
                    };
                    let could = r.can_append(data.len());
                    let res = r.append(&Crc, h, data.len(), |w| {
                        let step = (data.len() / pieces).max(1);
                        for c in data.chunks(step) {
                            w.write(c)?;
                        }
                        Ok(())
                    });
                    match res {
                        Ok(seq) => {
                            prop_assert!(could);
                            prop_assert_eq!(seq, r.next_seq() - 1);
                            model.push_back((h, data));
                        }
                        Err(RingError::Full) => prop_assert!(!could),
                        Err(RingError::TooLarge) => {
                            prop_assert!(r.max_stored_len(data.len()) > r.capacity_bytes())
                        }
                        Err(e) => prop_assert!(false, "{:?}", e),
                    }
                }
                ROp::Send(n) => {
                    for _ in 0..n {
                        r.advance_send();
                    }
                }
                ROp::Ack(k) => {
                    let oldest = r.oldest_seq().unwrap_or(r.next_seq());
                    let freed = r.ack(oldest + k);
                    for _ in 0..freed {
                        model.pop_front();
                    }
                }
                ROp::Rewind(k) => {
                    let oldest = r.oldest_seq().unwrap_or(r.next_seq());
                    let s = (oldest + k).min(r.next_seq());
                    prop_assert_eq!(r.rewind(s), Ok(()));
                    prop_assert_eq!(r.send_seq(), s);
                }
            }
            check_ring(&r, &model, align);
        }
    }
}

#[derive(Debug, Clone)]
enum LOp {
    Push(u32),
    Issue,
    Complete(usize, bool),
    Reissue,
}

fn arb_lop() -> impl Strategy<Value = LOp> {
    prop_oneof![
        5 => (0u32..=17).prop_map(LOp::Push),
        3 => Just(LOp::Issue),
        3 => (any::<usize>(), prop::bool::weighted(0.85)).prop_map(|(i, ok)| LOp::Complete(i, ok)),
        1 => Just(LOp::Reissue),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn commit_log_payloads_stay_aligned(
        align_i in 0usize..3, pages in 2usize..7, win in 1usize..10,
        ops in prop::collection::vec(arb_lop(), 1..150),
    ) {
        let align = ALIGNS[align_i];
        let mut log: Log = CommitLog::new(
            common::vec_pages(pages), vec![WindowSlot::EMPTY; win], common::filter(), 1,
        ).unwrap();
        log.set_payload_align(align).unwrap();
        let mut held: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut issued: Vec<u64> = Vec::new();
        let full_bytes = |l: &Log| l.used_bytes();
        for op in ops {
            match op {
                LOp::Push(sectors) => {
                    let seq = log.next_seq();
                    let (mut h, data) = if sectors == 0 {
                        (hdr(Kind::Unlock, seq % 5, 0), Vec::new())
                    } else {
                        // Disjoint ranges: nothing waits for an overlap.
                        (hdr(Kind::Write, seq * 64, sectors), payload(seq, sectors as usize * SECTOR_SIZE))
                    };
                    h.seq = seq;
                    let could = log.can_push(data.len());
                    let before = full_bytes(&log);
                    match log.push(&h, &data) {
                        Ok(()) => {
                            prop_assert!(could);
                            let grew = log.used_bytes() - before;
                            prop_assert!(grew >= HEADER_LEN + data.len());
                            prop_assert!(grew <= max_stored_len(data.len(), align));
                            if data.is_empty() {
                                prop_assert_eq!(grew, HEADER_LEN);
                            }
                            held.insert(seq, data);
                        }
                        Err(CommitError::Full) => prop_assert!(!could),
                        Err(CommitError::TooLarge) => prop_assert!(!log.fits_ever(data.len())),
                        Err(e) => prop_assert!(false, "{:?}", e),
                    }
                }
                LOp::Issue => {
                    while let Some(v) = log.next_to_issue() {
                        let data = &held[&v.seq];
                        prop_assert_eq!(v.header.len as usize, data.len());
                        check_pieces(v.chunks(), align, data.len());
                        prop_assert_eq!(&read(log.pages(), v.chunks()), data);
                        prop_assert_eq!(log.issued_header(v.seq), Some(v.header));
                        if v.header.kind == Kind::Unlock {
                            prop_assert!(log.complete(v.seq, true));
                        } else {
                            issued.push(v.seq);
                        }
                    }
                }
                LOp::Complete(i, ok) => {
                    if !issued.is_empty() {
                        let seq = issued.swap_remove(i % issued.len());
                        prop_assert!(log.complete(seq, ok));
                        prop_assert_eq!(log.issued_header(seq).is_some(), !ok);
                    }
                }
                LOp::Reissue => {
                    log.reissue_failed();
                }
            }
            // Every held record's payload reads back as pushed.
            let applied = log.applied_upto();
            held.retain(|&s, _| s > applied);
            prop_assert_eq!(held.len(), log.len_records());
            for (&seq, data) in &held {
                let mut out = vec![0u8; data.len()];
                prop_assert_eq!(log.read_payload(seq, &mut out), Some(data.len()));
                prop_assert_eq!(&out, data);
            }
            if log.is_empty() {
                prop_assert_eq!(log.used_bytes(), 0);
            }
        }
    }
}

/// End to end at each alignment: the source writes locally from its
/// ring's aligned payload pieces, the target from its log's; both
/// devices end up equal, and the bytes on the wire carry no padding.
#[test]
fn aligned_streams_replicate_byte_for_byte() {
    for align in ALIGNS {
        let mut s =
            common::drive::source_with(src_cfg(Mode::Speculative, Completion::Sync), 48, 4, align);
        s.set_block_size(512);
        let t = target_with(tgt_cfg(), 48, align);
        let mut p = connected(s, t).with_disk();
        let mut local = vec![0u8; DEV as usize * SECTOR_SIZE];
        for i in 0..60u64 {
            let sectors = 1 + (i * 7 % 23) as u32;
            let sector = i * 131 % 20_000;
            let data = payload(i, sectors as usize * SECTOR_SIZE);
            let w = hw(HostOp::Write, sector, sectors, 0);
            let seq = match p.s.submit(&Crc, &w, 0, |wr| wr.write(&data)) {
                Submit::Accepted(seq) => seq,
                Submit::Wait(_) => {
                    // Parked: let acks free the ring, then offer it again.
                    p.run_until(1_000_000, 100, |p| p.s.ring().is_empty());
                    match p.s.retry_deferred(&Crc, &w, 0, |wr| wr.write(&data)) {
                        Submit::Accepted(seq) => seq,
                        other => panic!("{other:?}"),
                    }
                }
                Submit::Invalid(e) => panic!("{e:?}"),
            };
            // The local write, from the ring's pieces.
            let pieces = p.s.payload_chunks(seq).expect("a data record");
            check_pieces(pieces, align, data.len());
            let bytes = read(p.s.ring().pages(), pieces);
            assert_eq!(bytes, data);
            local[sector as usize * SECTOR_SIZE..][..data.len()].copy_from_slice(&bytes);
            assert!(p.s.local_done(seq, true));
            p.run(1000);
        }
        assert!(
            p.run_until(1_000_000, 100, |p| p.s.is_idle()),
            "align {align}"
        );
        assert_eq!(p.completed.len(), 60);
        assert!(p.completed.iter().all(|c| c.ok));
        assert_eq!(p.disk.as_deref(), Some(&local[..]), "align {align}");
    }
}

//! Rollback ring: model-based property test (VecDeque model) of append,
//! send cursor, cumulative ack, rewind and wrap-around, with exact
//! capacity accounting; plus targeted unit tests.

mod common;

use std::collections::VecDeque;

use common::{frame, payload, Crc, VecPages};
use proptest::prelude::*;
use specmirror_core::log::record::{decode_frame, Header, Kind, FLAG_FUA, HEADER_LEN};
use specmirror_core::log::ring::{RingError, RollbackRing, PAGE_SIZE};

fn hdr(kind: Kind, sector: u64, count: u32) -> Header {
    let mut h = Header::new(kind);
    h.sector = sector;
    h.count = count;
    if kind == Kind::Write {
        h.len = count * 512;
    }
    h
}

/// Appends a record, feeding the payload in `pieces` uneven chunks.
fn append(
    r: &mut RollbackRing<VecPages>,
    h: Header,
    data: &[u8],
    pieces: usize,
) -> Result<u64, RingError> {
    r.append(&Crc, h, data.len(), |w| {
        let step = (data.len() / pieces.max(1)).max(1);
        for c in data.chunks(step) {
            w.write(c)?;
        }
        Ok(())
    })
}

/// Reassembles the frame at the send cursor from its page spans.
fn gather(r: &RollbackRing<VecPages>) -> Option<Vec<u8>> {
    let pages = r.pages();
    let v = r.peek_send()?;
    let mut out = Vec::new();
    for (pg, off, len) in v.chunks() {
        assert!(off + len <= PAGE_SIZE, "span crosses a page");
        out.extend_from_slice(&pages.0[pg][off..off + len]);
    }
    assert_eq!(out.len(), v.frame_len);
    Some(out)
}

#[test]
fn basic_flow_and_spans() {
    let mut r = RollbackRing::new(common::vec_pages(2), 1);
    assert_eq!(r.capacity_bytes(), 8192);
    assert!(r.peek_send().is_none());
    let d = payload(1, 4096);
    let s1 = append(&mut r, hdr(Kind::Write, 8, 8), &d, 3).unwrap();
    let s2 = append(&mut r, hdr(Kind::Lock, 4, 0), &[], 1).unwrap();
    assert_eq!((s1, s2), (1, 2));
    assert_eq!(r.used_bytes(), 4096 + 2 * HEADER_LEN);
    let v = r.peek_send().unwrap();
    assert_eq!(v.seq, 1);
    assert_eq!(v.header.seq, 1);
    // Header, then the payload from byte 40: 4056 bytes in page 0, 40 in
    // page 1 (the default alignment, 8, adds no padding).
    assert_eq!(
        v.chunks().collect::<Vec<_>>(),
        [(0, 0, HEADER_LEN), (0, 40, 4056), (1, 0, 40)]
    );
    assert_eq!(v.stored_len, v.frame_len);
    let mut buf = vec![0; 5000];
    let n = r.read_frame(1, &mut buf).unwrap();
    let mut h = hdr(Kind::Write, 8, 8);
    h.seq = 1;
    assert_eq!(&buf[..n], &frame(&h, &d)[..]);
    assert_eq!(decode_frame(&Crc, &buf[..n]).unwrap().1, &d[..]);
    assert_eq!(r.read_frame(1, &mut buf[..100]), Err(RingError::TooLarge));
    assert_eq!(r.read_frame(3, &mut buf), Err(RingError::UnknownSeq));
    // Not sent yet: an ack cannot free it.
    assert_eq!(r.ack(5), 0);
    r.advance_send();
    assert_eq!(r.send_seq(), 2);
    assert_eq!(r.ack(5), 1, "clamped to what was sent");
    assert_eq!(r.oldest_seq(), Some(2));
    assert_eq!(r.rewind(1), Err(RingError::UnknownSeq));
    assert_eq!(r.rewind(4), Err(RingError::UnknownSeq));
    r.rewind(3).unwrap();
    assert!(r.peek_send().is_none());
    r.rewind(2).unwrap();
    assert_eq!(r.peek_send().unwrap().header.kind, Kind::Lock);
}

#[test]
fn errors_roll_back_cleanly() {
    let mut r = RollbackRing::new(common::vec_pages(1), 10);
    let before = (r.used_bytes(), r.next_seq(), r.len_records());
    // Too short a fill.
    let e = r.append(&Crc, hdr(Kind::Write, 0, 1), 512, |w| w.write(&[1; 100]));
    assert_eq!(e, Err(RingError::LengthMismatch));
    // Too long a fill.
    let e = r.append(&Crc, hdr(Kind::Write, 0, 1), 512, |w| w.write(&[1; 513]));
    assert_eq!(e, Err(RingError::LengthMismatch));
    // Header inconsistent with the payload length.
    let e = r.append(&Crc, hdr(Kind::Write, 0, 2), 512, |w| w.write(&[1; 512]));
    assert!(matches!(e, Err(RingError::BadHeader(_))));
    // Bigger than the whole ring.
    let e = r.append(&Crc, hdr(Kind::Write, 0, 8), 4096, |w| w.write(&[1; 4096]));
    assert_eq!(e, Err(RingError::TooLarge));
    assert_eq!(before, (r.used_bytes(), r.next_seq(), r.len_records()));
    // Exactly full, then Full.
    for i in 0..(4096 / 40) {
        assert!(r.can_append(0));
        append(&mut r, hdr(Kind::Flush, 0, 0), &[], 1).unwrap_or_else(|e| panic!("{i}: {e:?}"));
    }
    assert_eq!(r.free_bytes(), 4096 % 40);
    assert!(!r.can_append(0));
    assert_eq!(
        append(&mut r, hdr(Kind::Flush, 0, 0), &[], 1),
        Err(RingError::Full)
    );
}

#[test]
fn zero_pages_never_panics() {
    let mut r = RollbackRing::new(common::vec_pages(0), 1);
    assert_eq!(r.capacity_bytes(), 0);
    assert_eq!(
        append(&mut r, hdr(Kind::Flush, 0, 0), &[], 1),
        Err(RingError::TooLarge)
    );
    r.advance_send();
    assert_eq!(r.ack(10), 0);
    assert!(r.peek_send().is_none());
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        kind: u8,
        sectors: u32,
        pieces: usize,
        bad_fill: bool,
    },
    Send(usize),
    Ack(i64),
    Rewind(i64),
    Read(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 1u32..=12, 1usize..5, prop::bool::weighted(0.05))
            .prop_map(|(kind, sectors, pieces, bad_fill)| Op::Append { kind, sectors, pieces, bad_fill }),
        3 => (1usize..4).prop_map(Op::Send),
        2 => (-3i64..8).prop_map(Op::Ack),
        1 => (-2i64..10).prop_map(Op::Rewind),
        1 => any::<usize>().prop_map(Op::Read),
    ]
}

struct Model {
    q: VecDeque<(u64, Vec<u8>)>,
    oldest: u64,
    next: u64,
    send: u64,
    hwm: u64,
}

impl Model {
    fn used(&self) -> usize {
        self.q.iter().map(|(_, f)| f.len()).sum()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ring_matches_model(
        pages in 1usize..4, first in 1u64..1000, ops in prop::collection::vec(arb_op(), 1..200),
    ) {
        let mut r = RollbackRing::new(common::vec_pages(pages), first);
        let cap = pages * PAGE_SIZE;
        let mut m = Model { q: VecDeque::new(), oldest: first, next: first, send: first, hwm: first };
        for op in ops {
            match op {
                Op::Append { kind, sectors, pieces, bad_fill } => {
                    let kind = [Kind::Write, Kind::Lock, Kind::Discard, Kind::Flush][kind as usize];
                    let mut h = hdr(kind, u64::from(sectors) * 8, sectors);
                    if kind == Kind::Write && sectors % 5 == 0 {
                        h.flags = FLAG_FUA;
                    }
                    let data = payload(m.next, h.len as usize);
                    let fits = HEADER_LEN + data.len() <= cap - m.used();
                    let res = if bad_fill && !data.is_empty() {
                        r.append(&Crc, h, data.len(), |w| w.write(&data[1..]))
                    } else {
                        append(&mut r, h, &data, pieces)
                    };
                    if HEADER_LEN + data.len() > cap {
                        prop_assert_eq!(res, Err(RingError::TooLarge));
                    } else if !fits {
                        prop_assert_eq!(res, Err(RingError::Full));
                    } else if bad_fill && !data.is_empty() {
                        prop_assert_eq!(res, Err(RingError::LengthMismatch));
                    } else {
                        prop_assert_eq!(res, Ok(m.next));
                        h.seq = m.next;
                        m.q.push_back((m.next, frame(&h, &data)));
                        m.next += 1;
                    }
                }
                Op::Send(n) => {
                    for _ in 0..n {
                        let got = gather(&r);
                        let want = m.q.iter().find(|(s, _)| *s == m.send).map(|(_, f)| f.clone());
                        prop_assert_eq!(&got, &want);
                        if let Some(f) = got {
                            prop_assert!(decode_frame(&Crc, &f).is_ok());
                        }
                        r.advance_send();
                        if m.send < m.next {
                            m.send += 1;
                            m.hwm = m.hwm.max(m.send);
                        }
                    }
                }
                Op::Ack(d) => {
                    let upto = (m.oldest as i64 + d).max(0) as u64;
                    let mut freed = 0;
                    while let Some((s, _)) = m.q.front() {
                        if *s <= upto && *s < m.hwm {
                            if m.send == *s {
                                m.send += 1;
                            }
                            m.q.pop_front();
                            m.oldest += 1;
                            freed += 1;
                        } else {
                            break;
                        }
                    }
                    prop_assert_eq!(r.ack(upto), freed);
                }
                Op::Rewind(d) => {
                    let to = (m.oldest as i64 + d).max(0) as u64;
                    let res = r.rewind(to);
                    if to >= m.oldest && to <= m.next {
                        prop_assert_eq!(res, Ok(()));
                        m.send = to;
                    } else {
                        prop_assert_eq!(res, Err(RingError::UnknownSeq));
                    }
                }
                Op::Read(i) => {
                    let span = (m.next - m.oldest + 2) as usize;
                    let seq = m.oldest + (i % span) as u64;
                    let mut buf = vec![0u8; 8192];
                    let want = m.q.iter().find(|(s, _)| *s == seq).map(|(_, f)| f.clone());
                    match r.read_frame(seq, &mut buf) {
                        Ok(n) => prop_assert_eq!(Some(buf[..n].to_vec()), want),
                        Err(e) => {
                            prop_assert_eq!(e, RingError::UnknownSeq);
                            prop_assert!(want.is_none());
                        }
                    }
                    let hh = r.header_of(seq);
                    prop_assert_eq!(hh.is_some(), m.q.iter().any(|(s, _)| *s == seq));
                }
            }
            // Exact accounting after every step.
            prop_assert_eq!(r.used_bytes(), m.used());
            prop_assert_eq!(r.free_bytes(), cap - m.used());
            prop_assert_eq!(r.len_records(), m.q.len());
            prop_assert_eq!(r.is_empty(), m.q.is_empty());
            prop_assert_eq!(r.next_seq(), m.next);
            prop_assert_eq!(r.send_seq(), m.send);
            prop_assert_eq!(r.oldest_seq(), m.q.front().map(|(s, _)| *s));
            prop_assert_eq!(r.unsent_records(), m.next - m.send);
        }
    }
}

#[test]
fn seqs_near_u64_max_never_overflow() {
    let mut r = RollbackRing::new(common::vec_pages(1), u64::MAX - 2);
    assert_eq!(
        append(&mut r, hdr(Kind::Flush, 0, 0), &[], 1),
        Ok(u64::MAX - 2)
    );
    assert_eq!(
        append(&mut r, hdr(Kind::Flush, 0, 0), &[], 1),
        Ok(u64::MAX - 1)
    );
    assert_eq!(
        append(&mut r, hdr(Kind::Flush, 0, 0), &[], 1),
        Err(RingError::Full)
    );
    for _ in 0..4 {
        r.advance_send();
    }
    assert_eq!(r.rewind(u64::MAX), Ok(()));
    assert_eq!(r.rewind(u64::MAX - 2), Ok(()));
    assert!(r.view(u64::MAX).is_none());
    assert_eq!(r.ack(u64::MAX), 2);
    assert!(r.is_empty());
}

/// A CRC that remembers the address ranges it was given.
struct SeenCrc(std::cell::RefCell<Vec<(usize, usize)>>);

impl specmirror_core::log::record::Crc32c for SeenCrc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        let a = data.as_ptr() as usize;
        self.0.borrow_mut().push((a, a + data.len()));
        Crc.crc32c(crc, data)
    }
}

/// The record's CRC covers the bytes the ring holds, never the host's
/// buffer: in the kernel that buffer is the bio's pages, which a writer on
/// another CPU may change between the copy into the ring and the CRC
/// (O_DIRECT with an unstable buffer). A CRC over the buffer then
/// disagrees with the ring's bytes, and the target rejects the record
/// with a NAK every time it is resent: a livelock the SMP VM found
/// (selftests/unstable_pages.sh). Here: no CRC input lies in the buffer,
/// and the frame read back from the ring decodes.
#[test]
fn payload_crc_is_over_the_ring_copy() {
    let mut r = RollbackRing::new(common::vec_pages(4), 1);
    let host = payload(7, 3 * 4096);
    let (lo, hi) = (host.as_ptr() as usize, host.as_ptr() as usize + host.len());
    let seen = SeenCrc(std::cell::RefCell::new(Vec::new()));
    r.append(&seen, hdr(Kind::Write, 0, 24), host.len(), |w| {
        for c in host.chunks(5000) {
            w.write(c)?;
        }
        Ok(())
    })
    .unwrap();
    let seen = seen.0.into_inner();
    assert!(!seen.is_empty());
    for (a, b) in seen {
        assert!(b <= lo || a >= hi, "the CRC read the host's buffer at {a:#x}..{b:#x}");
    }
    let f = gather(&r).unwrap();
    let (h, p) = decode_frame(&Crc, &f).unwrap();
    assert_eq!(h.count, 24);
    assert_eq!(p, &host[..]);
}

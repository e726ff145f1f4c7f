//! Reserved records (`RollbackRing::reserve` / `publish`): the kernel fills
//! a host write's payload outside the ring's lock, so while a record is
//! pending nothing may send it, send past it, free it or store over it;
//! once published it is the same frame `append` would have made.

mod common;

use common::{payload, Crc, VecPages};
use specmirror_core::log::record::{decode_frame, Crc32c, Header, Kind};
use specmirror_core::log::ring::{RingError, RollbackRing, MAX_PENDING, PAGE_SIZE};

fn write_hdr(sector: u64, count: u32) -> Header {
    let mut h = Header::new(Kind::Write);
    h.sector = sector;
    h.count = count;
    h
}

/// Fills pending record `seq` with `data` and returns the CRC to publish
/// it with, checking the kernel's way of computing it: the reservation's
/// seed CRC extended with the payload bytes.
fn fill_raw(r: &mut RollbackRing<VecPages>, seq: u64, data: &[u8]) -> u32 {
    let res = r.reserved(seq).expect("pending");
    assert_eq!(res.payload().remaining(), data.len());
    let crc = r.fill_reserved(&Crc, &res, |w| w.write(data)).unwrap();
    assert_eq!(crc, Crc.crc32c(res.seed_crc(), data));
    crc
}

fn frame_at_send(r: &RollbackRing<VecPages>) -> Option<Vec<u8>> {
    let v = r.peek_send()?;
    let mut out = Vec::new();
    for (pg, off, len) in v.chunks() {
        out.extend_from_slice(&r.pages().0[pg][off..off + len]);
    }
    Some(out)
}

#[test]
fn pending_record_blocks_sending_and_freeing() {
    let mut r = RollbackRing::new(common::vec_pages(4), 1);
    let a = r.reserve(&Crc, write_hdr(0, 8), 4096).unwrap();
    let b = r.append(&Crc, Header::new(Kind::Flush), 0, |_| Ok(())).unwrap();
    assert_eq!((a.seq, b), (1, 2));
    assert!(r.is_pending(1));
    // The send cursor stops in front of the pending record, and the
    // published one behind it waits: the stream keeps its order.
    assert!(r.peek_send().is_none());
    r.advance_send();
    assert_eq!(r.send_seq(), 1);
    // An ack cannot free it (nor anything after it).
    assert_eq!(r.ack(5), 0);
    let d = payload(7, 4096);
    let crc = fill_raw(&mut r, 1, &d);
    r.publish(1, crc).unwrap();
    assert!(!r.is_pending(1));
    assert_eq!(r.publish(1, crc), Err(RingError::NotPending));
    let f = frame_at_send(&r).unwrap();
    let (h, p) = decode_frame(&Crc, &f).expect("published frame is sealed");
    assert_eq!((h.seq, h.sector, h.count), (1, 0, 8));
    assert_eq!(p, &d[..]);
}

#[test]
fn publishes_in_any_order_and_matches_append() {
    let mut r = RollbackRing::new(common::vec_pages(8), 1);
    let mut want = Vec::new();
    for i in 0..4u64 {
        let res = r.reserve(&Crc, write_hdr(i * 8, 8), 4096).unwrap();
        want.push((res.seq, payload(i + 1, 4096)));
    }
    // Publish 3, 2, 4 first: nothing may go before 1 is published.
    for &i in &[2usize, 1, 3] {
        let (seq, d) = &want[i];
        let crc = fill_raw(&mut r, *seq, d);
        r.publish(*seq, crc).unwrap();
        assert!(r.peek_send().is_none(), "sent past pending record 1");
    }
    let (seq, d) = &want[0];
    let crc = fill_raw(&mut r, *seq, d);
    r.publish(*seq, crc).unwrap();
    // Each frame is exactly what `append` would have made of the same
    // header and payload.
    let mut ref_ring = RollbackRing::new(common::vec_pages(8), 1);
    for (seq, d) in &want {
        let got = frame_at_send(&r).unwrap();
        ref_ring
            .append(&Crc, write_hdr((seq - 1) * 8, 8), d.len(), |w| w.write(d))
            .unwrap();
        assert_eq!(got, frame_at_send(&ref_ring).unwrap(), "record {seq}");
        r.advance_send();
        ref_ring.advance_send();
    }
    assert_eq!(r.ack(4), 4);
    assert!(r.is_empty());
}

#[test]
fn pending_slots_are_bounded() {
    let mut r = RollbackRing::new(common::vec_pages(2), 1);
    r.set_max_pending(2);
    let a = r.reserve(&Crc, write_hdr(0, 1), 512).unwrap();
    r.reserve(&Crc, write_hdr(1, 1), 512).unwrap();
    assert!(!r.can_reserve());
    assert_eq!(r.reserve(&Crc, write_hdr(2, 1), 512), Err(RingError::Busy));
    // A whole append needs no slot.
    assert!(r.append(&Crc, write_hdr(3, 1), 512, |w| w.write(&[1; 512])).is_ok());
    let crc = r.fill_reserved(&Crc, &a, |w| w.write(&[9; 512])).unwrap();
    r.publish(a.seq, crc).unwrap();
    assert!(r.can_reserve());
    assert_eq!(r.pending_records(), 1);
    // Never more than MAX_PENDING, whatever the cap asked.
    let mut r = RollbackRing::new(common::vec_pages(8), 1);
    r.set_max_pending(usize::MAX);
    for _ in 0..MAX_PENDING {
        assert!(r.reserve(&Crc, write_hdr(0, 1), 512).is_ok());
    }
    assert_eq!(r.reserve(&Crc, write_hdr(0, 1), 512), Err(RingError::Busy));
}

#[test]
fn skipped_pending_record_is_freed_only_once_published() {
    // Degraded mode skips every record appended so far, pending ones too:
    // the send cursor may pass it, but its bytes stay until published.
    let mut r = RollbackRing::new(common::vec_pages(2), 1);
    let a = r.reserve(&Crc, write_hdr(0, 8), 4096).unwrap();
    r.skip_to(r.next_seq()).unwrap();
    assert_eq!(r.ack(1), 0);
    assert_eq!(r.used_bytes(), r.capacity_bytes() - r.free_bytes());
    let free_before = r.free_bytes();
    assert!(free_before < PAGE_SIZE * 2);
    let crc = r.fill_reserved(&Crc, &a, |w| w.write(&[3; 4096])).unwrap();
    r.publish(a.seq, crc).unwrap();
    assert_eq!(r.ack(1), 1);
    assert!(r.is_empty());
}

#[test]
fn wrong_fill_length_is_refused() {
    let mut r = RollbackRing::new(common::vec_pages(2), 1);
    let a = r.reserve(&Crc, write_hdr(0, 1), 512).unwrap();
    assert_eq!(r.fill_reserved(&Crc, &a, |w| w.write(&[0; 100])), Err(RingError::LengthMismatch));
    assert_eq!(r.fill_reserved(&Crc, &a, |w| w.write(&[0; 600])), Err(RingError::LengthMismatch));
    assert!(r.is_pending(a.seq));
}

/// The kernel builds the source machine out of line into a box (its
/// 16 KiB stacks took a 13 KiB constructor frame before 0.8.1, and
/// crashed with the reservation table added), so its size is watched
/// here too: a big array belongs in caller storage, like the hot and
/// in-flight slots. 4,648 bytes at 0.8.1 (the ring's 32 reservation slots
/// are 768 of them).
#[test]
fn source_machine_stays_small() {
    use specmirror_core::transport::proto::hot::HotSlot;
    use specmirror_core::transport::proto::inflight::InflightSlot;
    use specmirror_core::transport::proto::source::Source;
    let n = std::mem::size_of::<Source<VecPages, Vec<HotSlot>, Vec<InflightSlot>>>();
    println!("size_of Source<VecPages, ..>: {n} bytes");
    assert!(n < 5120, "Source is {n} bytes");
}

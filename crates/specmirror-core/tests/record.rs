//! Frame codec: round trips, golden layout, and rejection of every
//! malformed input (mutation, truncation, extension, bad fields).

mod common;

use common::{frame, hello, payload, Crc};
use proptest::prelude::*;
use specmirror_core::log::record::*;

fn write_hdr(seq: u64, sector: u64, count: u32) -> Header {
    Header {
        kind: Kind::Write,
        flags: 0,
        seq,
        sector,
        count,
        len: count * 512,
    }
}

#[test]
fn crc_convention_is_standard_crc32c_and_chains() {
    assert_eq!(Crc.crc32c(0, b"123456789"), 0xE306_9283);
    assert_eq!(Crc.crc32c(Crc.crc32c(0, b"1234"), b"56789"), 0xE306_9283);
}

#[test]
fn header_layout_is_byte_exact() {
    let h = Header {
        kind: Kind::Write,
        flags: FLAG_FUA | FLAG_PREFLUSH,
        seq: 0x0102_0304_0506_0708,
        sector: 0x1112_1314_1516_1718,
        count: 1,
        len: 512,
    };
    let mut b = [0u8; HEADER_LEN];
    h.encode(&mut b);
    let expect: [u8; 40] = [
        0x53, 0x4D, 0x52, 0x31, // magic "SMR1"
        4, 0x04, 0x03, 0x00, // version, kind, flags
        8, 7, 6, 5, 4, 3, 2, 1, // seq
        0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, // sector
        1, 0, 0, 0, // count
        0, 2, 0, 0, // len
        0, 0, 0, 0, // crc (zero before sealing)
        0, 0, 0, 0, // reserved
    ];
    assert_eq!(b, expect);
    let f = frame(&h, &[0u8; 512]);
    let crc = Crc.crc32c(Crc.crc32c(0, &expect), &[0u8; 512]);
    assert_eq!(&f[32..36], &crc.to_le_bytes());
    assert_eq!(decode_frame(&Crc, &f), Ok((h, &[0u8; 512][..])));
}

#[test]
fn kinds_round_trip_and_direction() {
    for v in 0..=255u8 {
        if let Some(k) = Kind::from_u8(v) {
            assert_eq!(k as u8, v);
            assert_eq!(k.is_from_source(), v < 0x80);
        }
    }
    assert_eq!((0..=255u8).filter_map(Kind::from_u8).count(), 17);
    // The keepalive is the source's.
    assert_eq!(Kind::from_u8(0x08), Some(Kind::Ping));
    assert!(Kind::Ping.is_from_source() && !Kind::Ping.is_data());
    // So are the sync's marks, which carry no data and no payload.
    assert_eq!(Kind::from_u8(0x09), Some(Kind::Sync));
    assert!(Kind::Sync.is_from_source() && !Kind::Sync.is_data());
    // Verify: the request names a range and carries nothing; the answer
    // carries a SHA-256.
    assert_eq!(Kind::from_u8(0x0A), Some(Kind::DigestReq));
    assert_eq!(Kind::from_u8(0x87), Some(Kind::Digest));
    assert!(Kind::DigestReq.has_range() && !Kind::DigestReq.is_data());
    let mut d = Header::new(Kind::DigestReq);
    for (count, len, ok) in [(8, 0, true), (0, 0, false), (MAX_WRITE_SECTORS + 1, 0, false), (8, 32, false)] {
        d.count = count;
        d.len = len;
        assert_eq!(d.validate().is_ok(), ok, "DIGEST_REQ count {count} len {len}");
    }
    let mut a = Header::new(Kind::Digest);
    for (count, len, ok) in [(0, 32, true), (1, 32, true), (2, 32, false), (0, 0, false)] {
        a.count = count;
        a.len = len;
        assert_eq!(a.validate().is_ok(), ok, "DIGEST count {count} len {len}");
    }
    let mut h = Header::new(Kind::Sync);
    for (count, len, ok) in [(SYNC_START, 0, true), (SYNC_DONE, 0, true), (0, 0, false), (3, 0, false), (SYNC_DONE, 8, false)] {
        h.count = count;
        h.len = len;
        assert_eq!(h.validate().is_ok(), ok, "count {count} len {len}");
    }
}

#[test]
fn specific_rejections() {
    let good = frame(&write_hdr(1, 8, 2), &payload(1, 1024));
    let mut f = good.clone();
    f[0] ^= 1;
    assert_eq!(decode_frame(&Crc, &f), Err(DecodeError::BadMagic));
    // Version 1 (before keepalives and aligned payloads) and any other.
    for v in [0u8, 1, VERSION + 1, 0xff] {
        let mut f = good.clone();
        f[4] = v;
        assert_eq!(decode_frame(&Crc, &f), Err(DecodeError::BadVersion), "{v}");
    }
    let mut f = good.clone();
    f[5] = 0x7f;
    assert_eq!(decode_frame(&Crc, &f), Err(DecodeError::BadKind));
    let mut f = good.clone();
    f[6] = 0x80; // unknown flag
    assert_eq!(decode_frame(&Crc, &f), Err(DecodeError::BadVersion));
    let mut f = good.clone();
    f[36] = 1; // reserved
    assert_eq!(decode_frame(&Crc, &f), Err(DecodeError::BadVersion));
    let mut f = good.clone();
    f[28..32].copy_from_slice(&((MAX_PAYLOAD as u32) + 512).to_le_bytes());
    assert_eq!(decode_header(&f), Err(DecodeError::TooLong));
    let mut f = good.clone();
    f[24] = 3; // count 3 but len 1024
    assert_eq!(decode_frame(&Crc, &f), Err(DecodeError::BadLength));
    let mut f = good.clone();
    f[100] ^= 0x40;
    assert_eq!(decode_frame(&Crc, &f), Err(DecodeError::BadCrc));
    assert_eq!(decode_frame(&Crc, &good[..39]), Err(DecodeError::Short));
    assert_eq!(decode_frame(&Crc, &good[..100]), Err(DecodeError::Short));
    let mut f = good.clone();
    f.push(0);
    assert_eq!(decode_frame(&Crc, &f), Err(DecodeError::Trailing));
    // sector + count overflowing u64 is malformed.
    let mut h = write_hdr(1, u64::MAX, 1);
    assert_eq!(h.validate(), Err(DecodeError::BadLength));
    h.kind = Kind::Discard;
    h.len = 0;
    assert_eq!(h.validate(), Err(DecodeError::BadLength));
    // zero-length data records are malformed.
    assert_eq!(write_hdr(1, 0, 0).validate(), Err(DecodeError::BadLength));
    // payload on a record kind that carries none.
    let mut h = Header::new(Kind::Ack);
    h.len = 8;
    assert_eq!(h.validate(), Err(DecodeError::BadLength));
    // a CHALLENGE carries exactly its 16-byte nonce.
    let mut h = Header::new(Kind::Challenge);
    for len in [0u32, 15, 17, 88] {
        h.len = len;
        assert_eq!(h.validate(), Err(DecodeError::BadLength));
    }
    h.len = CHALLENGE_LEN as u32;
    assert_eq!(h.validate(), Ok(()));
}

#[test]
fn encoder_refuses_what_decoder_rejects() {
    let h = write_hdr(1, 0, 1);
    let mut out = vec![0u8; 600];
    assert_eq!(
        encode_frame(&Crc, &h, &[0u8; 511], &mut out),
        Err(EncodeError::LengthMismatch)
    );
    assert_eq!(
        encode_frame(&Crc, &h, &[0u8; 512], &mut out[..551]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(
        encode_frame(&Crc, &Header { count: 3, ..h }, &[0u8; 512], &mut out),
        Err(EncodeError::Invalid(DecodeError::BadLength))
    );
    assert_eq!(encode_frame(&Crc, &h, &[0u8; 512], &mut out), Ok(552));
}

#[test]
fn hello_round_trip_and_rejections() {
    let hl = hello();
    let b = hl.to_bytes();
    assert_eq!(b.len(), HELLO_LEN);
    assert_eq!(Hello::decode(&b), Ok(hl));
    let mut buf = [0u8; 200];
    assert_eq!(hl.encode(&mut buf), Ok(HELLO_LEN));
    assert_eq!(&buf[..HELLO_LEN], &b[..]);
    assert_eq!(hl.encode(&mut buf[..167]), Err(EncodeError::BufferTooSmall));
    assert_eq!(Hello::decode(&b[..167]), Err(DecodeError::Short));
    assert_eq!(Hello::decode(&buf[..169]), Err(DecodeError::Trailing));
    // Bytes 84..88: the logical block size (once reserved).
    let mut r = b;
    r[85] = 0x10;
    assert_eq!(Hello::decode(&r).map(|h| h.block_size), Ok(4096));
    let bs = Hello {
        block_size: 512,
        ..hl
    }
    .to_bytes();
    assert_eq!(&bs[84..88], &512u32.to_le_bytes());
    // Field placement pinned (see Documentation/wire-protocol.rst).
    assert_eq!(&b[0..4], &1u32.to_le_bytes());
    assert_eq!(&b[4..8], &2048u32.to_le_bytes());
    assert_eq!(&b[8..16], &(1u64 << 21).to_le_bytes());
    assert_eq!(&b[24..32], &42u64.to_le_bytes());
    assert_eq!(&b[80..84], &5u32.to_le_bytes());
    // Bytes 88..168: the generations (current, bitmap, history[8]).
    assert_eq!(&b[88..96], &0x1111u64.to_le_bytes());
    assert_eq!(&b[96..104], &0x2222u64.to_le_bytes());
    assert_eq!(&b[104..112], &0x33u64.to_le_bytes());
    assert_eq!(&b[112..120], &0x44u64.to_le_bytes());
    assert_eq!(&b[160..168], &0u64.to_le_bytes());
    // A HELLO frame carries exactly one Hello.
    let mut h = Header::new(Kind::Hello);
    h.len = HELLO_LEN as u32;
    let f = frame(&h, &b);
    let (dh, p) = decode_frame(&Crc, &f).unwrap();
    assert_eq!(dh, h);
    assert_eq!(Hello::decode(p), Ok(hl));
}

/// Any valid (header, payload) pair.
fn arb_record() -> impl Strategy<Value = (Header, Vec<u8>)> {
    let kinds = prop::sample::select((0..=255u8).filter_map(Kind::from_u8).collect::<Vec<_>>());
    (
        kinds,
        any::<u64>(),
        any::<u64>(),
        1u32..=9,
        any::<u32>(),
        0u16..4,
        any::<u64>(),
    )
        .prop_map(|(kind, seq, sector, sectors, other, flags, seed)| {
            let mut h = Header::new(kind);
            h.seq = seq;
            h.flags = flags;
            let p = match kind {
                Kind::Write => {
                    h.sector = sector >> 1;
                    h.count = sectors;
                    h.len = sectors * 512;
                    payload(seed, h.len as usize)
                }
                Kind::Discard | Kind::WriteZeroes => {
                    h.sector = sector >> 1;
                    h.count = other.max(1);
                    vec![]
                }
                Kind::Hello | Kind::HelloReply => {
                    let mut hl = hello();
                    hl.last_applied = seed;
                    h.len = HELLO_LEN as u32;
                    hl.to_bytes().to_vec()
                }
                Kind::Challenge => {
                    h.len = CHALLENGE_LEN as u32;
                    payload(seed, CHALLENGE_LEN)
                }
                Kind::Sync => {
                    h.sector = sector;
                    h.count = if other & 1 == 0 { SYNC_START } else { SYNC_DONE };
                    vec![]
                }
                Kind::DigestReq => {
                    h.sector = sector >> 1;
                    h.count = sectors;
                    vec![]
                }
                Kind::Digest => {
                    h.count = other & 1;
                    h.len = DIGEST_LEN as u32;
                    payload(seed, DIGEST_LEN)
                }
                _ => {
                    h.sector = sector;
                    h.count = other;
                    vec![]
                }
            };
            (h, p)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip((h, p) in arb_record()) {
        let f = frame(&h, &p);
        prop_assert_eq!(f.len(), h.frame_len());
        let (dh, dp) = decode_frame(&Crc, &f).unwrap();
        prop_assert_eq!(dh, h);
        prop_assert_eq!(dp, &p[..]);
        let (hh, crc) = decode_header(&f).unwrap();
        prop_assert_eq!(hh, h);
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&f[..HEADER_LEN]);
        prop_assert_eq!(frame_crc(&Crc, &hb, &p), crc);
    }

    #[test]
    fn every_single_byte_mutation_is_rejected(
        (h, p) in arb_record(), pos in any::<prop::sample::Index>(), delta in 1u8..=255,
    ) {
        let mut f = frame(&h, &p);
        let i = pos.index(f.len());
        f[i] ^= delta;
        prop_assert!(decode_frame(&Crc, &f).is_err(), "accepted mutation at {}", i);
    }

    #[test]
    fn every_truncation_and_extension_is_rejected(
        (h, p) in arb_record(), cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let f = frame(&h, &p);
        let n = cut.index(f.len());
        prop_assert_eq!(decode_frame(&Crc, &f[..n]), Err(DecodeError::Short));
        let mut g = f.clone();
        g.extend_from_slice(&extra);
        prop_assert_eq!(decode_frame(&Crc, &g), Err(DecodeError::Trailing));
        // The streaming header decoder ignores what follows the header.
        prop_assert_eq!(decode_header(&g).map(|x| x.0), Ok(h));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_frames_reencode(
        bytes in prop::collection::vec(any::<u8>(), 0..700),
    ) {
        let _ = decode_header(&bytes);
        let _ = Hello::decode(&bytes);
        if let Ok((h, p)) = decode_frame(&Crc, &bytes) {
            prop_assert_eq!(frame(&h, p), bytes);
        }
    }

    #[test]
    fn header_with_valid_magic_never_panics(
        mut bytes in prop::collection::vec(any::<u8>(), 40..700), kind in any::<u8>(),
    ) {
        // Get past the magic/version checks so the field validation runs.
        bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[4] = VERSION;
        bytes[5] = kind;
        bytes[36..40].fill(0);
        if let Ok((h, _)) = decode_header(&bytes) {
            prop_assert!(h.validate().is_ok());
            prop_assert!(h.len as usize <= MAX_PAYLOAD);
        }
        if let Ok((h, p)) = decode_frame(&Crc, &bytes) {
            prop_assert_eq!(frame(&h, p), bytes);
        }
    }
}

#[test]
fn exhaustive_single_byte_mutations_of_sample_frames() {
    let mut lock = Header::new(Kind::Lock);
    lock.seq = 9;
    lock.sector = 3;
    let mut hl = Header::new(Kind::HelloReply);
    hl.len = HELLO_LEN as u32;
    let mut ch = Header::new(Kind::Challenge);
    ch.len = CHALLENGE_LEN as u32;
    let samples = [
        frame(&write_hdr(5, 100, 1), &payload(5, 512)),
        frame(&lock, &[]),
        frame(&hl, &hello().to_bytes()),
        frame(&ch, &[0x5a; CHALLENGE_LEN]),
    ];
    let mut tried = 0;
    for f in &samples {
        for i in 0..f.len() {
            for d in 1..=255u8 {
                let mut g = f.clone();
                g[i] ^= d;
                assert!(
                    decode_frame(&Crc, &g).is_err(),
                    "accepted byte {i} ^ {d:#x}"
                );
                tried += 1;
            }
        }
    }
    assert_eq!(tried, (552 + 40 + 208 + 56) * 255);
}

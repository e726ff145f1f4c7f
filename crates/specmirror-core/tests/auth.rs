//! Handshake authentication: SHA-256 (FIPS 180-2 vectors), HMAC-SHA256
//! (RFC 4231), the CHALLENGE codec and the HELLO MAC scheme.

mod common;

use common::{frame, hello, payload, Crc};
use proptest::prelude::*;
use specmirror_core::log::record::{
    decode_frame, DecodeError, EncodeError, Header, Hello, Kind, HELLO_LEN,
};
use specmirror_core::transport::proto::auth::*;
use specmirror_core::transport::proto::encode_hello;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new(key);
    m.update(data);
    m.finish().to_vec()
}

#[test]
fn sha256_fips_180_2_vectors() {
    assert_eq!(
        sha(b"abc"),
        unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(
        sha(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        unhex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    );
    // One million 'a', fed in pieces that straddle block boundaries.
    let mut h = Sha256::new();
    let chunk = [b'a'; 1000];
    for i in 0..1000 {
        let (a, b) = chunk.split_at(i % 97);
        h.update(a);
        h.update(b);
    }
    assert_eq!(
        h.finish().to_vec(),
        unhex("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    );
    assert_eq!(
        sha(b""),
        unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
}

#[test]
fn sha256_every_padding_length() {
    // The digests of messages of 0..=130 bytes (every padding case: room
    // for the length in the last block or not, one and two extra blocks),
    // hashed together; the value comes from an independent SHA-256.
    let mut acc = Sha256::new();
    for n in 0..=130usize {
        let m: Vec<u8> = (0..n).map(|i| ((i * 7 + n) & 0xff) as u8).collect();
        acc.update(&Sha256::digest(&m));
    }
    assert_eq!(
        acc.finish().to_vec(),
        unhex("969b9f993f9c27e8424a46288c5b7999eee502a7befa92cad6cfef1034d76c51")
    );
}

#[test]
fn hmac_sha256_rfc_4231() {
    let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            (1..=25).collect(),
            vec![0xcd; 50],
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ),
        // Test case 5 (truncated output) does not apply: tags are 32 bytes.
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            vec![0xaa; 131],
            b"This is a test using a larger than block-size key and a larger \
              than block-size data. The key needs to be hashed before being \
              used by the HMAC algorithm."
                .to_vec(),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (i, (key, data, tag)) in cases.iter().enumerate() {
        assert_eq!(hmac(key, data), unhex(tag), "case {i}");
        // Streaming, one byte at a time, gives the same tag.
        let mut m = HmacSha256::new(key);
        for b in data {
            m.update(&[*b]);
        }
        assert_eq!(m.finish().to_vec(), unhex(tag), "case {i}, streamed");
    }
    // A key of exactly one block is used as it is, not hashed.
    assert_ne!(
        hmac(&[0xaa; 64], b"x"),
        hmac(&Sha256::digest(&[0xaa; 64]), b"x")
    );
    assert_eq!(
        hmac(&[0xaa; 65], b"x"),
        hmac(&Sha256::digest(&[0xaa; 65]), b"x")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sha256_split_anywhere(seed in any::<u64>(), len in 0usize..300, cuts in prop::collection::vec(0usize..300, 0..6)) {
        let m = payload(seed, len);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
        cuts.sort_unstable();
        let mut h = Sha256::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([len]) {
            h.update(&m[at..c]);
            at = c;
        }
        prop_assert_eq!(h.finish(), Sha256::digest(&m));
    }
}

#[test]
fn ct_eq_compares_every_byte() {
    let a = [7u8; 32];
    assert!(ct_eq(&a, &a));
    for i in 0..32 {
        for bit in 0..8 {
            let mut b = a;
            b[i] ^= 1 << bit;
            assert!(!ct_eq(&a, &b));
        }
    }
}

const SECRET: &[u8] = b"Sw0rdf1sh";
const NONCE_T: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

#[test]
fn hello_mac_golden() {
    // Pins the MAC input (label || peer nonce || hello with a zero mac);
    // the values come from an independent HMAC-SHA256.
    let mut h = hello();
    h.mac = [0xff; 32]; // ignored
    assert_eq!(
        hello_mac(SECRET, MacLabel::Hello, &NONCE_T, &h).to_vec(),
        unhex("acfa7bb8e658ad13d865c25cc225bc986e80c5be5acd7c70472acd3fadc68948")
    );
    assert_eq!(
        hello_mac(SECRET, MacLabel::Reply, &NONCE_T, &h).to_vec(),
        unhex("2476f1b879aa06be68ddc04faa1fa69e63eb73f12e801cb4f2780d4904bf19c5")
    );
}

#[test]
fn signed_hello_verifies_and_survives_the_wire() {
    for label in [MacLabel::Hello, MacLabel::Reply] {
        let mut h = hello();
        sign(Some(SECRET), label, &NONCE_T, &mut h);
        assert_ne!(h.mac, [0; 32]);
        assert!(verify(Some(SECRET), label, &NONCE_T, &h));
        let mut out = [0u8; 256];
        let n = encode_hello(&Crc, &h, label == MacLabel::Reply, &mut out).unwrap();
        let (_, p) = decode_frame(&Crc, &out[..n]).unwrap();
        let got = Hello::decode(p).unwrap();
        assert!(verify(Some(SECRET), label, &NONCE_T, &got));
    }
}

#[test]
fn any_flipped_bit_fails() {
    let mut h = hello();
    sign(Some(SECRET), MacLabel::Hello, &NONCE_T, &mut h);
    let b = h.to_bytes();
    let mut checked = 0;
    for i in 0..HELLO_LEN {
        for bit in 0..8 {
            let mut f = b;
            f[i] ^= 1 << bit;
            // Every byte is a field now (block_size took the reserved
            // ones): every flip decodes, and the MAC must catch it.
            let g = Hello::decode(&f).unwrap();
            assert!(
                !verify(Some(SECRET), MacLabel::Hello, &NONCE_T, &g),
                "byte {i} bit {bit}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, HELLO_LEN * 8);
    for i in 0..16 {
        for bit in 0..8 {
            let mut n = NONCE_T;
            n[i] ^= 1 << bit;
            assert!(!verify(Some(SECRET), MacLabel::Hello, &n, &h));
        }
    }
}

#[test]
fn wrong_secret_zero_mac_and_label_fail() {
    let mut h = hello();
    sign(Some(SECRET), MacLabel::Hello, &NONCE_T, &mut h);
    assert!(!verify(Some(b"Sw0rdf1sH"), MacLabel::Hello, &NONCE_T, &h));
    assert!(!verify(Some(b"Sw0rdf1sh "), MacLabel::Hello, &NONCE_T, &h));
    assert!(!verify(Some(b""), MacLabel::Hello, &NONCE_T, &h));
    // Label separation: a HELLO's MAC is no HELLO_REPLY's, and back.
    assert!(!verify(Some(SECRET), MacLabel::Reply, &NONCE_T, &h));
    let mut r = hello();
    sign(Some(SECRET), MacLabel::Reply, &NONCE_T, &mut r);
    assert!(!verify(Some(SECRET), MacLabel::Hello, &NONCE_T, &r));
    // A peer without a secret sends a zero MAC: refused by a side with one.
    let mut z = hello();
    sign(None, MacLabel::Hello, &NONCE_T, &mut z);
    assert_eq!(z.mac, [0; 32]);
    assert!(!verify(Some(SECRET), MacLabel::Hello, &NONCE_T, &z));
}

#[test]
fn no_secret_signs_zero_and_checks_nothing() {
    let mut h = hello();
    h.mac = [0x5a; 32];
    sign(None, MacLabel::Reply, &NONCE_T, &mut h);
    assert_eq!(h.mac, [0; 32]);
    assert!(verify(None, MacLabel::Reply, &NONCE_T, &h));
    h.mac = [0x5a; 32];
    assert!(verify(None, MacLabel::Hello, &[0; 16], &h));
}

#[test]
fn challenge_round_trip_and_layout() {
    let mut out = [0u8; CHALLENGE_FRAME_LEN];
    assert_eq!(
        encode_challenge(&Crc, &NONCE_T, &mut out),
        Ok(CHALLENGE_FRAME_LEN)
    );
    assert_eq!(CHALLENGE_FRAME_LEN, 56);
    assert_eq!(out[5], 0x86);
    assert_eq!(&out[28..32], &16u32.to_le_bytes());
    assert_eq!(&out[40..], &NONCE_T[..]);
    assert_eq!(decode_challenge(&Crc, &out), Ok(NONCE_T));
    let (h, p) = decode_frame(&Crc, &out).unwrap();
    assert_eq!(h.kind, Kind::Challenge);
    assert!(!h.kind.is_from_source());
    assert_eq!(p, &NONCE_T[..]);
    // Too small a buffer, a truncated or extended frame, a flipped bit.
    assert_eq!(
        encode_challenge(&Crc, &NONCE_T, &mut [0u8; 55]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(decode_challenge(&Crc, &out[..55]), Err(DecodeError::Short));
    let mut long = out.to_vec();
    long.push(0);
    assert_eq!(decode_challenge(&Crc, &long), Err(DecodeError::Trailing));
    for i in 0..out.len() {
        let mut f = out;
        f[i] ^= 0x10;
        assert!(decode_challenge(&Crc, &f).is_err(), "byte {i}");
    }
}

#[test]
fn challenge_decoder_wants_a_challenge() {
    let mut h = Header::new(Kind::HelloReply);
    h.len = HELLO_LEN as u32;
    let reply = frame(&h, &hello().to_bytes());
    assert_eq!(decode_challenge(&Crc, &reply), Err(DecodeError::BadKind));
}

//! Raw bytes into the frame decoders: they must never panic, and whatever
//! decodes must re-encode to exactly the same bytes (no two encodings of
//! one record, no ignored bits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use specmirror_core::log::record::{
    decode_frame, decode_header, encode_frame, Crc32c, Hello, HEADER_LEN, MAGIC, VERSION,
};
use specmirror_core::transport::proto::auth::{
    decode_challenge, encode_challenge, verify, MacLabel, CHALLENGE_FRAME_LEN,
};

struct Crc;

impl Crc32c for Crc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((h, _)) = decode_header(data) {
        assert!(h.validate().is_ok());
    }
    if let Ok(hello) = Hello::decode(data) {
        // A hello from nowhere verifies only without a secret.
        assert!(verify(None, MacLabel::Hello, &[0; 16], &hello));
        assert!(!verify(
            Some(b"fuzz"),
            MacLabel::Hello,
            &hello.nonce,
            &hello
        ));
    }
    if let Ok(nonce) = decode_challenge(&Crc, data) {
        let mut out = [0u8; CHALLENGE_FRAME_LEN];
        let n = encode_challenge(&Crc, &nonce, &mut out).expect("a nonce always encodes");
        assert_eq!(decode_challenge(&Crc, &out[..n]), Ok(nonce));
    }
    if let Ok((h, payload)) = decode_frame(&Crc, data) {
        let mut out = vec![0u8; HEADER_LEN + payload.len()];
        let n = encode_frame(&Crc, &h, payload, &mut out).expect("decoded frame re-encodes");
        assert_eq!(&out[..n], data);
        if let Ok(hello) = Hello::decode(payload) {
            assert_eq!(&hello.to_bytes()[..], payload);
        }
    }
    // Also fuzz with a valid-looking prefix so the field checks and the CRC
    // path are reached, not only the magic check: patch magic/version and
    // seal a correct CRC, then the frame must decode iff its fields do.
    if data.len() >= HEADER_LEN {
        let mut f = data.to_vec();
        f[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        f[4] = VERSION;
        f[36..40].fill(0);
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&f[..HEADER_LEN]);
        let crc = specmirror_core::log::record::frame_crc(&Crc, &hb, &f[HEADER_LEN..]);
        f[32..36].copy_from_slice(&crc.to_le_bytes());
        match (decode_header(&f), decode_frame(&Crc, &f)) {
            (Ok((h, _)), Ok((h2, p))) => {
                assert_eq!(h, h2);
                assert_eq!(p, &f[HEADER_LEN..]);
            }
            (Ok((h, _)), Err(e)) => {
                // Only a length disagreement with the buffer may fail now.
                assert!(f.len() != h.frame_len(), "{e:?}");
            }
            (Err(_), r) => assert!(r.is_err()),
        }
    }
});

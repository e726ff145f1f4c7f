//! Handshake authentication (pure core): SHA-256, HMAC-SHA256, the
//! CHALLENGE record and the HELLO / HELLO_REPLY MAC scheme.
//!
//! Everything here is `core` only, allocates nothing and never generates
//! randomness: the kernel glue draws the nonces itself and passes them in.
//!
//! # The scheme
//!
//! (Also in `Documentation/wire-protocol.rst`, "Authentication".)
//!
//! 1. On every accepted connection the target first sends
//!    `CHALLENGE{nonce_t}` ([`encode_challenge`]), a fresh 16-byte random
//!    `nonce_t`, whether it has a secret or not.
//! 2. The source reads it ([`decode_challenge`]) and answers with its HELLO,
//!    whose `nonce` is a fresh random `nonce_s` and whose `mac` is
//!    `HMAC-SHA256(secret, "specmirror hello v1" || nonce_t || hello)`, the
//!    hello's 168 bytes taken with the `mac` field zeroed ([`sign`] with
//!    [`MacLabel::Hello`]).
//! 3. The target checks that MAC when it has a secret ([`verify`]) and
//!    answers HELLO_REPLY, whose `mac` is
//!    `HMAC-SHA256(secret, "specmirror reply v1" || nonce_s || reply)`, the
//!    reply's bytes again with the `mac` field zeroed ([`MacLabel::Reply`]).
//!    The reply's `nonce` carries `nonce_t` again (covered by the MAC, not
//!    checked by the source).
//! 4. The source checks the reply's MAC when it has a secret, before it
//!    looks at anything else in the reply.
//!
//! Without a secret both MACs are all zero and nobody checks them. A side
//! *with* a secret refuses a peer whose MAC does not verify, an all-zero one
//! included: a target refuses with `Refusal::Auth` (and still signs that
//! reply), a source treats the reply as an `Auth` refusal. The two labels
//! have the same length and differ, so a HELLO's MAC never verifies as a
//! HELLO_REPLY's (reflection), and the fresh nonces make a recorded MAC
//! useless on another connection (replay). The MACs authenticate the
//! handshake only: the records that follow carry a CRC, not a MAC.

use crate::log::record::{
    decode_frame, encode_frame, Crc32c, DecodeError, EncodeError, Header, Hello, Kind,
    CHALLENGE_LEN, HEADER_LEN,
};

/// Nonce size in bytes (CHALLENGE payload and `Hello::nonce`).
pub const NONCE_LEN: usize = CHALLENGE_LEN;
/// SHA-256 digest and HMAC-SHA256 tag size in bytes (`Hello::mac`).
pub const DIGEST_LEN: usize = 32;
/// SHA-256 block size in bytes; HMAC keys longer than this are hashed first.
pub const BLOCK_LEN: usize = 64;
/// Size of an encoded CHALLENGE frame.
pub const CHALLENGE_FRAME_LEN: usize = HEADER_LEN + CHALLENGE_LEN;

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
#[rustfmt::skip]
const H0: [u32; 8] = [
    0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a,
    0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
];

/// SHA-256 round constants (FIPS 180-4, 4.2.2).
#[rustfmt::skip]
const K: [u32; 64] = [
    0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
    0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
    0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
    0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
    0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
    0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
    0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
    0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
];

/// Padding source: a one bit, then zeros (at most a block is ever taken).
const PAD: [u8; BLOCK_LEN] = {
    let mut p = [0u8; BLOCK_LEN];
    p[0] = 0x80;
    p
};

/// Where the 8-byte message length starts in the last block.
const LEN_OFFSET: usize = BLOCK_LEN - 8;

/// One SHA-256 compression of `block` into `state`. Every index is bounded
/// by a constant loop range, never by input.
fn compress(state: &mut [u32; 8], block: &[u8; BLOCK_LEN]) {
    let mut w = [0u32; 64];
    for (wi, b) in w.iter_mut().zip(block.chunks_exact(4)) {
        let mut word = [0u8; 4];
        word.copy_from_slice(b);
        *wi = u32::from_be_bytes(word);
    }
    for i in 16..64 {
        let (w2, w15) = (w[i - 2], w[i - 15]);
        let s0 = w15.rotate_right(7) ^ w15.rotate_right(18) ^ (w15 >> 3);
        let s1 = w2.rotate_right(17) ^ w2.rotate_right(19) ^ (w2 >> 10);
        w[i] = w[i - 16]
            .wrapping_add(s0)
            .wrapping_add(w[i - 7])
            .wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for (k, wi) in K.iter().zip(w.iter()) {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(*k)
            .wrapping_add(*wi);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        h = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

/// Streaming SHA-256 (FIPS 180-4): [`Sha256::new`], any number of
/// [`Sha256::update`] calls, then [`Sha256::finish`].
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    /// Bytes of a block not compressed yet (the first `fill`).
    buf: [u8; BLOCK_LEN],
    fill: usize,
    /// Message length so far in bytes (modulo 2^64, as the padding wants
    /// the bit length modulo 2^64).
    len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// An empty hash.
    pub fn new() -> Sha256 {
        Sha256 {
            state: H0,
            buf: [0; BLOCK_LEN],
            fill: 0,
            len: 0,
        }
    }

    /// Hashes `data` after everything given so far.
    pub fn update(&mut self, data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        let mut rest = data;
        if self.fill > 0 {
            let take = (BLOCK_LEN - self.fill).min(rest.len());
            let (head, tail) = rest.split_at(take);
            if let Some(d) = self.buf.get_mut(self.fill..self.fill + take) {
                d.copy_from_slice(head);
            }
            self.fill += take;
            rest = tail;
            if self.fill < BLOCK_LEN {
                return;
            }
            compress(&mut self.state, &self.buf);
            self.fill = 0;
        }
        let mut blocks = rest.chunks_exact(BLOCK_LEN);
        for b in &mut blocks {
            if let Ok(block) = <&[u8; BLOCK_LEN]>::try_from(b) {
                compress(&mut self.state, block);
            }
        }
        let tail = blocks.remainder();
        if let Some(d) = self.buf.get_mut(..tail.len()) {
            d.copy_from_slice(tail);
        }
        self.fill = tail.len();
    }

    /// Pads, and returns the digest.
    pub fn finish(mut self) -> [u8; DIGEST_LEN] {
        let bits = self.len.wrapping_mul(8);
        // One 0x80 byte and zeros up to the length field, in this block or
        // (no room for the length) the next.
        let pad = if self.fill < LEN_OFFSET {
            LEN_OFFSET - self.fill
        } else {
            BLOCK_LEN + LEN_OFFSET - self.fill
        };
        self.update(PAD.get(..pad).unwrap_or(&[]));
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; DIGEST_LEN];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }

    /// SHA-256 of `data` in one call.
    pub fn digest(data: &[u8]) -> [u8; DIGEST_LEN] {
        let mut h = Sha256::new();
        h.update(data);
        h.finish()
    }
}

/// Streaming HMAC-SHA256 (RFC 2104): [`HmacSha256::new`] with the key,
/// [`HmacSha256::update`] with the message, then [`HmacSha256::finish`].
#[derive(Clone)]
pub struct HmacSha256 {
    inner: Sha256,
    outer: Sha256,
}

impl HmacSha256 {
    /// Starts a MAC under `key`; a key longer than [`BLOCK_LEN`] bytes is
    /// replaced by its SHA-256 first (RFC 2104, section 2).
    pub fn new(key: &[u8]) -> HmacSha256 {
        let mut k = [0u8; BLOCK_LEN];
        if key.len() > BLOCK_LEN {
            let d = Sha256::digest(key);
            if let Some(dst) = k.get_mut(..DIGEST_LEN) {
                dst.copy_from_slice(&d);
            }
        } else if let Some(dst) = k.get_mut(..key.len()) {
            dst.copy_from_slice(key);
        }
        let mut ipad = [0x36u8; BLOCK_LEN];
        let mut opad = [0x5cu8; BLOCK_LEN];
        for ((i, o), kb) in ipad.iter_mut().zip(opad.iter_mut()).zip(k) {
            *i ^= kb;
            *o ^= kb;
        }
        let mut inner = Sha256::new();
        inner.update(&ipad);
        let mut outer = Sha256::new();
        outer.update(&opad);
        HmacSha256 { inner, outer }
    }

    /// MACs `data` after everything given so far.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// Returns the tag.
    pub fn finish(self) -> [u8; DIGEST_LEN] {
        let mut outer = self.outer;
        outer.update(&self.inner.finish());
        outer.finish()
    }
}

/// Compares two tags in time independent of where (or whether) they differ.
pub fn ct_eq(a: &[u8; DIGEST_LEN], b: &[u8; DIGEST_LEN]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    // Keeps the compiler from turning the loop into an early-exit compare.
    core::hint::black_box(diff) == 0
}

/// Which handshake message a MAC is for; each has its own label, so a MAC
/// computed for one never verifies as the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacLabel {
    /// The source's HELLO, answering the target's CHALLENGE nonce.
    Hello,
    /// The target's HELLO_REPLY, answering the HELLO's nonce.
    Reply,
}

impl MacLabel {
    /// The label bytes that start the MAC input (both 19 bytes long).
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            MacLabel::Hello => b"specmirror hello v1",
            MacLabel::Reply => b"specmirror reply v1",
        }
    }
}

/// `HMAC-SHA256(secret, label || peer_nonce || hello bytes)`, the hello
/// serialized with its `mac` field zeroed (its current `mac` is ignored).
/// `peer_nonce` is the nonce the *other* side sent: the CHALLENGE's for a
/// HELLO, the HELLO's for a HELLO_REPLY.
pub fn hello_mac(
    secret: &[u8],
    label: MacLabel,
    peer_nonce: &[u8; NONCE_LEN],
    hello: &Hello,
) -> [u8; DIGEST_LEN] {
    let mut h = *hello;
    h.mac = [0; DIGEST_LEN];
    let mut m = HmacSha256::new(secret);
    m.update(label.as_bytes());
    m.update(peer_nonce);
    m.update(&h.to_bytes());
    m.finish()
}

/// Sets `hello.mac`: [`hello_mac`] under `secret`, or all zero without one.
/// Sign last: the MAC covers every other field.
pub fn sign(
    secret: Option<&[u8]>,
    label: MacLabel,
    peer_nonce: &[u8; NONCE_LEN],
    hello: &mut Hello,
) {
    hello.mac = match secret {
        Some(s) => hello_mac(s, label, peer_nonce, hello),
        None => [0; DIGEST_LEN],
    };
}

/// Checks a received hello's MAC. Without a secret there is nothing to
/// check (true, whatever the MAC); with one, the MAC must equal
/// [`hello_mac`] (compared in constant time), so an all-zero MAC fails.
/// `Some(&[])` is an (empty) secret, not "no secret".
pub fn verify(
    secret: Option<&[u8]>,
    label: MacLabel,
    peer_nonce: &[u8; NONCE_LEN],
    hello: &Hello,
) -> bool {
    match secret {
        Some(s) => ct_eq(&hello_mac(s, label, peer_nonce, hello), &hello.mac),
        None => true,
    }
}

/// Encodes a CHALLENGE frame carrying `nonce` into `out` (at least
/// [`CHALLENGE_FRAME_LEN`] bytes); returns its length.
pub fn encode_challenge(
    c: &impl Crc32c,
    nonce: &[u8; NONCE_LEN],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut h = Header::new(Kind::Challenge);
    h.len = CHALLENGE_LEN as u32;
    encode_frame(c, &h, nonce, out)
}

/// Decodes a buffer holding exactly one CHALLENGE frame; returns its nonce.
/// Any other kind is [`DecodeError::BadKind`].
pub fn decode_challenge(c: &impl Crc32c, frame: &[u8]) -> Result<[u8; NONCE_LEN], DecodeError> {
    let (h, payload) = decode_frame(c, frame)?;
    if h.kind != Kind::Challenge {
        return Err(DecodeError::BadKind);
    }
    <[u8; NONCE_LEN]>::try_from(payload).map_err(|_| DecodeError::BadLength)
}

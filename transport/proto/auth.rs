//! Handshake authentication (pure core): SHA-256, HMAC-SHA256 and a
//! constant-time tag compare.
//!
//! Everything here is `core` only and allocates nothing.

/// SHA-256 digest and HMAC-SHA256 tag size in bytes (`Hello::mac`).
pub const DIGEST_LEN: usize = 32;
/// SHA-256 block size in bytes; HMAC keys longer than this are hashed first.
pub const BLOCK_LEN: usize = 64;

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

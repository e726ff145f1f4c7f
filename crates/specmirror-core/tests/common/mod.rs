//! Shared test helpers: a userspace CRC-32C and Vec-backed page storage.
#![allow(dead_code)]

use specmirror_core::log::record::{encode_frame, Crc32c, Header};
use specmirror_core::log::ring::{Pages, PAGE_SIZE};

/// CRC-32C from the `crc32c` crate, in the trait's chained convention.
pub(crate) struct Crc;

impl Crc32c for Crc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }
}

/// Page storage over boxed arrays, as tests and the simulator use it.
pub(crate) struct VecPages(pub(crate) Vec<Box<[u8; PAGE_SIZE]>>);

impl VecPages {
    pub(crate) fn new(n: usize) -> Self {
        // Non-zero fill so stale bytes never look like a zeroed header.
        VecPages((0..n).map(|_| Box::new([0xA5u8; PAGE_SIZE])).collect())
    }
}

impl Pages for VecPages {
    fn page_count(&self) -> usize {
        self.0.len()
    }
    fn page(&self, i: usize) -> Option<&[u8; PAGE_SIZE]> {
        self.0.get(i).map(|b| &**b)
    }
    fn page_mut(&mut self, i: usize) -> Option<&mut [u8; PAGE_SIZE]> {
        self.0.get_mut(i).map(|b| &mut **b)
    }
}

/// Encodes a frame into a fresh Vec.
pub(crate) fn frame(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 40 + payload.len()];
    let n = encode_frame(&Crc, h, payload, &mut out).expect("valid frame");
    out.truncate(n);
    out
}

/// Deterministic payload bytes for a (seq, len) pair.
pub(crate) fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

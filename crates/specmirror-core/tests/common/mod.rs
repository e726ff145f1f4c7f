//! Shared test helpers: a userspace CRC-32C, Vec-backed page storage, frames
//! and a sample Hello.
#![allow(dead_code)]

pub(crate) mod drive;

use specmirror_core::log::commit::{CommitLog, WindowSlot, SCAN_LIMIT};
use specmirror_core::log::filter::FILTER_BUCKETS;
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::record::{encode_frame, Crc32c, Header, Hello};
use specmirror_core::transport::proto::target::Target;

/// CRC-32C from the `crc32c` crate, in the trait's chained convention.
pub(crate) struct Crc;

impl Crc32c for Crc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }
}

/// Test pages: filled with 0xA5 so stale bytes never look like a zeroed header.
pub(crate) fn vec_pages(n: usize) -> VecPages {
    VecPages::filled(n, 0xA5)
}

pub(crate) use specmirror_core::vec_pages::VecPages;

/// The commit log over heap storage.
pub(crate) type Log = CommitLog<VecPages, Vec<WindowSlot>, Vec<u32>>;

/// The target machine over heap storage.
pub(crate) type Tgt = Target<VecPages, Vec<WindowSlot>, Vec<u32>, Vec<LockSlot>>;

/// A default issue window ([`SCAN_LIMIT`] slots).
pub(crate) fn window() -> Vec<WindowSlot> {
    vec![WindowSlot::EMPTY; SCAN_LIMIT]
}

/// Default region filter counters ([`FILTER_BUCKETS`]).
pub(crate) fn filter() -> Vec<u32> {
    vec![0; FILTER_BUCKETS]
}

/// A commit log over `pages` test pages with the default window and
/// filter, expecting `first_seq` next.
pub(crate) fn commit_log(pages: usize, first_seq: u64) -> Log {
    CommitLog::new(vec_pages(pages), window(), filter(), first_seq).expect("default storage")
}

/// A commit log over `pages` test pages with a `window`-slot issue window
/// and `buckets` filter counters, expecting seq 1 next.
pub(crate) fn commit_log_with(pages: usize, window: usize, buckets: usize) -> Log {
    CommitLog::new(
        vec_pages(pages),
        vec![WindowSlot::EMPTY; window],
        vec![0u32; buckets],
        1,
    )
    .expect("valid storage")
}

/// A sample Hello with every field non-zero (the MAC tests pin MACs of it).
use specmirror_core::log::meta::generation::Generations;

pub(crate) fn hello() -> Hello {
    Hello {
        proto_version: 1,
        dev_sectors: 1 << 21,
        region_sectors: 2048,
        generation: 7,
        last_applied: 42,
        nonce: [3; 16],
        mac: [9; 32],
        flags: 5,
        // Zero keeps the MAC golden values of tests/auth.rs (these bytes
        // were reserved, zero, before block sizes were exchanged).
        block_size: 0,
        // Non-zero, so the MAC golden values of tests/auth.rs pin where
        // the generations sit.
        gens: Generations {
            current: 0x1111,
            bitmap: 0x2222,
            history: [0x33, 0x44, 0, 0, 0, 0, 0, 0],
        },
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

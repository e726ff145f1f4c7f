//! Raw bytes into the target state machine: a little op language drives
//! frames (raw, repaired to pass the codec, or well-formed records near the
//! expected seq), handshakes, device completions (ok or failed), local
//! locks, disconnects and retries. Nothing may panic, and the machine's
//! cursors and outputs must stay consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specmirror_core::log::commit::{WindowSlot, SCAN_LIMIT};
use specmirror_core::log::filter::FILTER_BUCKETS;
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::record::{
    decode_frame, encode_frame, frame_crc, Crc32c, Header, Hello, Kind, HEADER_LEN, MAGIC, VERSION,
};
use specmirror_core::transport::proto::target::{Target, TargetConfig, TargetRecv};
use specmirror_core::transport::proto::{encode_hello, HELLO_FLAG_LOCK_SYNC, MAX_CONTROL_FRAME};

struct Crc;

impl Crc32c for Crc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }
}

use specmirror_core::vec_pages::VecPages;

const DEV: u64 = 1 << 16;
const REGION: u32 = 64;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = (v << 8) | u64::from(self.byte().unwrap_or(0));
        }
        v
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let c = Crc;
    let mut inp = Input(data);
    let log_pages = 2 + usize::from(inp.byte().unwrap_or(0) % 16);
    let pages = VecPages::new(log_pages);
    // Storage sizes: the usual issue window or a short one (1-16 slots),
    // the usual region filter or a small one (1-64 buckets).
    let sizes = inp.byte().unwrap_or(0xFF);
    let window = if sizes & 0x80 != 0 {
        SCAN_LIMIT
    } else {
        1 + usize::from(sizes & 0x0F)
    };
    let buckets = match (sizes >> 4) & 7 {
        7 => FILTER_BUCKETS,
        k => 1 << k,
    };
    let cfg = TargetConfig {
        region_sectors: REGION,
        dev_sectors: DEV,
        ack_every: 3,
    };
    let Ok(mut t) = Target::new(
        cfg,
        pages,
        vec![WindowSlot::EMPTY; window],
        vec![0; buckets],
        vec![LockSlot::EMPTY; 6],
    ) else {
        return;
    };
    let mut issued: Vec<(u64, Header)> = Vec::new();
    let mut out = [0u8; MAX_CONTROL_FRAME];
    let mut frame = vec![0u8; HEADER_LEN + 8 * 4096];
    let mut steps = 0;
    while let Some(op) = inp.byte() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        let recv = match op % 10 {
            // Raw bytes as one frame.
            0 => {
                let n = usize::from(inp.byte().unwrap_or(0)) * 2;
                let raw = inp.take(n).to_vec();
                Some(t.on_frame(&c, &raw))
            }
            // Raw bytes repaired to pass magic/version/CRC.
            1 => {
                let n = HEADER_LEN + usize::from(inp.byte().unwrap_or(0));
                let mut f = inp.take(n).to_vec();
                if f.len() >= HEADER_LEN {
                    f[0..4].copy_from_slice(&MAGIC.to_le_bytes());
                    f[4] = VERSION;
                    f[36..40].fill(0);
                    let mut hb = [0u8; HEADER_LEN];
                    hb.copy_from_slice(&f[..HEADER_LEN]);
                    let crc = frame_crc(&c, &hb, &f[HEADER_LEN..]);
                    f[32..36].copy_from_slice(&crc.to_le_bytes());
                }
                Some(t.on_frame(&c, &f))
            }
            // A well-formed source record near the expected seq.
            2 | 3 | 4 => {
                let kind = [
                    Kind::Lock,
                    Kind::Unlock,
                    Kind::Write,
                    Kind::Flush,
                    Kind::Discard,
                    Kind::WriteZeroes,
                ][usize::from(inp.byte().unwrap_or(0) % 6)];
                let mut h = Header::new(kind);
                let d = inp.byte().unwrap_or(1);
                h.seq = (t.received_seq() + 1)
                    .saturating_add(u64::from(d % 4))
                    .saturating_sub(1);
                let sel = inp.byte().unwrap_or(0);
                h.flags = u16::from(sel & 3);
                match kind {
                    Kind::Lock | Kind::Unlock => {
                        h.flags = 0;
                        h.sector = u64::from(inp.byte().unwrap_or(0) % 8);
                    }
                    Kind::Flush => h.flags = 0,
                    _ => {
                        h.sector = u64::from(inp.byte().unwrap_or(0)) * 16;
                        h.count = 1 + u32::from(inp.byte().unwrap_or(0) % 64);
                        if sel & 0x80 != 0 {
                            // Sometimes past the device end.
                            h.sector = DEV - 8;
                        }
                    }
                }
                if kind == Kind::Write {
                    h.len = h.count * 512;
                } else {
                    h.flags &= if kind.is_data() { 3 } else { 0 };
                }
                let payload = vec![sel; h.len as usize];
                match encode_frame(&c, &h, &payload, &mut frame) {
                    Ok(n) => {
                        let mut f = frame[..n].to_vec();
                        if sel & 0x40 != 0 && n > 0 {
                            let i = usize::from(inp.byte().unwrap_or(0)) % n;
                            f[i] ^= 1 << (sel % 8);
                        }
                        Some(t.on_frame(&c, &f))
                    }
                    Err(_) => None,
                }
            }
            // Handshake with fuzzed fields (often valid).
            5 => {
                let sel = inp.byte().unwrap_or(0);
                let hello = Hello {
                    proto_version: if sel & 1 == 0 {
                        u32::from(VERSION)
                    } else {
                        u32::from(sel)
                    },
                    dev_sectors: if sel & 2 == 0 { DEV } else { inp.u64() },
                    region_sectors: if sel & 4 == 0 { REGION } else { u32::from(sel) },
                    generation: if sel & 8 == 0 { 1 } else { inp.u64() },
                    last_applied: if sel & 16 == 0 { 0 } else { inp.u64() },
                    nonce: [0; 16],
                    mac: [0; 32],
                    flags: if sel & 32 != 0 {
                        HELLO_FLAG_LOCK_SYNC
                    } else {
                        0
                    },
                    block_size: if sel & 64 == 0 { 0 } else { 512 << (sel >> 7) },
                };
                let mut b = [0u8; MAX_CONTROL_FRAME];
                match encode_hello(&c, &hello, false, &mut b) {
                    Ok(n) => Some(t.on_frame(&c, &b[..n])),
                    Err(_) => None,
                }
            }
            // Start device I/O.
            6 => {
                while let Some(v) = t.poll_issue() {
                    assert!(v.seq <= t.received_seq());
                    if v.header.kind.is_data() {
                        assert!(v.header.sector + u64::from(v.header.count) <= DEV);
                    }
                    issued.push((v.seq, v.header));
                }
                // Every record in flight lies in the issue window.
                assert!(issued.len() <= window);
                assert!(issued
                    .iter()
                    .all(|&(s, _)| s - t.applied_seq() <= window as u64));
                None
            }
            // Complete one issued I/O, ok or failed.
            7 => {
                if !issued.is_empty() {
                    let sel = inp.byte().unwrap_or(0);
                    let (seq, h) = issued.swap_remove(usize::from(sel) % issued.len());
                    assert!(t.io_done(seq, &h, sel & 0x80 == 0));
                }
                None
            }
            // Local lock / unlock.
            8 => {
                let sel = inp.byte().unwrap_or(0);
                let sector = u64::from(inp.byte().unwrap_or(0)) * 32;
                let count = u64::from(inp.byte().unwrap_or(0));
                if sel & 1 == 0 {
                    // The region filter local_lock consults never misses a
                    // write the exact walk of the commit log sees.
                    if count > 0 && sector + count <= DEV {
                        let shift = REGION.trailing_zeros();
                        let (first, last) = (sector >> shift, (sector + count - 1) >> shift);
                        let log = t.commit_log();
                        let exact =
                            log.pending_in_range(first << shift, (last - first + 1) << shift);
                        assert!(!exact || log.may_be_pending(first, last));
                    }
                    let _ = t.local_lock(sector, count);
                } else {
                    t.local_unlock(sector, count);
                }
                None
            }
            // Disconnect, or a retry timer.
            _ => {
                if inp.byte().unwrap_or(0) & 1 == 0 {
                    t.on_disconnect();
                } else {
                    t.retry_failed();
                }
                None
            }
        };
        if let Some(TargetRecv::Hello(h)) = recv {
            let _ = t.on_hello(&h);
        }
        // Everything the target sends must decode and be a target kind.
        while let Some(r) = t.poll_send(&c, &mut out) {
            let n = r.expect("control frames always fit MAX_CONTROL_FRAME");
            let (h, _) = decode_frame(&c, &out[..n]).expect("target emits valid frames");
            assert!(!h.kind.is_from_source());
            if h.kind == Kind::Ack {
                assert!(h.seq <= t.applied_seq());
            }
        }
        assert!(t.applied_seq() <= t.received_seq());
        assert!(t.acked_seq() <= t.applied_seq());
        let log = t.commit_log();
        assert!(!log.is_empty() || log.region_filter().is_clear());
    }
});

//! Raw bytes into the source state machine, through its thread steps as
//! the kernel glue runs them, against a scripted target: host writes of
//! every kind (parked in a deferred list when told to wait), local I/O
//! ending ok or failed, the sender's connects, control frames and record
//! batches (their sends reported at once, late or failed), the worker's
//! every step (repairs read back or not), frames from the target
//! (CHALLENGE, HELLO_REPLY signed or not and saying anything, ACK, NAK,
//! lock replies, garbage), read errors, time, admin and fault messages,
//! suspends and restarts. Nothing may panic, and:
//! - every batch is consecutive records that decode (but the one
//!   corrupted on purpose), header and payload without padding;
//! - a leased batch's bytes stay as they were until its send ends, and a
//!   record whose local write is outstanding stays in the ring;
//! - every host write completes once; a sync write completes ok only once
//!   acknowledged (unless a suspend gave up waiting);
//! - the deferred count is the glue's list; the ring frees nothing past
//!   the acknowledgement;
//! - a step that says "sleep until" names a later instant, and a sleeper
//!   that `take_wakes` leaves asleep would still sleep if asked again at
//!   the same instant (no missed wake-up).
#![no_main]

use std::collections::{HashSet, VecDeque};

use libfuzzer_sys::fuzz_target;
use specmirror_core::log::record::{
    decode_frame, encode_frame, Crc32c, Header, Hello, Kind, FLAGS_KNOWN, HEADER_LEN, VERSION,
};
use specmirror_core::log::meta::generation::{Generations, InitialSync};
use specmirror_core::log::meta::bitmap::{self, Bitmap};
use specmirror_core::pair::{gather, Src};
use specmirror_core::transport::proto::auth::{self, encode_challenge, MacLabel};
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::inflight::InflightSlot;
use specmirror_core::transport::proto::source::{
    Batch, HostOp, HostWrite, RecvError, RxVerdict, SenderStep, Source, SourceConfig, Submit,
    WorkerStep, DEFERRED_BATCH, SENDER, SLEEPERS, WORKER,
};
use specmirror_core::transport::proto::wake::{Instant, MS};
use specmirror_core::transport::proto::{
    encode_hello, Completion, Mode, Refusal, HELLO_FLAG_CONSISTENT, MAX_CONTROL_FRAME,
};
use specmirror_core::transport::table::Secret;
use specmirror_core::vec_pages::VecPages;

struct Crc;

impl Crc32c for Crc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }
}

const DEV: u64 = 1 << 16;
const REGION: u32 = 64;
const GEN: u64 = 5;
const KEY: &[u8] = b"fuzz-secret";

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn b(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }
    fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = (v << 8) | u64::from(self.b());
        }
        v
    }
}

/// What the fuzzer's glue (and the scripted target) keep.
struct Glue {
    now: Instant,
    cfg: SourceConfig,
    /// The connection the sender opened and whose receiver runs.
    conn: Option<u64>,
    /// The HELLO's nonce on this connection (the reply is signed over it).
    hello_nonce: [u8; 16],
    /// One past the highest seq the source sent.
    sent_hwm: u64,
    /// A batch whose send has not ended: its bytes as taken.
    lease: Option<(u64, Batch, Vec<Vec<u8>>)>,
    /// The glue's deferred list.
    deferred: VecDeque<HostWrite>,
    /// Host writes whose local I/O is outstanding.
    local: Vec<u64>,
    /// Host writes accepted and not completed.
    open: HashSet<u64>,
    slept_at: [Option<Instant>; SLEEPERS as usize],
    trace: bool,
}

impl Glue {
    fn until(&self, until: Option<Instant>) {
        if let Some(u) = until {
            assert!(u > self.now, "sleep until {u} at {}: a spin", self.now);
        }
    }

    fn slept(&mut self, i: u8, asleep: bool) {
        if let Some(s) = self.slept_at.get_mut(usize::from(i)) {
            *s = asleep.then_some(self.now);
        }
    }

    fn accepted(&mut self, r: Submit) -> bool {
        match r {
            Submit::Accepted(seq) => {
                assert!(self.open.insert(seq), "seq {seq} given twice");
                self.local.push(seq);
                true
            }
            Submit::Wait(_) => false,
            Submit::Invalid(_) => true,
        }
    }

    fn completions(&mut self, s: &mut Src) {
        while let Some(c) = s.poll_completed() {
            assert!(
                self.open.remove(&c.seq),
                "seq {} completed twice or never given",
                c.seq
            );
            assert!(
                !self.local.contains(&c.seq),
                "completed before its local I/O"
            );
            // (Degraded: a dropped record completes locally, its chunk
            // dirty.)
            if c.ok && self.cfg.completion == Completion::Sync && !s.is_abandoning() && c.seq > s.dropped_upto() {
                assert!(
                    c.seq <= s.acked_seq(),
                    "sync write {} before its ACK",
                    c.seq
                );
            }
        }
    }

    /// The sender's send of the leased batch ends.
    fn end_send(&mut self, s: &mut Src, ok: bool) {
        if let Some((conn, batch, frames)) = self.lease.take() {
            // The lease kept the bytes.
            let now: Vec<Vec<u8>> = s
                .batch_views(&batch)
                .map(|v| {
                    let mut f = Vec::new();
                    gather(s.ring().pages(), v.chunks(), &mut f);
                    f
                })
                .collect();
            assert_eq!(now, frames, "leased bytes changed");
            s.on_sent(conn, ok, self.now);
            assert_eq!(s.batch_views(&batch).count(), 0);
        }
    }

    fn sender(&mut self, s: &mut Src, inp: &mut Input) {
        if self.lease.is_some() {
            // The sender thread is in its send.
            let ok = inp.b() & 7 != 0;
            self.end_send(s, ok);
            return;
        }
        let now = self.now;
        match s.poll_sender(&Crc, now) {
            SenderStep::Exit => assert!(s.is_stopping()),
            SenderStep::Sleep { until } => {
                self.until(until);
                self.slept(SENDER, true);
            }
            SenderStep::Connect { conn } => {
                let sel = inp.b();
                let random = (sel & 3 != 0).then_some([sel; 32]);
                if s.on_connect(conn, random, now) {
                    assert!(random.is_some());
                    self.conn = Some(conn);
                }
            }
            SenderStep::Control { conn, frame } => {
                let (h, payload) = decode_frame(&Crc, frame.as_bytes()).expect("a valid frame");
                match h.kind {
                    Kind::Hello => {
                        let hello = Hello::decode(payload).expect("a HELLO");
                        assert_eq!(hello.proto_version, u32::from(VERSION));
                        // The table's stream, or one degraded mode began.
                        assert_eq!(hello.generation, s.stream_generation());
                        assert!(hello.generation == GEN || s.dropped_upto() > 0);
                        self.hello_nonce = hello.nonce;
                    }
                    Kind::Ping => assert_eq!((h.seq, h.len), (0, 0)),
                    k => panic!("control frame {k:?}"),
                }
                let ok = inp.b() & 7 != 0;
                s.on_sent(conn, ok, now);
            }
            SenderStep::Records { conn, batch } => {
                let views: Vec<_> = s.batch_views(&batch).collect();
                assert_eq!(views.len(), batch.count as usize);
                assert!(batch.count > 0);
                let mut frames = Vec::new();
                let mut bytes = 0;
                for (k, v) in views.iter().enumerate() {
                    assert_eq!(v.seq, batch.first + k as u64);
                    let mut f = Vec::new();
                    gather(s.ring().pages(), v.chunks(), &mut f);
                    assert_eq!(f.len(), v.frame_len);
                    assert_eq!(f.len(), HEADER_LEN + v.header.len as usize);
                    let (h, _) = decode_frame(&Crc, &f).expect("records decode");
                    assert_eq!(h, v.header);
                    assert_eq!(h.seq, v.seq);
                    assert!(
                        h.kind.is_from_source() && h.kind != Kind::Ping && h.kind != Kind::Hello
                    );
                    if batch.corrupt == Some(v.seq) {
                        assert_eq!(k + 1, views.len(), "the last of its batch");
                        let mut bad = s.corrupt_header(v.seq).to_vec();
                        bad.extend_from_slice(&f[HEADER_LEN..]);
                        assert!(decode_frame(&Crc, &bad).is_err());
                    }
                    bytes += f.len();
                    frames.push(f);
                }
                assert_eq!(bytes, batch.bytes);
                self.sent_hwm = self.sent_hwm.max(batch.first + u64::from(batch.count));
                self.lease = Some((conn, batch, frames));
                if inp.b() & 1 == 0 {
                    let ok = inp.b() & 7 != 0;
                    self.end_send(s, ok);
                }
            }
            SenderStep::Close { conn } => {
                s.on_shutdown(conn);
                // The receiver ended; then the close is reported.
                if self.conn == Some(conn) {
                    self.conn = None;
                }
                s.on_closed(conn, now);
            }
        }
    }

    fn worker(&mut self, s: &mut Src, inp: &mut Input) {
        let now = self.now;
        match s.poll_worker(now) {
            WorkerStep::Exit => assert!(s.is_stopping()),
            WorkerStep::Sleep { until } => {
                self.until(until);
                self.slept(WORKER, true);
            }
            WorkerStep::Shutdown { conn } => s.on_shutdown(conn),
            WorkerStep::Abandon => {
                assert!(s.is_abandoning());
                while self.deferred.pop_front().is_some() {
                    s.deferred_dropped();
                }
                self.completions(s);
            }
            WorkerStep::Complete => self.completions(s),
            WorkerStep::RepairRead(job) => {
                assert!(!self.local.contains(&job.seq));
                match inp.b() % 4 {
                    0 => s.repair_wait(now),
                    1 => s.repair_read_done(job.seq, false),
                    2 => s.repair_read_ended(true),
                    _ => s.repair_read_done(job.seq, true),
                }
            }
            WorkerStep::RepairAppend { job, ok } => {
                if ok {
                    let data = vec![0x11u8; job.count as usize * 512];
                    match s.repair(&Crc, job.seq, now, |w| w.write(&data)) {
                        Submit::Accepted(rep) => assert!(rep > job.seq),
                        Submit::Wait(_) | Submit::Invalid(_) => {}
                    }
                } else {
                    s.repair_failed(job.seq);
                }
            }
            WorkerStep::ResyncRead(job) => {
                assert!(job.count > 0 && job.sector + u64::from(job.count) <= DEV);
                match inp.b() % 4 {
                    0 => s.resync_wait(now),
                    1 => s.resync_read_ended(false),
                    _ => s.resync_read_ended(true),
                }
            }
            WorkerStep::SyncEvent => {}
            WorkerStep::AppendSync => s.append_sync(&Crc),
            WorkerStep::VerifyRead(job) => {
                assert!(job.count > 0 && job.sector + u64::from(job.count) <= DEV);
                s.verify_read_ended(inp.b() % 4 != 0);
            }
            WorkerStep::VerifyAppend { ok, .. } => {
                let d = ok.then_some([inp.b(); 32]);
                let _ = s.verify_append(&Crc, d);
            }
            WorkerStep::SaveGens => {
                assert!(s.gens_copy().is_some());
                s.gens_saved(inp.b() % 4 != 0, now);
            }
            WorkerStep::SaveBitmap { block } => {
                let mut piece = [0u8; 512];
                assert!(s.bitmap_copy(block, 0, &mut piece));
                s.bitmap_saved(block, inp.b() % 4 != 0, now);
            }
            WorkerStep::FlushData => s.data_flushed(inp.b() % 4 != 0, now),
            WorkerStep::ResyncAppend { job, ok } => {
                if ok {
                    let data = vec![0x33u8; job.count as usize * 512];
                    let _ = s.resync(&Crc, |w| w.write(&data));
                } else {
                    s.resync_failed();
                }
            }
            WorkerStep::Deferred => {
                for _ in 0..DEFERRED_BATCH {
                    let Some(w) = self.deferred.front().copied() else {
                        break;
                    };
                    let data = vec![0x22u8; w.count as usize * 512];
                    let r = s.retry_deferred(&Crc, &w, self.now, |wr| {
                        if w.op == HostOp::Write {
                            wr.write(&data)
                        } else {
                            Ok(())
                        }
                    });
                    if !self.accepted(r) {
                        break;
                    }
                    self.deferred.pop_front();
                }
            }
        }
    }

    fn deliver(&mut self, s: &mut Src, f: &[u8]) {
        let Some(conn) = self.conn else { return };
        if s.on_frame(&Crc, conn, f, self.now) == RxVerdict::Stop {
            // The receiver returns; the sender closes.
            self.conn = None;
        }
    }

    /// No missed wake-up (see the module docs).
    fn check_wakes(&mut self, s: &mut Src) {
        let w = s.take_wakes();
        for i in 0..SLEEPERS {
            if w.contains(i) {
                self.slept(i, false);
                continue;
            }
            if !s.is_asleep(i) || self.slept_at[usize::from(i)] != Some(self.now) {
                continue;
            }
            let again = match i {
                SENDER => {
                    if self.lease.is_some() {
                        continue;
                    }
                    matches!(s.poll_sender(&Crc, self.now), SenderStep::Sleep { .. })
                }
                WORKER => matches!(s.poll_worker(self.now), WorkerStep::Sleep { .. }),
                _ => true,
            };
            assert!(again, "sleeper {i} asleep with work: a missed wake-up");
        }
    }
}

fn ctl(kind: Kind, seq: u64, sector: u64, count: u32) -> Vec<u8> {
    let mut h = Header::new(kind);
    h.seq = seq;
    h.sector = sector;
    h.count = count;
    let mut out = vec![0u8; HEADER_LEN];
    let n = encode_frame(&Crc, &h, &[], &mut out).expect("a control frame");
    out.truncate(n);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let setup = inp.b();
    let setup2 = inp.b();
    let cfg = SourceConfig {
        region_sectors: REGION,
        mode: if setup & 1 == 0 {
            Mode::Speculative
        } else {
            Mode::LockSync
        },
        completion: if setup & 2 == 0 {
            Completion::Async
        } else {
            Completion::Sync
        },
        dev_sectors: DEV,
        generation: GEN,
        secret: if setup & 4 != 0 {
            Secret::new(KEY)
        } else {
            None
        },
    };
    let ring_pages = 2 + usize::from(setup2 % 16);
    let hot = 1 + usize::from((setup2 >> 4) & 7);
    let inflight = 1 + usize::from(setup >> 4);
    let Ok(mut s) = Source::new(
        cfg,
        VecPages::new(ring_pages),
        1,
        vec![HotSlot::default(); hot],
        vec![InflightSlot::default(); inflight],
    ) else {
        return;
    };
    let align = [8usize, 512, 4096, 16][usize::from((setup >> 3) & 1 | (setup2 >> 6) & 2)];
    if s.set_payload_align(align).is_err() {
        return;
    }
    s.set_block_size(if setup2 & 0x80 != 0 { 512 } else { 0 });
    if inp.b() & 1 != 0 {
        // A dirty bitmap of 8-sector chunks: some chunks start dirty.
        let chunks = DEV / 8;
        let pages = VecPages::new(bitmap::blocks_for(chunks) as usize);
        let bits = Bitmap::new(pages, chunks).expect("enough pages");
        s.attach_bitmap(bits, 8).expect("chunk fits a region");
        if inp.b() & 1 != 0 {
            // An activity log of 1 to 8 regions (a write wider than it is
            // refused).
            let n = 1 + usize::from(inp.b() % 8);
            s.attach_activity_log(vec![HotSlot::default(); n]).expect("bitmap attached");
        }
        for _ in 0..inp.b() % 8 {
            let c = u64::from(inp.b()) % chunks;
            s.mark_dirty(c, c + u64::from(inp.b() % 4));
        }
        if inp.b() & 3 == 0 {
            // A verify of a random range (it may be refused).
            let a = u64::from(inp.b()) * 64;
            let _ = s.verify(a, u64::from(inp.b()) * 16);
        }
        if inp.b() & 1 != 0 {
            // Generations: the handshake's rule and the SYNC marks.
            let gens = Generations { current: 0xA1, bitmap: if inp.b() & 1 != 0 { 0xB2 } else { 0 }, ..Default::default() };
            let mode = [InitialSync::None, InitialSync::Full, InitialSync::Checksum, InitialSync::Full][usize::from(inp.b() & 3)];
            s.attach_generations(gens, mode);
        }
        if inp.b() & 1 != 0 {
            // Degraded mode after 100-800 ms (time moves in the ops below).
            s.set_degrade_after(Some(u64::from(inp.b() % 8 + 1) * 100 * MS));
        }
    }
    s.start(0);
    let mut g = Glue {
        now: 0,
        cfg,
        conn: None,
        hello_nonce: [0; 16],
        sent_hwm: 1,
        lease: None,
        deferred: VecDeque::new(),
        local: Vec::new(),
        open: HashSet::new(),
        slept_at: [None; SLEEPERS as usize],
        trace: std::env::var_os("FUZZ_TRACE").is_some(),
    };
    let mut steps = 0;
    while let Some(op) = inp.byte() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        if g.trace {
            eprintln!(
                "op {} now {} conn {:?} {:?}",
                op % 20,
                g.now,
                g.conn,
                s.link_state()
            );
        }
        match op % 20 {
            // A host write (dm map).
            0..=3 => {
                let sel = inp.b();
                let op = [
                    HostOp::Write,
                    HostOp::Write,
                    HostOp::Discard,
                    HostOp::WriteZeroes,
                    HostOp::Flush,
                ][usize::from(sel % 5)];
                let sector = if sel & 0x80 != 0 {
                    DEV - u64::from(inp.b())
                } else {
                    u64::from(inp.b()) * 8 + u64::from(sel & 0x20 != 0)
                };
                let count = 1 + u32::from(inp.b() % 32) * if sel & 0x40 != 0 { 8 } else { 1 };
                let flags =
                    u16::from(inp.b() & 7) & if sel & 0x10 != 0 { 0xff } else { FLAGS_KNOWN };
                let w = HostWrite {
                    op,
                    sector,
                    count,
                    flags,
                };
                let queued = !g.deferred.is_empty();
                let data = vec![sel; count as usize * 512];
                let r = s.submit(&Crc, &w, g.now, |wr| {
                    if w.op == HostOp::Write {
                        wr.write(&data)
                    } else {
                        Ok(())
                    }
                });
                if queued {
                    assert!(
                        matches!(r, Submit::Wait(_)),
                        "{r:?} overtook a parked write"
                    );
                }
                if !g.accepted(r) {
                    g.deferred.push_back(w);
                }
            }
            // map could not get a bio: parked unprepared.
            4 => {
                let sector = u64::from(inp.b()) * 8;
                s.defer_unprepared(g.now);
                g.deferred.push_back(HostWrite {
                    op: HostOp::Write,
                    sector,
                    count: 8,
                    flags: 0,
                });
            }
            // A local write ends.
            5 | 6 => {
                if !g.local.is_empty() {
                    let sel = inp.b();
                    let seq = g.local.swap_remove(usize::from(sel) % g.local.len());
                    assert!(s.local_done(seq, sel & 0xe0 != 0));
                    if inp.b() & 1 == 0 {
                        // end_io takes the completions itself.
                        g.completions(&mut s);
                    }
                }
            }
            7 | 8 => g.sender(&mut s, &mut inp),
            9 => g.worker(&mut s, &mut inp),
            // The target's CHALLENGE.
            10 => {
                let nonce = [inp.b(); 16];
                let mut b = [0u8; 64];
                if let Ok(n) = encode_challenge(&Crc, &nonce, &mut b) {
                    g.deliver(&mut s, &b[..n]);
                }
            }
            // The target's HELLO_REPLY.
            11 => {
                let sel = inp.b();
                let next = s.ring().next_seq();
                let last_applied = match sel % 5 {
                    0 => s.acked_seq(),
                    1 => g.sent_hwm.saturating_sub(1),
                    2 => next.saturating_sub(1),
                    3 => s.ring().oldest_seq().unwrap_or(next).saturating_sub(1),
                    _ => inp.u64(),
                };
                let mut reply = Hello {
                    proto_version: u32::from(VERSION),
                    dev_sectors: DEV,
                    region_sectors: REGION,
                    generation: if sel & 0x08 == 0 { s.stream_generation() } else { GEN + 1 },
                    last_applied,
                    nonce: [7; 16],
                    mac: [0; 32],
                    flags: if sel & 0x10 == 0 {
                        0
                    } else {
                        Refusal::Busy.to_flags()
                    },
                    block_size: if sel & 0x20 == 0 { 0 } else { 4096 },
                    // A target new, at the source's generation or its
                    // bitmap's base, ahead, or unrelated.
                    gens: Generations {
                        current: [0, 0xA1, 0xB2, 0xC3, inp.u64()][usize::from(inp.b() % 5)],
                        history: [[0u64; 8], [0xA1, 0, 0, 0, 0, 0, 0, 0]][usize::from(inp.b() & 1)],
                        ..Default::default()
                    },
                };
                if inp.b() & 1 != 0 {
                    reply.flags |= HELLO_FLAG_CONSISTENT;
                }
                let key = if sel & 0x40 == 0 { Some(KEY) } else { None };
                let label = if sel & 0x80 == 0 {
                    MacLabel::Reply
                } else {
                    MacLabel::Hello
                };
                auth::sign(key, label, &g.hello_nonce, &mut reply);
                let mut b = [0u8; MAX_CONTROL_FRAME];
                if let Ok(n) = encode_hello(&Crc, &reply, true, &mut b) {
                    g.deliver(&mut s, &b[..n]);
                }
            }
            // ACK, NAK, lock replies.
            12..=14 => {
                let sel = inp.b();
                let kind = [
                    Kind::Ack,
                    Kind::Ack,
                    Kind::Nak,
                    Kind::LockGranted,
                    Kind::LockRejected,
                ][usize::from(sel % 5)];
                let d = u64::from(inp.b() % 8);
                let seq = match (sel >> 3) % 4 {
                    0 => g.sent_hwm.saturating_sub(1).saturating_sub(d),
                    1 => s.acked_seq() + d,
                    2 => s.ring().send_seq().saturating_sub(d),
                    _ => inp.u64(),
                };
                let sector = u64::from(inp.b() % 16);
                if sel & 0x80 != 0 {
                    // A DIGEST answer (the source's own request or not).
                    let mut h = Header::new(Kind::Digest);
                    h.seq = seq;
                    h.count = u32::from(sel & 1);
                    h.len = 32;
                    let mut b = [0u8; 72];
                    if let Ok(n) = specmirror_core::log::record::encode_frame(&Crc, &h, &[inp.b(); 32], &mut b) {
                        g.deliver(&mut s, &b[..n]);
                    }
                } else {
                    g.deliver(&mut s, &ctl(kind, seq, sector, u32::from(sel >> 6)));
                }
            }
            // Garbage, or a read error.
            15 => {
                let sel = inp.b();
                if let Some(conn) = g.conn {
                    if sel & 1 == 0 {
                        let raw = vec![sel; usize::from(inp.b())];
                        g.deliver(&mut s, &raw);
                    } else {
                        let e = [RecvError::Io, RecvError::Corrupt, RecvError::Protocol]
                            [usize::from(sel >> 1) % 3];
                        s.on_recv_error(conn, e);
                        g.conn = None;
                    }
                }
            }
            // Time passes (up to about a minute).
            16 => {
                let ms = u64::from(inp.b()) << (inp.b() % 9);
                g.now = g.now.saturating_add(ms.max(1) * MS);
            }
            // Messages.
            17 => match inp.b() % 6 {
                0 => s.admin_disconnect(),
                1 => s.admin_connect(),
                2 => s.fault_corrupt(1),
                3 => s.fault_corrupt_every(u32::from(inp.b() % 4)),
                4 => s.fault_drop(),
                _ => {
                    let _ = (s.link_state(), s.stats(), s.is_held(), s.holds().count());
                }
            },
            // Suspend and resume.
            18 => match inp.b() % 4 {
                0 => s.begin_suspend(g.now),
                1 => s.cancel_suspend(),
                2 => {
                    // Stop: the threads exit (a repair or resync read ends
                    // first; the worker saves the bitmap, each save tried
                    // once, before it exits).
                    s.stop();
                    s.repair_read_ended(false);
                    s.resync_read_ended(false);
                    if g.lease.is_some() {
                        g.end_send(&mut s, false);
                    }
                    let mut saves = 0;
                    loop {
                        match s.poll_worker(g.now) {
                            WorkerStep::SaveBitmap { block } => s.bitmap_saved(block, inp.b() % 4 != 0, g.now),
                            // The activity log's flush before it empties.
                            WorkerStep::FlushData => s.data_flushed(inp.b() % 4 != 0, g.now),
                            _ => break,
                        }
                        saves += 1;
                        assert!(saves <= 64, "the stopping worker keeps saving");
                    }
                    assert_eq!(s.poll_worker(g.now), WorkerStep::Exit, "the stopping worker only saves, then exits");
                    assert_eq!(s.poll_sender(&Crc, g.now), SenderStep::Exit);
                    if let Some(conn) = g.conn.take() {
                        s.on_recv_error(conn, RecvError::Io);
                    }
                    s.stopped();
                    g.slept_at = [None; SLEEPERS as usize];
                }
                _ => s.start(g.now),
            },
            // The completions end_io would take.
            _ => g.completions(&mut s),
        }
        g.check_wakes(&mut s);
        assert_eq!(s.deferred_len(), g.deferred.len());
        let r = s.ring();
        assert!(r.used_bytes() <= r.capacity_bytes());
        assert!(s.acked_seq() < r.next_seq());
        // Nothing past the acknowledgement (or what degraded mode
        // dropped, its chunks dirty) is freed...
        if let Some(o) = r.oldest_seq() {
            let gone = s.acked_seq().max(s.dropped_upto());
            assert!(o <= gone + 1, "oldest {o} acked {} dropped {}", s.acked_seq(), s.dropped_upto());
        }
        // ...and nothing a local write or a send still reads.
        let floor = r.oldest_seq().unwrap_or(r.next_seq());
        for &seq in &g.local {
            assert!(seq >= floor, "local write {seq} lost its record");
        }
        if let Some((_, b, _)) = &g.lease {
            assert!(b.first >= floor, "leased batch freed");
        }
    }
});

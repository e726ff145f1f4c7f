//! Raw bytes into the target state machine, through its thread steps as
//! the kernel glue runs them: a little op language drives accepts (and
//! accept errors), frames on the current or a stale connection (raw,
//! repaired to pass the codec, HELLOs signed over the last CHALLENGE or
//! not, well-formed records near the expected seq, PINGs), the sender,
//! receiver, applier, listener and `lock` message steps, device
//! completions (ok, failed, unsupported), reads, local locks, time,
//! suspends, closes and restarts. Nothing may panic, and:
//! - everything the target sends decodes and is a target kind (or the
//!   CHALLENGE); ACKs never exceed what was applied;
//! - the cursors stay ordered (acked <= applied <= received), every
//!   record in flight lies in the issue window, an empty log has a clear
//!   region filter;
//! - a step that says "sleep until" names a later instant (no spin);
//! - no missed wake-up: a sleeper that `take_wakes` leaves asleep would,
//!   asked again at the same instant, still sleep.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specmirror_core::log::commit::{WindowSlot, SCAN_LIMIT};
use specmirror_core::log::filter::FILTER_BUCKETS;
use specmirror_core::log::locks::LockSlot;
use specmirror_core::log::meta::generation::Generations;
use specmirror_core::log::record::{
    decode_frame, decode_header, encode_frame, frame_crc, Crc32c, DecodeError, Header, Hello, Kind, HEADER_LEN,
    MAGIC, VERSION,
};
use specmirror_core::transport::proto::auth::{self, decode_challenge, MacLabel};
use specmirror_core::transport::proto::target::{
    copies_outside, Accept, ApplierStep, IoStatus, ListenerStep, LockReply, RxStep, RxVerdict, SenderStep, Target,
    TargetConfig, APPLIER, LISTENER, LOCKER, RECEIVER, SENDER, SEND_FRAMES, SLEEPERS,
};
use specmirror_core::transport::proto::wake::{Instant, MS};
use specmirror_core::transport::proto::{
    encode_hello, HELLO_FLAG_LOCK_SYNC, HELLO_FLAG_SYNC_COMPLETION, MAX_CONTROL_FRAME,
};
use specmirror_core::transport::table::Secret;
use specmirror_core::vec_pages::VecPages;

struct Crc;

impl Crc32c for Crc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }
}

type Tgt = Target<VecPages, Vec<WindowSlot>, Vec<u32>, Vec<LockSlot>>;

const DEV: u64 = 1 << 16;
const REGION: u32 = 64;
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
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// What the fuzzer's glue keeps about the target.
struct Glue {
    now: Instant,
    /// The connection being served, as the listener accepted it.
    conn: Option<u64>,
    /// The last CHALLENGE nonce the target sent.
    nonce: [u8; 16],
    /// A frame the receiver could not hand over (back-pressure).
    busy: Option<Vec<u8>>,
    /// Device I/O handed out and not completed.
    issued: Vec<u64>,
    /// Those of them that are DIGEST_REQ reads (completed by
    /// `digest_done`).
    digest_reqs: Vec<u64>,
    /// Reads waiting for stream writes: (sector, sectors).
    reads: Vec<(u64, u64)>,
    /// When each sleeper last went to sleep (for the wake-up check).
    slept_at: [Option<Instant>; SLEEPERS as usize],
    out: Vec<u8>,
    window: usize,
    /// FUZZ_TRACE set: print every op (to read a crash).
    trace: bool,
}

impl Glue {
    fn slept(&mut self, i: u8, asleep: bool) {
        if let Some(s) = self.slept_at.get_mut(usize::from(i)) {
            *s = asleep.then_some(self.now);
        }
    }

    /// Checks a sleep deadline: strictly later than now.
    fn until(&self, until: Option<Instant>) {
        if let Some(u) = until {
            assert!(u > self.now, "sleep until {u} at {}: a spin", self.now);
        }
    }

    /// The receiver ended (read error, shutdown, stop verdict).
    fn recv_end(&mut self, t: &mut Tgt) {
        if let Some(c) = self.conn.take() {
            t.on_recv_end(c, false);
        }
        self.busy = None;
    }

    fn frame(&mut self, t: &mut Tgt, f: Vec<u8>, stale: bool) {
        let Some(conn) = self.conn else {
            return;
        };
        if let Some(kept) = self.busy.take() {
            // The receiver holds a frame: it only retries that one.
            match t.poll_receiver() {
                RxStep::Retry => self.offer(t, conn, kept),
                RxStep::Sleep => {
                    self.busy = Some(kept);
                    self.slept(RECEIVER, true);
                }
                RxStep::Stop => self.recv_end(t),
            }
            return;
        }
        if stale {
            // A frame of an old connection: never taken.
            assert_eq!(
                t.on_frame(&Crc, conn.wrapping_add(1), &f, self.now),
                RxVerdict::Stop
            );
            return;
        }
        self.offer(t, conn, f);
    }

    fn offer(&mut self, t: &mut Tgt, conn: u64, f: Vec<u8>) {
        let received = t.received_seq();
        // A long WRITE goes the kernel receiver's way: CRC checked outside
        // the lock, payload copied into the reserved record afterwards.
        let outside = decode_header(&f).is_ok_and(|(h, _)| copies_outside(&h) && h.frame_len() == f.len());
        let v = if outside {
            let ok = !matches!(decode_frame(&Crc, &f), Err(DecodeError::BadCrc));
            t.on_frame_checked(&Crc, conn, &f, ok, self.now)
        } else {
            t.on_frame(&Crc, conn, &f, self.now)
        };
        match v {
            RxVerdict::Fill { seq } => {
                assert!(outside, "only a frame checked outside the lock is filled later");
                assert_eq!(t.filling().map(|(s, _)| s), Some(seq));
                assert!(t.fill_payload(seq, &f[HEADER_LEN..]), "the reserved record takes its payload");
            }
            RxVerdict::Continue => {}
            RxVerdict::Busy => {
                assert_eq!(t.received_seq(), received, "busy frames are not taken");
                self.busy = Some(f);
            }
            RxVerdict::Stop => self.recv_end(t),
        }
    }

    fn sender(&mut self, t: &mut Tgt, ok: bool) {
        let now = self.now;
        match t.poll_sender(&Crc, now, &mut self.out) {
            SenderStep::Exit => assert!(t.is_stopping()),
            SenderStep::Sleep { until } => {
                self.until(until);
                self.slept(SENDER, true);
            }
            SenderStep::Send { conn, len } => {
                assert!(len > 0 && len <= self.out.len());
                let mut buf = &self.out[..len];
                while !buf.is_empty() {
                    let (h, _) = decode_header(buf).expect("whole frames");
                    let n = h.frame_len();
                    assert!(n <= buf.len() && n <= MAX_CONTROL_FRAME);
                    let (h, payload) = decode_frame(&Crc, &buf[..n]).expect("valid frames");
                    assert!(!h.kind.is_from_source(), "{:?}", h.kind);
                    match h.kind {
                        Kind::Ack => assert!(h.seq <= t.applied_seq()),
                        Kind::Challenge => {
                            self.nonce = decode_challenge(&Crc, &buf[..n]).expect("a nonce");
                        }
                        Kind::HelloReply => {
                            Hello::decode(payload).expect("a reply");
                        }
                        _ => {}
                    }
                    buf = &buf[n..];
                }
                t.on_sent(conn, ok, now);
            }
            SenderStep::Close { conn } => {
                t.on_shutdown(conn);
                // The shut-down socket ends the receiver.
                if self.conn == Some(conn) {
                    self.recv_end(t);
                }
            }
        }
    }

    fn applier(&mut self, t: &mut Tgt) {
        match t.poll_applier(self.now) {
            ApplierStep::Exit => assert!(t.is_stopping() && t.commit_log().in_flight() == 0),
            ApplierStep::Sleep { until } => {
                self.until(until);
                self.slept(APPLIER, true);
            }
            ApplierStep::Flush { upto } => {
                // It covers only what was applied; here the device has no
                // volatile cache and the flush ends at once.
                assert!(upto <= t.applied_seq() && upto > t.durable_seq());
                t.flush_done(upto, true, self.now);
                assert_eq!(t.durable_seq(), upto);
            }
            ApplierStep::FailReads => {
                for _ in self.reads.drain(..) {
                    t.read_failed();
                }
            }
            ApplierStep::Reads => {
                while let Some(&(sector, n)) = self.reads.first() {
                    if !t.read_may_go(sector, n) {
                        break;
                    }
                    self.reads.remove(0);
                }
            }
            ApplierStep::Issue => {
                for _ in 0..specmirror_core::transport::proto::target::APPLY_BATCH {
                    let Some(v) = t.poll_issue() else { break };
                    assert!(v.seq <= t.received_seq());
                    assert!(!matches!(v.header.kind, Kind::Lock | Kind::Unlock));
                    if v.header.kind.is_data() {
                        assert!(v.header.sector + u64::from(v.header.count) <= DEV);
                    }
                    // A SYNC record names the superblock to write; nothing
                    // else does.
                    assert_eq!(t.sync_meta(&v.header).is_some(), v.header.kind == Kind::Sync);
                    assert_eq!(
                        v.chunks().map(|(_, _, n)| n).sum::<usize>(),
                        v.header.len as usize
                    );
                    if v.header.kind == Kind::DigestReq {
                        self.digest_reqs.push(v.seq);
                    }
                    self.issued.push(v.seq);
                }
                // Every record in flight lies in the issue window.
                assert!(self.issued.len() <= self.window);
                assert!(self
                    .issued
                    .iter()
                    .all(|&s| s - t.applied_seq() <= self.window as u64));
            }
        }
        assert_eq!(t.reads_waiting(), self.reads.len());
    }

    /// No missed wake-up: every sleeper left asleep by `take_wakes`, asked
    /// at the instant it went to sleep, sleeps again.
    fn check_wakes(&mut self, t: &mut Tgt) {
        let w = t.take_wakes();
        for i in 0..SLEEPERS {
            if w.contains(i) {
                self.slept(i, false);
                continue;
            }
            if !t.is_asleep(i) || self.slept_at[usize::from(i)] != Some(self.now) {
                continue;
            }
            let again = match i {
                RECEIVER => {
                    if self.busy.is_none() {
                        continue;
                    }
                    t.poll_receiver() == RxStep::Sleep
                }
                APPLIER => {
                    let st = t.poll_applier(self.now);
                    if self.trace {
                        eprintln!("applier asked again: {st:?}, reads {:?}", self.reads);
                    }
                    matches!(st, ApplierStep::Sleep { .. })
                }
                SENDER => {
                    let now = self.now;
                    matches!(
                        t.poll_sender(&Crc, now, &mut self.out),
                        SenderStep::Sleep { .. }
                    )
                }
                LISTENER => matches!(t.poll_listener(self.now), ListenerStep::Sleep { .. }),
                LOCKER => matches!(t.lock_poll(self.now), LockReply::Wait { .. }),
                _ => true,
            };
            assert!(again, "sleeper {i} asleep with work: a missed wake-up");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let log_pages = 2 + usize::from(inp.b() % 16);
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
    let setup = inp.b();
    let with_secret = setup & 1 != 0;
    let cfg = TargetConfig {
        region_sectors: REGION,
        dev_sectors: DEV,
        ack_every: 1 + u32::from(setup >> 5),
        secret: if with_secret { Secret::new(KEY) } else { None },
    };
    let Ok(mut t) = Target::new(
        cfg,
        VecPages::new(log_pages),
        vec![WindowSlot::EMPTY; window],
        vec![0; buckets],
        vec![LockSlot::EMPTY; 6],
    ) else {
        return;
    };
    let align = [8usize, 512, 4096, 16][usize::from((setup >> 1) & 3)];
    if t.set_payload_align(align).is_err() {
        return;
    }
    t.set_block_size([0u32, 512, 4096, 0][usize::from((setup >> 3) & 3)]);
    // A new target, or one at generation 0xA1 (consistent or not).
    match inp.b() % 3 {
        0 => {}
        n => t.attach_generations(Generations { current: 0xA1, ..Default::default() }, n == 1),
    }
    t.start();
    let mut g = Glue {
        now: 0,
        conn: None,
        nonce: [0; 16],
        busy: None,
        issued: Vec::new(),
        digest_reqs: Vec::new(),
        reads: Vec::new(),
        slept_at: [None; SLEEPERS as usize],
        out: vec![0u8; SEND_FRAMES * MAX_CONTROL_FRAME],
        window,
        trace: std::env::var_os("FUZZ_TRACE").is_some(),
    };
    let mut frame = vec![0u8; HEADER_LEN + 64 * 512];
    let mut steps = 0;
    while let Some(op) = inp.byte() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        if g.trace {
            eprintln!(
                "op {} now {} conn {:?} {}",
                op % 20,
                g.now,
                g.conn,
                t.conn_state()
            );
        }
        match op % 20 {
            // The listener: accept, or an accept error.
            0 => match t.poll_listener(g.now) {
                ListenerStep::Accept => {
                    if inp.b() & 3 == 0 {
                        t.on_accept_error(g.now);
                    } else {
                        let mut random = [0u8; 32];
                        for (r, b) in random.iter_mut().zip(inp.take(32)) {
                            *r = *b;
                        }
                        match t.on_accept(g.now, random) {
                            Accept::Serve { conn } => {
                                assert!(g.conn.is_none(), "one connection at a time");
                                g.conn = Some(conn);
                                g.busy = None;
                            }
                            Accept::Refuse => {}
                        }
                    }
                }
                ListenerStep::Sleep { until } => {
                    g.until(until);
                    g.slept(LISTENER, true);
                }
                ListenerStep::Exit => assert!(t.is_stopping()),
            },
            // Raw bytes as one frame.
            1 => {
                let n = usize::from(inp.b()) * 2;
                let raw = inp.take(n).to_vec();
                g.frame(&mut t, raw, false);
            }
            // Raw bytes repaired to pass magic/version/CRC.
            2 => {
                let n = HEADER_LEN + usize::from(inp.b());
                let mut f = inp.take(n).to_vec();
                if f.len() >= HEADER_LEN {
                    f[0..4].copy_from_slice(&MAGIC.to_le_bytes());
                    f[4] = VERSION;
                    f[36..40].fill(0);
                    let mut hb = [0u8; HEADER_LEN];
                    hb.copy_from_slice(&f[..HEADER_LEN]);
                    let crc = frame_crc(&Crc, &hb, &f[HEADER_LEN..]);
                    f[32..36].copy_from_slice(&crc.to_le_bytes());
                }
                g.frame(&mut t, f, false);
            }
            // A well-formed source record near the expected seq (or a
            // PING), sometimes corrupted, sometimes on a stale connection.
            3..=6 => {
                let kind = [
                    Kind::Lock,
                    Kind::Unlock,
                    Kind::Write,
                    Kind::Flush,
                    Kind::Discard,
                    Kind::WriteZeroes,
                    Kind::Ping,
                    Kind::Write,
                    Kind::Sync,
                    Kind::DigestReq,
                ][usize::from(inp.b() % 10)];
                let mut h = Header::new(kind);
                let d = inp.byte().unwrap_or(1);
                h.seq = (t.received_seq() + 1)
                    .saturating_add(u64::from(d % 4))
                    .saturating_sub(1);
                let sel = inp.b();
                h.flags = u16::from(sel & 3);
                match kind {
                    Kind::Lock | Kind::Unlock => {
                        h.flags = 0;
                        h.sector = u64::from(inp.b() % 8);
                    }
                    Kind::Flush => h.flags = 0,
                    Kind::Sync => {
                        h.flags = 0;
                        h.sector = [0xA1, 0xB2, inp.u64()][usize::from(inp.b() % 3)];
                        h.count = u32::from(inp.b() % 3);
                    }
                    Kind::Ping => {
                        h.flags = 0;
                        h.seq = 0;
                    }
                    _ => {
                        h.sector = u64::from(inp.b()) * 16;
                        h.count = 1 + u32::from(inp.b() % 64);
                        if sel & 0x80 != 0 {
                            // Sometimes past the device end.
                            h.sector = DEV - 8;
                        }
                    }
                }
                if kind == Kind::Write {
                    h.len = h.count * 512;
                }
                let payload = vec![sel; h.len as usize];
                if let Ok(n) = encode_frame(&Crc, &h, &payload, &mut frame) {
                    let mut f = frame[..n].to_vec();
                    if sel & 0x40 != 0 && n > 0 {
                        let i = usize::from(inp.b()) % n;
                        f[i] ^= 1 << (sel % 8);
                    }
                    g.frame(&mut t, f, sel & 0x3f == 0x3f);
                }
            }
            // A HELLO with fuzzed fields (often valid), signed over the
            // last CHALLENGE (or not).
            7 | 8 => {
                let sel = inp.b();
                let sel2 = inp.b();
                let mut hello = Hello {
                    proto_version: if sel & 1 == 0 {
                        u32::from(VERSION)
                    } else {
                        u32::from(sel)
                    },
                    dev_sectors: if sel & 2 == 0 { DEV } else { inp.u64() },
                    region_sectors: if sel & 4 == 0 { REGION } else { u32::from(sel) },
                    generation: if sel & 8 == 0 {
                        1 + u64::from(sel2 & 1)
                    } else {
                        inp.u64()
                    },
                    last_applied: if sel & 16 == 0 {
                        t.applied_seq()
                    } else {
                        inp.u64()
                    },
                    nonce: [sel2; 16],
                    mac: [0; 32],
                    flags: if sel & 32 != 0 {
                        HELLO_FLAG_LOCK_SYNC
                    } else {
                        0
                    } | if sel2 & 2 != 0 {
                        HELLO_FLAG_SYNC_COMPLETION
                    } else {
                        0
                    },
                    block_size: if sel & 64 == 0 { 0 } else { 512 << (sel >> 7) },
                    // No generations, the target's own, or another pair's.
                    gens: Generations {
                        current: [0, 0xA1, 0xB2, inp.u64()][usize::from(inp.b() % 4)],
                        bitmap: [0, 0xA1, 0xB2][usize::from(inp.b() % 3)],
                        ..Default::default()
                    },
                };
                let key = if sel2 & 4 == 0 { Some(KEY) } else { None };
                let nonce = if sel2 & 8 == 0 { g.nonce } else { [sel; 16] };
                auth::sign(key, MacLabel::Hello, &nonce, &mut hello);
                let mut b = [0u8; MAX_CONTROL_FRAME];
                if let Ok(n) = encode_hello(&Crc, &hello, false, &mut b) {
                    g.frame(&mut t, b[..n].to_vec(), false);
                }
            }
            // The sender (its send ok or failed).
            9 | 10 => {
                let ok = inp.b() & 7 != 0;
                g.sender(&mut t, ok);
            }
            // The receiver under back-pressure.
            11 => {
                if let (Some(conn), Some(kept)) = (g.conn, g.busy.take()) {
                    match t.poll_receiver() {
                        RxStep::Retry => g.offer(&mut t, conn, kept),
                        RxStep::Sleep => {
                            g.busy = Some(kept);
                            g.slept(RECEIVER, true);
                        }
                        RxStep::Stop => g.recv_end(&mut t),
                    }
                }
            }
            // The applier.
            12 | 13 => g.applier(&mut t),
            // Complete one issued I/O.
            14 => {
                if !g.issued.is_empty() {
                    let sel = inp.b();
                    let seq = g.issued.swap_remove(usize::from(sel) % g.issued.len());
                    let status = match sel >> 6 {
                        0 | 1 => IoStatus::Ok,
                        2 => IoStatus::Failed,
                        _ => IoStatus::Unsupported,
                    };
                    if let Some(i) = g.digest_reqs.iter().position(|&s| s == seq) {
                        g.digest_reqs.swap_remove(i);
                        let d = (status == IoStatus::Ok).then_some([sel; 32]);
                        assert!(t.digest_done(seq, d, g.now));
                        assert!(!t.digest_done(seq, d, g.now), "completed twice");
                    } else {
                        assert!(t.io_done(seq, status, g.now));
                    }
                    assert!(!t.io_done(seq, IoStatus::Ok, g.now), "completed twice");
                }
            }
            // Local locks, `lock` messages and reads.
            15 => {
                let sel = inp.b();
                let sector = u64::from(inp.b()) * 32;
                let count = u64::from(inp.b());
                match sel & 7 {
                    0 | 1 => {
                        // The region filter local_lock consults never
                        // misses a write the exact walk of the log sees.
                        if count > 0 && sector + count <= DEV {
                            let shift = REGION.trailing_zeros();
                            let (first, last) = (sector >> shift, (sector + count - 1) >> shift);
                            let log = t.commit_log();
                            let exact =
                                log.pending_in_range(first << shift, (last - first + 1) << shift);
                            assert!(!exact || log.may_be_pending(first, last));
                        }
                        let _ = t.local_lock(sector, count);
                    }
                    2 => t.local_unlock(sector, count),
                    3 => {
                        if let LockReply::Wait { until } = t.lock_request(sector, count, g.now) {
                            g.until(Some(until));
                            g.slept(LOCKER, true);
                        }
                    }
                    4 => {
                        if let LockReply::Wait { until } = t.lock_poll(g.now) {
                            g.until(Some(until));
                            g.slept(LOCKER, true);
                        }
                    }
                    5 => {
                        let _ = t.lock_release(sector, count);
                    }
                    _ => {
                        if count > 0 && sector + count <= DEV && !t.read_arrives(sector, count) {
                            g.reads.push((sector, count));
                        }
                    }
                }
            }
            // Time passes (up to about a minute).
            16 => {
                let ms = u64::from(inp.b()) << (inp.b() % 9);
                g.now = g.now.saturating_add(ms.max(1) * MS);
            }
            // The connection drops (the receiver reads an error).
            17 => {
                if inp.b() & 1 == 0 {
                    g.recv_end(&mut t);
                } else {
                    t.fault_drop();
                }
            }
            // Suspend and resume.
            18 => match inp.b() % 4 {
                0 => t.begin_suspend(g.now),
                1 => t.cancel_suspend(),
                2 => {
                    // Stop: the threads exit once the device I/O ended.
                    t.stop();
                    for seq in g.issued.drain(..) {
                        if g.digest_reqs.contains(&seq) {
                            assert!(t.digest_done(seq, None, g.now));
                        } else {
                            assert!(t.io_done(seq, IoStatus::Ok, g.now));
                        }
                    }
                    g.digest_reqs.clear();
                    assert_eq!(t.poll_applier(g.now), ApplierStep::Exit);
                    for _ in g.reads.drain(..) {
                        t.read_failed();
                    }
                    g.recv_end(&mut t);
                    t.stopped();
                    g.slept_at = [None; SLEEPERS as usize];
                }
                _ => t.start(),
            },
            // Log a refusal, read status.
            _ => {
                let _ = t.take_refusal_log();
                let _ = t.conn_state();
                let _ = t.failing();
            }
        }
        g.check_wakes(&mut t);
        assert!(t.applied_seq() <= t.received_seq());
        assert!(t.acked_seq() <= t.applied_seq());
        let log = t.commit_log();
        assert!(!log.is_empty() || log.region_filter().is_clear());
        assert!(log.in_flight() <= g.issued.len());
    }
});

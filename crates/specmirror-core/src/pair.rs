//! A source and a target joined by an in-memory connection, driven
//! through their thread steps one after another, for unit tests, benches
//! and fuzzing. Not part of the kernel module.
//!
//! Every step runs exactly as a kernel thread would run it, but in a
//! fixed order and with instant I/O: the source's sender, the target's
//! receiver, applier (device I/O completes at once, optionally into a
//! byte image) and sender, the source's receiver and worker. The
//! simulator (`crates/specmirror-sim`) runs the same steps under random
//! timing and interleavings; this driver is for tests that want to say
//! "now connect" and "now deliver".

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use crate::log::commit::WindowSlot;
use crate::log::locks::LockSlot;
use crate::log::pages::Pages;
use crate::log::record::{decode_header, Crc32c, Kind, HEADER_LEN, SECTOR_SIZE};
use crate::transport::proto::hot::HotSlot;
use crate::transport::proto::inflight::{Completed, InflightSlot};
use crate::transport::proto::source::{SenderStep as SStep, Source, WorkerStep};
use crate::transport::proto::target::{
    Accept, ApplierStep, IoStatus, RxVerdict as TRx, SenderStep as TStep, Target, SEND_FRAMES,
};
use crate::transport::proto::wake::{Instant, MS};
use crate::transport::proto::{CONN_RANDOM, MAX_CONTROL_FRAME};
use crate::vec_pages::VecPages;

/// The source over heap storage.
pub type Src = Source<VecPages, Vec<HotSlot>, Vec<InflightSlot>>;
/// The target over heap storage.
pub type Tgt = Target<VecPages, Vec<WindowSlot>, Vec<u32>, Vec<LockSlot>>;

/// Copies the bytes of page pieces out of `pages`.
pub fn gather<P: Pages>(pages: &P, pieces: impl Iterator<Item = (usize, usize, usize)>, out: &mut Vec<u8>) {
    for (pi, off, len) in pieces {
        if let Some(p) = pages.page(pi).and_then(|p| p.get(off..off + len)) {
            out.extend_from_slice(p);
        }
    }
}

/// Splits a byte stream into whole frames (a trailing partial frame stays).
fn take_frames(stream: &mut VecDeque<u8>, out: &mut VecDeque<Vec<u8>>) {
    loop {
        if stream.len() < HEADER_LEN {
            return;
        }
        let hdr: Vec<u8> = stream.iter().take(HEADER_LEN).copied().collect();
        let len = match decode_header(&hdr) {
            Ok((h, _)) => h.frame_len(),
            // Garbage: hand it over whole; the peer's decoder rejects it.
            Err(_) => stream.len(),
        };
        if stream.len() < len {
            return;
        }
        out.push_back(stream.drain(..len).collect());
    }
}

/// A source and a target over one in-memory connection.
pub struct Pair<C: Crc32c> {
    /// The source.
    pub s: Src,
    /// The target.
    pub t: Tgt,
    /// The CRC both use.
    pub c: C,
    /// Virtual time.
    pub now: Instant,
    /// Whether a connection attempt succeeds.
    pub reachable: bool,
    /// The target's data device, if kept (byte image, `dev_sectors` long).
    pub disk: Option<Vec<u8>>,
    /// Host writes that completed, in order.
    pub completed: Vec<Completed>,
    /// Frames in flight to the target, then to the source.
    pub to_t: VecDeque<Vec<u8>>,
    /// Frames in flight to the source.
    pub to_s: VecDeque<Vec<u8>>,
    /// The target's receiver waits for room (it keeps the frame at the
    /// front of `to_t`).
    pub t_busy: bool,
    /// Hold back the target's device I/O (records stay issued).
    pub hold_io: bool,
    /// Device I/O handed out and not completed (with `hold_io`).
    pub issued: Vec<u64>,
    /// The source's data device as its resync reads see it, if kept
    /// (without it, resync reads fail).
    pub src_disk: Option<Vec<u8>>,
    /// The digest of the piece the verify engine read.
    verify_digest: Option<[u8; 32]>,
    resync_buf: Vec<u8>,
    s_conn: Option<u64>,
    t_conn: Option<u64>,
    t_buf: Vec<u8>,
    rand: u8,
}

impl<C: Crc32c> Pair<C> {
    /// Joins `s` and `t` (both started here, at time 0).
    pub fn new(mut s: Src, mut t: Tgt, c: C) -> Self {
        s.start(0);
        t.start();
        Pair {
            s,
            t,
            c,
            now: 0,
            reachable: true,
            disk: None,
            completed: Vec::new(),
            to_t: VecDeque::new(),
            to_s: VecDeque::new(),
            t_busy: false,
            hold_io: false,
            issued: Vec::new(),
            src_disk: None,
            verify_digest: None,
            resync_buf: Vec::new(),
            s_conn: None,
            t_conn: None,
            t_buf: vec![0; SEND_FRAMES * MAX_CONTROL_FRAME],
            rand: 0,
        }
    }

    /// Keeps a byte image of the target's device and applies writes to it.
    pub fn with_disk(mut self) -> Self {
        let bytes = usize::try_from(self.t.config().dev_sectors).unwrap_or(0) * SECTOR_SIZE;
        self.disk = Some(vec![0; bytes]);
        self
    }

    fn random(&mut self) -> [u8; CONN_RANDOM] {
        self.rand = self.rand.wrapping_add(1);
        [self.rand; CONN_RANDOM]
    }

    /// Moves time forward.
    pub fn advance(&mut self, dt: Instant) {
        self.now = self.now.saturating_add(dt);
    }

    /// Cuts the connection as a failed link would (both ends see errors).
    pub fn cut(&mut self) {
        self.to_t.clear();
        self.to_s.clear();
        self.t_busy = false;
        if let Some(c) = self.s_conn.take() {
            self.s
                .on_recv_error(c, crate::transport::proto::source::RecvError::Io);
        }
        if let Some(c) = self.t_conn.take() {
            self.t.on_recv_end(c, false);
        }
    }

    /// One pass over every thread; true if anything happened.
    pub fn step(&mut self) -> bool {
        let mut any = false;
        any |= self.source_sender();
        any |= self.target_receiver();
        any |= self.target_applier();
        any |= self.target_sender();
        any |= self.source_receiver();
        any |= self.source_worker();
        any
    }

    /// Steps until nothing happens (at most `limit` passes); returns the
    /// passes made.
    pub fn run(&mut self, limit: usize) -> usize {
        let mut n = 0;
        while n < limit && self.step() {
            n += 1;
        }
        n
    }

    /// Steps until quiet, then keeps time moving by `dt` until `done`
    /// holds (at most `rounds` times); true if it did.
    pub fn run_until(&mut self, dt: Instant, rounds: usize, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..rounds {
            self.run(10_000);
            if done(self) {
                return true;
            }
            self.advance(dt);
        }
        self.run(10_000);
        done(self)
    }

    /// Connects and shakes hands (time moves as needed for the back-off).
    pub fn connect(&mut self) -> bool {
        self.run_until(10 * MS, 1000, |p| {
            p.s.link_state() == crate::transport::proto::source::LinkState::Connected
        })
    }

    fn source_sender(&mut self) -> bool {
        let step = self.s.poll_sender(&self.c, self.now);
        match step {
            SStep::Exit | SStep::Sleep { .. } => false,
            SStep::Connect { conn } => {
                if !self.reachable {
                    self.s.on_connect(conn, None, self.now);
                    return true;
                }
                let r = self.random();
                match self.t.on_accept(self.now, r) {
                    Accept::Serve { conn: tc } => {
                        self.to_t.clear();
                        self.to_s.clear();
                        self.t_busy = false;
                        let r = self.random();
                        if self.s.on_connect(conn, Some(r), self.now) {
                            self.s_conn = Some(conn);
                            self.t_conn = Some(tc);
                        } else {
                            self.t.on_recv_end(tc, false);
                        }
                    }
                    Accept::Refuse => {
                        self.s.on_connect(conn, None, self.now);
                    }
                }
                true
            }
            SStep::Control { conn, frame } => {
                let ok = self.s_conn == Some(conn);
                if ok {
                    self.to_t.push_back(frame.as_bytes().to_vec());
                }
                self.s.on_sent(conn, ok, self.now);
                true
            }
            SStep::Records { conn, batch } => {
                let ok = self.s_conn == Some(conn);
                if ok {
                    let views: Vec<_> = self.s.batch_views(&batch).collect();
                    for v in views {
                        let mut f = Vec::with_capacity(v.frame_len);
                        if batch.corrupt == Some(v.seq) {
                            f.extend_from_slice(&self.s.corrupt_header(v.seq));
                            let mut body = Vec::new();
                            gather(self.s.ring().pages(), v.chunks(), &mut body);
                            f.extend_from_slice(body.get(HEADER_LEN..).unwrap_or(&[]));
                        } else {
                            gather(self.s.ring().pages(), v.chunks(), &mut f);
                        }
                        self.to_t.push_back(f);
                    }
                }
                self.s.on_sent(conn, ok, self.now);
                true
            }
            SStep::Close { conn } => {
                if self.s_conn == Some(conn) {
                    self.s_conn = None;
                    self.to_t.clear();
                    self.to_s.clear();
                    self.t_busy = false;
                    if let Some(tc) = self.t_conn.take() {
                        self.t.on_recv_end(tc, false);
                    }
                }
                self.s.on_shutdown(conn);
                self.s.on_closed(conn, self.now);
                true
            }
        }
    }

    fn target_receiver(&mut self) -> bool {
        let Some(tc) = self.t_conn else { return false };
        if self.t_busy {
            match self.t.poll_receiver() {
                crate::transport::proto::target::RxStep::Retry => self.t_busy = false,
                crate::transport::proto::target::RxStep::Sleep => return false,
                crate::transport::proto::target::RxStep::Stop => {
                    self.t_conn = None;
                    self.t.on_recv_end(tc, false);
                    return true;
                }
            }
        }
        let mut any = false;
        while let Some(f) = self.to_t.pop_front() {
            any = true;
            match self.t.on_frame(&self.c, tc, &f, self.now) {
                // `on_frame` copies under the lock: it never asks for a fill.
                TRx::Continue | TRx::Fill { .. } => {}
                TRx::Busy => {
                    self.to_t.push_front(f);
                    self.t_busy = true;
                    return true;
                }
                TRx::Stop => {
                    self.t_conn = None;
                    self.t.on_recv_end(tc, false);
                    if let Some(sc) = self.s_conn {
                        self.s
                            .on_recv_error(sc, crate::transport::proto::source::RecvError::Io);
                    }
                    return true;
                }
            }
        }
        any
    }

    fn target_applier(&mut self) -> bool {
        match self.t.poll_applier(self.now) {
            ApplierStep::Exit | ApplierStep::Sleep { .. } => false,
            ApplierStep::FailReads => {
                while self.t.reads_waiting() > 0 {
                    self.t.read_failed();
                }
                true
            }
            ApplierStep::Reads => true,
            // The pair's disk has no volatile cache: a flush ends at once.
            ApplierStep::Flush { upto } => {
                self.t.flush_done(upto, true, self.now);
                true
            }
            ApplierStep::Issue => {
                for _ in 0..crate::transport::proto::target::APPLY_BATCH {
                    let Some(v) = self.t.poll_issue() else { break };
                    if self.hold_io {
                        self.issued.push(v.seq);
                        continue;
                    }
                    if v.header.kind == Kind::DigestReq {
                        // The target reads the range and answers its digest.
                        let d = self.range_digest(self.disk.as_deref(), v.header.sector, v.header.count);
                        self.t.digest_done(v.seq, d, self.now);
                        continue;
                    }
                    self.apply(&v);
                    self.t.io_done(v.seq, IoStatus::Ok, self.now);
                }
                true
            }
        }
    }

    /// Completes held device I/O `seq` (see `hold_io`).
    pub fn complete_io(&mut self, seq: u64, status: IoStatus) -> bool {
        let Some(i) = self.issued.iter().position(|s| *s == seq) else {
            return false;
        };
        self.issued.swap_remove(i);
        self.t.io_done(seq, status, self.now)
    }

    /// SHA-256 of `count` sectors at `sector` of `disk` (`None` without a
    /// disk or past its end: a read that fails).
    fn range_digest(&self, disk: Option<&[u8]>, sector: u64, count: u32) -> Option<[u8; 32]> {
        let a = usize::try_from(sector).ok()?.checked_mul(SECTOR_SIZE)?;
        let bytes = disk?.get(a..a.checked_add(count as usize * SECTOR_SIZE)?)?;
        Some(crate::transport::proto::auth::Sha256::digest(bytes))
    }

    fn apply(&mut self, v: &crate::log::commit::IssueView) {
        let Some(disk) = self.disk.as_mut() else { return };
        let h = v.header;
        let at = usize::try_from(h.sector).unwrap_or(usize::MAX).saturating_mul(SECTOR_SIZE);
        let n = h.count as usize * SECTOR_SIZE;
        let Some(dst) = disk.get_mut(at..at.saturating_add(n)) else { return };
        match h.kind {
            Kind::Write => {
                let mut data = Vec::with_capacity(n);
                gather(self.t.pages(), v.chunks(), &mut data);
                if data.len() == n {
                    dst.copy_from_slice(&data);
                }
            }
            Kind::Discard | Kind::WriteZeroes => dst.fill(0),
            _ => {}
        }
    }

    fn target_sender(&mut self) -> bool {
        let mut buf = core::mem::take(&mut self.t_buf);
        let step = self.t.poll_sender(&self.c, self.now, &mut buf);
        let r = match step {
            TStep::Exit | TStep::Sleep { .. } => false,
            TStep::Send { conn, len } => {
                let ok = self.t_conn == Some(conn);
                if ok {
                    let mut stream: VecDeque<u8> = buf.get(..len).unwrap_or(&[]).iter().copied().collect();
                    take_frames(&mut stream, &mut self.to_s);
                }
                self.t.on_sent(conn, ok, self.now);
                true
            }
            TStep::Close { conn } => {
                self.t.on_shutdown(conn);
                if self.t_conn == Some(conn) {
                    self.t_conn = None;
                    self.to_t.clear();
                    self.to_s.clear();
                    self.t_busy = false;
                    self.t.on_recv_end(conn, false);
                    if let Some(sc) = self.s_conn {
                        self.s
                            .on_recv_error(sc, crate::transport::proto::source::RecvError::Io);
                    }
                }
                true
            }
        };
        self.t_buf = buf;
        r
    }

    fn source_receiver(&mut self) -> bool {
        let Some(sc) = self.s_conn else { return false };
        let mut any = false;
        while let Some(f) = self.to_s.pop_front() {
            any = true;
            let v = self.s.on_frame(&self.c, sc, &f, self.now);
            while let Some(c) = self.s.poll_completed() {
                self.completed.push(c);
            }
            if v == crate::transport::proto::source::RxVerdict::Stop {
                break;
            }
        }
        any
    }

    fn source_worker(&mut self) -> bool {
        match self.s.poll_worker(self.now) {
            WorkerStep::Exit | WorkerStep::Sleep { .. } => false,
            WorkerStep::Shutdown { conn } => {
                self.s.on_shutdown(conn);
                true
            }
            WorkerStep::Complete | WorkerStep::Abandon => {
                while self.s.deferred_len() > 0 {
                    self.s.deferred_dropped();
                }
                while let Some(c) = self.s.poll_completed() {
                    self.completed.push(c);
                }
                true
            }
            WorkerStep::RepairRead(job) => {
                self.s.repair_read_done(job.seq, false);
                true
            }
            WorkerStep::RepairAppend { job, ok: _ } => {
                self.s.repair_failed(job.seq);
                true
            }
            // Reads from `src_disk` (they fail without one: the chunks
            // stay dirty).
            WorkerStep::ResyncRead(job) => {
                let a = usize::try_from(job.sector).unwrap_or(usize::MAX).saturating_mul(SECTOR_SIZE);
                let n = job.count as usize * SECTOR_SIZE;
                let got = self.src_disk.as_ref().and_then(|d| d.get(a..a.saturating_add(n)));
                self.resync_buf.clear();
                if let Some(b) = got {
                    self.resync_buf.extend_from_slice(b);
                }
                self.s.resync_read_ended(got.is_some());
                true
            }
            WorkerStep::ResyncAppend { ok, .. } => {
                if ok {
                    let data = core::mem::take(&mut self.resync_buf);
                    if let crate::transport::proto::source::Submit::Wait(_) =
                        self.s.resync(&self.c, |w| w.write(&data))
                    {
                        self.resync_buf = data;
                    }
                } else {
                    self.s.resync_failed();
                }
                true
            }
            WorkerStep::SyncEvent => true,
            // Reads from `src_disk` like the resync.
            WorkerStep::VerifyRead(job) => {
                let d = self.range_digest(self.src_disk.as_deref(), job.sector, job.count);
                self.verify_digest = d;
                self.s.verify_read_ended(d.is_some());
                true
            }
            WorkerStep::VerifyAppend { ok, .. } => {
                let d = if ok { self.verify_digest.take() } else { None };
                self.s.verify_append(&self.c, d);
                true
            }
            WorkerStep::AppendSync => {
                self.s.append_sync(&self.c);
                true
            }
            WorkerStep::SaveGens => {
                self.s.gens_saved(true, self.now);
                true
            }
            // The pair keeps no metadata device: saves succeed at once.
            WorkerStep::SaveBitmap { block } => {
                self.s.bitmap_saved(block, true, self.now);
                true
            }
            // Nor a volatile cache: a flush of the data device ends at once.
            WorkerStep::FlushData => {
                self.s.data_flushed(true, self.now);
                true
            }
            // Deferred writes belong to the test, which offers them again.
            WorkerStep::Deferred => false,
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The source's kernel threads. Each loop has the shape of dm-raid1's
//! `do_mirror`: under the lock, ask the machine for the next step (and
//! sleep while it says so), then one named function per kind of step,
//! doing its I/O with the lock dropped and reporting the result back.

use kernel::{
    alloc::{flags::GFP_KERNEL, KVec},
    c_str,
    prelude::*,
    sync::{Arc, CondVar},
    time::msecs_to_jiffies,
};

use super::{local_io, pieces_for, SourceDev, State, REPAIR_COOKIE, RESYNC_COOKIE, VERIFY_COOKIE};
use crate::log::meta::bitmap;
use crate::log::pages::{Pages, PAGE_SIZE};
use crate::log::record::HEADER_LEN;
use crate::log::ring::{Reserved, RingError, RingWriter};
use crate::transport::proto::auth::Sha256;
use crate::transport::proto::inflight::RepairJob;
use crate::transport::proto::source::{
    copies_inline, Batch, ControlFrame, RecvError, ResyncJob, RxVerdict, SenderStep, Submit, WorkerStep, DEFERRED_BATCH,
    SEND_BATCH_PIECES, VerifyJob
};
use crate::transport::proto::wake::Instant;
use crate::transport::proto::{sleep_ms, CONNECT_TIMEOUT_MS, MAX_CONTROL_FRAME};
use crate::transport::sys::bio::{BioList, BioView, BLK_STS_IOERR};
use crate::transport::sys::devio::{DevIo, IoOp};
use crate::transport::sys::frames;
use crate::transport::sys::net::Socket;
use crate::transport::sys::pages::KPages;
use crate::transport::sys::sync::IrqSpinGuard;
use crate::transport::sys::thread::Thread;
use crate::transport::sys::{self};

/// `BLK_STS_DM_REQUEUE`: dm holds the bio and resubmits it after resume
/// (valid during a noflush suspend only).
const BLK_STS_DM_REQUEUE: u8 = 11;

/// A `memalloc_noio_save` scope of the current thread, ended on drop.
struct NoIo(u32);

impl NoIo {
    fn begin() -> NoIo {
        // SAFETY: paired with `dmsm_noio_end` by `drop` on this thread.
        NoIo(unsafe { sys::raw::dmsm_noio_begin() })
    }
}

impl Drop for NoIo {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `dmsm_noio_begin` on this thread.
        unsafe { sys::raw::dmsm_noio_end(self.0) };
    }
}

impl SourceDev {
    /// Sleeps on `cv` until woken or `until` (the lock is dropped while
    /// asleep); the threads the machine named are woken first.
    fn sleep(&self, cv: &CondVar, g: &mut IrqSpinGuard<'_, State>, until: Option<Instant>, now: Instant) {
        self.end_section(g);
        match until {
            Some(t) => {
                let _ = cv.wait_interruptible_timeout(g, msecs_to_jiffies(sleep_ms(now, t)));
            }
            None => {
                let _ = cv.wait_interruptible(g);
            }
        }
    }

    // ------------------------------------------------------------ sender

    /// The sender: connect, shake hands, stream, keep alive, close.
    pub(super) fn sender_main(self: Arc<Self>) {
        let mut rx: Option<Thread> = None;
        let Ok(mut pieces) = KVec::<(*const u8, usize)>::with_capacity(SEND_BATCH_PIECES + 2, GFP_KERNEL) else {
            return;
        };
        let mut bad_hdr = [0u8; HEADER_LEN];
        loop {
            let step = {
                let mut g = self.st.lock();
                loop {
                    let now = sys::now();
                    match g.m.poll_sender(&self.crc, now) {
                        SenderStep::Sleep { until } => self.sleep(&self.tx_wait, &mut g, until, now),
                        step => {
                            self.end_section(&mut g);
                            break step;
                        }
                    }
                }
            };
            match step {
                SenderStep::Exit => break,
                SenderStep::Connect { conn } => self.connect(conn, &mut rx),
                SenderStep::Control { conn, frame } => self.send_control(conn, &frame),
                SenderStep::Records { conn, batch } => self.send_records(conn, &batch, &mut pieces, &mut bad_hdr),
                SenderStep::Close { conn } => self.close(conn, &mut rx),
                SenderStep::Sleep { .. } => {}
            }
        }
        // Stopping: the socket is shut down (stop does it); the receiver
        // returns.
        drop(rx);
    }

    /// Opens connection `conn` and starts its receiver.
    fn connect(self: &Arc<Self>, conn: u64, rx: &mut Option<Thread>) {
        // The previous receiver has returned (closed before).
        drop(rx.take());
        let sock = Socket::connect(&self.ns, &self.cfg.endpoint, CONNECT_TIMEOUT_MS).and_then(|s| Ok(Arc::new(s, GFP_KERNEL)?));
        let random = frames::random();
        let wanted = self.with(|g| {
            let ok = g.m.on_connect(conn, sock.as_ref().ok().map(|_| random), sys::now());
            if let (true, Ok(s)) = (ok, sock.as_ref()) {
                g.sock = Some((conn, s.clone()));
            }
            ok
        });
        let Ok(sock) = sock else { return };
        if !wanted {
            sock.shutdown();
            return;
        }
        let d = self.clone();
        let s = sock.clone();
        match Thread::spawn(c_str!("specmirror-rx"), move || d.receiver_main(conn, s)) {
            Ok(t) => *rx = Some(t),
            Err(_) => {
                // No receiver: the connection cannot work; close it.
                self.with(|g| g.m.on_recv_error(conn, RecvError::Io));
            }
        }
        self.events.raise();
    }

    /// Sends a control frame (HELLO, PING) on `conn`.
    fn send_control(&self, conn: u64, frame: &ControlFrame) {
        let sock = self.with(|g| Self::sock_of(g, conn));
        let ok = sock.as_ref().is_some_and(|s| s.send_all(frame.as_bytes()).is_ok());
        drop(sock);
        self.with(|g| g.m.on_sent(conn, ok, sys::now()));
    }

    /// Sends a batch of records straight from the ring's pages.
    fn send_records(&self, conn: u64, batch: &Batch, pieces: &mut KVec<(*const u8, usize)>, bad_hdr: &mut [u8; HEADER_LEN]) {
        clear(pieces);
        let sock = self.with(|g| {
            let pages = g.m.ring().pages();
            for v in g.m.batch_views(batch) {
                let mut skip = 0usize;
                if batch.corrupt == Some(v.seq) {
                    // Fault injection: this header goes out from a copy
                    // with a CRC bit flipped.
                    *bad_hdr = g.m.corrupt_header(v.seq);
                    let _ = pieces.push((bad_hdr.as_ptr(), HEADER_LEN), GFP_KERNEL);
                    skip = HEADER_LEN;
                }
                for (pi, off, len) in v.chunks() {
                    let Some(base) = pages.addr(pi) else { break };
                    let d = skip.min(len);
                    skip -= d;
                    if len > d {
                        // Within capacity: the machine bounds a batch's pieces.
                        let _ = pieces.push((base.wrapping_add(off + d), len - d), GFP_KERNEL);
                    }
                }
            }
            Self::sock_of(g, conn)
        });
        let ok = match &sock {
            // SAFETY: the pieces point into ring pages that live as long as
            // the device and hold the batch's records, which the machine
            // keeps in place until `on_sent` ends the batch's lease
            // (whatever ACK arrives meanwhile); `bad_hdr` is ours until
            // this returns.
            Some(s) => unsafe { s.send_raw(pieces) }.is_ok(),
            None => false,
        };
        drop(sock);
        self.with(|g| g.m.on_sent(conn, ok, sys::now()));
    }

    /// Closes connection `conn`: shut down, wait for its receiver.
    fn close(&self, conn: u64, rx: &mut Option<Thread>) {
        let sock = self.with(|g| match g.sock.as_ref() {
            Some((c, _)) if *c == conn => g.sock.take().map(|(_, s)| s),
            _ => None,
        });
        if let Some(s) = &sock {
            s.shutdown();
        }
        drop(rx.take());
        // Released outside the spinlock: sock_release sleeps.
        drop(sock);
        self.with(|g| {
            g.m.on_shutdown(conn);
            g.m.on_closed(conn, sys::now());
        });
        self.events.raise();
    }

    // ---------------------------------------------------------- receiver

    /// One connection's receiver: frames from the target into the machine;
    /// ends the host writes they complete.
    fn receiver_main(self: Arc<Self>, conn: u64, sock: Arc<Socket>) {
        let mut buf = [0u8; MAX_CONTROL_FRAME];
        loop {
            let r = frames::recv_frame(&sock, &mut buf);
            let mut done = BioList::new();
            let v = self.with(|g| {
                let v = match r {
                    Ok(n) => g.m.on_frame(&self.crc, conn, buf.get(..n).unwrap_or(&[]), sys::now()),
                    Err(frames::RecvError::Io) => {
                        g.m.on_recv_error(conn, RecvError::Io);
                        RxVerdict::Stop
                    }
                    Err(_) => {
                        g.m.on_recv_error(conn, RecvError::Corrupt);
                        RxVerdict::Stop
                    }
                };
                Self::take_completed(g, &mut done);
                v
            });
            Self::end_completed(&mut done);
            if v == RxVerdict::Stop {
                break;
            }
        }
    }

    // ------------------------------------------------------------ worker

    /// The worker: link deadlines, deferred writes, completions, repairs,
    /// the suspend's grace.
    pub(super) fn worker_main(self: Arc<Self>) {
        // This thread serves the I/O path (deferred writes, repairs): none
        // of its allocations may recurse into block I/O.
        let _noio = NoIo::begin();
        let mut buf: Option<KPages> = None;
        let mut rbuf: Option<KPages> = None;
        let mut vbuf: Option<KPages> = None;
        loop {
            let step = {
                let mut g = self.st.lock();
                loop {
                    let now = sys::now();
                    match g.m.poll_worker(now) {
                        WorkerStep::Sleep { until } => self.sleep(&self.work_wait, &mut g, until, now),
                        step => {
                            self.end_section(&mut g);
                            break step;
                        }
                    }
                }
            };
            match step {
                WorkerStep::Exit => break,
                WorkerStep::Shutdown { conn } => self.shutdown(conn),
                WorkerStep::Abandon => self.abandon(),
                WorkerStep::Complete => self.complete(),
                WorkerStep::RepairRead(job) => self.repair_read(&job, &mut buf),
                WorkerStep::RepairAppend { job, ok } => self.repair_append(&job, ok, &buf),
                WorkerStep::SaveBitmap { block } => self.save_bitmap(block),
                WorkerStep::FlushData => self.flush_data(),
                WorkerStep::SaveGens => self.save_gens(),
                WorkerStep::AppendSync => self.with(|g| g.m.append_sync(&self.crc)),
                WorkerStep::VerifyRead(job) => {
                    if !self.read_back(job.sector, u64::from(job.count), VERIFY_COOKIE, &mut vbuf) {
                        // No buffer now: the piece counts as unread.
                        self.with(|g| g.m.verify_read_ended(false));
                    }
                }
                WorkerStep::VerifyAppend { job, ok } => self.verify_append(&job, ok, &vbuf),
                WorkerStep::SyncEvent => self.sync_event(),
                WorkerStep::ResyncRead(job) => self.resync_read(&job, &mut rbuf),
                WorkerStep::ResyncAppend { job, ok } => self.resync_append(&job, ok, &rbuf),
                WorkerStep::Deferred => self.retry_deferred(),
                WorkerStep::Sleep { .. } => {}
            }
        }
    }

    /// Shuts connection `conn`'s socket down: a send blocked on a dead
    /// link fails, and the sender closes.
    fn shutdown(&self, conn: u64) {
        let sock = self.with(|g| Self::sock_of(g, conn));
        if let Some(s) = &sock {
            s.shutdown();
        }
        drop(sock);
        self.with(|g| g.m.on_shutdown(conn));
    }

    /// Ends the host writes the machine completes.
    fn complete(&self) {
        let mut done = BioList::new();
        self.with(|g| Self::take_completed(g, &mut done));
        Self::end_completed(&mut done);
    }

    /// The suspend's grace ran out: deferred writes go back to dm (a
    /// noflush suspend) or fail; completions end.
    fn abandon(&self) {
        let mut out = BioList::new();
        let mut done = BioList::new();
        self.with(|g| {
            while let Some(b) = g.deferred.pop_front() {
                g.m.deferred_dropped();
                out.push_back(b);
            }
            Self::take_completed(g, &mut done);
        });
        let status = if self.target.noflush_suspending() { BLK_STS_DM_REQUEUE } else { BLK_STS_IOERR };
        let n = out.len();
        while let Some(b) = out.pop_front() {
            b.end(status);
        }
        if n > 0 {
            pr_warn!(
                "specmirror: source for {}: suspend could not wait for the link: {} waiting writes {}\n",
                self.cfg.endpoint,
                n,
                if status == BLK_STS_IOERR { "failed" } else { "requeued" }
            );
        }
        Self::end_completed(&mut done);
    }

    /// Offers the deferred writes again, in order, each with a local bio
    /// allocated first (this thread may sleep for one).
    fn retry_deferred(&self) {
        for _ in 0..DEFERRED_BATCH {
            let Some(b) = self.with(|g| g.deferred.pop_front()) else { return };
            let Some(hw) = super::host_write(b.op(), b.sector(), b.sectors(), b.is_preflush(), b.is_fua()) else {
                self.with(|g| g.m.deferred_dropped());
                b.end(BLK_STS_IOERR);
                continue;
            };
            let Some(mut io) = self.bios.prepare(&self.data, &local_io(&hw), pieces_for(hw.count), false) else {
                // Cannot happen (GFP_NOIO from a pool); try again later.
                self.with(|g| g.deferred.push_front(b));
                return;
            };
            let mut b = Some(b);
            let mut to_fill = None;
            let r = self.with(|g| {
                let Some(bio) = b.take() else { return Submit::Wait(crate::transport::proto::source::WaitReason::Queued) };
                let r = Self::offer(g, &self.crc, &hw, &bio, true);
                match r {
                    Submit::Accepted(seq) => to_fill = self.arm_local(g, seq, bio, &mut io),
                    Submit::Wait(_) => g.deferred.push_front(bio),
                    Submit::Invalid(_) => {
                        g.invalid_bios = g.invalid_bios.saturating_add(1);
                        b = Some(bio);
                    }
                }
                r
            });
            if let Some((res, bio)) = to_fill {
                self.fill_and_publish(res, bio);
            }
            match r {
                Submit::Accepted(_) => io.submit(),
                Submit::Wait(_) => return,
                Submit::Invalid(_) => {
                    if let Some(bio) = b {
                        bio.end(BLK_STS_IOERR);
                    }
                }
            }
        }
    }

    /// Saves bitmap block `block` to the metadata device: its bits are
    /// copied a piece at a time, each under the state lock (no page-sized
    /// copy with interrupts off), into the metadata buffer, which the
    /// metadata lock keeps ours until the durable write ended.
    pub(super) fn save_bitmap(&self, block: u64) {
        let r = self.meta.lock().save_bitmap_block(block, |page| {
            let mut ok = true;
            let mut off = 0;
            while off < bitmap::BITS_BYTES {
                let len = SAVE_PIECE.min(bitmap::BITS_BYTES - off);
                let at = bitmap::HEADER_LEN + off;
                match page.get_mut(at..at + len) {
                    Some(dst) => ok &= self.with(|g| g.m.bitmap_copy(block, off, dst)),
                    None => ok = false,
                }
                off += len;
            }
            ok
        });
        let errors = self.with(|g| {
            g.m.bitmap_saved(block, r.is_ok(), sys::now());
            g.m.bitmap_save_errors()
        });
        if let Err(e) = r {
            if errors.is_power_of_two() {
                pr_err!(
                    "specmirror: source for {}: cannot save dirty bitmap block {} to the metadata device ({:?}, {} failures); retrying\n",
                    self.cfg.endpoint, block, e, errors
                );
            }
        }
    }

    /// Flushes the data device's volatile cache for the activity log,
    /// then tells the machine how it went.
    pub(super) fn flush_data(&self) {
        let r = self.data.flush();
        let errors = self.with(|g| {
            g.m.data_flushed(r.is_ok(), sys::now());
            g.m.activity_stats().map_or(0, |a| a.flush_errors)
        });
        if let Err(e) = r {
            if errors.is_power_of_two() {
                pr_err!(
                    "specmirror: source for {}: cannot flush the data device for the activity log ({:?}, {} failures); retrying\n",
                    self.cfg.endpoint, e, errors
                );
            }
        }
    }

    /// Writes the superblock with the machine's generations (the next of
    /// its two copies), then tells the machine how it went.
    pub(super) fn save_gens(&self) {
        let Some(gens) = self.with(|g| g.m.gens_copy()) else {
            return;
        };
        let r = self.meta.lock().save_superblock(gens, false);
        let errors = self.with(|g| {
            g.m.gens_saved(r.is_ok(), sys::now());
            g.m.gen_status().map_or(0, |s| s.save_errors)
        });
        if let Err(e) = r {
            if errors.is_power_of_two() {
                pr_err!(
                    "specmirror: source for {}: cannot save the superblock to the metadata device ({:?}, {} failures); retrying\n",
                    self.cfg.endpoint, e, errors
                );
            }
        }
    }

    /// The saves the worker makes before it exits, for a device whose
    /// threads do not run (stopped, or never started).
    pub(super) fn save_stopped(&self) {
        // Once: stop() gives a failed save one more try.
        self.with(|g| g.m.stop());
        loop {
            let step = self.with(|g| g.m.poll_worker(sys::now()));
            match step {
                WorkerStep::SaveBitmap { block } => self.save_bitmap(block),
                WorkerStep::FlushData => self.flush_data(),
                WorkerStep::SaveGens => self.save_gens(),
                _ => return,
            }
        }
    }

    /// A sync started or ended: a dm event, and a line in the log.
    fn sync_event(&self) {
        let st = self.with(|g| g.m.resync_stats());
        if let Some(st) = st {
            if st.dirty > 0 {
                pr_info!("specmirror: source for {}: resync of {} chunks started\n", self.cfg.endpoint, st.dirty);
            } else {
                pr_info!("specmirror: source for {}: resync complete ({} chunks)\n", self.cfg.endpoint, st.done);
            }
        }
        self.events.raise();
    }

    /// Reads a failed write's range back into `buf` (allocated on first
    /// use); its end comes to `io_done` with the repair cookie.
    fn repair_read(&self, job: &RepairJob, buf: &mut Option<KPages>) {
        if !self.read_back(job.sector, job.count, REPAIR_COOKIE, buf) {
            self.with(|g| g.m.repair_wait(sys::now()));
        }
    }

    /// Reads a piece of a dirty chunk into `buf` (allocated on first use);
    /// its end comes to `io_done` with the resync cookie.
    fn resync_read(&self, job: &ResyncJob, buf: &mut Option<KPages>) {
        if !self.read_back(job.sector, u64::from(job.count), RESYNC_COOKIE, buf) {
            self.with(|g| g.m.resync_wait(sys::now()));
        }
    }

    /// Reads `count` sectors at `sector` of the data device into `buf`,
    /// grown as needed; the end comes to `io_done` with `cookie`. False
    /// when no buffer could be had (nothing was submitted).
    fn read_back(&self, sector: u64, count: u64, cookie: u64, buf: &mut Option<KPages>) -> bool {
        let bytes = usize::try_from(count).unwrap_or(usize::MAX).saturating_mul(512);
        let npages = bytes.div_ceil(PAGE_SIZE);
        if buf.as_ref().map_or(0, |b| b.bytes()) < bytes {
            *buf = None;
            // GFP_KERNEL in this thread's memalloc_noio scope.
            match KPages::new(npages, GFP_KERNEL) {
                Ok(p) => *buf = Some(p),
                Err(_) => return false,
            }
        }
        let Some(pages) = buf.as_ref() else { return false };
        let io = DevIo { op: IoOp::Read, preflush: false, fua: false, sector, sectors: count as u32 };
        let Some(mut bio) = self.bios.prepare(&self.data, &io, npages, false) else {
            self.bios.fail(cookie);
            return true;
        };
        bio.set_cookie(cookie);
        let pieces = (0..npages).filter_map(|i| {
            let len = bytes.saturating_sub(i * PAGE_SIZE).min(PAGE_SIZE);
            pages.page_ptr(i).map(|p| (p, 0, len))
        });
        // SAFETY: `buf` is this thread's; the machine keeps the worker from
        // returning (and so from freeing it) until the read ended, and the
        // worker touches it again only at the append step, after the end.
        unsafe { bio.add_pages(pieces) };
        bio.submit();
        true
    }

    /// Writes the first `bytes` of `pages` into a ring record (a short
    /// one, under the lock: `copies_inline`).
    fn fill_from(w: &mut RingWriter<'_, KPages>, pages: &KPages, bytes: usize) -> Result<(), RingError> {
        for i in 0..bytes.div_ceil(PAGE_SIZE) {
            let len = bytes.saturating_sub(i * PAGE_SIZE).min(PAGE_SIZE);
            let page = Pages::page(pages, i).ok_or(RingError::LengthMismatch)?;
            w.write(page.get(..len).ok_or(RingError::LengthMismatch)?)?;
        }
        Ok(())
    }

    /// Copies the first `bytes` of `pages` (a read buffer of this thread)
    /// into record `r`, reserved by the caller under the lock, outside the
    /// lock, and publishes it.
    fn publish_from(&self, r: Option<Reserved>, pages: &KPages, bytes: usize) {
        let Some(r) = r else { return };
        // SAFETY: the caller reserved `r` under the lock and nothing else
        // has it; it is published below, after the copier is gone.
        let mut w = unsafe { self.fill.copier(&r, &self.crc) };
        for i in 0..bytes.div_ceil(PAGE_SIZE) {
            let len = bytes.saturating_sub(i * PAGE_SIZE).min(PAGE_SIZE);
            if let Some(p) = Pages::page(pages, i).and_then(|p| p.get(..len)) {
                w.write(p);
            }
        }
        let (crc, full) = w.finish();
        if !full {
            pr_err!("specmirror: source for {}: record {} was filled with zeros\n", self.cfg.endpoint, r.seq);
        }
        self.with(|g| g.m.publish(r.seq, crc));
    }

    /// Appends the piece `job` from what the read left in `buf` (or gives
    /// the piece up when the read failed: its chunk stays dirty).
    fn resync_append(&self, job: &ResyncJob, ok: bool, buf: &Option<KPages>) {
        let bytes = job.count as usize * 512;
        let mut res = None;
        let r = self.with(|g| match buf.as_ref().filter(|_| ok) {
            Some(pages) if copies_inline(bytes) => Some(g.m.resync(&self.crc, |w| Self::fill_from(w, pages, bytes))),
            Some(_) => {
                let r = g.m.resync_reserved(&self.crc);
                if let Submit::Accepted(seq) = r {
                    res = g.m.reserved(seq);
                }
                Some(r)
            }
            None => {
                g.m.resync_failed();
                None
            }
        });
        if let Some(pages) = buf.as_ref() {
            self.publish_from(res, pages, bytes);
        }
        if r.is_none() {
            let errors = self.with(|g| g.m.resync_stats().map_or(0, |s| s.read_errors));
            if errors.is_power_of_two() {
                pr_err!(
                    "specmirror: source for {}: resync read failed at {} (+{}); the chunk stays dirty and is retried ({} read errors)\n",
                    self.cfg.endpoint, job.sector, job.count, errors
                );
            }
        }
    }

    /// Hashes the piece `job` that the read left in `buf` (outside the
    /// lock: up to a chunk of SHA-256) and appends its DIGEST_REQ.
    fn verify_append(&self, job: &VerifyJob, ok: bool, buf: &Option<KPages>) {
        let bytes = job.count as usize * 512;
        let digest = buf.as_ref().filter(|_| ok).map(|pages| {
            let mut h = Sha256::new();
            for i in 0..bytes.div_ceil(PAGE_SIZE) {
                let len = bytes.saturating_sub(i * PAGE_SIZE).min(PAGE_SIZE);
                if let Some(p) = Pages::page(pages, i).and_then(|p| p.get(..len)) {
                    h.update(p);
                }
            }
            h.finish()
        });
        self.with(|g| g.m.verify_append(&self.crc, digest));
    }

    /// Appends the repair of `job` from what the read-back left in `buf`.
    fn repair_append(&self, job: &RepairJob, ok: bool, buf: &Option<KPages>) {
        let bytes = usize::try_from(job.count).unwrap_or(usize::MAX).saturating_mul(512);
        let mut res = None;
        let r = self.with(|g| {
            let Some(pages) = buf.as_ref().filter(|_| ok) else {
                g.m.repair_failed(job.seq);
                return None;
            };
            let r = if copies_inline(bytes) {
                g.m.repair(&self.crc, job.seq, sys::now(), |w| Self::fill_from(w, pages, bytes))
            } else {
                let r = g.m.repair_reserved(&self.crc, job.seq, sys::now());
                if let Submit::Accepted(seq) = r {
                    res = g.m.reserved(seq);
                }
                r
            };
            Some((r, g.m.stats().repairs, g.m.stats().unrepaired))
        });
        if let Some(pages) = buf.as_ref() {
            self.publish_from(res, pages, bytes);
        }
        match r {
            None => {
                pr_err!(
                    "specmirror: source for {}: write failed at {} (+{}) and the range cannot be read back: the mirror may differ there\n",
                    self.cfg.endpoint, job.sector, job.count
                );
                self.events.raise();
            }
            Some((Submit::Accepted(_), n, _)) if n.is_power_of_two() => {
                pr_warn!(
                    "specmirror: source for {}: write failed at {} (+{}): replicated what the device holds there ({} repairs)\n",
                    self.cfg.endpoint, job.sector, job.count, n
                );
            }
            Some((Submit::Invalid(_), _, n)) if n.is_power_of_two() => {
                pr_err!(
                    "specmirror: source for {}: the repair of {} (+{}) cannot be recorded: the mirror may differ there\n",
                    self.cfg.endpoint, job.sector, job.count
                );
                self.events.raise();
            }
            _ => {}
        }
    }
}

/// Bytes of a bitmap block copied per hold of the state lock.
const SAVE_PIECE: usize = 512;

/// Empties a vector of plain values, keeping its allocation.
fn clear<T: Copy>(v: &mut KVec<T>) {
    // SAFETY: length 0 is always initialised; `T: Copy` needs no drop.
    unsafe { v.set_len(0) };
}

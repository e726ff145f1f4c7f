// SPDX-License-Identifier: GPL-2.0

//! The target's kernel threads, each a loop in the shape of dm-raid1's
//! `do_mirror`: under the lock, ask the machine for the next step (and
//! sleep while it says so), then one named function per kind of step,
//! doing its I/O with the lock dropped and reporting the result back.

use kernel::{
    alloc::{flags::GFP_KERNEL, KVec},
    bindings, c_str,
    prelude::*,
    sync::{Arc, CondVar},
    time::msecs_to_jiffies,
};

use super::{State, TargetDev};
use crate::log::commit::IssueView;
use crate::log::pages::{Pages, PAGE_SIZE};
use crate::transport::proto::auth::Sha256;
use crate::transport::sys::pages::KPages;
use crate::log::record::{decode_frame, decode_header, DecodeError, Kind, FLAG_FUA, FLAG_PREFLUSH, HEADER_LEN, MAX_PAYLOAD};
use crate::transport::proto::target::{
    copies_outside, Accept, ApplierStep, ListenerStep, RxStep, RxVerdict, SenderStep, APPLY_BATCH, SEND_FRAMES,
};
use crate::transport::proto::wake::Instant;
use crate::transport::proto::{sleep_ms, MAX_CONTROL_FRAME};
use crate::transport::sys::bio::{BioList, BioView, BLK_STS_IOERR};
use crate::transport::sys::devio::{DevIo, IoOp, IoOwner};
use crate::transport::sys::frames::{self, FrameReader};
use crate::transport::sys::net::Socket;
use crate::transport::sys::sync::IrqSpinGuard;
use crate::transport::sys::thread::Thread;
use crate::transport::sys::{self};

/// Page pieces one batch of records may span (a 1 MiB record spans up to
/// 257 pages, and pieces never cross one).
const APPLY_PIECES: usize = APPLY_BATCH * 260;

impl TargetDev {
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

    // ---------------------------------------------------------- listener

    /// The listener: one source at a time; a persistent accept error
    /// backs off as the machine says instead of spinning.
    pub(super) fn listener_main(self: Arc<Self>, lsock: Arc<Socket>) {
        let mut rx: Option<Thread> = None;
        loop {
            let step = {
                let mut g = self.st.lock();
                loop {
                    let now = sys::now();
                    match g.m.poll_listener(now) {
                        ListenerStep::Sleep { until } => self.sleep(&self.listen_wait, &mut g, until, now),
                        step => {
                            self.end_section(&mut g);
                            break step;
                        }
                    }
                }
            };
            match step {
                ListenerStep::Accept => self.accept(&lsock, &mut rx),
                _ => break,
            }
        }
        drop(rx);
    }

    /// Waits for a connection and serves it (or closes it at once).
    fn accept(self: &Arc<Self>, lsock: &Socket, rx: &mut Option<Thread>) {
        let s = match lsock.accept().and_then(|s| Ok(Arc::new(s, GFP_KERNEL)?)) {
            Ok(s) => s,
            Err(_) => {
                self.with(|g| g.m.on_accept_error(sys::now()));
                return;
            }
        };
        let random = frames::random();
        let a = self.with(|g| {
            let a = g.m.on_accept(sys::now(), random);
            if let Accept::Serve { conn } = a {
                g.sock = Some((conn, s.clone()));
            }
            a
        });
        let Accept::Serve { conn } = a else {
            s.shutdown();
            return;
        };
        // The previous receiver has ended (the machine serves only then).
        drop(rx.take());
        let d = self.clone();
        let sock = s.clone();
        match Thread::spawn(c_str!("specmirror-rx"), move || d.receiver_main(conn, sock)) {
            Ok(t) => *rx = Some(t),
            Err(_) => {
                s.shutdown();
                self.with(|g| g.m.on_recv_end(conn, false));
            }
        }
        self.events.raise();
    }

    // ---------------------------------------------------------- receiver

    /// One connection's receiver: every complete frame in the buffer into
    /// the machine; under back-pressure it keeps the frame and waits.
    fn receiver_main(self: Arc<Self>, conn: u64, sock: Arc<Socket>) {
        let corrupt = self.receive(conn, &sock);
        sock.shutdown();
        let old = self.with(|g| {
            g.m.on_recv_end(conn, corrupt);
            match g.sock.as_ref() {
                Some((c, _)) if *c == conn => g.sock.take(),
                _ => None,
            }
        });
        // Released outside the spinlock: sock_release sleeps.
        drop(old);
        drop(sock);
        self.events.raise();
    }

    /// Reads frames until the connection ends; true if it ended on bytes
    /// that are no frame. Long WRITEs (`copies_outside`) have their CRC
    /// checked before the lock is taken and their payload copied into the
    /// commit log after it is dropped: no multi-KiB work with interrupts
    /// off.
    fn receive(&self, conn: u64, sock: &Socket) -> bool {
        // Room for the largest frame and then some, so that a read can take
        // many small records at once.
        let Ok(mut rd) = FrameReader::new(2 * (HEADER_LEN + MAX_PAYLOAD)) else { return false };
        loop {
            // The CRC verdict on the frame at the front, if it was checked
            // outside the lock.
            let mut checked: Option<bool> = None;
            let mut g = self.st.lock();
            loop {
                let len = match rd.peek() {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(_) => {
                        self.end_section(&mut g);
                        return true;
                    }
                };
                let frame = rd.front(len);
                let outside = decode_header(frame).is_ok_and(|(h, _)| copies_outside(&h));
                let pre = checked.take();
                let v = match (outside, pre) {
                    (false, _) => g.m.on_frame(&self.crc, conn, frame, sys::now()),
                    (true, Some(ok)) => g.m.on_frame_checked(&self.crc, conn, frame, ok, sys::now()),
                    (true, None) => {
                        self.end_section(&mut g);
                        drop(g);
                        checked = Some(!matches!(decode_frame(&self.crc, frame), Err(DecodeError::BadCrc)));
                        g = self.st.lock();
                        continue;
                    }
                };
                match v {
                    RxVerdict::Continue => rd.consume(len),
                    RxVerdict::Fill { seq } => {
                        let spans = g.m.filling().filter(|(s, _)| *s == seq).map(|(_, sp)| sp);
                        self.end_section(&mut g);
                        drop(g);
                        let Some(spans) = spans else {
                            pr_err!("specmirror: target: record {} to fill has no place in the log\n", seq);
                            return false;
                        };
                        // SAFETY: the machine reserved `spans` for record
                        // `seq` on this receiver's frame and publishes it
                        // only at `on_filled` below, after the copier is
                        // gone; only this thread fills the log.
                        let mut w = unsafe { self.fill.log_copier(spans) };
                        let whole = w.write(frame.get(HEADER_LEN..).unwrap_or(&[]));
                        let (_, full) = w.finish();
                        if !(whole && full) {
                            pr_err!("specmirror: target: record {} did not fit its place in the log\n", seq);
                        }
                        g = self.st.lock();
                        g.m.on_filled(seq);
                        rd.consume(len);
                    }
                    RxVerdict::Stop => {
                        self.end_section(&mut g);
                        return false;
                    }
                    RxVerdict::Busy => {
                        // The verdict stays good for the frame kept.
                        checked = pre;
                        loop {
                            // Back-pressure: keep the frame, wait for room.
                            match g.m.poll_receiver() {
                                RxStep::Retry => break,
                                RxStep::Stop => {
                                    self.end_section(&mut g);
                                    return false;
                                }
                                RxStep::Sleep => self.sleep(&self.rx_wait, &mut g, None, 0),
                            }
                        }
                    }
                }
            }
            self.end_section(&mut g);
            drop(g);
            if rd.fill(sock).is_err() {
                return false;
            }
        }
    }

    // ----------------------------------------------------------- applier

    /// The applier: records to the device from the log's pages, reads
    /// that may go, failed-write retries; returns once every record bio it
    /// started ended.
    pub(super) fn applier_main(self: Arc<Self>) {
        let Ok(mut pieces) = KVec::<(*mut bindings::page, usize, usize)>::with_capacity(APPLY_PIECES, GFP_KERNEL) else {
            return;
        };
        let Ok(mut batch) = KVec::<(IssueView, bool, usize, usize)>::with_capacity(APPLY_BATCH, GFP_KERNEL) else {
            return;
        };
        // One page for the reads of DIGEST_REQ records (read and hashed a
        // page at a time).
        let Ok(mut dpage) = KPages::new(1, GFP_KERNEL) else {
            return;
        };
        loop {
            let step = {
                let mut g = self.st.lock();
                loop {
                    let now = sys::now();
                    match g.m.poll_applier(now) {
                        ApplierStep::Sleep { until } => self.sleep(&self.apply_wait, &mut g, until, now),
                        step => {
                            self.end_section(&mut g);
                            break step;
                        }
                    }
                }
            };
            match step {
                ApplierStep::Exit => return,
                ApplierStep::FailReads => self.fail_reads(),
                ApplierStep::Reads => self.release_reads(),
                ApplierStep::Issue => self.issue(&mut batch, &mut pieces, &mut dpage),
                ApplierStep::Flush { upto } => self.flush_for_durable(upto),
                ApplierStep::Sleep { .. } => {}
            }
        }
    }

    /// Flushes the data device's cache for the durable point (an empty
    /// PREFLUSH bio, not waited for): its completion reports
    /// `flush_done(upto)` through the cookie's [`FLUSH_COOKIE`] bit.
    fn flush_for_durable(&self, upto: u64) {
        let io = DevIo {
            op: IoOp::Flush,
            preflush: true,
            fua: false,
            sector: 0,
            sectors: 0,
        };
        let cookie = upto | super::FLUSH_COOKIE;
        let Some(mut bio) = self.bios.prepare(&self.data, &io, 0, false) else {
            // No bio now: reported failed, tried again after the retry
            // pause.
            self.bios.fail(cookie);
            return;
        };
        bio.set_cookie(cookie);
        bio.submit();
    }

    /// Fails every waiting read (a suspend could not wait any longer).
    fn fail_reads(&self) {
        let mut out = BioList::new();
        self.with(|g| {
            while let Some(b) = g.reads.pop_front() {
                g.m.read_failed();
                out.push_back(b);
            }
        });
        while let Some(b) = out.pop_front() {
            b.end(BLK_STS_IOERR);
        }
    }

    /// Submits, in order, the waiting reads that may go now.
    fn release_reads(&self) {
        let mut out = BioList::new();
        self.with(|g| {
            while let Some(b) = g.reads.pop_front() {
                if !g.m.read_may_go(b.sector(), u64::from(b.sectors())) {
                    g.reads.push_front(b);
                    break;
                }
                out.push_back(b);
            }
        });
        while let Some(b) = out.pop_front() {
            b.submit_remapped(&self.data);
        }
    }

    /// Hands a batch of records to the device, each as a bio built from
    /// the commit log's pages (payloads there start on a block boundary).
    fn issue(
        &self,
        batch: &mut KVec<(IssueView, bool, usize, usize)>,
        pieces: &mut KVec<(*mut bindings::page, usize, usize)>,
        dpage: &mut KPages,
    ) {
        clear(batch);
        clear(pieces);
        self.with(|g| {
            let zeroes_by_writes = g.m.zeroes_by_writes();
            while batch.len() < APPLY_BATCH && pieces.len() + 260 <= pieces.capacity() {
                let Some(v) = g.m.poll_issue() else { break };
                let zero_fill = v.header.kind == Kind::WriteZeroes && zeroes_by_writes;
                let first = pieces.len();
                if v.header.kind == Kind::Write {
                    let pages = g.m.pages();
                    for (pi, off, len) in v.chunks() {
                        if let Some(p) = pages.page_ptr(pi) {
                            // Within capacity: checked before poll_issue.
                            let _ = pieces.push((p, off, len), GFP_KERNEL);
                        }
                    }
                }
                // Within capacity: APPLY_BATCH entries.
                let _ = batch.push((v, zero_fill, first, pieces.len()), GFP_KERNEL);
            }
        });
        for &(v, zero_fill, a, b) in batch.iter() {
            let h = v.header;
            if h.kind == Kind::Sync {
                self.apply_sync(&v);
                continue;
            }
            if h.kind == Kind::DigestReq {
                self.apply_digest(&v, dpage);
                continue;
            }
            let io = DevIo {
                op: match h.kind {
                    Kind::Write => IoOp::Write,
                    Kind::Discard => IoOp::Discard,
                    Kind::WriteZeroes if zero_fill => IoOp::Write,
                    Kind::WriteZeroes => IoOp::WriteZeroes,
                    _ => IoOp::Flush,
                },
                preflush: h.flags & FLAG_PREFLUSH != 0,
                fua: h.flags & FLAG_FUA != 0,
                sector: h.sector,
                sectors: h.count,
            };
            let n = if zero_fill { (h.count as usize).div_ceil(8) } else { b - a };
            let Some(mut bio) = self.bios.prepare(&self.data, &io, n, false) else {
                self.bios.fail(v.seq);
                continue;
            };
            bio.set_cookie(v.seq);
            if zero_fill {
                // SAFETY: the zero page is never freed or written.
                unsafe { bio.add_pages(zero_pages(h.count)) };
            } else {
                let p = pieces.get(a..b).unwrap_or(&[]);
                // SAFETY: the pages are the commit log's, alive while the
                // device lives; record `v.seq` stays in the log, unchanged,
                // until its `io_done`, and the applier returns only once
                // every record bio ended.
                unsafe { bio.add_pages(p.iter().copied()) };
            }
            bio.submit();
        }
    }

    /// A DIGEST_REQ record (every earlier record that overlaps it is on
    /// the device, no later one is issued): read the range a page at a
    /// time, hash it, and hand the machine the digest (`None` if a read
    /// failed), which answers the source and completes the record.
    fn apply_digest(&self, v: &IssueView, dpage: &mut KPages) {
        let bytes = v.header.count as usize * 512;
        let mut h = Sha256::new();
        let mut ok = true;
        for i in 0..bytes.div_ceil(PAGE_SIZE) {
            let len = bytes.saturating_sub(i * PAGE_SIZE).min(PAGE_SIZE);
            let sector = v.header.sector + (i * PAGE_SIZE / 512) as u64;
            if self.data.read_into(sector, dpage, 0, len).is_err() {
                ok = false;
                break;
            }
            match Pages::page(dpage, 0).and_then(|p| p.get(..len)) {
                Some(p) => h.update(p),
                None => ok = false,
            }
        }
        let digest = ok.then(|| h.finish());
        self.with(|g| g.m.digest_done(v.seq, digest, sys::now()));
    }

    /// A SYNC record (a barrier: every earlier record is on the device,
    /// nothing later is issued): flush the data device first if the
    /// machine says so (SYNC_DONE declares the image consistent), then
    /// write the superblock it names, then report the record done. Runs
    /// in the applier, which may sleep; a failure keeps the record and it
    /// is retried like a failed write.
    fn apply_sync(&self, v: &IssueView) {
        let Some((gens, consistent, flush)) = self.with(|g| g.m.sync_meta(&v.header)) else {
            self.io_done(v.seq, -(bindings::EIO as i32));
            return;
        };
        let mut r = if flush { self.data.flush() } else { Ok(()) };
        if r.is_ok() {
            r = self.meta.lock().save_superblock(gens, consistent);
        }
        match r {
            Ok(()) => {
                pr_info!(
                    "specmirror: target on {}: image {} at generation {:016x}\n",
                    self.cfg.endpoint,
                    if consistent { "consistent" } else { "inconsistent (sync started)" },
                    gens.current
                );
                self.events.raise();
                self.io_done(v.seq, 0);
            }
            Err(e) => self.io_done(v.seq, e.to_errno()),
        }
    }

    // ------------------------------------------------------------ sender

    /// The sender: CHALLENGE, HELLO_REPLY, NAK, lock replies, ACKs and
    /// keepalives; it closes the connections the machine gives up.
    pub(super) fn sender_main(self: Arc<Self>) {
        let mut buf = [0u8; SEND_FRAMES * MAX_CONTROL_FRAME];
        loop {
            let (step, sock) = {
                let mut g = self.st.lock();
                let step = loop {
                    let now = sys::now();
                    match g.m.poll_sender(&self.crc, now, &mut buf) {
                        SenderStep::Sleep { until } => self.sleep(&self.tx_wait, &mut g, until, now),
                        step => break step,
                    }
                };
                let sock = match step {
                    SenderStep::Send { conn, .. } | SenderStep::Close { conn } => {
                        g.sock.as_ref().filter(|(c, _)| *c == conn).map(|(_, s)| s.clone())
                    }
                    _ => None,
                };
                self.end_section(&mut g);
                (step, sock)
            };
            match step {
                SenderStep::Exit => return,
                SenderStep::Send { conn, len } => {
                    let ok = sock.as_ref().is_some_and(|s| s.send_all(buf.get(..len).unwrap_or(&[])).is_ok());
                    drop(sock);
                    self.with(|g| g.m.on_sent(conn, ok, sys::now()));
                }
                SenderStep::Close { conn } => {
                    if let Some(s) = &sock {
                        s.shutdown();
                    }
                    drop(sock);
                    self.with(|g| g.m.on_shutdown(conn));
                }
                SenderStep::Sleep { .. } => {}
            }
            self.log_refusal();
        }
    }

    /// Logs a refused source, once per reason in a row.
    fn log_refusal(&self) {
        if let Some(r) = self.with(|g| g.m.take_refusal_log()) {
            pr_warn!("specmirror: refused a source: {}\n", r.as_str());
        }
    }
}

/// `sectors` of zeroes as pieces of the shared zero page.
fn zero_pages(sectors: u32) -> impl Iterator<Item = (*mut bindings::page, usize, usize)> {
    // SAFETY: returns the kernel's static zero page; no preconditions.
    let zp = unsafe { sys::raw::dmsm_zero_page() };
    let bytes = (sectors as usize) << 9;
    let page = crate::log::pages::PAGE_SIZE;
    (0..bytes.div_ceil(page)).map(move |i| (zp, 0, (bytes - i * page).min(page)))
}

/// Empties a vector of plain values, keeping its allocation.
fn clear<T: Copy>(v: &mut KVec<T>) {
    // SAFETY: length 0 is always initialised; `T: Copy` needs no drop.
    unsafe { v.set_len(0) };
}

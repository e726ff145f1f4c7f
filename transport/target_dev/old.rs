// SPDX-License-Identifier: GPL-2.0

//! The target role in the kernel: glue between a listening kernel socket,
//! the target state machine ([`crate::transport::proto::target`]) and the
//! bios that apply records to the data device.
//!
//! Threads, started at resume and stopped at suspend:
//! - *listener*: accepts one source at a time (a second one is closed at
//!   once and counted) and starts a *receiver* for it;
//! - *receiver*: challenge, HELLO check, HELLO_REPLY, then frames into the
//!   commit log (back-pressure: it stops reading while the log is full);
//! - *applier*: turns records into bios built straight from the commit
//!   log's pages (flush epochs and lock waits are the machine's business),
//!   lets waiting reads go, retries failed writes every second;
//! - *sender*: ACK, NAK, LOCK_GRANTED / LOCK_REJECTED.
//!
//! Reads through the target's own dm device wait while unapplied stream
//! writes touch their range; writes through it fail (a replica is
//! read-only in this one-way mode).

use core::fmt::Write;
use kernel::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    bindings, c_str,
    error::code::{EBUSY, EINVAL},
    new_condvar, new_mutex,
    prelude::*,
    sync::{Arc, CondVar, Mutex},
    time::{msecs_to_jiffies, Ktime},
};

use super::frames::{self, FrameReader};
use super::net::{NetNs, Socket};
use super::proto::auth::{self, MacLabel};
use super::proto::target::{LocalLock, Target, TargetConfig, TargetRecv};
use super::proto::{encode_hello, Refusal, MAX_CONTROL_FRAME};
use super::source_dev::{fault_injection, refusal_str};
use super::thread::Thread;
use crate::dm::bio::{Bio, BioList, BioOp, BioView};
use crate::dm::devio::{BioSet, DevIo, IoOp, IoOwner};
use crate::dm::pages::{KPages, KernelCrc};
use crate::dm::sync::IrqSpinLock;
use crate::dm::{DmDev, EndIo, Events, MapResult, StatusWriter};
use crate::log::commit::{WindowSlot, SCAN_LIMIT};
use crate::log::filter::FILTER_BUCKETS;
use crate::log::locks::LockSlot;
use crate::log::record::{Header, Hello, Kind, FLAG_FUA, FLAG_PREFLUSH, HEADER_LEN, MAX_PAYLOAD, VERSION};
use crate::log::pages::{Pages, PAGE_SIZE};
use crate::new_irq_spinlock;
use crate::table::{parse_u64, TableConfig};

/// The target machine over kernel storage: commit log pages, issue
/// window, region filter counters and lock slots, all on the heap.
type Machine = Target<KPages, KVec<WindowSlot>, KVec<u32>, KVec<LockSlot>>;

/// Per-bio tags (`PerBio::tag`).
const TAG_NONE: u32 = 0;

/// Lock slots: the source's hot regions (at most the default 64 unless
/// the source says otherwise; more share slots) plus local locks.
const LOCK_SLOTS: usize = 1024;
/// Records applied at once (the machine's issue window bounds it too).
const APPLY_BATCH: usize = 32;
/// Pages of the applier's bounce buffer (4 MiB).
const BOUNCE_PAGES: usize = 1024;
/// Bounce pages the largest record needs.
const BOUNCE_MAX_RECORD: usize = MAX_PAYLOAD.div_ceil(PAGE_SIZE);
/// Page spans gathered per batch (a 1 MiB record spans up to 257).
const APPLY_SPANS: usize = APPLY_BATCH * 260;
/// Acknowledge at least every this many applied records.
const ACK_EVERY: u32 = 32;
/// Failed device writes are retried this often.
const RETRY_MS: u32 = 1000;
const HANDSHAKE_TIMEOUT_MS: u32 = 10000;
/// `dmsetup message .. lock` waits at most this long for the grant.
const LOCK_WAIT_MS: u32 = 5000;
/// Explicit local locks (`dmsetup message .. lock`) held at once.
const MAX_MSG_LOCKS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    Stopped,
    Listening,
    Handshake,
    Connected,
}

impl Conn {
    fn as_str(self) -> &'static str {
        match self {
            Conn::Stopped => "stopped",
            Conn::Listening => "listening",
            Conn::Handshake => "handshake",
            Conn::Connected => "connected",
        }
    }
}

struct State {
    m: KBox<Machine>,
    /// The current connection (handshake or streaming).
    sock: Option<Arc<Socket>>,
    conn: Conn,
    /// The sender may use `sock` (the handshake is over).
    streaming: bool,
    stopping: bool,
    apply_kick: bool,
    tx_kick: bool,
    /// Bios of records handed to the device and not yet ended.
    ios: u32,
    /// Headers of those records (`io_done` wants them back), and the tag
    /// of the bounce pages each holds (0: none).
    io_hdrs: KVec<(u64, Header, u64)>,
    /// Owner tag of each bounce page (0: free); see `applier_main`.
    bounce_owner: KVec<u64>,
    /// Bounce pages free.
    bounce_free: usize,
    /// Last bounce tag handed out.
    bounce_tag: u64,
    /// Reads waiting for unapplied writes to their range.
    reads: BioList,
    /// Explicit local locks, `(sector, count)`.
    msg_locks: [Option<(u64, u64)>; MAX_MSG_LOCKS],
    last_refusal: Option<Refusal>,
    refused_conns: u64,
    auth_failures: u64,
    protocol_errors: u64,
    writes_refused: u64,
    connections: u64,
    /// The data device refused WRITE_ZEROES: zero it with writes instead.
    no_write_zeroes: bool,
}

struct Threads {
    listener: Thread,
    applier: Thread,
    sender: Thread,
    lsock: Arc<Socket>,
}

/// One target device.
#[pin_data]
pub(crate) struct TargetDev {
    cfg: TableConfig,
    data: DmDev,
    ns: NetNs,
    events: Events,
    crc: KernelCrc,
    log_bytes: usize,
    dev_sectors: u64,
    #[pin]
    st: IrqSpinLock<State>,
    /// The applier waits here (completions, new records, reads).
    #[pin]
    apply_wait: CondVar,
    /// The sender waits here.
    #[pin]
    tx_wait: CondVar,
    /// The receiver waits here while the commit log is full; lockers of
    /// `dmsetup message .. lock` wait here too.
    #[pin]
    rx_wait: CondVar,
    #[pin]
    threads: Mutex<Option<Threads>>,
}

impl TargetDev {
    /// Builds the device: the machine and its storage (commit log pages,
    /// `ring_mb`; issue window, region filter and lock slots), allocated
    /// here, never on the I/O path.
    pub(crate) fn new(cfg: TableConfig, data: DmDev, events: Events, dev_sectors: u64) -> Result<Arc<TargetDev>> {
        let pages = KPages::new((cfg.ring_mb as usize) << 8, GFP_KERNEL)?;
        let log_bytes = pages.bytes();
        let tcfg = TargetConfig { region_sectors: cfg.region_sectors, dev_sectors, ack_every: ACK_EVERY };
        let mut m = new_machine(tcfg, pages)?;
        m.set_block_size(data.logical_block_size());
        // Every record in flight lies in the issue window.
        let io_hdrs = KVec::with_capacity(m.commit_log().window_len(), GFP_KERNEL)?;
        let mut bounce_owner = KVec::with_capacity(BOUNCE_PAGES, GFP_KERNEL)?;
        for _ in 0..BOUNCE_PAGES {
            bounce_owner.push(0u64, GFP_KERNEL)?;
        }
        let state = State {
            m,
            sock: None,
            conn: Conn::Stopped,
            streaming: false,
            stopping: true,
            apply_kick: false,
            tx_kick: false,
            ios: 0,
            io_hdrs,
            bounce_owner,
            bounce_free: BOUNCE_PAGES,
            bounce_tag: 0,
            reads: BioList::new(),
            msg_locks: [None; MAX_MSG_LOCKS],
            last_refusal: None,
            refused_conns: 0,
            auth_failures: 0,
            protocol_errors: 0,
            writes_refused: 0,
            connections: 0,
            no_write_zeroes: false,
        };
        let ns = NetNs::current()?;
        Arc::pin_init(
            pin_init!(TargetDev {
                cfg,
                data,
                ns,
                events,
                crc: KernelCrc,
                log_bytes,
                dev_sectors,
                st <- new_irq_spinlock!(state, "specmirror_target"),
                apply_wait <- new_condvar!("specmirror_target_apply"),
                tx_wait <- new_condvar!("specmirror_target_tx"),
                rx_wait <- new_condvar!("specmirror_target_rx"),
                threads <- new_mutex!(None, "specmirror_target_threads"),
            }),
            GFP_KERNEL,
        )
    }

    /// The data device.
    pub(crate) fn data(&self) -> &DmDev {
        &self.data
    }

    /// The parsed table line.
    pub(crate) fn config(&self) -> &TableConfig {
        &self.cfg
    }

    fn kick_all(&self) {
        self.apply_wait.notify_all();
        self.tx_wait.notify_all();
        self.rx_wait.notify_all();
    }

    /// dm `map` of the target's own device.
    pub(crate) fn map(&self, bio: &mut Bio<'_>) -> MapResult {
        bio.per_bio().tag = TAG_NONE;
        match bio.op() {
            BioOp::Read => {}
            BioOp::Flush => {
                bio.remap(&self.data);
                return MapResult::Remapped;
            }
            _ => {
                let mut g = self.st.lock();
                g.writes_refused = g.writes_refused.saturating_add(1);
                let n = g.writes_refused;
                drop(g);
                // The 1st, 2nd, 4th, 8th... refusal: a hint, not a flood.
                if n.is_power_of_two() {
                    pr_warn!("specmirror: write to a target device refused (the replica is read-only; {} so far)\n", n);
                }
                return MapResult::Kill;
            }
        }
        let mut g = self.st.lock();
        if !g.reads.is_empty() || pending(&g.m, bio.sector(), bio.sectors()) {
            if let Some(b) = bio.take() {
                g.reads.push_back(b);
            }
            return MapResult::Submitted;
        }
        drop(g);
        bio.remap(&self.data);
        MapResult::Remapped
    }

    /// dm `end_io` of the target's own device.
    pub(crate) fn end_io(&self, _bio: &mut Bio<'_>, _status: u8) -> EndIo {
        EndIo::Done
    }

    /// Starts listening and the threads (resume). Fails if the address
    /// cannot be bound (in use, not configured in this namespace).
    pub(crate) fn start(self: &Arc<Self>) -> Result {
        let mut t = self.threads.lock();
        if t.is_some() {
            return Ok(());
        }
        let lsock = Arc::new(
            Socket::listen(&self.ns, &self.cfg.endpoint).inspect_err(|e| {
                pr_err!("specmirror: cannot listen on {}: {:?}\n", self.cfg.endpoint, e);
            })?,
            GFP_KERNEL,
        )?;
        {
            let mut g = self.st.lock();
            g.stopping = false;
            g.conn = Conn::Listening;
        }
        let d = self.clone();
        let applier = Thread::spawn(c_str!("specmirror-ap"), move || d.applier_main())?;
        let d = self.clone();
        let sender = Thread::spawn(c_str!("specmirror-tt"), move || d.sender_main());
        let sender = match sender {
            Ok(s) => s,
            Err(e) => {
                self.set_stopping(&lsock);
                drop(applier);
                return Err(e);
            }
        };
        let d = self.clone();
        let l = lsock.clone();
        let listener = match Thread::spawn(c_str!("specmirror-ls"), move || d.listener_main(l)) {
            Ok(l) => l,
            Err(e) => {
                self.set_stopping(&lsock);
                drop(sender);
                drop(applier);
                return Err(e);
            }
        };
        *t = Some(Threads { listener, applier, sender, lsock });
        Ok(())
    }

    fn set_stopping(&self, lsock: &Socket) {
        let sock = {
            let mut g = self.st.lock();
            g.stopping = true;
            g.sock.clone()
        };
        lsock.shutdown();
        if let Some(s) = sock {
            s.shutdown();
        }
        self.kick_all();
    }

    /// Stops the threads and closes the sockets (suspend, remove); waits
    /// for every bio the applier started.
    pub(crate) fn stop(&self) {
        let mut t = self.threads.lock();
        let Some(th) = t.take() else { return };
        self.set_stopping(&th.lsock);
        drop(th.listener);
        drop(th.sender);
        drop(th.applier);
        drop(th.lsock);
        let mut g = self.st.lock();
        g.conn = Conn::Stopped;
        g.streaming = false;
        let old = g.sock.take();
        drop(g);
        drop(old);
    }

    fn listener_main(self: Arc<Self>, lsock: Arc<Socket>) {
        let mut conn: Option<Thread> = None;
        loop {
            let s = match lsock.accept() {
                Ok(s) => s,
                Err(_) => {
                    if self.st.lock().stopping {
                        break;
                    }
                    continue;
                }
            };
            let Ok(s) = Arc::new(s, GFP_KERNEL) else { continue };
            let busy = {
                let mut g = self.st.lock();
                if g.stopping {
                    true
                } else if g.sock.is_some() {
                    g.refused_conns = g.refused_conns.saturating_add(1);
                    true
                } else {
                    g.sock = Some(s.clone());
                    g.conn = Conn::Handshake;
                    g.connections = g.connections.saturating_add(1);
                    false
                }
            };
            if busy {
                // One source at a time: close the newcomer at once.
                s.shutdown();
                if self.st.lock().stopping {
                    break;
                }
                continue;
            }
            // The previous receiver has finished (it cleared `sock`).
            drop(conn.take());
            let d = self.clone();
            match Thread::spawn(c_str!("specmirror-rx"), move || d.receiver_main(s)) {
                Ok(t) => conn = Some(t),
                Err(_) => {
                    let old = {
                        let mut g = self.st.lock();
                        g.conn = Conn::Listening;
                        g.sock.take()
                    };
                    if let Some(o) = old {
                        o.shutdown();
                    }
                }
            }
        }
        let cur = self.st.lock().sock.clone();
        if let Some(s) = cur {
            s.shutdown();
        }
        drop(conn);
    }

    /// Challenge and HELLO; on success the connection streams.
    fn handshake(&self, sock: &Socket) -> Result<(), Option<Refusal>> {
        let secret = self.cfg.secret.as_ref().map(|s| s.as_bytes());
        let mut buf = [0u8; MAX_CONTROL_FRAME];
        let my_nonce = frames::nonce();
        let n = auth::encode_challenge(&self.crc, &my_nonce, &mut buf).map_err(|_| None)?;
        sock.send_all(buf.get(..n).unwrap_or(&[])).map_err(|_| None)?;
        // One deadline for the HELLO, however its bytes come.
        let n = match frames::recv_frame_by(sock, &mut buf, Ktime::ktime_get(), HANDSHAKE_TIMEOUT_MS) {
            Ok(n) => n,
            Err(_) => {
                // No HELLO: garbage, a frame over the limit, a truncated
                // one, silence past the deadline, or a close. All of it is
                // a peer that does not speak the protocol.
                let mut g = self.st.lock();
                g.protocol_errors = g.protocol_errors.saturating_add(1);
                return Err(None);
            }
        };
        sock.set_recv_timeout(0);
        let mut g = self.st.lock();
        let hello = match g.m.on_frame(&self.crc, buf.get(..n).unwrap_or(&[])) {
            TargetRecv::Hello(h) => h,
            _ => {
                g.protocol_errors = g.protocol_errors.saturating_add(1);
                return Err(None);
            }
        };
        let (len, r) = if !auth::verify(secret, MacLabel::Hello, &my_nonce, &hello) {
            g.auth_failures = g.auth_failures.saturating_add(1);
            let mut reply = Hello {
                proto_version: u32::from(VERSION),
                dev_sectors: self.dev_sectors,
                region_sectors: self.cfg.region_sectors,
                generation: 0,
                last_applied: 0,
                nonce: frames::nonce(),
                mac: [0; 32],
                flags: Refusal::Auth.to_flags(),
                block_size: 0,
            };
            auth::sign(secret, MacLabel::Reply, &hello.nonce, &mut reply);
            (encode_hello(&self.crc, &reply, true, &mut buf).map_err(|_| None)?, Err(Refusal::Auth))
        } else {
            let r = g.m.on_hello(&hello);
            if let Some(reply) = g.m.pending_reply_mut() {
                reply.nonce = frames::nonce();
                auth::sign(secret, MacLabel::Reply, &hello.nonce, reply);
            }
            match g.m.poll_send(&self.crc, &mut buf) {
                Some(Ok(len)) => (len, r),
                _ => return Err(None),
            }
        };
        let first = r.is_err() && g.last_refusal != r.err();
        g.last_refusal = r.err();
        drop(g);
        if let (true, Err(e)) = (first, r) {
            // Once per reason, not once per retry of the source.
            pr_warn!("specmirror: refused a source: {}\n", refusal_str(e));
        }
        sock.send_all(buf.get(..len).unwrap_or(&[])).map_err(|_| None)?;
        r.map_err(Some)
    }

    fn receiver_main(self: Arc<Self>, sock: Arc<Socket>) {
        if self.handshake(&sock).is_ok() {
            {
                let mut g = self.st.lock();
                g.streaming = true;
                g.conn = Conn::Connected;
                g.tx_kick = true;
            }
            self.events.raise();
            self.kick_all();
            self.receive(&sock);
        }
        sock.shutdown();
        let old = {
            let mut g = self.st.lock();
            g.m.on_disconnect();
            g.streaming = false;
            if !g.stopping {
                g.conn = Conn::Listening;
            }
            g.sock.take()
        };
        drop(old);
        drop(sock);
        self.events.raise();
        self.kick_all();
    }

    fn receive(&self, sock: &Socket) {
        // Room for the largest frame and then some, so that a read can
        // take many small records at once.
        let Ok(mut rd) = FrameReader::new(2 * (HEADER_LEN + MAX_PAYLOAD)) else { return };
        loop {
            let mut g = self.st.lock();
            // Every complete frame in the buffer, under one lock.
            loop {
                if g.stopping {
                    return;
                }
                let len = match rd.peek() {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(_) => {
                        g.protocol_errors = g.protocol_errors.saturating_add(1);
                        return;
                    }
                };
                match g.m.on_frame(&self.crc, rd.front(len)) {
                    TargetRecv::Ok => rd.consume(len),
                    TargetRecv::Busy => {
                        // Back-pressure: wait for the applier to free room.
                        g.apply_kick = true;
                        g.tx_kick = true;
                        self.apply_wait.notify_all();
                        self.tx_wait.notify_all();
                        let _ = self.rx_wait.wait_interruptible(&mut g);
                    }
                    TargetRecv::Hello(_) | TargetRecv::Disconnect(_) => {
                        g.protocol_errors = g.protocol_errors.saturating_add(1);
                        return;
                    }
                }
            }
            g.apply_kick = true;
            g.tx_kick = true;
            drop(g);
            self.apply_wait.notify_all();
            self.tx_wait.notify_all();
            if rd.fill(sock).is_err() {
                return;
            }
        }
    }

    fn sender_main(self: Arc<Self>) {
        const FRAMES: usize = 16;
        let mut buf = [0u8; FRAMES * MAX_CONTROL_FRAME];
        loop {
            let mut g = self.st.lock();
            while !g.stopping && (!g.tx_kick || !g.streaming) {
                let _ = self.tx_wait.wait_interruptible(&mut g);
            }
            if g.stopping {
                return;
            }
            g.tx_kick = false;
            let mut len = 0usize;
            while len + MAX_CONTROL_FRAME <= buf.len() {
                let Some(out) = buf.get_mut(len..len + MAX_CONTROL_FRAME) else { break };
                match g.m.poll_send(&self.crc, out) {
                    Some(Ok(n)) => len += n,
                    _ => break,
                }
            }
            if len + MAX_CONTROL_FRAME > buf.len() {
                // Maybe more due: come round again.
                g.tx_kick = true;
            }
            let sock = g.sock.clone();
            drop(g);
            if let Some(s) = &sock {
                if len > 0 && s.send_all(buf.get(..len).unwrap_or(&[])).is_err() {
                    s.shutdown();
                }
            }
            drop(sock);
        }
    }

    fn applier_main(self: Arc<Self>) {
        let owner: &dyn IoOwner = &*self;
        // SAFETY: `self` (an Arc this thread holds) outlives the set: the
        // loop below returns only once no bio of it is in flight.
        let bs = match unsafe { BioSet::new(APPLY_BATCH as u32, owner as *const dyn IoOwner) } {
            Ok(b) => b,
            Err(_) => return,
        };
        // Payloads sit in the commit log right after their 40-byte header,
        // at any offset: pieces that are not whole sectors, which drivers
        // such as brd, zram and null_blk (sector arithmetic per segment)
        // and DMA alignment do not accept. Each write goes to the device
        // from page-aligned bounce pages instead.
        let Ok(mut bounce) = KPages::new(BOUNCE_PAGES, GFP_KERNEL) else {
            return;
        };
        let Ok(mut spans) = KVec::<(*mut bindings::page, usize, usize)>::with_capacity(APPLY_SPANS, GFP_KERNEL) else {
            return;
        };
        let mut batch: KVec<(u64, DevIo, usize, usize, bool)> = match KVec::with_capacity(APPLY_BATCH, GFP_KERNEL) {
            Ok(b) => b,
            Err(_) => return,
        };
        loop {
            clear(&mut spans);
            clear(&mut batch);
            let mut reads = BioList::new();
            let mut g = self.st.lock();
            while !g.apply_kick && !g.stopping {
                let timeout = if g.m.failing() > 0 { RETRY_MS } else { 0 };
                if timeout > 0 {
                    let _ = self.apply_wait.wait_interruptible_timeout(&mut g, msecs_to_jiffies(timeout));
                    if g.m.failing() > 0 {
                        let _ = g.m.retry_failed();
                        g.apply_kick = true;
                    }
                } else {
                    let _ = self.apply_wait.wait_interruptible(&mut g);
                }
            }
            if g.stopping {
                // Wait for the device to finish what was started.
                while g.ios > 0 {
                    let _ = self.apply_wait.wait_interruptible(&mut g);
                }
                return;
            }
            g.apply_kick = false;
            while let Some(b) = g.reads.pop_front() {
                if pending(&g.m, b.sector(), b.sectors()) {
                    g.reads.push_front(b);
                    break;
                }
                reads.push_back(b);
            }
            while batch.len() < APPLY_BATCH
                && g.io_hdrs.len() < g.io_hdrs.capacity()
                && g.bounce_free >= BOUNCE_MAX_RECORD
            {
                let Some(v) = g.m.poll_issue() else { break };
                let h = v.header;
                // A device without WRITE_ZEROES gets the zero page written.
                let zero_fill = h.kind == Kind::WriteZeroes && g.no_write_zeroes;
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
                let first = spans.len();
                let mut tag = 0u64;
                if io.op == IoOp::Write && !zero_fill {
                    g.bounce_tag = g.bounce_tag.wrapping_add(1).max(1);
                    tag = g.bounce_tag;
                    let st = &mut *g;
                    let mut at = 0usize;
                    let mut bi: Option<usize> = None;
                    for (pi, off, len) in v.chunks() {
                        let Some(src) = st.m.pages().page(pi).and_then(|p| p.get(off..off + len)) else { break };
                        let mut done = 0usize;
                        while done < len {
                            if bi.is_none() || at == PAGE_SIZE {
                                // The next free bounce page (enough are free:
                                // checked before `poll_issue`).
                                let Some(i) = st.bounce_owner.iter().position(|o| *o == 0) else { break };
                                if let Some(o) = st.bounce_owner.get_mut(i) {
                                    *o = tag;
                                }
                                st.bounce_free -= 1;
                                if let Some(p) = bounce.page_ptr(i) {
                                    let _ = spans.push((p, 0, 0), GFP_KERNEL);
                                }
                                bi = Some(i);
                                at = 0;
                            }
                            let n = (len - done).min(PAGE_SIZE - at);
                            if let (Some(i), Some(chunk)) = (bi, src.get(done..done + n)) {
                                if let Some(d) = bounce.page_mut(i).and_then(|d| d.get_mut(at..at + n)) {
                                    d.copy_from_slice(chunk);
                                }
                                if let Some(last) = spans.last_mut() {
                                    last.2 += n;
                                }
                            }
                            at += n;
                            done += n;
                        }
                    }
                }
                let _ = g.io_hdrs.push((v.seq, h, tag), GFP_KERNEL);
                let _ = batch.push((v.seq, io, first, spans.len(), zero_fill), GFP_KERNEL);
                g.ios += 1;
                if spans.len() + 260 > spans.capacity() {
                    break;
                }
            }
            drop(g);
            while let Some(b) = reads.pop_front() {
                b.submit_remapped(&self.data);
            }
            for &(seq, io, a, b, zero_fill) in batch.iter() {
                if zero_fill {
                    // SAFETY: the zero page is never freed or written.
                    unsafe { bs.submit(&self.data, &io, zero_pages(io.sectors), seq) };
                    continue;
                }
                let s = spans.get(a..b).unwrap_or(&[]);
                // SAFETY: the pages are bounce pages this thread owns, held
                // for record `seq` (tagged, unchanged) until its `io_done`
                // freed them; the thread returns only with no I/O in flight.
                unsafe { bs.submit(&self.data, &io, s.iter().copied(), seq) };
            }
        }
    }

    /// `dmsetup message`: `lock <sector> <sectors>`, `unlock <sector>
    /// <sectors>`, and with the fault-injection parameter `fault drop`.
    pub(crate) fn message(&self, words: &[&[u8]]) -> Result {
        match words {
            [b"lock", s, c] => {
                let (s, c) = (parse_u64(s).ok_or(EINVAL)?, parse_u64(c).ok_or(EINVAL)?);
                self.lock_range(s, c)
            }
            [b"unlock", s, c] => {
                let (s, c) = (parse_u64(s).ok_or(EINVAL)?, parse_u64(c).ok_or(EINVAL)?);
                let mut g = self.st.lock();
                let slot = g.msg_locks.iter_mut().find(|l| **l == Some((s, c))).ok_or(EINVAL)?;
                *slot = None;
                g.m.local_unlock(s, c);
                g.apply_kick = true;
                g.tx_kick = true;
                drop(g);
                self.kick_all();
                Ok(())
            }
            [b"fault", b"drop"] if fault_injection() => {
                let sock = self.st.lock().sock.clone();
                if let Some(s) = sock {
                    s.shutdown();
                }
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }

    fn lock_range(&self, sector: u64, count: u64) -> Result {
        let mut waited = 0u32;
        let mut g = self.st.lock();
        if !g.msg_locks.iter().any(|l| l.is_none()) {
            return Err(EBUSY);
        }
        loop {
            match g.m.local_lock(sector, count) {
                LocalLock::Granted => break,
                LocalLock::Invalid => return Err(EINVAL),
                LocalLock::WouldBlock | LocalLock::Full => {
                    if waited >= LOCK_WAIT_MS {
                        return Err(EBUSY);
                    }
                    let _ = self.rx_wait.wait_interruptible_timeout(&mut g, msecs_to_jiffies(100));
                    waited += 100;
                }
            }
        }
        if let Some(slot) = g.msg_locks.iter_mut().find(|l| l.is_none()) {
            *slot = Some((sector, count));
        }
        Ok(())
    }

    /// `dmsetup status` (INFO).
    pub(crate) fn status(&self, out: &mut StatusWriter<'_>, dev: &str) {
        let g = self.st.lock();
        let s = *g.m.stats();
        let log = g.m.commit_log();
        let conn = match (g.conn, g.last_refusal) {
            (Conn::Listening, Some(r)) if g.connections > 0 => refusal_str(r),
            (c, _) => c.as_str(),
        };
        let _ = write!(
            out,
            "target {} {} log={}/{} received={} applied={} acked={} pending={} reads_waiting={} \
             crc_errors={} naks={} lock_rejections={} lock_conflicts={} reconnects={} auth_failures={} \
             refused_connections={} protocol_errors={} io_errors={} failing={} writes_refused={} local_locks={}",
            dev,
            conn,
            log.used_bytes(),
            self.log_bytes,
            g.m.received_seq(),
            g.m.applied_seq(),
            g.m.acked_seq(),
            log.len_records(),
            g.reads.len(),
            s.crc_errors,
            s.naks,
            s.lock_rejections,
            s.lock_conflicts,
            s.reconnects,
            g.auth_failures,
            g.refused_conns,
            g.protocol_errors,
            s.io_errors,
            u8::from(g.m.failing() > 0),
            g.writes_refused,
            g.msg_locks.iter().filter(|l| l.is_some()).count(),
        );
    }
}

/// The target machine, on the heap, with its storage: an issue window of
/// [`SCAN_LIMIT`] slots, [`FILTER_BUCKETS`] region filter counters and
/// [`LOCK_SLOTS`] lock slots, each its own allocation the machine points
/// to, so the machine itself is small (under 2 KiB) and never holds a big
/// array on a kernel stack. Out of line all the same, so that its one
/// temporary (writing into an uninitialised box keeps it to one) is not
/// added to the frame of the table constructor, already the largest.
#[inline(never)]
fn new_machine(cfg: TargetConfig, pages: KPages) -> Result<KBox<Machine>> {
    let window = KVec::from_elem(WindowSlot::EMPTY, SCAN_LIMIT, GFP_KERNEL)?;
    let filter = KVec::from_elem(0u32, FILTER_BUCKETS, GFP_KERNEL)?;
    let slots = KVec::from_elem(LockSlot::EMPTY, LOCK_SLOTS, GFP_KERNEL)?;
    let b = KBox::<Machine>::new_uninit(GFP_KERNEL)?;
    let m = Target::new(cfg, pages, window, filter, slots).map_err(|_| EINVAL)?;
    Ok(KBox::write(b, m))
}

/// `sectors` of zeroes as pieces of the shared zero page.
fn zero_pages(sectors: u32) -> impl Iterator<Item = (*mut bindings::page, usize, usize)> + Clone {
    // SAFETY: returns the kernel's static zero page; no preconditions.
    let zp = unsafe { crate::dm::raw::dmsm_zero_page() };
    let bytes = (sectors as usize) << 9;
    let page = crate::log::pages::PAGE_SIZE;
    (0..bytes.div_ceil(page)).map(move |i| (zp, 0, (bytes - i * page).min(page)))
}

/// Empties a vector of plain values, keeping its allocation.
fn clear<T: Copy>(v: &mut KVec<T>) {
    // SAFETY: length 0 is always initialised; `T: Copy` needs no drop.
    unsafe { v.set_len(0) };
}

/// Whether unapplied stream writes may touch `sector..sector+sectors`
/// (O(regions touched): a counting filter, never a false "no").
fn pending(m: &Machine, sector: u64, sectors: u32) -> bool {
    let shift = m.config().region_sectors.trailing_zeros();
    let last = sector.saturating_add(u64::from(sectors.max(1)) - 1);
    m.commit_log().may_be_pending(sector >> shift, last >> shift)
}

impl IoOwner for TargetDev {
    fn io_done(&self, seq: u64, err: i32) {
        let mut g = self.st.lock();
        let idx = g.io_hdrs.iter().position(|(s, _, _)| *s == seq);
        let h = idx.and_then(|i| g.io_hdrs.get(i).map(|x| x.1));
        let tag = idx.and_then(|i| g.io_hdrs.get(i).map(|x| x.2)).unwrap_or(0);
        if tag != 0 {
            let st = &mut *g;
            for o in st.bounce_owner.iter_mut().filter(|o| **o == tag) {
                *o = 0;
                st.bounce_free += 1;
            }
        }
        if let Some(i) = idx {
            let last = g.io_hdrs.len() - 1;
            g.io_hdrs.as_mut_slice().swap(i, last);
            // SAFETY: shrinks by one an initialised vector of `Copy` items.
            unsafe { g.io_hdrs.set_len(last) };
        }
        if let Some(h) = h {
            // A device without discard support: discards are advisory.
            let unsupported = err == -(bindings::EOPNOTSUPP as i32);
            if unsupported && h.kind == Kind::WriteZeroes {
                // Retried (within a second) as writes of the zero page.
                g.no_write_zeroes = true;
            }
            let ok = err == 0 || (h.kind == Kind::Discard && unsupported);
            g.m.io_done(seq, &h, ok);
            let n = g.m.stats().io_errors;
            if !ok && n.is_power_of_two() {
                // Retried every second: say so sparingly (any context).
                pr_warn!(
                    "specmirror: target: {:?} at {} (+{}) failed ({}); kept and retried ({} failures so far)\n",
                    h.kind, h.sector, h.count, err, n
                );
            }
        }
        g.ios = g.ios.saturating_sub(1);
        g.apply_kick = true;
        g.tx_kick = true;
        drop(g);
        self.kick_all();
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The source role in the kernel: glue between dm's bios, the source state
//! machine ([`crate::transport::proto::source`]) and a kernel TCP socket.
//!
//! - `map` offers each write to the machine, which copies its payload into
//!   the rollback ring; accepted writes are remapped to the data device at
//!   once, the others wait in a deferred list (never failed for lack of
//!   room, never a sleep in `map`).
//! - `end_io` reports the local completion; with `completion sync` the bio
//!   is kept (`DM_ENDIO_INCOMPLETE`) until the target acknowledged it.
//! - Three kthreads per device, started at resume and stopped at suspend:
//!   the *worker* retries deferred bios and ends acknowledged ones, the
//!   *sender* connects (with back-off), shakes hands and streams the ring
//!   straight from its pages, the *receiver* (one per connection) feeds
//!   ACK / NAK / lock replies to the machine.
//! - A write that fails on the data device still completes with its error,
//!   but its record may already be on the wire: the worker re-reads the
//!   range from the data device and replicates what is really there (a
//!   repair record), while overlapping writes wait. A range it cannot
//!   re-read is counted as `unrepaired` (the devices may differ there).
//!
//! All state sits behind one irq-safe spinlock ([`IrqSpinLock`]): bios end
//! in interrupt context. Nothing sleeps or allocates under it, and the
//! last reference to a socket is never dropped under it.

use core::fmt::Write;
use kernel::{
    alloc::{flags::GFP_KERNEL, KVec},
    c_str, new_condvar, new_mutex,
    prelude::*,
    sync::{Arc, CondVar, Mutex},
    time::{ktime_ms_delta, msecs_to_jiffies, Ktime},
};

use super::frames::{self, Backoff, RecvError};
use super::net::{NetNs, Socket};
use super::proto::auth::{self, MacLabel};
use super::proto::hot::HotSlot;
use super::proto::inflight::InflightSlot;
use super::proto::source::{HostOp, HostWrite, LinkState, ProtocolError, Source, SourceConfig, SourceRecv, Submit};
use crate::log::pages::PAGE_SIZE;
use super::proto::{encode_hello, Refusal, MAX_CONTROL_FRAME};
use super::thread::Thread;
use crate::dm::bio::{Bio, BioList, BioOp, BioView, BLK_STS_IOERR, BLK_STS_OK};
use crate::dm::devio::{BioSet, DevIo, IoOp, IoOwner};
use crate::dm::pages::{KPages, KernelCrc};
use crate::dm::sync::IrqSpinLock;
use crate::dm::{DmDev, EndIo, Events, MapResult, StatusWriter};
use crate::log::record::{FLAG_FUA, FLAG_PREFLUSH, HEADER_LEN, OFF_CRC};
use crate::log::ring::RingError;
use crate::new_irq_spinlock;
use crate::table::TableConfig;

type Machine = Source<KPages, KVec<HotSlot>, KVec<InflightSlot>>;

/// Per-bio tags (`PerBio::tag`).
const TAG_NONE: u32 = 0;
/// Accepted: local I/O in flight for record `seq`.
const TAG_WRITE: u32 = 1;
/// Local I/O done, waiting for the target's ACK (`completion sync`).
const TAG_PARKED: u32 = 2;
/// Acknowledged: end with the status the local I/O left.
const TAG_RELEASE: u32 = 3;

/// Host writes in flight at once (in-flight slots of the machine).
const INFLIGHT_SLOTS: usize = 256;
/// Pieces (page spans) gathered into one send.
const SEND_PIECES: usize = 512;
/// Bytes gathered into one send before it goes out.
const SEND_BATCH: usize = 512 * 1024;
/// Connect and handshake timeouts.
const CONNECT_TIMEOUT_MS: u32 = 5000;
const HANDSHAKE_TIMEOUT_MS: u32 = 10000;
/// A connection must stay up this long, without the target breaking the
/// protocol, for the reconnect back-off to start again from its shortest
/// delay (a peer that shakes hands and breaks at once gets no storm).
const HEALTHY_MS: i64 = 1000;
/// Deferred bios retried per pass of the worker (bounds lock hold time).
const RETRY_BATCH: usize = 64;
/// Pause before retrying a repair that found no memory or ring room.
const REPAIR_RETRY_MS: u32 = 100;

/// Connection state as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    /// Not started (suspended) or stopped.
    Stopped,
    /// `dmsetup message .. disconnect`: waits for `connect`.
    AdminDown,
    /// Trying to connect (or waiting for the next attempt).
    Connecting,
    /// Connected, handshake in progress.
    Handshake,
    /// Streaming.
    Connected,
    /// The peer refused us (or failed authentication); retrying slowly.
    Refused(Refusal),
}

impl Conn {
    fn as_str(self) -> &'static str {
        match self {
            Conn::Stopped => "stopped",
            Conn::AdminDown => "disconnected",
            Conn::Connecting => "connecting",
            Conn::Handshake => "handshake",
            Conn::Connected => "connected",
            Conn::Refused(r) => refusal_str(r),
        }
    }
}

/// Status word for a refused handshake.
pub(crate) fn refusal_str(r: Refusal) -> &'static str {
    match r {
        Refusal::Version => "refused:version",
        Refusal::DeviceSize => "refused:device-size",
        Refusal::RegionSize => "refused:region-size",
        Refusal::Busy => "refused:busy",
        Refusal::Generation => "refused:generation",
        Refusal::Diverged => "refused:diverged",
        Refusal::Auth => "refused:auth",
        Refusal::Protocol => "refused:protocol",
        Refusal::BlockSize => "refused:block-size",
    }
}

struct State {
    m: Machine,
    /// Writes waiting for room, an overlap or a slot (FIFO).
    deferred: BioList,
    /// Sync completion: locally done, waiting for the ACK.
    parked: BioList,
    /// Acknowledged parked bios the worker ends.
    release: BioList,
    /// The current connection's socket (also while shaking hands), so
    /// that stop and `disconnect` can shut it down.
    sock: Option<Arc<Socket>>,
    conn: Conn,
    /// The current connection failed; the sender tears it down.
    broken: bool,
    admin_down: bool,
    stopping: bool,
    work_kick: bool,
    /// Fault injection: corrupt the CRC of the next N records sent.
    corrupt_next: u32,
    /// Fault injection: corrupt one record in every N sent (0: off).
    corrupt_every: u32,
    /// Records sent since the last one `corrupt_every` corrupted.
    corrupt_tick: u32,
    /// The last refusal logged (each reason is logged once in a row).
    last_refusal: Option<Refusal>,
    auth_failures: u64,
    connect_failures: u64,
    /// Connections closed because the target broke the protocol (a
    /// corrupt frame after the handshake counts in `crc_errors` only).
    protocol_errors: u64,
    /// The current connection ended because the target broke the
    /// protocol or sent a corrupt frame.
    peer_fault: bool,
    invalid_bios: u64,
    /// The re-read of a repair ended with this errno (0: success).
    repair_read: Option<i32>,
}

/// The threads of a running source.
struct Threads {
    sender: Thread,
    worker: Thread,
}

/// One source device.
#[pin_data]
pub(crate) struct SourceDev {
    cfg: TableConfig,
    data: DmDev,
    ns: NetNs,
    events: Events,
    crc: KernelCrc,
    ring_bytes: usize,
    #[pin]
    st: IrqSpinLock<State>,
    /// The sender waits here for records, state changes and back-off.
    #[pin]
    tx_wait: CondVar,
    /// The worker waits here for a kick.
    #[pin]
    work_wait: CondVar,
    /// The sender's back-off and `disconnect` waits: woken only by stop
    /// and by the connect/disconnect messages, never by new records (a
    /// busy device must not turn the back-off into a connect storm).
    #[pin]
    ctl_wait: CondVar,
    #[pin]
    threads: Mutex<Option<Threads>>,
}

/// The machine's view of a host bio.
fn host_write(op: BioOp, sector: u64, sectors: u32, preflush: bool, fua: bool) -> Option<HostWrite> {
    let op = match op {
        BioOp::Write => HostOp::Write,
        BioOp::Flush => HostOp::Flush,
        BioOp::Discard => HostOp::Discard,
        BioOp::WriteZeroes => HostOp::WriteZeroes,
        BioOp::Read | BioOp::Other => return None,
    };
    let mut flags = 0;
    if preflush {
        flags |= FLAG_PREFLUSH;
    }
    if fua {
        flags |= FLAG_FUA;
    }
    Some(HostWrite { op, sector, count: sectors, flags })
}

impl SourceDev {
    /// Builds the device: ring pages (`ring_mb`), in-flight and hot-region
    /// slots, all allocated here, never on the I/O path.
    pub(crate) fn new(cfg: TableConfig, data: DmDev, events: Events, dev_sectors: u64) -> Result<Arc<SourceDev>> {
        let pages = KPages::new((cfg.ring_mb as usize) << 8, GFP_KERNEL)?;
        let ring_bytes = pages.bytes();
        let mut hot = KVec::with_capacity(cfg.hot_regions as usize, GFP_KERNEL)?;
        for _ in 0..cfg.hot_regions {
            hot.push(HotSlot::default(), GFP_KERNEL)?;
        }
        let mut inflight = KVec::with_capacity(INFLIGHT_SLOTS, GFP_KERNEL)?;
        for _ in 0..INFLIGHT_SLOTS {
            inflight.push(InflightSlot::default(), GFP_KERNEL)?;
        }
        // A new generation per table load: the target starts a new stream
        // from this ring's first record.
        let mut g = [0u8; 8];
        g.copy_from_slice(frames::nonce().get(..8).unwrap_or(&[1; 8]));
        let generation = u64::from_le_bytes(g).max(1);
        let scfg = SourceConfig {
            region_sectors: cfg.region_sectors,
            mode: cfg.mode,
            completion: cfg.completion,
            dev_sectors,
            generation,
        };
        let mut m = Source::new(scfg, pages, 1, hot, inflight).map_err(|_| EINVAL)?;
        m.set_block_size(data.logical_block_size());
        let ns = NetNs::current()?;
        let state = State {
            m,
            deferred: BioList::new(),
            parked: BioList::new(),
            release: BioList::new(),
            sock: None,
            conn: Conn::Stopped,
            broken: false,
            admin_down: false,
            stopping: true,
            work_kick: false,
            corrupt_next: 0,
            corrupt_every: 0,
            corrupt_tick: 0,
            last_refusal: None,
            auth_failures: 0,
            connect_failures: 0,
            protocol_errors: 0,
            peer_fault: false,
            invalid_bios: 0,
            repair_read: None,
        };
        Arc::pin_init(
            pin_init!(SourceDev {
                cfg,
                data,
                ns,
                events,
                crc: KernelCrc,
                ring_bytes,
                st <- new_irq_spinlock!(state, "specmirror_source"),
                tx_wait <- new_condvar!("specmirror_source_tx"),
                work_wait <- new_condvar!("specmirror_source_work"),
                ctl_wait <- new_condvar!("specmirror_source_ctl"),
                threads <- new_mutex!(None, "specmirror_source_threads"),
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

    fn kick_worker(&self) {
        self.work_wait.notify_all();
    }

    /// dm `map`: see the module docs.
    pub(crate) fn map(&self, bio: &mut Bio<'_>) -> MapResult {
        bio.per_bio().tag = TAG_NONE;
        let op = bio.op();
        if op == BioOp::Read {
            bio.remap(&self.data);
            return MapResult::Remapped;
        }
        let Some(hw) = host_write(op, bio.sector(), bio.sectors(), bio.is_preflush(), bio.is_fua()) else {
            return MapResult::Kill;
        };
        let mut g = self.st.lock();
        if !g.deferred.is_empty() {
            // Keep arrival order behind writes that already wait.
            if let Some(b) = bio.take() {
                g.deferred.push_back(b);
            }
            drop(g);
            self.kick_worker();
            return MapResult::Submitted;
        }
        let r = submit(&mut g.m, &self.crc, &hw, bio);
        match r {
            Submit::Accepted(seq) => {
                drop(g);
                let pb = bio.per_bio();
                pb.tag = TAG_WRITE;
                pb.seq = seq;
                self.tx_wait.notify_all();
                bio.remap(&self.data);
                MapResult::Remapped
            }
            Submit::Wait(_) => {
                if let Some(b) = bio.take() {
                    g.deferred.push_back(b);
                }
                MapResult::Submitted
            }
            Submit::Invalid(why) => {
                g.invalid_bios = g.invalid_bios.saturating_add(1);
                let n = g.invalid_bios;
                drop(g);
                if n.is_power_of_two() {
                    pr_warn!("specmirror: refused write at {} (+{}): {:?} ({} so far)\n", hw.sector, hw.count, why, n);
                }
                MapResult::Kill
            }
        }
    }

    /// dm `end_io`: see the module docs. Any context.
    pub(crate) fn end_io(&self, bio: &mut Bio<'_>, status: u8) -> EndIo {
        let pb = *bio.per_bio();
        if pb.tag != TAG_WRITE {
            // Reads, and parked bios ended a second time (TAG_RELEASE).
            return EndIo::Done;
        }
        let mut g = self.st.lock();
        g.m.local_done(pb.seq, status == BLK_STS_OK);
        let mut mine = false;
        while let Some(c) = g.m.poll_completed() {
            if c.seq == pb.seq {
                mine = true;
            } else if let Some(mut b) = g.parked.remove_first(|p| p.seq == c.seq) {
                b.per_bio().tag = TAG_RELEASE;
                g.release.push_back(b);
            }
        }
        let r = if mine {
            EndIo::Done
        } else {
            match bio.take() {
                Some(mut b) => {
                    b.per_bio().tag = TAG_PARKED;
                    g.parked.push_back(b);
                    EndIo::Incomplete
                }
                None => EndIo::Done,
            }
        };
        g.work_kick = true;
        drop(g);
        // A finished local write may unblock an overlapping deferred one.
        self.kick_worker();
        r
    }

    /// Starts the threads (resume). Process context.
    pub(crate) fn start(self: &Arc<Self>) -> Result {
        let mut t = self.threads.lock();
        if t.is_some() {
            return Ok(());
        }
        {
            let mut g = self.st.lock();
            g.stopping = false;
            g.conn = if g.admin_down { Conn::AdminDown } else { Conn::Connecting };
        }
        let d = self.clone();
        let worker = Thread::spawn(c_str!("specmirror-wk"), move || d.worker_main())?;
        let d = self.clone();
        let sender = match Thread::spawn(c_str!("specmirror-tx"), move || d.sender_main()) {
            Ok(s) => s,
            Err(e) => {
                self.set_stopping();
                drop(worker);
                return Err(e);
            }
        };
        *t = Some(Threads { sender, worker });
        Ok(())
    }

    fn set_stopping(&self) {
        let sock = {
            let mut g = self.st.lock();
            g.stopping = true;
            g.sock.clone()
        };
        if let Some(s) = sock {
            s.shutdown();
        }
        self.tx_wait.notify_all();
        self.ctl_wait.notify_all();
        self.kick_worker();
    }

    /// Stops the threads (suspend, remove) and closes the connection.
    /// Process context; waits for the threads to exit.
    pub(crate) fn stop(&self) {
        let mut t = self.threads.lock();
        let Some(th) = t.take() else { return };
        self.set_stopping();
        drop(th.sender);
        drop(th.worker);
        let mut g = self.st.lock();
        g.conn = Conn::Stopped;
        // Anything the worker did not get to: acknowledged bios end now,
        // the rest stays (a stopped device has no I/O in flight: dm
        // suspends before it stops us).
        let mut rel = core::mem::replace(&mut g.release, BioList::new());
        drop(g);
        while let Some(b) = rel.pop_front() {
            b.end_keep_status();
        }
    }

    fn worker_main(&self) {
        let owner: &dyn IoOwner = self;
        // SAFETY: the thread running this holds an `Arc` of `self` until
        // it returns, and `repair` waits for each of its reads to end, so
        // `self` outlives the set and its bios.
        let Ok(bs) = (unsafe { BioSet::new(2, owner as *const dyn IoOwner) }) else {
            return;
        };
        let mut buf: Option<KPages> = None;
        // This thread serves the I/O path (deferred writes, repairs): none
        // of its allocations may recurse into block I/O.
        // SAFETY: paired with `dmsm_noio_end` by the guard on every return.
        let _noio = NoIo(unsafe { crate::dm::raw::dmsm_noio_begin() });
        loop {
            let mut g = self.st.lock();
            while !g.work_kick && !g.stopping {
                let _ = self.work_wait.wait_interruptible(&mut g);
            }
            if g.stopping && g.deferred.is_empty() && g.release.is_empty() {
                return;
            }
            g.work_kick = false;
            if !g.stopping && g.m.next_repair().is_some() {
                drop(g);
                self.repair(&bs, &mut buf);
                g = self.st.lock();
            }
            let mut release = core::mem::replace(&mut g.release, BioList::new());
            let mut ready = BioList::new();
            let mut failed = BioList::new();
            let mut n = 0;
            while n < RETRY_BATCH {
                let Some(mut b) = g.deferred.pop_front() else { break };
                n += 1;
                let Some(hw) = host_write(b.op(), b.sector(), b.sectors(), b.is_preflush(), b.is_fua()) else {
                    failed.push_back(b);
                    continue;
                };
                let r = submit(&mut g.m, &self.crc, &hw, &b);
                match r {
                    Submit::Accepted(seq) => {
                        let pb = b.per_bio();
                        pb.tag = TAG_WRITE;
                        pb.seq = seq;
                        ready.push_back(b);
                    }
                    Submit::Wait(_) => {
                        g.deferred.push_front(b);
                        break;
                    }
                    Submit::Invalid(_) => {
                        g.invalid_bios = g.invalid_bios.saturating_add(1);
                        failed.push_back(b);
                    }
                }
            }
            if n >= RETRY_BATCH && !g.deferred.is_empty() {
                // More to try: come back without waiting.
                g.work_kick = true;
            }
            drop(g);
            if !ready.is_empty() {
                self.tx_wait.notify_all();
            }
            while let Some(b) = release.pop_front() {
                b.end_keep_status();
            }
            while let Some(b) = ready.pop_front() {
                b.submit_remapped(&self.data);
            }
            while let Some(b) = failed.pop_front() {
                b.end(BLK_STS_IOERR);
            }
        }
    }

    /// Repairs the oldest failed local write (see the module docs): reads
    /// its range from the data device into `buf` (allocated on first use,
    /// `GFP_NOIO`) and appends it as a WRITE record. Worker thread only;
    /// returns with the repair done, given up, or left for a later kick.
    fn repair(&self, bs: &BioSet, buf: &mut Option<KPages>) {
        let Some(job) = self.st.lock().m.next_repair() else { return };
        let bytes = usize::try_from(job.count).unwrap_or(usize::MAX).saturating_mul(512);
        let npages = bytes.div_ceil(PAGE_SIZE);
        if buf.as_ref().map_or(0, |b| b.bytes()) < bytes {
            *buf = None;
            // GFP_KERNEL in this thread's memalloc_noio scope (worker_main).
            match KPages::new(npages, GFP_KERNEL) {
                Ok(p) => *buf = Some(p),
                Err(_) => {
                    self.retry_repair_later();
                    return;
                }
            }
        }
        let Some(pages) = buf.as_ref() else { return };
        let io = DevIo {
            op: IoOp::Read,
            preflush: false,
            fua: false,
            sector: job.sector,
            sectors: job.count as u32,
        };
        let pieces = (0..npages).filter_map(|i| {
            let len = bytes.saturating_sub(i * PAGE_SIZE).min(PAGE_SIZE);
            pages.page_ptr(i).map(|p| (p, 0, len))
        });
        self.st.lock().repair_read = None;
        // SAFETY: `buf` is only touched by this thread, which waits below
        // for the read to end before using or freeing it.
        unsafe { bs.submit(&self.data, &io, pieces, job.seq) };
        let err = {
            let mut g = self.st.lock();
            loop {
                if let Some(e) = g.repair_read.take() {
                    break e;
                }
                let _ = self.work_wait.wait_interruptible(&mut g);
            }
        };
        let mut g = self.st.lock();
        if err != 0 {
            g.m.repair_failed(job.seq);
            let n = g.m.stats().unrepaired;
            drop(g);
            if n.is_power_of_two() {
                pr_err!(
                    "specmirror: source for {}: write failed at {} (+{}) and the range cannot be read back ({}): \
                     the mirror may differ there ({} such ranges)\n",
                    self.cfg.endpoint, job.sector, job.count, err, n
                );
            }
            self.events.raise();
            return;
        }
        let r = g.m.repair(&self.crc, job.seq, |w| {
            for i in 0..npages {
                let len = bytes.saturating_sub(i * PAGE_SIZE).min(PAGE_SIZE);
                let page = kernel_page(pages, i).ok_or(RingError::LengthMismatch)?;
                w.write(page.get(..len).ok_or(RingError::LengthMismatch)?)?;
            }
            Ok(())
        });
        let n = g.m.stats().repairs;
        drop(g);
        match r {
            Submit::Accepted(_) => {
                self.tx_wait.notify_all();
                if n.is_power_of_two() {
                    pr_warn!(
                        "specmirror: source for {}: write failed at {} (+{}): replicated what the device holds there ({} repairs)\n",
                        self.cfg.endpoint, job.sector, job.count, n
                    );
                }
            }
            // The ring is full: try again once acks made room.
            Submit::Wait(_) => self.retry_repair_later(),
            Submit::Invalid(_) => self.st.lock().m.repair_failed(job.seq),
        }
    }

    /// Comes back to a repair after a short pause (no memory or ring room
    /// now); the pause ends early on stop.
    fn retry_repair_later(&self) {
        let mut g = self.st.lock();
        if !g.stopping {
            let _ = self.ctl_wait.wait_interruptible_timeout(&mut g, msecs_to_jiffies(REPAIR_RETRY_MS));
        }
        g.work_kick = true;
    }

    /// Waits up to `ms`, or until stopped or told to connect now; false
    /// once stopping.
    fn sleep_ms(&self, ms: u32) -> bool {
        let mut g = self.st.lock();
        if g.stopping {
            return false;
        }
        let _ = self.ctl_wait.wait_interruptible_timeout(&mut g, msecs_to_jiffies(ms));
        !g.stopping
    }

    fn set_conn(&self, c: Conn) {
        let changed = {
            let mut g = self.st.lock();
            let changed = g.conn != c;
            g.conn = c;
            changed
        };
        if changed {
            self.events.raise();
        }
    }

    fn sender_main(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        let mut pieces: KVec<(*const u8, usize)> = match KVec::with_capacity(SEND_PIECES, GFP_KERNEL) {
            Ok(v) => v,
            Err(_) => return,
        };
        loop {
            {
                let mut g = self.st.lock();
                while g.admin_down && !g.stopping {
                    g.conn = Conn::AdminDown;
                    let _ = self.ctl_wait.wait_interruptible(&mut g);
                }
                if g.stopping {
                    return;
                }
            }
            let refused = self.st.lock().conn;
            if !matches!(refused, Conn::Refused(_)) {
                self.set_conn(Conn::Connecting);
            }
            let sock = match Socket::connect(&self.ns, &self.cfg.endpoint, CONNECT_TIMEOUT_MS).and_then(|s| Ok(Arc::new(s, GFP_KERNEL)?)) {
                Ok(s) => s,
                Err(_) => {
                    {
                        let mut g = self.st.lock();
                        g.connect_failures = g.connect_failures.saturating_add(1);
                    }
                    if !self.sleep_ms(backoff.next_ms()) {
                        return;
                    }
                    continue;
                }
            };
            {
                let mut g = self.st.lock();
                if g.stopping || g.admin_down {
                    drop(g);
                    sock.shutdown();
                    continue;
                }
                g.sock = Some(sock.clone());
                g.broken = false;
                g.peer_fault = false;
            }
            if !matches!(self.st.lock().conn, Conn::Refused(_)) {
                // A refused source keeps saying why until a handshake works.
                self.set_conn(Conn::Handshake);
            }
            match self.handshake(&sock) {
                Ok(()) => {
                    let up = Ktime::ktime_get();
                    self.st.lock().last_refusal = None;
                    self.set_conn(Conn::Connected);
                    let d = self.clone();
                    let s = sock.clone();
                    match Thread::spawn(c_str!("specmirror-rx"), move || d.receiver_main(s)) {
                        Ok(rx) => {
                            self.stream(&sock, &mut pieces);
                            sock.shutdown();
                            drop(rx);
                        }
                        Err(_) => sock.shutdown(),
                    }
                    // The back-off starts over only after a healthy
                    // connection: one that lasted and that the target did
                    // not break (it keeps growing against a peer that
                    // shakes hands and then sends garbage).
                    let fault = self.st.lock().peer_fault;
                    if !fault && ktime_ms_delta(Ktime::ktime_get(), up) >= HEALTHY_MS {
                        backoff.reset();
                    }
                }
                Err(r) => {
                    sock.shutdown();
                    if let Some(r) = r {
                        // Once per reason, not once per retry.
                        let prev = self.st.lock().last_refusal.replace(r);
                        if prev != Some(r) {
                            pr_warn!("specmirror: {} refused the handshake: {}\n", self.cfg.endpoint, refusal_str(r));
                        }
                        self.set_conn(Conn::Refused(r));
                    }
                }
            }
            let old = {
                let mut g = self.st.lock();
                g.m.on_disconnect();
                if g.conn == Conn::Connected || g.conn == Conn::Handshake {
                    g.conn = Conn::Connecting;
                }
                g.sock.take()
            };
            // Released outside the spinlock: sock_release sleeps.
            drop(old);
            drop(sock);
            self.events.raise();
            if !self.sleep_ms(backoff.next_ms()) {
                return;
            }
        }
    }

    /// CHALLENGE, HELLO, HELLO_REPLY. `Err(Some(r))`: refused by the peer
    /// or by us (authentication); `Err(None)`: the connection failed.
    fn handshake(&self, sock: &Socket) -> Result<(), Option<Refusal>> {
        let secret = self.cfg.secret.as_ref().map(|s| s.as_bytes());
        let mut buf = [0u8; MAX_CONTROL_FRAME];
        // One deadline for the whole handshake, however the bytes come.
        let start = Ktime::ktime_get();
        let n = frames::recv_frame_by(sock, &mut buf, start, HANDSHAKE_TIMEOUT_MS).map_err(|e| self.handshake_recv_error(e))?;
        let peer_nonce = auth::decode_challenge(&self.crc, buf.get(..n).unwrap_or(&[])).map_err(|_| {
            self.count_protocol_error();
            Some(Refusal::Protocol)
        })?;
        let mut hello = self.st.lock().m.start_handshake();
        hello.nonce = frames::nonce();
        auth::sign(secret, MacLabel::Hello, &peer_nonce, &mut hello);
        let len = encode_hello(&self.crc, &hello, false, &mut buf).map_err(|_| None)?;
        sock.send_all(buf.get(..len).unwrap_or(&[])).map_err(|_| None)?;
        let n = frames::recv_frame_by(sock, &mut buf, start, HANDSHAKE_TIMEOUT_MS).map_err(|e| self.handshake_recv_error(e))?;
        sock.set_recv_timeout(0);
        let mut g = self.st.lock();
        match g.m.on_frame(&self.crc, buf.get(..n).unwrap_or(&[])) {
            SourceRecv::HelloReply(reply) => {
                if !auth::verify(secret, MacLabel::Reply, &hello.nonce, &reply) {
                    g.auth_failures = g.auth_failures.saturating_add(1);
                    return Err(Some(Refusal::Auth));
                }
                g.m.on_hello_reply(&reply).map_err(Some)
            }
            _ => {
                // Not a HELLO_REPLY, or one that does not decode (a
                // corrupt frame also counts in crc_errors).
                g.protocol_errors = g.protocol_errors.saturating_add(1);
                Err(Some(Refusal::Protocol))
            }
        }
    }

    fn count_protocol_error(&self) {
        let mut g = self.st.lock();
        g.protocol_errors = g.protocol_errors.saturating_add(1);
    }

    /// A handshake frame could not be read: bytes that are no frame, a
    /// frame longer than any handshake frame, or a peer that stalls past
    /// the handshake timeout break the protocol (`refused:protocol`); a
    /// connection closed by the peer is a failed connection attempt.
    fn handshake_recv_error(&self, e: RecvError) -> Option<Refusal> {
        match e {
            RecvError::Header | RecvError::TooLong | RecvError::Timeout => {
                self.count_protocol_error();
                Some(Refusal::Protocol)
            }
            RecvError::Io => {
                let mut g = self.st.lock();
                if !g.stopping && !g.admin_down {
                    g.connect_failures = g.connect_failures.saturating_add(1);
                }
                None
            }
        }
    }

    /// Sends records until the connection breaks or the device stops.
    fn stream(&self, sock: &Socket, pieces: &mut KVec<(*const u8, usize)>) {
        // Header copy for a record whose CRC fault injection corrupts.
        let mut bad_hdr = [0u8; HEADER_LEN];
        loop {
            clear(pieces);
            let mut g = self.st.lock();
            loop {
                if g.stopping || g.broken || g.admin_down {
                    return;
                }
                if g.m.peek_send().is_some() {
                    break;
                }
                let _ = self.tx_wait.wait_interruptible(&mut g);
            }
            let mut bytes = 0usize;
            while bytes < SEND_BATCH {
                let Some(v) = g.m.peek_send() else { break };
                let spans = v.chunks().count();
                if !pieces.is_empty() && pieces.len() + spans + 2 > SEND_PIECES {
                    break;
                }
                let mut corrupt = g.corrupt_next > 0;
                if g.corrupt_every > 0 {
                    g.corrupt_tick += 1;
                    if g.corrupt_tick >= g.corrupt_every {
                        g.corrupt_tick = 0;
                        corrupt = true;
                    }
                }
                let mut skip = 0usize;
                if corrupt {
                    // Copy the header out, flip a CRC bit, send the copy.
                    let pages = g.m.ring().pages();
                    let mut filled = 0usize;
                    for (pi, off, len) in v.chunks() {
                        let Some(page) = kernel_page(pages, pi) else { break };
                        let take = len.min(HEADER_LEN - filled);
                        if let (Some(d), Some(s)) = (bad_hdr.get_mut(filled..filled + take), page.get(off..off + take)) {
                            d.copy_from_slice(s);
                        }
                        filled += take;
                        if filled >= HEADER_LEN {
                            break;
                        }
                    }
                    if let Some(b) = bad_hdr.get_mut(OFF_CRC) {
                        *b ^= 0x01;
                    }
                    let _ = pieces.push((bad_hdr.as_ptr(), HEADER_LEN), GFP_KERNEL);
                    skip = HEADER_LEN;
                    g.corrupt_next = g.corrupt_next.saturating_sub(1);
                }
                for (pi, off, len) in v.chunks() {
                    let Some(base) = g.m.ring().pages().addr(pi) else { break };
                    let drop_n = skip.min(len);
                    skip -= drop_n;
                    if len > drop_n {
                        // `pieces` has room: checked against SEND_PIECES.
                        let _ = pieces.push((base.wrapping_add(off + drop_n), len - drop_n), GFP_KERNEL);
                    }
                }
                bytes += v.frame_len;
                g.m.advance_send();
                if corrupt {
                    // `bad_hdr` is reused: one corrupted record per send.
                    break;
                }
            }
            drop(g);
            // SAFETY: the pieces point into ring pages that stay allocated
            // while the device lives and hold sealed records that are only
            // freed by an ACK for them, which cannot come before the
            // target received these bytes; `bad_hdr` lives on this stack.
            if unsafe { sock.send_raw(pieces) }.is_err() {
                self.st.lock().broken = true;
                return;
            }
        }
    }

    fn receiver_main(self: Arc<Self>, sock: Arc<Socket>) {
        let mut buf = [0u8; MAX_CONTROL_FRAME];
        loop {
            let n = match frames::recv_frame(&sock, &mut buf) {
                Ok(n) => n,
                Err(RecvError::Header) | Err(RecvError::TooLong) => {
                    // Count it like a corrupt frame and reconnect.
                    let mut g = self.st.lock();
                    let _ = g.m.on_frame(&self.crc, &[]);
                    g.peer_fault = true;
                    break;
                }
                Err(RecvError::Io) | Err(RecvError::Timeout) => break,
            };
            let mut release = BioList::new();
            let mut g = self.st.lock();
            let r = g.m.on_frame(&self.crc, buf.get(..n).unwrap_or(&[]));
            if r != SourceRecv::Ok {
                // A corrupt frame is counted in crc_errors by the machine;
                // anything else the target must not send here (a
                // HELLO_REPLY included) is a protocol error.
                if !matches!(r, SourceRecv::Reconnect(ProtocolError::Corrupt)) {
                    g.protocol_errors = g.protocol_errors.saturating_add(1);
                }
                g.peer_fault = true;
                drop(g);
                break;
            }
            while let Some(c) = g.m.poll_completed() {
                if let Some(mut b) = g.parked.remove_first(|p| p.seq == c.seq) {
                    b.per_bio().tag = TAG_RELEASE;
                    release.push_back(b);
                }
            }
            g.work_kick = true;
            drop(g);
            self.tx_wait.notify_all();
            self.kick_worker();
            while let Some(b) = release.pop_front() {
                b.end_keep_status();
            }
        }
        self.st.lock().broken = true;
        sock.shutdown();
        self.tx_wait.notify_all();
    }

    /// `dmsetup message`: `connect`, `disconnect`, and with the
    /// fault-injection parameter `fault corrupt <n>`, `fault corrupt_every
    /// <n>`, `fault drop`.
    pub(crate) fn message(&self, words: &[&[u8]]) -> Result {
        match words {
            [b"disconnect"] => {
                let sock = {
                    let mut g = self.st.lock();
                    g.admin_down = true;
                    g.sock.clone()
                };
                if let Some(s) = sock {
                    s.shutdown();
                }
                self.tx_wait.notify_all();
                self.ctl_wait.notify_all();
                Ok(())
            }
            [b"connect"] => {
                self.st.lock().admin_down = false;
                self.ctl_wait.notify_all();
                Ok(())
            }
            [b"fault", b"corrupt", n] if fault_injection() => {
                let n = crate::table::parse_u32(n).ok_or(EINVAL)?;
                self.st.lock().corrupt_next = n;
                Ok(())
            }
            [b"fault", b"corrupt_every", n] if fault_injection() => {
                let n = crate::table::parse_u32(n).ok_or(EINVAL)?;
                let mut g = self.st.lock();
                g.corrupt_every = n;
                g.corrupt_tick = 0;
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

    /// `dmsetup status` (INFO).
    pub(crate) fn status(&self, out: &mut StatusWriter<'_>, dev: &str) {
        let g = self.st.lock();
        let s = *g.m.stats();
        let ring = g.m.ring();
        let conn = match (g.conn, g.m.link_state()) {
            (Conn::Connected, LinkState::Connected) => "connected",
            (c, _) => c.as_str(),
        };
        let _ = write!(
            out,
            "source {} {} ring={}/{} queued={} sent={} acked={} lag={} inflight={} deferred={} \
             resends={} crc_errors={} naks={} lock_rejections={} reconnects={} auth_failures={} \
             connect_failures={} waits={} local_errors={} repairs={} unrepaired={} protocol_errors={}",
            dev,
            conn,
            ring.used_bytes(),
            self.ring_bytes,
            ring.next_seq().saturating_sub(1),
            ring.send_seq().saturating_sub(1),
            g.m.acked_seq(),
            ring.used_bytes(),
            g.m.inflight_len(),
            g.deferred.len(),
            s.resends,
            s.crc_errors,
            s.naks,
            s.lock_rejections,
            s.reconnects,
            g.auth_failures,
            g.connect_failures,
            s.waits,
            s.local_errors,
            s.repairs,
            s.unrepaired,
            g.protocol_errors,
        );
    }
}

/// Offers `hw` to the machine, copying the payload from `bio`'s pages into
/// the ring if it is accepted.
fn submit(m: &mut Machine, crc: &KernelCrc, hw: &HostWrite, bio: &impl BioView) -> Submit {
    m.submit(crc, hw, |w| {
        let mut err: Option<RingError> = None;
        bio.copy_data(|seg| match w.write(seg) {
            Ok(()) => true,
            Err(e) => {
                err = Some(e);
                false
            }
        });
        err.map_or(Ok(()), Err)
    })
}

/// Empties a vector of plain values, keeping its allocation.
fn clear<T: Copy>(v: &mut KVec<T>) {
    // SAFETY: length 0 is always initialised; `T: Copy` needs no drop.
    unsafe { v.set_len(0) };
}

/// Whether the developer-only fault-injection messages are enabled.
pub(crate) fn fault_injection() -> bool {
    // SAFETY: reads a module parameter; no preconditions.
    unsafe { crate::dm::raw::dmsm_fault_injection_enabled() }
}

/// Page `i` of the ring's storage as bytes (under the state lock).
fn kernel_page(p: &KPages, i: usize) -> Option<&[u8; crate::log::pages::PAGE_SIZE]> {
    crate::log::pages::Pages::page(p, i)
}

/// A `memalloc_noio_save` scope of the current thread, ended on drop.
struct NoIo(u32);

impl Drop for NoIo {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `dmsm_noio_begin` on this thread.
        unsafe { crate::dm::raw::dmsm_noio_end(self.0) };
    }
}

impl IoOwner for SourceDev {
    /// The re-read of a repair ended. Any context.
    fn io_done(&self, _seq: u64, err: i32) {
        let mut g = self.st.lock();
        g.repair_read = Some(err);
        drop(g);
        self.work_wait.notify_all();
    }
}

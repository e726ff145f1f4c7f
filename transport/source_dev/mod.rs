// SPDX-License-Identifier: GPL-2.0

//! The source role in the kernel: executes what the source machine
//! ([`crate::transport::proto::source`]) decides, with dm's bios, ring
//! pages and a kernel TCP socket. It decides nothing itself.
//!
//! - `map` offers each write to the machine, which copies its payload into
//!   the rollback ring. An accepted write goes to the data device *from
//!   the ring's pages* (the very bytes replicated, whatever the host does
//!   to its buffer meanwhile), as a bio of our own; the host bio ends when
//!   the machine says it may (its local write done; with `completion
//!   sync`, also applied on the target). A write that must wait is parked
//!   in the deferred list; nothing sleeps in `map`.
//! - Three kthreads per device run the machine's steps (see
//!   [`threads`]): the *sender* (connect, handshake, stream, close), the
//!   *worker* (link deadlines, deferred writes, completions, repairs,
//!   the suspend's grace) and one *receiver* per connection.
//!
//! All state sits behind one irq-safe spinlock ([`IrqSpinLock`]): bios end
//! in interrupt context. Nothing sleeps or allocates under it, the last
//! reference to a socket is never dropped under it, and every critical
//! section ends by waking exactly the threads the machine names
//! ([`SourceDev::with`]); completion contexts wake them before they drop
//! the lock, and end host bios last, so that nothing touches the device
//! once dm may free it.

mod threads;

use core::fmt::Write;
use kernel::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    c_str, new_condvar, new_mutex,
    error::code::ENOMEM,
    prelude::*,
    sync::{Arc, CondVar, Mutex},
};

use super::proto::hot::HotSlot;
use super::proto::inflight::{Completed, InflightSlot};
use super::proto::source::{copies_inline, HostOp, HostWrite, Source, SourceConfig, Submit, SENDER, WORKER};
use super::proto::wake::Wakes;
use super::sys::bio::{Bio, BioList, BioOp, BioView, OwnedBio, BLK_STS_IOERR, BLK_STS_OK};
use super::sys::devio::{BioSet, DevIo, IoOp, IoOwner, PreparedIo};
use super::sys::net::{NetNs, Socket};
use super::sys::pages::{KPages, KernelCrc, RingFill};
use super::sys::sync::{IrqSpinGuard, IrqSpinLock};
use super::sys::thread::Thread;
use super::sys::{self, DmDev, EndIo, Events, MapResult, StatusWriter, TargetRef};
use super::metadata::Metadata;
use super::sys::CtrError;
use super::table::TableConfig;
use crate::log::meta::bitmap::{self, Bitmap};
use crate::log::pages::SECTOR_ALIGN;
use crate::log::record::{FLAG_FUA, FLAG_PREFLUSH};
use crate::log::ring::{Reserved, RingError, RingWriter};
use crate::new_irq_spinlock;

type Machine = Source<KPages, KVec<HotSlot>, KVec<InflightSlot>>;

/// Per-bio tags (`PerBio::tag`).
const TAG_NONE: u32 = 0;
/// Ours: its local I/O is in flight, or it waits for its completion.
const TAG_OURS: u32 = 1;

/// Host writes in flight at once (in-flight slots of the machine).
const INFLIGHT_SLOTS: usize = 256;
/// Bios reserved for local writes (more come from the general pool).
const LOCAL_BIOS: u32 = 64;
/// Cookie of the repair read (local writes use their seq, never 0).
const REPAIR_COOKIE: u64 = 0;
/// Cookie of the resync read (no seq gets this far).
const RESYNC_COOKIE: u64 = u64::MAX;
/// Cookie of the verify engine's read (no host write has this seq).
const VERIFY_COOKIE: u64 = u64::MAX - 1;

/// Everything behind the lock.
pub(super) struct State {
    /// On the heap: the machine is several KiB (its ring's reservation
    /// table among them), too much to pass through a kernel stack twice.
    pub(super) m: KBox<Machine>,
    /// Host writes waiting for room, an overlap or a slot (FIFO); the
    /// machine counts them.
    pub(super) deferred: BioList,
    /// Host writes whose local I/O is in flight or done, until they
    /// complete (tag `TAG_OURS`, seq in the per-bio data).
    pub(super) writing: BioList,
    /// The current connection's socket (handshake included), so that
    /// stop and the worker can shut it down.
    pub(super) sock: Option<(u64, Arc<Socket>)>,
    /// Writes that could not be accepted at all.
    pub(super) invalid_bios: u64,
    /// Wake-ups of the sender and of the worker (status `wakes=`: how
    /// well they batch, issue 20).
    pub(super) wakes: [u64; 2],
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
    /// The metadata device: the worker saves the dirty bitmap there.
    meta: Arc<Mutex<Metadata>>,
    ns: NetNs,
    events: Events,
    target: TargetRef,
    crc: KernelCrc,
    ring_bytes: usize,
    /// The ring's pages, for copying payloads into reserved records
    /// outside `st` (no copy with interrupts off).
    fill: RingFill,
    /// Local writes and repair reads (reporting to this device).
    bios: BioSet,
    #[pin]
    st: IrqSpinLock<State>,
    /// The sender sleeps here.
    #[pin]
    tx_wait: CondVar,
    /// The worker sleeps here.
    #[pin]
    work_wait: CondVar,
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

/// The local I/O of a host write.
fn local_io(hw: &HostWrite) -> DevIo {
    DevIo {
        op: match hw.op {
            HostOp::Write => IoOp::Write,
            HostOp::Flush => IoOp::Flush,
            HostOp::Discard => IoOp::Discard,
            HostOp::WriteZeroes => IoOp::WriteZeroes,
        },
        preflush: hw.flags & FLAG_PREFLUSH != 0,
        fua: hw.flags & FLAG_FUA != 0,
        sector: hw.sector,
        sectors: hw.count,
    }
}

/// Page pieces a write of `sectors` may span in the ring.
fn pieces_for(sectors: u32) -> usize {
    ((sectors as usize) << 9).div_ceil(crate::log::pages::PAGE_SIZE) + 1
}

/// The source machine, on the heap, built out of line so that its one
/// temporary (writing into an uninitialised box keeps it to one) is not
/// added to the frame of the table constructor, as the target's is.
#[inline(never)]
fn new_machine(
    cfg: SourceConfig,
    pages: KPages,
    hot: KVec<HotSlot>,
    inflight: KVec<InflightSlot>,
) -> Result<KBox<Machine>, CtrError> {
    let b = KBox::<Machine>::new_uninit(GFP_KERNEL)
        .map_err(|_| CtrError { msg: c_str!("Cannot allocate the ring or the threads' state"), err: ENOMEM })?;
    let m = Source::new(cfg, pages, 1, hot, inflight).map_err(|_| CtrError::inval(c_str!("Invalid source configuration")))?;
    Ok(KBox::write(b, m))
}

impl SourceDev {
    /// Builds the device: ring pages (`ring_mb`), in-flight and hot-region
    /// slots, the local bio pool and the dirty bitmap (read from the
    /// metadata device), all allocated here, never on the I/O path.
    pub(crate) fn new(
        cfg: TableConfig,
        data: DmDev,
        meta: Arc<Mutex<Metadata>>,
        events: Events,
        target: TargetRef,
        dev_sectors: u64,
    ) -> Result<Arc<SourceDev>, CtrError> {
        fn nomem<E>(_: E) -> CtrError {
            CtrError { msg: c_str!("Cannot allocate the ring or the threads' state"), err: ENOMEM }
        }
        let pages = KPages::new((cfg.ring_mb as usize) << 8, GFP_KERNEL).map_err(nomem)?;
        let ring_bytes = pages.bytes();
        let fill = pages.ring_fill();
        let hot = KVec::from_elem(HotSlot::default(), cfg.hot_regions as usize, GFP_KERNEL).map_err(nomem)?;
        let inflight = KVec::from_elem(InflightSlot::default(), INFLIGHT_SLOTS, GFP_KERNEL).map_err(nomem)?;
        // A new generation per table load: the target starts a new stream
        // from this ring's first record.
        let generation = sys::frames::random_u64();
        let scfg = SourceConfig {
            region_sectors: cfg.region_sectors,
            mode: cfg.mode,
            completion: cfg.completion,
            dev_sectors,
            generation,
            secret: cfg.secret,
        };
        fn inval<E>(_: E) -> CtrError {
            CtrError::inval(c_str!("Invalid source configuration"))
        }
        let mut m = new_machine(scfg, pages, hot, inflight)?;
        let lbs = data.logical_block_size();
        m.set_block_size(lbs);
        // Local writes go from the ring: payloads start on a block.
        m.set_payload_align((lbs as usize).max(SECTOR_ALIGN)).map_err(inval)?;
        Self::attach_bitmap(&mut m, &cfg, &meta, dev_sectors)?;
        // The activity log: a crash resyncs its regions besides the bitmap.
        let al = KVec::from_elem(HotSlot::default(), cfg.al_regions as usize, GFP_KERNEL).map_err(nomem)?;
        m.attach_activity_log(al).map_err(inval)?;
        m.attach_generations(meta.lock().superblock().gens, cfg.initial_sync);
        m.set_sync_rate(cfg.sync_rate);
        // `on_disconnect block`: None, never degraded.
        m.set_degrade_after(cfg.degrade_after_ns());
        let ns = NetNs::current().map_err(nomem)?;
        let state = State { m, deferred: BioList::new(), writing: BioList::new(), sock: None, invalid_bios: 0, wakes: [0; 2] };
        let dev = Arc::pin_init(
            try_pin_init!(SourceDev {
                cfg,
                data,
                meta,
                ns,
                events,
                target,
                crc: KernelCrc,
                ring_bytes,
                fill,
                bios: BioSet::new(LOCAL_BIOS)?,
                st <- new_irq_spinlock!(state, "specmirror_source"),
                tx_wait <- new_condvar!("specmirror_source_tx"),
                work_wait <- new_condvar!("specmirror_source_work"),
                threads <- new_mutex!(None, "specmirror_source_threads"),
            }),
            GFP_KERNEL,
        )
        .map_err(nomem)?;
        // SAFETY: no bio of the set exists yet and no thread uses it; the
        // device owns the set and outlives it; dm ends every host bio
        // (whose local write ended first) before dtr, and the worker waits
        // for its repair read before it returns.
        unsafe { dev.bios.set_owner(&*dev) };
        Ok(dev)
    }

    /// Reads the dirty bitmap from the metadata device into pages of its
    /// own and gives it to the machine. Blocks that do not decode count
    /// as all dirty and are rewritten by the worker.
    fn attach_bitmap(m: &mut Machine, cfg: &TableConfig, meta: &Mutex<Metadata>, dev_sectors: u64) -> Result<(), CtrError> {
        fn nomem<E>(_: E) -> CtrError {
            CtrError { msg: c_str!("Cannot allocate the dirty bitmap"), err: ENOMEM }
        }
        let chunks = dev_sectors.div_ceil(u64::from(cfg.chunk_sectors));
        let npages = usize::try_from(bitmap::blocks_for(chunks)).map_err(nomem)?;
        let pages = KPages::new(npages, GFP_KERNEL).map_err(nomem)?;
        let mut bits = Bitmap::new(pages, chunks).ok_or_else(|| nomem(()))?;
        let mut meta = meta.lock();
        let damaged = meta
            .load_bitmap(&mut bits)
            .map_err(|err| CtrError { msg: c_str!("Cannot read the dirty bitmap from the metadata device"), err })?;
        let dirty = bits.count();
        m.attach_bitmap(bits, cfg.chunk_sectors)
            .map_err(|_| CtrError::inval(c_str!("Dirty bitmap does not match the data device")))?;
        let name = meta.dev().name().to_str().unwrap_or("?");
        if let Some((lo, hi)) = damaged {
            pr_warn!(
                "specmirror: metadata device {}: bitmap blocks {}..={} damaged: their chunks are resynced\n",
                name, lo, hi
            );
            m.bitmap_rewrite(lo, hi);
        }
        if dirty > 0 {
            pr_info!("specmirror: metadata device {}: {} of {} chunks dirty, resynced once connected\n", name, dirty, chunks);
        }
        Ok(())
    }

    /// The data device.
    pub(crate) fn data(&self) -> &DmDev {
        &self.data
    }

    /// The parsed table line.
    pub(crate) fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// Wakes the threads in `w` (see [`crate::transport::proto::wake`]).
    fn wake(&self, w: Wakes) {
        if w.contains(SENDER) {
            self.tx_wait.notify_all();
        }
        if w.contains(WORKER) {
            self.work_wait.notify_all();
        }
    }

    /// Runs `f` as one critical section and wakes, before the lock is
    /// dropped, the threads the machine then names.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut g = self.st.lock();
        let r = f(&mut g);
        self.end_section(&mut g);
        r
    }

    /// The end of a critical section: wake whom the machine names (under
    /// the lock: a completion context must not touch the device after it
    /// dropped it).
    pub(super) fn end_section(&self, g: &mut IrqSpinGuard<'_, State>) {
        let w = g.m.take_wakes();
        for (i, n) in [SENDER, WORKER].into_iter().zip(g.wakes.iter_mut()) {
            if w.contains(i) {
                *n = n.wrapping_add(1);
            }
        }
        self.wake(w);
    }

    /// Offers `hw` to the machine. A short payload is copied from `bio`'s
    /// pages into the ring now; a longer one's record is only reserved,
    /// and the caller copies it outside the lock
    /// ([`SourceDev::fill_and_publish`]; `copies_inline`).
    fn offer(g: &mut State, crc: &KernelCrc, hw: &HostWrite, bio: &impl BioView, retry: bool) -> Submit {
        // Starts degraded mode's clocks (a write parked, a sync write
        // waiting for its acknowledgement).
        let now = sys::now();
        if hw.op == HostOp::Write && !copies_inline((hw.count as usize) << 9) {
            return if retry {
                g.m.retry_deferred_reserved(crc, hw, now)
            } else {
                g.m.submit_reserved(crc, hw, now)
            };
        }
        let fill = |w: &mut RingWriter<'_, KPages>| {
            let mut err: Option<RingError> = None;
            bio.copy_data(|seg| match w.write(seg) {
                Ok(()) => true,
                Err(e) => {
                    err = Some(e);
                    false
                }
            });
            err.map_or(Ok(()), Err)
        };
        if retry {
            g.m.retry_deferred(crc, hw, now, fill)
        } else {
            g.m.submit(crc, hw, now, fill)
        }
    }

    /// The accepted write `seq` of bio `b`: its local I/O goes out with
    /// `io` (prepared, empty); the payload pieces come from the ring.
    /// Under the lock (adding pages takes no sleep). A record still to be
    /// filled comes back with its bio, which the caller keeps until it is
    /// published; any other joins `writing` now.
    fn arm_local(&self, g: &mut State, seq: u64, mut b: OwnedBio, io: &mut PreparedIo<'_>) -> Option<(Reserved, OwnedBio)> {
        let pb = b.per_bio();
        pb.tag = TAG_OURS;
        pb.seq = seq;
        pb.failed = false;
        io.set_cookie(seq);
        if let Some(spans) = g.m.payload_chunks(seq) {
            let pages = g.m.ring().pages();
            // SAFETY: ring pages live as long as the device; the machine
            // keeps record `seq` in the ring, unchanged once published,
            // until its local write is done (`local_done`), which is this
            // bio's end; the bio is submitted only after the publication.
            unsafe { io.add_pages(spans.filter_map(|(pi, off, len)| pages.page_ptr(pi).map(|p| (p, off, len)))) };
        }
        match g.m.reserved(seq) {
            Some(r) => Some((r, b)),
            None => {
                g.writing.push_back(b);
                None
            }
        }
    }

    /// Copies host bio `b`'s payload into its reserved record `r`
    /// (outside the lock: up to 1 MiB, in parallel on every CPU), then
    /// publishes the record and lets `b` join `writing`. Its local write
    /// may be submitted after this.
    fn fill_and_publish(&self, r: Reserved, b: OwnedBio) {
        // SAFETY: `r` was reserved for `b` under the lock and is published
        // below, after the copier is gone; nobody else has it.
        let mut w = unsafe { self.fill.copier(&r, &self.crc) };
        let copied = b.copy_data(|seg| w.write(seg));
        let (crc, full) = w.finish();
        if !(copied && full) {
            pr_err!(
                "specmirror: source for {}: write {} carried fewer bytes than its size; the rest is zeros on both sides\n",
                self.cfg.endpoint, r.seq
            );
        }
        self.with(|g| {
            if !g.m.publish(r.seq, crc) {
                pr_err!("specmirror: record {} was not reserved\n", r.seq);
            }
            g.writing.push_back(b);
        });
    }

    /// dm `map`: see the module docs. Never sleeps.
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
        // The local bio first, without sleeping: an accepted record must
        // never lack one. None now: the bio waits for the worker.
        let mut io = self.bios.prepare(&self.data, &local_io(&hw), pieces_for(hw.count), true);
        let mut g = self.st.lock();
        let r = match io.as_mut() {
            Some(_) => Self::offer(&mut g, &self.crc, &hw, &*bio, false),
            None => {
                g.m.defer_unprepared(sys::now());
                Submit::Wait(crate::transport::proto::source::WaitReason::Queued)
            }
        };
        let mut invalid = 0;
        let mut to_fill = None;
        match r {
            Submit::Accepted(seq) => {
                if let (Some(b), Some(io)) = (bio.take(), io.as_mut()) {
                    to_fill = self.arm_local(&mut g, seq, b, io);
                }
            }
            Submit::Wait(_) => {
                if let Some(b) = bio.take() {
                    g.deferred.push_back(b);
                }
            }
            Submit::Invalid(_) => {
                g.invalid_bios = g.invalid_bios.saturating_add(1);
                invalid = g.invalid_bios;
            }
        }
        self.end_section(&mut g);
        drop(g);
        if let Some((res, b)) = to_fill {
            self.fill_and_publish(res, b);
        }
        match r {
            Submit::Accepted(_) => {
                if let Some(io) = io {
                    io.submit();
                }
                MapResult::Submitted
            }
            Submit::Wait(_) => MapResult::Submitted,
            Submit::Invalid(why) => {
                if invalid.is_power_of_two() {
                    pr_warn!("specmirror: refused write at {} (+{}): {:?} ({} so far)\n", hw.sector, hw.count, why, invalid);
                }
                MapResult::Kill
            }
        }
    }

    /// dm `end_io`: reads, and our host bios ended by us. Any context.
    pub(crate) fn end_io(&self, _bio: &mut Bio<'_>, _status: u8) -> EndIo {
        EndIo::Done
    }

    /// Ends `done`'s host writes (after the lock is dropped: ending a bio
    /// may let dm free this device, so it is the last thing done).
    pub(super) fn end_completed(done: &mut BioList) {
        while let Some(mut b) = done.pop_front() {
            let failed = b.per_bio().failed;
            b.end(if failed { BLK_STS_IOERR } else { BLK_STS_OK });
        }
    }

    /// Moves the host bios of every completion the machine gives into
    /// `done` (their status: the local write's).
    pub(super) fn take_completed(g: &mut State, done: &mut BioList) {
        while let Some(Completed { seq, ok }) = g.m.poll_completed() {
            if let Some(mut b) = g.writing.remove_first(|p| p.seq == seq) {
                b.per_bio().failed = !ok;
                done.push_back(b);
            }
        }
    }

    /// Starts the threads (dm resume). Process context.
    pub(crate) fn start(self: &Arc<Self>) -> Result {
        let mut t = self.threads.lock();
        if t.is_some() {
            return Ok(());
        }
        self.with(|g| g.m.start(sys::now()));
        let d = self.clone();
        let worker = Thread::spawn(c_str!("specmirror-wk"), move || d.worker_main())?;
        let d = self.clone();
        let sender = match Thread::spawn(c_str!("specmirror-tx"), move || d.sender_main()) {
            Ok(s) => s,
            Err(e) => {
                self.with(|g| g.m.stop());
                drop(worker);
                self.with(|g| g.m.stopped());
                return Err(e);
            }
        };
        *t = Some(Threads { sender, worker });
        Ok(())
    }

    /// A suspend starts (dm presuspend): deferred and unacknowledged sync
    /// writes get the machine's grace to drain, then end without waiting
    /// for the link, so that suspend and remove finish.
    pub(crate) fn presuspend(&self) {
        self.with(|g| g.m.begin_suspend(sys::now()));
    }

    /// The suspend was cancelled (dm presuspend_undo).
    pub(crate) fn presuspend_undo(&self) {
        self.with(|g| g.m.cancel_suspend());
    }

    /// Stops the threads (dm postsuspend, remove) and closes the
    /// connection. Process context; waits for the threads to return.
    pub(crate) fn stop(&self) {
        let mut t = self.threads.lock();
        let Some(th) = t.take() else {
            // Not running (a table never resumed, or suspended): what the
            // worker would save before it exits is saved here.
            self.save_stopped();
            return;
        };
        let sock = self.with(|g| {
            g.m.stop();
            g.sock.clone()
        });
        // Ends a connect, send or receive in progress.
        if let Some((_, s)) = sock {
            s.shutdown();
        }
        drop(th.sender);
        drop(th.worker);
        let old = self.with(|g| {
            g.m.stopped();
            g.sock.take()
        });
        // Released outside the spinlock: sock_release sleeps.
        drop(old);
    }

    /// A device whose threads do not run saves what a message marked now
    /// (the resync then runs after resume).
    fn save_if_stopped(&self) {
        if self.threads.lock().is_none() {
            self.save_stopped();
        }
    }

    /// The socket of connection `conn`, if it is the current one.
    pub(super) fn sock_of(g: &State, conn: u64) -> Option<Arc<Socket>> {
        g.sock.as_ref().filter(|(c, _)| *c == conn).map(|(_, s)| s.clone())
    }

    /// `dmsetup message`: `connect`, `disconnect`, and with the
    /// fault-injection parameter `fault corrupt <n>`, `fault corrupt_every
    /// <n>`, `fault drop`.
    pub(crate) fn message(&self, words: &[&[u8]]) -> Result {
        match words {
            [b"disconnect"] => self.with(|g| g.m.admin_disconnect()),
            [b"connect"] => self.with(|g| g.m.admin_connect()),
            [b"resync"] => {
                let chunks = self.with(|g| {
                    g.m.mark_dirty(0, u64::MAX);
                    g.m.resync_stats().map_or(0, |r| r.dirty)
                });
                pr_info!("specmirror: source for {}: resync of all {} chunks requested\n", self.cfg.endpoint, chunks);
                self.save_if_stopped();
            }
            [b"resync", sector, count] => {
                let sector = crate::transport::table::parse_u64(sector).ok_or(EINVAL)?;
                let count = crate::transport::table::parse_u64(count).ok_or(EINVAL)?;
                let (first, last) = self.with(|g| g.m.mark_dirty_sectors(sector, count)).ok_or(EINVAL)?;
                pr_info!(
                    "specmirror: source for {}: resync of {} (+{}) requested: chunks {}..={}\n",
                    self.cfg.endpoint, sector, count, first, last
                );
                self.save_if_stopped();
            }
            [b"verify"] => {
                let n = self.with(|g| g.m.config().dev_sectors);
                self.with(|g| g.m.verify(0, n)).map_err(|_| EINVAL)?;
                pr_info!("specmirror: source for {}: verify of the whole device requested\n", self.cfg.endpoint);
            }
            [b"verify", sector, count] => {
                let sector = crate::transport::table::parse_u64(sector).ok_or(EINVAL)?;
                let count = crate::transport::table::parse_u64(count).ok_or(EINVAL)?;
                self.with(|g| g.m.verify(sector, count)).map_err(|_| EINVAL)?;
                pr_info!("specmirror: source for {}: verify of {} (+{}) requested\n", self.cfg.endpoint, sector, count);
            }
            [b"fault", b"corrupt", n] if sys::fault_injection() => {
                let n = crate::transport::table::parse_u32(n).ok_or(EINVAL)?;
                self.with(|g| g.m.fault_corrupt(n));
            }
            [b"fault", b"corrupt_every", n] if sys::fault_injection() => {
                let n = crate::transport::table::parse_u32(n).ok_or(EINVAL)?;
                self.with(|g| g.m.fault_corrupt_every(n));
            }
            [b"fault", b"drop"] if sys::fault_injection() => self.with(|g| g.m.fault_drop()),
            _ => return Err(EINVAL),
        }
        Ok(())
    }

    /// `dmsetup status` (INFO).
    pub(crate) fn status(&self, out: &mut StatusWriter<'_>, dev: &str) {
        let g = self.st.lock();
        let s = *g.m.stats();
        let ring = g.m.ring();
        // Degraded (writes complete locally and mark their chunks dirty)
        // replaces the word of a link that is trying to come back; a
        // suspend, an admin disconnect and a refusal keep theirs, which
        // name what the operator has to act on.
        let degraded = g.m.is_degraded();
        let conn = match g.m.link_state() {
            crate::transport::proto::source::LinkState::Stopped => "stopped",
            crate::transport::proto::source::LinkState::AdminDown => "disconnected",
            crate::transport::proto::source::LinkState::Refused(r) => r.as_str(),
            _ if degraded => "degraded",
            crate::transport::proto::source::LinkState::Connecting => "connecting",
            crate::transport::proto::source::LinkState::Handshake => "handshake",
            crate::transport::proto::source::LinkState::Connected => "connected",
        };
        let _ = write!(
            out,
            "source {} {} ring={}/{} queued={} sent={} acked={} lag={} inflight={} deferred={} \
             resends={} crc_errors={} naks={} lock_rejections={} reconnects={} auth_failures={} \
             connect_failures={} waits={} local_errors={} repairs={} unrepaired={} protocol_errors={} \
             peer_timeouts={} abandoned={} degraded_count={} durable={} wakes={}/{} \
             waits_by={}/{}/{}/{}/{}/{}/{}",
            dev,
            conn,
            ring.used_bytes(),
            self.ring_bytes,
            ring.next_seq().saturating_sub(1),
            ring.send_seq().saturating_sub(1),
            g.m.acked_seq(),
            ring.used_bytes(),
            g.m.inflight_len(),
            g.m.deferred_len(),
            s.resends,
            s.crc_errors,
            s.naks,
            s.lock_rejections,
            s.reconnects,
            s.auth_failures,
            s.connect_failures,
            s.waits,
            s.local_errors,
            s.repairs,
            s.unrepaired,
            s.protocol_errors,
            s.peer_timeouts,
            s.abandoned,
            g.m.degrade_count(),
            g.m.durable_seq(),
            g.wakes[0],
            g.wakes[1],
            s.waits_by[0],
            s.waits_by[1],
            s.waits_by[2],
            s.waits_by[3],
            s.waits_by[4],
            s.waits_by[5],
            s.waits_by[6],
        );
        // The resync: chunks the target lacks, progress while a sync runs.
        let r = g.m.resync_stats().unwrap_or_default();
        // Dirty chunks also in KiB (what a resync would send at most).
        let dirty_kib = r.dirty.saturating_mul(u64::from(self.cfg.chunk_sectors)) / 2;
        let _ = write!(
            out,
            " dirty={} dirty_kib={} resync_errors={} bitmap_errors={} resync_kib={}",
            r.dirty,
            dirty_kib,
            r.read_errors,
            g.m.bitmap_save_errors(),
            r.bytes / 1024
        );
        if r.dirty > 0 {
            let _ = write!(out, " syncing={}/{}", r.done, r.done.saturating_add(r.dirty));
        }
        // The activity log: regions a crash would resync besides the
        // dirty chunks, and how often writes waited for it.
        if let Some(a) = g.m.activity_stats() {
            let _ = write!(
                out,
                " al={}/{} al_waits={} al_flushes={} al_flush_errors={}",
                a.used, a.size, a.waits, a.flushes, a.flush_errors
            );
        }
        // Online verify (or a checksum sync's comparison): progress while
        // it runs, what the last pass found.
        if let Some(v) = g.m.verify_stats() {
            if v.running {
                let _ = write!(out, " verify={}/{}", v.done, v.total);
            }
            let _ = write!(out, " oos={} verify_errors={}", v.oos, v.read_errors);
        }
        // The generations: what the bitmap is relative to, the rule the
        // last handshake applied.
        if let Some(gs) = g.m.gen_status() {
            let _ = write!(
                out,
                " bitmap_base={:016x} rule={} sb_errors={}",
                gs.gens.bitmap,
                gs.rule.map_or("none", |r| r.as_str()),
                gs.save_errors
            );
        }
    }
}

impl IoOwner for SourceDev {
    /// A local write (cookie: its seq), the repair read (cookie 0), the
    /// resync read (cookie `u64::MAX`) or the verify read (`u64::MAX - 1`)
    /// ended. Any context.
    fn io_done(&self, cookie: u64, err: i32) {
        let mut done = BioList::new();
        {
            let mut g = self.st.lock();
            if cookie == REPAIR_COOKIE {
                g.m.repair_read_ended(err == 0);
            } else if cookie == RESYNC_COOKIE {
                g.m.resync_read_ended(err == 0);
            } else if cookie == VERIFY_COOKIE {
                g.m.verify_read_ended(err == 0);
            } else {
                g.m.local_done(cookie, err == 0);
                Self::take_completed(&mut g, &mut done);
            }
            self.end_section(&mut g);
        }
        // Last: ending a host bio may let dm free this device.
        Self::end_completed(&mut done);
    }
}

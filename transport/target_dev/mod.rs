// SPDX-License-Identifier: GPL-2.0

//! The target role in the kernel: executes what the target machine
//! ([`crate::transport::proto::target`]) decides, with a listening kernel
//! socket, the bios that apply records to the data device straight from
//! the commit log's pages, and the bios of the target's own dm device. It
//! decides nothing itself.
//!
//! Threads, started at resume and stopped at suspend (see [`threads`]):
//! the *listener* (accepts one source at a time, backs off after errors),
//! one *receiver* per connection (frames into the commit log, waits under
//! back-pressure), the *applier* (records to the device, reads that may
//! go) and the *sender* (CHALLENGE, HELLO_REPLY, NAK, lock replies, ACKs,
//! keepalives; it closes a connection the machine gives up).
//!
//! Reads through the target's own dm device wait while unapplied stream
//! writes touch their range; writes through it fail (a replica is
//! read-only in this one-way mode). `dmsetup message .. lock` waits, on
//! the machine's say, for its grant.

mod threads;

use core::fmt::Write;
use kernel::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    bindings, new_condvar, new_mutex,
    prelude::*,
    sync::{Arc, CondVar, Mutex},
    time::msecs_to_jiffies,
};

use super::proto::sleep_ms;
use super::proto::target::{
    IoStatus, LockReply, Target, TargetConfig, APPLIER, LISTENER, LOCKER, RECEIVER, SENDER,
};
use super::proto::wake::Wakes;
use super::sys::bio::{Bio, BioList, BioOp, BioView};
use super::sys::devio::{BioSet, IoOwner};
use super::sys::net::{NetNs, Socket};
use super::sys::pages::{KPages, KernelCrc, RingFill};
use super::sys::sync::{IrqSpinGuard, IrqSpinLock};
use super::sys::thread::Thread;
use super::sys::{self, DmDev, EndIo, Events, MapResult, StatusWriter};
use super::metadata::Metadata;
use super::table::{parse_u64, TableConfig};
use crate::log::commit::{WindowSlot, SCAN_LIMIT};
use crate::log::filter::FILTER_BUCKETS;
use crate::log::locks::LockSlot;
use crate::log::pages::SECTOR_ALIGN;
use crate::new_irq_spinlock;

/// The target machine over kernel storage: commit log pages, issue
/// window, region filter counters and lock slots, all on the heap.
type Machine = Target<KPages, KVec<WindowSlot>, KVec<u32>, KVec<LockSlot>>;

/// Lock slots: the source's hot regions (at most the default 64 unless
/// the source says otherwise; more share slots) plus local locks.
const LOCK_SLOTS: usize = 1024;
/// Acknowledge at least every this many applied records.
const ACK_EVERY: u32 = 32;
/// Bios reserved for records (at least one batch of the applier).
const RECORD_BIOS: u32 = 32;

/// Everything behind the lock.
pub(super) struct State {
    pub(super) m: KBox<Machine>,
    /// The current connection's socket.
    pub(super) sock: Option<(u64, Arc<Socket>)>,
    /// Reads waiting for unapplied writes to their range (the machine
    /// counts them).
    pub(super) reads: BioList,
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
    /// The metadata device: SYNC records are written to its superblock.
    meta: Arc<Mutex<Metadata>>,
    ns: NetNs,
    events: Events,
    crc: KernelCrc,
    log_bytes: usize,
    /// The commit log's pages, for the receiver's copies outside `st`.
    fill: RingFill,
    /// Record bios (reporting to this device).
    bios: BioSet,
    #[pin]
    st: IrqSpinLock<State>,
    /// The receiver sleeps here under back-pressure.
    #[pin]
    rx_wait: CondVar,
    /// The applier sleeps here.
    #[pin]
    apply_wait: CondVar,
    /// The sender sleeps here.
    #[pin]
    tx_wait: CondVar,
    /// The listener backs off here.
    #[pin]
    listen_wait: CondVar,
    /// A `lock` message waits here.
    #[pin]
    lock_wait: CondVar,
    #[pin]
    threads: Mutex<Option<Threads>>,
}

impl TargetDev {
    /// Builds the device: the machine and its storage (commit log pages,
    /// `ring_mb`; issue window, region filter and lock slots) and the
    /// record bio pool, allocated here, never on the I/O path.
    pub(crate) fn new(
        cfg: TableConfig,
        data: DmDev,
        meta: Arc<Mutex<Metadata>>,
        events: Events,
        dev_sectors: u64,
    ) -> Result<Arc<TargetDev>> {
        let pages = KPages::new((cfg.ring_mb as usize) << 8, GFP_KERNEL)?;
        let log_bytes = pages.bytes();
        let fill = pages.ring_fill();
        let tcfg = TargetConfig {
            region_sectors: cfg.region_sectors,
            dev_sectors,
            ack_every: ACK_EVERY,
            secret: cfg.secret,
        };
        let mut m = new_machine(tcfg, pages)?;
        let lbs = data.logical_block_size();
        m.set_block_size(lbs);
        // Record bios go from the log's pages: payloads start on a block.
        m.set_payload_align((lbs as usize).max(SECTOR_ALIGN)).map_err(|_| EINVAL)?;
        {
            let sb = meta.lock();
            m.attach_generations(sb.superblock().gens, sb.superblock().consistent());
        }
        let state = State { m, sock: None, reads: BioList::new() };
        let ns = NetNs::current()?;
        let dev = Arc::pin_init(
            try_pin_init!(TargetDev {
                cfg,
                data,
                meta,
                ns,
                events,
                crc: KernelCrc,
                log_bytes,
                fill,
                bios: BioSet::new(RECORD_BIOS)?,
                st <- new_irq_spinlock!(state, "specmirror_target"),
                rx_wait <- new_condvar!("specmirror_target_rx"),
                apply_wait <- new_condvar!("specmirror_target_apply"),
                tx_wait <- new_condvar!("specmirror_target_tx"),
                listen_wait <- new_condvar!("specmirror_target_listen"),
                lock_wait <- new_condvar!("specmirror_target_lock"),
                threads <- new_mutex!(None, "specmirror_target_threads"),
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: no bio of the set exists yet and no thread uses it; the
        // device owns the set and outlives it, and the applier returns
        // only once every record bio ended.
        unsafe { dev.bios.set_owner(&*dev) };
        Ok(dev)
    }

    /// The data device.
    pub(crate) fn data(&self) -> &DmDev {
        &self.data
    }

    /// The parsed table line.
    pub(crate) fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// Wakes the threads in `w`.
    fn wake(&self, w: Wakes) {
        for (i, cv) in [
            (RECEIVER, &self.rx_wait),
            (APPLIER, &self.apply_wait),
            (SENDER, &self.tx_wait),
            (LISTENER, &self.listen_wait),
            (LOCKER, &self.lock_wait),
        ] {
            if w.contains(i) {
                cv.notify_all();
            }
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

    /// The end of a critical section: wake whom the machine names, under
    /// the lock (see the source's `end_section`).
    pub(super) fn end_section(&self, g: &mut IrqSpinGuard<'_, State>) {
        let w = g.m.take_wakes();
        self.wake(w);
    }

    /// dm `map` of the target's own device.
    pub(crate) fn map(&self, bio: &mut Bio<'_>) -> MapResult {
        match bio.op() {
            BioOp::Read => {}
            BioOp::Flush => {
                bio.remap(&self.data);
                return MapResult::Remapped;
            }
            _ => {
                let n = self.with(|g| g.m.write_refused());
                // The 1st, 2nd, 4th, 8th... refusal: a hint, not a flood.
                if n.is_power_of_two() {
                    pr_warn!("specmirror: write to a target device refused (the replica is read-only; {} so far)\n", n);
                }
                return MapResult::Kill;
            }
        }
        let (sector, sectors) = (bio.sector(), u64::from(bio.sectors()));
        let refused = self.with(|g| g.m.read_refused().then(|| g.m.stats().reads_refused));
        if let Some(n) = refused {
            if n.is_power_of_two() {
                pr_warn!("specmirror: read from a target in the middle of a sync refused (its image is inconsistent; {} so far)\n", n);
            }
            return MapResult::Kill;
        }
        let parked = self.with(|g| {
            if g.m.read_arrives(sector, sectors) {
                return false;
            }
            if let Some(b) = bio.take() {
                g.reads.push_back(b);
            }
            true
        });
        if parked {
            return MapResult::Submitted;
        }
        bio.remap(&self.data);
        MapResult::Remapped
    }

    /// dm `end_io` of the target's own device.
    pub(crate) fn end_io(&self, _bio: &mut Bio<'_>, _status: u8) -> EndIo {
        EndIo::Done
    }

    /// Starts listening and the threads (dm resume). Fails if the address
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
        self.with(|g| g.m.start());
        let stop = |threads: &[&Thread]| {
            let _ = threads;
            self.with(|g| g.m.stop());
            lsock.shutdown();
        };
        let d = self.clone();
        let applier = Thread::spawn(kernel::c_str!("specmirror-ap"), move || d.applier_main())?;
        let d = self.clone();
        let sender = match Thread::spawn(kernel::c_str!("specmirror-tt"), move || d.sender_main()) {
            Ok(s) => s,
            Err(e) => {
                stop(&[&applier]);
                drop(applier);
                self.with(|g| g.m.stopped());
                return Err(e);
            }
        };
        let d = self.clone();
        let l = lsock.clone();
        let listener = match Thread::spawn(kernel::c_str!("specmirror-ls"), move || d.listener_main(l)) {
            Ok(l) => l,
            Err(e) => {
                stop(&[&applier, &sender]);
                drop(sender);
                drop(applier);
                self.with(|g| g.m.stopped());
                return Err(e);
            }
        };
        *t = Some(Threads { listener, applier, sender, lsock });
        Ok(())
    }

    /// A suspend starts (dm presuspend): waiting reads get the machine's
    /// grace, then fail, so that suspend and remove finish.
    pub(crate) fn presuspend(&self) {
        self.with(|g| g.m.begin_suspend(sys::now()));
    }

    /// The suspend was cancelled (dm presuspend_undo).
    pub(crate) fn presuspend_undo(&self) {
        self.with(|g| g.m.cancel_suspend());
    }

    /// Stops the threads and closes the sockets (dm postsuspend, remove);
    /// the applier returns once every record bio it started ended.
    pub(crate) fn stop(&self) {
        let mut t = self.threads.lock();
        let Some(th) = t.take() else { return };
        let sock = self.with(|g| {
            g.m.stop();
            g.sock.clone()
        });
        th.lsock.shutdown();
        if let Some((_, s)) = sock {
            s.shutdown();
        }
        drop(th.listener);
        drop(th.sender);
        drop(th.applier);
        drop(th.lsock);
        let old = self.with(|g| {
            g.m.stopped();
            g.sock.take()
        });
        drop(old);
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
                if self.with(|g| g.m.lock_release(s, c)) {
                    Ok(())
                } else {
                    Err(EINVAL)
                }
            }
            [b"fault", b"drop"] if sys::fault_injection() => {
                self.with(|g| g.m.fault_drop());
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }

    /// Takes an explicit local lock, waiting (as the machine says) for
    /// stream writes to the range to be applied.
    fn lock_range(&self, sector: u64, count: u64) -> Result {
        let mut g = self.st.lock();
        let mut r = g.m.lock_request(sector, count, sys::now());
        loop {
            match r {
                LockReply::Granted => {
                    self.end_section(&mut g);
                    return Ok(());
                }
                LockReply::Invalid => {
                    self.end_section(&mut g);
                    return Err(EINVAL);
                }
                LockReply::Busy => {
                    self.end_section(&mut g);
                    return Err(EBUSY);
                }
                LockReply::Wait { until } => {
                    self.end_section(&mut g);
                    let now = sys::now();
                    let _ = self.lock_wait.wait_interruptible_timeout(&mut g, msecs_to_jiffies(sleep_ms(now, until)));
                    r = g.m.lock_poll(sys::now());
                }
            }
        }
    }

    /// `dmsetup status` (INFO).
    pub(crate) fn status(&self, out: &mut StatusWriter<'_>, dev: &str) {
        let g = self.st.lock();
        let s = *g.m.stats();
        let log = g.m.commit_log();
        let _ = write!(
            out,
            "target {} {} log={}/{} received={} applied={} acked={} pending={} reads_waiting={} \
             crc_errors={} naks={} lock_rejections={} lock_conflicts={} reconnects={} auth_failures={} \
             refused_connections={} protocol_errors={} io_errors={} failing={} writes_refused={} local_locks={} \
             peer_timeouts={} durable={} flushes={} flush_errors={}",
            dev,
            g.m.conn_state(),
            log.used_bytes(),
            self.log_bytes,
            g.m.received_seq(),
            g.m.applied_seq(),
            g.m.acked_seq(),
            log.len_records(),
            g.m.reads_waiting(),
            s.crc_errors,
            s.naks,
            s.lock_rejections,
            s.lock_conflicts,
            s.reconnects,
            s.auth_failures,
            s.refused_connections,
            s.protocol_errors,
            s.io_errors,
            u8::from(g.m.failing() > 0),
            s.writes_refused,
            g.m.msg_locks_len(),
            s.peer_timeouts,
            g.m.durable_seq(),
            g.m.flush_stats().0,
            g.m.flush_stats().1,
        );
        // Whether the image is a flush-boundary image of its generation
        // (not in the middle of a sync), and the last handshake's rule.
        let (_, consistent) = g.m.generations();
        let _ = write!(
            out,
            " image={} rule={} reads_refused={}",
            if consistent { "consistent" } else { "inconsistent" },
            g.m.last_rule().map_or("none", |r| r.as_str()),
            s.reads_refused
        );
    }
}

/// The target machine, on the heap, with its storage: an issue window of
/// [`SCAN_LIMIT`] slots, [`FILTER_BUCKETS`] region filter counters and
/// [`LOCK_SLOTS`] lock slots, each its own allocation the machine points
/// to, so the machine itself is small and never holds a big array on a
/// kernel stack. Out of line all the same, so that its one temporary
/// (writing into an uninitialised box keeps it to one) is not added to the
/// frame of the table constructor, already the largest.
#[inline(never)]
fn new_machine(cfg: TargetConfig, pages: KPages) -> Result<KBox<Machine>> {
    let window = KVec::from_elem(WindowSlot::EMPTY, SCAN_LIMIT, GFP_KERNEL)?;
    let filter = KVec::from_elem(0u32, FILTER_BUCKETS, GFP_KERNEL)?;
    let slots = KVec::from_elem(LockSlot::EMPTY, LOCK_SLOTS, GFP_KERNEL)?;
    let b = KBox::<Machine>::new_uninit(GFP_KERNEL)?;
    let m = Target::new(cfg, pages, window, filter, slots).map_err(|_| EINVAL)?;
    Ok(KBox::write(b, m))
}

/// Cookie bit of the applier's flushes for the durable point (the rest is
/// the seq they cover); record bios carry their seq, far below it.
pub(super) const FLUSH_COOKIE: u64 = 1 << 63;

impl IoOwner for TargetDev {
    /// A record bio ended (cookie: its seq), or a flush for the durable
    /// point (cookie: [`FLUSH_COOKIE`] and the seq it covers). Any context.
    fn io_done(&self, seq: u64, err: i32) {
        if seq & FLUSH_COOKIE != 0 {
            let mut g = self.st.lock();
            g.m.flush_done(seq & !FLUSH_COOKIE, err == 0, sys::now());
            let n = g.m.flush_stats().1;
            // As below: wake under the lock, then touch nothing.
            self.end_section(&mut g);
            drop(g);
            if err != 0 && n.is_power_of_two() {
                pr_warn!("specmirror: target: a flush of the data device failed ({}); tried again ({} failures so far)\n", err, n);
            }
            return;
        }
        let status = match err {
            0 => IoStatus::Ok,
            e if e == -(bindings::EOPNOTSUPP as i32) => IoStatus::Unsupported,
            _ => IoStatus::Failed,
        };
        let mut g = self.st.lock();
        g.m.io_done(seq, status, sys::now());
        let n = g.m.stats().io_errors;
        // The applier may return, and the device go, once this section
        // ends: wake under the lock, then touch nothing.
        self.end_section(&mut g);
        drop(g);
        if status == IoStatus::Failed && n.is_power_of_two() {
            // Retried every second: say so sparingly (any context). Only
            // locals here: the device may be gone already.
            pr_warn!("specmirror: target: a device write failed ({}); kept and retried ({} failures so far)\n", err, n);
        }
    }
}

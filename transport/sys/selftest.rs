// SPDX-License-Identifier: GPL-2.0

//! Developer-only smoke test of the kernel glue, run at module load when
//! the `dmsm_selftest` module parameter is set (see `selftests/primitives.sh`
//! and `Documentation/dm-specmirror.rst`, "Developer options").
//!
//! It exercises, in the loading process and one kthread: [`KPages`] under a
//! rollback ring with [`KernelCrc`], a loopback TCP connection in the
//! caller's network namespace, gathered sends straight from ring pages,
//! the irq-safe lock with a condition variable handing state between the
//! two threads and from hard irq context (as a bio's `end_io` will), and
//! `shutdown` unblocking a receive in another thread.

use kernel::{
    alloc::flags::GFP_KERNEL,
    bindings, c_str,
    error::code::{EINTR, EINVAL, EIO},
    new_condvar,
    prelude::*,
    sync::{Arc, CondVar, CondVarTimeoutResult},
    time::msecs_to_jiffies,
};

use super::{
    pages::{KPages, KernelCrc},
    sync::{new_irq_spinlock, IrqSpinGuard, IrqSpinLock},
};
use crate::log::{
    record::{decode_frame, Crc32c, Header, Kind, HEADER_LEN, SECTOR_SIZE},
    ring::{Pages, RollbackRing},
};
use super::{
    net::{errno, NetNs, Socket},
    thread::{self, Thread},
};
use crate::transport::table::{Addr, Endpoint};

/// Records appended to the test ring; the last one spans two pages.
const RECORDS: u64 = 8;
/// Longest any step waits for the other thread.
const WAIT_MS: u32 = 10_000;

/// Where the client thread is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Starting,
    /// The frame was sent.
    Sent,
    /// The thread shut the server's socket down.
    ShutDown,
    /// The thread failed; the listener was shut down to unblock `accept`.
    Failed,
}

/// State the two threads hand over under the irq-safe lock.
struct State {
    stage: Stage,
    /// Times the hard-irq callback ran.
    irq_hits: u32,
    /// The server side of the connection, for the thread to shut down.
    server: Option<Arc<Socket>>,
}

#[pin_data]
struct Shared {
    #[pin]
    state: IrqSpinLock<State>,
    #[pin]
    cv: CondVar,
}

impl Shared {
    /// Waits until `done(state)` holds, at most `WAIT_MS` in total; gives up
    /// early when the current kthread is asked to stop.
    fn wait_for(&self, done: impl Fn(&State) -> bool) -> Result {
        let mut left = msecs_to_jiffies(WAIT_MS);
        let mut g: IrqSpinGuard<'_, State> = self.state.lock();
        while !done(&g) {
            if thread::should_stop() || left == 0 {
                return Err(errno(bindings::ETIMEDOUT));
            }
            left = match self.cv.wait_interruptible_timeout(&mut g, left) {
                CondVarTimeoutResult::Woken { jiffies } => jiffies,
                CondVarTimeoutResult::Timeout => 0,
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
            };
        }
        Ok(())
    }

    fn set_stage(&self, stage: Stage) {
        self.state.lock().stage = stage;
        self.cv.notify_all();
    }
}

/// CRC-32C test vector and chaining.
fn check_crc() -> Result {
    let c = KernelCrc;
    let whole = c.crc32c(0, b"123456789");
    let chained = c.crc32c(c.crc32c(0, b"1234"), b"56789");
    if whole != 0xE306_9283 || chained != whole || c.crc32c(0, b"") != 0 {
        pr_err!("specmirror: selftest: crc32c(\"123456789\") = {:#010x}, chained {:#010x}\n", whole, chained);
        return Err(EINVAL);
    }
    Ok(())
}

/// A ring over two kernel pages holding `RECORDS` one-sector writes, the
/// last of which wraps onto the second page.
fn build_ring() -> Result<RollbackRing<KPages>> {
    let pages = KPages::new(2, GFP_KERNEL)?;
    if pages.bytes() != 2 * crate::log::pages::PAGE_SIZE || pages.page_ptr(1).is_none() || pages.page_ptr(2).is_some() {
        return Err(EINVAL);
    }
    let mut ring = RollbackRing::new(pages, 1);
    for i in 0..RECORDS {
        let mut h = Header::new(Kind::Write);
        h.sector = i;
        h.count = 1;
        let mut sector = [0u8; SECTOR_SIZE];
        for (j, b) in sector.iter_mut().enumerate() {
            *b = (i as usize * 31 + j) as u8;
        }
        let seq = ring
            .append(&KernelCrc, h, SECTOR_SIZE, |w| {
                let (a, b) = sector.split_at(100);
                w.write(a)?;
                w.write(b)
            })
            .map_err(|_| EIO)?;
        if seq != i + 1 {
            return Err(EINVAL);
        }
    }
    // Read the last record back through the ring and check its CRC.
    let mut frame = [0u8; HEADER_LEN + SECTOR_SIZE];
    let n = ring.read_frame(RECORDS, &mut frame).map_err(|_| EIO)?;
    let ok = matches!(decode_frame(&KernelCrc, frame.get(..n).unwrap_or(&[])),
        Ok((h, p)) if h.seq == RECORDS && p.first() == Some(&(((RECORDS - 1) * 31) as u8)));
    // The last record crosses from page 0 to page 1: its pieces (header,
    // then payload, each split at the page end) must cover the frame and
    // lie on both pages.
    let (mut spans, mut bytes, mut pages_seen) = (0usize, 0usize, 0u8);
    if let Some(v) = ring.view(RECORDS) {
        for (page, _off, len) in v.chunks() {
            spans += 1;
            bytes += len;
            pages_seen |= 1u8.checked_shl(page as u32).unwrap_or(0);
        }
    }
    if !ok || bytes != HEADER_LEN + SECTOR_SIZE || pages_seen != 0b11 {
        pr_err!(
            "specmirror: selftest: ring record read back wrong (ok {}, {} spans, {} bytes, pages {:#b})\n",
            ok, spans, bytes, pages_seen
        );
        return Err(errno(bindings::EBADMSG));
    }
    Ok(ring)
}

/// Hard-irq side of the lock test: what a bio's `end_io` will do.
///
/// # Safety
///
/// `arg` points to a live [`Shared`].
unsafe extern "C" fn irq_hit(arg: *mut core::ffi::c_void) {
    // SAFETY: guaranteed by the caller.
    let shared = unsafe { &*arg.cast::<Shared>() };
    shared.state.lock().irq_hits += 1;
    shared.cv.notify_all();
}

/// Takes the irq-safe lock and notifies the condvar from hard irq context
/// while this thread waits on it.
fn check_irq_lock(shared: &Shared) -> Result {
    let before = shared.state.lock().irq_hits;
    let arg = (shared as *const Shared).cast_mut().cast::<core::ffi::c_void>();
    // SAFETY: `irq_hit` only reads through `arg`, a live `Shared` for the
    // whole (synchronous) call.
    unsafe { super::raw::dmsm_call_in_hardirq(Some(irq_hit), arg) };
    shared.wait_for(|s| s.irq_hits == before.wrapping_add(1))
}

/// The client thread: connects, sends the frame gathered from ring pages,
/// waits for the server socket, shuts it down from here.
fn client(shared: Arc<Shared>, listener: Arc<Socket>, ring: Arc<RollbackRing<KPages>>, ns: NetNs, ep: Endpoint) {
    let r = (|| -> Result {
        let sock = Socket::connect(&ns, &ep, WAIT_MS)?;
        let v = ring.view(RECORDS).ok_or(EINVAL)?;
        let mut parts: [&[u8]; 4] = [&[]; 4];
        for (slot, (page, off, len)) in parts.iter_mut().zip(v.chunks()) {
            *slot = ring.pages().page(page).and_then(|p| p.get(off..off + len)).ok_or(EINVAL)?;
        }
        sock.send_vec(&parts)?;
        let mut reply = [0u8; 2];
        sock.recv_exact(&mut reply)?;
        if &reply != b"ok" {
            return Err(EINVAL);
        }
        shared.set_stage(Stage::Sent);
        shared.wait_for(|s| s.server.is_some())?;
        let server = shared.state.lock().server.clone().ok_or(EINVAL)?;
        // Let the loading process block in its receive first.
        // SAFETY: plain sleep in process context.
        unsafe { bindings::msleep(200) };
        check_irq_lock(&shared)?;
        server.shutdown();
        shared.set_stage(Stage::ShutDown);
        Ok(())
    })();
    if let Err(e) = r {
        pr_err!("specmirror: selftest: client thread failed: {:?}\n", e);
        shared.set_stage(Stage::Failed);
        listener.shutdown();
    }
}

/// Runs the whole smoke test.
pub(crate) fn run() -> Result {
    check_crc()?;
    let ring = Arc::new(build_ring()?, GFP_KERNEL)?;

    let ns = NetNs::current()?;
    let any = Endpoint { addr: Addr::V4([127, 0, 0, 1]), port: 0 };
    let listener = Arc::new(Socket::listen(&ns, &any)?, GFP_KERNEL)?;
    let ep = listener.local()?;

    let shared = Arc::pin_init(
        pin_init!(Shared {
            state <- new_irq_spinlock!(State { stage: Stage::Starting, irq_hits: 0, server: None }, "specmirror_selftest"),
            cv <- new_condvar!("specmirror_selftest"),
        }),
        GFP_KERNEL,
    )?;
    check_irq_lock(&shared)?;
    let (s2, l2, r2, ns2) = (shared.clone(), listener.clone(), ring.clone(), ns.clone());
    let t = Thread::spawn(c_str!("dmsm-selftest"), move || client(s2, l2, r2, ns2, ep))?;

    let r = serve(&shared, &listener, &ring);
    // Whatever happened, unblock and join the thread before returning.
    listener.shutdown();
    // Take the socket out first: its last reference must not drop (and
    // release the socket, which sleeps) under the spinlock.
    let server = shared.state.lock().server.take();
    if let Some(s) = server {
        s.shutdown();
    }
    t.stop();
    r?;
    if shared.state.lock().stage != Stage::ShutDown {
        return Err(EIO);
    }
    Ok(())
}

/// The loading process's side: accept, receive and check the frame, hand
/// the socket to the thread and block until it shuts the socket down.
fn serve(shared: &Shared, listener: &Socket, ring: &RollbackRing<KPages>) -> Result {
    let conn = Arc::new(listener.accept()?, GFP_KERNEL)?;
    let peer = conn.peer()?;
    if peer.addr != Addr::V4([127, 0, 0, 1]) {
        return Err(EINVAL);
    }
    let mut got = [0u8; HEADER_LEN + SECTOR_SIZE];
    let (hdr, payload) = got.split_at_mut(HEADER_LEN);
    conn.recv_exact(hdr)?;
    conn.recv_exact(payload)?;
    let mut want = [0u8; HEADER_LEN + SECTOR_SIZE];
    let n = ring.read_frame(RECORDS, &mut want).map_err(|_| EIO)?;
    if n != got.len() || got != want || decode_frame(&KernelCrc, &got).is_err() {
        pr_err!("specmirror: selftest: frame received from {} differs\n", peer);
        return Err(errno(bindings::EBADMSG));
    }
    conn.send_all(b"ok")?;
    shared.wait_for(|s| s.stage != Stage::Starting)?;

    let old = shared.state.lock().server.replace(conn.clone());
    drop(old);
    shared.cv.notify_all();
    // Blocks until the thread shuts the socket down: nothing else comes.
    let mut byte = [0u8; 1];
    if conn.recv_exact(&mut byte).is_ok() {
        return Err(EIO);
    }
    shared.wait_for(|s| s.stage != Stage::Sent)?;
    Ok(())
}

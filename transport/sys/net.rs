// SPDX-License-Identifier: GPL-2.0

//! Kernel TCP sockets (6.12's `kernel` crate has none).
//!
//! [`NetNs`] pins the network namespace of the process that loads a table
//! (as ceph does; DRBD 8.4's `init_net` would make namespace tests
//! impossible). [`Socket`] owns a `struct socket` created in it, tuned for
//! block I/O the way nbd and DRBD tune theirs: `GFP_NOIO` allocations,
//! memalloc reserves, no `current->task_frag`, `TCP_NODELAY`.
//!
//! Every method takes `&self`: one thread may send while another receives,
//! and [`Socket::shutdown`] from any thread unblocks a blocked `recv_exact`
//! or `accept`. Interleaving of concurrent senders is the caller's concern.

use core::{mem::ManuallyDrop, ptr::NonNull};
use kernel::{
    bindings,
    error::{
        code::{EIO, ENOENT, EPIPE},
        to_result, Error,
    },
    ffi::{c_int, c_long, c_void},
    prelude::*,
    time::msecs_to_jiffies,
};

use super::raw;
use crate::transport::table::{Addr, Endpoint};

/// The `Error` for errno `code` (one the `kernel` crate does not name).
pub(crate) fn errno(code: u32) -> Error {
    Error::from_errno(-(code as c_int))
}

/// A reference on a network namespace.
///
/// # Invariants
///
/// `net` is a live `struct net` on which this value holds one reference
/// (`get_net`), dropped exactly once by `Drop`.
pub(crate) struct NetNs {
    net: NonNull<bindings::net>,
}

// SAFETY: a counted reference on a namespace may be used and dropped from
// any thread.
unsafe impl Send for NetNs {}
// SAFETY: `&NetNs` only passes the pointer to socket creation, which is
// safe from many threads at once.
unsafe impl Sync for NetNs {}

impl NetNs {
    /// The network namespace of the calling process (`ENOENT` if it is
    /// exiting and has none).
    pub(crate) fn current() -> Result<NetNs> {
        // SAFETY: no preconditions; returns a counted reference or null.
        let net = unsafe { raw::dmsm_get_current_net() };
        // INVARIANT: a non-null result carries the reference we own.
        NonNull::new(net).map(|net| NetNs { net }).ok_or(ENOENT)
    }
}

impl Clone for NetNs {
    fn clone(&self) -> Self {
        // SAFETY: `net` is live (type invariant); this takes another reference.
        unsafe { raw::dmsm_get_net(self.net.as_ptr()) };
        // INVARIANT: the reference taken above belongs to the clone.
        NetNs { net: self.net }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // SAFETY: drops the reference this value holds (type invariant).
        unsafe { raw::dmsm_put_net(self.net.as_ptr()) };
    }
}

/// The module's reference on the kernel's memalloc-sockets static key.
///
/// `sk_set_memalloc()` on a socket turns that key on when no other socket
/// has it, and the last `sk_clear_memalloc()` turns it off: each switch
/// rewrites every `sk_memalloc_socks()` site in the kernel's text with
/// int3 breakpoints and cross-CPU syncs. A source that reconnects every
/// few seconds to an unreachable or hostile peer would switch it on every
/// attempt; under QEMU TCG one such switch crashed a guest (`Oops: int3`
/// in `__alloc_skb`, in an unrelated process closing a socket). Holding one
/// reference while the module is loaded makes the per-socket calls plain
/// counting, at the cost nbd and iSCSI users pay while they have a socket:
/// one extra test in the skb receive path.
///
/// # Invariants
///
/// Each value holds exactly one reference on the key, dropped by `Drop`.
pub(crate) struct MemallocSocks(());

impl MemallocSocks {
    /// Takes the reference (may sleep: module init only).
    pub(crate) fn hold() -> MemallocSocks {
        // SAFETY: no preconditions; process context (module init).
        unsafe { raw::dmsm_memalloc_socks_get() };
        // INVARIANT: the reference taken above belongs to this value.
        MemallocSocks(())
    }
}

impl Drop for MemallocSocks {
    fn drop(&mut self) {
        // SAFETY: drops the one reference this value holds (type invariant).
        unsafe { raw::dmsm_memalloc_socks_put() };
    }
}

/// A socket address built from an [`Endpoint`].
#[repr(C)]
union SockAddr {
    v4: ManuallyDrop<raw::sockaddr_in>,
    v6: ManuallyDrop<bindings::sockaddr_in6>,
    storage: ManuallyDrop<bindings::__kernel_sockaddr_storage>,
}

impl SockAddr {
    /// The C address for `ep`, with its family and length.
    fn new(ep: &Endpoint) -> (SockAddr, c_int, c_int) {
        match ep.addr {
            Addr::V4(a) => {
                let sin = raw::sockaddr_in {
                    sin_family: bindings::AF_INET as u16,
                    sin_port: ep.port.to_be(),
                    sin_addr: raw::in_addr { s_addr: u32::from_ne_bytes(a) },
                    __pad: [0; 8],
                };
                (SockAddr { v4: ManuallyDrop::new(sin) }, bindings::AF_INET as c_int, core::mem::size_of::<raw::sockaddr_in>() as c_int)
            }
            Addr::V6(a) => {
                let mut sin6 = bindings::sockaddr_in6 {
                    sin6_family: bindings::AF_INET6 as u16,
                    sin6_port: ep.port.to_be(),
                    ..Default::default()
                };
                sin6.sin6_addr.in6_u.u6_addr8 = a;
                (SockAddr { v6: ManuallyDrop::new(sin6) }, bindings::AF_INET6 as c_int, core::mem::size_of::<bindings::sockaddr_in6>() as c_int)
            }
        }
    }

    fn as_ptr(&mut self) -> *mut bindings::sockaddr {
        (self as *mut SockAddr).cast()
    }

    /// Decodes what `getpeername`/`getsockname` wrote into zeroed storage:
    /// `len` is their result.
    fn endpoint(&self, len: c_int) -> Result<Endpoint> {
        if len < 0 {
            return Err(Error::from_errno(len));
        }
        let len = len as usize;
        // SAFETY: every variant starts with the family field, initialised
        // (zeroed storage, then the kernel's address).
        let family = u32::from(unsafe { self.v6.sin6_family });
        if family == bindings::AF_INET && len >= core::mem::size_of::<raw::sockaddr_in>() {
            // SAFETY: the kernel wrote a `sockaddr_in`; any bits are valid.
            let sin = unsafe { &self.v4 };
            Ok(Endpoint { addr: Addr::V4(sin.sin_addr.s_addr.to_ne_bytes()), port: u16::from_be(sin.sin_port) })
        } else if family == bindings::AF_INET6 && len >= core::mem::size_of::<bindings::sockaddr_in6>() {
            // SAFETY: the kernel wrote a `sockaddr_in6`; any bits are valid.
            let a = unsafe { self.v6.sin6_addr.in6_u.u6_addr8 };
            // SAFETY: as above.
            let port = unsafe { self.v6.sin6_port };
            Ok(Endpoint { addr: Addr::V6(a), port: u16::from_be(port) })
        } else {
            Err(errno(bindings::EAFNOSUPPORT))
        }
    }
}

/// Backlog of a listening socket: one peer connects at a time.
const BACKLOG: c_int = 4;

/// kvecs handed to one `kernel_sendmsg` call by [`Socket::send_vec`].
const MAX_IOV: usize = 16;

/// A kernel TCP socket; shut down and released on drop.
///
/// # Invariants
///
/// `sock` was created by `sock_create_kern` in `ns`'s namespace (or
/// accepted from such a socket), is owned by this value and released
/// exactly once, by `Drop`. `ns` keeps the namespace alive meanwhile
/// (kernel sockets hold no reference of their own).
pub(crate) struct Socket {
    sock: NonNull<bindings::socket>,
    ns: NetNs,
}

// SAFETY: the socket API serialises concurrent callers with the socket
// lock; the owner releases it once, with no other user left.
unsafe impl Send for Socket {}
// SAFETY: send, receive and shutdown may run concurrently on one socket
// (nbd and DRBD do so); each locks the sock internally.
unsafe impl Sync for Socket {}

impl Socket {
    /// A new TCP socket of `family` in `ns`.
    fn create(ns: &NetNs, family: c_int) -> Result<Socket> {
        let mut sock: *mut bindings::socket = core::ptr::null_mut();
        // SAFETY: `ns.net` is live (its invariant); `sock` is a valid out
        // pointer.
        to_result(unsafe { raw::dmsm_sock_create_tcp(ns.net.as_ptr(), family, &mut sock) })?;
        let sock = NonNull::new(sock).ok_or(EIO)?;
        // INVARIANT: created in `ns`, which the clone keeps alive.
        Ok(Socket { sock, ns: ns.clone() })
    }

    /// Connects to `ep` from `ns`, waiting at most `timeout_ms` (0: until
    /// TCP gives up). Process context; sleeps.
    pub(crate) fn connect(ns: &NetNs, ep: &Endpoint, timeout_ms: u32) -> Result<Socket> {
        let (mut sa, family, len) = SockAddr::new(ep);
        let s = Socket::create(ns, family)?;
        // SAFETY: `s.sock` is a fresh socket we own, not shared yet.
        unsafe { raw::dmsm_sock_setup_io(s.sock.as_ptr()) };
        let timeo = msecs_to_jiffies(timeout_ms).min(c_long::MAX as _) as c_long;
        // SAFETY: as above.
        unsafe { raw::dmsm_sock_set_sndtimeo(s.sock.as_ptr(), timeo) };
        // SAFETY: `sa` holds a valid address of `len` bytes for `family`.
        let r = unsafe { bindings::kernel_connect(s.sock.as_ptr(), sa.as_ptr(), len, 0) };
        // Later sends block until TCP itself gives up.
        // SAFETY: `s.sock` is ours.
        unsafe { raw::dmsm_sock_set_sndtimeo(s.sock.as_ptr(), 0) };
        // A source drops a connection only to start a new one, which
        // resends from the target's last applied record: bytes still
        // queued in the old one are worthless, and sending them first
        // (with the FIN after them, for as long as TCP's back-off takes)
        // would keep the target serving the old connection and refusing
        // the new one. Reset it instead.
        // SAFETY: `s.sock` is ours.
        unsafe { raw::dmsm_sock_set_abortive_close(s.sock.as_ptr()) };
        match to_result(r) {
            Ok(()) => Ok(s),
            // A blocking connect that ran out of time.
            Err(e) if e == errno(bindings::EINPROGRESS) => Err(errno(bindings::ETIMEDOUT)),
            Err(e) => Err(e),
        }
    }

    /// A socket listening on `ep` in `ns` (`SO_REUSEADDR`, small backlog).
    pub(crate) fn listen(ns: &NetNs, ep: &Endpoint) -> Result<Socket> {
        let (mut sa, family, len) = SockAddr::new(ep);
        let s = Socket::create(ns, family)?;
        // SAFETY: `s.sock` is a fresh socket we own, not shared yet.
        unsafe { raw::dmsm_sock_set_reuseaddr(s.sock.as_ptr()) };
        // SAFETY: `sa` holds a valid address of `len` bytes for `family`.
        to_result(unsafe { bindings::kernel_bind(s.sock.as_ptr(), sa.as_ptr(), len) })?;
        // SAFETY: `s.sock` is a bound socket we own.
        to_result(unsafe { bindings::kernel_listen(s.sock.as_ptr(), BACKLOG) })?;
        Ok(s)
    }

    /// Waits for the next connection on a listening socket. Fails once
    /// [`Socket::shutdown`] was called (from any thread). Sleeps.
    pub(crate) fn accept(&self) -> Result<Socket> {
        let mut new: *mut bindings::socket = core::ptr::null_mut();
        // SAFETY: `sock` is live (type invariant); `new` is a valid out pointer.
        to_result(unsafe { bindings::kernel_accept(self.sock.as_ptr(), &mut new, 0) })?;
        let new = NonNull::new(new).ok_or(EIO)?;
        // INVARIANT: accepted from our socket, so in the same namespace.
        let s = Socket { sock: new, ns: self.ns.clone() };
        // SAFETY: `s.sock` is a fresh socket we own, not shared yet.
        unsafe { raw::dmsm_sock_setup_io(s.sock.as_ptr()) };
        Ok(s)
    }

    /// Sends all of `buf`. Sleeps.
    pub(crate) fn send_all(&self, buf: &[u8]) -> Result {
        self.send_vec(&[buf])
    }

    /// Sends all of `bufs`, in order. Sleeps; fails with the socket's
    /// error (`EPIPE` on a shut-down socket).
    pub(crate) fn send_vec(&self, bufs: &[&[u8]]) -> Result {
        for group in bufs.chunks(MAX_IOV) {
            let mut pieces = [(core::ptr::null::<u8>(), 0usize); MAX_IOV];
            for (p, b) in pieces.iter_mut().zip(group.iter()) {
                *p = (b.as_ptr(), b.len());
            }
            let n = group.len().min(MAX_IOV);
            // SAFETY: each piece is a borrowed slice, readable for the call.
            unsafe { self.send_raw(pieces.get(..n).unwrap_or(&[]))? };
        }
        Ok(())
    }

    /// Sends all bytes of `pieces` (`(address, length)`), in order,
    /// gathering up to 16 per `kernel_sendmsg`: the bytes go straight from
    /// their pages into the socket. Sleeps; fails with the socket's error
    /// (`EPIPE` on a shut-down socket).
    ///
    /// # Safety
    ///
    /// Every piece must be valid for reads of its length until this returns.
    pub(crate) unsafe fn send_raw(&self, pieces: &[(*const u8, usize)]) -> Result {
        // The first unsent byte is `pieces[idx]` + `off`.
        let mut idx = 0usize;
        let mut off = 0usize;
        loop {
            while pieces.get(idx).is_some_and(|p| off >= p.1) {
                idx += 1;
                off = 0;
            }
            let Some(rest) = pieces.get(idx..) else { return Ok(()) };
            if rest.is_empty() {
                return Ok(());
            }
            let mut iov = [bindings::kvec::default(); MAX_IOV];
            let mut n = 0usize;
            let mut total = 0usize;
            // Bytes are left for a later call: this one says MSG_MORE.
            let mut more = false;
            for (i, &(p, len)) in rest.iter().enumerate() {
                let skip = if i == 0 { off } else { 0 };
                if len <= skip {
                    continue;
                }
                let Some(v) = iov.get_mut(n) else {
                    more = true;
                    break;
                };
                // The kernel only reads a kvec's bytes when sending; `skip`
                // stays inside the piece.
                v.iov_base = p.wrapping_add(skip).cast_mut().cast::<c_void>();
                v.iov_len = len - skip;
                total += len - skip;
                n += 1;
            }
            // MSG_MORE on every call but the one that ends the pieces: TCP
            // (which runs with TCP_NODELAY) then fills whole segments across
            // calls instead of pushing a short one at the end of each, and
            // the last call pushes what is left. A batch of small records
            // spans many calls (each record is a header piece and one or two
            // payload pieces).
            let flags = bindings::MSG_NOSIGNAL | if more { bindings::MSG_MORE } else { 0 };
            let mut msg = bindings::msghdr {
                msg_flags: flags as _,
                ..Default::default()
            };
            // SAFETY: `sock` is live (type invariant); the first `n` kvecs
            // describe `total` bytes readable for this call (the caller's
            // guarantee).
            let r = unsafe { bindings::kernel_sendmsg(self.sock.as_ptr(), &mut msg, iov.as_mut_ptr(), n, total) };
            if r < 0 {
                return Err(Error::from_errno(r));
            }
            let mut sent = r as usize;
            if sent == 0 || sent > total {
                return Err(EPIPE);
            }
            // Move the cursor past `sent` bytes (`off <= len` throughout).
            while sent > 0 {
                let len = pieces.get(idx).ok_or(EIO)?.1;
                let here = len.saturating_sub(off).min(sent);
                off += here;
                sent -= here;
                if off >= len {
                    idx += 1;
                    off = 0;
                }
            }
        }
    }

    /// Fills all of `buf`. Sleeps. Fails with `ECONNRESET` when the peer
    /// closed the connection or [`Socket::shutdown`] was called first.
    pub(crate) fn recv_exact(&self, buf: &mut [u8]) -> Result {
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..) {
            if rest.is_empty() {
                break;
            }
            let want = rest.len();
            let mut iov = bindings::kvec { iov_base: rest.as_mut_ptr().cast(), iov_len: want };
            let mut msg = bindings::msghdr::default();
            // SAFETY: `sock` is live (type invariant); `iov` describes `want`
            // writable bytes borrowed for this call.
            let r = unsafe {
                bindings::kernel_recvmsg(self.sock.as_ptr(), &mut msg, &mut iov, 1, want, bindings::MSG_WAITALL as c_int)
            };
            if r < 0 {
                return Err(Error::from_errno(r));
            }
            let r = r as usize;
            if r == 0 || r > want {
                return Err(errno(bindings::ECONNRESET));
            }
            done += r;
        }
        Ok(())
    }

    /// Reads what has arrived into `buf` (at least one byte; waits for
    /// it) and returns how many bytes. Fails with `ECONNRESET` when the
    /// peer closed the connection or [`Socket::shutdown`] was called.
    pub(crate) fn recv_some(&self, buf: &mut [u8]) -> Result<usize> {
        let want = buf.len();
        if want == 0 {
            return Ok(0);
        }
        let mut iov = bindings::kvec { iov_base: buf.as_mut_ptr().cast(), iov_len: want };
        let mut msg = bindings::msghdr::default();
        // SAFETY: `sock` is live (type invariant); `iov` describes `want`
        // writable bytes borrowed for this call.
        let r = unsafe { bindings::kernel_recvmsg(self.sock.as_ptr(), &mut msg, &mut iov, 1, want, 0) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        let r = r as usize;
        if r == 0 || r > want {
            return Err(errno(bindings::ECONNRESET));
        }
        Ok(r)
    }

    /// Shuts both directions down: blocked and later `recv_exact`,
    /// `send_vec` and `accept` calls fail. Safe from any thread, any time.
    pub(crate) fn shutdown(&self) {
        // SAFETY: `sock` is live (type invariant). The error (not connected)
        // is of no interest.
        let _ = unsafe { bindings::kernel_sock_shutdown(self.sock.as_ptr(), bindings::sock_shutdown_cmd_SHUT_RDWR) };
    }

    /// The connected peer's address.
    pub(crate) fn peer(&self) -> Result<Endpoint> {
        let mut sa = SockAddr { storage: ManuallyDrop::new(bindings::__kernel_sockaddr_storage::default()) };
        // SAFETY: `sock` is live; `sa` has room for any socket address.
        let len = unsafe { bindings::kernel_getpeername(self.sock.as_ptr(), sa.as_ptr()) };
        sa.endpoint(len)
    }

    /// The local address (the port the system chose for a port-0 listener).
    pub(crate) fn local(&self) -> Result<Endpoint> {
        let mut sa = SockAddr { storage: ManuallyDrop::new(bindings::__kernel_sockaddr_storage::default()) };
        // SAFETY: `sock` is live; `sa` has room for any socket address.
        let len = unsafe { bindings::kernel_getsockname(self.sock.as_ptr(), sa.as_ptr()) };
        sa.endpoint(len)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: we own `sock` (type invariant) and nobody else uses it now.
        unsafe { raw::dmsm_sock_release(self.sock.as_ptr()) };
    }
}

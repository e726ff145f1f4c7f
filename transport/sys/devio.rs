// SPDX-License-Identifier: GPL-2.0

//! Bios the roles build themselves: the source's local writes, straight
//! from the rollback ring's pages (the very bytes it replicates), and its
//! repair reads; the target's record writes, straight from the commit
//! log's pages. They come from a private `bio_set` (a mempool: `GFP_NOIO`
//! allocations always make progress) and report their end, with the
//! cookie their builder gave them, through [`IoOwner::io_done`].

use core::{cell::Cell, ptr::NonNull};
use kernel::{bindings, error::code::ENOMEM, ffi::c_void, prelude::*};

use super::{raw, DmDev};

/// What a bio asks of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoOp {
    /// Write the pages.
    Write,
    /// Read into the pages.
    Read,
    /// Flush the device cache.
    Flush,
    /// Discard a range.
    Discard,
    /// Zero a range.
    WriteZeroes,
}

/// One device operation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DevIo {
    /// Operation.
    pub(crate) op: IoOp,
    /// `REQ_PREFLUSH` before it.
    pub(crate) preflush: bool,
    /// `REQ_FUA`.
    pub(crate) fua: bool,
    /// First sector on the data device.
    pub(crate) sector: u64,
    /// Sectors (discard and write-zeroes; writes take their pages' size).
    pub(crate) sectors: u32,
}

/// Receives the end of the bios it owns.
pub(crate) trait IoOwner: Sync {
    /// The bio with `cookie` ended (`err` is 0 or a negative errno), and
    /// went back to its `bio_set`. Any context, hard irq included: never
    /// sleep; and once it told its waiters (under its lock), never touch
    /// the owner again, which may be freed right after.
    fn io_done(&self, cookie: u64, err: i32);
}

/// The owner behind the C completion, reached through a thin pointer.
/// Set once, before the first bio ([`BioSet::set_owner`]).
struct OwnerRef {
    owner: Cell<Option<NonNull<dyn IoOwner>>>,
}

/// C calls this when a bio of a [`BioSet`] ends.
///
/// # Safety
///
/// `owner` is the `OwnerRef` pointer a [`BioSet`] passed to
/// `dmsm_io_alloc`, still valid (the set's user keeps it alive until
/// every bio ended).
#[no_mangle]
pub(crate) unsafe extern "C" fn specmirror_io_done(owner: *mut c_void, cookie: u64, err: i32) {
    // SAFETY: guaranteed by the caller (see `BioSet::prepare`).
    let o = unsafe { &*owner.cast::<OwnerRef>() };
    if let Some(p) = o.owner.get() {
        // SAFETY: the owner outlives its bios (the `set_owner` contract).
        unsafe { p.as_ref().io_done(cookie, err) };
    }
}

/// A private `bio_set` plus the owner its bios report to.
///
/// # Invariants
///
/// `bs` came from `dmsm_bioset_create` and is destroyed once, in `Drop`;
/// `owner` is a boxed `OwnerRef`, set before the first bio to a target
/// that outlives this value. The user drops this only after every
/// submitted bio ended.
pub(crate) struct BioSet {
    bs: NonNull<bindings::bio_set>,
    owner: KBox<OwnerRef>,
}

// SAFETY: a bio_set is a mempool, usable from any thread; the owner is
// `Sync` (`IoOwner: Sync`) and set once before any bio (then only read).
unsafe impl Send for BioSet {}
// SAFETY: as above.
unsafe impl Sync for BioSet {}

/// A bio allocated from a [`BioSet`], not yet submitted; freed if
/// dropped.
///
/// # Invariants
///
/// `bio` came from `dmsm_io_alloc` on `bs`, is not submitted, and is owned
/// by this value alone.
pub(crate) struct PreparedIo<'a> {
    bio: NonNull<bindings::bio>,
    bs: &'a BioSet,
}

impl BioSet {
    /// A bio_set with `pool` reserved bios; its owner is set with
    /// [`BioSet::set_owner`] before the first bio.
    pub(crate) fn new(pool: u32) -> Result<BioSet> {
        let owner = KBox::new(OwnerRef { owner: Cell::new(None) }, GFP_KERNEL)?;
        // SAFETY: process context; no other precondition.
        let bs = NonNull::new(unsafe { raw::dmsm_bioset_create(pool) }).ok_or(ENOMEM)?;
        // INVARIANT: created above; the owner is set before any bio.
        Ok(BioSet { bs, owner })
    }

    /// Sets the owner the bios report to.
    ///
    /// # Safety
    ///
    /// Called once, before any bio of the set and while no other thread
    /// uses it; `owner` must outlive the set and every bio it submits.
    pub(crate) unsafe fn set_owner(&self, owner: &dyn IoOwner) {
        // SAFETY: erases the borrow's lifetime; the caller guarantees the
        // owner outlives every use.
        let p: NonNull<dyn IoOwner> = unsafe { core::mem::transmute(NonNull::from(owner)) };
        self.owner.owner.set(Some(p));
    }

    /// Allocates a bio for `io` on `dev` with room for `pages` page
    /// pieces. `nowait`: never sleep (dm `map`), and `None` when the pool
    /// is empty; otherwise `GFP_NOIO` from the pool (process context; it
    /// waits for a bio to come back and does not fail).
    pub(crate) fn prepare(&self, dev: &DmDev, io: &DevIo, pages: usize, nowait: bool) -> Option<PreparedIo<'_>> {
        let (op, sectors) = match io.op {
            IoOp::Write => (raw::DMSM_IO_WRITE, 0),
            IoOp::Read => (raw::DMSM_IO_READ, 0),
            IoOp::Flush => (raw::DMSM_IO_FLUSH, 0),
            IoOp::Discard => (raw::DMSM_IO_DISCARD, io.sectors),
            IoOp::WriteZeroes => (raw::DMSM_IO_WRITE_ZEROES, io.sectors),
        };
        let nr = if matches!(io.op, IoOp::Write | IoOp::Read) { pages.min(256) } else { 0 };
        let owner = (&*self.owner as *const OwnerRef).cast_mut().cast::<c_void>();
        // SAFETY: `bs` is live (type invariant); `dev` holds its bdev;
        // `owner` outlives the bio (type invariant).
        let bio = unsafe {
            raw::dmsm_io_alloc(self.bs.as_ptr(), dev.bdev(), op, io.preflush, io.fua, io.sector, sectors, nr as u16, owner, nowait)
        };
        // INVARIANT: freshly allocated from `bs`, not submitted.
        NonNull::new(bio).map(|bio| PreparedIo { bio, bs: self })
    }

    /// Reports a bio that could not even be allocated as failed with
    /// `ENOMEM` (never happens with `GFP_NOIO` from a pool), so that the
    /// owner retries what it stood for rather than forget it.
    pub(crate) fn fail(&self, cookie: u64) {
        if let Some(p) = self.owner.owner.get() {
            // SAFETY: the owner outlives the set (the `set_owner` contract).
            unsafe { p.as_ref().io_done(cookie, ENOMEM.to_errno()) };
        }
    }
}

impl PreparedIo<'_> {
    /// Adds the pieces `(page, offset, len)`; past `BIO_MAX_VECS` pages
    /// the bio is chained to a new one (submitted with it). Call after
    /// [`PreparedIo::set_cookie`].
    ///
    /// # Safety
    ///
    /// The pages must stay allocated, and (writes) unchanged or (reads)
    /// untouched by anyone else, until the owner's `io_done` for this
    /// bio's cookie ran.
    pub(crate) unsafe fn add_pages(&mut self, pieces: impl Iterator<Item = (*mut bindings::page, usize, usize)>) {
        for (page, off, len) in pieces {
            // SAFETY: `bio` is ours and not submitted (type invariant); the
            // page outlives the I/O (the caller's guarantee).
            let next = unsafe { raw::dmsm_io_add_page(self.bs.bs.as_ptr(), self.bio.as_ptr(), page, len as u32, off as u32) };
            if let Some(n) = NonNull::new(next) {
                // INVARIANT: the returned bio is the one still to submit.
                self.bio = n;
            }
        }
    }

    /// The cookie `io_done` will report for this bio.
    pub(crate) fn set_cookie(&mut self, cookie: u64) {
        // SAFETY: `bio` is ours (type invariant).
        unsafe { raw::dmsm_io_set_cookie(self.bio.as_ptr(), cookie) };
    }

    /// Submits the bio. Any context (from `map` it joins dm's list).
    pub(crate) fn submit(self) {
        let bio = self.bio;
        core::mem::forget(self);
        // SAFETY: a fully built bio we own; submission hands it over.
        unsafe { raw::dmsm_io_submit(bio.as_ptr()) };
    }
}

impl Drop for PreparedIo<'_> {
    fn drop(&mut self) {
        // SAFETY: never submitted (type invariant): back to the pool.
        unsafe { raw::dmsm_io_put(self.bio.as_ptr()) };
    }
}

impl Drop for BioSet {
    fn drop(&mut self) {
        // SAFETY: created by dmsm_bioset_create (type invariant); no bio of
        // it is in flight (the user's guarantee).
        unsafe { raw::dmsm_bioset_destroy(self.bs.as_ptr()) };
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Bios the target role builds itself to apply records to its data
//! device, straight from the commit log's pages (no copy). They come from
//! a private `bio_set` (a mempool: `GFP_NOIO` allocations that always make
//! progress) and report their end through [`IoOwner::io_done`].

use core::ptr::NonNull;
use kernel::{bindings, error::code::ENOMEM, ffi::c_void, prelude::*};

use super::{raw, DmDev};

/// What a record asks of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoOp {
    /// Write the payload pages.
    Write,
    /// Read into the pages (the source re-reading a range whose write
    /// failed).
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
    /// The bio of record `seq` ended (`err` is 0 or a negative errno).
    /// Any context, hard irq included: never sleep.
    fn io_done(&self, seq: u64, err: i32);
}

/// The owner behind the C completion, reached through a thin pointer.
struct OwnerRef {
    owner: *const dyn IoOwner,
}

/// C calls this when a bio of [`BioSet::submit`] ends.
///
/// # Safety
///
/// `owner` is the `OwnerRef` pointer passed to `dmsm_io_alloc` by
/// [`BioSet::submit`], still valid (the caller of `submit` keeps it alive
/// until every bio ended).
#[no_mangle]
pub(crate) unsafe extern "C" fn specmirror_io_done(owner: *mut c_void, seq: u64, err: i32) {
    // SAFETY: guaranteed by the caller (see `BioSet::submit`).
    let o = unsafe { &*owner.cast::<OwnerRef>() };
    // SAFETY: the owner outlives its bios (the `BioSet::new` contract).
    unsafe { (*o.owner).io_done(seq, err) };
}

/// A private `bio_set` plus the owner its bios report to.
///
/// # Invariants
///
/// `bs` came from `dmsm_bioset_create` and is destroyed once, in `Drop`;
/// `owner` is a boxed `OwnerRef` whose target outlives this value. The
/// user drops this only after every submitted bio ended.
pub(crate) struct BioSet {
    bs: NonNull<bindings::bio_set>,
    owner: KBox<OwnerRef>,
}

// SAFETY: a bio_set is a mempool, usable from any thread; the owner is
// `Sync` (`IoOwner: Sync`).
unsafe impl Send for BioSet {}
// SAFETY: as above.
unsafe impl Sync for BioSet {}

impl BioSet {
    /// A bio_set with `pool` reserved bios, reporting to `owner`.
    ///
    /// # Safety
    ///
    /// `owner` must outlive the returned value and every bio it submits.
    pub(crate) unsafe fn new(pool: u32, owner: *const dyn IoOwner) -> Result<BioSet> {
        let owner = KBox::new(OwnerRef { owner }, GFP_KERNEL)?;
        // SAFETY: process context; no other precondition.
        let bs = NonNull::new(unsafe { raw::dmsm_bioset_create(pool) }).ok_or(ENOMEM)?;
        // INVARIANT: created above; `owner` as the caller guaranteed.
        Ok(BioSet { bs, owner })
    }

    /// Submits `io` for record `seq`; `pages` gives the payload (writes)
    /// or the buffer (reads) as `(page, offset, len)` pieces. Process
    /// context.
    ///
    /// # Safety
    ///
    /// The pages must stay allocated and unchanged (reads: untouched by
    /// anyone else) until the owner's `io_done(seq, ..)` ran.
    pub(crate) unsafe fn submit(
        &self,
        dev: &DmDev,
        io: &DevIo,
        pages: impl Iterator<Item = (*mut bindings::page, usize, usize)> + Clone,
        seq: u64,
    ) {
        let (op, sectors) = match io.op {
            IoOp::Write => (raw::DMSM_IO_WRITE, 0),
            IoOp::Read => (raw::DMSM_IO_READ, 0),
            IoOp::Flush => (raw::DMSM_IO_FLUSH, 0),
            IoOp::Discard => (raw::DMSM_IO_DISCARD, io.sectors),
            IoOp::WriteZeroes => (raw::DMSM_IO_WRITE_ZEROES, io.sectors),
        };
        let with_pages = matches!(io.op, IoOp::Write | IoOp::Read);
        let nr = if with_pages { pages.clone().count().min(256) } else { 0 };
        let owner = (&*self.owner as *const OwnerRef).cast_mut().cast::<c_void>();
        // SAFETY: `bs` is live (type invariant); `dev` holds its bdev;
        // `owner` outlives the bio (type invariant). From a mempool with
        // GFP_NOIO and at most BIO_MAX_VECS vecs, this never fails.
        let mut bio = unsafe {
            raw::dmsm_io_alloc(self.bs.as_ptr(), dev.bdev(), op, io.preflush, io.fua, io.sector, sectors, nr as u16, owner, seq)
        };
        if bio.is_null() {
            // Cannot happen (see above); report it as a failed write so the
            // record is retried rather than forgotten.
            // SAFETY: the owner outlives the set (the `new` contract).
            unsafe { (*self.owner.owner).io_done(seq, ENOMEM.to_errno()) };
            return;
        }
        if with_pages {
            for (page, off, len) in pages {
                // SAFETY: `bio` is ours, not yet submitted; the page is
                // valid until io_done (the caller's guarantee).
                bio = unsafe { raw::dmsm_io_add_page(self.bs.as_ptr(), bio, page, len as u32, off as u32) };
            }
        }
        // SAFETY: a fully built bio we own; submission hands it over.
        unsafe { raw::dmsm_io_submit(bio) };
    }
}

impl Drop for BioSet {
    fn drop(&mut self) {
        // SAFETY: created by dmsm_bioset_create (type invariant); no bio of
        // it is in flight (the user's guarantee).
        unsafe { raw::dmsm_bioset_destroy(self.bs.as_ptr()) };
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Bios dm hands to the target: [`Bio`] inside `map` / `end_io`,
//! [`OwnedBio`] once the target took one to submit or end later, and
//! [`BioList`], a FIFO of owned bios linked through `bi_next` (no
//! allocation, so it is usable in any context).

use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    bindings,
    ffi::{c_int, c_uint, c_void},
};

use super::{raw, DmDev};

/// `BLK_STS_OK`.
pub(crate) const BLK_STS_OK: u8 = 0;
/// `BLK_STS_IOERR` (`-EIO`).
pub(crate) const BLK_STS_IOERR: u8 = 10;

/// What a bio asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BioOp {
    /// Read data.
    Read,
    /// Write data.
    Write,
    /// Flush without data (`REQ_PREFLUSH`, zero sectors).
    Flush,
    /// Discard a range.
    Discard,
    /// Zero a range.
    WriteZeroes,
    /// Anything else (secure erase, zone ops): not supported.
    Other,
}

/// Per-bio state the target keeps in dm's per-bio data area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PerBio {
    /// What the target did with the bio (its own values; 0 = nothing).
    pub(crate) tag: u32,
    /// Sequence number of the bio's record.
    pub(crate) seq: u64,
    /// Its I/O failed.
    pub(crate) failed: bool,
}

/// Operations on a raw bio of a dm target.
///
/// # Invariants
///
/// `bio` is a live bio dm passed to `ti`'s `map` (a clone with per-bio
/// data of `ti->per_io_data_size` bytes, at least a [`PerBio`]), owned by
/// whoever holds this value.
#[derive(Clone, Copy)]
pub(crate) struct RawBio {
    bio: NonNull<bindings::bio>,
    ti: NonNull<raw::dm_target>,
}

impl RawBio {
    fn op(&self) -> BioOp {
        // SAFETY: `bio` is live (type invariant).
        let (op, sectors) = unsafe { (raw::dmsm_bio_op(self.bio.as_ptr()), raw::dmsm_bio_sectors(self.bio.as_ptr())) };
        match op {
            bindings::req_op_REQ_OP_READ => BioOp::Read,
            bindings::req_op_REQ_OP_WRITE if sectors == 0 => BioOp::Flush,
            bindings::req_op_REQ_OP_WRITE => BioOp::Write,
            bindings::req_op_REQ_OP_FLUSH => BioOp::Flush,
            bindings::req_op_REQ_OP_DISCARD => BioOp::Discard,
            bindings::req_op_REQ_OP_WRITE_ZEROES => BioOp::WriteZeroes,
            _ => BioOp::Other,
        }
    }

    fn sector(&self) -> u64 {
        // SAFETY: `bio` and `ti` are live (type invariant).
        unsafe { (*self.bio.as_ptr()).bi_iter.bi_sector.saturating_sub((*self.ti.as_ptr()).begin) }
    }

    fn sectors(&self) -> u32 {
        // SAFETY: `bio` is live (type invariant).
        unsafe { raw::dmsm_bio_sectors(self.bio.as_ptr()) }
    }

    fn is_preflush(&self) -> bool {
        // SAFETY: `bio` is live (type invariant).
        unsafe { raw::dmsm_bio_is_preflush(self.bio.as_ptr()) != 0 }
    }

    fn is_fua(&self) -> bool {
        // SAFETY: `bio` is live (type invariant).
        unsafe { raw::dmsm_bio_is_fua(self.bio.as_ptr()) != 0 }
    }

    /// The per-bio data; exclusive because the holder owns the bio.
    fn per_bio(&mut self) -> &mut PerBio {
        // SAFETY: `ti` is live; by the type invariant the bio has per-bio
        // data of `per_io_data_size` bytes, at least a `PerBio` (the ctr
        // reserved it), suitably aligned (dm aligns it to 8 bytes), owned
        // by the bio's owner, which is us.
        unsafe {
            let size = (*self.ti.as_ptr()).per_io_data_size as usize;
            &mut *raw::dmsm_per_bio_data(self.bio.as_ptr(), size).cast::<PerBio>()
        }
    }

    fn copy_data<F: FnMut(&[u8]) -> bool>(&self, f: &mut F) -> bool {
        /// # Safety
        ///
        /// `ctx` is the `&mut F` passed below; `data` is valid for `len`
        /// bytes of reads for the call.
        unsafe extern "C" fn tramp<F: FnMut(&[u8]) -> bool>(ctx: *mut c_void, data: *const c_void, len: c_uint) -> c_int {
            // SAFETY: guaranteed by the caller (dmsm_bio_copy_data passes
            // our ctx and a kmapped segment).
            let (f, d) = unsafe { (&mut *ctx.cast::<F>(), core::slice::from_raw_parts(data.cast::<u8>(), len as usize)) };
            if f(d) {
                0
            } else {
                1
            }
        }
        // SAFETY: `bio` is live; `tramp::<F>` matches the callback type and
        // `f` outlives the call.
        unsafe { raw::dmsm_bio_copy_data(self.bio.as_ptr(), Some(tramp::<F>), (f as *mut F).cast::<c_void>()) == 0 }
    }
}

/// A bio inside `map` or `end_io`.
pub(crate) struct Bio<'a> {
    raw: RawBio,
    taken: bool,
    _p: PhantomData<&'a mut ()>,
}

impl Bio<'_> {
    /// # Safety
    ///
    /// `bio` and `ti` are what dm passed to `map` or `end_io`, valid for
    /// the call; the bio is the target's until the callback returns.
    pub(super) unsafe fn from_raw(bio: *mut bindings::bio, ti: *mut raw::dm_target) -> Self {
        // SAFETY: dm never passes null bios or targets (the caller's
        // guarantee).
        let (bio, ti) = unsafe { (NonNull::new_unchecked(bio), NonNull::new_unchecked(ti)) };
        // INVARIANT: guaranteed by the caller.
        Bio { raw: RawBio { bio, ti }, taken: false, _p: PhantomData }
    }

    /// Sends the bio to `dev` at the same offset inside the target.
    pub(crate) fn remap(&mut self, dev: &DmDev) {
        // SAFETY: `bio` and `ti` are valid for the callback (type
        // invariant); `dev.bdev()` is a live block device held by `dev`.
        unsafe { raw::dmsm_bio_remap(self.raw.bio.as_ptr(), self.raw.ti.as_ptr(), dev.bdev()) };
    }

    /// Takes the bio: `map` then returns `DM_MAPIO_SUBMITTED` and `end_io`
    /// `DM_ENDIO_INCOMPLETE`, whatever the target returns.
    pub(crate) fn take(&mut self) -> Option<OwnedBio> {
        if self.taken {
            return None;
        }
        self.taken = true;
        // INVARIANT: the callback hands ownership of the bio over by
        // returning SUBMITTED / INCOMPLETE (see `was_taken`).
        Some(OwnedBio { raw: self.raw })
    }

    pub(super) fn was_taken(&self) -> bool {
        self.taken
    }
}

/// A bio the target took from `map` or `end_io`; it must be submitted or
/// ended exactly once. Dropping it ends it with an I/O error.
///
/// # Invariants
///
/// `raw` satisfies the [`RawBio`] invariants; dm waits for this bio (it
/// is counted in flight) until it is ended.
pub(crate) struct OwnedBio {
    raw: RawBio,
}

// SAFETY: an owned bio may be submitted or ended from any thread.
unsafe impl Send for OwnedBio {}

impl OwnedBio {
    /// Ends the bio with `status` (`BLK_STS_*`). Any context.
    pub(crate) fn end(self, status: u8) {
        let raw = self.raw;
        core::mem::forget(self);
        // SAFETY: we own the bio (type invariant) and give it back once.
        unsafe { raw::dmsm_bio_endio(raw.bio.as_ptr(), status) };
    }

    /// Remaps the bio to `dev` and submits it. Process context.
    pub(crate) fn submit_remapped(self, dev: &DmDev) {
        let raw = self.raw;
        core::mem::forget(self);
        // SAFETY: we own the bio (type invariant) and hand it to dm once;
        // `dev` is a live device of this target.
        unsafe { raw::dmsm_bio_submit_remapped(raw.bio.as_ptr(), raw.ti.as_ptr(), dev.bdev()) };
    }
}

impl Drop for OwnedBio {
    fn drop(&mut self) {
        // Never leave dm waiting for a bio nobody will end.
        // SAFETY: we own the bio (type invariant) and end it once.
        unsafe { raw::dmsm_bio_endio(self.raw.bio.as_ptr(), BLK_STS_IOERR) };
    }
}

/// What the target reads and keeps of a bio, in `map` / `end_io` or
/// after taking it.
pub(crate) trait BioView {
    /// The raw bio.
    #[doc(hidden)]
    fn raw(&self) -> &RawBio;
    /// The raw bio, exclusively.
    #[doc(hidden)]
    fn raw_mut(&mut self) -> &mut RawBio;

    /// What the bio asks for.
    fn op(&self) -> BioOp {
        self.raw().op()
    }

    /// First sector, relative to the start of the target.
    fn sector(&self) -> u64 {
        self.raw().sector()
    }

    /// Length in sectors.
    fn sectors(&self) -> u32 {
        self.raw().sectors()
    }

    /// `REQ_PREFLUSH` set.
    fn is_preflush(&self) -> bool {
        self.raw().is_preflush()
    }

    /// `REQ_FUA` set.
    fn is_fua(&self) -> bool {
        self.raw().is_fua()
    }

    /// The target's per-bio data (written in `map` before it is read).
    fn per_bio(&mut self) -> &mut PerBio {
        self.raw_mut().per_bio()
    }

    /// Feeds the payload to `f` one segment at a time; false if `f`
    /// returned false. Callable in atomic context.
    fn copy_data<F: FnMut(&[u8]) -> bool>(&self, mut f: F) -> bool {
        self.raw().copy_data(&mut f)
    }
}

impl BioView for Bio<'_> {
    fn raw(&self) -> &RawBio {
        &self.raw
    }
    fn raw_mut(&mut self) -> &mut RawBio {
        &mut self.raw
    }
}

impl BioView for OwnedBio {
    fn raw(&self) -> &RawBio {
        &self.raw
    }
    fn raw_mut(&mut self) -> &mut RawBio {
        &mut self.raw
    }
}

/// A FIFO of owned bios of one target, linked through `bi_next`.
///
/// # Invariants
///
/// `head..tail` is a `bi_next` chain of `len` bios, each an [`OwnedBio`]
/// of target `ti` whose ownership the list holds.
pub(crate) struct BioList {
    head: Option<NonNull<bindings::bio>>,
    tail: Option<NonNull<bindings::bio>>,
    ti: Option<NonNull<raw::dm_target>>,
    len: usize,
}

// SAFETY: the list owns its bios, which may be ended from any thread.
unsafe impl Send for BioList {}

impl BioList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        BioList { head: None, tail: None, ti: None, len: 0 }
    }

    /// Number of bios.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `b`.
    pub(crate) fn push_back(&mut self, b: OwnedBio) {
        let raw = b.raw;
        core::mem::forget(b);
        // SAFETY: we own the bio; its `bi_next` is free while a target
        // holds it.
        unsafe { (*raw.bio.as_ptr()).bi_next = core::ptr::null_mut() };
        match self.tail {
            // SAFETY: `t` is a bio of the list (type invariant).
            Some(t) => unsafe { (*t.as_ptr()).bi_next = raw.bio.as_ptr() },
            None => self.head = Some(raw.bio),
        }
        self.tail = Some(raw.bio);
        self.ti = Some(raw.ti);
        self.len += 1;
    }

    /// Puts `b` back at the front.
    pub(crate) fn push_front(&mut self, b: OwnedBio) {
        let raw = b.raw;
        core::mem::forget(b);
        let next = self.head.map_or(core::ptr::null_mut(), |h| h.as_ptr());
        // SAFETY: we own the bio.
        unsafe { (*raw.bio.as_ptr()).bi_next = next };
        if self.tail.is_none() {
            self.tail = Some(raw.bio);
        }
        self.head = Some(raw.bio);
        self.ti = Some(raw.ti);
        self.len += 1;
    }

    /// Removes the first bio.
    pub(crate) fn pop_front(&mut self) -> Option<OwnedBio> {
        let h = self.head?;
        let ti = self.ti?;
        // SAFETY: `h` is a bio of the list (type invariant).
        let next = unsafe { (*h.as_ptr()).bi_next };
        // SAFETY: as above; the link is ours to clear.
        unsafe { (*h.as_ptr()).bi_next = core::ptr::null_mut() };
        self.head = NonNull::new(next);
        if self.head.is_none() {
            self.tail = None;
        }
        self.len -= 1;
        // INVARIANT: the list owned this bio of target `ti`.
        Some(OwnedBio { raw: RawBio { bio: h, ti } })
    }

    /// Removes the first bio whose per-bio data satisfies `pred`.
    pub(crate) fn remove_first(&mut self, mut pred: impl FnMut(&PerBio) -> bool) -> Option<OwnedBio> {
        let ti = self.ti?;
        let mut prev: Option<NonNull<bindings::bio>> = None;
        let mut cur = self.head;
        while let Some(c) = cur {
            let mut raw = RawBio { bio: c, ti };
            // SAFETY: `c` is a bio of the list (type invariant).
            let next = NonNull::new(unsafe { (*c.as_ptr()).bi_next });
            if pred(raw.per_bio()) {
                match prev {
                    // SAFETY: `p` is a bio of the list.
                    Some(p) => unsafe { (*p.as_ptr()).bi_next = next.map_or(core::ptr::null_mut(), |n| n.as_ptr()) },
                    None => self.head = next,
                }
                if self.tail == Some(c) {
                    self.tail = prev;
                }
                // SAFETY: `c` is ours now; clear its link.
                unsafe { (*c.as_ptr()).bi_next = core::ptr::null_mut() };
                self.len -= 1;
                // INVARIANT: unlinked from the list, which owned it.
                return Some(OwnedBio { raw });
            }
            prev = cur;
            cur = next;
        }
        None
    }
}

impl Drop for BioList {
    fn drop(&mut self) {
        // Bios still listed end with an error rather than hang dm.
        while let Some(b) = self.pop_front() {
            b.end(BLK_STS_IOERR);
        }
    }
}

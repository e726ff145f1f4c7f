// SPDX-License-Identifier: GPL-2.0

//! Kernel storage and checksum for the pure core: [`KPages`] gives the
//! rings (`log::ring`, `log::commit`) pages allocated once at table load,
//! [`RingFill`] lets a writer fill a reserved record of the rollback ring
//! outside the device's lock, [`KernelCrc`] is the kernel's `crc32c()`.

use kernel::{
    alloc::{flags::__GFP_ZERO, AllocError, Flags, KVec},
    page::Page,
    sync::Arc,
};

use super::raw;
use crate::log::{
    pages::{Pages, Spans},
    record::Crc32c,
    ring::Reserved,
};

/// Page size the core assumes.
const PAGE_SIZE: usize = crate::log::pages::PAGE_SIZE;

// The core lays its rings over pages of its own PAGE_SIZE.
const _: () = assert!(PAGE_SIZE == kernel::page::PAGE_SIZE);

// `page_address` of a highmem page is not mapped: this storage relies on
// every page being in the direct map, as on x86_64 and arm64.
#[cfg(CONFIG_HIGHMEM)]
compile_error!("dm-specmirror's KPages needs a kernel without CONFIG_HIGHMEM");

/// One allocated page and its direct-map address.
///
/// # Invariants
///
/// `addr` is `page_address(page)`: valid for reads and writes of
/// `PAGE_SIZE` bytes while `page` is alive, and reached only through the
/// [`KPages`] and [`RingFill`]s that share it (and the zero-copy I/O they
/// hand pages to).
struct Slot {
    page: Page,
    addr: *mut u8,
}

/// The pages of a [`KPages`], shared with its [`RingFill`]s.
///
/// # Invariants
///
/// Every slot satisfies the [`Slot`] invariants; the vector never changes
/// after [`KPages::new`].
struct Slots(KVec<Slot>);

// SAFETY: the slots are never changed after construction; the page bytes
// behind them are reached only through `KPages` (whose `&mut` or `&`
// borrows the bytes it touches, never a whole shared page) and
// `RingFill`'s unsafe methods, whose callers own the bytes they write.
unsafe impl Send for Slots {}
// SAFETY: as for `Send`: shared access reads only the immutable slot table.
unsafe impl Sync for Slots {}

/// A fixed set of zeroed pages, allocated once and freed when the last of
/// it and its [`RingFill`]s is dropped.
///
/// # Implementation details
///
/// The rollback ring's records are filled outside the device's lock by
/// several CPUs at once, each in the bytes of its own reserved record,
/// while the lock holder reads and writes other bytes of the same pages.
/// So no access makes a reference to a whole page: [`Pages::bytes`] and
/// [`Pages::bytes_mut`] borrow only the bytes asked for.
///
/// # Invariants
///
/// `slots` satisfies the [`Slots`] invariants.
pub(crate) struct KPages {
    slots: Arc<Slots>,
}

// SAFETY: the pages' bytes are reached through `&self` / `&mut self`
// (each access borrowing only the bytes it touches) or by a `RingFill`
// whose caller owns the bytes it writes; moving this value to another
// thread moves that right along.
unsafe impl Send for KPages {}
// SAFETY: `&KPages` hands out shared borrows of bytes only; mutation needs
// `&mut KPages` or a `RingFill` caller's ownership of the bytes.
unsafe impl Sync for KPages {}

/// The pages of a rollback ring or commit log, for filling a reserved
/// record outside the device's lock (`log::ring`, `RollbackRing::reserve`;
/// `log::commit`, `CommitLog::reserve`).
pub(crate) struct RingFill {
    slots: Arc<Slots>,
}

impl RingFill {
    /// Copies `data` to byte `off` of page `i` and returns the copy
    /// (`None`, nothing written, if it does not fit in the page).
    ///
    /// # Safety
    ///
    /// The bytes belong to a record the caller reserved and has not
    /// published (nothing else reads or writes them until it does), and
    /// the caller writes them again only after the returned borrow ends.
    unsafe fn write(&self, i: usize, off: usize, data: &[u8]) -> Option<&[u8]> {
        let s = self.slots.0.get(i)?;
        if off.checked_add(data.len())? > PAGE_SIZE {
            return None;
        }
        // SAFETY: `addr` is valid for `PAGE_SIZE` bytes while the page lives
        // (the `Slot` invariant; `self.slots` keeps it alive), the range is
        // inside it, `data` cannot overlap it (nothing else borrows these
        // bytes, the caller's guarantee), and only the caller accesses it.
        unsafe {
            let dst = s.addr.add(off);
            core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            Some(core::slice::from_raw_parts(dst.cast_const(), data.len()))
        }
    }

    /// A writer of reserved record `r`'s payload, checksumming with `crc`.
    ///
    /// # Safety
    ///
    /// `r` is a reservation of the ring over these pages that the caller
    /// made and has not published: its payload bytes are the caller's
    /// alone until it publishes (the ring neither reads, sends, frees nor
    /// reuses them before), and the caller publishes only after the
    /// returned writer is gone.
    pub(crate) unsafe fn copier<'a>(&'a self, r: &Reserved, crc: &'a KernelCrc) -> RingCopy<'a> {
        // INVARIANT: the caller's guarantee.
        RingCopy { fill: self, spans: r.payload(), cur: None, crc: r.seed_crc(), c: Some(crc) }
    }

    /// A writer of the payload of the record reserved in the commit log
    /// over these pages at `spans` (no checksum: the receiver checked the
    /// frame before).
    ///
    /// # Safety
    ///
    /// `spans` are the payload of the record the caller's receiver
    /// reserved (`CommitLog::reserve`) and has not published: nothing
    /// else reads or writes them until it does, which it does only after
    /// the returned writer is gone.
    pub(crate) unsafe fn log_copier(&self, spans: Spans) -> RingCopy<'_> {
        // INVARIANT: the caller's guarantee.
        RingCopy { fill: self, spans, cur: None, crc: 0, c: None }
    }
}

/// Copies a payload into a reserved record, piece by piece, while
/// chaining its CRC over the ring's copy (as `RingWriter` does under the
/// lock: the host may change its buffer while it is copied).
///
/// # Invariants
///
/// The bytes of `spans` (and of `cur`) belong to a reserved, unpublished
/// record whose owner created this writer and publishes it only after
/// this writer is gone.
pub(crate) struct RingCopy<'a> {
    fill: &'a RingFill,
    spans: Spans,
    cur: Option<(usize, usize, usize)>,
    crc: u32,
    /// Chains the CRC over the copy (the source's records); `None` for
    /// the target's commit log.
    c: Option<&'a KernelCrc>,
}

impl RingCopy<'_> {
    /// Appends `data`; false if it goes past the record's payload.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let Some((pg, off, len)) = self.cur.take().or_else(|| self.spans.next()) else {
                return false;
            };
            let n = len.min(data.len());
            let (now, later) = data.split_at(n);
            // SAFETY: the bytes are the reserved record's (the type
            // invariant); the borrow returned ends before the next write.
            let Some(copy) = (unsafe { self.fill.write(pg, off, now) }) else {
                return false;
            };
            if let Some(c) = self.c {
                self.crc = c.crc32c(self.crc, copy);
            }
            if n < len {
                self.cur = Some((pg, off + n, len - n));
            }
            data = later;
        }
        true
    }

    /// The CRC to publish the record with. A payload that fell short is
    /// completed with zeros (`false`): the record must hold defined bytes,
    /// and the local write goes from the same bytes.
    pub(crate) fn finish(mut self) -> (u32, bool) {
        const ZEROS: [u8; 512] = [0; 512];
        let mut full = true;
        while self.cur.is_some() || self.spans.remaining() > 0 {
            full = false;
            let left = self.cur.map_or(0, |c| c.2).saturating_add(self.spans.remaining());
            if !self.write(&ZEROS[..left.min(ZEROS.len())]) {
                break;
            }
        }
        (self.crc, full)
    }
}

impl KPages {
    /// Allocates `count` zeroed pages with `flags` (`GFP_KERNEL` at table
    /// load: this may sleep).
    pub(crate) fn new(count: usize, flags: Flags) -> Result<Self, AllocError> {
        let mut slots = KVec::with_capacity(count, flags)?;

        for _ in 0..count {
            let page = Page::alloc_page(flags | __GFP_ZERO)?;
            // SAFETY: `page` is a live page we own; without highmem (checked
            // at build time above) it is in the direct map.
            let addr = unsafe { raw::dmsm_page_address(page.as_ptr()) }.cast::<u8>();
            if addr.is_null() {
                return Err(AllocError);
            }
            // INVARIANT: `addr` is the direct-map address of `page`.
            slots.push(Slot { page, addr }, flags)?;
        }
        // INVARIANT: every slot was built above; the vector is never
        // changed again (it is shared read-only from here on).
        Ok(KPages { slots: Arc::new(Slots(slots), flags)? })
    }

    /// A handle for filling reserved records outside the lock.
    pub(crate) fn ring_fill(&self) -> RingFill {
        RingFill { slots: self.slots.clone() }
    }

    /// The `struct page` of page `i`, for zero-copy bio and socket I/O
    /// (`None` if out of range). It stays valid while `self` lives.
    pub(crate) fn page_ptr(&self, i: usize) -> Option<*mut kernel::bindings::page> {
        self.slots.0.get(i).map(|s| s.page.as_ptr())
    }

    /// The direct-map address of page `i` (`None` if out of range), for
    /// zero-copy sends. Valid while `self` lives; reading through it races
    /// only with writers of the same bytes, which the rings exclude.
    pub(crate) fn addr(&self, i: usize) -> Option<*const u8> {
        self.slots.0.get(i).map(|s| s.addr.cast_const())
    }

    /// Total bytes of storage.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.0.len().saturating_mul(PAGE_SIZE)
    }
}

impl Pages for KPages {
    fn page_count(&self) -> usize {
        self.slots.0.len()
    }

    /// A whole page: only for pages no [`RingFill`] writes (metadata and
    /// read buffers, the ring before any reservation).
    fn page(&self, i: usize) -> Option<&[u8; PAGE_SIZE]> {
        let s = self.slots.0.get(i)?;
        // SAFETY: by the `Slot` invariant `addr` is valid for `PAGE_SIZE`
        // bytes while `self` lives; `&self` excludes writers but
        // `RingFill`'s, which write only pages of rings, reached through
        // `bytes` instead.
        Some(unsafe { &*s.addr.cast::<[u8; PAGE_SIZE]>() })
    }

    fn page_mut(&mut self, i: usize) -> Option<&mut [u8; PAGE_SIZE]> {
        let s = self.slots.0.get(i)?;
        // SAFETY: as in `page`; `&mut self` makes the access exclusive.
        Some(unsafe { &mut *s.addr.cast::<[u8; PAGE_SIZE]>() })
    }

    fn bytes(&self, i: usize, off: usize, len: usize) -> Option<&[u8]> {
        let s = self.slots.0.get(i)?;
        if off.checked_add(len)? > PAGE_SIZE {
            return None;
        }
        // SAFETY: `addr` is valid for `PAGE_SIZE` bytes while `self` lives
        // (the `Slot` invariant) and the range is inside the page; the
        // rings never read bytes of a record being filled by a `RingFill`.
        Some(unsafe { core::slice::from_raw_parts(s.addr.add(off), len) })
    }

    fn bytes_mut(&mut self, i: usize, off: usize, len: usize) -> Option<&mut [u8]> {
        let s = self.slots.0.get(i)?;
        if off.checked_add(len)? > PAGE_SIZE {
            return None;
        }
        // SAFETY: as in `bytes`; `&mut self` excludes other borrows through
        // `KPages`, and the rings never write bytes of a record being
        // filled by a `RingFill`.
        Some(unsafe { core::slice::from_raw_parts_mut(s.addr.add(off), len) })
    }
}

/// The kernel's `crc32c()` in the core's convention (standard CRC-32C,
/// chained from 0; see [`Crc32c`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KernelCrc;

impl Crc32c for KernelCrc {
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32 {
        // SAFETY: `data` is valid for `data.len()` bytes of reads.
        !unsafe { raw::dmsm_crc32c(!crc, data.as_ptr().cast(), data.len()) }
    }
}

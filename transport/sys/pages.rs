// SPDX-License-Identifier: GPL-2.0

//! Kernel storage and checksum for the pure core: [`KPages`] gives the
//! rings (`log::ring`, `log::commit`) pages allocated once at table load,
//! [`KernelCrc`] the kernel's `crc32c()`.

use kernel::{
    alloc::{flags::__GFP_ZERO, AllocError, Flags, KVec},
    page::Page,
};

use super::raw;
use crate::log::{pages::Pages, record::Crc32c};

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
/// `PAGE_SIZE` bytes while `page` is alive, and reached by nothing else.
struct Slot {
    page: Page,
    addr: *mut u8,
}

/// A fixed set of zeroed pages, allocated once and freed on drop.
///
/// # Invariants
///
/// Every slot satisfies the [`Slot`] invariants; the set never changes
/// after [`KPages::new`].
pub(crate) struct KPages {
    slots: KVec<Slot>,
}

// SAFETY: the pages are owned exclusively by this value (the raw addresses
// are only reached through `&self` / `&mut self`), so moving it to another
// thread moves sole ownership, like a `KVec<u8>`.
unsafe impl Send for KPages {}
// SAFETY: `&KPages` only hands out shared `&[u8; PAGE_SIZE]`; mutation needs
// `&mut KPages`.
unsafe impl Sync for KPages {}

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
        // changed again.
        Ok(KPages { slots })
    }

    /// The `struct page` of page `i`, for zero-copy bio and socket I/O
    /// (`None` if out of range). It stays valid while `self` lives.
    pub(crate) fn page_ptr(&self, i: usize) -> Option<*mut kernel::bindings::page> {
        self.slots.get(i).map(|s| s.page.as_ptr())
    }

    /// The direct-map address of page `i` (`None` if out of range), for
    /// zero-copy sends. Valid while `self` lives; reading through it races
    /// only with writers of the same bytes, which the rings exclude.
    pub(crate) fn addr(&self, i: usize) -> Option<*const u8> {
        self.slots.get(i).map(|s| s.addr.cast_const())
    }

    /// Total bytes of storage.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len().saturating_mul(PAGE_SIZE)
    }
}

impl Pages for KPages {
    fn page_count(&self) -> usize {
        self.slots.len()
    }

    fn page(&self, i: usize) -> Option<&[u8; PAGE_SIZE]> {
        let s = self.slots.get(i)?;
        // SAFETY: by the `Slot` invariant `addr` is valid for `PAGE_SIZE`
        // bytes while `self` lives; `&self` excludes writers.
        Some(unsafe { &*s.addr.cast::<[u8; PAGE_SIZE]>() })
    }

    fn page_mut(&mut self, i: usize) -> Option<&mut [u8; PAGE_SIZE]> {
        let s = self.slots.get_mut(i)?;
        // SAFETY: as in `page`; `&mut self` makes the access exclusive.
        Some(unsafe { &mut *s.addr.cast::<[u8; PAGE_SIZE]>() })
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

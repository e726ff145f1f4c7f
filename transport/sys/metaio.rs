// SPDX-License-Identifier: GPL-2.0

//! Block I/O on the metadata device: whole 4 KiB blocks, read or written
//! synchronously through one page this value owns. Used at table load
//! (and, later, on rare metadata updates), in process context: it sleeps.
//! What the blocks mean is `crate::log::meta`'s business.

use kernel::{alloc::flags::GFP_KERNEL, error::to_result, prelude::*};

use super::{pages::KPages, raw, DmDev};
use crate::log::meta::{BLOCK_SECTORS, BLOCK_SIZE};
use crate::log::pages::Pages;

// One page holds one metadata block.
const _: () = assert!(BLOCK_SIZE == kernel::page::PAGE_SIZE);

/// Buffers a [`MetaIo`] owns: enough for both superblock copies and the
/// block being written.
pub(crate) const META_BUFS: usize = 3;

/// The metadata device and [`META_BUFS`] one-block buffers (pages, never
/// on the stack: a kernel stack has no room for three 4 KiB blocks). Each
/// read or write moves one block between the device and one buffer.
pub(crate) struct MetaIo {
    dev: DmDev,
    bufs: KPages,
}

impl MetaIo {
    /// Wraps the opened metadata device; allocates its buffers (may sleep).
    pub(crate) fn new(dev: DmDev) -> Result<Self> {
        let bufs = KPages::new(META_BUFS, GFP_KERNEL)?;
        Ok(MetaIo { dev, bufs })
    }

    /// The metadata device.
    pub(crate) fn dev(&self) -> &DmDev {
        &self.dev
    }

    /// Size of the metadata device in sectors.
    pub(crate) fn sectors(&self) -> u64 {
        self.dev.sectors()
    }

    /// Buffer `i` (`None` past [`META_BUFS`]).
    pub(crate) fn buf(&self, i: usize) -> Option<&[u8; BLOCK_SIZE]> {
        self.bufs.page(i)
    }

    /// Buffer `i` for filling before [`MetaIo::write`].
    pub(crate) fn buf_mut(&mut self, i: usize) -> Option<&mut [u8; BLOCK_SIZE]> {
        self.bufs.page_mut(i)
    }

    fn rw(&mut self, block: u64, buf: usize, write: bool) -> Result {
        let page = self.bufs.page_ptr(buf).ok_or(EINVAL)?;
        let sector = block.checked_mul(BLOCK_SECTORS).ok_or(EINVAL)?;
        // SAFETY: the block device is held open by `dev`; `page` is a live
        // page owned by `self.bufs`, and `&mut self` keeps every other user
        // off it during the I/O; we are in process context (table load),
        // where `submit_bio_wait` may sleep.
        to_result(unsafe { raw::dmsm_page_rw_sync(self.dev.bdev(), sector, page, write) })
    }

    /// Reads metadata block `block` into buffer `buf`.
    pub(crate) fn read(&mut self, block: u64, buf: usize) -> Result {
        self.rw(block, buf, false)
    }

    /// Writes buffer `buf` to metadata block `block`, durably: the write is
    /// preceded by a cache flush and is FUA, so once this returns the block
    /// and every earlier write are on stable media.
    pub(crate) fn write(&mut self, block: u64, buf: usize) -> Result {
        self.rw(block, buf, true)
    }
}

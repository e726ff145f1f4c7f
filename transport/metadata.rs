// SPDX-License-Identifier: GPL-2.0

//! The metadata device at table load, for either role: read both
//! superblock copies, let the core decide (`log::meta::superblock::load`),
//! then format a blank device or refuse one that is not this pair's valid
//! metadata. A refused device is never written.

use kernel::{c_str, error::code::ENOMEM, prelude::*};

use crate::log::meta::bitmap::{self, BlockState, Bitmap};
use crate::log::meta::generation::Generations;
use crate::log::meta::superblock::{self, Expect, MetaError, MetaRole, Superblock};
use crate::log::meta::BLOCK_SIZE;
use crate::transport::sys::{self, metaio::MetaIo, pages::{KPages, KernelCrc}, CtrError, DmDev};
use crate::transport::table::{Role, TableConfig};

/// An opened, loaded (or just formatted) metadata device.
pub(crate) struct Metadata {
    io: MetaIo,
    sb: Superblock,
}

/// Buffers of the [`MetaIo`]: the two superblock copies, then the block
/// being written.
const COPY_A: usize = 0;
const COPY_B: usize = 1;
const OUT: usize = 2;

fn meta_error(e: MetaError) -> CtrError {
    CtrError::inval_nul(e.message_nul(), c_str!("Invalid metadata device"))
}

impl Metadata {
    /// Loads the metadata device `dev` for a table line `cfg` whose data
    /// device holds `data_sectors`. A blank device is formatted (a source
    /// starts at a random generation).
    pub(crate) fn open(dev: DmDev, cfg: &TableConfig, data_sectors: u64) -> Result<Metadata, CtrError> {
        let nomem = || CtrError { msg: c_str!("Cannot allocate metadata buffers"), err: ENOMEM };
        let mut io = MetaIo::new(dev).map_err(|_| nomem())?;
        let ioerr = |err| CtrError { msg: c_str!("Cannot read or write the metadata device"), err };
        io.read(0, COPY_A).map_err(ioerr)?;
        io.read(1, COPY_B).map_err(ioerr)?;
        let want = Expect {
            role: match cfg.role {
                Role::Source => MetaRole::Source,
                Role::Target => MetaRole::Target,
            },
            data_sectors,
            chunk_sectors: cfg.chunk_sectors,
            meta_sectors: io.sectors(),
        };
        let loaded = match (io.buf(COPY_A), io.buf(COPY_B)) {
            (Some(a), Some(b)) => superblock::load(a, b, &KernelCrc, &want, sys::frames::random_u64()),
            _ => return Err(nomem()),
        };
        let (mut sb, formatted) = loaded.map_err(|e| {
            pr_warn!(
                "specmirror: metadata device {} refused: {} (table: {} role, {} data sectors, chunk_size {}, {} metadata sectors)\n",
                io.dev().name().to_str().unwrap_or("?"),
                e.message(),
                cfg.role_str(),
                data_sectors,
                cfg.chunk_sectors,
                want.meta_sectors,
            );
            meta_error(e)
        })?;
        if formatted {
            for copy in superblock::format_copies(&sb) {
                let out = io.buf_mut(OUT).ok_or_else(nomem)?;
                copy.encode(out, &KernelCrc);
                io.write(copy.slot(), OUT).map_err(ioerr)?;
                sb = copy;
            }
            pr_info!("specmirror: formatted metadata device {} ({} role)\n", io.dev().name().to_str().unwrap_or("?"), cfg.role_str());
        }
        Ok(Metadata { io, sb })
    }

    /// The metadata device.
    pub(crate) fn dev(&self) -> &DmDev {
        self.io.dev()
    }

    /// The current superblock.
    pub(crate) fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Reads the dirty bitmap into `bits` (which covers this superblock's
    /// chunks). Returns the range of bitmap blocks that did not decode:
    /// their chunks are all dirty now, and they must be rewritten.
    pub(crate) fn load_bitmap(&mut self, bits: &mut Bitmap<KPages>) -> Result<Option<(u64, u64)>> {
        let layout = self.sb.layout().ok_or(EINVAL)?;
        let mut damaged: Option<(u64, u64)> = None;
        for i in 0..layout.bitmap_blocks {
            self.io.read(layout.bitmap_start() + i, OUT)?;
            let b = self.io.buf(OUT).ok_or(ENOMEM)?;
            if bits.load_block(i, b, &KernelCrc) == BlockState::Damaged {
                damaged = Some(damaged.map_or((i, i), |(lo, _)| (lo, i)));
            }
        }
        Ok(damaged)
    }

    /// Writes a new superblock with generations `gens` and the
    /// consistency flag `consistent` durably over the older of the two
    /// copies; memory takes it once the write completed.
    pub(crate) fn save_superblock(&mut self, gens: Generations, consistent: bool) -> Result {
        let mut sb = self.sb.next();
        sb.gens = gens;
        sb.flags = if consistent {
            sb.flags | superblock::FLAG_CONSISTENT
        } else {
            sb.flags & !superblock::FLAG_CONSISTENT
        };
        let out = self.io.buf_mut(OUT).ok_or(ENOMEM)?;
        sb.encode(out, &KernelCrc);
        self.io.write(sb.slot(), OUT)?;
        self.sb = sb;
        Ok(())
    }

    /// Writes bitmap block `block` durably: `fill` puts its bits in place
    /// (it returns false if it could not), then the block is sealed and
    /// written over its place on the device.
    pub(crate) fn save_bitmap_block(&mut self, block: u64, fill: impl FnOnce(&mut [u8; BLOCK_SIZE]) -> bool) -> Result {
        let layout = self.sb.layout().ok_or(EINVAL)?;
        if block >= layout.bitmap_blocks {
            return Err(EINVAL);
        }
        let out = self.io.buf_mut(OUT).ok_or(ENOMEM)?;
        out.fill(0);
        if !fill(out) {
            return Err(EINVAL);
        }
        bitmap::seal_block(block, out, &KernelCrc);
        self.io.write(layout.bitmap_start() + block, OUT)
    }
}

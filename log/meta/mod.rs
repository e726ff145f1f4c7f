//! Persistent metadata (version 0.3): what one side of a pair knows about
//! its data device across reloads, crashes and power loss.
//!
//! The metadata device is a sequence of 4 KiB blocks (byte layout in
//! `Documentation/metadata-format.rst`; keep the two in sync):
//!
//! ```text
//!   block 0, 1       superblock, two alternating copies   (superblock)
//!   block 2 ..       dirty bitmap, one bit per chunk       (bitmap)
//!   after it         activity log, AL_BLOCKS blocks        (issue 19)
//! ```
//!
//! Every block carries its own CRC32C, so a torn write is seen as a bad
//! block, never as valid state: a bad superblock copy leaves the other
//! (previous) copy in charge, a bad bitmap block counts all of its chunks
//! as dirty. Like the rest of the core this allocates nothing and never
//! panics on the bytes it reads; the glue does the I/O.
//!
//! - [`superblock`]: the superblock codec and the choice between copies.
//! - [`bitmap`]: dirty-bitmap blocks and bit operations.
//! - [`generation`]: data generations and the handshake's sync rule.

pub mod bitmap;
pub mod generation;
pub mod superblock;

/// Size of every metadata block, in bytes.
pub const BLOCK_SIZE: usize = 4096;
/// Sectors per metadata block.
pub const BLOCK_SECTORS: u64 = (BLOCK_SIZE / 512) as u64;
/// Superblock copies at the start of the device.
pub const SUPERBLOCK_COPIES: u64 = 2;
/// Blocks reserved for the activity log (256 KiB; used from issue 19 on,
/// zero until then). Reserved now so that the size a device needs does not
/// change under existing users.
pub const AL_BLOCKS: u64 = 64;
/// Smallest chunk: 8 sectors (4 KiB).
pub const MIN_CHUNK_SECTORS: u32 = 8;
/// Default chunk: 128 sectors (64 KiB).
pub const DEFAULT_CHUNK_SECTORS: u32 = 128;

/// CRC32C of block `b` with its 4-byte CRC field at `off` taken as zero:
/// what the writer computed before storing the field.
pub fn block_crc(b: &[u8; BLOCK_SIZE], off: usize, crc: &dyn crate::log::record::Crc32c) -> u32 {
    let head = b.get(..off).unwrap_or(&[]);
    let tail = b.get(off.saturating_add(4)..).unwrap_or(&[]);
    crc.crc32c(crc.crc32c(crc.crc32c(0, head), &[0u8; 4]), tail)
}

/// Where everything lives on a metadata device for one data device size
/// and chunk size. Pure arithmetic, so the table parser, the glue and the
/// docs' size formula agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Data device size in sectors.
    pub data_sectors: u64,
    /// Sectors per chunk (power of two, at least [`MIN_CHUNK_SECTORS`]).
    pub chunk_sectors: u32,
    /// Chunks covering the data device (the last one may be partial).
    pub chunks: u64,
    /// Bitmap blocks ([`bitmap::CHUNKS_PER_BLOCK`] chunks each).
    pub bitmap_blocks: u64,
}

impl Layout {
    /// The layout for `data_sectors` of data in chunks of `chunk_sectors`,
    /// or `None` if the chunk size is not a power of two of at least
    /// [`MIN_CHUNK_SECTORS`] or the data device is empty.
    pub fn new(data_sectors: u64, chunk_sectors: u32) -> Option<Layout> {
        if chunk_sectors < MIN_CHUNK_SECTORS
            || !chunk_sectors.is_power_of_two()
            || data_sectors == 0
        {
            return None;
        }
        let chunks = data_sectors.div_ceil(u64::from(chunk_sectors));
        let bitmap_blocks = chunks.div_ceil(bitmap::CHUNKS_PER_BLOCK);
        Some(Layout {
            data_sectors,
            chunk_sectors,
            chunks,
            bitmap_blocks,
        })
    }

    /// First block of the bitmap.
    pub fn bitmap_start(&self) -> u64 {
        SUPERBLOCK_COPIES
    }

    /// First block of the activity log.
    pub fn al_start(&self) -> u64 {
        self.bitmap_start() + self.bitmap_blocks
    }

    /// Blocks the metadata device needs.
    pub fn blocks(&self) -> u64 {
        self.al_start() + AL_BLOCKS
    }

    /// Sectors the metadata device needs (the size the docs tell users).
    pub fn sectors(&self) -> u64 {
        self.blocks() * BLOCK_SECTORS
    }

    /// The chunk holding data sector `sector`.
    pub fn chunk_of(&self, sector: u64) -> u64 {
        sector >> self.chunk_sectors.trailing_zeros()
    }

    /// The chunks `[first, last]` that `count` sectors at `sector` touch,
    /// `None` for an empty or out-of-range extent.
    pub fn chunks_of(&self, sector: u64, count: u64) -> Option<(u64, u64)> {
        let end = sector.checked_add(count)?;
        if count == 0 || end > self.data_sectors {
            return None;
        }
        Some((self.chunk_of(sector), self.chunk_of(end - 1)))
    }

    /// Data sectors `(first, count)` of chunk `chunk` (the last chunk may
    /// be short), `None` past the end.
    pub fn chunk_extent(&self, chunk: u64) -> Option<(u64, u64)> {
        if chunk >= self.chunks {
            return None;
        }
        let first = chunk << self.chunk_sectors.trailing_zeros();
        Some((
            first,
            (self.data_sectors - first).min(u64::from(self.chunk_sectors)),
        ))
    }
}

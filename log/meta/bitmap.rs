//! The dirty bitmap: one bit per chunk of the data device, set while the
//! target may lack that chunk's current bytes.
//!
//! On the metadata device it is a run of blocks, each with a small header
//! and [`CHUNKS_PER_BLOCK`] bits:
//!
//! ```text
//!   0 magic "SMBM"   4 crc32c   8 block index (u64)   16.. bits, LSB first
//! ```
//!
//! A block that is entirely zero was never written: all its chunks are
//! clean (a freshly formatted device tracks nothing). Any other block that
//! does not decode (torn write, misplaced block, damage) counts all its
//! chunks as dirty, so a failure can only cause extra resync, never a
//! missed one (invariant I8). In memory each block is one page, laid out
//! as on disk.

use super::{block_crc, BLOCK_SIZE};
use crate::log::pages::{Pages, PAGE_SIZE};
use crate::log::record::{rd_u32, rd_u64, wr, Crc32c};

// A bitmap block is one page in memory.
const _: () = assert!(PAGE_SIZE == BLOCK_SIZE);

/// `"SMBM"` read as a little-endian u32.
pub const MAGIC: u32 = 0x4D42_4D53;
/// Header bytes before the bits.
pub const HEADER_LEN: usize = 16;
/// Bit bytes per block.
pub const BITS_BYTES: usize = BLOCK_SIZE - HEADER_LEN;
/// Chunks one block covers.
pub const CHUNKS_PER_BLOCK: u64 = (BITS_BYTES * 8) as u64;

const OFF_MAGIC: usize = 0;
const OFF_CRC: usize = 4;
const OFF_INDEX: usize = 8;

/// What a bitmap block held when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// Never written: all clean.
    Zero,
    /// Valid: its bits were copied.
    Valid,
    /// Did not decode: all its chunks were marked dirty. The caller should
    /// rewrite the block.
    Damaged,
}

/// Encodes block `index` from its bit area `bits` ([`BITS_BYTES`] bytes;
/// a shorter slice is padded with zero).
pub fn encode_block(index: u64, bits: &[u8], out: &mut [u8; BLOCK_SIZE], crc: &dyn Crc32c) {
    out.fill(0);
    let n = bits.len().min(BITS_BYTES);
    out[HEADER_LEN..HEADER_LEN + n].copy_from_slice(&bits[..n]);
    seal_block(index, out, crc);
}

/// Fills in the header of block `index` whose bits are in place.
pub fn seal_block(index: u64, out: &mut [u8; BLOCK_SIZE], crc: &dyn Crc32c) {
    wr(out, OFF_MAGIC, &MAGIC.to_le_bytes());
    wr(out, OFF_CRC, &0u32.to_le_bytes());
    wr(out, OFF_INDEX, &index.to_le_bytes());
    let c = block_crc(out, OFF_CRC, crc);
    wr(out, OFF_CRC, &c.to_le_bytes());
}

/// Decodes block `index` into `bits` ([`BITS_BYTES`] bytes or fewer).
pub fn decode_block(
    index: u64,
    b: &[u8; BLOCK_SIZE],
    bits: &mut [u8],
    crc: &dyn Crc32c,
) -> BlockState {
    let n = bits.len().min(BITS_BYTES);
    if b.iter().all(|&x| x == 0) {
        bits[..n].fill(0);
        return BlockState::Zero;
    }
    let good = rd_u32(b, OFF_MAGIC) == MAGIC
        && block_crc(b, OFF_CRC, crc) == rd_u32(b, OFF_CRC)
        && rd_u64(b, OFF_INDEX) == index;
    if !good {
        bits[..n].fill(0xff);
        return BlockState::Damaged;
    }
    bits[..n].copy_from_slice(&b[HEADER_LEN..HEADER_LEN + n]);
    BlockState::Valid
}

/// The in-memory bitmap of `chunks` chunks over caller pages: page `i`
/// holds bitmap block `i` laid out as on the metadata device (header,
/// then the bits), so a block is stored by filling in its header and
/// writing the page. Kernel pages come from the same allocator as the
/// rings', and no contiguous allocation grows with the device.
///
/// # Invariants
///
/// - `pages` has at least `blocks_for(chunks)` pages;
/// - bits past `chunks` are never set;
/// - `dirty` is the number of bits set.
pub struct Bitmap<P: Pages> {
    pages: P,
    chunks: u64,
    dirty: u64,
}

/// Bitmap blocks (hence pages) that `chunks` chunks need.
pub fn blocks_for(chunks: u64) -> u64 {
    chunks.div_ceil(CHUNKS_PER_BLOCK)
}

/// The bitmap block that holds `chunk`'s bit.
pub fn block_of(chunk: u64) -> u64 {
    chunk / CHUNKS_PER_BLOCK
}

/// Page, byte within the page and bit of `chunk`.
fn locate(chunk: u64) -> (usize, usize, u8) {
    let i = chunk % CHUNKS_PER_BLOCK;
    (
        block_of(chunk) as usize,
        HEADER_LEN + (i / 8) as usize,
        (i % 8) as u8,
    )
}

impl<P: Pages> Bitmap<P> {
    /// `pages` as the all-clean bitmap of `chunks` chunks, `None` if there
    /// are too few pages.
    pub fn new(mut pages: P, chunks: u64) -> Option<Bitmap<P>> {
        let blocks = usize::try_from(blocks_for(chunks)).ok()?;
        if pages.page_count() < blocks {
            return None;
        }
        for i in 0..blocks {
            pages.page_mut(i)?.fill(0);
        }
        Some(Bitmap {
            pages,
            chunks,
            dirty: 0,
        })
    }

    /// Counts the bits of block `index` (past the last chunk cleared first).
    fn block_count(&mut self, index: u64) -> u64 {
        let first = index.saturating_mul(CHUNKS_PER_BLOCK);
        let n = self.chunks.saturating_sub(first).min(CHUNKS_PER_BLOCK);
        let Some(pg) = self.pages.page_mut(index as usize) else {
            return 0;
        };
        let bits = &mut pg[HEADER_LEN..];
        let full = (n / 8) as usize;
        if let Some(b) = bits.get_mut(full) {
            *b &= ((1u16 << (n % 8)) - 1) as u8;
        }
        if let Some(rest) = bits.get_mut(full + 1..) {
            rest.fill(0);
        }
        bits.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// Reads metadata block `index` of the bitmap into memory.
    pub fn load_block(&mut self, index: u64, b: &[u8; BLOCK_SIZE], crc: &dyn Crc32c) -> BlockState {
        if index >= blocks_for(self.chunks) {
            return BlockState::Damaged;
        }
        let before = self.block_count(index);
        let Some(pg) = self.pages.page_mut(index as usize) else {
            return BlockState::Damaged;
        };
        let st = decode_block(index, b, &mut pg[HEADER_LEN..], crc);
        let after = self.block_count(index);
        self.dirty = self.dirty - before + after;
        st
    }

    /// Encodes bitmap block `index` for writing to the metadata device
    /// (its page, header filled in); `None` past the end.
    pub fn store_block(&mut self, index: u64, crc: &dyn Crc32c) -> Option<&[u8; BLOCK_SIZE]> {
        if index >= blocks_for(self.chunks) {
            return None;
        }
        let pg = self.pages.page_mut(index as usize)?;
        seal_block(index, pg, crc);
        self.pages.page(index as usize)
    }

    /// Copies bytes `off..off + out.len()` of block `index`'s bit area
    /// into `out` (the glue copies a block in pieces, so that no copy of
    /// a whole page runs under its spinlock); false past the end.
    pub fn copy_bits(&self, index: u64, off: usize, out: &mut [u8]) -> bool {
        if index >= blocks_for(self.chunks) {
            return false;
        }
        let src = self
            .pages
            .page(index as usize)
            .and_then(|p| {
                let a = HEADER_LEN.saturating_add(off);
                p.get(a..a.saturating_add(out.len()))
            });
        match src {
            Some(b) => {
                out.copy_from_slice(b);
                true
            }
            None => false,
        }
    }

    /// Chunks covered.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    fn put(&mut self, chunk: u64, v: bool) -> bool {
        if chunk >= self.chunks {
            return false;
        }
        let (page, byte, bit) = locate(chunk);
        let Some(b) = self.pages.page_mut(page).and_then(|p| p.get_mut(byte)) else {
            return false;
        };
        let was = *b & (1 << bit) != 0;
        if v {
            *b |= 1 << bit;
        } else {
            *b &= !(1 << bit);
        }
        if was != v {
            if v {
                self.dirty += 1;
            } else {
                self.dirty -= 1;
            }
        }
        was != v
    }

    /// Whether `chunk` is dirty (false past the end).
    pub fn test(&self, chunk: u64) -> bool {
        if chunk >= self.chunks {
            return false;
        }
        let (page, byte, bit) = locate(chunk);
        self.pages
            .page(page)
            .and_then(|p| p.get(byte))
            .is_some_and(|b| b & (1 << bit) != 0)
    }

    /// Marks chunks `[first, last]` dirty (clamped to the device). Returns
    /// the blocks `(first, last)` whose bits changed, which must reach the
    /// metadata device before the writes they track reach the data device,
    /// or `None` if every bit was set already.
    pub fn set_range(&mut self, first: u64, last: u64) -> Option<(u64, u64)> {
        let last = last.min(self.chunks.checked_sub(1)?);
        let mut changed: Option<(u64, u64)> = None;
        let mut c = first;
        while c <= last {
            if self.put(c, true) {
                let b = block_of(c);
                changed = Some(changed.map_or((b, b), |(f, _)| (f, b)));
            }
            c += 1;
        }
        changed
    }

    /// Marks every chunk dirty (a full sync).
    pub fn set_all(&mut self) {
        if self.chunks > 0 {
            self.set_range(0, self.chunks - 1);
        }
    }

    /// Marks `chunk` clean; returns its block if the bit changed.
    pub fn clear(&mut self, chunk: u64) -> Option<u64> {
        self.put(chunk, false).then(|| block_of(chunk))
    }

    /// Dirty chunks.
    pub fn count(&self) -> u64 {
        self.dirty
    }

    /// The first dirty chunk at or after `from`.
    pub fn next_dirty(&self, from: u64) -> Option<u64> {
        if self.dirty == 0 {
            return None;
        }
        let mut c = from;
        while c < self.chunks {
            let (page, byte, bit) = locate(c);
            let b = self
                .pages
                .page(page)
                .and_then(|p| p.get(byte))
                .copied()
                .unwrap_or(0);
            if bit == 0 && b == 0 {
                c += 8;
                continue;
            }
            if b & (1 << bit) != 0 {
                return Some(c);
            }
            c += 1;
        }
        None
    }
}

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
//! missed one (invariant I8). In memory the bitmap is the blocks' bit
//! areas back to back, [`BITS_BYTES`] per block, in a caller's buffer.

use super::{block_crc, BLOCK_SIZE};
use crate::log::record::{rd_u32, rd_u64, wr, Crc32c};

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
    wr(out, OFF_MAGIC, &MAGIC.to_le_bytes());
    wr(out, OFF_INDEX, &index.to_le_bytes());
    let n = bits.len().min(BITS_BYTES);
    out[HEADER_LEN..HEADER_LEN + n].copy_from_slice(&bits[..n]);
    let c = crc.crc32c(0, &out[..]);
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

/// The in-memory bitmap of `chunks` chunks over a caller's buffer of at
/// least `bytes_for(chunks)` bytes.
///
/// # Invariants
///
/// `bits.len() >= bytes_for(chunks)`; bits past `chunks` are never set.
pub struct Bitmap<'a> {
    bits: &'a mut [u8],
    chunks: u64,
}

/// Bytes of in-memory bitmap `chunks` chunks need (whole blocks' bit
/// areas, so block `i` is bytes `i * BITS_BYTES ..`).
pub fn bytes_for(chunks: u64) -> usize {
    (chunks.div_ceil(CHUNKS_PER_BLOCK) as usize).saturating_mul(BITS_BYTES)
}

/// The bitmap block that holds `chunk`'s bit.
pub fn block_of(chunk: u64) -> u64 {
    chunk / CHUNKS_PER_BLOCK
}

impl<'a> Bitmap<'a> {
    /// A view of `bits` as the bitmap of `chunks` chunks, `None` if the
    /// buffer is too small.
    pub fn new(bits: &'a mut [u8], chunks: u64) -> Option<Bitmap<'a>> {
        if bits.len() < bytes_for(chunks) {
            return None;
        }
        let mut m = Bitmap { bits, chunks };
        m.clear_tail();
        Some(m)
    }

    /// Clears the bits past the last chunk, which a damaged last block
    /// sets, so they never count.
    fn clear_tail(&mut self) {
        let end = bytes_for(self.chunks) as u64 * 8;
        let mut c = self.chunks;
        while c < end && c & 7 != 0 {
            self.put(c, false);
            c += 1;
        }
        if let Some(rest) = self.bits.get_mut((c / 8) as usize..) {
            rest.fill(0);
        }
    }

    /// Reads metadata block `index` of the bitmap into memory.
    pub fn load_block(&mut self, index: u64, b: &[u8; BLOCK_SIZE], crc: &dyn Crc32c) -> BlockState {
        let Some(area) = self.block_bits(index) else {
            return BlockState::Damaged;
        };
        let st = decode_block(index, b, area, crc);
        self.clear_tail();
        st
    }

    /// Encodes bitmap block `index` for writing to the metadata device;
    /// `false` past the end.
    pub fn store_block(
        &mut self,
        index: u64,
        out: &mut [u8; BLOCK_SIZE],
        crc: &dyn Crc32c,
    ) -> bool {
        let Some(area) = self.block_bits(index) else {
            return false;
        };
        encode_block(index, area, out, crc);
        true
    }

    /// Chunks covered.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    fn put(&mut self, chunk: u64, v: bool) -> bool {
        let (byte, bit) = ((chunk / 8) as usize, (chunk % 8) as u8);
        let Some(b) = self.bits.get_mut(byte) else {
            return false;
        };
        let was = *b & (1 << bit) != 0;
        if v {
            *b |= 1 << bit;
        } else {
            *b &= !(1 << bit);
        }
        was != v
    }

    /// Whether `chunk` is dirty (false past the end).
    pub fn test(&self, chunk: u64) -> bool {
        chunk < self.chunks
            && self
                .bits
                .get((chunk / 8) as usize)
                .is_some_and(|b| b & (1 << (chunk % 8)) != 0)
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
        (chunk < self.chunks && self.put(chunk, false)).then(|| block_of(chunk))
    }

    /// Dirty chunks.
    pub fn count(&self) -> u64 {
        let n = bytes_for(self.chunks);
        self.bits[..n]
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum()
    }

    /// The first dirty chunk at or after `from`.
    pub fn next_dirty(&self, from: u64) -> Option<u64> {
        let mut c = from;
        while c < self.chunks {
            let byte = self.bits.get((c / 8) as usize).copied().unwrap_or(0);
            if byte == 0 && c & 7 == 0 {
                c += 8;
                continue;
            }
            if self.test(c) {
                return Some(c);
            }
            c += 1;
        }
        None
    }

    /// Block `index`'s bit area.
    fn block_bits(&mut self, index: u64) -> Option<&mut [u8]> {
        let start = (index as usize).checked_mul(BITS_BYTES)?;
        self.bits.get_mut(start..start.checked_add(BITS_BYTES)?)
    }
}

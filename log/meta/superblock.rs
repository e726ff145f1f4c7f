//! The superblock: one 4 KiB block, kept as two alternating copies.
//!
//! Update `n` goes to block `n % 2`, so it always overwrites the older
//! copy and the newer one stays intact until the write has completed. A
//! torn or lost write leaves a copy whose CRC32C fails (or an older
//! sequence number), and [`choose`] falls back to the other: the previous
//! state. Byte layout (little-endian), as `Documentation/metadata-format.rst`
//! documents it:
//!
//! ```text
//!   0  magic "SMMD"     4 format version   8 crc32c     12 flags
//!  16  seq (update count)                 24 role       28 chunk_sectors
//!  32  data_sectors     40 current gen    48 bitmap gen
//!  56  history[8]      120 bitmap_blocks 128..4096 zero
//! ```
//!
//! The CRC covers the whole block with its own field taken as zero.

use super::generation::{Generations, HISTORY};
use super::{block_crc, Layout, BLOCK_SIZE};
use crate::log::record::{rd_u32, rd_u64, wr, Crc32c};

/// `"SMMD"` read as a little-endian u32.
pub const MAGIC: u32 = 0x444D_4D53;
/// The metadata format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Superblock flag: the target's image is consistent (invariant I9).
pub const FLAG_CONSISTENT: u32 = 1 << 0;
/// Every flag this format defines; others make the block invalid.
pub const FLAGS_KNOWN: u32 = FLAG_CONSISTENT;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_CRC: usize = 8;
const OFF_FLAGS: usize = 12;
const OFF_SEQ: usize = 16;
const OFF_ROLE: usize = 24;
const OFF_CHUNK: usize = 28;
const OFF_DATA: usize = 32;
const OFF_CURRENT: usize = 40;
const OFF_BITMAP: usize = 48;
const OFF_HISTORY: usize = 56;
const OFF_BITMAP_BLOCKS: usize = OFF_HISTORY + 8 * HISTORY;
/// First reserved byte; everything from here on is zero.
pub const USED_LEN: usize = OFF_BITMAP_BLOCKS + 8;

/// Which side of a pair a metadata device belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaRole {
    /// The side that takes host writes and sends them.
    Source = 1,
    /// The side that applies them.
    Target = 2,
}

/// The decoded superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Update count; the copy with the higher valid one is current.
    pub seq: u64,
    /// Role it was formatted for.
    pub role: MetaRole,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Data device size it describes, in sectors.
    pub data_sectors: u64,
    /// Chunk size of its bitmap, in sectors.
    pub chunk_sectors: u32,
    /// Generation set.
    pub gens: Generations,
}

impl Superblock {
    /// A freshly formatted superblock (seq 0). A source starts at
    /// generation `first_gen` (0 is taken as 1: a source always has one);
    /// a target holds none until its first sync.
    pub fn format(role: MetaRole, layout: &Layout, first_gen: u64) -> Superblock {
        let mut gens = Generations::default();
        if role == MetaRole::Source {
            gens.current = first_gen.max(1);
        }
        Superblock {
            seq: 0,
            role,
            flags: 0,
            data_sectors: layout.data_sectors,
            chunk_sectors: layout.chunk_sectors,
            gens,
        }
    }

    /// The layout this superblock describes, `None` if its sizes are not
    /// a valid layout.
    pub fn layout(&self) -> Option<Layout> {
        Layout::new(self.data_sectors, self.chunk_sectors)
    }

    /// Whether the target's image is consistent.
    pub fn consistent(&self) -> bool {
        self.flags & FLAG_CONSISTENT != 0
    }

    /// The metadata block (0 or 1) this superblock is written to.
    pub fn slot(&self) -> u64 {
        self.seq % 2
    }

    /// This superblock as the next update: seq + 1, so it goes to the
    /// other slot and overwrites the older copy.
    pub fn next(&self) -> Superblock {
        Superblock {
            seq: self.seq.wrapping_add(1),
            ..*self
        }
    }

    /// Encodes into `out` (a whole block), CRC included.
    pub fn encode(&self, out: &mut [u8; BLOCK_SIZE], crc: &dyn Crc32c) {
        out.fill(0);
        let bitmap_blocks = self.layout().map_or(0, |l| l.bitmap_blocks);
        wr(out, OFF_MAGIC, &MAGIC.to_le_bytes());
        wr(out, OFF_VERSION, &FORMAT_VERSION.to_le_bytes());
        wr(out, OFF_FLAGS, &self.flags.to_le_bytes());
        wr(out, OFF_SEQ, &self.seq.to_le_bytes());
        wr(out, OFF_ROLE, &[self.role as u8]);
        wr(out, OFF_CHUNK, &self.chunk_sectors.to_le_bytes());
        wr(out, OFF_DATA, &self.data_sectors.to_le_bytes());
        wr(out, OFF_CURRENT, &self.gens.current.to_le_bytes());
        wr(out, OFF_BITMAP, &self.gens.bitmap.to_le_bytes());
        for (i, g) in self.gens.history.iter().enumerate() {
            wr(out, OFF_HISTORY + 8 * i, &g.to_le_bytes());
        }
        wr(out, OFF_BITMAP_BLOCKS, &bitmap_blocks.to_le_bytes());
        let c = crc.crc32c(0, &out[..]);
        wr(out, OFF_CRC, &c.to_le_bytes());
    }
}

/// The writes that format a blank device, in order: the new superblock to
/// block 0, then the same as update 1 to block 1, so that a freshly
/// formatted device already has two good copies (one damaged block is
/// survived from the start) and a crash between the two leaves block 0.
/// The second is the current superblock afterwards.
pub fn format_copies(sb: &Superblock) -> [Superblock; 2] {
    let first = Superblock { seq: 0, ..*sb };
    [first, first.next()]
}

/// What one superblock block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copy {
    /// Every byte zero: never written.
    Zero,
    /// A valid superblock.
    Valid(Superblock),
    /// The magic but a failing CRC: a torn or damaged write.
    Torn,
    /// The magic and a good CRC, but a format version this code does not
    /// know.
    Version(u32),
    /// The magic, a good CRC and a known version, but fields no writer of
    /// this format produces (unknown role or flags, sizes that are no
    /// layout, non-zero reserved bytes).
    Malformed,
    /// No magic: something else.
    Foreign,
}

/// Reads one superblock block.
pub fn decode(b: &[u8; BLOCK_SIZE], crc: &dyn Crc32c) -> Copy {
    if b.iter().all(|&x| x == 0) {
        return Copy::Zero;
    }
    if rd_u32(b, OFF_MAGIC) != MAGIC {
        return Copy::Foreign;
    }
    let stored = rd_u32(b, OFF_CRC);
    if block_crc(b, OFF_CRC, crc) != stored {
        return Copy::Torn;
    }
    let version = rd_u32(b, OFF_VERSION);
    if version != FORMAT_VERSION {
        return Copy::Version(version);
    }
    let role = match b[OFF_ROLE] {
        1 => MetaRole::Source,
        2 => MetaRole::Target,
        _ => return Copy::Malformed,
    };
    let mut history = [0u64; HISTORY];
    for (i, g) in history.iter_mut().enumerate() {
        *g = rd_u64(b, OFF_HISTORY + 8 * i);
    }
    let sb = Superblock {
        seq: rd_u64(b, OFF_SEQ),
        role,
        flags: rd_u32(b, OFF_FLAGS),
        data_sectors: rd_u64(b, OFF_DATA),
        chunk_sectors: rd_u32(b, OFF_CHUNK),
        gens: Generations {
            current: rd_u64(b, OFF_CURRENT),
            bitmap: rd_u64(b, OFF_BITMAP),
            history,
        },
    };
    let reserved_zero = b[OFF_ROLE + 1..OFF_CHUNK]
        .iter()
        .chain(&b[USED_LEN..])
        .all(|&x| x == 0);
    let layout_ok = sb
        .layout()
        .is_some_and(|l| l.bitmap_blocks == rd_u64(b, OFF_BITMAP_BLOCKS));
    let gens_ok = role == MetaRole::Target || sb.gens.current != 0;
    if sb.flags & !FLAGS_KNOWN != 0 || !reserved_zero || !layout_ok || !gens_ok {
        return Copy::Malformed;
    }
    Copy::Valid(sb)
}

/// What loading a metadata device found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// Both superblock blocks are zero: format it.
    Blank,
    /// The current superblock (the newer valid copy).
    Current(Superblock),
}

/// Why a metadata device was refused. It is never written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaError {
    /// Neither block has the magic and they are not zero: another
    /// program's data, or the wrong device.
    Foreign,
    /// Both copies fail their checksum (or are malformed).
    Corrupt,
    /// A newer (or unknown) format version.
    Version,
    /// Formatted for the other role.
    WrongRole,
    /// Formatted for a data device of another size.
    WrongDataSize,
    /// Formatted with another chunk size.
    WrongChunkSize,
    /// The metadata device is smaller than the layout needs.
    TooSmall,
}

impl MetaError {
    /// The message for `ti->error`, NUL-terminated for the kernel.
    pub fn message_nul(self) -> &'static str {
        match self {
            MetaError::Foreign => {
                "Metadata device holds no specmirror superblock and is not zeroed: refusing to overwrite it\0"
            }
            MetaError::Corrupt => "Metadata device: both superblock copies are damaged\0",
            MetaError::Version => "Metadata device: unsupported metadata format version\0",
            MetaError::WrongRole => "Metadata device belongs to the other role (source/target)\0",
            MetaError::WrongDataSize => {
                "Metadata device describes a data device of another size\0"
            }
            MetaError::WrongChunkSize => "Metadata device was formatted with another chunk_size\0",
            MetaError::TooSmall => "Metadata device too small for this data device and chunk_size\0",
        }
    }

    /// The message without the terminating NUL.
    pub fn message(self) -> &'static str {
        let m = self.message_nul();
        m.strip_suffix('\0').unwrap_or(m)
    }
}

/// The current state from the two superblock blocks: the valid copy with
/// the higher seq, the other if one is torn, `Blank` if both are zero.
pub fn choose(a: Copy, b: Copy) -> Result<Loaded, MetaError> {
    match (a, b) {
        (Copy::Valid(x), Copy::Valid(y)) => Ok(Loaded::Current(if y.seq > x.seq { y } else { x })),
        (Copy::Valid(x), _) | (_, Copy::Valid(x)) => Ok(Loaded::Current(x)),
        (Copy::Zero, Copy::Zero) => Ok(Loaded::Blank),
        (Copy::Version(_), _) | (_, Copy::Version(_)) => Err(MetaError::Version),
        (Copy::Foreign | Copy::Zero, Copy::Foreign | Copy::Zero) => Err(MetaError::Foreign),
        _ => Err(MetaError::Corrupt),
    }
}

/// What the table line says a metadata device must describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The table line's role.
    pub role: MetaRole,
    /// The data device's size in sectors.
    pub data_sectors: u64,
    /// The chunk size in sectors.
    pub chunk_sectors: u32,
    /// The metadata device's size in sectors.
    pub meta_sectors: u64,
}

/// Checks a loaded superblock against the table line.
pub fn check(sb: &Superblock, want: &Expect) -> Result<Layout, MetaError> {
    if sb.role != want.role {
        return Err(MetaError::WrongRole);
    }
    if sb.data_sectors != want.data_sectors {
        return Err(MetaError::WrongDataSize);
    }
    if sb.chunk_sectors != want.chunk_sectors {
        return Err(MetaError::WrongChunkSize);
    }
    let layout = sb.layout().ok_or(MetaError::Corrupt)?;
    if layout.sectors() > want.meta_sectors {
        return Err(MetaError::TooSmall);
    }
    Ok(layout)
}

/// Loads the metadata of a device whose first two blocks are `a` and `b`
/// for the table line `want`. Returns the current superblock and whether
/// the device was blank, in which case the superblock is the one to format
/// it with (a source starts at `first_gen`, a random non-zero id). Anything
/// that is not this pair's valid metadata is an error, and the caller must
/// not write the device.
pub fn load(
    a: &[u8; BLOCK_SIZE],
    b: &[u8; BLOCK_SIZE],
    crc: &dyn Crc32c,
    want: &Expect,
    first_gen: u64,
) -> Result<(Superblock, bool), MetaError> {
    let (sb, blank) = match choose(decode(a, crc), decode(b, crc))? {
        Loaded::Current(sb) => (sb, false),
        Loaded::Blank => {
            let layout = Layout::new(want.data_sectors, want.chunk_sectors)
                .ok_or(MetaError::WrongChunkSize)?;
            (Superblock::format(want.role, &layout, first_gen), true)
        }
    };
    check(&sb, want)?;
    Ok((sb, blank))
}

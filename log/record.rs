//! Wire records: the fixed frame header, its codec and the HELLO payload.
//!
//! Every record on the wire (and in the rollback ring and commit log) is one
//! *frame*: a fixed [`HEADER_LEN`]-byte little-endian header followed by
//! `len` payload bytes. The layout is documented byte for byte in
//! `Documentation/wire-protocol.rst`; keep the two in sync.
//!
//! The decoders take untrusted bytes straight from a socket, so they only
//! ever read through `get()`, check every length before use and never
//! panic: every malformed input maps to a [`DecodeError`].

/// Frame magic, `"SMR1"` read as little-endian bytes; cheap resync check.
pub const MAGIC: u32 = 0x3152_4D53;
/// Wire format version this code speaks; any other value is rejected.
pub const VERSION: u8 = 4;
/// Size of the fixed frame header in bytes (a multiple of 8 so that
/// payloads stay 8-byte aligned inside the rings).
pub const HEADER_LEN: usize = 40;
/// Largest payload a frame may carry (one 1 MiB write); bounds every
/// buffer a peer can make us fill.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Bytes per sector: WRITE payloads are `count * SECTOR_SIZE` bytes.
pub const SECTOR_SIZE: usize = 512;
/// Largest sector count a WRITE may carry ([`MAX_PAYLOAD`] / 512).
pub const MAX_WRITE_SECTORS: u32 = (MAX_PAYLOAD / SECTOR_SIZE) as u32;

/// Record flag: the write was issued with REQ_FUA on the source.
pub const FLAG_FUA: u16 = 1 << 0;
/// Record flag: the write was issued with REQ_PREFLUSH on the source; the
/// target flushes everything before it first (it is an epoch barrier).
pub const FLAG_PREFLUSH: u16 = 1 << 1;
/// Every flag this version understands; a frame with any other bit set is
/// rejected so that a newer peer cannot be silently misunderstood.
pub const FLAGS_KNOWN: u16 = FLAG_FUA | FLAG_PREFLUSH;

/// SYNC `count`: a sync starts; the target's image becomes the
/// generation in `sector` plus some of the sync's writes (inconsistent).
pub const SYNC_START: u32 = 1;
/// SYNC `count`: the sync is complete; the target's image is the
/// generation in `sector` (consistent, once its device flushed).
pub const SYNC_DONE: u32 = 2;

/// NAK reason (in `count`): the record failed its checksum or did not
/// decode.
pub const NAK_CORRUPT: u32 = 1;
/// NAK reason (in `count`): the record's seq was not the next expected one
/// (a gap after a dropped or corrupted frame).
pub const NAK_GAP: u32 = 2;

// Byte offsets inside the header. Named so the codec, `header_crc_seal` and
// the rings (which patch single fields in place) agree on one layout.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_KIND: usize = 5;
const OFF_FLAGS: usize = 6;
const OFF_SEQ: usize = 8;
const OFF_SECTOR: usize = 16;
const OFF_COUNT: usize = 24;
const OFF_LEN: usize = 28;
/// Offset of the 4-byte CRC field inside the header.
pub const OFF_CRC: usize = 32;
/// Offset of the 4 reserved header bytes; zero on the wire. The rings use
/// them for private per-record state in their own copies.
pub const OFF_RESERVED: usize = 36;

/// Record kind, the header's `kind` byte. Values below 0x80 travel from
/// source to target, values from 0x80 up from target to source.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Source greeting; payload is a [`Hello`].
    Hello = 0x01,
    /// Speculative exclusive lock of region `sector` on the target.
    Lock = 0x02,
    /// Release of the stream lock on region `sector`.
    Unlock = 0x03,
    /// Write `count` sectors at `sector`; payload is the data.
    Write = 0x04,
    /// Flush the target device once every earlier record is applied.
    Flush = 0x05,
    /// Discard `count` sectors at `sector`.
    Discard = 0x06,
    /// Zero `count` sectors at `sector`.
    WriteZeroes = 0x07,
    /// Keepalive: the source is alive and idle. Never stored; `seq` is 0.
    Ping = 0x08,
    /// A sync's start or end (`count`: [`SYNC_START`] or [`SYNC_DONE`];
    /// `sector`: the generation). A barrier on the target, which records
    /// it on its metadata device before anything after it is applied.
    Sync = 0x09,
    /// Verify: the target reads `count` sectors at `sector` (in stream
    /// order with overlapping writes) and answers with a DIGEST of them.
    DigestReq = 0x0A,
    /// Target answer to HELLO; payload is a [`Hello`].
    HelloReply = 0x81,
    /// Cumulative acknowledgement: every record with seq <= `seq` applied.
    Ack = 0x82,
    /// Resend from `seq` on; `count` holds a reason (`NAK_*`).
    Nak = 0x83,
    /// The stream lock on region `sector` is now held for the source.
    LockGranted = 0x84,
    /// The lock on region `sector` was rejected; the target dropped every
    /// record from `seq` on, which the source must resend after the grant.
    LockRejected = 0x85,
    /// Target's authentication challenge, sent once on every accepted
    /// connection before the HELLO; payload is a [`CHALLENGE_LEN`]-byte
    /// nonce, which the HELLO's MAC covers (see `transport/proto/auth.rs`).
    Challenge = 0x86,
    /// Answer to the DIGEST_REQ with seq `seq`: payload the
    /// [`DIGEST_LEN`]-byte SHA-256 of the range; `count` 1 if the target
    /// could not read it (the payload is then zero).
    Digest = 0x87,
}

impl Kind {
    /// Maps a wire byte to a kind; `None` for every unassigned value.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0x01 => Kind::Hello,
            0x02 => Kind::Lock,
            0x03 => Kind::Unlock,
            0x04 => Kind::Write,
            0x05 => Kind::Flush,
            0x06 => Kind::Discard,
            0x07 => Kind::WriteZeroes,
            0x08 => Kind::Ping,
            0x09 => Kind::Sync,
            0x0A => Kind::DigestReq,
            0x81 => Kind::HelloReply,
            0x82 => Kind::Ack,
            0x83 => Kind::Nak,
            0x84 => Kind::LockGranted,
            0x85 => Kind::LockRejected,
            0x86 => Kind::Challenge,
            0x87 => Kind::Digest,
            _ => return None,
        })
    }

    /// True for kinds the source sends (and the rollback ring holds).
    pub fn is_from_source(self) -> bool {
        (self as u8) < 0x80
    }

    /// True for kinds that change the data device (WRITE, DISCARD,
    /// WRITE_ZEROES): the ones whose `sector`/`count` name a range.
    pub fn is_data(self) -> bool {
        matches!(self, Kind::Write | Kind::Discard | Kind::WriteZeroes)
    }

    /// True for kinds whose `sector`/`count` name a range of the data
    /// device that the target touches (the data kinds and DIGEST_REQ,
    /// which reads it): they are ordered with overlapping records.
    pub fn has_range(self) -> bool {
        self.is_data() || self == Kind::DigestReq
    }
}

/// Decoded frame header. Field meaning depends on `kind`; see [`Kind`] and
/// `Documentation/wire-protocol.rst`. Unused fields are carried verbatim
/// (covered by the CRC) and should be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Record kind.
    pub kind: Kind,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Sequence number (records) or acknowledged/resend seq (replies).
    pub seq: u64,
    /// First 512-byte sector (data records) or region index (lock records).
    pub sector: u64,
    /// Sector count (data records) or NAK reason.
    pub count: u32,
    /// Payload length in bytes.
    pub len: u32,
}

/// Why a byte string is not a valid frame (or header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header, or than header plus `len`.
    Short,
    /// The magic field is not [`MAGIC`].
    BadMagic,
    /// Unknown version, unknown flag bits or non-zero reserved bytes:
    /// something a newer peer would send.
    BadVersion,
    /// The kind byte is not a [`Kind`].
    BadKind,
    /// `len` exceeds [`MAX_PAYLOAD`].
    TooLong,
    /// `len`/`count`/`sector` inconsistent with the kind.
    BadLength,
    /// The CRC field does not match the frame contents.
    BadCrc,
    /// Bytes follow the frame in a buffer that should hold exactly one.
    Trailing,
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The header would not decode (the [`DecodeError`] says why); the
    /// encoder refuses to produce frames the decoder rejects.
    Invalid(DecodeError),
    /// `payload.len()` differs from the header's `len`.
    LengthMismatch,
    /// The output buffer is smaller than the frame.
    BufferTooSmall,
}

/// CRC-32C (Castagnoli) provider, injected so the kernel uses its own
/// `crc32c()` and userspace a crate.
///
/// Convention: the *standard* CRC-32C value (init `!0`, reflected, final
/// xor `!0`, check value `crc32c(0, b"123456789") == 0xE306_9283`), chained
/// so that `crc32c(crc32c(0, a), b) == crc32c(0, a ++ b)`. This is what the
/// `crc32c` crate's `crc32c_append` computes; the kernel's raw
/// `crc32c(seed, p, len)` does no pre/post inversion, so a kernel impl is
/// `!crc32c(!crc, data)`.
pub trait Crc32c {
    /// Extends `crc` (0 for an empty prefix) with `data`.
    fn crc32c(&self, crc: u32, data: &[u8]) -> u32;
}

pub(crate) fn rd_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off.saturating_add(2)) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

pub(crate) fn rd_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off.saturating_add(4)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

pub(crate) fn rd_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off.saturating_add(8)) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

pub(crate) fn wr(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(off..off.saturating_add(v.len())) {
        d.copy_from_slice(v);
    }
}

impl Header {
    /// A header of `kind` with every other field zero.
    pub fn new(kind: Kind) -> Header {
        Header {
            kind,
            flags: 0,
            seq: 0,
            sector: 0,
            count: 0,
            len: 0,
        }
    }

    /// Serializes the header with a zero CRC field (seal it afterwards with
    /// [`header_crc_seal`]). Does not validate; see [`Header::validate`].
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        let o: &mut [u8] = out;
        wr(o, OFF_MAGIC, &MAGIC.to_le_bytes());
        wr(o, OFF_VERSION, &[VERSION]);
        wr(o, OFF_KIND, &[self.kind as u8]);
        wr(o, OFF_FLAGS, &self.flags.to_le_bytes());
        wr(o, OFF_SEQ, &self.seq.to_le_bytes());
        wr(o, OFF_SECTOR, &self.sector.to_le_bytes());
        wr(o, OFF_COUNT, &self.count.to_le_bytes());
        wr(o, OFF_LEN, &self.len.to_le_bytes());
        wr(o, OFF_CRC, &[0; 4]);
        wr(o, OFF_RESERVED, &[0; 4]);
    }

    /// Checks the semantic rules [`decode_header`] enforces: known flags,
    /// `len <= MAX_PAYLOAD`, and `len`/`count`/`sector` consistent with
    /// the kind (see `Documentation/wire-protocol.rst`, "Record kinds").
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::BadVersion);
        }
        if self.len as usize > MAX_PAYLOAD {
            return Err(DecodeError::TooLong);
        }
        let ok = match self.kind {
            Kind::Hello | Kind::HelloReply => self.len as usize == HELLO_LEN,
            Kind::Challenge => self.len as usize == CHALLENGE_LEN,
            Kind::Write => {
                // count fits MAX_PAYLOAD, so the product cannot overflow.
                self.count > 0
                    && self.count <= MAX_WRITE_SECTORS
                    && u64::from(self.len) == u64::from(self.count) * SECTOR_SIZE as u64
                    && self.sector.checked_add(u64::from(self.count)).is_some()
            }
            Kind::Discard | Kind::WriteZeroes => {
                self.len == 0
                    && self.count > 0
                    && self.sector.checked_add(u64::from(self.count)).is_some()
            }
            Kind::DigestReq => {
                self.len == 0
                    && self.count > 0
                    && self.count <= MAX_WRITE_SECTORS
                    && self.sector.checked_add(u64::from(self.count)).is_some()
            }
            Kind::Digest => self.len as usize == DIGEST_LEN && self.count <= 1,
            Kind::Sync => self.len == 0 && (self.count == SYNC_START || self.count == SYNC_DONE),
            Kind::Lock
            | Kind::Unlock
            | Kind::Flush
            | Kind::Ping
            | Kind::Ack
            | Kind::Nak
            | Kind::LockGranted
            | Kind::LockRejected => self.len == 0,
        };
        if ok {
            Ok(())
        } else {
            Err(DecodeError::BadLength)
        }
    }

    /// Bytes of the whole frame: header plus payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.len as usize)
    }
}

/// Writes `crc` into the CRC field of an encoded header.
pub fn header_crc_seal(hdr: &mut [u8; HEADER_LEN], crc: u32) {
    wr(hdr, OFF_CRC, &crc.to_le_bytes());
}

/// Decodes the header at the start of `buf` (extra bytes are ignored: this
/// is the streaming entry point). Validates magic, version, reserved bytes,
/// kind and [`Header::validate`], but NOT the CRC: the payload is not read
/// yet. Returns the header and its CRC field.
pub fn decode_header(buf: &[u8]) -> Result<(Header, u32), DecodeError> {
    let b = buf.get(..HEADER_LEN).ok_or(DecodeError::Short)?;
    if rd_u32(b, OFF_MAGIC) != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = b.get(OFF_VERSION).copied().unwrap_or(0);
    if version != VERSION || rd_u32(b, OFF_RESERVED) != 0 {
        return Err(DecodeError::BadVersion);
    }
    let kind_byte = b.get(OFF_KIND).copied().unwrap_or(0);
    let kind = Kind::from_u8(kind_byte).ok_or(DecodeError::BadKind)?;
    let h = Header {
        kind,
        flags: rd_u16(b, OFF_FLAGS),
        seq: rd_u64(b, OFF_SEQ),
        sector: rd_u64(b, OFF_SECTOR),
        count: rd_u32(b, OFF_COUNT),
        len: rd_u32(b, OFF_LEN),
    };
    h.validate()?;
    Ok((h, rd_u32(b, OFF_CRC)))
}

/// CRC of a frame: CRC-32C over the header bytes with the CRC field taken
/// as zero, then over the payload. `hdr_bytes` may hold any CRC value.
pub fn frame_crc(c: &impl Crc32c, hdr_bytes: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
    let mut h = *hdr_bytes;
    header_crc_seal(&mut h, 0);
    let crc = c.crc32c(0, &h);
    c.crc32c(crc, payload)
}

/// Encodes header plus payload into `out`, sealed with its CRC. Returns the
/// frame length. `h.len` must equal `payload.len()` and `h` must validate.
pub fn encode_frame(
    c: &impl Crc32c,
    h: &Header,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    h.validate().map_err(EncodeError::Invalid)?;
    if h.len as usize != payload.len() {
        return Err(EncodeError::LengthMismatch);
    }
    let total = h.frame_len();
    let (hdr_out, rest) = out
        .get_mut(..total)
        .ok_or(EncodeError::BufferTooSmall)?
        .split_at_mut(HEADER_LEN);
    let mut hdr = [0u8; HEADER_LEN];
    h.encode(&mut hdr);
    let crc = frame_crc(c, &hdr, payload);
    header_crc_seal(&mut hdr, crc);
    // Both pairs have equal lengths by construction (total = 40 + len).
    hdr_out.copy_from_slice(&hdr);
    rest.copy_from_slice(payload);
    Ok(total)
}

/// Decodes a buffer that must hold exactly one frame: header, CRC check,
/// payload. Returns the header and the payload slice.
pub fn decode_frame<'a>(c: &impl Crc32c, buf: &'a [u8]) -> Result<(Header, &'a [u8]), DecodeError> {
    let (h, crc) = decode_header(buf)?;
    let total = h.frame_len();
    let frame = buf.get(..total).ok_or(DecodeError::Short)?;
    if buf.len() > total {
        return Err(DecodeError::Trailing);
    }
    let (hdr, payload) = frame.split_at(HEADER_LEN);
    let mut hb = [0u8; HEADER_LEN];
    hb.copy_from_slice(hdr);
    if frame_crc(c, &hb, payload) != crc {
        return Err(DecodeError::BadCrc);
    }
    Ok((h, payload))
}

/// [`decode_frame`] for a caller that checked the CRC itself (outside
/// its lock, say): `crc_ok` is its verdict, the rest is checked here.
pub fn decode_frame_checked(buf: &[u8], crc_ok: bool) -> Result<(Header, &[u8]), DecodeError> {
    let (h, _) = decode_header(buf)?;
    let total = h.frame_len();
    let frame = buf.get(..total).ok_or(DecodeError::Short)?;
    if buf.len() > total {
        return Err(DecodeError::Trailing);
    }
    if !crc_ok {
        return Err(DecodeError::BadCrc);
    }
    Ok((h, frame.get(HEADER_LEN..).unwrap_or(&[])))
}

/// Size of the [`Hello`] payload in bytes.
pub const HELLO_LEN: usize = 168;

/// Size of the DIGEST payload in bytes: a SHA-256.
pub const DIGEST_LEN: usize = 32;

/// Size of the CHALLENGE payload in bytes: the target's nonce.
pub const CHALLENGE_LEN: usize = 16;

/// HELLO / HELLO_REPLY payload: both peers describe themselves, the target
/// reports where to resume, and an HMAC challenge proves the shared secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the sender speaks (currently [`VERSION`]).
    pub proto_version: u32,
    /// Size of the sender's data device in sectors.
    pub dev_sectors: u64,
    /// Region size in sectors (power of two).
    pub region_sectors: u32,
    /// Replication generation: changes when the stream restarts from scratch.
    pub generation: u64,
    /// Target: highest seq with everything up to it applied. Source: 0.
    pub last_applied: u64,
    /// The sender's own nonce: a fresh random one in a HELLO (the
    /// HELLO_REPLY's MAC answers it), the CHALLENGE's repeated in a
    /// HELLO_REPLY. See `transport/proto/auth.rs`.
    pub nonce: [u8; 16],
    /// HMAC-SHA256 answering the peer's nonce (the target's CHALLENGE for a
    /// HELLO, the HELLO's nonce for a HELLO_REPLY); zero when no secret is
    /// set. See `transport/proto/auth.rs`.
    pub mac: [u8; 32],
    /// Hello flags (reserved for the state machines; carried verbatim).
    pub flags: u32,
    /// Logical block size of the sender's data device in bytes; 0 when
    /// not stated. A target refuses a source whose blocks are smaller than
    /// its own (it could not apply the source's smallest writes).
    pub block_size: u32,
    /// The sender's data generations (`log::meta::generation`): the
    /// source's current, bitmap and history; the target's image
    /// generation (in `gen_current`) and history, `gen_bitmap` 0. All 0:
    /// the sender keeps no generations.
    pub gens: crate::log::meta::generation::Generations,
}

// Hello field offsets (little-endian).
const H_PROTO: usize = 0;
const H_REGION: usize = 4;
const H_DEV: usize = 8;
const H_GEN: usize = 16;
const H_LAST: usize = 24;
const H_NONCE: usize = 32;
const H_MAC: usize = 48;
const H_FLAGS: usize = 80;
const H_BLOCK: usize = 84;
const H_GEN_CURRENT: usize = 88;
const H_GEN_BITMAP: usize = 96;
const H_GEN_HISTORY: usize = 104;

impl Hello {
    /// Serializes into a fixed array.
    pub fn to_bytes(&self) -> [u8; HELLO_LEN] {
        let mut o = [0u8; HELLO_LEN];
        wr(&mut o, H_PROTO, &self.proto_version.to_le_bytes());
        wr(&mut o, H_REGION, &self.region_sectors.to_le_bytes());
        wr(&mut o, H_DEV, &self.dev_sectors.to_le_bytes());
        wr(&mut o, H_GEN, &self.generation.to_le_bytes());
        wr(&mut o, H_LAST, &self.last_applied.to_le_bytes());
        wr(&mut o, H_NONCE, &self.nonce);
        wr(&mut o, H_MAC, &self.mac);
        wr(&mut o, H_FLAGS, &self.flags.to_le_bytes());
        wr(&mut o, H_BLOCK, &self.block_size.to_le_bytes());
        wr(&mut o, H_GEN_CURRENT, &self.gens.current.to_le_bytes());
        wr(&mut o, H_GEN_BITMAP, &self.gens.bitmap.to_le_bytes());
        for (i, g) in self.gens.history.iter().enumerate() {
            wr(&mut o, H_GEN_HISTORY + 8 * i, &g.to_le_bytes());
        }
        o
    }

    /// Serializes into the first [`HELLO_LEN`] bytes of `out`; returns
    /// [`HELLO_LEN`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let d = out
            .get_mut(..HELLO_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        d.copy_from_slice(&self.to_bytes());
        Ok(HELLO_LEN)
    }

    /// Parses a HELLO payload, which must be exactly [`HELLO_LEN`] bytes.
    pub fn decode(buf: &[u8]) -> Result<Hello, DecodeError> {
        if buf.len() < HELLO_LEN {
            return Err(DecodeError::Short);
        }
        if buf.len() > HELLO_LEN {
            return Err(DecodeError::Trailing);
        }
        let mut nonce = [0u8; 16];
        let mut mac = [0u8; 32];
        if let Some(s) = buf.get(H_NONCE..H_NONCE + 16) {
            nonce.copy_from_slice(s);
        }
        if let Some(s) = buf.get(H_MAC..H_MAC + 32) {
            mac.copy_from_slice(s);
        }
        let mut gens = crate::log::meta::generation::Generations {
            current: rd_u64(buf, H_GEN_CURRENT),
            bitmap: rd_u64(buf, H_GEN_BITMAP),
            ..Default::default()
        };
        for (i, g) in gens.history.iter_mut().enumerate() {
            *g = rd_u64(buf, H_GEN_HISTORY + 8 * i);
        }
        Ok(Hello {
            proto_version: rd_u32(buf, H_PROTO),
            dev_sectors: rd_u64(buf, H_DEV),
            region_sectors: rd_u32(buf, H_REGION),
            generation: rd_u64(buf, H_GEN),
            last_applied: rd_u64(buf, H_LAST),
            nonce,
            mac,
            flags: rd_u32(buf, H_FLAGS),
            block_size: rd_u32(buf, H_BLOCK),
            gens,
        })
    }
}

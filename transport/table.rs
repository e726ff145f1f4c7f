//! Parsing of the `specmirror` table line (pure core: no `kernel::`).
//!
//! ```text
//! <start> <len> specmirror source <data_dev> <meta_dev> <peer_host>:<port> [<#opt_args> <opt_args>...]
//! <start> <len> specmirror target <data_dev> <meta_dev> <listen_host>:<port> [<#opt_args> <opt_args>...]
//! ```
//!
//! The kernel hands the constructor the words after the target name. This
//! module checks everything except the devices (which only the kernel can
//! open) so that each malformed line is rejected with one precise message,
//! and so that all of it is tested at userspace speed.

use core::fmt;

/// Smallest region: one 4 KiB page, the unit the source copies.
pub const REGION_SECTORS_MIN: u32 = 8;
/// Largest region: 1 GiB. Larger regions make every lock cover too much.
pub const REGION_SECTORS_MAX: u32 = 1 << 21;
/// Default region size in sectors (1 MiB).
pub const REGION_SECTORS_DEFAULT: u32 = 2048;
/// Default rollback ring / commit log size in MiB.
pub const RING_MB_DEFAULT: u32 = 64;
/// Largest ring: pinned memory, so bounded well below any sane RAM size.
pub const RING_MB_MAX: u32 = 4096;
/// Default number of regions the stream keeps locked on the target.
pub const HOT_REGIONS_DEFAULT: u32 = 64;
/// Upper bound on hot regions; the lock table is sized from it.
pub const HOT_REGIONS_MAX: u32 = 65536;
/// Default number of regions in the source's activity log.
pub const AL_REGIONS_DEFAULT: u32 = 1024;
/// Upper bound on the activity log's regions.
pub const AL_REGIONS_MAX: u32 = 65536;
/// Longest accepted shared secret, in bytes.
pub const SECRET_MAX: usize = 64;
/// Default chunk (unit of the dirty bitmap and of resync), in sectors.
pub const CHUNK_SECTORS_DEFAULT: u32 = crate::log::meta::DEFAULT_CHUNK_SECTORS;
/// Smallest chunk: 4 KiB.
pub const CHUNK_SECTORS_MIN: u32 = crate::log::meta::MIN_CHUNK_SECTORS;

/// Which end of the mirror a table line builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Intercepts host writes and streams them to the peer.
    Source,
    /// Listens, receives the stream and applies it.
    Target,
}

pub use crate::transport::proto::{Completion, Mode};

/// An IP address as written in the table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// Dotted-quad IPv4, network order.
    V4([u8; 4]),
    /// IPv6, network order (written `[...]` in the table).
    V6([u8; 16]),
}

impl Addr {
    /// True for 0.0.0.0 and `::`, which only make sense to listen on, and
    /// for `::ffff:0.0.0.0`, the IPv4-mapped 0.0.0.0 (an IPv6 socket
    /// connecting there connects to 0.0.0.0, that is to this host).
    pub fn is_unspecified(&self) -> bool {
        const MAPPED_ANY: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
        match self {
            Addr::V4(a) => *a == [0; 4],
            Addr::V6(a) => *a == [0; 16] || *a == MAPPED_ANY,
        }
    }
}

/// Host and port of the peer (source) or of the listening socket (target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The address.
    pub addr: Addr,
    /// TCP port, never 0.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Addr::V4(a) => write!(f, "{}.{}.{}.{}:{}", a[0], a[1], a[2], a[3], self.port),
            Addr::V6(a) => {
                f.write_str("[")?;
                write_ipv6(f, &a)?;
                write!(f, "]:{}", self.port)
            }
        }
    }
}

/// The shared secret, kept inline so the config needs no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret {
    bytes: [u8; SECRET_MAX],
    len: u8,
}

impl Secret {
    /// A secret of `value`: 1 to [`SECRET_MAX`] printable bytes without
    /// spaces (dm splits table words on them), else `None`.
    pub fn new(value: &[u8]) -> Option<Secret> {
        if value.is_empty() || value.len() > SECRET_MAX || !value.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut s = Secret {
            bytes: [0; SECRET_MAX],
            len: u8::try_from(value.len()).ok()?,
        };
        s.bytes.get_mut(..value.len())?.copy_from_slice(value);
        Some(s)
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Debug for Secret {
    // Never print a secret by accident (status, logs, test failures).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

// Bits of `TableConfig::given`: which optional keys the line named, so the
// TABLE status line prints back exactly what recreates the device.
const GIVEN_REGION_SIZE: u16 = 1 << 0;
const GIVEN_RING_MB: u16 = 1 << 1;
const GIVEN_MODE: u16 = 1 << 2;
const GIVEN_COMPLETION: u16 = 1 << 3;
const GIVEN_HOT_REGIONS: u16 = 1 << 4;
const GIVEN_SECRET: u16 = 1 << 5;
const GIVEN_CHUNK_SIZE: u16 = 1 << 6;
const GIVEN_SYNC_RATE: u16 = 1 << 7;
const GIVEN_INITIAL_SYNC: u16 = 1 << 8;
const GIVEN_DEGRADE_AFTER: u16 = 1 << 9;
const GIVEN_ON_DISCONNECT: u16 = 1 << 10;
const GIVEN_AL_REGIONS: u16 = 1 << 11;

/// Largest `sync_rate` in KiB/s (4 GiB/s).
pub const SYNC_RATE_MAX: u32 = 1 << 22;
/// Default `degrade_after` in seconds.
pub const DEGRADE_AFTER_DEFAULT: u32 = 5;
/// Smallest `degrade_after` in seconds.
pub const DEGRADE_AFTER_MIN: u32 = 1;
/// Largest `degrade_after` in seconds (an hour).
pub const DEGRADE_AFTER_MAX: u32 = 3600;

/// What the source does when it cannot replicate (`on_disconnect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDisconnect {
    /// After `degrade_after` seconds without replicating, go degraded:
    /// host writes complete locally, their chunks are marked dirty and
    /// resynced once the target is back.
    Degrade,
    /// Host writes wait for the link (ring room, `completion sync`
    /// acknowledgements) however long it is down.
    Block,
}

/// A parsed and range-checked table line, minus the data device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// Source or target.
    pub role: Role,
    /// Peer (source) or listen (target) endpoint.
    pub endpoint: Endpoint,
    /// Sectors per region, a power of two.
    pub region_sectors: u32,
    /// Rollback ring (source) or commit log (target) size in MiB.
    pub ring_mb: u32,
    /// Lock protocol (source only).
    pub mode: Mode,
    /// Host write completion (source only).
    pub completion: Completion,
    /// Regions the stream keeps locked (source only).
    pub hot_regions: u32,
    /// Shared secret for the HMAC challenge, if any.
    pub secret: Option<Secret>,
    /// Sectors per chunk of the metadata's dirty bitmap, a power of two
    /// from [`CHUNK_SECTORS_MIN`] to `region_sectors`.
    pub chunk_sectors: u32,
    /// Resync cap in KiB/s, 0 for none (source only).
    pub sync_rate: u32,
    /// How a new target is brought in line (source only).
    pub initial_sync: crate::log::meta::generation::InitialSync,
    /// Seconds without replicating before the source goes degraded
    /// (source only; unused with [`OnDisconnect::Block`]).
    pub degrade_after: u32,
    /// Degrade or block when the target is gone (source only).
    pub on_disconnect: OnDisconnect,
    /// Regions of the activity log (source only): a crash of the source
    /// resyncs at most these regions besides the dirty bitmap.
    pub al_regions: u32,
    given: u16,
}

/// Why a table line was refused. Each maps to one `ti->error` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Fewer than role, data device, metadata device and address.
    TooFewArgs,
    /// First word is neither `source` nor `target`.
    BadRole,
    /// Address is not `a.b.c.d:port` or `[v6]:port`.
    BadAddress,
    /// Port missing, not a number, 0 or above 65535.
    BadPort,
    /// A source cannot connect to 0.0.0.0 or `::`.
    UnspecifiedPeer,
    /// `#opt_args` is not a number.
    BadOptCount,
    /// `#opt_args` differs from the number of words that follow.
    OptCountMismatch,
    /// Extra words after the address without an `#opt_args` count.
    OddOptArgs,
    /// A key the target does not know.
    UnknownKey,
    /// A key given twice.
    DuplicateKey,
    /// A key valid only for the source given on a target line.
    SourceOnlyKey,
    /// region_size not a power of two in range.
    BadRegionSize,
    /// ring_mb out of range.
    BadRingMb,
    /// mode neither `speculative` nor `lock-sync`.
    BadMode,
    /// completion neither `async` nor `sync`.
    BadCompletion,
    /// hot_regions out of range.
    BadHotRegions,
    /// secret empty, too long or not printable.
    BadSecret,
    /// chunk_size not a power of two from 8 to region_size.
    BadChunkSize,
    /// sync_rate out of range.
    BadSyncRate,
    /// initial_sync not `full`, `checksum` or `none`.
    BadInitialSync,
    /// degrade_after out of range.
    BadDegradeAfter,
    /// on_disconnect neither `degrade` nor `block`.
    BadOnDisconnect,
    /// al_regions out of range.
    BadAlRegions,
}

impl TableError {
    /// The message for `ti->error`, NUL-terminated for the kernel.
    pub fn message_nul(self) -> &'static str {
        match self {
            TableError::TooFewArgs => {
                "Not enough arguments: need <source|target> <data_dev> <meta_dev> <host>:<port>\0"
            }
            TableError::BadRole => "Invalid role: expected source or target\0",
            TableError::BadAddress => "Invalid address: expected a.b.c.d:port or [ipv6]:port\0",
            TableError::BadPort => "Invalid port: expected 1-65535\0",
            TableError::UnspecifiedPeer => {
                "Invalid peer address: a source cannot connect to an unspecified address\0"
            }
            TableError::BadOptCount => "Invalid optional argument count\0",
            TableError::OptCountMismatch => {
                "Optional argument count does not match the arguments given\0"
            }
            TableError::OddOptArgs => "Optional arguments must be key value pairs\0",
            TableError::UnknownKey => "Unknown optional argument\0",
            TableError::DuplicateKey => "Optional argument given twice\0",
            TableError::SourceOnlyKey => {
                "mode, completion, hot_regions, al_regions, sync_rate, initial_sync, degrade_after and on_disconnect apply to the source role only\0"
            }
            TableError::BadRegionSize => {
                "Invalid region_size: must be a power of two from 8 to 2097152 sectors\0"
            }
            TableError::BadRingMb => "Invalid ring_mb: must be 1 to 4096\0",
            TableError::BadMode => "Invalid mode: expected speculative or lock-sync\0",
            TableError::BadCompletion => "Invalid completion: expected async or sync\0",
            TableError::BadHotRegions => "Invalid hot_regions: must be 1 to 65536\0",
            TableError::BadAlRegions => "Invalid al_regions: must be 1 to 65536\0",
            TableError::BadSecret => "Invalid secret: 1 to 64 printable characters\0",
            TableError::BadChunkSize => {
                "Invalid chunk_size: must be a power of two from 8 sectors to region_size\0"
            }
            TableError::BadSyncRate => "Invalid sync_rate: must be 0 to 4194304 KiB/s\0",
            TableError::BadInitialSync => "Invalid initial_sync: expected full, checksum or none\0",
            TableError::BadDegradeAfter => "Invalid degrade_after: must be 1 to 3600 seconds\0",
            TableError::BadOnDisconnect => "Invalid on_disconnect: expected degrade or block\0",
        }
    }

    /// The message without the terminating NUL.
    pub fn message(self) -> &'static str {
        let m = self.message_nul();
        m.strip_suffix('\0').unwrap_or(m)
    }
}

/// The words of a table line after the target name, as the kernel hands
/// them over (`argv`), with the device path not interpreted here.
pub struct ParsedLine<'a> {
    /// Everything but the device.
    pub config: TableConfig,
    /// The data device word (path or `major:minor`), for `dm_get_device`.
    pub data_dev: &'a [u8],
    /// The metadata device word.
    pub meta_dev: &'a [u8],
}

/// Parses the words after `specmirror`:
/// `<role> <data_dev> <meta_dev> <host>:<port> [opts]`.
pub fn parse<'a, I>(args: I) -> Result<ParsedLine<'a>, TableError>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: ExactSizeIterator,
{
    let mut it = args.into_iter();
    if it.len() < 4 {
        return Err(TableError::TooFewArgs);
    }
    let (Some(role), Some(data_dev), Some(meta_dev), Some(addr)) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(TableError::TooFewArgs);
    };
    let role = match role {
        b"source" => Role::Source,
        b"target" => Role::Target,
        _ => return Err(TableError::BadRole),
    };
    let endpoint = parse_endpoint(addr)?;
    if role == Role::Source && endpoint.addr.is_unspecified() {
        return Err(TableError::UnspecifiedPeer);
    }
    let mut config = TableConfig {
        role,
        endpoint,
        region_sectors: REGION_SECTORS_DEFAULT,
        ring_mb: RING_MB_DEFAULT,
        mode: Mode::Speculative,
        completion: Completion::Async,
        hot_regions: HOT_REGIONS_DEFAULT,
        al_regions: AL_REGIONS_DEFAULT,
        secret: None,
        chunk_sectors: CHUNK_SECTORS_DEFAULT,
        sync_rate: 0,
        initial_sync: crate::log::meta::generation::InitialSync::Full,
        degrade_after: DEGRADE_AFTER_DEFAULT,
        on_disconnect: OnDisconnect::Degrade,
        given: 0,
    };
    if let Some(count) = it.next() {
        let count = parse_u32(count).ok_or(TableError::BadOptCount)?;
        let rest = it.len();
        if usize::try_from(count) != Ok(rest) {
            return Err(TableError::OptCountMismatch);
        }
        if rest & 1 != 0 {
            return Err(TableError::OddOptArgs);
        }
        while let (Some(key), Some(value)) = (it.next(), it.next()) {
            apply_option(&mut config, key, value)?;
        }
    }
    // Checked once every option is known, so their order does not matter.
    // A region smaller than the default chunk takes chunks of its size.
    if config.given & GIVEN_CHUNK_SIZE == 0 {
        config.chunk_sectors = config.chunk_sectors.min(config.region_sectors);
    } else if config.chunk_sectors > config.region_sectors {
        return Err(TableError::BadChunkSize);
    }
    Ok(ParsedLine { config, data_dev, meta_dev })
}

fn apply_option(c: &mut TableConfig, key: &[u8], value: &[u8]) -> Result<(), TableError> {
    let bit = match key {
        b"region_size" => GIVEN_REGION_SIZE,
        b"ring_mb" => GIVEN_RING_MB,
        b"mode" => GIVEN_MODE,
        b"completion" => GIVEN_COMPLETION,
        b"hot_regions" => GIVEN_HOT_REGIONS,
        b"al_regions" => GIVEN_AL_REGIONS,
        b"secret" => GIVEN_SECRET,
        b"chunk_size" => GIVEN_CHUNK_SIZE,
        b"sync_rate" => GIVEN_SYNC_RATE,
        b"initial_sync" => GIVEN_INITIAL_SYNC,
        b"degrade_after" => GIVEN_DEGRADE_AFTER,
        b"on_disconnect" => GIVEN_ON_DISCONNECT,
        _ => return Err(TableError::UnknownKey),
    };
    if c.given & bit != 0 {
        return Err(TableError::DuplicateKey);
    }
    let source_only = GIVEN_MODE
        | GIVEN_COMPLETION
        | GIVEN_HOT_REGIONS
        | GIVEN_AL_REGIONS
        | GIVEN_SYNC_RATE
        | GIVEN_INITIAL_SYNC
        | GIVEN_DEGRADE_AFTER
        | GIVEN_ON_DISCONNECT;
    if c.role == Role::Target && bit & source_only != 0 {
        return Err(TableError::SourceOnlyKey);
    }
    c.given |= bit;
    match bit {
        GIVEN_REGION_SIZE => {
            let v = parse_in(
                value,
                REGION_SECTORS_MIN,
                REGION_SECTORS_MAX,
                TableError::BadRegionSize,
            )?;
            if !v.is_power_of_two() {
                return Err(TableError::BadRegionSize);
            }
            c.region_sectors = v;
        }
        GIVEN_RING_MB => {
            c.ring_mb = parse_in(value, 1, RING_MB_MAX, TableError::BadRingMb)?;
        }
        GIVEN_MODE => {
            c.mode = match value {
                b"speculative" => Mode::Speculative,
                b"lock-sync" => Mode::LockSync,
                _ => return Err(TableError::BadMode),
            }
        }
        GIVEN_COMPLETION => {
            c.completion = match value {
                b"async" => Completion::Async,
                b"sync" => Completion::Sync,
                _ => return Err(TableError::BadCompletion),
            }
        }
        GIVEN_AL_REGIONS => {
            c.al_regions = parse_in(value, 1, AL_REGIONS_MAX, TableError::BadAlRegions)?;
        }
        GIVEN_HOT_REGIONS => {
            c.hot_regions = parse_in(value, 1, HOT_REGIONS_MAX, TableError::BadHotRegions)?;
        }
        GIVEN_CHUNK_SIZE => {
            let v = parse_in(value, CHUNK_SECTORS_MIN, REGION_SECTORS_MAX, TableError::BadChunkSize)?;
            if !v.is_power_of_two() {
                return Err(TableError::BadChunkSize);
            }
            c.chunk_sectors = v;
        }
        GIVEN_SYNC_RATE => {
            c.sync_rate = parse_in(value, 0, SYNC_RATE_MAX, TableError::BadSyncRate)?;
        }
        GIVEN_INITIAL_SYNC => {
            c.initial_sync = match value {
                b"full" => crate::log::meta::generation::InitialSync::Full,
                b"none" => crate::log::meta::generation::InitialSync::None,
                b"checksum" => crate::log::meta::generation::InitialSync::Checksum,
                _ => return Err(TableError::BadInitialSync),
            }
        }
        GIVEN_DEGRADE_AFTER => {
            c.degrade_after = parse_in(
                value,
                DEGRADE_AFTER_MIN,
                DEGRADE_AFTER_MAX,
                TableError::BadDegradeAfter,
            )?;
        }
        GIVEN_ON_DISCONNECT => {
            c.on_disconnect = match value {
                b"degrade" => OnDisconnect::Degrade,
                b"block" => OnDisconnect::Block,
                _ => return Err(TableError::BadOnDisconnect),
            }
        }
        _ => {
            // GIVEN_SECRET: printable, no spaces (dm splits words on them).
            c.secret = Some(Secret::new(value).ok_or(TableError::BadSecret)?);
        }
    }
    Ok(())
}

/// A decimal in `lo..=hi`, or `err`.
fn parse_in(value: &[u8], lo: u32, hi: u32, err: TableError) -> Result<u32, TableError> {
    parse_u32(value)
        .filter(|v| (lo..=hi).contains(v))
        .ok_or(err)
}

/// Decimal, digits only (no sign, no spaces), overflow is an error.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.len() > 10 {
        return None;
    }
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// Decimal `u64`, digits only (no sign, no spaces), overflow is an error.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses `a.b.c.d:port` or `[ipv6]:port`.
pub fn parse_endpoint(s: &[u8]) -> Result<Endpoint, TableError> {
    let (host, port) = if let Some(rest) = s.strip_prefix(b"[") {
        let close = rest
            .iter()
            .position(|&b| b == b']')
            .ok_or(TableError::BadAddress)?;
        let (host, after) = rest.split_at(close);
        let port = after.strip_prefix(b"]:").ok_or(TableError::BadAddress)?;
        (
            Addr::V6(parse_ipv6(host).ok_or(TableError::BadAddress)?),
            port,
        )
    } else {
        let colon = s
            .iter()
            .rposition(|&b| b == b':')
            .ok_or(TableError::BadAddress)?;
        let (host, port) = s.split_at(colon);
        let port = port.get(1..).ok_or(TableError::BadAddress)?;
        (
            Addr::V4(parse_ipv4(host).ok_or(TableError::BadAddress)?),
            port,
        )
    };
    let port = parse_u32(port).ok_or(TableError::BadPort)?;
    let port = u16::try_from(port).map_err(|_| TableError::BadPort)?;
    if port == 0 {
        return Err(TableError::BadPort);
    }
    Ok(Endpoint { addr: host, port })
}

/// Strict dotted quad: four decimal parts of 1-3 digits, each <= 255.
pub fn parse_ipv4(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for slot in out.iter_mut() {
        let part = parts.next()?;
        if part.len() > 3 {
            return None;
        }
        *slot = u8::try_from(parse_u32(part)?).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// RFC 4291 text form: eight groups of 1-4 hex digits, one `::` allowed,
/// an IPv4 dotted quad allowed as the last 32 bits. No zone index.
pub fn parse_ipv6(s: &[u8]) -> Option<[u8; 16]> {
    let (head, tail) = match find_double_colon(s) {
        Some(i) => (s.get(..i)?, Some(s.get(i + 2..)?)),
        None => (s, None),
    };
    let mut groups = [0u16; 8];
    let n_head = parse_groups(head, &mut groups, tail.is_none())?;
    match tail {
        None => {
            if n_head != 8 {
                return None;
            }
        }
        Some(tail) => {
            let mut tail_groups = [0u16; 8];
            let n_tail = parse_groups(tail, &mut tail_groups, true)?;
            // `::` stands for at least one zero group.
            if n_head + n_tail > 7 {
                return None;
            }
            let start = 8 - n_tail;
            for (dst, src) in groups.get_mut(start..)?.iter_mut().zip(tail_groups.iter()) {
                *dst = *src;
            }
        }
    }
    let mut out = [0u8; 16];
    for (chunk, g) in out.chunks_exact_mut(2).zip(groups.iter()) {
        chunk.copy_from_slice(&g.to_be_bytes());
    }
    Some(out)
}

fn find_double_colon(s: &[u8]) -> Option<usize> {
    let i = s.windows(2).position(|w| w == b"::")?;
    // A second `::` is ambiguous.
    if s.get(i + 1..)?.windows(2).any(|w| w == b"::") {
        return None;
    }
    Some(i)
}

/// Parses colon-separated hex groups into `out`, returns how many 16-bit
/// groups were written. An IPv4 quad may end the list when `last` is set.
fn parse_groups(s: &[u8], out: &mut [u16; 8], last: bool) -> Option<usize> {
    if s.is_empty() {
        return Some(0);
    }
    let mut n = 0usize;
    let mut parts = s.split(|&b| b == b':').peekable();
    while let Some(part) = parts.next() {
        let is_last = parts.peek().is_none();
        if is_last && last && part.contains(&b'.') {
            let v4 = parse_ipv4(part)?;
            *out.get_mut(n)? = u16::from_be_bytes([v4[0], v4[1]]);
            *out.get_mut(n + 1)? = u16::from_be_bytes([v4[2], v4[3]]);
            return Some(n + 2);
        }
        if part.is_empty() || part.len() > 4 {
            return None;
        }
        let mut v: u16 = 0;
        for &b in part {
            let d = char::from(b).to_digit(16)?;
            v = (v << 4) | u16::try_from(d).ok()?;
        }
        *out.get_mut(n)? = v;
        n += 1;
    }
    Some(n)
}

/// Writes an IPv6 address in RFC 5952 form (longest zero run as `::`).
fn write_ipv6(f: &mut dyn fmt::Write, a: &[u8; 16]) -> fmt::Result {
    let mut g = [0u16; 8];
    for (dst, c) in g.iter_mut().zip(a.chunks_exact(2)) {
        *dst = u16::from_be_bytes([c[0], c[1]]);
    }
    // Longest run of zero groups of length >= 2.
    let (mut best, mut best_len, mut cur, mut cur_len) = (0usize, 0usize, 0usize, 0usize);
    for (i, &v) in g.iter().enumerate() {
        if v == 0 {
            if cur_len == 0 {
                cur = i;
            }
            cur_len += 1;
            if cur_len > best_len {
                best = cur;
                best_len = cur_len;
            }
        } else {
            cur_len = 0;
        }
    }
    let mut i = 0;
    while i < 8 {
        if best_len >= 2 && i == best {
            f.write_str("::")?;
            i += best_len;
            continue;
        }
        if i != 0 && !(best_len >= 2 && i == best + best_len) {
            f.write_str(":")?;
        }
        write!(f, "{:x}", g[i])?;
        i += 1;
    }
    Ok(())
}

impl TableConfig {
    /// Writes the table line back (STATUSTYPE_TABLE): the words after the
    /// target name that recreate this device, with only the keys given.
    pub fn write_table(&self, f: &mut dyn fmt::Write, data_dev: &str, meta_dev: &str) -> fmt::Result {
        let role = self.role_str();
        write!(f, "{} {} {} {}", role, data_dev, meta_dev, self.endpoint)?;
        let n = self.given.count_ones() * 2;
        if n == 0 {
            return Ok(());
        }
        write!(f, " {}", n)?;
        if self.given & GIVEN_REGION_SIZE != 0 {
            write!(f, " region_size {}", self.region_sectors)?;
        }
        if self.given & GIVEN_RING_MB != 0 {
            write!(f, " ring_mb {}", self.ring_mb)?;
        }
        if self.given & GIVEN_MODE != 0 {
            write!(f, " mode {}", self.mode_str())?;
        }
        if self.given & GIVEN_COMPLETION != 0 {
            write!(f, " completion {}", self.completion_str())?;
        }
        if self.given & GIVEN_HOT_REGIONS != 0 {
            write!(f, " hot_regions {}", self.hot_regions)?;
        }
        if self.given & GIVEN_AL_REGIONS != 0 {
            write!(f, " al_regions {}", self.al_regions)?;
        }
        if self.given & GIVEN_CHUNK_SIZE != 0 {
            write!(f, " chunk_size {}", self.chunk_sectors)?;
        }
        if self.given & GIVEN_SYNC_RATE != 0 {
            write!(f, " sync_rate {}", self.sync_rate)?;
        }
        if self.given & GIVEN_INITIAL_SYNC != 0 {
            write!(f, " initial_sync {}", self.initial_sync_str())?;
        }
        if self.given & GIVEN_DEGRADE_AFTER != 0 {
            write!(f, " degrade_after {}", self.degrade_after)?;
        }
        if self.given & GIVEN_ON_DISCONNECT != 0 {
            write!(f, " on_disconnect {}", self.on_disconnect_str())?;
        }
        if let Some(s) = &self.secret {
            // Like dm-crypt's key: root can read it back to recreate the
            // device; IMA and INFO never show it.
            f.write_str(" secret ")?;
            for &b in s.as_bytes() {
                f.write_char(char::from(b))?;
            }
        }
        Ok(())
    }

    /// Writes the IMA measurement pairs (`key=value,`), never the secret.
    pub fn write_ima(&self, f: &mut dyn fmt::Write, data_dev: &str, meta_dev: &str) -> fmt::Result {
        let role = self.role_str();
        write!(
            f,
            "role={},data_dev={},meta_dev={},endpoint={},chunk_size={},region_size={},ring_mb={},mode={},completion={},hot_regions={},al_regions={},sync_rate={},initial_sync={},degrade_after={},on_disconnect={},auth={};",
            role,
            data_dev,
            meta_dev,
            self.endpoint,
            self.chunk_sectors,
            self.region_sectors,
            self.ring_mb,
            self.mode_str(),
            self.completion_str(),
            self.hot_regions,
            self.al_regions,
            self.sync_rate,
            self.initial_sync_str(),
            self.degrade_after,
            self.on_disconnect_str(),
            if self.secret.is_some() { "hmac" } else { "none" },
        )
    }

    /// `degrade` or `block`.
    pub fn on_disconnect_str(&self) -> &'static str {
        match self.on_disconnect {
            OnDisconnect::Degrade => "degrade",
            OnDisconnect::Block => "block",
        }
    }

    /// The source machine's `degrade_after` in nanoseconds; `None` with
    /// `on_disconnect block` (never degraded).
    pub fn degrade_after_ns(&self) -> Option<u64> {
        match self.on_disconnect {
            OnDisconnect::Degrade => Some(u64::from(self.degrade_after) * 1_000_000_000),
            OnDisconnect::Block => None,
        }
    }

    /// `full`, `checksum` or `none`.
    pub fn initial_sync_str(&self) -> &'static str {
        match self.initial_sync {
            crate::log::meta::generation::InitialSync::None => "none",
            crate::log::meta::generation::InitialSync::Checksum => "checksum",
            crate::log::meta::generation::InitialSync::Full => "full",
        }
    }

    /// `source` or `target`.
    pub fn role_str(&self) -> &'static str {
        match self.role {
            Role::Source => "source",
            Role::Target => "target",
        }
    }

    /// `speculative` or `lock-sync`.
    pub fn mode_str(&self) -> &'static str {
        match self.mode {
            Mode::Speculative => "speculative",
            Mode::LockSync => "lock-sync",
        }
    }

    /// `async` or `sync`.
    pub fn completion_str(&self) -> &'static str {
        match self.completion {
            Completion::Async => "async",
            Completion::Sync => "sync",
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    fn parse_str(s: &str) -> Result<TableConfig, TableError> {
        let words: Vec<&[u8]> = s.split_whitespace().map(str::as_bytes).collect();
        parse(words).map(|p| p.config)
    }

    fn table_of(c: &TableConfig) -> String {
        let mut out = String::new();
        assert!(c.write_table(&mut out, "7:0", "7:9").is_ok());
        out
    }

    #[test]
    fn degrade_after_and_on_disconnect_default_and_parse() {
        let c = parse_str("source 7:0 7:9 1.2.3.4:5").unwrap();
        assert_eq!(c.degrade_after, DEGRADE_AFTER_DEFAULT);
        assert_eq!(c.on_disconnect, OnDisconnect::Degrade);
        assert_eq!(c.degrade_after_ns(), Some(5_000_000_000));
        assert_eq!(table_of(&c), "source 7:0 7:9 1.2.3.4:5", "defaults are not printed back");

        let c = parse_str("source 7:0 7:9 1.2.3.4:5 2 degrade_after 1").unwrap();
        assert_eq!(c.degrade_after, 1);
        assert_eq!(c.degrade_after_ns(), Some(1_000_000_000));
        let c = parse_str("source 7:0 7:9 1.2.3.4:5 2 degrade_after 3600").unwrap();
        assert_eq!(c.degrade_after_ns(), Some(3_600_000_000_000));

        let c = parse_str("source 7:0 7:9 1.2.3.4:5 2 on_disconnect block").unwrap();
        assert_eq!(c.on_disconnect, OnDisconnect::Block);
        assert_eq!(c.degrade_after_ns(), None, "block: never degraded");
        let c = parse_str("source 7:0 7:9 1.2.3.4:5 2 on_disconnect degrade").unwrap();
        assert_eq!(c.on_disconnect, OnDisconnect::Degrade);
        // Both: accepted in either order; with block the delay is unused.
        let c = parse_str("source 7:0 7:9 1.2.3.4:5 4 on_disconnect block degrade_after 3").unwrap();
        assert_eq!((c.degrade_after, c.degrade_after_ns()), (3, None));
    }

    #[test]
    fn degrade_options_print_back() {
        for line in [
            "source 7:0 7:9 1.2.3.4:5 2 degrade_after 3",
            "source 7:0 7:9 1.2.3.4:5 2 on_disconnect block",
            "source 7:0 7:9 1.2.3.4:5 2 on_disconnect degrade",
            "source 7:0 7:9 1.2.3.4:5 6 ring_mb 4 initial_sync none degrade_after 3",
            "source 7:0 7:9 1.2.3.4:5 6 degrade_after 3600 sync_rate 1 on_disconnect block",
        ] {
            let c = parse_str(line).unwrap();
            let out = table_of(&c);
            assert_eq!(parse_str(&out), Ok(c), "{line} -> {out}");
        }
        let c = parse_str("source 7:0 7:9 1.2.3.4:5 4 on_disconnect block degrade_after 7").unwrap();
        assert_eq!(
            table_of(&c),
            "source 7:0 7:9 1.2.3.4:5 4 degrade_after 7 on_disconnect block"
        );
        let mut ima = String::new();
        assert!(c.write_ima(&mut ima, "7:0", "7:9").is_ok());
        assert!(
            ima.contains(",initial_sync=full,degrade_after=7,on_disconnect=block,auth=none;"),
            "{ima}"
        );
        let mut ima = String::new();
        let d = parse_str("source 7:0 7:9 1.2.3.4:5").unwrap();
        assert!(d.write_ima(&mut ima, "7:0", "7:9").is_ok());
        assert!(ima.contains(",degrade_after=5,on_disconnect=degrade,"), "{ima}");
    }

    #[test]
    fn bad_degrade_options_are_rejected_precisely() {
        use TableError::*;
        for (line, want) in [
            ("source 7:0 7:9 1.2.3.4:5 2 degrade_after 0", BadDegradeAfter),
            ("source 7:0 7:9 1.2.3.4:5 2 degrade_after 3601", BadDegradeAfter),
            ("source 7:0 7:9 1.2.3.4:5 2 degrade_after -1", BadDegradeAfter),
            ("source 7:0 7:9 1.2.3.4:5 2 degrade_after +5", BadDegradeAfter),
            ("source 7:0 7:9 1.2.3.4:5 2 degrade_after 10s", BadDegradeAfter),
            ("source 7:0 7:9 1.2.3.4:5 2 degrade_after 4294967306", BadDegradeAfter),
            ("source 7:0 7:9 1.2.3.4:5 2 on_disconnect wait", BadOnDisconnect),
            ("source 7:0 7:9 1.2.3.4:5 2 on_disconnect Block", BadOnDisconnect),
            ("source 7:0 7:9 1.2.3.4:5 2 on_disconnect 1", BadOnDisconnect),
            ("source 7:0 7:9 1.2.3.4:5 4 degrade_after 3 degrade_after 4", DuplicateKey),
            ("source 7:0 7:9 1.2.3.4:5 4 on_disconnect block on_disconnect block", DuplicateKey),
            ("target 7:0 7:9 0.0.0.0:5 2 degrade_after 3", SourceOnlyKey),
            ("target 7:0 7:9 0.0.0.0:5 2 on_disconnect block", SourceOnlyKey),
            ("target 7:0 7:9 0.0.0.0:5 4 ring_mb 4 on_disconnect degrade", SourceOnlyKey),
        ] {
            assert_eq!(parse_str(line), Err(want), "line: {line:?}");
        }
        assert_eq!(
            BadDegradeAfter.message(),
            "Invalid degrade_after: must be 1 to 3600 seconds"
        );
        assert_eq!(
            BadOnDisconnect.message(),
            "Invalid on_disconnect: expected degrade or block"
        );
        assert!(SourceOnlyKey.message().contains("degrade_after and on_disconnect apply to the source role only"));
        for e in [BadDegradeAfter, BadOnDisconnect, SourceOnlyKey] {
            assert!(e.message_nul().ends_with('\0') && !e.message().contains('\0'));
        }
    }
}

//! Source and target protocol state machines (pure core, sans-IO).
//!
//! The kernel glue (and the userspace simulator) feed events in and poll
//! actions out; nothing here blocks, allocates or touches a socket or a
//! bio. See `Documentation/wire-protocol.rst`, section "State machines".
//!
//! - [`source`]: host writes into the rollback ring, the send cursor, ACK /
//!   NAK / LOCK_GRANTED / LOCK_REJECTED handling, handshake and resume.
//! - [`target`]: frame checks, commit log, stream locks, flush epochs, ack
//!   batching, handshake.
//! - [`hot`]: the source's hot-region LRU.
//! - [`inflight`]: the source's in-flight write table (overlap, completion).
//! - [`auth`]: SHA-256 / HMAC-SHA256, the CHALLENGE record and the HELLO
//!   MACs (used by the glue around the handshake, not by the machines).

pub mod auth;
pub mod backoff;
pub mod hot;
pub mod inflight;
#[cfg(feature = "mutants")]
pub mod mutant;
pub mod source;
pub mod target;
pub mod wake;

use wake::{Instant, MS, SEC};

/// Longest a connection attempt may take (the glue's connect timeout).
pub const CONNECT_TIMEOUT_MS: u32 = 5000;
/// Longest a handshake may take, however its bytes come (a peer
/// trickling them in cannot stretch it).
pub const HANDSHAKE_TIMEOUT: Instant = 10 * SEC;
/// Either side sends something at least this often while connected: the
/// source a PING when it has nothing else to send, the target an ACK.
pub const KEEPALIVE: Instant = SEC;
/// A connection over which nothing arrived for this long is dead (about
/// ten missed keepalives): it is closed and the source reconnects.
pub const PEER_TIMEOUT: Instant = 10 * SEC;
/// A connection must stay up this long, without the peer breaking the
/// protocol, for the reconnect back-off to start again from its shortest
/// delay (a peer that shakes hands and breaks at once gets no storm).
pub const HEALTHY: Instant = SEC;
/// Nonce bytes the glue draws for each new connection (two nonces).
pub const CONN_RANDOM: usize = 32;

/// Payloads up to this many bytes are copied (and checksummed) while the
/// state lock is held, on both sides: one lock hold is cheaper than two
/// for a copy this short. Longer ones are copied outside it, so no copy of
/// more than this runs with interrupts off (`source::copies_inline`,
/// `target::copies_outside`).
pub const INLINE_COPY_BYTES: usize = 4096;
/// Milliseconds from `now` until `until` (rounded up, at least 1): how
/// long a thread sleeps on its step's deadline.
pub fn sleep_ms(now: Instant, until: Instant) -> u32 {
    let ns = until.saturating_sub(now);
    u32::try_from(ns.div_ceil(MS).max(1)).unwrap_or(u32::MAX)
}

use crate::log::record::{encode_frame, Crc32c, EncodeError, Header, Hello, Kind, HELLO_LEN};

/// Replication mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Send a region's writes right after its LOCK, without waiting for the
    /// grant (the default).
    Speculative,
    /// Prior art: a region's writes are sent only after LOCK_GRANTED.
    LockSync,
}

/// When a host write completes on the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Once the local device completed it.
    Async,
    /// Once the local device completed it and the target applied it.
    Sync,
}

/// HELLO flag (source): the source runs in lock-sync mode, so the target
/// answers every LOCK with LOCK_GRANTED.
pub const HELLO_FLAG_LOCK_SYNC: u32 = 1 << 0;
/// HELLO flag (source): sync completion, so the target acknowledges every
/// applied record at once instead of batching.
pub const HELLO_FLAG_SYNC_COMPLETION: u32 = 1 << 1;
/// HELLO_REPLY flag (target): its image is consistent (a flush-boundary
/// image of the generation it names; not in the middle of a sync).
pub const HELLO_FLAG_CONSISTENT: u32 = 1 << 2;
/// HELLO_REPLY flag bits 8..16 (target): the refusal reason, a
/// [`Refusal`] code; zero means accepted.
pub const HELLO_FLAG_REFUSED_MASK: u32 = 0xff << 8;
const REFUSED_SHIFT: u32 = 8;

/// Why a handshake was refused (shown in `dmsetup status`) or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Protocol versions differ.
    Version,
    /// Device sizes differ.
    DeviceSize,
    /// Region sizes differ.
    RegionSize,
    /// The target is still applying another generation's records.
    Busy,
    /// The reply's generation is not ours.
    Generation,
    /// The two sides' seqs cannot be reconciled (needs a full resync).
    Diverged,
    /// The peer's HELLO MAC is wrong.
    Auth,
    /// Unexpected handshake message.
    Protocol,
    /// The target's data device has larger logical blocks than the
    /// source's: it could not apply the source's smallest writes.
    BlockSize,
    /// No generation of one side is known to the other: not two halves
    /// of one mirror (see `log::meta::generation`).
    Unrelated,
    /// The target's history holds the source's current generation: the
    /// target moved on from where the source is.
    TargetAhead,
}

impl From<crate::log::meta::generation::Refusal> for Refusal {
    fn from(r: crate::log::meta::generation::Refusal) -> Refusal {
        match r {
            crate::log::meta::generation::Refusal::Unrelated => Refusal::Unrelated,
            crate::log::meta::generation::Refusal::TargetAhead => Refusal::TargetAhead,
        }
    }
}

impl Refusal {
    /// Wire code (non-zero).
    pub fn code(self) -> u32 {
        match self {
            Refusal::Version => 1,
            Refusal::DeviceSize => 2,
            Refusal::RegionSize => 3,
            Refusal::Busy => 4,
            Refusal::Generation => 5,
            Refusal::Diverged => 6,
            Refusal::Auth => 7,
            Refusal::Protocol => 8,
            Refusal::BlockSize => 9,
            Refusal::Unrelated => 10,
            Refusal::TargetAhead => 11,
        }
    }

    /// Decodes the refusal bits of a HELLO_REPLY's flags (unknown codes
    /// map to `Protocol`).
    pub fn from_flags(flags: u32) -> Refusal {
        match (flags & HELLO_FLAG_REFUSED_MASK) >> REFUSED_SHIFT {
            1 => Refusal::Version,
            2 => Refusal::DeviceSize,
            3 => Refusal::RegionSize,
            4 => Refusal::Busy,
            5 => Refusal::Generation,
            6 => Refusal::Diverged,
            7 => Refusal::Auth,
            9 => Refusal::BlockSize,
            10 => Refusal::Unrelated,
            11 => Refusal::TargetAhead,
            _ => Refusal::Protocol,
        }
    }

    /// The word `dmsetup status` shows for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Version => "refused:version",
            Refusal::DeviceSize => "refused:device-size",
            Refusal::RegionSize => "refused:region-size",
            Refusal::Busy => "refused:busy",
            Refusal::Generation => "refused:generation",
            Refusal::Diverged => "refused:diverged",
            Refusal::Auth => "refused:auth",
            Refusal::Protocol => "refused:protocol",
            Refusal::BlockSize => "refused:block-size",
            Refusal::Unrelated => "refused:unrelated",
            Refusal::TargetAhead => "refused:target-ahead",
        }
    }

    /// The HELLO_REPLY flag bits carrying this refusal.
    pub fn to_flags(self) -> u32 {
        (self.code() << REFUSED_SHIFT) & HELLO_FLAG_REFUSED_MASK
    }
}

/// True if a target whose data device has `target` -byte logical blocks
/// cannot apply every write of a source with `source` -byte blocks (the
/// source's smallest write is one of its own blocks). 0 means not stated:
/// a peer that does not say is not refused.
pub fn block_size_too_large(target: u32, source: u32) -> bool {
    target != 0 && source != 0 && target > source
}

/// Largest control frame either machine emits (HELLO / HELLO_REPLY).
pub const MAX_CONTROL_FRAME: usize = crate::log::record::HEADER_LEN + HELLO_LEN;

/// Encodes a HELLO (`reply == false`) or HELLO_REPLY frame into `out`
/// (at least [`MAX_CONTROL_FRAME`] bytes); returns its length.
pub fn encode_hello(
    c: &impl Crc32c,
    h: &Hello,
    reply: bool,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut hdr = Header::new(if reply { Kind::HelloReply } else { Kind::Hello });
    hdr.len = HELLO_LEN as u32;
    encode_frame(c, &hdr, &h.to_bytes(), out)
}

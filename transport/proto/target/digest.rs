//! The target's side of online verify and checksum syncs: DIGEST_REQ
//! records read a range of the data device in stream order (after every
//! earlier overlapping write, before every later one), and each is
//! answered with a DIGEST frame holding the SHA-256 of what was read.
//!
//! The glue executes a DIGEST_REQ it gets from `poll_issue` by reading
//! the range, hashing it (`auth::Sha256`) and calling
//! [`Target::digest_done`]. Answers wait in a small queue that the sender
//! drains before its ACKs; a DIGEST_REQ is not issued while the queue
//! could not take its answer, so none is ever dropped on a live
//! connection (a lost connection drops them, and the source counts the
//! chunks of the unanswered requests it sees applied as differing).

use core::ops::DerefMut;

use super::Target;
use crate::log::commit::WindowSlot;
use crate::log::locks::LockSlot;
use crate::log::pages::Pages;
use crate::log::record::{encode_frame, Crc32c, EncodeError, Header, Kind, DIGEST_LEN};
use crate::transport::proto::target::IoStatus;
use crate::transport::proto::wake::Instant;

/// Answers the queue holds (and DIGEST_REQ records issued at once).
pub const DIGEST_QUEUE: usize = 8;

/// One answer waiting to be sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Answer {
    seq: u64,
    /// `None`: the range could not be read.
    digest: Option<[u8; DIGEST_LEN]>,
}

/// The answers' queue and the requests being read.
///
/// # Invariants
///
/// - `len + reading <= DIGEST_QUEUE`: every request being read has a slot
///   for its answer.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Digests {
    q: [Answer; DIGEST_QUEUE],
    head: usize,
    len: usize,
    reading: usize,
}

impl Digests {
    /// Whether one more request may be issued now.
    pub(super) fn room(&self) -> bool {
        self.len + self.reading < DIGEST_QUEUE
    }

    /// Answers waiting to be sent.
    pub(super) fn pending(&self) -> bool {
        self.len > 0
    }

    /// The connection is gone: its answers with it.
    pub(super) fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

impl<P, W, F, L> Target<P, W, F, L>
where
    P: Pages,
    W: DerefMut<Target = [WindowSlot]>,
    F: DerefMut<Target = [u32]>,
    L: DerefMut<Target = [LockSlot]>,
{
    /// A DIGEST_REQ leaves `poll_issue`: its answer has a slot.
    pub(super) fn digest_issued(&mut self) {
        self.digests.reading += 1;
    }

    /// The glue read and hashed DIGEST_REQ `seq` (`None`: the read
    /// failed). Queues the answer and completes the record.
    pub fn digest_done(
        &mut self,
        seq: u64,
        digest: Option<[u8; DIGEST_LEN]>,
        now: Instant,
    ) -> bool {
        if self.log.issued_header(seq).map(|h| h.kind) != Some(Kind::DigestReq) {
            return false;
        }
        let d = &mut self.digests;
        d.reading = d.reading.saturating_sub(1);
        if self.connected && d.len < DIGEST_QUEUE {
            let at = (d.head + d.len) % DIGEST_QUEUE;
            d.q[at] = Answer { seq, digest };
            d.len += 1;
        }
        self.stats.digests = self.stats.digests.saturating_add(1);
        self.io_done(seq, IoStatus::Ok, now)
    }

    /// Encodes the oldest answer into `out`, if any.
    pub(super) fn encode_digest<C: Crc32c>(
        &mut self,
        c: &C,
        out: &mut [u8],
    ) -> Option<Result<usize, EncodeError>> {
        let d = &mut self.digests;
        if d.len == 0 {
            return None;
        }
        let a = d.q[d.head];
        let mut h = Header::new(Kind::Digest);
        h.seq = a.seq;
        h.count = u32::from(a.digest.is_none());
        h.len = DIGEST_LEN as u32;
        let res = encode_frame(c, &h, &a.digest.unwrap_or([0; DIGEST_LEN]), out);
        if res.is_ok() {
            d.head = (d.head + 1) % DIGEST_QUEUE;
            d.len -= 1;
        }
        Some(res)
    }
}

//! Target-side commit log: received records, in seq order, until applied.
//!
//! Records are stored like in the rollback ring (header + payload back to
//! back over caller pages); each stored header's reserved byte holds the
//! record's state (pending, issued, done, failed), so no side table and no
//! allocation is needed.
//!
//! Ordering rules enforced by [`CommitLog::next_to_issue`] (DESIGN I2, I4):
//! - Data records (WRITE, DISCARD, WRITE_ZEROES) of one flush epoch may be
//!   in flight together, except that a record never starts while an
//!   earlier unfinished data record overlaps its sectors: overlapping
//!   writes land in stream order.
//! - A barrier (FLUSH, or any record with `FLAG_PREFLUSH`) starts only when
//!   every earlier record is done, and nothing after it starts before it is
//!   done.
//! - LOCK and UNLOCK take no device I/O but still pass through here so that
//!   the caller sees them in stream order: each is handed out only when
//!   every earlier record is done (an UNLOCK must not release a region
//!   while earlier writes to it are pending), without holding back later
//!   data records. The caller acts on it and calls `complete(seq, true)`
//!   right away.
//!
//! Applied records are freed from the head in order; `applied_upto` is
//! what the target acknowledges.

use super::pages::{advance, capacity, read_at, write_at, Pages, Spans};
use super::record::{decode_header, Header, Kind, FLAG_PREFLUSH, HEADER_LEN, OFF_RESERVED};

/// Why a record was not accepted by [`CommitLog::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitError {
    /// Not enough space now; the target must reject or stall the stream.
    Full,
    /// The frame can never fit in this log.
    TooLarge,
    /// `seq` is below `next_seq()`: already received (a resend).
    Duplicate,
    /// `seq` is above `next_seq()`: a record is missing.
    Gap,
    /// `payload.len()` differs from the header, or the header is invalid.
    BadLength,
    /// Only source-to-target records except HELLO belong in the log.
    BadKind,
}

/// A record handed out for execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssueView {
    /// The record's seq (pass it back to `complete`).
    pub seq: u64,
    /// Its header.
    pub header: Header,
    payload_start: usize,
    cap: usize,
}

impl IssueView {
    /// The payload as `(page index, offset, len)` pieces, each inside one
    /// page of the log's storage (empty for records without payload).
    pub fn chunks(&self) -> Spans {
        Spans {
            cap: self.cap,
            pos: self.payload_start,
            left: self.header.len as usize,
        }
    }
}

// Per-record state, kept in the stored header's reserved byte.
const PENDING: u8 = 0;
const ISSUED: u8 = 1;
const DONE: u8 = 2;
const FAILED: u8 = 3;

/// Default bound on records handed out and not yet completed.
pub const DEFAULT_MAX_INFLIGHT: usize = 64;
/// How many records past the head `next_to_issue` looks at; bounds its
/// cost when the head is stuck behind a slow I/O.
pub const SCAN_LIMIT: usize = 128;

/// One stored record as read back during a walk.
#[derive(Clone, Copy)]
struct Slot {
    header: Header,
    state: u8,
    pos: usize,
    len: usize,
}

fn is_barrier(h: &Header) -> bool {
    h.kind == Kind::Flush || h.flags & FLAG_PREFLUSH != 0
}

fn overlaps(a: &Header, b: &Header) -> bool {
    let a_end = a.sector.saturating_add(u64::from(a.count));
    let b_end = b.sector.saturating_add(u64::from(b.count));
    a.sector < b_end && b.sector < a_end
}

/// Target commit log over caller pages; see the module docs.
pub struct CommitLog<P: Pages> {
    pages: P,
    cap: usize,
    head: usize,
    used: usize,
    records: usize,
    head_seq: u64,
    next_seq: u64,
    inflight: usize,
    max_inflight: usize,
}

impl<P: Pages> CommitLog<P> {
    /// An empty log expecting `first_seq` next (seqs start at 1).
    pub fn new(pages: P, first_seq: u64) -> Self {
        CommitLog {
            cap: capacity(&pages),
            pages,
            head: 0,
            used: 0,
            records: 0,
            head_seq: first_seq,
            next_seq: first_seq,
            inflight: 0,
            max_inflight: DEFAULT_MAX_INFLIGHT,
        }
    }

    /// The storage, to resolve [`IssueView::chunks`] page indices.
    pub fn pages(&self) -> &P {
        &self.pages
    }

    /// Caps records in flight (at least 1).
    pub fn set_max_inflight(&mut self, n: usize) {
        self.max_inflight = n.max(1);
    }

    /// Forgets every record and expects `next_seq` next. Only for a new
    /// replication generation with nothing in flight.
    pub fn reset(&mut self, next_seq: u64) {
        self.head = 0;
        self.used = 0;
        self.records = 0;
        self.head_seq = next_seq;
        self.next_seq = next_seq;
        self.inflight = 0;
    }

    /// Total bytes of storage.
    pub fn capacity_bytes(&self) -> usize {
        self.cap
    }

    /// Bytes held by records not yet applied.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Bytes available for new records.
    pub fn free_bytes(&self) -> usize {
        self.cap - self.used
    }

    /// Whether a record with `payload_len` bytes of payload fits now.
    pub fn can_push(&self, payload_len: usize) -> bool {
        HEADER_LEN.saturating_add(payload_len) <= self.free_bytes()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Number of records held.
    pub fn len_records(&self) -> usize {
        self.records
    }

    /// Records handed out and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.inflight
    }

    /// Seq the next pushed record must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest seq such that every record up to it is applied (0 if none
    /// yet with the usual first seq 1): the value to ACK.
    pub fn applied_upto(&self) -> u64 {
        self.head_seq.saturating_sub(1)
    }

    /// Appends a received record; `hdr.seq` must equal `next_seq()`.
    pub fn push(&mut self, hdr: &Header, payload: &[u8]) -> Result<(), CommitError> {
        if !hdr.kind.is_from_source() || hdr.kind == Kind::Hello {
            return Err(CommitError::BadKind);
        }
        if hdr.len as usize != payload.len() || hdr.validate().is_err() {
            return Err(CommitError::BadLength);
        }
        if hdr.seq < self.next_seq {
            return Err(CommitError::Duplicate);
        }
        if hdr.seq > self.next_seq {
            return Err(CommitError::Gap);
        }
        let frame = hdr.frame_len();
        if frame > self.cap {
            return Err(CommitError::TooLarge);
        }
        if frame > self.free_bytes() {
            return Err(CommitError::Full);
        }
        let after = self.next_seq.checked_add(1).ok_or(CommitError::Full)?;
        let tail = advance(self.head, self.used, self.cap);
        let mut hb = [0u8; HEADER_LEN];
        hdr.encode(&mut hb); // reserved byte = PENDING
        let pos = write_at(&mut self.pages, self.cap, tail, &hb).map_err(|()| CommitError::Full)?;
        write_at(&mut self.pages, self.cap, pos, payload).map_err(|()| CommitError::Full)?;
        self.used += frame;
        self.records += 1;
        self.next_seq = after;
        Ok(())
    }

    fn slot_at(&self, pos: usize) -> Option<Slot> {
        let mut hb = [0u8; HEADER_LEN];
        read_at(&self.pages, self.cap, pos, &mut hb).ok()?;
        let state = hb.get(OFF_RESERVED).copied()?;
        // The state byte is ours; the codec wants the reserved bytes zero.
        if let Some(b) = hb.get_mut(OFF_RESERVED) {
            *b = 0;
        }
        let (header, _) = decode_header(&hb).ok()?;
        Some(Slot {
            header,
            state,
            pos,
            len: header.frame_len(),
        })
    }

    fn set_state(&mut self, pos: usize, state: u8) {
        let p = advance(pos, OFF_RESERVED, self.cap);
        // Cannot fail for a position we read a slot from.
        let _ = write_at(&mut self.pages, self.cap, p, &[state]);
    }

    /// Walks the stored records from the head: `f(seq, slot)` returns
    /// false to stop. At most `limit` records are visited.
    fn walk(&self, limit: usize, mut f: impl FnMut(u64, &Slot) -> bool) {
        let mut pos = self.head;
        // The bounded range goes first: zip then never asks the open range
        // for a successor past the last record (no overflow near u64::MAX).
        for (_, seq) in (0..self.records.min(limit)).zip(self.head_seq..) {
            let Some(slot) = self.slot_at(pos) else {
                return;
            };
            if !f(seq, &slot) {
                return;
            }
            pos = advance(pos, slot.len, self.cap);
        }
    }

    /// True if an unfinished data record before `seq` overlaps `h`.
    fn blocked_by_overlap(&self, seq: u64, h: &Header) -> bool {
        let mut hit = false;
        self.walk(usize::MAX, |s, slot| {
            if s >= seq {
                return false;
            }
            if slot.state != DONE && slot.header.kind.is_data() && overlaps(&slot.header, h) {
                hit = true;
                return false;
            }
            true
        });
        hit
    }

    /// Hands out the next record that may start now under the ordering
    /// rules (module docs) and marks it issued; `None` if nothing may.
    pub fn next_to_issue(&mut self) -> Option<IssueView> {
        if self.inflight >= self.max_inflight {
            return None;
        }
        let head_seq = self.head_seq;
        let mut found: Option<(u64, Slot)> = None;
        // Unfinished data records seen so far; while zero, the (quadratic)
        // overlap walk is skipped: the common in-order case stays linear.
        let mut unfinished_data = 0usize;
        self.walk(SCAN_LIMIT, |seq, slot| {
            let h = &slot.header;
            match slot.state {
                DONE => true,
                ISSUED | FAILED => {
                    if h.kind.is_data() {
                        unfinished_data += 1;
                    }
                    // Nothing passes an unfinished barrier.
                    !is_barrier(h)
                }
                _ if is_barrier(h) => {
                    if seq == head_seq {
                        found = Some((seq, *slot));
                    }
                    false
                }
                _ if !h.kind.is_data() => {
                    // LOCK / UNLOCK: strictly in order, never blocking.
                    if seq == head_seq {
                        found = Some((seq, *slot));
                        return false;
                    }
                    true
                }
                _ => {
                    if unfinished_data == 0 || !self.blocked_by_overlap(seq, h) {
                        found = Some((seq, *slot));
                        return false;
                    }
                    unfinished_data += 1;
                    true
                }
            }
        });
        let (seq, slot) = found?;
        self.set_state(slot.pos, ISSUED);
        self.inflight += 1;
        Some(IssueView {
            seq,
            header: slot.header,
            payload_start: advance(slot.pos, HEADER_LEN, self.cap),
            cap: self.cap,
        })
    }

    /// Reports the end of an issued record. `ok == false` keeps it (state
    /// failed) for [`CommitLog::reissue_failed`]. Frees applied records
    /// from the head. Returns false if `seq` was not an issued record.
    pub fn complete(&mut self, seq: u64, ok: bool) -> bool {
        let mut target = None;
        self.walk(usize::MAX, |s, slot| {
            if s == seq {
                target = Some(*slot);
                return false;
            }
            s < seq
        });
        let Some(slot) = target else {
            return false;
        };
        if slot.state != ISSUED {
            return false;
        }
        self.set_state(slot.pos, if ok { DONE } else { FAILED });
        self.inflight = self.inflight.saturating_sub(1);
        self.free_done();
        true
    }

    fn free_done(&mut self) {
        while self.records > 0 {
            let Some(slot) = self.slot_at(self.head) else {
                return;
            };
            if slot.state != DONE {
                return;
            }
            self.head = advance(self.head, slot.len, self.cap);
            self.used -= slot.len;
            self.records -= 1;
            self.head_seq += 1;
        }
    }

    /// Makes every failed record pending again; returns how many.
    pub fn reissue_failed(&mut self) -> usize {
        let mut n = 0;
        let mut pos = self.head;
        for _ in 0..self.records {
            let Some(slot) = self.slot_at(pos) else {
                break;
            };
            if slot.state == FAILED {
                self.set_state(pos, PENDING);
                n += 1;
            }
            pos = advance(pos, slot.len, self.cap);
        }
        n
    }

    /// Discards the records from `seq` on that were never issued (used
    /// when the target rejects a lock and must drop the rest of the
    /// stream). Records already issued, done or failed, and everything
    /// before them, stay: the cut moves past the last of them. Returns the
    /// new `next_seq()`, the seq the source has to resend from.
    pub fn drop_from(&mut self, seq: u64) -> u64 {
        let mut cut = seq.max(self.head_seq);
        self.walk(usize::MAX, |s, slot| {
            if slot.state != PENDING && s >= cut {
                cut = s + 1;
            }
            true
        });
        if cut >= self.next_seq {
            return self.next_seq;
        }
        let mut bytes = 0usize;
        self.walk(usize::MAX, |s, slot| {
            if s >= cut {
                return false;
            }
            bytes += slot.len;
            true
        });
        // cut lies in [head_seq, next_seq), so the difference fits.
        self.records = (cut - self.head_seq) as usize;
        self.used = bytes;
        self.next_seq = cut;
        cut
    }

    /// True if an unapplied data record touches `[sector, sector+count)`:
    /// a read there must wait (reads take a lock, never speculatively).
    pub fn pending_in_range(&self, sector: u64, count: u64) -> bool {
        let end = sector.saturating_add(count);
        let mut hit = false;
        self.walk(usize::MAX, |_, slot| {
            let h = &slot.header;
            if h.kind.is_data() && slot.state != DONE {
                let h_end = h.sector.saturating_add(u64::from(h.count));
                if h.sector < end && sector < h_end {
                    hit = true;
                    return false;
                }
            }
            true
        });
        hit
    }

    /// Copies the payload of held record `seq` into `out`; returns its
    /// length, `None` if not held or `out` is too small.
    pub fn read_payload(&self, seq: u64, out: &mut [u8]) -> Option<usize> {
        let mut found = None;
        self.walk(usize::MAX, |s, slot| {
            if s == seq {
                found = Some(*slot);
            }
            s < seq
        });
        let slot = found?;
        let len = slot.header.len as usize;
        let dst = out.get_mut(..len)?;
        read_at(
            &self.pages,
            self.cap,
            advance(slot.pos, HEADER_LEN, self.cap),
            dst,
        )
        .ok()?;
        Some(len)
    }
}

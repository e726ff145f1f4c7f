//! Target-side commit log: received records, in seq order, until applied.
//!
//! Records are stored like in the rollback ring (header, padding to the
//! payload alignment, payload, back to back over caller pages; see
//! [`super::pages`]), so a WRITE's bio is built straight from the log's
//! pages. The first records from the head (the issue
//! window, as many as the caller gives [`WindowSlot`]s: [`SCAN_LIMIT`] by
//! default) are also kept decoded, with their state (pending, issued, done,
//! failed), in those slots: every record in flight lies in that window, so
//! `next_to_issue` costs O(window) cheap steps and `complete` O(1),
//! whatever the log's length; each stored header is decoded once, when its
//! record enters the window. No allocation: pages, window slots and the
//! region filter's counters are all caller storage, so the log itself is
//! small (a few hundred bytes) and never has to pass through a stack.
//!
//! Ordering rules enforced by [`CommitLog::next_to_issue`] (invariants I2 and I4, Documentation/dm-specmirror.rst):
//! - Data records (WRITE, DISCARD, WRITE_ZEROES) of one flush epoch may be
//!   in flight together, except that a record never starts while an
//!   earlier unfinished data record overlaps its sectors: overlapping
//!   writes land in stream order.
//! - A barrier (FLUSH, SYNC, or any record with `FLAG_PREFLUSH`) starts only when
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
//!
//! A record is stored whole by [`CommitLog::push`], or in two steps:
//! [`CommitLog::reserve`] stores its header and takes its place, the
//! receiver copies the payload into [`CommitLog::reserve`]'s pieces outside
//! the target's lock, then [`CommitLog::publish`] lets it enter the issue
//! window. At most one record is reserved at a time (one receiver), always
//! the last one; until it is published nothing issues or reads it, and
//! nothing else can be pushed.
//!
//! Every data record from its push until it is done (or dropped, or the
//! log reset) is counted in a [`RegionFilter`] over the target's regions
//! (its counters: the caller's `F`, a power-of-two length),
//! so [`CommitLog::may_be_pending`] answers "may an unapplied write touch
//! these regions?" in O(regions), where [`CommitLog::pending_in_range`]
//! (the exact answer) walks the whole log.

use core::ops::DerefMut;

use super::filter::{RegionFilter, DEFAULT_REGION_SHIFT};
use super::pages::{
    advance, capacity, header_pad, max_stored_len, read_at, stored_len, valid_payload_align,
    write_at, Pages, Spans, MIN_PAYLOAD_ALIGN,
};
use super::record::{decode_header, Header, Kind, FLAG_PREFLUSH, HEADER_LEN};

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
    /// A reserved record's payload is still being copied (one at a time).
    Unfilled,
    /// `payload.len()` differs from the header, or the header is invalid.
    BadLength,
    /// Only source-to-target records except HELLO belong in the log.
    BadKind,
    /// The payload alignment is not a power of two from 8 to `PAGE_SIZE`,
    /// or the log is not empty.
    Align,
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
    /// page of the log's storage and starting at a multiple of the log's
    /// payload alignment (empty for records without payload).
    pub fn chunks(&self) -> Spans {
        Spans::new(self.cap, self.payload_start, self.header.len as usize)
    }
}

// Per-record state, kept in the issue window (records past the window are
// all pending: nothing is issued outside it).
const PENDING: u8 = 0;
const ISSUED: u8 = 1;
const DONE: u8 = 2;
const FAILED: u8 = 3;

/// Default bound on records handed out and not yet completed (a log
/// whose window is shorter starts at the window's length instead).
pub const DEFAULT_MAX_INFLIGHT: usize = 64;
/// Default length of the issue window (the [`WindowSlot`]s callers give
/// [`CommitLog::new`]): how many records past the head `next_to_issue`
/// looks at, which bounds its cost when the head is stuck behind a slow
/// I/O. Every record in flight lies inside the window.
pub const SCAN_LIMIT: usize = 128;

/// Why [`CommitLog::new`] refused its storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// No window slot: nothing could ever be issued.
    NoWindowSlots,
    /// The region filter's bucket count is not a power of two (or zero).
    FilterBuckets,
}

/// One record of the issue window (caller storage element of
/// [`CommitLog`]): its header fields (the seq follows from the window
/// position), where it is stored and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSlot {
    pos: usize,
    sector: u64,
    count: u32,
    len: u32,
    flags: u16,
    kind: Kind,
    state: u8,
}

impl Default for WindowSlot {
    fn default() -> Self {
        WindowSlot::EMPTY
    }
}

impl WindowSlot {
    /// An unused slot, for initialising caller storage.
    pub const EMPTY: WindowSlot = WindowSlot {
        pos: 0,
        sector: 0,
        count: 0,
        len: 0,
        flags: 0,
        kind: Kind::Write,
        state: PENDING,
    };

    fn header(&self, seq: u64) -> Header {
        Header {
            kind: self.kind,
            flags: self.flags,
            seq,
            sector: self.sector,
            count: self.count,
            len: self.len,
        }
    }

    fn stored_len(&self, align: usize) -> usize {
        stored_len(self.pos, self.len as usize, align)
    }

    fn is_barrier(&self) -> bool {
        matches!(self.kind, Kind::Flush | Kind::Sync) || self.flags & FLAG_PREFLUSH != 0
    }

    /// An unfinished data record: later overlapping data waits for it.
    fn holds(&self, sector: u64, end: u64) -> bool {
        self.state != DONE
            && self.kind.has_range()
            && self.sector < end
            && sector < self.sector.saturating_add(u64::from(self.count))
    }
}

/// Target commit log over caller storage; see the module docs. `P` holds
/// the records, `W` the issue window (length >= 1), `F` the region
/// filter's counters (a power-of-two length).
pub struct CommitLog<P: Pages, W: DerefMut<Target = [WindowSlot]>, F: DerefMut<Target = [u32]>> {
    pages: P,
    cap: usize,
    align: usize,
    head: usize,
    used: usize,
    records: usize,
    head_seq: u64,
    next_seq: u64,
    inflight: usize,
    max_inflight: usize,
    /// Issue window: the first `win_len` records from the head, decoded
    /// once when they enter it; `win[win_head]` is record `head_seq`.
    win: W,
    win_head: usize,
    win_len: usize,
    /// Byte position of the first record past the window.
    win_next: usize,
    /// Regions of the data records held and not done (module docs).
    filter: RegionFilter<F>,
    /// The reserved record whose payload is being copied, if any: the
    /// last one held (module docs).
    unfilled: Option<(u64, Spans)>,
    /// Planted bug for the simulator: a reserved record enters the issue
    /// window before its payload is in
    /// ([`crate::transport::proto::mutant::Mutant::IssueUnfilled`]).
    #[cfg(feature = "mutants")]
    pub mutant_issue_unfilled: bool,
}

impl<P: Pages, W: DerefMut<Target = [WindowSlot]>, F: DerefMut<Target = [u32]>> CommitLog<P, W, F> {
    /// An empty log expecting `first_seq` next (seqs start at 1), over
    /// `pages`, the issue window `window` (its length is the window's, at
    /// least 1; [`SCAN_LIMIT`] is the usual) and the region filter's
    /// counters `filter_buckets` (a power of two, at least 1;
    /// [`crate::log::filter::FILTER_BUCKETS`] is the usual). Every slot and
    /// counter is cleared. At most `min(`[`DEFAULT_MAX_INFLIGHT`]`, window
    /// length)` records are in flight until
    /// [`CommitLog::set_max_inflight`].
    pub fn new(
        pages: P,
        mut window: W,
        filter_buckets: F,
        first_seq: u64,
    ) -> Result<Self, StorageError> {
        if window.is_empty() {
            return Err(StorageError::NoWindowSlots);
        }
        let filter = RegionFilter::new(filter_buckets, DEFAULT_REGION_SHIFT)
            .ok_or(StorageError::FilterBuckets)?;
        window.fill(WindowSlot::EMPTY);
        Ok(CommitLog {
            cap: capacity(&pages),
            align: MIN_PAYLOAD_ALIGN,
            pages,
            head: 0,
            used: 0,
            records: 0,
            head_seq: first_seq,
            next_seq: first_seq,
            inflight: 0,
            max_inflight: DEFAULT_MAX_INFLIGHT.min(window.len()),
            win: window,
            win_head: 0,
            win_len: 0,
            win_next: 0,
            filter,
            unfilled: None,
            #[cfg(feature = "mutants")]
            mutant_issue_unfilled: false,
        })
    }

    /// The storage, to resolve [`IssueView::chunks`] page indices.
    pub fn pages(&self) -> &P {
        &self.pages
    }

    /// Sets the alignment of payloads in the log (a power of two from 8,
    /// no padding, to `PAGE_SIZE`); only while the log is empty.
    pub fn set_payload_align(&mut self, align: usize) -> Result<(), CommitError> {
        if !valid_payload_align(align) || self.records != 0 {
            return Err(CommitError::Align);
        }
        self.align = align;
        Ok(())
    }

    /// The payload alignment.
    pub fn payload_align(&self) -> usize {
        self.align
    }

    /// Caps records in flight at `n`, clamped to 1..=window length (every
    /// record in flight lies in the issue window).
    pub fn set_max_inflight(&mut self, n: usize) {
        self.max_inflight = n.clamp(1, self.win.len().max(1));
    }

    /// The cap on records in flight ([`CommitLog::set_max_inflight`]).
    pub fn max_inflight(&self) -> usize {
        self.max_inflight
    }

    /// Length of the issue window (the caller's [`WindowSlot`]s).
    pub fn window_len(&self) -> usize {
        self.win.len()
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
        self.win_head = 0;
        self.win_len = 0;
        self.win_next = 0;
        self.filter.clear();
        self.unfilled = None;
    }

    /// Sets the region size of [`CommitLog::may_be_pending`] to
    /// `1 << shift` sectors (default: [`DEFAULT_REGION_SHIFT`]) and counts
    /// the records held anew: O(log length), for setup.
    pub fn set_region_shift(&mut self, shift: u32) {
        self.filter.reset_to(shift);
        for i in 0..self.win_len {
            if let Some(e) = self.entry(i).copied() {
                if e.state != DONE && e.kind.has_range() {
                    self.filter.add(e.sector, e.count);
                }
            }
        }
        let mut pos = self.win_next;
        for _ in self.win_len..self.records {
            let Some(h) = self.header_at(pos) else {
                // Records it cannot see must not read as absent.
                self.filter.poison();
                return;
            };
            if h.kind.has_range() {
                self.filter.add(h.sector, h.count);
            }
            pos = advance(pos, self.stored_at(pos, &h), self.cap);
        }
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
        let tail = advance(self.head, self.used, self.cap);
        stored_len(tail, payload_len, self.align) <= self.free_bytes()
    }

    /// Whether a record with `payload_len` bytes of payload could ever fit
    /// (in the empty log, wherever it landed).
    pub fn fits_ever(&self, payload_len: usize) -> bool {
        max_stored_len(payload_len, self.align) <= self.cap
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
        if hdr.len as usize != payload.len() {
            return Err(CommitError::BadLength);
        }
        let (at, stored) = self.place(hdr)?;
        write_at(&mut self.pages, self.cap, at, payload).map_err(|()| CommitError::Full)?;
        self.count_in(hdr, stored);
        Ok(())
    }

    /// Appends a received record whose payload (`hdr.len` bytes) the
    /// caller then copies into the returned pieces and publishes with
    /// [`CommitLog::publish`] (module docs). `Unfilled` while another
    /// record is reserved.
    pub fn reserve(&mut self, hdr: &Header) -> Result<Spans, CommitError> {
        if self.unfilled.is_some() {
            return Err(CommitError::Unfilled);
        }
        let (at, stored) = self.place(hdr)?;
        let spans = Spans::new(self.cap, at, hdr.len as usize);
        self.unfilled = Some((hdr.seq, spans));
        self.count_in(hdr, stored);
        Ok(spans)
    }

    /// Copies `payload` (exactly its length) into reserved record `seq`:
    /// what the kernel's receiver does outside the lock, for callers that
    /// hold the log (the simulator, tests). False if `seq` is not the
    /// reserved record or the length differs.
    pub fn fill_reserved(&mut self, seq: u64, payload: &[u8]) -> bool {
        match self.unfilled {
            Some((s, spans)) if s == seq && spans.remaining() == payload.len() => {
                write_at(&mut self.pages, self.cap, spans.pos, payload).is_ok()
            }
            _ => false,
        }
    }

    /// Reserved record `seq`'s payload is in: it may be issued. False if
    /// it is not the reserved record (dropped or reset meanwhile: the
    /// bytes copied sit in free space).
    pub fn publish(&mut self, seq: u64) -> bool {
        if self.unfilled.map(|(s, _)| s) != Some(seq) {
            return false;
        }
        self.unfilled = None;
        self.fill();
        true
    }

    /// The reserved record whose payload is awaited, if any.
    pub fn unfilled(&self) -> Option<u64> {
        self.unfilled.map(|(s, _)| s)
    }

    /// Checks a record for the tail and stores its header there; returns
    /// where its payload goes and the bytes it takes. Counts nothing.
    fn place(&mut self, hdr: &Header) -> Result<(usize, usize), CommitError> {
        if !hdr.kind.is_from_source() || hdr.kind == Kind::Hello {
            return Err(CommitError::BadKind);
        }
        if hdr.validate().is_err() {
            return Err(CommitError::BadLength);
        }
        if hdr.seq < self.next_seq {
            return Err(CommitError::Duplicate);
        }
        if hdr.seq > self.next_seq {
            return Err(CommitError::Gap);
        }
        if self.unfilled.is_some() {
            return Err(CommitError::Unfilled);
        }
        let len = hdr.len as usize;
        if !self.fits_ever(len) {
            return Err(CommitError::TooLarge);
        }
        let tail = advance(self.head, self.used, self.cap);
        let stored = stored_len(tail, len, self.align);
        if stored > self.free_bytes() {
            return Err(CommitError::Full);
        }
        self.next_seq.checked_add(1).ok_or(CommitError::Full)?;
        let mut hb = [0u8; HEADER_LEN];
        hdr.encode(&mut hb);
        write_at(&mut self.pages, self.cap, tail, &hb).map_err(|()| CommitError::Full)?;
        Ok((advance(tail, HEADER_LEN + header_pad(tail, self.align), self.cap), stored))
    }

    /// Counts the record `place` stored in.
    fn count_in(&mut self, hdr: &Header, stored: usize) {
        self.used += stored;
        self.records += 1;
        self.next_seq += 1;
        if hdr.kind.has_range() {
            self.filter.add(hdr.sector, hdr.count);
        }
        self.fill();
    }

    /// Bytes the record with header `h` stored at `pos` occupies.
    fn stored_at(&self, pos: usize, h: &Header) -> usize {
        stored_len(pos, h.len as usize, self.align)
    }

    /// Position of the payload of the record stored at `pos`.
    fn payload_at(&self, pos: usize) -> usize {
        advance(pos, HEADER_LEN + header_pad(pos, self.align), self.cap)
    }

    /// Decodes the stored header at byte position `pos`.
    fn header_at(&self, pos: usize) -> Option<Header> {
        let mut hb = [0u8; HEADER_LEN];
        read_at(&self.pages, self.cap, pos, &mut hb).ok()?;
        decode_header(&hb).ok().map(|(h, _)| h)
    }

    /// Slot of window position `k` counted from slot 0, modulo the
    /// window's length (never 0: `new` refuses an empty window). Callers
    /// pass `k < 2 * len` (a slot plus an offset inside the window): one
    /// subtraction, no division on the hot path.
    fn wrap(&self, k: usize) -> usize {
        let n = self.win.len();
        match k.checked_sub(n) {
            None => k,
            Some(d) if d < n => d,
            Some(d) => d.checked_rem(n).unwrap_or(0),
        }
    }

    fn win_idx(&self, i: usize) -> usize {
        self.wrap(self.win_head + i)
    }

    /// Window entry `i` (record `head_seq + i`), if inside the window.
    fn entry(&self, i: usize) -> Option<&WindowSlot> {
        if i >= self.win_len {
            return None;
        }
        self.win.get(self.win_idx(i))
    }

    fn entry_mut(&mut self, i: usize) -> Option<&mut WindowSlot> {
        if i >= self.win_len {
            return None;
        }
        let k = self.win_idx(i);
        self.win.get_mut(k)
    }

    /// Window index of `seq`, if it is inside the window.
    fn index_of(&self, seq: u64) -> Option<usize> {
        let d = seq.checked_sub(self.head_seq)?;
        if d < self.win_len as u64 {
            Some(d as usize)
        } else {
            None
        }
    }

    /// Extends the window over stored records (one header decode per
    /// record over its whole life in the log).
    fn fill(&mut self) {
        while self.win_len < self.win.len() && self.win_len < self.records {
            #[cfg(feature = "mutants")]
            let held = !self.mutant_issue_unfilled;
            #[cfg(not(feature = "mutants"))]
            let held = true;
            if held && self.unfilled() == Some(self.head_seq + self.win_len as u64) {
                // Its payload is not in yet.
                return;
            }
            let pos = self.win_next;
            let Some(h) = self.header_at(pos) else {
                return;
            };
            let e = WindowSlot {
                pos,
                sector: h.sector,
                count: h.count,
                len: h.len,
                flags: h.flags,
                kind: h.kind,
                state: PENDING,
            };
            let k = self.win_idx(self.win_len);
            let Some(slot) = self.win.get_mut(k) else {
                return;
            };
            *slot = e;
            self.win_len += 1;
            self.win_next = advance(pos, e.stored_len(self.align), self.cap);
        }
    }

    /// True if an unfinished data record before window entry `i` overlaps
    /// `[sector, end)`. Walks back from `i`: a conflict with a close
    /// predecessor (the usual case for overlapping writes) ends it early.
    fn blocked(&self, i: usize, sector: u64, end: u64) -> bool {
        (0..i)
            .rev()
            .any(|j| self.entry(j).is_some_and(|e| e.holds(sector, end)))
    }

    /// Hands out the next record that may start now under the ordering
    /// rules (module docs) and marks it issued; `None` if nothing may.
    pub fn next_to_issue(&mut self) -> Option<IssueView> {
        self.next_to_issue_if(|_| true)
    }

    /// Like [`CommitLog::next_to_issue`], but only hands out a record for
    /// which `ok(header)` holds. A record the caller turns down stays
    /// pending and keeps blocking what it blocks (a barrier everything
    /// after it, a data record later overlapping data); LOCK / UNLOCK turned
    /// down keep their turn and never block data. `ok` is asked only about
    /// records the ordering rules would let start now, at most once per
    /// record per call. Cost: O(window length) cheap steps, no header
    /// decoding beyond records entering the window.
    pub fn next_to_issue_if(&mut self, ok: impl FnMut(&Header) -> bool) -> Option<IssueView> {
        if self.inflight >= self.max_inflight {
            return None;
        }
        self.fill();
        let (i, seq, e) = self.find_issuable(ok)?;
        if let Some(m) = self.entry_mut(i) {
            m.state = ISSUED;
        }
        self.inflight += 1;
        Some(IssueView {
            seq,
            header: e.header(seq),
            payload_start: self.payload_at(e.pos),
            cap: self.cap,
        })
    }

    /// Whether [`CommitLog::next_to_issue_if`] with `ok` would hand a
    /// record out now (it changes nothing). Records not yet in the window
    /// count once the window has room for them.
    pub fn can_issue_if(&self, ok: impl FnMut(&Header) -> bool) -> bool {
        if self.inflight >= self.max_inflight {
            return false;
        }
        // The window is always full (every push and every freed head
        // record fill it), so nothing past it could start instead.
        self.find_issuable(ok).is_some()
    }

    /// The first record that may start now under the ordering rules and
    /// `ok` (module docs), among those in the window.
    fn find_issuable(&self, mut ok: impl FnMut(&Header) -> bool) -> Option<(usize, u64, WindowSlot)> {
        for i in 0..self.win_len {
            let e = self.entry(i).copied()?;
            let seq = self.head_seq.checked_add(i as u64)?;
            match e.state {
                DONE => continue,
                ISSUED | FAILED => {
                    // Nothing passes an unfinished barrier.
                    if e.is_barrier() {
                        return None;
                    }
                    continue;
                }
                _ => {}
            }
            if e.is_barrier() {
                // Starts only once every earlier record is done (it is
                // then the head); nothing after it starts before it.
                if i == 0 && ok(&e.header(seq)) {
                    return Some((i, seq, e));
                }
                return None;
            }
            if !e.kind.has_range() {
                // LOCK / UNLOCK: strictly in order, never blocking.
                if i == 0 && ok(&e.header(seq)) {
                    return Some((i, seq, e));
                }
                continue;
            }
            let end = e.sector.saturating_add(u64::from(e.count));
            if !self.blocked(i, e.sector, end) && ok(&e.header(seq)) {
                return Some((i, seq, e));
            }
        }
        None
    }

    /// The header of issued (or failed) record `seq`.
    pub fn issued_header(&self, seq: u64) -> Option<Header> {
        let i = self.index_of(seq)?;
        let e = self.entry(i)?;
        (e.state == ISSUED || e.state == FAILED).then(|| e.header(seq))
    }

    /// Reports the end of an issued record. `ok == false` keeps it (state
    /// failed) for [`CommitLog::reissue_failed`]. Frees applied records
    /// from the head. Returns false if `seq` was not an issued record.
    /// O(1) plus the records freed.
    pub fn complete(&mut self, seq: u64, ok: bool) -> bool {
        let Some(i) = self.index_of(seq) else {
            return false;
        };
        let Some(e) = self.entry_mut(i) else {
            return false;
        };
        if e.state != ISSUED {
            return false;
        }
        e.state = if ok { DONE } else { FAILED };
        let (data, sector, count) = (e.kind.has_range(), e.sector, e.count);
        if ok && data {
            // Done: no longer pending, even before it is freed.
            self.filter.remove(sector, count);
        }
        self.inflight = self.inflight.saturating_sub(1);
        self.free_done();
        true
    }

    fn free_done(&mut self) {
        while let Some(e) = self.entry(0).copied() {
            if e.state != DONE {
                break;
            }
            let len = e.stored_len(self.align);
            self.head = advance(self.head, len, self.cap);
            self.used = self.used.saturating_sub(len);
            self.records = self.records.saturating_sub(1);
            self.head_seq += 1;
            self.win_head = self.wrap(self.win_head + 1);
            self.win_len -= 1;
        }
        self.fill();
    }

    /// Makes every failed record pending again; returns how many.
    /// O(window length).
    pub fn reissue_failed(&mut self) -> usize {
        let mut n = 0;
        for i in 0..self.win_len {
            if let Some(e) = self.entry_mut(i) {
                if e.state == FAILED {
                    e.state = PENDING;
                    n += 1;
                }
            }
        }
        n
    }

    /// Byte position of held record `head_seq + i` (`i <= records`; the
    /// position after the last record for `i == records`). Records past
    /// the window are found by walking their headers.
    fn pos_of(&self, i: usize) -> Option<usize> {
        if let Some(e) = self.entry(i) {
            return Some(e.pos);
        }
        if i > self.records || i < self.win_len {
            return None;
        }
        let mut pos = self.win_next;
        for _ in self.win_len..i {
            let h = self.header_at(pos)?;
            pos = advance(pos, self.stored_at(pos, &h), self.cap);
        }
        Some(pos)
    }

    /// Discards the records from `seq` on that were never issued (used
    /// when the target rejects a lock and must drop the rest of the
    /// stream). Records already issued, done or failed, and everything
    /// before them, stay: the cut moves past the last of them. Returns the
    /// new `next_seq()`, the seq the source has to resend from.
    pub fn drop_from(&mut self, seq: u64) -> u64 {
        let mut cut = seq.max(self.head_seq);
        for i in 0..self.win_len {
            let Some(e) = self.entry(i) else {
                break;
            };
            let s = self.head_seq + i as u64;
            if e.state != PENDING && s >= cut {
                cut = s + 1;
            }
        }
        if cut >= self.next_seq {
            return self.next_seq;
        }
        if self.unfilled().is_some_and(|u| u >= cut) {
            // Dropped before its payload was in: its publication fails.
            self.unfilled = None;
        }
        // cut lies in [head_seq, next_seq), so the difference fits.
        let keep = (cut - self.head_seq) as usize;
        let Some(pos) = self.pos_of(keep) else {
            return self.next_seq;
        };
        self.uncount_from(keep, pos);
        // Fewer than all records stay, so they fill less than the ring.
        let bytes = if pos >= self.head {
            pos - self.head
        } else {
            self.cap - self.head + pos
        };
        self.records = keep;
        self.used = bytes;
        self.next_seq = cut;
        if keep <= self.win_len {
            self.win_len = keep;
            self.win_next = pos;
        }
        cut
    }

    /// Takes the records from held record `head_seq + i` on (stored from
    /// byte `pos`; all pending) out of the filter, before `drop_from`
    /// forgets them. O(records dropped). A header that does not decode
    /// leaves the rest counted: false positives only.
    fn uncount_from(&mut self, i: usize, mut pos: usize) {
        for _ in i..self.records {
            let Some(h) = self.header_at(pos) else {
                return;
            };
            if h.kind.has_range() {
                self.filter.remove(h.sector, h.count);
            }
            pos = advance(pos, self.stored_at(pos, &h), self.cap);
        }
    }

    /// False if no unapplied data record touches a region in
    /// `first..=last` (regions of `1 << shift` sectors, see
    /// [`CommitLog::set_region_shift`]); true if one may. False positives
    /// happen, false negatives never: wherever
    /// [`CommitLog::pending_in_range`] over those regions is true, so is
    /// this. O(regions, at most the filter's bucket count), whatever the
    /// log's length.
    pub fn may_be_pending(&self, first: u64, last: u64) -> bool {
        self.filter.may_pend(first, last)
    }

    /// The filter behind [`CommitLog::may_be_pending`] (read-only; clear
    /// whenever no data record is pending).
    pub fn region_filter(&self) -> &RegionFilter<F> {
        &self.filter
    }

    /// True if an unapplied data record touches `[sector, sector+count)`:
    /// a read there must wait (reads take a lock, never speculatively).
    /// Walks every held record past the window (O(log length)): the exact
    /// reference for [`CommitLog::may_be_pending`].
    pub fn pending_in_range(&self, sector: u64, count: u64) -> bool {
        let end = sector.saturating_add(count);
        if (0..self.win_len).any(|i| self.entry(i).is_some_and(|e| e.holds(sector, end))) {
            return true;
        }
        let mut pos = self.win_next;
        for _ in self.win_len..self.records {
            let Some(h) = self.header_at(pos) else {
                return false;
            };
            if h.kind.has_range()
                && h.sector < end
                && sector < h.sector.saturating_add(u64::from(h.count))
            {
                return true;
            }
            pos = advance(pos, self.stored_at(pos, &h), self.cap);
        }
        false
    }

    /// Copies the payload of held record `seq` into `out`; returns its
    /// length, `None` if not held or `out` is too small.
    pub fn read_payload(&self, seq: u64, out: &mut [u8]) -> Option<usize> {
        let i = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        if i >= self.records {
            return None;
        }
        let pos = self.pos_of(i)?;
        let len = match self.entry(i) {
            Some(e) => e.len as usize,
            None => self.header_at(pos)?.len as usize,
        };
        let dst = out.get_mut(..len)?;
        read_at(&self.pages, self.cap, self.payload_at(pos), dst).ok()?;
        Some(len)
    }
}

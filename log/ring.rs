//! Source-side rollback ring: every record stays here, encoded and sealed,
//! until the target acknowledges it, so anything the target rejects or
//! receives corrupted can be replayed byte for byte (invariant I3, Documentation/dm-specmirror.rst).
//!
//! Records (header, padding to the payload alignment, payload: see
//! [`super::pages`]) are stored back to back in a byte ring over caller
//! pages; a record may span pages and wrap. Three cursors move forward
//! over it:
//!
//! ```text
//!   oldest (head) ...... send cursor ...... next (tail)
//!   |<- sent, unacked ->|<-- not yet sent -->|<-- free -->|
//! ```
//!
//! `ack` moves the head, `advance_send` / `rewind` the send cursor, `append`
//! the tail. Sequence numbers are assigned here, consecutive, so a seq
//! names a record for NAK, LOCK_REJECTED and resume after reconnect.
//!
//! A record is either appended whole (`append`: header, payload and CRC
//! under one `&mut`), or reserved and published later. `reserve` writes
//! the header and takes the record's place and seq; the caller then fills
//! the payload bytes ([`Reserved::payload`]) outside the lock that guards
//! the ring, chaining the CRC from [`Reserved::seed_crc`], and `publish`
//! seals it. Until then the record is *pending*: the send cursor stops in
//! front of it and `ack` never frees it, so nothing reads the bytes being
//! written and nothing else is stored over them. Up to
//! [`MAX_PENDING`] records may be pending at once, published in any order.

pub use super::pages::{FrameSpans, Pages, Spans, PAGE_SIZE};

use super::pages::{
    advance, capacity, crc_at, header_pad, max_stored_len, read_at, stored_len, valid_payload_align,
    write_at, MIN_PAYLOAD_ALIGN,
};
use super::record::{decode_header, Crc32c, DecodeError, Header, HEADER_LEN, MAX_PAYLOAD, OFF_CRC};

/// Why a ring operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// Not enough free space now; retry after acks (back-pressure).
    Full,
    /// The record can never fit: payload above `MAX_PAYLOAD`, frame larger
    /// than the whole ring, or (read_frame) larger than the output buffer.
    TooLarge,
    /// The fill closure wrote more or fewer bytes than announced.
    LengthMismatch,
    /// The seq is not in the ring (rewind/read outside `[oldest, next]`).
    UnknownSeq,
    /// The header is not a valid record (see [`Header::validate`]).
    BadHeader(DecodeError),
    /// The `Pages` impl failed to return a page it counted: a bug in the
    /// storage, reported instead of panicking.
    Storage,
    /// The payload alignment is not a power of two from 8 to `PAGE_SIZE`,
    /// or the ring is not empty.
    Align,
    /// As many records as allowed are reserved and not yet published;
    /// retry after a [`RollbackRing::publish`].
    Busy,
    /// The seq is not a pending reservation (publish of an unknown or
    /// already published record).
    NotPending,
}

/// Most records reserved and not yet published at once: one per CPU
/// filling a host write, and some room for preemption.
pub const MAX_PENDING: usize = 32;

/// A record reserved by [`RollbackRing::reserve`]: its header is stored,
/// its payload bytes are the caller's to write until
/// [`RollbackRing::publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The record's sequence number.
    pub seq: u64,
    payload: Spans,
    seed: u32,
}

impl Reserved {
    /// Where the payload goes: `(page index, offset, len)` pieces, each
    /// inside one page, in order.
    pub fn payload(&self) -> Spans {
        self.payload
    }

    /// The CRC of the header as stored (its CRC field zero): extend it
    /// with the payload's bytes as they are in the ring, in order, and pass
    /// the result to [`RollbackRing::publish`].
    pub fn seed_crc(&self) -> u32 {
        self.seed
    }
}

/// A pending record: its seq, where its header is, its seed CRC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pending {
    seq: u64,
    pos: usize,
    seed: u32,
}

/// A record placed at the tail but not yet counted (see `place`).
struct Placed {
    seq: u64,
    tail: usize,
    stored: usize,
    payload_pos: usize,
    seed: u32,
}

/// A stored record, as seen at the send cursor or looked up by seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView {
    /// The record's sequence number.
    pub seq: u64,
    /// Its decoded header (CRC not included).
    pub header: Header,
    /// Bytes of the whole encoded frame (header + payload), as sent.
    pub frame_len: usize,
    /// Bytes it occupies in the ring (padding included).
    pub stored_len: usize,
    start: usize,
    payload_start: usize,
    cap: usize,
}

impl RecordView {
    /// The frame's bytes as `(page index, offset, len)` pieces in wire
    /// order (header, then payload), each inside one page; the kernel
    /// sends them zero-copy.
    pub fn chunks(&self) -> FrameSpans {
        FrameSpans {
            header: Spans::new(self.cap, self.start, HEADER_LEN),
            payload: self.payload_chunks(),
        }
    }

    /// The payload's pieces alone, each starting at a multiple of the
    /// ring's payload alignment: a bio can write them as they are.
    pub fn payload_chunks(&self) -> Spans {
        Spans::new(
            self.cap,
            self.payload_start,
            self.frame_len.saturating_sub(HEADER_LEN),
        )
    }
}

/// Writes one record's payload into the ring piece by piece (the kernel
/// copies a bio segment at a time) while chaining the frame CRC.
pub struct RingWriter<'a, P: Pages> {
    pages: &'a mut P,
    c: &'a dyn Crc32c,
    cap: usize,
    pos: usize,
    left: usize,
    crc: u32,
}

impl<P: Pages> RingWriter<'_, P> {
    /// Appends `data` to the payload. Fails with `LengthMismatch` if it
    /// would exceed the announced payload length.
    pub fn write(&mut self, data: &[u8]) -> Result<(), RingError> {
        if data.len() > self.left {
            return Err(RingError::LengthMismatch);
        }
        let start = self.pos;
        self.pos =
            write_at(self.pages, self.cap, self.pos, data).map_err(|()| RingError::Storage)?;
        self.left -= data.len();
        // Over the ring's copy, not `data`: in the kernel `data` is the
        // bio's page, which the host may change after the copy (O_DIRECT
        // from a buffer it keeps writing). A CRC over it could disagree
        // with the bytes sent, and every resend would be rejected.
        self.crc = crc_at(&*self.pages, self.c, self.cap, start, data.len(), self.crc)
            .map_err(|()| RingError::Storage)?;
        Ok(())
    }

    /// Payload bytes still expected.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

/// Where a record is stored: a token from [`RollbackRing::send_cursor`]
/// for [`RollbackRing::views_at`], valid while that record is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    seq: u64,
    pos: usize,
}

impl Cursor {
    /// The seq of the record it points at.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// FIFO of sealed frames over caller pages; see the module docs.
pub struct RollbackRing<P: Pages> {
    pages: P,
    cap: usize,
    align: usize,
    head: usize,
    used: usize,
    records: usize,
    oldest_seq: u64,
    send_pos: usize,
    send_seq: u64,
    /// One past the highest seq ever sent: acks never free beyond it, so a
    /// bogus ack cannot drop a record the target never saw.
    sent_hwm: u64,
    next_seq: u64,
    /// Reserved records not yet published (`pending[..npending]`, any
    /// order), at most `max_pending` of them.
    pending: [Pending; MAX_PENDING],
    npending: usize,
    max_pending: usize,
    /// Planted bug for the simulator: send pending records
    /// ([`crate::transport::proto::mutant::Mutant::SendPending`]).
    #[cfg(feature = "mutants")]
    pub mutant_send_pending: bool,
}

impl<P: Pages> RollbackRing<P> {
    /// An empty ring over `pages`; the first appended record gets
    /// `first_seq` (use 1 and up: 0 means "nothing" in ACK/HELLO).
    pub fn new(pages: P, first_seq: u64) -> Self {
        let cap = capacity(&pages);
        RollbackRing {
            pages,
            cap,
            align: MIN_PAYLOAD_ALIGN,
            head: 0,
            used: 0,
            records: 0,
            oldest_seq: first_seq,
            send_pos: 0,
            send_seq: first_seq,
            sent_hwm: first_seq,
            next_seq: first_seq,
            pending: [Pending::default(); MAX_PENDING],
            npending: 0,
            max_pending: MAX_PENDING,
            #[cfg(feature = "mutants")]
            mutant_send_pending: false,
        }
    }

    /// Caps the records pending at once to `n` (1 to [`MAX_PENDING`]; the
    /// simulator uses small caps to reach [`RingError::Busy`]).
    pub fn set_max_pending(&mut self, n: usize) {
        self.max_pending = n.clamp(1, MAX_PENDING);
    }

    /// Whether a [`RollbackRing::reserve`] would find a pending slot.
    pub fn can_reserve(&self) -> bool {
        self.npending < self.max_pending
    }

    /// Records reserved and not yet published.
    pub fn pending_records(&self) -> usize {
        self.npending
    }

    /// Whether record `seq` is reserved and not yet published.
    pub fn is_pending(&self, seq: u64) -> bool {
        self.pending_at(seq).is_some()
    }

    /// Whether the send cursor stops at record `seq`: while it is pending
    /// (unless the planted bug says otherwise).
    fn send_held(&self, seq: u64) -> bool {
        #[cfg(feature = "mutants")]
        if self.mutant_send_pending {
            return false;
        }
        self.is_pending(seq)
    }

    fn pending_at(&self, seq: u64) -> Option<usize> {
        self.pending
            .get(..self.npending)?
            .iter()
            .position(|p| p.seq == seq)
    }

    /// Bytes of a frame with `payload_len` payload bytes on the wire.
    pub fn frame_len(payload_len: usize) -> usize {
        HEADER_LEN.saturating_add(payload_len)
    }

    /// Sets the alignment of payloads in the ring (a power of two from 8,
    /// no padding, to `PAGE_SIZE`); only while the ring is empty.
    pub fn set_payload_align(&mut self, align: usize) -> Result<(), RingError> {
        if !valid_payload_align(align) || self.records != 0 {
            return Err(RingError::Align);
        }
        self.align = align;
        Ok(())
    }

    /// The payload alignment.
    pub fn payload_align(&self) -> usize {
        self.align
    }

    /// Most bytes a record with `payload_len` payload bytes occupies in
    /// this ring, wherever it lands (padding included).
    pub fn max_stored_len(&self, payload_len: usize) -> usize {
        max_stored_len(payload_len, self.align)
    }

    /// Total bytes of storage.
    pub fn capacity_bytes(&self) -> usize {
        self.cap
    }

    /// Bytes held by records not yet acknowledged.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Bytes available for appends.
    pub fn free_bytes(&self) -> usize {
        self.cap - self.used
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Number of records held (sent or not).
    pub fn len_records(&self) -> usize {
        self.records
    }

    /// Seq the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seq of the oldest record held, `None` when empty.
    pub fn oldest_seq(&self) -> Option<u64> {
        if self.records == 0 {
            None
        } else {
            Some(self.oldest_seq)
        }
    }

    /// Seq of the next record to send (`next_seq()` when all are sent).
    pub fn send_seq(&self) -> u64 {
        self.send_seq
    }

    /// One past the highest seq ever sent (or skipped): a record below it
    /// may be on the target, one at or above it never left this ring.
    pub fn sent_hwm(&self) -> u64 {
        self.sent_hwm
    }

    /// Records between the send cursor and the tail.
    pub fn unsent_records(&self) -> u64 {
        self.next_seq - self.send_seq
    }

    /// The storage, e.g. for the kernel to map a span's page index to its
    /// `struct page` when sending zero-copy.
    pub fn pages(&self) -> &P {
        &self.pages
    }

    /// Gives the storage back (e.g. to free the pages on teardown).
    pub fn into_pages(self) -> P {
        self.pages
    }

    /// Position of the tail (where the next record is stored).
    fn tail(&self) -> usize {
        advance(self.head, self.used, self.cap)
    }

    /// Whether a record with `payload_len` payload bytes fits right now.
    pub fn can_append(&self, payload_len: usize) -> bool {
        payload_len <= MAX_PAYLOAD
            && stored_len(self.tail(), payload_len, self.align) <= self.free_bytes()
    }

    /// Checks a new record and stores its header (CRC field zero) at the
    /// tail, without counting it: nothing changes until the caller commits
    /// it with `commit`, so an error leaves the ring as it was.
    fn place(&mut self, c: &dyn Crc32c, hdr: Header, payload_len: usize) -> Result<Placed, RingError> {
        if payload_len > MAX_PAYLOAD {
            return Err(RingError::TooLarge);
        }
        if self.max_stored_len(payload_len) > self.cap {
            return Err(RingError::TooLarge);
        }
        let seq = self.next_seq;
        seq.checked_add(1).ok_or(RingError::Full)?;
        let mut h = hdr;
        h.seq = seq;
        // payload_len <= MAX_PAYLOAD, which fits u32.
        h.len = payload_len as u32;
        h.validate().map_err(RingError::BadHeader)?;
        let tail = self.tail();
        let stored = stored_len(tail, payload_len, self.align);
        if stored > self.free_bytes() {
            return Err(RingError::Full);
        }
        let mut hb = [0u8; HEADER_LEN];
        h.encode(&mut hb);
        write_at(&mut self.pages, self.cap, tail, &hb).map_err(|()| RingError::Storage)?;
        Ok(Placed {
            seq,
            tail,
            stored,
            payload_pos: advance(tail, HEADER_LEN + header_pad(tail, self.align), self.cap),
            seed: c.crc32c(0, &hb),
        })
    }

    /// Counts the placed record in: the tail moves past it.
    fn commit(&mut self, p: &Placed) {
        self.used += p.stored;
        self.records += 1;
        self.next_seq = p.seq + 1;
    }

    /// Writes the sealed CRC of the record whose header is at `pos`.
    fn seal(&mut self, pos: usize, crc: u32) -> Result<(), RingError> {
        let crc_pos = advance(pos, OFF_CRC, self.cap);
        write_at(&mut self.pages, self.cap, crc_pos, &crc.to_le_bytes())
            .map(|_| ())
            .map_err(|()| RingError::Storage)
    }

    /// Appends one record. `hdr.seq` and `hdr.len` are overwritten (seq is
    /// assigned, len is `payload_len`); the rest must form a valid header.
    /// `fill` must write exactly `payload_len` bytes through the writer;
    /// on any error nothing is appended (the bytes already copied sit in
    /// free space and are overwritten later). Returns the assigned seq.
    pub fn append<F>(
        &mut self,
        c: &impl Crc32c,
        hdr: Header,
        payload_len: usize,
        fill: F,
    ) -> Result<u64, RingError>
    where
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        let dc: &dyn Crc32c = c;
        let p = self.place(dc, hdr, payload_len)?;
        let crc = self.write_payload(dc, p.payload_pos, payload_len, p.seed, fill)?;
        self.seal(p.tail, crc)?;
        self.commit(&p);
        Ok(p.seq)
    }

    /// Runs `fill` over `len` payload bytes at `pos`, chaining the CRC
    /// from `seed`; the CRC once exactly `len` bytes were written.
    fn write_payload<F>(
        &mut self,
        c: &dyn Crc32c,
        pos: usize,
        len: usize,
        seed: u32,
        fill: F,
    ) -> Result<u32, RingError>
    where
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        let mut w = RingWriter {
            crc: seed,
            pages: &mut self.pages,
            c,
            cap: self.cap,
            pos,
            left: len,
        };
        fill(&mut w)?;
        if w.left != 0 {
            return Err(RingError::LengthMismatch);
        }
        Ok(w.crc)
    }

    /// Reserves one record with `payload_len` payload bytes (header rules
    /// as in [`RollbackRing::append`]): its header is stored, its seq
    /// taken, and it is pending until [`RollbackRing::publish`]. `Busy`
    /// when [`RollbackRing::can_reserve`] is false.
    pub fn reserve(
        &mut self,
        c: &impl Crc32c,
        hdr: Header,
        payload_len: usize,
    ) -> Result<Reserved, RingError> {
        if !self.can_reserve() {
            return Err(RingError::Busy);
        }
        let p = self.place(c, hdr, payload_len)?;
        let slot = self.pending.get_mut(self.npending).ok_or(RingError::Busy)?;
        *slot = Pending {
            seq: p.seq,
            pos: p.tail,
            seed: p.seed,
        };
        self.npending += 1;
        self.commit(&p);
        Ok(Reserved {
            seq: p.seq,
            payload: Spans::new(self.cap, p.payload_pos, payload_len),
            seed: p.seed,
        })
    }

    /// The reservation of pending record `seq` again (`None` if it is not
    /// pending).
    pub fn reserved(&self, seq: u64) -> Option<Reserved> {
        let p = *self.pending.get(self.pending_at(seq)?)?;
        let v = self.view_at(seq, p.pos).ok()?;
        Some(Reserved {
            seq,
            payload: v.payload_chunks(),
            seed: p.seed,
        })
    }

    /// Writes the payload of pending record `seq` through `fill` (exactly
    /// its length) and returns its CRC for [`RollbackRing::publish`]: what
    /// the kernel does outside the lock, for callers that hold the ring.
    pub fn fill_reserved<F>(&mut self, c: &impl Crc32c, r: &Reserved, fill: F) -> Result<u32, RingError>
    where
        F: FnOnce(&mut RingWriter<'_, P>) -> Result<(), RingError>,
    {
        if !self.is_pending(r.seq) {
            return Err(RingError::NotPending);
        }
        let pos = r.payload.pos;
        let len = r.payload.left;
        self.write_payload(c, pos, len, r.seed, fill)
    }

    /// Seals pending record `seq` with `crc` (its header and payload as
    /// stored: [`Reserved::seed_crc`] extended with the payload): from now
    /// on it may be sent and, once acknowledged, freed.
    pub fn publish(&mut self, seq: u64, crc: u32) -> Result<(), RingError> {
        let i = self.pending_at(seq).ok_or(RingError::NotPending)?;
        let pos = self.pending.get(i).ok_or(RingError::NotPending)?.pos;
        self.seal(pos, crc)?;
        let last = self.npending - 1;
        self.pending.swap(i, last);
        self.npending = last;
        Ok(())
    }

    /// Header and stored length of the record stored at byte `pos`.
    fn header_at(&self, pos: usize) -> Result<(Header, usize), RingError> {
        let mut hb = [0u8; HEADER_LEN];
        read_at(&self.pages, self.cap, pos, &mut hb).map_err(|()| RingError::Storage)?;
        // Only validated headers are ever stored, so failure means the
        // storage changed under us.
        let (h, _) = decode_header(&hb).map_err(|_| RingError::Storage)?;
        Ok((h, stored_len(pos, h.len as usize, self.align)))
    }

    /// Byte position of record `seq` (`seq == next_seq` gives the tail).
    fn pos_of(&self, seq: u64) -> Result<usize, RingError> {
        if seq < self.oldest_seq || seq > self.next_seq {
            return Err(RingError::UnknownSeq);
        }
        // Walk from the send cursor when it is on the way: the common
        // rewind targets sit near it. Otherwise from the head.
        let (mut pos, mut s) = if seq >= self.send_seq {
            (self.send_pos, self.send_seq)
        } else {
            (self.head, self.oldest_seq)
        };
        while s < seq {
            let (_, len) = self.header_at(pos)?;
            pos = advance(pos, len, self.cap);
            s += 1;
        }
        Ok(pos)
    }

    fn view_at(&self, seq: u64, pos: usize) -> Result<RecordView, RingError> {
        let (header, stored_len) = self.header_at(pos)?;
        Ok(RecordView {
            seq,
            header,
            frame_len: header.frame_len(),
            stored_len,
            start: pos,
            payload_start: advance(pos, HEADER_LEN + header_pad(pos, self.align), self.cap),
            cap: self.cap,
        })
    }

    /// The record at the send cursor, `None` when everything is sent or
    /// the next record is pending (not yet published).
    pub fn peek_send(&self) -> Option<RecordView> {
        if self.send_seq >= self.next_seq || self.send_held(self.send_seq) {
            return None;
        }
        self.view_at(self.send_seq, self.send_pos).ok()
    }

    /// Moves the send cursor past the record `peek_send` returned (no-op
    /// when everything is sent).
    pub fn advance_send(&mut self) {
        if self.send_seq >= self.next_seq || self.send_held(self.send_seq) {
            return;
        }
        if let Ok((_, len)) = self.header_at(self.send_pos) {
            self.send_pos = advance(self.send_pos, len, self.cap);
            self.send_seq += 1;
            if self.send_seq > self.sent_hwm {
                self.sent_hwm = self.send_seq;
            }
        }
    }

    /// Cumulative acknowledgement: frees every record with seq <= `upto`.
    /// Clamped to records that were sent at least once (a target cannot
    /// have applied what it never got), so stale or bogus acks are
    /// harmless, and stops at a pending record (its bytes are being
    /// written). If the send cursor had been rewound below `upto`, it moves
    /// forward with the head: the target already has those records.
    /// Returns the number of records freed.
    pub fn ack(&mut self, upto: u64) -> usize {
        let mut freed = 0;
        while self.records > 0
            && self.oldest_seq <= upto
            && self.oldest_seq < self.sent_hwm
            && !self.is_pending(self.oldest_seq)
        {
            let Ok((_, len)) = self.header_at(self.head) else {
                break;
            };
            let cursor_here = self.send_seq == self.oldest_seq;
            self.head = advance(self.head, len, self.cap);
            self.used -= len;
            self.records -= 1;
            self.oldest_seq += 1;
            if cursor_here {
                self.send_seq = self.oldest_seq;
                self.send_pos = self.head;
            }
            freed += 1;
        }
        freed
    }

    /// Moves the send cursor forward to `seq` (in `[send_seq, next_seq]`)
    /// as if the records before it had been sent: the source dropped them
    /// (degraded mode: their chunks are marked dirty instead), so a later
    /// [`RollbackRing::ack`] up to them frees them. A `seq` at or before
    /// the send cursor changes nothing.
    pub fn skip_to(&mut self, seq: u64) -> Result<(), RingError> {
        if seq <= self.send_seq {
            return Ok(());
        }
        let pos = self.pos_of(seq)?;
        self.send_pos = pos;
        self.send_seq = seq;
        if seq > self.sent_hwm {
            self.sent_hwm = seq;
        }
        Ok(())
    }

    /// Moves the send cursor to `seq`, which must lie in
    /// `[oldest, next_seq]` (NAK, LOCK_REJECTED, resume after reconnect).
    pub fn rewind(&mut self, seq: u64) -> Result<(), RingError> {
        let pos = self.pos_of(seq)?;
        self.send_pos = pos;
        self.send_seq = seq;
        Ok(())
    }

    /// Where the record at the send cursor is stored.
    pub fn send_cursor(&self) -> Cursor {
        Cursor {
            seq: self.send_seq,
            pos: self.send_pos,
        }
    }

    /// Where the oldest record held is stored (the start of
    /// [`RollbackRing::views_at`] over every record held).
    pub fn oldest_cursor(&self) -> Cursor {
        Cursor {
            seq: self.oldest_seq,
            pos: self.head,
        }
    }

    /// The `count` records from `at` on, in order, walking the ring once
    /// (stops early at the tail or at a record no longer held).
    pub fn views_at(&self, at: Cursor, count: usize) -> impl Iterator<Item = RecordView> + '_ {
        let mut cur = at;
        let mut left = count;
        core::iter::from_fn(move || {
            if left == 0 || cur.seq < self.oldest_seq || cur.seq >= self.next_seq {
                return None;
            }
            let v = self.view_at(cur.seq, cur.pos).ok()?;
            cur = Cursor {
                seq: cur.seq + 1,
                pos: advance(cur.pos, v.stored_len, self.cap),
            };
            left -= 1;
            Some(v)
        })
    }

    /// The stored record `seq`, if held.
    pub fn view(&self, seq: u64) -> Option<RecordView> {
        if seq >= self.next_seq {
            return None;
        }
        let pos = self.pos_of(seq).ok()?;
        self.view_at(seq, pos).ok()
    }

    /// Header of the stored record `seq`, if held.
    pub fn header_of(&self, seq: u64) -> Option<Header> {
        self.view(seq).map(|v| v.header)
    }

    /// Copies the sealed frame `seq` (header and payload, as sent) into
    /// `out`; returns its length.
    pub fn read_frame(&self, seq: u64, out: &mut [u8]) -> Result<usize, RingError> {
        let v = self.view(seq).ok_or(RingError::UnknownSeq)?;
        let dst = out.get_mut(..v.frame_len).ok_or(RingError::TooLarge)?;
        let (hdr, payload) = dst.split_at_mut(HEADER_LEN.min(v.frame_len));
        read_at(&self.pages, self.cap, v.start, hdr).map_err(|()| RingError::Storage)?;
        read_at(&self.pages, self.cap, v.payload_start, payload)
            .map_err(|()| RingError::Storage)?;
        Ok(v.frame_len)
    }

    /// The sealed header bytes of record `seq`.
    pub fn header_bytes(&self, seq: u64) -> Option<[u8; HEADER_LEN]> {
        let v = self.view(seq)?;
        let mut hb = [0u8; HEADER_LEN];
        read_at(&self.pages, self.cap, v.start, &mut hb).ok()?;
        Some(hb)
    }
}

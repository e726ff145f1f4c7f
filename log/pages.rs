//! Caller-provided page storage seen as one circular byte array.
//!
//! Both rings (the source's rollback ring and the target's commit log) keep
//! records back to back in a byte ring laid over fixed pages. The kernel
//! hands in `alloc_page()`d pages (so frames can be sent zero-copy page by
//! page), tests a `Vec` of boxed arrays. Byte position `p` lives in page
//! `p / PAGE_SIZE` at offset `p % PAGE_SIZE`; the ring wraps at
//! `page_count * PAGE_SIZE`.
//!
//! A stored record is its 40-byte header, then (for records with a
//! payload) padding up to the next multiple of the ring's payload
//! alignment, then the payload:
//!
//! ```text
//!   pos                      payload start (multiple of align)
//!   | header | pad (0..align-8) | payload ................ | next record
//! ```
//!
//! The padding is never sent or checksummed (the frame on the wire is
//! header + payload), but it lets a block device write the payload
//! straight from the ring's pages: every piece of it starts on a sector
//! (or logical block) boundary and is a whole number of them, which
//! drivers and DMA require. The ring's capacity is a multiple of
//! `PAGE_SIZE`, hence of every alignment, so the rule holds across the
//! wrap.

use super::record::{Crc32c, HEADER_LEN};

/// Bytes per storage page (the kernel's PAGE_SIZE on the supported arches).
pub const PAGE_SIZE: usize = 4096;

/// Smallest payload alignment: every stored position is a multiple of 8
/// (headers are 40 bytes, payloads whole sectors), so 8 means no padding.
pub const MIN_PAYLOAD_ALIGN: usize = 8;

/// Payload alignment for storage a block device writes from: one sector.
/// Devices with larger logical blocks use their block size.
pub const SECTOR_ALIGN: usize = 512;

/// True if `align` can be a ring's payload alignment: a power of two from
/// [`MIN_PAYLOAD_ALIGN`] to [`PAGE_SIZE`].
pub fn valid_payload_align(align: usize) -> bool {
    align.is_power_of_two() && (MIN_PAYLOAD_ALIGN..=PAGE_SIZE).contains(&align)
}

/// Padding between a header stored at `pos` and its payload, so that the
/// payload starts at a multiple of `align` (a valid payload alignment).
pub(crate) fn header_pad(pos: usize, align: usize) -> usize {
    let end = pos.wrapping_add(HEADER_LEN) & (align.wrapping_sub(1));
    if end == 0 {
        0
    } else {
        align - end
    }
}

/// Bytes a record with `payload_len` payload bytes occupies when stored at
/// `pos` (header, padding, payload; no padding without a payload).
pub(crate) fn stored_len(pos: usize, payload_len: usize, align: usize) -> usize {
    if payload_len == 0 {
        HEADER_LEN
    } else {
        HEADER_LEN
            .saturating_add(header_pad(pos, align))
            .saturating_add(payload_len)
    }
}

/// Most bytes a record with `payload_len` payload bytes may occupy,
/// wherever it is stored.
pub fn max_stored_len(payload_len: usize, align: usize) -> usize {
    if payload_len == 0 {
        HEADER_LEN
    } else {
        HEADER_LEN
            .saturating_add(align.saturating_sub(MIN_PAYLOAD_ALIGN))
            .saturating_add(payload_len)
    }
}

/// Fixed set of equally sized pages. Page indices are stable for the
/// lifetime of the ring: the kernel sends spans of them by index.
pub trait Pages {
    /// Number of pages.
    fn page_count(&self) -> usize;
    /// Page `i`, `None` if out of range.
    fn page(&self, i: usize) -> Option<&[u8; PAGE_SIZE]>;
    /// Page `i` for writing, `None` if out of range.
    fn page_mut(&mut self, i: usize) -> Option<&mut [u8; PAGE_SIZE]>;
    /// Bytes `off..off + len` of page `i` (`None` if out of range). The
    /// rings reach their pages only through these two: the kernel's
    /// storage borrows just these bytes, because another CPU may be
    /// filling a reserved record elsewhere in the same page meanwhile.
    fn bytes(&self, i: usize, off: usize, len: usize) -> Option<&[u8]> {
        self.page(i)?.get(off..off.checked_add(len)?)
    }
    /// Bytes `off..off + len` of page `i` for writing (see [`Pages::bytes`]).
    fn bytes_mut(&mut self, i: usize, off: usize, len: usize) -> Option<&mut [u8]> {
        self.page_mut(i)?.get_mut(off..off.checked_add(len)?)
    }
}

/// Usable ring capacity in bytes: the leading pages that really exist.
/// Counting them once up front means a later `None` from `page()` can only
/// come from a broken `Pages` impl, never from our own arithmetic.
pub(crate) fn capacity<P: Pages>(p: &P) -> usize {
    let mut n = 0usize;
    while n < p.page_count() && p.bytes(n, 0, 0).is_some() {
        n += 1;
    }
    n.saturating_mul(PAGE_SIZE)
}

/// `(pos + n) mod cap` for `pos < cap`, `n <= cap`, without overflow.
pub(crate) fn advance(pos: usize, n: usize, cap: usize) -> usize {
    let room = cap.saturating_sub(pos);
    if n >= room {
        n - room
    } else {
        pos + n
    }
}

/// Copies `data` into the ring at `pos` (wrapping). Returns the position
/// after it, or `Err(())` if `data` is longer than the ring or a page is
/// missing.
pub(crate) fn write_at<P: Pages>(
    p: &mut P,
    cap: usize,
    pos: usize,
    data: &[u8],
) -> Result<usize, ()> {
    if data.len() > cap {
        return Err(());
    }
    let mut pos = pos;
    let mut rest = data;
    for (page, off, n) in (Spans {
        cap,
        pos,
        left: data.len(),
    }) {
        let (now, later) = rest.split_at(n.min(rest.len()));
        let dst = p.bytes_mut(page, off, n).ok_or(())?;
        if dst.len() != now.len() {
            return Err(());
        }
        dst.copy_from_slice(now);
        rest = later;
        pos = advance(pos, n, cap);
    }
    Ok(pos)
}

/// Extends `crc` with the `len` bytes of the ring at byte `pos`, read from
/// the pages themselves: what the ring holds (and sends) is what the CRC
/// covers, whatever happened to the bytes they were copied from.
pub(crate) fn crc_at<P: Pages>(
    p: &P,
    c: &dyn Crc32c,
    cap: usize,
    pos: usize,
    len: usize,
    crc: u32,
) -> Result<u32, ()> {
    if len > cap {
        return Err(());
    }
    let mut crc = crc;
    for (page, off, n) in (Spans {
        cap,
        pos,
        left: len,
    }) {
        let src = p.bytes(page, off, n).ok_or(())?;
        crc = c.crc32c(crc, src);
    }
    Ok(crc)
}

/// Copies `out.len()` bytes out of the ring starting at `pos` (wrapping).
pub(crate) fn read_at<P: Pages>(p: &P, cap: usize, pos: usize, out: &mut [u8]) -> Result<(), ()> {
    if out.len() > cap {
        return Err(());
    }
    let mut rest = out;
    for (page, off, n) in (Spans {
        cap,
        pos,
        left: rest.len(),
    }) {
        let len = rest.len();
        let (now, later) = core::mem::take(&mut rest).split_at_mut(n.min(len));
        let src = p.bytes(page, off, n).ok_or(())?;
        if src.len() != now.len() {
            return Err(());
        }
        now.copy_from_slice(src);
        rest = later;
    }
    Ok(())
}

/// Iterator over the `(page index, offset in page, length)` pieces of a
/// byte range of the ring; every piece lies inside one page, so the kernel
/// can hand each one to the socket (or a bio) as a page fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spans {
    pub(crate) cap: usize,
    pub(crate) pos: usize,
    pub(crate) left: usize,
}

impl Iterator for Spans {
    type Item = (usize, usize, usize);

    fn next(&mut self) -> Option<(usize, usize, usize)> {
        if self.left == 0 || self.cap == 0 || self.pos >= self.cap {
            return None;
        }
        let page = self.pos / PAGE_SIZE;
        let off = self.pos % PAGE_SIZE;
        // cap is a multiple of PAGE_SIZE, so staying inside the page also
        // keeps the piece inside the ring.
        let n = self.left.min(PAGE_SIZE - off);
        self.left -= n;
        self.pos = advance(self.pos, n, self.cap);
        Some((page, off, n))
    }
}

impl Spans {
    /// The pieces of `len` bytes from `pos` in a ring of `cap` bytes.
    pub(crate) fn new(cap: usize, pos: usize, len: usize) -> Spans {
        Spans {
            cap,
            pos,
            left: len,
        }
    }

    /// Bytes not yet yielded.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

/// The pieces of a stored frame as it goes on the wire: the header's, then
/// the payload's (the padding between them is skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpans {
    pub(crate) header: Spans,
    pub(crate) payload: Spans,
}

impl Iterator for FrameSpans {
    type Item = (usize, usize, usize);

    fn next(&mut self) -> Option<(usize, usize, usize)> {
        self.header.next().or_else(|| self.payload.next())
    }
}

//! Caller-provided page storage seen as one circular byte array.
//!
//! Both rings (the source's rollback ring and the target's commit log) keep
//! frames back to back in a byte ring laid over fixed pages. The kernel
//! hands in `alloc_page()`d pages (so frames can be sent zero-copy page by
//! page), tests a `Vec` of boxed arrays. Byte position `p` lives in page
//! `p / PAGE_SIZE` at offset `p % PAGE_SIZE`; the ring wraps at
//! `page_count * PAGE_SIZE`.

/// Bytes per storage page (the kernel's PAGE_SIZE on the supported arches).
pub const PAGE_SIZE: usize = 4096;

/// Fixed set of equally sized pages. Page indices are stable for the
/// lifetime of the ring: the kernel sends spans of them by index.
pub trait Pages {
    /// Number of pages.
    fn page_count(&self) -> usize;
    /// Page `i`, `None` if out of range.
    fn page(&self, i: usize) -> Option<&[u8; PAGE_SIZE]>;
    /// Page `i` for writing, `None` if out of range.
    fn page_mut(&mut self, i: usize) -> Option<&mut [u8; PAGE_SIZE]>;
}

/// Usable ring capacity in bytes: the leading pages that really exist.
/// Counting them once up front means a later `None` from `page()` can only
/// come from a broken `Pages` impl, never from our own arithmetic.
pub(crate) fn capacity<P: Pages>(p: &P) -> usize {
    let mut n = 0usize;
    while n < p.page_count() && p.page(n).is_some() {
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
        let dst = p
            .page_mut(page)
            .and_then(|pg| pg.get_mut(off..off + n))
            .ok_or(())?;
        if dst.len() != now.len() {
            return Err(());
        }
        dst.copy_from_slice(now);
        rest = later;
        pos = advance(pos, n, cap);
    }
    Ok(pos)
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
        let src = p.page(page).and_then(|pg| pg.get(off..off + n)).ok_or(())?;
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
/// can hand each one to the socket as a page fragment.
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

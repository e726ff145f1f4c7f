// SPDX-License-Identifier: GPL-2.0

//! Framing on a kernel socket, shared by both roles: read one whole frame
//! (header, then the payload length it announces), or a stream of them
//! with as few socket calls as possible; random bytes for nonces.

use kernel::{alloc::VVec, prelude::*};

use super::net::Socket;
use super::raw;
use crate::log::record::{decode_header, HEADER_LEN};

/// Why no frame could be read.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// The connection failed or was shut down.
    Io,
    /// The header does not decode: the byte stream cannot be trusted.
    Header,
    /// The frame is longer than the caller accepts here.
    TooLong,
}

/// The [`RecvError`] for a failed socket read.
fn io_error(_: Error) -> RecvError {
    RecvError::Io
}

/// Reads one frame into `buf` and returns its length. Sleeps until it
/// came or the connection failed (or was shut down).
pub(crate) fn recv_frame(sock: &Socket, buf: &mut [u8]) -> Result<usize, RecvError> {
    read_frame(buf, |b| sock.recv_exact(b).map_err(io_error))
}

/// One frame into `buf`: the header, then the payload it announces, each
/// read whole by `fill`.
fn read_frame(buf: &mut [u8], mut fill: impl FnMut(&mut [u8]) -> Result<(), RecvError>) -> Result<usize, RecvError> {
    let hdr = buf.get_mut(..HEADER_LEN).ok_or(RecvError::TooLong)?;
    fill(hdr)?;
    let (h, _) = decode_header(hdr).map_err(|_| RecvError::Header)?;
    let len = h.frame_len();
    let rest = buf.get_mut(HEADER_LEN..len).ok_or(RecvError::TooLong)?;
    fill(rest)?;
    Ok(len)
}

/// Reads a stream of frames with as few socket calls as possible: each
/// read takes whatever has arrived (many small records at once), and the
/// caller handles every complete frame in the buffer before reading again.
///
/// # Invariants
///
/// `start <= end <= buf.len()`; `buf[start..end]` holds received bytes
/// not yet consumed.
pub(crate) struct FrameReader {
    buf: VVec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    /// A reader whose buffer holds `cap` bytes (at least the largest
    /// frame the caller accepts).
    pub(crate) fn new(cap: usize) -> Result<Self> {
        let buf = VVec::from_elem(0u8, cap, GFP_KERNEL)?;
        // INVARIANT: empty.
        Ok(FrameReader { buf, start: 0, end: 0 })
    }

    /// The length of the complete frame at the front, `None` if it has not
    /// fully arrived yet.
    pub(crate) fn peek(&self) -> Result<Option<usize>, RecvError> {
        let have = self.buf.get(self.start..self.end).unwrap_or(&[]);
        if have.len() < HEADER_LEN {
            return Ok(None);
        }
        let (h, _) = decode_header(have).map_err(|_| RecvError::Header)?;
        let len = h.frame_len();
        if len > self.buf.len() {
            return Err(RecvError::TooLong);
        }
        Ok((have.len() >= len).then_some(len))
    }

    /// The first `len` buffered bytes (a frame [`FrameReader::peek`] found).
    pub(crate) fn front(&self, len: usize) -> &[u8] {
        self.buf.get(self.start..self.start.saturating_add(len).min(self.end)).unwrap_or(&[])
    }

    /// Drops the first `len` buffered bytes.
    pub(crate) fn consume(&mut self, len: usize) {
        // INVARIANT: stays within `start..=end`.
        self.start = self.start.saturating_add(len).min(self.end);
    }

    /// Waits for more bytes from `sock`. Sleeps.
    pub(crate) fn fill(&mut self, sock: &Socket) -> Result<(), RecvError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() || self.buf.len() - self.end < HEADER_LEN {
            // Move the partial frame to the front to make room.
            self.buf.as_mut_slice().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = self.buf.as_mut_slice().get_mut(self.end..).ok_or(RecvError::TooLong)?;
        let n = sock.recv_some(room).map_err(|_| RecvError::Io)?;
        // INVARIANT: recv_some wrote `n <= room.len()` bytes after `end`.
        self.end += n;
        Ok(())
    }
}

/// A fresh random non-zero `u64` (stream and data generations).
pub(crate) fn random_u64() -> u64 {
    let mut n = [0u8; 8];
    // SAFETY: `n` is valid for writes of its length.
    unsafe { raw::dmsm_get_random_bytes(n.as_mut_ptr().cast(), n.len()) };
    u64::from_le_bytes(n).max(1)
}

/// Fresh random bytes for a new connection's nonces.
pub(crate) fn random() -> [u8; crate::transport::proto::CONN_RANDOM] {
    let mut n = [0u8; crate::transport::proto::CONN_RANDOM];
    // SAFETY: `n` is valid for writes of its length.
    unsafe { raw::dmsm_get_random_bytes(n.as_mut_ptr().cast(), n.len()) };
    n
}

// SPDX-License-Identifier: GPL-2.0

//! Framing on a kernel socket, shared by both roles: read one whole frame
//! (header, then the payload length it announces), send a small frame,
//! make a nonce.

use kernel::prelude::*;

use super::net::Socket;
use crate::dm::raw;
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

/// Reads one frame into `buf` and returns its length. Sleeps.
pub(crate) fn recv_frame(sock: &Socket, buf: &mut [u8]) -> Result<usize, RecvError> {
    let hdr = buf.get_mut(..HEADER_LEN).ok_or(RecvError::TooLong)?;
    sock.recv_exact(hdr).map_err(|_| RecvError::Io)?;
    let (h, _) = decode_header(hdr).map_err(|_| RecvError::Header)?;
    let len = h.frame_len();
    let rest = buf.get_mut(HEADER_LEN..len).ok_or(RecvError::TooLong)?;
    sock.recv_exact(rest).map_err(|_| RecvError::Io)?;
    Ok(len)
}

/// Sixteen random bytes for a handshake challenge.
pub(crate) fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    // SAFETY: `n` is valid for writes of its length.
    unsafe { raw::dmsm_get_random_bytes(n.as_mut_ptr().cast(), n.len()) };
    n
}

/// Reconnect back-off: doubles from 100 ms up to 5 s.
pub(crate) struct Backoff {
    ms: u32,
}

/// First and largest reconnect delay.
const BACKOFF_MIN_MS: u32 = 100;
const BACKOFF_MAX_MS: u32 = 5000;

impl Backoff {
    /// Starts at the shortest delay.
    pub(crate) fn new() -> Self {
        Backoff { ms: BACKOFF_MIN_MS }
    }

    /// The delay to wait now; the next one is twice as long (capped).
    pub(crate) fn next_ms(&mut self) -> u32 {
        let d = self.ms;
        self.ms = self.ms.saturating_mul(2).min(BACKOFF_MAX_MS);
        d
    }

    /// After a successful handshake.
    pub(crate) fn reset(&mut self) {
        self.ms = BACKOFF_MIN_MS;
    }
}

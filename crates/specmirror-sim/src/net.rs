//! The network between the two hosts: TCP connections as ordered frame
//! pipes with latency, bandwidth, a window (bytes sent and not yet read
//! by the peer; a sender beyond it blocks), corruption, stalls (packets
//! held until the link works again) and breaks (both ends see errors).

use std::collections::{BTreeMap, VecDeque};

/// Direction: source to target.
pub const TO_TARGET: usize = 0;
/// Direction: target to source.
pub const TO_SOURCE: usize = 1;

/// One direction of a connection.
#[derive(Default)]
pub struct Pipe {
    /// Frames on the wire: (arrival time, bytes).
    pub flight: VecDeque<(u64, Vec<u8>)>,
    /// Frames arrived, not yet read.
    pub ready: VecDeque<Vec<u8>>,
    /// Bytes sent and not yet read.
    pub unread: u64,
    /// When the wire is free for the next frame.
    pub wire_free: u64,
}

/// One TCP connection.
pub struct Conn {
    /// The two directions.
    pub pipes: [Pipe; 2],
    /// Reset or shut down: reads (once `ready` is drained) and writes fail.
    pub broken: bool,
}

/// Every connection, by number.
#[derive(Default)]
pub struct Net {
    /// Live connections.
    pub conns: BTreeMap<u64, Conn>,
    next: u64,
}

impl Net {
    /// A new connection; returns its number.
    pub fn open(&mut self) -> u64 {
        self.next += 1;
        self.conns.insert(
            self.next,
            Conn {
                pipes: [Pipe::default(), Pipe::default()],
                broken: false,
            },
        );
        self.next
    }

    /// Breaks a connection (reset or shut down): what was sent and not
    /// read is lost.
    pub fn break_conn(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.broken = true;
            for p in c.pipes.iter_mut() {
                p.flight.clear();
                p.ready.clear();
                p.unread = 0;
            }
        }
    }

    /// Whether `id` is broken (or gone).
    pub fn is_broken(&self, id: u64) -> bool {
        self.conns.get(&id).is_none_or(|c| c.broken)
    }

    /// The pipe of `id` in direction `dir`.
    pub fn pipe(&mut self, id: u64, dir: usize) -> Option<&mut Pipe> {
        self.conns
            .get_mut(&id)
            .filter(|c| !c.broken)
            .and_then(|c| c.pipes.get_mut(dir))
    }

    /// Forgets connections nobody uses any more.
    pub fn reap(&mut self, keep: &[u64]) {
        self.conns.retain(|id, _| keep.contains(id));
    }
}

//! The life of one piece that the worker reads from the source's device
//! and then appends a record for: the resync's pieces (`resync.rs`) and
//! verify's (`verify.rs`) go through the same states, and host writes to
//! the piece wait from the read's start to the append.
//!
//! ```text
//!   Idle --start--> Reading --ended(ok)--> Read --appended--> Idle
//!                                           \--no ring room: waits for
//!                                              the next unblock
//! ```

/// Where a piece is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State<J> {
    Idle,
    /// The glue reads the piece into the engine's buffer.
    Reading(J),
    /// The read ended (`ok`); the worker appends the record.
    Read(J, bool),
}

/// One engine's piece in flight, if any.
///
/// # Invariants
///
/// - `wait_gen` is `Some` only in `Read`: the `unblock_gen` at which the
///   append last found no ring room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Piece<J> {
    state: State<J>,
    wait_gen: Option<u64>,
}

impl<J: Copy> Piece<J> {
    /// No piece.
    pub(super) const IDLE: Piece<J> = Piece {
        state: State::Idle,
        wait_gen: None,
    };

    /// Whether no piece is in flight.
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// The piece from its read's start to its append (host writes to it
    /// wait).
    pub(super) fn busy(&self) -> Option<J> {
        match self.state {
            State::Idle => None,
            State::Reading(j) | State::Read(j, _) => Some(j),
        }
    }

    /// Whether its read is in flight (the worker may not exit).
    pub(super) fn is_reading(&self) -> bool {
        matches!(self.state, State::Reading(_))
    }

    /// The read that was read and not appended, if any.
    pub(super) fn read(&self) -> Option<(J, bool)> {
        match self.state {
            State::Read(j, ok) => Some((j, ok)),
            _ => None,
        }
    }

    /// The append the worker should try now: a failed read at once, a
    /// good one unless it waits for ring room no unblock has freed yet.
    pub(super) fn append_due(&self, unblock_gen: u64) -> Option<(J, bool)> {
        match self.state {
            State::Read(j, ok) if !ok || self.wait_gen != Some(unblock_gen) => Some((j, ok)),
            _ => None,
        }
    }

    /// The worker starts reading `job`.
    pub(super) fn start(&mut self, job: J) {
        self.state = State::Reading(job);
        self.wait_gen = None;
    }

    /// The read ended (any context).
    pub(super) fn ended(&mut self, ok: bool) {
        if let State::Reading(j) = self.state {
            self.state = State::Read(j, ok);
            self.wait_gen = None;
        }
    }

    /// The append found no ring room at `unblock_gen`.
    pub(super) fn wait(&mut self, unblock_gen: u64) {
        self.wait_gen = Some(unblock_gen);
    }

    /// Appended, given up, or to be read again: no piece.
    pub(super) fn done(&mut self) {
        *self = Self::IDLE;
    }

    /// The threads stopped: a piece read but not appended is read again
    /// after the next start. True if there was one.
    pub(super) fn stopped(&mut self) -> bool {
        if let State::Read(..) = self.state {
            self.done();
            return true;
        }
        false
    }
}

//! Reconnect back-off: the delay before the next connection attempt.

use super::wake::{Instant, MS};

/// First reconnect delay.
pub const BACKOFF_MIN: Instant = 100 * MS;
/// Largest reconnect delay.
pub const BACKOFF_MAX: Instant = 5_000 * MS;

/// Doubles from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`]; starts over after a
/// healthy connection (see the source's link rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Instant,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// Starts at the shortest delay.
    pub const fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    /// The delay to wait now; the next one is twice as long (capped).
    pub fn next_delay(&mut self) -> Instant {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(BACKOFF_MAX);
        d
    }

    /// Back to the shortest delay.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

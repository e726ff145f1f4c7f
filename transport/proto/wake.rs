//! Which kernel thread has work: the core's answer, so that no wake-up is
//! the glue's guess.
//!
//! Every thread of a role that sleeps on a wait queue is a *sleeper*. A
//! thread asks its machine for its next step under the state lock; when
//! the answer is "sleep", the machine marks it asleep. At the end of every
//! critical section (whoever ran it: a thread, `map`, a bio completion, a
//! message) the glue calls the machine's `take_wakes`, which returns the
//! sleepers that are asleep and now have work, and marks them awake; the
//! glue wakes exactly those. A thread is therefore woken at most once per
//! sleep (batched wake-ups), and never misses work: `has_work` is the one
//! predicate both the step function and the wake-up use.
//!
//! Time is a monotonic count of nanoseconds ([`Instant`]): `ktime_get` in
//! the kernel, virtual time in the simulator. A sleeping step carries the
//! instant its timer fires, if any; the glue sleeps until then at most and
//! asks again. When another context sets a deadline a sleeper must watch
//! (a failed write's retry, a suspend's grace, a new connection's
//! keepalive), it *rearms* that sleeper: the sleeper is woken to sleep
//! again with the new deadline.

/// Monotonic time in nanoseconds.
pub type Instant = u64;

/// One millisecond in [`Instant`] units.
pub const MS: Instant = 1_000_000;

/// One second in [`Instant`] units.
pub const SEC: Instant = 1_000 * MS;

/// A set of sleepers (bit `i` is sleeper number `i` of the role).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wakes(u8);

impl Wakes {
    /// No sleeper.
    pub const NONE: Wakes = Wakes(0);

    /// The set holding sleeper `i` alone.
    pub const fn one(i: u8) -> Wakes {
        Wakes(1 << (i & 7))
    }

    /// Whether sleeper `i` is in the set.
    pub fn contains(self, i: u8) -> bool {
        self.0 & (1 << (i & 7)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Union.
    pub fn with(self, other: Wakes) -> Wakes {
        Wakes(self.0 | other.0)
    }

    /// The sleepers in the set, lowest number first.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..8u8).filter(move |i| self.contains(*i))
    }
}

/// Which sleepers are asleep (marked by their step functions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sleepers {
    asleep: u8,
    rearm: u8,
}

impl Sleepers {
    /// Sleeper `i` is running (it asked for its next step).
    pub(crate) fn running(&mut self, i: u8) {
        self.asleep &= !(1 << (i & 7));
        self.rearm &= !(1 << (i & 7));
    }

    /// A deadline sleeper `i` watches changed: wake it so that it sleeps
    /// again until the new one.
    pub(crate) fn rearm(&mut self, i: u8) {
        self.rearm |= 1 << (i & 7);
    }

    /// Sleeper `i` goes to sleep (its step function answered "sleep").
    pub(crate) fn sleep(&mut self, i: u8) {
        self.asleep |= 1 << (i & 7);
    }

    /// Whether sleeper `i` is asleep.
    pub(crate) fn is_asleep(&self, i: u8) -> bool {
        self.asleep & (1 << (i & 7)) != 0
    }

    /// The sleepers among `0..n` that are asleep and for which
    /// `has_work` holds; marks them awake.
    pub(crate) fn take(&mut self, n: u8, mut has_work: impl FnMut(u8) -> bool) -> Wakes {
        let mut w = 0u8;
        for i in 0..n.min(8) {
            if self.is_asleep(i) && (self.rearm & (1 << i) != 0 || has_work(i)) {
                w |= 1 << i;
            }
        }
        self.asleep &= !w;
        self.rearm &= !w;
        Wakes(w)
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Whether the deadline `at` has passed at `now`.
pub fn due(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|t| now >= t)
}

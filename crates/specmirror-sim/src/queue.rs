//! The simulator's event queue: events in time order, ties in the order
//! they were scheduled.
//!
//! A binary heap of small keys (time, order, slot) over a slab of events.
//! The heap is the simulator's hottest structure (a seed keeps a thousand
//! or more events pending), and moving 24-byte keys instead of whole
//! events through every sift made it markedly cheaper. Keys are unique
//! (`order` never repeats), so the order events come out in is exactly
//! that of a heap of the events themselves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Pending events of type `E`.
pub struct Queue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue { heap: BinaryHeap::new(), slab: Vec::new(), free: Vec::new() }
    }
}

impl<E> Queue<E> {
    /// Schedules `e` at time `t`; `order` breaks ties and must be unique.
    pub fn push(&mut self, t: u64, order: u64, e: E) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(e);
                s
            }
            None => {
                self.slab.push(Some(e));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((t, order, slot)));
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let Reverse((t, _, slot)) = self.heap.pop()?;
        self.free.push(slot);
        self.slab[slot as usize].take().map(|e| (t, e))
    }

    /// Drops every pending event for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        let (slab, free) = (&mut self.slab, &mut self.free);
        self.heap.retain(|Reverse((_, _, slot))| {
            let s = *slot as usize;
            if slab[s].as_ref().is_some_and(&mut keep) {
                return true;
            }
            slab[s] = None;
            free.push(*slot);
            false
        });
    }

    /// How many events are pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;
    use crate::rng::Rng;

    /// Same order out as a heap of whole events, across pushes, pops and
    /// retains interleaved.
    #[test]
    fn same_order_as_a_heap_of_events() {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut rng = Rng::new(11);
        let mut q = Queue::default();
        let mut h: BinaryHeap<Reverse<(u64, u64, u64)>> = BinaryHeap::new();
        let mut order = 0;
        for _ in 0..20_000 {
            match rng.below(10) {
                0..=5 => {
                    order += 1;
                    let (t, e) = (rng.below(50), rng.next_u64());
                    q.push(t, order, e);
                    h.push(Reverse((t, order, e)));
                }
                6..=8 => {
                    assert_eq!(q.pop(), h.pop().map(|Reverse((t, _, e))| (t, e)));
                }
                _ => {
                    let m = rng.below(3) + 2;
                    q.retain(|e| e % m != 0);
                    h.retain(|Reverse((_, _, e))| e % m != 0);
                }
            }
            assert_eq!(q.len(), h.len());
        }
        while let Some(x) = h.pop() {
            assert_eq!(q.pop(), Some((x.0 .0, x.0 .2)));
        }
        assert!(q.is_empty());
    }
}

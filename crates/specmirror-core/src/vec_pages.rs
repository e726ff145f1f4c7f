//! Heap page storage for userspace users of the core (tests, simulator,
//! fuzzing). The kernel module has its own `Pages` over real pages; this
//! file is not part of it.

extern crate alloc;

use crate::log::ring::{Pages, PAGE_SIZE};
use alloc::{boxed::Box, vec::Vec};

/// `n` boxed 4 KiB pages.
pub struct VecPages(pub Vec<Box<[u8; PAGE_SIZE]>>);

impl VecPages {
    /// `n` zeroed pages.
    pub fn new(n: usize) -> Self {
        Self::filled(n, 0)
    }

    /// `n` pages with every byte `fill` (non-zero, stale bytes never look
    /// like a zeroed header).
    pub fn filled(n: usize, fill: u8) -> Self {
        VecPages((0..n).map(|_| Box::new([fill; PAGE_SIZE])).collect())
    }
}

impl Pages for VecPages {
    fn page_count(&self) -> usize {
        self.0.len()
    }
    fn page(&self, i: usize) -> Option<&[u8; PAGE_SIZE]> {
        self.0.get(i).map(|b| &**b)
    }
    fn page_mut(&mut self, i: usize) -> Option<&mut [u8; PAGE_SIZE]> {
        self.0.get_mut(i).map(|b| &mut **b)
    }
}

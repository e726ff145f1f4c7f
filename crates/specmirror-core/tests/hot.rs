//! The hot-region LRU against a naive reference (a Vec in recency order)
//! over random sequences of touch / contains / misses.

use proptest::prelude::*;
use specmirror_core::transport::proto::hot::{HotRegions, HotSlot, Touch};

/// Reference: hot regions, least recently used first.
struct Model {
    cap: usize,
    lru: Vec<u64>,
}

impl Model {
    fn touch(&mut self, region: u64) -> Touch {
        if let Some(i) = self.lru.iter().position(|&r| r == region) {
            self.lru.remove(i);
            self.lru.push(region);
            return Touch::Hit;
        }
        if self.cap == 0 {
            return Touch::NoCapacity;
        }
        let t = if self.lru.len() < self.cap {
            Touch::Inserted
        } else {
            Touch::Evicted(self.lru.remove(0))
        };
        self.lru.push(region);
        t
    }

    fn misses(&self, first: u64, last: u64) -> u64 {
        (first..=last).filter(|r| !self.lru.contains(r)).count() as u64
    }
}

#[derive(Clone, Debug)]
enum Op {
    Touch(u64),
    Misses(u64, u64),
    Clear,
}

fn check(cap: usize, space: u64, ops: &[Op]) {
    let mut h = HotRegions::new(vec![HotSlot::default(); cap]);
    let mut m = Model {
        cap,
        lru: Vec::new(),
    };
    for (n, o) in ops.iter().enumerate() {
        match *o {
            Op::Touch(r) => assert_eq!(h.touch(r % space), m.touch(r % space), "op {n}: {o:?}"),
            Op::Misses(a, len) => {
                let (a, b) = (a % space, (a % space).saturating_add(len));
                assert_eq!(h.misses(a, b), m.misses(a, b), "op {n}: {o:?}");
            }
            Op::Clear => {
                h.clear();
                m.lru.clear();
            }
        }
        assert_eq!(h.len(), m.lru.len(), "op {n}");
        assert_eq!(h.is_empty(), m.lru.is_empty(), "op {n}");
        assert_eq!(h.free_slots(), cap - m.lru.len(), "op {n}");
        assert_eq!(h.capacity(), cap);
        for r in 0..space.min(64) {
            assert_eq!(h.contains(r), m.lru.contains(&r), "op {n}: region {r}");
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => any::<u64>().prop_map(Op::Touch),
        3 => (any::<u64>(), 0u64..4).prop_map(|(a, l)| Op::Misses(a, l)),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn matches_reference_model(
        cap in 0usize..12,
        space in prop_oneof![1u64..24, Just(u64::MAX)],
        ops in prop::collection::vec(op(), 0..200),
    ) {
        check(cap, space, &ops);
    }
}

/// Many hot regions, long chains of evictions, regions far apart.
#[test]
fn large_table_matches_model() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut ops = Vec::new();
    for _ in 0..30_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ops.push(if x.is_multiple_of(10) {
            Op::Misses(x >> 8, x % 4)
        } else {
            Op::Touch((x >> 4) % 700 * if x.is_multiple_of(3) { 1 << 40 } else { 1 })
        });
    }
    check(500, u64::MAX, &ops);
}

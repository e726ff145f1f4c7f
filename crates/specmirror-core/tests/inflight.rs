//! The in-flight table against a naive reference model (a linear scan of
//! every slot, as the table was first written) over random sequences of
//! insert / local_done / take_completed / overlaps_local / next_repair /
//! repaired.

use proptest::prelude::*;
use specmirror_core::transport::proto::inflight::{Completed, Inflight, InflightSlot, RepairJob};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Local,
    Done,
    Repair,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    sector: u64,
    count: u64,
    st: St,
    ok: bool,
}

/// Reference: unordered entries, every query a full scan; the oldest
/// eligible seq completes (or is repaired) first.
struct Model {
    cap: usize,
    e: Vec<Entry>,
}

fn overlaps(a: u64, an: u64, b: u64, bn: u64) -> bool {
    an != 0 && bn != 0 && a < b.saturating_add(bn) && b < a.saturating_add(an)
}

impl Model {
    fn insert(&mut self, seq: u64, sector: u64, count: u64) -> bool {
        if self.e.len() >= self.cap || self.e.iter().any(|x| x.seq == seq) {
            return false;
        }
        self.e.push(Entry {
            seq,
            sector,
            count,
            st: St::Local,
            ok: true,
        });
        true
    }

    fn local_done(&mut self, seq: u64, ok: bool) -> bool {
        match self
            .e
            .iter_mut()
            .find(|x| x.st == St::Local && x.seq == seq)
        {
            Some(x) => {
                x.st = St::Done;
                x.ok = ok;
                true
            }
            None => false,
        }
    }

    fn take_completed(&mut self, acked: Option<u64>) -> Option<Completed> {
        let i = self
            .e
            .iter()
            .enumerate()
            .filter(|(_, x)| x.st == St::Done && (!x.ok || acked.is_none_or(|a| x.seq <= a)))
            .min_by_key(|(_, x)| x.seq)
            .map(|(i, _)| i)?;
        let x = self.e[i];
        if !x.ok && x.count > 0 {
            self.e[i].st = St::Repair;
        } else {
            self.e.remove(i);
        }
        Some(Completed {
            seq: x.seq,
            ok: x.ok,
        })
    }

    fn overlaps_local(&self, sector: u64, count: u64, except: Option<u64>) -> bool {
        self.e.iter().any(|x| {
            (x.st == St::Local || (x.st == St::Repair && Some(x.seq) != except))
                && overlaps(x.sector, x.count, sector, count)
        })
    }

    fn next_repair(&self) -> Option<RepairJob> {
        self.e
            .iter()
            .filter(|x| x.st == St::Repair)
            .min_by_key(|x| x.seq)
            .map(|x| RepairJob {
                seq: x.seq,
                sector: x.sector,
                count: x.count,
            })
    }

    fn repaired(&mut self, seq: u64) -> bool {
        match self
            .e
            .iter()
            .position(|x| x.st == St::Repair && x.seq == seq)
        {
            Some(i) => {
                self.e.remove(i);
                true
            }
            None => false,
        }
    }

    fn oldest(&self) -> Option<u64> {
        self.e.iter().map(|x| x.seq).min()
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// `fresh`: the next increasing seq (what the source does); else an
    /// arbitrary, possibly duplicate or older one.
    Insert {
        fresh: bool,
        r: u64,
        sector: u64,
        count: u64,
    },
    /// Seq of the `r`-th model entry (or an arbitrary one).
    LocalDone {
        known: bool,
        r: u64,
        ok: bool,
    },
    Take {
        acked: Option<u64>,
    },
    Overlaps {
        sector: u64,
        count: u64,
        except: Option<u64>,
    },
    Repaired {
        known: bool,
        r: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u64..1000, 0u64..64, 0u64..12)
            .prop_map(|(fresh, r, sector, count)| Op::Insert { fresh: fresh || r % 4 != 0, r, sector, count }),
        4 => (any::<bool>(), 0u64..1000, prop::bool::weighted(0.8))
            .prop_map(|(known, r, ok)| Op::LocalDone { known: known || r % 3 != 0, r, ok }),
        3 => proptest::option::of(0u64..80).prop_map(|acked| Op::Take { acked }),
        3 => (0u64..70, 0u64..12, proptest::option::of(0u64..80))
            .prop_map(|(sector, count, except)| Op::Overlaps { sector, count, except }),
        2 => (any::<bool>(), 0u64..1000).prop_map(|(known, r)| Op::Repaired { known, r }),
    ]
}

fn check(cap: usize, ops: &[Op]) {
    let mut t = Inflight::new(vec![InflightSlot::default(); cap]);
    let mut m = Model { cap, e: Vec::new() };
    let mut next = 1u64;
    for (n, o) in ops.iter().enumerate() {
        let pick = |m: &Model, known: bool, r: u64| {
            if known && !m.e.is_empty() {
                m.e[(r as usize) % m.e.len()].seq
            } else {
                r % (next + 2)
            }
        };
        match *o {
            Op::Insert {
                fresh,
                r,
                sector,
                count,
            } => {
                let seq = if fresh {
                    next += 1 + r % 3;
                    next
                } else {
                    r % (next + 2)
                };
                assert_eq!(
                    t.insert(seq, sector, count),
                    m.insert(seq, sector, count),
                    "op {n}: {o:?}"
                );
            }
            Op::LocalDone { known, r, ok } => {
                let seq = pick(&m, known, r);
                assert_eq!(
                    t.local_done(seq, ok),
                    m.local_done(seq, ok),
                    "op {n}: {o:?}"
                );
            }
            Op::Take { acked } => {
                // Drain like the glue does, comparing every answer.
                loop {
                    let a = t.take_completed(acked);
                    assert_eq!(a, m.take_completed(acked), "op {n}: {o:?}");
                    if a.is_none() {
                        break;
                    }
                }
            }
            Op::Overlaps {
                sector,
                count,
                except,
            } => {
                assert_eq!(
                    t.overlaps_local(sector, count, except),
                    m.overlaps_local(sector, count, except),
                    "op {n}: {o:?}"
                );
            }
            Op::Repaired { known, r } => {
                let seq = match (known, m.next_repair()) {
                    (true, Some(j)) if r % 2 == 0 => j.seq,
                    _ => pick(&m, known, r),
                };
                assert_eq!(t.repaired(seq), m.repaired(seq), "op {n}: {o:?}");
            }
        }
        assert_eq!(t.len(), m.e.len(), "op {n}");
        assert_eq!(t.is_empty(), m.e.is_empty(), "op {n}");
        assert_eq!(t.is_full(), m.e.len() >= cap, "op {n}");
        assert_eq!(t.oldest(), m.oldest(), "op {n}");
        assert_eq!(t.next_repair(), m.next_repair(), "op {n}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matches_reference_model(cap in 1usize..10, ops in prop::collection::vec(op(), 0..120)) {
        check(cap, &ops);
    }
}

/// The source's pattern at depth: increasing seqs, random completion
/// order, periodic cumulative acks, occasional failures and repairs.
#[test]
fn long_source_like_run_matches_model() {
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ops = Vec::new();
    for _ in 0..20_000 {
        let r = rnd();
        ops.push(match r % 10 {
            0..=3 => Op::Insert {
                fresh: true,
                r: rnd(),
                sector: rnd() % 4096,
                count: rnd() % 16,
            },
            4..=6 => Op::LocalDone {
                known: true,
                r: rnd(),
                ok: rnd() % 50 != 0,
            },
            7 => Op::Take { acked: None },
            8 => Op::Overlaps {
                sector: rnd() % 4096,
                count: rnd() % 16,
                except: None,
            },
            _ => Op::Repaired { known: true, r: 0 },
        });
    }
    check(64, &ops);
}

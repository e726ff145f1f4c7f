//! Region lock table: stream vs local lockers, recorded rejections, slot
//! capacity; unit tests plus a property test against a HashMap model.

use std::collections::HashMap;

use proptest::prelude::*;
use specmirror_core::log::locks::{LocalLockError, LockResult, LockSlot, LockTable};

fn table(n: usize) -> LockTable<Vec<LockSlot>> {
    LockTable::new(vec![LockSlot::EMPTY; n])
}

#[test]
fn rejection_makes_new_local_lockers_wait_then_grants() {
    let mut t = table(4);
    assert_eq!(t.local_lock(3, 3), Ok(()));
    assert_eq!(t.stream_lock(3), LockResult::Rejected);
    assert!(t.is_rejected(3));
    assert!(!t.is_stream_locked(3));
    assert_eq!(
        t.local_lock(3, 4),
        Err(LocalLockError::WouldBlock),
        "stream wins soon"
    );
    assert_eq!(t.local_count(4), 0, "all or nothing");
    assert_eq!(t.take_grantable(), None, "still held locally");
    assert!(t.local_unlock(3, 3));
    assert_eq!(t.take_grantable(), Some(3));
    assert_eq!(t.take_grantable(), None);
    assert!(t.is_stream_locked(3));
    assert_eq!(t.local_lock(3, 3), Err(LocalLockError::WouldBlock));
    assert!(t.stream_unlock(3));
    assert!(!t.stream_unlock(3));
    assert_eq!(t.local_lock(3, 3), Ok(()));
    assert_eq!(t.used(), 1);
}

#[test]
fn stream_lock_is_idempotent_and_unlock_cancels_rejection() {
    let mut t = table(2);
    assert_eq!(t.stream_lock(7), LockResult::Granted);
    assert_eq!(t.stream_lock(7), LockResult::Granted);
    assert_eq!(t.used(), 1);
    t.local_lock(9, 9).unwrap();
    assert_eq!(t.stream_lock(9), LockResult::Rejected);
    assert!(t.stream_unlock(9), "source gave the region up");
    assert!(!t.local_unlock(9, 9), "nothing to grant any more");
    assert_eq!(t.used(), 1);
    t.stream_reset();
    assert_eq!(t.used(), 0);
}

#[test]
fn capacity_limits() {
    let mut t = table(3);
    assert_eq!(
        t.local_lock(0, 3),
        Err(LocalLockError::Full),
        "4 regions, 3 slots"
    );
    assert_eq!(
        t.local_lock(10, u64::MAX),
        Err(LocalLockError::Full),
        "huge range is bounded"
    );
    assert_eq!(t.local_lock(5, 4), Ok(()), "empty range");
    t.local_lock(0, 1).unwrap();
    t.local_lock(0, 1).unwrap();
    assert_eq!(t.local_count(0), 2);
    assert_eq!(t.stream_lock(100), LockResult::Granted);
    assert_eq!(t.stream_lock(101), LockResult::Full);
    assert_eq!(t.local_lock(1, 2), Err(LocalLockError::Full));
    assert_eq!(t.local_count(1), 2, "failed lock changed nothing");
    t.local_unlock(0, 1);
    t.local_unlock(0, 1);
    assert_eq!(t.used(), 1);
    assert_eq!(t.stream_lock(101), LockResult::Granted);
}

#[derive(Debug, Clone)]
enum Op {
    Stream(u64),
    StreamUnlock(u64),
    Local(u64, u64),
    LocalUnlock(u64, u64),
    Grant,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..8).prop_map(Op::Stream),
        (0u64..8).prop_map(Op::StreamUnlock),
        (0u64..8, 0u64..3).prop_map(|(a, w)| Op::Local(a, a + w)),
        (0u64..8, 0u64..3).prop_map(|(a, w)| Op::LocalUnlock(a, a + w)),
        Just(Op::Grant),
    ]
}

#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct M {
    stream: bool,
    rejected: bool,
    local: u32,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn table_matches_model(slots in 1usize..6, ops in prop::collection::vec(arb_op(), 1..100)) {
        let mut t = table(slots);
        let mut m: HashMap<u64, M> = HashMap::new();
        let used = |m: &HashMap<u64, M>| m.values().filter(|s| s.stream || s.rejected || s.local > 0).count();
        for op in ops {
            match op {
                Op::Stream(r) => {
                    let e = m.get(&r).copied().unwrap_or_default();
                    let present = e.stream || e.rejected || e.local > 0;
                    let want = if e.stream {
                        LockResult::Granted
                    } else if !present && used(&m) >= slots {
                        LockResult::Full
                    } else if e.local > 0 {
                        m.entry(r).or_default().rejected = true;
                        LockResult::Rejected
                    } else {
                        let s = m.entry(r).or_default();
                        s.stream = true;
                        s.rejected = false;
                        LockResult::Granted
                    };
                    prop_assert_eq!(t.stream_lock(r), want);
                }
                Op::StreamUnlock(r) => {
                    let s = m.entry(r).or_default();
                    let want = s.stream || s.rejected;
                    s.stream = false;
                    s.rejected = false;
                    prop_assert_eq!(t.stream_unlock(r), want);
                }
                Op::Local(a, b) => {
                    let blocked = (a..=b).any(|r| m.get(&r).is_some_and(|s| s.stream || s.rejected));
                    let missing = (a..=b).filter(|r| m.get(r).is_none_or(|s| !(s.stream || s.rejected || s.local > 0))).count();
                    let want = if (b - a) as usize >= slots {
                        Err(LocalLockError::Full)
                    } else if blocked {
                        Err(LocalLockError::WouldBlock)
                    } else if missing > slots - used(&m) {
                        Err(LocalLockError::Full)
                    } else {
                        for r in a..=b { m.entry(r).or_default().local += 1; }
                        Ok(())
                    };
                    prop_assert_eq!(t.local_lock(a, b), want);
                }
                Op::LocalUnlock(a, b) => {
                    let mut want = false;
                    for r in a..=b {
                        if let Some(s) = m.get_mut(&r) {
                            if s.local > 0 {
                                s.local -= 1;
                                want |= s.local == 0 && s.rejected;
                            }
                        }
                    }
                    prop_assert_eq!(t.local_unlock(a, b), want);
                }
                Op::Grant => {
                    match t.take_grantable() {
                        Some(r) => {
                            let s = m.get_mut(&r).unwrap();
                            prop_assert!(s.rejected && s.local == 0);
                            s.rejected = false;
                            s.stream = true;
                        }
                        None => prop_assert!(!m.values().any(|s| s.rejected && s.local == 0)),
                    }
                }
            }
            prop_assert_eq!(t.used(), used(&m));
            for r in 0..11u64 {
                let s = m.get(&r).copied().unwrap_or_default();
                prop_assert_eq!(t.is_stream_locked(r), s.stream);
                prop_assert_eq!(t.is_rejected(r), s.rejected);
                prop_assert_eq!(t.local_count(r), s.local);
                // Never both held by the stream and locally.
                prop_assert!(!(s.stream && s.local > 0));
            }
        }
    }
}

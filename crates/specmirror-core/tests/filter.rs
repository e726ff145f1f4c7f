//! Region filter of pending data records: unit tests of the counting
//! filter (narrow buckets, wide extents, overflow), and a seeded randomized
//! run of the commit log checking the filter against the exact walk
//! (`pending_in_range`) after every push, issue, completion, failure,
//! reissue, drop, region-size change and reset: never a false negative,
//! and every counter back at zero whenever the log is empty.

mod common;

use std::collections::HashMap;

use common::Log;
use specmirror_core::log::commit::{CommitError, SCAN_LIMIT};
use specmirror_core::log::filter::{RegionFilter, FILTER_BUCKETS, NARROW_REGIONS, WIDE_SLOTS};
use specmirror_core::log::record::{Header, Kind, FLAG_PREFLUSH};

/// SplitMix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A filter with the default bucket count, regions of `1 << shift` sectors.
fn filter(shift: u32) -> RegionFilter<Vec<u32>> {
    RegionFilter::new(vec![0; FILTER_BUCKETS], shift).unwrap()
}

#[test]
fn bucket_count_is_the_callers_power_of_two() {
    for bad in [0usize, 3, 12, 1000] {
        assert!(RegionFilter::new(vec![0u32; bad], 0).is_none(), "{bad}");
    }
    for n in [1usize, 2, 8, 1 << 16] {
        let mut f = RegionFilter::new(vec![9u32; n], 0).unwrap();
        assert_eq!(f.buckets(), n);
        assert!(f.is_clear(), "stale counters are cleared");
        f.add(12_345, 1);
        assert!(f.may_pend(12_345, 12_345));
        // Wider than the filter: seen without a walk.
        assert!(f.may_pend(0, n as u64));
        // One bucket takes every region; more spread them out.
        let pos = (0..4096u64).filter(|&r| f.may_pend(r, r)).count();
        if n == 1 {
            assert_eq!(pos, 4096);
        } else {
            assert!(pos < 4096, "{n} buckets: {pos} false positives");
        }
        f.remove(12_345, 1);
        assert!(f.is_clear() && !f.may_pend(0, u64::MAX));
    }
}

#[test]
fn narrow_records_count_in_and_out() {
    let mut f = filter(3);
    assert!(f.is_clear());
    assert!(!f.may_pend(0, u64::MAX), "empty: nothing pending anywhere");
    f.add(0, 8); // region 0
    f.add(20, 8); // regions 2 and 3
    f.add(20, 8); // the same again
    for r in [0, 2, 3] {
        assert!(f.may_pend(r, r));
    }
    assert!(f.may_pend(1, 2), "a range overlapping a pending region");
    // Hash collisions are rare: one record in region 0 makes only a few of
    // a thousand other regions look pending.
    let mut g = filter(3);
    g.add(0, 8);
    let false_pos = (1..1000).filter(|&r| g.may_pend(r, r)).count();
    assert!(false_pos < 8, "{false_pos} false positives");
    f.remove(20, 8);
    assert!(f.may_pend(2, 3), "one of the two records is still pending");
    f.remove(20, 8);
    f.remove(0, 8);
    assert!(f.is_clear());
    assert!(!f.may_pend(0, 10));
}

#[test]
fn a_range_wider_than_the_filter_sees_any_narrow_record() {
    let mut f = filter(0);
    f.add(5_000_000, 1);
    assert!(f.may_pend(0, FILTER_BUCKETS as u64 + 10));
    f.remove(5_000_000, 1);
    assert!(!f.may_pend(0, FILTER_BUCKETS as u64 + 10));
}

#[test]
fn wide_records_are_kept_as_extents() {
    let mut f = filter(0);
    let wide = NARROW_REGIONS as u32 + 1;
    f.add(1000, wide);
    assert!(f.may_pend(1000, 1000) && f.may_pend(1000 + u64::from(wide) - 1, 1_010_000));
    assert!(!f.may_pend(0, 999), "an extent, not everything");
    assert!(!f.may_pend(1000 + u64::from(wide), 1_000_000));
    f.add(1000, wide); // the same extent shares its entry
    f.remove(1000, wide);
    assert!(f.may_pend(1100, 1100));
    f.remove(1000, wide);
    assert!(f.is_clear());
    // Exactly NARROW_REGIONS regions is still narrow (buckets).
    f.add(0, NARROW_REGIONS as u32);
    f.remove(0, NARROW_REGIONS as u32);
    assert!(f.is_clear());
}

#[test]
fn wide_overflow_says_pending_everywhere_until_it_leaves() {
    let mut f = filter(0);
    let wide = 1000u32;
    let at = |i: u64| i * 10_000;
    for i in 0..WIDE_SLOTS as u64 {
        f.add(at(i), wide);
    }
    let far = 1 << 40;
    assert!(!f.may_pend(far, far));
    f.add(at(99), wide); // no entry left: overflow
    assert!(f.may_pend(far, far));
    // An entry frees; the overflowed extent comes again and takes it.
    f.remove(at(0), wide);
    f.add(at(99), wide);
    // One of the two at(99) records leaves through its entry: the other is
    // still seen (through the overflow), everywhere.
    f.remove(at(99), wide);
    assert!(f.may_pend(at(99), at(99)) && f.may_pend(far, far));
    f.remove(at(99), wide);
    assert!(!f.may_pend(far, far));
    assert!(!f.may_pend(at(99), at(99)));
    for i in 1..WIDE_SLOTS as u64 {
        f.remove(at(i), wide);
    }
    assert!(f.is_clear());
}

#[test]
fn poison_clear_and_reset() {
    let mut f = filter(4);
    f.poison();
    assert!(f.may_pend(7, 7) && !f.is_clear());
    f.clear();
    assert!(f.is_clear() && !f.may_pend(7, 7));
    assert_eq!(f.region_shift(), 4);
    f.add(64, 1);
    f.reset_to(99);
    assert!(f.is_clear());
    assert_eq!(f.region_shift(), 63, "capped");
    // Extents at the very end of the sector space never overflow.
    let mut f = filter(0);
    f.add(u64::MAX - 1, 5);
    f.add(u64::MAX, 0);
    assert!(f.may_pend(u64::MAX - 1, u64::MAX));
    f.remove(u64::MAX - 1, 5);
    f.remove(u64::MAX, 0);
    assert!(f.is_clear());
}

#[test]
fn log_counts_every_data_record_until_done_dropped_or_reset() {
    let mut log = common::commit_log(4, 1);
    log.set_region_shift(3);
    let push = |log: &mut Log, kind: Kind, sector: u64, count: u32| {
        let mut h = Header::new(kind);
        h.seq = log.next_seq();
        h.sector = sector;
        h.count = count;
        if kind == Kind::Write {
            h.len = count * 512;
        }
        log.push(&h, &vec![7u8; h.len as usize]).unwrap();
    };
    push(&mut log, Kind::Write, 0, 8);
    push(&mut log, Kind::Flush, 0, 0);
    push(&mut log, Kind::Discard, 80, 8);
    push(&mut log, Kind::WriteZeroes, 160, 8);
    assert!(log.may_be_pending(0, 0) && log.may_be_pending(10, 10) && log.may_be_pending(20, 20));
    let v = log.next_to_issue().unwrap();
    assert!(log.complete(v.seq, false), "failed: still pending");
    assert!(log.may_be_pending(0, 0));
    assert_eq!(log.reissue_failed(), 1);
    let v = log.next_to_issue().unwrap();
    assert!(log.complete(v.seq, true));
    assert!(!log.may_be_pending(0, 0), "done");
    // Rebuilding at another region size sees the same records.
    log.set_region_shift(4);
    assert!(log.may_be_pending(5, 5) && log.may_be_pending(10, 10));
    assert!(!log.may_be_pending(0, 0));
    // Dropped records leave the filter.
    assert_eq!(log.drop_from(4), 4);
    assert!(log.may_be_pending(5, 5) && !log.may_be_pending(10, 10));
    let v = log.next_to_issue().unwrap(); // the flush
    assert!(log.complete(v.seq, true));
    push(&mut log, Kind::Write, 320, 8);
    assert!(log.may_be_pending(20, 20));
    assert!(log.in_flight() == 0);
    log.reset(100);
    assert!(log.region_filter().is_clear() && !log.may_be_pending(0, u64::MAX));
}

/// Short records start in `0..SPACE`, long ones (up to 700 sectors) in
/// `0..4 * SPACE`, so that more than `WIDE_SLOTS` distinct wide extents
/// overlap little.
const SPACE: u64 = 1024;
const REACH: u64 = 4 * SPACE + 700;
const SHIFTS: [u32; 6] = [0, 0, 1, 2, 3, 6];

/// Checks `pending_in_range` => `may_be_pending` for regions `a..=b`;
/// returns whether the exact walk found a pending record.
fn check_range(log: &Log, a: u64, b: u64, what: &str) -> bool {
    let shift = log.region_filter().region_shift();
    let exact = log.pending_in_range(a << shift, (b - a + 1) << shift);
    assert!(
        !exact || log.may_be_pending(a, b),
        "false negative for regions {a}..={b} (shift {shift}) after {what}"
    );
    exact
}

/// A random record: `zeroing` percent DISCARD / WRITE_ZEROES, `long`
/// percent of those up to 700 sectors (more than `NARROW_REGIONS` regions
/// at small shifts).
fn random_record(r: &mut Rng, seq: u64, zeroing: u64, long: u64) -> Header {
    let kind = if r.below(100) < zeroing {
        r.pick(&[Kind::Discard, Kind::WriteZeroes])
    } else {
        r.pick(&[
            Kind::Write,
            Kind::Write,
            Kind::Write,
            Kind::Flush,
            Kind::Lock,
            Kind::Unlock,
        ])
    };
    let mut h = Header::new(kind);
    h.seq = seq;
    h.sector = r.below(SPACE);
    match kind {
        Kind::Write => {
            h.count = 1 + r.below(8) as u32;
            h.len = h.count * 512;
        }
        Kind::Discard | Kind::WriteZeroes => {
            if r.below(100) < long {
                h.sector = r.below(4 * SPACE);
                h.count = 1 + r.below(700) as u32;
            } else {
                h.count = 1 + r.below(32) as u32;
            }
        }
        _ => {}
    }
    if kind.is_data() && r.below(20) == 0 {
        h.flags = FLAG_PREFLUSH;
    }
    h
}

#[test]
fn filter_never_misses_a_pending_write() {
    let mut positives = 0u64;
    let mut checks = 0u64;
    for seed in 0..500u64 {
        let mut r = Rng(seed);
        // Storage sizes from a stream of their own: the records of a
        // seed stay what they were with the default sizes.
        let mut rs = Rng(seed ^ 0x5709_A6E5);
        let win = rs.pick(&[1, 2, 7, SCAN_LIMIT, SCAN_LIMIT]);
        let buckets = rs.pick(&[1, 2, 64, FILTER_BUCKETS, FILTER_BUCKETS]);
        let mut log = common::commit_log_with(2 + r.below(4) as usize, win, buckets);
        log.set_max_inflight(1 + r.below(8) as usize);
        log.set_region_shift(r.pick(&SHIFTS));
        let zeroing = r.pick(&[20, 60]);
        let long = r.pick(&[10, 50, 90]);
        let mut issued: Vec<u64> = Vec::new();
        // Every record pushed, by seq (those from applied_upto + 1 to
        // next_seq - 1 are the ones held).
        let mut pushed: HashMap<u64, Header> = HashMap::new();
        for step in 0..300 {
            let what = match r.below(100) {
                0..=39 => {
                    let h = random_record(&mut r, log.next_seq(), zeroing, long);
                    match log.push(&h, &common::payload(h.seq, h.len as usize)) {
                        Ok(()) => {
                            pushed.insert(h.seq, h);
                        }
                        Err(CommitError::Full) => {}
                        Err(e) => panic!("push: {e:?}"),
                    }
                    "push"
                }
                40..=59 => {
                    if let Some(v) = log.next_to_issue() {
                        issued.push(v.seq);
                    }
                    "issue"
                }
                60..=83 if !issued.is_empty() => {
                    let ok = r.below(6) != 0;
                    let seq = issued.swap_remove(r.below(issued.len() as u64) as usize);
                    assert!(log.complete(seq, ok));
                    if ok {
                        "completion"
                    } else {
                        "failure"
                    }
                }
                84..=87 => {
                    log.reissue_failed();
                    "reissue"
                }
                88..=92 => {
                    let from = log.applied_upto() + 1;
                    let held = log.next_seq() - from;
                    log.drop_from(from + r.below(held + 1));
                    "drop_from"
                }
                93..=95 => {
                    log.set_region_shift(r.pick(&SHIFTS));
                    "set_region_shift"
                }
                96 if log.in_flight() == 0 => {
                    log.reset(log.next_seq() + r.below(5));
                    pushed.clear();
                    "reset"
                }
                _ => "nothing",
            };
            let shift = log.region_filter().region_shift();
            let regions = (REACH >> shift) + 1;
            // Every region now and then (unless too many), a sample of
            // them otherwise, and the first and last region of a few held
            // records (each must be seen while pending, however many other
            // records share its bucket or wide entries there are).
            let all = (step % 16 == 0 && regions <= 2048) || regions <= 32;
            let n = if all { regions } else { 32 };
            for i in 0..n {
                let reg = if all { i } else { r.below(regions) };
                checks += 1;
                positives += u64::from(check_range(&log, reg, reg, what));
            }
            let from = log.applied_upto() + 1;
            for _ in 0..8 {
                let seq = from + r.below(log.next_seq() - from);
                if let Some(h) = pushed.get(&seq).filter(|h| h.kind.is_data()) {
                    let end = h.sector + u64::from(h.count) - 1;
                    check_range(&log, h.sector >> shift, h.sector >> shift, what);
                    check_range(&log, end >> shift, end >> shift, what);
                }
            }
            for _ in 0..4 {
                let a = r.below(regions);
                let b = a + r.below(regions);
                check_range(&log, a, b, what);
            }
            if log.is_empty() {
                assert!(
                    log.region_filter().is_clear(),
                    "seed {seed}: empty log, filter not clear after {what}"
                );
            }
        }
        // Drain: every record applied, the filter back at zero.
        for _ in 0..10_000 {
            if log.is_empty() {
                break;
            }
            log.reissue_failed();
            for seq in issued.drain(..) {
                assert!(log.complete(seq, true));
            }
            while let Some(v) = log.next_to_issue() {
                issued.push(v.seq);
            }
        }
        assert!(log.is_empty(), "seed {seed}: log does not drain");
        assert!(
            log.region_filter().is_clear(),
            "seed {seed}: drained log, filter not clear"
        );
    }
    // The run must have met pending records, not only empty logs.
    assert!(
        positives * 50 > checks,
        "{positives} of {checks} checks found a pending record"
    );
}

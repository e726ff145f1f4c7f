//! Deterministic simulator for the dm-specmirror replication core.
//!
//! One seed fixes everything: device and ring sizes, workload, link
//! latency/bandwidth/disconnects/corruption, target device slowness and
//! failures, local lockers. The run is single-threaded discrete-event in
//! virtual time, so a seed replays exactly. Invariants I1-I4 and I6 (Documentation/dm-specmirror.rst, "Guarantees")
//! and liveness are checked while it runs; see [`sim`].

pub mod check;
pub mod digest;
pub mod net;
pub mod params;
pub mod perf;
pub mod queue;
pub mod rng;
pub mod sim;

use specmirror_core::transport::proto::Mode;

pub use check::{mode_name, Failure, Violation};
pub use params::{Params, GEN_VERSION};
pub use sim::{run_mutant, run_mutant_gen, run_seed, run_seed_gen, Outcome};

/// Runs seeds `start..start+n` in each of `modes` on `threads` threads.
/// Returns (runs passed, summed counters of passed runs, failures in seed
/// order).
pub fn run_many(
    start: u64,
    n: u64,
    modes: &[Mode],
    threads: usize,
) -> (u64, Outcome, Vec<Failure>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    let next = AtomicU64::new(0);
    let passed = AtomicU64::new(0);
    let fails = Mutex::new(Vec::new());
    let total = Mutex::new(Outcome::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let seed = start.wrapping_add(i);
                for &m in modes {
                    let r = std::panic::catch_unwind(|| run_seed(seed, m, false));
                    match r {
                        Ok(Ok(o)) => {
                            passed.fetch_add(1, Ordering::Relaxed);
                            total.lock().unwrap().add(&o);
                        }
                        Ok(Err(f)) => fails.lock().unwrap().push(f),
                        Err(_) => fails.lock().unwrap().push(Failure {
                            seed,
                            mode: m,
                            violation: Violation::Protocol("panic in simulation".into()),
                            at: 0,
                        }),
                    }
                }
            });
        }
    });
    let mut f = fails.into_inner().unwrap();
    f.sort_by_key(|x| (x.seed, mode_name(x.mode)));
    (passed.into_inner(), total.into_inner().unwrap(), f)
}

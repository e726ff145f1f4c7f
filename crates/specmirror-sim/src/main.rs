//! `specmirror-sim`: run seeds, replay one, or print the throughput report.

use std::process::ExitCode;

use specmirror_core::transport::proto::Mode;
use specmirror_core::transport::proto::mutant::Mutant;
use specmirror_sim::{mode_name, perf, run_many, run_mutant, run_seed_gen, GEN_VERSION};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  specmirror-sim run --seeds N [--start S] [--mode speculative|lock-sync|both] [--threads T]\n  specmirror-sim replay --seed S [--mode speculative|lock-sync|both] [--gen G] [--mutant M] [--verbose]\n  specmirror-sim mutants [--seeds N] [--start S]   (every planted bug must be found within N seeds)\n  specmirror-sim report [--disk-mbs D] [--link-mbs L]   (default: 400 MB/s disks, 125 MB/s = 1 Gbit/s link)"
    );
    ExitCode::from(2)
}

fn parse_modes(s: &str) -> Option<Vec<Mode>> {
    match s {
        "speculative" => Some(vec![Mode::Speculative]),
        "lock-sync" => Some(vec![Mode::LockSync]),
        "both" => Some(vec![Mode::Speculative, Mode::LockSync]),
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let mut seeds: Option<u64> = None;
    let mut start = 0u64;
    let mut seed: Option<u64> = None;
    let mut modes = vec![Mode::Speculative, Mode::LockSync];
    let mut verbose = false;
    let mut gen = GEN_VERSION;
    let mut mutant = Mutant::None;
    let mut disk_mbs: Option<u64> = None;
    let mut link_mbs: Option<u64> = None;
    let mut threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut i = 1;
    while i < args.len() {
        let val = args.get(i + 1);
        match args[i].as_str() {
            "--seeds" => seeds = val.and_then(|v| v.parse().ok()),
            "--start" => {
                start = match val.and_then(|v| v.parse().ok()) {
                    Some(v) => v,
                    None => return usage(),
                }
            }
            "--seed" => seed = val.and_then(|v| v.parse().ok()),
            "--mutant" => {
                mutant = match Mutant::ALL.iter().find(|m| val.is_some_and(|v| format!("{m:?}") == *v)) {
                    Some(m) => *m,
                    None => return usage(),
                }
            }
            "--disk-mbs" => disk_mbs = val.and_then(|v| v.parse().ok()).filter(|&v| v > 0),
            "--link-mbs" => link_mbs = val.and_then(|v| v.parse().ok()).filter(|&v| v > 0),
            "--gen" => {
                gen = match val.and_then(|v| v.parse().ok()) {
                    Some(v) if (1..=GEN_VERSION).contains(&v) => v,
                    _ => return usage(),
                }
            }
            "--threads" => {
                threads = match val.and_then(|v| v.parse().ok()) {
                    Some(v) => v,
                    None => return usage(),
                }
            }
            "--mode" => {
                modes = match val.and_then(|v| parse_modes(v)) {
                    Some(m) => m,
                    None => return usage(),
                }
            }
            "--verbose" | "-v" => {
                verbose = true;
                i += 1;
                continue;
            }
            _ => return usage(),
        }
        i += 2;
    }
    match cmd.as_str() {
        "run" => {
            let Some(n) = seeds else { return usage() };
            let t0 = std::time::Instant::now();
            let (passed, tot, fails) = run_many(start, n, &modes, threads);
            for f in &fails {
                println!("FAIL {f}");
                println!(
                    "  replay: specmirror-sim replay --seed {} --mode {}",
                    f.seed,
                    mode_name(f.mode)
                );
            }
            let failed_seeds: std::collections::BTreeSet<u64> =
                fails.iter().map(|f| f.seed).collect();
            println!(
                "sim: {} seeds passed, {} failed ({} runs in {} mode(s), {} passed; seeds {}..{}, {:.1} s)",
                n - failed_seeds.len() as u64,
                failed_seeds.len(),
                n * modes.len() as u64,
                modes.len(),
                passed,
                start,
                start + n,
                t0.elapsed().as_secs_f64()
            );
            println!(
                "sim: exercised {} host ops, {} records, {} resends, {} NAKs, {} lock rejections, {} lock conflicts, {} local waits, {} reconnects, {} CRC errors, {} device errors, {} back-pressure refusals, {} host waits, {} chunks resynced",
                tot.ops, tot.records, tot.resends, tot.naks, tot.rejections, tot.lock_conflicts, tot.local_waits, tot.reconnects, tot.crc_errors, tot.io_errors, tot.busy, tot.waits, tot.resynced
            );
            if fails.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        "replay" => {
            let Some(s) = seed else { return usage() };
            let mut ok = true;
            for &m in &modes {
                let r = if mutant == Mutant::None {
                    run_seed_gen(s, m, gen, verbose)
                } else {
                    run_mutant(s, m, mutant, verbose)
                };
                match r {
                    Ok(o) => println!(
                        "seed {s} mode {}: passed ({} ops, {} records, {:.3} ms virtual, {} events, resends {}, naks {}, rejections {}, reconnects {}, crc errors {}, io errors {})",
                        mode_name(m),
                        o.ops,
                        o.records,
                        o.end as f64 / 1e6,
                        o.events,
                        o.resends,
                        o.naks,
                        o.rejections,
                        o.reconnects,
                        o.crc_errors,
                        o.io_errors
                    ),
                    Err(f) => {
                        println!("FAIL {f}");
                        ok = false;
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        "mutants" => {
            let n = seeds.unwrap_or(2000);
            let mut all = true;
            for m in Mutant::ALL {
                let found = (start..start + n).find_map(|s| {
                    modes.iter().find_map(|&mode| run_mutant(s, mode, m, false).err())
                });
                match found {
                    Some(f) => println!(
                        "mutant {m:?}: caught by {f}\n  replay: specmirror-sim replay --seed {} --mode {} --mutant {m:?}",
                        f.seed,
                        mode_name(f.mode)
                    ),
                    None => {
                        println!("mutant {m:?}: NOT caught in seeds {start}..{}", start + n);
                        all = false;
                    }
                }
            }
            if all {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        "report" => {
            let mut cfg = perf::PerfCfg::default();
            if let Some(d) = disk_mbs {
                cfg.disk_bw = d * 1_000_000;
            }
            if let Some(l) = link_mbs {
                cfg.link_bw = l * 1_000_000;
            }
            if perf::print_report(&cfg) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => usage(),
    }
}

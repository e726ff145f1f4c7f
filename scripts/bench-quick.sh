#!/usr/bin/env bash
# make bench-quick: the headline ratios of issue 20 in one release-kernel VM
# run of under 10 minutes, printed last. A preset of scripts/bench.sh:
#
#   RTT 10 ms (DMSM_BENCH_RTT), systems local dm-linear, speculative async
#   and sync, lock-sync, DRBD 8.4 protocols A and C, workloads 4k QD1, 4k
#   QD32 and 1M QD8, 3 s runs after a 1 s ramp, 3 repetitions each.
#
# The headline: speculative async against DRBD A (QD32 IOPS, 1M MB/s, CPU
# per GiB, QD1 latency), speculative sync against DRBD C and lock-sync (QD1
# latency), speculative async against dm-linear (QD32 IOPS). Each with the
# spread of its repetitions; a ratio whose repetitions are more than 10%
# apart is printed but marked as not counting. The full report (table,
# plots, raw fio JSON) goes to $DMSM_CACHE/bench-quick/, not into the
# repository's bench/results/. The other knobs of scripts/bench.sh apply
# (DMSM_BENCH_MODULE, DMSM_BENCH_PERF, DMSM_BENCH_RATE, ...).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export QUICK=1
export DMSM_BENCH_RTTS=${DMSM_BENCH_RTT:-10}
export DMSM_BENCH_SYSTEMS=${DMSM_BENCH_SYSTEMS:-local spec-async spec-sync lock-sync drbd-A drbd-C}
export DMSM_BENCH_WORKLOADS=${DMSM_BENCH_WORKLOADS:-qd1 qd32 seq}
export DMSM_BENCH_REPS=${DMSM_BENCH_REPS:-3}
export DMSM_BENCH_RESULTS=${DMSM_BENCH_RESULTS:-$DMSM_CACHE/bench-quick}
exec "$DMSM_REPO/scripts/bench.sh"

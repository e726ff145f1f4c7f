#!/usr/bin/env bash
# make check: the project's tests, cheapest first; exits non-zero on any
# failure or kernel splat and ends with a one-line summary.
#
# Two tiers. By default (the developer loop, a few minutes once the kernel
# is cached): core tests, a short simulator and fuzz pass, module build,
# clippy, and the quick selftests in the debug VM, replication included
# with 16 MiB per variant; CI (.ci/run) runs this tier. FULL=1 (over an
# hour under TCG): the simulator with 2000
# seeds, 15 s of each fuzzer, and every selftest: replication of 256 MiB
# per variant, lifecycle, and the fault suite of issue 5.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$DMSM_REPO"

passed=0 failed=0 failures=()
log=$(mktemp /tmp/dmsm-check.XXXXXX)
trap 'rm -f "$log"' EXIT
t0=$(date +%s)

step() { # name cmd...
	local name=$1 s rc; shift
	s=$(date +%s)
	echo "=== check: $name"
	"$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1)); echo "=== check: $name ok ($(( $(date +%s) - s ))s)"
	else
		failed=$((failed + 1)); failures+=("$name"); echo "=== check: $name FAILED ($(( $(date +%s) - s ))s)"
	fi
	return "$rc"
}

if [ "${FULL:-0}" = 1 ]; then
	tier=full seeds=${SEEDS:-2000} fuzz=${FUZZ_SECONDS:-15}
else
	tier=quick seeds=${SEEDS:-300} fuzz=${FUZZ_SECONDS:-3}
	export DMSM_TESTS=${DMSM_TESTS:-"load_unload.sh create_remove.sh data_roundtrip.sh bad_tables.sh rmmod_busy.sh primitives.sh replication.sh replication_blk.sh"}
	# Halving these saves little (about 13 s of 400): under TCG with KASAN
	# and lockdep the VM's time goes to starting processes (about 0.2 s
	# each, 3 to 12 s for fio), not to the data written.
	export DMSM_REPL_MB=${DMSM_REPL_MB:-16}
fi
echo "=== check: $tier tier${DMSM_TESTS:+ (selftests: $DMSM_TESTS)}"

step deps scripts/deps.sh || { echo "check: 0 passed, 1 failed"; exit 1; }
step core-tests make -s test-core
step simulator make -s sim SEEDS="$seeds"
step fuzz-smoke make -s fuzz-smoke FUZZ_SECONDS="$fuzz"
if step kernel scripts/build-kernel.sh debug &&
	step module make -s module &&
	step clippy make -s clippy; then
	step selftests make -s selftests
	# Each KTAP result of the suite counts on its own in the summary.
	sp=$(grep -Ec '^# ok [0-9]+ ' "$log"); sf=$(grep -Ec '^# not ok [0-9]+ ' "$log")
	echo "=== check: selftests: $sp subtests passed, $sf failed"
	passed=$((passed + sp)); failed=$((failed + sf))
fi

echo "=== check: took $(( $(date +%s) - t0 ))s${failures[*]:+; failed: ${failures[*]}}"
echo "check ($tier): $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# make check: every test the project has, cheapest first; exits non-zero on
# any failure or kernel splat and ends with a one-line summary.
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

step deps scripts/deps.sh || { echo "check: 0 passed, 1 failed"; exit 1; }
step core-tests make -s test-core
step simulator make -s sim SEEDS="${SEEDS:-2000}"
step fuzz-smoke make -s fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
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
echo "check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

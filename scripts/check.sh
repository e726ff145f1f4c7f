#!/usr/bin/env bash
# make check: the project's tests; exits non-zero on any failure or kernel
# splat, prints where the time went, and ends with a one-line summary.
#
# Kernel tests run in two tiers (selftests/README.md says which test runs
# where and why):
#   - UML: User-Mode Linux, one CPU, boots in a second. Every selftest
#     that needs neither a second CPU nor real timing.
#   - SMP: the QEMU/TCG debug VM with two CPUs, for what races two CPUs.
#
# Three lanes run side by side, because none fills both cores: the host
# lane (cargo: core tests, simulator, fuzz smoke; clippy over the module),
# the UML lane (kernel, module, selftests) and the SMP lane (kernel,
# module, selftests in the TCG VM). Each step's output is printed in one piece when it ends
# (the last lines if it passed, all of it if it failed).
#
# By default (the developer loop and CI; the target is under 5 minutes
# once the kernels are cached): a short simulator and fuzz pass, the quick
# selftests under UML and a small SMP set. FULL=1: 2000 simulator seeds,
# 15 s of each fuzzer, every selftest under UML with 256 MiB replication
# (the fault suite included), and every selftest in the SMP VM (over an
# hour).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$DMSM_REPO"

work=$(mktemp -d /tmp/dmsm-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
results=$work/results # one line per step: rc seconds name
t0=$EPOCHSECONDS

# quiet_step NAME CMD...: runs CMD, its output into $work/NAME.log, printed
# in one piece when it ends (so that the lanes' lines do not interleave);
# records the result.
quiet_step() {
	local name=$1 s=$EPOCHSECONDS rc; shift
	echo "=== check: $name starts" | flock "$work/print" cat
	"$@" >"$work/$name.log" 2>&1
	rc=$?
	echo "$rc $((EPOCHSECONDS - s)) $name" >>"$results"
	{
		echo "=== check: $name"
		if [ "$rc" -eq 0 ]; then tail -n 15 "$work/$name.log"; else cat "$work/$name.log"; fi
		echo "=== check: $name $([ "$rc" -eq 0 ] && echo ok || echo FAILED) ($((EPOCHSECONDS - s))s)"
	} | flock "$work/print" cat
	return "$rc"
}

UML_QUICK="load_unload.sh create_remove.sh data_roundtrip.sh bad_tables.sh metadata.sh resync.sh generations.sh verify.sh degraded.sh rmmod_busy.sh primitives.sh target_powerloss.sh source_powerloss.sh replication.sh replication_blk.sh"
UML_FULL="$UML_QUICK suspend_bounded.sh lifecycle.sh degraded_slow.sh faults_link.sh faults_badnet.sh faults_corrupt.sh faults_lock.sh faults_disk.sh faults_ringfull.sh bad_tables_gen.sh hostile.sh hostile_source.sh faults_remove.sh"
# Races between the two CPUs: four O_DIRECT writers and a thread changing
# their buffers, against the source's copy, the sender, the target's
# receiver and applier, replicated and compared (unstable_pages; it found
# a CRC computed over the host's buffer instead of the ring's copy).
SMP_QUICK="unstable_pages.sh"
if [ "${FULL:-0}" = 1 ]; then
	tier=full seeds=${SEEDS:-2000} fuzz=${FUZZ_SECONDS:-15}
	uml_tests=${DMSM_UML_TESTS:-$UML_FULL} uml_mb=${DMSM_REPL_MB:-256} uml_variants="async netem sync lock-sync"
	smp_tests=${DMSM_SMP_TESTS:-} smp_mb=${DMSM_REPL_MB:-256} smp_variants="async netem sync lock-sync" smp_secs=20 smp_mem=4G
else
	# UML: netem and completion sync keep the lost-final-ACK hang of issue
	# 17 as a regression. SMP: unstable_pages only (replication.sh in the
	# VM, 70 s more, is in FULL); 2 GiB of guest memory is plenty for its
	# 32 MiB devices and halves kmemleak's closing scan.
	tier=quick seeds=${SEEDS:-300} fuzz=${FUZZ_SECONDS:-3}
	uml_tests=${DMSM_UML_TESTS:-$UML_QUICK} uml_mb=${DMSM_REPL_MB:-32} uml_variants="async netem sync lock-sync"
	smp_tests=${DMSM_SMP_TESTS:-$SMP_QUICK} smp_mb=${DMSM_REPL_MB:-16} smp_variants="sync" smp_secs=10 smp_mem=2G
fi
echo "=== check: $tier tier (UML: $uml_tests; SMP: ${smp_tests:-all})"

quiet_step deps scripts/deps.sh || { echo "check: 0 passed, 1 failed"; exit 1; }

host_lane() {
	quiet_step core-tests make -s test-core
	quiet_step simulator make -s sim SEEDS="$seeds"
	quiet_step fuzz-smoke make -s fuzz-smoke FUZZ_SECONDS="$fuzz"
	quiet_step clippy scripts/build-module.sh debug clippy
	# No stack frame a release kernel's 16 KiB stacks could not take: the
	# test kernels' stacks are larger, so no selftest would notice. Checked
	# on the debug (KASAN) build, whose frames are the largest.
	quiet_step stack-frames bash -c 'scripts/check-frames.sh "$(scripts/build-module.sh debug clippy)"'
}
host_lane &
host_pid=$!

# Each KTAP subtest of a suite counts on its own in the summary.
ktap_counts() { # name
	local sp sf
	sp=$(grep -Ec '^# ok [0-9]+ ' "$work/$1.log"); sf=$(grep -Ec '^# not ok [0-9]+ ' "$work/$1.log")
	echo "$sp $sf" >"$work/$1.ktap"
	echo "=== check: $1: $sp subtests passed, $sf failed" | flock "$work/print" cat
}
smp_lane() {
	quiet_step kernel scripts/build-kernel.sh debug &&
		quiet_step module make -s module || return
	quiet_step selftests-smp env DMSM_TESTS="$smp_tests" DMSM_REPL_MB="$smp_mb" DMSM_VM_MEMORY="$smp_mem" \
		DMSM_REPL_VARIANTS="$smp_variants" DMSM_UNSTABLE_SECONDS="$smp_secs" make -s selftests
	ktap_counts selftests-smp
}
smp_lane &
smp_pid=$!
if quiet_step kernel-uml scripts/build-kernel.sh uml && quiet_step module-uml scripts/build-module.sh uml; then
	quiet_step selftests-uml env DMSM_TESTS="$uml_tests" DMSM_REPL_MB="$uml_mb" \
		DMSM_REPL_VARIANTS="$uml_variants" make -s selftests-uml
	ktap_counts selftests-uml
fi
wait "$host_pid" "$smp_pid"

passed=0 failed=0 failures=()
while read -r rc secs name; do
	if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
done <"$results"
for k in "$work"/*.ktap; do
	[ -e "$k" ] || continue
	read -r sp sf <"$k"
	passed=$((passed + sp)); failed=$((failed + sf))
done
echo "=== check: where the time went (the three lanes ran side by side)"
while read -r rc secs name; do printf '%5ss  %s\n' "$secs" "$name"; done <"$results"
echo "=== check: took $((EPOCHSECONDS - t0))s${failures[*]:+; failed: ${failures[*]}}"
echo "check ($tier): $passed passed, $failed failed"
[ "$failed" -eq 0 ]

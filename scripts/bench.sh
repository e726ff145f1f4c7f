#!/usr/bin/env bash
# make bench (QUICK=1 make bench for a short pass): dm-specmirror against
# dm-linear, DRBD 8.4 and dm-mirror over NBD in one release-kernel VM run
# (scripts/bench-guest.sh), then the results, table and plots under
# bench/results/ (scripts/bench-report.py).
#
# Knobs (forwarded to the guest): DMSM_BENCH_RTTS ("0 1 10 50"),
# DMSM_BENCH_SYSTEMS, DMSM_BENCH_WORKLOADS ("qd1 qd32 seq"),
# DMSM_BENCH_SECONDS (10, QUICK 3), DMSM_BENCH_SIZE_MB (512),
# DMSM_BENCH_REPS (3 repetitions of each run), DMSM_BENCH_RATE (netem link
# rate, e.g. 100mbit; none by default), DMSM_BENCH_MODULE (a module to
# measure instead of the tree's),
# DMSM_BENCH_SKIP ("system:workload ...", not run, reported with
# DMSM_BENCH_SKIP_WHY), DMSM_BENCH_RESULTS (where the report goes;
# bench/results).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$DMSM_REPO"
export DMSM_BENCH_QUICK=${QUICK:-0}
export DMSM_MODULE
# DMSM_BENCH_MODULE: measure this module instead of the tree's (e.g. one
# built from an older commit, to compare within the same scripts).
DMSM_MODULE=${DMSM_BENCH_MODULE:-$(scripts/build-module.sh release)}
kdir=$(scripts/build-kernel.sh release)
ts=$(date -u +%Y%m%dT%H%M%SZ)
raw=$(mktemp -d /tmp/dmsm-bench.XXXXXX)
# The raw files stay (and are named) unless the report was written.
results=${DMSM_BENCH_RESULTS:-bench/results}
trap '[ -s "$results/$ts.json" ] && rm -rf "$raw" || echo "bench: raw results kept in $raw" >&2' EXIT

host_info() { # WHEN
	printf '"load_%s": "%s", "qemu_processes_%s": %s' "$1" "$(cut -d' ' -f1-3 /proc/loadavg)" \
		"$1" "$(pgrep -c qemu-system || true)"
}
before=$(host_info before)
echo "bench: $ts, QUICK=$DMSM_BENCH_QUICK, host load $(cut -d' ' -f1-3 /proc/loadavg), $(pgrep -c qemu-system || true) qemu processes of others" >&2

# One VM per RTT, each starting with local dm-linear, so every ratio is
# taken within one boot. If a guest dies (the guest sets panic_on_oops; or
# the time limit), the system it was running is marked not measured and a
# new VM (again starting with local) measures the systems after it.
all=${DMSM_BENCH_SYSTEMS:-local spec-async spec-sync lock-sync drbd-A drbd-C dm-mirror}
rc=0 boot=0
[ "$DMSM_BENCH_QUICK" = 1 ] && export DMSM_VM_TIMEOUT=${DMSM_VM_TIMEOUT:-1200}
for rtt in ${DMSM_BENCH_RTTS:-0 1 10 50}; do
	left=$all
	while [ -n "$left" ]; do
		boot=$((boot + 1))
		dir=$raw/boot$boot; mkdir -p "$dir"
		systems="local ${left//local/}"
		echo "bench: VM $boot: RTT $rtt ms: $(echo $systems)" >&2
		set +e
		DMSM_BENCH_OUT=$dir DMSM_VM_RWDIR=$dir DMSM_BENCH_RTTS=$rtt DMSM_BENCH_SYSTEMS="$systems" \
			scripts/vm.sh --release scripts/bench-guest.sh 2>&1 | tee "$dir/vm.log"
		vrc=${PIPESTATUS[0]}
		set -e
		echo "{\"boot\": $boot, \"rtt_ms\": $rtt, \"systems\": \"$(echo $systems)\", \"vm_exit_status\": $vrc}" >"$dir/boot.json"
		[ "$vrc" -eq 0 ] || rc=$vrc
		left=
		if [ -s "$dir/current" ]; then
			read -r _ csys cstep <"$dir/current"
			echo "bench: VM $boot died during $csys $cstep (exit status $vrc)" >&2
			printf '{"rtt_ms": %s, "system": "%s", "error": "the guest kernel crashed or hung during %s %s (VM %s; its log is in the results JSON)"}\n' \
				"$rtt" "$csys" "$csys" "$cstep" "$boot" >>"$dir/runs.jsonl"
			# Go on with the systems after the one that died.
			left=$(echo " $all " | sed "s/.* $csys //")
			left=$(echo $left)
		elif [ ! -s "$dir/runs.jsonl" ]; then
			echo "bench: VM $boot produced no results (exit status $vrc)" >&2
		fi
	done
done
after=$(host_info after)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo true || echo false)
cat >"$raw/host.json" <<EOF
{"timestamp": "$ts", "git_commit": "$(git rev-parse HEAD)", "git_dirty": $dirty, "module_path": "$DMSM_MODULE",
 "kernel_build": "$(basename "$kdir")", "kernel_release": "$(cat "$kdir/include/config/kernel.release" 2>/dev/null)",
 "kernel_config_sha256": "$(sha256sum "$kdir/.config" | cut -c1-16)",
 "kconfig_fragments": $(python3 -c 'import json,sys; print(json.dumps({f: open(f).read() for f in sys.argv[1:]}))' \
	scripts/kconfig/common.config scripts/kconfig/release.config),
 "vm": {"cpus": "${DMSM_VM_CPUS:-2}", "memory": "${DMSM_VM_MEMORY:-4G}", "accel": "TCG"},
 "host_cpus": $(nproc), $before, $after, "vm_exit_status": $rc}
EOF
if ! grep -qs . "$raw"/boot*/runs.jsonl; then
	echo "bench: the guests produced no results" >&2
	exit 1
fi
mkdir -p "$results"
scripts/bench-report.py "$raw" "$results/$ts"
[ "$rc" -eq 0 ] || echo "bench: a VM run failed (exit status $rc): see the table's notes" >&2
exit "$rc"

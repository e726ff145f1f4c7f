#!/bin/bash
# Long simulator sweeps that add up across sessions, in a ledger.
#
#   scripts/sim-sweep.sh run START END [THREADS]   seeds START..END, both modes
#   scripts/sim-sweep.sh summary                   what the ledger holds
#
# A sweep of a million seeds takes longer than one sitting, so it is run in
# 1000-seed segments, each appended to a ledger once it ends: range, passed,
# failed, seconds, the counters line. The ledger is keyed by the simulator's
# identity: the git tree of every source file the simulator compiles (the
# core's log/ and transport/proto/, both crates, Cargo.lock). Any change to
# them starts a new ledger, so a count never mixes two simulators; `summary`
# adds up only the current one. Uncommitted changes to those files are
# refused: a segment must be reproducible from a commit.
#
# Runs at nice 19 so that other work on the machine goes first. The binary
# is copied out of the build directory, so a rebuild meanwhile cannot swap
# it under a running sweep.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$DMSM_REPO"

SRCS=(log transport/proto crates/specmirror-core crates/specmirror-sim Cargo.lock Cargo.toml)
SEGMENT=${DMSM_SWEEP_SEGMENT:-1000}

sim_key() {
	local p
	for p in "${SRCS[@]}"; do
		printf '%s %s\n' "$p" "$(git rev-parse "HEAD:$p")"
	done | sha256sum | cut -c1-16
}

key=$(sim_key)
dir=$DMSM_CACHE/sweeps
ledger=$dir/$key.ledger
mkdir -p "$dir"

case "${1:-}" in
run)
	start=${2:?START}; end=${3:?END}; threads=${4:-1}
	if ! git diff --quiet HEAD -- "${SRCS[@]}"; then
		echo "sim-sweep: the simulator's sources differ from HEAD; commit first" >&2
		exit 2
	fi
	cargo build --release --quiet -p specmirror-sim
	bin=$dir/specmirror-sim-$key
	cp "${CARGO_TARGET_DIR:-target}/release/specmirror-sim" "$bin.tmp"
	mv "$bin.tmp" "$bin"
	[ -s "$ledger" ] || echo "# simulator $key: commit $(git rev-parse --short HEAD) ($(git log -1 --format=%cs))" > "$ledger"
	s=$start
	while [ "$s" -lt "$end" ]; do
		n=$((end - s < SEGMENT ? end - s : SEGMENT))
		if grep -q "^seeds $s\.\.$((s + n)) " "$ledger"; then
			s=$((s + n)); continue
		fi
		t0=$(date +%s)
		out=$(nice -n 19 "$bin" run --seeds "$n" --start "$s" --mode both --threads "$threads" || true)
		summary=$(grep '^sim: [0-9]* seeds passed' <<<"$out" || echo "sim: no summary")
		counters=$(grep '^sim: exercised' <<<"$out" | sed 's/^sim: exercised //' || true)
		passed=$(sed -n 's/^sim: \([0-9]*\) seeds passed, \([0-9]*\) failed.*/\1/p' <<<"$summary")
		failed=$(sed -n 's/^sim: \([0-9]*\) seeds passed, \([0-9]*\) failed.*/\2/p' <<<"$summary")
		echo "seeds $s..$((s + n)) passed ${passed:-0} failed ${failed:-$n} secs $(( $(date +%s) - t0 )) $(date -u +%FT%TZ) | $counters" >> "$ledger"
		grep '^FAIL\|replay:' <<<"$out" >> "$ledger" || true
		s=$((s + n))
	done
	;;
summary)
	if [ ! -s "$ledger" ]; then
		echo "sim-sweep: no ledger for simulator $key (HEAD's sources)"
		exit 0
	fi
	head -1 "$ledger"
	awk '/^seeds / { split($2, r, "\\.\\."); runs++; p += $4; f += $6; s += $8;
			 if ($6 > 0) bad = bad " " $2 }
	     END { printf "segments %d, seeds passed %d, failed %d, %.1f h of segment time\n", runs, p, f, s / 3600;
		   if (bad != "") print "segments with failures:" bad }' "$ledger"
	# The ranges covered, merged.
	grep '^seeds ' "$ledger" | awk '{ split($2, r, "\\.\\."); print r[1], r[2] }' | sort -n |
		awk 'NR == 1 { a = $1; b = $2; next }
		     $1 <= b { if ($2 > b) b = $2; next }
		     { print "  " a ".." b; a = $1; b = $2 }
		     END { if (NR) print "  " a ".." b }'
	;;
*)
	sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac

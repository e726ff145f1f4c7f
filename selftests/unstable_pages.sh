#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The bytes written locally are the bytes replicated: a writer changes its
# buffers while its O_DIRECT writes are in flight (unstable_pages.py), so
# each write may store any mix of old and new bytes, but the source must
# store the very mix it sends. After quiesce the two data devices are
# equal (cmp). Before the source wrote its local device from the ring's
# copy, they differed here.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v python3 >/dev/null || { ktap_skip_all "python3 not found"; exit "$KSFT_SKIP"; }
SECS=${DMSM_UNSTABLE_SECONDS:-20}
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 5
sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 32); dst=$(sm_loop 32)
n=$(sm_sectors "$src")
s=$PREFIX-src d=$PREFIX-dst
sm_check "create target and source" bash -c "
	ip netns exec $SM_NS_DST dmsetup create $d --table '0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7800' &&
	ip netns exec $SM_NS_SRC dmsetup create $s --table '0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7800'"
# writes: the writer under a time limit. Past it (a write that never
# completes: the writer's threads cannot even be killed), the source's
# status, the writer threads' kernel stacks and every blocked task go to
# the log, so a hang shows where instead of as a silent kselftest timeout.
writes() {
	local limit=$((SECS * 4 + 60)) pid t
	python3 "$DIR/unstable_pages.py" /dev/mapper/$s "$SECS" &
	pid=$!
	for ((t = 0; t < limit; t++)); do
		kill -0 $pid 2>/dev/null || break
		sm_nap 1
	done
	if kill -0 $pid 2>/dev/null; then
		echo "writer did not finish in $limit s; source: $(dmsetup status $s)"
		echo "target: $(dmsetup status $d)"
		for t in /proc/$pid/task/*; do echo "task $t:"; cat $t/stack; done
		echo w >/proc/sysrq-trigger
		kill -9 $pid
		return 1
	fi
	wait $pid
}
sm_check "buffers changing during ${SECS} s of O_DIRECT writes" writes
sm_check "quiesce (ring empty)" sm_quiesce $s 120
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $s)"
ktap_finished

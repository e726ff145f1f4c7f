#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# A bad network (issue 5, scenario 2): netem on both veth ends with a
# 20 ms delay and 5 ms of jitter, 3% loss, 25% reordering and a 50 mbit
# rate (RTT about 40 ms). fio writes 32 MiB of random 4k-64k direct writes
# with an fsync every 16 writes through the source and verifies them
# (--verify=crc32c, read back through the source); then the source must
# quiesce (every record applied on the target) and the two data devices
# must be equal (invariant I1 in Documentation/dm-specmirror.rst). The counters the run relied on (resends,
# reconnects, crc_errors, naks, lag) are printed. No splat (vm.sh).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
for t in ip tc; do
	command -v $t >/dev/null || { ktap_skip_all "$t not found"; exit "$KSFT_SKIP"; }
done
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 9
sm_check "load the module" sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 64); dst=$(sm_loop 64)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst
# Two new zeroed devices: `initial_sync none` (the initial copy of 64 MiB
# over this link would take minutes and is not what this test measures).
pair() {
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7870" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7870 2 initial_sync none" &&
	sm_state $S connected
}
sm_check "create target and source; connected" pair

NETEM="delay 20ms 5ms loss 3% reorder 25% rate 50mbit"
badnet() {
	tc -n $SM_NS_SRC qdisc replace dev smt-veth-s root netem $NETEM &&
	tc -n $SM_NS_DST qdisc replace dev smt-veth-d root netem $NETEM &&
	tc -n $SM_NS_SRC qdisc show dev smt-veth-s && tc -n $SM_NS_DST qdisc show dev smt-veth-d
}
sm_check "netem on both ends: $NETEM" badnet

# 32 MiB of distinct random blocks over the whole device, an fsync (a
# FLUSH record) every 16 writes, then fio reads everything back through
# the source and checks each block's crc32c.
t0=$EPOCHSECONDS
load() {
	local out rc err
	out=$(cd /tmp && fio --name=badnet --filename=/dev/mapper/$S --rw=randwrite --bsrange=4k-64k \
		--size=64M --io_size=32M --direct=1 --ioengine=libaio --iodepth=8 --fsync=16 \
		--verify=crc32c --verify_fatal=1 --verify_state_save=0 --randrepeat=0 \
		--output-format=terse 2>&1)
	rc=$?
	err=$(printf '%s\n' "$out" | grep -m1 '^3;' | cut -d';' -f5)
	echo "fio exit $rc, error=${err:-none}" \
		"written=$(printf '%s\n' "$out" | grep -m1 '^3;' | cut -d';' -f47) KiB" \
		"verified=$(printf '%s\n' "$out" | grep -m1 '^3;' | cut -d';' -f6) KiB"
	[ $rc -eq 0 ] && [ "$err" = 0 ] && ! printf '%s\n' "$out" | grep -qi 'verify failed\|bad magic\|bad header' ||
		{ printf '%s\n' "$out"; return 1; }
}
# Not through sm_check: fio's summary line is shown on success too.
out=$(load 2>&1)
rc=$?
printf '%s\n' "$out" | sed 's/^/# /'
if [ $rc -eq 0 ]; then
	ktap_test_pass "fio 32 MiB random 4k-64k writes, fsync every 16, --verify=crc32c"
else
	ktap_test_fail "fio 32 MiB random 4k-64k writes, fsync every 16, --verify=crc32c"
fi
echo "# fio took $((EPOCHSECONDS - t0)) s; source: $(dmsetup status $S)"

t0=$EPOCHSECONDS
sm_check "quiesce over the bad network (ring empty)" sm_quiesce $S 200
echo "# quiesce took $((EPOCHSECONDS - t0)) s"
everything() {
	sm_fields $S
	echo "queued=${SM_F[queued]} acked=${SM_F[acked]} lag=${SM_F[lag]}"
	[ "${SM_F[queued]}" -gt 0 ] && [ "${SM_F[acked]}" = "${SM_F[queued]}" ] && [ "${SM_F[lag]}" = 0 ]
}
sm_check "every record acknowledged (acked = queued, lag 0)" everything
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"

ss=$(dmsetup status $S) ts=$(dmsetup status $D)
echo "# source: resends=$(sm_field "$ss" resends) reconnects=$(sm_field "$ss" reconnects)" \
	"crc_errors=$(sm_field "$ss" crc_errors) naks=$(sm_field "$ss" naks) lag=$(sm_field "$ss" lag)" \
	"connect_failures=$(sm_field "$ss" connect_failures) waits=$(sm_field "$ss" waits)"
echo "# target: crc_errors=$(sm_field "$ts" crc_errors) naks=$(sm_field "$ts" naks)" \
	"reconnects=$(sm_field "$ts" reconnects) protocol_errors=$(sm_field "$ts" protocol_errors)"
echo "# source: $ss"
echo "# target: $ts"
tc -n $SM_NS_SRC -s qdisc show dev smt-veth-s | sed 's/^/# src qdisc: /'
tc -n $SM_NS_DST -s qdisc show dev smt-veth-d | sed 's/^/# dst qdisc: /'
sm_check "remove" bash -c "dmsetup remove $S && dmsetup remove $D"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Soak (issue 5, scenario 12; `make soak`, not part of the default run):
# DMSM_SOAK_SECONDS (600) of mixed load through a source (random writes
# 4k-64k with an fsync every 32, random discards) while faults 1 to 7 of
# the fault suite are injected at random, one at a time:
#   1 link cut (fault drop, ss -K, veth down 1 s or netem loss 100% 2 s)
#   2 bad network for 10 s (delay 20ms 5ms, loss 3%, reorder 25%, 50mbit)
#   3 corruption on the wire (fault corrupt 2)
#   4 a local lock on a target region for 3 s (may be refused with EBUSY
#     when the stream holds that region: then another region is tried)
#   5 the target's data device failing writes for 2 s (dm-flakey)
#   6 the link throttled to 5 mbit/s for 10 s (the 8 MiB ring fills)
#   7 the target restarted (table removed and created again)
# At the end: faults off, load stopped, quiesce, the two data devices
# equal (invariant I1 in Documentation/dm-specmirror.rst). The seed of the fault sequence is printed; set
# DMSM_SOAK_SEED to replay it. DMSM_SOAK_AL sets the source's al_regions
# (a small activity log keeps evicting, and flushing, under the faults).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
for t in ip tc ss; do
	command -v $t >/dev/null || { ktap_skip_all "$t not found"; exit "$KSFT_SKIP"; }
done
DISCARD_PID=
cleanup() { [ -z "$DISCARD_PID" ] || kill "$DISCARD_PID" 2>/dev/null; sm_cleanup; sm_netns_down; }
trap cleanup EXIT
SECS=${DMSM_SOAK_SECONDS:-600}
SRC_OPTS="2 ring_mb 8"
[ -z "${DMSM_SOAK_AL:-}" ] || SRC_OPTS="4 ring_mb 8 al_regions $DMSM_SOAK_AL"
SEED=${DMSM_SOAK_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$SEED
ktap_print_header
ktap_set_plan 9
sm_check "load the module with dmsm_fault_injection=1" sm_load_faults
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 128); dst=$(sm_loop 128)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst FD=$PREFIX-flk-dst PORT=7890 RS=2048
target_up() {
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target /dev/mapper/$FD $(sm_meta /dev/mapper/$FD) $SM_IP_DST:$PORT"
}
pair() {
	dmsetup create $FD --table "0 $n linear $dst 0" && target_up &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:$PORT $SRC_OPTS" &&
	sm_state $S connected
}
sm_check "create target (over dm-linear) and source (ring_mb 8); connected" pair

netem_off() {
	tc -n $SM_NS_SRC qdisc del dev smt-veth-s root 2>/dev/null
	tc -n $SM_NS_DST qdisc del dev smt-veth-d root 2>/dev/null
	true
}
f_cut() {
	case $((RANDOM % 4)) in
	0) echo "fault drop"; dmsetup message $S 0 fault drop ;;
	1) echo "ss -K"; ip netns exec $SM_NS_SRC ss -K -t dst $SM_IP_DST >/dev/null ;;
	2) echo "veth down 1 s"; ip -n $SM_NS_SRC link set smt-veth-s down; sm_nap 1; ip -n $SM_NS_SRC link set smt-veth-s up ;;
	3) echo "netem loss 100% 2 s"
	   tc -n $SM_NS_SRC qdisc add dev smt-veth-s root netem loss 100%
	   tc -n $SM_NS_DST qdisc add dev smt-veth-d root netem loss 100%
	   sm_nap 2; netem_off ;;
	esac
}
f_badnet() {
	echo "bad network 10 s"
	tc -n $SM_NS_SRC qdisc add dev smt-veth-s root netem delay 10ms 3ms loss 3% reorder 25% rate 50mbit
	tc -n $SM_NS_DST qdisc add dev smt-veth-d root netem delay 10ms 3ms loss 3% reorder 25% rate 50mbit
	sm_nap 10; netem_off
}
f_corrupt() { echo "fault corrupt 2"; dmsetup message $S 0 fault corrupt 2; sm_nap 2; }
f_lock() {
	local r try
	for try in 1 2 3; do
		r=$(( (RANDOM % (n / RS)) * RS ))
		if dmsetup message $D 0 lock $r $RS 2>/dev/null; then
			echo "lock region at $r for 3 s"
			sm_nap 3
			dmsetup message $D 0 unlock $r $RS
			return
		fi
	done
	echo "lock refused 3 times (hot regions): skipped"
}
f_disk() {
	echo "target disk fails writes 2 s"
	dmsetup reload $FD --table "0 $n flakey $dst 0 0 3600 1 error_writes" && dmsetup resume $FD
	sm_nap 2
	dmsetup reload $FD --table "0 $n linear $dst 0" && dmsetup resume $FD
}
f_throttle() {
	echo "link 5 mbit/s 10 s"
	tc -n $SM_NS_SRC qdisc add dev smt-veth-s root tbf rate 5mbit burst 32kbit latency 400ms
	sm_nap 10; netem_off
}
f_restart() {
	echo "target restarted"
	ip netns exec $SM_NS_DST dmsetup remove $D && target_up
}
faults=(f_cut f_badnet f_corrupt f_lock f_disk f_throttle f_restart)

echo "# seed $SEED, $SECS s"
sm_load_start /dev/mapper/$S --rate=2m --iodepth=8 --fsync=32
fio --name=discards --filename=/dev/mapper/$S --rw=randtrim --bsrange=4k-64k \
	--ioengine=libaio --iodepth=2 --direct=1 --time_based --runtime=$((SECS + 600)) \
	--rate_iops=5 --randrepeat=0 >/dev/null 2>&1 &
DISCARD_PID=$!
declare -A count
t0=$EPOCHSECONDS k=0 bad=0
while [ $((EPOCHSECONDS - t0)) -lt "$SECS" ]; do
	f=${faults[RANDOM % 7]}
	k=$((k + 1)); count[$f]=$(( ${count[$f]:-0} + 1 ))
	echo "# $((EPOCHSECONDS - t0)) s: fault $k: $($f 2>&1 | tr '\n' ' ')"
	# Let the stream recover before the next fault (at most 60 s).
	if ! sm_until_f 60 $S '[ "${SM_F[state]}" = connected ]'; then
		echo "# not connected 60 s after fault $k: $(dmsetup status $S)"
		bad=1
	fi
	sm_nap $((2 + RANDOM % 5))
done
echo "# $k faults: $(for f in "${faults[@]}"; do printf '%s=%s ' "${f#f_}" "${count[$f]:-0}"; done)"
ok_connected() { [ $bad = 0 ]; }
sm_check "connected again after every fault" ok_connected
kill $DISCARD_PID 2>/dev/null; wait $DISCARD_PID 2>/dev/null; DISCARD_PID=
sm_check_load "write load: fio without errors"
sm_check "quiesce (ring empty)" sm_quiesce $S 300
applied() { sm_until_f 60 $D '[ "${SM_F[pending]}" = 0 ] && [ "${SM_F[failing]}" = 0 ]'; }
sm_check "target: nothing pending" applied
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $S)"
echo "# target: $(dmsetup status $D)"
sm_check "remove" bash -c "dmsetup remove $S && ip netns exec $SM_NS_DST dmsetup remove $D && dmsetup remove $FD"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Link cut and restored 20 times during a write load (issue 5, scenario 1),
# five times each way, in turn: the connection dropped by fault injection
# (`fault drop`), killed with `ss -K` in the source's namespace, the veth
# taken down for 1 s, netem dropping every packet for 2 s. Each cut that
# kills the connection must be followed by a reconnect (the source's
# `reconnects` grows); after every cut the stream is connected again, and
# after quiesce the two data devices are equal (invariant I1 in Documentation/dm-specmirror.rst).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
for t in ip tc ss; do
	command -v $t >/dev/null || { ktap_skip_all "$t not found"; exit "$KSFT_SKIP"; }
done
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 12
sm_check "load the module with dmsm_fault_injection=1" sm_load_faults
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 64); dst=$(sm_loop 64)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst
pair() {
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7820" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7820" &&
	sm_state $S connected
}
sm_check "create target and source; connected" pair

# The four ways to cut the link. Each returns once the link is restored.
cut_drop() { dmsetup message $S 0 fault drop; }
cut_sskill() { ip netns exec $SM_NS_SRC ss -K -t dst $SM_IP_DST >/dev/null; }
cut_linkdown() {
	ip -n $SM_NS_SRC link set smt-veth-s down && sm_nap 1 &&
	ip -n $SM_NS_SRC link set smt-veth-s up
}
cut_loss() {
	tc -n $SM_NS_SRC qdisc add dev smt-veth-s root netem loss 100% &&
	tc -n $SM_NS_DST qdisc add dev smt-veth-d root netem loss 100% &&
	sm_nap 2 && sm_netem 0
}

# A modest rate: the point is writes in flight at every cut, and under TCG
# an unbounded load leaves too little CPU for the rest of the test.
sm_load_start /dev/mapper/$S --rate=1m --iodepth=4
sm_until_f 120 $S '[ "${SM_F[queued]}" -gt 0 ]' || echo "# the load did not start: $(dmsetup status $S)"
r_start=${SM_F[reconnects]}
methods=(drop sskill linkdown loss)
declare -A bad
t_loop=$EPOCHSECONDS
for ((i = 1; i <= 20; i++)); do
	m=${methods[(i - 1) % 4]}
	sm_fields $S
	r0=${SM_F[reconnects]} t0=$EPOCHSECONDS
	cut_$m || { echo "# cut $i ($m): the cut itself failed"; bad[$m]=1; }
	case $m in
	drop|sskill)
		# The connection is gone: the source must shake hands again.
		sm_until_f 30 $S '[ "${SM_F[reconnects]}" -gt "$r0" ] && [ "${SM_F[state]}" = connected ]' ||
			{ echo "# cut $i ($m): no reconnect in 30 s: $(dmsetup status $S)"; bad[$m]=1; }
		;;
	*)
		sm_state $S connected 30 >/dev/null ||
			{ echo "# cut $i ($m): not connected 30 s after: $(dmsetup status $S)"; bad[$m]=1; }
		;;
	esac
	echo "# cut $i $m: reconnects $r0 -> ${SM_F[reconnects]}, $((EPOCHSECONDS - t0)) s, acked=${SM_F[acked]} lag=${SM_F[lag]}"
done
echo "# 20 cuts in $((EPOCHSECONDS - t_loop)) s"
result() { if [ -z "${bad[$1]:-}" ]; then ktap_test_pass "$2"; else ktap_test_fail "$2"; fi; }
result drop "5 x fault drop: the source reconnected after each"
result sskill "5 x ss -K in the source namespace: the source reconnected after each"
result linkdown "5 x veth down for 1 s: connected again after each"
result loss "5 x netem loss 100% for 2 s: connected again after each"
counted() {
	sm_fields $S
	echo "reconnects $r_start -> ${SM_F[reconnects]}"
	[ $((SM_F[reconnects] - r_start)) -ge 10 ]
}
sm_check "reconnects counted (at least one per killed connection: 10)" counted
sm_check_load "write load: fio without errors"
sm_check "quiesce (ring empty)" sm_quiesce $S 180
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
sm_fields $S
echo "# source: reconnects $r_start -> ${SM_F[reconnects]}, connect_failures=${SM_F[connect_failures]} resends=${SM_F[resends]}"
echo "# source: $(dmsetup status $S)"
echo "# target: $(dmsetup status $D)"
sm_check "remove" bash -c "dmsetup remove $S && dmsetup remove $D"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished

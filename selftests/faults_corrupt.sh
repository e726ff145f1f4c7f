#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Corruption on the wire during a write load (issue 5, scenario 3): ten
# times, `fault corrupt 2` makes the source send its next two records with
# a corrupted CRC (the copy in its ring stays intact). The target must
# detect every one (crc_errors), answer with NAK, the source must resend
# from the ring (resends), all without dropping the connection; after
# quiesce the two data devices are equal (DESIGN.md I1).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
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
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $SM_IP_DST:7830" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $SM_IP_DST:7830" &&
	sm_state $S connected
}
sm_check "create target and source; connected" pair

ROUNDS=10 PER=2
sm_load_start /dev/mapper/$S
sleep 2
corrupt() {
	local k
	for ((k = 1; k <= ROUNDS; k++)); do
		dmsetup message $S 0 fault corrupt $PER || return 1
		# The next records sent carry the bad CRC: wait until the target
		# saw them before arming the next round (the message sets, it
		# does not add).
		sm_until_f 30 $D "[ \${SM_F[crc_errors]} -ge $((k * PER)) ]" ||
			{ echo "round $k: $(dmsetup status $D)"; return 1; }
		sm_nap 0.5
	done
}
sm_check "$ROUNDS x fault corrupt $PER during the load: the target detected each round" corrupt
sm_check_load "write load: fio without errors"
sm_check "quiesce (ring empty)" sm_quiesce $S 180
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"

ss=$(dmsetup status $S) ts=$(dmsetup status $D)
f() { sm_field "$1" "$2"; }
exact() { [ "$(f "$ts" crc_errors)" -eq $((ROUNDS * PER)) ]; }
sm_check "target crc_errors = $((ROUNDS * PER)): every corrupted record detected, nothing else" exact
naks() { [ "$(f "$ts" naks)" -gt 0 ] && [ "$(f "$ss" naks)" -gt 0 ]; }
sm_check "NAKs sent by the target and received by the source (naks > 0)" naks
resends() { [ "$(f "$ss" resends)" -gt 0 ]; }
sm_check "the source resent the NAKed records (resends > 0)" resends
inline() {
	[ "$(f "$ss" reconnects)" -eq 0 ] && [ "$(f "$ts" protocol_errors)" -eq 0 ] &&
	[ "$(f "$ss" crc_errors)" -eq 0 ]
}
sm_check "repaired within the connection (no reconnect, no protocol error)" inline
echo "# target: crc_errors=$(f "$ts" crc_errors) naks=$(f "$ts" naks) reconnects=$(f "$ts" reconnects) protocol_errors=$(f "$ts" protocol_errors)"
echo "# source: naks=$(f "$ss" naks) resends=$(f "$ss" resends) reconnects=$(f "$ss" reconnects) crc_errors=$(f "$ss" crc_errors)"
echo "# source: $ss"
echo "# target: $ts"
sm_check "remove" bash -c "dmsetup remove $S && dmsetup remove $D"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished

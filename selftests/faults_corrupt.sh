#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Corruption on the wire during a write load (issue 5, scenario 3):
# `fault corrupt_every 1000` makes the source send one record in 1,000
# with a corrupted CRC (the copy in its ring stays intact), until ten
# were. The target must detect every one (crc_errors), answer with NAK, the source must resend
# from the ring (resends), all without dropping the connection; after
# quiesce the two data devices are equal (invariant I1 in Documentation/dm-specmirror.rst).
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
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7830" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7830" &&
	sm_state $S connected
}
sm_check "create target and source; connected" pair

# 4k writes: many records per second, so that 1 in 1,000 is a few a second.
sm_load_start /dev/mapper/$S --bs=4k --bsrange=4k-4k --iodepth=16
sm_fields $S; q0=${SM_F[queued]}
sm_until_f 120 $S "[ \${SM_F[queued]} -gt $((q0 + 100)) ]" || echo "# the load did not start: $(dmsetup status $S)"
WANT=10
sm_fields $S; sent0=${SM_F[sent]} res0=${SM_F[resends]}
corrupt() {
	dmsetup message $S 0 fault corrupt_every 1000 || return 1
	sm_until_f 300 $D "[ \${SM_F[crc_errors]} -ge $WANT ]" || { dmsetup status $D; return 1; }
}
sm_check "fault corrupt_every 1000 during the load: $WANT corrupt records detected by the target" corrupt
dmsetup message $S 0 fault corrupt_every 0
sm_fields $S; sent1=${SM_F[sent]} res1=${SM_F[resends]}
# Records transmitted meanwhile: new ones plus resent ones (`sent` is the
# send cursor's seq, which a NAK moves back).
tx=$(( sent1 - sent0 + res1 - res0 ))
sm_check_load "write load: fio without errors"
sm_check "quiesce (ring empty)" sm_quiesce $S 180
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"

ss=$(dmsetup status $S) ts=$(dmsetup status $D)
f() { sm_field "$1" "$2"; }
# One record in 1,000 sent was corrupted (resends count as sent).
exact() {
	local c want=$(( tx / 1000 ))
	c=$(f "$ts" crc_errors)
	echo "$tx records transmitted meanwhile: expected about $want corrupt, target saw $c"
	[ "$c" -ge $((want - 1)) ] && [ "$c" -le $((want + 1)) ]
}
sm_check "target crc_errors = 1 in 1,000 records sent: every corrupted record detected, nothing else" exact
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

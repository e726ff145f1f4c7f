#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# A hostile peer (issue 5, scenario 10, against the target): a userspace
# client (hostile_peer.py) connects to the target's port from the source's
# namespace and sends random bytes, a wrong magic, a truncated HELLO (then
# stalls), a frame announcing an oversized payload, a HELLO with a bad CRC,
# a HELLO signed with the wrong secret, and connects a second time while
# the real source is connected. The target must close each connection (the
# client sees EOF or a reset) and count it: protocol_errors for the first
# five, auth_failures for the wrong secret, refused_connections for the
# second source. The real source, disconnected while the target is alone
# with the hostile peer (a target serves one connection at a time), then
# reconnected, keeps replicating: after quiesce the two data devices are
# equal (invariant I1 in Documentation/dm-specmirror.rst). No splat (vm.sh checks dmesg).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
command -v python3 >/dev/null || { ktap_skip_all "python3 not found"; exit "$KSFT_SKIP"; }
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 23
sm_check "load the module" sm_load_faults
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 64); dst=$(sm_loop 64)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst PORT=7860 SECRET=h0st1le-Test
pair() {
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:$PORT 2 secret $SECRET" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:$PORT 2 secret $SECRET" &&
	sm_state $S connected
}
sm_check "create target and source with a secret; connected" pair
dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=8 oflag=direct conv=fsync status=none

# The target serves one connection at a time: the real source steps aside
# (its writes stay in its ring) while the hostile peer talks to the target.
alone() {
	dmsetup message $S 0 disconnect && sm_state $S disconnected &&
	target_idle 20 || { echo "target: $(dmsetup status $D)"; return 1; }
}
# target_idle TIMEOUT_S: waits until the target has no connection (it is
# listening, or shows its last refusal).
target_idle() { sm_until_f "$1" $D '[ "${SM_F[state]}" != handshake ] && [ "${SM_F[state]}" != connected ]'; }
sm_check "disconnect the real source; the target is alone" alone
dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=8 seek=16 oflag=direct conv=fsync status=none

# peer CASE WAIT_S: the hostile client in the source's namespace.
peer() {
	ip netns exec $SM_NS_SRC python3 "$DIR/hostile_peer.py" $SM_IP_DST $PORT "$1" "$n" "$2"
}
# hostile CASE WAIT_S COUNTER WHAT: two results, closed and counted.
hostile() {
	local case=$1 wait=$2 key=$3 what=$4 c0 c1 out rc
	c0=$(sm_status_field $D "$key")
	out=$(peer "$case" "$wait" 2>&1)
	rc=$?
	printf '%s\n' "$out" | sed 's/^/# /'
	if [ $rc -eq 0 ]; then ktap_test_pass "$what: closed by the target"; else ktap_test_fail "$what: closed by the target"; fi
	# The target may still be tearing the connection down: wait for it.
	[ -n "${WITH_SOURCE:-}" ] || target_idle 10
	c1=$(sm_status_field $D "$key")
	echo "# $what: $key $c0 -> $c1"
	if [ "$c1" -eq $((c0 + 1)) ]; then
		ktap_test_pass "$what: counted ($key + 1)"
	else
		ktap_test_fail "$what: counted ($key + 1)"
	fi
}

hostile random 5 protocol_errors "random bytes"
hostile magic 5 protocol_errors "wrong magic"
# A stalled handshake is closed after the target's 10 s handshake timeout.
hostile truncated 15 protocol_errors "truncated frame, then silence"
hostile oversized 5 protocol_errors "oversized length (2 GiB)"
hostile badcrc 5 protocol_errors "HELLO with a bad CRC"
hostile wrongsecret 5 auth_failures "HELLO with a wrong secret"

back() { dmsetup message $S 0 connect && sm_state $S connected; }
sm_check "reconnect the real source" back
r0=$(sm_status_field $S reconnects)
WITH_SOURCE=1 hostile second 5 refused_connections "a second source while one is connected"
undisturbed() {
	sm_nap 1
	sm_fields $S && [ "${SM_F[state]}" = connected ] && [ "${SM_F[reconnects]}" = "$r0" ] ||
		{ echo "source: $(dmsetup status $S) (reconnects before: $r0)"; return 1; }
}
sm_check "the real source's connection is undisturbed (connected, no reconnect)" undisturbed
dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=8 seek=32 oflag=direct conv=fsync status=none
sm_check "quiesce (ring empty)" sm_quiesce $S 120
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
ts=$(dmsetup status $D)
echo "# target: protocol_errors=$(sm_field "$ts" protocol_errors) auth_failures=$(sm_field "$ts" auth_failures) refused_connections=$(sm_field "$ts" refused_connections) crc_errors=$(sm_field "$ts" crc_errors)"
echo "# source: $(dmsetup status $S)"
echo "# target: $ts"
sm_check "remove" bash -c "dmsetup remove $S && dmsetup remove $D"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished

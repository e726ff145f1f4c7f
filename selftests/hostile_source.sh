#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# A hostile target (issue 5, scenario 10, against the source): a source
# with a secret points at an address where a fake target
# (hostile_target.py, in the target's namespace) listens and misbehaves
# on every connection: random bytes instead of a CHALLENGE, a CHALLENGE
# with a wrong magic, a truncated one then silence, one announcing 2 GiB
# of payload, one with a bad CRC, a HELLO_REPLY with a wrong MAC, with a
# wrong device size, with a wrong region size, an ACK for a seq never
# sent after a valid handshake, garbage after a valid handshake. For each
# case: the source closes every connection; it counts each (exactly once:
# protocol_errors, auth_failures or crc_errors) or shows the refusal in
# its state; it does not storm (at most 8 connections in a 10 s window,
# what a back-off from 100 ms doubling allows); host writes through it go
# on locally. Then a real target replaces the fake on the same address:
# the source connects, replicates, and after quiesce the two data devices
# are equal (invariant I1 in Documentation/dm-specmirror.rst). No splat (vm.sh checks dmesg).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
command -v python3 >/dev/null || { ktap_skip_all "python3 not found"; exit "$KSFT_SKIP"; }
cleanup() {
	[ -z "${FAKE_PID:-}" ] || kill "$FAKE_PID" 2>/dev/null
	sm_cleanup; sm_netns_down
}
trap cleanup EXIT
ktap_print_header
ktap_set_plan 38
sm_check "load the module" sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 64); dst=$(sm_loop 64)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst PORT=7880 SECRET=f4ke-Target
# Nothing listens yet: the source keeps trying (connecting).
mksrc() {
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:$PORT 2 secret $SECRET" &&
	sm_state $S connecting
}
sm_check "create the source (secret set); nothing listens yet" mksrc
dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=8 oflag=direct conv=fsync status=none

WINDOW=10 MAX_CONNS=8
declare -A bad_io
# One fake for every case (starting Python costs seconds under TCG): it
# reads `CASE WINDOW_S WAIT_S` lines and answers each, the last answer
# line being `connections=N closed=N ok=0|1`.
coproc FAKE { exec ip netns exec $SM_NS_DST python3 -u "$DIR/hostile_target.py" $SM_IP_DST $PORT serve "$SECRET" 2>&1; }

# fake CASE KEY STATE WAIT_S: the fake target misbehaves for WINDOW s, a
# host write meanwhile; three results: closed, counted (KEY grows by
# exactly the number of connections the fake saw, and the state is STATE
# if given; KEY - : only the state), no storm.
i=0
fake() {
	local case=$1 key=$2 want_state=$3 wait=$4 c0 c1 line conns= ok=0 what
	i=$((i + 1))
	sm_fields $S
	c0=${SM_F[$key]:-}
	[ "$key" != - ] || c0=0
	echo "$case $WINDOW $wait" >&"${FAKE[1]}"
	# Host I/O meanwhile: served by the local device, whatever the peer.
	timeout 60 dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=1 seek=$((15 + i)) oflag=direct conv=fsync status=none ||
		bad_io[$case]=1
	while IFS= read -r -t $((WINDOW + 2 * wait + 60)) line <&"${FAKE[0]}"; do
		echo "# $line"
		if [[ $line =~ ^connections=([0-9]+)\ closed=[0-9]+\ ok=([01]) ]]; then
			conns=${BASH_REMATCH[1]} ok=${BASH_REMATCH[2]}
			break
		fi
	done
	[ -n "$conns" ] || echo "# $case: no answer from the fake"
	if [ "$ok" = 1 ]; then
		ktap_test_pass "$case: the source closed every connection"
	else
		ktap_test_fail "$case: the source closed every connection"
	fi
	sm_fields $S
	c1=${SM_F[$key]:-}
	if [ "$key" = - ]; then
		what="$case: shown (state $want_state)"
		c1=${conns:-0}
	else
		what="$case: counted ($key + connections${want_state:+, state $want_state})"
	fi
	echo "# $case: ${key/#-/(no counter)} $c0 -> $c1, state ${SM_F[state]}, connect_failures=${SM_F[connect_failures]} reconnects=${SM_F[reconnects]}"
	if [ -n "$conns" ] && [ "$conns" -gt 0 ] && [ -n "$c1" ] && [ "$c1" -eq $((c0 + conns)) ] &&
		{ [ -z "$want_state" ] || [ "${SM_F[state]}" = "$want_state" ]; }; then
		ktap_test_pass "$what"
	else
		ktap_test_fail "$what"
	fi
	if [ -n "$conns" ] && [ "$conns" -le $MAX_CONNS ]; then
		ktap_test_pass "$case: no connect storm (${conns:-?} connections in $WINDOW s, at most $MAX_CONNS)"
	else
		ktap_test_fail "$case: no connect storm (${conns:-?} connections in $WINDOW s, at most $MAX_CONNS)"
	fi
}

# CASE                   KEY             STATE                 WAIT_S
fake random              protocol_errors refused:protocol      10
fake magic               protocol_errors refused:protocol      10
# A stalled handshake is closed after the source's 10 s handshake timeout.
fake truncated           protocol_errors refused:protocol      20
fake oversized           protocol_errors refused:protocol      10
fake badcrc              protocol_errors refused:protocol      10
fake badmac              auth_failures   refused:auth          10
# A refusal is counted nowhere: the state says why (KEY -).
fake devsize             -               refused:device-size   10
fake regionsize          -               refused:region-size   10
fake badack              protocol_errors ""                    10
fake garbage             crc_errors      ""                    10

io_ok() {
	[ ${#bad_io[@]} -eq 0 ] || { echo "host writes that failed or hung: ${!bad_io[*]}"; return 1; }
}
sm_check "host writes through the source went on during every case (1 MiB each, < 60 s)" io_ok
# The fake is gone (its port closed between cases): end it.
fd=${FAKE[1]}; exec {fd}>&-
wait "$FAKE_PID" 2>/dev/null

# The real target on the fake's address.
real() {
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:$PORT 2 secret $SECRET" &&
	sm_state $S connected 30
}
sm_check "a real target on that address: the source connects" real
dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=8 seek=40 oflag=direct conv=fsync status=none
sm_check "quiesce (ring empty)" sm_quiesce $S 180
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $S)"
echo "# target: $(dmsetup status $D)"
sm_check "remove" bash -c "dmsetup remove $S && dmsetup remove $D"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Remove and rmmod during a load and with the peer unreachable (issue 5,
# scenario 11). Every remove, suspend and rmmod runs under `timeout 60`, so
# a hang is a failure rather than a stuck test, and must be done within
# BOUND (30) seconds; the time each took is printed. At the end kmemleak
# must report nothing.
#
# (a) Source removed under a fio load while connected. A plain remove of
#     an open device fails with EBUSY, which must be immediate. `dmsetup
#     remove --force` replaces the table with an error target: the
#     source's table (threads, socket, ring with records in flight) is
#     destroyed under load, fio then ends with I/O errors (expected) and the
#     device is removed once fio closed it (by remove --force itself when
#     fio was quick enough).
# (b) Target removed under load, bounded; a new target is found by the
#     source within BOUND, the load sees no error, and after quiesce the
#     devices are equal. (lifecycle.sh does the round trip; this is about
#     the time.) Then the target removed while the link is down (its
#     connection stalled, no FIN/RST will come), under load.
# (c) Source removed with the target unreachable (link down, target gone):
#     `completion async` with records in its ring. With `completion sync`
#     a record stays in the ring only while its host write waits for the
#     target, and that writer holds the device open: the documented
#     behaviour is that remove fails with EBUSY (at once), a suspend waits
#     for the target until interrupted (it must return promptly when
#     signalled and leave the device live), and once the link is back the
#     write completes; then both are removed with the link down again.
# (d) rmmod right after the last remove of (c), both modes, then insmod
#     and a quick create/remove.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 30
sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
BOUND=30
S=$PREFIX-src D=$PREFIX-dst

# bounded DESC EXPECT CMD...: one KTAP result for CMD run under `timeout
# 60`: it must end within BOUND seconds and, by EXPECT, succeed (ok), fail
# with EBUSY (busy), or end either way (any).
bounded() {
	local desc=$1 expect=$2 t0 t1 out rc ok=1; shift 2
	t0=${EPOCHREALTIME/./}
	if declare -F "$1" >/dev/null; then
		out=$("$@" 2>&1); rc=$? # a function that bounds itself
	else
		out=$(timeout -k 10 60 "$@" 2>&1); rc=$?
	fi
	t1=${EPOCHREALTIME/./}
	DT=$(((10#$t1 - 10#$t0) / 1000))
	case $expect in
	ok) [ $rc -eq 0 ] || ok=0 ;;
	busy) [ $rc -ne 0 ] && [[ $out == *"busy"* ]] || ok=0 ;;
	esac
	[ $rc -ne 124 ] && [ $rc -ne 137 ] || ok=0
	[ $DT -le $((BOUND * 1000)) ] || ok=0
	desc+=" ($((DT / 1000)).$(printf %03d $((DT % 1000))) s)"
	if [ $ok -eq 1 ]; then
		ktap_test_pass "$desc"
	else
		printf '%s\n' "rc=$rc" "$out" | sed 's/^/# /'
		ktap_test_fail "$desc"
	fi
}
link() { ip -n $SM_NS_SRC link set smt-veth-s "$1"; }
up_pair() { # up_pair SRC_DEV DST_DEV PORT [OPTS]: target, then source; connected
	local n; n=$(sm_sectors "$1")
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $2 $(sm_meta $2) $SM_IP_DST:$3" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $1 $(sm_meta $1) $SM_IP_DST:$3${4:+ $4}" &&
	sm_state $S connected 60
}
fio_gone() { ! kill -0 "$SM_LOAD_PID" 2>/dev/null; }
# load RATE: the background fio load through the source (sm_load_start,
# here: fio is a child of this shell), then a KTAP result for it writing:
# fio takes seconds to start under TCG, and a remove before it opened the
# device would not be a remove under load.
load() {
	sm_fields $S
	local q0=${SM_F[queued]}
	sm_load_start /dev/mapper/$S --rate="$1" --iodepth=4
	sm_check "$2: fio writes through the source" \
		waiting "[ \"\${SM_F[queued]}\" -gt $((q0 + 20)) ]" 120
}
waiting() { # waiting TEST [TIMEOUT_S]: SM_F holds TEST within 30 s
	sm_until_f "${2:-30}" $S "$1" || { dmsetup status $S; return 1; }
}
quick() { # insmod again, one device created and removed
	sm_load &&
	dmsetup create $PREFIX-q --table "0 $(sm_sectors "$src1") specmirror target $src1 $(sm_meta quick-target) 127.0.0.1:7839 2 ring_mb 1" &&
	dmsetup status $PREFIX-q && dmsetup remove $PREFIX-q
}

# --- (a) the source removed under load, connected --------------------------
src1=$(sm_loop 64); dst1=$(sm_loop 64)
# Two new zeroed devices: no initial sync, so the records counted while
# fio starts are fio's (a sync's records would count too, and the remove
# could come before fio opened the device).
sm_check "(a) create target and source; connected" up_pair "$src1" "$dst1" 7830 "2 initial_sync none"
load 2m "(a)"
bounded "(a) remove of the source under load: EBUSY at once" busy dmsetup remove $S
bounded "(a) remove --force of the source under load" any dmsetup remove --force $S
# Not through sm_check: fio is a child of this shell.
sm_until 30 fio_gone; fio_ended=$?
fio_gone || kill -KILL "$SM_LOAD_PID"
wait "$SM_LOAD_PID"; fio_rc=$?
fio_err=$(grep -m1 '^3;' "$SM_LOAD_OUT" | cut -d';' -f5)
rm -f "$SM_LOAD_OUT"; SM_LOAD_PID= SM_LOAD_OUT=
echo "# fio after remove --force: exit $fio_rc, error=$fio_err"
a_end() {
	echo "fio: exit $fio_rc, error=$fio_err"
	[ $fio_ended -eq 0 ] || { echo "fio still ran 30 s after remove --force"; return 1; }
	# remove --force removes the device itself when fio closed it in time.
	dmsetup info $S >/dev/null 2>&1 || { echo "removed by remove --force"; return 0; }
	dmsetup table $S | grep -q ' error' || { echo "table: $(dmsetup table $S)"; return 1; }
	dmsetup remove $S
}
sm_check "(a) fio ends on I/O errors; the errored device is removed" a_end
dmsetup remove $D

# --- (b) the target removed under load --------------------------------------
src2=$(sm_loop 64); dst2=$(sm_loop 64)
n2=$(sm_sectors "$dst2")
sm_check "(b) fresh pair connected" up_pair "$src2" "$dst2" 7831
load 2m "(b)"
bounded "(b) remove the target under load" ok dmsetup remove $D
sm_check "(b) a new target" ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n2 specmirror target $dst2 $(sm_meta $dst2) $SM_IP_DST:7831"
reconnected() {
	sm_until_f 60 $S '[ "${SM_F[state]}" = connected ] && [ "${SM_F[reconnects]}" -ge 1 ]' ||
		{ dmsetup status $S; return 1; }
}
bounded "(b) the source reconnects to it" ok reconnected
sm_nap 2
sm_check_load "(b) the load saw no error"
b_equal() { sm_quiesce $S 120 && sm_equal "$src2" "$dst2"; }
sm_check "(b) quiesce; devices equal" b_equal
load 1m "(b) again"
link down
sm_nap 2
bounded "(b) remove the target under load, link down" ok dmsetup remove $D

# --- (c)+(d) async: the source removed, target gone, records in the ring ---
sm_nap 1
sm_check_load "(c) async: the load with the target gone saw no error"
sm_check "(c) async: records wait in the ring" waiting '[ "${SM_F[lag]}" -gt 0 ]'
bounded "(c) async: remove the source with records in its ring, link down" ok dmsetup remove $S
bounded "(d) rmmod right after" ok rmmod dm_specmirror
link up
sm_check "(d) insmod again; a device created and removed" quick

# --- (c)+(d) sync ----------------------------------------------------------
# `on_disconnect block`: the write must keep waiting for the unreachable
# target; in degraded mode (the default) it would complete after
# degrade_after (5 s by default) without it.
sm_check "(c) sync: pair connected with completion sync, on_disconnect block" up_pair "$src2" "$dst2" 7832 "4 completion sync on_disconnect block"
link down
dd if=/dev/urandom of=/dev/mapper/$S bs=64k count=16 oflag=direct status=none &
ddpid=$!
sm_check "(c) sync: a host write waits for the unreachable target" \
	waiting '[ "${SM_F[inflight]}" -gt 0 ] && [ "${SM_F[lag]}" -gt 0 ]'
bounded "(c) sync: remove while the write waits: EBUSY at once" busy dmsetup remove $S
# A suspend waits for the write, until interrupted (the documented way
# out); interrupted, it must return at once and leave the device live.
t0=${EPOCHREALTIME/./}
timeout -k 10 -s INT 5 dmsetup suspend $S >/dev/null 2>&1
rc=$?
t1=${EPOCHREALTIME/./}
dt=$(((10#$t1 - 10#$t0) / 1000))
live() {
	echo "suspend: rc=$rc after $dt ms"
	[ $rc -ne 0 ] && [ $dt -le $((BOUND * 1000)) ] &&
		dmsetup info $S | grep -q 'State:.*ACTIVE' && ! dmsetup info $S | grep -q SUSPENDED
}
sm_check "(c) sync: an interrupted suspend returns; the device stays live ($((dt / 1000)) s)" live
link up
dd_gone() { ! kill -0 $ddpid 2>/dev/null; }
sm_until 60 dd_gone && { wait $ddpid; ddrc=$?; } || ddrc="still waiting"
sm_check "(c) sync: link up: the waiting write completes within 60 s" \
	eval 'echo "dd: $ddrc"; [ "$ddrc" = 0 ]'
link down
bounded "(c) sync: remove the target, link down" ok dmsetup remove $D
bounded "(c) sync: remove the source, target gone, link down" ok dmsetup remove $S
bounded "(d) rmmod right after" ok rmmod dm_specmirror
link up
sm_check "(d) insmod again; a device created and removed" quick

# --- kmemleak ---------------------------------------------------------------
KL=/sys/kernel/debug/kmemleak
if [ -w $KL ]; then
	no_leak() {
		# Objects younger than 5 s are not reported yet.
		sm_nap 6
		echo scan >$KL
		local r; r=$(<$KL)
		[ -z "$r" ] || { printf '%s\n' "$r" | head -80; return 1; }
	}
	sm_check "kmemleak: nothing unreferenced" no_leak
else
	ktap_test_skip "kmemleak: not available"
fi
ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Source ring full (issue 5, scenario 6): a source with a 4 MiB rollback
# ring (`ring_mb 4`) behind a link throttled to 5 mbit/s (tc tbf on the
# source's side), and fio writing 24 MiB with verification through it.
# Host writes must wait for ring room (waits, deferred), none may fail
# (fio without errors, verify=crc32c) and none may be dropped: once the
# throttle is removed, after quiesce, the two data devices are equal
# (invariant I1 in Documentation/dm-specmirror.rst).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
for t in ip tc; do
	command -v $t >/dev/null || { ktap_skip_all "$t not found"; exit "$KSFT_SKIP"; }
done
FIO_PID=
cleanup() { [ -z "$FIO_PID" ] || kill "$FIO_PID" 2>/dev/null; sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 10
sm_check "load the module" sm_load_faults
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 64); dst=$(sm_loop 64)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst
# `on_disconnect block`: the point is writes waiting for ring room however
# long the link is slow; in degraded mode (the default) a deferred list
# that stays non-empty for degrade_after (5 s by default) would drop the stream and
# resync instead (selftests/degraded.sh covers that).
pair() {
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7850" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7850 4 ring_mb 4 on_disconnect block" &&
	sm_state $S connected
}
sm_check "create target and source (ring_mb 4, on_disconnect block); connected" pair
throttle() { tc -n $SM_NS_SRC qdisc add dev smt-veth-s root tbf rate 5mbit burst 32kbit latency 400ms; }
sm_check "throttle the link to 5 mbit/s (tbf)" throttle

FIO_OUT=$(mktemp /tmp/smt-fio.XXXXXX)
fio --name=ringfull --filename=/dev/mapper/$S --direct=1 --ioengine=libaio --verify=crc32c \
	--verify_fatal=1 --verify_state_save=0 --randrepeat=0 --output-format=terse \
	--rw=randwrite --bsrange=4k-64k --iodepth=16 --offset=0 --size=24M >"$FIO_OUT" 2>&1 &
FIO_PID=$!
# Watch the source for at least 10 s, until host writes had to wait (at
# most 40 s): the ring fills and host writes queue up.
max_def=0 max_ring=0 t0=$EPOCHSECONDS
sm_fields $S
while kill -0 $FIO_PID 2>/dev/null; do
	el=$((EPOCHSECONDS - t0))
	[ $el -lt 40 ] || break
	[ $el -lt 10 ] || [ "${SM_F[waits]}" -eq 0 ] || break
	sm_nap 0.2
	sm_fields $S
	[ "${SM_F[deferred]}" -le $max_def ] || max_def=${SM_F[deferred]}
	[ "${SM_F[ring]%/*}" -le $max_ring ] || max_ring=${SM_F[ring]%/*}
done
echo "# throttled for $((EPOCHSECONDS - t0)) s: max deferred=$max_def, max ring used=$max_ring of $((4 << 20)), waits=${SM_F[waits]} lag=${SM_F[lag]}"
waits=${SM_F[waits]}
waited() { [ "$waits" -gt 0 ] && [ "$max_def" -gt 0 ]; }
sm_check "host writes waited for ring room (waits > 0, deferred > 0 seen)" waited
sm_check "remove the throttle" tc -n $SM_NS_SRC qdisc del dev smt-veth-s root
wait $FIO_PID
rc=$? FIO_PID=
# (FIO_OUT, not `out`: sm_check has a local of that name.)
fio_ok() { cat "$FIO_OUT"; [ $rc -eq 0 ] && [ "$(grep -m1 '^3;' "$FIO_OUT" | cut -d';' -f5)" = 0 ]; }
sm_check "fio: 24 MiB written and verified, no error" fio_ok
rm -f "$FIO_OUT"
sm_check "quiesce (ring empty)" sm_quiesce $S 180
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
sm_fields $S
echo "# source: waits=${SM_F[waits]} deferred max seen=$max_def local_errors=${SM_F[local_errors]}"
echo "# source: $(dmsetup status $S)"
echo "# target: $(dmsetup status $D)"
sm_check "remove" bash -c "dmsetup remove $S && dmsetup remove $D"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# A local lock on a target region held while the source writes elsewhere
# and into it (issue 5, scenario 4). The lock (`dmsetup message <dst> 0
# lock`) is taken on the last region before the source ever writes there:
# a lock waits for the stream to release a region it holds, and a fresh
# stream holds none. Then a rate-limited load writes every other region
# while the target's `applied` must keep growing; a 1 MiB write into the
# locked region must meet the lock (lock_conflicts) and stay off the
# target's disk until the unlock, at least 3 s after the lock. After the
# unlock the two data devices are equal (invariant I1 in Documentation/dm-specmirror.rst). Two rounds: with
# the default 64 MiB commit log that region's records wait; with a 2 MiB
# one the log fills behind them and the target rejects the stream
# (LOCK_REJECTED), which the source replays after the grant.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 23
sm_check "load the module with dmsm_fault_injection=1" sm_load_faults
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 64); dst=$(sm_loop 64)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst
RS=2048                              # region_size (the default)
last=$((n / RS - 1))                 # the locked region: the last one
rs=$((last * RS))                    # its first sector
pair() {
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7840${1:+ $1}" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7840" &&
	sm_state $S connected
}
lock_it() { dmsetup message $D 0 lock $rs $RS && [ "$(sm_status_field $D local_locks)" = 1 ]; }
# above DEV KEY VALUE TIMEOUT_S: waits until DEV's KEY exceeds VALUE.
above() { sm_until_f "$4" "$1" "[ \${SM_F[$2]} -gt $3 ]" || { echo "$(dmsetup status "$1")"; return 1; }; }
# region_sum DEV: checksum of the locked region's bytes on DEV.
region_sum() { dd if="$1" bs=$((RS * 512)) skip=$last count=1 iflag=direct status=none | md5sum | cut -d' ' -f1; }
held_back() {
	local t s
	t=$(region_sum "$dst") s=$(region_sum "$src")
	echo "target region $last: $t (before the write: $1), source: $s"
	[ "$t" = "$1" ] && [ "$s" != "$1" ]
}

# round NAME TARGET_OPTS: 10 results, 11 when the commit log is small
# enough to make the target reject the stream.
round() {
	local name=$1 topts=$2 t0 a0 c0 r0 before held st ts
	sm_check "$name: create target and source; connected" pair "$topts"
	sm_check "$name: lock region $last (sectors $rs +$RS) on the target" lock_it
	t0=$EPOCHSECONDS
	sm_fields $D
	a0=${SM_F[applied]} c0=${SM_F[lock_conflicts]} r0=${SM_F[lock_rejections]}
	sm_load_start /dev/mapper/$S --offset=0 --size=$((last * RS / 2048))M --rate=4m
	sm_check "$name: other regions keep moving while it is held (target applied grows)" \
		above $D applied "$a0" 20
	before=$(region_sum "$dst")
	dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=1 seek=$last oflag=direct status=none
	sm_check "$name: the write into the locked region meets the lock (lock_conflicts grows)" \
		above $D lock_conflicts "$c0" 20
	if [ -n "$topts" ]; then
		sm_check "$name: the commit log fills behind it: the target rejects the stream (lock_rejections grows)" \
			above $D lock_rejections "$r0" 20
	fi
	sm_check "$name: the write is not applied on the target while the lock is held" held_back "$before"
	held=$((EPOCHSECONDS - t0))
	[ $held -ge 3 ] || sleep $((3 - held))
	echo "# $name: lock held $((EPOCHSECONDS - t0)) s; target: $(dmsetup status $D)"
	sm_check "$name: unlock" dmsetup message $D 0 unlock $rs $RS
	sleep 2
	sm_check_load "$name: write load: fio without errors"
	sm_check "$name: quiesce (ring empty)" sm_quiesce $S 180
	sm_check "$name: data devices equal (cmp)" sm_equal "$src" "$dst"
	st=$(dmsetup status $S) ts=$(dmsetup status $D)
	echo "# $name: target: applied=$(sm_field "$ts" applied) lock_conflicts=$(sm_field "$ts" lock_conflicts) lock_rejections=$(sm_field "$ts" lock_rejections) local_locks=$(sm_field "$ts" local_locks)"
	echo "# $name: source: lock_rejections=$(sm_field "$st" lock_rejections) resends=$(sm_field "$st" resends) waits=$(sm_field "$st" waits)"
	echo "# $name: source: $st"
	echo "# $name: target: $ts"
	sm_check "$name: remove" bash -c "dmsetup remove $S && dmsetup remove $D"
}

round "64 MiB commit log" ""
round "2 MiB commit log" "2 ring_mb 2"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished

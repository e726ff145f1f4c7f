#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Target power loss with a volatile write cache (Documentation/
# dm-specmirror.rst, "Durable acknowledgements"). The target's data device
# sits on dm-log-writes, which logs a write only once a flush covered it,
# over dm-delay, which makes each flush take 500 ms (a disk's cache that
# takes its time): writes applied meanwhile are in no flush yet.
# While host writes stream through the source, the target "loses power":
# its table and the log-writes device are removed, and a new data device
# is rebuilt from the log up to its last flush (log_replay.py: the worst a
# disk with a volatile cache keeps). A target loaded on that device must
# get back from the source everything the power loss took: the source
# keeps each record until the target reports it durable. Three rounds,
# then the devices must be equal (cmp). Each round checks that the power
# loss did take writes the target had applied, or it would prove nothing.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
ROUNDS=${DMSM_POWERLOSS_ROUNDS:-3}
ktap_print_header
ktap_set_plan $((3 * ROUNDS + 6))
sm_load
MB=32
src=$(sm_loop "$MB"); a=$(sm_loop "$MB"); b=$(sm_loop "$MB"); log=$(sm_loop 160)
n=$(sm_sectors "$src")
S=$PREFIX-psrc D=$PREFIX-pdst LW=$PREFIX-plw DL=$PREFIX-pdl
tmeta=$(sm_meta "$a")
stable="source $src $(sm_meta "$src") 127.0.0.1:7861 2 initial_sync none"

# target_on DEV: the target table over DEV through slow flushes and a
# fresh write log.
target_on() {
	dd if=/dev/zero of="$log" bs=1M count=1 oflag=direct status=none &&
		sm_create "$DL" "0 $n delay $1 0 0 $1 0 0 $1 0 500" &&
		sm_create "$LW" "0 $n log-writes /dev/mapper/$DL $log" &&
		sm_create "$D" "0 $n specmirror target /dev/mapper/$LW $tmeta 127.0.0.1:7861"
}
connected() { sm_state "$S" connected 60; }
# power_loss NEXT: the target goes (its threads stop, the device keeps only
# what a flush covered) and NEXT, which held what the target's device held
# when the round began, is rebuilt from the log.
power_loss() {
	local out
	dmsetup status "$D" | sed 's/^/target before: /'
	dmsetup remove "$D" && dmsetup remove "$LW" && dmsetup remove "$DL" || return 1
	out=$(python3 "$DIR/log_replay.py" "$log" "$1") || return 1
	echo "$out" | tee /tmp/smt-out.replay
	[[ "$out" =~ dropped\ ([0-9]+)\ writes ]]
}

created() { target_on "$a" && sm_create "$S" "0 $n specmirror $stable"; }
sm_check "create source and target (log-writes under the target)" created
sm_check "connected" connected
sm_load_start "/dev/mapper/$S" --rate=3m
cur=$a next=$b lost=0
for r in $(seq 1 "$ROUNDS"); do
	sm_nap 4
	# The replay starts from the device as the round began.
	sm_check "round $r: power loss, the device rebuilt from its last flush" power_loss "$next"
	out=$(cat /tmp/smt-out.replay 2>/dev/null)
	echo "# $out"
	[[ "$out" =~ dropped\ ([0-9]+)\ writes ]] && lost=$((lost + BASH_REMATCH[1]))
	# The other device starts the next round as this one's image.
	dd if="$next" of="$cur" bs=1M iflag=direct oflag=direct status=none
	tmp=$cur; cur=$next; next=$tmp
	sm_check "round $r: a target on the rebuilt device" target_on "$cur"
	sm_check "round $r: the source reconnects" connected
done
# Writes the target had applied and no flush covered: the test needs some,
# or the power losses took nothing the source had to send again.
sm_check "the power losses took $lost applied writes that no flush covered" [ "$lost" -gt 0 ]
sm_nap 2
sm_check_load "host writes completed without error"
sm_check "the stream quiesces (everything durable on the target)" sm_quiesce "$S" 120
echo "# source: $(dmsetup status "$S")"
echo "# target: $(dmsetup status "$D")"
dmsetup remove "$D" && dmsetup remove "$LW" && dmsetup remove "$DL"
sm_check "data devices equal after $ROUNDS power losses (cmp)" sm_equal "$src" "$cur"
ktap_finished

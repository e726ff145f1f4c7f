#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Failing disks (issue 5, scenarios 5 and 8), each under dm-flakey switched
# in and out with a table reload (dm-linear while healthy).
#
# Target data device failing writes for 2 s (`error_writes`) during a
# write load: the target shows it (failing=1, io_errors), keeps the
# records and retries them; the source keeps them in its ring (nothing is
# acknowledged that is not on the target's disk); once the device is back
# everything is applied: equal (invariant I1 in Documentation/dm-specmirror.rst).
#
# Source data device failing writes: the host sees the error (dd fails),
# and the mirror does not diverge: the failed write's record may already
# be on its way, so the source re-reads the range from its own device and
# replicates what is really there (`repairs`). After quiesce: equal. When
# the range cannot be read back either (flakey failing all I/O), the
# source counts it (`unrepaired`) and the devices may differ there until
# the host writes the range again, which makes them equal again.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
cleanup() { dmsetup remove $PREFIX-src 2>/dev/null; sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 20
sm_check "load the module" sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 64); dst=$(sm_loop 64)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst FS=$PREFIX-flk-src FD=$PREFIX-flk-dst
# healthy DEV BACKING / failing DEV BACKING FEATURES...: reload DEV as
# dm-linear, or as dm-flakey failing for an hour (up 0 s, down 3600 s).
healthy() { dmsetup reload "$1" --table "0 $n linear $2 0" && dmsetup resume "$1"; }
failing() {
	local dev=$1 back=$2; shift 2
	dmsetup reload "$dev" --table "0 $n flakey $back 0 0 3600${1:+ $# $*}" && dmsetup resume "$dev"
}
pair() {
	dmsetup create $FS --table "0 $n linear $src 0" &&
	dmsetup create $FD --table "0 $n linear $dst 0" &&
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target /dev/mapper/$FD $(sm_meta /dev/mapper/$FD) $SM_IP_DST:7870" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source /dev/mapper/$FS $(sm_meta /dev/mapper/$FS) $SM_IP_DST:7870" &&
	sm_state $S connected
}
sm_check "source over dm-linear/flakey, target over dm-linear/flakey; connected" pair
dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=16 oflag=direct status=none
sm_check "16 MiB written and replicated (quiesce)" sm_quiesce $S 120

# --- scenario 5: the target's disk fails writes for 2 s ---------------------
sm_fields $S; q0=${SM_F[queued]}
sm_load_start /dev/mapper/$S --rate=2m --iodepth=4
# fio takes seconds to start under TCG: wait until it writes.
sm_until_f 120 $S "[ \${SM_F[queued]} -gt $((q0 + 20)) ]" || echo "# the load did not start: $(dmsetup status $S)"
sm_fields $S; a0=${SM_F[acked]}
sm_check "target data device fails writes (flakey error_writes)" failing $FD "$dst" error_writes
seen() { sm_until_f 30 $D '[ "${SM_F[failing]}" = 1 ] && [ "${SM_F[io_errors]}" -gt 0 ]' || { dmsetup status $D; return 1; }; }
sm_check "the target reports it: failing=1, io_errors > 0" seen
sm_nap 2
held() {
	sm_fields $S
	echo "source while the target's disk fails: $(dmsetup status $S)"
	[ "${SM_F[ring]%/*}" -gt 0 ] && [ "${SM_F[lag]}" -gt 0 ]
}
sm_check "the source keeps the unapplied records in its ring (lag > 0)" held
sm_check "target data device healthy again" healthy $FD "$dst"
recovered() { sm_until_f 30 $D '[ "${SM_F[failing]}" = 0 ]' || { dmsetup status $D; return 1; }; }
sm_check "the target applies what it kept: failing=0" recovered
sm_check_load "write load: fio without errors (the target's failure is not the host's)"
sm_check "quiesce (ring empty)" sm_quiesce $S 180
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# target: $(dmsetup status $D)"

# --- scenario 8: the source's own disk fails writes -------------------------
sm_fields $S; e0=${SM_F[local_errors]} r0=${SM_F[repairs]}
sm_check "source data device fails writes (flakey error_writes)" failing $FS "$src" error_writes
host_sees() {
	local i ok=0
	for i in 0 5 10 15; do
		! dd if=/dev/urandom of=/dev/mapper/$S bs=64k count=4 seek=$((i * 16)) oflag=direct status=none 2>/dev/null || ok=1
	done
	[ $ok = 0 ]
}
sm_check "writes through the source fail (the host sees the error)" host_sees
sm_check "source data device healthy again" healthy $FS "$src"
sm_check "quiesce (ring empty, repairs done)" sm_quiesce $S 120
repaired() {
	sm_fields $S
	echo "source: local_errors $e0 -> ${SM_F[local_errors]}, repairs $r0 -> ${SM_F[repairs]}, unrepaired=${SM_F[unrepaired]}"
	[ "${SM_F[local_errors]}" -gt "$e0" ] && [ "${SM_F[repairs]}" -gt "$r0" ] && [ "${SM_F[unrepaired]}" = 0 ]
}
sm_check "the failed writes were repaired from the source's device (repairs > 0, unrepaired = 0)" repaired
sm_check "data devices equal (cmp): the failed writes did not diverge the mirror" sm_equal "$src" "$dst"

# All I/O failing: the range cannot be read back.
unrepaired() {
	failing $FS "$src" || return 1
	! dd if=/dev/urandom of=/dev/mapper/$S bs=64k count=1 seek=300 oflag=direct status=none 2>/dev/null || return 1
	sm_until_f 30 $S '[ "${SM_F[unrepaired]}" -gt 0 ]' || { dmsetup status $S; return 1; }
	healthy $FS "$src" &&
	# The host writes the range again: the mirror is whole again.
	dd if=/dev/urandom of=/dev/mapper/$S bs=64k count=1 seek=300 oflag=direct status=none &&
	sm_quiesce $S 60 && sm_equal "$src" "$dst"
}
sm_check "unreadable failed range counted (unrepaired), whole again once rewritten" unrepaired
echo "# source: $(dmsetup status $S)"
echo "# target: $(dmsetup status $D)"
sm_check "remove" bash -c "dmsetup remove $S && dmsetup remove $D && dmsetup remove $FS && dmsetup remove $FD"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished
